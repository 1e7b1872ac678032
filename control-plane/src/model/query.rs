//! Reads of the model for the API, CLI and UI. Plain SQL over the tables the processor writes;
//! entities come back from their stored JSON documents.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::{Row, SqlitePool};

use super::{
    ApiToken, Cluster, DataCenter, Environment, Grant, Name, Schedule, Tenant, Workflow,
    WorkflowVersion,
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

fn decode<T: DeserializeOwned>(doc: String) -> sqlx::Result<T> {
    serde_json::from_str(&doc).map_err(|e| sqlx::Error::Decode(Box::new(e)))
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

/// The newest version of every workflow, optionally of one tenant.
pub async fn workflows(
    pool: &SqlitePool,
    tenant: Option<&Name>,
) -> sqlx::Result<Vec<WorkflowVersion>> {
    match tenant {
        Some(t) => {
            workflow_versions(
                pool,
                &format!("{LATEST} AND tenant = ? ORDER BY name"),
                &[t.as_str()],
            )
            .await
        }
        None => workflow_versions(pool, &format!("{LATEST} ORDER BY tenant, name"), &[]).await,
    }
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

pub async fn schedules(pool: &SqlitePool, tenant: Option<&Name>) -> sqlx::Result<Vec<Schedule>> {
    match tenant {
        Some(t) => {
            docs(
                pool,
                "SELECT doc FROM schedules WHERE tenant = ? ORDER BY name",
                &[t.as_str()],
            )
            .await
        }
        None => docs(pool, "SELECT doc FROM schedules ORDER BY tenant, name", &[]).await,
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

/// One applied command in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub log_index: u64,
    pub actor: String,
    pub at_ms: i64,
    pub op: String,
    pub subject: String,
    pub command: serde_json::Value,
}

/// The newest `limit` audit entries at or after `since_ms`, newest first.
pub async fn audit(pool: &SqlitePool, since_ms: i64, limit: u32) -> sqlx::Result<Vec<AuditEntry>> {
    sqlx::query(
        "SELECT log_index, actor, at_ms, op, subject, command FROM audit \
         WHERE at_ms >= ? ORDER BY log_index DESC LIMIT ?",
    )
    .bind(since_ms)
    .bind(i64::from(limit))
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
        })
    })
    .collect()
}

/// The token whose secret hashes to `hash` (lower-case hex SHA-256).
pub async fn token_by_hash(pool: &SqlitePool, hash: &str) -> sqlx::Result<Option<ApiToken>> {
    one(pool, "SELECT doc FROM tokens WHERE hash = ?", &[hash]).await
}

/// Every token, without a way back to its secret.
pub async fn tokens(pool: &SqlitePool) -> sqlx::Result<Vec<ApiToken>> {
    docs(pool, "SELECT doc FROM tokens ORDER BY name", &[]).await
}
