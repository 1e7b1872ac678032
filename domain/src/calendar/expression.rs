//! Cron expressions in the two formats users bring: Quartz (what DolphinScheduler users have:
//! 6 or 7 fields, seconds first, `?`, `L`, `W`, `#`, optional year, weekdays 1–7 = SUN–SAT) and
//! Unix (5 fields, minute first, weekdays 0–7 with 0 and 7 = SUN).
//!
//! Parsing and matching are croner's; this module picks the dialect from the field count,
//! configures croner for it, and turns its errors into ones that name the offending field.
//! Matching is done on wall-clock time (`NaiveDateTime`); mapping wall-clock time to instants,
//! with the DST rules, is `zone`'s job.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use croner::Cron;
use croner::Weekday;
use croner::parser::{CronParser, Seconds, Year};

use super::CalendarError;

/// The format an expression was written in, decided by its number of fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `minute hour day-of-month month day-of-week`, or an `@daily`-style nickname.
    Unix,
    /// `second minute hour day-of-month month day-of-week [year]`.
    Quartz,
}

const UNIX_FIELDS: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
const QUARTZ_FIELDS: [&str; 7] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
    "year",
];
const DOM: usize = 3;
const DOW: usize = 5;

/// A parsed, validated cron expression.
#[derive(Clone)]
pub struct CronExpression {
    source: String,
    dialect: Dialect,
    cron: Cron,
    times: TimesOfDay,
    days: Arc<DayMasks>,
}

impl fmt::Debug for CronExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronExpression")
            .field("source", &self.source)
            .field("dialect", &self.dialect)
            .finish()
    }
}

impl CronExpression {
    /// Parses `source`, choosing the dialect by field count: 5 fields (or an `@nickname`) is
    /// Unix, 6 or 7 is Quartz.
    pub fn parse(source: &str) -> Result<Self, CalendarError> {
        let trimmed = source.trim();
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        if fields.is_empty() {
            return Err(CalendarError::EmptyExpression);
        }
        let dialect = match fields.len() {
            1 if trimmed.starts_with('@') => Dialect::Unix,
            5 => Dialect::Unix,
            6 | 7 => Dialect::Quartz,
            found => {
                return Err(CalendarError::FieldCount {
                    expression: trimmed.to_owned(),
                    found,
                });
            }
        };
        if dialect == Dialect::Quartz {
            check_quartz_day_fields(&fields)?;
        }
        let normalised = normalise(dialect, &fields)?;
        let cron = parser(dialect)
            .parse(&normalised.join(" "))
            .map_err(|err| diagnose(dialect, &normalised, &err))?;
        let times = TimesOfDay::of(&cron);
        let expression = Self {
            source: trimmed.to_owned(),
            dialect,
            cron,
            times,
            days: Arc::default(),
        };
        // An expression that names no real date (`0 0 0 30 2 ?`) would otherwise be accepted
        // and never fire; say so now rather than leave a schedule silently idle.
        let epoch = chrono::DateTime::UNIX_EPOCH.naive_utc();
        if expression.next_wall_after(epoch).is_none() {
            return Err(CalendarError::Expression {
                expression: expression.source,
                reason: "it matches no date between 1970 and 5000".into(),
            });
        }
        Ok(expression)
    }

    /// The expression as the user wrote it (trimmed).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The first wall-clock time strictly after `wall` (to the second) that the expression
    /// matches, or `None` if there is none before the year 5000.
    ///
    /// This walks months, finds the matching days of each with croner's own day predicate
    /// (which carries `L`, `W`, `#` and the day-of-month/day-of-week rules; see [`DayMasks`]),
    /// and picks the time of day from the precomputed sets of matching hours, minutes and
    /// seconds. It gives the same answers as croner's
    /// `find_next_occurrence` (a property test holds it to that) at a fraction of the cost,
    /// which the 50-record window for 100,000 schedules needs.
    pub fn next_wall_after(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        let pattern = &self.cron.pattern;
        let midnight = Some((0, 0, 0));
        let mut date = wall.date();
        let mut from = next_second(wall.hour(), wall.minute(), wall.second());
        while date.year() <= LAST_YEAR {
            if !pattern.year_match(date.year()).unwrap_or(false) {
                date = NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)?;
                from = midnight;
                continue;
            }
            if !pattern.month_match(date.month()).unwrap_or(false) {
                date = first_of_next_month(date)?;
                from = midnight;
                continue;
            }
            // Matching days from today to the end of the month, today in bit 0.
            let days = self.days.of_month(pattern, date) >> (date.day() - 1);
            if days == 0 {
                date = first_of_next_month(date)?;
                from = midnight;
                continue;
            }
            let skip = days.trailing_zeros();
            if skip > 0 {
                date = date + chrono::Days::new(skip.into());
                from = midnight;
            }
            if let Some((h, m, s)) = from.and_then(|(h, m, s)| self.times.first_from(h, m, s)) {
                return date.and_hms_opt(h, m, s);
            }
            date = date.succ_opt()?;
            from = midnight;
        }
        None
    }

    /// croner's own search, kept as the reference the fast path is tested against.
    #[cfg(test)]
    pub(crate) fn croner_next_wall_after(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        self.cron.find_next_occurrence(&wall, false).ok()
    }

    /// Whether the expression matches this wall-clock time (to the second).
    pub fn matches(&self, wall: NaiveDateTime) -> bool {
        self.cron.is_time_matching(&wall).unwrap_or(false)
    }
}

/// The last year searched; croner's own horizon.
const LAST_YEAR: i32 = 5000;

/// The hours, minutes and seconds an expression matches, sorted. They do not depend on the
/// date, so they are computed once per expression.
#[derive(Debug, Clone)]
struct TimesOfDay {
    hours: Vec<u32>,
    minutes: Vec<u32>,
    seconds: Vec<u32>,
}

impl TimesOfDay {
    fn of(cron: &Cron) -> Self {
        let values = |c: &croner::CronComponent| c.values().into_iter().map(u32::from).collect();
        let p = &cron.pattern;
        Self {
            hours: values(&p.hours),
            minutes: values(&p.minutes),
            seconds: values(&p.seconds),
        }
    }

    /// The first matching time of day at or after `h:m:s`, if any is left in the day.
    fn first_from(&self, h: u32, m: u32, s: u32) -> Option<(u32, u32, u32)> {
        let start = |set: &[u32], v: u32| set.partition_point(|&x| x < v);
        for &hour in &self.hours[start(&self.hours, h)..] {
            let min_from = if hour == h { m } else { 0 };
            for &minute in &self.minutes[start(&self.minutes, min_from)..] {
                let sec_from = if hour == h && minute == m { s } else { 0 };
                if let Some(&second) = self.seconds.get(start(&self.seconds, sec_from)) {
                    return Some((hour, minute, second));
                }
            }
        }
        None
    }
}

/// Which days of a month an expression matches, cached by the only things croner's day
/// predicate depends on: the month's length and the weekday of its 1st. That makes 28 kinds of
/// month; each is worked out (31 predicate calls) the first time it is met, after which finding
/// the next matching day is a bit scan. A monthly schedule (`6L`) went from ~1.4 µs to well
/// under one per fire time with this.
#[derive(Debug, Default)]
struct DayMasks {
    /// Bit 32 marks a computed entry; bits 0–30 are days 1–31.
    kinds: [AtomicU64; 28],
}

const COMPUTED: u64 = 1 << 32;

impl DayMasks {
    fn of_month(&self, pattern: &croner::CronPattern, date: NaiveDate) -> u32 {
        // Cheap on purpose: this runs once per fire time.
        let length = month_length(date.year(), date.month());
        let first_weekday = (date.weekday().num_days_from_sunday() + 35 - (date.day() - 1)) % 7;
        let slot = &self.kinds[(length as usize - 28) * 7 + first_weekday as usize];
        let cached = slot.load(Ordering::Relaxed);
        if cached & COMPUTED != 0 {
            return cached as u32;
        }
        let mut mask = 0u32;
        for day in 1..=length {
            let weekday = Weekday::from_days_from_sunday(first_weekday + day - 1);
            if pattern
                .day_match(date.year(), date.month(), day, weekday)
                .unwrap_or(false)
            {
                mask |= 1 << (day - 1);
            }
        }
        // Racing threads compute the same value; either store wins.
        slot.store(u64::from(mask) | COMPUTED, Ordering::Relaxed);
        mask
    }
}

/// The time of day one second after `h:m:s`, or `None` at the end of the day.
fn next_second(h: u32, m: u32, s: u32) -> Option<(u32, u32, u32)> {
    let total = h * 3600 + m * 60 + s + 1;
    (total < 86_400).then_some((total / 3600, total / 60 % 60, total % 60))
}

fn month_length(year: i32, month: u32) -> u32 {
    const LENGTHS: [u32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    LENGTHS[month as usize - 1] + u32::from(month == 2 && leap)
}

fn first_of_next_month(date: NaiveDate) -> Option<NaiveDate> {
    if date.month() == 12 {
        NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)
    }
}

/// Rewrites the few Quartz spellings croner reads differently, so they keep Quartz's meaning.
fn normalise<'a>(dialect: Dialect, fields: &[&'a str]) -> Result<Vec<&'a str>, CalendarError> {
    let mut fields = fields.to_vec();
    if dialect == Dialect::Quartz {
        // Quartz: a lone `L` in day-of-week is the last day of the week, Saturday (7).
        if fields[DOW].eq_ignore_ascii_case("L") {
            fields[DOW] = "7";
        }
        // Quartz's `L-n` (n days before the last day) has no croner equivalent; refuse it
        // plainly instead of croner's "invalid start of range".
        if fields[DOM].to_ascii_uppercase().starts_with("L-") {
            return Err(CalendarError::Field {
                field: QUARTZ_FIELDS[DOM],
                value: fields[DOM].to_owned(),
                reason: "offsets from the last day (`L-n`) are not supported; use `L` or a \
                         day number"
                    .into(),
            });
        }
    }
    Ok(fields)
}

fn parser(dialect: Dialect) -> CronParser {
    match dialect {
        Dialect::Unix => CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build(),
        Dialect::Quartz => CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Optional)
            // Quartz numbers weekdays 1–7 from Sunday and allows `start/step` (`0/5`).
            .alternative_weekdays(true)
            .sloppy_ranges(true)
            .build(),
    }
}

/// Quartz refuses an expression that restricts both day fields, because "the 15th and a
/// Monday" is ambiguous between AND and OR; Unix cron ORs them. Following Quartz keeps the
/// meaning a DolphinScheduler user expects instead of silently picking one.
fn check_quartz_day_fields(fields: &[&str]) -> Result<(), CalendarError> {
    let unrestricted = |f: &str| f == "*" || f == "?";
    if !unrestricted(fields[DOM]) && !unrestricted(fields[DOW]) {
        return Err(CalendarError::Field {
            field: QUARTZ_FIELDS[DOW],
            value: fields[DOW].to_owned(),
            reason: format!(
                "day-of-month is also set (`{}`); in the 6/7-field Quartz format one of the two \
                 must be `?`",
                fields[DOM]
            ),
        });
    }
    Ok(())
}

/// Finds which field croner objected to by parsing each field alone, with every other field
/// set to a neutral value, so the error can name the field. Falls back to croner's message for
/// the whole expression when no single field is at fault.
fn diagnose(dialect: Dialect, fields: &[&str], whole: &croner::errors::CronError) -> CalendarError {
    let (names, neutral): (&[&str], Vec<&str>) = match dialect {
        Dialect::Unix => (&UNIX_FIELDS, vec!["0", "0", "*", "*", "*"]),
        Dialect::Quartz => (&QUARTZ_FIELDS, vec!["0", "0", "0", "*", "*", "?", "*"]),
    };
    if fields.len() == names.len() || (dialect == Dialect::Quartz && fields.len() == 6) {
        let parser = parser(dialect);
        for (i, value) in fields.iter().enumerate() {
            let mut probe: Vec<&str> = neutral[..fields.len()].to_vec();
            probe[i] = value;
            if dialect == Dialect::Quartz && i == DOW {
                probe[DOM] = "?";
            }
            if let Err(err) = parser.parse(&probe.join(" ")) {
                return CalendarError::Field {
                    field: names[i],
                    value: (*value).to_owned(),
                    reason: reason(&err),
                };
            }
        }
    }
    CalendarError::Expression {
        expression: fields.join(" "),
        reason: reason(whole),
    }
}

fn reason(err: &croner::errors::CronError) -> String {
    use croner::errors::CronError as E;
    match err {
        E::InvalidPattern(m) | E::IllegalCharacters(m) | E::ComponentError(m) => m.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Random Quartz or Unix expressions over every field kind and special character.
    pub(crate) fn expression() -> impl Strategy<Value = String> {
        prop_oneof![quartz(), unix()]
    }

    fn field(max: u32, min: u32) -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_string()),
            (min..=max).prop_map(|v| v.to_string()),
            (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            (1..=max.max(2) / 2).prop_map(|s| format!("*/{s}")),
            (min..=max, min..=max).prop_map(|(a, b)| format!("{a},{b}")),
        ]
    }

    fn day_of_month() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => field(31, 1),
            1 => Just("L".to_string()),
            1 => (1u32..=28).prop_map(|d| format!("{d}W")),
            1 => Just("LW".to_string()),
        ]
    }

    fn quartz() -> impl Strategy<Value = String> {
        let dow = prop_oneof![
            3 => field(7, 1),
            1 => (1u32..=7, 1u32..=5).prop_map(|(d, n)| format!("{d}#{n}")),
            1 => (1u32..=7).prop_map(|d| format!("{d}L")),
        ];
        (
            field(59, 0),
            field(59, 0),
            field(23, 0),
            any::<bool>(),
            day_of_month(),
            field(12, 1),
            dow,
        )
            .prop_map(|(s, m, h, by_dom, dom, mo, dow)| {
                if by_dom {
                    format!("{s} {m} {h} {dom} {mo} ?")
                } else {
                    format!("{s} {m} {h} ? {mo} {dow}")
                }
            })
    }

    fn unix() -> impl Strategy<Value = String> {
        (
            field(59, 0),
            field(23, 0),
            field(31, 1),
            field(12, 1),
            field(7, 0),
        )
            .prop_map(|(m, h, dom, mo, dow)| format!("{m} {h} {dom} {mo} {dow}"))
    }

    fn wall() -> impl Strategy<Value = NaiveDateTime> {
        // 1990-01-01 .. 2040-01-01, to the second.
        (631_152_000i64..2_208_988_800)
            .prop_map(|s| chrono::DateTime::from_timestamp(s, 0).unwrap().naive_utc())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// The fast walk and croner's own search agree on every expression and instant.
        #[test]
        fn the_fast_path_agrees_with_croner(
            expr in expression(),
            from in wall(),
        ) {
            let parsed = match CronExpression::parse(&expr) {
                Ok(parsed) => parsed,
                // Random day fields can name no real date (`31 2`); that is refused, and
                // croner's search for it would only say "none" slowly. Nothing else may fail.
                Err(err) => {
                    prop_assert!(err.to_string().contains("matches no date"), "{}: {}", expr, err);
                    return Ok(());
                }
            };
            let mut ours = from;
            let mut theirs = from;
            for _ in 0..5 {
                let a = parsed.next_wall_after(ours);
                let b = parsed.croner_next_wall_after(theirs);
                prop_assert_eq!(a, b, "expression `{}` after {}", expr, ours);
                match a {
                    Some(t) => {
                        prop_assert!(parsed.matches(t));
                        ours = t;
                        theirs = t;
                    }
                    None => break,
                }
            }
        }
    }

    #[test]
    fn month_lengths_agree_with_the_calendar_for_four_centuries() {
        for year in 2000..2400 {
            for month in 1..=12 {
                let first = NaiveDate::from_ymd_opt(year, month, 1).unwrap();
                let next = first_of_next_month(first).unwrap();
                assert_eq!(month_length(year, month), (next - first).num_days() as u32);
            }
        }
    }

    #[test]
    fn a_sub_second_start_is_treated_as_its_second() {
        let e = CronExpression::parse("* * * * * ?").unwrap();
        let at = NaiveDate::from_ymd_opt(2026, 1, 1)
            .unwrap()
            .and_hms_milli_opt(23, 59, 59, 500)
            .unwrap();
        let next = e.next_wall_after(at).unwrap();
        assert_eq!(next.to_string(), "2026-01-02 00:00:00");
    }
}
