//! The partitions this agent holds, as far as it may act on them: pure bookkeeping, no I/O.
//!
//! A lease is valid on the agent's own monotonic clock until `sent + (expires − plane now)`,
//! where `sent` is when the heartbeat that renewed it was *sent*: the plane computed the expiry
//! after it received the heartbeat, so the agent's deadline always falls before the plane's
//! and the two never both think the partition is theirs. Deadlines are counted on the
//! monotonic clock ([`Moment::mono_ms`]), so setting the wall clock cannot stretch one; fire
//! times are wall-clock instants ([`Moment::wall_ms`]).
//!
//! Firing stops at the deadline ("autonomy horizon"); the records due while paused are handled
//! by the catch-up policy once a lease is held again. A run *starts* only before the deadline
//! less a margin ([`Leases::may_start`]) for the two clocks running at slightly different
//! rates: a run whose lease lapsed between its taking and its start is given back instead.

use std::collections::BTreeMap;

/// A partition of a cluster.
pub type Partition = (String, u32);

/// One instant on both of the agent's clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    /// Wall clock (ms since the Unix epoch): what fire times are compared with.
    pub wall_ms: i64,
    /// Monotonic clock (ms): what lease deadlines are counted on.
    pub mono_ms: i64,
}

impl Moment {
    pub fn of(clock: &dyn meridian_domain::Clock) -> Self {
        Self {
            wall_ms: clock.now_ms(),
            mono_ms: clock.monotonic_ms(),
        }
    }
}

/// The margin before a lease's deadline after which no run starts: 2 % of the time the last
/// renewal granted (clock-rate drift between plane and agent is far below that), and at least
/// [`MIN_START_MARGIN_MS`] for the time between the check and the process starting.
pub const START_MARGIN_PERCENT: i64 = 2;
pub const MIN_START_MARGIN_MS: i64 = 20;

/// One held partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub epoch: u64,
    /// Monotonic time (ms) until which the agent may fire it.
    pub valid_until_ms: i64,
    /// Monotonic time (ms) the heartbeat that last renewed it was sent.
    pub renewed_ms: i64,
    /// Wall time (ms) since which the agent has held it without a gap: records due before
    /// this were missed (catch-up), records due after are fired on time.
    pub since_ms: i64,
}

impl Held {
    /// The monotonic time after which nothing of it starts.
    pub fn start_deadline_ms(&self) -> i64 {
        let span = self.valid_until_ms - self.renewed_ms;
        self.valid_until_ms - (span * START_MARGIN_PERCENT / 100).max(MIN_START_MARGIN_MS)
    }
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
    /// Applies a heartbeat reply received at monotonic time `received_ms`: `granted` is the
    /// whole table for this agent, computed at plane time `plane_now_ms`, for a heartbeat sent
    /// at `sent`. A grant whose deadline has already passed when the reply arrives (the reply
    /// was that slow, or the agent was paused) is not applied: the agent's view is stale.
    pub fn renew(
        &mut self,
        sent: Moment,
        received_ms: i64,
        plane_now_ms: i64,
        granted: &[Granted],
    ) -> Change {
        let mut change = Change::default();
        let mut next = BTreeMap::new();
        for g in granted {
            let key = (g.cluster.clone(), g.partition);
            let valid_until_ms = sent.mono_ms + (g.expires_ms - plane_now_ms).max(0);
            if valid_until_ms <= received_ms {
                continue;
            }
            let since_ms = match self.held.get(&key) {
                // Held without a gap under the same epoch: keep counting from before.
                Some(h) if h.epoch == g.epoch && h.valid_until_ms > sent.mono_ms => h.since_ms,
                _ => {
                    change.gained.push(key.clone());
                    sent.wall_ms
                }
            };
            next.insert(
                key,
                Held {
                    epoch: g.epoch,
                    valid_until_ms,
                    renewed_ms: sent.mono_ms,
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

    /// The lease on `partition` if it may be fired at monotonic time `now_ms`.
    pub fn valid(&self, partition: &Partition, now_ms: i64) -> Option<Held> {
        self.held
            .get(partition)
            .copied()
            .filter(|h| now_ms < h.valid_until_ms)
    }

    /// Whether a run taken under `epoch` of `partition` may start at monotonic time `now_ms`:
    /// the partition is still held under that epoch and its deadline, less the start margin,
    /// has not passed.
    pub fn may_start(&self, partition: &Partition, epoch: u64, now_ms: i64) -> bool {
        self.held
            .get(partition)
            .is_some_and(|h| h.epoch == epoch && now_ms < h.start_deadline_ms())
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

    /// Sent at `ms` on both clocks.
    fn at(ms: i64) -> Moment {
        Moment {
            wall_ms: ms,
            mono_ms: ms,
        }
    }

    #[test]
    fn a_lease_is_valid_from_the_send_time_for_its_remaining_duration() {
        let mut leases = Leases::default();
        // Plane clock ahead by 5 s; lease of 10 s granted at plane time 105_000.
        let change = leases.renew(at(100_000), 100_050, 105_000, &[granted(1, 1, 115_000)]);
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
        leases.renew(at(0), 0, 0, &[granted(1, 1, 10_000)]);
        let change = leases.renew(at(5_000), 5_000, 5_000, &[granted(1, 1, 15_000)]);
        assert!(change.is_empty());
        assert_eq!(leases.valid(&p, 6_000).unwrap().since_ms, 0);
        // Cut off: no renewal until after the deadline; the lease lapsed.
        let change = leases.renew(at(20_000), 20_000, 20_000, &[granted(1, 2, 30_000)]);
        assert_eq!(change.gained, vec![p.clone()]);
        assert_eq!(leases.valid(&p, 21_000).unwrap().since_ms, 20_000);
        // Dropped from the table: lost.
        let change = leases.renew(at(22_000), 22_000, 22_000, &[]);
        assert_eq!(change.lost, vec![p.clone()]);
        assert!(leases.valid(&p, 22_001).is_none());
    }

    #[test]
    fn a_run_starts_only_under_its_epoch_and_before_the_deadline_less_the_margin() {
        let mut leases = Leases::default();
        let p = ("c".to_string(), 1);
        // A 10 s lease renewed at 0: the margin is 2 % of it, 200 ms.
        leases.renew(at(0), 5, 0, &[granted(1, 3, 10_000)]);
        assert!(leases.may_start(&p, 3, 9_799));
        assert!(!leases.may_start(&p, 3, 9_800), "inside the margin");
        assert!(
            leases.valid(&p, 9_800).is_some(),
            "still fires up to the deadline"
        );
        assert!(!leases.may_start(&p, 2, 1_000), "taken under another epoch");
        assert!(
            !leases.may_start(&("c".to_string(), 2), 3, 1_000),
            "not held"
        );
        // A short lease still keeps the minimum margin.
        leases.renew(at(20_000), 20_000, 20_000, &[granted(1, 3, 20_500)]);
        assert!(!leases.may_start(&p, 3, 20_500 - MIN_START_MARGIN_MS));
    }

    #[test]
    fn deadlines_count_on_the_monotonic_clock_fire_times_on_the_wall_clock_a_stale_grant_is_ignored()
     {
        let mut leases = Leases::default();
        let p = ("c".to_string(), 1);
        // Sent at wall 1_000_000 / monotonic 50: the deadline is on the monotonic clock,
        // the time since which it is held on the wall clock.
        let sent = Moment {
            wall_ms: 1_000_000,
            mono_ms: 50,
        };
        leases.renew(sent, 60, 7_000, &[granted(1, 1, 13_000)]);
        let held = leases.valid(&p, 60).unwrap();
        assert_eq!(held.valid_until_ms, 6_050);
        assert_eq!(
            held.since_ms, 1_000_000,
            "fire times stay on the wall clock"
        );
        assert!(leases.valid(&p, 6_050).is_none());
        // A reply that arrives after the lease it grants has run out (the agent was frozen,
        // or the reply that slow) is not applied: the partition counts as lost.
        let change = leases.renew(at(10_000), 17_000, 20_000, &[granted(1, 1, 26_000)]);
        assert_eq!(change.lost, vec![p.clone()]);
        assert!(leases.valid(&p, 10_001).is_none());
    }
}
