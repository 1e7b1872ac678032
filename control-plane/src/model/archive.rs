//! Which attempts' logs are in the federation's S3 bucket: what the leader's archiver
//! (`logbook::archive`) records once it has copied one (`ArchiveLogs`), what it forgets once
//! retention deleted the object (`ForgetArchivedLogs`), and the reads it and every reader of
//! a log make.

use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::checks::subject;
use super::history::tenant_of_run;
use super::outcome::{Applied, ApplyError, Context};

/// One attempt's log, copied to the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedLog {
    pub run_id: String,
    pub task: String,
    pub attempt: u32,
    /// The object's key under the bucket's root; empty when the attempt wrote nothing.
    pub key: String,
    pub bytes: u64,
    /// When the attempt's end was applied.
    pub ended_at_ms: i64,
}

/// One attempt.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttemptRef {
    pub run_id: String,
    pub task: String,
    pub attempt: u32,
}

/// How far behind the newest attempt archived the archiver looks again for ones it has not
/// (ends applied out of order: proposals stamped by different leaders' clocks).
pub const LOOK_BACK_MS: i64 = 10 * 60 * 1000;

/// `ArchiveLogs`: records the copies (a copy of an attempt whose end changed since, after an
/// agent re-attached to it, replaces the older one).
pub(super) async fn record(
    tx: &mut SqliteConnection,
    context: Context,
    logs: &[ArchivedLog],
) -> Result<Applied, ApplyError> {
    for log in logs {
        let tenant = tenant_of_run(&log.run_id).map_or_else(String::new, |t| t.to_string());
        sqlx::query(
            "INSERT INTO log_archive (run_id, task, attempt, tenant, key, bytes, ended_at_ms, \
             archived_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (run_id, task, attempt) DO UPDATE SET key = ?5, bytes = ?6, \
             ended_at_ms = ?7, archived_ms = ?8 WHERE ended_at_ms < ?7",
        )
        .bind(&log.run_id)
        .bind(&log.task)
        .bind(i64::from(log.attempt))
        .bind(tenant)
        .bind(&log.key)
        .bind(log.bytes as i64)
        .bind(log.ended_at_ms)
        .bind(context.at_ms)
        .execute(&mut *tx)
        .await?;
    }
    Ok(subject(format!(
        "{} task logs copied to the bucket",
        logs.len()
    )))
}

/// `ForgetArchivedLogs`: the objects are deleted (retention).
pub(super) async fn forget(
    tx: &mut SqliteConnection,
    attempts: &[AttemptRef],
) -> Result<Applied, ApplyError> {
    for a in attempts {
        sqlx::query("DELETE FROM log_archive WHERE run_id = ? AND task = ? AND attempt = ?")
            .bind(&a.run_id)
            .bind(&a.task)
            .bind(i64::from(a.attempt))
            .execute(&mut *tx)
            .await?;
    }
    Ok(subject(format!(
        "{} task logs deleted from the bucket",
        attempts.len()
    )))
}

/// An ended attempt whose log is not archived yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub attempt: AttemptRef,
    pub ended_at_ms: i64,
}

/// The ended attempts to archive next, in the order their ends were applied: those ended
/// since `since_ms` (retention: older ones are not copied) and not before the newest one
/// archived less [`LOOK_BACK_MS`].
pub async fn due(pool: &SqlitePool, since_ms: i64, limit: u32) -> sqlx::Result<Vec<Due>> {
    let rows = sqlx::query(
        "SELECT a.run_id, a.task, a.attempt, a.ended_at_ms FROM task_attempts a \
         WHERE a.ended_at_ms IS NOT NULL \
         AND a.ended_at_ms >= MAX(?1, (SELECT COALESCE(MAX(ended_at_ms), 0) FROM log_archive) - ?2) \
         AND NOT EXISTS (SELECT 1 FROM log_archive l WHERE l.run_id = a.run_id \
                         AND l.task = a.task AND l.attempt = a.attempt \
                         AND l.ended_at_ms >= a.ended_at_ms) \
         ORDER BY a.ended_at_ms, a.run_id, a.task, a.attempt LIMIT ?3",
    )
    .bind(since_ms)
    .bind(LOOK_BACK_MS)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| Due {
            attempt: AttemptRef {
                run_id: r.get("run_id"),
                task: r.get("task"),
                attempt: r.get::<i64, _>("attempt") as u32,
            },
            ended_at_ms: r.get("ended_at_ms"),
        })
        .collect())
}

/// Where an attempt's log is in the bucket: `Some("")` when it wrote nothing, `None` when it
/// is not archived (read the logbooks).
pub async fn archived(
    pool: &SqlitePool,
    run_id: &str,
    task: &str,
    attempt: u32,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT key FROM log_archive WHERE run_id = ? AND task = ? AND attempt = ?")
        .bind(run_id)
        .bind(task)
        .bind(i64::from(attempt))
        .fetch_optional(pool)
        .await
}

/// The attempts of `run_id` archived with a log, by task and attempt.
pub async fn archived_attempts(
    pool: &SqlitePool,
    run_id: &str,
) -> sqlx::Result<Vec<(String, u32)>> {
    Ok(sqlx::query(
        "SELECT task, attempt FROM log_archive WHERE run_id = ? AND key != '' \
         ORDER BY task, attempt",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| (r.get("task"), r.get::<i64, _>("attempt") as u32))
    .collect())
}

/// Archived logs past their tenant's retention (`days_of`), at most `limit`, with their keys.
pub async fn expired(
    pool: &SqlitePool,
    now_ms: i64,
    days_of: impl Fn(&str) -> u32,
    limit: u32,
) -> sqlx::Result<Vec<(AttemptRef, String)>> {
    let tenants: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT tenant FROM log_archive ORDER BY tenant")
            .fetch_all(pool)
            .await?;
    let mut all = Vec::new();
    for tenant in tenants {
        let cutoff = now_ms - i64::from(days_of(&tenant)) * 86_400_000;
        let rows = sqlx::query(
            "SELECT run_id, task, attempt, key FROM log_archive WHERE tenant = ? \
             AND ended_at_ms < ? ORDER BY ended_at_ms, run_id, task, attempt LIMIT ?",
        )
        .bind(&tenant)
        .bind(cutoff)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
        for r in rows {
            all.push((
                AttemptRef {
                    run_id: r.get("run_id"),
                    task: r.get("task"),
                    attempt: r.get::<i64, _>("attempt") as u32,
                },
                r.get("key"),
            ));
        }
        if all.len() >= limit as usize {
            all.truncate(limit as usize);
            break;
        }
    }
    Ok(all)
}
