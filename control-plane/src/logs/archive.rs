//! The archiver: the leader's worker that copies each ended attempt's log to the federation's
//! S3 bucket, so a log outlives any plane node, and deletes the copies past retention.
//!
//! Every serving node with a bucket runs one ([`start`]); only the leader's works. Each round
//! it takes the attempts whose ends were applied after the newest one archived (by log index:
//! `model::archive::due`), in that order, gathers each one's whole log from every
//! member's logbook — all of them must answer, or the attempt waits: a copy missing a node's
//! pieces would be read instead of them for good — writes it as one object, and proposes the
//! copies made (`ArchiveLogs`); then it deletes the objects past their tenant's retention and
//! proposes that (`ForgetArchivedLogs`). The first failure ends a round, so nothing is skipped.
//! A leader that dies between writing an object and recording it writes it again: the same
//! key, the same pieces.

use std::sync::Arc;
use std::time::Duration;

use meridian_bucket::Bucket;
use meridian_domain::Clock;
use tokio_util::sync::CancellationToken;

use crate::logbook::object::Archive;
use crate::model::archive::{self, ArchivedLog, Due};
use crate::model::{Command, Proposal};
use crate::raft::node::{Core, PlaneNode};

/// How often the archiver looks when it has caught up.
const POLL: Duration = Duration::from_secs(1);
/// Attempts copied (or deleted) per round at most; a full round is followed by the next at
/// once.
const ROUND: u32 = 256;
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts `node`'s archiver on `bucket`, and lets the node read archived logs from it; it
/// stops with the node.
pub fn start(node: &PlaneNode, clock: Arc<dyn Clock>, bucket: Bucket) {
    let archive = Archive::new(bucket);
    let _ = node.archive.set(archive.clone());
    tokio::spawn(Archiver::new(node.core(), clock, archive).run(node.stopping()));
}

pub struct Archiver {
    core: Arc<Core>,
    clock: Arc<dyn Clock>,
    archive: Archive,
}

impl Archiver {
    pub fn new(core: Arc<Core>, clock: Arc<dyn Clock>, archive: Archive) -> Self {
        Self {
            core,
            clock,
            archive,
        }
    }

    pub async fn run(self, stop: CancellationToken) {
        let mut behind = false;
        loop {
            if !behind {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(POLL) => {}
                }
            }
            behind = false;
            if self.core.raft.metrics().borrow().current_leader != Some(self.core.id()) {
                continue;
            }
            let round = tokio::select! {
                () = stop.cancelled() => return,
                r = self.round() => r,
            };
            match round {
                Ok(full) => behind = full,
                Err(e) => tracing::warn!("archiving task logs: {e}"),
            }
        }
    }

    /// One round: copy what is due, delete what expired. True when it did as much as a round
    /// may (more is likely due).
    pub async fn round(&self) -> Result<bool, String> {
        let pool = self.core.state.pool();
        let now = self.clock.now_ms();
        let days = crate::model::query::tenants_retention(pool, "log_retention_days")
            .await
            .map_err(|e| e.to_string())?;
        let default = self.core.logbook.config().retention_days;
        let due = archive::due(pool, ROUND).await.map_err(|e| e.to_string())?;
        let full = due.len() == ROUND as usize;
        let mut copied = Vec::new();
        let mut failed = None;
        for d in due {
            match self.copy(&d).await {
                Ok(log) => copied.push(log),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if !copied.is_empty() {
            self.propose(Command::ArchiveLogs(copied)).await?;
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let days_of = |tenant: &str| days.get(tenant).copied().unwrap_or(default);
        let expired = archive::expired(pool, now, days_of, ROUND)
            .await
            .map_err(|e| e.to_string())?;
        let mut gone = Vec::new();
        for (attempt, key) in expired {
            if !key.is_empty()
                && let Err(e) = self.archive.delete(&key).await
            {
                failed = Some(e.to_string());
                break;
            }
            gone.push(attempt);
        }
        if !gone.is_empty() {
            self.propose(Command::ForgetArchivedLogs(gone)).await?;
        }
        failed.map_or(Ok(full), Err)
    }

    /// Copies one attempt's whole log to its object.
    async fn copy(&self, d: &Due) -> Result<ArchivedLog, String> {
        let a = &d.attempt;
        let pieces = super::across::complete(&self.core, &a.run_id, &a.task, a.attempt).await?;
        let bytes: u64 = pieces.iter().map(|p| p.data.len() as u64).sum();
        let key = if pieces.is_empty() {
            String::new()
        } else {
            let key = self.archive.key(&a.run_id, &a.task, a.attempt);
            self.archive
                .put(&key, &pieces)
                .await
                .map_err(|e| e.to_string())?;
            key
        };
        Ok(ArchivedLog {
            run_id: a.run_id.clone(),
            task: a.task.clone(),
            attempt: a.attempt,
            key,
            bytes,
            ended_index: d.ended_index,
        })
    }

    async fn propose(&self, command: Command) -> Result<(), String> {
        let proposal = Proposal::new("logs", self.clock.now_ms(), command);
        self.core
            .write(proposal, WRITE_TIMEOUT)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}
