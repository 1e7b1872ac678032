//! `/in-doubt`: records in doubt after a takeover (each tenant's own), and settling them.

use axum::extract::State;
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Json};

use super::principal::Caller;
use super::{Api, ApiResult, Params, ReadOptions};
use crate::model::{Command, Name, ResolveDoubts, doubt};
use crate::policy::{Kind, Scope};

/// `GET /in-doubt`: every range of records in doubt the caller may read the runs of.
pub fn list() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Params(o): Params<ReadOptions>|
               -> ApiResult<_> {
            let read = api.reader(&c, o.stale).await?;
            let tenants: Option<Vec<String>> = match read.scope(Kind::Run, "in-doubt")? {
                Scope::Tenants(tenants) => Some(tenants.iter().map(Name::to_string).collect()),
                _ => None,
            };
            let mut conn = read.pool.acquire().await?;
            Ok(Json(doubt::list(&mut conn, tenants.as_deref()).await?))
        },
    )
}

/// `POST /in-doubt/resolve`: settles a tenant's records in doubt (of one schedule, if named).
pub fn resolve() -> MethodRouter<Api> {
    post(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Json(r): Json<ResolveDoubts>| {
            api.propose(&c, Command::ResolveDoubts(r)).await.map(Json)
        },
    )
}
