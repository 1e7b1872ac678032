//! What an agent fetches: the schedules of the partitions it holds, as it would run them, a
//! page at a time.
//!
//! A plane of 1,000,000 schedules may have a few agents holding most of them: the agent asks
//! for pages ([`PageMark`], a limit) so neither side builds the whole list in one message, and
//! each page is one statement per partition. Jobs are made once per workflow and environment
//! for the call and shared by the schedules that run them.

use std::collections::HashMap;
use std::sync::Arc;

use meridian_domain::run::{Assignment, Job};
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::decode;
use crate::model::{Name, Schedule};

/// A partition an agent says it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedLease {
    pub cluster: String,
    pub partition: u32,
    pub epoch: u64,
}

/// Where the previous page ended: the last schedule it looked at (sent or left out), in its
/// partition (an empty `schedule`: before the partition's first). Pages go through the claimed partitions in (cluster, partition) order, and
/// within one by tenant and name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageMark {
    pub cluster: String,
    pub partition: u32,
    pub schedule: String,
}

/// The schedules of the partitions `agent` (of `agent_cluster`) holds, as it would run them:
/// at most `limit` (0: all) after `after`, and where the next page starts if more follow
/// (a page may hold fewer, none even, when schedules it looked at are left out). Claims that do not match
/// the lease table (another holder, another epoch) are ignored, so an agent can never fetch
/// its way into a partition it was not granted. A partition of a cluster the agent backs up
/// runs each tenant's schedules in the first environment of the agent's own cluster granted to
/// that tenant; tenants without one are left out.
pub async fn assignments(
    pool: &SqlitePool,
    agent: &str,
    agent_cluster: &str,
    claims: &[ClaimedLease],
    after: Option<&PageMark>,
    limit: usize,
) -> sqlx::Result<(Vec<Assignment>, Option<PageMark>)> {
    let mut conn = pool.acquire().await?;
    let mut claims: Vec<&ClaimedLease> = claims.iter().collect();
    claims.sort_by(|a, b| (&a.cluster, a.partition).cmp(&(&b.cluster, b.partition)));
    let mut jobs = JobMaker {
        pauses: crate::model::pauses::all(&mut conn).await?,
        agent_cluster,
        jobs: HashMap::new(),
        backup_envs: HashMap::new(),
    };
    let limit = if limit == 0 { usize::MAX } else { limit };
    let mut out = Vec::new();
    let mut seen = 0;
    for claim in claims {
        // Ids are `tenant.name`, and neither holds a dot.
        let from = match after {
            Some(m) if (&claim.cluster, claim.partition) < (&m.cluster, m.partition) => continue,
            Some(m) if (&claim.cluster, claim.partition) == (&m.cluster, m.partition) => m
                .schedule
                .split_once('.')
                .unwrap_or((m.schedule.as_str(), "")),
            _ => ("", ""),
        };
        let held: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM leases WHERE cluster = ? AND partition = ? \
             AND holder = ? AND epoch = ?)",
        )
        .bind(&claim.cluster)
        .bind(i64::from(claim.partition))
        .bind(agent)
        .bind(claim.epoch as i64)
        .fetch_one(&mut *conn)
        .await?;
        if !held {
            continue;
        }
        // Rows looked at, not assignments made, fill a page: a run of schedules left out
        // (a tenant without an environment here) still moves the mark on.
        let room = limit - seen;
        let rows = sqlx::query(
            "SELECT s.id, s.doc, s.version, s.created_ms, c.fire_ms, \
             (SELECT MAX(through_ms) FROM doubts d WHERE d.schedule_id = s.id) AS doubted, \
             (SELECT json_group_array(json_array(h.fire_ms, h.backfill)) FROM \
              (SELECT fire_ms, backfill FROM handed WHERE schedule_id = s.id ORDER BY fire_ms) h) \
             AS handed \
             FROM (SELECT *, tenant || '.' || name AS id FROM schedules INDEXED BY schedules_page \
                   WHERE cluster = ?1 AND partition = ?2 AND (tenant, name) > (?3, ?4) \
                   ORDER BY tenant, name LIMIT ?5) s \
             LEFT JOIN schedule_cursors c ON c.schedule_id = s.id \
             ORDER BY s.tenant, s.name",
        )
        .bind(&claim.cluster)
        .bind(i64::from(claim.partition))
        .bind(from.0)
        .bind(from.1)
        .bind(i64::try_from(room).unwrap_or(i64::MAX).saturating_add(1))
        .fetch_all(&mut *conn)
        .await?;
        for (i, row) in rows.iter().enumerate() {
            if i == room {
                // The page ends on the row before; none here: before this partition's first.
                let next = PageMark {
                    cluster: claim.cluster.clone(),
                    partition: claim.partition,
                    schedule: i
                        .checked_sub(1)
                        .map_or_else(String::new, |b| rows[b].get("id")),
                };
                return Ok((out, Some(next)));
            }
            seen += 1;
            let schedule: Schedule = decode(row.get("doc"))?;
            let Some((version, job)) = jobs.job(&mut conn, claim, &schedule).await? else {
                continue;
            };
            let Ok(id) = meridian_domain::ScheduleId::new(schedule.id()) else {
                continue;
            };
            let cursor: Option<i64> = row.get("fire_ms");
            let created_ms: i64 = row.get("created_ms");
            // Records in doubt are nobody's to fire: records start after them.
            let doubted: Option<i64> = row.get("doubted");
            // Records handed to whoever holds the partition now (given back unstarted, or
            // settled as never run out of a doubt), and a backfill's, run whatever the
            // catch-up policy says.
            let handed: Vec<(i64, i64)> = serde_json::from_str(row.get("handed"))
                .map_err(|e| sqlx::Error::Decode(e.into()))?;
            let (backfill, returned): (Vec<_>, Vec<_>) = handed.into_iter().partition(|h| h.1 != 0);
            let paused = !crate::model::pauses::covering(&jobs.pauses, &schedule).is_empty();
            out.push(Assignment {
                schedule: id,
                cluster: claim.cluster.clone(),
                partition: claim.partition,
                epoch: claim.epoch,
                // The workflow's version is part of what runs: a new workflow version is a new
                // assignment version too.
                version: (row.get::<i64, _>("version") as u64) << 32 | version,
                spec: schedule.spec.clone(),
                overlap: schedule.overlap,
                // Never before its creation: a late report about a deleted schedule of the same
                // name must not move one created again back into the old one's past.
                after_ms: cursor
                    .map_or(created_ms, |c| c.max(created_ms))
                    .max(doubted.unwrap_or(i64::MIN)),
                job,
                returned: returned.into_iter().map(|h| h.0).collect(),
                paused,
                backfill: backfill.into_iter().map(|h| h.0).collect(),
            });
        }
    }
    Ok((out, None))
}

/// A workflow's latest version and the job that runs it.
type VersionedJob = (u64, Arc<Job>);

/// Makes each (workflow, environment) job once per fetch.
struct JobMaker<'a> {
    pauses: Vec<crate::model::pauses::PauseRecord>,
    agent_cluster: &'a str,
    /// By tenant, workflow and environment: the latest version and its job, or none (the
    /// workflow is gone).
    jobs: HashMap<(String, String, String), Option<VersionedJob>>,
    /// A backed-up cluster's schedules run in the first environment of the agent's cluster
    /// granted to their tenant (none: the tenant's schedules are left out).
    backup_envs: HashMap<String, Option<Name>>,
}

impl JobMaker<'_> {
    async fn job(
        &mut self,
        conn: &mut SqliteConnection,
        claim: &ClaimedLease,
        schedule: &Schedule,
    ) -> sqlx::Result<Option<VersionedJob>> {
        let tenant = schedule.tenant.as_str();
        let environment = if claim.cluster == self.agent_cluster {
            schedule.environment.clone()
        } else {
            if !self.backup_envs.contains_key(tenant) {
                let env: Option<String> = sqlx::query_scalar(
                    "SELECT e.name FROM environments e JOIN grants g ON g.environment = e.name \
                     WHERE e.cluster = ? AND g.tenant = ? ORDER BY e.name LIMIT 1",
                )
                .bind(self.agent_cluster)
                .bind(tenant)
                .fetch_optional(&mut *conn)
                .await?;
                self.backup_envs
                    .insert(tenant.to_owned(), env.and_then(|e| Name::new(e).ok()));
            }
            match &self.backup_envs[tenant] {
                Some(env) => env.clone(),
                None => return Ok(None),
            }
        };
        let key = (
            tenant.to_owned(),
            schedule.workflow.to_string(),
            environment.to_string(),
        );
        if let Some(job) = self.jobs.get(&key) {
            return Ok(job.clone());
        }
        let job = match crate::model::job::latest_workflow(conn, tenant, schedule.workflow.as_str())
            .await?
        {
            Some((version, definition)) => Some((
                version,
                Arc::new(
                    crate::model::job::job_for(conn, &definition, version, &environment).await?,
                ),
            )),
            None => None,
        };
        self.jobs.insert(key, job.clone());
        Ok(job)
    }
}
