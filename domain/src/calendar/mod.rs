//! The fire-time calendar: when a schedule fires.
//!
//! A [`Calendar`] is a validated [`ScheduleSpec`]: a cron expression (`expression`), an IANA
//! time zone with the DST rules (`zone`), and optional start and end. It yields fire times in
//! order, strictly after a given instant, never before the start nor past the end, and turns
//! them into [`FireRecord`]s whose ids every node computes alike. It is pure: no clock, no I/O;
//! callers pass the instant they care about.

pub mod expression;
pub mod zone;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use chrono_tz::Tz;

pub use expression::{CronExpression, Dialect};

use crate::fire_record::FireRecord;
pub use crate::schedule::WINDOW;
use crate::schedule::{CatchUpPolicy, ScheduleId, ScheduleSpec};

/// Why a schedule's calendar is invalid. Each message names the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("cron: the expression is empty")]
    EmptyExpression,
    #[error(
        "cron: `{expression}` has {found} fields; expected 5 (minute hour day-of-month month \
         day-of-week) or 6-7 (second minute hour day-of-month month day-of-week [year])"
    )]
    FieldCount { expression: String, found: usize },
    #[error("cron: {field} field `{value}` is invalid: {reason}")]
    Field {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("cron: `{expression}` is invalid: {reason}")]
    Expression { expression: String, reason: String },
    #[error(
        "time_zone: `{0}` is not an IANA time zone name (for example `Europe/Berlin` or `UTC`)"
    )]
    UnknownZone(String),
    #[error("end: {end} is before start {start}")]
    EndBeforeStart {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    #[error("catch_up.max: must be at least 1 (use policy `none` to run no missed fires)")]
    ZeroCatchUpMax,
    #[error(
        "catch_up.window_seconds: must be at least 1 (use policy `none` to run no missed fires)"
    )]
    ZeroCatchUpWindow,
}

impl CalendarError {
    /// The path of the offending field in a schedule, for APIs that report it separately.
    pub fn field(&self) -> String {
        match self {
            Self::EmptyExpression | Self::FieldCount { .. } | Self::Expression { .. } => {
                "cron".into()
            }
            Self::Field { field, .. } => format!("cron.{field}"),
            Self::UnknownZone(_) => "time_zone".into(),
            Self::EndBeforeStart { .. } => "end".into(),
            Self::ZeroCatchUpMax => "catch_up.max".into(),
            Self::ZeroCatchUpWindow => "catch_up.window_seconds".into(),
        }
    }
}

impl ScheduleSpec {
    /// Validates the spec; the same as building its calendar.
    pub fn calendar(&self) -> Result<Calendar, CalendarError> {
        Calendar::new(self)
    }
}

/// A validated schedule calendar.
#[derive(Debug, Clone)]
pub struct Calendar {
    expression: CronExpression,
    zone: Tz,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
}

impl Calendar {
    /// Validates `spec`. Every field is checked; the first problem found is returned.
    pub fn new(spec: &ScheduleSpec) -> Result<Self, CalendarError> {
        let expression = CronExpression::parse(&spec.cron)?;
        let zone = parse_zone(&spec.time_zone)?;
        if let (Some(start), Some(end)) = (spec.start, spec.end)
            && end < start
        {
            return Err(CalendarError::EndBeforeStart { start, end });
        }
        check_catch_up(&spec.catch_up)?;
        Ok(Self {
            expression,
            zone,
            start: spec.start,
            end: spec.end,
        })
    }

    pub fn expression(&self) -> &CronExpression {
        &self.expression
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first fire time strictly after `after`, at or after the start, at or before the end;
    /// `None` once the schedule has ended or the expression matches no later time.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Fire times are whole seconds, so "strictly after `after`" is "strictly after `after`
        // rounded down", and "at or after `start`" is "strictly after `start` rounded up, minus
        // one second".
        let mut lower = after.trunc_subsecs(0);
        if let Some(start) = self.start {
            let start = ceil_to_second(start) - TimeDelta::seconds(1);
            lower = lower.max(start);
        }
        if self.end.is_some_and(|end| lower >= end) {
            return None;
        }
        let mut cursor = lower.with_timezone(&self.zone).naive_local();
        loop {
            let wall = self.expression.next_wall_after(cursor)?;
            let at = zone::resolve(self.zone, wall);
            // A wall time can resolve to an instant at or before `lower`: the second half of a
            // repeated hour (already fired at its first occurrence), or a gap time that lands
            // on an already-fired gap end. Skipping those is what makes each fire happen once.
            if at > lower {
                return match self.end {
                    Some(end) if at > end => None,
                    _ => Some(at),
                };
            }
            cursor = wall;
        }
    }

    /// Fire times in order, strictly after `after`.
    pub fn fire_times(&self, after: DateTime<Utc>) -> FireTimes<'_> {
        FireTimes {
            calendar: self,
            cursor: Some(after),
        }
    }

    /// The next `n` fire records of `schedule` strictly after `after` (fewer if the schedule
    /// ends first). Agents keep [`WINDOW`] of these per schedule.
    pub fn window(&self, schedule: &ScheduleId, after: DateTime<Utc>, n: usize) -> Vec<FireRecord> {
        self.fire_times(after)
            .take(n)
            .map(|at| FireRecord::new(schedule.clone(), at))
            .collect()
    }

    /// The fire records of `schedule` that fell due in `(after, now]`, oldest first, at most
    /// `limit` of them (the newest `limit`: catch-up never wants older ones than that).
    pub fn due(
        &self,
        schedule: &ScheduleId,
        after: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Vec<FireRecord> {
        let mut due = std::collections::VecDeque::with_capacity(limit.min(WINDOW));
        for at in self.fire_times(after).take_while(|at| *at <= now) {
            if due.len() == limit {
                due.pop_front();
            }
            if limit > 0 {
                due.push_back(FireRecord::new(schedule.clone(), at));
            }
        }
        due.into()
    }
}

/// Iterator over a calendar's fire times; see [`Calendar::fire_times`].
pub struct FireTimes<'a> {
    calendar: &'a Calendar,
    cursor: Option<DateTime<Utc>>,
}

impl Iterator for FireTimes<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<DateTime<Utc>> {
        let next = self.calendar.next_after(self.cursor?);
        self.cursor = next;
        next
    }
}

/// A catch-up policy that could never run a missed record is refused, naming the field.
fn check_catch_up(policy: &CatchUpPolicy) -> Result<(), CalendarError> {
    match *policy {
        CatchUpPolicy::All { max: 0, .. } => Err(CalendarError::ZeroCatchUpMax),
        CatchUpPolicy::All {
            window_seconds: 0, ..
        } => Err(CalendarError::ZeroCatchUpWindow),
        _ => Ok(()),
    }
}

/// Parses an IANA time zone name, exactly as the tz database spells it.
pub fn parse_zone(name: &str) -> Result<Tz, CalendarError> {
    name.trim()
        .parse::<Tz>()
        .map_err(|_| CalendarError::UnknownZone(name.to_owned()))
}

fn ceil_to_second(at: DateTime<Utc>) -> DateTime<Utc> {
    let floor = at.trunc_subsecs(0);
    if floor == at {
        at
    } else {
        floor + TimeDelta::seconds(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catch_up::CatchUpPolicy;
    use chrono::{Offset, TimeZone};
    use proptest::prelude::*;

    const ZONES: [&str; 6] = [
        "UTC",
        "America/New_York",
        "Europe/Berlin",
        "Asia/Shanghai",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
    ];

    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        (631_152_000i64..2_208_988_800).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap())
    }

    /// A spec that parses (random day fields can name no date; those are refused, not tested).
    fn calendar() -> impl Strategy<Value = (ScheduleSpec, Calendar)> {
        (
            super::expression::tests::expression(),
            prop::sample::select(&ZONES[..]),
            prop::option::of(instant()),
            prop::option::of(1i64..400 * 86_400),
        )
            .prop_filter_map("expression matches no date", |(cron, zone, start, span)| {
                let spec = ScheduleSpec {
                    cron,
                    time_zone: zone.into(),
                    start,
                    end: start.zip(span).map(|(s, d)| s + TimeDelta::seconds(d)),
                    catch_up: CatchUpPolicy::default(),
                };
                let calendar = spec.calendar().ok()?;
                Some((spec, calendar))
            })
    }

    /// Whether `at` is the first instant of a new UTC offset, where skipped wall times land.
    fn is_transition(zone: Tz, at: DateTime<Utc>) -> bool {
        let offset = |t: DateTime<Utc>| zone.offset_from_utc_datetime(&t.naive_utc()).fix();
        offset(at) != offset(at - TimeDelta::seconds(1))
    }

    fn id() -> ScheduleId {
        ScheduleId::new("prop").unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn fire_times_increase_match_and_stay_within_start_and_end(
            (spec, cal) in calendar(),
            after in instant(),
        ) {
            let window = cal.window(&id(), after, WINDOW);
            let mut previous = after;
            for record in &window {
                let at = record.fire_at;
                prop_assert!(at > previous, "{} not after {}", at, previous);
                previous = at;
                if let Some(start) = spec.start { prop_assert!(at >= start); }
                if let Some(end) = spec.end { prop_assert!(at <= end); }
                let wall = at.with_timezone(&cal.zone()).naive_local();
                prop_assert!(
                    cal.expression().matches(wall) || is_transition(cal.zone(), at),
                    "`{}` in {} fired at {} (wall {})", spec.cron, spec.time_zone, at, wall
                );
            }
            if window.len() < WINDOW {
                // Fewer than asked means the schedule has nothing more to give.
                prop_assert_eq!(cal.next_after(previous), None);
            }
        }

        #[test]
        fn windows_are_stable_and_resume_exactly((_, cal) in calendar(), after in instant()) {
            let first = cal.window(&id(), after, WINDOW);
            prop_assert_eq!(&first, &cal.window(&id(), after, WINDOW));
            if first.len() > 10 {
                // Refilling from record 10 (as an agent does after consuming ten) continues
                // with the same records and ids.
                let resumed = cal.window(&id(), first[9].fire_at, WINDOW - 10);
                prop_assert_eq!(&first[10..], &resumed[..first.len() - 10]);
            }
        }

        #[test]
        fn in_utc_no_fire_time_is_missed((spec, _) in calendar(), after in instant()) {
            // Without DST, start or end, the fire times are exactly croner's own matches.
            let cal = ScheduleSpec::cron(spec.cron).calendar().unwrap();
            let mut wall = after.naive_utc();
            for at in cal.fire_times(after).take(20) {
                let expected = cal.expression().croner_next_wall_after(wall);
                prop_assert_eq!(Some(at.naive_utc()), expected);
                wall = at.naive_utc();
            }
        }

        #[test]
        fn catch_up_never_runs_outside_the_window_or_over_the_maximum(
            (_, cal) in calendar(),
            after in instant(),
            outage in 1i64..30 * 86_400,
            window_seconds in 1u64..10 * 86_400,
            max in 1u32..100,
        ) {
            let now = after + TimeDelta::seconds(outage);
            let due = cal.due(&id(), after, now, 10_000);
            let policy = CatchUpPolicy::All { window_seconds, max };
            let plan = policy.decide(&due, now);
            prop_assert!(plan.run.len() <= max as usize);
            for r in &plan.run {
                prop_assert!(r.fire_at <= now);
                prop_assert!(r.fire_at >= now - TimeDelta::seconds(window_seconds as i64));
            }
            prop_assert!(plan.run.windows(2).all(|w| w[0].fire_at < w[1].fire_at));
            let mut all: Vec<_> = plan.skip.iter().chain(&plan.run).cloned().collect();
            all.sort_by_key(|r| r.fire_at);
            prop_assert_eq!(all, due.clone());
            let latest = CatchUpPolicy::Latest.decide(&due, now);
            prop_assert_eq!(latest.run.last(), due.last());
            prop_assert!(latest.run.len() <= 1);
            prop_assert!(CatchUpPolicy::None.decide(&due, now).run.is_empty());
        }
    }

    #[test]
    fn zones_used_by_the_properties_exist() {
        for zone in ZONES {
            assert!(parse_zone(zone).is_ok(), "{zone}");
        }
        let _ = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0);
    }
}
