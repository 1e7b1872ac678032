//! `meridian runs`: the run history across data centers, task logs, run now, kill.

use clap::{Args, Subcommand};
use reqwest::Method;

use super::client::{Client, ClientError};
use crate::api::{RunDetail, WriteReply};
use crate::model::query::{AttemptLog, RunRecord};

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Runs, newest first, filtered (e.g. `meridian runs list --dc nj --state failed`).
    List(ListArgs),
    /// One run with its task attempts.
    Get { run: String },
    /// A run's task logs, attempt by attempt.
    Logs { run: String },
    /// Run a workflow now, on an agent of its environment's cluster.
    Now {
        tenant: String,
        workflow: String,
        /// Environment (default: the workflow's own).
        #[arg(long = "env")]
        environment: Option<String>,
    },
    /// Kill a run: TERM to its tasks' process groups, then KILL after the grace period.
    Kill { run: String },
}

#[derive(Debug, Args)]
pub struct ListArgs {
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
    /// requested, queued, started, succeeded, failed, killed or skipped.
    #[arg(long)]
    pub state: Option<String>,
    /// Only runs fired or requested at or after this instant (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}

pub async fn runs(client: &Client, command: &RunsCommand) -> Result<String, ClientError> {
    match command {
        RunsCommand::List(a) => {
            let mut query = vec![format!("limit={}", a.limit)];
            for (key, value) in [
                ("dc", &a.dc),
                ("cluster", &a.cluster),
                ("tenant", &a.tenant),
                ("workflow", &a.workflow),
                ("schedule", &a.schedule),
                ("state", &a.state),
            ] {
                if let Some(v) = value {
                    query.push(format!("{key}={}", urlencode(v)));
                }
            }
            if let Some(s) = &a.since {
                let ms = chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|e| {
                        ClientError::Refused(format!("--since `{s}`: {e} (want RFC 3339)"))
                    })?
                    .timestamp_millis();
                query.push(format!("since_ms={ms}"));
            }
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
        RunsCommand::Logs { run } => {
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
        RunsCommand::Kill { run } => {
            let reply: WriteReply = client
                .call(
                    Method::POST,
                    &format!("/runs/{}/kill", urlencode(run)),
                    None::<&()>,
                )
                .await?;
            Ok(format!("kill requested: {}", reply.subject))
        }
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
