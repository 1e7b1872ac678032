//! `meridian alert channel|rule create|list|delete`, `alert deliveries` and `alert delivery
//! ID`: where alerts go, what raises them, and how each delivery went. Without `--tenant`, the
//! federation's own (admins').

use std::path::PathBuf;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;

use super::agents::time;
use super::client::{Client, ClientError};
use super::model::{encode, with_query};
use super::users::duration_seconds;
use crate::api::WriteReply;
use crate::model::alerts::outbox::Delivery;
use crate::model::{AlertChannel, AlertEvent, AlertRule};

#[derive(Debug, Subcommand)]
pub enum AlertCommand {
    /// Where alerts go: a signed webhook, email, a chat webhook.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// What raises alerts, and to which channels.
    #[command(subcommand)]
    Rule(RuleCommand),
    /// Deliveries, newest first: pending, delivered or failed, with their attempts' count.
    Deliveries(DeliveriesArgs),
    /// One delivery: its events and every attempt (when, which plane node, the answer).
    Delivery { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    Create(ChannelCreate),
    List(Owner),
    Delete(Named),
}

#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    Create(RuleCreate),
    List(Owner),
    Delete(Named),
}

#[derive(Debug, Args)]
pub struct Owner {
    /// Only this tenant's (`_`: only the federation's).
    #[arg(long)]
    pub tenant: Option<String>,
}

#[derive(Debug, Args)]
pub struct Named {
    pub name: String,
    /// The tenant's (without it: the federation's).
    #[arg(long)]
    pub tenant: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("kind").required(true).args(["webhook", "email", "chat"])))]
pub struct ChannelCreate {
    pub name: String,
    /// The tenant's (without it: the federation's, which admins keep).
    #[arg(long)]
    pub tenant: Option<String>,
    /// A JSON POST to this URL, signed with `--secret-file`'s key when given.
    #[arg(long)]
    pub webhook: Option<String>,
    /// Mail to these addresses through the plane's `[mail]` relay (repeat, or comma-separate).
    #[arg(long, value_delimiter = ',')]
    pub email: Vec<String>,
    /// A chat-style webhook (`{"text": …}`: Slack, Mattermost, DingTalk-compatible).
    #[arg(long)]
    pub chat: Option<String>,
    /// A file holding the webhook's signing key (`-`: standard input), at least 16 characters.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    #[arg(long, default_value = "")]
    pub description: String,
}

#[derive(Debug, Args)]
pub struct RuleCreate {
    pub name: String,
    /// The tenant's (without it: the federation's: every tenant's runs, agents, data centers).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this workflow's runs.
    #[arg(long)]
    pub workflow: Option<String>,
    /// Only this schedule's runs.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Events: failed, retries_exhausted, succeeded, killed, in_doubt, late, sla, agent_lost,
    /// dc_unheard (repeat, or comma-separate).
    #[arg(long, required = true, value_delimiter = ',')]
    pub on: Vec<String>,
    /// Channels to alert (repeat, or comma-separate).
    #[arg(long = "channel", required = true, value_delimiter = ',')]
    pub channels: Vec<String>,
    /// `late`: a start this much after its fire time (`90s`, `10m`).
    #[arg(long)]
    pub late: Option<String>,
    /// `sla`: not finished this long after its fire time (`2h`).
    #[arg(long)]
    pub sla: Option<String>,
    /// `dc_unheard`: no agent of a data center heard for this long (`5m`).
    #[arg(long)]
    pub unheard: Option<String>,
    /// Repeats of one thing within this window go out together at its end (`0`: never
    /// grouped).
    #[arg(long, default_value = "5m")]
    pub group: String,
}

#[derive(Debug, Args)]
pub struct DeliveriesArgs {
    /// Only this tenant's (`_`: only the federation's).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only pending, delivered or failed ones.
    #[arg(long)]
    pub state: Option<String>,
    /// Only this rule's (`~callback/WORKFLOW/TASK`: a task's callbacks).
    #[arg(long)]
    pub rule: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

pub async fn run(client: &Client, command: &AlertCommand) -> Result<String, ClientError> {
    match command {
        AlertCommand::Channel(ChannelCommand::Create(args)) => create_channel(client, args).await,
        AlertCommand::Channel(ChannelCommand::List(o)) => list_channels(client, o).await,
        AlertCommand::Channel(ChannelCommand::Delete(n)) => delete(client, "channels", n).await,
        AlertCommand::Rule(RuleCommand::Create(args)) => create_rule(client, args).await,
        AlertCommand::Rule(RuleCommand::List(o)) => list_rules(client, o).await,
        AlertCommand::Rule(RuleCommand::Delete(n)) => delete(client, "rules", n).await,
        AlertCommand::Deliveries(args) => deliveries(client, args).await,
        AlertCommand::Delivery { id } => delivery(client, id).await,
    }
}

fn read_secret(path: &PathBuf) -> Result<String, ClientError> {
    let text = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| ClientError::Failed(format!("reading the secret from stdin: {e}")))?;
        text
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| ClientError::Failed(format!("--secret-file {}: {e}", path.display())))?
    };
    Ok(text.trim().to_owned())
}

async fn create_channel(client: &Client, a: &ChannelCreate) -> Result<String, ClientError> {
    let (kind, url) = match (&a.webhook, &a.chat) {
        (Some(url), _) => ("webhook", Some(url)),
        (_, Some(url)) => ("chat", Some(url)),
        _ => ("email", None),
    };
    let secret = a.secret_file.as_ref().map(read_secret).transpose()?;
    let mut body = json!({"name": a.name, "type": kind, "description": a.description});
    if let Some(t) = &a.tenant {
        body["tenant"] = json!(t);
    }
    if let Some(url) = url {
        body["url"] = json!(url);
    }
    if !a.email.is_empty() {
        body["to"] = json!(a.email);
    }
    if let Some(s) = secret {
        body["secret"] = json!(s);
    }
    let reply: WriteReply = client
        .call(Method::POST, "/alerts/channels", Some(&body))
        .await?;
    Ok(format!("created {}", reply.subject))
}

async fn create_rule(client: &Client, a: &RuleCreate) -> Result<String, ClientError> {
    if let Some(bad) = a.on.iter().find(|e| AlertEvent::parse(e).is_none()) {
        let known: Vec<&str> = AlertEvent::ALL.iter().map(|e| e.as_str()).collect();
        return Err(ClientError::Refused(format!(
            "--on `{bad}`: want one of {}",
            known.join(", ")
        )));
    }
    let group = if a.group == "0" {
        0
    } else {
        duration_seconds("--group", &a.group)?
    };
    let mut body = json!({
        "name": a.name, "on": a.on, "channels": a.channels, "group_seconds": group,
    });
    for (key, value) in [
        ("tenant", &a.tenant),
        ("workflow", &a.workflow),
        ("schedule", &a.schedule),
    ] {
        if let Some(v) = value {
            body[key] = json!(v);
        }
    }
    for (key, flag, value) in [
        ("late_seconds", "--late", &a.late),
        ("sla_seconds", "--sla", &a.sla),
        ("unheard_seconds", "--unheard", &a.unheard),
    ] {
        if let Some(v) = value {
            body[key] = json!(duration_seconds(flag, v)?);
        }
    }
    let reply: WriteReply = client
        .call(Method::POST, "/alerts/rules", Some(&body))
        .await?;
    Ok(format!("created {}", reply.subject))
}

fn owner_query(tenant: &Option<String>) -> Vec<String> {
    tenant
        .iter()
        .map(|t| format!("tenant={}", encode(t)))
        .collect()
}

async fn list_channels(client: &Client, o: &Owner) -> Result<String, ClientError> {
    let path = with_query("/alerts/channels", &owner_query(&o.tenant));
    let channels: Vec<AlertChannel> = client.call(Method::GET, &path, None::<&()>).await?;
    let mut lines = vec!["TENANT\tNAME\tTYPE\tTO\tSIGNED".to_owned()];
    for c in channels {
        let to = match &c.url {
            Some(url) => url.clone(),
            None => c.to.join(","),
        };
        lines.push(format!(
            "{}\t{}\t{}\t{to}\t{}",
            c.tenant.as_ref().map_or("-".into(), |t| t.to_string()),
            c.name,
            c.kind.as_str(),
            if c.secret.is_some() { "yes" } else { "no" }
        ));
    }
    Ok(lines.join("\n"))
}

async fn list_rules(client: &Client, o: &Owner) -> Result<String, ClientError> {
    let path = with_query("/alerts/rules", &owner_query(&o.tenant));
    let rules: Vec<AlertRule> = client.call(Method::GET, &path, None::<&()>).await?;
    let mut lines = vec!["TENANT\tNAME\tOF\tON\tCHANNELS\tGROUP".to_owned()];
    for r in rules {
        let of = match (&r.workflow, &r.schedule) {
            (Some(w), _) => format!("workflow {w}"),
            (_, Some(s)) => format!("schedule {s}"),
            _ => "all".into(),
        };
        let on: Vec<String> =
            r.on.iter()
                .map(|e| match e {
                    AlertEvent::Late => format!("late>{}s", r.late_seconds.unwrap_or(0)),
                    AlertEvent::Sla => format!("sla {}s", r.sla_seconds.unwrap_or(0)),
                    AlertEvent::DcUnheard => {
                        format!("dc_unheard {}s", r.unheard_seconds.unwrap_or(0))
                    }
                    e => e.as_str().to_owned(),
                })
                .collect();
        let channels: Vec<&str> = r.channels.iter().map(|c| c.as_str()).collect();
        lines.push(format!(
            "{}\t{}\t{of}\t{}\t{}\t{}s",
            r.tenant.as_ref().map_or("-".into(), |t| t.to_string()),
            r.name,
            on.join(","),
            channels.join(","),
            r.group_seconds
        ));
    }
    Ok(lines.join("\n"))
}

async fn delete(client: &Client, kind: &str, n: &Named) -> Result<String, ClientError> {
    let owner = n.tenant.as_deref().unwrap_or("_");
    let path = format!("/alerts/{kind}/{}/{}", encode(owner), encode(&n.name));
    let reply: WriteReply = client.call(Method::DELETE, &path, None::<&()>).await?;
    Ok(format!("deleted {}", reply.subject))
}

async fn deliveries(client: &Client, a: &DeliveriesArgs) -> Result<String, ClientError> {
    let mut query = owner_query(&a.tenant);
    for (key, value) in [("state", &a.state), ("rule", &a.rule)] {
        if let Some(v) = value {
            query.push(format!("{key}={}", encode(v)));
        }
    }
    query.push(format!("limit={}", a.limit));
    let list: Vec<Delivery> = client
        .call(
            Method::GET,
            &with_query("/alerts/deliveries", &query),
            None::<&()>,
        )
        .await?;
    let mut lines = vec!["ID\tCREATED\tSTATE\tATTEMPTS\tRULE\tCHANNEL\tSUMMARY".to_owned()];
    for d in list {
        lines.push(format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            d.id,
            time(d.created_ms),
            d.state,
            d.attempts,
            d.rule,
            d.channel,
            d.summary()
        ));
    }
    Ok(lines.join("\n"))
}

async fn delivery(client: &Client, id: &str) -> Result<String, ClientError> {
    let d: Delivery = client
        .call(
            Method::GET,
            &format!("/alerts/deliveries/{}", encode(id)),
            None::<&()>,
        )
        .await?;
    let mut lines = vec![
        format!(
            "delivery {} ({}, rule {}, channel {})",
            d.id, d.state, d.rule, d.channel
        ),
        format!("  {}", d.summary()),
    ];
    if d.state == "pending" {
        lines.push(format!("  next attempt at {}", time(d.next_ms)));
    }
    lines.push("ATTEMPT\tAT\tNODE\tOK\tTOOK\tANSWER".into());
    for t in &d.tries {
        lines.push(format!(
            "{}\t{}\t{}\t{}\t{} ms\t{}",
            t.attempt,
            time(t.at_ms),
            t.node,
            if t.ok { "yes" } else { "no" },
            t.took_ms,
            t.message
        ));
    }
    Ok(lines.join("\n"))
}
