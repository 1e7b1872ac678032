//! Gaps: retired runs a node's history store never received because the node did not apply
//! their retirement itself — it installed a snapshot past it, was restored from one, or lost
//! its `history.db`. A node notices when its model has retired further than its store has
//! been written ([`HistoryStore::mark_gap`], at start and at each snapshot install), and
//! `retirement::Filler` copies the runs in from another member ([`HistoryStore::page`],
//! answered over the peer links, then [`HistoryStore::fill`]). A node with a gap is not ready
//! (`/readyz`): its lists would miss those runs.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{ATTEMPT_COLUMNS, ATTEMPT_ORDER, COLUMNS, HistoryStore, attempt, record, write};
use crate::model::query::TaskAttempt;
use crate::model::retire::Retired;

/// Runs a page of a gap's copy holds at most (a few MB of JSON over the peer links).
pub const PAGE: u32 = 5000;

/// Runs retired after `after_index` (and, within it, after `after_run`) up to
/// `through_index` that this store lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub after_index: u64,
    pub after_run: String,
    pub through_index: u64,
}

/// A page of another store's rows, as a peer answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub rows: Vec<(u64, Retired)>,
    /// Whether the store had every run of the range asked for (no gap of its own there).
    pub whole: bool,
}

impl HistoryStore {
    /// The newest retirement this store was written by or knows of.
    pub async fn applied_through(&self) -> sqlx::Result<u64> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT value FROM progress WHERE name = 'applied_through'")
                .fetch_optional(&self.pool)
                .await?;
        Ok(v.unwrap_or(0) as u64)
    }

    /// The model has retired runs up to `model_through`: what this store has not been written
    /// past becomes a gap. Returns whether there was one.
    pub async fn mark_gap(&self, model_through: u64) -> sqlx::Result<bool> {
        let mut tx = self.writing().await?;
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT value FROM progress WHERE name = 'applied_through'")
                .fetch_optional(&mut *tx)
                .await?;
        let applied = applied.unwrap_or(0) as u64;
        if model_through <= applied {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO gaps (through_index, after_index, after_run) VALUES ($1, $2, '') \
             ON CONFLICT (through_index) DO NOTHING",
        )
        .bind(model_through as i64)
        .bind(applied as i64)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO progress (name, value) VALUES ('applied_through', $1) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(model_through as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The gaps still to fill, oldest first.
    pub async fn gaps(&self) -> sqlx::Result<Vec<Gap>> {
        Ok(sqlx::query(
            "SELECT after_index, after_run, through_index FROM gaps ORDER BY through_index",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| Gap {
            after_index: row.get::<i64, _>("after_index") as u64,
            after_run: row.get("after_run"),
            through_index: row.get::<i64, _>("through_index") as u64,
        })
        .collect())
    }

    /// Up to `limit` runs of the range `gap` names, in (retired index, run id) order, and
    /// whether this store has the whole range.
    pub async fn page(&self, gap: &Gap, limit: u32) -> sqlx::Result<Page> {
        // One snapshot: the runs, their attempts and the store's own gaps agree.
        let mut tx = self.reading().await?;
        let own_gaps: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM gaps WHERE after_index < $1 AND through_index > $2",
        )
        .bind(gap.through_index as i64)
        .bind(gap.after_index as i64)
        .fetch_one(&mut *tx)
        .await?;
        let range = "FROM runs WHERE (retired_index, run_id) > ($1, $2) AND retired_index <= $3 \
             ORDER BY retired_index, run_id LIMIT $4";
        let runs = sqlx::query(&format!("SELECT {COLUMNS} {range}"))
            .bind(gap.after_index as i64)
            .bind(&gap.after_run)
            .bind(gap.through_index as i64)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        let mut attempts: HashMap<String, Vec<TaskAttempt>> = HashMap::new();
        for row in sqlx::query(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM task_attempts WHERE run_id IN (SELECT run_id {range}) \
             ORDER BY run_id, {ATTEMPT_ORDER}"
        ))
        .bind(gap.after_index as i64)
        .bind(&gap.after_run)
        .bind(gap.through_index as i64)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?
        {
            attempts
                .entry(row.get("run_id"))
                .or_default()
                .push(attempt(&row));
        }
        tx.commit().await?;
        let rows = runs
            .iter()
            .map(|row| {
                let run = record(row);
                let attempts = attempts.remove(&run.run_id).unwrap_or_default();
                let index = row.get::<i64, _>("retired_index") as u64;
                (index, Retired { run, attempts })
            })
            .collect();
        Ok(Page {
            rows,
            whole: own_gaps == 0,
        })
    }

    /// Writes a page copied from another store into `gap`, and moves the gap past it (or
    /// closes it, when `last` says nothing follows).
    pub async fn fill(&self, gap: &Gap, rows: &[(u64, Retired)], last: bool) -> sqlx::Result<()> {
        let mut tx = self.writing().await?;
        write(&mut tx, rows).await?;
        match rows.last() {
            _ if last => {
                sqlx::query("DELETE FROM gaps WHERE through_index = $1")
                    .bind(gap.through_index as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            Some((index, r)) => {
                sqlx::query(
                    "UPDATE gaps SET after_index = $1, after_run = $2 WHERE through_index = $3",
                )
                .bind(*index as i64)
                .bind(&r.run.run_id)
                .bind(gap.through_index as i64)
                .execute(&mut *tx)
                .await?;
            }
            None => {}
        }
        tx.commit().await
    }
}
