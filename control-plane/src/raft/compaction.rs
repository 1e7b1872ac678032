//! When a node compacts its Raft log behind a snapshot.
//!
//! A snapshot is a copy of the whole model (`VACUUM INTO`), so its cost grows with the model,
//! while openraft's own policy takes one every fixed number of entries. With a million
//! schedules the model is most of a gigabyte: filling it (a million entries) took two hundred
//! snapshots averaging hundreds of megabytes, most of what the node wrote. So openraft's policy
//! is off and this worker asks for a snapshot once the entries since the last reach
//! `snapshot_every` for each [`STEP_BYTES`] the last snapshot took (at least once): the writing
//! a snapshot costs per log entry stays under about `STEP_BYTES / snapshot_every` (13 KiB with
//! the defaults) however large the model. The price is a longer log behind a large model (a
//! restart replays only what the model had not applied: its progress is in the same database).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Raft;
use super::state_machine::StateMachine;

/// The snapshot size that buys `snapshot_every` more entries between snapshots: 64 MiB.
pub const STEP_BYTES: u64 = 64 << 20;

/// How often the worker looks.
const EVERY: Duration = Duration::from_millis(500);

/// Entries between two snapshots, the last having taken `snapshot_bytes`.
pub fn interval(snapshot_every: u64, snapshot_bytes: u64) -> u64 {
    snapshot_every.max(1) * (1 + snapshot_bytes / STEP_BYTES)
}

/// Whether a snapshot is due: `applied` is the last applied index, `snapshot` the newest
/// snapshot's (none yet: 0).
pub fn due(applied: u64, snapshot: u64, snapshot_every: u64, snapshot_bytes: u64) -> bool {
    applied.saturating_sub(snapshot) >= interval(snapshot_every, snapshot_bytes)
}

/// The worker: one per node, until the node stops.
pub struct Compactor {
    pub raft: Raft,
    pub state: StateMachine,
    pub snapshot_every: u64,
}

impl Compactor {
    pub async fn run(self, stop: CancellationToken) {
        // The newest snapshot's index and size, read again only when the index moves.
        let mut last: Option<(u64, u64)> = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(EVERY) => {}
            }
            let (applied, snapshot) = {
                let m = self.raft.metrics().borrow().clone();
                (
                    m.last_applied.map_or(0, |l| l.index),
                    m.snapshot.map_or(0, |s| s.index),
                )
            };
            let bytes = match last {
                Some((index, bytes)) if index == snapshot => bytes,
                _ => {
                    let bytes = self.state.snapshot_bytes();
                    last = Some((snapshot, bytes));
                    bytes
                }
            };
            if due(applied, snapshot, self.snapshot_every, bytes) {
                // Ignored by openraft while one is being built.
                if let Err(e) = self.raft.trigger().snapshot().await {
                    tracing::warn!("asking for a snapshot: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_model_snapshots_every_snapshot_every_entries() {
        assert_eq!(interval(5000, 0), 5000);
        assert_eq!(interval(5000, 33 << 20), 5000);
        assert!(!due(4999, 0, 5000, 0));
        assert!(due(5000, 0, 5000, 0));
        assert!(due(25_000, 20_000, 5000, 1 << 20));
        assert!(!due(24_999, 20_000, 5000, 1 << 20));
    }

    #[test]
    fn a_larger_snapshot_waits_longer_so_its_cost_per_entry_stays_bounded() {
        // A million schedules: a model of ~700 MB.
        assert_eq!(interval(5000, 700 << 20), 5000 * 11);
        assert!(!due(50_000, 0, 5000, 700 << 20));
        assert!(due(55_000, 0, 5000, 700 << 20));
        for bytes in [0, 1 << 20, 64 << 20, 65 << 20, 700 << 20, 5 << 30] {
            let per_entry = bytes / interval(5000, bytes);
            assert!(per_entry <= STEP_BYTES / 5000, "{bytes}: {per_entry}");
        }
        // Never zero, even when asked for.
        assert_eq!(interval(0, 0), 1);
    }
}
