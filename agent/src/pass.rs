//! A firing pass, decided before anything is written or launched: which due records it takes
//! and how — started, queued for a slot, waiting behind the schedule's run, caught up at the
//! catch-up rate, skipped — and what to do with each run once the take is durable.
//!
//! [`Pass::plan`] is pure given what it is handed: the due records, the leases, the time, what
//! the run registry says of each schedule ([`Counts`]) and whether a slot is free. The firing
//! worker ([`crate::firer`]) writes the take and then applies [`Then`]s.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::DateTime;
use meridian_domain::run::{Assignment, Job};
use meridian_domain::{FireRecord, OverlapPolicy};

use crate::firing::{self, Fate, Overlap};
use crate::lease::{Leases, Moment};
use crate::quota::{Permit, Wait};
use crate::take::{LocalRun, TakeItem, Took};

/// What the run registry says of a schedule when one of its on-time fires is decided; read
/// under one lock, so the three agree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Its runs going here.
    pub going: usize,
    /// Its fires waiting for the run going (overlap `buffer_one`/`buffer_all`).
    pub waiting: usize,
    /// Its missed fires still queued to catch up.
    pub catching_up: usize,
}

/// What one pass decided: the records it takes (written as one take), then what to do with
/// each run once the take is durable.
#[derive(Default)]
pub struct Pass {
    pub items: Vec<TakeItem>,
    pub then: Vec<Then>,
    /// Per schedule: runs this pass starts and queues (the overlap policy counts them).
    planned: HashMap<String, (usize, usize)>,
    /// Schedules this pass queues fires of to catch up.
    catching_up: HashSet<String>,
}

/// What to do with a run once its take is durable.
pub enum Then {
    Launch {
        run: LocalRun,
        /// The slot and quota it starts with; none: it waits for them.
        permit: Option<Permit>,
        /// Kill the schedule's runs going first (overlap `cancel_older`).
        cancel_older: bool,
    },
    /// Wait behind the schedule's run going.
    Wait(String, LocalRun),
    /// Start at the catch-up rate, in fire order.
    CatchUp(LocalRun),
}

impl Pass {
    /// Decides every due record: grouped by schedule (one assignment per schedule, keyed by its
    /// address) in the order the schedules first fall due; a record whose partition has no
    /// lease at `now` that runs may still start under ([`crate::lease::Held::start_deadline_ms`]) is left in
    /// the buffer (paused: the autonomy horizon passed or the partition moved); the rest are
    /// missed (skipped or caught up, by the schedule's catch-up policy) or on time (by its
    /// overlap policy, [`Pass::on_time`]).
    pub fn plan(
        due: Vec<(Arc<Assignment>, FireRecord)>,
        leases: &Leases,
        now: Moment,
        counts: impl Fn(&str) -> Counts,
        mut slot: impl FnMut(&Job) -> Result<Permit, Wait>,
    ) -> Self {
        let mut by_schedule: HashMap<usize, usize> = HashMap::new();
        let mut grouped: Vec<(Arc<Assignment>, Vec<FireRecord>)> = Vec::new();
        for (a, record) in due {
            let at = *by_schedule
                .entry(Arc::as_ptr(&a) as usize)
                .or_insert_with(|| {
                    grouped.push((a, Vec::new()));
                    grouped.len() - 1
                });
            grouped[at].1.push(record);
        }
        let now_at = DateTime::from_timestamp_millis(now.wall_ms).unwrap_or_default();
        let mut pass = Pass::default();
        let mut partition: (String, u32) = Default::default();
        for (a, records) in grouped {
            if partition.0 != a.cluster {
                partition.0 = a.cluster.clone();
            }
            partition.1 = a.partition;
            let Some(held) = leases
                .valid(&partition, now.mono_ms)
                .filter(|h| now.mono_ms < h.start_deadline_ms())
            else {
                continue;
            };
            if a.paused {
                for record in &records {
                    pass.take(&a, held.epoch, record, Took::Paused);
                }
                continue;
            }
            for (record, fate) in firing::classify(
                &records,
                held.since_ms,
                &a.returned,
                &a.backfill,
                &a.spec.catch_up,
                now_at,
            ) {
                match fate {
                    Fate::Skip => {
                        pass.take(&a, held.epoch, &record, Took::Missed);
                    }
                    Fate::CatchUp => pass.catch_up(&a, held.epoch, &record),
                    Fate::Backfill => pass.backfill(&a, held.epoch, &record, &mut slot),
                    Fate::OnTime => {
                        let counts = counts(a.schedule.as_str());
                        pass.on_time(&a, held.epoch, &record, counts, &mut slot)
                    }
                }
            }
        }
        pass
    }

    /// Takes `record` as `took`; returns its run (none when skipped).
    fn take(
        &mut self,
        a: &Arc<Assignment>,
        epoch: u64,
        record: &FireRecord,
        took: Took,
    ) -> Option<LocalRun> {
        let item = TakeItem {
            assignment: a.clone(),
            fire_ms: record.fire_at.timestamp_millis(),
            epoch,
            took,
        };
        let run = item.run();
        self.items.push(item);
        run
    }

    /// Takes `record` to be started at the catch-up rate, in fire order.
    fn catch_up(&mut self, a: &Arc<Assignment>, epoch: u64, record: &FireRecord) {
        let run = self.take(a, epoch, record, Took::CatchingUp);
        self.then.push(Then::CatchUp(run.expect("queued")));
        self.catching_up.insert(a.schedule.to_string());
    }

    /// Takes a backfill's record: started at once if a slot is free, else queued for one; the
    /// overlap policy neither holds it back nor counts it (the plane hands a backfill's
    /// records at most its `--parallel` at a time).
    fn backfill(
        &mut self,
        a: &Arc<Assignment>,
        epoch: u64,
        record: &FireRecord,
        slot: &mut impl FnMut(&Job) -> Result<Permit, Wait>,
    ) {
        let (permit, took) = match slot(&a.job) {
            Ok(p) => (Some(p), Took::Backfill),
            Err(_) => (None, Took::BackfillQueued),
        };
        let run = self.take(a, epoch, record, took);
        self.then.push(Then::Launch {
            run: run.expect("started or queued"),
            permit,
            cancel_older: false,
        });
    }

    /// Decides an on-time record under the schedule's overlap policy, counting what this pass
    /// has already decided for the schedule (behind its fires still catching up, if any).
    fn on_time(
        &mut self,
        a: &Arc<Assignment>,
        epoch: u64,
        record: &FireRecord,
        counts: Counts,
        slot: &mut impl FnMut(&Job) -> Result<Permit, Wait>,
    ) {
        let schedule = a.schedule.as_str();
        // While older fires of the schedule are still catching up, a new one queues behind
        // them: the overlap policy sees its fires in order.
        if a.overlap != OverlapPolicy::AllowAll
            && (counts.catching_up > 0 || self.catching_up.contains(schedule))
        {
            return self.catch_up(a, epoch, record);
        }
        let planned = *self.planned.entry(schedule.to_owned()).or_default();
        let (going, waiting) = (counts.going + planned.0, counts.waiting + planned.1);
        match firing::on_fire(a.overlap, going, waiting) {
            Overlap::Skip => {
                self.take(a, epoch, record, Took::Overlapping);
            }
            Overlap::Queue => {
                self.planned.entry(schedule.to_owned()).or_default().1 += 1;
                let run = self.take(a, epoch, record, Took::Waiting);
                self.then
                    .push(Then::Wait(schedule.to_owned(), run.expect("queued")));
            }
            decision @ (Overlap::Start | Overlap::CancelThenStart) => {
                self.planned.entry(schedule.to_owned()).or_default().0 += 1;
                // Started at once if its grant's share and a slot are free, else queued for
                // them, saying which.
                let (permit, took) = match slot(&a.job) {
                    Ok(p) => (Some(p), Took::Started),
                    Err(Wait::Slot) => (None, Took::Queued),
                    Err(Wait::Quota) => (None, Took::QuotaQueued),
                    Err(Wait::Load) => (None, Took::LoadQueued),
                };
                let run = self.take(a, epoch, record, took);
                self.then.push(Then::Launch {
                    run: run.expect("started or queued"),
                    permit,
                    cancel_older: decision == Overlap::CancelThenStart,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::Granted;
    use meridian_domain::run::Job;
    use meridian_domain::workflow::WorkflowDefinition;
    use meridian_domain::{ScheduleId, ScheduleSpec};

    fn assignment(schedule: &str, partition: u32, overlap: OverlapPolicy) -> Arc<Assignment> {
        Arc::new(Assignment {
            schedule: ScheduleId::new(schedule).unwrap(),
            cluster: "main".into(),
            partition,
            epoch: 4,
            version: 1,
            spec: ScheduleSpec::cron("* * * * * ?"),
            overlap,
            after_ms: 0,
            returned: Vec::new(),
            paused: false,
            backfill: Vec::new(),
            job: std::sync::Arc::new(Job {
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
            }),
        })
    }

    /// A slot of `slots` and an unlimited quota (no plane has said), if a slot is free.
    fn permit(slots: &Arc<tokio::sync::Semaphore>, job: &Job) -> Result<Permit, Wait> {
        thread_local! {
            static QUOTAS: Arc<crate::quota::Quotas> =
                crate::quota::Quotas::new(Arc::new(meridian_domain::SystemClock));
        }
        let slot = slots.clone().try_acquire_owned().map_err(|_| Wait::Slot)?;
        let quota = QUOTAS
            .with(|q| q.try_take(&crate::quota::key(job)))
            .ok_or(Wait::Quota)?;
        Ok(Permit { slot, quota })
    }

    /// Partition 0 of cluster `main` held since 0 under epoch 4; partition 1 not held.
    fn leases() -> Leases {
        let mut leases = Leases::default();
        leases.renew(
            at(0),
            0,
            0,
            &[Granted {
                cluster: "main".into(),
                partition: 0,
                epoch: 4,
                expires_ms: 3_600_000,
            }],
        );
        leases
    }

    /// `ms` on both clocks.
    fn at(ms: i64) -> Moment {
        Moment {
            wall_ms: ms,
            mono_ms: ms,
        }
    }

    fn due(a: &Arc<Assignment>, seconds: &[i64]) -> Vec<(Arc<Assignment>, FireRecord)> {
        seconds
            .iter()
            .map(|s| {
                let at = DateTime::from_timestamp_millis(s * 1000).unwrap();
                (a.clone(), FireRecord::new(a.schedule.clone(), at))
            })
            .collect()
    }

    fn took(pass: &Pass) -> Vec<Took> {
        pass.items.iter().map(|i| i.took).collect()
    }

    fn then(pass: &Pass) -> Vec<&'static str> {
        pass.then
            .iter()
            .map(|t| match t {
                Then::Launch { permit: None, .. } => "launch, no slot",
                Then::Launch { .. } => "launch",
                Then::Wait(..) => "wait",
                Then::CatchUp(_) => "catch up",
            })
            .collect()
    }

    #[test]
    fn a_pass_counts_what_it_already_decided_for_a_schedule_and_leaves_unheld_partitions() {
        let held = assignment("held", 0, OverlapPolicy::BufferOne);
        let unheld = assignment("unheld", 1, OverlapPolicy::AllowAll);
        let mut records = due(&held, &[10, 20, 30]);
        records.extend(due(&unheld, &[10]));
        let slots = Arc::new(tokio::sync::Semaphore::new(0));
        let pass = Pass::plan(
            records,
            &leases(),
            at(30_000),
            |_| Counts::default(),
            |job| permit(&slots, job),
        );
        // Nothing going: the first starts (queued for a slot: none is free), the second waits
        // behind it, the third is one more than buffer_one keeps. The unheld partition's
        // record stays in the buffer.
        assert_eq!(
            took(&pass),
            [Took::Queued, Took::Waiting, Took::Overlapping]
        );
        assert_eq!(then(&pass), ["launch, no slot", "wait"]);
        assert!(pass.items.iter().all(|i| i.epoch == 4));
    }

    #[test]
    fn a_backfills_records_start_beside_the_schedules_run_going_without_counting_for_it() {
        // One slot: the first backfill record starts in it, the second waits for a slot;
        // the schedule's own run going (overlap `skip`) holds neither back, and the on-time
        // record after them meets the overlap policy as if they were not there.
        let slots = Arc::new(tokio::sync::Semaphore::new(1));
        let mut filled = (*assignment("filled", 0, OverlapPolicy::Skip)).clone();
        filled.backfill = vec![1_000, 2_000];
        filled.returned = vec![];
        let filled = Arc::new(filled);
        let pass = Pass::plan(
            due(&filled, &[1, 2, 30]),
            &leases(),
            at(30_000),
            |_| Counts::default(),
            |job| permit(&slots, job),
        );
        assert_eq!(
            took(&pass),
            [Took::Backfill, Took::BackfillQueued, Took::Queued]
        );
        assert_eq!(
            then(&pass),
            ["launch", "launch, no slot", "launch, no slot"]
        );
        let runs: Vec<bool> = pass
            .items
            .iter()
            .map(|i| i.run().unwrap().job.backfill)
            .collect();
        assert_eq!(
            runs,
            [true, true, false],
            "the job says which runs are a backfill's"
        );
    }

    #[test]
    fn a_fire_beyond_its_grants_share_is_queued_saying_so() {
        let slots = Arc::new(tokio::sync::Semaphore::new(4));
        let quotas = crate::quota::Quotas::new(Arc::new(meridian_domain::SystemClock));
        quotas.set(
            &[meridian_proto::pb::QuotaShare {
                tenant: "ads".into(),
                environment: "prod".into(),
                share: 1,
            }],
            Some(i64::MAX),
        );
        let a = assignment("q", 0, OverlapPolicy::AllowAll);
        let pass = Pass::plan(
            due(&a, &[10, 20]),
            &leases(),
            at(20_000),
            |_| Counts::default(),
            |job| {
                let quota = quotas
                    .try_take(&crate::quota::key(job))
                    .ok_or(Wait::Quota)?;
                let slot = slots.clone().try_acquire_owned().map_err(|_| Wait::Slot)?;
                Ok(Permit { slot, quota })
            },
        );
        assert_eq!(took(&pass), [Took::Started, Took::QuotaQueued]);
        assert_eq!(then(&pass), ["launch", "launch, no slot"]);
        assert_eq!(
            Took::QuotaQueued.state(),
            meridian_domain::run::RunState::Queued
        );
    }

    #[test]
    fn a_paused_schedule_records_its_due_records_skipped_and_starts_nothing() {
        let slots = Arc::new(tokio::sync::Semaphore::new(4));
        let mut paused = (*assignment("paused", 0, OverlapPolicy::AllowAll)).clone();
        paused.paused = true;
        let paused = Arc::new(paused);
        let pass = Pass::plan(
            due(&paused, &[10, 20]),
            &leases(),
            at(20_000),
            |_| Counts::default(),
            |job| permit(&slots, job),
        );
        assert_eq!(took(&pass), [Took::Paused, Took::Paused]);
        assert!(pass.then.is_empty(), "nothing runs");
        assert_eq!(
            Took::Paused.state(),
            meridian_domain::run::RunState::Skipped
        );
        assert_eq!(slots.available_permits(), 4);
    }

    #[test]
    fn records_handed_back_catch_up_even_when_due_while_held() {
        let slots = Arc::new(tokio::sync::Semaphore::new(4));
        let mut resumed = (*assignment("resumed", 0, OverlapPolicy::Skip)).clone();
        resumed.returned = vec![10_000, 20_000];
        let resumed = Arc::new(resumed);
        let pass = Pass::plan(
            due(&resumed, &[10, 20, 30]),
            &leases(),
            at(30_000),
            |_| Counts::default(),
            |job| permit(&slots, job),
        );
        // The two handed back catch up in order; the on-time one queues behind them.
        assert_eq!(
            took(&pass),
            [Took::CatchingUp, Took::CatchingUp, Took::CatchingUp]
        );
    }

    #[test]
    fn an_on_time_fire_queues_behind_its_schedules_catch_ups_unless_it_allows_all() {
        let slots = Arc::new(tokio::sync::Semaphore::new(1));
        let catching_up = Counts {
            catching_up: 1,
            ..Counts::default()
        };
        let skip = assignment("skip", 0, OverlapPolicy::Skip);
        let pass = Pass::plan(
            due(&skip, &[10]),
            &leases(),
            at(10_000),
            |_| catching_up,
            |job| permit(&slots, job),
        );
        assert_eq!(took(&pass), [Took::CatchingUp]);
        assert_eq!(then(&pass), ["catch up"]);
        let all = assignment("all", 0, OverlapPolicy::AllowAll);
        let pass = Pass::plan(
            due(&all, &[10]),
            &leases(),
            at(10_000),
            |_| catching_up,
            |job| permit(&slots, job),
        );
        assert_eq!(took(&pass), [Took::Started]);
        assert_eq!(then(&pass), ["launch"]);
    }

    #[test]
    fn a_pass_takes_nothing_of_a_partition_whose_lease_is_inside_its_start_margin() {
        let slots = Arc::new(tokio::sync::Semaphore::new(4));
        let held = assignment("held", 0, OverlapPolicy::AllowAll);
        // The hour's lease ends at 3_600_000; its margin is 2 % of it (72 s).
        let plan = |now: i64| {
            Pass::plan(
                due(&held, &[3_000]),
                &leases(),
                at(now),
                |_| Counts::default(),
                |job| permit(&slots, job),
            )
        };
        assert_eq!(took(&plan(3_527_999)), [Took::Started]);
        assert!(plan(3_528_000).items.is_empty(), "inside the margin");
        assert!(plan(3_600_000).items.is_empty(), "past the deadline");
    }
}
