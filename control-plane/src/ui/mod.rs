//! The web UI, served by every plane node on the API's listener: `/` for pages, `/api/v1`
//! stays JSON. Pages are server-rendered from compile-time-checked templates
//! (`control-plane/templates/`, askama, escaping by default) and work without JavaScript;
//! htmx and its SSE extension (vendored, pinned by SHA-384) make them live. Pages call the
//! same queries, commands and policy as the JSON API.
//!
//! - [`page`]: who is looking (a session; else a redirect to sign in), the layout, CSRF on
//!   every form, rendering, and the security headers (a CSP with no inline script).
//! - [`signin`]: signing in and out.
//! - [`runs`]: the cross-DC job analysis page.
//! - [`assets`]: the embedded static files.

pub mod assets;
pub mod page;
pub mod runs;
pub mod signin;

use axum::Router;
use axum::middleware;
use axum::response::Redirect;
use axum::routing::{get, post};

use crate::api::Api;

/// The UI's routes.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/", get(async || Redirect::to("/runs")))
        .route("/signin", get(signin::form).post(signin::submit))
        .route("/signout", post(signin::sign_out))
        .route("/runs", get(runs::list))
        .route("/runs/kill", post(runs::kill))
        .route("/ui/static/{name}", get(assets::serve))
        .layer(middleware::from_fn(page::security_headers))
        .with_state(api)
}
