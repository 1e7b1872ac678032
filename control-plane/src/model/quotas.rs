//! Quotas: a grant's `max_concurrent_runs` — at most that many of the tenant's runs going in
//! the environment at once, across every agent — split into shares the agents enforce
//! themselves, so the limit holds through a cut link as leases do.
//!
//! Each heartbeat says, per (tenant, environment), the agent's runs going and waiting and the
//! share it enforces; the plane answers with its share, decided ([`decide`]) at the
//! proposal's time so every replica agrees. A share is only ever granted out of what the other
//! agents cannot be using: each counts as the most of what it was granted, what it last said it
//! enforces and what it last said it runs, until it is silent for two leases (an agent stops
//! starting runs once its shares are a lease old unheard). An agent with runs waiting while
//! another holds more than it uses takes that from it over the next heartbeats: the idle one
//! shrinks to its fair part, the waiting one grows.

use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection};

use super::outcome::Context;
use super::{Heartbeat, QuotaUsage};

/// One agent's part of a grant, as [`decide`] weighs it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holder {
    pub granted: u32,
    pub acked: u32,
    pub going: u32,
    pub waiting: u32,
    /// Heard within a lease.
    pub live: bool,
}

impl Holder {
    /// The most it may be using: what it was granted (it may have the answer), what it said it
    /// enforces (it may not), what it runs (a share cut below it lets nothing more start).
    pub fn committed(&self) -> u32 {
        self.granted.max(self.acked).max(self.going)
    }

    /// Runs waiting while its share is smaller than what it wants.
    fn starving(&self) -> bool {
        self.live && self.waiting > 0 && self.granted < self.going + self.waiting
    }
}

/// The share of a grant of `max` runs for an agent that runs `going` and has `waiting`, beside
/// `others`, among `agents` agents that run the environment: what it wants (its fair part,
/// `max / agents` rounded up, even idle, so a run starts without a round trip; more if it
/// wants more and nobody else is starving; no more than its fair part if someone is), but
/// never more than the others leave.
pub fn decide(max: u32, me: Holder, others: &[Holder], agents: u32) -> u32 {
    let taken: u32 = others.iter().map(Holder::committed).sum();
    let free = max.saturating_sub(taken);
    let fair = max.div_ceil(agents.max(1));
    let want = me.going + me.waiting;
    let target = if others.iter().any(Holder::starving) {
        want.min(fair)
    } else {
        want.max(fair)
    };
    target.min(free)
}

/// A share the plane grants an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaShare {
    pub tenant: String,
    pub environment: String,
    pub share: u32,
}

/// The heartbeating agent's shares of every grant of an environment on `clusters` (its own
/// cluster and those it backs up), its usage recorded; agents silent for two leases forgotten.
pub(super) async fn shares(
    tx: &mut SqliteConnection,
    context: Context,
    hb: &Heartbeat,
    clusters: &[super::Cluster],
) -> sqlx::Result<Vec<QuotaShare>> {
    let now = context.at_ms;
    for u in &hb.usage {
        // Only of the environments it may run: an agent speaks for its clusters alone.
        let cluster: Option<String> =
            sqlx::query_scalar("SELECT cluster FROM environments WHERE name = ?")
                .bind(&u.environment)
                .fetch_optional(&mut *tx)
                .await?;
        if cluster.is_some_and(|c| clusters.iter().any(|k| k.name.as_str() == c)) {
            record(tx, hb, u, now).await?;
        }
    }
    let mut out = Vec::new();
    for cluster in clusters {
        let lease_ms = i64::from(cluster.lease_seconds) * 1000;
        sqlx::query(
            "DELETE FROM quota_shares WHERE heard_ms < ?1 AND environment IN \
             (SELECT name FROM environments WHERE cluster = ?2)",
        )
        .bind(now - 2 * lease_ms)
        .bind(cluster.name.as_str())
        .execute(&mut *tx)
        .await?;
        let agents: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM agents WHERE cluster = ? AND gone = 0 AND last_seen_ms > ?",
        )
        .bind(cluster.name.as_str())
        .bind(now - lease_ms)
        .fetch_one(&mut *tx)
        .await?;
        let docs: Vec<String> = sqlx::query_scalar(
            "SELECT g.doc FROM grants g JOIN environments e ON e.name = g.environment \
             WHERE e.cluster = ? ORDER BY g.tenant, g.environment",
        )
        .bind(cluster.name.as_str())
        .fetch_all(&mut *tx)
        .await?;
        for doc in docs {
            let grant: super::Grant = super::checks::read_doc(&doc)?;
            let (tenant, environment) = (grant.tenant.to_string(), grant.environment.to_string());
            let max = grant.max_concurrent_runs;
            let rows = sqlx::query(
                "SELECT agent, granted, acked, going, waiting, heard_ms FROM quota_shares \
                 WHERE tenant = ? AND environment = ?",
            )
            .bind(&tenant)
            .bind(&environment)
            .fetch_all(&mut *tx)
            .await?;
            let mut me = Holder {
                live: true,
                ..Holder::default()
            };
            let mut others = Vec::new();
            for row in rows {
                let h = Holder {
                    granted: row.get::<i64, _>("granted") as u32,
                    acked: row.get::<i64, _>("acked") as u32,
                    going: row.get::<i64, _>("going") as u32,
                    waiting: row.get::<i64, _>("waiting") as u32,
                    live: row.get::<i64, _>("heard_ms") > now - lease_ms,
                };
                if row.get::<String, _>("agent") == hb.agent {
                    me = Holder { live: true, ..h };
                } else {
                    others.push(h);
                }
            }
            // Gone (a graceful stop): it runs nothing more of this agent's.
            let share = if hb.releasing {
                0
            } else {
                decide(max, me, &others, agents.max(1) as u32)
            };
            sqlx::query(
                "INSERT INTO quota_shares (tenant, environment, agent, granted, heard_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant, environment, agent) \
                 DO UPDATE SET granted = excluded.granted, heard_ms = excluded.heard_ms",
            )
            .bind(&tenant)
            .bind(&environment)
            .bind(&hb.agent)
            .bind(i64::from(share))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            out.push(QuotaShare {
                tenant,
                environment,
                share,
            });
        }
    }
    Ok(out)
}

/// What the agent says of one grant: its runs going and waiting, and the share it enforces.
async fn record(
    tx: &mut SqliteConnection,
    hb: &Heartbeat,
    u: &QuotaUsage,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO quota_shares (tenant, environment, agent, acked, going, waiting, heard_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (tenant, environment, agent) DO UPDATE \
         SET acked = excluded.acked, going = excluded.going, waiting = excluded.waiting, \
         heard_ms = excluded.heard_ms",
    )
    .bind(&u.tenant)
    .bind(&u.environment)
    .bind(&hb.agent)
    .bind(i64::from(u.share))
    .bind(i64::from(u.going))
    .bind(i64::from(u.waiting))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(granted: u32, acked: u32, going: u32, waiting: u32) -> Holder {
        Holder {
            granted,
            acked,
            going,
            waiting,
            live: true,
        }
    }

    #[test]
    fn one_agent_holds_the_whole_grant() {
        assert_eq!(decide(10, h(0, 0, 0, 0), &[], 1), 10);
        assert_eq!(decide(10, h(10, 10, 3, 0), &[], 1), 10);
    }

    #[test]
    fn idle_agents_hold_their_fair_part_and_a_busy_one_takes_only_what_is_free() {
        // 3 among 3: one each, idle.
        assert_eq!(
            decide(3, h(0, 0, 0, 0), &[h(1, 1, 0, 0), h(1, 1, 0, 0)], 3),
            1
        );
        // Busy, while the others hold theirs: what is left, no more.
        assert_eq!(
            decide(3, h(1, 1, 1, 4), &[h(1, 1, 0, 0), h(1, 1, 0, 0)], 3),
            1
        );
    }

    #[test]
    fn an_idle_agent_gives_way_to_a_starving_one_which_then_grows() {
        let starving = h(1, 1, 1, 4);
        // The idle one shrinks to what it uses …
        assert_eq!(decide(3, h(1, 1, 0, 0), &[starving, h(1, 1, 0, 0)], 3), 0);
        // … and counts at its old share until it says it enforces the new one …
        assert_eq!(decide(3, starving, &[h(0, 1, 0, 0), h(0, 1, 0, 0)], 3), 1);
        // … after which the starving one takes what is free.
        assert_eq!(decide(3, starving, &[h(0, 0, 0, 0), h(0, 0, 0, 0)], 3), 3);
    }

    #[test]
    fn what_others_run_is_never_granted_again_whatever_they_were_granted() {
        // A grant lowered to 2 while another agent runs 3: nothing for anyone else.
        assert_eq!(decide(2, h(0, 0, 0, 5), &[h(0, 0, 3, 0)], 2), 0);
        // A silent agent still counts at the most it may use.
        let silent = Holder {
            live: false,
            ..h(2, 2, 1, 0)
        };
        assert_eq!(decide(3, h(0, 0, 0, 5), &[silent], 2), 1);
    }
}
