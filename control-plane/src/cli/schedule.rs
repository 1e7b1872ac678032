//! `meridian schedule …`.

use chrono::{DateTime, FixedOffset, Utc};
use clap::{Args, Subcommand};
use meridian_domain::{CalendarError, ScheduleSpec};

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Print the next fire times of a cron expression: the "cron check" view.
    ///
    /// Both formats are accepted: Quartz (6 or 7 fields, seconds first, e.g.
    /// `0 0/5 * * * ? *`) and Unix (5 fields, e.g. `*/15 9-17 * * MON-FRI`).
    Preview(PreviewArgs),
    /// Hold the schedule still: its due records are recorded skipped (paused).
    Pause(super::pauses::SchedulePause),
    /// Let it fire again from its next record (`--catch-up`: run what the pause skipped, as
    /// its catch-up policy says).
    Resume(super::pauses::ScheduleResume),
    #[command(flatten)]
    Model(Box<super::model::Verb<super::model::ScheduleCreate>>),
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The cron expression (quote it).
    #[arg(long)]
    pub cron: String,
    /// IANA time zone the expression is read in, e.g. `Asia/Shanghai`.
    #[arg(long = "tz", default_value = "UTC")]
    pub time_zone: String,
    /// Show fire times strictly after this instant (RFC 3339, e.g.
    /// `2017-08-30T17:22:28+08:00`). Defaults to now.
    #[arg(long, value_parser = parse_rfc3339)]
    pub from: Option<DateTime<FixedOffset>>,
    /// How many fire times to print.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub count: u32,
}

fn parse_rfc3339(s: &str) -> Result<DateTime<FixedOffset>, String> {
    DateTime::parse_from_rfc3339(s).map_err(|e| {
        format!("`{s}` is not an RFC 3339 instant ({e}); write it like 2017-08-30T17:22:28+08:00")
    })
}

/// The preview's result: fire times as RFC 3339 in the schedule's zone, and whether the
/// schedule ran out before `count` (its year field ended).
#[derive(Debug, PartialEq, Eq)]
pub struct Preview {
    pub fire_times: Vec<String>,
    pub ended: bool,
}

/// Computes a preview; `now` stands in for `--from` when it is absent.
pub fn preview(args: &PreviewArgs, now: DateTime<Utc>) -> Result<Preview, CalendarError> {
    let spec = ScheduleSpec {
        time_zone: args.time_zone.clone(),
        ..ScheduleSpec::cron(args.cron.clone())
    };
    let calendar = spec.calendar()?;
    let from = args.from.map_or(now, |f| f.to_utc());
    let count = args.count as usize;
    let fire_times: Vec<String> = calendar
        .fire_times(from)
        .take(count)
        .map(|at| {
            at.with_timezone(&calendar.zone())
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
        })
        .collect();
    let ended = fire_times.len() < count;
    Ok(Preview { fire_times, ended })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cron: &str, tz: &str, from: Option<&str>, count: u32) -> PreviewArgs {
        PreviewArgs {
            cron: cron.into(),
            time_zone: tz.into(),
            from: from.map(|f| parse_rfc3339(f).unwrap()),
            count,
        }
    }

    #[test]
    fn without_from_the_preview_starts_at_now() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:30Z")
            .unwrap()
            .to_utc();
        let p = preview(&args("0 * * * * ?", "UTC", None, 2), now).unwrap();
        assert_eq!(
            p.fire_times,
            ["2026-01-01T00:01:00+00:00", "2026-01-01T00:02:00+00:00"]
        );
        assert!(!p.ended);
    }

    #[test]
    fn a_schedule_that_runs_out_says_so() {
        let now = Utc::now();
        let p = preview(
            &args("0 0 0 1 1 ? 2030", "UTC", Some("2026-01-01T00:00:00Z"), 3),
            now,
        )
        .unwrap();
        assert_eq!(p.fire_times, ["2030-01-01T00:00:00+00:00"]);
        assert!(p.ended);
    }
}
