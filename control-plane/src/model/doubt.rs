//! Records in doubt after a takeover (issue #19): when a partition goes to another agent
//! because its holder's lease ran out, the records that holder may have fired — due after the
//! last fire the plane acknowledged and before its lease's end — are *in doubt* for schedules
//! whose takeover policy is `wait`: the new holder runs none of them (its records start after
//! the range) until they are settled:
//!
//! - by the old holder ([`settle_relinquished`]): once it has every report of the partition
//!   committed it says so (`relinquished` in a heartbeat); a record it reported is settled by
//!   that report (ran, skipped, or given back and handed to the holder), and one it never
//!   reported it never ran: handed to the holder, which fires it under the catch-up policy;
//! - by an operator ([`resolve`]): "run" hands every unsettled record to the holder, "mark
//!   done" records each as skipped.
//!
//! A record handed to the holder is a row of `handed` until an agent takes it; assignments
//! carry them as `returned`.

use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection};

use super::checks::{Table, json, present, read_doc, subject};
use super::outcome::{Applied, ApplyError, Context, Refusal};
use super::{ResolveDoubts, Schedule};
use meridian_domain::{FireId, ScheduleId, TakeoverPolicy};

/// At most this many fire records of one range are looked at (a range spans about a lease).
const MOST: usize = 100_000;

/// How an operator settles records in doubt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Nobody ran them, or running again is fine: the partition's holder runs them (under
    /// the schedule's catch-up policy).
    Run,
    /// They ran (or must not run): recorded as skipped, saying so.
    MarkDone,
}

/// One range of records in doubt, as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InDoubt {
    /// `<tenant>.<name>`.
    pub schedule: String,
    pub tenant: String,
    pub cluster: String,
    pub partition: u32,
    /// The agent that held the partition and may have fired them.
    pub holder: String,
    /// When the plane last heard from it (ms).
    pub holder_last_heard_ms: Option<i64>,
    /// Who holds the partition now.
    pub current_holder: Option<String>,
    /// The range: after this fire time (ms) …
    pub after_ms: i64,
    /// … up to this one (the old holder's lease end).
    pub through_ms: i64,
    /// When the takeover put them in doubt (ms).
    pub since_ms: i64,
    /// The records of the range not settled yet (fire times, ms).
    pub records: Vec<i64>,
}

/// Before `partition` of `cluster` goes to another agent: for every schedule of it with
/// takeover `wait`, the records after its acknowledged fire up to `through_ms` (the old
/// holder's lease end) are put in doubt for `holder`'s tenure (`first_epoch..=last_epoch`).
#[allow(clippy::too_many_arguments)]
pub async fn open(
    tx: &mut SqliteConnection,
    now: i64,
    cluster: &str,
    partition: u32,
    holder: &str,
    first_epoch: u64,
    last_epoch: u64,
    through_ms: i64,
) -> sqlx::Result<()> {
    let rows = sqlx::query(
        "SELECT s.doc, s.created_ms, c.fire_ms FROM schedules s \
         LEFT JOIN schedule_cursors c ON c.schedule_id = s.tenant || '.' || s.name \
         WHERE s.cluster = ? AND s.partition = ?",
    )
    .bind(cluster)
    .bind(i64::from(partition))
    .fetch_all(&mut *tx)
    .await?;
    for row in rows {
        let schedule: Schedule = read_doc(&row.get::<String, _>("doc"))?;
        if schedule.takeover != TakeoverPolicy::Wait {
            continue;
        }
        let created: i64 = row.get("created_ms");
        let after = row
            .get::<Option<i64>, _>("fire_ms")
            .map_or(created, |c| c.max(created));
        // A range already in doubt (an earlier takeover) is not this holder's to settle.
        let doubted: Option<i64> =
            sqlx::query_scalar("SELECT MAX(through_ms) FROM doubts WHERE schedule_id = ?")
                .bind(schedule.id())
                .fetch_one(&mut *tx)
                .await?;
        let after = doubted.map_or(after, |d| d.max(after));
        if through_ms <= after || fires(&schedule, after, through_ms).is_empty() {
            continue;
        }
        sqlx::query(
            "INSERT INTO doubts (schedule_id, cluster, partition, holder, first_epoch, \
             last_epoch, after_ms, through_ms, since_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(schedule.id())
        .bind(cluster)
        .bind(i64::from(partition))
        .bind(holder)
        .bind(first_epoch as i64)
        .bind(last_epoch as i64)
        .bind(after)
        .bind(through_ms)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// The fire times of `schedule` in `(after_ms, through_ms]` (at most [`MOST`]).
fn fires(schedule: &Schedule, after_ms: i64, through_ms: i64) -> Vec<i64> {
    let (Ok(calendar), Some(after)) = (
        schedule.spec.calendar(),
        chrono::DateTime::from_timestamp_millis(after_ms),
    ) else {
        return Vec::new();
    };
    calendar
        .fire_times(after)
        .map(|t| t.timestamp_millis())
        .take_while(|t| *t <= through_ms)
        .take(MOST)
        .collect()
}

/// A range in doubt, as stored.
struct Range {
    schedule: Schedule,
    holder: String,
    first_epoch: i64,
    after_ms: i64,
    through_ms: i64,
}

/// Which ranges in doubt [`ranges`] reads.
enum Which<'a> {
    /// `holder`'s, of `partition` of `cluster`, from tenures that began at `epoch` or before.
    Tenure {
        holder: &'a str,
        cluster: &'a str,
        partition: u32,
        epoch: u64,
    },
    /// One schedule's (`<tenant>.<name>`).
    Schedule(&'a str),
    /// Every schedule's of a tenant.
    Tenant(&'a str),
}

async fn ranges(tx: &mut SqliteConnection, which: Which<'_>) -> sqlx::Result<Vec<Range>> {
    let filter = match which {
        Which::Tenure { .. } => {
            "d.holder = ? AND d.cluster = ? AND d.partition = ? AND d.first_epoch <= ?"
        }
        Which::Schedule(_) => "d.schedule_id = ?",
        Which::Tenant(_) => "s.tenant = ?",
    };
    let sql = format!(
        "SELECT d.holder, d.first_epoch, d.after_ms, d.through_ms, s.doc FROM doubts d \
         JOIN schedules s ON s.tenant || '.' || s.name = d.schedule_id WHERE {filter} \
         ORDER BY d.schedule_id, d.first_epoch"
    );
    let query = sqlx::query(&sql);
    let query = match which {
        Which::Tenure {
            holder,
            cluster,
            partition,
            epoch,
        } => query
            .bind(holder)
            .bind(cluster)
            .bind(i64::from(partition))
            .bind(epoch as i64),
        Which::Schedule(id) | Which::Tenant(id) => query.bind(id),
    };
    query
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| {
            Ok(Range {
                schedule: read_doc(&row.get::<String, _>("doc"))?,
                holder: row.get("holder"),
                first_epoch: row.get("first_epoch"),
                after_ms: row.get("after_ms"),
                through_ms: row.get("through_ms"),
            })
        })
        .collect()
}

/// What the history says of one record of a range.
enum Settled {
    /// No run: nobody reported it.
    Unreported,
    /// The old holder took it and has not said more (it may still start it, or give it back).
    TakenBy(String),
    /// Started, ended, skipped or given back: settled.
    Done,
}

async fn settled(tx: &mut SqliteConnection, schedule: &str, fire_ms: i64) -> sqlx::Result<Settled> {
    let id = run_id(schedule, fire_ms);
    let row: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT state, agent FROM runs WHERE run_id = ?")
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
    let handed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM handed WHERE schedule_id = ? AND fire_ms = ?)",
    )
    .bind(schedule)
    .bind(fire_ms)
    .fetch_one(&mut *tx)
    .await?;
    Ok(match row {
        _ if handed => Settled::Done,
        None => Settled::Unreported,
        Some((state, agent)) if state == "queued" => Settled::TakenBy(agent.unwrap_or_default()),
        Some(_) => Settled::Done,
    })
}

fn run_id(schedule: &str, fire_ms: i64) -> String {
    let at = chrono::DateTime::from_timestamp_millis(fire_ms).unwrap_or_default();
    match ScheduleId::new(schedule) {
        Ok(id) => FireId::derive(&id, at).to_string(),
        Err(_) => String::new(),
    }
}

/// Hands `fire_ms` of `schedule` to whoever holds its partition. A backfill's record (given
/// back by a holder whose lease lapsed, or settled out of a doubt) is handed as one again.
pub async fn hand(
    tx: &mut SqliteConnection,
    context: Context,
    schedule: &str,
    fire_ms: i64,
) -> sqlx::Result<()> {
    let backfill: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM backfill_records WHERE run_id = ? AND state = 'handed')",
    )
    .bind(run_id(schedule, fire_ms))
    .fetch_one(&mut *tx)
    .await?;
    put(tx, context, schedule, fire_ms, backfill).await
}

/// Hands `fire_ms` of `schedule` to whoever holds its partition for a backfill: it runs
/// whatever the catch-up and overlap policies say.
pub async fn hand_backfill(
    tx: &mut SqliteConnection,
    context: Context,
    schedule: &str,
    fire_ms: i64,
) -> sqlx::Result<()> {
    put(tx, context, schedule, fire_ms, true).await
}

async fn put(
    tx: &mut SqliteConnection,
    context: Context,
    schedule: &str,
    fire_ms: i64,
    backfill: bool,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO handed (schedule_id, fire_ms, at_ms, backfill) VALUES (?, ?, ?, ?) \
         ON CONFLICT DO UPDATE SET backfill = MAX(backfill, excluded.backfill)",
    )
    .bind(schedule)
    .bind(fire_ms)
    .bind(context.at_ms)
    .bind(backfill)
    .execute(&mut *tx)
    .await?;
    super::checks::definitions_moved(tx, context.index).await
}

/// A record was taken by an agent: it is handed to nobody any more.
pub async fn taken(tx: &mut SqliteConnection, schedule: &str, fire_ms: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM handed WHERE schedule_id = ? AND fire_ms = ?")
        .bind(schedule)
        .bind(fire_ms)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// `agent` has every report of `partition` of `cluster` up to `epoch` committed: its ranges
/// in doubt there are settled — what it never reported it never ran, and is handed to the
/// holder. (What it took and has not started it gives back itself, or it starts it too late
/// and the start is refused.) Returns how many records were handed.
pub async fn settle_relinquished(
    tx: &mut SqliteConnection,
    context: Context,
    agent: &str,
    cluster: &str,
    partition: u32,
    epoch: u64,
) -> sqlx::Result<u64> {
    let found = ranges(
        tx,
        Which::Tenure {
            holder: agent,
            cluster,
            partition,
            epoch,
        },
    )
    .await?;
    let mut handed = 0;
    for range in found {
        let id = range.schedule.id();
        for fire in fires(&range.schedule, range.after_ms, range.through_ms) {
            if let Settled::Unreported = settled(tx, &id, fire).await? {
                hand(tx, context, &id, fire).await?;
                handed += 1;
            }
        }
        forget(tx, &id, &range).await?;
    }
    Ok(handed)
}

async fn forget(tx: &mut SqliteConnection, schedule: &str, range: &Range) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM doubts WHERE schedule_id = ? AND holder = ? AND first_epoch = ?")
        .bind(schedule)
        .bind(&range.holder)
        .bind(range.first_epoch)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// An operator settles the records in doubt of `tenant` (of its schedule `schedule` only, if
/// given). Returns how many records it settled.
pub async fn resolve(
    tx: &mut SqliteConnection,
    context: Context,
    tenant: &str,
    schedule: Option<&str>,
    how: Resolution,
    by: &str,
) -> sqlx::Result<u64> {
    let found = match schedule {
        Some(name) => ranges(tx, Which::Schedule(&format!("{tenant}.{name}"))).await?,
        None => ranges(tx, Which::Tenant(tenant)).await?,
    };
    let mut count = 0;
    for range in found {
        let id = range.schedule.id();
        for fire in fires(&range.schedule, range.after_ms, range.through_ms) {
            let taken_by = match settled(tx, &id, fire).await? {
                Settled::Done => continue,
                Settled::Unreported => None,
                Settled::TakenBy(agent) => Some(agent),
            };
            count += 1;
            match how {
                Resolution::Run => {
                    if taken_by.is_some() {
                        // Taken by the old holder and never said to have started: handed
                        // over (should it start it yet, that start is refused).
                        sqlx::query(
                            "UPDATE runs SET state = 'returned', updated_ms = ?, message = ? \
                             WHERE run_id = ?",
                        )
                        .bind(context.at_ms)
                        .bind(format!(
                            "in doubt after a takeover; resolved by {by}: run it"
                        ))
                        .bind(run_id(&id, fire))
                        .execute(&mut *tx)
                        .await?;
                    }
                    hand(tx, context, &id, fire).await?;
                }
                Resolution::MarkDone => {
                    mark_done(tx, context, &range, fire, taken_by.is_some(), by).await?
                }
            }
        }
        forget(tx, &id, &range).await?;
    }
    Ok(count)
}

/// Records `fire` of `range`'s schedule as skipped: marked done by an operator.
async fn mark_done(
    tx: &mut SqliteConnection,
    context: Context,
    range: &Range,
    fire: i64,
    taken: bool,
    by: &str,
) -> sqlx::Result<()> {
    let s = &range.schedule;
    let id = run_id(&s.id(), fire);
    let message = format!(
        "in doubt after a takeover from `{}`; resolved by {by}: marked done",
        range.holder
    );
    if taken {
        sqlx::query(
            "UPDATE runs SET state = 'skipped', finished_ms = ?1, updated_ms = ?1, message = ?2 \
             WHERE run_id = ?3",
        )
        .bind(context.at_ms)
        .bind(&message)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        return Ok(());
    }
    let version = super::job::latest_workflow(tx, s.tenant.as_str(), s.workflow.as_str())
        .await?
        .map_or(0, |(v, _)| v);
    sqlx::query(
        "INSERT INTO runs (run_id, tenant, workflow, workflow_version, schedule, fire_ms, \
         environment, cluster, dc, state, agent, epoch, finished_ms, message, starts, \
         updated_ms) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, c.name, c.dc, 'skipped', NULL, 0, ?8, \
         ?9, 0, ?8 FROM doubts d JOIN clusters c ON c.name = d.cluster \
         WHERE d.schedule_id = ?5 AND d.holder = ?10 AND d.first_epoch = ?11 \
         ON CONFLICT (run_id) DO NOTHING",
    )
    .bind(&id)
    .bind(s.tenant.as_str())
    .bind(s.workflow.as_str())
    .bind(version as i64)
    .bind(s.id())
    .bind(fire)
    .bind(s.environment.as_str())
    .bind(context.at_ms)
    .bind(&message)
    .bind(&range.holder)
    .bind(range.first_epoch)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO schedule_cursors (schedule_id, fire_ms) VALUES (?, ?) \
         ON CONFLICT (schedule_id) DO UPDATE SET fire_ms = MAX(fire_ms, excluded.fire_ms)",
    )
    .bind(s.id())
    .bind(fire)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Every range in doubt (of `tenants`, or all with `None`), with its unsettled records.
pub async fn list(
    tx: &mut SqliteConnection,
    tenants: Option<&[String]>,
) -> sqlx::Result<Vec<InDoubt>> {
    let rows = sqlx::query(
        "SELECT d.schedule_id, d.cluster, d.partition, d.holder, d.after_ms, d.through_ms, \
         d.since_ms, s.tenant, s.doc, a.last_seen_ms, l.holder AS current FROM doubts d \
         JOIN schedules s ON s.tenant || '.' || s.name = d.schedule_id \
         LEFT JOIN agents a ON a.hostname = d.holder \
         LEFT JOIN leases l ON l.cluster = d.cluster AND l.partition = d.partition \
         ORDER BY d.schedule_id, d.since_ms",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Vec::new();
    for row in rows {
        let tenant: String = row.get("tenant");
        if tenants.is_some_and(|t| !t.contains(&tenant)) {
            continue;
        }
        let schedule: Schedule = read_doc(&row.get::<String, _>("doc"))?;
        let (after_ms, through_ms): (i64, i64) = (row.get("after_ms"), row.get("through_ms"));
        let id = schedule.id();
        let mut records = Vec::new();
        for fire in fires(&schedule, after_ms, through_ms) {
            if !matches!(settled(tx, &id, fire).await?, Settled::Done) {
                records.push(fire);
            }
        }
        out.push(InDoubt {
            schedule: id,
            tenant,
            cluster: row.get("cluster"),
            partition: row.get::<i64, _>("partition") as u32,
            holder: row.get("holder"),
            holder_last_heard_ms: row.get("last_seen_ms"),
            current_holder: row.get("current"),
            after_ms,
            through_ms,
            since_ms: row.get("since_ms"),
            records,
        });
    }
    Ok(out)
}

/// What settling records in doubt did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Resolved {
    /// How many records it settled.
    pub settled: u64,
}

/// Applies an operator's [`ResolveDoubts`]: the tenant (and the schedule, if named) must exist.
pub async fn resolve_command(
    tx: &mut SqliteConnection,
    context: Context,
    r: &ResolveDoubts,
) -> Result<Applied, ApplyError> {
    let doing = match &r.schedule {
        Some(s) => format!(
            "settling the records in doubt of schedule `{s}` of tenant `{}`",
            r.tenant
        ),
        None => format!("settling the records in doubt of tenant `{}`", r.tenant),
    };
    present(tx, Table::Tenants, &r.tenant, &doing).await?;
    if let Some(name) = &r.schedule {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM schedules WHERE tenant = ? AND name = ?)",
        )
        .bind(r.tenant.as_str())
        .bind(name.as_str())
        .fetch_one(&mut *tx)
        .await?;
        if !exists {
            return Err(Refusal::Missing {
                doing,
                kind: "schedule",
                name: format!("{}/{name}", r.tenant),
            }
            .into());
        }
    }
    let settled = resolve(
        tx,
        context,
        r.tenant.as_str(),
        r.schedule.as_ref().map(|s| s.as_str()),
        r.resolution,
        "an operator",
    )
    .await?;
    Ok(Applied {
        detail: Some(json(&Resolved { settled })),
        ..subject(match &r.schedule {
            Some(s) => format!("in doubt of {}/{s}", r.tenant),
            None => format!("in doubt of {}", r.tenant),
        })
    })
}
