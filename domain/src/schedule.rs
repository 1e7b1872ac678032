//! What a schedule is, as far as both plane and agent must agree: its id and its spec (cron,
//! time zone, start, end, catch-up policy). The spec is stored and replicated, so it is serde
//! with stable field names; the calendar validates it.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A schedule's id. It is part of every fire record id, so it is restricted to characters that
/// are safe in ids, file names and URLs: ASCII letters, digits, `.`, `_` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ScheduleId(String);

/// The longest schedule id accepted.
pub const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleIdError {
    #[error("schedule id: must not be empty")]
    Empty,
    #[error("schedule id `{0}`: longer than {MAX_ID_LEN} characters")]
    TooLong(String),
    #[error(
        "schedule id `{id}`: character `{bad}` is not allowed (use letters, digits, `.`, `_`, `-`)"
    )]
    BadCharacter { id: String, bad: char },
}

impl ScheduleId {
    pub fn new(id: impl Into<String>) -> Result<Self, ScheduleIdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(ScheduleIdError::Empty);
        }
        if id.len() > MAX_ID_LEN {
            return Err(ScheduleIdError::TooLong(id));
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(ScheduleIdError::BadCharacter { id, bad });
        }
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ScheduleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ScheduleId {
    type Error = ScheduleIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<ScheduleId> for String {
    fn from(id: ScheduleId) -> String {
        id.0
    }
}

/// When a schedule fires and what happens to fires missed while nothing could run them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Quartz (6–7 fields, seconds first) or Unix (5 fields) cron expression.
    pub cron: String,
    /// IANA time zone the expression is read in; DST is handled as `calendar::zone` says.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// No fire before this instant (a fire exactly at it counts).
    #[serde(default)]
    pub start: Option<DateTime<Utc>>,
    /// No fire after this instant (a fire exactly at it counts).
    #[serde(default)]
    pub end: Option<DateTime<Utc>>,
    #[serde(default)]
    pub catch_up: CatchUpPolicy,
}

fn utc() -> String {
    "UTC".into()
}

impl ScheduleSpec {
    /// A spec with only an expression: UTC, no start or end, default catch-up.
    pub fn cron(expression: impl Into<String>) -> Self {
        Self {
            cron: expression.into(),
            time_zone: utc(),
            start: None,
            end: None,
            catch_up: CatchUpPolicy::default(),
        }
    }
}

/// How many fire records an agent keeps ahead per schedule, so firing survives a plane outage
/// (and, by default, how many missed records catch-up runs at most).
pub const WINDOW: usize = 50;

/// The catch-up policy of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum CatchUpPolicy {
    /// Run none of the missed fires; they are recorded as skipped.
    None,
    /// Run only the most recent missed fire.
    Latest,
    /// Run the missed fires of the last `window_seconds`, at most `max` of them (the most
    /// recent), oldest first.
    All { window_seconds: u64, max: u32 },
}

/// The default: what was missed in the last hour runs, up to one window's worth of records,
/// so an outage needs no manual backfill and a long one does not start a storm.
impl Default for CatchUpPolicy {
    fn default() -> Self {
        Self::All {
            window_seconds: 3600,
            max: WINDOW as u32,
        }
    }
}

/// What a schedule does when a fire comes while its previous run is still going.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Record the new fire as skipped (the default, as in Temporal).
    #[default]
    Skip,
    /// Keep at most one fire waiting; later ones while it waits are skipped.
    BufferOne,
    /// Queue every fire and run them one after another.
    BufferAll,
    /// Kill the running one and start the new fire.
    CancelOlder,
    /// Start the new fire alongside the running one.
    AllowAll,
}

/// What the agent taking a partition over does with the records its previous holder may have
/// fired: those due before that holder's lease ran out whose report the plane has not had.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TakeoverPolicy {
    /// Exactly once (the default): the records are *in doubt* and nobody runs them until the
    /// previous holder's reports settle each (ran, or never ran and then the new holder runs
    /// it under the catch-up policy), or an operator resolves them ("run" or "mark done").
    #[default]
    Wait,
    /// At least once: the new holder runs them from the last acknowledged fire (a record the
    /// old holder did fire runs twice, counted in `starts`).
    Rerun,
}

impl TakeoverPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wait => "wait",
            Self::Rerun => "rerun",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_characters_that_would_break_record_ids() {
        assert!(ScheduleId::new("nightly-etl_v2.1").is_ok());
        assert_eq!(
            ScheduleId::new("a@b").unwrap_err().to_string(),
            "schedule id `a@b`: character `@` is not allowed (use letters, digits, `.`, `_`, `-`)"
        );
        assert_eq!(ScheduleId::new("").unwrap_err(), ScheduleIdError::Empty);
        assert!(matches!(
            ScheduleId::new("x".repeat(MAX_ID_LEN + 1)),
            Err(ScheduleIdError::TooLong(_))
        ));
    }

    #[test]
    fn a_spec_reads_with_defaults_and_refuses_unknown_fields() {
        let spec: ScheduleSpec = serde_json::from_str(r#"{"cron":"0 0 * * *"}"#).unwrap();
        assert_eq!(spec, ScheduleSpec::cron("0 0 * * *"));
        let err = serde_json::from_str::<ScheduleSpec>(r#"{"cron":"0 0 * * *","tz":"UTC"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `tz`"), "{err}");
        let back: ScheduleSpec =
            serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
    }
}
