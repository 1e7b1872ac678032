//! Conversions between generated `pb` messages and domain types. Wire times are i64 epoch
//! milliseconds; a message that cannot become a valid domain value is refused with the field.

use chrono::{DateTime, Utc};

use crate::pb;
use meridian_domain::CatchUpPolicy;
use meridian_domain::FireRecord;
use meridian_domain::{ScheduleId, ScheduleSpec};

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
