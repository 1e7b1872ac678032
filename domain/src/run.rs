//! Runs as both sides see them: what an agent is asked to run ([`Job`], [`Assignment`]) and
//! what it reports back ([`Report`]).
//!
//! These are serde types, not `pb` messages: a report is written to the agent's outbox as JSON
//! the moment it happens, sent as that same JSON, and replicated in the plane's Raft log inside
//! a command, so one shape is the contract from the agent's disk to the plane's history.
//! Everything here carries a `v` tag so a rolling upgrade can read the previous shape.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::schedule::{OverlapPolicy, ScheduleId, ScheduleSpec};
use crate::workflow::WorkflowDefinition;

/// What to run and with which settings: a workflow version in an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub tenant: String,
    pub workflow: String,
    pub workflow_version: u64,
    pub definition: WorkflowDefinition,
    pub environment: String,
    /// The environment's variables, given to every task.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Base directory for the run's working directory (none: the agent's default).
    #[serde(default)]
    pub work_dir: Option<String>,
    /// The OS user the run's tenant maps to in its environment (`run_as`), as the plane
    /// resolved it; the agent starts shell tasks as this user. None: the environment maps
    /// nothing for the tenant, so a task could only run as the agent's own user, which the
    /// agent refuses unless `allow_agent_user`. Defaulted so jobs written before it read.
    #[serde(default)]
    pub os_user: Option<OsUser>,
    /// The environment lets tasks run as the agent's own user or as root (`meridian dev`, the
    /// lab). Without it the agent refuses both: such a task could read the agent's key,
    /// database, credentials and every other tenant's files.
    #[serde(default)]
    pub allow_agent_user: bool,
    /// A re-run or recovery of an earlier run: the fire time it stands for, its generation,
    /// and the tasks that already succeeded (a recovery keeps them and runs the rest).
    /// Skipped when absent, so a job that is no re-run reads as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun: Option<RerunOf>,
    /// A backfill's run of its record: it stands beside the schedule's on-time runs, which
    /// the overlap policy does not hold back for it (nor it for them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backfill: bool,
}

/// What a re-run job stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RerunOf {
    /// The record's fire time (`MERIDIAN_FIRE_MS`), when the run re-run had one.
    #[serde(default)]
    pub fire_ms: Option<i64>,
    /// 2 for the first re-run of a run (`MERIDIAN_GENERATION`).
    pub generation: u32,
    /// Tasks that succeeded in an earlier generation: counted as done, not run again.
    #[serde(default)]
    pub done: std::collections::BTreeSet<String>,
}

/// An OS identity on an agent's host: a user, and the group its tasks run in.
///
/// Strict (`deny_unknown_fields`) on purpose: a misspelt `group` dropped in silence would run
/// tasks in a group nobody asked for, and an agent that cannot read a field added later should
/// fail the job rather than ignore part of who it runs as.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct OsUser {
    /// A user name (`[a-z_][a-z0-9_-]*`, at most 32 characters) or a numeric uid, as the
    /// agent's host knows it.
    pub user: String,
    /// The group tasks run in (name or numeric gid); none: the user's primary group.
    #[serde(default)]
    pub group: Option<String>,
}

impl OsUser {
    /// What is wrong with it, as (`user` or `group`, the problem); none when both are
    /// portable names or numeric ids.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        if let Some(problem) = os_name_problem(&self.user) {
            return Some(("user", problem));
        }
        self.group
            .as_deref()
            .and_then(os_name_problem)
            .map(|problem| ("group", problem))
    }
}

/// Why `name` is not a user or group name every Unix host accepts: the POSIX-portable
/// `[a-z_][a-z0-9_-]*` of at most 32 characters (what `useradd` takes by default), or a
/// numeric id. Anything else could mean different users on different hosts, or none.
pub fn os_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("must not be empty")
    } else if name.bytes().all(|b| b.is_ascii_digit()) {
        match name.parse::<u32>() {
            Ok(id) if id < u32::MAX => None,
            _ => Some("is not a valid numeric id"),
        }
    } else if name.len() > 32 {
        Some("must be at most 32 characters")
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        Some("must start with a lower-case letter or `_` (or be a numeric id)")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        Some("may only contain lower-case letters, digits, `_` and `-`")
    } else {
        None
    }
}

/// One schedule of a partition the agent holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub schedule: ScheduleId,
    pub cluster: String,
    pub partition: u32,
    pub epoch: u64,
    /// The schedule definition's version; records generated under an older one are replaced.
    pub version: u64,
    pub spec: ScheduleSpec,
    pub overlap: OverlapPolicy,
    /// Generate records strictly after this instant (ms): the last acknowledged fire.
    pub after_ms: i64,
    /// Shared by every schedule of the same workflow version in the same environment
    /// ([`Jobs`]): an agent holding 100,000 schedules of a few workflows keeps a few jobs.
    pub job: Arc<Job>,
    /// Fire records at or before `after_ms` the plane hands this holder to fire: a holder
    /// took them and gave them back unstarted (its lease lapsed first). Fired once each, under
    /// the catch-up policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub returned: Vec<i64>,
    /// Paused (the schedule, its workflow, its tenant or its environment): its due records
    /// are recorded skipped with the message [`PAUSED`], and nothing runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Fire records a backfill hands this holder (at most its `--parallel` at a time): each
    /// runs once, whatever the catch-up and overlap policies say, as soon as a slot is free.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backfill: Vec<i64>,
}

/// The message of a record skipped because its schedule was paused; the plane finds them by
/// it when a resume catches up.
pub const PAUSED: &str = "paused";

/// Jobs read once and shared: assignments of the same job hold one copy of it, keyed by the
/// job's text (as it travels, or as [`crate::stored::write`] writes it).
#[derive(Debug, Default)]
pub struct Jobs(HashMap<String, Arc<Job>>);

impl Jobs {
    /// The job `text` holds (bare, or in a stored envelope), read the first time it is seen.
    pub fn read(&mut self, text: &str) -> Result<Arc<Job>, crate::stored::StoredError> {
        if let Some(job) = self.0.get(text) {
            return Ok(job.clone());
        }
        let job: Arc<Job> = Arc::new(crate::stored::read(text)?);
        self.0.insert(text.to_owned(), job.clone());
        Ok(job)
    }

    /// `job`, or the equal one already held.
    pub fn share(&mut self, job: Arc<Job>) -> Arc<Job> {
        let text = serde_json::to_string(job.as_ref()).expect("jobs serialise");
        self.0.entry(text).or_insert(job).clone()
    }
}

/// A run's state as the plane records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Asked for ("run now") and not yet picked up by an agent.
    Requested,
    /// Fired, waiting (overlap policy, catch-up rate limit).
    Queued,
    Started,
    Succeeded,
    Failed,
    Killed,
    /// Not run, by policy (catch-up, overlap); the message says which.
    Skipped,
    /// Taken, then given back unstarted: the holder's lease lapsed before the run could
    /// start. Not final: the partition's holder fires the record again.
    Returned,
}

impl RunState {
    pub const ALL: [RunState; 8] = [
        Self::Requested,
        Self::Queued,
        Self::Started,
        Self::Succeeded,
        Self::Failed,
        Self::Killed,
        Self::Skipped,
        Self::Returned,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Queued => "queued",
            Self::Started => "started",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Killed => "killed",
            Self::Skipped => "skipped",
            Self::Returned => "returned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// No further state follows.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Killed | Self::Skipped
        )
    }

    /// The fire record has been taken care of (started, queued or skipped): the plane's
    /// acknowledged fire time may move past it.
    pub fn takes_the_record(self) -> bool {
        !matches!(self, Self::Requested | Self::Returned)
    }

    /// The agent is done with the run: it is final, or was given back.
    pub fn leaves_the_agent(self) -> bool {
        self.is_final() || self == Self::Returned
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one attempt of one task went (with the task's definition, whose callbacks name it).
pub use crate::workflow::AttemptOutcome;

/// A run changed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEvent {
    /// For a scheduled run, its fire record's id; for "run now", the id the plane assigned.
    pub run_id: String,
    /// The schedule and fire time of a scheduled run (the plane re-derives the id from them).
    #[serde(default)]
    pub schedule: Option<ScheduleId>,
    #[serde(default)]
    pub fire_ms: Option<i64>,
    pub tenant: String,
    pub workflow: String,
    pub workflow_version: u64,
    pub environment: String,
    pub state: RunState,
    pub at_ms: i64,
    #[serde(default)]
    pub message: String,
}

/// A task attempt started or ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptEvent {
    pub run_id: String,
    pub task: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub outcome: AttemptOutcome,
    pub at_ms: i64,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub message: String,
    /// Something the run should know but that did not stop it, such as a stale resource used
    /// because S3 was unreachable. Set on `started`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub warning: String,
}

/// A piece of a task attempt's output (stdout and stderr interleaved as they came).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub run_id: String,
    pub task: String,
    pub attempt: u32,
    /// Byte offset of `data` in the attempt's log: a re-sent chunk lands on the same place.
    pub offset: u64,
    pub data: String,
}

/// What an agent reports, with the lease it acted under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "v")]
pub enum Report {
    #[serde(rename = "1")]
    V1 {
        /// The cluster whose partition the run belongs to (the agent's own or one it backs up).
        cluster: String,
        /// The partition and epoch the agent held when it fired; none for "run now".
        #[serde(default)]
        partition: Option<u32>,
        #[serde(default)]
        epoch: u64,
        item: ReportItem,
    },
}

impl Report {
    /// What is reported.
    pub fn item(&self) -> &ReportItem {
        match self {
            Self::V1 { item, .. } => item,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportItem {
    Run(RunEvent),
    Attempt(AttemptEvent),
    Log(LogChunk),
}

impl ReportItem {
    /// The idempotency key: the same happening always gets the same key.
    pub fn key(&self) -> String {
        match self {
            Self::Run(e) => format!("{}/{}", e.run_id, e.state),
            Self::Attempt(a) => format!(
                "{}/{}/{}/{}",
                a.run_id,
                a.task,
                a.attempt,
                a.outcome.as_str()
            ),
            Self::Log(l) => format!("{}/{}/{}/log/{}", l.run_id, l.task, l.attempt, l.offset),
        }
    }

    pub fn run_id(&self) -> &str {
        match self {
            Self::Run(e) => &e.run_id,
            Self::Attempt(a) => &a.run_id,
            Self::Log(l) => &l.run_id,
        }
    }
}

/// The partition a schedule belongs to: FNV-1a of its id, modulo the cluster's partitions.
/// Stable across versions and platforms, since the plane's replicas must all agree.
pub fn partition_of(schedule: &ScheduleId, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in schedule.as_str().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_versioned_json_with_stable_keys() {
        let report = Report::V1 {
            cluster: "nj".into(),
            partition: Some(3),
            epoch: 2,
            item: ReportItem::Log(LogChunk {
                run_id: "ads.etl@20260101T000000Z".into(),
                task: "load".into(),
                attempt: 1,
                offset: 4096,
                data: "done\n".into(),
            }),
        };
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.starts_with(r#"{"v":"1","cluster":"nj""#), "{json}");
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);
        let Report::V1 { item, .. } = report;
        assert_eq!(item.key(), "ads.etl@20260101T000000Z/load/1/log/4096");
    }

    #[test]
    fn os_names_are_portable_names_or_numeric_ids() {
        for ok in [
            "ads",
            "_svc",
            "etl-runner_2",
            "a",
            "1001",
            "0",
            &"a".repeat(32),
        ] {
            assert_eq!(os_name_problem(ok), None, "{ok}");
        }
        for (bad, problem) in [
            ("", "must not be empty"),
            (
                "Ads",
                "must start with a lower-case letter or `_` (or be a numeric id)",
            ),
            (
                "-x",
                "must start with a lower-case letter or `_` (or be a numeric id)",
            ),
            (
                "9lives",
                "must start with a lower-case letter or `_` (or be a numeric id)",
            ),
            (
                "ads.etl",
                "may only contain lower-case letters, digits, `_` and `-`",
            ),
            (
                "ads user",
                "may only contain lower-case letters, digits, `_` and `-`",
            ),
            (
                "root:x",
                "may only contain lower-case letters, digits, `_` and `-`",
            ),
            (&"a".repeat(33), "must be at most 32 characters"),
            // (uid_t)-1 means "no change" to setuid(2).
            ("4294967295", "is not a valid numeric id"),
            ("99999999999", "is not a valid numeric id"),
        ] {
            assert_eq!(os_name_problem(bad), Some(problem), "{bad:?}");
        }
        let user = |user: &str, group: Option<&str>| OsUser {
            user: user.into(),
            group: group.map(Into::into),
        };
        assert_eq!(user("ads", Some("etl")).problem(), None);
        assert_eq!(
            user("Ads", None).problem().map(|(field, _)| field),
            Some("user")
        );
        assert_eq!(
            user("ads", Some("a b")).problem().map(|(field, _)| field),
            Some("group")
        );
    }

    #[test]
    fn a_job_written_before_run_as_reads_as_mapping_nothing() {
        let old = r#"{"tenant":"ads","workflow":"etl","workflow_version":1,
            "definition":{"tasks":[]},"environment":"prod"}"#;
        let job: Job = serde_json::from_str(old).unwrap();
        assert_eq!((job.os_user, job.allow_agent_user), (None, false));
        let err = serde_json::from_str::<OsUser>(r#"{"user":"ads","gruop":"etl"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `gruop`"), "{err}");
    }

    #[test]
    fn partitions_are_stable_and_in_range() {
        let id = ScheduleId::new("ads.nightly").unwrap();
        assert_eq!(partition_of(&id, 16), partition_of(&id, 16));
        assert!(partition_of(&id, 16) < 16);
        assert_eq!(partition_of(&id, 1), 0);
        // Pinned: replicas of different versions must agree on where a schedule lives.
        assert_eq!(partition_of(&id, 1024), 882);
    }
}
