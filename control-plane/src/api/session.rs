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
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use meridian_proto::Clock;
use serde::{Deserialize, Serialize};

use super::principal::{Caller, Credential, SESSION_COOKIE, csrf_token, rfc3339};
use super::{Api, ApiError, ApiResult, Body, password, token};
use crate::model::{Command, Name, RefusalRecord, Session, query};
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

    /// May `user` try from `addr` now?
    pub fn gate(&self, user: &str, addr: &str) -> Gate {
        let now = self.clock.now_ms();
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
        Gate::Open
    }

    /// Counts a failed attempt.
    pub fn failed(&self, user: &str, addr: &str) {
        let now = self.clock.now_ms();
        let window = LOCKOUT.as_millis() as i64;
        let mut counts = self.counts.lock().expect("not poisoned");
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
    }

    /// A success clears the user's count (not the address's: one good password does not buy
    /// an address more guesses at other users).
    pub fn succeeded(&self, user: &str) {
        self.counts
            .lock()
            .expect("not poisoned")
            .remove(&format!("user:{user}"));
    }
}

/// `POST /session`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub user: String,
    pub password: String,
}

/// Who is signed in (or which token is calling): `POST` and `GET /session`.
#[derive(Debug, Serialize, Deserialize)]
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

fn source(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Records a refused sign-in in the audit trail, in the background: the answer does not wait
/// for the plane (which may have no leader just now).
fn record(api: &Api, user: &str, message: String) {
    let api = api.clone();
    let record = RefusalRecord {
        actor: format!("user:{user}"),
        op: "sign_in".into(),
        subject: format!("user {user}"),
        tenant: None,
        message,
    };
    tokio::spawn(async move {
        api.record(Command::RecordRefusal(record)).await;
    });
}

/// `POST /session`: checks the password and signs the user in.
pub async fn sign_in(State(api): State<Api>, req: Request) -> Response {
    let addr = source(&req);
    let Body(form) = match Body::<SignIn>::from_request(req, &api).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match sign_in_checked(&api, form, &addr).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn sign_in_checked(api: &Api, form: SignIn, addr: &str) -> ApiResult<Response> {
    let wrong = || ApiError::unauthorized("wrong user or password");
    if let Gate::Locked {
        retry_after_s,
        first,
    } = api.logins.gate(&form.user, addr)
    {
        if first {
            record(
                api,
                &form.user,
                format!("too many failed sign-ins (from {addr}); locked for {retry_after_s} s"),
            );
        }
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
        return Ok(e);
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
    let given = form.password.clone();
    let ok = api.verify_password(given, phc).await? && found.is_some();
    let Some((user, _)) = found.filter(|_| ok) else {
        api.logins.failed(&form.user, addr);
        record(
            api,
            &form.user,
            format!("wrong user or password (from {addr})"),
        );
        return Err(wrong());
    };
    api.logins.succeeded(&form.user);
    let secret = token::secret(token::SESSION_PREFIX).map_err(ApiError::internal)?;
    let now = api.clock.now_ms();
    let expires_ms = now + api.sessions.ttl.as_millis() as i64;
    let session = Session {
        hash: token::hash(&secret),
        user: user.name.clone(),
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
    let body = Whoami {
        kind: "user".into(),
        name: user.name.to_string(),
        bindings: user.bindings,
        csrf_token: Some(csrf_token(&secret)),
        expires_ms: Some(expires_ms),
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie.to_string())
            .map_err(|e| ApiError::internal(e.to_string()))?,
    );
    Ok(response)
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
    let gone = cookie::Cookie::build((SESSION_COOKIE, ""))
        .http_only(true)
        .secure(api.sessions.secure)
        .same_site(cookie::SameSite::Strict)
        .path("/")
        .max_age(cookie::time::Duration::ZERO)
        .build();
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&gone.to_string()).map_err(|e| ApiError::internal(e.to_string()))?,
    );
    Ok(response)
}

/// When a token or session ends, in words.
pub fn until(expires_ms: Option<i64>) -> String {
    expires_ms.map_or_else(|| "never".into(), rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::ManualClock;

    #[test]
    fn failures_lock_a_user_then_the_lock_ends() {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-29T00:00:00Z")
            .unwrap()
            .into();
        let clock = ManualClock::at(t0);
        let logins = Logins::new(Arc::new(clock.clone()));
        for _ in 0..USER_FAILURES - 1 {
            logins.failed("alice", "10.0.0.1");
        }
        assert_eq!(logins.gate("alice", "10.0.0.1"), Gate::Open);
        logins.failed("alice", "10.0.0.2");
        // Locked whatever the address; the first refusal is the one to audit.
        assert!(matches!(
            logins.gate("alice", "10.0.0.9"),
            Gate::Locked {
                first: true,
                retry_after_s: 900
            }
        ));
        assert!(matches!(
            logins.gate("alice", "10.0.0.9"),
            Gate::Locked { first: false, .. }
        ));
        assert_eq!(logins.gate("bob", "10.0.0.9"), Gate::Open);
        clock.advance(chrono::Duration::seconds(LOCKOUT.as_secs() as i64));
        assert_eq!(logins.gate("alice", "10.0.0.1"), Gate::Open);
    }

    #[test]
    fn one_address_guessing_many_users_is_locked_too() {
        let clock = ManualClock::at(chrono::Utc::now());
        let logins = Logins::new(Arc::new(clock));
        for i in 0..ADDRESS_FAILURES {
            logins.failed(&format!("user{i}"), "10.0.0.1");
        }
        assert!(matches!(
            logins.gate("someone-else", "10.0.0.1"),
            Gate::Locked { .. }
        ));
        assert_eq!(logins.gate("someone-else", "10.0.0.2"), Gate::Open);
    }

    #[test]
    fn a_success_clears_the_users_count() {
        let logins = Logins::new(Arc::new(ManualClock::at(chrono::Utc::now())));
        for _ in 0..USER_FAILURES - 1 {
            logins.failed("alice", "10.0.0.1");
        }
        logins.succeeded("alice");
        logins.failed("alice", "10.0.0.1");
        assert_eq!(logins.gate("alice", "10.0.0.1"), Gate::Open);
    }
}
