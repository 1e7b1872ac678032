//! The definitions' routes: data centers, clusters and environments (administration's, read
//! by everyone they concern), tenants and grants, workflows and schedules (each tenant's own).
//! Each route reads through [`Reader`] and writes one command through [`Api::propose`].

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{MethodRouter, get, patch, put};
use axum::{Extension, Json};
use serde::Serialize;
use sqlx::SqlitePool;

use super::principal::Caller;
use super::{
    Api, ApiError, ApiResult, Body, ListOptions, Params, ReadOptions, create, delete_one,
    delete_two, found, name, tenant_filter, update_one,
};
use crate::model::authorize::{self, Infra};
use crate::model::{Command, Name, query};
use crate::policy::{self, Action, Kind, Object, Scope};

/// Data centers, clusters and environments: one shape of routes each, seen by a tenant's
/// members through the grants that name them.
struct InfraRoutes<T> {
    kind: Infra,
    /// As messages name it.
    word: &'static str,
    /// What a list is called in a refusal.
    plural: &'static str,
    list: fn(&SqlitePool) -> futures_list::ListFuture<'_, T>,
    one: for<'a> fn(&'a SqlitePool, &'a Name) -> futures_list::OneFuture<'a, T>,
    name_of: fn(&T) -> &Name,
    /// What of an item a reader limited to some tenants may see (an environment's OS users of
    /// other tenants are not theirs to know).
    redact: fn(T, &Scope) -> T,
}

/// Boxed futures for [`InfraRoutes`]' queries (async fn pointers cannot be named otherwise).
mod futures_list {
    use std::future::Future;
    use std::pin::Pin;

    pub type ListFuture<'a, T> = Pin<Box<dyn Future<Output = sqlx::Result<Vec<T>>> + Send + 'a>>;
    pub type OneFuture<'a, T> = Pin<Box<dyn Future<Output = sqlx::Result<Option<T>>> + Send + 'a>>;
}

impl<T: Serialize + Send + Sync + 'static> InfraRoutes<T> {
    fn list(self: Arc<Self>) -> MethodRouter<Api> {
        get(
            async move |State(api): State<Api>,
                        Extension(c): Extension<Caller>,
                        Params(o): Params<ReadOptions>|
                        -> ApiResult<Json<Vec<T>>> {
                let read = api.reader(&c, o.stale).await?;
                let scope = read.scope(Kind::Infrastructure, self.plural)?;
                let all = (self.list)(read.pool).await?;
                if scope == Scope::All {
                    return Ok(Json(all));
                }
                let mut conn = read.pool.acquire().await?;
                let mut shown = Vec::new();
                for item in all {
                    let granted =
                        authorize::granted_to(&mut conn, self.kind, (self.name_of)(&item)).await?;
                    if scope.any(&granted) {
                        shown.push((self.redact)(item, &scope));
                    }
                }
                Ok(Json(shown))
            },
        )
    }

    fn one(self: Arc<Self>) -> MethodRouter<Api> {
        get(
            async move |State(api): State<Api>,
                        Extension(c): Extension<Caller>,
                        Path(n): Path<String>,
                        Params(o): Params<ReadOptions>|
                        -> ApiResult<Json<T>> {
                let n = name("name", n)?;
                let read = api.reader(&c, o.stale).await?;
                let what = format!("{} `{n}`", self.word);
                let item = found(&what, (self.one)(read.pool, &n).await?)?;
                let mut conn = read.pool.acquire().await?;
                let granted_to = authorize::granted_to(&mut conn, self.kind, &n).await?;
                read.allow(Action::Read, &Object::Infrastructure { granted_to }, &what)?;
                let scope = policy::scope(&read.principal, Kind::Infrastructure);
                Ok(Json((self.redact)(item, &scope)))
            },
        )
    }
}

/// The lists of tenants and grants (a few each): every item, filtered to the tenants the caller
/// may see. Workflows and schedules are paged ([`paged_list`]).
fn tenant_list<T: Serialize + Send + 'static>(
    kind: Kind,
    plural: &'static str,
    list: for<'a> fn(&'a SqlitePool, Option<&'a Name>) -> futures_list::ListFuture<'a, T>,
    tenant_of: fn(&T) -> &Name,
) -> MethodRouter<Api> {
    get(
        async move |State(api): State<Api>,
                    Extension(c): Extension<Caller>,
                    Params(o): Params<ReadOptions>|
                    -> ApiResult<Json<Vec<T>>> {
            let tenant = tenant_filter(&o)?;
            let read = api.reader(&c, o.stale).await?;
            let scope = read.scope(kind, plural)?;
            let items = list(read.pool, tenant.as_ref()).await?;
            Ok(Json(
                items
                    .into_iter()
                    .filter(|i| scope.contains(tenant_of(i)))
                    .collect(),
            ))
        },
    )
}

/// `GET /workflows`, `GET /schedules`: a page ([`ListOptions`]) of the items of the tenants
/// the caller may see — the scope is part of the query, so every page is full but the last.
fn paged_list<T: Serialize + Send + 'static>(
    plural: &'static str,
    list: for<'a> fn(&'a SqlitePool, &'a query::Page) -> futures_list::ListFuture<'a, T>,
) -> MethodRouter<Api> {
    get(
        async move |State(api): State<Api>,
                    Extension(c): Extension<Caller>,
                    Params(o): Params<ListOptions>|
                    -> ApiResult<Json<Vec<T>>> {
            let mut page = o.page()?;
            let read = api.reader(&c, o.stale).await?;
            if let Scope::Tenants(tenants) = read.scope(Kind::Definition, plural)? {
                page.within = Some(tenants.into_iter().collect());
            }
            Ok(Json(list(read.pool, &page).await?))
        },
    )
}

/// Every definition's route, under `/api/v1`.
pub fn routes() -> Router<Api> {
    let dcs = Arc::new(InfraRoutes {
        kind: Infra::DataCenter,
        word: "data center",
        plural: "data centers",
        list: |p| Box::pin(query::data_centers(p)),
        one: |p, n| Box::pin(query::data_center(p, n)),
        name_of: |d: &crate::model::DataCenter| &d.name,
        redact: |d, _| d,
    });
    let clusters = Arc::new(InfraRoutes {
        kind: Infra::Cluster,
        word: "cluster",
        plural: "clusters",
        list: |p| Box::pin(query::clusters(p)),
        one: |p, n| Box::pin(query::cluster(p, n)),
        name_of: |c: &crate::model::Cluster| &c.name,
        redact: |c, _| c,
    });
    let environments = Arc::new(InfraRoutes {
        kind: Infra::Environment,
        word: "environment",
        plural: "environments",
        list: |p| Box::pin(query::environments(p)),
        one: |p, n| Box::pin(query::environment(p, n)),
        name_of: |e: &crate::model::Environment| &e.name,
        redact: |mut e, scope| {
            e.run_as.tenants.retain(|tenant, _| scope.contains(tenant));
            e
        },
    });
    Router::new()
        .route(
            "/dcs",
            dcs.clone().list().merge(create(Command::CreateDataCenter)),
        )
        .route(
            "/dcs/{name}",
            dcs.one()
                .merge(delete_one(|name| Command::DeleteDataCenter { name }))
                .merge(update_one(
                    "data center",
                    |d: &crate::model::DataCenter| &d.name,
                    Command::UpdateDataCenter,
                )),
        )
        .route(
            "/clusters",
            clusters
                .clone()
                .list()
                .merge(create(Command::CreateCluster)),
        )
        .route(
            "/clusters/{name}",
            clusters
                .one()
                .merge(delete_one(|name| Command::DeleteCluster { name }))
                .merge(update_one(
                    "cluster",
                    |c: &crate::model::Cluster| &c.name,
                    Command::UpdateCluster,
                )),
        )
        .route(
            "/environments",
            environments
                .clone()
                .list()
                .merge(create(Command::CreateEnvironment)),
        )
        .route(
            "/environments/{name}",
            environments
                .one()
                .merge(delete_one(|name| Command::DeleteEnvironment { name }))
                .merge(update_one(
                    "environment",
                    |e: &crate::model::Environment| &e.name,
                    Command::UpdateEnvironment,
                )),
        )
        .route(
            "/tenants",
            tenant_list(
                Kind::Tenant,
                "tenants",
                |p, _| Box::pin(query::tenants(p)),
                |t: &crate::model::Tenant| &t.name,
            )
            .merge(create(Command::CreateTenant)),
        )
        .route(
            "/tenants/{name}",
            get(
                async |State(api): State<Api>,
                       Extension(c): Extension<Caller>,
                       Path(n): Path<String>,
                       Params(o): Params<ReadOptions>|
                       -> ApiResult<_> {
                    let n = name("name", n)?;
                    let read = api.reader(&c, o.stale).await?;
                    let what = format!("tenant `{n}`");
                    read.allow(Action::Read, &Object::Tenant(n.clone()), &what)?;
                    Ok(Json(found(&what, query::tenant(read.pool, &n).await?)?))
                },
            )
            .merge(delete_one(|name| Command::DeleteTenant { name }))
            .merge(update_one(
                "tenant",
                |t: &crate::model::Tenant| &t.name,
                Command::UpdateTenant,
            )),
        )
        .route(
            "/grants",
            tenant_list(
                Kind::Grant,
                "grants",
                |p, t| Box::pin(query::grants(p, t)),
                |g: &crate::model::Grant| &g.tenant,
            )
            .merge(create(Command::CreateGrant)),
        )
        .route(
            "/grants/{tenant}/{environment}",
            get(
                async |State(api): State<Api>,
                       Extension(c): Extension<Caller>,
                       Path((t, e)): Path<(String, String)>,
                       Params(o): Params<ReadOptions>|
                       -> ApiResult<_> {
                    let (t, e) = (name("tenant", t)?, name("environment", e)?);
                    let read = api.reader(&c, o.stale).await?;
                    let what = format!("grant of environment `{e}` to tenant `{t}`");
                    read.allow(Action::Read, &Object::Grant(t.clone()), &what)?;
                    Ok(Json(found(&what, query::grant(read.pool, &t, &e).await?)?))
                },
            )
            .merge(delete_two(
                ["tenant", "environment"],
                |tenant, environment| Command::DeleteGrant {
                    tenant,
                    environment,
                },
            ))
            .merge(put(
                async |State(api): State<Api>,
                       Extension(c): Extension<Caller>,
                       Path((t, e)): Path<(String, String)>,
                       Body(g): Body<crate::model::Grant>| {
                    let (t, e) = (name("tenant", t)?, name("environment", e)?);
                    if g.tenant != t || g.environment != e {
                        return Err(ApiError::bad_input(format!(
                            "body: names the grant of `{}` to `{}`, but the path is `{t}/{e}`",
                            g.environment, g.tenant
                        )));
                    }
                    api.propose(&c, Command::UpdateGrant(g)).await.map(Json)
                },
            )),
        )
        .route(
            "/workflows",
            paged_list("workflows", |p, page| Box::pin(query::workflows(p, page)))
                .merge(create(Command::ApplyWorkflow)),
        )
        .route(
            "/workflows/{tenant}/{name}",
            get(
                async |State(api): State<Api>,
                       Extension(c): Extension<Caller>,
                       Path((t, n)): Path<(String, String)>,
                       Params(o): Params<ReadOptions>|
                       -> ApiResult<_> {
                    let (t, n) = (name("tenant", t)?, name("name", n)?);
                    let read = api.reader(&c, o.stale).await?;
                    let what = match o.version {
                        Some(v) => format!("version {v} of workflow `{n}` of tenant `{t}`"),
                        None => format!("workflow `{n}` of tenant `{t}`"),
                    };
                    read.allow(Action::Read, &Object::Definition(t.clone()), &what)?;
                    Ok(Json(found(
                        &what,
                        query::workflow(read.pool, &t, &n, o.version).await?,
                    )?))
                },
            )
            .merge(delete_two(["tenant", "name"], |tenant, name| {
                Command::DeleteWorkflow { tenant, name }
            })),
        )
        .route(
            "/schedules",
            paged_list("schedules", |p, page| Box::pin(query::schedules(p, page)))
                .merge(create(Command::CreateSchedule)),
        )
        .route(
            "/schedules/{tenant}/{name}",
            get(
                async |State(api): State<Api>,
                       Extension(c): Extension<Caller>,
                       Path((t, n)): Path<(String, String)>,
                       Params(o): Params<ReadOptions>|
                       -> ApiResult<_> {
                    let (t, n) = (name("tenant", t)?, name("name", n)?);
                    let read = api.reader(&c, o.stale).await?;
                    let what = format!("schedule `{n}` of tenant `{t}`");
                    read.allow(Action::Read, &Object::Definition(t.clone()), &what)?;
                    Ok(Json(found(
                        &what,
                        query::schedule(read.pool, &t, &n).await?,
                    )?))
                },
            )
            .merge(delete_two(["tenant", "name"], |tenant, name| {
                Command::DeleteSchedule { tenant, name }
            }))
            .merge(put(
                async |State(api): State<Api>,
                       Extension(c): Extension<Caller>,
                       Path((t, n)): Path<(String, String)>,
                       Body(s): Body<crate::model::Schedule>| {
                    let (t, n) = (name("tenant", t)?, name("name", n)?);
                    if s.tenant != t || s.name != n {
                        return Err(ApiError::bad_input(format!(
                            "body: names schedule `{}` of tenant `{}`, but the path is `{t}/{n}`",
                            s.name, s.tenant
                        )));
                    }
                    api.propose(&c, Command::UpdateSchedule(s)).await.map(Json)
                },
            ))
            .merge(patch(
                async |State(api): State<Api>,
                       Extension(c): Extension<Caller>,
                       Path((t, n)): Path<(String, String)>,
                       Body(changes): Body<serde_json::Value>| {
                    let (tenant, name) = (name("tenant", t)?, name("name", n)?);
                    if !changes.is_object() {
                        return Err(ApiError::bad_input(
                            "body: must be a JSON object of the fields to change \
                             (a merge patch: `null` removes a field)",
                        ));
                    }
                    let patch = crate::model::SchedulePatch {
                        tenant,
                        name,
                        patch: changes.to_string(),
                    };
                    api.propose(&c, Command::PatchSchedule(patch))
                        .await
                        .map(Json)
                },
            )),
        )
}
