//! Reads of the model for the API, CLI and UI. Plain SQL over the tables the processor writes;
//! entities come back from their stored JSON documents.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::{Row, SqlitePool};

mod assignments;
mod runs;

pub use assignments::{ClaimedLease, PageMark, assignments};
use runs::in_list;
pub use runs::*;

use super::{
    ApiToken, Cluster, DataCenter, Environment, Grant, Name, Schedule, Session, Tenant, User,
    Workflow, WorkflowVersion,
};

async fn docs<T: DeserializeOwned>(
    pool: &SqlitePool,
    sql: &str,
    binds: &[&str],
) -> sqlx::Result<Vec<T>> {
    let mut query = sqlx::query(sql);
    for b in binds {
        query = query.bind(*b);
    }
    query
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| decode(row.get::<String, _>("doc")))
        .collect()
}

pub(super) fn decode<T: DeserializeOwned>(doc: String) -> sqlx::Result<T> {
    super::checks::read_doc(&doc)
}

async fn one<T: DeserializeOwned>(
    pool: &SqlitePool,
    sql: &str,
    binds: &[&str],
) -> sqlx::Result<Option<T>> {
    Ok(docs(pool, sql, binds).await?.into_iter().next())
}

pub async fn data_centers(pool: &SqlitePool) -> sqlx::Result<Vec<DataCenter>> {
    docs(pool, "SELECT doc FROM data_centers ORDER BY name", &[]).await
}

pub async fn data_center(pool: &SqlitePool, name: &Name) -> sqlx::Result<Option<DataCenter>> {
    one(
        pool,
        "SELECT doc FROM data_centers WHERE name = ?",
        &[name.as_str()],
    )
    .await
}

pub async fn clusters(pool: &SqlitePool) -> sqlx::Result<Vec<Cluster>> {
    docs(pool, "SELECT doc FROM clusters ORDER BY name", &[]).await
}

pub async fn cluster(pool: &SqlitePool, name: &Name) -> sqlx::Result<Option<Cluster>> {
    one(
        pool,
        "SELECT doc FROM clusters WHERE name = ?",
        &[name.as_str()],
    )
    .await
}

pub async fn environments(pool: &SqlitePool) -> sqlx::Result<Vec<Environment>> {
    docs(pool, "SELECT doc FROM environments ORDER BY name", &[]).await
}

pub async fn environment(pool: &SqlitePool, name: &Name) -> sqlx::Result<Option<Environment>> {
    one(
        pool,
        "SELECT doc FROM environments WHERE name = ?",
        &[name.as_str()],
    )
    .await
}

pub async fn tenants(pool: &SqlitePool) -> sqlx::Result<Vec<Tenant>> {
    docs(pool, "SELECT doc FROM tenants ORDER BY name", &[]).await
}

pub async fn tenant(pool: &SqlitePool, name: &Name) -> sqlx::Result<Option<Tenant>> {
    one(
        pool,
        "SELECT doc FROM tenants WHERE name = ?",
        &[name.as_str()],
    )
    .await
}

/// Grants, optionally only those of one tenant.
pub async fn grants(pool: &SqlitePool, tenant: Option<&Name>) -> sqlx::Result<Vec<Grant>> {
    match tenant {
        Some(t) => {
            docs(
                pool,
                "SELECT doc FROM grants WHERE tenant = ? ORDER BY environment",
                &[t.as_str()],
            )
            .await
        }
        None => {
            docs(
                pool,
                "SELECT doc FROM grants ORDER BY tenant, environment",
                &[],
            )
            .await
        }
    }
}

pub async fn grant(
    pool: &SqlitePool,
    tenant: &Name,
    environment: &Name,
) -> sqlx::Result<Option<Grant>> {
    one(
        pool,
        "SELECT doc FROM grants WHERE tenant = ? AND environment = ?",
        &[tenant.as_str(), environment.as_str()],
    )
    .await
}

async fn workflow_versions(
    pool: &SqlitePool,
    sql: &str,
    binds: &[&str],
) -> sqlx::Result<Vec<WorkflowVersion>> {
    let mut query = sqlx::query(sql);
    for b in binds {
        query = query.bind(*b);
    }
    query
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| {
            let workflow: Workflow = decode(row.get::<String, _>("doc"))?;
            Ok(WorkflowVersion {
                version: row.get::<i64, _>("version") as u64,
                workflow,
            })
        })
        .collect()
}

const LATEST: &str = "SELECT version, doc FROM workflows w WHERE deleted = 0 AND version = \
     (SELECT MAX(version) FROM workflows v WHERE v.tenant = w.tenant AND v.name = w.name)";

/// The newest version of each workflow on `page`.
pub async fn workflows(pool: &SqlitePool, page: &Page) -> sqlx::Result<Vec<WorkflowVersion>> {
    let (clause, binds) = page.clause();
    let sql = format!("{LATEST}{clause} ORDER BY tenant, name{}", page.limit_sql());
    let binds: Vec<&str> = binds.iter().map(String::as_str).collect();
    workflow_versions(pool, &sql, &binds).await
}

/// One workflow: the given version, or the newest.
pub async fn workflow(
    pool: &SqlitePool,
    tenant: &Name,
    name: &Name,
    version: Option<u64>,
) -> sqlx::Result<Option<WorkflowVersion>> {
    let found =
        match version {
            Some(v) => workflow_versions(
                pool,
                "SELECT version, doc FROM workflows WHERE tenant = ? AND name = ? AND version = ?",
                &[tenant.as_str(), name.as_str(), &v.to_string()],
            )
            .await?,
            None => {
                workflow_versions(
                    pool,
                    &format!("{LATEST} AND tenant = ? AND name = ?"),
                    &[tenant.as_str(), name.as_str()],
                )
                .await?
            }
        };
    Ok(found.into_iter().next())
}

/// The version numbers of a workflow as it stands (since it was last made after a delete),
/// newest first; empty if it does not exist.
pub async fn workflow_version_numbers(
    pool: &SqlitePool,
    tenant: &Name,
    name: &Name,
) -> sqlx::Result<Vec<u64>> {
    let versions: Vec<i64> = sqlx::query_scalar(
        "SELECT version FROM workflows WHERE tenant = ? AND name = ? AND deleted = 0 \
         ORDER BY version DESC",
    )
    .bind(tenant.as_str())
    .bind(name.as_str())
    .fetch_all(pool)
    .await?;
    Ok(versions.into_iter().map(|v| v as u64).collect())
}

/// The schedules on `page`.
pub async fn schedules(pool: &SqlitePool, page: &Page) -> sqlx::Result<Vec<Schedule>> {
    let (clause, binds) = page.clause();
    let sql = format!(
        "SELECT doc FROM schedules WHERE true{clause} ORDER BY tenant, name{}",
        page.limit_sql()
    );
    let binds: Vec<&str> = binds.iter().map(String::as_str).collect();
    docs(pool, &sql, &binds).await
}

/// Which of a list of tenants' items (workflows, schedules) to read, in (tenant, name) order:
/// lists that may hold a million items are read a page at a time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Only this tenant's.
    pub tenant: Option<Name>,
    /// Only these tenants' (the reader's scope); none: any tenant's.
    pub within: Option<Vec<Name>>,
    /// The items after this one (tenant, name): the previous page's last.
    pub after: Option<(Name, Name)>,
    /// At most this many; none: all.
    pub limit: Option<u32>,
}

impl Page {
    /// Every item.
    pub fn all() -> Self {
        Self::default()
    }

    /// Every item of `tenant`.
    pub fn of(tenant: &Name) -> Self {
        Self {
            tenant: Some(tenant.clone()),
            ..Self::default()
        }
    }

    /// ` AND …` conditions for a `WHERE`, and what they bind, in order.
    fn clause(&self) -> (String, Vec<String>) {
        let mut sql = String::new();
        let mut binds = Vec::new();
        if let Some(t) = &self.tenant {
            sql.push_str(" AND tenant = ?");
            binds.push(t.to_string());
        }
        if let Some(within) = &self.within {
            sql.push_str(" AND tenant IN (SELECT value FROM json_each(?))");
            binds.push(serde_json::to_string(within).expect("names serialise"));
        }
        if let Some((t, n)) = &self.after {
            sql.push_str(" AND (tenant, name) > (?, ?)");
            binds.push(t.to_string());
            binds.push(n.to_string());
        }
        (sql, binds)
    }

    fn limit_sql(&self) -> String {
        self.limit
            .map(|l| format!(" LIMIT {l}"))
            .unwrap_or_default()
    }
}

pub async fn schedule(
    pool: &SqlitePool,
    tenant: &Name,
    name: &Name,
) -> sqlx::Result<Option<Schedule>> {
    one(
        pool,
        "SELECT doc FROM schedules WHERE tenant = ? AND name = ?",
        &[tenant.as_str(), name.as_str()],
    )
    .await
}

/// One entry of the audit trail: an applied command, or a refused write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditEntry {
    pub log_index: u64,
    pub actor: String,
    pub at_ms: i64,
    pub op: String,
    pub subject: String,
    pub command: serde_json::Value,
    /// The tenant it concerns (none: the federation).
    #[serde(default)]
    pub tenant: Option<String>,
    /// `applied` or `refused`.
    #[serde(default)]
    pub outcome: String,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// What `audit` filters by.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since_ms: i64,
    pub until_ms: Option<i64>,
    /// Only entries older than this one (by log index: the keyset of a page of the trail,
    /// exact where many entries share a millisecond).
    pub before_index: Option<u64>,
    pub actor: Option<String>,
    /// A part of the subject.
    pub subject: Option<String>,
    pub tenant: Option<String>,
    pub outcome: Option<String>,
    /// Only entries about these tenants (the reader's scope); none: all.
    pub within: Option<Vec<String>>,
    pub limit: u32,
}

impl AuditFilter {
    /// The newest `limit` entries, applied or refused.
    pub fn recent(limit: u32) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    /// The newest `limit` applied commands.
    pub fn applied(limit: u32) -> Self {
        Self {
            outcome: Some("applied".into()),
            ..Self::recent(limit)
        }
    }
}

/// The newest `limit` audit entries matching `filter`, newest first.
pub async fn audit(pool: &SqlitePool, filter: &AuditFilter) -> sqlx::Result<Vec<AuditEntry>> {
    let mut sql = String::from(
        "SELECT log_index, actor, at_ms, op, subject, command, tenant, outcome, message \
         FROM audit WHERE at_ms >= ?",
    );
    let mut texts: Vec<String> = Vec::new();
    if filter.until_ms.is_some() {
        sql.push_str(" AND at_ms < ?");
    }
    if filter.before_index.is_some() {
        sql.push_str(" AND log_index < ?");
    }
    for (clause, value) in [
        (" AND actor = ?", &filter.actor),
        (" AND instr(subject, ?) > 0", &filter.subject),
        (" AND tenant = ?", &filter.tenant),
        (" AND outcome = ?", &filter.outcome),
    ] {
        if let Some(v) = value {
            sql.push_str(clause);
            texts.push(v.clone());
        }
    }
    if let Some(within) = &filter.within {
        sql.push_str(&in_list(" AND tenant", within.len()));
        texts.extend(within.iter().cloned());
    }
    sql.push_str(" ORDER BY log_index DESC LIMIT ?");
    let mut query = sqlx::query(&sql).bind(filter.since_ms);
    if let Some(until) = filter.until_ms {
        query = query.bind(until);
    }
    if let Some(before) = filter.before_index {
        query = query.bind(before as i64);
    }
    for t in &texts {
        query = query.bind(t);
    }
    query
        .bind(i64::from(filter.limit))
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| {
            Ok(AuditEntry {
                log_index: row.get::<i64, _>("log_index") as u64,
                actor: row.get("actor"),
                at_ms: row.get("at_ms"),
                op: row.get("op"),
                subject: row.get("subject"),
                command: decode(row.get::<String, _>("command"))?,
                tenant: row.get("tenant"),
                outcome: row.get("outcome"),
                message: row.get("message"),
            })
        })
        .collect()
}

/// The token whose secret hashes to `hash` (lower-case hex SHA-256).
pub async fn token_by_hash(pool: &SqlitePool, hash: &str) -> sqlx::Result<Option<ApiToken>> {
    sqlx::query_scalar::<_, String>("SELECT doc FROM tokens WHERE hash = ?")
        .bind(hash)
        .fetch_optional(pool)
        .await?
        .map(|doc| super::access::decode_tagged(&doc))
        .transpose()
}

/// Every token, without a way back to its secret.
pub async fn tokens(pool: &SqlitePool) -> sqlx::Result<Vec<ApiToken>> {
    sqlx::query_scalar::<_, String>("SELECT doc FROM tokens ORDER BY name")
        .fetch_all(pool)
        .await?
        .iter()
        .map(|doc| super::access::decode_tagged(doc))
        .collect()
}

/// Every user (their public records, never a password hash).
pub async fn users(pool: &SqlitePool) -> sqlx::Result<Vec<User>> {
    sqlx::query("SELECT doc FROM users ORDER BY name")
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| super::access::decode_user(row.get("doc")))
        .collect()
}

pub async fn user(pool: &SqlitePool, name: &Name) -> sqlx::Result<Option<User>> {
    let mut conn = pool.acquire().await?;
    super::access::user(&mut conn, name).await
}

/// A user with its password hash (for checking a sign-in).
pub async fn user_with_password(
    pool: &SqlitePool,
    name: &Name,
) -> sqlx::Result<Option<(User, String)>> {
    sqlx::query("SELECT doc, password FROM users WHERE name = ?")
        .bind(name.as_str())
        .fetch_optional(pool)
        .await?
        .map(|row| {
            Ok((
                super::access::decode_user(row.get("doc"))?,
                row.get("password"),
            ))
        })
        .transpose()
}

/// The live session whose secret hashes to `hash`, with its user, at `now_ms`.
pub async fn session_by_hash(
    pool: &SqlitePool,
    hash: &str,
    now_ms: i64,
) -> sqlx::Result<Option<(Session, User)>> {
    let row = sqlx::query(
        "SELECT s.doc AS session, u.doc AS user FROM sessions s JOIN users u ON u.name = s.user \
         WHERE s.hash = ? AND s.expires_ms > ?",
    )
    .bind(hash)
    .bind(now_ms)
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        Ok((
            decode(row.get("session"))?,
            super::access::decode_user(row.get("user"))?,
        ))
    })
    .transpose()
}

/// A run as the history holds it.
/// A partition lease, for status pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "Lease")]
pub struct LeaseRecord {
    pub cluster: String,
    pub partition: u32,
    pub holder: Option<String>,
    pub epoch: u64,
    pub expires_ms: i64,
}

pub async fn leases(pool: &SqlitePool) -> sqlx::Result<Vec<LeaseRecord>> {
    Ok(sqlx::query(
        "SELECT cluster, partition, holder, epoch, expires_ms FROM leases ORDER BY cluster, partition",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| LeaseRecord {
        cluster: row.get("cluster"),
        partition: row.get::<i64, _>("partition") as u32,
        holder: row.get("holder"),
        epoch: row.get::<i64, _>("epoch") as u64,
        expires_ms: row.get("expires_ms"),
    })
    .collect())
}

/// An agent the plane has heard from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "Agent")]
pub struct AgentRecord {
    pub hostname: String,
    pub cluster: String,
    pub last_seen_ms: i64,
    pub free_slots: u32,
    /// Shut down gracefully (gave its partitions back).
    pub gone: bool,
    /// Its host's load as its last heartbeat said (none: an older agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<super::AgentLoad>,
}

pub async fn agents(pool: &SqlitePool) -> sqlx::Result<Vec<AgentRecord>> {
    Ok(sqlx::query(
        "SELECT hostname, cluster, last_seen_ms, free_slots, gone, load FROM agents \
         ORDER BY hostname",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| AgentRecord {
        hostname: row.get("hostname"),
        cluster: row.get("cluster"),
        last_seen_ms: row.get("last_seen_ms"),
        free_slots: row.get::<i64, _>("free_slots") as u32,
        gone: row.get::<i64, _>("gone") != 0,
        load: row
            .get::<Option<String>, _>("load")
            .and_then(|l| serde_json::from_str(&l).ok()),
    })
    .collect())
}

/// Tenants that set `field` (`log_retention_days`, `history_retention_days`) themselves.
pub async fn tenants_retention(
    model: &SqlitePool,
    field: &str,
) -> sqlx::Result<std::collections::BTreeMap<String, u32>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT name, json_extract(doc, '$.doc.' || ?) AS days FROM tenants \
         WHERE days IS NOT NULL",
    )
    .bind(field)
    .fetch_all(model)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, days)| (name, days.clamp(1, i64::from(u32::MAX)) as u32))
        .collect())
}
