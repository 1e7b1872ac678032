//! `/users` and `/tokens`: people and automation, with their role bindings.
//!
//! Nobody hands out more than they hold: admins any binding, owners of a tenant any role of
//! that tenant (the policy's [`crate::policy::Object::Binding`]). A list shows the users and
//! tokens holding a role in a tenant the caller owns, and only those roles of theirs: another
//! tenant's bindings are not the owner's to see.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::principal::Caller;
use super::session::{Gate, Source, record_as};
use super::{
    Api, ApiError, ApiResult, Body, Params, ReadOptions, WriteReply, name, password, token,
};
use crate::model::{ApiToken, Command, Name, User, query};
use crate::policy::{Action, Binding, Kind, Object, Role, Scope};

/// A user as the API shows it: never a password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub name: Name,
    pub bindings: Vec<Binding>,
    pub created_by: String,
    pub created_ms: i64,
}

/// A token as the API shows it: never its secret or hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "Token")]
pub struct TokenView {
    pub name: Name,
    pub bindings: Vec<Binding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub created_ms: i64,
}

/// The bindings of someone else the caller may see: all of them for an admin (or for the
/// caller's own record), otherwise those in tenants in `scope`.
fn visible(bindings: &[Binding], scope: &Scope, own: bool) -> Vec<Binding> {
    if own || *scope == Scope::All {
        return bindings.to_vec();
    }
    bindings
        .iter()
        .filter(|b| b.tenant.as_ref().is_some_and(|t| scope.contains(t)))
        .cloned()
        .collect()
}

fn listed(bindings: &[Binding], scope: &Scope) -> bool {
    *scope == Scope::All
        || bindings
            .iter()
            .any(|b| b.tenant.as_ref().is_some_and(|t| scope.contains(t)))
}

/// One binding as a request gives it: a role, and a tenant for tenant roles.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingInput {
    pub role: String,
    #[serde(default)]
    pub tenant: Option<String>,
}

fn bindings_of(
    field: &str,
    list: Option<Vec<BindingInput>>,
    role: Option<String>,
    tenant: Option<String>,
) -> ApiResult<Vec<Binding>> {
    let mut inputs = list.unwrap_or_default();
    if let Some(role) = role {
        inputs.push(BindingInput { role, tenant });
    } else if tenant.is_some() {
        return Err(ApiError::bad_input(
            "request body: `tenant` needs a `role` (owner, developer or viewer) to go with it",
        ));
    }
    inputs
        .into_iter()
        .enumerate()
        .map(|(i, b)| binding(&format!("{field}[{i}]"), b))
        .collect()
}

fn binding(field: &str, input: BindingInput) -> ApiResult<Binding> {
    let role = Role::parse(&input.role).ok_or_else(|| {
        ApiError::bad_input(format!(
            "request body: {field}.role: `{}` is not a role (admin, operator, owner, developer, \
             viewer)",
            input.role
        ))
    })?;
    let tenant = input
        .tenant
        .map(|t| {
            Name::new(t)
                .map_err(|e| ApiError::bad_input(format!("request body: {field}.tenant: {e}")))
        })
        .transpose()?;
    let b = Binding { role, tenant };
    b.check()
        .map_err(|e| ApiError::bad_input(format!("request body: {field}: {e}")))?;
    Ok(b)
}

/// `POST /users`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: Name,
    /// Its roles; or `role` (and `tenant`) for one.
    #[serde(default)]
    pub bindings: Option<Vec<BindingInput>>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
    /// None: one is generated and shown in the reply, once.
    #[serde(default)]
    pub password: Option<String>,
}

/// The answer to creating a user or setting a password: the generated password, if one was.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PasswordReply {
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// `PUT /users/{name}/password`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// None: one is generated and shown in the reply, once.
    #[serde(default)]
    pub password: Option<String>,
    /// Required to change one's own password.
    #[serde(default)]
    pub current_password: Option<String>,
}

/// The password to set: the given one (checked) or a fresh one (returned to show).
fn chosen(given: Option<String>) -> ApiResult<(String, Option<String>)> {
    match given {
        Some(p) => {
            password::check(&p)
                .map_err(|e| ApiError::bad_input(format!("request body: password: {e}")))?;
            Ok((p, None))
        }
        None => {
            let p = password::generate().map_err(ApiError::internal)?;
            Ok((p.clone(), Some(p)))
        }
    }
}

pub fn users() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Params(o): Params<ReadOptions>|
               -> ApiResult<Json<Vec<UserView>>> {
            Ok(Json(list_users(&api, &c, o.stale).await?))
        },
    )
    .post(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Body(v): Body<NewUser>|
               -> ApiResult<(StatusCode, Json<PasswordReply>)> {
            Ok((StatusCode::CREATED, Json(create_user(&api, &c, v).await?)))
        },
    )
}

/// The users `c` may see, with the bindings of theirs `c` may see (`GET /users` and the UI).
pub async fn list_users(api: &Api, c: &Caller, stale: bool) -> ApiResult<Vec<UserView>> {
    let read = api.reader(c, stale).await?;
    let scope = read.scope(Kind::Principal, "users")?;
    let users = query::users(read.pool).await?;
    Ok(users
        .into_iter()
        .filter(|u| listed(&u.bindings, &scope))
        .map(|u| user_view(u, &scope, false))
        .collect())
}

/// Creates a user (`POST /users` and the UI): the policy first, as hashing is slow and a
/// refused caller must not learn more; the generated password in the reply, once.
pub async fn create_user(api: &Api, c: &Caller, v: NewUser) -> ApiResult<PasswordReply> {
    let bindings = bindings_of("bindings", v.bindings, v.role, v.tenant)?;
    let (plain, shown) = chosen(v.password)?;
    let user = User {
        name: v.name,
        bindings,
        created_by: c.actor(),
        created_ms: api.clock.now_ms(),
    };
    api.precheck(
        c,
        &Command::CreateUser {
            user: user.clone(),
            password: String::new(),
        },
    )
    .await?;
    let phc = api.hash_password(plain).await?;
    let reply = api
        .propose(
            c,
            Command::CreateUser {
                user,
                password: phc,
            },
        )
        .await?;
    Ok(PasswordReply {
        subject: reply.subject,
        password: shown,
    })
}

fn user_view(u: User, scope: &Scope, own: bool) -> UserView {
    UserView {
        bindings: visible(&u.bindings, scope, own),
        name: u.name,
        created_by: u.created_by,
        created_ms: u.created_ms,
    }
}

pub fn user() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Path(n): Path<String>,
               Params(o): Params<ReadOptions>|
               -> ApiResult<Json<UserView>> {
            let n = name("name", n)?;
            let read = api.reader(&c, o.stale).await?;
            let missing = format!("user `{n}`");
            let Some(user) = query::user(read.pool, &n).await? else {
                return Err(ApiError::not_found(format!("{missing} does not exist")));
            };
            let own = read.principal.user() == Some(&n);
            read.allow(
                Action::Read,
                &Object::Principal {
                    bindings: user.bindings.clone(),
                    own,
                },
                &missing,
            )?;
            let scope = crate::policy::scope(&read.principal, Kind::Principal);
            Ok(Json(user_view(user, &scope, own)))
        },
    )
    .merge(delete(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Path(n): Path<String>|
               -> ApiResult<Json<WriteReply>> {
            let n = name("name", n)?;
            api.propose(&c, Command::DeleteUser { name: n })
                .await
                .map(Json)
        },
    ))
}

pub fn user_password() -> MethodRouter<Api> {
    put(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Source(addr): Source,
               Path(n): Path<String>,
               Body(v): Body<NewPassword>|
               -> ApiResult<Json<PasswordReply>> {
            let n = name("name", n)?;
            Ok(Json(set_password(&api, &c, &addr, n, v).await?))
        },
    )
}

/// Sets user `n`'s password (`PUT /users/{name}/password` and the UI). One's own needs the
/// current one, guessed under the sign-in limits (`addr` is where the request came from); the
/// generated password, if one was, is in the reply once.
pub async fn set_password(
    api: &Api,
    c: &Caller,
    addr: &str,
    n: Name,
    v: NewPassword,
) -> ApiResult<PasswordReply> {
    let probe = Command::SetPassword {
        user: n.clone(),
        password: String::new(),
    };
    api.precheck(c, &probe).await?;
    if c.principal.user() == Some(&n) {
        // Whoever holds a session may not lock its owner out without the password.
        let Some(current) = v.current_password.clone() else {
            return Err(ApiError::bad_input(
                "request body: current_password: required to change your own password",
            ));
        };
        // Guessing it here is guessing a sign-in: the same limits, the same audit.
        if let Gate::Locked {
            retry_after_s,
            first,
        } = api.logins.attempt(n.as_str(), addr)
        {
            if first {
                record_as(
                    api,
                    n.as_str(),
                    "set_password",
                    format!("too many wrong passwords (from {addr}); locked"),
                );
            }
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many wrong passwords for this user or from this address; try \
                     again in {retry_after_s} s"
                ),
            ));
        }
        let stored = query::user_with_password(api.node.state.pool(), &n)
            .await?
            .map(|(_, p)| p)
            .unwrap_or_default();
        if !api.verify_password(current, stored).await? {
            record_as(
                api,
                n.as_str(),
                "set_password",
                format!("wrong current password (from {addr})"),
            );
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "request body: current_password: does not match",
            ));
        }
        api.logins.succeeded(n.as_str(), addr);
    }
    let (plain, shown) = chosen(v.password)?;
    let phc = api.hash_password(plain).await?;
    let reply = api
        .propose(
            c,
            Command::SetPassword {
                user: n,
                password: phc,
            },
        )
        .await?;
    Ok(PasswordReply {
        subject: reply.subject,
        password: shown,
    })
}

pub fn user_bindings() -> MethodRouter<Api> {
    post(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Path(n): Path<String>,
               Body(v): Body<BindingInput>|
               -> ApiResult<(StatusCode, Json<WriteReply>)> {
            let user = name("name", n)?;
            let binding = binding("binding", v)?;
            let reply = api.propose(&c, Command::BindUser { user, binding }).await?;
            Ok((StatusCode::CREATED, Json(reply)))
        },
    )
}

pub fn user_binding() -> MethodRouter<Api> {
    delete(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Path((n, b)): Path<(String, String)>|
               -> ApiResult<Json<WriteReply>> {
            let user = name("name", n)?;
            let binding: Binding = b.parse().map_err(|e| {
                ApiError::bad_input(format!(
                    "path parameter `binding` (ROLE or ROLE@TENANT): {e}"
                ))
            })?;
            api.propose(&c, Command::UnbindUser { user, binding })
                .await
                .map(Json)
        },
    )
}

/// `POST /tokens`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: Name,
    /// Its roles; or `role` (and `tenant`) for one.
    #[serde(default)]
    pub bindings: Option<Vec<BindingInput>>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
    /// It stops working this long after it is made (none: never).
    #[serde(default)]
    pub expires_in_seconds: Option<u64>,
}

/// The answer to `POST /tokens`: the only time the secret is shown.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreatedToken {
    pub name: Name,
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
}

pub fn tokens() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Params(o): Params<ReadOptions>|
               -> ApiResult<Json<Vec<TokenView>>> {
            Ok(Json(list_tokens(&api, &c, o.stale).await?))
        },
    )
    .post(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Body(v): Body<NewToken>|
               -> ApiResult<(StatusCode, Json<CreatedToken>)> {
            Ok((StatusCode::CREATED, Json(create_token(&api, &c, v).await?)))
        },
    )
}

/// The tokens `c` may see, with the bindings of theirs `c` may see (`GET /tokens` and the UI).
pub async fn list_tokens(api: &Api, c: &Caller, stale: bool) -> ApiResult<Vec<TokenView>> {
    let read = api.reader(c, stale).await?;
    let scope = read.scope(Kind::Principal, "tokens")?;
    let tokens = query::tokens(read.pool).await?;
    Ok(tokens
        .into_iter()
        .filter(|t| listed(&t.bindings, &scope))
        .map(|t| TokenView {
            bindings: visible(&t.bindings, &scope, false),
            name: t.name,
            expires_ms: t.expires_ms,
            created_by: t.created_by,
            created_ms: t.created_ms,
        })
        .collect())
}

/// Creates a token (`POST /tokens` and the UI); its secret is in the reply, the only time it
/// is shown.
pub async fn create_token(api: &Api, c: &Caller, v: NewToken) -> ApiResult<CreatedToken> {
    let bindings = bindings_of("bindings", v.bindings, v.role, v.tenant)?;
    if bindings.is_empty() {
        return Err(ApiError::bad_input(
            "request body: bindings: a token needs at least one role (`role`, and `tenant` for \
             owner, developer or viewer)",
        ));
    }
    let now = api.clock.now_ms();
    let expires_ms = match v.expires_in_seconds {
        Some(0) => {
            return Err(ApiError::bad_input(
                "request body: expires_in_seconds: must be at least 1",
            ));
        }
        Some(s) => Some(
            now.saturating_add(
                i64::try_from(s)
                    .unwrap_or(i64::MAX / 2)
                    .saturating_mul(1000),
            ),
        ),
        None => None,
    };
    let secret = token::generate().map_err(ApiError::internal)?;
    let stored = ApiToken {
        name: v.name.clone(),
        bindings,
        expires_ms,
        created_by: c.actor(),
        created_ms: now,
        hash: token::hash(&secret),
    };
    api.propose(c, Command::CreateToken(stored)).await?;
    Ok(CreatedToken {
        name: v.name,
        token: secret,
        expires_ms,
    })
}

pub fn token_one() -> MethodRouter<Api> {
    delete(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Path(n): Path<String>|
               -> ApiResult<Json<WriteReply>> {
            let n = name("name", n)?;
            api.propose(&c, Command::DeleteToken { name: n })
                .await
                .map(Json)
        },
    )
}
