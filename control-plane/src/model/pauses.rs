//! Pauses: a schedule, a workflow (every schedule running it), a tenant or an environment held
//! still — DolphinScheduler's offline, for a release or an incident. A pause is a row of
//! `pauses`; a schedule any pause covers is sent to its holder as paused
//! (`Assignment::paused`), which records its due records skipped with the message
//! [`PAUSED`] and runs nothing. Resuming goes on from the next record, or with `catch_up` runs
//! what the pause skipped as far as each schedule's catch-up policy says: those records'
//! history moves from skipped to returned and the holder is handed them, as a record given back.
//!
//! Deciding before writing, as every room: what is checked first, then one write.

use chrono::DateTime;
use meridian_domain::run::PAUSED;
use meridian_domain::{FireRecord, ScheduleId};
use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::checks::{Table, present, read_doc, subject, workflow_exists};
use super::outcome::{Applied, ApplyError, Context, Refusal};
use super::{Name, Schedule};

/// What a pause holds still.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PauseScope {
    Schedule {
        tenant: Name,
        name: Name,
    },
    /// Every schedule that runs the workflow.
    Workflow {
        tenant: Name,
        name: Name,
    },
    /// Every schedule of the tenant.
    Tenant {
        name: Name,
    },
    /// Every schedule placed on the environment, whoever's.
    Environment {
        name: Name,
    },
}

impl PauseScope {
    /// The tenant it belongs to (none: an environment, the federation's).
    pub fn tenant(&self) -> Option<&Name> {
        match self {
            Self::Schedule { tenant, .. } | Self::Workflow { tenant, .. } => Some(tenant),
            Self::Tenant { name } => Some(name),
            Self::Environment { .. } => None,
        }
    }
}

impl std::fmt::Display for PauseScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Schedule { tenant, name } => write!(f, "schedule {tenant}/{name}"),
            Self::Workflow { tenant, name } => write!(f, "workflow {tenant}/{name}"),
            Self::Tenant { name } => write!(f, "tenant {name}"),
            Self::Environment { name } => write!(f, "environment {name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    pub scope: PauseScope,
    /// Why, for whoever looks (`release 4.2`).
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    pub scope: PauseScope,
    /// Run what the pause skipped, as far as each schedule's catch-up policy says; without it,
    /// the schedules go on from their next record.
    #[serde(default)]
    pub catch_up: bool,
}

/// A pause as it is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PauseRecord {
    pub scope: PauseScope,
    /// When it was applied (ms since the epoch).
    pub since_ms: i64,
    pub reason: String,
}

/// How a scope is keyed in `pauses`.
fn key(scope: &PauseScope) -> (&'static str, &str, &str) {
    match scope {
        PauseScope::Schedule { tenant, name } => ("schedule", tenant.as_str(), name.as_str()),
        PauseScope::Workflow { tenant, name } => ("workflow", tenant.as_str(), name.as_str()),
        PauseScope::Tenant { name } => ("tenant", name.as_str(), ""),
        PauseScope::Environment { name } => ("environment", "", name.as_str()),
    }
}

fn scope_of(kind: &str, tenant: &str, name: &str) -> Option<PauseScope> {
    let n = |s: &str| Name::new(s).ok();
    Some(match kind {
        "schedule" => PauseScope::Schedule {
            tenant: n(tenant)?,
            name: n(name)?,
        },
        "workflow" => PauseScope::Workflow {
            tenant: n(tenant)?,
            name: n(name)?,
        },
        "tenant" => PauseScope::Tenant { name: n(tenant)? },
        "environment" => PauseScope::Environment { name: n(name)? },
        _ => return None,
    })
}

/// Refused unless what `scope` names exists.
async fn must_exist(
    tx: &mut SqliteConnection,
    scope: &PauseScope,
    doing: &str,
) -> Result<(), ApplyError> {
    let missing = |kind, name| -> ApplyError {
        Refusal::Missing {
            doing: doing.to_owned(),
            kind,
            name,
        }
        .into()
    };
    match scope {
        PauseScope::Schedule { tenant, name } => {
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM schedules WHERE tenant = ? AND name = ?)",
            )
            .bind(tenant.as_str())
            .bind(name.as_str())
            .fetch_one(&mut *tx)
            .await?;
            if !exists {
                return Err(missing("schedule", format!("{tenant}/{name}")));
            }
        }
        PauseScope::Workflow { tenant, name } => {
            if !workflow_exists(tx, tenant, name).await? {
                return Err(missing("workflow", format!("{tenant}/{name}")));
            }
        }
        PauseScope::Tenant { name } => present(tx, Table::Tenants, name, doing).await?,
        PauseScope::Environment { name } => present(tx, Table::Environments, name, doing).await?,
    }
    Ok(())
}

pub(super) async fn pause(
    tx: &mut SqliteConnection,
    context: Context,
    p: &Pause,
) -> Result<Applied, ApplyError> {
    let doing = format!("pausing {}", p.scope);
    must_exist(tx, &p.scope, &doing).await?;
    let (kind, tenant, name) = key(&p.scope);
    // Paused already: kept as it is, since when it was first paused.
    let inserted = sqlx::query(
        "INSERT INTO pauses (scope, tenant, name, since_ms, reason) VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT DO NOTHING",
    )
    .bind(kind)
    .bind(tenant)
    .bind(name)
    .bind(context.at_ms)
    .bind(&p.reason)
    .execute(&mut *tx)
    .await?;
    let mut applied = subject(p.scope.to_string());
    if inserted.rows_affected() == 0 {
        applied.detail = Some(r#"{"unchanged":true}"#.into());
    }
    Ok(applied)
}

pub(super) async fn resume(
    tx: &mut SqliteConnection,
    context: Context,
    r: &Resume,
) -> Result<Applied, ApplyError> {
    let doing = format!("resuming {}", r.scope);
    must_exist(tx, &r.scope, &doing).await?;
    let (kind, tenant, name) = key(&r.scope);
    let since: Option<i64> = sqlx::query_scalar(
        "DELETE FROM pauses WHERE scope = ? AND tenant = ? AND name = ? RETURNING since_ms",
    )
    .bind(kind)
    .bind(tenant)
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(since_ms) = since else {
        // Not paused itself; say what does hold it, if anything.
        let covering = covering_scopes(tx, &r.scope).await?;
        let problem = if covering.is_empty() {
            "is not paused".to_owned()
        } else {
            format!(
                "is not paused itself; it is held by the pause of {} (resume that)",
                covering
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(Refusal::Invalid {
            doing,
            field: "scope".into(),
            problem: format!("{} {problem}", r.scope),
        }
        .into());
    };
    let mut handed = 0usize;
    if r.catch_up {
        let pauses = all(tx).await?;
        for schedule in schedules_in(tx, &r.scope).await? {
            // Still held by another pause: it catches up when that one is lifted.
            if !covering(&pauses, &schedule).is_empty() {
                continue;
            }
            handed += catch_up(tx, context, &schedule, since_ms).await?;
        }
    }
    let mut applied = subject(r.scope.to_string());
    if r.catch_up {
        applied.detail = Some(format!(r#"{{"caught_up":{handed}}}"#));
    }
    Ok(applied)
}

/// Hands the holder the records of `schedule` the pause (since `since_ms`) skipped that its
/// catch-up policy runs now; returns how many.
async fn catch_up(
    tx: &mut SqliteConnection,
    context: Context,
    schedule: &Schedule,
    since_ms: i64,
) -> Result<usize, ApplyError> {
    let Ok(id) = ScheduleId::new(schedule.id()) else {
        return Ok(0);
    };
    // Every record skipped while paused since the last one that was not: since this pause,
    // or since an earlier one that overlapped it (a tenant's, then the schedule's).
    let last_unpaused: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(fire_ms) FROM runs WHERE schedule = ?1 AND fire_ms < ?2 \
         AND NOT (state = 'skipped' AND message = ?3)",
    )
    .bind(id.as_str())
    .bind(since_ms)
    .bind(PAUSED)
    .fetch_one(&mut *tx)
    .await?;
    let skipped: Vec<i64> = sqlx::query_scalar(
        "SELECT fire_ms FROM runs WHERE schedule = ? AND fire_ms > ? AND state = 'skipped' \
         AND message = ? ORDER BY fire_ms",
    )
    .bind(id.as_str())
    .bind(last_unpaused.unwrap_or(i64::MIN))
    .bind(PAUSED)
    .fetch_all(&mut *tx)
    .await?;
    let records: Vec<FireRecord> = skipped
        .iter()
        .filter_map(|ms| DateTime::from_timestamp_millis(*ms))
        .map(|at| FireRecord::new(id.clone(), at))
        .collect();
    let now = DateTime::from_timestamp_millis(context.at_ms).unwrap_or_default();
    let plan = schedule.spec.catch_up.decide(&records, now);
    for record in &plan.run {
        let fire_ms = record.fire_at.timestamp_millis();
        sqlx::query(
            "UPDATE runs SET state = 'returned', finished_ms = NULL, updated_ms = ?, \
             message = 'paused; run on resume (catch-up)' WHERE run_id = ?",
        )
        .bind(context.at_ms)
        .bind(record.id.as_str())
        .execute(&mut *tx)
        .await?;
        super::doubt::hand(tx, context, id.as_str(), fire_ms).await?;
    }
    Ok(plan.run.len())
}

/// The schedules `scope` covers.
async fn schedules_in(
    tx: &mut SqliteConnection,
    scope: &PauseScope,
) -> Result<Vec<Schedule>, ApplyError> {
    let (sql, binds): (&str, Vec<&str>) = match scope {
        PauseScope::Schedule { tenant, name } => (
            "SELECT doc FROM schedules WHERE tenant = ? AND name = ?",
            vec![tenant.as_str(), name.as_str()],
        ),
        PauseScope::Workflow { tenant, name } => (
            "SELECT doc FROM schedules WHERE tenant = ? AND workflow = ?",
            vec![tenant.as_str(), name.as_str()],
        ),
        PauseScope::Tenant { name } => (
            "SELECT doc FROM schedules WHERE tenant = ?",
            vec![name.as_str()],
        ),
        PauseScope::Environment { name } => (
            "SELECT doc FROM schedules WHERE environment = ?",
            vec![name.as_str()],
        ),
    };
    let mut query = sqlx::query_scalar::<_, String>(sql);
    for b in binds {
        query = query.bind(b);
    }
    let docs = query.fetch_all(&mut *tx).await?;
    Ok(docs
        .iter()
        .map(|d| read_doc(d))
        .collect::<sqlx::Result<_>>()?)
}

/// The pauses that hold `schedule`: its own, its workflow's, its tenant's, its environment's.
/// The one rule of what a pause covers.
pub fn covering<'a>(pauses: &'a [PauseRecord], schedule: &Schedule) -> Vec<&'a PauseRecord> {
    pauses
        .iter()
        .filter(|p| match &p.scope {
            PauseScope::Schedule { tenant, name } => {
                *tenant == schedule.tenant && *name == schedule.name
            }
            PauseScope::Workflow { tenant, name } => {
                *tenant == schedule.tenant && *name == schedule.workflow
            }
            PauseScope::Tenant { name } => *name == schedule.tenant,
            PauseScope::Environment { name } => *name == schedule.environment,
        })
        .collect()
}

/// The pauses other than `scope`'s own that hold what it names (a schedule: [`covering`]; a
/// workflow: its tenant's; anything else: none).
async fn covering_scopes(
    tx: &mut SqliteConnection,
    scope: &PauseScope,
) -> sqlx::Result<Vec<PauseScope>> {
    let pauses = all(tx).await?;
    let held: Vec<PauseScope> = match scope {
        PauseScope::Schedule { tenant, name } => {
            let d: Option<String> =
                sqlx::query_scalar("SELECT doc FROM schedules WHERE tenant = ? AND name = ?")
                    .bind(tenant.as_str())
                    .bind(name.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            match d {
                Some(d) => covering(&pauses, &read_doc(&d)?)
                    .into_iter()
                    .map(|p| p.scope.clone())
                    .collect(),
                None => vec![],
            }
        }
        PauseScope::Workflow { tenant, .. } => pauses
            .into_iter()
            .map(|p| p.scope)
            .filter(|s| matches!(s, PauseScope::Tenant { name } if name == tenant))
            .collect(),
        _ => vec![],
    };
    Ok(held.into_iter().filter(|s| s != scope).collect())
}

/// Every pause.
pub async fn all(conn: &mut SqliteConnection) -> sqlx::Result<Vec<PauseRecord>> {
    let rows = sqlx::query("SELECT scope, tenant, name, since_ms, reason FROM pauses")
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.iter().filter_map(record).collect())
}

fn record(r: &sqlx::sqlite::SqliteRow) -> Option<PauseRecord> {
    Some(PauseRecord {
        scope: scope_of(r.get("scope"), r.get("tenant"), r.get("name"))?,
        since_ms: r.get("since_ms"),
        reason: r.get("reason"),
    })
}

/// The pause of `scope`, if it is paused itself.
pub async fn of(pool: &SqlitePool, scope: &PauseScope) -> sqlx::Result<Option<PauseRecord>> {
    let (kind, tenant, name) = key(scope);
    let row = sqlx::query(
        "SELECT since_ms, reason FROM pauses WHERE scope = ? AND tenant = ? AND name = ?",
    )
    .bind(kind)
    .bind(tenant)
    .bind(name)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| PauseRecord {
        scope: scope.clone(),
        since_ms: r.get("since_ms"),
        reason: r.get("reason"),
    }))
}

/// Every pause, oldest first: environments' and the tenants' (of `tenant` only, if given).
pub async fn list(pool: &SqlitePool, tenant: Option<&Name>) -> sqlx::Result<Vec<PauseRecord>> {
    let rows = sqlx::query(
        "SELECT scope, tenant, name, since_ms, reason FROM pauses \
         WHERE ?1 IS NULL OR tenant = ?1 OR scope = 'environment' ORDER BY since_ms, scope, tenant, name",
    )
    .bind(tenant.map(Name::as_str))
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().filter_map(record).collect())
}

/// A deleted thing's pause goes with it: one created again under the name is not paused.
pub(super) async fn forget(tx: &mut SqliteConnection, scope: &PauseScope) -> sqlx::Result<()> {
    let (kind, tenant, name) = key(scope);
    sqlx::query("DELETE FROM pauses WHERE scope = ? AND tenant = ? AND name = ?")
        .bind(kind)
        .bind(tenant)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A deleted tenant's pauses, of it and of everything of it.
pub(super) async fn forget_tenant(tx: &mut SqliteConnection, tenant: &Name) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM pauses WHERE tenant = ?")
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(())
}
