//! `/healthz`, `/readyz` and `/metrics`: what a load balancer and Prometheus ask a plane node.
//!
//! - `/healthz` (public): the process serves and its Raft runs — restart it otherwise.
//! - `/readyz` (public): this node knows a leader and has applied its log to within
//!   [`READY_LAG`] entries, so its reads are current and its writes reach the leader — send it
//!   traffic. A node cut off from the quorum, or catching up after a restart, answers 503 with
//!   why.
//! - `/metrics` (operators and admins, as `/agents`): the node's figures in the OpenMetrics
//!   text format, names prefixed `meridian_`. Gauges are read from this node's copy of the
//!   model when scraped (no leader round trip), so each node answers for itself.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use axum::{Extension, Json};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use sqlx::Row;

use super::principal::Caller;
use super::{Api, ApiResult};
use crate::policy::{Action, Object};

/// How far behind its own log a node may be and still be ready.
pub const READY_LAG: u64 = 1000;

/// What `/readyz` says.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Readiness {
    pub ready: bool,
    /// Why not (empty when ready).
    pub reason: String,
    pub role: String,
    pub leader: Option<String>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
}

/// `GET /healthz`.
pub fn healthz() -> MethodRouter<Api> {
    get(async |State(api): State<Api>| -> Response {
        match &api.node.raft.metrics().borrow().running_state {
            Ok(()) => (StatusCode::OK, "ok\n").into_response(),
            Err(fatal) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("raft stopped: {fatal}\n"),
            )
                .into_response(),
        }
    })
}

/// `GET /readyz`.
pub fn readyz() -> MethodRouter<Api> {
    get(async |State(api): State<Api>| -> Response {
        let readiness = readiness(&api).await;
        let status = if readiness.ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, Json(readiness)).into_response()
    })
}

async fn readiness(api: &Api) -> Readiness {
    let status = api.node.status();
    let lag = status
        .last_log_index
        .unwrap_or(0)
        .saturating_sub(status.applied_index.unwrap_or(0));
    let reason = if api.node.raft.metrics().borrow().running_state.is_err() {
        "its Raft has stopped".to_owned()
    } else if status.leader.is_none() {
        "it knows no leader (an election, or cut off from the quorum)".to_owned()
    } else if status.applied_index.is_none() {
        "it has applied nothing yet".to_owned()
    } else if lag > READY_LAG {
        format!("it is {lag} log entries behind (more than {READY_LAG})")
    } else {
        match api.node.state.history().gaps().await {
            Ok(gaps) if gaps.is_empty() => String::new(),
            Ok(gaps) => format!(
                "its history store is still copying runs retired before it joined (entries {} \
                 to {})",
                gaps[0].after_index,
                gaps[gaps.len() - 1].through_index
            ),
            Err(e) => format!("its history store cannot be read: {e}"),
        }
    };
    Readiness {
        ready: reason.is_empty(),
        reason,
        role: status.role,
        leader: status.leader,
        last_log_index: status.last_log_index,
        applied_index: status.applied_index,
    }
}

/// `GET /metrics`.
pub fn metrics() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>, Extension(c): Extension<Caller>| -> ApiResult<Response> {
            let read = api.reader(&c, true).await?;
            read.allow(Action::Read, &Object::Operations, "the metrics")?;
            let text = scrape(&api).await?;
            Ok((
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                text,
            )
                .into_response())
        },
    )
}

type Labels = Vec<(String, String)>;

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    registry.register(name, help, ConstCounter::new(value));
}

fn family(registry: &mut Registry, name: &str, help: &str, rows: &[(Labels, i64)]) {
    let f = Family::<Labels, Gauge<i64>>::default();
    for (labels, value) in rows {
        f.get_or_create(labels).set(*value);
    }
    registry.register(name, help, f);
}

/// Counts per `column` value of a `SELECT <column>, <count>` query, with every one of `all`
/// there (0 when the query has none): a series that appears only once something is in that
/// state cannot be graphed or alerted on.
async fn counts(
    conn: &mut sqlx::SqliteConnection,
    label: &str,
    all: &[&str],
    sql: &str,
) -> sqlx::Result<Vec<(Labels, i64)>> {
    let mut found: std::collections::BTreeMap<String, i64> =
        all.iter().map(|s| ((*s).to_owned(), 0)).collect();
    for r in sqlx::query(sql).fetch_all(&mut *conn).await? {
        found.insert(r.get::<String, _>(0), r.get::<i64, _>(1));
    }
    Ok(found
        .into_iter()
        .map(|(value, n)| (vec![(label.to_owned(), value)], n))
        .collect())
}

async fn scrape(api: &Api) -> ApiResult<String> {
    let mut registry = Registry::with_prefix("meridian");
    let status = api.node.status();
    let m = api.node.raft.metrics().borrow().clone();
    gauge(
        &mut registry,
        "raft_term",
        "The Raft term this node is in",
        status.term as i64,
    );
    gauge(
        &mut registry,
        "raft_leader",
        "1 if this node leads the plane, else 0",
        i64::from(m.current_leader == Some(m.id)),
    );
    gauge(
        &mut registry,
        "raft_leader_known",
        "1 if this node knows a leader, else 0",
        i64::from(m.current_leader.is_some()),
    );
    let gaps = api.node.state.history().gaps().await?;
    gauge(
        &mut registry,
        "history_gaps",
        "Ranges of retired runs this node's history store is still copying from peers",
        gaps.len() as i64,
    );
    let last = status.last_log_index.unwrap_or(0);
    let applied = status.applied_index.unwrap_or(0);
    gauge(
        &mut registry,
        "raft_last_log_index",
        "The index of this node's last log entry",
        last as i64,
    );
    gauge(
        &mut registry,
        "raft_applied_index",
        "The index of the last entry this node applied",
        applied as i64,
    );
    gauge(
        &mut registry,
        "raft_apply_lag_entries",
        "Log entries this node holds but has not applied yet",
        last.saturating_sub(applied) as i64,
    );
    gauge(
        &mut registry,
        "raft_snapshot_index",
        "The last log index in this node's newest snapshot",
        m.snapshot.map_or(0, |s| s.index) as i64,
    );
    gauge(
        &mut registry,
        "raft_members",
        "Voters and learners in the plane's membership",
        status.members.len() as i64,
    );
    let now = api.clock.now_ms();
    let mut conn = api.node.state.pool().acquire().await?;
    let states: Vec<&str> = meridian_domain::run::RunState::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    let runs = counts(
        &mut conn,
        "state",
        &states,
        "SELECT state, SUM(n) FROM run_hours GROUP BY state ORDER BY state",
    )
    .await?;
    family(
        &mut registry,
        "runs",
        "Runs in the history, by state",
        &runs,
    );
    let agents = sqlx::query(
        "SELECT COUNT(*) AS known, COALESCE(SUM(gone = 0 AND last_seen_ms + ?1 >= ?2), 0) AS heard \
         FROM agents",
    )
    .bind(30_000i64)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    gauge(
        &mut registry,
        "agents_known",
        "Agents the plane has heard of",
        agents.get("known"),
    );
    gauge(
        &mut registry,
        "agents_heard",
        "Agents heard within the last 30 s and not stopped",
        agents.get("heard"),
    );
    let leases: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM leases WHERE holder IS NOT NULL AND expires_ms > ?",
    )
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    gauge(
        &mut registry,
        "leases_held",
        "Partitions whose lease is held and not expired",
        leases,
    );
    let doubts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM doubts")
        .fetch_one(&mut *conn)
        .await?;
    gauge(
        &mut registry,
        "in_doubt_ranges",
        "Ranges of fire records in doubt after a takeover (meridian in-doubt)",
        doubts,
    );
    let backfills = counts(
        &mut conn,
        "state",
        &["running", "paused", "cancelled", "done"],
        "SELECT state, COUNT(*) FROM backfills GROUP BY state ORDER BY state",
    )
    .await?;
    family(
        &mut registry,
        "backfills",
        "Backfills, by state",
        &backfills,
    );
    let deliveries = counts(
        &mut conn,
        "state",
        &["pending", "delivered", "failed"],
        "SELECT state, COUNT(*) FROM alert_deliveries GROUP BY state ORDER BY state",
    )
    .await?;
    family(
        &mut registry,
        "alert_deliveries",
        "Alert and callback deliveries kept, by state",
        &deliveries,
    );
    let oldest: Option<i64> =
        sqlx::query_scalar("SELECT MIN(created_ms) FROM alert_deliveries WHERE state = 'pending'")
            .fetch_one(&mut *conn)
            .await?;
    gauge(
        &mut registry,
        "alert_oldest_pending_seconds",
        "Age of the oldest alert delivery not yet delivered (0: none)",
        oldest.map_or(0, |o| (now - o).max(0) / 1000),
    );
    let grants: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(epoch), 0) FROM leases")
        .fetch_one(&mut *conn)
        .await?;
    // A gauge, not a counter: leases of a deleted cluster take their epochs with them.
    gauge(
        &mut registry,
        "lease_grants",
        "Partition leases granted over the leases there are now (each move to a new holder is one)",
        grants,
    );
    gauge(
        &mut registry,
        "raft_snapshot_bytes",
        "Bytes of this node's newest Raft snapshot",
        api.node.state.snapshot_bytes() as i64,
    );
    let wal = |database: &str, restart: crate::model::wal::Restart| {
        let labels = vec![("database".to_owned(), database.to_owned())];
        (labels, restart.log_bytes())
    };
    family(
        &mut registry,
        "database_wal_bytes",
        "Bytes in a database's SQLite write-ahead log at its last checkpoint, copied in or not; \
         it starts over past 256 MiB (0 for a PostgreSQL history store, which keeps its own)",
        &[
            wal("model", api.node.state.wal_restart()),
            wal("history", api.node.state.history().wal_restart()),
        ],
    );
    gauge(
        &mut registry,
        "log_stored_bytes",
        "Bytes of task log text this node's logbook holds",
        api.node.logbook.stored_bytes() as i64,
    );
    let tally = &api.node.tally;
    let read = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    counter(
        &mut registry,
        "raft_appended_bytes",
        "Bytes of Raft log entries this node wrote since it started",
        read(&tally.raft_appended_bytes),
    );
    counter(
        &mut registry,
        "reports_received",
        "Report calls from agents this node answered since it started",
        read(&tally.reports),
    );
    counter(
        &mut registry,
        "report_proposals",
        "Raft entries this node proposed for agents' reports since it started (reports \
         waiting together go as one)",
        read(&tally.report_proposals),
    );
    counter(
        &mut registry,
        "report_events_applied",
        "Run and attempt events from agents' reports this node committed since it started",
        read(&tally.events_applied),
    );
    counter(
        &mut registry,
        "report_entries_refused",
        "Report entries (events and log pieces) this node refused for good since it started",
        read(&tally.entries_refused),
    );
    counter(
        &mut registry,
        "log_pieces_stored",
        "Log pieces agents sent this node that it stored, since it started",
        read(&tally.log_pieces),
    );
    counter(
        &mut registry,
        "log_received_bytes",
        "Bytes of log text agents sent this node that it stored, since it started",
        read(&tally.log_bytes),
    );
    let mut text = String::new();
    encode(&mut text, &registry).map_err(|e| super::ApiError::internal(e.to_string()))?;
    Ok(text)
}
