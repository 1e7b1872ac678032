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

/// Outbox entries per report, at most.
const REPORT_BATCH: u32 = 2_000;
/// Bytes of entries (keys and payloads) per report, at most, but always one entry: a log
/// piece is up to 32 KiB (`runner::CHUNK_BYTES`, more once escaped in JSON), so 2,000 of
/// them could pass the plane's 64 MiB message limit, and a report refused for its size
/// would be sent again, whole, for ever.
const REPORT_BYTES: usize = 16 * 1024 * 1024;

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
            let more = match self.report_once().await {
                Ok(more) => {
                    backoff = Duration::from_millis(100);
                    more
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
            if !more {
                tokio::select! {
                    _ = self.reported.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = self.shutdown.stopped() => return,
                }
            }
        }
    }

    /// Sends one batch; returns whether more may be waiting (the batch was cut at a limit).
    async fn report_once(&self) -> Result<bool, ExchangeError> {
        let mut batch = self.outbox.pending(REPORT_BATCH).await?;
        if batch.is_empty() {
            return Ok(false);
        }
        let fetched = batch.len();
        batch.truncate(within(
            batch.iter().map(|e| e.key.len() + e.payload.len()),
            REPORT_BYTES,
        ));
        let more = fetched == REPORT_BATCH as usize || batch.len() < fetched;
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
        Ok(more)
    }
}

/// How many of the entries, of `sizes` bytes each in order, one report takes: as many as fit
/// in `budget` bytes, and the first whatever its size.
fn within(sizes: impl Iterator<Item = usize>, budget: usize) -> usize {
    let mut total = 0;
    let mut taken = 0;
    for size in sizes {
        total += size;
        if taken > 0 && total > budget {
            break;
        }
        taken += 1;
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::within;

    #[test]
    fn a_report_takes_the_entries_that_fit_its_bytes_and_always_the_first() {
        assert_eq!(within([10, 10, 10].into_iter(), 25), 2);
        assert_eq!(within([10, 10, 10].into_iter(), 30), 3);
        assert_eq!(
            within([100, 1].into_iter(), 25),
            1,
            "the first alone, though over"
        );
        assert_eq!(within(std::iter::empty(), 25), 0);
        // 2,000 full log pieces are cut well under the plane's 64 MiB limit.
        let pieces = within(std::iter::repeat_n(33_000, 2_000), super::REPORT_BYTES);
        assert!(pieces < 2_000 && pieces * 33_000 <= super::REPORT_BYTES);
    }
}
