//! The model's principals: users (with Argon2id password hashes), API tokens and sign-in
//! sessions, each with role bindings; the processor's arms for their commands; and how a
//! proposal's author becomes a [`Principal`] at apply time, so a binding revoked between the
//! API's check and the commit cannot slip a write through.
//!
//! Stored documents are versioned (`"v": 1`/`2`); a token written before bindings existed
//! (`{"role": "admin", "tenant": …}`) still reads: as `admin`, or as `owner` of its tenant
//! when it named one (such tokens only ever acted for that tenant's resources, and an owner
//! is what that intent means now).

use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection};

use super::checks::{Table, doc, invalid, json, present, subject};
use super::outcome::{Applied, ApplyError, Refusal};
use super::{Author, Name};
use crate::policy::{Binding, Principal, Role, Who};

/// A person who signs in with a password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: Name,
    /// What the user may do; several are fine (developer of `ads`, viewer of `bi`).
    #[serde(default)]
    pub bindings: Vec<Binding>,
    /// Who created it (an actor as the audit trail names it).
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub created_ms: i64,
}

/// A user as stored: versioned, so a later shape can still read this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "v")]
enum StoredUser {
    #[serde(rename = "1")]
    V1(User),
}

/// An API token as stored: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "TokenDoc", into = "TokenDoc")]
pub struct ApiToken {
    /// Public handle; the actor (`token:<name>`) in the audit trail.
    pub name: Name,
    /// What it may do.
    pub bindings: Vec<Binding>,
    /// When it stops working (ms since the epoch); none: never.
    pub expires_ms: Option<i64>,
    pub created_by: String,
    pub created_ms: i64,
    /// Lower-case hex SHA-256 of the secret.
    pub hash: String,
}

impl ApiToken {
    pub fn expired_at(&self, now_ms: i64) -> bool {
        self.expires_ms.is_some_and(|e| now_ms >= e)
    }
}

/// Every shape a token has been stored or replicated in.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum TokenDoc {
    Current(TokenV2),
    /// Before role bindings: every token was an admin, some named a tenant.
    Legacy(TokenV1),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenV2 {
    v: TokenVersion,
    name: Name,
    bindings: Vec<Binding>,
    #[serde(default)]
    expires_ms: Option<i64>,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    created_ms: i64,
    hash: String,
}

#[derive(Serialize, Deserialize)]
enum TokenVersion {
    #[serde(rename = "2")]
    V2,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenV1 {
    name: Name,
    role: LegacyRole,
    #[serde(default)]
    tenant: Option<Name>,
    hash: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LegacyRole {
    Admin,
}

impl From<TokenDoc> for ApiToken {
    fn from(doc: TokenDoc) -> Self {
        match doc {
            TokenDoc::Current(t) => Self {
                name: t.name,
                bindings: t.bindings,
                expires_ms: t.expires_ms,
                created_by: t.created_by,
                created_ms: t.created_ms,
                hash: t.hash,
            },
            TokenDoc::Legacy(t) => Self {
                name: t.name,
                bindings: vec![match t.tenant {
                    Some(tenant) => Binding::tenant(Role::Owner, tenant),
                    None => Binding::global(Role::Admin),
                }],
                expires_ms: None,
                created_by: String::new(),
                created_ms: 0,
                hash: t.hash,
            },
        }
    }
}

impl From<ApiToken> for TokenDoc {
    fn from(t: ApiToken) -> Self {
        TokenDoc::Current(TokenV2 {
            v: TokenVersion::V2,
            name: t.name,
            bindings: t.bindings,
            expires_ms: t.expires_ms,
            created_by: t.created_by,
            created_ms: t.created_ms,
            hash: t.hash,
        })
    }
}

/// A signed-in session of a user (the web UI's cookie).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// Lower-case hex SHA-256 of the session's secret (the cookie's value).
    pub hash: String,
    pub user: Name,
    pub created_ms: i64,
    pub expires_ms: i64,
    /// Where the sign-in came from (the client's address), for the audit trail.
    #[serde(default)]
    pub source: String,
}

/// A user's or a token's document. These two carry the version of their shape among their
/// own fields (`"v"`), from before every other document got the envelope of
/// `meridian_domain::stored`, so they are written and read as they are.
pub(super) fn decode_tagged<T: serde::de::DeserializeOwned>(doc: &str) -> sqlx::Result<T> {
    serde_json::from_str(doc).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// What every binding list must satisfy.
fn check_bindings(doing: &str, bindings: &[Binding]) -> Result<(), ApplyError> {
    for (i, b) in bindings.iter().enumerate() {
        b.check()
            .map_err(|problem| invalid(doing, &format!("bindings[{i}]"), &problem))?;
    }
    Ok(())
}

/// Tenants named by bindings must exist.
async fn tenants_exist(
    tx: &mut SqliteConnection,
    doing: &str,
    bindings: &[Binding],
) -> Result<(), ApplyError> {
    for t in bindings.iter().filter_map(|b| b.tenant.as_ref()) {
        present(tx, Table::Tenants, t, doing).await?;
    }
    Ok(())
}

fn is_sha256_hex(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

pub async fn create_token(
    tx: &mut SqliteConnection,
    token: &ApiToken,
) -> Result<Applied, ApplyError> {
    let doing = format!("creating token `{}`", token.name);
    check_bindings(&doing, &token.bindings)?;
    if token.bindings.is_empty() {
        return Err(invalid(
            &doing,
            "bindings",
            "a token needs at least one role (e.g. developer of a tenant)",
        ));
    }
    tenants_exist(tx, &doing, &token.bindings).await?;
    if !is_sha256_hex(&token.hash) {
        return Err(invalid(&doing, "hash", "must be a hex SHA-256 digest"));
    }
    // A clash on the hash (two equal random secrets) is refused like a clash on the name: the
    // insert does nothing either way.
    let inserted =
        sqlx::query("INSERT INTO tokens (name, hash, doc) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
            .bind(token.name.as_str())
            .bind(token.hash.to_ascii_lowercase())
            .bind(json(token))
            .execute(&mut *tx)
            .await?;
    if inserted.rows_affected() == 0 {
        return Err(Refusal::Exists {
            doing,
            kind: "token",
            name: token.name.to_string(),
        }
        .into());
    }
    Ok(subject(format!("token {}", token.name)))
}

pub async fn delete_token(tx: &mut SqliteConnection, name: &Name) -> Result<Applied, ApplyError> {
    let doing = format!("deleting token `{name}`");
    present(tx, Table::Tokens, name, &doing).await?;
    sqlx::query("DELETE FROM tokens WHERE name = ?")
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(subject(format!("token {name}")))
}

/// A password hash as the model accepts it: an Argon2id PHC string made by the API node.
fn check_password_hash(doing: &str, hash: &str) -> Result<(), ApplyError> {
    if hash.starts_with("$argon2id$") && hash.len() < 512 {
        Ok(())
    } else {
        Err(invalid(doing, "password", "must be an Argon2id PHC hash"))
    }
}

pub async fn create_user(
    tx: &mut SqliteConnection,
    user: &User,
    password: &str,
) -> Result<Applied, ApplyError> {
    let doing = format!("creating user `{}`", user.name);
    check_bindings(&doing, &user.bindings)?;
    tenants_exist(tx, &doing, &user.bindings).await?;
    check_password_hash(&doing, password)?;
    let inserted = sqlx::query(
        "INSERT INTO users (name, password, doc) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(user.name.as_str())
    .bind(password)
    .bind(json(&StoredUser::V1(user.clone())))
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(Refusal::Exists {
            doing,
            kind: "user",
            name: user.name.to_string(),
        }
        .into());
    }
    Ok(subject(format!("user {}", user.name)))
}

/// A user, if it exists.
pub async fn user(tx: &mut SqliteConnection, name: &Name) -> sqlx::Result<Option<User>> {
    let doc: Option<String> = sqlx::query_scalar("SELECT doc FROM users WHERE name = ?")
        .bind(name.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    doc.map(decode_user).transpose()
}

pub(super) fn decode_user(doc: String) -> sqlx::Result<User> {
    let StoredUser::V1(user) = decode_tagged(&doc)?;
    Ok(user)
}

async fn existing_user(
    tx: &mut SqliteConnection,
    name: &Name,
    doing: &str,
) -> Result<User, ApplyError> {
    user(tx, name).await?.ok_or_else(|| {
        Refusal::Missing {
            doing: doing.to_owned(),
            kind: "user",
            name: name.to_string(),
        }
        .into()
    })
}

async fn store_user(tx: &mut SqliteConnection, user: &User) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET doc = ? WHERE name = ?")
        .bind(json(&StoredUser::V1(user.clone())))
        .bind(user.name.as_str())
        .execute(&mut *tx)
        .await
        .map(|_| ())
}

pub async fn delete_user(tx: &mut SqliteConnection, name: &Name) -> Result<Applied, ApplyError> {
    let doing = format!("deleting user `{name}`");
    existing_user(tx, name, &doing).await?;
    // Its sessions die with it: a cookie of a deleted user signs nobody in.
    sqlx::query("DELETE FROM sessions WHERE user = ?")
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM users WHERE name = ?")
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(subject(format!("user {name}")))
}

pub async fn set_password(
    tx: &mut SqliteConnection,
    name: &Name,
    password: &str,
) -> Result<Applied, ApplyError> {
    let doing = format!("changing the password of user `{name}`");
    existing_user(tx, name, &doing).await?;
    check_password_hash(&doing, password)?;
    sqlx::query("UPDATE users SET password = ? WHERE name = ?")
        .bind(password)
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
    // Whoever knew the old password is signed out everywhere.
    sqlx::query("DELETE FROM sessions WHERE user = ?")
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(subject(format!("user {name}")))
}

pub async fn bind_user(
    tx: &mut SqliteConnection,
    name: &Name,
    binding: &Binding,
) -> Result<Applied, ApplyError> {
    let doing = format!("binding `{binding}` to user `{name}`");
    binding
        .check()
        .map_err(|problem| invalid(&doing, "binding", &problem))?;
    let mut user = existing_user(tx, name, &doing).await?;
    tenants_exist(tx, &doing, std::slice::from_ref(binding)).await?;
    if user.bindings.contains(binding) {
        return Err(Refusal::Exists {
            doing,
            kind: "binding",
            name: binding.to_string(),
        }
        .into());
    }
    user.bindings.push(binding.clone());
    user.bindings.sort();
    store_user(tx, &user).await?;
    Ok(subject(format!("user {name}")))
}

pub async fn unbind_user(
    tx: &mut SqliteConnection,
    name: &Name,
    binding: &Binding,
) -> Result<Applied, ApplyError> {
    let doing = format!("unbinding `{binding}` from user `{name}`");
    let mut user = existing_user(tx, name, &doing).await?;
    let before = user.bindings.len();
    user.bindings.retain(|b| b != binding);
    if user.bindings.len() == before {
        return Err(Refusal::Missing {
            doing,
            kind: "binding",
            name: binding.to_string(),
        }
        .into());
    }
    store_user(tx, &user).await?;
    Ok(subject(format!("user {name}")))
}

pub async fn create_session(
    tx: &mut SqliteConnection,
    session: &Session,
    at_ms: i64,
) -> Result<Applied, ApplyError> {
    let doing = format!("signing in user `{}`", session.user);
    existing_user(tx, &session.user, &doing).await?;
    if !is_sha256_hex(&session.hash) {
        return Err(invalid(&doing, "hash", "must be a hex SHA-256 digest"));
    }
    // Expired sessions go as new ones come, so the table holds about one lifetime's sign-ins.
    sqlx::query("DELETE FROM sessions WHERE expires_ms <= ?")
        .bind(at_ms)
        .execute(&mut *tx)
        .await?;
    let inserted = sqlx::query(
        "INSERT INTO sessions (hash, user, expires_ms, doc) VALUES (?, ?, ?, ?) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&session.hash)
    .bind(session.user.as_str())
    .bind(session.expires_ms)
    .bind(doc(session))
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(Refusal::Exists {
            doing,
            kind: "session",
            name: "(secret)".into(),
        }
        .into());
    }
    Ok(subject(format!("session of user {}", session.user)))
}

pub async fn delete_session(tx: &mut SqliteConnection, hash: &str) -> Result<Applied, ApplyError> {
    let user: Option<String> =
        sqlx::query_scalar("DELETE FROM sessions WHERE hash = ? RETURNING user")
            .bind(hash)
            .fetch_optional(&mut *tx)
            .await?;
    match user {
        Some(user) => Ok(subject(format!("session of user {user}"))),
        None => Err(Refusal::Missing {
            doing: "signing out".into(),
            kind: "session",
            name: "(this one)".into(),
        }
        .into()),
    }
}

/// Removes every binding to `tenant` from users and tokens (the tenant is being deleted: a
/// tenant re-created under the same name must not inherit them). A token left with no binding
/// can do nothing and is deleted.
pub async fn forget_tenant(tx: &mut SqliteConnection, tenant: &Name) -> sqlx::Result<()> {
    let users = sqlx::query("SELECT doc FROM users")
        .fetch_all(&mut *tx)
        .await?;
    for row in users {
        let mut user = decode_user(row.get("doc"))?;
        let before = user.bindings.len();
        user.bindings.retain(|b| b.tenant.as_ref() != Some(tenant));
        if user.bindings.len() != before {
            store_user(tx, &user).await?;
        }
    }
    let tokens = sqlx::query("SELECT doc FROM tokens")
        .fetch_all(&mut *tx)
        .await?;
    for row in tokens {
        let mut token: ApiToken = decode_tagged(row.get("doc"))?;
        let before = token.bindings.len();
        token.bindings.retain(|b| b.tenant.as_ref() != Some(tenant));
        if token.bindings.len() == before {
            continue;
        }
        if token.bindings.is_empty() {
            sqlx::query("DELETE FROM tokens WHERE name = ?")
                .bind(token.name.as_str())
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query("UPDATE tokens SET doc = ? WHERE name = ?")
                .bind(json(&token))
                .bind(token.name.as_str())
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok(())
}

/// Why an author cannot act at apply time: its credential is gone or has expired.
fn unauthenticated(doing: &str, why: String) -> ApplyError {
    Refusal::Unauthenticated {
        doing: doing.to_owned(),
        why,
    }
    .into()
}

/// The principal behind a proposal's author, as the model holds it when the proposal is
/// applied (at its stamped time). `None`: the plane itself or an agent, checked elsewhere.
pub async fn principal(
    tx: &mut SqliteConnection,
    author: &Author,
    at_ms: i64,
    doing: &str,
) -> Result<Option<Principal>, ApplyError> {
    match author {
        Author::System { .. } | Author::Agent { .. } => Ok(None),
        Author::Token { name, token } => {
            let doc: Option<String> =
                sqlx::query_scalar("SELECT doc FROM tokens WHERE name = ? AND hash = ?")
                    .bind(name.as_str())
                    .bind(token)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(doc) = doc else {
                return Err(unauthenticated(
                    doing,
                    format!("token `{name}` was deleted"),
                ));
            };
            let token: ApiToken = decode_tagged(&doc)?;
            if token.expired_at(at_ms) {
                return Err(unauthenticated(
                    doing,
                    format!("token `{name}` has expired"),
                ));
            }
            Ok(Some(Principal {
                who: Who::Token(token.name),
                bindings: token.bindings,
            }))
        }
        Author::Session { user, session } => {
            let expires: Option<i64> =
                sqlx::query_scalar("SELECT expires_ms FROM sessions WHERE hash = ? AND user = ?")
                    .bind(session)
                    .bind(user.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            match expires {
                Some(e) if e > at_ms => {}
                _ => {
                    return Err(unauthenticated(
                        doing,
                        format!(
                            "the session of user `{user}` has ended (signed out, expired, or the \
                             user was deleted); sign in again"
                        ),
                    ));
                }
            }
            let Some(u) = user_of(tx, user).await? else {
                return Err(unauthenticated(doing, format!("user `{user}` was deleted")));
            };
            Ok(Some(Principal {
                who: Who::User(u.name),
                bindings: u.bindings,
            }))
        }
    }
}

async fn user_of(tx: &mut SqliteConnection, name: &Name) -> sqlx::Result<Option<User>> {
    user(tx, name).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_from_before_bindings_still_reads() {
        let admin: ApiToken =
            serde_json::from_str(r#"{"name":"ci","role":"admin","hash":"ab"}"#).unwrap();
        assert_eq!(admin.bindings, vec![Binding::global(Role::Admin)]);
        let scoped: ApiToken =
            serde_json::from_str(r#"{"name":"ci","role":"admin","tenant":"demo","hash":"ab"}"#)
                .unwrap();
        assert_eq!(
            scoped.bindings,
            vec![Binding::tenant(Role::Owner, Name::new("demo").unwrap())]
        );
        // And the current shape goes round.
        let text = serde_json::to_string(&scoped).unwrap();
        assert!(text.contains(r#""v":"2""#), "{text}");
        assert_eq!(serde_json::from_str::<ApiToken>(&text).unwrap(), scoped);
    }
}
