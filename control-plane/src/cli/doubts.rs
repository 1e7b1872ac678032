//! `meridian in-doubt`: records in doubt after a takeover — which schedules, the agent that may
//! have fired them and when it was last heard — and settling them by hand when that agent is
//! not coming back (`resolve --run` or `--mark-done`, per schedule, per tenant or all).

use std::collections::BTreeSet;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;

use super::agents::time;
use super::client::{Client, ClientError};
use crate::model::doubt::InDoubt;

#[derive(Debug, Subcommand)]
pub enum InDoubtCommand {
    /// Every range of records in doubt (the default).
    List,
    /// Settle records in doubt: every tenant's you may, one tenant's, or one schedule's.
    Resolve(ResolveArgs),
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("how").required(true).multiple(false))]
pub struct ResolveArgs {
    /// The partition's holder runs them (under the schedule's catch-up policy).
    #[arg(long, group = "how")]
    pub run: bool,
    /// Record them as skipped, marked done: they ran, or must not run.
    #[arg(long, group = "how")]
    pub mark_done: bool,
    /// Only this tenant's.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this schedule's (`tenant/name`).
    #[arg(long, conflicts_with = "tenant")]
    pub schedule: Option<String>,
}

pub async fn run(client: &Client, command: Option<&InDoubtCommand>) -> Result<String, ClientError> {
    match command {
        None | Some(InDoubtCommand::List) => list(client).await,
        Some(InDoubtCommand::Resolve(args)) => resolve(client, args).await,
    }
}

async fn list(client: &Client) -> Result<String, ClientError> {
    let doubts: Vec<InDoubt> = client.call(Method::GET, "/in-doubt", None::<&()>).await?;
    let mut out =
        vec!["SCHEDULE\tRECORDS\tFIRST\tLAST\tHOLDER\tLAST_HEARD\tNOW_HELD_BY\tSINCE".to_owned()];
    out.extend(doubts.iter().map(|d| {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            d.schedule.replacen('.', "/", 1),
            d.records.len(),
            d.records.first().map_or("-".into(), |t| time(*t)),
            d.records.last().map_or("-".into(), |t| time(*t)),
            d.holder,
            d.holder_last_heard_ms.map_or("-".into(), time),
            d.current_holder.as_deref().unwrap_or("-"),
            time(d.since_ms),
        )
    }));
    Ok(out.join("\n"))
}

async fn resolve(client: &Client, args: &ResolveArgs) -> Result<String, ClientError> {
    let resolution = if args.run { "run" } else { "mark_done" };
    let targets: Vec<(String, Option<String>)> = match (&args.schedule, &args.tenant) {
        (Some(schedule), _) => {
            let Some((tenant, name)) = schedule.split_once('/') else {
                return Err(ClientError::Refused(format!(
                    "--schedule: `{schedule}` is not `tenant/name`"
                )));
            };
            vec![(tenant.to_owned(), Some(name.to_owned()))]
        }
        (None, Some(tenant)) => vec![(tenant.clone(), None)],
        (None, None) => {
            let doubts: Vec<InDoubt> = client.call(Method::GET, "/in-doubt", None::<&()>).await?;
            let tenants: BTreeSet<String> = doubts.into_iter().map(|d| d.tenant).collect();
            tenants.into_iter().map(|t| (t, None)).collect()
        }
    };
    let mut out = Vec::new();
    for (tenant, schedule) in targets {
        let mut body = json!({"tenant": tenant, "resolution": resolution});
        if let Some(s) = &schedule {
            body["schedule"] = json!(s);
        }
        let reply: serde_json::Value = client
            .call(Method::POST, "/in-doubt/resolve", Some(&body))
            .await?;
        let settled = reply["detail"]["settled"].as_u64().unwrap_or(0);
        let what = match &schedule {
            Some(s) => format!("{tenant}/{s}"),
            None => tenant.clone(),
        };
        out.push(format!(
            "{what}: {settled} record(s) settled ({resolution})"
        ));
    }
    if out.is_empty() {
        out.push("nothing is in doubt".into());
    }
    Ok(out.join("\n"))
}
