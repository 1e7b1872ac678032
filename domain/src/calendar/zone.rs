//! Mapping a wall-clock time in a time zone to the instant a schedule fires at.
//!
//! The DST rules, chosen so every matching wall-clock time fires exactly once:
//! - a wall-clock time that a spring-forward gap skips fires at the first valid instant after
//!   it (the end of the gap), once, however many skipped times matched;
//! - a wall-clock time that a fall-back repeats fires at its first occurrence only.
//!
//! The "once" halves are enforced by the caller (`Calendar::next_after` only accepts an
//! instant strictly after the previous fire); this module only says where a wall time lands.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// The instant at which wall-clock time `wall` in `zone` fires.
pub fn resolve(zone: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
    match zone.from_local_datetime(&wall) {
        LocalResult::Single(at) => at.to_utc(),
        // Fall-back: the first occurrence has the earlier instant.
        LocalResult::Ambiguous(first, _) => first.to_utc(),
        LocalResult::None => {
            let end = gap_end(zone, wall);
            zone.from_local_datetime(&end)
                .earliest()
                .expect("the end of a DST gap is a valid local time")
                .to_utc()
        }
    }
}

/// The first valid wall-clock time after `wall`, which lies in a gap.
///
/// Gaps are rare and short (an hour typically, a day at most — Samoa skipped 2011-12-30), so a
/// minute-by-minute walk followed by a binary search to the second is cheap and obviously
/// correct; transitions are at whole seconds in the tz database.
fn gap_end(zone: Tz, wall: NaiveDateTime) -> NaiveDateTime {
    let valid = |t: NaiveDateTime| !matches!(zone.from_local_datetime(&t), LocalResult::None);
    let minute = TimeDelta::minutes(1);
    let mut invalid = wall;
    // 48 h bounds the walk even for a corrupt zone table; no real gap is longer than a day.
    for _ in 0..48 * 60 {
        if valid(invalid + minute) {
            break;
        }
        invalid += minute;
    }
    // `invalid` is in the gap and `invalid + 60 s` is valid: binary-search the seconds between.
    let (mut lo, mut hi) = (0, 60);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if valid(invalid + TimeDelta::seconds(mid)) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    invalid + TimeDelta::seconds(hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn wall(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, s)
            .unwrap()
    }

    #[test]
    fn a_time_in_a_spring_forward_gap_lands_on_the_gap_end() {
        // New York, 2024-03-10: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
        let at = resolve(chrono_tz::America::New_York, wall(2024, 3, 10, 2, 30, 17));
        assert_eq!(at.to_rfc3339(), "2024-03-10T07:00:00+00:00");
    }

    #[test]
    fn a_repeated_time_resolves_to_its_first_occurrence() {
        // Berlin, 2024-10-27: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let at = resolve(chrono_tz::Europe::Berlin, wall(2024, 10, 27, 2, 30, 0));
        assert_eq!(at.to_rfc3339(), "2024-10-27T00:30:00+00:00");
    }

    #[test]
    fn a_whole_skipped_day_lands_on_the_next_midnight() {
        // Samoa skipped 2011-12-30 entirely when it moved across the date line.
        let at = resolve(chrono_tz::Pacific::Apia, wall(2011, 12, 30, 12, 0, 0));
        let local = at.with_timezone(&chrono_tz::Pacific::Apia);
        assert_eq!(local.naive_local(), wall(2011, 12, 31, 0, 0, 0));
    }
}
