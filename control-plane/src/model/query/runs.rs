//! Reads of the run history (runs, task attempts, logs) and its aggregates for the API, CLI
//! and UI: the cross-DC listing with its filters, counts and keyset pages, one run's attempts
//! and logs, and the overview's day of activity. Re-exported by [`super`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection, SqlitePool};

/// ` AND <column> IN (?, ?, …)` for `n` values (`IN ()` matches nothing, as an empty scope
/// should).
pub(super) fn in_list(column_clause: &str, n: usize) -> String {
    let marks = vec!["?"; n].join(", ");
    format!("{column_clause} IN ({marks})")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "Run")]
pub struct RunRecord {
    pub run_id: String,
    pub tenant: String,
    pub workflow: String,
    pub workflow_version: u64,
    pub schedule: Option<String>,
    pub fire_ms: Option<i64>,
    pub environment: String,
    pub cluster: String,
    pub dc: String,
    pub state: String,
    pub agent: Option<String>,
    pub epoch: u64,
    pub requested_ms: Option<i64>,
    pub queued_ms: Option<i64>,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// Start − fire time, for scheduled runs that started.
    pub lateness_ms: Option<i64>,
    pub message: String,
    /// How many agents reported starting it (including starts refused because the agent had
    /// lost the partition): more than one is a fire record run twice.
    pub starts: u32,
    /// When it was last changed: where a run with neither fire nor request time sorts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_ms: Option<i64>,
    /// 1 for a record's (or a run-now's) first run; a re-run is one further.
    #[serde(default = "first_generation")]
    pub generation: u32,
    /// A re-run's first generation (what `runs rerun` named, or the run that one re-ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<String>,
    /// Who asked for it (a run-now or a re-run), as the audit trail names principals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// A recovery's tasks kept from earlier generations instead of run again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
}

fn first_generation() -> u32 {
    1
}

/// What `runs list` filters by; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunFilter {
    pub dc: Option<String>,
    pub cluster: Option<String>,
    pub tenant: Option<String>,
    pub environment: Option<String>,
    pub workflow: Option<String>,
    pub schedule: Option<String>,
    pub agent: Option<String>,
    pub state: Option<String>,
    /// Runs fired, requested or updated at or after this (ms since the epoch).
    pub since_ms: Option<i64>,
    /// … and before this.
    pub until_ms: Option<i64>,
    /// Only runs that started at least this late (start − fire time, ms).
    pub lateness_min_ms: Option<i64>,
    /// Only runs with an attempt of this task.
    pub task: Option<String>,
    /// Keyset pagination: only runs after this one in the list's order (newest first), as
    /// [`RunRecord::cursor`] gives it.
    pub after: Option<String>,
    /// At most this many, newest first (default 100, at most 100 000).
    pub limit: Option<u32>,
    /// Only runs of these tenants (the reader's scope); none: any tenant.
    #[serde(skip)]
    pub within: Option<Vec<String>>,
}

/// The order runs are listed in: when they fired (or were asked for, or last changed), newest
/// first; ties by id.
const RUN_ORDER_KEY: &str = "COALESCE(fire_ms, requested_ms, updated_ms)";

/// Where a run query is run: the model's `runs` (SQLite, the listing key an expression over
/// `runs_order`), or the history store's (SQLite or PostgreSQL, the key a column, only rows
/// retired at or before a log index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Model,
    History { through: u64 },
}

impl Dialect {
    /// The listing key.
    pub fn order_key(self) -> &'static str {
        match self {
            Self::Model => RUN_ORDER_KEY,
            Self::History { .. } => "order_ms",
        }
    }

    /// `column`, kept from its own index where the model's plan wants (SQLite's unary `+`).
    fn unindexed(self, column: &str) -> String {
        match self {
            Self::Model => format!("+{column}"),
            Self::History { .. } => column.to_owned(),
        }
    }
}

/// A value bound to a query, in the order its `$n` appears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Text(String),
    Number(i64),
}

/// A `WHERE` clause and its binds (`$1`, `$2`, … in order: both SQLite and PostgreSQL read
/// them), built from a filter.
#[derive(Debug, Clone, Default)]
pub struct Where {
    pub sql: String,
    pub binds: Vec<Bind>,
}

impl Where {
    /// The next placeholder, bound to `value`.
    pub fn mark(&mut self, value: Bind) -> String {
        self.binds.push(value);
        format!("${}", self.binds.len())
    }

    /// ` AND column IN (…)` of `values`; none matches nothing (`IN ()` is SQLite's alone).
    pub fn one_of(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            self.sql.push_str(" AND 1 = 0");
        } else {
            let marks: Vec<String> = values
                .iter()
                .map(|v| self.mark(Bind::Text(v.clone())))
                .collect();
            self.sql
                .push_str(&format!(" AND {column} IN ({})", marks.join(", ")));
        }
    }
}

impl RunFilter {
    /// The filter as SQL over `runs` in `dialect`; `with_state`: whether the state filter
    /// applies (the per-state counts leave it out).
    pub fn clause(&self, dialect: Dialect, with_state: bool) -> Where {
        let mut w = Where {
            sql: String::from(" WHERE 1 = 1"),
            binds: Vec::new(),
        };
        if let Dialect::History { through } = dialect {
            let m = w.mark(Bind::Number(through as i64));
            w.sql.push_str(&format!(" AND retired_index <= {m}"));
        }
        // `+tenant`, `+state`: compared without their own indexes, which SQLite would otherwise
        // pick (half the history is one tenant's, most of it one state) over walking
        // `runs_order` through the window, the cheap plan when a page wants the newest 50.
        let (tenant, state) = (dialect.unindexed("tenant"), dialect.unindexed("state"));
        for (column, value) in [
            ("dc", &self.dc),
            ("cluster", &self.cluster),
            (tenant.as_str(), &self.tenant),
            ("environment", &self.environment),
            ("workflow", &self.workflow),
            ("schedule", &self.schedule),
            ("agent", &self.agent),
            (state.as_str(), if with_state { &self.state } else { &None }),
        ] {
            if let Some(value) = value {
                let m = w.mark(Bind::Text(value.clone()));
                w.sql.push_str(&format!(" AND {column} = {m}"));
            }
        }
        if let Some(task) = &self.task {
            let m = w.mark(Bind::Text(task.clone()));
            w.sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM task_attempts a WHERE a.run_id = runs.run_id \
                 AND a.task = {m})"
            ));
        }
        if let Some(within) = &self.within {
            w.one_of(&tenant, within);
        }
        // Bound as numbers: an expression has no column affinity, so a text bound here would
        // compare as text (every integer is "less" than any text) and match nothing.
        let key = dialect.order_key();
        if let Some(since) = self.since_ms {
            let m = w.mark(Bind::Number(since));
            w.sql.push_str(&format!(" AND {key} >= {m}"));
        }
        if let Some(until) = self.until_ms {
            let m = w.mark(Bind::Number(until));
            w.sql.push_str(&format!(" AND {key} < {m}"));
        }
        if let Some(late) = self.lateness_min_ms {
            let m = w.mark(Bind::Number(late));
            w.sql.push_str(&format!(" AND started_ms - fire_ms >= {m}"));
        }
        if let Some((at, id)) = self.after.as_deref().and_then(RunRecord::parse_cursor) {
            // A row value, so the index walk starts at the cursor (an OR would not).
            let (a, b) = (w.mark(Bind::Number(at)), w.mark(Bind::Text(id)));
            w.sql
                .push_str(&format!(" AND ({key}, run_id) < ({a}, {b})"));
        }
        w
    }

    /// At most how many runs a list gives.
    pub fn page(&self) -> u32 {
        self.limit.unwrap_or(100).clamp(1, 100_000)
    }
}

/// `query` with `binds` bound in order.
fn bound<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    for b in binds {
        query = match b {
            Bind::Text(t) => query.bind(t.as_str()),
            Bind::Number(n) => query.bind(*n),
        };
    }
    query
}

impl RunRecord {
    /// Where a list continues after this run (`after` of the next page).
    pub fn cursor(&self) -> String {
        let key = self
            .fire_ms
            .or(self.requested_ms)
            .or(self.order_ms)
            .unwrap_or_default();
        format!("{key}~{}", self.run_id)
    }

    fn parse_cursor(cursor: &str) -> Option<(i64, String)> {
        let (key, id) = cursor.split_once('~')?;
        Some((key.parse().ok()?, id.to_owned()))
    }
}

const RUN_COLUMNS: &str = "run_id, tenant, workflow, workflow_version, schedule, fire_ms, \
     environment, cluster, dc, state, agent, epoch, requested_ms, queued_ms, started_ms, \
     finished_ms, message, updated_ms, starts + (SELECT COUNT(*) FROM fenced_starts f \
     WHERE f.run_id = runs.run_id) AS starts, generation, rerun_of, kept, \
     (SELECT actor FROM audit a WHERE a.log_index = runs.request_index) AS requested_by";

fn run_record(row: &sqlx::sqlite::SqliteRow) -> RunRecord {
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
        order_ms: row.get("updated_ms"),
        generation: row.get::<i64, _>("generation") as u32,
        rerun_of: row.get("rerun_of"),
        requested_by: row.get("requested_by"),
        kept: row
            .get::<Option<String>, _>("kept")
            .and_then(|k| serde_json::from_str(&k).ok())
            .unwrap_or_default(),
    }
}

/// The model's runs matching `filter`, newest first (by fire or request time).
pub async fn runs(
    conn: impl sqlx::SqliteExecutor<'_>,
    filter: &RunFilter,
) -> sqlx::Result<Vec<RunRecord>> {
    let mut w = filter.clause(Dialect::Model, true);
    let limit = w.mark(Bind::Number(i64::from(filter.page())));
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs{} ORDER BY {RUN_ORDER_KEY} DESC, run_id DESC LIMIT {limit}",
        w.sql
    );
    Ok(bound(sqlx::query(&sql), &w.binds)
        .fetch_all(conn)
        .await?
        .iter()
        .map(run_record)
        .collect())
}

/// How many of the model's runs match `filter` in each state (the state filter itself left
/// out, so the counts say what choosing another state would show; the cursor left out too).
pub async fn run_counts(
    conn: impl sqlx::SqliteExecutor<'_>,
    filter: &RunFilter,
) -> sqlx::Result<Vec<(String, u64)>> {
    let w = RunFilter {
        after: None,
        ..filter.clone()
    }
    .clause(Dialect::Model, false);
    let sql = format!(
        "SELECT state, COUNT(*) AS n FROM runs{} GROUP BY state ORDER BY state",
        w.sql
    );
    Ok(bound(sqlx::query(&sql), &w.binds)
        .fetch_all(conn)
        .await?
        .iter()
        .map(|row| (row.get("state"), row.get::<i64, _>("n") as u64))
        .collect())
}

/// One run of the model's.
pub async fn run_in(
    conn: impl sqlx::SqliteExecutor<'_>,
    run_id: &str,
) -> sqlx::Result<Option<RunRecord>> {
    Ok(
        sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?"))
            .bind(run_id)
            .fetch_optional(conn)
            .await?
            .as_ref()
            .map(run_record),
    )
}

/// One attempt of one task of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TaskAttempt {
    pub task: String,
    pub attempt: u32,
    pub outcome: String,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub exit_code: Option<i32>,
    pub message: String,
    /// Set when the attempt started despite a problem (a stale resource used: S3 was down).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub warning: String,
}

/// One run's attempts, in the model.
pub async fn attempts_in(
    conn: impl sqlx::SqliteExecutor<'_>,
    run_id: &str,
) -> sqlx::Result<Vec<TaskAttempt>> {
    Ok(sqlx::query(
        "SELECT task, attempt, outcome, started_ms, finished_ms, exit_code, message, warning \
         FROM task_attempts WHERE run_id = ? ORDER BY COALESCE(started_ms, finished_ms), task, attempt",
    )
    .bind(run_id)
    .fetch_all(conn)
    .await?
    .iter()
    .map(|row| TaskAttempt {
        task: row.get("task"),
        attempt: row.get::<i64, _>("attempt") as u32,
        outcome: row.get("outcome"),
        started_ms: row.get("started_ms"),
        finished_ms: row.get("finished_ms"),
        exit_code: row.get("exit_code"),
        message: row.get("message"),
        warning: row.get("warning"),
    })
    .collect())
}

/// One task attempt's log, as far as it has arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AttemptLog {
    pub task: String,
    pub attempt: u32,
    pub text: String,
}

pub async fn logs(pool: &SqlitePool, run_id: &str) -> sqlx::Result<Vec<AttemptLog>> {
    let rows = sqlx::query(
        "SELECT task, attempt, data FROM run_logs WHERE run_id = ? \
         ORDER BY task, attempt, offset",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?;
    let mut logs: Vec<AttemptLog> = Vec::new();
    for row in rows {
        let task: String = row.get("task");
        let attempt = row.get::<i64, _>("attempt") as u32;
        let data: String = row.get("data");
        match logs.last_mut() {
            Some(last) if last.task == task && last.attempt == attempt => last.text.push_str(&data),
            _ => logs.push(AttemptLog {
                task,
                attempt,
                text: data,
            }),
        }
    }
    Ok(logs)
}

/// The state and agent of each of `run_ids` the model holds, in one statement (a report
/// carries hundreds of runs' log pieces).
pub async fn run_holders(
    conn: &mut SqliteConnection,
    run_ids: &[&str],
) -> sqlx::Result<HashMap<String, (String, Option<String>)>> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT run_id, state, agent FROM runs WHERE run_id IN (SELECT value FROM json_each(?))",
    )
    .bind(serde_json::to_string(run_ids).expect("ids print as JSON"))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(run_id, state, agent)| (run_id, (state, agent)))
        .collect())
}

/// Whether cluster `backup` is the backup of cluster `of` (the state machine asks inside its
/// transaction, the agents' service on a pooled connection).
pub async fn backs_up(conn: &mut SqliteConnection, backup: &str, of: &str) -> sqlx::Result<bool> {
    let theirs: Option<Option<String>> =
        sqlx::query_scalar("SELECT backup FROM clusters WHERE name = ?")
            .bind(of)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(theirs.flatten().as_deref() == Some(backup))
}

/// A piece of an attempt's log: where it starts (bytes, as the agent counted) and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPiece {
    pub offset: i64,
    pub data: String,
}

/// The attempts of a run that have a log, by task and attempt.
pub async fn log_attempts(pool: &SqlitePool, run_id: &str) -> sqlx::Result<Vec<(String, u32)>> {
    Ok(sqlx::query(
        "SELECT DISTINCT task, attempt FROM run_logs WHERE run_id = ? ORDER BY task, attempt",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| (row.get("task"), row.get::<i64, _>("attempt") as u32))
    .collect())
}

/// The end of one attempt's log before `before` (none: its very end), at most `budget` bytes
/// (or the one piece, if a single piece is larger), oldest first; and whether anything comes before it. Read newest first, so a page
/// never reads a large log whole.
pub async fn log_tail(
    pool: &SqlitePool,
    run_id: &str,
    task: &str,
    attempt: u32,
    before: Option<i64>,
    budget: usize,
) -> sqlx::Result<(Vec<LogPiece>, bool)> {
    use tokio_stream::StreamExt;
    let mut rows = sqlx::query(
        "SELECT offset, data FROM run_logs WHERE run_id = ? AND task = ? AND attempt = ? \
         AND offset < ? ORDER BY offset DESC",
    )
    .bind(run_id)
    .bind(task)
    .bind(attempt as i64)
    .bind(before.unwrap_or(i64::MAX))
    .fetch(pool);
    let (mut pieces, mut size) = (Vec::new(), 0usize);
    while let Some(row) = rows.next().await {
        let row = row?;
        let data: String = row.get("data");
        // Within the budget, unless one piece alone is larger.
        if !pieces.is_empty() && size + data.len() > budget {
            return Ok((pieces.into_iter().rev().collect(), true));
        }
        size += data.len();
        pieces.push(LogPiece {
            offset: row.get("offset"),
            data,
        });
    }
    Ok((pieces.into_iter().rev().collect(), false))
}

/// One attempt's log after the piece that starts at `after` (-1: all of it), oldest first.
pub async fn log_after(
    pool: &SqlitePool,
    run_id: &str,
    task: &str,
    attempt: u32,
    after: i64,
) -> sqlx::Result<Vec<LogPiece>> {
    Ok(sqlx::query(
        "SELECT offset, data FROM run_logs WHERE run_id = ? AND task = ? AND attempt = ? \
         AND offset > ? ORDER BY offset",
    )
    .bind(run_id)
    .bind(task)
    .bind(attempt as i64)
    .bind(after)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| LogPiece {
        offset: row.get("offset"),
        data: row.get("data"),
    })
    .collect())
}

/// Runs since `since_ms` (by fire, request or last change time) per data center, state and
/// hour (the hour's start, ms): what the federation overview counts and charts. Whole hours
/// come from `run_hours` (kept by triggers, migration 0012); the part of the first hour after
/// `since_ms` is counted from `runs_order`, so the window is exact.
pub async fn run_activity(
    conn: &mut SqliteConnection,
    since_ms: i64,
) -> sqlx::Result<Vec<(String, String, i64, u64)>> {
    const HOUR_MS: i64 = 3_600_000;
    let first_whole = (since_ms.div_euclid(HOUR_MS) + 1) * HOUR_MS;
    let mut out: Vec<(String, String, i64, u64)> = sqlx::query(&format!(
        "SELECT dc, state, COUNT(*) AS n FROM runs \
         WHERE {RUN_ORDER_KEY} >= ? AND {RUN_ORDER_KEY} < ? GROUP BY dc, state"
    ))
    .bind(since_ms)
    .bind(first_whole)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|row| {
        (
            row.get("dc"),
            row.get("state"),
            first_whole - HOUR_MS,
            row.get::<i64, _>("n") as u64,
        )
    })
    .collect();
    out.extend(
        sqlx::query("SELECT hour_ms, dc, state, n FROM run_hours WHERE hour_ms >= ? AND n > 0")
            .bind(first_whole)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| {
                (
                    row.get("dc"),
                    row.get("state"),
                    row.get("hour_ms"),
                    row.get::<i64, _>("n") as u64,
                )
            }),
    );
    Ok(out)
}

/// The lateness (start − fire time) of the scheduled runs since `since_ms` that started, with
/// their data center (in no order: the caller sorts what it keeps).
pub async fn lateness_by_dc(
    conn: impl sqlx::SqliteExecutor<'_>,
    since_ms: i64,
) -> sqlx::Result<Vec<(String, i64)>> {
    // Windowed by the order key as well (the same as the fire time for a scheduled run), so it
    // is read from `runs_order` alone (`+fire_ms`: not through the fire-time index, which
    // would read each run from the table). Sent back as one text (`dc late,dc late,…`; a
    // data center's name holds neither a space nor a comma): a row per run costs the driver
    // more than reading the runs does (45–115 ms for 33,000 runs against 15 ms).
    let text: Option<String> = sqlx::query_scalar(&format!(
        "SELECT group_concat(dc || ' ' || (started_ms - fire_ms), ',') FROM runs \
         WHERE {RUN_ORDER_KEY} >= ? AND +fire_ms >= ? AND started_ms IS NOT NULL"
    ))
    .bind(since_ms)
    .bind(since_ms)
    .fetch_one(conn)
    .await?;
    Ok(text
        .unwrap_or_default()
        .split(',')
        .filter_map(|item| {
            let (dc, late) = item.split_once(' ')?;
            Some((dc.to_owned(), late.parse().ok()?))
        })
        .collect())
}

/// How many runs each agent has going.
pub async fn running_by_agent(pool: &SqlitePool) -> sqlx::Result<Vec<(String, u64)>> {
    Ok(sqlx::query(
        // From the partial index `runs_going`.
        "SELECT agent, COUNT(*) AS n FROM runs WHERE state = 'started' AND agent IS NOT NULL \
         GROUP BY agent",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| (row.get("agent"), row.get::<i64, _>("n") as u64))
    .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `run_activity` must say: the runs of the window counted straight from the table.
    async fn counted(pool: &SqlitePool, since_ms: i64) -> Vec<(String, String, i64, u64)> {
        let mut rows: Vec<(String, String, i64, u64)> = sqlx::query(&format!(
            "SELECT dc, state, ({RUN_ORDER_KEY} / 3600000) * 3600000 AS hour, COUNT(*) AS n \
             FROM runs WHERE {RUN_ORDER_KEY} >= ? GROUP BY dc, state, hour"
        ))
        .bind(since_ms)
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get("dc"),
                r.get("state"),
                r.get("hour"),
                r.get::<i64, _>("n") as u64,
            )
        })
        .collect();
        rows.sort();
        rows
    }

    /// The hourly counts the triggers keep follow every way a run is written — made, moved on,
    /// its times changed, deleted — and, with the exact first hour, equal a count of the table;
    /// the lateness read as one text is every started run's of the window.
    #[tokio::test]
    async fn hourly_counts_follow_every_write_of_a_run() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::model::open(&dir.path().join("model.db"))
            .await
            .unwrap();
        let hour = 3_600_000_i64;
        let base = 1_800_000_000_000_i64;
        for i in 0..300_i64 {
            let (fire, requested) = if i % 3 == 0 {
                (None, Some(base + i * 397_000))
            } else {
                (Some(base + i * 211_000), None)
            };
            sqlx::query(
                "INSERT INTO runs (run_id, tenant, workflow, workflow_version, fire_ms, \
                 environment, cluster, dc, state, requested_ms, updated_ms) \
                 VALUES (?, 'ads', 'etl', 1, ?, 'prod', 'nj-main', ?, 'queued', ?, ?)",
            )
            .bind(format!("r{i}"))
            .bind(fire)
            .bind(if i % 2 == 0 { "nj" } else { "sg" })
            .bind(requested)
            .bind(base + i)
            .execute(&pool)
            .await
            .unwrap();
        }
        for (sql, every) in [
            (
                "UPDATE runs SET state = 'started', updated_ms = updated_ms + 5 WHERE rowid % ? = 0",
                2,
            ),
            ("UPDATE runs SET state = 'succeeded' WHERE rowid % ? = 0", 4),
            (
                "UPDATE runs SET fire_ms = fire_ms - 7200000 WHERE rowid % ? = 1",
                5,
            ),
            (
                "UPDATE runs SET updated_ms = updated_ms + 1 WHERE rowid % ? = 2",
                7,
            ),
            ("DELETE FROM runs WHERE rowid % ? = 3", 11),
        ] {
            sqlx::query(sql).bind(every).execute(&pool).await.unwrap();
        }
        for since in [base - hour, base + 7 * hour + 1_234, base + 20 * hour] {
            let mut got = run_activity(&mut pool.acquire().await.unwrap(), since)
                .await
                .unwrap();
            got.sort();
            assert_eq!(got, counted(&pool, since).await, "since {since}");
        }
        // The lateness of the started scheduled runs of a window, each once, with its DC.
        sqlx::query("UPDATE runs SET started_ms = fire_ms + rowid * 7 WHERE rowid % 3 = 0")
            .execute(&pool)
            .await
            .unwrap();
        let since = base + 3 * hour;
        let mut late = lateness_by_dc(&pool, since).await.unwrap();
        late.sort();
        let mut want: Vec<(String, i64)> = sqlx::query(
            "SELECT dc, started_ms - fire_ms AS late FROM runs \
             WHERE fire_ms >= ? AND started_ms IS NOT NULL",
        )
        .bind(since)
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("dc"), r.get("late")))
        .collect();
        want.sort();
        assert!(want.len() > 20, "{}", want.len());
        assert_eq!(late, want);
        assert!(
            lateness_by_dc(&pool, base + 1_000 * hour)
                .await
                .unwrap()
                .is_empty()
        );
        let negative: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM run_hours WHERE n < 0")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(negative, 0);
    }
}
