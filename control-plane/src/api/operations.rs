//! What operators read: the agents, the partition leases, and the audit trail (each tenant's
//! own entries for a tenant's roles).

use axum::extract::State;
use axum::routing::{MethodRouter, get};
use axum::{Extension, Json};
use serde::Deserialize;

use super::principal::Caller;
use super::{Api, ApiError, ApiResult, Params, ReadOptions};
use crate::model::{Name, query};
use crate::policy::{Kind, Scope};

/// Audit query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditOptions {
    #[serde(default)]
    pub stale: bool,
    /// Only entries at or after this time (ms since the epoch).
    #[serde(default)]
    pub since_ms: i64,
    /// At most this many, newest first (default 100, at most 1000).
    #[serde(default = "default_audit_limit")]
    pub limit: u32,
    /// Only entries before this time (ms since the epoch).
    #[serde(default)]
    pub until_ms: Option<i64>,
    /// Only entries older than this log index (the next page: the last entry's `log_index`).
    #[serde(default)]
    pub before_index: Option<u64>,
    /// Only this actor's (`user:alice`, `token:ci`).
    #[serde(default)]
    pub actor: Option<String>,
    /// Only entries whose subject contains this.
    #[serde(default)]
    pub subject: Option<String>,
    /// Only this tenant's.
    #[serde(default)]
    pub tenant: Option<String>,
    /// `applied` or `refused`.
    #[serde(default)]
    pub outcome: Option<String>,
}

fn default_audit_limit() -> u32 {
    100
}

/// `GET /agents`.
pub fn agents() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Params(o): Params<ReadOptions>|
               -> ApiResult<_> {
            let read = api.reader(&c, o.stale).await?;
            read.scope(Kind::Operations, "agents")?;
            Ok(Json(query::agents(read.pool).await?))
        },
    )
}

/// `GET /leases`.
pub fn leases() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Params(o): Params<ReadOptions>|
               -> ApiResult<_> {
            let read = api.reader(&c, o.stale).await?;
            read.scope(Kind::Operations, "leases")?;
            Ok(Json(query::leases(read.pool).await?))
        },
    )
}

/// `GET /audit`: filtered, newest first, paged by index.
pub fn audit() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Params(o): Params<AuditOptions>|
               -> ApiResult<_> {
            if !(1..=1000).contains(&o.limit) {
                return Err(ApiError::bad_input(
                    "query `limit`: must be between 1 and 1000",
                ));
            }
            if let Some(outcome) = &o.outcome
                && !["applied", "refused"].contains(&outcome.as_str())
            {
                return Err(ApiError::bad_input(format!(
                    "query `outcome`: `{outcome}` is not `applied` or `refused`"
                )));
            }
            let read = api.reader(&c, o.stale).await?;
            let scope = read.scope(Kind::Audit, "the audit trail")?;
            let filter = query::AuditFilter {
                since_ms: o.since_ms,
                until_ms: o.until_ms,
                before_index: o.before_index,
                actor: o.actor,
                subject: o.subject,
                tenant: o.tenant,
                outcome: o.outcome,
                within: match scope {
                    Scope::Tenants(ts) => Some(ts.iter().map(Name::to_string).collect()),
                    _ => None,
                },
                limit: o.limit,
            };
            Ok(Json(query::audit(read.pool, &filter).await?))
        },
    )
}
