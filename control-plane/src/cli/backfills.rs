//! `meridian backfill create|list|status|pause|resume|cancel`: filling a range of a schedule's
//! fire times, and watching it go (a live bar on a terminal, a line per change otherwise).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::json;

use super::client::{Client, ClientError};
use super::model::{encode, with_query};
use crate::api::WriteReply;
use crate::model::backfills::{BackfillRecord, BackfillState, Created};

#[derive(Debug, Subcommand)]
pub enum BackfillCommand {
    /// Fill a range of a schedule's fire times (only the missing ones, unless `--all`).
    Create(CreateArgs),
    /// Backfills with their progress, newest first.
    List(ListArgs),
    /// One backfill's progress (`--follow`: live until it ends).
    Status(StatusArgs),
    /// Hand nothing more until resumed (what is handed finishes).
    Pause { id: String },
    /// Hand a paused backfill's records again.
    Resume { id: String },
    /// Hand nothing more, ever (what is handed finishes).
    Cancel { id: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first.
    Desc,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    pub tenant: String,
    pub schedule: String,
    /// The first fire time to consider: RFC 3339, or a date (its midnight, UTC).
    #[arg(long)]
    pub from: String,
    /// The last: RFC 3339, or a date (up to the end of that day, UTC). Fire times the schedule
    /// has not reached are its own to fire: the range ends before them.
    #[arg(long)]
    pub to: String,
    /// At most this many records handed or running at once.
    #[arg(long, default_value_t = 1)]
    pub parallel: u32,
    #[arg(long, value_enum, default_value = "asc")]
    pub order: Order,
    /// Only fire times that never ran, or were skipped (the default).
    #[arg(long, conflicts_with = "all")]
    pub missing_only: bool,
    /// Every fire time of the range: one that ran already runs again, one generation further.
    #[arg(long)]
    pub all: bool,
    /// Show its progress until it ends (as `backfill status --follow`).
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this tenant's.
    #[arg(long)]
    pub tenant: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    pub id: String,
    /// Live progress until the backfill ends: done, running, failed, remaining, rate, ETA.
    #[arg(long)]
    pub follow: bool,
}

pub async fn run(client: &Client, command: &BackfillCommand) -> Result<String, ClientError> {
    match command {
        BackfillCommand::Create(args) => create(client, args).await,
        BackfillCommand::List(args) => list(client, args).await,
        BackfillCommand::Status(args) if args.follow => follow(client, &args.id).await,
        BackfillCommand::Status(args) => Ok(describe(&get(client, &args.id).await?)),
        BackfillCommand::Pause { id } => control(client, id, "pause").await,
        BackfillCommand::Resume { id } => control(client, id, "resume").await,
        BackfillCommand::Cancel { id } => control(client, id, "cancel").await,
    }
}

/// A bound as the flags take it ([`crate::model::backfills::bound`]).
fn instant(flag: &str, value: &str, end_of_day: bool) -> Result<DateTime<Utc>, ClientError> {
    crate::model::backfills::bound(flag, value, end_of_day).map_err(ClientError::Refused)
}

async fn create(client: &Client, args: &CreateArgs) -> Result<String, ClientError> {
    let body = json!({
        "tenant": args.tenant,
        "schedule": args.schedule,
        "from": instant("--from", &args.from, false)?,
        "to": instant("--to", &args.to, true)?,
        "parallel": args.parallel,
        "order": match args.order { Order::Asc => "asc", Order::Desc => "desc" },
        "all": args.all,
    });
    let reply: WriteReply = client.call(Method::POST, "/backfills", Some(&body)).await?;
    let created: Created = reply
        .detail
        .as_ref()
        .and_then(|d| serde_json::from_value(d.clone()).ok())
        .ok_or_else(|| ClientError::Refused("the plane did not say which backfill".into()))?;
    let mut lines = vec![format!(
        "backfill {}: {} record{}, at most {} at once",
        created.id,
        created.total,
        plural(created.total),
        args.parallel
    )];
    let left = &created.left_out;
    if left.ran > 0 {
        lines.push(format!(
            "left out {} that ran already (--all runs them again)",
            left.ran
        ));
    }
    if left.in_doubt > 0 {
        lines.push(format!(
            "left out {} in doubt after a takeover (meridian in-doubt)",
            left.in_doubt
        ));
    }
    if let Some(to) = left.clamped_to {
        lines.push(format!(
            "the range ends at {}: later fire times are the schedule's own to fire",
            to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    if args.wait {
        // What was said about it first, then its progress to the end.
        eprintln!("{}", lines.join("\n"));
        return follow(client, &created.id).await;
    }
    lines.push(format!(
        "follow it: meridian backfill status {} --follow",
        created.id
    ));
    Ok(lines.join("\n"))
}

async fn get(client: &Client, id: &str) -> Result<BackfillRecord, ClientError> {
    client
        .call(
            Method::GET,
            &format!("/backfills/{}", encode(id)),
            None::<&()>,
        )
        .await
}

async fn control(client: &Client, id: &str, verb: &str) -> Result<String, ClientError> {
    let reply: WriteReply = client
        .call(
            Method::POST,
            &format!("/backfills/{}/{verb}", encode(id)),
            None::<&()>,
        )
        .await?;
    let unchanged = reply
        .detail
        .as_ref()
        .is_some_and(|d| d["unchanged"] == true);
    Ok(match (verb, unchanged) {
        ("pause", true) => format!("{} was paused already", reply.subject),
        ("resume", true) => format!("{} was running already", reply.subject),
        ("pause", _) => format!(
            "paused {}: nothing more is handed (what is handed finishes)",
            reply.subject
        ),
        ("resume", _) => format!("resumed {}", reply.subject),
        _ => format!(
            "cancelled {}: nothing more is handed (what is handed finishes)",
            reply.subject
        ),
    })
}

async fn list(client: &Client, args: &ListArgs) -> Result<String, ClientError> {
    let query: Vec<String> = args
        .tenant
        .iter()
        .map(|t| format!("tenant={}", encode(t)))
        .collect();
    let all: Vec<BackfillRecord> = client
        .call(Method::GET, &with_query("/backfills", &query), None::<&()>)
        .await?;
    let mut lines =
        vec!["ID\tSTATE\tRANGE\tDONE\tRUNNING\tFAILED\tREMAINING\tTOTAL\tBY".to_owned()];
    for b in all {
        let p = &b.progress;
        lines.push(format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            b.id,
            state_word(&b),
            range(&b),
            p.succeeded + p.skipped,
            p.running,
            p.failed,
            p.remaining,
            b.total,
            b.requested_by.as_deref().unwrap_or("")
        ));
    }
    Ok(lines.join("\n"))
}

fn state_word(b: &BackfillRecord) -> &'static str {
    match b.state {
        BackfillState::Running if b.held_by_pause => "held (schedule paused)",
        BackfillState::Running => "running",
        BackfillState::Paused => "paused",
        BackfillState::Cancelled => "cancelled",
        BackfillState::Done => "done",
    }
}

fn range(b: &BackfillRecord) -> String {
    let t = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = b.left_out.clamped_to.unwrap_or(b.request.to);
    format!("{}..{}", t(b.request.from), t(to))
}

/// The counts in a line: `done 10 · running 4 · failed 1 · remaining 85`.
fn counts(b: &BackfillRecord) -> String {
    let p = &b.progress;
    let mut line = format!(
        "done {} · running {} · failed {} · remaining {}",
        p.succeeded + p.skipped,
        p.running,
        p.failed,
        p.remaining
    );
    if p.dropped > 0 {
        line.push_str(&format!(" · dropped {}", p.dropped));
    }
    line
}

fn describe(b: &BackfillRecord) -> String {
    format!(
        "{} ({}) of {}/{}, {}, {} record{}, at most {} at once\n{}",
        b.id,
        state_word(b),
        b.request.tenant,
        b.request.schedule,
        range(b),
        b.total,
        plural(b.total),
        b.request.parallel,
        counts(b)
    )
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Shows `id`'s progress until it is done or cancelled: a bar on a terminal, a line on
/// standard error per change otherwise; the last state is the answer.
async fn follow(client: &Client, id: &str) -> Result<String, ClientError> {
    let first = get(client, id).await?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(first.total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                .expect("a fixed template"),
        );
        Some(bar)
    } else {
        None
    };
    let started = Instant::now();
    let ended_at_start = first.progress.ended();
    let mut last_line = String::new();
    let mut b = first;
    loop {
        let ended = b.progress.ended();
        let elapsed = started.elapsed().as_secs_f64();
        let rate = (elapsed >= 1.0).then(|| (ended - ended_at_start.min(ended)) as f64 / elapsed);
        let left = b.progress.remaining + b.progress.running;
        let speed = match rate {
            Some(r) if r > 0.0 => format!(
                " · {r:.1}/s · ETA {}",
                eta(Duration::from_secs_f64(left as f64 / r))
            ),
            _ => String::new(),
        };
        let line = format!("{} · {}{speed}", state_word(&b), counts(&b));
        match &bar {
            Some(bar) => {
                bar.set_position(ended + b.progress.dropped);
                bar.set_message(line.clone());
            }
            None if line != last_line => eprintln!("{line}"),
            None => {}
        }
        last_line = line;
        if matches!(b.state, BackfillState::Done | BackfillState::Cancelled) {
            if let Some(bar) = &bar {
                bar.finish();
            }
            return Ok(describe(&b));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        b = get(client, id).await?;
    }
}

fn eta(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_date_stands_for_its_first_or_its_last_moment() {
        let from = instant("--from", "2026-10-01", false).unwrap();
        let to = instant("--to", "2026-10-01", true).unwrap();
        assert_eq!(from.to_rfc3339(), "2026-10-01T00:00:00+00:00");
        assert_eq!(
            to.timestamp_millis() - from.timestamp_millis(),
            86_400_000 - 1
        );
        let exact = instant("--to", "2026-10-01T06:00:00+02:00", true).unwrap();
        assert_eq!(exact.to_rfc3339(), "2026-10-01T04:00:00+00:00");
        let bad = instant("--from", "yesterday", false)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("--from `yesterday`: want a date"), "{bad}");
    }
}
