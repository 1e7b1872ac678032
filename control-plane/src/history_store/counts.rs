//! How many of the store's runs a filter matches, per state — the analysis page's counts. A
//! window's whole hours are read from `run_hours` (kept by triggers: migration 0002) less the
//! rows retired after the reader's `through` (a retirement the model has not committed yet,
//! or one a lagging node's model has not reached in a shared PostgreSQL store), and the part
//! hours at its ends are counted run by run. Filters `run_hours` does not carry (workflow,
//! schedule, agent, task, lateness) are counted run by run throughout. One snapshot for all
//! three reads, so a retirement committing between them cannot be counted once and
//! subtracted twice.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{Backend, HistoryStore, bound};
use crate::model::query::{Bind, Dialect, RunFilter, Where};

const HOUR_MS: i64 = 3_600_000;

impl HistoryStore {
    /// How many runs matching `filter` (but its state and cursor) retired at or before
    /// `through` are in each state.
    pub async fn run_counts(
        &self,
        filter: &RunFilter,
        through: u64,
    ) -> sqlx::Result<Vec<(String, u64)>> {
        let filter = RunFilter {
            after: None,
            state: None,
            ..filter.clone()
        };
        let mut tx = self.reading().await?;
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        match whole_hours(&filter) {
            None => add(&mut counts, exact(&mut tx, &filter, through).await?, 1),
            Some((from, to)) => {
                for (since, until) in [(filter.since_ms, from), (to, filter.until_ms)] {
                    if let (Some(since), Some(until)) = (since, until)
                        && since < until
                    {
                        let part = RunFilter {
                            since_ms: Some(since),
                            until_ms: Some(until),
                            ..filter.clone()
                        };
                        add(&mut counts, exact(&mut tx, &part, through).await?, 1);
                    }
                }
                let hours = span(dimensions(&filter), "hour_ms", from, to);
                let counted = format!(
                    "SELECT state, CAST(SUM(n) AS BIGINT) AS n FROM run_hours{} GROUP BY state",
                    hours.sql
                );
                add(
                    &mut counts,
                    grouped(&mut tx, &counted, &hours.binds).await?,
                    1,
                );
                let mut w = span(dimensions(&filter), "order_ms", from, to);
                let t = w.mark(Bind::Number(through as i64));
                w.sql.push_str(&format!(" AND retired_index > {t}"));
                // Few rows, found by retirement index; SQLite would rather walk the window.
                let index = match self.backend {
                    Backend::Sqlite => " INDEXED BY runs_retired",
                    Backend::Postgres => "",
                };
                let later = format!(
                    "SELECT state, COUNT(*) AS n FROM runs{index}{} GROUP BY state",
                    w.sql
                );
                add(&mut counts, grouped(&mut tx, &later, &w.binds).await?, -1);
            }
        }
        tx.commit().await?;
        Ok(counts
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(state, n)| (state, n as u64))
            .collect())
    }
}

/// The whole hours of `filter`'s window, `[from, to)` (none: unbounded on that side), when its
/// counts can be read from `run_hours`: it filters on nothing `run_hours` lacks, and its
/// window holds a whole hour.
fn whole_hours(filter: &RunFilter) -> Option<(Option<i64>, Option<i64>)> {
    if filter.workflow.is_some()
        || filter.schedule.is_some()
        || filter.agent.is_some()
        || filter.task.is_some()
        || filter.lateness_min_ms.is_some()
    {
        return None;
    }
    let from = filter
        .since_ms
        .map(|s| (s + HOUR_MS - 1).div_euclid(HOUR_MS) * HOUR_MS);
    let to = filter.until_ms.map(|u| u.div_euclid(HOUR_MS) * HOUR_MS);
    match (from, to) {
        (Some(f), Some(t)) if f >= t => None,
        window => Some(window),
    }
}

/// `filter`'s conditions on what both `runs` and `run_hours` carry.
fn dimensions(filter: &RunFilter) -> Where {
    let mut w = Where {
        sql: String::from(" WHERE 1 = 1"),
        binds: Vec::new(),
    };
    for (column, value) in [
        ("dc", &filter.dc),
        ("cluster", &filter.cluster),
        ("tenant", &filter.tenant),
        ("environment", &filter.environment),
    ] {
        if let Some(value) = value {
            let m = w.mark(Bind::Text(value.clone()));
            w.sql.push_str(&format!(" AND {column} = {m}"));
        }
    }
    if let Some(within) = &filter.within {
        w.one_of("tenant", within);
    }
    w
}

/// `w` limited to `column` in `[from, to)`.
fn span(mut w: Where, column: &str, from: Option<i64>, to: Option<i64>) -> Where {
    if let Some(from) = from {
        let m = w.mark(Bind::Number(from));
        w.sql.push_str(&format!(" AND {column} >= {m}"));
    }
    if let Some(to) = to {
        let m = w.mark(Bind::Number(to));
        w.sql.push_str(&format!(" AND {column} < {m}"));
    }
    w
}

/// The runs matching `filter` retired at or before `through`, per state, counted one by one.
async fn exact(
    tx: &mut sqlx::AnyConnection,
    filter: &RunFilter,
    through: u64,
) -> sqlx::Result<Vec<(String, i64)>> {
    let w = filter.clause(Dialect::History { through }, false);
    let sql = format!(
        "SELECT state, COUNT(*) AS n FROM runs{} GROUP BY state",
        w.sql
    );
    grouped(tx, &sql, &w.binds).await
}

/// A `SELECT state, … AS n … GROUP BY state`'s rows.
async fn grouped(
    tx: &mut sqlx::AnyConnection,
    sql: &str,
    binds: &[Bind],
) -> sqlx::Result<Vec<(String, i64)>> {
    Ok(bound(sqlx::query(sql), binds)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| (row.get("state"), row.get::<i64, _>("n")))
        .collect())
}

fn add(counts: &mut BTreeMap<String, i64>, rows: Vec<(String, i64)>, sign: i64) {
    for (state, n) in rows {
        *counts.entry(state).or_default() += sign * n;
    }
}
