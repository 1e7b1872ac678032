//! `/alerts`: channels (where alerts go), rules (what raises them) and the deliveries with
//! every attempt. A tenant's are its members' (written by its owners and developers, as its
//! definitions); the federation's (`_` in a path) are operators' to see and admins' to write.

use axum::extract::{Path, State};
use axum::routing::{MethodRouter, delete, get};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::principal::Caller;
use super::{Api, ApiError, ApiResult, Params, Reader, create, found, name};
use crate::model::alerts::outbox::{self, DeliveryFilter};
use crate::model::alerts::{self, AlertChannel, AlertRule, Owned};
use crate::model::{Command, Name};
use crate::policy::{self, Action, Decision, Kind, Object, Scope};

/// The query of the alert lists.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertOptions {
    #[serde(default)]
    pub stale: bool,
    /// Only this tenant's (`_`: only the federation's).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Deliveries: only `pending`, `delivered` or `failed` ones.
    #[serde(default)]
    pub state: Option<String>,
    /// Deliveries: only this rule's (`~callback/<workflow>/<task>` for task callbacks).
    #[serde(default)]
    pub rule: Option<String>,
    /// Deliveries: at most this many, newest first (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `_` in a path or `?tenant=`: the federation's own.
const FEDERATION: &str = "_";

/// Which owners the caller sees: `(scope of tenants, the federation's too)`.
fn sight(read: &Reader<'_>, what: &str) -> ApiResult<(Scope, bool)> {
    let federation =
        policy::decide(&read.principal, Action::Read, &Object::Operations) == Decision::Allow;
    let scope = match read.scope(Kind::Definition, what) {
        Ok(scope) => scope,
        Err(_) if federation => Scope::Nothing,
        Err(e) => return Err(e),
    };
    Ok((scope, federation))
}

/// `?tenant=`: `Some(None)` the federation's, `Some(Some(t))` one tenant's, `None` all.
fn owner_filter(tenant: &Option<String>) -> ApiResult<Option<Option<Name>>> {
    match tenant.as_deref() {
        None => Ok(None),
        Some(FEDERATION) => Ok(Some(None)),
        Some(t) => Name::new(t)
            .map(|t| Some(Some(t)))
            .map_err(|e| ApiError::bad_input(format!("query `tenant`: {e}"))),
    }
}

/// `{tenant}` in a path: `_` is the federation's.
fn owner_param(tenant: String) -> ApiResult<Option<Name>> {
    if tenant == FEDERATION {
        Ok(None)
    } else {
        name("tenant", tenant).map(Some)
    }
}

fn visible(scope: &Scope, federation: bool, owner: Option<&Name>) -> bool {
    match owner {
        Some(t) => scope.contains(t),
        None => federation,
    }
}

/// `GET /alerts/channels` (secrets and URLs shown only as `AlertChannel::shown` does) and
/// `POST /alerts/channels`.
pub fn channels() -> MethodRouter<Api> {
    listing("alert channels", AlertChannel::shown).merge(create(Command::CreateAlertChannel))
}

/// `DELETE /alerts/channels/{tenant}/{name}`.
pub fn channel() -> MethodRouter<Api> {
    delete_owned(|tenant, name| Command::DeleteAlertChannel { tenant, name })
}

/// `GET /alerts/rules` and `POST /alerts/rules`.
pub fn rules() -> MethodRouter<Api> {
    listing("alert rules", std::convert::identity::<AlertRule>)
        .merge(create(Command::CreateAlertRule))
}

/// `DELETE /alerts/rules/{tenant}/{name}`.
pub fn rule() -> MethodRouter<Api> {
    delete_owned(|tenant, name| Command::DeleteAlertRule { tenant, name })
}

/// `GET` of channels or rules: those of the owners the caller sees (`?tenant=` narrows), each
/// as `shown`.
fn listing<T: Owned + Serialize + Send + 'static>(
    what: &'static str,
    shown: fn(T) -> T,
) -> MethodRouter<Api> {
    get(
        move |State(api): State<Api>,
              Extension(c): Extension<Caller>,
              Params(o): Params<AlertOptions>| async move {
            let owner = owner_filter(&o.tenant)?;
            let read = api.reader(&c, o.stale).await?;
            let (scope, federation) = sight(&read, what)?;
            let mut conn = read.pool.acquire().await?;
            let all = alerts::list::<T>(&mut conn, owner.as_ref().map(Option::as_ref)).await?;
            ApiResult::Ok(Json(
                all.into_iter()
                    .filter(|x| visible(&scope, federation, x.tenant()))
                    .map(shown)
                    .collect::<Vec<_>>(),
            ))
        },
    )
}

/// `DELETE /{tenant}/{name}` of a channel or rule (`_`: the federation's).
fn delete_owned(command: fn(Option<Name>, Name) -> Command) -> MethodRouter<Api> {
    delete(
        move |State(api): State<Api>,
              Extension(c): Extension<Caller>,
              Path((tenant, n)): Path<(String, String)>| async move {
            let tenant = owner_param(tenant)?;
            let name = name("name", n)?;
            api.propose(&c, command(tenant, name)).await.map(Json)
        },
    )
}

/// `GET /alerts/deliveries`: newest first, without their attempts.
pub fn deliveries() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Params(o): Params<AlertOptions>|
               -> ApiResult<_> {
            let owner = owner_filter(&o.tenant)?;
            if let Some(state) = &o.state
                && !matches!(state.as_str(), "pending" | "delivered" | "failed")
            {
                return Err(ApiError::bad_input(format!(
                    "query `state`: `{state}`: want pending, delivered or failed"
                )));
            }
            let read = api.reader(&c, o.stale).await?;
            let (scope, federation) = sight(&read, "alert deliveries")?;
            let owners = match (&owner, &scope) {
                (Some(o), _) => Some(vec![alerts::owner(o.as_ref()).to_owned()]),
                (None, Scope::All) => None,
                (None, Scope::Tenants(ts)) => Some(
                    ts.iter()
                        .map(|t| t.to_string())
                        .chain(federation.then(String::new))
                        .collect(),
                ),
                (None, Scope::Nothing) => Some(vec![String::new()]),
            };
            let filter = DeliveryFilter {
                owners,
                state: o.state.clone(),
                rule: o.rule.clone(),
                limit: o.limit.unwrap_or(100),
            };
            let mut conn = read.pool.acquire().await?;
            let all = outbox::list(&mut conn, &filter).await?;
            Ok(Json(
                all.into_iter()
                    .filter(|d| {
                        let owner = d.tenant.as_deref().and_then(|t| Name::new(t).ok());
                        visible(&scope, federation, owner.as_ref())
                    })
                    .collect::<Vec<_>>(),
            ))
        },
    )
}

/// `GET /alerts/deliveries/{id}`: one delivery with every attempt.
pub fn delivery() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Path(id): Path<String>,
               Params(o): Params<AlertOptions>|
               -> ApiResult<_> {
            let read = api.reader(&c, o.stale).await?;
            let what = format!("alert delivery `{id}`");
            let mut conn = read.pool.acquire().await?;
            let d = found(&what, outbox::get(&mut conn, &id).await?)?;
            // Another tenant's is as absent as one that never was.
            let object = match d.tenant.as_deref().map(Name::new) {
                Some(Ok(t)) => Object::Definition(t),
                _ => Object::Operations,
            };
            read.allow(Action::Read, &object, &what)?;
            Ok(Json(d))
        },
    )
}
