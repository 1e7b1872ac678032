//! A tenant's workflows and schedules: versions that never repeat under one name (across
//! deletes of the thing and of its tenant), schedules placed on their environment's cluster
//! and partition, and only on environments granted to the tenant.

use sqlx::{Row, SqliteConnection};

use super::checks::{
    Table, doc, invalid, must_be_granted, present, read_doc, refuse_if_used, subject,
    workflow_exists,
};
use super::outcome::{Applied, ApplyError, Context, Refusal};
use super::{Name, Schedule, SchedulePatch, Workflow};
use meridian_domain::ScheduleId;

pub(super) async fn apply_workflow(
    tx: &mut SqliteConnection,
    w: &Workflow,
) -> Result<Applied, ApplyError> {
    let doing = format!("applying workflow `{}` of tenant `{}`", w.name, w.tenant);
    present(tx, Table::Tenants, &w.tenant, &doing).await?;
    w.definition
        .validate()
        .map_err(|e| invalid(&doing, "definition", &e.to_string()))?;
    if let Some(env) = &w.environment {
        must_be_granted(tx, &w.tenant, env, &doing).await?;
    }
    let callbacks = super::alerts::callbacks(tx, &w.tenant, &w.definition, &doing).await?;
    // The same document again is no change: `apply` is idempotent.
    let newest = sqlx::query(
        "SELECT version, doc FROM workflows WHERE tenant = ? AND name = ? AND deleted = 0 \
         ORDER BY version DESC LIMIT 1",
    )
    .bind(w.tenant.as_str())
    .bind(w.name.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = newest
        && read_doc::<Workflow>(&row.get::<String, _>("doc"))? == *w
    {
        return Ok(unchanged(
            format!("workflow {}/{}", w.tenant, w.name),
            row.get::<i64, _>("version"),
        ));
    }
    // Versions never repeat, even across a delete and re-create (of it or its tenant),
    // so a run's recorded version always names exactly one definition.
    let version = next_version(tx, Versioned::Workflow, &w.tenant, &w.name).await?;
    sqlx::query(
        "INSERT INTO workflows (tenant, name, version, environment, deleted, doc) \
         VALUES (?, ?, ?, ?, 0, ?)",
    )
    .bind(w.tenant.as_str())
    .bind(w.name.as_str())
    .bind(version)
    .bind(w.environment.as_ref().map(Name::as_str))
    .bind(doc(w))
    .execute(&mut *tx)
    .await?;
    callbacks.write(tx, &w.tenant, &w.name, version).await?;
    Ok(Applied {
        version: Some(version as u64),
        ..subject(format!("workflow {}/{}", w.tenant, w.name))
    })
}

pub(super) async fn delete_workflow(
    tx: &mut SqliteConnection,
    tenant: &Name,
    name: &Name,
) -> Result<Applied, ApplyError> {
    let doing = format!("deleting workflow `{name}` of tenant `{tenant}`");
    if !workflow_exists(tx, tenant, name).await? {
        return Err(Refusal::Missing {
            doing,
            kind: "workflow",
            name: format!("{tenant}/{name}"),
        }
        .into());
    }
    refuse_if_used(
        tx,
        &doing,
        &[tenant, name],
        &[(
            "schedule",
            "SELECT name FROM schedules WHERE tenant = ? AND workflow = ?",
        )],
    )
    .await?;
    super::pauses::forget(
        tx,
        &super::PauseScope::Workflow {
            tenant: tenant.clone(),
            name: name.clone(),
        },
    )
    .await?;
    // Versions are kept (runs refer to them) but hidden.
    sqlx::query("UPDATE workflows SET deleted = 1 WHERE tenant = ? AND name = ?")
        .bind(tenant.as_str())
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(subject(format!("workflow {tenant}/{name}")))
}

pub(super) async fn create_schedule(
    tx: &mut SqliteConnection,
    context: Context,
    s: &Schedule,
) -> Result<Applied, ApplyError> {
    let doing = format!("creating schedule `{}` of tenant `{}`", s.name, s.tenant);
    let placed = check_schedule(tx, s, &doing).await?;
    if schedule_exists(tx, s).await? {
        return Err(Refusal::Exists {
            doing,
            kind: "schedule",
            name: format!("{}/{}", s.tenant, s.name),
        }
        .into());
    }
    // One created again under an old name is a new identity: its versions go on from
    // the old one's, so an agent that missed the delete drops the old calendar.
    let version = next_version(tx, Versioned::Schedule, &s.tenant, &s.name).await?;
    sqlx::query(
        "INSERT INTO schedules \
         (tenant, name, workflow, environment, version, doc, cluster, partition, created_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(s.tenant.as_str())
    .bind(s.name.as_str())
    .bind(s.workflow.as_str())
    .bind(s.environment.as_str())
    .bind(version)
    .bind(doc(s))
    .bind(&placed.cluster)
    .bind(placed.partition)
    .bind(context.at_ms)
    .execute(&mut *tx)
    .await?;
    Ok(Applied {
        version: Some(version as u64),
        detail: backfill_offer(s, context.at_ms),
        ..subject(format!("schedule {}/{}", s.tenant, s.name))
    })
}

/// A schedule created with a `start` in the past fires from its creation on: the fire times
/// before are offered as a backfill (`{"backfill_offer": {"from", "to", "records"}}`).
fn backfill_offer(s: &Schedule, created_ms: i64) -> Option<String> {
    let start = s.spec.start?;
    let calendar = s.spec.calendar().ok()?;
    let after = start - chrono::Duration::milliseconds(1);
    let mut last = None;
    let mut records = 0u64;
    for t in calendar
        .fire_times(after)
        .take_while(|t| t.timestamp_millis() < created_ms)
        .take(super::backfills::MOST)
    {
        records += 1;
        last = Some(t);
    }
    let last = last?;
    let at =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Some(
        serde_json::json!({"backfill_offer": {
            "from": at(start),
            "to": at(last),
            "records": records,
        }})
        .to_string(),
    )
}

pub(super) async fn update_schedule(
    tx: &mut SqliteConnection,
    s: &Schedule,
) -> Result<Applied, ApplyError> {
    let doing = format!("updating schedule `{}` of tenant `{}`", s.name, s.tenant);
    let placed = check_schedule(tx, s, &doing).await?;
    let Some((current, version)) = stored_schedule(tx, &s.tenant, &s.name).await? else {
        return Err(Refusal::Missing {
            doing,
            kind: "schedule",
            name: format!("{}/{}", s.tenant, s.name),
        }
        .into());
    };
    if current == *s {
        return Ok(unchanged(
            format!("schedule {}/{}", s.tenant, s.name),
            version,
        ));
    }
    let version = next_version(tx, Versioned::Schedule, &s.tenant, &s.name).await?;
    sqlx::query(
        "UPDATE schedules SET workflow = ?, environment = ?, version = ?, doc = ?, \
         cluster = ?, partition = ? WHERE tenant = ? AND name = ?",
    )
    .bind(s.workflow.as_str())
    .bind(s.environment.as_str())
    .bind(version)
    .bind(doc(s))
    .bind(&placed.cluster)
    .bind(placed.partition)
    .bind(s.tenant.as_str())
    .bind(s.name.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(Applied {
        version: Some(version as u64),
        ..subject(format!("schedule {}/{}", s.tenant, s.name))
    })
}

/// Merges `p`'s patch into the schedule as it is now, then updates it with the result.
pub(super) async fn patch_schedule(
    tx: &mut SqliteConnection,
    p: &SchedulePatch,
) -> Result<Applied, ApplyError> {
    let doing = format!("updating schedule `{}` of tenant `{}`", p.name, p.tenant);
    let Some((current, _)) = stored_schedule(tx, &p.tenant, &p.name).await? else {
        return Err(Refusal::Missing {
            doing,
            kind: "schedule",
            name: format!("{}/{}", p.tenant, p.name),
        }
        .into());
    };
    let patch: serde_json::Value = serde_json::from_str(&p.patch)
        .map_err(|e| invalid(&doing, "patch", &format!("not JSON: {e}")))?;
    if !patch.is_object() {
        return Err(invalid(
            &doing,
            "patch",
            "must be a JSON object of the fields to change",
        ));
    }
    let mut merged = serde_json::to_value(&current).expect("a schedule is a JSON object");
    for (field, now) in [("tenant", &current.tenant), ("name", &current.name)] {
        if let Some(given) = patch.get(field)
            && given.as_str() != Some(now.as_str())
        {
            return Err(invalid(
                &doing,
                field,
                "names the schedule and cannot be patched (delete it and create it again)",
            ));
        }
    }
    merge_patch(&mut merged, &patch);
    let schedule: Schedule = serde_path_to_error::deserialize(merged).map_err(|e| {
        // A field removed that has no default is missing from the schedule itself.
        let field = match e.path().to_string() {
            root if root == "." => "patch".to_owned(),
            field => field,
        };
        invalid(&doing, &field, &e.into_inner().to_string())
    })?;
    update_schedule(tx, &schedule).await
}

/// RFC 7396: `patch`'s fields replace `target`'s, objects merge, `null` removes. One
/// exception: an object whose `policy` tag changes replaces the old one whole, so a catch-up
/// policy changed from `all` to `none` does not keep `all`'s window.
fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let serde_json::Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    let retagged = matches!(
        (target.get("policy"), patch.get("policy")),
        (Some(old), Some(new)) if old != new
    );
    if retagged || !target.is_object() {
        *target = serde_json::Value::Object(serde_json::Map::new());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (field, value) in fields {
        if value.is_null() {
            target.remove(field);
        } else {
            merge_patch(
                target
                    .entry(field.clone())
                    .or_insert(serde_json::Value::Null),
                value,
            );
        }
    }
}

/// A schedule as stored, with its version (none: no such schedule).
async fn stored_schedule(
    tx: &mut SqliteConnection,
    tenant: &Name,
    name: &Name,
) -> Result<Option<(Schedule, i64)>, ApplyError> {
    let row = sqlx::query("SELECT doc, version FROM schedules WHERE tenant = ? AND name = ?")
        .bind(tenant.as_str())
        .bind(name.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    match row {
        None => Ok(None),
        Some(row) => Ok(Some((
            read_doc(&row.get::<String, _>("doc"))?,
            row.get("version"),
        ))),
    }
}

/// What an apply or update that changes nothing comes to: the current version, no new one.
fn unchanged(subject_text: String, version: i64) -> Applied {
    Applied {
        version: Some(version as u64),
        detail: Some(r#"{"unchanged":true}"#.into()),
        ..subject(subject_text)
    }
}

pub(super) async fn delete_schedule(
    tx: &mut SqliteConnection,
    context: Context,
    tenant: &Name,
    name: &Name,
) -> Result<Applied, ApplyError> {
    let doing = format!("deleting schedule `{name}` of tenant `{tenant}`");
    let deleted = sqlx::query("DELETE FROM schedules WHERE tenant = ? AND name = ?")
        .bind(tenant.as_str())
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(Refusal::Missing {
            doing,
            kind: "schedule",
            name: format!("{tenant}/{name}"),
        }
        .into());
    }
    super::pauses::forget(
        tx,
        &super::PauseScope::Schedule {
            tenant: tenant.clone(),
            name: name.clone(),
        },
    )
    .await?;
    super::backfills::forget_schedule(tx, context, &format!("{tenant}.{name}")).await?;
    // Its cursor goes with it: one created again under the name fires from its own
    // creation (the assignments also never go back before it, for a late report).
    sqlx::query("DELETE FROM schedule_cursors WHERE schedule_id = ?")
        .bind(format!("{tenant}.{name}"))
        .execute(&mut *tx)
        .await?;
    Ok(subject(format!("schedule {tenant}/{name}")))
}

/// Where a schedule's records are fired: its environment's cluster and its partition there.
struct Placement {
    cluster: String,
    partition: u32,
}

/// Checks everything a created or updated schedule must satisfy; writes nothing.
async fn check_schedule(
    tx: &mut SqliteConnection,
    s: &super::Schedule,
    doing: &str,
) -> Result<Placement, ApplyError> {
    let doing = doing.to_owned();
    present(tx, Table::Tenants, &s.tenant, &doing).await?;
    if !workflow_exists(tx, &s.tenant, &s.workflow).await? {
        return Err(Refusal::Missing {
            doing,
            kind: "workflow",
            name: format!("{}/{}", s.tenant, s.workflow),
        }
        .into());
    }
    must_be_granted(tx, &s.tenant, &s.environment, &doing).await?;
    s.spec.calendar().map_err(|e| Refusal::Invalid {
        doing: doing.clone(),
        field: format!("spec.{}", e.field()),
        problem: e.to_string(),
    })?;
    let id = ScheduleId::new(s.id()).map_err(|e| invalid(&doing, "name", &e.to_string()))?;
    let row = sqlx::query(
        "SELECT c.name, c.doc FROM environments e JOIN clusters c ON c.name = e.cluster \
         WHERE e.name = ?",
    )
    .bind(s.environment.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let cluster: super::Cluster = read_doc(&row.get::<String, _>("doc"))?;
    Ok(Placement {
        cluster: row.get("name"),
        partition: meridian_domain::run::partition_of(&id, cluster.partitions),
    })
}

/// Whether `s` names a schedule that exists (its versions come from `name_versions`).
async fn schedule_exists(tx: &mut SqliteConnection, s: &super::Schedule) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM schedules WHERE tenant = ? AND name = ?)")
        .bind(s.tenant.as_str())
        .bind(s.name.as_str())
        .fetch_one(&mut *tx)
        .await
}

/// What has versions that must never repeat under one name.
#[derive(Clone, Copy)]
enum Versioned {
    Workflow,
    Schedule,
}

/// The next version of `tenant`'s `name`: one past the highest it has ever had (kept in
/// `name_versions` across deletes of it and of its tenant), recorded as taken.
async fn next_version(
    tx: &mut SqliteConnection,
    kind: Versioned,
    tenant: &Name,
    name: &Name,
) -> sqlx::Result<i64> {
    let kind = match kind {
        Versioned::Workflow => "workflow",
        Versioned::Schedule => "schedule",
    };
    sqlx::query_scalar(
        "INSERT INTO name_versions (kind, tenant, name, version) VALUES (?, ?, ?, 1) \
         ON CONFLICT (kind, tenant, name) DO UPDATE SET version = version + 1 \
         RETURNING version",
    )
    .bind(kind)
    .bind(tenant.as_str())
    .bind(name.as_str())
    .fetch_one(&mut *tx)
    .await
}
