//! The REST/JSON API under `/api/v1`: every entity of the model, the audit trail, API tokens
//! and the plane's membership, behind bearer tokens.
//!
//! - This module: the router, authentication, consistency of reads, and how outcomes become
//!   HTTP statuses. Writes become one [`Command`] each and go through [`PlaneNode::write`], so
//!   any node takes them; reads are linearizable unless the caller asks for `?stale=true`.
//! - [`token`]: generating secrets and hashing them (only the hash is replicated).
//! - [`resources`]: the resource center, each tenant's files in the S3 bucket.
//! - [`openapi`]: the OpenAPI 3.1 document served at `/api/v1/openapi.json`, built from the
//!   same route table the router is checked against.

pub mod openapi;
pub mod resources;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use axum::{Extension, Json, Router};
use meridian_proto::Clock;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::processor::{Applied, RefusalKind, Rejection};
use crate::model::{ApiToken, Command, Name, Proposal, TokenRole, query};
use crate::raft::node::{AskError, PlaneNode};
use crate::raft::{Node, Outcome};

/// What every handler shares.
#[derive(Clone)]
pub struct Api {
    pub node: Arc<PlaneNode>,
    pub clock: Arc<dyn Clock>,
    /// How long a write or a read barrier may wait for the plane.
    pub timeout: Duration,
    /// The resource center's bucket (none: `/resources` answers 503).
    pub bucket: Option<meridian_agent::bucket::Bucket>,
}

/// The authenticated caller, from its token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: TokenRole,
    pub tenant: Option<Name>,
}

/// An API error: an HTTP status and a message that says what was wrong.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

#[derive(Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub kind: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "missing", message)
    }

    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let (status, kind) = match r.kind {
            RefusalKind::Missing => (StatusCode::NOT_FOUND, "missing"),
            RefusalKind::Exists => (StatusCode::CONFLICT, "exists"),
            RefusalKind::InUse => (StatusCode::CONFLICT, "in_use"),
            RefusalKind::NotGranted => (StatusCode::UNPROCESSABLE_ENTITY, "not_granted"),
            RefusalKind::Invalid => (StatusCode::BAD_REQUEST, "invalid"),
        };
        Self::new(status, kind, r.message)
    }
}

impl From<AskError> for ApiError {
    fn from(e: AskError) -> Self {
        match e {
            AskError::Failed(m) => Self::internal(m),
            AskError::Missing(m) => Self::not_found(m),
            other => Self::unavailable(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::internal(format!("reading the model: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            kind: self.kind.to_owned(),
        };
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A JSON body whose errors name the field (axum reports the serde path) and come back in the
/// API's error shape.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

fn json_error(rejection: JsonRejection) -> ApiError {
    let text = rejection.body_text();
    let text = text
        .strip_prefix("Failed to deserialize the JSON body into the target type: ")
        .unwrap_or(&text);
    ApiError::bad_input(format!("request body: {text}"))
}

/// Query parameters, with errors in the API's shape.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(q) => Ok(Params(q.0)),
            Err(e @ QueryRejection::FailedToDeserializeQueryString(_)) => {
                Err(ApiError::bad_input(format!("query: {}", e.body_text())))
            }
            Err(e) => Err(ApiError::bad_input(e.body_text())),
        }
    }
}

/// How fresh a read must be.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadOptions {
    /// Read this node's copy without asking the leader: fast, possibly behind.
    #[serde(default)]
    pub stale: bool,
    /// Only this tenant's grants, workflows or schedules.
    #[serde(default)]
    pub tenant: Option<String>,
    /// A workflow version (default: the newest).
    #[serde(default)]
    pub version: Option<u64>,
}

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
}

fn default_audit_limit() -> u32 {
    100
}

/// What a write did.
#[derive(Debug, Serialize, Deserialize)]
pub struct WriteReply {
    /// What was changed, e.g. `cluster nj-main`.
    pub subject: String,
    /// The new version, for versioned things (workflows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// What else the write gives back (a requested run's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl From<Applied> for WriteReply {
    fn from(a: Applied) -> Self {
        Self {
            subject: a.subject,
            version: a.version,
            detail: a.detail.and_then(|d| serde_json::from_str(&d).ok()),
        }
    }
}

/// `GET /runs` filters. Spelled out rather than flattening [`query::RunFilter`]: a flattened
/// struct makes the query-string decoder see every value as a string, and numbers fail.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunOptions {
    pub stale: bool,
    pub dc: Option<String>,
    pub cluster: Option<String>,
    pub tenant: Option<String>,
    pub workflow: Option<String>,
    pub schedule: Option<String>,
    pub state: Option<String>,
    pub since_ms: Option<i64>,
    pub limit: Option<u32>,
}

impl RunOptions {
    fn filter(self) -> ApiResult<query::RunFilter> {
        if let Some(state) = &self.state
            && meridian_proto::run::RunState::parse(state).is_none()
        {
            return Err(ApiError::bad_input(format!(
                "query `state`: `{state}` is not one of requested, queued, started, succeeded, \
                 failed, killed, skipped"
            )));
        }
        Ok(query::RunFilter {
            dc: self.dc,
            cluster: self.cluster,
            tenant: self.tenant,
            workflow: self.workflow,
            schedule: self.schedule,
            state: self.state,
            since_ms: self.since_ms,
            limit: self.limit,
        })
    }
}

/// A run with its task attempts.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: query::RunRecord,
    pub attempts: Vec<query::TaskAttempt>,
}

/// A token's public record.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenView {
    pub name: Name,
    pub role: TokenRole,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Name>,
}

impl From<ApiToken> for TokenView {
    fn from(t: ApiToken) -> Self {
        Self {
            name: t.name,
            role: t.role,
            tenant: t.tenant,
        }
    }
}

/// `POST /tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: Name,
    #[serde(default)]
    pub role: TokenRole,
    #[serde(default)]
    pub tenant: Option<Name>,
}

/// The answer to `POST /tokens`: the only time the secret is shown.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreatedToken {
    pub name: Name,
    pub token: String,
}

/// `POST /plane/nodes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewNode {
    pub hostname: String,
    /// The node's peer port (default 7443).
    #[serde(default = "default_peer_port")]
    pub port: u16,
}

pub const DEFAULT_PEER_PORT: u16 = 7443;

fn default_peer_port() -> u16 {
    DEFAULT_PEER_PORT
}

impl Api {
    async fn propose(&self, caller: &Caller, command: Command) -> ApiResult<WriteReply> {
        let proposal = Proposal::new(caller.name.clone(), self.clock.now_ms(), command);
        match self.node.write(proposal, self.timeout).await? {
            Outcome::Applied(applied) => Ok(applied.into()),
            Outcome::Refused(rejection) => Err(rejection.into()),
            Outcome::Internal => Err(ApiError::internal("the write was not applied as a command")),
        }
    }

    /// Makes the local copy current enough for a linearizable read, unless `stale`.
    async fn fresh(&self, stale: bool) -> ApiResult<&sqlx::SqlitePool> {
        if !stale {
            self.node.read_barrier(self.timeout).await?;
        }
        Ok(self.node.state.pool())
    }
}

fn name(param: &str, value: String) -> ApiResult<Name> {
    Name::new(value).map_err(|e| ApiError::bad_input(format!("path parameter `{param}`: {e}")))
}

fn tenant_filter(options: &ReadOptions) -> ApiResult<Option<Name>> {
    options
        .tenant
        .clone()
        .map(|t| Name::new(t).map_err(|e| ApiError::bad_input(format!("query `tenant`: {e}"))))
        .transpose()
}

fn found<T>(what: &str, value: Option<T>) -> ApiResult<Json<T>> {
    value
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("{what} does not exist")))
}

type Created = (StatusCode, Json<WriteReply>);

fn created(reply: WriteReply) -> Created {
    (StatusCode::CREATED, Json(reply))
}

/// `POST`: the body is the entity; `command` turns it into its create command.
fn create<T: DeserializeOwned + Send + 'static>(command: fn(T) -> Command) -> MethodRouter<Api> {
    post(
        move |State(api): State<Api>, Extension(c): Extension<Caller>, Body(v): Body<T>| async move {
            api.propose(&c, command(v)).await.map(created)
        },
    )
}

/// `DELETE /{name}`.
fn delete_one(command: fn(Name) -> Command) -> MethodRouter<Api> {
    axum::routing::delete(
        move |State(api): State<Api>, Extension(c): Extension<Caller>, Path(n): Path<String>| async move {
            let key = name("name", n)?;
            api.propose(&c, command(key)).await.map(Json)
        },
    )
}

/// `DELETE /{a}/{b}`; `params` names the two path parameters for error messages.
fn delete_two(params: [&'static str; 2], command: fn(Name, Name) -> Command) -> MethodRouter<Api> {
    axum::routing::delete(
        move |State(api): State<Api>,
              Extension(c): Extension<Caller>,
              Path((a, b)): Path<(String, String)>| async move {
            let (a, b) = (name(params[0], a)?, name(params[1], b)?);
            api.propose(&c, command(a, b)).await.map(Json)
        },
    )
}

/// Builds the `/api/v1` router.
pub fn router(api: Api) -> Router {
    let v1 = Router::new()
        .route(
            "/dcs",
            get(
                async |State(api): State<Api>, Params(o): Params<ReadOptions>| -> ApiResult<_> {
                    Ok(Json(query::data_centers(api.fresh(o.stale).await?).await?))
                },
            )
            .merge(create(Command::CreateDataCenter)),
        )
        .route(
            "/dcs/{name}",
            get(
                async |State(api): State<Api>,
                       Path(n): Path<String>,
                       Params(o): Params<ReadOptions>| {
                    let n = name("name", n)?;
                    let pool = api.fresh(o.stale).await?;
                    found(
                        &format!("data center `{n}`"),
                        query::data_center(pool, &n).await?,
                    )
                },
            )
            .merge(delete_one(|name| Command::DeleteDataCenter { name })),
        )
        .route(
            "/clusters",
            get(
                async |State(api): State<Api>, Params(o): Params<ReadOptions>| -> ApiResult<_> {
                    Ok(Json(query::clusters(api.fresh(o.stale).await?).await?))
                },
            )
            .merge(create(Command::CreateCluster)),
        )
        .route(
            "/clusters/{name}",
            get(
                async |State(api): State<Api>,
                       Path(n): Path<String>,
                       Params(o): Params<ReadOptions>| {
                    let n = name("name", n)?;
                    let pool = api.fresh(o.stale).await?;
                    found(&format!("cluster `{n}`"), query::cluster(pool, &n).await?)
                },
            )
            .merge(delete_one(|name| Command::DeleteCluster { name })),
        )
        .route(
            "/environments",
            get(
                async |State(api): State<Api>, Params(o): Params<ReadOptions>| -> ApiResult<_> {
                    Ok(Json(query::environments(api.fresh(o.stale).await?).await?))
                },
            )
            .merge(create(Command::CreateEnvironment)),
        )
        .route(
            "/environments/{name}",
            get(
                async |State(api): State<Api>,
                       Path(n): Path<String>,
                       Params(o): Params<ReadOptions>| {
                    let n = name("name", n)?;
                    let pool = api.fresh(o.stale).await?;
                    found(
                        &format!("environment `{n}`"),
                        query::environment(pool, &n).await?,
                    )
                },
            )
            .merge(delete_one(|name| Command::DeleteEnvironment { name })),
        )
        .route(
            "/tenants",
            get(
                async |State(api): State<Api>, Params(o): Params<ReadOptions>| -> ApiResult<_> {
                    Ok(Json(query::tenants(api.fresh(o.stale).await?).await?))
                },
            )
            .merge(create(Command::CreateTenant)),
        )
        .route(
            "/tenants/{name}",
            get(
                async |State(api): State<Api>,
                       Path(n): Path<String>,
                       Params(o): Params<ReadOptions>| {
                    let n = name("name", n)?;
                    let pool = api.fresh(o.stale).await?;
                    found(&format!("tenant `{n}`"), query::tenant(pool, &n).await?)
                },
            )
            .merge(delete_one(|name| Command::DeleteTenant { name })),
        )
        .route(
            "/grants",
            get(
                async |State(api): State<Api>, Params(o): Params<ReadOptions>| -> ApiResult<_> {
                    let tenant = tenant_filter(&o)?;
                    let pool = api.fresh(o.stale).await?;
                    Ok(Json(query::grants(pool, tenant.as_ref()).await?))
                },
            )
            .merge(create(Command::CreateGrant)),
        )
        .route(
            "/grants/{tenant}/{environment}",
            get(
                async |State(api): State<Api>,
                       Path((t, e)): Path<(String, String)>,
                       Params(o): Params<ReadOptions>| {
                    let (t, e) = (name("tenant", t)?, name("environment", e)?);
                    let pool = api.fresh(o.stale).await?;
                    found(
                        &format!("grant of environment `{e}` to tenant `{t}`"),
                        query::grant(pool, &t, &e).await?,
                    )
                },
            )
            .merge(delete_two(
                ["tenant", "environment"],
                |tenant, environment| Command::DeleteGrant {
                    tenant,
                    environment,
                },
            )),
        )
        .route(
            "/workflows",
            get(
                async |State(api): State<Api>, Params(o): Params<ReadOptions>| -> ApiResult<_> {
                    let tenant = tenant_filter(&o)?;
                    let pool = api.fresh(o.stale).await?;
                    Ok(Json(query::workflows(pool, tenant.as_ref()).await?))
                },
            )
            .merge(create(Command::ApplyWorkflow)),
        )
        .route(
            "/workflows/{tenant}/{name}",
            get(
                async |State(api): State<Api>,
                       Path((t, n)): Path<(String, String)>,
                       Params(o): Params<ReadOptions>| {
                    let (t, n) = (name("tenant", t)?, name("name", n)?);
                    let pool = api.fresh(o.stale).await?;
                    let what = match o.version {
                        Some(v) => format!("version {v} of workflow `{n}` of tenant `{t}`"),
                        None => format!("workflow `{n}` of tenant `{t}`"),
                    };
                    found(&what, query::workflow(pool, &t, &n, o.version).await?)
                },
            )
            .merge(delete_two(["tenant", "name"], |tenant, name| {
                Command::DeleteWorkflow { tenant, name }
            })),
        )
        .route(
            "/schedules",
            get(
                async |State(api): State<Api>, Params(o): Params<ReadOptions>| -> ApiResult<_> {
                    let tenant = tenant_filter(&o)?;
                    let pool = api.fresh(o.stale).await?;
                    Ok(Json(query::schedules(pool, tenant.as_ref()).await?))
                },
            )
            .merge(create(Command::CreateSchedule)),
        )
        .route(
            "/schedules/{tenant}/{name}",
            get(
                async |State(api): State<Api>,
                       Path((t, n)): Path<(String, String)>,
                       Params(o): Params<ReadOptions>| {
                    let (t, n) = (name("tenant", t)?, name("name", n)?);
                    let pool = api.fresh(o.stale).await?;
                    found(
                        &format!("schedule `{n}` of tenant `{t}`"),
                        query::schedule(pool, &t, &n).await?,
                    )
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
            )),
        )
        .route(
            "/runs",
            get(
                async |State(api): State<Api>, Params(o): Params<RunOptions>| -> ApiResult<_> {
                    let pool = api.fresh(o.stale).await?;
                    let filter = o.filter()?;
                    Ok(Json(query::runs(pool, &filter).await?))
                },
            )
            .merge(create(Command::RequestRun)),
        )
        .route(
            "/runs/{run_id}",
            get(
                async |State(api): State<Api>,
                       Path(id): Path<String>,
                       Params(o): Params<ReadOptions>|
                       -> ApiResult<_> {
                    let pool = api.fresh(o.stale).await?;
                    let run = query::run(pool, &id).await?;
                    let attempts = query::attempts(pool, &id).await?;
                    found(
                        &format!("run `{id}`"),
                        run.map(|run| RunDetail { run, attempts }),
                    )
                },
            ),
        )
        .route(
            "/runs/{run_id}/logs",
            get(
                async |State(api): State<Api>,
                       Path(id): Path<String>,
                       Params(o): Params<ReadOptions>|
                       -> ApiResult<_> {
                    let pool = api.fresh(o.stale).await?;
                    if query::run(pool, &id).await?.is_none() {
                        return Err(ApiError::not_found(format!("run `{id}` does not exist")));
                    }
                    Ok(Json(query::logs(pool, &id).await?))
                },
            ),
        )
        .route(
            "/runs/{run_id}/kill",
            post(
                async |State(api): State<Api>,
                       Extension(c): Extension<Caller>,
                       Path(id): Path<String>| {
                    api.propose(&c, Command::KillRun { run_id: id })
                        .await
                        .map(Json)
                },
            ),
        )
        .route(
            "/agents",
            get(
                async |State(api): State<Api>, Params(o): Params<ReadOptions>| -> ApiResult<_> {
                    Ok(Json(query::agents(api.fresh(o.stale).await?).await?))
                },
            ),
        )
        .route(
            "/leases",
            get(
                async |State(api): State<Api>, Params(o): Params<ReadOptions>| -> ApiResult<_> {
                    Ok(Json(query::leases(api.fresh(o.stale).await?).await?))
                },
            ),
        )
        .route(
            "/audit",
            get(
                async |State(api): State<Api>, Params(o): Params<AuditOptions>| -> ApiResult<_> {
                    if !(1..=1000).contains(&o.limit) {
                        return Err(ApiError::bad_input(
                            "query `limit`: must be between 1 and 1000",
                        ));
                    }
                    let pool = api.fresh(o.stale).await?;
                    Ok(Json(query::audit(pool, o.since_ms, o.limit).await?))
                },
            ),
        )
        .route(
            "/tokens",
            get(
                async |State(api): State<Api>, Params(o): Params<ReadOptions>| -> ApiResult<_> {
                    let pool = api.fresh(o.stale).await?;
                    let tokens = query::tokens(pool).await?;
                    Ok(Json(
                        tokens.into_iter().map(TokenView::from).collect::<Vec<_>>(),
                    ))
                },
            )
            .post(
                async |State(api): State<Api>,
                       Extension(c): Extension<Caller>,
                       Body(v): Body<NewToken>|
                       -> ApiResult<_> {
                    let secret = token::generate().map_err(ApiError::internal)?;
                    let stored = ApiToken {
                        name: v.name.clone(),
                        role: v.role,
                        tenant: v.tenant,
                        hash: token::hash(&secret),
                    };
                    api.propose(&c, Command::CreateToken(stored)).await?;
                    Ok((
                        StatusCode::CREATED,
                        Json(CreatedToken {
                            name: v.name,
                            token: secret,
                        }),
                    ))
                },
            ),
        )
        .route(
            "/tokens/{name}",
            delete_one(|name| Command::DeleteToken { name }),
        )
        .route(
            "/plane/status",
            get(async |State(api): State<Api>| {
                Json(api.node.plane_status(Duration::from_secs(2)).await)
            }),
        )
        .route(
            "/plane/snapshot",
            get(
                async |State(api): State<Api>,
                       Params(o): Params<ReadOptions>|
                       -> ApiResult<axum::body::Body> {
                    api.fresh(o.stale).await?;
                    let file = api.node.state.copy().await?;
                    Ok(axum::body::Body::from_stream(
                        tokio_util::io::ReaderStream::new(file),
                    ))
                },
            ),
        )
        .route(
            "/plane/nodes",
            post(
                async |State(api): State<Api>, Body(v): Body<NewNode>| -> ApiResult<_> {
                    let hostname = v.hostname.trim().to_ascii_lowercase();
                    if hostname.is_empty() || hostname.contains(['/', ' ', ':']) {
                        return Err(ApiError::bad_input(format!(
                            "request body: hostname: `{}` is not a hostname",
                            v.hostname
                        )));
                    }
                    // Catching up a new node may take a while; allow for it.
                    api.node
                        .add_voter(Node::new(hostname.clone(), v.port), api.timeout * 6)
                        .await?;
                    Ok((
                        StatusCode::CREATED,
                        Json(WriteReply {
                            subject: format!("plane node {hostname}"),
                            version: None,
                            detail: None,
                        }),
                    ))
                },
            ),
        )
        .route(
            "/plane/nodes/{hostname}",
            axum::routing::delete(
                async |State(api): State<Api>, Path(h): Path<String>| -> ApiResult<_> {
                    api.node.remove(&h, api.timeout).await?;
                    Ok(Json(WriteReply {
                        subject: format!("plane node {h}"),
                        version: None,
                        detail: None,
                    }))
                },
            ),
        )
        .route("/resources/{tenant}", resources::list())
        .route("/resources/{tenant}/{*key}", resources::one())
        .route("/openapi.json", get(async || Json(openapi::document())))
        .fallback(async |uri: axum::http::Uri| {
            ApiError::not_found(format!(
                "no API route `{}`; see /api/v1/openapi.json",
                uri.path()
            ))
        })
        .route_layer(middleware::from_fn_with_state(api.clone(), authenticate))
        .with_state(api);
    Router::new().nest("/api/v1", v1)
}

/// Resolves the bearer token to a [`Caller`], or answers 401 without running the handler.
async fn authenticate(State(api): State<Api>, mut req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(secret) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return ApiError::unauthorized(
            "missing `Authorization: Bearer <token>`; the admin token is in <data-dir>/admin.token",
        )
        .into_response();
    };
    // Tokens are looked up in this node's copy: a token created a moment ago elsewhere may
    // need a heartbeat to arrive, which beats a leader round trip on every request.
    match query::token_by_hash(api.node.state.pool(), &token::hash(secret.trim())).await {
        Ok(Some(t)) => {
            req.extensions_mut().insert(Caller {
                name: t.name.to_string(),
                role: t.role,
                tenant: t.tenant,
            });
            next.run(req).await
        }
        Ok(None) => {
            ApiError::unauthorized("the token is not valid (unknown or deleted)").into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}
