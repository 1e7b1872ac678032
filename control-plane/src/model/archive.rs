//! Which attempts' logs are in the federation's S3 bucket: what the leader's archiver
//! (`logs::archive`) records once it has copied one (`ArchiveLogs`), what it forgets once
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
    /// The log index at which the attempt's end was applied.
    pub ended_index: i64,
}

/// One attempt.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttemptRef {
    pub run_id: String,
    pub task: String,
    pub attempt: u32,
}

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
            "INSERT INTO log_archive (run_id, task, attempt, tenant, key, bytes, ended_index, \
             archived_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (run_id, task, attempt) DO UPDATE SET key = ?5, bytes = ?6, \
             ended_index = ?7, archived_ms = ?8 WHERE ended_index < ?7",
        )
        .bind(&log.run_id)
        .bind(&log.task)
        .bind(i64::from(log.attempt))
        .bind(tenant)
        .bind(&log.key)
        .bind(log.bytes as i64)
        .bind(log.ended_index)
        .bind(context.at_ms)
        .execute(&mut *tx)
        .await?;
    }
    Ok(subject(format!(
        "{} task logs copied to the bucket",
        logs.len()
    )))
}

/// `ForgetArchivedLogs`: the objects are deleted (retention). The rows stay, their keys
/// emptied, so the archiver's mark never goes back and nothing is copied again.
pub(super) async fn forget(
    tx: &mut SqliteConnection,
    attempts: &[AttemptRef],
) -> Result<Applied, ApplyError> {
    for a in attempts {
        sqlx::query(
            "UPDATE log_archive SET key = '', bytes = 0 WHERE run_id = ? AND task = ? \
             AND attempt = ?",
        )
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
    pub ended_index: i64,
}

/// The ended attempts to archive next, in the order their ends were applied (the log index:
/// the same on every node, only ever growing): those after the newest one archived. The
/// archiver copies them in this order and stops at the first it cannot, so none is skipped.
pub async fn due(pool: &SqlitePool, limit: u32) -> sqlx::Result<Vec<Due>> {
    let rows = sqlx::query(
        "SELECT run_id, task, attempt, ended_index FROM task_attempts \
         WHERE ended_index > (SELECT COALESCE(MAX(ended_index), 0) FROM log_archive) \
         ORDER BY ended_index, run_id, task, attempt LIMIT ?",
    )
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
            ended_index: r.get("ended_index"),
        })
        .collect())
}

/// An attempt's copy in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// The object's key; empty when the attempt wrote nothing or retention deleted it.
    pub key: String,
    /// Which end of the attempt it copied (a re-archived attempt's object is newer).
    pub ended_index: i64,
}

/// Where an attempt's log is in the bucket; `None` when it is not archived (read the
/// logbooks).
pub async fn archived(
    pool: &SqlitePool,
    run_id: &str,
    task: &str,
    attempt: u32,
) -> sqlx::Result<Option<Copy>> {
    Ok(sqlx::query(
        "SELECT key, ended_index FROM log_archive WHERE run_id = ? AND task = ? AND attempt = ?",
    )
    .bind(run_id)
    .bind(task)
    .bind(i64::from(attempt))
    .fetch_optional(pool)
    .await?
    .map(|r| Copy {
        key: r.get("key"),
        ended_index: r.get("ended_index"),
    }))
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
    let tenants: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT tenant FROM log_archive WHERE key != '' ORDER BY tenant",
    )
    .fetch_all(pool)
    .await?;
    let mut all = Vec::new();
    for tenant in tenants {
        let cutoff = now_ms - i64::from(days_of(&tenant)) * 86_400_000;
        let rows = sqlx::query(
            "SELECT run_id, task, attempt, key FROM log_archive WHERE tenant = ? AND key != '' \
             AND archived_ms < ? ORDER BY archived_ms, run_id, task, attempt LIMIT ?",
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
