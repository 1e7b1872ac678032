//! Every conversion between a generated `pb` message and a domain type, in one place. Wire
//! times are i64 epoch milliseconds; a message that cannot become a valid domain value is
//! refused with the field.
//!
//! A job and a run report travel as their domain type's serde JSON in a string field
//! (`job_json`, `report_json`): one shape, the one the agent's store and the plane's log
//! already hold, read and written only here. Their rule for a change of shape is the stored
//! documents' (README, "Upgrades and shapes"): a new field is optional, anything else is a new
//! message.

use chrono::{DateTime, Utc};

use crate::pb;
use meridian_domain::run::{Assignment, Job, Jobs, Report};
use meridian_domain::{CatchUpPolicy, FireRecord, OverlapPolicy, ScheduleId, ScheduleSpec};

/// A `pb` message that does not make a valid domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConvertError {
    pub field: &'static str,
    pub problem: String,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> ConvertError {
    ConvertError {
        field,
        problem: problem.into(),
    }
}

pub fn to_millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub fn from_millis(field: &'static str, ms: i64) -> Result<DateTime<Utc>, ConvertError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| invalid(field, format!("{ms} ms is out of range")))
}

impl From<&FireRecord> for pb::FireRecord {
    fn from(r: &FireRecord) -> Self {
        Self {
            id: r.id.to_string(),
            schedule_id: r.schedule.to_string(),
            fire_at_ms: to_millis(r.fire_at),
        }
    }
}

impl TryFrom<&pb::FireRecord> for FireRecord {
    type Error = ConvertError;
    fn try_from(r: &pb::FireRecord) -> Result<Self, ConvertError> {
        let schedule = ScheduleId::new(r.schedule_id.clone())
            .map_err(|e| invalid("schedule_id", e.to_string()))?;
        let record = FireRecord::new(schedule, from_millis("fire_at_ms", r.fire_at_ms)?);
        // The id is derived, never trusted: a mismatch means the sender computed it differently.
        if record.id.as_str() != r.id {
            return Err(invalid(
                "id",
                format!(
                    "`{}` is not the id of this schedule and fire time (`{}`)",
                    r.id, record.id
                ),
            ));
        }
        Ok(record)
    }
}

impl From<&CatchUpPolicy> for pb::CatchUpPolicy {
    fn from(p: &CatchUpPolicy) -> Self {
        use pb::catch_up_policy::{All, Latest, Policy, Skip};
        let policy = match *p {
            CatchUpPolicy::None => Policy::None(Skip {}),
            CatchUpPolicy::Latest => Policy::Latest(Latest {}),
            CatchUpPolicy::All {
                window_seconds,
                max,
            } => Policy::All(All {
                window_seconds,
                max,
            }),
        };
        Self {
            policy: Some(policy),
        }
    }
}

impl TryFrom<&pb::CatchUpPolicy> for CatchUpPolicy {
    type Error = ConvertError;
    fn try_from(p: &pb::CatchUpPolicy) -> Result<Self, ConvertError> {
        use pb::catch_up_policy::Policy;
        match &p.policy {
            Some(Policy::None(_)) => Ok(Self::None),
            Some(Policy::Latest(_)) => Ok(Self::Latest),
            Some(Policy::All(a)) => Ok(Self::All {
                window_seconds: a.window_seconds,
                max: a.max,
            }),
            None => Err(invalid(
                "catch_up.policy",
                "missing; expected none, latest or all",
            )),
        }
    }
}

impl From<&ScheduleSpec> for pb::ScheduleSpec {
    fn from(s: &ScheduleSpec) -> Self {
        Self {
            cron: s.cron.clone(),
            time_zone: s.time_zone.clone(),
            start_ms: s.start.map(to_millis),
            end_ms: s.end.map(to_millis),
            catch_up: Some((&s.catch_up).into()),
        }
    }
}

impl TryFrom<&pb::ScheduleSpec> for ScheduleSpec {
    type Error = ConvertError;
    fn try_from(s: &pb::ScheduleSpec) -> Result<Self, ConvertError> {
        Ok(Self {
            cron: s.cron.clone(),
            time_zone: s.time_zone.clone(),
            start: s
                .start_ms
                .map(|ms| from_millis("start_ms", ms))
                .transpose()?,
            end: s.end_ms.map(|ms| from_millis("end_ms", ms)).transpose()?,
            catch_up: s
                .catch_up
                .as_ref()
                .map(CatchUpPolicy::try_from)
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

/// An overlap policy's wire name (`skip`, `buffer_one`, …): its serde name.
pub fn overlap_name(policy: OverlapPolicy) -> String {
    match serde_json::to_value(policy) {
        Ok(serde_json::Value::String(name)) => name,
        other => unreachable!("an overlap policy serialises as its name, not {other:?}"),
    }
}

fn overlap(field: &'static str, name: &str) -> Result<OverlapPolicy, ConvertError> {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .map_err(|e| invalid(field, e.to_string()))
}

fn job_json(job: &Job) -> String {
    serde_json::to_string(job).expect("jobs serialise")
}

/// A job as it travels: read bare (what this version's plane sends) or in the versioned
/// envelope of `meridian_domain::stored` (what the next one will, once every agent reads it).
fn job(field: &'static str, json: &str) -> Result<Job, ConvertError> {
    meridian_domain::stored::read(json).map_err(|e| invalid(field, e.to_string()))
}

impl From<&Assignment> for pb::ScheduleAssignment {
    fn from(a: &Assignment) -> Self {
        Self {
            schedule_id: a.schedule.to_string(),
            cluster: a.cluster.clone(),
            partition: a.partition,
            epoch: a.epoch,
            version: a.version,
            spec: Some((&a.spec).into()),
            overlap: overlap_name(a.overlap),
            after_ms: a.after_ms,
            job_json: job_json(&a.job),
            returned_ms: a.returned.clone(),
            paused: a.paused,
            backfill_ms: a.backfill.clone(),
        }
    }
}

impl TryFrom<&pb::ScheduleAssignment> for Assignment {
    type Error = ConvertError;
    fn try_from(s: &pb::ScheduleAssignment) -> Result<Self, ConvertError> {
        assignment(s, &mut Jobs::default())
    }
}

/// An assignment off the wire, its job shared with the others of `jobs` that carry the same.
pub fn assignment(s: &pb::ScheduleAssignment, jobs: &mut Jobs) -> Result<Assignment, ConvertError> {
    Ok(Assignment {
        schedule: ScheduleId::new(s.schedule_id.clone())
            .map_err(|e| invalid("schedule_id", e.to_string()))?,
        cluster: s.cluster.clone(),
        partition: s.partition,
        epoch: s.epoch,
        version: s.version,
        spec: s
            .spec
            .as_ref()
            .ok_or_else(|| invalid("spec", "missing"))?
            .try_into()?,
        overlap: overlap("overlap", &s.overlap)?,
        after_ms: s.after_ms,
        job: jobs
            .read(&s.job_json)
            .map_err(|e| invalid("job_json", e.to_string()))?,
        returned: s.returned_ms.clone(),
        paused: s.paused,
        backfill: s.backfill_ms.clone(),
    })
}

impl pb::RunNow {
    pub fn new(run_id: impl Into<String>, job: &Job) -> Self {
        Self {
            run_id: run_id.into(),
            job_json: job_json(job),
        }
    }

    /// The job to run now.
    pub fn job(&self) -> Result<Job, ConvertError> {
        job("job_json", &self.job_json)
    }
}

impl pb::OutboxEntry {
    /// An outbox entry whose report the agent's outbox already holds as the report's serde
    /// JSON, the shape it travels in.
    pub fn new(seq: u64, key: impl Into<String>, report_json: impl Into<String>) -> Self {
        Self {
            seq,
            key: key.into(),
            report_json: report_json.into(),
        }
    }

    /// The report, if this build can read its shape. A report carries its version among its
    /// own fields (`"v"`, [`Report`]'s tag), so it is read as it is.
    pub fn report(&self) -> Result<Report, ConvertError> {
        serde_json::from_str(&self.report_json).map_err(|e| invalid("report_json", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn specs_and_records_survive_the_wire() {
        let spec = ScheduleSpec {
            cron: "0 0/5 * * * ? *".into(),
            time_zone: "Asia/Shanghai".into(),
            start: Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()),
            end: None,
            catch_up: CatchUpPolicy::All {
                window_seconds: 600,
                max: 3,
            },
        };
        assert_eq!(
            ScheduleSpec::try_from(&pb::ScheduleSpec::from(&spec)).unwrap(),
            spec
        );
        let record = FireRecord::new(ScheduleId::new("s").unwrap(), spec.start.unwrap());
        assert_eq!(
            FireRecord::try_from(&pb::FireRecord::from(&record)).unwrap(),
            record
        );
    }

    #[test]
    fn an_assignment_and_a_run_now_survive_the_wire_and_bad_fields_are_named() {
        let assignment = Assignment {
            schedule: ScheduleId::new("nightly").unwrap(),
            cluster: "bj-1".into(),
            partition: 3,
            epoch: 7,
            version: 2,
            spec: ScheduleSpec::cron("0 2 * * *"),
            overlap: OverlapPolicy::BufferOne,
            after_ms: 1_767_225_600_000,
            returned: vec![1_767_139_200_000],
            paused: true,
            backfill: vec![1_767_052_800_000],
            job: std::sync::Arc::new(Job {
                tenant: "ads".into(),
                workflow: "etl".into(),
                workflow_version: 4,
                definition: meridian_domain::workflow::WorkflowDefinition::shell("a", "true"),
                environment: "prod".into(),
                vars: [("K".to_owned(), "v".to_owned())].into(),
                work_dir: None,
                os_user: None,
                allow_agent_user: false,
                rerun: None,
                backfill: false,
            }),
        };
        let wire = pb::ScheduleAssignment::from(&assignment);
        assert_eq!(wire.overlap, "buffer_one");
        assert_eq!(Assignment::try_from(&wire).unwrap(), assignment);
        let run_now = pb::RunNow::new("r-1", &assignment.job);
        assert_eq!(run_now.job().unwrap(), *assignment.job);
        // The versioned envelope reads too (the plane's next release sends it), and a newer
        // shape is refused by name.
        let enveloped = pb::RunNow {
            job_json: meridian_domain::stored::write(&assignment.job),
            ..run_now.clone()
        };
        assert_eq!(enveloped.job().unwrap(), *assignment.job);
        let newer = pb::RunNow {
            job_json: r#"{"v":"9","doc":{}}"#.into(),
            ..run_now
        };
        assert!(
            newer
                .job()
                .unwrap_err()
                .problem
                .contains("newer version (shape v9)")
        );

        let field = |w: pb::ScheduleAssignment| Assignment::try_from(&w).unwrap_err().field;
        assert_eq!(
            field(pb::ScheduleAssignment {
                overlap: "sometimes".into(),
                ..wire.clone()
            }),
            "overlap"
        );
        assert_eq!(
            field(pb::ScheduleAssignment {
                job_json: "{}".into(),
                ..wire.clone()
            }),
            "job_json"
        );
        assert_eq!(
            field(pb::ScheduleAssignment {
                spec: None,
                ..wire.clone()
            }),
            "spec"
        );
        let entry = pb::OutboxEntry::new(1, "k", "{\"shape\":\"from the future\"}");
        assert_eq!(entry.report().unwrap_err().field, "report_json");
        // A report as an agent's outbox holds it (its own `v` tag first) reads.
        let report = Report::V1 {
            cluster: "bj-1".into(),
            partition: Some(3),
            epoch: 7,
            item: meridian_domain::run::ReportItem::Log(meridian_domain::run::LogChunk {
                run_id: "r-1".into(),
                task: "a".into(),
                attempt: 1,
                offset: 0,
                data: "hello\n".into(),
            }),
        };
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.starts_with(r#"{"v":"1","#), "{json}");
        assert_eq!(pb::OutboxEntry::new(1, "k", json).report().unwrap(), report);
    }

    #[test]
    fn a_record_with_a_forged_id_is_refused_naming_the_field() {
        let record = FireRecord::new(
            ScheduleId::new("s").unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        );
        let mut wire = pb::FireRecord::from(&record);
        wire.id = "s@20260101T000001Z".into();
        let err = FireRecord::try_from(&wire).unwrap_err();
        assert_eq!(err.field, "id");
    }
}
