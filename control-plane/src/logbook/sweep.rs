//! Log retention: every node's sweeper deletes, from its own logbook, the logs of attempts
//! whose last piece is older than their tenant's `log_retention_days` (the plane's
//! `[logs] retention_days` for tenants without one, and for tenants since deleted).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meridian_domain::Clock;
use sqlx::SqlitePool;
use tokio_util::sync::CancellationToken;

use super::Logbook;

/// How often a sweeper looks.
const EVERY: Duration = Duration::from_secs(600);

pub struct Sweeper {
    pub logbook: Logbook,
    /// The node's model: tenants' retention.
    pub model: SqlitePool,
    pub clock: Arc<dyn Clock>,
}

impl Sweeper {
    /// Runs until `stop` is cancelled: a sweep at start, then every ten minutes.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!("log retention: deleted the logs of {n} attempts"),
                Err(e) => tracing::warn!("log retention: {e}"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(EVERY) => {}
            }
        }
    }

    /// One sweep as of the clock's now; returns how many attempts' logs went.
    pub async fn sweep(&self) -> sqlx::Result<u64> {
        let days = tenants_retention(&self.model).await?;
        let default = self.logbook.config().retention_days;
        self.logbook
            .sweep(self.clock.now_ms(), |tenant| {
                days.get(tenant).copied().unwrap_or(default)
            })
            .await
    }
}

/// Tenants with a `log_retention_days` of their own.
pub(crate) async fn tenants_retention(model: &SqlitePool) -> sqlx::Result<BTreeMap<String, u32>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT name, json_extract(doc, '$.doc.log_retention_days') AS days FROM tenants \
         WHERE days IS NOT NULL",
    )
    .fetch_all(model)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, days)| (name, days.clamp(1, i64::from(u32::MAX)) as u32))
        .collect())
}
