//! What a firing pass takes: each due fire record with how it was taken ([`Took`]), gathered
//! in one [`Take`] that the store makes durable as one row before any of its runs starts, and
//! the runs ([`LocalRun`]) and reports ([`event`]) that follow from it. Pure data: the
//! buffer decides what to take, the store writes it.

use std::sync::Arc;

use chrono::DateTime;
use meridian_domain::run::{Assignment, Job, Report, ReportItem, RunEvent, RunState};
use meridian_domain::{FireRecord, ScheduleId};
use serde::{Deserialize, Serialize};

/// What a firing pass took, stamped when it was taken. Expanding an item removes its record
/// from the buffer, moves its schedule's cursor to it, remembers its run (none when it ends
/// here, skipped) and writes its report.
#[derive(Debug, Clone)]
pub struct Take {
    pub at_ms: i64,
    pub items: Vec<TakeItem>,
}

/// How a due fire record was taken; its report's state and message follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Took {
    /// Started at once (a slot was free).
    Started,
    /// To start once a slot is free.
    Queued,
    /// Waiting for the schedule's previous run (overlap `buffer_one`, `buffer_all`).
    Waiting,
    /// Missed, and run by the rate-limited catch-up.
    CatchingUp,
    /// Missed, and the catch-up policy skips it.
    Missed,
    /// The schedule's previous run is still going, and the overlap policy skips it.
    Overlapping,
    /// The schedule is paused (itself, its workflow, tenant or environment).
    Paused,
    /// A backfill's record, started at once (a slot was free).
    Backfill,
    /// A backfill's record, to start once a slot is free.
    BackfillQueued,
    /// To start once its grant's share on this agent has room (`max_concurrent_runs`).
    QuotaQueued,
    /// To start once the agent is under its load thresholds again.
    LoadQueued,
}

impl Took {
    pub fn state(self) -> RunState {
        match self {
            Took::Started | Took::Backfill => RunState::Started,
            Took::Queued
            | Took::Waiting
            | Took::CatchingUp
            | Took::BackfillQueued
            | Took::QuotaQueued
            | Took::LoadQueued => RunState::Queued,
            Took::Missed | Took::Overlapping | Took::Paused => RunState::Skipped,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Took::Started | Took::Queued => "",
            Took::Waiting => "waiting for the previous run",
            Took::CatchingUp => "catching up",
            Took::Missed => "missed while nothing could run it; the catch-up policy skips it",
            Took::Overlapping => "the previous run is still going (overlap policy)",
            Took::Paused => meridian_domain::run::PAUSED,
            Took::Backfill | Took::BackfillQueued => "backfill",
            Took::QuotaQueued => QUOTA_QUEUED,
            Took::LoadQueued => LOAD_QUEUED,
        }
    }
}

/// The message of a run queued for its grant's quota.
pub const QUOTA_QUEUED: &str = "waiting: the tenant has as many runs going in this environment as its grant allows \
     (max_concurrent_runs)";

/// The message of a run queued while its agent is above its load thresholds.
pub const LOAD_QUEUED: &str =
    "waiting: the agent is above its load thresholds ([load] in agent.toml)";

/// One fire record taken: whose, when, under which lease epoch, and how.
#[derive(Debug, Clone)]
pub struct TakeItem {
    pub assignment: Arc<Assignment>,
    pub fire_ms: i64,
    pub epoch: u64,
    pub took: Took,
}

impl TakeItem {
    /// The run it starts or queues (none when skipped).
    pub fn run(&self) -> Option<LocalRun> {
        (self.took.state() != RunState::Skipped).then(|| self.local_run())
    }

    /// Its run as the report sees it, whatever the fate.
    pub fn local_run(&self) -> LocalRun {
        let a = &self.assignment;
        let at = DateTime::from_timestamp_millis(self.fire_ms).unwrap_or_default();
        LocalRun {
            run_id: FireRecord::new(a.schedule.clone(), at).id.to_string(),
            schedule: Some(a.schedule.clone()),
            fire_ms: Some(self.fire_ms),
            cluster: a.cluster.clone(),
            partition: Some(a.partition),
            epoch: self.epoch,
            state: self.took.state(),
            job: Job {
                backfill: matches!(self.took, Took::Backfill | Took::BackfillQueued),
                ..(*a.job).clone()
            },
        }
    }

    /// What expanding it writes: its run to remember (none when skipped) and the report of
    /// its taking, stamped `at_ms`.
    pub fn expanded(&self, at_ms: i64) -> (Option<LocalRun>, Report) {
        let run = self.local_run();
        let report = event(&run, self.took.state(), at_ms, self.took.message());
        let remembered = (self.took.state() != RunState::Skipped).then_some(run);
        (remembered, report)
    }
}

/// The report of `run` moving to `state` at `at_ms`.
pub fn event(run: &LocalRun, state: RunState, at_ms: i64, message: &str) -> Report {
    Report::V1 {
        cluster: run.cluster.clone(),
        partition: run.partition,
        epoch: run.epoch,
        item: ReportItem::Run(RunEvent {
            run_id: run.run_id.clone(),
            schedule: run.schedule.clone(),
            fire_ms: run.fire_ms,
            tenant: run.job.tenant.clone(),
            workflow: run.job.workflow.clone(),
            workflow_version: run.job.workflow_version,
            environment: run.job.environment.clone(),
            state,
            at_ms,
            message: message.to_owned(),
        }),
    }
}

/// A run this agent has taken and not finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRun {
    pub run_id: String,
    pub schedule: Option<ScheduleId>,
    pub fire_ms: Option<i64>,
    pub cluster: String,
    pub partition: Option<u32>,
    pub epoch: u64,
    pub state: RunState,
    pub job: Job,
}
