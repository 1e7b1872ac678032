//! History retention: every node's sweeper deletes, from its history store, the runs listed
//! (by fire, request or last change time) longer ago than their tenant's
//! `history_retention_days` (the plane's `[history] retention_days` for the others). Nodes
//! sharing a PostgreSQL store delete the same rows; whoever comes second finds nothing.

use std::sync::Arc;
use std::time::Duration;

use meridian_domain::Clock;
use sqlx::SqlitePool;
use tokio_util::sync::CancellationToken;

use super::HistoryStore;
use crate::model::query::tenants_retention;

/// How often a sweeper looks.
const EVERY: Duration = Duration::from_secs(600);
/// Runs deleted per statement.
const BATCH: i64 = 1000;
const DAY_MS: i64 = 86_400_000;

pub struct Sweeper {
    pub history: HistoryStore,
    /// The node's model: tenants' retention.
    pub model: SqlitePool,
    pub clock: Arc<dyn Clock>,
    /// `[history] retention_days`.
    pub retention_days: u32,
}

impl Sweeper {
    /// Runs until `stop` is cancelled: a sweep at start, then every ten minutes.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!("history retention: deleted {n} runs"),
                Err(e) => tracing::warn!("history retention: {e}"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(EVERY) => {}
            }
        }
    }

    /// One sweep as of the clock's now; returns how many runs went.
    pub async fn sweep(&self) -> sqlx::Result<u64> {
        let now = self.clock.now_ms();
        let own = tenants_retention(&self.model, "history_retention_days").await?;
        let mut deleted = 0;
        for (tenant, days) in &own {
            deleted += self
                .history
                .forget(Some(tenant), &[], now - i64::from(*days) * DAY_MS)
                .await?;
        }
        let others: Vec<String> = own.into_keys().collect();
        deleted += self
            .history
            .forget(None, &others, now - i64::from(self.retention_days) * DAY_MS)
            .await?;
        Ok(deleted)
    }
}

impl HistoryStore {
    /// Deletes the runs (and their attempts) listed before `before_ms` of `tenant`, or of
    /// every tenant but `but`; returns how many.
    pub async fn forget(
        &self,
        tenant: Option<&str>,
        but: &[String],
        before_ms: i64,
    ) -> sqlx::Result<u64> {
        let mut which = String::from("order_ms < $1");
        let mut texts: Vec<&str> = Vec::new();
        if let Some(tenant) = tenant {
            texts.push(tenant);
            which.push_str(&format!(" AND tenant = ${}", texts.len() + 1));
        }
        if !but.is_empty() {
            let marks: Vec<String> = but
                .iter()
                .map(|t| {
                    texts.push(t);
                    format!("${}", texts.len() + 1)
                })
                .collect();
            which.push_str(&format!(" AND tenant NOT IN ({})", marks.join(", ")));
        }
        let limit = format!("${}", texts.len() + 2);
        let oldest = format!(
            "SELECT run_id FROM runs WHERE {which} ORDER BY order_ms, run_id LIMIT {limit}"
        );
        let mut total = 0;
        loop {
            let mut tx = self.writing().await?;
            let mut ids = sqlx::query_scalar::<_, String>(&oldest).bind(before_ms);
            for t in &texts {
                ids = ids.bind(*t);
            }
            let ids: Vec<String> = ids.bind(BATCH).fetch_all(&mut *tx).await?;
            for id in &ids {
                for table in ["task_attempts", "runs"] {
                    sqlx::query(&format!("DELETE FROM {table} WHERE run_id = $1"))
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            total += ids.len() as u64;
            if (ids.len() as i64) < BATCH {
                break;
            }
        }
        if total > 0 {
            // The hours emptied: their counts are kept at zero by the triggers, and would
            // pile up hour after hour.
            let mut tx = self.writing().await?;
            sqlx::query("DELETE FROM run_hours WHERE n = 0")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(total)
    }
}
