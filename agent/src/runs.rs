//! The runs going on this agent: which are going (per schedule, for the overlap policy),
//! which wait for the schedule's previous run, which are caught up at the catch-up rate; and
//! the registry that launches a run in a task of its own (a slot first), records how it went,
//! then starts the schedule's next waiting run, and kills runs.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use meridian_domain::Clock;
use meridian_domain::run::{Job, RunState};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

use crate::buffer::Buffer;
use crate::figures::{Figures, Waiting};
use crate::firing::{self, Overlap};
use crate::lease::Leases;
use crate::load::Load;
use crate::pass::Counts;
use crate::quota::{self, Permit, Quotas, Wait};
use crate::resume::Resume;
use crate::runner::Runner;
use crate::take::{LocalRun, Took, event};

/// A run going on this agent.
pub struct Going {
    schedule: Option<String>,
    kill: watch::Sender<bool>,
    task: Option<tokio::task::AbortHandle>,
}

#[derive(Default)]
pub struct Runs {
    pub going: HashMap<String, Going>,
    /// How many of `going` each schedule has (the overlap policy asks for every fire).
    going_per_schedule: HashMap<String, usize>,
    /// Per schedule: fires waiting for the previous run (overlap `buffer_one`/`buffer_all`).
    pub waiting: HashMap<String, VecDeque<LocalRun>>,
    /// Missed records to start, in fire order, at the catch-up rate.
    pub catch_up: VecDeque<LocalRun>,
    /// How many of `catch_up` each schedule has (its later fires queue behind them).
    catching_up: HashMap<String, usize>,
}

impl Runs {
    pub fn going_for(&self, schedule: &str) -> usize {
        self.going_per_schedule.get(schedule).copied().unwrap_or(0)
    }

    pub fn catching_up_for(&self, schedule: &str) -> usize {
        self.catching_up.get(schedule).copied().unwrap_or(0)
    }

    /// Queues `run` behind its schedule's run going; returns the schedule's next waiting run
    /// to start now when nothing of the schedule is going any more (the run it was to wait
    /// for ended before it was queued: nothing else would ever start it).
    pub fn wait(&mut self, schedule: String, run: LocalRun) -> Option<LocalRun> {
        let idle = self.going_for(&schedule) == 0;
        let waiting = self.waiting.entry(schedule).or_default();
        waiting.push_back(run);
        if idle { waiting.pop_front() } else { None }
    }

    pub fn queue_catch_up(&mut self, run: LocalRun) {
        if let Some(s) = &run.schedule {
            *self.catching_up.entry(s.to_string()).or_default() += 1;
        }
        self.catch_up.push_back(run);
    }

    pub fn next_catch_up(&mut self) -> Option<LocalRun> {
        let run = self.catch_up.pop_front()?;
        self.uncount_catch_up(&run);
        Some(run)
    }

    /// `run` left the catch-up queue.
    fn uncount_catch_up(&mut self, run: &LocalRun) {
        if let Some(s) = &run.schedule
            && let Some(n) = self.catching_up.get_mut(s.as_str())
        {
            *n -= 1;
            if *n == 0 {
                self.catching_up.remove(s.as_str());
            }
        }
    }

    /// Takes out every queued run (to catch up, or waiting for its schedule's run) of
    /// `partition`.
    pub fn take_partition(&mut self, partition: &(String, u32)) -> Vec<LocalRun> {
        let of = |r: &LocalRun| r.cluster == partition.0 && r.partition == Some(partition.1);
        let mut out = Vec::new();
        let mut kept = VecDeque::new();
        for run in std::mem::take(&mut self.catch_up) {
            if of(&run) {
                self.uncount_catch_up(&run);
                out.push(run);
            } else {
                kept.push_back(run);
            }
        }
        self.catch_up = kept;
        for waiting in self.waiting.values_mut() {
            let (gone, kept): (VecDeque<LocalRun>, VecDeque<LocalRun>) =
                std::mem::take(waiting).into_iter().partition(|r| of(r));
            *waiting = kept;
            out.extend(gone);
        }
        out
    }

    /// Asks every run of `schedule` going to stop (overlap `cancel_older`).
    pub fn cancel_going(&self, schedule: &str) {
        for going in self.going.values() {
            if going.schedule.as_deref() == Some(schedule) {
                let _ = going.kill.send(true);
            }
        }
    }

    pub fn start(&mut self, run_id: String, going: Going) {
        if let Some(s) = &going.schedule {
            *self.going_per_schedule.entry(s.clone()).or_default() += 1;
        }
        if let Some(old) = self.going.insert(run_id, going) {
            self.forget(&old);
        }
    }

    pub fn end(&mut self, run_id: &str) {
        if let Some(old) = self.going.remove(run_id) {
            self.forget(&old);
        }
    }

    fn forget(&mut self, going: &Going) {
        if let Some(s) = &going.schedule
            && let Some(n) = self.going_per_schedule.get_mut(s)
        {
            *n -= 1;
            if *n == 0 {
                self.going_per_schedule.remove(s);
            }
        }
    }
}

/// Launches and kills the runs of this agent, and keeps [`Runs`].
pub struct RunRegistry {
    runs: Mutex<Runs>,
    /// One permit per run going at once (`slots` in agent.toml).
    slots: Arc<Semaphore>,
    buffer: Buffer,
    pub runner: Runner,
    clock: Arc<dyn Clock>,
    /// Woken when something is written to the outbox.
    reported: Arc<Notify>,
    /// Woken when a run ends.
    ended: Notify,
    /// The firing loop's wake-up (a run's end may let a waiting fire go).
    wake: Arc<Notify>,
    /// The leases the lease keeper renews: a scheduled run starts only under its own.
    leases: Arc<Mutex<Leases>>,
    /// Runs given back unstarted since the agent started (for status and tests).
    returned: AtomicU64,
    /// The grants' shares on this agent (`max_concurrent_runs`).
    pub quotas: Arc<Quotas>,
    /// The host's load against the agent's thresholds.
    pub load: Arc<Load>,
    /// Starts, ends and waits, for `/metrics`.
    pub figures: Figures,
}

impl RunRegistry {
    #[allow(clippy::too_many_arguments)] // Each is a part the agent wires once, by name.
    pub fn new(
        slots: usize,
        buffer: Buffer,
        runner: Runner,
        clock: Arc<dyn Clock>,
        leases: Arc<Mutex<Leases>>,
        reported: Arc<Notify>,
        wake: Arc<Notify>,
        load: Arc<Load>,
    ) -> Self {
        let quotas = Quotas::new(clock.clone());
        Self {
            quotas,
            load,
            runs: Mutex::new(Runs::default()),
            slots: Arc::new(Semaphore::new(slots)),
            buffer,
            runner,
            clock,
            reported,
            ended: Notify::new(),
            wake,
            leases,
            returned: AtomicU64::new(0),
            figures: Figures::default(),
        }
    }

    /// Runs given back unstarted so far.
    pub fn returned(&self) -> u64 {
        self.returned.load(Ordering::SeqCst)
    }

    /// Whether `run` may start now: a fire record's run only while its partition's lease,
    /// under the epoch it was taken with, has not run out ([`Leases::may_start`]); a "run
    /// now" run (no partition) always.
    fn may_start(&self, run: &LocalRun) -> bool {
        let Some(partition) = run.partition else {
            return true;
        };
        let now = self.clock.monotonic_ms();
        self.leases.lock().expect("leases").may_start(
            &(run.cluster.clone(), partition),
            run.epoch,
            now,
        )
    }

    /// The runs, for a decision made under their lock.
    pub fn lock(&self) -> MutexGuard<'_, Runs> {
        self.runs.lock().expect("runs")
    }

    /// Slots free now (the heartbeat tells the plane).
    pub fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }

    /// A slot, if one is free now.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// What a run of `job` needs to start, if it may start now: its grant's share first, then
    /// a slot.
    pub fn try_permit(&self, job: &Job) -> Result<Permit, Wait> {
        if self.load.over().is_some() {
            return Err(Wait::Load);
        }
        let quota = self.quotas.try_take(&quota::key(job)).ok_or(Wait::Quota)?;
        let slot = self.try_slot().ok_or(Wait::Slot)?;
        Ok(Permit { slot, quota })
    }

    /// Whether no run is going.
    pub fn idle(&self) -> bool {
        self.lock().going.is_empty()
    }

    /// Resolves when a run ends after this is called (enable it before checking).
    pub fn ended(&self) -> tokio::sync::futures::Notified<'_> {
        self.ended.notified()
    }

    /// Asks every run going to stop.
    pub fn kill_all(&self) {
        for going in self.lock().going.values() {
            let _ = going.kill.send(true);
        }
    }

    /// Drops every run's task at once (a crash, in tests).
    pub fn abort_all(&self) {
        let tasks: Vec<_> = self
            .lock()
            .going
            .values_mut()
            .filter_map(|g| g.task.take())
            .collect();
        for t in tasks {
            t.abort();
        }
    }

    /// Asks run `run_id` to stop, if it is going here.
    pub fn kill(&self, run_id: &str) {
        if let Some(going) = self.lock().going.get(run_id) {
            let _ = going.kill.send(true);
        }
    }

    /// Lets a caught-up run go (the catch-up rate allowed it) under its schedule's overlap
    /// policy, as an on-time fire: with a run of the schedule going, `skip` records it
    /// skipped, `buffer_one`/`buffer_all` queue it behind that run, `cancel_older` kills that
    /// run first. Decided and queued under one lock, so a run ending meanwhile cannot leave
    /// it waiting for nothing.
    pub fn catch_up(self: &Arc<Self>, run: LocalRun) {
        let Some(schedule) = run.schedule.as_ref().map(|s| s.to_string()) else {
            return self.launch(run, None);
        };
        // A schedule no longer assigned here still runs what was taken for it, as before.
        let Some(a) = self.buffer.assigned(&schedule) else {
            return self.launch(run, None);
        };
        let run = {
            let mut runs = self.lock();
            let waiting = runs.waiting.get(&schedule).map_or(0, VecDeque::len);
            match firing::on_fire(a.overlap, runs.going_for(&schedule), waiting) {
                Overlap::Start => Some(run),
                Overlap::CancelThenStart => {
                    runs.cancel_going(&schedule);
                    Some(run)
                }
                Overlap::Queue => runs.wait(schedule, run),
                Overlap::Skip => {
                    let this = self.clone();
                    tokio::spawn(async move { this.skip(&run, Took::Overlapping).await });
                    None
                }
            }
        };
        if let Some(run) = run {
            self.launch(run, None);
        }
    }

    /// What a firing pass needs to know of `schedule`, read under one lock.
    pub fn counts(&self, schedule: &str) -> Counts {
        let runs = self.lock();
        Counts {
            going: runs.going_for(schedule),
            waiting: runs.waiting.get(schedule).map_or(0, VecDeque::len),
            catching_up: runs.catching_up_for(schedule),
        }
    }

    /// Queues `run` behind `schedule`'s run going, or starts it at once when that run has
    /// ended meanwhile ([`Runs::wait`]): decided under the lock a run's end takes to start
    /// the next waiting one, so it cannot be left waiting for nothing.
    pub fn wait(self: &Arc<Self>, schedule: String, run: LocalRun) {
        let next = self.lock().wait(schedule, run);
        if let Some(next) = next {
            self.launch(next, None);
        }
    }

    /// Starts `run` in a task of its own: waits for a slot (recording `started` once it has
    /// one, unless it already was), runs it, records the end, then starts the schedule's next
    /// waiting fire.
    pub fn launch(self: &Arc<Self>, run: LocalRun, permit: Option<Permit>) {
        self.launch_with(run, permit, None)
    }

    /// Lets a run a previous agent process had started go on as `plan` says (re-attached to
    /// the tasks the supervisor kept going): it needs a slot, but no lease (it has started).
    pub fn resume(self: &Arc<Self>, run: LocalRun, plan: Resume) {
        self.launch_with(run, None, Some(plan))
    }

    fn launch_with(
        self: &Arc<Self>,
        run: LocalRun,
        permit: Option<Permit>,
        resume: Option<Resume>,
    ) {
        let (kill, killed) = watch::channel(false);
        let run_id = run.run_id.clone();
        // A backfill's run is none of the overlap policy's business: it is not counted as the
        // schedule's run going, nor killed by a `cancel_older` fire.
        let schedule = run
            .schedule
            .as_ref()
            .filter(|_| !run.job.backfill)
            .map(|s| s.to_string());
        self.lock().start(
            run_id.clone(),
            Going {
                schedule: schedule.clone(),
                kill,
                task: None,
            },
        );
        let this = self.clone();
        let task = tokio::spawn(async move {
            // Its grant's share first (a run going already, taken back after a restart, counts
            // whatever the share), then a slot: a run waiting for its tenant's quota holds no
            // slot another tenant's run could use.
            let _permit = match permit {
                Some(p) => p,
                None => {
                    let key = quota::key(&run.job);
                    let quota = if resume.is_some() {
                        this.quotas.take_anyway(key)
                    } else {
                        let _waiting = this.figures.waiting(Waiting::Quota);
                        let mut stop = killed.clone();
                        tokio::select! {
                            quota = this.quotas.take(key.clone()) => quota,
                            // Killed while it waits: on to be recorded killed at once.
                            _ = stop.wait_for(|k| *k) => this.quotas.take_anyway(key),
                        }
                    };
                    // Nothing new starts while the agent is above its load thresholds.
                    if resume.is_none() {
                        let _waiting = this.figures.waiting(Waiting::Load);
                        let mut stop = killed.clone();
                        tokio::select! {
                            _ = this.load.under() => {}
                            _ = stop.wait_for(|k| *k) => {}
                        }
                    }
                    let _waiting = this.figures.waiting(Waiting::Slot);
                    match this.slots.clone().acquire_owned().await {
                        Ok(slot) => Permit { slot, quota },
                        Err(_) => return,
                    }
                }
            };
            if resume.is_none() && !this.may_start(&run) {
                // The lease lapsed since the record was taken (the agent was paused, cut off
                // or slow to get a slot): it goes back untouched, for the partition's holder.
                this.give_back(&run).await;
                this.finished(&run, schedule.as_ref());
                return;
            }
            if resume.is_none() && run.state != RunState::Started && this.paused(&run) {
                // Its schedule was paused while it waited (for a slot, behind the schedule's
                // run going, to catch up): it does not start now.
                this.skip(&run, Took::Paused).await;
                this.finished(&run, schedule.as_ref());
                return;
            }
            // A start (not a run re-attached after a restart): the take may have recorded it
            // started already, a moment ago, when a slot was free at once.
            if resume.is_none() {
                let now = this.clock.now_ms();
                this.figures.started(run.fire_ms.map(|fire| now - fire));
            }
            if run.state != RunState::Started {
                let report = event(&run, RunState::Started, this.clock.now_ms(), "");
                if let Err(e) = this
                    .buffer
                    .advance(&run.run_id, RunState::Started, &report)
                    .await
                {
                    tracing::error!("recording the start of {}: {e}", run.run_id);
                }
                this.reported.notify_one();
            }
            let (state, message) = this.runner.run(&run, killed, resume.as_ref()).await;
            this.figures.ended(state);
            let report = event(&run, state, this.clock.now_ms(), &message);
            if let Err(e) = this.buffer.advance(&run.run_id, state, &report).await {
                tracing::error!("recording the end of {}: {e}", run.run_id);
            }
            this.reported.notify_one();
            // Recorded: the supervisor may drop its attempts.
            this.runner.forget(&run);
            this.finished(&run, schedule.as_ref());
        });
        if let Some(going) = self.lock().going.get_mut(&run_id) {
            going.task = Some(task.abort_handle());
        }
    }

    /// After `run` ended (or was given back): forgets it and starts its schedule's next
    /// waiting fire.
    fn finished(self: &Arc<Self>, run: &LocalRun, schedule: Option<&String>) {
        let next = {
            let mut runs = self.lock();
            runs.end(&run.run_id);
            self.ended.notify_waiters();
            schedule
                .and_then(|s| runs.waiting.get_mut(s))
                .and_then(VecDeque::pop_front)
        };
        if let Some(next) = next {
            self.launch(next, None);
        }
        self.wake.notify_one();
    }

    /// Gives back at once every run of `partition` queued here (its lease is lost: none of
    /// them may start). Runs waiting for a slot are given back when they get one.
    pub fn give_back_partition(self: &Arc<Self>, partition: &(String, u32)) {
        let runs = self.lock().take_partition(partition);
        if runs.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            for run in runs {
                this.give_back(&run).await;
            }
            this.wake.notify_one();
        });
    }

    /// Whether `run`'s schedule is paused as last synced (a run-now or re-run never is).
    fn paused(&self, run: &LocalRun) -> bool {
        run.schedule
            .as_ref()
            .and_then(|s| self.buffer.assigned(s.as_str()))
            .is_some_and(|a| a.paused)
    }

    /// Records `run`, taken but not started, skipped for `why` (its schedule's previous run
    /// is going, or its schedule is paused).
    async fn skip(&self, run: &LocalRun, why: Took) {
        let report = event(run, RunState::Skipped, self.clock.now_ms(), why.message());
        if let Err(e) = self
            .buffer
            .advance(&run.run_id, RunState::Skipped, &report)
            .await
        {
            tracing::error!("recording {} skipped ({}): {e}", run.run_id, why.message());
        }
        self.reported.notify_one();
    }

    /// Records `run` given back unstarted: the agent forgets it, and the plane hands its
    /// record to whoever holds the partition.
    async fn give_back(&self, run: &LocalRun) {
        let message = format!(
            "not started: the lease on partition {} of cluster `{}` (epoch {}) ran out \
             first; given back to the partition's holder",
            run.partition.unwrap_or_default(),
            run.cluster,
            run.epoch
        );
        tracing::info!(run = %run.run_id, "{message}");
        let report = event(run, RunState::Returned, self.clock.now_ms(), &message);
        if let Err(e) = self
            .buffer
            .advance(&run.run_id, RunState::Returned, &report)
            .await
        {
            tracing::error!("recording {} given back: {e}", run.run_id);
        }
        self.returned.fetch_add(1, Ordering::SeqCst);
        self.reported.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_domain::ScheduleId;
    use meridian_domain::run::Job;
    use meridian_domain::workflow::WorkflowDefinition;

    fn run(id: &str) -> LocalRun {
        LocalRun {
            run_id: id.into(),
            schedule: Some(ScheduleId::new("s").unwrap()),
            fire_ms: Some(0),
            cluster: "main".into(),
            partition: Some(0),
            epoch: 1,
            state: RunState::Queued,
            job: Job {
                tenant: "ads".into(),
                workflow: "etl".into(),
                workflow_version: 1,
                definition: WorkflowDefinition::shell("a", "true"),
                environment: "prod".into(),
                vars: Default::default(),
                work_dir: None,
                os_user: None,
                allow_agent_user: false,
                rerun: None,
                backfill: false,
            },
        }
    }

    fn going() -> Going {
        Going {
            schedule: Some("s".into()),
            kill: watch::channel(false).0,
            task: None,
        }
    }

    #[test]
    fn a_fire_told_to_wait_for_a_run_that_already_ended_starts_at_once() {
        let mut runs = Runs::default();
        runs.start("r0".into(), going());
        // r0 is going: r1 waits behind it.
        assert!(runs.wait("s".into(), run("r1")).is_none());
        assert_eq!(runs.waiting["s"].len(), 1);
        // r0 ends and its task starts the next waiting run, as `launch` does.
        runs.end("r0");
        let next = runs.waiting.get_mut("s").and_then(VecDeque::pop_front);
        assert_eq!(next.map(|r| r.run_id), Some("r1".into()));
        // A pass decided r2 waits while r1 was going, but r1 ended before the pass queued it
        // (the take was being written): nothing would ever start r2, so it starts now.
        runs.start("r1".into(), going());
        runs.end("r1");
        let now = runs.wait("s".into(), run("r2"));
        assert_eq!(now.map(|r| r.run_id), Some("r2".into()));
        assert!(runs.waiting["s"].is_empty());
    }
}
