//! `/pauses`: schedules, workflows, tenants and environments held still, pausing and resuming.

use axum::extract::State;
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Json};

use super::principal::Caller;
use super::{Api, ApiResult, Body, Params, ReadOptions, tenant_filter};
use crate::model::authorize::{self, Infra};
use crate::model::{Command, Pause, PauseScope, Resume, pauses};
use crate::policy::{Kind, Scope};

/// `GET /pauses`: every pause the caller may see — its tenants' (with `?tenant=`, that one's),
/// and those of environments granted to them.
pub fn list() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Params(o): Params<ReadOptions>|
               -> ApiResult<_> {
            let tenant = tenant_filter(&o)?;
            let read = api.reader(&c, o.stale).await?;
            let scope = read.scope(Kind::Definition, "pauses")?;
            let all = pauses::list(read.pool, tenant.as_ref()).await?;
            let mut conn = read.pool.acquire().await?;
            let mut shown = Vec::new();
            for pause in all {
                let visible = match &pause.scope {
                    PauseScope::Environment { name } => {
                        scope == Scope::All
                            || scope.any(
                                &authorize::granted_to(&mut conn, Infra::Environment, name).await?,
                            )
                    }
                    other => other.tenant().is_some_and(|t| scope.contains(t)),
                };
                if visible {
                    shown.push(pause);
                }
            }
            Ok(Json(shown))
        },
    )
}

/// `POST /pauses`: pause a schedule, a workflow's schedules, a tenant or an environment.
pub fn pause() -> MethodRouter<Api> {
    post(
        async |State(api): State<Api>, Extension(c): Extension<Caller>, Body(p): Body<Pause>| {
            api.propose(&c, Command::Pause(p)).await.map(Json)
        },
    )
}

/// `POST /pauses/resume`: lift a pause, catching up what it skipped if asked.
pub fn resume() -> MethodRouter<Api> {
    post(
        async |State(api): State<Api>, Extension(c): Extension<Caller>, Body(r): Body<Resume>| {
            api.propose(&c, Command::Resume(r)).await.map(Json)
        },
    )
}
