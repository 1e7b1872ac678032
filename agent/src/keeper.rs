//! Keeping leases: the worker that heartbeats the plane, renews the leases the firing worker
//! fires under ([`crate::lease`]), gives partitions back once every report about them is
//! committed, fetches the schedules of what it holds when leases or definitions change (and
//! syncs the buffer with them), and takes the plane's "run now" and kill commands.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_domain::Clock;
use meridian_domain::run::{Job, Jobs, RunState};
use meridian_proto::pb;
use tokio::sync::Notify;

use crate::buffer::Buffer;
use crate::lease::{Granted, Leases, Moment, Partition};
use crate::link::{ExchangeError, Link};
use crate::outbox::Outbox;
use crate::runs::RunRegistry;
use crate::shutdown::Shutdown;
use crate::store::StoreError;
use crate::take::{LocalRun, event};

/// A partition given back, waiting for its reports to be committed before the plane is told.
struct Releasing {
    lease: pb::Lease,
    /// Passes completed when it was given back.
    passes: u64,
    /// The last take written once no pass that could have taken its records is running:
    /// its reports are in the outbox once it is expanded.
    takes: Option<i64>,
    /// The outbox's last entry once that take is expanded: every entry up to it must be
    /// committed before the release is reported.
    mark: Option<i64>,
}

/// Where the agent's writes are, as [`ready_to_report`] needs them.
#[derive(Debug, Clone, Copy)]
struct Written {
    /// Firing passes completed.
    passes: u64,
    /// The last take written, and every take up to this one is expanded.
    take: i64,
    expanded: i64,
    /// The outbox's last and first waiting entry (read after `expanded`).
    last: Option<i64>,
    first: Option<i64>,
}

/// Decides which given-back partitions may be reported released. A release notes the last
/// take written once a firing pass ended after it (`passes` moved past its count); gets its
/// mark (the outbox's `last` entry's seq, 0 when empty) once that take is expanded; and is
/// ready once the outbox's `first` waiting entry is past the mark (seqs never repeat). Removes
/// and returns the ready ones.
fn ready_to_report(releasing: &mut Vec<Releasing>, w: Written) -> Vec<pb::Lease> {
    let mut ready = Vec::new();
    releasing.retain_mut(|r| {
        if r.takes.is_none() && w.passes > r.passes {
            r.takes = Some(w.take);
        }
        if r.mark.is_none() && r.takes.is_some_and(|t| w.expanded >= t) {
            r.mark = Some(w.last.unwrap_or(0));
        }
        match r.mark {
            Some(mark) if w.first.is_none_or(|f| f > mark) => {
                ready.push(r.lease.clone());
                false
            }
            _ => true,
        }
    });
    ready
}

/// The lease-keeping worker.
pub struct LeaseKeeper {
    pub hostname: String,
    pub cluster: String,
    pub heartbeat: Duration,
    pub clock: Arc<dyn Clock>,
    pub link: Arc<Link>,
    pub buffer: Buffer,
    pub outbox: Outbox,
    /// The leases held, which the firing worker fires under.
    pub leases: Arc<Mutex<Leases>>,
    /// Firing passes completed, counted by the firing worker (a pass that began before a
    /// release has taken its records once this moves past the count seen at the release).
    pub passes: Arc<AtomicU64>,
    pub registry: Arc<RunRegistry>,
    /// The firing worker's wake-up (new schedules, partitions asked back).
    pub wake: Arc<Notify>,
    /// The reporting worker's wake-up.
    pub reported: Arc<Notify>,
    pub shutdown: Shutdown,
    /// What the keeper keeps between heartbeats (its own: `Default` to start).
    pub state: KeeperState,
    /// The plane's definitions counter as a report's answer gave it, and the wake-up the
    /// reporting worker sends when it moved: fetch now rather than at the next heartbeat (a
    /// backfill hands its next records as its runs end).
    pub reported_definitions: Arc<AtomicU64>,
    pub refetch: Arc<Notify>,
}

/// What the lease keeper keeps between heartbeats.
pub struct KeeperState {
    /// Partitions the plane asked back, not yet reported released: they wait until every
    /// report about them is committed (see [`LeaseKeeper::ready_releases`]).
    releasing: Mutex<Vec<Releasing>>,
    /// Released partitions to report in the next heartbeat.
    released: Mutex<Vec<pb::Lease>>,
    /// Partitions lost (the lease ran out and was not renewed, or held before a restart), not
    /// yet reported relinquished: they wait, as releases do, until every report about them
    /// is committed; then the plane settles what it holds in doubt of them.
    relinquishing: Mutex<Vec<Releasing>>,
    /// Relinquished partitions to report in the next heartbeat.
    relinquished: Mutex<Vec<pb::Lease>>,
    /// The plane's definitions counter last seen (a move means fetch again).
    definitions: AtomicU64,
    /// Fetches of the schedules completed and applied to the buffer (`/metrics`).
    pub fetches: AtomicU64,
}

impl Default for KeeperState {
    fn default() -> Self {
        Self {
            releasing: Mutex::new(Vec::new()),
            released: Mutex::new(Vec::new()),
            relinquishing: Mutex::new(Vec::new()),
            relinquished: Mutex::new(Vec::new()),
            definitions: AtomicU64::new(u64::MAX),
            fetches: AtomicU64::new(0),
        }
    }
}

/// Schedules a fetch asks the plane for at once: a page's size on either side is this many
/// assignments (each with its job's text), however many the agent holds.
const FETCH_PAGE: u32 = 5_000;

impl LeaseKeeper {
    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Heartbeats every `heartbeat` until the agent stops.
    pub async fn run(self: Arc<Self>) {
        loop {
            if let Err(e) = self.heartbeat_once().await {
                tracing::warn!("heartbeat to {}: {e}", self.link.current());
            }
            let next = tokio::time::Instant::now() + self.heartbeat;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => break,
                    _ = self.refetch.notified() => {
                        if let Err(e) = self.fetch_if_moved().await {
                            tracing::warn!("fetching schedules from {}: {e}", self.link.current());
                        }
                    }
                    _ = self.shutdown.stopped() => return,
                }
            }
        }
    }

    /// Fetches the schedules again if a report's answer moved the definitions counter past
    /// what the last heartbeat or fetch saw.
    async fn fetch_if_moved(self: &Arc<Self>) -> Result<(), ExchangeError> {
        // The counter only grows (it is a log index); before the first heartbeat (MAX) the
        // heartbeat fetches.
        let seen = self.reported_definitions.load(Ordering::SeqCst);
        if self.state.definitions.fetch_max(seen, Ordering::SeqCst) < seen {
            self.fetch().await?;
        }
        Ok(())
    }

    /// Every held partition (valid or lapsed) as the plane is told of it.
    pub fn held_leases(&self) -> Vec<pb::Lease> {
        self.leases
            .lock()
            .expect("leases")
            .all()
            .map(|((cluster, partition), h)| pb::Lease {
                partition: *partition,
                epoch: h.epoch,
                expires_at_ms: 0,
                cluster: cluster.clone(),
            })
            .collect()
    }

    async fn heartbeat_once(self: &Arc<Self>) -> Result<(), ExchangeError> {
        let sent = Moment::of(self.clock.as_ref());
        let held = self.held_leases();
        self.ready_releases().await;
        let released = self.state.released.lock().expect("released").clone();
        let relinquished = self
            .state
            .relinquished
            .lock()
            .expect("relinquished")
            .clone();
        let request = pb::HeartbeatRequest {
            agent: self.hostname.clone(),
            cluster: self.cluster.clone(),
            held,
            free_slots: self.registry.free_slots() as u32,
            releasing: false,
            released: released.clone(),
            heartbeat_ms: self.heartbeat.as_millis() as u64,
            relinquished: relinquished.clone(),
            usage: self.registry.quotas.usage(),
            load: Some(self.registry.load.sample()),
        };
        let reply = self
            .link
            .call(|mut c| {
                let r = request.clone();
                async move { c.heartbeat(r).await }
            })
            .await?;
        self.state
            .released
            .lock()
            .expect("released")
            .retain(|r| !released.contains(r));
        self.state
            .relinquished
            .lock()
            .expect("relinquished")
            .retain(|r| !relinquished.contains(r));
        // The shares hold for a lease from when this heartbeat was sent (an older plane says
        // nothing of quotas: nothing is limited).
        self.registry.quotas.set(
            &reply.shares,
            (reply.shares_valid_ms > 0).then(|| sent.mono_ms + reply.shares_valid_ms as i64),
        );
        let granted: Vec<Granted> = reply
            .leases
            .iter()
            .map(|l| Granted {
                cluster: l.cluster.clone(),
                partition: l.partition,
                epoch: l.epoch,
                expires_ms: l.expires_at_ms,
            })
            .collect();
        let change = {
            let mut leases = self.leases.lock().expect("leases");
            let epochs: Vec<(Partition, u64)> =
                leases.all().map(|(p, h)| (p.clone(), h.epoch)).collect();
            let received = self.clock.monotonic_ms();
            let change = leases.renew(sent, received, reply.now_ms, &granted);
            // Lost: nothing of them starts any more (the runs queued here go back at once),
            // and once every report about them is committed the plane is told, to settle
            // what it holds in doubt.
            for lost in &change.lost {
                let epoch = epochs
                    .iter()
                    .find(|(p, _)| p == lost)
                    .map_or(0, |(_, e)| *e);
                self.relinquish(lost, epoch);
            }
            // Asked to give partitions back: stop firing them now, say so next heartbeat.
            let give_back: Vec<Partition> = reply
                .release
                .iter()
                .map(|l| (l.cluster.clone(), l.partition))
                .collect();
            leases.release(&give_back);
            // The plane renews a partition it asked back until told: a second ask for the
            // same lease keeps the first one's progress.
            let passes = self.passes.load(Ordering::SeqCst);
            let mut releasing = self.state.releasing.lock().expect("releasing");
            for lease in &reply.release {
                if !releasing.iter().any(|r| r.lease == *lease) {
                    releasing.push(Releasing {
                        lease: lease.clone(),
                        passes,
                        takes: None,
                        mark: None,
                    });
                }
            }
            drop(releasing);
            change
        };
        if !reply.release.is_empty() {
            // A pass now marks where the partitions' last takes are.
            self.wake.notify_one();
        }
        let definitions_moved = self
            .state
            .definitions
            .swap(reply.definitions, Ordering::SeqCst)
            != reply.definitions;
        if !change.is_empty() || definitions_moved || !reply.release.is_empty() {
            self.fetch().await?;
        }
        for command in reply.commands {
            match command.command {
                Some(pb::agent_command::Command::RunNow(r)) => self.run_now(r).await?,
                Some(pb::agent_command::Command::Kill(k)) => self.registry.kill(&k.run_id),
                None => {}
            }
        }
        Ok(())
    }

    /// Moves given-back partitions to `released` once the plane has every report about them.
    ///
    /// The plane hands a released partition to another agent, which fires from the plane's
    /// last acknowledged fire time: reporting the release before the records this agent took
    /// are committed would let the next holder run them again. So a release waits for a firing
    /// pass to end after it (no take of the partition can still be in flight), marks the
    /// outbox's last entry, and is reported once the outbox has nothing up to that mark.
    async fn ready_releases(&self) {
        if self.state.releasing.lock().expect("releasing").is_empty()
            && self
                .state
                .relinquishing
                .lock()
                .expect("relinquishing")
                .is_empty()
        {
            // The usual heartbeat: nothing given back, no outbox to read.
            return;
        }
        // In this order: a pass counted has written its take; a take counted expanded has its
        // entries in the outbox.
        let passes = self.passes.load(Ordering::SeqCst);
        let take = self.buffer.progress().written();
        let expanded = self.buffer.progress().expanded();
        let outbox = async {
            Ok::<_, StoreError>((
                self.outbox.last_seq().await?,
                self.outbox.first_seq().await?,
            ))
        };
        let (last, first) = match outbox.await {
            Ok(seqs) => seqs,
            Err(e) => {
                tracing::warn!("reading the outbox: {e}");
                return;
            }
        };
        let written = Written {
            passes,
            take,
            expanded,
            last,
            first,
        };
        let ready = ready_to_report(
            &mut self.state.releasing.lock().expect("releasing"),
            written,
        );
        self.state.released.lock().expect("released").extend(ready);
        let ready = ready_to_report(
            &mut self.state.relinquishing.lock().expect("relinquishing"),
            written,
        );
        self.state
            .relinquished
            .lock()
            .expect("relinquished")
            .extend(ready);
    }

    /// `partition`, held under `epoch` until now, is lost: its runs queued here are given
    /// back, and it is reported relinquished once every report about it is committed.
    pub fn relinquish(&self, partition: &Partition, epoch: u64) {
        self.registry.give_back_partition(partition);
        let lease = pb::Lease {
            cluster: partition.0.clone(),
            partition: partition.1,
            epoch,
            expires_at_ms: 0,
        };
        let passes = self.passes.load(Ordering::SeqCst);
        let mut relinquishing = self.state.relinquishing.lock().expect("relinquishing");
        if !relinquishing.iter().any(|r| r.lease == lease) {
            relinquishing.push(Releasing {
                lease,
                passes,
                takes: None,
                mark: None,
            });
        }
    }

    /// Fetches the schedules of every held partition and syncs the buffer with them. One that
    /// fails is tried again at the next heartbeat, whatever the plane's counter says by then.
    async fn fetch(self: &Arc<Self>) -> Result<(), ExchangeError> {
        let fetched = self.fetch_pages().await;
        if fetched.is_err() {
            self.state.definitions.store(u64::MAX, Ordering::SeqCst);
        }
        fetched
    }

    async fn fetch_pages(self: &Arc<Self>) -> Result<(), ExchangeError> {
        let mut request = pb::FetchSchedulesRequest {
            agent: self.hostname.clone(),
            leases: self.held_leases(),
            limit: FETCH_PAGE,
            after: None,
        };
        let mut assignments = Vec::new();
        let mut jobs = Jobs::default();
        loop {
            let reply = self
                .link
                .call(|mut c| {
                    let r = request.clone();
                    async move { c.fetch_schedules(r).await }
                })
                .await?;
            for s in &reply.schedules {
                match meridian_proto::convert::assignment(s, &mut jobs) {
                    Ok(a) => assignments.push(a),
                    Err(e) => tracing::warn!("schedule {}: {e}", s.schedule_id),
                }
            }
            if !reply.more {
                break;
            }
            // A partial list must never reach the buffer: it would drop the rest's records.
            let Some(next) = reply.next.filter(|n| request.after.as_ref() != Some(n)) else {
                return Err(ExchangeError::Unreadable {
                    what: "the plane's schedules",
                    why: "a page said more follow but not after which".into(),
                });
            };
            request.after = Some(next);
        }
        let synced = self.buffer.sync(assignments).await?;
        self.state.fetches.fetch_add(1, Ordering::Relaxed);
        for u in synced.unreadable {
            tracing::error!(
                schedule = %u.schedule,
                version = u.version,
                "this agent cannot read the schedule's calendar ({}): it fires nothing here \
                 until the plane sends a version this agent can read; upgrade the agent",
                u.why
            );
        }
        self.wake.notify_one();
        Ok(())
    }

    async fn run_now(self: &Arc<Self>, r: pb::RunNow) -> Result<(), ExchangeError> {
        let job: Job = r.job().map_err(|e| ExchangeError::Unreadable {
            what: "a run-now job",
            why: e.to_string(),
        })?;
        let run = LocalRun {
            run_id: r.run_id.clone(),
            schedule: None,
            // A re-run stands for its record's fire time.
            fire_ms: job.rerun.as_ref().and_then(|r| r.fire_ms),
            cluster: self.cluster.clone(),
            partition: None,
            epoch: 0,
            state: RunState::Queued,
            job,
        };
        let report = event(&run, RunState::Queued, self.now(), "run now");
        if self.buffer.take_manual(&run, &report).await? {
            self.reported.notify_one();
            self.registry.launch(run, None);
        }
        Ok(())
    }

    /// Gives every partition back at once (a graceful stop), rather than at expiry.
    pub async fn release_all(&self) {
        let request = pb::HeartbeatRequest {
            agent: self.hostname.clone(),
            cluster: self.cluster.clone(),
            held: Vec::new(),
            free_slots: 0,
            releasing: true,
            released: Vec::new(),
            heartbeat_ms: self.heartbeat.as_millis() as u64,
            relinquished: Vec::new(),
            usage: self.registry.quotas.usage(),
            load: Some(self.registry.load.sample()),
        };
        if let Err(e) = self
            .link
            .call(|mut c| {
                let r = request.clone();
                async move { c.heartbeat(r).await }
            })
            .await
        {
            tracing::warn!("giving the partitions back: {e}; they move when the leases expire");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_is_reported_only_once_its_reports_are_committed() {
        let lease = |partition| pb::Lease {
            partition,
            epoch: 3,
            expires_at_ms: 0,
            cluster: "main".into(),
        };
        let w = |passes, take, expanded, last, first| Written {
            passes,
            take,
            expanded,
            last,
            first,
        };
        let mut releasing = vec![Releasing {
            lease: lease(1),
            passes: 7,
            takes: None,
            mark: None,
        }];
        // A pass that began before the release may still be taking its records: nothing
        // noted yet, even with an empty outbox.
        assert!(ready_to_report(&mut releasing, w(7, 3, 3, None, None)).is_empty());
        assert_eq!((releasing[0].takes, releasing[0].mark), (None, None));
        // A pass ended; its take (5) is written but its reports are not all in the outbox yet
        // (only take 4 is expanded): no mark, though the outbox is empty.
        assert!(ready_to_report(&mut releasing, w(8, 5, 4, None, None)).is_empty());
        assert_eq!((releasing[0].takes, releasing[0].mark), (Some(5), None));
        // Take 5 expanded (and a later take 6 written, which does not matter): the mark is
        // the outbox's last entry, which still waits.
        assert!(ready_to_report(&mut releasing, w(9, 6, 5, Some(40), Some(12))).is_empty());
        assert_eq!(releasing[0].mark, Some(40));
        // Later entries do not hold it back; entries up to the mark do.
        assert!(ready_to_report(&mut releasing, w(9, 6, 5, Some(55), Some(40))).is_empty());
        assert_eq!(
            ready_to_report(&mut releasing, w(9, 6, 6, Some(55), Some(41))),
            [lease(1)]
        );
        assert!(releasing.is_empty());
        // Nothing waiting at all once a pass ended and its take is expanded: ready at once.
        let mut releasing = vec![Releasing {
            lease: lease(2),
            passes: 0,
            takes: None,
            mark: None,
        }];
        assert_eq!(
            ready_to_report(&mut releasing, w(1, 2, 2, None, None)),
            [lease(2)]
        );
    }
}
