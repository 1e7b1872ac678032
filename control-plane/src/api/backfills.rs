//! `/backfills`: ranges of a schedule's fire times run after the fact, with their progress;
//! making one, pausing, resuming and cancelling it.

use axum::extract::{Path, State};
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Json};

use super::principal::Caller;
use super::{Api, ApiResult, Params, ReadOptions, create, found, name, tenant_filter};
use crate::model::history::tenant_of_run;
use crate::model::{BackfillAction, BackfillControl, Command, backfills};
use crate::policy::{Action, Kind, Object};

/// `GET /backfills` (every one the caller may see: its tenants', with `?tenant=` that one's,
/// newest first) and `POST /backfills` (a new one).
pub fn list() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Params(o): Params<ReadOptions>|
               -> ApiResult<_> {
            let tenant = tenant_filter(&o)?;
            let read = api.reader(&c, o.stale).await?;
            let scope = read.scope(Kind::Run, "backfills")?;
            let all = backfills::list(read.pool, tenant.as_ref()).await?;
            Ok(Json(
                all.into_iter()
                    .filter(|b| scope.contains(&b.request.tenant))
                    .collect::<Vec<_>>(),
            ))
        },
    )
    .merge(create(Command::CreateBackfill))
}

/// `GET /backfills/{id}`: one backfill and its progress.
pub fn one() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Path(id): Path<String>,
               Params(o): Params<ReadOptions>|
               -> ApiResult<_> {
            let read = api.reader(&c, o.stale).await?;
            let what = format!("backfill `{id}`");
            // Another tenant's is as absent as one that never was.
            let tenant = tenant_of_run(&id)
                .map(|t| t.to_string())
                .unwrap_or_default();
            let tenant = name("id", tenant)?;
            read.allow(Action::Read, &Object::Run(tenant), &what)?;
            Ok(Json(found(&what, backfills::get(read.pool, &id).await?)?))
        },
    )
}

/// `POST /backfills/{id}/pause|resume|cancel`.
pub fn control(action: BackfillAction) -> MethodRouter<Api> {
    post(
        move |State(api): State<Api>, Extension(c): Extension<Caller>, Path(id): Path<String>| async move {
            api.propose(&c, Command::ControlBackfill(BackfillControl { id, action }))
                .await
                .map(Json)
        },
    )
}
