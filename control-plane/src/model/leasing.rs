//! Applying an agent's heartbeat: record the agent as connected, take back what it released,
//! run the lease plan ([`crate::lease::plan`]) for its cluster and for every cluster it backs
//! up, hand it waiting "run now" requests, and answer with its leases and commands.
//!
//! The plan is decided here, inside the state machine, at the proposal's stamped time: every
//! replica applies the same heartbeat to the same leases at the same time and gets the same
//! result, so no separate "lease manager" on the leader has to be kept in step with the log.
//!
//! A heartbeat renews only the heartbeating agent's own leases. An agent that stops
//! heartbeating therefore loses its leases exactly `lease_seconds` after its last heartbeat
//! (the plane's clock), while the agent itself stops firing `lease_seconds` after it *sent*
//! that heartbeat (its own clock), which is earlier: the two never overlap.

use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection};

use super::checks::{Table, json, present, subject};
use super::outcome::{Applied, ApplyError, Context, Refusal};
use super::query::decode;
use super::{Cluster, Heartbeat};
use crate::lease::{self, LeaseChange};
use meridian_domain::run::Job;

/// What a heartbeat gives the agent back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatOutcome {
    /// The plane time the leases were computed at; expiries are relative to it.
    pub now_ms: i64,
    /// Every partition the agent now holds.
    pub leases: Vec<HeldLease>,
    /// Partitions it is asked to give back.
    pub release: Vec<HeldLease>,
    pub commands: Vec<AgentOrder>,
    /// The `definitions` counter: re-fetch schedules when it moves.
    pub definitions: u64,
    /// Its shares of the grants of the environments it runs ([`super::quotas`]).
    #[serde(default)]
    pub shares: Vec<super::quotas::QuotaShare>,
    /// How long they hold unheard (the cluster's lease): past that it starts nothing.
    #[serde(default)]
    pub shares_valid_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldLease {
    pub cluster: String,
    pub partition: u32,
    pub epoch: u64,
    pub expires_ms: i64,
}

/// Something the plane wants the agent to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentOrder {
    /// Boxed: a job is far larger than a kill, and orders are collected in lists.
    RunNow {
        run_id: String,
        job: Box<Job>,
    },
    Kill {
        run_id: String,
    },
}

pub async fn heartbeat(
    tx: &mut SqliteConnection,
    context: Context,
    hb: &Heartbeat,
) -> Result<Applied, ApplyError> {
    let doing = format!("heartbeat of agent `{}`", hb.agent);
    present(tx, Table::Clusters, &hb.cluster, &doing).await?;
    if hb.agent.trim().is_empty() {
        return Err(Refusal::Invalid {
            doing,
            field: "agent".into(),
            problem: "must not be empty".into(),
        }
        .into());
    }
    let now = context.at_ms;
    sqlx::query(
        "INSERT INTO agents (hostname, cluster, last_seen_ms, free_slots, gone, heartbeat_ms, load) \
         VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (hostname) DO UPDATE SET \
         cluster = excluded.cluster, last_seen_ms = excluded.last_seen_ms, \
         free_slots = excluded.free_slots, gone = excluded.gone, \
         heartbeat_ms = excluded.heartbeat_ms, load = excluded.load",
    )
    .bind(&hb.agent)
    .bind(hb.cluster.as_str())
    .bind(now)
    .bind(i64::from(hb.free_slots))
    .bind(hb.releasing)
    .bind(hb.heartbeat_ms as i64)
    .bind(hb.load.as_ref().map(json))
    .execute(&mut *tx)
    .await?;
    // Given back: free from now (the agent stopped firing it before it said so). The time is
    // kept as the lease's end, for the tenure it ends.
    for released in &hb.released {
        sqlx::query(
            "UPDATE leases SET holder = NULL, expires_ms = MIN(expires_ms, ?) \
             WHERE cluster = ? AND partition = ? AND holder = ?",
        )
        .bind(now)
        .bind(released.cluster.as_str())
        .bind(i64::from(released.partition))
        .bind(&hb.agent)
        .execute(&mut *tx)
        .await?;
    }
    // Lost partitions whose every report is committed: what is in doubt there is settled.
    for r in &hb.relinquished {
        let handed = super::doubt::settle_relinquished(
            tx,
            context,
            &hb.agent,
            r.cluster.as_str(),
            r.partition,
            r.epoch,
        )
        .await?;
        if handed > 0 {
            tracing::info!(
                agent = %hb.agent,
                cluster = %r.cluster,
                partition = r.partition,
                handed,
                "records in doubt it never ran go to the partition's holder"
            );
        }
    }
    if hb.releasing {
        sqlx::query(
            "UPDATE leases SET holder = NULL, expires_ms = MIN(expires_ms, ?) WHERE holder = ?",
        )
        .bind(now)
        .bind(&hb.agent)
        .execute(&mut *tx)
        .await?;
    }

    // The agent's own cluster, and every cluster it stands by for.
    let clusters: Vec<Cluster> =
        sqlx::query("SELECT doc FROM clusters WHERE name = ? OR backup = ? ORDER BY name")
            .bind(hb.cluster.as_str())
            .bind(hb.cluster.as_str())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| decode(row.get("doc")))
            .collect::<sqlx::Result<_>>()?;
    let mut release = Vec::new();
    for cluster in &clusters {
        release.extend(plan_cluster(tx, cluster, &hb.agent, now).await?);
    }

    // Overloaded, while another agent of the cluster heard lately is not: it takes no run now.
    let relieved_elsewhere = hb.load.as_ref().is_some_and(|l| l.overloaded.is_some()) && {
        let others: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM agents WHERE cluster = ?1 AND hostname <> ?2 AND gone = 0 \
             AND last_seen_ms > ?3 \
             AND (load IS NULL OR json_extract(load, '$.overloaded') IS NULL)",
        )
        .bind(hb.cluster.as_str())
        .bind(&hb.agent)
        .bind(now - 3 * hb.heartbeat_ms.max(1_000) as i64)
        .fetch_one(&mut *tx)
        .await?;
        others > 0
    };
    if !hb.releasing && !relieved_elsewhere {
        // Waiting "run now" requests of the agent's cluster go to the first agent that asks.
        sqlx::query(
            "UPDATE agent_commands SET agent = ? \
             WHERE kind = 'run_now' AND agent IS NULL AND cluster = ?",
        )
        .bind(&hb.agent)
        .bind(hb.cluster.as_str())
        .execute(&mut *tx)
        .await?;
    }
    let shares = super::quotas::shares(tx, context, hb, &clusters).await?;
    let own_lease_ms = clusters
        .iter()
        .find(|c| c.name == hb.cluster)
        .map_or(0, |c| u64::from(c.lease_seconds) * 1000);
    let outcome = HeartbeatOutcome {
        now_ms: now,
        leases: held_by(tx, &hb.agent, now).await?,
        release,
        commands: orders_for(tx, &hb.agent).await?,
        definitions: super::checks::definitions(tx).await?,
        shares,
        shares_valid_ms: own_lease_ms,
    };
    Ok(Applied {
        detail: Some(json(&outcome)),
        ..subject(format!("agent {}", hb.agent))
    })
}

/// Plans one cluster's leases at `now` and writes the changes. Renewals apply only to the
/// heartbeating agent; returns the releases asked of it.
async fn plan_cluster(
    tx: &mut SqliteConnection,
    cluster: &Cluster,
    agent: &str,
    now: i64,
) -> Result<Vec<HeldLease>, ApplyError> {
    // Every partition has its row (the cluster may have grown), in one statement: a
    // heartbeat is applied on every node several times a second, and each statement is a
    // round trip to the connection's thread.
    sqlx::query(
        "WITH RECURSIVE p (n) AS (SELECT 0 WHERE ?2 > 0 UNION ALL SELECT n + 1 FROM p \
         WHERE n + 1 < ?2) \
         INSERT INTO leases (cluster, partition, holder, epoch, expires_ms) \
         SELECT ?1, n, NULL, 0, 0 FROM p WHERE true ON CONFLICT DO NOTHING",
    )
    .bind(cluster.name.as_str())
    .bind(i64::from(cluster.partitions))
    .execute(&mut *tx)
    .await?;
    let leases: Vec<lease::Lease> = sqlx::query(
        "SELECT partition, holder, epoch, expires_ms FROM leases WHERE cluster = ? \
         ORDER BY partition",
    )
    .bind(cluster.name.as_str())
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|row| lease::Lease {
        partition: row.get::<i64, _>("partition") as u32,
        holder: row.get("holder"),
        epoch: row.get::<i64, _>("epoch") as u64,
        expires_ms: row.get("expires_ms"),
    })
    .collect();
    let lease_ms = i64::from(cluster.lease_seconds) * 1000;
    let backup = cluster.backup.as_ref().map(|b| b.as_str()).unwrap_or("");
    let agents: Vec<lease::Agent> = sqlx::query(
        "SELECT hostname, cluster, last_seen_ms, heartbeat_ms, \
         json_extract(load, '$.overloaded') IS NOT NULL AS overloaded FROM agents \
         WHERE (cluster = ? OR cluster = ?) AND gone = 0 AND last_seen_ms > ? ORDER BY hostname",
    )
    .bind(cluster.name.as_str())
    .bind(backup)
    .bind(now - lease_ms)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|row| lease::Agent {
        hostname: row.get("hostname"),
        own_cluster: row.get::<String, _>("cluster") == cluster.name.as_str(),
        fresh: lease::fresh(
            now,
            row.get("last_seen_ms"),
            row.get("heartbeat_ms"),
            lease_ms,
        ),
        overloaded: row.get::<i64, _>("overloaded") != 0,
    })
    .collect();
    // Seeded from a snapshot less than a lease ago: a lease granted in the timeline the restore
    // rolled back may still be running on some agent. Nobody gets anything until it has run out.
    let restored: Option<i64> = sqlx::query_scalar("SELECT MAX(restored_ms) FROM plane_restores")
        .fetch_one(&mut *tx)
        .await?;
    if restored.is_some_and(|at| now < at + lease_ms) {
        return Ok(Vec::new());
    }
    // Heard nothing from the cluster's agents for longer than a lease: the plane (or its link to
    // them) was down. For one lease from now, expired leases wait for their holders.
    let activity: Option<(i64, i64)> =
        sqlx::query_as("SELECT last_heard_ms, resumed_ms FROM cluster_activity WHERE cluster = ?")
            .bind(cluster.name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    let resumed = match activity {
        Some((last, resumed)) if now - last <= lease_ms => resumed,
        _ => now,
    };
    sqlx::query(
        "INSERT INTO cluster_activity (cluster, last_heard_ms, resumed_ms) VALUES (?, ?, ?) \
         ON CONFLICT (cluster) DO UPDATE SET last_heard_ms = excluded.last_heard_ms, \
         resumed_ms = excluded.resumed_ms",
    )
    .bind(cluster.name.as_str())
    .bind(now)
    .bind(resumed)
    .execute(&mut *tx)
    .await?;
    let reserved = now < resumed + lease_ms;
    let mut release = Vec::new();
    // The agent's renewals, by the time they run to: written together below.
    let mut renewed: std::collections::BTreeMap<i64, Vec<u32>> = Default::default();
    for change in lease::plan_reserving(&leases, &agents, now, lease_ms, reserved) {
        match change {
            LeaseChange::Renew {
                partition,
                holder,
                expires_ms,
            } if holder == agent => {
                renewed.entry(expires_ms).or_default().push(partition);
            }
            LeaseChange::Renew { .. } => {}
            LeaseChange::Grant {
                partition,
                holder,
                epoch,
                expires_ms,
            } => {
                // A tenure ends when another agent gets the partition: kept, so a start the
                // old holder made within its lease and reports late is still recognised.
                end_tenure(tx, now, cluster.name.as_str(), partition, &holder).await?;
                // The tenure continues when the same agent gets the partition back with nobody
                // in between (a lapse while it was cut off): its reports from before stay valid.
                sqlx::query(
                    "UPDATE leases SET holder = ?1, epoch = ?2, expires_ms = ?3, \
                     tenure_epoch = CASE WHEN tenure_holder = ?1 THEN tenure_epoch ELSE ?2 END, \
                     tenure_holder = ?1 WHERE cluster = ?4 AND partition = ?5",
                )
                .bind(&holder)
                .bind(epoch as i64)
                .bind(expires_ms)
                .bind(cluster.name.as_str())
                .bind(i64::from(partition))
                .execute(&mut *tx)
                .await?;
            }
            LeaseChange::AskRelease { partition, holder } if holder == agent => {
                let epoch = leases
                    .iter()
                    .find(|l| l.partition == partition)
                    .map_or(0, |l| l.epoch);
                release.push(HeldLease {
                    cluster: cluster.name.to_string(),
                    partition,
                    epoch,
                    expires_ms: 0,
                });
            }
            LeaseChange::AskRelease { .. } => {}
        }
    }
    for (expires_ms, partitions) in renewed {
        sqlx::query(
            "UPDATE leases SET expires_ms = ?1 WHERE cluster = ?2 AND holder = ?3 \
             AND partition IN (SELECT value FROM json_each(?4))",
        )
        .bind(expires_ms)
        .bind(cluster.name.as_str())
        .bind(agent)
        .bind(json(&partitions))
        .execute(&mut *tx)
        .await?;
    }
    Ok(release)
}

/// How many ended tenures of a partition are kept.
const TENURES_KEPT: i64 = 8;

/// Before `partition` goes to `holder`: if another agent's tenure is ending, keeps it (who,
/// which epochs, when its lease ran out) and drops the oldest beyond [`TENURES_KEPT`]; and if
/// its lease ran out (rather than it giving the partition back, which it does only once every
/// report about it is committed), what it may have fired is put in doubt
/// ([`super::doubt::open`]).
async fn end_tenure(
    tx: &mut SqliteConnection,
    now: i64,
    cluster: &str,
    partition: u32,
    holder: &str,
) -> sqlx::Result<()> {
    // (holder now, tenure's holder, its first and last epoch, when its lease ends)
    type Tenure = (Option<String>, Option<String>, i64, i64, i64);
    let row: Option<Tenure> = sqlx::query_as(
        "SELECT holder, tenure_holder, tenure_epoch, epoch, expires_ms FROM leases \
         WHERE cluster = ? AND partition = ?",
    )
    .bind(cluster)
    .bind(i64::from(partition))
    .fetch_optional(&mut *tx)
    .await?;
    let Some((lapsed, Some(old), first, last, ended)) = row else {
        return Ok(());
    };
    if old == holder {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO tenures (cluster, partition, holder, first_epoch, last_epoch, ended_ms) \
         VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(cluster)
    .bind(i64::from(partition))
    .bind(&old)
    .bind(first)
    .bind(last)
    .bind(ended)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM tenures WHERE cluster = ?1 AND partition = ?2 AND first_epoch NOT IN \
         (SELECT first_epoch FROM tenures WHERE cluster = ?1 AND partition = ?2 \
          ORDER BY first_epoch DESC LIMIT ?3)",
    )
    .bind(cluster)
    .bind(i64::from(partition))
    .bind(TENURES_KEPT)
    .execute(&mut *tx)
    .await?;
    if lapsed.is_some() {
        super::doubt::open(
            tx,
            now,
            cluster,
            partition,
            &old,
            first as u64,
            last as u64,
            ended,
        )
        .await?;
    }
    Ok(())
}

async fn held_by(tx: &mut SqliteConnection, agent: &str, now: i64) -> sqlx::Result<Vec<HeldLease>> {
    Ok(sqlx::query(
        "SELECT cluster, partition, epoch, expires_ms FROM leases \
         WHERE holder = ? AND expires_ms > ? ORDER BY cluster, partition",
    )
    .bind(agent)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|row| HeldLease {
        cluster: row.get("cluster"),
        partition: row.get::<i64, _>("partition") as u32,
        epoch: row.get::<i64, _>("epoch") as u64,
        expires_ms: row.get("expires_ms"),
    })
    .collect())
}

/// Commands for `agent` whose runs have not reported yet (run now) or not finished (kill).
async fn orders_for(tx: &mut SqliteConnection, agent: &str) -> sqlx::Result<Vec<AgentOrder>> {
    let rows = sqlx::query(
        "SELECT c.kind, c.run_id, c.job, r.state FROM agent_commands c \
         JOIN runs r ON r.run_id = c.run_id WHERE c.agent = ? ORDER BY c.id",
    )
    .bind(agent)
    .fetch_all(&mut *tx)
    .await?;
    let mut orders = Vec::new();
    for row in rows {
        let run_id: String = row.get("run_id");
        let state: String = row.get("state");
        match row.get::<String, _>("kind").as_str() {
            "run_now" if state == "requested" => {
                let job: Option<String> = row.get("job");
                let job: Box<Job> = meridian_domain::stored::read(&job.unwrap_or_default())
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                orders.push(AgentOrder::RunNow { run_id, job });
            }
            "kill" if !super::checks::is_final(&state) => orders.push(AgentOrder::Kill { run_id }),
            _ => {}
        }
    }
    Ok(orders)
}
