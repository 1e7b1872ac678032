//! Users and API tokens (administration): who they are and the roles they hold, through the
//! same service functions as `/api/v1/users` and `/api/v1/tokens` (so the same policy: admins
//! see and hand out everything, a tenant's owners the roles of their tenants).
//!
//! A generated password or a token's secret is shown once, on the page that made it, and
//! never again (the plane keeps only its hash).

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, get, post};

use super::admin::{Tab, tabs};
use super::page::{self, Layout, Signed, Time, Viewer, time, value_of};
use crate::api::users::{
    self as service, BindingInput, NewPassword, NewToken, NewUser, TokenView, UserView,
};
use crate::api::{Api, ApiError};
use crate::model::{Command, Name, query};
use crate::policy::{Binding, Kind, Role, Scope};

/// The routes of these pages: (method, path, handler), for the UI's route table.
pub fn routes() -> Vec<(&'static str, &'static str, MethodRouter<Api>)> {
    vec![
        ("get", "/admin/users", get(users)),
        ("post", "/admin/users", post(create_user)),
        ("post", "/admin/users/delete", post(delete_user)),
        ("post", "/admin/users/bind", post(bind)),
        ("post", "/admin/users/unbind", post(unbind)),
        ("post", "/admin/users/password", post(reset_password)),
        ("get", "/admin/tokens", get(tokens)),
        ("post", "/admin/tokens", post(create_token)),
        ("post", "/admin/tokens/delete", post(delete_token)),
    ]
}

/// A secret shown once: whose it is and the secret.
pub struct Shown {
    pub whose: String,
    pub what: &'static str,
    pub secret: String,
}

/// The create form as typed, with the server's message beside the field it names.
#[derive(Default)]
pub struct Typed {
    pub name: String,
    pub role: String,
    pub tenant: String,
    pub password: String,
    pub expires_days: String,
    /// (field, message).
    pub error: (String, String),
}

impl Typed {
    fn of(form: &[(String, String)]) -> Self {
        Self {
            name: value_of(form, "name"),
            role: value_of(form, "role"),
            tenant: value_of(form, "tenant"),
            password: String::new(),
            expires_days: value_of(form, "expires_days"),
            error: Default::default(),
        }
    }

    pub fn error_of(&self, field: &str) -> &str {
        if self.error.0 == field {
            &self.error.1
        } else {
            ""
        }
    }
}

/// What a page says after an action: a refusal or a note.
#[derive(Default)]
pub struct Said {
    pub refused: String,
    pub done: String,
    pub shown: Option<Shown>,
    pub typed: Typed,
}

impl Said {
    fn refused(text: String) -> Self {
        Self {
            refused: text,
            ..Default::default()
        }
    }
}

pub struct UserRow {
    pub name: String,
    pub bindings: Vec<String>,
    pub created_by: String,
    pub created: Option<Time>,
}

pub struct TokenRow {
    pub name: String,
    pub bindings: Vec<String>,
    pub expires: Option<Time>,
    pub expired: bool,
    pub created_by: String,
    pub created: Option<Time>,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    layout: Layout,
    tabs: Vec<Tab>,
    roles: Vec<&'static str>,
    /// The tenants the viewer may hand roles in (empty first: a federation-wide role).
    tenants: Vec<String>,
    rows: Vec<UserRow>,
    said: Said,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    layout: Layout,
    tabs: Vec<Tab>,
    roles: Vec<&'static str>,
    tenants: Vec<String>,
    rows: Vec<TokenRow>,
    said: Said,
}

/// The roles the viewer may hand out and the tenants it may hand them in: everything for an
/// admin, the tenant roles of the tenants it owns otherwise.
async fn choices(api: &Api, viewer: &Viewer) -> sqlx::Result<(Vec<&'static str>, Vec<String>)> {
    let scope = viewer.scope(Kind::Principal);
    let tenants: Vec<String> = query::tenants(api.node.state.pool())
        .await?
        .into_iter()
        .filter(|t| scope.contains(&t.name))
        .map(|t| t.name.to_string())
        .collect();
    let roles = Role::ALL
        .into_iter()
        .filter(|r| scope == Scope::All || r.is_tenant_role())
        .map(Role::as_str)
        .collect();
    Ok((roles, tenants))
}

/// The field an API refusal names (`request body: password: …` → `password`), else none.
fn field_of(message: &str, fields: &[&str]) -> String {
    let tail = message.strip_prefix("request body: ").unwrap_or(message);
    // `bindings[0].tenant: …` is about the tenant; `bindings[0]: …` about the role and tenant
    // together, shown beside the role.
    let tail = match tail.strip_prefix("bindings") {
        Some(rest) => {
            let rest =
                rest.trim_start_matches(|c: char| c == '[' || c.is_ascii_digit() || c == ']');
            match rest.strip_prefix('.') {
                Some(field) => field,
                None => return "role".into(),
            }
        }
        None => tail,
    };
    fields
        .iter()
        .find(|f| tail.starts_with(&format!("{f}:")) || tail.starts_with(&format!("{f} ")))
        .map(|f| (*f).to_owned())
        .unwrap_or_default()
}

/// A tenant chosen with no role to hold in it: the field error to show (nothing else checks
/// it, as a form without a role makes someone with no role).
fn tenant_without_role(form: &[(String, String)]) -> Option<(String, String)> {
    let (role, tenant) = (value_of(form, "role"), value_of(form, "tenant"));
    (role.trim().is_empty() && !tenant.trim().is_empty()).then(|| {
        (
            "role".to_owned(),
            format!(
                "role: choose the role to hold in tenant `{}`",
                tenant.trim()
            ),
        )
    })
}

/// A role as a form gives it: a role, and a tenant when one was chosen.
fn binding_input(form: &[(String, String)]) -> Option<BindingInput> {
    let role = value_of(form, "role");
    let tenant = value_of(form, "tenant");
    (!role.trim().is_empty()).then(|| BindingInput {
        role: role.trim().to_owned(),
        tenant: (!tenant.trim().is_empty()).then(|| tenant.trim().to_owned()),
    })
}

/// The page for a viewer who may not list anyone (neither admin nor a tenant's owner): what
/// was refused, if something was (its status kept: a 404 stays a 404), else the listing's
/// refusal.
fn refusal(listing: ApiError, said: &Said, status: StatusCode) -> Response {
    if said.refused.is_empty() {
        page::error_page(listing.status, &listing.message)
    } else {
        page::error_page(status, &said.refused)
    }
}

async fn users_page(api: &Api, viewer: &Viewer, said: Said, status: StatusCode) -> Response {
    let listed = match service::list_users(api, &viewer.caller, false).await {
        Ok(l) => l,
        Err(e) => return refusal(e, &said, status),
    };
    let (roles, tenants) = match choices(api, viewer).await {
        Ok(c) => c,
        Err(e) => return page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let rows = listed
        .into_iter()
        .map(|u: UserView| UserRow {
            name: u.name.to_string(),
            bindings: u.bindings.iter().map(ToString::to_string).collect(),
            created_by: u.created_by,
            created: time(Some(u.created_ms)),
        })
        .collect();
    page::render(
        &UsersPage {
            layout: Layout::for_viewer(viewer, "Users", "/admin"),
            tabs: tabs(viewer, "/admin/users"),
            roles,
            tenants,
            rows,
            said,
        },
        status,
    )
}

async fn tokens_page(api: &Api, viewer: &Viewer, said: Said, status: StatusCode) -> Response {
    let listed = match service::list_tokens(api, &viewer.caller, false).await {
        Ok(l) => l,
        Err(e) => return refusal(e, &said, status),
    };
    let (roles, tenants) = match choices(api, viewer).await {
        Ok(c) => c,
        Err(e) => return page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let now = api.clock.now_ms();
    let rows = listed
        .into_iter()
        .map(|t: TokenView| TokenRow {
            name: t.name.to_string(),
            bindings: t.bindings.iter().map(ToString::to_string).collect(),
            expires: time(t.expires_ms),
            expired: t.expires_ms.is_some_and(|e| e <= now),
            created_by: t.created_by,
            created: time(Some(t.created_ms)),
        })
        .collect();
    page::render(
        &TokensPage {
            layout: Layout::for_viewer(viewer, "API tokens", "/admin"),
            tabs: tabs(viewer, "/admin/tokens"),
            roles,
            tenants,
            rows,
            said,
        },
        status,
    )
}

/// `GET /admin/users`.
pub async fn users(State(api): State<Api>, viewer: Viewer) -> Response {
    users_page(&api, &viewer, Said::default(), StatusCode::OK).await
}

/// `GET /admin/tokens`.
pub async fn tokens(State(api): State<Api>, viewer: Viewer) -> Response {
    tokens_page(&api, &viewer, Said::default(), StatusCode::OK).await
}

/// A name as typed, or the form back with what is wrong with it beside the field.
fn name_of(form: &[(String, String)]) -> Result<Name, (String, String)> {
    Name::new(value_of(form, "name").trim()).map_err(|e| ("name".to_owned(), format!("name: {e}")))
}

/// `POST /admin/users`: a new user with one role (or none); without a password one is
/// generated and shown once.
pub async fn create_user(State(api): State<Api>, Signed { viewer, form }: Signed) -> Response {
    let mut typed = Typed::of(&form);
    let name = match name_of(&form).and_then(|n| match tenant_without_role(&form) {
        Some(error) => Err(error),
        None => Ok(n),
    }) {
        Ok(n) => n,
        Err(error) => {
            typed.error = error;
            let said = Said {
                typed,
                ..Default::default()
            };
            return users_page(&api, &viewer, said, StatusCode::BAD_REQUEST).await;
        }
    };
    let password = value_of(&form, "password");
    let new = NewUser {
        name: name.clone(),
        bindings: Some(binding_input(&form).into_iter().collect()),
        role: None,
        tenant: None,
        password: (!password.is_empty()).then_some(password),
    };
    match service::create_user(&api, &viewer.caller, new).await {
        Ok(reply) => {
            let said = Said {
                done: format!("Created user {name}."),
                shown: reply.password.map(|secret| Shown {
                    whose: name.to_string(),
                    what: "password",
                    secret,
                }),
                ..Default::default()
            };
            users_page(&api, &viewer, said, StatusCode::CREATED).await
        }
        Err(e) => {
            let field = field_of(&e.message, &["name", "role", "tenant", "password"]);
            let said = if field.is_empty() {
                Said {
                    refused: e.message,
                    typed,
                    ..Default::default()
                }
            } else {
                typed.error = (field, e.message);
                Said {
                    typed,
                    ..Default::default()
                }
            };
            users_page(&api, &viewer, said, e.status).await
        }
    }
}

/// Proposes `command` and comes back to `path`, or shows the page with the refusal.
async fn act(
    api: &Api,
    viewer: &Viewer,
    command: Command,
    path: &'static str,
    page: PageOf,
) -> Response {
    match api.propose(&viewer.caller, command).await {
        Ok(_) => Redirect::to(path).into_response(),
        Err(e) => {
            page.show(api, viewer, Said::refused(e.message), e.status)
                .await
        }
    }
}

/// Which page a refusal is shown on.
#[derive(Clone, Copy)]
enum PageOf {
    Users,
    Tokens,
}

impl PageOf {
    async fn show(self, api: &Api, viewer: &Viewer, said: Said, status: StatusCode) -> Response {
        match self {
            PageOf::Users => users_page(api, viewer, said, status).await,
            PageOf::Tokens => tokens_page(api, viewer, said, status).await,
        }
    }
}

/// The named user or token of a form, or the page saying it needs one.
async fn named(
    api: &Api,
    viewer: &Viewer,
    form: &[(String, String)],
    page: PageOf,
) -> Result<Name, Response> {
    match name_of(form) {
        Ok(n) => Ok(n),
        Err((_, message)) => Err(page
            .show(api, viewer, Said::refused(message), StatusCode::BAD_REQUEST)
            .await),
    }
}

/// `POST /admin/users/delete`.
pub async fn delete_user(State(api): State<Api>, Signed { viewer, form }: Signed) -> Response {
    let name = match named(&api, &viewer, &form, PageOf::Users).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    act(
        &api,
        &viewer,
        Command::DeleteUser { name },
        "/admin/users",
        PageOf::Users,
    )
    .await
}

/// The binding a bind or unbind form names (`role`, and `tenant` for a tenant role).
fn binding_of(form: &[(String, String)]) -> Result<Binding, String> {
    let b = binding_input(form).ok_or("role: choose one")?;
    let text = match b.tenant {
        Some(t) => format!("{}@{t}", b.role),
        None => b.role,
    };
    let binding: Binding = text.parse().map_err(|e| format!("role: {e}"))?;
    binding.check().map_err(|e| format!("role: {e}"))?;
    Ok(binding)
}

/// `POST /admin/users/bind`: gives a user one more role.
pub async fn bind(State(api): State<Api>, Signed { viewer, form }: Signed) -> Response {
    let user = match named(&api, &viewer, &form, PageOf::Users).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let binding = match binding_of(&form) {
        Ok(b) => b,
        Err(message) => {
            let said = Said::refused(format!("binding {user}: {message}"));
            return users_page(&api, &viewer, said, StatusCode::BAD_REQUEST).await;
        }
    };
    act(
        &api,
        &viewer,
        Command::BindUser { user, binding },
        "/admin/users",
        PageOf::Users,
    )
    .await
}

/// `POST /admin/users/unbind`: takes one role from a user (`binding`: `ROLE` or `ROLE@TENANT`).
pub async fn unbind(State(api): State<Api>, Signed { viewer, form }: Signed) -> Response {
    let user = match named(&api, &viewer, &form, PageOf::Users).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let binding: Binding = match value_of(&form, "binding").parse() {
        Ok(b) => b,
        Err(e) => {
            let said = Said::refused(format!("binding: {e}"));
            return users_page(&api, &viewer, said, StatusCode::BAD_REQUEST).await;
        }
    };
    act(
        &api,
        &viewer,
        Command::UnbindUser { user, binding },
        "/admin/users",
        PageOf::Users,
    )
    .await
}

/// `POST /admin/users/password`: a new generated password for someone else, shown once (one's
/// own password is changed with the current one, `meridian user passwd` or the API).
pub async fn reset_password(State(api): State<Api>, Signed { viewer, form }: Signed) -> Response {
    let user = match named(&api, &viewer, &form, PageOf::Users).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let new = NewPassword {
        password: None,
        current_password: None,
    };
    // The address is not needed: one's own password (which counts guesses) needs the current
    // one, which this form never sends, so the service refuses it before any guess.
    match service::set_password(&api, &viewer.caller, "", user.clone(), new).await {
        Ok(reply) => {
            let said = Said {
                done: format!("Set a new password for {user}; they are signed out everywhere."),
                shown: reply.password.map(|secret| Shown {
                    whose: user.to_string(),
                    what: "password",
                    secret,
                }),
                ..Default::default()
            };
            users_page(&api, &viewer, said, StatusCode::OK).await
        }
        Err(e) => users_page(&api, &viewer, Said::refused(e.message), e.status).await,
    }
}

/// `POST /admin/tokens`: a token with one role, expiring after `expires_days` (none: never);
/// its secret is shown once.
pub async fn create_token(State(api): State<Api>, Signed { viewer, form }: Signed) -> Response {
    let mut typed = Typed::of(&form);
    let back = async |typed: Typed, status: StatusCode| {
        let said = Said {
            typed,
            ..Default::default()
        };
        tokens_page(&api, &viewer, said, status).await
    };
    let name = match name_of(&form) {
        Ok(n) => n,
        Err(error) => {
            typed.error = error;
            return back(typed, StatusCode::BAD_REQUEST).await;
        }
    };
    let days = value_of(&form, "expires_days");
    let expires_in_seconds = match days.trim() {
        "" => None,
        d => match d.parse::<u64>() {
            Ok(n) if n >= 1 => Some(n.saturating_mul(86_400)),
            _ => {
                typed.error = (
                    "expires_days".into(),
                    format!("expires in (days): `{d}` is not a whole number of days from 1"),
                );
                return back(typed, StatusCode::BAD_REQUEST).await;
            }
        },
    };
    let new = NewToken {
        name: name.clone(),
        bindings: Some(binding_input(&form).into_iter().collect()),
        role: None,
        tenant: None,
        expires_in_seconds,
    };
    match service::create_token(&api, &viewer.caller, new).await {
        Ok(created) => {
            let said = Said {
                done: format!("Created token {name}."),
                shown: Some(Shown {
                    whose: name.to_string(),
                    what: "token",
                    secret: created.token,
                }),
                ..Default::default()
            };
            tokens_page(&api, &viewer, said, StatusCode::CREATED).await
        }
        Err(e) => {
            let field = field_of(&e.message, &["name", "role", "tenant"]);
            let field = if field.is_empty() && e.message.contains("bindings:") {
                "role".to_owned()
            } else {
                field
            };
            if field.is_empty() {
                let said = Said {
                    refused: e.message,
                    typed,
                    ..Default::default()
                };
                tokens_page(&api, &viewer, said, e.status).await
            } else {
                typed.error = (field, e.message);
                back(typed, e.status).await
            }
        }
    }
}

/// `POST /admin/tokens/delete`.
pub async fn delete_token(State(api): State<Api>, Signed { viewer, form }: Signed) -> Response {
    let name = match named(&api, &viewer, &form, PageOf::Tokens).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    act(
        &api,
        &viewer,
        Command::DeleteToken { name },
        "/admin/tokens",
        PageOf::Tokens,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_lands_beside_the_field_it_names() {
        let fields = ["name", "role", "tenant", "password"];
        assert_eq!(
            field_of("request body: password: is shorter than 12", &fields),
            "password"
        );
        assert_eq!(
            field_of(
                "request body: bindings[0].role: `boss` is not a role",
                &fields
            ),
            "role"
        );
        assert_eq!(
            field_of("request body: bindings[0].tenant: not a name", &fields),
            "tenant"
        );
        assert_eq!(
            field_of(
                "request body: bindings[0]: role `developer` is held for a tenant",
                &fields
            ),
            "role"
        );
        assert_eq!(field_of("user `alice` exists already", &fields), "");
    }

    #[test]
    fn a_bind_form_names_a_binding() {
        let form = |role: &str, tenant: &str| {
            vec![
                ("role".to_owned(), role.to_owned()),
                ("tenant".to_owned(), tenant.to_owned()),
            ]
        };
        assert_eq!(
            binding_of(&form("developer", "ads")).unwrap().to_string(),
            "developer@ads"
        );
        assert_eq!(binding_of(&form("admin", "")).unwrap().to_string(), "admin");
        assert!(binding_of(&form("developer", "")).is_err());
        assert!(binding_of(&form("", "")).is_err());
    }
}
