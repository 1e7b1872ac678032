//! Log retention: every node's sweeper deletes, from its own logbook, the logs of attempts
//! whose last piece is older than their tenant's `log_retention_days` (the plane's
//! `[logs] retention_days` for tenants without one, and for tenants since deleted).

use std::sync::Arc;
use std::time::Duration;

use meridian_domain::Clock;
use sqlx::SqlitePool;
use tokio_util::sync::CancellationToken;

use super::Logbook;
use crate::model::query::tenants_retention;

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
        let days = tenants_retention(&self.model, "log_retention_days").await?;
        let default = self.logbook.config().retention_days;
        self.logbook
            .sweep(self.clock.now_ms(), |tenant| {
                days.get(tenant).copied().unwrap_or(default)
            })
            .await
    }
}
