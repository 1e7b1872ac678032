//! The web UI, served by every plane node on the API's listener: `/` for pages, `/api/v1`
//! stays JSON. Pages are server-rendered from compile-time-checked templates
//! (`control-plane/templates/`, askama, escaping by default) and work without JavaScript;
//! htmx and its SSE extension (vendored, pinned by SHA-384) make them live. Pages call the
//! same queries, commands and policy as the JSON API.
//!
//! - [`page`]: who is looking (a session; else a redirect to sign in), the layout, CSRF on
//!   every form, rendering, and the security headers (a CSP with no inline script).
//! - [`signin`]: signing in and out.
//! - [`admin`]: administration (data centers, clusters, environments, tenants, grants) and
//!   the audit trail.
//! - [`users`]: users and their roles, API tokens (admins, and owners for their tenants).
//! - [`overview`]: the federation overview (admin, operator).
//! - [`runs`]: the cross-DC job analysis page.
//! - [`run`]: one run: its DAG by state, Gantt chart, attempts, logs with a live tail (SSE);
//!   kill, run again.
//! - [`chart`]: charts laid out for the SVG the pages draw (a run's Gantt chart).
//! - [`schedules`]: a tenant's schedules, and the form with the environment picker and the
//!   live cron preview.
//! - [`alerts`]: alert channels, rules and deliveries with their attempts.
//! - [`backfills`]: backfills with their live progress, pausing, resuming, cancelling, and
//!   the form that makes one.
//! - [`workflows`]: a tenant's workflows, a workflow's versions and DAG, and the editor.
//! - [`resources`]: a tenant's files in the S3 bucket: list, upload, download, delete.
//! - [`document`]: a definition edited as one JSON or TOML document (the workflow editor and
//!   administration's).
//! - [`infrastructure`]: data centers, clusters, environments and tenants edited in place as
//!   documents (an environment's variables and OS users, `run_as`; a cluster's backup and
//!   lease).
//! - [`dag`]: a workflow's DAG laid out for the SVG the pages draw.
//! - [`assets`]: the embedded static files.

pub mod admin;
pub mod alerts;
pub mod assets;
pub mod backfills;
pub mod chart;
pub mod dag;
pub mod document;
pub mod infrastructure;
pub mod overview;
pub mod page;
pub mod resources;
pub mod run;
pub mod runs;
pub mod schedules;
pub mod signin;
pub mod users;
pub mod workflows;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::response::Redirect;
use axum::routing::{MethodRouter, get, post};

use crate::api::Api;

/// Every UI route: (method, path, handler). The router is made from this table and the access
/// test walks it with every role, so a page cannot be added without the walk meeting it.
fn table() -> Vec<(&'static str, &'static str, MethodRouter<Api>)> {
    let mut table = vec![
        ("get", "/", get(home)),
        ("get", "/overview", get(overview::show)),
        ("get", "/signin", get(signin::form)),
        ("post", "/signin", post(signin::submit)),
        ("post", "/signout", post(signin::sign_out)),
        ("get", "/runs", get(runs::list)),
        ("post", "/runs/kill", post(runs::kill)),
        ("post", "/runs/again", post(run::again)),
        ("post", "/runs/rerun", post(run::rerun)),
        ("post", "/runs/rerun-selected", post(runs::rerun_selected)),
        ("get", "/runs/{run_id}", get(run::show)),
        ("get", "/runs/{run_id}/log", get(run::earlier)),
        ("get", "/runs/{run_id}/log/download", get(run::download)),
        ("get", "/runs/{run_id}/tail", get(run::tail)),
        ("get", "/schedules", get(schedules::list)),
        ("get", "/schedules/new", get(schedules::new)),
        ("post", "/schedules/new", post(schedules::create)),
        ("get", "/schedules/edit", get(schedules::edit)),
        ("post", "/schedules/edit", post(schedules::update)),
        ("post", "/schedules/delete", post(schedules::delete)),
        ("post", "/schedules/in-doubt", post(schedules::resolve)),
        ("post", "/schedules/pause", post(schedules::pause)),
        ("get", "/backfills", get(backfills::list)),
        ("post", "/backfills/new", post(backfills::create)),
        ("post", "/backfills/control", post(backfills::control)),
        ("get", "/alerts", get(alerts::show)),
        ("post", "/alerts/channels/new", post(alerts::new_channel)),
        ("post", "/alerts/rules/new", post(alerts::new_rule)),
        ("post", "/alerts/delete", post(alerts::delete)),
        ("get", "/schedules/preview", get(schedules::preview)),
        ("get", "/workflows", get(workflows::list)),
        ("get", "/workflows/edit", get(workflows::edit)),
        ("post", "/workflows/edit", post(workflows::save)),
        ("get", "/workflows/{tenant}/{name}", get(workflows::show)),
        ("get", "/resources", get(resources::list)),
        ("get", "/resources/download", get(resources::download)),
        (
            "post",
            "/resources/upload",
            post(resources::upload).layer(DefaultBodyLimit::max(
                crate::api::resources::MAX_UPLOAD_BYTES as usize,
            )),
        ),
        ("post", "/resources/delete", post(resources::delete)),
        ("get", "/ui/static/{name}", get(assets::serve)),
    ];
    table.extend(admin::routes());
    table.extend(users::routes());
    table.extend(infrastructure::routes());
    table
}

/// `/`: the overview for those who may see it, else the runs.
async fn home(
    axum::extract::State(api): axum::extract::State<Api>,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match page::viewer(&api, &headers, &uri).await {
        Ok(v)
            if v.may(
                crate::policy::Action::Read,
                &crate::policy::Object::Operations,
            ) =>
        {
            Redirect::to("/overview").into_response()
        }
        _ => Redirect::to("/runs").into_response(),
    }
}

/// The UI's routes as (method, path).
pub fn routes() -> Vec<(&'static str, &'static str)> {
    table().into_iter().map(|(m, p, _)| (m, p)).collect()
}

/// The UI's router.
pub fn router(api: Api) -> Router {
    table()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| {
            router.route(path, handler)
        })
        .layer(middleware::from_fn(page::security_headers))
        .with_state(api)
}
