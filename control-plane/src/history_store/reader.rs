//! Reading runs from both places they may be: the model (open work and recent runs) and the
//! history store (runs retired from it). Each read takes the model's rows and its
//! `retired_through` in one SQLite read transaction, then the history rows retired at or
//! before it: a run retired later is still in the model as that transaction saw it, one
//! retired earlier is gone from it, so no run is counted twice or missed.

use sqlx::SqlitePool;

use super::HistoryStore;
use crate::model::Rerun;
use crate::model::query::{self, RunFilter, RunRecord, TaskAttempt};
use crate::model::retire::retired_through;

/// The API's, UI's and tests' way to the runs.
#[derive(Clone)]
pub struct RunReader {
    pub model: SqlitePool,
    pub history: HistoryStore,
}

impl RunReader {
    /// Runs matching `filter`, newest first (by fire or request time).
    pub async fn runs(&self, filter: &RunFilter) -> sqlx::Result<Vec<RunRecord>> {
        let mut tx = self.model.begin().await?;
        let through = retired_through(&mut tx).await?;
        let mut runs = query::runs(&mut *tx, filter).await?;
        tx.commit().await?;
        runs.extend(self.history.runs(filter, through).await?);
        runs.sort_by(|a, b| listing_key(b).cmp(&listing_key(a)));
        runs.truncate(filter.page() as usize);
        Ok(runs)
    }

    /// How many runs match `filter` in each state (its state and cursor left out).
    pub async fn run_counts(&self, filter: &RunFilter) -> sqlx::Result<Vec<(String, u64)>> {
        let mut tx = self.model.begin().await?;
        let through = retired_through(&mut tx).await?;
        let mut counts = query::run_counts(&mut *tx, filter).await?;
        tx.commit().await?;
        for (state, n) in self.history.run_counts(filter, through).await? {
            match counts.iter_mut().find(|(s, _)| *s == state) {
                Some((_, m)) => *m += n,
                None => counts.push((state, n)),
            }
        }
        counts.sort();
        Ok(counts)
    }

    /// One run.
    pub async fn run(&self, run_id: &str) -> sqlx::Result<Option<RunRecord>> {
        Ok(self.run_and(run_id, false).await?.map(|(run, _)| run))
    }

    /// One run's task attempts (none for a run not known).
    pub async fn attempts(&self, run_id: &str) -> sqlx::Result<Vec<TaskAttempt>> {
        Ok(self
            .run_and(run_id, true)
            .await?
            .map(|(_, attempts)| attempts)
            .unwrap_or_default())
    }

    /// One run and, when `with_attempts`, its attempts, from wherever it is.
    async fn run_and(
        &self,
        run_id: &str,
        with_attempts: bool,
    ) -> sqlx::Result<Option<(RunRecord, Vec<TaskAttempt>)>> {
        let mut tx = self.model.begin().await?;
        let through = retired_through(&mut tx).await?;
        if let Some(run) = query::run_in(&mut *tx, run_id).await? {
            let attempts = if with_attempts {
                query::attempts_in(&mut *tx, run_id).await?
            } else {
                Vec::new()
            };
            return Ok(Some((run, attempts)));
        }
        tx.commit().await?;
        let Some(run) = self.history.run(run_id, through).await? else {
            return Ok(None);
        };
        let attempts = if with_attempts {
            self.history.attempts(run_id).await?
        } else {
            Vec::new()
        };
        Ok(Some((run, attempts)))
    }

    /// Runs since `since_ms` per data center, state and hour: the model's
    /// (`query::run_activity`: the first part-hour counted, whole hours from `run_hours`, which
    /// keep counting retired runs) and the retired runs of the first part-hour.
    pub async fn run_activity(
        &self,
        since_ms: i64,
    ) -> sqlx::Result<Vec<(String, String, i64, u64)>> {
        const HOUR_MS: i64 = 3_600_000;
        let first_whole = (since_ms.div_euclid(HOUR_MS) + 1) * HOUR_MS;
        let mut tx = self.model.begin().await?;
        let through = retired_through(&mut tx).await?;
        let mut out = query::run_activity(&mut tx, since_ms).await?;
        tx.commit().await?;
        for (dc, state, n) in self
            .history
            .activity(since_ms, first_whole, through)
            .await?
        {
            match out
                .iter_mut()
                .find(|(d, s, h, _)| *d == dc && *s == state && *h == first_whole - HOUR_MS)
            {
                Some((.., m)) => *m += n,
                None => out.push((dc, state, first_whole - HOUR_MS, n)),
            }
        }
        Ok(out)
    }

    /// The lateness of the scheduled runs since `since_ms` that started, with their data
    /// center (in no order).
    pub async fn lateness_by_dc(&self, since_ms: i64) -> sqlx::Result<Vec<(String, i64)>> {
        let mut tx = self.model.begin().await?;
        let through = retired_through(&mut tx).await?;
        let mut out = query::lateness_by_dc(&mut *tx, since_ms).await?;
        tx.commit().await?;
        out.extend(self.history.lateness(since_ms, through).await?);
        Ok(out)
    }
}

impl RunReader {
    /// `run_id` to run again: a `Rerun` carrying the run as the history store holds it when
    /// it has left the model (the apply reads the model alone).
    pub async fn rerun(&self, run_id: &str, recover: bool) -> sqlx::Result<Rerun> {
        let mut tx = self.model.begin().await?;
        let through = retired_through(&mut tx).await?;
        let in_model = query::run_in(&mut *tx, run_id).await?.is_some();
        tx.commit().await?;
        let retired = if in_model {
            None
        } else {
            self.history.family(run_id, through).await?.map(Box::new)
        };
        Ok(Rerun {
            run_id: run_id.to_owned(),
            recover,
            retired,
        })
    }
}

/// Where a run sorts in a listing (newest first by the reverse of this).
fn listing_key(run: &RunRecord) -> (i64, &str) {
    let key = run
        .fire_ms
        .or(run.requested_ms)
        .or(run.order_ms)
        .unwrap_or_default();
    (key, run.run_id.as_str())
}
