//! Who is calling: a bearer token (`Authorization: Bearer mrd_…`) or a signed-in session's
//! cookie, resolved to a [`Principal`] with its role bindings from this node's copy of the
//! model. Linearizable reads resolve it again after their read barrier, so a token deleted or a
//! binding revoked before the request began is enforced on every node; writes are checked
//! again when the plane applies them.
//!
//! A request made with a session cookie that changes anything must carry the session's CSRF
//! token in `X-CSRF-Token`: a cookie is sent by the browser whoever made the page, the CSRF
//! token only by pages the plane served (it is derived from the session's secret, which only
//! the plane and the cookie know).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;

use super::{Api, ApiError, token};
use crate::model::{Author, Name, query};
use crate::policy::{Principal, Who};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "meridian_session";
/// The header a cookie-authenticated write carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What the caller presented.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A bearer token, by the hash of its secret.
    Token { hash: String },
    /// A session cookie: the hash of its secret, and the CSRF token it implies.
    Session { hash: String, csrf: String },
}

impl Credential {
    /// From the request's headers: a bearer token wins over a cookie.
    pub fn of(headers: &HeaderMap) -> Option<Credential> {
        if let Some(secret) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
        {
            return Some(Credential::Token {
                hash: token::hash(secret.trim()),
            });
        }
        let secret = session_secret(headers)?;
        Some(Credential::Session {
            hash: token::hash(&secret),
            csrf: csrf_token(&secret),
        })
    }
}

/// The session cookie's value, if the request carries one.
pub fn session_secret(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == SESSION_COOKIE)
        .map(|c| c.value().to_owned())
}

/// The CSRF token of a session: a hash of its secret under a label of its own, so it gives
/// nothing away about the secret and needs no storage.
pub fn csrf_token(session_secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"meridian csrf\0");
    h.update(session_secret.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub credential: Credential,
}

impl Caller {
    /// How a proposal made for this caller names its author, so the plane can check the
    /// credential and its bindings again when it applies the command.
    pub fn author(&self) -> Author {
        match (&self.principal.who, &self.credential) {
            (Who::User(user), Credential::Session { hash, .. }) => Author::Session {
                user: user.clone(),
                session: hash.clone(),
            },
            (Who::Token(name), Credential::Token { hash }) => Author::Token {
                name: name.clone(),
                token: hash.clone(),
            },
            // A credential resolves to a user (session) or a token, never to anything else. Fail
            // closed all the same: a session nobody has is refused when applied.
            (_, _) => Author::Session {
                user: Name::new("nobody").expect("valid name"),
                session: String::new(),
            },
        }
    }

    pub fn actor(&self) -> String {
        self.principal.actor()
    }
}

/// Resolves a credential against the model in `pool` at `now_ms`.
pub async fn resolve(
    pool: &SqlitePool,
    credential: &Credential,
    now_ms: i64,
) -> Result<Principal, ApiError> {
    lookup(pool, credential, now_ms).await.map(|(p, _)| p)
}

/// The principal and when its credential ends.
async fn lookup(
    pool: &SqlitePool,
    credential: &Credential,
    now_ms: i64,
) -> Result<(Principal, Option<i64>), ApiError> {
    match credential {
        Credential::Token { hash } => match query::token_by_hash(pool, hash).await? {
            Some(t) if t.expired_at(now_ms) => Err(ApiError::unauthorized(format!(
                "token `{}` expired at {}; ask for a new one",
                t.name,
                rfc3339(t.expires_ms.unwrap_or_default())
            ))),
            Some(t) => Ok((
                Principal {
                    who: Who::Token(t.name),
                    bindings: t.bindings,
                },
                t.expires_ms,
            )),
            None => Err(ApiError::unauthorized(
                "the token is not valid (unknown or deleted)",
            )),
        },
        Credential::Session { hash, .. } => {
            match query::session_by_hash(pool, hash, now_ms).await? {
                Some((session, user)) => Ok((
                    Principal {
                        who: Who::User(user.name),
                        bindings: user.bindings,
                    },
                    Some(session.expires_ms),
                )),
                None => Err(ApiError::unauthorized(
                    "the session has ended (signed out, expired, password changed or user \
                     deleted); sign in again",
                )),
            }
        }
    }
}

/// Principals this node resolved, by their credential's hash, with the access generation of
/// the model they were read from (`StateMachine::access_generation`). An entry is used only
/// while no credential, binding or session has changed since, and only until its credential
/// expires: it answers exactly what the model would, without a query.
#[derive(Default)]
pub struct Principals {
    entries: std::sync::Mutex<std::collections::HashMap<String, Cached>>,
}

struct Cached {
    generation: u64,
    principal: Principal,
    expires_ms: Option<i64>,
}

/// Entries kept at most; past it the cache starts over (it refills at one query a caller).
const CACHED_PRINCIPALS: usize = 10_000;

impl Principals {
    /// Resolves `credential` at `now_ms` from the model in `pool`, whose access generation was
    /// `generation` when read, before this call.
    pub async fn resolve(
        &self,
        pool: &SqlitePool,
        generation: u64,
        credential: &Credential,
        now_ms: i64,
    ) -> Result<Principal, ApiError> {
        // By kind too: a session's secret sent as a bearer token is no token.
        let key = match credential {
            Credential::Token { hash } => format!("t{hash}"),
            Credential::Session { hash, .. } => format!("s{hash}"),
        };
        if let Some(c) = self.entries.lock().expect("not poisoned").get(&key)
            && c.generation == generation
            && c.expires_ms.is_none_or(|e| now_ms < e)
        {
            return Ok(c.principal.clone());
        }
        let (principal, expires_ms) = lookup(pool, credential, now_ms).await?;
        let mut entries = self.entries.lock().expect("not poisoned");
        if entries.len() >= CACHED_PRINCIPALS {
            entries.clear();
        }
        entries.insert(
            key,
            Cached {
                generation,
                principal: principal.clone(),
                expires_ms,
            },
        );
        Ok(principal)
    }
}

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Whether `a` and `b` are equal, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Routes anyone may call: the API's description, and signing in.
fn public(method: &Method, path: &str) -> bool {
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    (method == Method::GET && matches!(path, "/openapi.json" | "/healthz" | "/readyz"))
        || (method == Method::POST && path == "/session")
}

/// The middleware every route passes: resolves the caller or answers 401 without running the
/// handler; checks a cookie's CSRF token on anything but a read.
pub async fn authenticate(State(api): State<Api>, mut req: Request, next: Next) -> Response {
    // Inside the `/api/v1` nest the path comes without its prefix; `public` takes either.
    if public(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let Some(credential) = Credential::of(req.headers()) else {
        return ApiError::unauthorized(
            "missing `Authorization: Bearer <token>` (or a session: POST /api/v1/session); the \
             admin token is in <data-dir>/admin.token",
        )
        .into_response();
    };
    if let Credential::Session { csrf, .. } = &credential
        && !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
    {
        let sent = req.headers().get(CSRF_HEADER).map(|v| v.as_bytes());
        if !sent.is_some_and(|sent| same(sent, csrf.as_bytes())) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "a change made with a session cookie needs the session's CSRF token in \
                     `{CSRF_HEADER}` (GET /api/v1/session gives it)"
                ),
            )
            .into_response();
        }
    }
    // This node's copy, which beats a leader round trip on every request. Reads that are not
    // stale resolve again after their barrier; writes are checked again at apply. A credential
    // this node does not know may be one made a moment ago through another node (a sign-in
    // behind a load balancer): ask once more after catching up with the leader.
    let mut resolved = api.resolve(&credential).await;
    if resolved
        .as_ref()
        .is_err_and(|e| e.status == StatusCode::UNAUTHORIZED)
        && api.node.read_barrier(api.timeout).await.is_ok()
    {
        resolved = api.resolve(&credential).await;
    }
    match resolved {
        Ok(principal) => {
            req.extensions_mut().insert(Caller {
                principal,
                credential,
            });
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// A user name from a path or body, checked.
pub fn user_name(field: &str, value: &str) -> Result<Name, ApiError> {
    Name::new(value).map_err(|e| ApiError::bad_input(format!("{field}: {e}")))
}
