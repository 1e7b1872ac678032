//! The history store: finished runs retired from the model (issue #21), on each plane node and
//! never in a Raft snapshot — SQLite (`history.db` beside the model) by default, PostgreSQL
//! (`[history] url = "postgres://…"`) when one file is not enough. Both run the same queries
//! through sqlx's `Any` driver; nodes may share one PostgreSQL database (every write is an
//! idempotent upsert of the same rows).
//!
//! The state machine writes a retirement's runs here before the apply that removed them from
//! the model commits (`model::retire`), so a crash in between replays the retirement and
//! writes the same rows again. Readers take the model's runs and the history rows retired at
//! or before the model's `retired_through`, read in the same model transaction ([`reader`]):
//! a run is in exactly one of the two as they see it.
//!
//! Retention: [`sweep`] deletes runs older than their tenant's `history_retention_days`, or
//! `[history] retention_days` (90).

pub mod counts;
pub mod gaps;
pub mod reader;
pub mod sweep;

use std::path::Path;

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};

use crate::model;
use crate::model::query::{Bind, Dialect, RunFilter, RunRecord, TaskAttempt};
use crate::model::rerun::RetiredFamily;
use crate::model::retire::Retired;
use crate::model::wal::{self, Restart};

static SQLITE: Migrator = sqlx::migrate!("migrations/history/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/history/postgres");

/// Rows written per statement (25 and 9 values each: within both databases' bind limits).
const RUNS_PER_STATEMENT: usize = 200;
const ATTEMPTS_PER_STATEMENT: usize = 500;

/// The history store's file in a node's data directory, when no URL is configured.
pub const HISTORY_FILE: &str = "history.db";

/// `[history]` in `plane.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Where the history store is: `postgres://user:password@host/db`, or `sqlite://path`;
    /// none: `history.db` in the node's data directory.
    pub url: Option<String>,
    /// Hours a finished run stays in the replicated model before it is retired.
    pub keep_hours: u32,
    /// Days a run is kept in the history store (from its fire, request or last change time),
    /// for tenants without `history_retention_days`.
    pub retention_days: u32,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            url: None,
            keep_hours: 24,
            retention_days: 90,
        }
    }
}

impl HistoryConfig {
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(url) = &self.url
            && !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
        {
            return Err((
                "url",
                format!("`{url}` is neither postgres://… nor sqlite:…"),
            ));
        }
        if self.keep_hours == 0 {
            return Err(("keep_hours", "must be at least 1".into()));
        }
        if self.retention_days == 0 {
            return Err(("retention_days", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Which database a history store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A node's history store; clones share the pool.
#[derive(Clone)]
pub struct HistoryStore {
    /// For reads.
    pool: AnyPool,
    /// For writes: one connection ([`HistoryStore::writing`]).
    writer: AnyPool,
    backend: Backend,
    /// Shared with the checkpointer of its log (SQLite: `model::wal`).
    restart: Restart,
}

/// A history store's two pools: four connections for reads, one that every write takes.
#[derive(Clone, Copy)]
enum Connections {
    Readers,
    Writer,
}

/// What a run row holds in the history store, in the order [`HistoryStore::put`] binds it.
const COLUMNS: &str = "run_id, tenant, workflow, workflow_version, schedule, fire_ms, \
     environment, cluster, dc, state, agent, epoch, requested_ms, queued_ms, started_ms, \
     finished_ms, message, starts, updated_ms, order_ms, generation, rerun_of, kept, \
     requested_by, retired_index";

impl crate::model::wal::Checkpoint for HistoryStore {
    /// PostgreSQL keeps its own log.
    async fn checkpoint(&self) -> sqlx::Result<i64> {
        if self.backend == Backend::Postgres {
            return Ok(0);
        }
        let row = sqlx::query(wal::PASSIVE).fetch_one(&self.pool).await?;
        row.try_get::<i64, _>(1)
    }
}

impl HistoryStore {
    /// Opens (creating, and bringing its schema up to date) the store `url` names, or
    /// `history.db` in `data_dir`.
    pub async fn open(data_dir: &Path, url: Option<&str>) -> sqlx::Result<Self> {
        sqlx::any::install_default_drivers();
        let url = match url {
            Some(url) => url.to_owned(),
            None => format!(
                "sqlite://{}?mode=rwc",
                data_dir.join(HISTORY_FILE).display()
            ),
        };
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        // Readers, and one connection every write takes (as the model's `model::writer`: its
        // page cache stays warm, and writers wait their turn for it rather than for the
        // database's lock).
        let pool = Self::connect(&url, backend, Connections::Readers).await?;
        match backend {
            Backend::Sqlite => SQLITE.run(&pool).await?,
            Backend::Postgres => POSTGRES.run(&pool).await?,
        }
        let writer = Self::connect(&url, backend, Connections::Writer).await?;
        Ok(Self {
            pool,
            writer,
            backend,
            restart: Restart::default(),
        })
    }

    async fn connect(url: &str, backend: Backend, role: Connections) -> sqlx::Result<AnyPool> {
        let (options, cache) = match role {
            Connections::Readers => (
                AnyPoolOptions::new().max_connections(4),
                model::READER_CACHE,
            ),
            // Kept for good, as the model's (`model::writer`).
            Connections::Writer => (
                AnyPoolOptions::new()
                    .max_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None),
                model::WRITER_CACHE,
            ),
        };
        options
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Durable before the model forgets the runs; readers beside the
                        // writer; pages cached as the model's (`model::open_with`).
                        for pragma in [
                            "PRAGMA journal_mode = WAL".to_owned(),
                            "PRAGMA synchronous = FULL".to_owned(),
                            "PRAGMA busy_timeout = 5000".to_owned(),
                            format!("PRAGMA cache_size = {cache}"),
                            // Checkpointed beside the writer (`model::wal`).
                            "PRAGMA wal_autocheckpoint = 0".to_owned(),
                            format!("PRAGMA journal_size_limit = {}", wal::KEEP_BYTES),
                        ] {
                            sqlx::query(&pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// For its log's checkpointer (`model::wal`).
    pub fn wal_restart(&self) -> Restart {
        self.restart.clone()
    }

    /// A transaction whose reads all see one snapshot of the store (PostgreSQL's default
    /// isolation would let each statement see what committed since the last).
    async fn reading(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Any>> {
        match self.backend {
            Backend::Sqlite => self.pool.begin().await,
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
            }
        }
    }

    /// A transaction that may read before it writes. On SQLite it takes the write lock as it
    /// begins: begun deferred, one that had read would fail at once with "database is
    /// locked" when another (the state machine's put, the gap filler, the sweeper) had
    /// written since, rather than wait. On PostgreSQL writers take turns on one advisory lock.
    async fn writing(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Any>> {
        match self.backend {
            Backend::Sqlite => {
                if self.restart.asked() {
                    sqlx::query(wal::PASSIVE).execute(&self.writer).await?;
                }
                self.writer.begin_with("BEGIN IMMEDIATE").await
            }
            Backend::Postgres => {
                // Writers take turns, as on SQLite: the hourly counts' triggers update
                // `run_hours` rows in no set order, and two writers touching the same hours
                // deadlocked (one failed) instead of waiting. One lock for the store, held to
                // the transaction's end.
                let mut tx = self.writer.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(7265783)")
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    /// Writes retired runs and their attempts, each with the log index it was retired at,
    /// as the state machine applies their retirement; writing the same again changes nothing.
    pub async fn put(&self, retired: &[(u64, Retired)]) -> sqlx::Result<()> {
        let mut tx = self.writing().await?;
        write(&mut tx, retired).await?;
        if let Some(newest) = retired.iter().map(|(i, _)| *i).max() {
            sqlx::query(
                "INSERT INTO progress (name, value) VALUES ('applied_through', $1) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value \
                 WHERE progress.value < excluded.value",
            )
            .bind(newest as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Runs matching `filter` retired at or before `through`, newest first.
    pub async fn runs(&self, filter: &RunFilter, through: u64) -> sqlx::Result<Vec<RunRecord>> {
        let mut w = filter.clause(Dialect::History { through }, true);
        let limit = w.mark(Bind::Number(i64::from(filter.page())));
        let sql = format!(
            "SELECT {COLUMNS} FROM runs{} ORDER BY order_ms DESC, run_id DESC LIMIT {limit}",
            w.sql
        );
        Ok(bound(sqlx::query(&sql), &w.binds)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(record)
            .collect())
    }

    /// One run, if it was retired at or before `through`.
    pub async fn run(&self, run_id: &str, through: u64) -> sqlx::Result<Option<RunRecord>> {
        Ok(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM runs WHERE run_id = $1 AND retired_index <= $2"
        ))
        .bind(run_id)
        .bind(through as i64)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(record))
    }

    /// One retired run's attempts.
    pub async fn attempts(&self, run_id: &str) -> sqlx::Result<Vec<TaskAttempt>> {
        Ok(sqlx::query(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM task_attempts WHERE run_id = $1 ORDER BY {ATTEMPT_ORDER}"
        ))
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(attempt)
        .collect())
    }

    /// Runs retired at or before `through` listed in `[since_ms, until_ms)`, per data center
    /// and state.
    pub async fn activity(
        &self,
        since_ms: i64,
        until_ms: i64,
        through: u64,
    ) -> sqlx::Result<Vec<(String, String, u64)>> {
        Ok(sqlx::query(
            "SELECT dc, state, COUNT(*) AS n FROM runs WHERE retired_index <= $1 \
             AND order_ms >= $2 AND order_ms < $3 GROUP BY dc, state",
        )
        .bind(through as i64)
        .bind(since_ms)
        .bind(until_ms)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            (
                row.get("dc"),
                row.get("state"),
                row.get::<i64, _>("n") as u64,
            )
        })
        .collect())
    }

    /// The lateness of the scheduled runs retired at or before `through` fired since
    /// `since_ms` that started, with their data center.
    pub async fn lateness(&self, since_ms: i64, through: u64) -> sqlx::Result<Vec<(String, i64)>> {
        Ok(sqlx::query(
            "SELECT dc, started_ms - fire_ms AS late FROM runs WHERE retired_index <= $1 \
             AND order_ms >= $2 AND fire_ms >= $2 AND started_ms IS NOT NULL",
        )
        .bind(through as i64)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| (row.get("dc"), row.get("late")))
        .collect())
    }

    /// A retired run with what re-running it needs from its family (none: not here).
    pub async fn family(&self, run_id: &str, through: u64) -> sqlx::Result<Option<RetiredFamily>> {
        let Some(run) = self.run(run_id, through).await? else {
            return Ok(None);
        };
        let first = run.rerun_of.clone().unwrap_or_else(|| run.run_id.clone());
        let fire_ms: Option<i64> = sqlx::query_scalar("SELECT fire_ms FROM runs WHERE run_id = $1")
            .bind(&first)
            .fetch_optional(&self.pool)
            .await?
            .flatten();
        let generation: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(generation) FROM runs WHERE run_id = $1 OR rerun_of = $1",
        )
        .bind(&first)
        .fetch_one(&self.pool)
        .await?;
        let succeeded: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT task FROM task_attempts WHERE run_id = $1 AND outcome = 'succeeded'",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(RetiredFamily {
            run,
            fire_ms,
            generation: generation.unwrap_or(1) as u32,
            succeeded,
        }))
    }

    /// How many runs the store holds.
    pub async fn count(&self) -> sqlx::Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }
}

/// `rows` rows of `columns` placeholders for a multi-row `VALUES`: `($1, $2), ($3, $4)` for
/// PostgreSQL, `(?, ?), (?, ?)` for SQLite. (SQLite takes `$1` for a *named* parameter, and
/// sqlx looks each one's name up in a list as long as the statement's: binding a
/// 5,000-parameter statement took longer than running it, a quarter of a busy plane's time.)
fn values(conn: &sqlx::AnyConnection, rows: usize, columns: usize) -> String {
    let marks = placeholders(conn, rows * columns);
    marks
        .chunks(columns)
        .map(|row| format!("({})", row.join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `n` placeholders as `conn`'s database wants them ([`values`]).
fn placeholders(conn: &sqlx::AnyConnection, n: usize) -> Vec<String> {
    if conn.backend_name() == "SQLite" {
        vec!["?".to_owned(); n]
    } else {
        (1..=n).map(|i| format!("${i}")).collect()
    }
}

/// Writes `retired` in `tx`.
async fn write(tx: &mut sqlx::AnyConnection, retired: &[(u64, Retired)]) -> sqlx::Result<()> {
    let updates: Vec<String> = COLUMNS
        .split(", ")
        .skip(1)
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    // Many rows a statement: a statement per row is a round trip each to PostgreSQL.
    for chunk in retired.chunks(RUNS_PER_STATEMENT) {
        let upsert = format!(
            "INSERT INTO runs ({COLUMNS}) VALUES {} ON CONFLICT (run_id) DO UPDATE SET {}",
            values(tx, chunk.len(), 25),
            updates.join(", ")
        );
        let mut query = sqlx::query(&upsert);
        for (index, Retired { run, .. }) in chunk {
            let order_ms = run
                .fire_ms
                .or(run.requested_ms)
                .or(run.order_ms)
                .unwrap_or_default();
            let kept = (!run.kept.is_empty())
                .then(|| serde_json::to_string(&run.kept).expect("names serialise"));
            query = query
                .bind(run.run_id.clone())
                .bind(run.tenant.clone())
                .bind(run.workflow.clone())
                .bind(run.workflow_version as i64)
                .bind(run.schedule.clone())
                .bind(run.fire_ms)
                .bind(run.environment.clone())
                .bind(run.cluster.clone())
                .bind(run.dc.clone())
                .bind(run.state.clone())
                .bind(run.agent.clone())
                .bind(run.epoch as i64)
                .bind(run.requested_ms)
                .bind(run.queued_ms)
                .bind(run.started_ms)
                .bind(run.finished_ms)
                .bind(run.message.clone())
                .bind(i64::from(run.starts))
                .bind(run.order_ms.unwrap_or_default())
                .bind(order_ms)
                .bind(i64::from(run.generation))
                .bind(run.rerun_of.clone())
                .bind(kept)
                .bind(run.requested_by.clone())
                .bind(*index as i64);
        }
        query.execute(&mut *tx).await?;
        // A run written again (a replayed retirement, a gap filled twice) has the same
        // attempts: the old rows go first.
        let marks = placeholders(tx, chunk.len());
        let delete = format!(
            "DELETE FROM task_attempts WHERE run_id IN ({})",
            marks.join(", ")
        );
        let mut query = sqlx::query(&delete);
        for (_, r) in chunk {
            query = query.bind(r.run.run_id.clone());
        }
        query.execute(&mut *tx).await?;
        let attempts: Vec<(&str, &TaskAttempt)> = chunk
            .iter()
            .flat_map(|(_, r)| r.attempts.iter().map(|a| (r.run.run_id.as_str(), a)))
            .collect();
        for some in attempts.chunks(ATTEMPTS_PER_STATEMENT) {
            let insert = format!(
                "INSERT INTO task_attempts (run_id, task, attempt, outcome, started_ms, \
                 finished_ms, exit_code, message, warning) VALUES {}",
                values(tx, some.len(), 9)
            );
            let mut query = sqlx::query(&insert);
            for (run_id, a) in some {
                query = query
                    .bind(run_id.to_string())
                    .bind(a.task.clone())
                    .bind(i64::from(a.attempt))
                    .bind(a.outcome.clone())
                    .bind(a.started_ms)
                    .bind(a.finished_ms)
                    .bind(a.exit_code.map(i64::from))
                    .bind(a.message.clone())
                    .bind(a.warning.clone());
            }
            query.execute(&mut *tx).await?;
        }
    }
    Ok(())
}

/// `query` with `binds` bound in order.
fn bound<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for b in binds {
        query = match b {
            Bind::Text(t) => query.bind(t.as_str()),
            Bind::Number(n) => query.bind(*n),
        };
    }
    query
}

/// What an attempt row holds, as [`attempt`] reads it, and the order a run's are listed in.
const ATTEMPT_COLUMNS: &str =
    "run_id, task, attempt, outcome, started_ms, finished_ms, exit_code, message, warning";
const ATTEMPT_ORDER: &str = "COALESCE(started_ms, finished_ms) NULLS FIRST, task, attempt";

fn attempt(row: &AnyRow) -> TaskAttempt {
    TaskAttempt {
        task: row.get("task"),
        attempt: row.get::<i64, _>("attempt") as u32,
        outcome: row.get("outcome"),
        started_ms: row.get("started_ms"),
        finished_ms: row.get("finished_ms"),
        exit_code: row.get::<Option<i64>, _>("exit_code").map(|c| c as i32),
        message: row.get("message"),
        warning: row.get("warning"),
    }
}

fn record(row: &AnyRow) -> RunRecord {
    let fire_ms: Option<i64> = row.get("fire_ms");
    let started_ms: Option<i64> = row.get("started_ms");
    RunRecord {
        run_id: row.get("run_id"),
        tenant: row.get("tenant"),
        workflow: row.get("workflow"),
        workflow_version: row.get::<i64, _>("workflow_version") as u64,
        schedule: row.get("schedule"),
        fire_ms,
        environment: row.get("environment"),
        cluster: row.get("cluster"),
        dc: row.get("dc"),
        state: row.get("state"),
        agent: row.get("agent"),
        epoch: row.get::<i64, _>("epoch") as u64,
        requested_ms: row.get("requested_ms"),
        queued_ms: row.get("queued_ms"),
        started_ms,
        finished_ms: row.get("finished_ms"),
        lateness_ms: fire_ms.zip(started_ms).map(|(f, s)| s - f),
        message: row.get("message"),
        starts: row.get::<i64, _>("starts") as u32,
        order_ms: Some(row.get("updated_ms")),
        generation: row.get::<i64, _>("generation") as u32,
        rerun_of: row.get("rerun_of"),
        requested_by: row.get("requested_by"),
        kept: row
            .get::<Option<String>, _>("kept")
            .and_then(|k| serde_json::from_str(&k).ok())
            .unwrap_or_default(),
    }
}
