//! The federation overview (admin, operator): every data center with its clusters (active and
//! backup pairing), agents (last heard, free slots, partitions held, when their leases run out,
//! runs going) and the last 24 hours of runs by state, per hour and by lateness; and the plane's
//! nodes (leader, term, applied index, lag, reachable). A data center cut off from the plane
//! reads "last heard 47 s ago, leases run out in 2 min", not an error: its agents go on firing
//! until then.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::chart::{self, Hourly, Lateness};
use super::page::{self, Layout, Viewer};
use crate::api::Api;
use crate::model::{ClusterRole, query};
use crate::policy::{Action, Object};

/// An agent not heard from for longer than this is "not heard from" (agents heartbeat every
/// second by default).
const QUIET_MS: i64 = 5_000;
/// The window the overview counts and charts.
const DAY_MS: i64 = 24 * 3_600_000;
/// How long the page waits for another plane node's status before calling it unreachable.
const NODE_TIMEOUT: Duration = Duration::from_millis(500);

pub struct ClusterView {
    pub name: String,
    pub role: &'static str,
    /// `backup: sg-main`, or `backup of nj-main`, or empty.
    pub pairing: String,
    pub partitions: u32,
    pub lease_seconds: u32,
}

pub struct AgentView {
    pub hostname: String,
    pub cluster: String,
    pub last_heard: String,
    pub quiet: bool,
    pub free_slots: u32,
    pub partitions: usize,
    /// When the leases it holds run out (`in 1 min 12 s`), or empty if it holds none.
    pub leases: String,
    pub running: u64,
    pub gone: bool,
}

pub struct StateCount {
    pub state: String,
    pub n: u64,
    pub href: String,
}

pub struct DcView {
    pub name: String,
    /// "connected", or how long it has been quiet and how long its leases last.
    pub status: String,
    pub cut_off: bool,
    pub clusters: Vec<ClusterView>,
    pub agents: Vec<AgentView>,
    pub counts: Vec<StateCount>,
    pub total: u64,
    pub hourly: Hourly,
    pub runs_href: String,
}

pub struct NodeView {
    pub hostname: String,
    pub role: String,
    pub voter: bool,
    pub term: String,
    pub applied: String,
    pub lag: String,
    pub reachable: bool,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    layout: Layout,
    dcs: Vec<DcView>,
    nodes: Vec<NodeView>,
    lateness: Lateness,
    leader: String,
}

/// `just now`, `3.2 s ago`, `2 min 5 s ago`.
fn ago(ms: i64) -> String {
    if ms < 1_000 {
        return "just now".into();
    }
    format!("{} ago", chart::duration(ms))
}

fn runs_href(dc: &str, state: Option<&str>) -> String {
    let mut q = vec![("dc", dc)];
    if let Some(s) = state {
        q.push(("state", s));
    }
    format!(
        "/runs?{}",
        serde_urlencoded::to_string(q).unwrap_or_default()
    )
}

/// `GET /overview`.
pub async fn show(State(api): State<Api>, viewer: Viewer) -> Response {
    if !viewer.may(Action::Read, &Object::Operations) {
        return page::error_page(
            StatusCode::FORBIDDEN,
            "The federation overview is for admins and operators.",
        );
    }
    match build(&api, &viewer).await {
        Ok(p) => page::render(&p, StatusCode::OK),
        Err(e) => page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn build(api: &Api, viewer: &Viewer) -> sqlx::Result<OverviewPage> {
    let pool = api.node.state.pool();
    let runs = api.node.state.runs();
    let now = api.clock.now_ms();
    let since = now - DAY_MS;
    // The reads are independent: made at once, on the pool's connections, while the plane
    // nodes are asked for their status.
    let (data_centers, clusters, agents, leases, running, activity, lateness, statuses) = tokio::join!(
        query::data_centers(pool),
        query::clusters(pool),
        query::agents(pool),
        query::leases(pool),
        query::running_by_agent(pool),
        runs.run_activity(since),
        runs.lateness_by_dc(since),
        api.node.plane_status(NODE_TIMEOUT),
    );
    let (clusters, agents, leases, activity) = (clusters?, agents?, leases?, activity?);
    let running: HashMap<String, u64> = running?.into_iter().collect();
    let mut late: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (dc, ms) in lateness? {
        late.entry(dc).or_default().push(ms);
    }
    for sorted in late.values_mut() {
        sorted.sort_unstable();
    }
    // Every hour's count shares one scale across data centers.
    let mut per_hour: HashMap<(&str, i64), u64> = HashMap::new();
    for (dc, _, hour, n) in &activity {
        *per_hour.entry((dc.as_str(), *hour)).or_default() += n;
    }
    let max = per_hour.values().copied().max().unwrap_or(0);
    let mut dcs = Vec::new();
    for dc in data_centers? {
        let name = dc.name.to_string();
        let here: Vec<_> = clusters.iter().filter(|c| c.dc == dc.name).collect();
        let cluster_names: Vec<String> = here.iter().map(|c| c.name.to_string()).collect();
        let views = here
            .iter()
            .map(|c| {
                let backing: Vec<String> = clusters
                    .iter()
                    .filter(|o| o.backup.as_ref() == Some(&c.name))
                    .map(|o| o.name.to_string())
                    .collect();
                ClusterView {
                    name: c.name.to_string(),
                    role: match c.role {
                        ClusterRole::Active => "active",
                        ClusterRole::Backup => "backup",
                    },
                    pairing: match (&c.backup, backing.is_empty()) {
                        (Some(b), _) => format!("backup: {b}"),
                        (None, false) => format!("backup of {}", backing.join(", ")),
                        (None, true) => String::new(),
                    },
                    partitions: c.partitions,
                    lease_seconds: c.lease_seconds,
                }
            })
            .collect();
        let mut agent_views = Vec::new();
        let (mut heard, mut lease_end) = (None::<i64>, None::<i64>);
        for a in agents.iter().filter(|a| cluster_names.contains(&a.cluster)) {
            let held: Vec<_> = leases
                .iter()
                .filter(|l| l.holder.as_deref() == Some(a.hostname.as_str()))
                .collect();
            let ends = held.iter().map(|l| l.expires_ms).max();
            if !a.gone {
                heard = heard.max(Some(a.last_seen_ms));
                lease_end = lease_end.max(ends);
            }
            agent_views.push(AgentView {
                hostname: a.hostname.clone(),
                cluster: a.cluster.clone(),
                last_heard: ago(now - a.last_seen_ms),
                quiet: !a.gone && now - a.last_seen_ms > QUIET_MS,
                free_slots: a.free_slots,
                partitions: held.len(),
                leases: match ends {
                    Some(e) if e > now => format!("in {}", chart::duration(e - now)),
                    Some(e) => format!("ran out {}", ago(now - e)),
                    None => String::new(),
                },
                running: running.get(&a.hostname).copied().unwrap_or(0),
                gone: a.gone,
            });
        }
        let (status, cut_off) = match heard {
            None => ("no agent connected".to_owned(), false),
            Some(h) if now - h <= QUIET_MS => ("connected".to_owned(), false),
            Some(h) => {
                let leases = match lease_end {
                    Some(e) if e > now => {
                        format!("leases run out in {}", chart::duration(e - now))
                    }
                    Some(e) => format!("leases ran out {}", ago(now - e)),
                    None => "no leases held".into(),
                };
                (format!("last heard {}, {leases}", ago(now - h)), true)
            }
        };
        let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
        let mut hours: HashMap<i64, (u64, u64)> = HashMap::new();
        for (d, state, hour, n) in &activity {
            if *d != name {
                continue;
            }
            *by_state.entry(state.as_str()).or_default() += n;
            let h = hours.entry(*hour).or_default();
            h.0 += n;
            if matches!(state.as_str(), "failed" | "killed") {
                h.1 += n;
            }
        }
        let hour_counts: Vec<(i64, u64, u64)> =
            hours.into_iter().map(|(h, (t, f))| (h, t, f)).collect();
        dcs.push(DcView {
            counts: by_state
                .iter()
                .map(|(s, n)| StateCount {
                    state: (*s).to_owned(),
                    n: *n,
                    href: runs_href(&name, Some(s)),
                })
                .collect(),
            total: by_state.values().sum(),
            hourly: chart::hourly(&hour_counts, now, 24, max),
            runs_href: runs_href(&name, None),
            clusters: views,
            agents: agent_views,
            status,
            cut_off,
            name,
        });
    }
    let lateness = chart::lateness(
        &late
            .iter()
            .filter_map(|(dc, sorted)| {
                Some((
                    dc.clone(),
                    chart::quantile(sorted, 0.5)?,
                    chart::quantile(sorted, 0.99)?,
                ))
            })
            .collect::<Vec<_>>(),
    );
    let leader_index = statuses
        .iter()
        .find(|s| s.role == "leader")
        .and_then(|s| s.last_log_index);
    let leader = statuses
        .iter()
        .find_map(|s| s.leader.clone())
        .unwrap_or_else(|| "none".into());
    let nodes = statuses
        .into_iter()
        .map(|s| NodeView {
            lag: match (leader_index, s.applied_index) {
                (Some(l), Some(a)) if s.reachable => l.saturating_sub(a).to_string(),
                _ => String::new(),
            },
            term: if s.reachable {
                s.term.to_string()
            } else {
                String::new()
            },
            applied: s.applied_index.map(|a| a.to_string()).unwrap_or_default(),
            hostname: s.hostname,
            role: s.role,
            voter: s.voter,
            reachable: s.reachable,
        })
        .collect();
    Ok(OverviewPage {
        layout: Layout::for_viewer(viewer, "Overview", "/overview"),
        dcs,
        nodes,
        lateness,
        leader,
    })
}
