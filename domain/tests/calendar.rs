//! The calendar against hand-checked fire times: every field kind and special character,
//! DST in two zones, year boundaries, leap days, start and end, and the errors.

use chrono::{DateTime, Utc};
use meridian_domain::{Calendar, CalendarError, CatchUpPolicy, ScheduleId, ScheduleSpec};

fn calendar(cron: &str, tz: &str) -> Calendar {
    ScheduleSpec {
        time_zone: tz.into(),
        ..ScheduleSpec::cron(cron)
    }
    .calendar()
    .unwrap_or_else(|e| panic!("`{cron}` in {tz}: {e}"))
}

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
}

/// The next `n` fire times after `after`, as RFC 3339 in the schedule's zone.
fn fires(cron: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
    let cal = calendar(cron, tz);
    cal.fire_times(at(after))
        .take(n)
        .map(|t| t.with_timezone(&cal.zone()).to_rfc3339())
        .collect()
}

fn error(cron: &str) -> CalendarError {
    ScheduleSpec::cron(cron).calendar().unwrap_err()
}

#[test]
fn the_dolphinscheduler_example_fires_every_five_seconds() {
    assert_eq!(
        fires(
            "0/5 * * * * ?",
            "Asia/Shanghai",
            "2017-08-30T17:22:28+08:00",
            3
        ),
        [
            "2017-08-30T17:22:30+08:00",
            "2017-08-30T17:22:35+08:00",
            "2017-08-30T17:22:40+08:00"
        ]
    );
}

#[test]
fn quartz_seven_fields_with_a_year_wildcard() {
    assert_eq!(
        fires("0 0/5 * * * ? *", "UTC", "2026-01-01T00:02:00Z", 2),
        ["2026-01-01T00:05:00+00:00", "2026-01-01T00:10:00+00:00"]
    );
}

#[test]
fn unix_five_fields_work_hours_on_weekdays() {
    // 2026-01-02 is a Friday; the next fires after 17:45 are Monday morning.
    assert_eq!(
        fires("*/15 9-17 * * MON-FRI", "UTC", "2026-01-02T17:40:00Z", 3),
        [
            "2026-01-02T17:45:00+00:00",
            "2026-01-05T09:00:00+00:00",
            "2026-01-05T09:15:00+00:00"
        ]
    );
}

#[test]
fn minute_ranges_lists_and_hour_steps() {
    assert_eq!(
        fires("0 10-12 8 * * ?", "UTC", "2026-01-01T00:00:00Z", 4),
        [
            "2026-01-01T08:10:00+00:00",
            "2026-01-01T08:11:00+00:00",
            "2026-01-01T08:12:00+00:00",
            "2026-01-02T08:10:00+00:00"
        ]
    );
    // Quartz's own example: 14:10 and 14:44 on Wednesdays in March.
    assert_eq!(
        fires("0 10,44 14 ? 3 WED", "UTC", "2026-01-01T00:00:00Z", 3),
        [
            "2026-03-04T14:10:00+00:00",
            "2026-03-04T14:44:00+00:00",
            "2026-03-11T14:10:00+00:00"
        ]
    );
    assert_eq!(
        fires("0 0 */6 * * ?", "UTC", "2026-01-01T05:00:00Z", 3),
        [
            "2026-01-01T06:00:00+00:00",
            "2026-01-01T12:00:00+00:00",
            "2026-01-01T18:00:00+00:00"
        ]
    );
}

#[test]
fn months_by_name_and_days_of_month() {
    assert_eq!(
        fires("0 0 12 1 JAN,JUL ?", "UTC", "2026-01-01T12:00:00Z", 2),
        ["2026-07-01T12:00:00+00:00", "2027-01-01T12:00:00+00:00"]
    );
    assert_eq!(
        fires("0 15 10 15 * ?", "UTC", "2026-01-15T10:15:00Z", 1),
        ["2026-02-15T10:15:00+00:00"]
    );
}

#[test]
fn weekday_numbers_follow_each_dialect() {
    // Quartz: 1 = Sunday, 2 = Monday. 2026-01-04 is a Sunday, 2026-01-05 a Monday.
    let after = "2026-01-01T00:00:00Z";
    assert_eq!(
        fires("0 0 12 ? * 2", "UTC", after, 1),
        ["2026-01-05T12:00:00+00:00"]
    );
    assert_eq!(
        fires("0 0 12 ? * 1", "UTC", after, 1),
        ["2026-01-04T12:00:00+00:00"]
    );
    // Unix: 1 = Monday, and both 0 and 7 are Sunday.
    assert_eq!(
        fires("0 12 * * 1", "UTC", after, 1),
        ["2026-01-05T12:00:00+00:00"]
    );
    assert_eq!(
        fires("0 12 * * 0", "UTC", after, 1),
        ["2026-01-04T12:00:00+00:00"]
    );
    assert_eq!(
        fires("0 12 * * 7", "UTC", after, 1),
        ["2026-01-04T12:00:00+00:00"]
    );
}

#[test]
fn unix_ors_a_restricted_day_of_month_with_a_restricted_day_of_week() {
    // The 13th or any Friday (Vixie cron): Fri 2026-02-06, Fri 02-13 (both), Fri 02-20.
    assert_eq!(
        fires("0 0 13 * 5", "UTC", "2026-02-01T00:00:00Z", 3),
        [
            "2026-02-06T00:00:00+00:00",
            "2026-02-13T00:00:00+00:00",
            "2026-02-20T00:00:00+00:00"
        ]
    );
}

#[test]
fn last_day_of_month_in_leap_and_common_years() {
    assert_eq!(
        fires("0 0 9 L * ?", "UTC", "2024-02-01T00:00:00Z", 1),
        ["2024-02-29T09:00:00+00:00"]
    );
    assert_eq!(
        fires("0 0 9 L * ?", "UTC", "2025-02-01T00:00:00Z", 2),
        ["2025-02-28T09:00:00+00:00", "2025-03-31T09:00:00+00:00"]
    );
}

#[test]
fn nearest_weekday_stays_in_its_month() {
    // 2026-08-15 is a Saturday -> Friday the 14th; 2026-03-15 a Sunday -> Monday the 16th.
    let aug = "2026-08-01T00:00:00Z";
    let mar = "2026-03-01T00:00:00Z";
    assert_eq!(
        fires("0 0 12 15W * ?", "UTC", aug, 1),
        ["2026-08-14T12:00:00+00:00"]
    );
    assert_eq!(
        fires("0 0 12 15W * ?", "UTC", mar, 1),
        ["2026-03-16T12:00:00+00:00"]
    );
    // 2026-08-01 is a Saturday: 1W is Monday the 3rd, not Friday July 31st.
    let jul31 = "2026-07-31T13:00:00Z";
    assert_eq!(
        fires("0 0 12 1W * ?", "UTC", jul31, 1),
        ["2026-08-03T12:00:00+00:00"]
    );
    // LW: last weekday of the month; 2026-01-31 is a Saturday.
    let jan = "2026-01-01T00:00:00Z";
    assert_eq!(
        fires("0 0 12 LW * ?", "UTC", jan, 1),
        ["2026-01-30T12:00:00+00:00"]
    );
}

#[test]
fn nth_and_last_weekday_of_the_month() {
    // Third Friday (Quartz 6 = Friday): 2026-01-16, 2026-02-20.
    assert_eq!(
        fires("0 15 10 ? * 6#3", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2026-01-16T10:15:00+00:00", "2026-02-20T10:15:00+00:00"]
    );
    // Last Friday: 2026-01-30, 2026-02-27.
    assert_eq!(
        fires("0 15 10 ? * 6L", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2026-01-30T10:15:00+00:00", "2026-02-27T10:15:00+00:00"]
    );
    // A lone L in Quartz's day-of-week is Saturday.
    assert_eq!(
        fires("0 0 12 ? * L", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2026-01-03T12:00:00+00:00", "2026-01-10T12:00:00+00:00"]
    );
}

#[test]
fn the_year_field_limits_and_ends_a_schedule() {
    let cal = calendar("0 15 10 ? * 6L 2027-2028", "UTC");
    let all: Vec<_> = cal.fire_times(at("2026-01-01T00:00:00Z")).collect();
    assert_eq!(all.len(), 24, "one last Friday a month for two years");
    assert_eq!(all[0], at("2027-01-29T10:15:00Z"));
    assert_eq!(all[23], at("2028-12-29T10:15:00Z"));
}

#[test]
fn year_boundaries_and_leap_days() {
    assert_eq!(
        fires("0 0 0 1 1 ?", "UTC", "2025-12-31T23:59:59Z", 1),
        ["2026-01-01T00:00:00+00:00"]
    );
    assert_eq!(
        fires(
            "59 59 23 31 12 ?",
            "Europe/Berlin",
            "2026-06-01T00:00:00Z",
            2
        ),
        ["2026-12-31T23:59:59+01:00", "2027-12-31T23:59:59+01:00"]
    );
    // Leap day only: next after 2025 is 2028, then 2032.
    assert_eq!(
        fires("0 0 12 29 2 ?", "UTC", "2025-01-01T00:00:00Z", 2),
        ["2028-02-29T12:00:00+00:00", "2032-02-29T12:00:00+00:00"]
    );
}

#[test]
fn nicknames_are_unix() {
    assert_eq!(
        fires("@daily", "UTC", "2026-01-01T00:00:00Z", 1),
        ["2026-01-02T00:00:00+00:00"]
    );
}

#[test]
fn new_york_spring_forward_fires_a_skipped_time_once_at_the_gap_end() {
    // 2026-03-08: 02:00 EST becomes 03:00 EDT. 02:30 does not exist that day.
    assert_eq!(
        fires(
            "0 30 2 * * ?",
            "America/New_York",
            "2026-03-07T00:00:00-05:00",
            3
        ),
        [
            "2026-03-07T02:30:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-03-09T02:30:00-04:00"
        ]
    );
    // Every 15 minutes: 02:00, 02:15, 02:30, 02:45 and 03:00 all fire once, at 03:00 EDT.
    assert_eq!(
        fires(
            "0 */15 * * * ?",
            "America/New_York",
            "2026-03-08T01:30:00-05:00",
            4
        ),
        [
            "2026-03-08T01:45:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-03-08T03:15:00-04:00",
            "2026-03-08T03:30:00-04:00"
        ]
    );
}

#[test]
fn new_york_fall_back_fires_a_repeated_time_once_at_its_first_occurrence() {
    // 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:00-01:59 happen twice.
    assert_eq!(
        fires(
            "0 30 1 * * ?",
            "America/New_York",
            "2026-10-31T12:00:00-04:00",
            2
        ),
        ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    );
    assert_eq!(
        fires(
            "0 0/30 * * * ?",
            "America/New_York",
            "2026-11-01T00:15:00-04:00",
            5
        ),
        [
            "2026-11-01T00:30:00-04:00",
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T02:00:00-05:00",
            "2026-11-01T02:30:00-05:00"
        ]
    );
    // Asked from inside the second 01:00-01:59, nothing of that hour fires again.
    assert_eq!(
        fires(
            "0 0/30 * * * ?",
            "America/New_York",
            "2026-11-01T01:15:00-05:00",
            1
        ),
        ["2026-11-01T02:00:00-05:00"]
    );
}

#[test]
fn berlin_spring_forward_and_fall_back() {
    // 2026-03-29: 02:00 CET becomes 03:00 CEST.
    assert_eq!(
        fires(
            "0 30 2 * * ?",
            "Europe/Berlin",
            "2026-03-28T12:00:00+01:00",
            2
        ),
        ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    );
    // 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 fires once, in summer time.
    assert_eq!(
        fires(
            "0 30 2 * * ?",
            "Europe/Berlin",
            "2026-10-24T12:00:00+02:00",
            2
        ),
        ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    );
}

#[test]
fn start_is_inclusive_end_is_inclusive_and_nothing_fires_past_the_end() {
    let spec = ScheduleSpec {
        start: Some(at("2026-01-01T00:10:00Z")),
        end: Some(at("2026-01-01T00:30:00Z")),
        ..ScheduleSpec::cron("0 */10 * * * ?")
    };
    let cal = spec.calendar().unwrap();
    let all: Vec<_> = cal.fire_times(at("2025-12-31T00:00:00Z")).collect();
    assert_eq!(
        all,
        [
            at("2026-01-01T00:10:00Z"),
            at("2026-01-01T00:20:00Z"),
            at("2026-01-01T00:30:00Z")
        ]
    );
    assert_eq!(cal.next_after(at("2026-01-01T00:30:00Z")), None);
    // A start between seconds does not fire at the second before it.
    let spec = ScheduleSpec {
        start: Some(at("2026-01-01T00:00:00.500Z")),
        ..ScheduleSpec::cron("* * * * * ?")
    };
    assert_eq!(
        spec.calendar()
            .unwrap()
            .next_after(at("2025-01-01T00:00:00Z")),
        Some(at("2026-01-01T00:00:01Z"))
    );
}

#[test]
fn the_window_holds_fifty_records_with_derived_ids() {
    let cal = calendar("0 0 * * * ?", "UTC");
    let id = ScheduleId::new("hourly").unwrap();
    let window = cal.window(&id, at("2026-01-01T00:00:00Z"), meridian_domain::WINDOW);
    assert_eq!(window.len(), 50);
    assert_eq!(window[0].id.as_str(), "hourly@20260101T010000Z");
    assert_eq!(window[49].id.as_str(), "hourly@20260103T020000Z");
}

#[test]
fn due_records_are_those_in_the_interval_newest_kept_under_a_limit() {
    let cal = calendar("0 * * * * ?", "UTC");
    let id = ScheduleId::new("m").unwrap();
    let due = cal.due(
        &id,
        at("2026-01-01T00:00:00Z"),
        at("2026-01-01T00:10:00Z"),
        3,
    );
    let ids: Vec<_> = due.iter().map(|r| r.id.to_string()).collect();
    assert_eq!(
        ids,
        [
            "m@20260101T000800Z",
            "m@20260101T000900Z",
            "m@20260101T001000Z"
        ]
    );
}

#[test]
fn errors_name_the_field_and_the_problem() {
    let cases = [
        (
            "61 * * * * ?",
            "cron.second",
            "cron: second field `61` is invalid",
        ),
        (
            "0 60 * * * ?",
            "cron.minute",
            "cron: minute field `60` is invalid",
        ),
        (
            "0 0 25 * * ?",
            "cron.hour",
            "cron: hour field `25` is invalid",
        ),
        (
            "0 0 0 32 * ?",
            "cron.day-of-month",
            "day-of-month field `32` is invalid",
        ),
        (
            "0 0 0 ? 13 *",
            "cron.month",
            "cron: month field `13` is invalid",
        ),
        (
            "0 0 0 ? * 8",
            "cron.day-of-week",
            "day-of-week field `8` is invalid",
        ),
        (
            "0 0 0 ? * FUNDAY",
            "cron.day-of-week",
            "day-of-week field `FUNDAY`",
        ),
        (
            "0 0 0 * * ? 1969-x",
            "cron.year",
            "cron: year field `1969-x` is invalid",
        ),
        ("* * *", "cron", "has 3 fields; expected 5"),
        ("", "cron", "the expression is empty"),
        (
            "0 0 12 15 * MON",
            "cron.day-of-week",
            "one of the two must be `?`",
        ),
        ("0 0 12 L-3 * ?", "cron.day-of-month", "`L-n`"),
        ("0 0 0 30 2 ?", "cron", "matches no date"),
        (
            "60 * * * *",
            "cron.minute",
            "cron: minute field `60` is invalid",
        ),
        (
            "0 24 * * *",
            "cron.hour",
            "cron: hour field `24` is invalid",
        ),
    ];
    for (cron, field, message) in cases {
        let err = error(cron);
        assert_eq!(err.field(), field, "`{cron}`: {err}");
        assert!(err.to_string().contains(message), "`{cron}`: {err}");
    }
}

#[test]
fn spec_errors_name_time_zone_end_and_catch_up() {
    let bad_zone = ScheduleSpec {
        time_zone: "Mars/Olympus_Mons".into(),
        ..ScheduleSpec::cron("0 * * * *")
    };
    let err = bad_zone.calendar().unwrap_err();
    assert_eq!(err.field(), "time_zone");
    assert!(
        err.to_string()
            .contains("`Mars/Olympus_Mons` is not an IANA time zone name")
    );

    let backwards = ScheduleSpec {
        start: Some(at("2026-02-01T00:00:00Z")),
        end: Some(at("2026-01-01T00:00:00Z")),
        ..ScheduleSpec::cron("0 * * * *")
    };
    assert_eq!(backwards.calendar().unwrap_err().field(), "end");

    let zero = ScheduleSpec {
        catch_up: CatchUpPolicy::All {
            window_seconds: 0,
            max: 3,
        },
        ..ScheduleSpec::cron("0 * * * *")
    };
    assert_eq!(
        zero.calendar().unwrap_err().field(),
        "catch_up.window_seconds"
    );
}
