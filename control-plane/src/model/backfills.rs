//! Backfills: a range of a schedule's fire times run after the fact — after a fix, for days a
//! new schedule never saw (DolphinScheduler's complement, Airflow's backfill). A backfill is
//! a row of `backfills` with its records in `backfill_records`, in the order they are handed.
//!
//! Its records are the schedule's own (the same ids as on-time records), handed to whoever
//! holds the schedule's partition — as a record given back is, but listed in
//! `Assignment::backfill`, so the holder runs it whatever the catch-up and overlap policies
//! say — at most `parallel` at a time. A record that ran already (`all`) is run again one
//! generation further, as a re-run is. Each run that ends moves its backfill on
//! ([`ended`], from the report that says so): the next records are handed in the same log
//! entry, so every replica hands the same ones, and nothing is handed twice.
//!
//! Deciding before writing, as every room: a refusal comes before any change.

use chrono::{DateTime, Utc};
use meridian_domain::{FireId, ScheduleId};
use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::checks::{Table, doc, invalid, json, present, read_doc, subject};
use super::outcome::{Applied, ApplyError, Context, Refusal};
use super::{Name, Schedule};

/// A range of a schedule's fire times to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backfill {
    pub tenant: Name,
    pub schedule: Name,
    /// The first fire time to consider (a fire exactly at it counts).
    pub from: chrono::DateTime<chrono::Utc>,
    /// The last (a fire exactly at it counts). Fire times the schedule has not reached yet are
    /// its own to fire: the range ends before them.
    pub to: chrono::DateTime<chrono::Utc>,
    /// At most this many of its records handed or running at once (1–256).
    #[serde(default = "one")]
    pub parallel: u32,
    #[serde(default)]
    pub order: BackfillOrder,
    /// Every fire time of the range, a record that already ran run again one generation
    /// further; without it (the default) only the missing ones: never run, or skipped.
    #[serde(default)]
    pub all: bool,
}

fn one() -> u32 {
    1
}

/// The order a backfill hands its records in.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BackfillOrder {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

/// What to do with a backfill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackfillAction {
    /// Hand nothing more until resumed (what is handed finishes).
    Pause,
    Resume,
    /// Hand nothing more, ever (what is handed finishes); the rest is dropped.
    Cancel,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillControl {
    /// `<tenant>.<schedule>@backfill-<n>`.
    pub id: String,
    pub action: BackfillAction,
}

/// The most records one backfill holds: a longer range is split into several.
pub const MOST: usize = 1_000_000;
/// The most records of one backfill handed or running at once.
pub const MOST_PARALLEL: u32 = 256;

/// Where a backfill is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum BackfillState {
    /// Handing records as runs end.
    #[default]
    Running,
    /// Handing nothing more until resumed; what is handed finishes.
    Paused,
    /// Handing nothing more, ever; what was handed finished or finishes.
    Cancelled,
    /// Every record handed and its run ended.
    Done,
}

impl BackfillState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Cancelled => "cancelled",
            Self::Done => "done",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "paused" => Self::Paused,
            "cancelled" => Self::Cancelled,
            "done" => Self::Done,
            _ => Self::Running,
        }
    }
}

/// What of the requested range a backfill does not run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LeftOut {
    /// Fire times that already ran (or are running), left out as it fills only the missing.
    pub ran: u64,
    /// Fire times in doubt after a takeover: settled with `meridian doubts`, not here.
    pub in_doubt: u64,
    /// Fire times whose runs have left the model for the history store (older than
    /// `[history] keep_hours`): re-run those with `meridian runs rerun`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retired: u64,
    /// The range ended here: later fire times are the schedule's own to fire (it has not
    /// reached them yet, or they are its catch-up's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamped_to: Option<DateTime<Utc>>,
}

/// How far a backfill is, by its records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Progress {
    /// Not handed yet.
    pub remaining: u64,
    /// Handed, and their runs not ended (waiting for the holder, queued or running).
    pub running: u64,
    pub succeeded: u64,
    /// Failed or killed.
    pub failed: u64,
    /// Ended skipped (the schedule was paused when its holder took it).
    pub skipped: u64,
    /// Cancelled before they were handed, or refused when they were (the record's `note`).
    pub dropped: u64,
}

impl Progress {
    /// Records whose run ended.
    pub fn ended(&self) -> u64 {
        self.succeeded + self.failed + self.skipped
    }
}

/// A backfill as it is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BackfillRecord {
    pub id: String,
    pub request: Backfill,
    pub state: BackfillState,
    /// Records it runs (its progress adds up to this).
    pub total: u64,
    pub progress: Progress,
    pub left_out: LeftOut,
    /// Who asked for it (the audit trail's actor).
    pub requested_by: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
    /// A pause holds its schedule: nothing is handed until it is lifted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held_by_pause: bool,
}

/// What creating a backfill answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Created {
    pub id: String,
    pub total: u64,
    pub left_out: LeftOut,
}

pub(super) async fn create(
    tx: &mut SqliteConnection,
    context: Context,
    b: &Backfill,
) -> Result<Applied, ApplyError> {
    let doing = format!("backfilling schedule `{}/{}`", b.tenant, b.schedule);
    present(tx, Table::Tenants, &b.tenant, &doing).await?;
    let Some(row) = sqlx::query(
        "SELECT s.doc, s.created_ms, c.fire_ms FROM schedules s \
         LEFT JOIN schedule_cursors c ON c.schedule_id = s.tenant || '.' || s.name \
         WHERE s.tenant = ? AND s.name = ?",
    )
    .bind(b.tenant.as_str())
    .bind(b.schedule.as_str())
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Err(Refusal::Missing {
            doing,
            kind: "schedule",
            name: format!("{}/{}", b.tenant, b.schedule),
        }
        .into());
    };
    let schedule: Schedule = read_doc(row.get("doc"))?;
    if b.parallel == 0 || b.parallel > MOST_PARALLEL {
        return Err(invalid(
            &doing,
            "parallel",
            &format!("must be 1 to {MOST_PARALLEL}, not {}", b.parallel),
        ));
    }
    if b.to < b.from {
        return Err(invalid(
            &doing,
            "to",
            &format!("{} is before from ({})", b.to, b.from),
        ));
    }
    let calendar = schedule
        .spec
        .calendar()
        .map_err(|e| invalid(&doing, "schedule", &format!("its calendar: {e}")))?;
    // What the schedule fires itself: every record after its cursor (the latest one reported),
    // and from its creation on. Before that, the range is the backfill's.
    let created_ms: i64 = row.get("created_ms");
    let cursor: Option<i64> = row.get("fire_ms");
    let reach_ms = cursor.unwrap_or(i64::MIN).max(created_ms - 1);
    let (from_ms, to_ms) = (b.from.timestamp_millis(), b.to.timestamp_millis());
    if from_ms > reach_ms {
        return Err(invalid(
            &doing,
            "from",
            &format!(
                "the schedule fires its records from {} on itself (those it missed by its \
                 catch-up policy): a backfill runs what lies before",
                DateTime::from_timestamp_millis(reach_ms + 1).unwrap_or_default()
            ),
        ));
    }
    let through_ms = to_ms.min(reach_ms);
    let after = DateTime::from_timestamp_millis(from_ms - 1).unwrap_or_default();
    let mut fires: Vec<i64> = calendar
        .fire_times(after)
        .map(|t| t.timestamp_millis())
        .take_while(|t| *t <= through_ms)
        .take(MOST + 1)
        .collect();
    if fires.len() > MOST {
        return Err(invalid(
            &doing,
            "to",
            &format!(
                "the range holds more than {MOST} fire times: split it into several backfills"
            ),
        ));
    }
    if fires.is_empty() {
        return Err(invalid(
            &doing,
            "from",
            &format!(
                "no fire time of the schedule (`{}`) falls between {} and {}",
                schedule.spec.cron,
                b.from,
                DateTime::from_timestamp_millis(through_ms).unwrap_or_default()
            ),
        ));
    }
    let mut left_out = LeftOut {
        clamped_to: (through_ms < to_ms)
            .then(|| DateTime::from_timestamp_millis(through_ms).unwrap_or_default()),
        ..LeftOut::default()
    };
    let id = schedule.id();
    // Records in doubt are settled as doubts are, never by a backfill.
    let doubts: Vec<(i64, i64)> =
        sqlx::query_as("SELECT after_ms, through_ms FROM doubts WHERE schedule_id = ?")
            .bind(&id)
            .fetch_all(&mut *tx)
            .await?;
    let before = fires.len();
    fires.retain(|f| !doubts.iter().any(|(a, t)| a < f && f <= t));
    left_out.in_doubt = (before - fires.len()) as u64;
    // A record whose run has left the model cannot be handed again: its report would be
    // taken for a late copy of the retired run.
    let retired: Option<i64> =
        sqlx::query_scalar("SELECT fire_ms FROM retired_fires WHERE schedule = ?")
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(retired) = retired {
        let before = fires.len();
        fires.retain(|f| *f > retired);
        left_out.retired = (before - fires.len()) as u64;
    }
    if !b.all {
        // Only what never ran: no run, or skipped.
        let ran: std::collections::HashSet<i64> = sqlx::query_scalar(
            "SELECT fire_ms FROM runs WHERE schedule = ?1 AND fire_ms BETWEEN ?2 AND ?3 \
             AND state <> 'skipped'",
        )
        .bind(&id)
        .bind(from_ms)
        .bind(through_ms)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let before = fires.len();
        fires.retain(|f| !ran.contains(f));
        left_out.ran = (before - fires.len()) as u64;
    }
    if fires.is_empty() {
        return Err(invalid(
            &doing,
            "from",
            &format!(
                "nothing to fill between {} and {}: every fire time already ran ({}), is in \
                 doubt ({}) or has left the model for the history store ({}: `runs rerun` \
                 them); `all` runs the others again",
                b.from,
                DateTime::from_timestamp_millis(through_ms).unwrap_or_default(),
                left_out.ran,
                left_out.in_doubt,
                left_out.retired
            ),
        ));
    }
    if b.order == BackfillOrder::Desc {
        fires.reverse();
    }
    let Ok(schedule_id) = ScheduleId::new(&id) else {
        return Err(invalid(&doing, "schedule", "not a schedule id"));
    };
    // Decided; now written.
    let backfill = format!("{id}@backfill-{}", context.position());
    sqlx::query(
        "INSERT INTO backfills (id, tenant, schedule, schedule_id, doc, state, total, left_out, \
         request_index, created_ms, updated_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8, ?9, ?9)",
    )
    .bind(&backfill)
    .bind(b.tenant.as_str())
    .bind(b.schedule.as_str())
    .bind(&id)
    .bind(doc(b))
    .bind(fires.len() as i64)
    .bind(doc(&left_out))
    .bind(context.index as i64)
    .bind(context.at_ms)
    .execute(&mut *tx)
    .await?;
    for (n, chunk) in fires.chunks(10_000).enumerate() {
        let rows: Vec<serde_json::Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, fire_ms)| {
                let at = DateTime::from_timestamp_millis(*fire_ms).unwrap_or_default();
                serde_json::json!([
                    n * 10_000 + i,
                    fire_ms,
                    FireId::derive(&schedule_id, at).as_str()
                ])
            })
            .collect();
        sqlx::query(
            "INSERT INTO backfill_records (backfill_id, seq, fire_ms, run_id, state) \
             SELECT ?1, value->>0, value->>1, value->>2, 'pending' FROM json_each(?2)",
        )
        .bind(&backfill)
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(&mut *tx)
        .await?;
    }
    advance(tx, context, &backfill).await?;
    Ok(Applied {
        detail: Some(json(&Created {
            id: backfill.clone(),
            total: fires.len() as u64,
            left_out,
        })),
        ..subject(format!("backfill {backfill}"))
    })
}

pub(super) async fn control(
    tx: &mut SqliteConnection,
    context: Context,
    c: &BackfillControl,
) -> Result<Applied, ApplyError> {
    let doing = match c.action {
        BackfillAction::Pause => format!("pausing backfill `{}`", c.id),
        BackfillAction::Resume => format!("resuming backfill `{}`", c.id),
        BackfillAction::Cancel => format!("cancelling backfill `{}`", c.id),
    };
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM backfills WHERE id = ?")
        .bind(&c.id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(state) = state.map(|s| BackfillState::parse(&s)) else {
        return Err(Refusal::Missing {
            doing,
            kind: "backfill",
            name: c.id.clone(),
        }
        .into());
    };
    use BackfillState::*;
    let next = match (state, c.action) {
        (Cancelled | Done, _) => {
            return Err(invalid(
                &doing,
                "id",
                &format!("the backfill is {} already", state.as_str()),
            ));
        }
        (Running, BackfillAction::Pause) | (Paused, BackfillAction::Pause) => Paused,
        (Running, BackfillAction::Resume) | (Paused, BackfillAction::Resume) => Running,
        (_, BackfillAction::Cancel) => Cancelled,
    };
    let mut applied = subject(format!("backfill {}", c.id));
    if next == state {
        applied.detail = Some(r#"{"unchanged":true}"#.into());
        return Ok(applied);
    }
    set_state(tx, context, &c.id, next).await?;
    match next {
        Cancelled => {
            sqlx::query(
                "UPDATE backfill_records SET state = 'dropped', note = 'cancelled' \
                 WHERE backfill_id = ? AND state = 'pending'",
            )
            .bind(&c.id)
            .execute(&mut *tx)
            .await?;
            settle(tx, context, &c.id).await?;
        }
        Running => advance(tx, context, &c.id).await?,
        Paused | Done => {}
    }
    Ok(applied)
}

async fn set_state(
    tx: &mut SqliteConnection,
    context: Context,
    id: &str,
    state: BackfillState,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE backfills SET state = ?1, updated_ms = ?2 WHERE id = ?3")
        .bind(state.as_str())
        .bind(context.at_ms)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// What an applied command means for the backfills, in the same log entry: runs that ended
/// (an agent's report, a kill before anyone took the run) move theirs on, and a lifted pause
/// lets the schedules' backfills hand again. Called by the processor after every command, as it
/// moves the definitions counter; a refused item of a batch finds nothing to move.
pub(super) async fn follow(
    tx: &mut SqliteConnection,
    context: Context,
    command: &super::Command,
) -> Result<(), ApplyError> {
    use super::Command;
    match command {
        Command::AgentReport(report) => {
            let ends: Vec<&str> = report
                .entries
                .iter()
                .filter_map(|entry| {
                    let meridian_domain::run::Report::V1 { item, .. } = &entry.report;
                    match item {
                        meridian_domain::run::ReportItem::Run(event) if event.state.is_final() => {
                            Some(event.run_id.as_str())
                        }
                        _ => None,
                    }
                })
                .collect();
            // Most reports end no backfill's run: one read says so for the whole report.
            if ends.is_empty() || !any_handed(tx, &ends).await? {
                return Ok(());
            }
            for run_id in ends {
                ended(tx, context, run_id).await?;
            }
        }
        Command::KillRun { run_id } => ended(tx, context, run_id).await?,
        Command::Resume(_) => unpaused(tx, context).await?,
        Command::Batch(items) => {
            for item in items {
                Box::pin(follow(tx, context, item)).await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Whether any of `runs` fills a backfill's record handed out.
async fn any_handed(tx: &mut SqliteConnection, runs: &[&str]) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM backfill_records WHERE state = 'handed' \
         AND run_id IN (SELECT value FROM json_each(?)))",
    )
    .bind(serde_json::json!(runs).to_string())
    .fetch_one(&mut *tx)
    .await
}

/// A run ended (its report, or a kill before anyone took it): if it fills a backfill's record,
/// the backfill moves on.
async fn ended(
    tx: &mut SqliteConnection,
    context: Context,
    run_id: &str,
) -> Result<(), ApplyError> {
    let backfill: Option<String> = sqlx::query_scalar(
        "SELECT backfill_id FROM backfill_records WHERE run_id = ? AND state = 'handed' LIMIT 1",
    )
    .bind(run_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(backfill) = backfill {
        advance(tx, context, &backfill).await?;
    }
    Ok(())
}

/// A pause was lifted: the running backfills of the schedules it held hand again.
async fn unpaused(tx: &mut SqliteConnection, context: Context) -> Result<(), ApplyError> {
    let running: Vec<String> =
        sqlx::query_scalar("SELECT id FROM backfills WHERE state = 'running' ORDER BY id")
            .fetch_all(&mut *tx)
            .await?;
    for id in running {
        advance(tx, context, &id).await?;
    }
    Ok(())
}

/// A schedule is deleted: its backfills end (what was handed may still report).
pub(super) async fn forget_schedule(
    tx: &mut SqliteConnection,
    context: Context,
    schedule_id: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE backfill_records SET state = 'dropped', note = 'its schedule was deleted' \
         WHERE state = 'pending' AND backfill_id IN \
         (SELECT id FROM backfills WHERE schedule_id = ?1 AND state IN ('running', 'paused'))",
    )
    .bind(schedule_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE backfills SET state = 'cancelled', updated_ms = ?1, finished_ms = ?1 \
         WHERE schedule_id = ?2 AND state IN ('running', 'paused')",
    )
    .bind(context.at_ms)
    .bind(schedule_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A tenant is deleted: its backfills go with it.
pub(super) async fn forget_tenant(tx: &mut SqliteConnection, tenant: &Name) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM backfill_records WHERE backfill_id IN \
         (SELECT id FROM backfills WHERE tenant = ?)",
    )
    .bind(tenant.as_str())
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM backfills WHERE tenant = ?")
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Marks the handed records whose runs ended; returns how many are still handed.
async fn settle(tx: &mut SqliteConnection, context: Context, id: &str) -> sqlx::Result<u32> {
    sqlx::query(
        // Driven from the few handed records, each run looked up by its key: never a scan of
        // the runs that ended.
        "UPDATE backfill_records SET state = 'ended' WHERE backfill_id = ?1 AND state = 'handed' \
         AND EXISTS (SELECT 1 FROM runs r WHERE r.run_id = backfill_records.run_id \
           AND r.state IN ('succeeded', 'failed', 'killed', 'skipped'))",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let handed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM backfill_records WHERE backfill_id = ? AND state = 'handed'",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    if handed == 0 {
        // Nothing going and nothing left: it is over.
        let pending: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM backfill_records WHERE backfill_id = ? \
             AND state = 'pending')",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if !pending {
            sqlx::query(
                "UPDATE backfills SET state = CASE state WHEN 'cancelled' THEN 'cancelled' \
                 ELSE 'done' END, updated_ms = ?1, finished_ms = COALESCE(finished_ms, ?1) \
                 WHERE id = ?2",
            )
            .bind(context.at_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(handed as u32)
}

/// Hands `id`'s next records, up to its `parallel` handed at once, unless it is not running
/// or a pause holds its schedule; ends it when nothing is left.
async fn advance(tx: &mut SqliteConnection, context: Context, id: &str) -> Result<(), ApplyError> {
    let handed = settle(tx, context, id).await?;
    let Some(row) = sqlx::query("SELECT doc, state, schedule_id FROM backfills WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
    else {
        return Ok(());
    };
    if BackfillState::parse(row.get("state")) != BackfillState::Running {
        return Ok(());
    }
    let request: Backfill = read_doc(row.get("doc"))?;
    let schedule_id: String = row.get("schedule_id");
    let Some(doc) = sqlx::query_scalar::<_, String>(
        "SELECT doc FROM schedules WHERE tenant || '.' || name = ?",
    )
    .bind(&schedule_id)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(());
    };
    let schedule: Schedule = read_doc(&doc)?;
    let pauses = super::pauses::all(tx).await?;
    if !super::pauses::covering(&pauses, &schedule).is_empty() {
        return Ok(());
    }
    let room = request.parallel.saturating_sub(handed);
    if room == 0 {
        return Ok(());
    }
    let next: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT seq, fire_ms, run_id FROM backfill_records WHERE backfill_id = ? \
         AND state = 'pending' ORDER BY seq LIMIT ?",
    )
    .bind(id)
    .bind(i64::from(room))
    .fetch_all(&mut *tx)
    .await?;
    for (seq, fire_ms, record) in next {
        let (run_id, note) = hand(tx, context, &schedule_id, fire_ms, &record, &request).await?;
        sqlx::query(
            "UPDATE backfill_records SET state = ?1, run_id = ?2, note = ?3 \
             WHERE backfill_id = ?4 AND seq = ?5",
        )
        .bind(if note.is_some() { "dropped" } else { "handed" })
        .bind(&run_id)
        .bind(note)
        .bind(id)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    }
    // What was handed may have ended already (a record that ran meanwhile), or been refused.
    settle(tx, context, id).await?;
    Ok(())
}

/// Hands one record: to the holder when it never ran (or was skipped), as a re-run when it
/// ran and the backfill runs everything; a run of it still going is waited for. Returns the
/// run that fills it, and why it was dropped instead, if it was.
async fn hand(
    tx: &mut SqliteConnection,
    context: Context,
    schedule_id: &str,
    fire_ms: i64,
    record: &str,
    request: &Backfill,
) -> Result<(String, Option<String>), ApplyError> {
    // Its newest generation, if it ever ran.
    let newest: Option<(String, String)> = sqlx::query_as(
        "SELECT run_id, state FROM runs WHERE run_id = ?1 OR rerun_of = ?1 \
         ORDER BY generation DESC LIMIT 1",
    )
    .bind(record)
    .fetch_optional(&mut *tx)
    .await?;
    let run_id = match newest {
        None => {
            super::doubt::hand_backfill(tx, context, schedule_id, fire_ms).await?;
            record.to_owned()
        }
        Some((run_id, state)) if state == "skipped" && run_id == record => {
            sqlx::query(
                "UPDATE runs SET state = 'returned', finished_ms = NULL, updated_ms = ?, \
                 message = 'skipped; handed again by a backfill' WHERE run_id = ?",
            )
            .bind(context.at_ms)
            .bind(record)
            .execute(&mut *tx)
            .await?;
            super::doubt::hand_backfill(tx, context, schedule_id, fire_ms).await?;
            run_id
        }
        Some((run_id, state))
            if super::checks::is_final(&state) && (request.all || state == "skipped") =>
        {
            let rerun = super::Rerun {
                run_id: run_id.clone(),
                recover: false,
                retired: None,
            };
            match super::rerun::rerun(tx, context, &rerun).await {
                Ok(applied) => {
                    let ordered: super::history::RequestedRun = applied
                        .detail
                        .as_deref()
                        .and_then(|d| serde_json::from_str(d).ok())
                        .unwrap_or(super::history::RequestedRun { run_id });
                    ordered.run_id
                }
                Err(ApplyError::Refused(refusal)) => {
                    return Ok((run_id, Some(refusal.to_string())));
                }
                Err(e) => return Err(e),
            }
        }
        // Running now, or it ran and only the missing are filled: its run stands for it.
        Some((run_id, _)) => run_id,
    };
    Ok((run_id, None))
}

/// A backfill's bound as people write it: RFC 3339, a date and time (`2026-10-01T06:00`, as a
/// browser's date-time field sends it) or a date, in UTC; a bare date stands for its first
/// moment, or its last when `end` says so (`--to 2026-10-31` is the whole day). `Err` names
/// `field`.
pub fn bound(field: &str, value: &str, end: bool) -> Result<DateTime<Utc>, String> {
    let v = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.to_utc());
    }
    for f in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(v, f) {
            return Ok(t.and_utc());
        }
    }
    match chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        Ok(d) => {
            let day = d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
            Ok(if end {
                day + chrono::Duration::days(1) - chrono::Duration::milliseconds(1)
            } else {
                day
            })
        }
        Err(_) => Err(format!(
            "{field} `{v}`: want a date (2026-10-01), a date and time or RFC 3339 \
             (2026-10-01T06:00:00Z)"
        )),
    }
}

/// Every backfill of `tenant` (every one, if none), newest first.
pub async fn list(pool: &SqlitePool, tenant: Option<&Name>) -> sqlx::Result<Vec<BackfillRecord>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM backfills WHERE ?1 IS NULL OR tenant = ?1 ORDER BY created_ms DESC, id",
    )
    .bind(tenant.map(Name::as_str))
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(b) = get(pool, &id).await? {
            out.push(b);
        }
    }
    Ok(out)
}

/// One backfill with its progress.
pub async fn get(pool: &SqlitePool, id: &str) -> sqlx::Result<Option<BackfillRecord>> {
    let mut conn = pool.acquire().await?;
    let Some(row) = sqlx::query(
        "SELECT b.doc, b.state, b.total, b.left_out, b.created_ms, b.updated_ms, b.finished_ms, \
         b.schedule_id, a.actor FROM backfills b \
         LEFT JOIN audit a ON a.log_index = b.request_index AND a.outcome = 'applied' \
         WHERE b.id = ?",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let request: Backfill = read_doc(row.get("doc"))?;
    let mut progress = Progress::default();
    let counts: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "SELECT b.state, r.state, COUNT(*) FROM backfill_records b \
         LEFT JOIN runs r ON r.run_id = b.run_id AND b.state IN ('handed', 'ended') \
         WHERE b.backfill_id = ? GROUP BY 1, 2",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    for (record, run, n) in counts {
        let n = n as u64;
        match (record.as_str(), run.as_deref()) {
            ("pending", _) => progress.remaining += n,
            ("dropped", _) => progress.dropped += n,
            (_, Some("succeeded")) => progress.succeeded += n,
            (_, Some("failed" | "killed")) => progress.failed += n,
            (_, Some("skipped")) => progress.skipped += n,
            _ => progress.running += n,
        }
    }
    let schedule: Option<String> =
        sqlx::query_scalar("SELECT doc FROM schedules WHERE tenant || '.' || name = ?")
            .bind(row.get::<String, _>("schedule_id"))
            .fetch_optional(&mut *conn)
            .await?;
    let state = BackfillState::parse(row.get("state"));
    let held_by_pause = match (&schedule, state) {
        (Some(doc), BackfillState::Running) => {
            let schedule: Schedule = read_doc(doc)?;
            let pauses = super::pauses::all(&mut conn).await?;
            !super::pauses::covering(&pauses, &schedule).is_empty()
        }
        _ => false,
    };
    Ok(Some(BackfillRecord {
        id: id.to_owned(),
        request,
        state,
        total: row.get::<i64, _>("total") as u64,
        progress,
        left_out: read_doc(row.get("left_out"))?,
        requested_by: row.get("actor"),
        created_ms: row.get("created_ms"),
        updated_ms: row.get("updated_ms"),
        finished_ms: row.get("finished_ms"),
        held_by_pause,
    }))
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
