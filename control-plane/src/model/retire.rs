//! Finished runs leaving the model for the history store (issue #21), so Raft snapshots stay
//! the size of the definitions and the open work however many runs were ever made.
//!
//! The leader's retirer (`history_store::retirer`) proposes [`RetireRuns`] with a cut-off time;
//! every node's apply picks the same runs (final, unchanged since the cut-off, nothing in the
//! model still pointing at them — an unfinished backfill, an open
//! doubt about their schedule, a pause that may hand skipped runs back, a re-run family with
//! a member still going, a log not yet copied to the bucket), moves each with its attempts into
//! `retiring` and deletes it. The state machine then writes `retiring` to its node's history
//! store and empties it before the apply commits (deciding here, doing there). The hourly
//! counts (`run_hours`) keep counting retired runs: the overview reads them alone.
//!
//! A retired scheduled run's fire time is remembered per schedule (`retired_fires`): a report
//! of an unknown run at or before it is a late copy, refused, never a new run.

use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection};

use super::checks::subject;
use super::outcome::{Applied, ApplyError, Context};
use super::query::{RunRecord, TaskAttempt};

/// `RetireRuns`: the leader's retirer asks every node to move out the runs finished before
/// `before_ms`, at most `limit` of them (oldest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetireRuns {
    pub before_ms: i64,
    pub limit: u32,
    /// Keep runs whose task logs the archiver has not copied to the bucket yet (set when the
    /// plane has a bucket: the archiver finds what to copy in the model).
    #[serde(default)]
    pub await_archive: bool,
}

/// A run as it leaves the model: its row (the starts and who asked resolved) and its attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    pub run: RunRecord,
    pub attempts: Vec<TaskAttempt>,
}

/// How `retiring.doc` is stored.
#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
enum Stored {
    #[serde(rename = "1")]
    V1 { doc: Retired },
}

/// Runs a retirement may take: final, unchanged since the cut-off, and nothing in the model
/// still refers to them. `?1`: the cut-off; `?2`: whether to wait for the archiver. (The
/// family's two sides are two lookups, the re-runs' by their index even when statistics say
/// `rerun_of` is mostly empty: otherwise SQLite scans every run for each candidate, and a
/// 2,000-run retirement beside 100,000 runs took 14 s.) The runs are read oldest change
/// first through `runs_updated`, so a batch stops at its limit: through `runs_state` SQLite
/// read and sorted every finished run for each batch (260 ms per batch beside 115,000 runs,
/// against 13 ms), on every node.
const RETIRABLE: &str = "state IN ('succeeded', 'failed', 'killed', 'skipped') \
     AND updated_ms < ?1 \
     AND NOT EXISTS (SELECT 1 FROM run_logs l WHERE l.run_id = runs.run_id) \
     AND NOT EXISTS (SELECT 1 FROM backfill_records b JOIN backfills f ON f.id = b.backfill_id \
                     WHERE b.run_id = runs.run_id AND f.finished_ms IS NULL) \
     AND NOT (schedule IS NOT NULL AND EXISTS (SELECT 1 FROM doubts d \
                     WHERE d.schedule_id = runs.schedule)) \
     AND NOT (state = 'skipped' AND EXISTS (SELECT 1 FROM pauses)) \
     AND NOT EXISTS (SELECT 1 FROM runs g WHERE g.run_id = COALESCE(runs.rerun_of, runs.run_id) \
                     AND (g.state NOT IN ('succeeded', 'failed', 'killed', 'skipped') \
                          OR g.updated_ms >= ?1)) \
     AND NOT EXISTS (SELECT 1 FROM runs g INDEXED BY runs_rerun_of \
                     WHERE g.rerun_of = COALESCE(runs.rerun_of, runs.run_id) \
                     AND (g.state NOT IN ('succeeded', 'failed', 'killed', 'skipped') \
                          OR g.updated_ms >= ?1)) \
     AND NOT (?2 AND EXISTS (SELECT 1 FROM task_attempts a WHERE a.run_id = runs.run_id \
                     AND a.ended_index > (SELECT COALESCE(MAX(ended_index), 0) FROM log_archive)))";

/// How many runs `retire` would take (at most its limit).
pub async fn due(pool: &sqlx::SqlitePool, retire: &RetireRuns) -> sqlx::Result<u64> {
    let n: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM runs INDEXED BY runs_updated WHERE {RETIRABLE} \
         LIMIT ?3)"
    ))
    .bind(retire.before_ms)
    .bind(retire.await_archive)
    .bind(i64::from(retire.limit.clamp(1, 10_000)))
    .fetch_one(pool)
    .await?;
    Ok(n as u64)
}

/// A run's row and attempts as `retiring.doc` holds them ([`Stored`] of a [`Retired`]), built
/// in SQL for a whole batch at once: `?1` the retirement's log index, `?2` the run ids (JSON).
const AS_RETIRED: &str = "INSERT INTO retiring (run_id, retired_index, doc) \
     SELECT r.run_id, ?1, json_object('v', '1', 'doc', json_object( \
       'run', json_object('run_id', r.run_id, 'tenant', r.tenant, 'workflow', r.workflow, \
         'workflow_version', r.workflow_version, 'schedule', r.schedule, 'fire_ms', r.fire_ms, \
         'environment', r.environment, 'cluster', r.cluster, 'dc', r.dc, 'state', r.state, \
         'agent', r.agent, 'epoch', r.epoch, 'requested_ms', r.requested_ms, \
         'queued_ms', r.queued_ms, 'started_ms', r.started_ms, 'finished_ms', r.finished_ms, \
         'lateness_ms', r.started_ms - r.fire_ms, 'message', r.message, \
         'starts', r.starts + (SELECT COUNT(*) FROM fenced_starts f WHERE f.run_id = r.run_id), \
         'order_ms', r.updated_ms, 'generation', r.generation, 'rerun_of', r.rerun_of, \
         'requested_by', (SELECT actor FROM audit a WHERE a.log_index = r.request_index), \
         'kept', json(COALESCE(r.kept, '[]'))), \
       'attempts', json(COALESCE((SELECT json_group_array(json_object('task', a.task, \
         'attempt', a.attempt, 'outcome', a.outcome, 'started_ms', a.started_ms, \
         'finished_ms', a.finished_ms, 'exit_code', a.exit_code, 'message', a.message, \
         'warning', a.warning)) FROM (SELECT * FROM task_attempts t WHERE t.run_id = r.run_id \
         ORDER BY COALESCE(t.started_ms, t.finished_ms), t.task, t.attempt) a), '[]')))) \
     FROM runs r WHERE r.run_id IN (SELECT value FROM json_each(?2))";

/// `RetireRuns`: a batch at a time, a statement per step (a statement per run cost half a
/// millisecond each, too slow to keep up with thousands of runs a second).
pub(super) async fn retire(
    tx: &mut SqliteConnection,
    context: Context,
    retire: &RetireRuns,
) -> Result<Applied, ApplyError> {
    let ids: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT run_id FROM runs INDEXED BY runs_updated WHERE {RETIRABLE} \
         ORDER BY updated_ms, run_id LIMIT ?3"
    ))
    .bind(retire.before_ms)
    .bind(retire.await_archive)
    .bind(i64::from(retire.limit.clamp(1, 10_000)))
    .fetch_all(&mut *tx)
    .await?;
    if ids.is_empty() {
        return Ok(subject("0 runs retired to the history".to_owned()));
    }
    let ids_json = serde_json::to_string(&ids).expect("ids print as JSON");
    sqlx::query(AS_RETIRED)
        .bind(context.index as i64)
        .bind(&ids_json)
        .execute(&mut *tx)
        .await?;
    let steps = [
        // Each schedule's newest retired fire: later reports of those runs are late copies.
        "INSERT INTO retired_fires (schedule, fire_ms) SELECT schedule, MAX(fire_ms) FROM runs \
         WHERE run_id IN (SELECT value FROM json_each(?1)) AND schedule IS NOT NULL \
         AND fire_ms IS NOT NULL GROUP BY schedule \
         ON CONFLICT (schedule) DO UPDATE SET fire_ms = MAX(fire_ms, excluded.fire_ms)",
        // The hourly counts keep the runs: counted in again here, taken out by the delete's
        // trigger below.
        "INSERT INTO run_hours (hour_ms, dc, state, n) \
         SELECT (COALESCE(fire_ms, requested_ms, updated_ms) / 3600000) * 3600000, dc, state, \
         COUNT(*) FROM runs WHERE run_id IN (SELECT value FROM json_each(?1)) GROUP BY 1, 2, 3 \
         ON CONFLICT (hour_ms, dc, state) DO UPDATE SET n = n + excluded.n",
        "DELETE FROM task_attempts WHERE run_id IN (SELECT value FROM json_each(?1))",
        "DELETE FROM fenced_starts WHERE run_id IN (SELECT value FROM json_each(?1))",
        // A final run's commands are never sent again (`leasing::orders_for`).
        "DELETE FROM agent_commands WHERE run_id IN (SELECT value FROM json_each(?1))",
        "DELETE FROM runs WHERE run_id IN (SELECT value FROM json_each(?1))",
    ];
    for step in steps {
        sqlx::query(step).bind(&ids_json).execute(&mut *tx).await?;
    }
    sqlx::query("UPDATE counters SET value = ? WHERE name = 'retired_through'")
        .bind(context.index as i64)
        .execute(&mut *tx)
        .await?;
    Ok(subject(format!(
        "{} runs retired to the history",
        ids.len()
    )))
}

/// What a retirement applied in this transaction left in `retiring`, oldest first, with the
/// log index it was retired at.
pub async fn retiring(conn: &mut SqliteConnection) -> sqlx::Result<Vec<(u64, Retired)>> {
    let rows =
        sqlx::query("SELECT retired_index, doc FROM retiring ORDER BY retired_index, run_id")
            .fetch_all(&mut *conn)
            .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let doc: String = row.get("doc");
        let Stored::V1 { doc } = serde_json::from_str(&doc)
            .map_err(|e| sqlx::Error::Decode(format!("retiring.doc: {e}").into()))?;
        out.push((row.get::<i64, _>("retired_index") as u64, doc));
    }
    Ok(out)
}

/// Empties `retiring` once its rows are in the history store.
pub async fn retired(conn: &mut SqliteConnection) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM retiring").execute(conn).await?;
    Ok(())
}

/// The log index of the newest retirement: history rows retired at or before it are no longer
/// in the model.
pub async fn retired_through(conn: &mut SqliteConnection) -> sqlx::Result<u64> {
    let through: Option<i64> =
        sqlx::query_scalar("SELECT value FROM counters WHERE name = 'retired_through'")
            .fetch_optional(conn)
            .await?;
    Ok(through.unwrap_or(0) as u64)
}

/// Whether a report of a run the model does not know, of `schedule` at `fire_ms`, is a late
/// copy of a retired one.
pub(super) async fn was_retired(
    tx: &mut SqliteConnection,
    schedule: &str,
    fire_ms: i64,
) -> sqlx::Result<bool> {
    let newest: Option<i64> =
        sqlx::query_scalar("SELECT fire_ms FROM retired_fires WHERE schedule = ?")
            .bind(schedule)
            .fetch_optional(tx)
            .await?;
    Ok(newest.is_some_and(|newest| fire_ms <= newest))
}

/// Why a late copy of a retired run's report is refused.
pub(super) fn late_copy(run_id: &str) -> String {
    format!("run `{run_id}`: already in the history store; this report of it comes too late")
}
