//! Partition leases: which agent fires which slice of a cluster's schedules (issue #4).
//!
//! Pure deciding, no I/O: [`plan`] takes one cluster's leases, the agents that are connected
//! and the time, and returns the changes to make. The plane's leader runs it on every agent
//! heartbeat and replicates the changes as commands, so every node holds the same leases.
//!
//! The rules, each held by a test:
//! - A partition has at most one holder, and moves only once its lease has expired or its
//!   holder released it: two agents never fire the same schedule at once.
//! - Every grant or move bumps the partition's epoch; reports carrying an older epoch are
//!   refused, so a holder that lost its lease while cut off cannot double-report.
//! - Sticky: a live holder renews what it holds. Balanced: free partitions go to the
//!   least-loaded agents, and a holder above its fair share is asked to release the excess
//!   (it does so on its next heartbeat), so a new agent gets work without any lease being
//!   taken away early.
//! - When no agent of the cluster is connected, its partitions go to the agents of its backup
//!   cluster, if it has one; they come back the same way (release, then grant).
//! - Load-aware: an agent above its load thresholds gets nothing and gives back what it holds,
//!   as long as one that is not can take it; all of them overloaded, nothing moves for it.

use std::collections::BTreeMap;

/// A partition's lease as the plane records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    pub partition: u32,
    /// The agent (hostname) holding it; none when free.
    pub holder: Option<String>,
    /// Bumped on every grant to a new holder; reports must carry the current one.
    pub epoch: u64,
    /// When the lease runs out unless renewed (ms since the epoch).
    pub expires_ms: i64,
}

/// An agent the plane currently hears from (within a lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub hostname: String,
    /// Whether it belongs to the cluster itself (else to its backup).
    pub own_cluster: bool,
    /// Heard within two of its heartbeats ([`fresh`]): only such an agent is granted a
    /// partition. One cut off with its holder still counts as connected for a lease, but a
    /// grant it cannot hear would only be fired once the cut heals — late, and twice.
    pub fresh: bool,
    /// Above its own load thresholds (it says so, with hysteresis: it stays so until well
    /// under them): while an agent that is not can take them, it is given nothing and asked to
    /// give back what it holds.
    pub overloaded: bool,
}

/// Whether an agent last heard at `last_seen_ms`, heartbeating every `heartbeat_ms` (0: not
/// said, a third of the lease is assumed), is fresh at `now_ms`.
pub fn fresh(now_ms: i64, last_seen_ms: i64, heartbeat_ms: i64, lease_ms: i64) -> bool {
    let heartbeat = if heartbeat_ms > 0 {
        heartbeat_ms
    } else {
        lease_ms / 3
    };
    now_ms - last_seen_ms <= 2 * heartbeat
}

/// One change [`plan`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseChange {
    /// Extend the holder's lease to `expires_ms`.
    Renew {
        partition: u32,
        holder: String,
        expires_ms: i64,
    },
    /// Give a free or expired partition to `holder` with a new epoch.
    Grant {
        partition: u32,
        holder: String,
        epoch: u64,
        expires_ms: i64,
    },
    /// Ask the holder to let the partition go (it stays leased until the holder confirms or
    /// the lease expires).
    AskRelease { partition: u32, holder: String },
}

/// Decides one cluster's lease changes at `now_ms`. `leases` has one entry per partition;
/// `agents` are the connected agents of the cluster and of its backup; `lease_ms` is the
/// cluster's lease duration.
pub fn plan(leases: &[Lease], agents: &[Agent], now_ms: i64, lease_ms: i64) -> Vec<LeaseChange> {
    plan_reserving(leases, agents, now_ms, lease_ms, false)
}

/// As [`plan`]; with `reserved`, an expired lease goes back only to the agent that held it
/// (and stays free while that agent is not connected).
///
/// The plane reserves a cluster's leases for one lease period after it has heard nothing from
/// any of the cluster's agents for longer than a lease — the plane itself was down or cut off,
/// so every lease lapsed at once and the holders' silence says nothing about them. A holder
/// fired its records up to its horizon, and its reports of them may still be on their way:
/// given to another agent, the partition's records since the plane's last acknowledged fire
/// time would run twice. Given back to its holder, the tenure continues and the reports count.
pub fn plan_reserving(
    leases: &[Lease],
    agents: &[Agent],
    now_ms: i64,
    lease_ms: i64,
    reserved: bool,
) -> Vec<LeaseChange> {
    // Own agents first; the backup's only when the cluster has none.
    let eligible: Vec<&Agent> = if agents.iter().any(|a| a.own_cluster) {
        agents.iter().filter(|a| a.own_cluster).collect()
    } else {
        agents.iter().collect()
    };
    let expires_ms = now_ms + lease_ms;
    let mut changes = Vec::new();
    let mut load: BTreeMap<&str, usize> =
        eligible.iter().map(|a| (a.hostname.as_str(), 0)).collect();
    let mut free = Vec::new();
    let mut held_by_ineligible = Vec::new();
    for lease in leases {
        match &lease.holder {
            Some(holder) if lease.expires_ms > now_ms => {
                if let Some(n) = load.get_mut(holder.as_str()) {
                    *n += 1;
                    changes.push(LeaseChange::Renew {
                        partition: lease.partition,
                        holder: holder.clone(),
                        expires_ms,
                    });
                } else if agents.iter().any(|a| &a.hostname == holder) {
                    // Connected but no longer eligible (a backup agent once the cluster's own
                    // are back): ask it to hand the partition back; it keeps it until then.
                    held_by_ineligible.push(lease);
                }
                // Held by an agent that is not connected: untouchable until it expires.
            }
            _ => free.push(lease),
        }
    }
    for lease in &held_by_ineligible {
        if let Some(holder) = &lease.holder {
            changes.push(LeaseChange::AskRelease {
                partition: lease.partition,
                holder: holder.clone(),
            });
        }
    }
    if eligible.is_empty() {
        return changes;
    }
    let heard: Vec<&str> = eligible
        .iter()
        .filter(|a| a.fresh)
        .map(|a| a.hostname.as_str())
        .collect();
    // Where partitions go: the agents heard lately that are not overloaded — or, all of them
    // overloaded, every agent heard lately (nothing moves for load then).
    let relieved: Vec<&str> = eligible
        .iter()
        .filter(|a| a.fresh && !a.overloaded)
        .map(|a| a.hostname.as_str())
        .collect();
    let fresh: Vec<&str> = if relieved.is_empty() {
        heard.clone()
    } else {
        relieved
    };
    for lease in free {
        let holder = match &lease.holder {
            // Reserved: back to its holder if it is here, else it waits.
            Some(holder) if reserved => {
                if !fresh.contains(&holder.as_str()) {
                    continue;
                }
                holder.clone()
            }
            _ => {
                let Some(host) = load
                    .iter()
                    .filter(|(host, _)| fresh.contains(host))
                    .min_by_key(|(host, n)| (**n, *host))
                    .map(|(h, _)| h.to_string())
                else {
                    // Nobody eligible heard lately: it waits rather than go unheard.
                    continue;
                };
                host
            }
        };
        *load.get_mut(holder.as_str()).expect("known agent") += 1;
        changes.push(LeaseChange::Grant {
            partition: lease.partition,
            holder,
            epoch: lease.epoch + 1,
            expires_ms,
        });
    }
    // Overloaded, while others are not: what it holds goes to them.
    let shed: Vec<&str> = heard
        .iter()
        .copied()
        .filter(|h| !fresh.contains(h))
        .collect();
    let mut shedding = 0;
    for lease in leases {
        if let Some(holder) = lease.holder.as_deref()
            && shed.contains(&holder)
            && lease.expires_ms > now_ms
        {
            shedding += 1;
            changes.push(LeaseChange::AskRelease {
                partition: lease.partition,
                holder: holder.to_owned(),
            });
        }
    }
    // Balance: nobody keeps more than its fair share while another agent has less — among
    // the agents heard lately (a partition given back for one that is not would only come
    // straight back), counting what the overloaded give back as coming to them.
    load.retain(|host, _| fresh.contains(host));
    if load.is_empty() {
        return changes;
    }
    let total: usize = load.values().sum::<usize>() + shedding;
    let ceiling = total.div_ceil(load.len());
    let min = load.values().copied().min().unwrap_or(0);
    if min + 1 < ceiling || load.values().any(|n| *n > ceiling) {
        for (host, n) in &load {
            let excess = n.saturating_sub(ceiling.max(min + 1));
            let mut asked = 0;
            for lease in leases.iter().rev() {
                if asked == excess {
                    break;
                }
                if lease.holder.as_deref() == Some(*host) && lease.expires_ms > now_ms {
                    changes.push(LeaseChange::AskRelease {
                        partition: lease.partition,
                        holder: host.to_string(),
                    });
                    asked += 1;
                }
            }
        }
    }
    changes
}

/// Applies `changes` to `leases` (what the replicated command does), for tests and the plane.
pub fn apply(leases: &mut [Lease], changes: &[LeaseChange]) {
    for change in changes {
        match change {
            LeaseChange::Renew {
                partition,
                holder,
                expires_ms,
            } => {
                if let Some(l) = leases.iter_mut().find(|l| l.partition == *partition)
                    && l.holder.as_ref() == Some(holder)
                {
                    l.expires_ms = *expires_ms;
                }
            }
            LeaseChange::Grant {
                partition,
                holder,
                epoch,
                expires_ms,
            } => {
                if let Some(l) = leases.iter_mut().find(|l| l.partition == *partition) {
                    l.holder = Some(holder.clone());
                    l.epoch = *epoch;
                    l.expires_ms = *expires_ms;
                }
            }
            LeaseChange::AskRelease { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn free(n: u32) -> Vec<Lease> {
        (0..n)
            .map(|partition| Lease {
                partition,
                holder: None,
                epoch: 0,
                expires_ms: 0,
            })
            .collect()
    }

    /// Plans and applies, as the plane does on a heartbeat.
    fn step(
        leases: &mut [Lease],
        agents: &[Agent],
        now_ms: i64,
        lease_ms: i64,
    ) -> Vec<LeaseChange> {
        let changes = plan(leases, agents, now_ms, lease_ms);
        apply(leases, &changes);
        changes
    }

    fn agent(h: &str, own: bool) -> Agent {
        Agent {
            hostname: h.into(),
            own_cluster: own,
            fresh: true,
            overloaded: false,
        }
    }

    #[test]
    fn an_overloaded_agent_gets_nothing_and_gives_back_while_another_can_take_it() {
        let mut leases = free(8);
        let hot = |h: &str| Agent {
            overloaded: true,
            ..agent(h, true)
        };
        // Free partitions go to the agent that is not overloaded.
        step(&mut leases, &[hot("a"), agent("b", true)], 0, 6_000);
        assert_eq!(holders(&leases), BTreeMap::from([("b".to_owned(), 8)]));
        // a cools down: the usual balance gives it its half back, through releases.
        let changes = step(
            &mut leases,
            &[agent("a", true), agent("b", true)],
            1_000,
            6_000,
        );
        let asked = changes
            .iter()
            .filter(|c| matches!(c, LeaseChange::AskRelease { holder, .. } if holder == "b"))
            .count();
        assert_eq!(asked, 4, "{changes:?}");
        for c in &changes {
            if let LeaseChange::AskRelease { partition, .. } = c {
                leases[*partition as usize].holder = None;
            }
        }
        step(
            &mut leases,
            &[agent("a", true), agent("b", true)],
            2_000,
            6_000,
        );
        assert_eq!(holders(&leases).get("a"), Some(&4));
        // a is overloaded again: all it holds is asked back, and goes to b.
        let changes = step(&mut leases, &[hot("a"), agent("b", true)], 3_000, 6_000);
        let asked: Vec<&String> = changes
            .iter()
            .filter_map(|c| match c {
                LeaseChange::AskRelease { holder, .. } => Some(holder),
                _ => None,
            })
            .collect();
        assert_eq!(asked, vec!["a"; 4], "{changes:?}");
        // Every agent overloaded: nothing moves for load.
        let changes = plan(&leases, &[hot("a"), hot("b")], 4_000, 6_000);
        assert!(
            changes
                .iter()
                .all(|c| matches!(c, LeaseChange::Renew { .. })),
            "{changes:?}"
        );
    }

    fn holders(leases: &[Lease]) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for l in leases {
            if let Some(h) = &l.holder {
                *m.entry(h.clone()).or_default() += 1;
            }
        }
        m
    }

    #[test]
    fn after_the_plane_heard_nobody_expired_leases_wait_for_their_holders() {
        // a held 0–3, b held 4–7; every lease lapsed while the plane was down.
        let mut leases = free(8);
        for l in leases.iter_mut() {
            l.holder = Some(if l.partition < 4 { "a" } else { "b" }.into());
            l.epoch = 1;
            l.expires_ms = 10_000;
        }
        // b is heard first: it gets its own partitions back, a's wait for a.
        let only_b = [agent("b", true)];
        let changes = plan_reserving(&leases, &only_b, 200_000, 6_000, true);
        apply(&mut leases, &changes);
        assert_eq!(holders(&leases)["b"], 8 - 4, "{changes:?}");
        assert!(
            leases[..4].iter().all(|l| l.holder.as_deref() == Some("a")
                && l.expires_ms == 10_000
                && l.epoch == 1),
            "a's partitions stay free for a: {leases:?}"
        );
        // a is heard: it gets them back, its tenure continuing.
        let both = [agent("a", true), agent("b", true)];
        let changes = plan_reserving(&leases, &both, 200_500, 6_000, true);
        apply(&mut leases, &changes);
        assert_eq!(
            holders(&leases),
            BTreeMap::from([("a".into(), 4), ("b".into(), 4)])
        );
        // Without the reservation b would have taken them all.
        let mut unreserved = free(8);
        for l in unreserved.iter_mut() {
            l.holder = Some(if l.partition < 4 { "a" } else { "b" }.into());
            l.expires_ms = 10_000;
        }
        step(&mut unreserved, &only_b, 200_000, 6_000);
        assert_eq!(holders(&unreserved)["b"], 8);
    }

    #[test]
    fn free_partitions_are_spread_evenly_with_new_epochs() {
        let mut leases = free(16);
        let agents = [agent("a", true), agent("b", true), agent("c", true)];
        let changes = plan(&leases, &agents, 1_000, 30_000);
        apply(&mut leases, &changes);
        let counts: Vec<usize> = holders(&leases).into_values().collect();
        assert_eq!(counts, [6, 5, 5]);
        assert!(
            leases
                .iter()
                .all(|l| l.epoch == 1 && l.expires_ms == 31_000)
        );
    }

    #[test]
    fn a_lease_of_a_vanished_agent_moves_only_after_it_expires() {
        let mut leases = free(4);
        step(
            &mut leases,
            &[agent("a", true), agent("b", true)],
            0,
            30_000,
        );
        // `a` disappears; `b` stays.
        let only_b = [agent("b", true)];
        let early = plan(&leases, &only_b, 29_999, 30_000);
        assert!(
            early
                .iter()
                .all(|c| !matches!(c, LeaseChange::Grant { .. })),
            "{early:?}"
        );
        let late = plan(&leases, &only_b, 30_000, 30_000);
        apply(&mut leases, &late);
        assert!(leases.iter().all(|l| l.holder.as_deref() == Some("b")));
        assert!(
            leases.iter().any(|l| l.epoch == 2),
            "moved leases get a new epoch"
        );
    }

    #[test]
    fn a_partition_goes_only_to_an_agent_heard_within_two_heartbeats() {
        // a and b share a data center; the cut takes both. a's leases run out first; b is
        // still "connected" (heard within a lease) but not fresh: it gets nothing, and the
        // partitions wait (the backup's agents take them once b is not connected either).
        let mut leases = free(4);
        step(&mut leases, &[agent("a", true)], 0, 6_000);
        let cut_off_b = Agent {
            fresh: false,
            ..agent("b", true)
        };
        let changes = plan(&leases, &[cut_off_b], 6_000, 6_000);
        assert!(
            changes
                .iter()
                .all(|c| !matches!(c, LeaseChange::Grant { .. })),
            "{changes:?}"
        );
        // Heard again: fresh, it is granted them.
        let changes = plan(&leases, &[agent("b", true)], 6_500, 6_000);
        apply(&mut leases, &changes);
        assert!(leases.iter().all(|l| l.holder.as_deref() == Some("b")));
        // Fresh: within two heartbeats; an agent that did not say uses a third of the lease.
        assert!(fresh(10_000, 9_000, 500, 6_000));
        assert!(!fresh(10_000, 8_999, 500, 6_000));
        assert!(fresh(10_000, 6_000, 0, 6_000));
        assert!(!fresh(10_000, 5_999, 0, 6_000));
    }

    #[test]
    fn a_new_agent_gets_work_through_releases_not_early_moves() {
        let mut leases = free(6);
        step(&mut leases, &[agent("a", true)], 0, 30_000);
        let both = [agent("a", true), agent("b", true)];
        let changes = plan(&leases, &both, 1_000, 30_000);
        let asked = changes
            .iter()
            .filter(|c| matches!(c, LeaseChange::AskRelease { holder, .. } if holder == "a"))
            .count();
        assert_eq!(asked, 3);
        assert!(
            !changes
                .iter()
                .any(|c| matches!(c, LeaseChange::Grant { .. }))
        );
    }

    #[test]
    fn the_backup_takes_over_only_when_no_own_agent_is_left_and_hands_back() {
        let mut leases = free(4);
        step(
            &mut leases,
            &[agent("own", true), agent("bk", false)],
            0,
            10,
        );
        assert!(leases.iter().all(|l| l.holder.as_deref() == Some("own")));
        // `own` is gone: after expiry the backup gets everything.
        step(&mut leases, &[agent("bk", false)], 10, 10);
        assert!(leases.iter().all(|l| l.holder.as_deref() == Some("bk")));
        // `own` is back: the backup is asked to release, nothing is granted early.
        let back = plan(&leases, &[agent("own", true), agent("bk", false)], 12, 10);
        assert_eq!(
            back.iter()
                .filter(|c| matches!(c, LeaseChange::AskRelease { .. }))
                .count(),
            4
        );
        assert!(!back.iter().any(|c| matches!(c, LeaseChange::Grant { .. })));
    }

    proptest! {
        /// Whatever agents come and go, a partition never changes holder before its lease ran
        /// out, epochs only grow, and with stable agents the load ends up within one.
        #[test]
        fn leases_never_overlap_and_end_balanced(
            steps in proptest::collection::vec(proptest::collection::btree_set(0u8..4, 0..4), 1..30),
            partitions in 1u32..24,
        ) {
            let lease_ms = 100;
            let mut leases = free(partitions);
            let mut now = 0i64;
            for present in &steps {
                let agents: Vec<Agent> =
                    present.iter().map(|i| agent(&format!("a{i}"), true)).collect();
                let before = leases.clone();
                step(&mut leases, &agents, now, lease_ms);
                for (b, a) in before.iter().zip(&leases) {
                    prop_assert!(a.epoch >= b.epoch);
                    if b.holder.is_some() && b.holder != a.holder {
                        prop_assert!(b.expires_ms <= now, "moved before expiry: {b:?} -> {a:?}");
                        prop_assert!(a.epoch > b.epoch);
                    }
                }
                now += 60;
            }
            // Then a stable set of agents, honouring every release request, settles evenly.
            let agents = [agent("x", true), agent("y", true), agent("z", true)];
            for _ in 0..10 {
                let changes = plan(&leases, &agents, now, lease_ms);
                apply(&mut leases, &changes);
                for c in &changes {
                    if let LeaseChange::AskRelease { partition, .. } = c {
                        let l = leases.iter_mut().find(|l| l.partition == *partition).unwrap();
                        l.holder = None;
                    }
                }
                now += 60;
            }
            let counts = holders(&leases);
            prop_assert_eq!(counts.values().sum::<usize>(), partitions as usize);
            let (lo, hi) = (counts.values().min().unwrap(), counts.values().max().unwrap());
            prop_assert!(hi - lo <= 1, "{counts:?}");
        }
    }
}
