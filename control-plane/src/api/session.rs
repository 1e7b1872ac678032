//! Signing in and out: `POST /session` with a user and password answers with an HttpOnly,
//! SameSite=Strict cookie (Secure over HTTPS) holding a random session secret, and the CSRF
//! token writes made with that cookie must carry. The session is a replicated object (only the
//! secret's hash), so every plane node accepts it, and it ends with its expiry, `DELETE
//! /session`, a password change or the user's deletion.
//!
//! Failed sign-ins are limited per user and per source address ([`Logins`]) and recorded in the
//! audit trail. A user that does not exist costs the same time as a wrong password, and both
//! get the same answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use meridian_domain::Clock;
use serde::{Deserialize, Serialize};

use super::principal::{Caller, Credential, SESSION_COOKIE, csrf_token, rfc3339};
use super::{Api, ApiError, ApiResult, Body, password, token};
use crate::model::{AuditOutcome, AuditRecord, Command, Name, Session, query};
use crate::policy::{Binding, Who};

/// How sessions are made.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    /// How long a session lasts from sign-in.
    pub ttl: Duration,
    /// Mark the cookie `Secure` (the API is served over HTTPS).
    pub secure: bool,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(12 * 3600),
            secure: false,
        }
    }
}

/// Failures that lock a user out for [`LOCKOUT`].
pub const USER_FAILURES: u32 = 5;
/// Failures from one address that lock it out for [`LOCKOUT`].
pub const ADDRESS_FAILURES: u32 = 20;
/// The window failures are counted in, and how long a lock lasts.
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);

/// Failed sign-ins per user and per source address, on this node (a node does not learn of
/// another's failures: with N nodes an attacker gets N times the budget, still a few guesses
/// per quarter hour).
pub struct Logins {
    clock: Arc<dyn Clock>,
    counts: Mutex<HashMap<String, Failures>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Failures {
    since_ms: i64,
    count: u32,
    locked_until_ms: i64,
    /// The lock was recorded in the audit trail (once per lock, not once per attempt).
    lock_recorded: bool,
}

/// Whether a sign-in may be tried.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Locked for this long; `first`: the first refusal of this lock (to be audited).
    Locked {
        retry_after_s: u64,
        first: bool,
    },
}

impl Logins {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn keys(user: &str, addr: &str) -> [(String, u32); 2] {
        [
            (format!("user:{user}"), USER_FAILURES),
            (format!("addr:{addr}"), ADDRESS_FAILURES),
        ]
    }

    /// May `user` try from `addr` now? An attempt let through is counted at once, as a
    /// failure until it succeeds: requests sent together cannot all pass the gate before any
    /// of them is counted.
    pub fn attempt(&self, user: &str, addr: &str) -> Gate {
        let now = self.clock.now_ms();
        let window = LOCKOUT.as_millis() as i64;
        let mut counts = self.counts.lock().expect("not poisoned");
        for (key, _) in Self::keys(user, addr) {
            if let Some(f) = counts.get_mut(&key)
                && f.locked_until_ms > now
            {
                let first = !f.lock_recorded;
                f.lock_recorded = true;
                return Gate::Locked {
                    retry_after_s: ((f.locked_until_ms - now) as u64).div_ceil(1000),
                    first,
                };
            }
        }
        if counts.len() > 100_000 {
            counts.retain(|_, f| f.since_ms + window > now || f.locked_until_ms > now);
        }
        for (key, limit) in Self::keys(user, addr) {
            let f = counts.entry(key).or_default();
            if f.since_ms + window <= now {
                *f = Failures {
                    since_ms: now,
                    ..Failures::default()
                };
            }
            f.count += 1;
            if f.count >= limit {
                f.locked_until_ms = now + window;
                f.lock_recorded = false;
            }
        }
        Gate::Open
    }

    /// The attempt succeeded: the user's count is cleared, and the address's attempt no longer
    /// counts (one good password does not buy an address more guesses, nor cost it any).
    pub fn succeeded(&self, user: &str, addr: &str) {
        let mut counts = self.counts.lock().expect("not poisoned");
        counts.remove(&format!("user:{user}"));
        if let Some(f) = counts.get_mut(&format!("addr:{addr}")) {
            f.count = f.count.saturating_sub(1);
            if f.count < ADDRESS_FAILURES {
                f.locked_until_ms = 0;
            }
        }
    }
}

/// The client's address (for the limits on failed sign-ins), when the server knows it.
pub struct Source(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Source(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string())
                .unwrap_or_else(|| "unknown".into()),
        ))
    }
}

/// A user name as given, for the limits and the audit trail: anything that is not a name is
/// one placeholder, so a caller cannot write megabytes into the replicated log by failing.
pub fn given_user(user: &str) -> String {
    match Name::new(user) {
        Ok(n) => n.to_string(),
        Err(_) => "(not a user name)".into(),
    }
}

/// `POST /session`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub user: String,
    pub password: String,
}

/// Who is signed in (or which token is calling): `POST` and `GET /session`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Whoami {
    /// `user` or `token`.
    pub kind: String,
    pub name: String,
    pub bindings: Vec<Binding>,
    /// For a session: what writes made with its cookie carry in `X-CSRF-Token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
}

/// Records a refused sign-in in the audit trail, in the background: the answer does not wait
/// for the plane (which may have no leader just now).
pub fn record(api: &Api, user: &str, message: String) {
    record_as(api, user, "sign_in", message);
}

/// Records a refused password check of `user` (`op`: what it was for).
pub fn record_as(api: &Api, user: &str, op: &str, message: String) {
    let api = api.clone();
    let record = AuditRecord {
        actor: format!("user:{user}"),
        outcome: AuditOutcome::Refused,
        op: op.into(),
        subject: format!("user {user}"),
        tenant: None,
        message,
    };
    tokio::spawn(async move {
        api.record(Command::Record(record)).await;
    });
}

/// `POST /session`: checks the password and signs the user in.
pub async fn sign_in(
    State(api): State<Api>,
    Source(addr): Source,
    Body(form): Body<SignIn>,
) -> Response {
    match open(&api, form, &addr).await {
        Ok(opened) => {
            let mut response = (StatusCode::CREATED, Json(opened.whoami)).into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, opened.cookie);
            response
        }
        Err(SignInError::Wrong) => ApiError::unauthorized("wrong user or password").into_response(),
        Err(SignInError::Locked { retry_after_s }) => locked_out(retry_after_s),
        Err(SignInError::Failed(e)) => e.into_response(),
    }
}

/// The answer to a locked-out attempt.
fn locked_out(retry_after_s: u64) -> Response {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "too many failed sign-ins for this user or from this address; try again in \
             {retry_after_s} s"
        ),
    )
    .into_response();
    e.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    e
}

/// A session opened: who, and the `Set-Cookie` value that carries it.
pub struct Opened {
    pub whoami: Whoami,
    pub cookie: HeaderValue,
}

/// Why a sign-in did not open a session.
#[derive(Debug)]
pub enum SignInError {
    /// Wrong user or password (the same answer for both).
    Wrong,
    /// Too many failures for this user or from this address.
    Locked {
        retry_after_s: u64,
    },
    Failed(ApiError),
}

impl From<ApiError> for SignInError {
    fn from(e: ApiError) -> Self {
        Self::Failed(e)
    }
}

impl From<sqlx::Error> for SignInError {
    fn from(e: sqlx::Error) -> Self {
        Self::Failed(e.into())
    }
}

/// Checks `form`'s password (limited, audited) and opens a session: what both `POST
/// /api/v1/session` and the web UI's sign-in page do.
pub async fn open(api: &Api, form: SignIn, addr: &str) -> Result<Opened, SignInError> {
    let user = given_user(&form.user);
    if let Gate::Locked {
        retry_after_s,
        first,
    } = api.logins.attempt(&user, addr)
    {
        if first {
            record(
                api,
                &user,
                format!("too many failed sign-ins (from {addr}); locked for {retry_after_s} s"),
            );
        }
        return Err(SignInError::Locked { retry_after_s });
    }
    let name = Name::new(form.user.clone()).ok();
    // The plane's current users, not this node's possibly older copy.
    let pool = api.fresh(false).await?;
    let found = match &name {
        Some(n) => query::user_with_password(pool, n).await?,
        None => None,
    };
    let phc = found
        .as_ref()
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| password::decoy().to_owned());
    let ok = api.verify_password(form.password, phc).await? && found.is_some();
    let Some((found, _)) = found.filter(|_| ok) else {
        record(api, &user, format!("wrong user or password (from {addr})"));
        return Err(SignInError::Wrong);
    };
    api.logins.succeeded(&user, addr);
    let secret = token::secret(token::SESSION_PREFIX).map_err(ApiError::internal)?;
    let now = api.clock.now_ms();
    let expires_ms = now + api.sessions.ttl.as_millis() as i64;
    let session = Session {
        hash: token::hash(&secret),
        user: found.name.clone(),
        created_ms: now,
        expires_ms,
        source: addr.to_owned(),
    };
    api.propose_as_plane("sign-in", Command::CreateSession(session))
        .await?;
    let cookie = cookie::Cookie::build((SESSION_COOKIE, secret.clone()))
        .http_only(true)
        .secure(api.sessions.secure)
        .same_site(cookie::SameSite::Strict)
        .path("/")
        .max_age(cookie::time::Duration::seconds(
            api.sessions.ttl.as_secs() as i64
        ))
        .build();
    Ok(Opened {
        whoami: Whoami {
            kind: "user".into(),
            name: found.name.to_string(),
            bindings: found.bindings,
            csrf_token: Some(csrf_token(&secret)),
            expires_ms: Some(expires_ms),
        },
        cookie: HeaderValue::from_str(&cookie.to_string())
            .map_err(|e| ApiError::internal(e.to_string()))?,
    })
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn cleared_cookie(secure: bool) -> HeaderValue {
    let gone = cookie::Cookie::build((SESSION_COOKIE, ""))
        .http_only(true)
        .secure(secure)
        .same_site(cookie::SameSite::Strict)
        .path("/")
        .max_age(cookie::time::Duration::ZERO)
        .build();
    HeaderValue::from_str(&gone.to_string()).expect("a cookie is a header value")
}

/// `GET /session`: who the caller is.
pub async fn whoami(caller: &Caller, api: &Api) -> ApiResult<Whoami> {
    let (kind, name) = match &caller.principal.who {
        Who::User(n) => ("user", n.to_string()),
        Who::Token(n) => ("token", n.to_string()),
        Who::System(n) => ("system", n.clone()),
    };
    let expires_ms = match &caller.credential {
        Credential::Session { hash, .. } => {
            query::session_by_hash(api.node.state.pool(), hash, api.clock.now_ms())
                .await?
                .map(|(s, _)| s.expires_ms)
        }
        Credential::Token { hash } => query::token_by_hash(api.node.state.pool(), hash)
            .await?
            .and_then(|t| t.expires_ms),
    };
    Ok(Whoami {
        kind: kind.into(),
        name,
        bindings: caller.principal.bindings.clone(),
        csrf_token: match &caller.credential {
            Credential::Session { csrf, .. } => Some(csrf.clone()),
            Credential::Token { .. } => None,
        },
        expires_ms,
    })
}

/// `DELETE /session`: signs the caller's session out and clears the cookie.
pub async fn sign_out(caller: &Caller, api: &Api) -> ApiResult<Response> {
    let Credential::Session { hash, .. } = &caller.credential else {
        return Err(ApiError::bad_input(
            "signing out ends a session; this request used a token (delete a token with \
             DELETE /api/v1/tokens/{name})",
        ));
    };
    api.propose(caller, Command::DeleteSession { hash: hash.clone() })
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cleared_cookie(api.sessions.secure));
    Ok(response)
}

/// When a token or session ends, in words.
pub fn until(expires_ms: Option<i64>) -> String {
    expires_ms.map_or_else(|| "never".into(), rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_domain::ManualClock;

    #[test]
    fn failures_lock_a_user_then_the_lock_ends() {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-29T00:00:00Z")
            .unwrap()
            .into();
        let clock = ManualClock::at(t0);
        let logins = Logins::new(Arc::new(clock.clone()));
        // Attempts are counted as they are let through, before anyone knows how they end:
        // five sent at once are five, and the sixth waits.
        for _ in 0..USER_FAILURES - 1 {
            assert_eq!(logins.attempt("alice", "10.0.0.1"), Gate::Open);
        }
        assert_eq!(logins.attempt("alice", "10.0.0.2"), Gate::Open);
        // Locked whatever the address; the first refusal is the one to audit.
        assert!(matches!(
            logins.attempt("alice", "10.0.0.9"),
            Gate::Locked {
                first: true,
                retry_after_s: 900
            }
        ));
        assert!(matches!(
            logins.attempt("alice", "10.0.0.9"),
            Gate::Locked { first: false, .. }
        ));
        assert_eq!(logins.attempt("bob", "10.0.0.9"), Gate::Open);
        clock.advance(chrono::Duration::seconds(LOCKOUT.as_secs() as i64));
        assert_eq!(logins.attempt("alice", "10.0.0.1"), Gate::Open);
    }

    #[test]
    fn one_address_guessing_many_users_is_locked_too() {
        let clock = ManualClock::at(chrono::Utc::now());
        let logins = Logins::new(Arc::new(clock));
        for i in 0..ADDRESS_FAILURES {
            logins.attempt(&format!("user{i}"), "10.0.0.1");
        }
        assert!(matches!(
            logins.attempt("someone-else", "10.0.0.1"),
            Gate::Locked { .. }
        ));
        assert_eq!(logins.attempt("someone-else", "10.0.0.2"), Gate::Open);
    }

    #[test]
    fn a_success_clears_the_users_count_and_does_not_count_against_the_address() {
        let logins = Logins::new(Arc::new(ManualClock::at(chrono::Utc::now())));
        for _ in 0..USER_FAILURES {
            logins.attempt("alice", "10.0.0.1");
        }
        logins.succeeded("alice", "10.0.0.1");
        assert_eq!(logins.attempt("alice", "10.0.0.1"), Gate::Open);
        // An office behind one address signing in all day is never locked out.
        for i in 0..3 * ADDRESS_FAILURES {
            let user = format!("user{}", i % 4);
            assert_eq!(logins.attempt(&user, "10.0.0.2"), Gate::Open, "{i}");
            logins.succeeded(&user, "10.0.0.2");
        }
    }
}
