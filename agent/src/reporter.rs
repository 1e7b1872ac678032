//! The reporting worker: sends the outbox to the plane in batches, in order, and drops what
//! the plane has committed. It wakes when something is written to the outbox, backs off while
//! the plane cannot be reached, and keeps what the plane cannot read yet (an entry a newer
//! agent wrote) with everything after it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meridian_proto::pb;
use tokio::sync::Notify;

use crate::link::{ExchangeError, Link};
use crate::outbox::Outbox;
use crate::shutdown::Shutdown;

/// Outbox entries per report.
const REPORT_BATCH: u32 = 2_000;

pub struct Reporter {
    pub hostname: String,
    pub link: Arc<Link>,
    pub outbox: Outbox,
    /// Woken whenever something is written to the outbox.
    pub reported: Arc<Notify>,
    pub shutdown: Shutdown,
    /// The plane's definitions counter as the last report's answer gave it; the lease
    /// keeper is woken to fetch when it moves ([`crate::keeper::LeaseKeeper::refetch`]).
    pub definitions: Arc<AtomicU64>,
    pub refetch: Arc<Notify>,
    /// Report rounds the plane answered (whatever the answer).
    rounds: AtomicU64,
    /// Woken after each of them.
    answered: Notify,
}

impl Reporter {
    pub fn new(
        hostname: String,
        link: Arc<Link>,
        outbox: Outbox,
        reported: Arc<Notify>,
        shutdown: Shutdown,
        definitions: Arc<AtomicU64>,
        refetch: Arc<Notify>,
    ) -> Self {
        Self {
            hostname,
            link,
            outbox,
            reported,
            shutdown,
            definitions,
            refetch,
            rounds: AtomicU64::new(0),
            answered: Notify::new(),
        }
    }

    /// Report rounds the plane has answered so far.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::SeqCst)
    }

    /// Resolves after the next round the plane answers.
    pub fn answered(&self) -> tokio::sync::futures::Notified<'_> {
        self.answered.notified()
    }

    /// Runs until the shutdown says stop.
    pub async fn run(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let sent = match self.report_once().await {
                Ok(n) => {
                    backoff = Duration::from_millis(100);
                    n
                }
                Err(e) => {
                    tracing::warn!("reporting to {}: {e}", self.link.current());
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.shutdown.stopped() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if sent < REPORT_BATCH as usize {
                tokio::select! {
                    _ = self.reported.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = self.shutdown.stopped() => return,
                }
            }
        }
    }

    /// Sends one batch; returns how many entries it held.
    async fn report_once(&self) -> Result<usize, ExchangeError> {
        let batch = self.outbox.pending(REPORT_BATCH).await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let request = pb::ReportRequest {
            agent: self.hostname.clone(),
            entries: batch
                .iter()
                .map(|e| pb::OutboxEntry::new(e.seq as u64, e.key.clone(), e.payload.clone()))
                .collect(),
        };
        let reply = self
            .link
            .call(|mut c| {
                let r = request.clone();
                async move { c.report(r).await }
            })
            .await?;
        self.rounds.fetch_add(1, Ordering::SeqCst);
        self.answered.notify_waiters();
        for refused in &reply.refused {
            tracing::warn!(
                "the plane refused outbox entry {}: {}",
                refused.seq,
                refused.reason
            );
        }
        self.outbox.acknowledge(reply.committed_seq as i64).await?;
        if reply.definitions != 0
            && self.definitions.swap(reply.definitions, Ordering::SeqCst) != reply.definitions
        {
            self.refetch.notify_one();
        }
        if let Some(held) = reply.unreadable {
            // Kept, with everything after it, until a plane that reads it is up.
            return Err(ExchangeError::Held {
                seq: held.seq,
                reason: held.reason,
            });
        }
        Ok(batch.len())
    }
}
