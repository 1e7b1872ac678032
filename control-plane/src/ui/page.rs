//! What every page shares: who is looking (a signed-in session, or a redirect to the sign-in
//! page), the layout around each page, the CSRF token every form carries, rendering, and the
//! security headers every UI response gets.

use askama::Template;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::assets;
use crate::api::Api;
use crate::api::principal::{Caller, Credential, csrf_token, session_secret};
use crate::api::token;
use crate::model::{Name, query};
use crate::policy::{self, Action, Decision, Kind, Object, Principal, Scope, Who};

/// The signed-in person looking at a page.
pub struct Viewer {
    pub caller: Caller,
    /// The session's CSRF token: every form a page holds carries it.
    pub csrf: String,
}

impl Viewer {
    pub fn principal(&self) -> &Principal {
        &self.caller.principal
    }

    /// Who may see what of a kind, for this viewer.
    pub fn scope(&self, kind: Kind) -> Scope {
        policy::scope(self.principal(), kind)
    }

    /// Whether the policy lets this viewer do `action` to `object` (what a page offers; the
    /// command is checked again when it is proposed and when it is applied).
    pub fn may(&self, action: Action, object: &Object) -> bool {
        policy::decide(self.principal(), action, object) == Decision::Allow
    }
}

/// The tenants in which `viewer` may create definitions (workflows, schedules).
pub async fn writable_tenants(api: &Api, viewer: &Viewer) -> sqlx::Result<Vec<Name>> {
    Ok(query::tenants(api.node.state.pool())
        .await?
        .into_iter()
        .map(|t| t.name)
        .filter(|t| viewer.may(Action::Create, &Object::Definition(t.clone())))
        .collect())
}

/// `?tenant=&after=` of a list page read a page at a time (schedules, workflows): a million
/// items are never read, nor shown, at once.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Paging {
    /// Only this tenant's.
    pub tenant: String,
    /// The items after this one, `tenant/name`.
    pub after: String,
}

impl Paging {
    /// The page asked for: `size` items of the tenants `viewer` may see definitions of; or
    /// what is wrong with the query.
    pub fn page(&self, viewer: &Viewer, size: u32) -> Result<query::Page, String> {
        let asked = crate::api::ListOptions {
            stale: false,
            tenant: Some(self.tenant.clone()).filter(|t| !t.is_empty()),
            after: Some(self.after.clone()).filter(|a| !a.is_empty()),
            limit: Some(size),
        };
        let mut page = asked.page().map_err(|e| e.message)?;
        page.within = match viewer.scope(Kind::Definition) {
            Scope::All => None,
            Scope::Tenants(tenants) => Some(tenants.into_iter().collect()),
            Scope::Nothing => Some(Vec::new()),
        };
        Ok(page)
    }

    /// Links from a page of `path` showing `shown` of `size`, the last `tenant/name`: to the
    /// first page (when this is not it) and to the next (when this one is full).
    pub fn links(
        &self,
        path: &str,
        shown: usize,
        size: u32,
        last: Option<String>,
    ) -> (Option<String>, Option<String>) {
        let href = |after: &str| {
            let mut query: Vec<(&str, &str)> = Vec::new();
            if !self.tenant.is_empty() {
                query.push(("tenant", &self.tenant));
            }
            if !after.is_empty() {
                query.push(("after", after));
            }
            match serde_urlencoded::to_string(&query).unwrap_or_default() {
                q if q.is_empty() => path.to_owned(),
                q => format!("{path}?{q}"),
            }
        };
        let first = (!self.after.is_empty()).then(|| href(""));
        let next = last
            .filter(|_| shown == size as usize)
            .map(|last| href(&last));
        (first, next)
    }
}

/// The viewer of a request for `uri`: its session resolved from the plane's model (current,
/// after a read barrier, so a sign-out or revocation elsewhere counts), or a redirect to the
/// sign-in page that comes back here.
pub async fn viewer(api: &Api, headers: &HeaderMap, uri: &Uri) -> Result<Viewer, Response> {
    let back = || {
        let next = uri.path_and_query().map_or("/", |p| p.as_str());
        let query = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
        Redirect::to(&format!("/signin?{query}")).into_response()
    };
    let Some(secret) = session_secret(headers) else {
        return Err(back());
    };
    let credential = Credential::Session {
        hash: token::hash(&secret),
        csrf: csrf_token(&secret),
    };
    let caller = Caller {
        principal: Principal {
            who: Who::System(String::new()),
            bindings: vec![],
        },
        credential: credential.clone(),
    };
    // The same resolution a linearizable API read makes.
    match api.reader(&caller, false).await {
        Ok(read) => Ok(Viewer {
            caller: Caller {
                principal: read.principal,
                credential,
            },
            csrf: csrf_token(&secret),
        }),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => Err(back()),
        Err(e) => Err(error_page(e.status, &e.message)),
    }
}

impl axum::extract::FromRequestParts<Api> for Viewer {
    /// The redirect to the sign-in page (or the page saying why the session could not be read).
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        api: &Api,
    ) -> Result<Self, Response> {
        viewer(api, &parts.headers, &parts.uri).await
    }
}

/// A form sent from a page of the viewer's own session: who sent it and what, its CSRF token
/// checked (a forged or stale one is refused before anything else happens). `T` is what the
/// form reads into; by default its fields in order.
pub struct Signed<T = Vec<(String, String)>> {
    pub viewer: Viewer,
    pub form: T,
}

impl<T: serde::de::DeserializeOwned> FromRequest<Api> for Signed<T> {
    type Rejection = Response;

    async fn from_request(req: Request, api: &Api) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        let viewer = viewer(api, &parts.headers, &parts.uri).await?;
        let req = Request::from_parts(parts, body);
        let bytes = axum::body::Bytes::from_request(req, api)
            .await
            .map_err(IntoResponse::into_response)?;
        let sent: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| error_page(StatusCode::BAD_REQUEST, &format!("the form: {e}")))?;
        let csrf = sent
            .iter()
            .find(|(k, _)| k == "csrf")
            .map_or("", |(_, v)| v.as_str());
        if !csrf_ok(&viewer, csrf) {
            return Err(csrf_refused());
        }
        let form = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| error_page(StatusCode::BAD_REQUEST, &format!("the form: {e}")))?;
        Ok(Signed { viewer, form })
    }
}

/// The value of `key` in a form as sent (empty when absent).
pub fn value_of(form: &[(String, String)], key: &str) -> String {
    form.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// Whether a form's CSRF token is the viewer's session's (compared in constant time).
pub fn csrf_ok(viewer: &Viewer, sent: &str) -> bool {
    let (a, b) = (viewer.csrf.as_bytes(), sent.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A refused form: what a forged or stale submission gets.
pub fn csrf_refused() -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "This form was not sent from a page of this session (its CSRF token is missing or \
         wrong). Reload the page and try again.",
    )
}

/// A place `next` may send the browser after signing in: a path on this site only.
pub fn local_path(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}

/// A time cell (pages show it in the viewer's zone, UTC on hover): ISO 8601 for `datetime`, readable UTC for the text.
pub struct Time {
    pub iso: String,
    pub text: String,
}

pub fn time(ms: Option<i64>) -> Option<Time> {
    let t = chrono::DateTime::from_timestamp_millis(ms?)?;
    Some(Time {
        iso: t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        text: t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    })
}

/// One entry of the navigation bar.
pub struct Nav {
    pub href: &'static str,
    pub label: &'static str,
    pub here: bool,
}

/// What the layout around every page shows.
pub struct Layout {
    pub title: String,
    /// `alice`, or empty on the sign-in page.
    pub user: String,
    /// The viewer's roles, `developer@ads, viewer@bi`.
    pub roles: String,
    pub csrf: String,
    pub nav: Vec<Nav>,
    pub htmx: (String, &'static str),
    pub sse: (String, &'static str),
    pub css: (String, &'static str),
    pub js: (String, &'static str),
}

impl Layout {
    fn assets(title: String, user: String, roles: String, csrf: String, nav: Vec<Nav>) -> Self {
        let pin = |a: &assets::Asset| (a.url(), a.integrity());
        Self {
            title,
            user,
            roles,
            csrf,
            nav,
            htmx: pin(&assets::HTMX),
            sse: pin(&assets::SSE),
            css: pin(&assets::CSS),
            js: pin(&assets::JS),
        }
    }

    /// The layout of a page `viewer` is on (`here`: its path, to mark in the navigation).
    pub fn for_viewer(viewer: &Viewer, title: &str, here: &str) -> Self {
        let p = viewer.principal();
        let user = match &p.who {
            Who::User(n) => n.to_string(),
            Who::Token(n) => format!("token {n}"),
            Who::System(n) => n.clone(),
        };
        let roles = p
            .bindings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let overview = viewer.may(Action::Read, &Object::Operations);
        // Tenants' owners manage their tenants' users and tokens there.
        let admin = overview || viewer.scope(Kind::Principal) != Scope::Nothing;
        let nav = [
            ("/overview", "Overview"),
            ("/runs", "Runs"),
            ("/workflows", "Workflows"),
            ("/schedules", "Schedules"),
            ("/resources", "Resources"),
            ("/alerts", "Alerts"),
            ("/admin", "Administration"),
        ]
        .into_iter()
        .filter(|(href, _)| match *href {
            "/overview" => overview,
            "/admin" => admin,
            _ => true,
        })
        .map(|(href, label)| Nav {
            href,
            label,
            here: here == href,
        })
        .collect();
        Self::assets(title.to_owned(), user, roles, viewer.csrf.clone(), nav)
    }

    /// The layout of a page nobody is signed in to.
    pub fn anonymous(title: &str) -> Self {
        Self::assets(
            title.to_owned(),
            String::new(),
            String::new(),
            String::new(),
            vec![],
        )
    }
}

/// `response` as a download: its content type, and saved under `name` (anything but letters,
/// digits and `-_.@` made `_`, so no name can break out of the header or the directory).
pub fn attachment(mut response: Response, content_type: &'static str, name: &str) -> Response {
    let name = name.replace(
        |c: char| !(c.is_ascii_alphanumeric() || "-_.@".contains(c)),
        "_",
    );
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

/// A page rendered, or a 500 saying why not.
pub fn render(page: &impl Template, status: StatusCode) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the page: {e}"),
        )
            .into_response(),
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    layout: Layout,
    status: u16,
    message: &'a str,
}

/// A page that says what went wrong.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    render(
        &ErrorPage {
            layout: Layout::anonymous("Error"),
            status: status.as_u16(),
            message,
        },
        status,
    )
}

/// The Content Security Policy of every page: scripts and styles from this site only (no
/// inline script, no `eval`), no framing, forms posting only here.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Adds the security headers to every UI response.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_signing_in() {
        assert_eq!(local_path("/runs?state=failed"), "/runs?state=failed");
        for bad in [
            "//evil.example/x",
            "https://evil.example/",
            "\\\\evil",
            "/\\evil",
            "",
        ] {
            assert_eq!(local_path(bad), "/", "{bad}");
        }
    }
}
