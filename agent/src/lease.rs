//! The partitions this agent holds, as far as it may act on them: pure bookkeeping, no I/O.
//!
//! A lease is valid on the agent's own clock until `sent + (expires − plane now)`, where `sent`
//! is when the heartbeat that renewed it was *sent*: the plane computed the expiry after it
//! received the heartbeat, so the agent's deadline always falls before the plane's and the two
//! never both think the partition is theirs. Firing stops at the deadline ("autonomy
//! horizon"); the records due while paused are handled by the catch-up policy once a lease is
//! held again.

use std::collections::BTreeMap;

/// A partition of a cluster.
pub type Partition = (String, u32);

/// One held partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub epoch: u64,
    /// Local time (ms) until which the agent may fire it.
    pub valid_until_ms: i64,
    /// Local time (ms) since which the agent has held it without a gap: records due before
    /// this were missed (catch-up), records due after are fired on time.
    pub since_ms: i64,
}

/// A lease as a heartbeat reply gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub cluster: String,
    pub partition: u32,
    pub epoch: u64,
    pub expires_ms: i64,
}

/// What a heartbeat changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Partitions gained, or held again after a lapse or under a new epoch.
    pub gained: Vec<Partition>,
    /// Partitions no longer held.
    pub lost: Vec<Partition>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.gained.is_empty() && self.lost.is_empty()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Leases {
    held: BTreeMap<Partition, Held>,
}

impl Leases {
    /// Applies a heartbeat reply: `granted` is the whole table for this agent, computed at
    /// plane time `plane_now_ms`, for a heartbeat sent at local time `sent_ms`.
    pub fn renew(&mut self, sent_ms: i64, plane_now_ms: i64, granted: &[Granted]) -> Change {
        let mut change = Change::default();
        let mut next = BTreeMap::new();
        for g in granted {
            let key = (g.cluster.clone(), g.partition);
            let valid_until_ms = sent_ms + (g.expires_ms - plane_now_ms).max(0);
            let since_ms = match self.held.get(&key) {
                // Held without a gap under the same epoch: keep counting from before.
                Some(h) if h.epoch == g.epoch && h.valid_until_ms > sent_ms => h.since_ms,
                _ => {
                    change.gained.push(key.clone());
                    sent_ms
                }
            };
            next.insert(
                key,
                Held {
                    epoch: g.epoch,
                    valid_until_ms,
                    since_ms,
                },
            );
        }
        change.lost = self
            .held
            .keys()
            .filter(|k| !next.contains_key(*k))
            .cloned()
            .collect();
        self.held = next;
        change
    }

    /// Forgets partitions the agent gives back.
    pub fn release(&mut self, partitions: &[Partition]) {
        for p in partitions {
            self.held.remove(p);
        }
    }

    /// The lease on `partition` if it may be fired at local time `now_ms`.
    pub fn valid(&self, partition: &Partition, now_ms: i64) -> Option<Held> {
        self.held
            .get(partition)
            .copied()
            .filter(|h| now_ms < h.valid_until_ms)
    }

    /// Every held partition with its epoch (valid or lapsed), for the next heartbeat.
    pub fn all(&self) -> impl Iterator<Item = (&Partition, &Held)> {
        self.held.iter()
    }

    /// The earliest deadline among held leases (when firing may have to pause).
    pub fn next_deadline(&self) -> Option<i64> {
        self.held.values().map(|h| h.valid_until_ms).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(partition: u32, epoch: u64, expires_ms: i64) -> Granted {
        Granted {
            cluster: "c".into(),
            partition,
            epoch,
            expires_ms,
        }
    }

    #[test]
    fn a_lease_is_valid_from_the_send_time_for_its_remaining_duration() {
        let mut leases = Leases::default();
        // Plane clock ahead by 5 s; lease of 10 s granted at plane time 105_000.
        let change = leases.renew(100_000, 105_000, &[granted(1, 1, 115_000)]);
        assert_eq!(change.gained, vec![("c".to_string(), 1)]);
        let p = ("c".to_string(), 1);
        assert!(leases.valid(&p, 109_999).is_some());
        assert!(
            leases.valid(&p, 110_000).is_none(),
            "deadline is send + 10 s"
        );
    }

    #[test]
    fn renewals_keep_the_holding_time_and_a_lapse_or_new_epoch_resets_it() {
        let mut leases = Leases::default();
        let p = ("c".to_string(), 1);
        leases.renew(0, 0, &[granted(1, 1, 10_000)]);
        let change = leases.renew(5_000, 5_000, &[granted(1, 1, 15_000)]);
        assert!(change.is_empty());
        assert_eq!(leases.valid(&p, 6_000).unwrap().since_ms, 0);
        // Cut off: no renewal until after the deadline; the lease lapsed.
        let change = leases.renew(20_000, 20_000, &[granted(1, 2, 30_000)]);
        assert_eq!(change.gained, vec![p.clone()]);
        assert_eq!(leases.valid(&p, 21_000).unwrap().since_ms, 20_000);
        // Dropped from the table: lost.
        let change = leases.renew(22_000, 22_000, &[]);
        assert_eq!(change.lost, vec![p.clone()]);
        assert!(leases.valid(&p, 22_001).is_none());
    }
}
