//! The REST/JSON API under `/api/v1`: every entity of the model, the run history, the audit
//! trail, users, API tokens, sessions and the plane's membership.
//!
//! - This module: the router, consistency of reads, and the one way a handler asks the
//!   access policy ([`crate::policy`]): [`Reader::allow`] and [`Reader::scope`] for reads,
//!   [`Api::propose`] for writes (checked here, then again by the plane when it applies the
//!   command). Writes become one [`Command`] each and go through [`PlaneNode::write`], so any
//!   node takes them; reads are linearizable unless the caller asks for `?stale=true`.
//! - [`principal`]: who is calling (bearer token or session cookie, CSRF), resolved from the
//!   model.
//! - [`session`]: signing in and out, and the limit on failed sign-ins.
//! - [`definitions`]: data centers, clusters, environments, tenants, grants, workflows and
//!   schedules.
//! - `error`: how outcomes become HTTP statuses ([`ApiError`]), and the body and query
//!   extractors whose rejections name what was wrong.
//! - [`runs`]: `/runs` (history, one run, logs, run now, kill).
//! - [`alerts`]: `/alerts` (channels, rules, deliveries and their attempts).
//! - [`operations`]: `/agents`, `/leases`, `/audit`.
//! - [`plane`]: `/plane` (status, snapshot, membership).
//! - [`users`]: `/users` and `/tokens`.
//! - [`password`]: Argon2id password hashes.
//! - [`token`]: generating secrets and hashing them (only the hash is replicated).
//! - [`resources`]: the resource center, each tenant's files in the S3 bucket.
//! - [`health`]: `/healthz`, `/readyz` (public) and `/metrics` (Prometheus, operators).
//! - [`openapi`]: the OpenAPI 3.1 document served at `/api/v1/openapi.json`, built from the
//!   same route table the router is checked against, each route with the roles it needs.

pub mod alerts;
pub mod backfills;
pub mod definitions;
pub mod doubts;
mod error;
pub mod health;
pub mod openapi;
pub mod operations;
pub mod password;
pub mod pauses;
pub mod plane;
pub mod principal;
pub mod resources;
pub mod runs;
pub mod session;
pub mod token;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{MethodRouter, get, post, put};
use axum::{Extension, Json, Router};
use meridian_domain::Clock;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;

use crate::model::authorize;
use crate::model::processor::Applied;
use crate::model::{AuditOutcome, AuditRecord, Author, BackfillAction, Command, Name, Proposal};
use crate::policy::{self, Action, Decision, Kind, Object, Principal, Scope};
use crate::raft::Outcome;
use crate::raft::node::PlaneNode;
use principal::Caller;
use session::{Logins, SessionSettings};

pub use error::{ApiError, ApiResult, Body, ErrorBody, Params};
pub use operations::AuditOptions;
pub use plane::{DEFAULT_PEER_PORT, NewNode};
pub use runs::{RunDetail, RunOptions};

/// The largest JSON body a request may carry.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct Api {
    pub node: Arc<PlaneNode>,
    pub clock: Arc<dyn Clock>,
    /// How long a write or a read barrier may wait for the plane.
    pub timeout: Duration,
    /// The resource center's bucket (none: `/resources` answers 503).
    pub bucket: Option<meridian_bucket::Bucket>,
    pub sessions: SessionSettings,
    /// Failed sign-ins, per user and per address.
    pub logins: Arc<Logins>,
    /// Password hashes computed at once (each takes [`password::MEMORY_KIB`]).
    hashing: Arc<tokio::sync::Semaphore>,
    /// Callers resolved from this node's model, kept while nothing about access changes.
    principals: Arc<principal::Principals>,
}

impl Api {
    pub fn new(
        node: Arc<PlaneNode>,
        clock: Arc<dyn Clock>,
        timeout: Duration,
        bucket: Option<meridian_bucket::Bucket>,
        sessions: SessionSettings,
    ) -> Self {
        Self {
            node,
            logins: Arc::new(Logins::new(clock.clone())),
            clock,
            timeout,
            bucket,
            sessions,
            hashing: Arc::new(tokio::sync::Semaphore::new(password::CONCURRENT)),
            principals: Arc::default(),
        }
    }

    /// Who `credential` stands for in this node's copy of the model, now.
    pub async fn resolve(&self, credential: &principal::Credential) -> ApiResult<Principal> {
        let generation = self.node.state.access_generation();
        self.principals
            .resolve(
                self.node.state.pool(),
                generation,
                credential,
                self.clock.now_ms(),
            )
            .await
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

/// A page of `GET /workflows` or `GET /schedules`: in (tenant, name) order, `limit` at a
/// time; the next page is the one `after` this page's last (`tenant/name`). A page shorter
/// than `limit` is the last.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListOptions {
    #[serde(default)]
    pub stale: bool,
    /// Only this tenant's.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The items after this one, `tenant/name`.
    #[serde(default)]
    pub after: Option<String>,
    /// At most this many (default [`PAGE`], at most [`PAGE_MAX`]).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Items a page of a definitions' list holds unless asked otherwise.
pub const PAGE: u32 = 1_000;
/// … and at most.
pub const PAGE_MAX: u32 = 10_000;

impl ListOptions {
    /// The page asked for, or what is wrong with the query.
    pub fn page(&self) -> ApiResult<crate::model::query::Page> {
        let tenant = tenant_query(self.tenant.as_deref())?;
        let after = match &self.after {
            None => None,
            Some(after) => {
                let pair = after
                    .split_once('/')
                    .and_then(|(t, n)| Name::new(t).ok().zip(Name::new(n).ok()));
                Some(pair.ok_or_else(|| {
                    ApiError::bad_input(format!(
                        "query `after`: `{after}` is not `tenant/name` (the last item of the \
                         previous page)"
                    ))
                })?)
            }
        };
        let limit = self.limit.unwrap_or(PAGE);
        if !(1..=PAGE_MAX).contains(&limit) {
            return Err(ApiError::bad_input(format!(
                "query `limit`: {limit} is not between 1 and {PAGE_MAX}"
            )));
        }
        Ok(crate::model::query::Page {
            tenant,
            within: None,
            after,
            limit: Some(limit),
        })
    }
}

/// The body of `PATCH /schedules/{tenant}/{name}`: any of a schedule's fields (a JSON merge
/// patch; `null` removes one, so its default applies). Only describes the body for the API
/// document; the plane merges the patch into the schedule as it is when the change is applied.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleChanges {
    pub workflow: Option<Name>,
    pub environment: Option<Name>,
    /// Any of the spec's fields; an object whose `policy` changes replaces `catch_up` whole.
    pub spec: Option<SpecChanges>,
    pub overlap: Option<meridian_domain::OverlapPolicy>,
    pub takeover: Option<meridian_domain::TakeoverPolicy>,
}

/// Any of a schedule spec's fields (see `ScheduleSpec`).
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpecChanges {
    pub cron: Option<String>,
    pub time_zone: Option<String>,
    pub start: Option<chrono::DateTime<chrono::Utc>>,
    pub end: Option<chrono::DateTime<chrono::Utc>>,
    pub catch_up: Option<meridian_domain::CatchUpPolicy>,
}

/// What a write did.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
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

/// A read's view of the model: the pool, current enough for the read, and the caller as the
/// model held it then.
pub struct Reader<'a> {
    pub pool: &'a SqlitePool,
    /// The runs, the model's and the history store's.
    pub runs: crate::history_store::reader::RunReader,
    pub principal: Principal,
}

impl Reader<'_> {
    /// Asks the policy; `what` names the object as a "does not exist" answer would.
    pub fn allow(&self, action: Action, object: &Object, what: &str) -> ApiResult<()> {
        refusal(&self.principal, action, object, what).map_or(Ok(()), Err)
    }

    /// What of `kind` a list shows; a principal that may see none of them is refused
    /// (`what`: the list's name).
    pub fn scope(&self, kind: Kind, what: &str) -> ApiResult<Scope> {
        match policy::scope(&self.principal, kind) {
            Scope::Nothing => Err(ApiError::forbidden(format!(
                "listing {what}: {} may not; it needs {}",
                self.principal.actor(),
                match kind {
                    Kind::Principal => "owner of a tenant, or admin",
                    Kind::Operations | Kind::Audit => "operator or admin",
                    _ => "a role in a tenant, operator, or admin",
                }
            ))),
            scope => Ok(scope),
        }
    }
}

/// The API's answer to a refusal of the policy, if it refuses.
fn refusal(principal: &Principal, action: Action, object: &Object, what: &str) -> Option<ApiError> {
    match policy::decide(principal, action, object) {
        Decision::Allow => None,
        Decision::Hidden => Some(ApiError::not_found(format!("{what} does not exist"))),
        Decision::Forbidden => Some(ApiError::forbidden(format!(
            "{what}: {} may not do this; it needs {}",
            principal.actor(),
            policy::who_may(action, object)
        ))),
    }
}

impl Api {
    /// Asks the policy whether `caller` may propose `command`, from this node's copy; a refusal
    /// is recorded in the audit trail and answered.
    pub async fn precheck(&self, caller: &Caller, command: &Command) -> ApiResult<()> {
        let mut conn = self.node.state.pool().acquire().await?;
        match authorize::command(&mut conn, &caller.principal, command).await {
            Ok(()) => Ok(()),
            Err(refused) => {
                self.refused(
                    caller,
                    command.op(),
                    &authorize::doing(command),
                    command.tenant().as_ref(),
                    &refused.to_string(),
                );
                Err(crate::model::processor::Rejection::from(refused).into())
            }
        }
    }

    /// Proposes `command` for `caller`: the policy first (here, and again when the plane
    /// applies it), then the plane.
    pub async fn propose(&self, caller: &Caller, command: Command) -> ApiResult<WriteReply> {
        self.precheck(caller, &command).await?;
        let proposal = Proposal::by(caller.author(), self.clock.now_ms(), command);
        self.write(proposal).await
    }

    /// Proposes `commands` for `caller` as one batch (one log entry): each passes the policy
    /// here first, and is applied or refused on its own; one outcome per command, in order.
    pub async fn propose_batch(
        &self,
        caller: &Caller,
        commands: Vec<Command>,
    ) -> ApiResult<Vec<Result<WriteReply, crate::model::processor::Rejection>>> {
        for command in &commands {
            self.precheck(caller, command).await?;
        }
        let proposal = Proposal::by(
            caller.author(),
            self.clock.now_ms(),
            Command::Batch(commands),
        );
        match self.node.write(proposal, self.timeout).await? {
            Outcome::Applied(applied) => Ok(applied
                .items
                .into_iter()
                .map(|item| item.map(WriteReply::from))
                .collect()),
            Outcome::Refused(rejection) => Err(rejection.into()),
            Outcome::Internal => Err(ApiError::internal("the write was not applied as a command")),
        }
    }

    /// Proposes a command of the plane's own (a sign-in it checked), named `actor`.
    pub async fn propose_as_plane(&self, actor: &str, command: Command) -> ApiResult<WriteReply> {
        let proposal = Proposal::by(
            Author::System {
                name: actor.to_owned(),
            },
            self.clock.now_ms(),
            command,
        );
        self.write(proposal).await
    }

    async fn write(&self, proposal: Proposal) -> ApiResult<WriteReply> {
        match self.node.write(proposal, self.timeout).await? {
            Outcome::Applied(applied) => Ok(applied.into()),
            Outcome::Refused(rejection) => Err(rejection.into()),
            Outcome::Internal => Err(ApiError::internal("the write was not applied as a command")),
        }
    }

    /// Records a refused write in the audit trail, in the background (the answer does not
    /// wait for the plane, which may have no leader just now).
    pub fn refused(
        &self,
        caller: &Caller,
        op: &str,
        subject: &str,
        tenant: Option<&Name>,
        message: &str,
    ) {
        self.note(caller, AuditOutcome::Refused, op, subject, tenant, message);
    }

    /// Records, in the background, a write that is not a command of the model (a resource
    /// file, the plane's membership) or a refusal of one.
    pub fn note(
        &self,
        caller: &Caller,
        outcome: AuditOutcome,
        op: &str,
        subject: &str,
        tenant: Option<&Name>,
        message: &str,
    ) {
        let record = AuditRecord {
            actor: caller.actor(),
            outcome,
            op: op.to_owned(),
            subject: subject.to_owned(),
            tenant: tenant.cloned(),
            message: message.to_owned(),
        };
        let api = self.clone();
        tokio::spawn(async move { api.record(Command::Record(record)).await });
    }

    /// Proposes a refusal record; failures are logged, not answered.
    pub async fn record(&self, command: Command) {
        if let Err(e) = self.propose_as_plane("audit", command).await {
            tracing::warn!("recording a refusal in the audit trail: {}", e.message);
        }
    }

    /// Asks the policy about a write that is not a command (a resource file), recording a
    /// refusal like [`Api::precheck`] does.
    pub fn allow_write(
        &self,
        caller: &Caller,
        action: Action,
        object: &Object,
        op: &str,
        what: &str,
        tenant: &Name,
    ) -> ApiResult<()> {
        match refusal(&caller.principal, action, object, what) {
            None => Ok(()),
            Some(e) => {
                self.refused(caller, op, what, Some(tenant), &e.message);
                Err(e)
            }
        }
    }

    /// Makes the local copy current enough for a linearizable read, unless `stale`.
    async fn fresh(&self, stale: bool) -> ApiResult<&sqlx::SqlitePool> {
        if !stale {
            self.node.read_barrier(self.timeout).await?;
        }
        Ok(self.node.state.pool())
    }

    /// A read: the local copy made current (unless `stale`), and the caller resolved again
    /// from it, so a credential or binding revoked before the read began counts on every node.
    pub async fn reader(&self, caller: &Caller, stale: bool) -> ApiResult<Reader<'_>> {
        let pool = self.fresh(stale).await?;
        let principal = if stale {
            caller.principal.clone()
        } else {
            self.resolve(&caller.credential).await?
        };
        Ok(Reader {
            pool,
            runs: self.node.state.runs(),
            principal,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> ApiResult<T> {
        // The permit goes with the work: a client that hangs up does not free it while the
        // hash goes on, so at most `CONCURRENT` hashes run whatever clients do.
        let permit = self
            .hashing
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| ApiError::internal(format!("a password check stopped: {e}")))
    }

    pub async fn hash_password(&self, plain: String) -> ApiResult<String> {
        self.blocking(move || password::hash(&plain))
            .await?
            .map_err(ApiError::internal)
    }

    pub async fn verify_password(&self, plain: String, phc: String) -> ApiResult<bool> {
        self.blocking(move || password::verify(&plain, &phc)).await
    }
}

fn name(param: &str, value: String) -> ApiResult<Name> {
    Name::new(value).map_err(|e| ApiError::bad_input(format!("path parameter `{param}`: {e}")))
}

fn tenant_filter(options: &ReadOptions) -> ApiResult<Option<Name>> {
    tenant_query(options.tenant.as_deref())
}

/// A list's `?tenant=`, if given, or what is wrong with it.
fn tenant_query(tenant: Option<&str>) -> ApiResult<Option<Name>> {
    tenant
        .map(|t| Name::new(t).map_err(|e| ApiError::bad_input(format!("query `tenant`: {e}"))))
        .transpose()
}

fn found<T>(what: &str, value: Option<T>) -> ApiResult<T> {
    value.ok_or_else(|| ApiError::not_found(format!("{what} does not exist")))
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

/// `PUT /{name}`: the body is the whole entity, which must name the same thing as the path
/// (nothing is renamed); `word` names the kind in that refusal.
fn update_one<T: DeserializeOwned + Send + 'static>(
    word: &'static str,
    name_of: fn(&T) -> &Name,
    command: fn(T) -> Command,
) -> MethodRouter<Api> {
    put(
        move |State(api): State<Api>,
              Extension(c): Extension<Caller>,
              Path(n): Path<String>,
              Body(v): Body<T>| async move {
            let n = name("name", n)?;
            let named = name_of(&v);
            if *named != n {
                return Err(ApiError::bad_input(format!(
                    "body: names {word} `{named}`, but the path is `{n}`"
                )));
            }
            api.propose(&c, command(v)).await.map(Json)
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
        .merge(definitions::routes())
        .route("/runs", runs::list())
        .route("/runs/{run_id}", runs::one())
        .route("/runs/{run_id}/logs", runs::logs())
        .route("/runs/{run_id}/logs/follow", runs::follow())
        .route("/runs/rerun", runs::bulk_rerun())
        .route("/runs/kill", runs::bulk_kill())
        .route("/runs/{run_id}/rerun", runs::rerun(false))
        .route("/runs/{run_id}/recover", runs::rerun(true))
        .route("/runs/{run_id}/kill", runs::kill())
        .route("/in-doubt", doubts::list())
        .route("/in-doubt/resolve", doubts::resolve())
        .route("/pauses", pauses::list().merge(pauses::pause()))
        .route("/pauses/resume", pauses::resume())
        .route("/backfills", backfills::list())
        .route("/backfills/{id}", backfills::one())
        .route(
            "/backfills/{id}/pause",
            backfills::control(BackfillAction::Pause),
        )
        .route(
            "/backfills/{id}/resume",
            backfills::control(BackfillAction::Resume),
        )
        .route(
            "/backfills/{id}/cancel",
            backfills::control(BackfillAction::Cancel),
        )
        .route("/alerts/channels", alerts::channels())
        .route("/alerts/channels/{tenant}/{name}", alerts::channel())
        .route("/alerts/rules", alerts::rules())
        .route("/alerts/rules/{tenant}/{name}", alerts::rule())
        .route("/alerts/deliveries", alerts::deliveries())
        .route("/alerts/deliveries/{id}", alerts::delivery())
        .route("/agents", operations::agents())
        .route("/leases", operations::leases())
        .route("/audit", operations::audit())
        .route("/users", users::users())
        .route("/users/{name}", users::user())
        .route("/users/{name}/password", users::user_password())
        .route("/users/{name}/bindings", users::user_bindings())
        .route("/users/{name}/bindings/{binding}", users::user_binding())
        .route("/tokens", users::tokens())
        .route("/tokens/{name}", users::token_one())
        .route(
            "/session",
            post(session::sign_in)
                // A sign-in is a user name and a password: nothing bigger is read.
                .layer(DefaultBodyLimit::max(16 * 1024))
                .get(
                    async |State(api): State<Api>, Extension(c): Extension<Caller>| {
                        session::whoami(&c, &api).await.map(Json)
                    },
                )
                .delete(
                    async |State(api): State<Api>, Extension(c): Extension<Caller>| {
                        session::sign_out(&c, &api).await
                    },
                ),
        )
        .route("/plane/status", plane::status())
        .route("/plane/snapshot", plane::snapshot())
        .route("/plane/nodes", plane::nodes())
        .route("/plane/nodes/{hostname}", plane::node())
        .route("/resources/{tenant}", resources::list())
        .route("/resources/{tenant}/{*key}", resources::one())
        .route("/openapi.json", get(async || Json(openapi::document())))
        .route("/healthz", health::healthz())
        .route("/readyz", health::readyz())
        .route("/metrics", health::metrics())
        .fallback(async |uri: axum::http::Uri| {
            ApiError::not_found(format!(
                "no API route `{}`; see /api/v1/openapi.json",
                uri.path()
            ))
        })
        .route_layer(middleware::from_fn_with_state(
            api.clone(),
            principal::authenticate,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api);
    Router::new().nest("/api/v1", v1)
}
