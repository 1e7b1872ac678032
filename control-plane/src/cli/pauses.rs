//! `meridian pause|resume KIND KEY…`, `meridian schedule pause|resume TENANT NAME` and
//! `meridian pauses`: holding schedules still for a release, and letting them go again.

use clap::{Args, ValueEnum};
use reqwest::Method;
use serde_json::json;

use super::client::{Client, ClientError};
use super::model::{encode, with_query};
use crate::api::WriteReply;
use crate::model::pauses::PauseRecord;

/// What a pause holds still.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeKind {
    /// One schedule: TENANT NAME.
    Schedule,
    /// Every schedule running the workflow: TENANT NAME.
    Workflow,
    /// Every schedule of the tenant: NAME.
    Tenant,
    /// Every schedule on the environment, whoever's: NAME.
    #[value(alias = "environment")]
    Env,
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    pub kind: ScopeKind,
    /// TENANT NAME for a schedule or workflow; NAME for a tenant or environment.
    #[arg(required = true, num_args = 1..=2)]
    pub keys: Vec<String>,
    /// Why, for whoever looks (`meridian pauses`, the UI).
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    pub kind: ScopeKind,
    /// TENANT NAME for a schedule or workflow; NAME for a tenant or environment.
    #[arg(required = true, num_args = 1..=2)]
    pub keys: Vec<String>,
    /// Run what the pause skipped, as far as each schedule's catch-up policy says (without
    /// it, the schedules go on from their next record).
    #[arg(long)]
    pub catch_up: bool,
}

/// `schedule pause TENANT NAME`.
#[derive(Debug, Args)]
pub struct SchedulePause {
    pub tenant: String,
    pub name: String,
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// `schedule resume TENANT NAME`.
#[derive(Debug, Args)]
pub struct ScheduleResume {
    pub tenant: String,
    pub name: String,
    /// Run what the pause skipped, as far as the schedule's catch-up policy says.
    #[arg(long)]
    pub catch_up: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this tenant's (and the environments').
    #[arg(long)]
    pub tenant: Option<String>,
}

/// The scope as the API takes it; `Err` when the keys do not fit the kind.
fn scope(kind: ScopeKind, keys: &[String]) -> Result<serde_json::Value, ClientError> {
    let (word, two) = match kind {
        ScopeKind::Schedule => ("schedule", true),
        ScopeKind::Workflow => ("workflow", true),
        ScopeKind::Tenant => ("tenant", false),
        ScopeKind::Env => ("environment", false),
    };
    match (two, keys) {
        (true, [tenant, name]) => Ok(json!({ word: {"tenant": tenant, "name": name} })),
        (false, [name]) => Ok(json!({ word: {"name": name} })),
        (true, _) => Err(ClientError::Refused(format!(
            "a {word} is named by TENANT NAME"
        ))),
        (false, _) => Err(ClientError::Refused(format!("a {word} is named by NAME"))),
    }
}

pub async fn pause(client: &Client, args: &PauseArgs) -> Result<String, ClientError> {
    send_pause(client, scope(args.kind, &args.keys)?, &args.reason).await
}

pub async fn resume(client: &Client, args: &ResumeArgs) -> Result<String, ClientError> {
    send_resume(client, scope(args.kind, &args.keys)?, args.catch_up).await
}

pub async fn pause_schedule(client: &Client, args: &SchedulePause) -> Result<String, ClientError> {
    let keys = [args.tenant.clone(), args.name.clone()];
    send_pause(client, scope(ScopeKind::Schedule, &keys)?, &args.reason).await
}

pub async fn resume_schedule(
    client: &Client,
    args: &ScheduleResume,
) -> Result<String, ClientError> {
    let keys = [args.tenant.clone(), args.name.clone()];
    send_resume(client, scope(ScopeKind::Schedule, &keys)?, args.catch_up).await
}

async fn send_pause(
    client: &Client,
    scope: serde_json::Value,
    reason: &str,
) -> Result<String, ClientError> {
    let body = json!({"scope": scope, "reason": reason});
    let reply: WriteReply = client.call(Method::POST, "/pauses", Some(&body)).await?;
    if reply
        .detail
        .as_ref()
        .is_some_and(|d| d["unchanged"] == true)
    {
        return Ok(format!("{} was paused already", reply.subject));
    }
    Ok(format!(
        "paused {}: its due records are recorded skipped from the agents' next sync",
        reply.subject
    ))
}

async fn send_resume(
    client: &Client,
    scope: serde_json::Value,
    catch_up: bool,
) -> Result<String, ClientError> {
    let body = json!({"scope": scope, "catch_up": catch_up});
    let reply: WriteReply = client
        .call(Method::POST, "/pauses/resume", Some(&body))
        .await?;
    let caught_up = reply.detail.as_ref().and_then(|d| d["caught_up"].as_u64());
    Ok(match caught_up {
        Some(n) => format!(
            "resumed {}; {n} record{} it skipped handed to the holder to catch up",
            reply.subject,
            if n == 1 { "" } else { "s" }
        ),
        None => format!("resumed {}; it goes on from its next record", reply.subject),
    })
}

pub async fn list(client: &Client, args: &ListArgs) -> Result<String, ClientError> {
    let query: Vec<String> = args
        .tenant
        .iter()
        .map(|t| format!("tenant={}", encode(t)))
        .collect();
    let pauses: Vec<PauseRecord> = client
        .call(Method::GET, &with_query("/pauses", &query), None::<&()>)
        .await?;
    let mut lines = vec!["PAUSED\tSINCE\tREASON".to_owned()];
    for p in pauses {
        let since = chrono::DateTime::from_timestamp_millis(p.since_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| p.since_ms.to_string());
        lines.push(format!("{}\t{since}\t{}", p.scope, p.reason));
    }
    Ok(lines.join("\n"))
}
