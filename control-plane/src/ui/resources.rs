//! A tenant's resources (the scripts, jars and SQL files in the federation's S3 bucket that its
//! tasks name): list, upload, download, delete — through the same service functions as
//! `/api/v1/resources`, so the same policy, limits and audit.

use askama::Template;
use axum::body::Body;
use axum::extract::{Multipart, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::page::{self, Layout, Signed, Time, Viewer, time};
use crate::api::resources::{self, Resource};
use crate::api::{Api, ApiError};
use crate::model::{Name, query};
use crate::policy::{Action, Kind, Object};

/// A resource as the page lists it.
pub struct Row {
    pub key: String,
    pub size: String,
    pub modified: Option<Time>,
    pub etag: String,
    pub href: String,
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b if b < 1024 * 1024 * 1024 => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
        b => format!("{:.1} GiB", b as f64 / (1024.0 * 1024.0 * 1024.0)),
    }
}

fn download_href(tenant: &str, key: &str) -> String {
    let query = serde_urlencoded::to_string([("tenant", tenant), ("key", key)]).unwrap_or_default();
    format!("/resources/download?{query}")
}

#[derive(Template)]
#[template(path = "resources.html")]
struct ResourcesPage {
    layout: Layout,
    /// The tenants whose files the viewer may see, and the one shown.
    tenants: Vec<String>,
    tenant: String,
    prefix: String,
    rows: Vec<Row>,
    can_write: bool,
    /// Why the list could not be read (no bucket configured, S3 unreachable).
    problem: String,
    /// What the last upload or delete did, or why it did not.
    notice: String,
    refused: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListQuery {
    tenant: String,
    prefix: String,
}

async fn readable_tenants(api: &Api, viewer: &Viewer) -> sqlx::Result<Vec<Name>> {
    let scope = viewer.scope(Kind::Definition);
    Ok(query::tenants(api.node.state.pool())
        .await?
        .into_iter()
        .map(|t| t.name)
        .filter(|t| scope.contains(t))
        .collect())
}

/// The page for `tenant` (or the first the viewer may see), with a notice from the last action.
async fn page_for(
    api: &Api,
    viewer: &Viewer,
    tenant: &str,
    prefix: &str,
    notice: Result<String, ApiError>,
) -> Response {
    let tenants = match readable_tenants(api, viewer).await {
        Ok(t) => t,
        Err(e) => return page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let shown = tenants
        .iter()
        .find(|t| t.as_str() == tenant)
        .or(tenants.first())
        .cloned();
    let (mut rows, mut problem) = (Vec::new(), String::new());
    if let Some(t) = &shown {
        let prefix = (!prefix.is_empty()).then(|| prefix.to_owned());
        match resources::list_of(api, &viewer.caller, t.to_string(), prefix).await {
            Ok(listed) => {
                rows = listed
                    .into_iter()
                    .map(|r: Resource| Row {
                        href: download_href(t.as_str(), &r.key),
                        size: size(r.size),
                        modified: time(Some(r.last_modified_ms)),
                        etag: r.etag,
                        key: r.key,
                    })
                    .collect();
            }
            Err(e) => problem = e.message,
        }
    }
    let (status, notice, refused) = match notice {
        Ok(n) => (StatusCode::OK, n, false),
        Err(e) => (e.status, e.message, true),
    };
    page::render(
        &ResourcesPage {
            layout: Layout::for_viewer(viewer, "Resources", "/resources"),
            tenants: tenants.iter().map(Name::to_string).collect(),
            can_write: shown
                .as_ref()
                .is_some_and(|t| viewer.may(Action::Create, &Object::Definition(t.clone()))),
            tenant: shown.map(|t| t.to_string()).unwrap_or_default(),
            prefix: prefix.to_owned(),
            rows,
            problem,
            notice,
            refused,
        },
        status,
    )
}

/// `GET /resources?tenant=&prefix=`.
pub async fn list(State(api): State<Api>, viewer: Viewer, Query(q): Query<ListQuery>) -> Response {
    page_for(&api, &viewer, &q.tenant, &q.prefix, Ok(String::new())).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KeyQuery {
    tenant: String,
    key: String,
}

/// `GET /resources/download?tenant=&key=`: the file, as an attachment named for its last part.
pub async fn download(
    State(api): State<Api>,
    viewer: Viewer,
    Query(q): Query<KeyQuery>,
) -> Response {
    match resources::download(&api, &viewer.caller, q.tenant, q.key.clone()).await {
        Ok(body) => page::attachment(
            Body::into_response(body),
            "application/octet-stream",
            q.key.rsplit('/').next().unwrap_or("resource"),
        ),
        Err(e) => page::error_page(e.status, &e.message),
    }
}

/// `POST /resources/upload` (multipart: `csrf`, `tenant`, `key`, then `file`; an empty key
/// takes the file's name). The CSRF token and the policy are checked before the file is read.
pub async fn upload(State(api): State<Api>, viewer: Viewer, mut form: Multipart) -> Response {
    let (mut csrf, mut tenant, mut key) = (String::new(), String::new(), String::new());
    let bad = |message: String| ApiError::bad_input(message);
    let outcome = loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break Err(bad("file: choose a file to upload".into())),
            Err(e) => break Err(bad(format!("the form: {e}"))),
        };
        match field.name().unwrap_or_default() {
            "csrf" => csrf = field.text().await.unwrap_or_default(),
            "tenant" => tenant = field.text().await.unwrap_or_default(),
            "key" => key = field.text().await.unwrap_or_default().trim().to_owned(),
            "file" => {
                if !page::csrf_ok(&viewer, &csrf) {
                    return page::csrf_refused();
                }
                if key.is_empty() {
                    key = field.file_name().unwrap_or_default().to_owned();
                }
                if key.is_empty() {
                    break Err(bad("file: choose a file to upload".into()));
                }
                break resources::upload(&api, &viewer.caller, tenant.clone(), key.clone(), field)
                    .await
                    .map(|r| format!("Uploaded {} ({}).", r.key, size(r.size)));
            }
            _ => {}
        }
    };
    if !page::csrf_ok(&viewer, &csrf) {
        return page::csrf_refused();
    }
    done(&api, &viewer, &tenant, outcome).await
}

/// After an upload or delete: back to the list (303) when it worked, else the list with why
/// not, under the status the service answered (a hidden tenant's stays a bare 404).
async fn done(
    api: &Api,
    viewer: &Viewer,
    tenant: &str,
    outcome: Result<String, ApiError>,
) -> Response {
    match outcome {
        Ok(_) => {
            let query = serde_urlencoded::to_string([("tenant", tenant)]).unwrap_or_default();
            Redirect::to(&format!("/resources?{query}")).into_response()
        }
        Err(e) if matches!(e.status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN) => {
            page::error_page(e.status, &e.message)
        }
        Err(e) => page_for(api, viewer, tenant, "", Err(e)).await,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteForm {
    csrf: String,
    tenant: String,
    key: String,
}

/// `POST /resources/delete`.
pub async fn delete(
    State(api): State<Api>,

    Signed { viewer, form: f }: Signed<DeleteForm>,
) -> Response {
    let outcome = resources::delete(&api, &viewer.caller, f.tenant.clone(), f.key)
        .await
        .map(|r| format!("Deleted {}.", r.key));
    done(&api, &viewer, &f.tenant, outcome).await
}
