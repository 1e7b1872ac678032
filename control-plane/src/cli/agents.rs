//! `meridian agents` and `meridian leases`: which agents the plane knows and which partitions
//! each holds — what an operator looks at during a failover or after an outage.

use std::collections::BTreeMap;

use clap::Args;
use reqwest::Method;

use super::client::{Client, ClientError};
use crate::model::query::{AgentRecord, LeaseRecord};

#[derive(Debug, Args)]
pub struct LeasesArgs {
    /// Only this cluster's partitions.
    #[arg(long)]
    pub cluster: Option<String>,
}

/// An instant (ms since the epoch) as the CLI's tables print it.
pub(super) fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "-".into())
}

/// Every agent, with the partitions it holds per cluster (a backup cluster's agent shows the
/// active cluster's partitions it took over).
pub async fn agents(client: &Client) -> Result<String, ClientError> {
    let agents: Vec<AgentRecord> = client.call(Method::GET, "/agents", None::<&()>).await?;
    let leases: Vec<LeaseRecord> = client.call(Method::GET, "/leases", None::<&()>).await?;
    let mut holds: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for lease in &leases {
        if let Some(holder) = &lease.holder {
            *holds
                .entry(holder.as_str())
                .or_default()
                .entry(lease.cluster.as_str())
                .or_default() += 1;
        }
    }
    let mut out = vec!["AGENT\tCLUSTER\tLAST_SEEN\tFREE_SLOTS\tSTATE\tHOLDS\tLOAD".to_owned()];
    out.extend(agents.iter().map(|a| {
        let held = holds
            .get(a.hostname.as_str())
            .map(|h| {
                h.iter()
                    .map(|(cluster, n)| format!("{cluster}:{n}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_else(|| "-".into());
        let load = a.load.as_ref().map_or_else(
            || "-".to_owned(),
            |l| {
                let mut said = format!(
                    "cpu {}% mem {}% load {}.{:02}/{} cores",
                    l.cpu_percent,
                    l.memory_percent,
                    l.load1_hundredths / 100,
                    l.load1_hundredths % 100,
                    l.cores
                );
                if let Some(why) = &l.overloaded {
                    said.push_str(&format!(" OVERLOADED ({why})"));
                }
                said
            },
        );
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            a.hostname,
            a.cluster,
            time(a.last_seen_ms),
            a.free_slots,
            if a.gone { "gone" } else { "up" },
            held,
            load
        )
    }));
    Ok(out.join("\n"))
}

/// Every partition's lease: holder, epoch, expiry.
pub async fn leases(client: &Client, args: &LeasesArgs) -> Result<String, ClientError> {
    let leases: Vec<LeaseRecord> = client.call(Method::GET, "/leases", None::<&()>).await?;
    let mut out = vec!["CLUSTER\tPARTITION\tHOLDER\tEPOCH\tEXPIRES".to_owned()];
    out.extend(
        leases
            .iter()
            .filter(|l| args.cluster.as_ref().is_none_or(|c| *c == l.cluster))
            .map(|l| {
                format!(
                    "{}\t{}\t{}\t{}\t{}",
                    l.cluster,
                    l.partition,
                    l.holder.as_deref().unwrap_or("-"),
                    l.epoch,
                    time(l.expires_ms)
                )
            }),
    );
    Ok(out.join("\n"))
}
