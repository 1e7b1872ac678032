//! `meridian audit`: the audit trail through the REST API, newest first.

use clap::Args;
use reqwest::Method;

use super::client::{Client, ClientError};
use super::model::{encode, with_query};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only entries at or after this instant (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Only entries before this instant (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this actor's (`user:alice`, `token:ci`).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only entries whose subject contains this.
    #[arg(long)]
    pub subject: Option<String>,
    /// Only this tenant's.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only refusals.
    #[arg(long)]
    pub refused: bool,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

fn instant(flag: &str, value: &str) -> Result<i64, ClientError> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|e| ClientError::Refused(format!("{flag} `{value}`: {e} (want RFC 3339)")))
}

pub async fn audit(client: &Client, args: &AuditArgs) -> Result<String, ClientError> {
    let since_ms = match &args.since {
        Some(s) => instant("--since", s)?,
        None => 0,
    };
    let mut query = vec![
        format!("since_ms={since_ms}"),
        format!("limit={}", args.limit),
    ];
    if let Some(u) = &args.until {
        query.push(format!("until_ms={}", instant("--until", u)?));
    }
    for (key, value) in [
        ("actor", &args.actor),
        ("subject", &args.subject),
        ("tenant", &args.tenant),
    ] {
        if let Some(v) = value {
            query.push(format!("{key}={}", encode(v)));
        }
    }
    if args.refused {
        query.push("outcome=refused".into());
    }
    let path = with_query("/audit", &query);
    let entries: Vec<crate::model::query::AuditEntry> =
        client.call(Method::GET, &path, None::<&()>).await?;
    Ok(entries
        .iter()
        .map(|e| {
            let at = chrono::DateTime::from_timestamp_millis(e.at_ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_else(|| e.at_ms.to_string());
            let mut line = format!(
                "{}\t{at}\t{}\t{}\t{}",
                e.log_index, e.actor, e.op, e.subject
            );
            if e.outcome == "refused" {
                line.push_str(&format!("\tREFUSED: {}", e.message));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n"))
}
