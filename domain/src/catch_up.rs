//! What to do with fire records that fell due while nothing could run them (an agent or the
//! plane was down, a data center was cut off past its lease).
//!
//! Deciding is pure: [`CatchUpPolicy::decide`] takes the missed records and the current time
//! and says which to run and which to record as skipped. Running them, in order and
//! rate-limited so recovery does not start a storm, is the agent's job.

use crate::fire_record::FireRecord;
pub use crate::schedule::CatchUpPolicy;
use chrono::{DateTime, TimeDelta, Utc};

/// The outcome of [`CatchUpPolicy::decide`]: every due record is in exactly one list, each
/// list in fire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatchUpPlan {
    pub run: Vec<FireRecord>,
    pub skip: Vec<FireRecord>,
}

impl CatchUpPolicy {
    /// The earliest fire time this policy could still run at `now`: callers need not look up
    /// missed records older than this. `None` means "any age" (policy `latest`).
    pub fn horizon(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match *self {
            Self::None => Some(now),
            Self::Latest => None,
            Self::All { window_seconds, .. } => Some(now - window(window_seconds)),
        }
    }

    /// Decides which of the `due` records (fire time at or before `now`) to run. Records whose
    /// fire time is after `now` are not due and are left out of both lists.
    pub fn decide(&self, due: &[FireRecord], now: DateTime<Utc>) -> CatchUpPlan {
        let mut due: Vec<FireRecord> = due.iter().filter(|r| r.fire_at <= now).cloned().collect();
        due.sort_by(|a, b| a.fire_at.cmp(&b.fire_at).then_with(|| a.id.cmp(&b.id)));
        due.dedup_by(|a, b| a.id == b.id);
        let keep_from = match *self {
            Self::None => due.len(),
            Self::Latest => due.len().saturating_sub(1),
            Self::All {
                window_seconds,
                max,
            } => {
                let oldest = now - window(window_seconds);
                let in_window = due
                    .iter()
                    .position(|r| r.fire_at >= oldest)
                    .unwrap_or(due.len());
                in_window.max(due.len().saturating_sub(max as usize))
            }
        };
        let run = due.split_off(keep_from);
        CatchUpPlan { run, skip: due }
    }
}

fn window(seconds: u64) -> TimeDelta {
    // Clamp absurd windows (over ~290 million years) instead of overflowing.
    TimeDelta::try_seconds(seconds.min(i64::MAX as u64 / 1000) as i64).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ScheduleId;
    use chrono::TimeZone;

    fn records(minutes: &[i64]) -> Vec<FireRecord> {
        let id = ScheduleId::new("s").unwrap();
        minutes
            .iter()
            .map(|m| FireRecord::new(id.clone(), base() + TimeDelta::minutes(*m)))
            .collect()
    }

    fn base() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn minutes(plan: &[FireRecord]) -> Vec<i64> {
        plan.iter()
            .map(|r| (r.fire_at - base()).num_minutes())
            .collect()
    }

    #[test]
    fn none_skips_everything() {
        let plan = CatchUpPolicy::None.decide(&records(&[1, 2, 3]), base() + TimeDelta::hours(1));
        assert!(plan.run.is_empty());
        assert_eq!(minutes(&plan.skip), [1, 2, 3]);
    }

    #[test]
    fn latest_runs_only_the_newest_even_if_given_out_of_order() {
        let plan = CatchUpPolicy::Latest.decide(&records(&[3, 1, 2]), base() + TimeDelta::hours(1));
        assert_eq!(minutes(&plan.run), [3]);
        assert_eq!(minutes(&plan.skip), [1, 2]);
    }

    #[test]
    fn all_is_limited_by_window_then_by_max_keeping_the_newest() {
        let now = base() + TimeDelta::minutes(60);
        let policy = CatchUpPolicy::All {
            window_seconds: 30 * 60,
            max: 3,
        };
        // 10, 20 are outside the 30-minute window; of 30..=55 only the newest three run.
        let plan = policy.decide(&records(&[10, 20, 30, 40, 45, 50, 55]), now);
        assert_eq!(minutes(&plan.run), [45, 50, 55]);
        assert_eq!(minutes(&plan.skip), [10, 20, 30, 40]);
    }

    #[test]
    fn a_record_exactly_at_the_window_edge_runs_and_future_records_are_not_due() {
        let now = base() + TimeDelta::minutes(60);
        let policy = CatchUpPolicy::All {
            window_seconds: 30 * 60,
            max: 10,
        };
        let plan = policy.decide(&records(&[29, 30, 60, 61]), now);
        assert_eq!(minutes(&plan.run), [30, 60]);
        assert_eq!(minutes(&plan.skip), [29]);
    }

    #[test]
    fn a_duplicate_record_is_decided_once() {
        let now = base() + TimeDelta::minutes(60);
        let plan = CatchUpPolicy::default().decide(&records(&[5, 5, 6]), now);
        assert_eq!(minutes(&plan.run), [5, 6]);
    }

    #[test]
    fn policies_read_from_json_and_zero_limits_are_refused() {
        let p: CatchUpPolicy =
            serde_json::from_str(r#"{"policy":"all","window_seconds":60,"max":5}"#).unwrap();
        assert_eq!(
            p,
            CatchUpPolicy::All {
                window_seconds: 60,
                max: 5
            }
        );
        let zero = crate::ScheduleSpec {
            catch_up: CatchUpPolicy::All {
                window_seconds: 60,
                max: 0,
            },
            ..crate::ScheduleSpec::cron("0 * * * *")
        };
        let refused = zero.calendar().unwrap_err();
        assert_eq!(refused, crate::CalendarError::ZeroCatchUpMax);
        assert_eq!(refused.field(), "catch_up.max".to_string());
    }
}
