//! `meridian runs`: the run history across data centers, task logs, run now, kill.

use clap::{Args, Subcommand};
use reqwest::Method;

use super::client::{Client, ClientError};
use crate::api::runs::{BulkReply, LogFollow};
use crate::api::{RunDetail, WriteReply};
use crate::model::query::{AttemptLog, RunRecord};

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Runs, newest first, filtered (e.g. `meridian runs list --dc nj --state failed`).
    List(ListArgs),
    /// One run with its task attempts.
    Get { run: String },
    /// A run's task logs, attempt by attempt.
    Logs {
        run: String,
        /// Keep printing what the tasks write until the run is over (from any plane node;
        /// nothing contacts an agent).
        #[arg(long, short)]
        follow: bool,
    },
    /// Run a workflow now, on an agent of its environment's cluster.
    Now {
        tenant: String,
        workflow: String,
        /// Environment (default: the workflow's own).
        #[arg(long = "env")]
        environment: Option<String>,
    },
    /// Kill runs: TERM to their tasks' process groups, then KILL after the grace period. The
    /// runs named, or every run going the filter flags match (shown and counted first;
    /// `--yes` to go ahead).
    Kill(RerunArgs),
    /// Run finished runs again for their own fire time: the runs named, or every finished run
    /// the filter flags match (shown and counted first; `--yes` to go ahead).
    Rerun(RerunArgs),
    /// Recover failed or killed runs: only their tasks that did not succeed run again.
    Recover(RerunArgs),
}

/// `runs rerun|recover|kill`: the runs named, or those the filter flags match.
#[derive(Debug, Args)]
pub struct RerunArgs {
    /// The runs (none: those the filter flags match).
    pub runs: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Go ahead without asking (the count is still printed first).
    #[arg(long)]
    pub yes: bool,
}

/// Which runs: what `runs list` shows, and what `runs rerun|recover` without RUN ids runs
/// again.
#[derive(Debug, Args)]
pub struct FilterArgs {
    #[arg(long)]
    pub dc: Option<String>,
    #[arg(long)]
    pub cluster: Option<String>,
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub workflow: Option<String>,
    /// A schedule, as `tenant.name`.
    #[arg(long)]
    pub schedule: Option<String>,
    /// requested, queued, started, succeeded, failed, killed or skipped (re-run and recover
    /// take finished ones only).
    #[arg(long)]
    pub state: Option<String>,
    /// Only runs fired or requested at or after this instant (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Only runs fired or requested before this instant (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
}

impl FilterArgs {
    fn query(&self) -> Result<Vec<String>, ClientError> {
        let mut query = vec![];
        for (key, value) in [
            ("dc", &self.dc),
            ("cluster", &self.cluster),
            ("tenant", &self.tenant),
            ("workflow", &self.workflow),
            ("schedule", &self.schedule),
            ("state", &self.state),
        ] {
            if let Some(v) = value {
                query.push(format!("{key}={}", urlencode(v)));
            }
        }
        for (flag, key, value) in [
            ("--since", "since_ms", &self.since),
            ("--until", "until_ms", &self.until),
        ] {
            if let Some(s) = value {
                let ms = chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|e| {
                        ClientError::Refused(format!("{flag} `{s}`: {e} (want RFC 3339)"))
                    })?
                    .timestamp_millis();
                query.push(format!("{key}={ms}"));
            }
        }
        Ok(query)
    }
}

/// `runs rerun|recover`: each run named, or what the filter matches once counted and confirmed.
async fn rerun(client: &Client, a: &RerunArgs, recover: bool) -> Result<String, ClientError> {
    let verb = if recover { "recover" } else { "rerun" };
    if !a.runs.is_empty() {
        let mut out = Vec::new();
        for run in &a.runs {
            let reply: WriteReply = client
                .call(
                    Method::POST,
                    &format!("/runs/{}/{verb}", urlencode(run)),
                    None::<&()>,
                )
                .await?;
            let new = reply
                .detail
                .and_then(|d| d["run_id"].as_str().map(str::to_owned))
                .unwrap_or(reply.subject);
            out.push(format!("{run} -> {new}"));
        }
        return Ok(out.join("\n"));
    }
    let what = if recover { "recover" } else { "run again" };
    by_filter(
        client,
        a,
        &ByFilter {
            verb,
            path: "/runs/rerun",
            body: serde_json::json!({"recover": recover}),
            whole: "run every finished run again",
            none: "no finished run matches; nothing to do",
            question: what,
            declined: "nothing was run",
            done: "requested",
        },
    )
    .await
}

/// What `runs rerun|recover|kill` with filter flags calls and says.
struct ByFilter {
    /// `runs VERB`, as typed.
    verb: &'static str,
    path: &'static str,
    /// The body's own fields (`expect` and `expect_runs` are added to confirm).
    body: serde_json::Value,
    /// What the call would do without a filter (refused).
    whole: &'static str,
    none: &'static str,
    /// `… these N runs?`
    question: &'static str,
    declined: &'static str,
    /// `N run(s) matched; M …`
    done: &'static str,
}

/// Counts what the filter flags match, asks (or takes `--yes`), then sends the count and the
/// runs shown back to confirm: the server refuses if the match moved meanwhile.
async fn by_filter(client: &Client, a: &RerunArgs, f: &ByFilter) -> Result<String, ClientError> {
    let query = a.filter.query()?;
    if query.is_empty() {
        return Err(ClientError::Refused(format!(
            "name the runs, or filter them (--tenant, --state, --since, …): `runs {}` \
             without either would {}",
            f.verb, f.whole
        )));
    }
    let path = format!("{}?{}", f.path, query.join("&"));
    let counted: BulkReply = client.call(Method::POST, &path, Some(&f.body)).await?;
    if counted.count == 0 {
        return Ok(f.none.into());
    }
    let listing = counted.runs.join("\n");
    let question = format!("{listing}\n{} these {} runs?", f.question, counted.count);
    if !a.yes && !confirm(&question)? {
        return Ok(f.declined.into());
    }
    let mut body = f.body.clone();
    body["expect"] = serde_json::json!(counted.count);
    body["expect_runs"] = serde_json::json!(counted.runs);
    let done: BulkReply = client.call(Method::POST, &path, Some(&body)).await?;
    let mut out = vec![format!(
        "{} run(s) matched; {} {}",
        done.count,
        done.requested.len(),
        f.done
    )];
    out.extend(done.requested.iter().cloned());
    out.extend(done.refused.iter().map(|r| format!("refused: {r}")));
    Ok(out.join("\n"))
}

/// `runs kill`: each run named, or every run going the filter matches once counted and
/// confirmed.
async fn kill(client: &Client, a: &RerunArgs) -> Result<String, ClientError> {
    if !a.runs.is_empty() {
        let mut out = Vec::new();
        for run in &a.runs {
            let reply: WriteReply = client
                .call(
                    Method::POST,
                    &format!("/runs/{}/kill", urlencode(run)),
                    None::<&()>,
                )
                .await?;
            out.push(format!("kill requested: {}", reply.subject));
        }
        return Ok(out.join("\n"));
    }
    by_filter(
        client,
        a,
        &ByFilter {
            verb: "kill",
            path: "/runs/kill",
            body: serde_json::json!({}),
            whole: "kill every run going",
            none: "no run going matches; nothing to do",
            question: "kill",
            declined: "nothing was killed",
            done: "told to stop",
        },
    )
    .await
}

/// Asks on the terminal; anything but `y`/`yes` is no. Without a terminal, no.
fn confirm(question: &str) -> Result<bool, ClientError> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Err(ClientError::Refused(format!(
            "{question}\nnot asked: no terminal to answer on; add --yes to go ahead"
        )));
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| ClientError::Failed(format!("reading the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}

/// `runs logs RUN --follow`: hands `out` each piece of the run's logs as it arrives (headed
/// `==> task (attempt n) <==` when the attempt changes) until the run is over and everything
/// is given, or `out` says stop (false).
pub async fn follow(
    client: &Client,
    run: &str,
    mut out: impl FnMut(&str) -> bool,
) -> Result<(), ClientError> {
    let mut seen: Option<String> = None;
    let mut last: Option<(String, u32)> = None;
    loop {
        let mut path = format!("/runs/{}/logs/follow?wait_ms=5000", urlencode(run));
        if let Some(seen) = &seen {
            path.push_str(&format!("&seen={}", urlencode(seen)));
        }
        let answer: LogFollow = client.call(Method::GET, &path, None::<&()>).await?;
        for piece in &answer.pieces {
            let which = Some((piece.task.clone(), piece.attempt));
            if last != which {
                let gap = if last.is_some() { "\n" } else { "" };
                if !out(&format!(
                    "{gap}==> {} (attempt {}) <==\n",
                    piece.task, piece.attempt
                )) {
                    return Ok(());
                }
                last = which;
            }
            if !out(&piece.text) {
                return Ok(());
            }
        }
        if answer.finished {
            return Ok(());
        }
        seen = Some(answer.seen);
    }
}

pub async fn runs(client: &Client, command: &RunsCommand) -> Result<String, ClientError> {
    match command {
        RunsCommand::List(a) => {
            let mut query = vec![format!("limit={}", a.limit)];
            query.extend(a.filter.query()?);
            let runs: Vec<RunRecord> = client
                .call(
                    Method::GET,
                    &format!("/runs?{}", query.join("&")),
                    None::<&()>,
                )
                .await?;
            let mut out =
                vec!["RUN\tSTATE\tDC\tCLUSTER\tAGENT\tFIRED\tSTARTED\tLATENESS_MS".to_owned()];
            out.extend(runs.iter().map(|r| {
                format!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    r.run_id,
                    r.state,
                    r.dc,
                    r.cluster,
                    r.agent.as_deref().unwrap_or("-"),
                    time(r.fire_ms.or(r.requested_ms)),
                    time(r.started_ms),
                    r.lateness_ms.map_or("-".into(), |l| l.to_string()),
                )
            }));
            Ok(out.join("\n"))
        }
        RunsCommand::Get { run } => {
            let detail: RunDetail = client
                .call(
                    Method::GET,
                    &format!("/runs/{}", urlencode(run)),
                    None::<&()>,
                )
                .await?;
            serde_json::to_string_pretty(&detail).map_err(|e| ClientError::Failed(e.to_string()))
        }
        RunsCommand::Logs { run, follow: true } => {
            let mut all = String::new();
            follow(client, run, |text| {
                all.push_str(text);
                true
            })
            .await?;
            Ok(all)
        }
        RunsCommand::Logs { run, follow: false } => {
            let logs: Vec<AttemptLog> = client
                .call(
                    Method::GET,
                    &format!("/runs/{}/logs", urlencode(run)),
                    None::<&()>,
                )
                .await?;
            Ok(logs
                .iter()
                .map(|l| format!("==> {} (attempt {}) <==\n{}", l.task, l.attempt, l.text))
                .collect::<Vec<_>>()
                .join("\n"))
        }
        RunsCommand::Now {
            tenant,
            workflow,
            environment,
        } => {
            let body = serde_json::json!({
                "tenant": tenant, "workflow": workflow, "environment": environment,
            });
            let reply: WriteReply = client.call(Method::POST, "/runs", Some(&body)).await?;
            Ok(reply
                .detail
                .and_then(|d| d["run_id"].as_str().map(str::to_owned))
                .unwrap_or(reply.subject))
        }
        RunsCommand::Rerun(a) => rerun(client, a, false).await,
        RunsCommand::Recover(a) => rerun(client, a, true).await,
        RunsCommand::Kill(a) => kill(client, a).await,
    }
}

/// Percent-encodes what a run id or filter may hold that a URL may not.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
