//! Signing in and out of the web UI: a plain form posting a user and password, the same
//! checks as `POST /api/v1/session` (limits on failures, audit), the session cookie set on
//! success and the browser sent where it was going; signing out with a form that carries the
//! session's CSRF token.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::page::{self, Layout};
use crate::api::session::{self, SignIn, SignInError, Source};
use crate::api::{Api, principal};
use crate::model::Command;

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    layout: Layout,
    user: String,
    next: String,
    /// Why the last attempt failed, beside the form.
    error: String,
}

#[derive(Deserialize)]
pub struct Next {
    #[serde(default)]
    next: Option<String>,
}

/// `GET /signin`: the form (or, already signed in, straight on).
pub async fn form(
    State(api): State<Api>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<Next>,
) -> Response {
    let next = page::local_path(q.next.as_deref().unwrap_or("/")).to_owned();
    if principal::session_secret(&headers).is_some()
        && page::viewer(&api, &headers, &uri).await.is_ok()
    {
        return Redirect::to(&next).into_response();
    }
    page::render(
        &SignInPage {
            layout: Layout::anonymous("Sign in"),
            user: String::new(),
            next,
            error: String::new(),
        },
        StatusCode::OK,
    )
}

#[derive(Deserialize)]
pub struct SignInForm {
    user: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /signin`.
pub async fn submit(
    State(api): State<Api>,
    Source(addr): Source,
    Form(f): Form<SignInForm>,
) -> Response {
    let next = page::local_path(f.next.as_deref().unwrap_or("/")).to_owned();
    let again = |error: String, status: StatusCode| {
        page::render(
            &SignInPage {
                layout: Layout::anonymous("Sign in"),
                user: f.user.clone(),
                next: next.clone(),
                error,
            },
            status,
        )
    };
    let form = SignIn {
        user: f.user.clone(),
        password: f.password.clone(),
    };
    match session::open(&api, form, &addr).await {
        Ok(opened) => {
            let mut response = Redirect::to(&next).into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, opened.cookie);
            response
        }
        Err(SignInError::Wrong) => {
            again("Wrong user or password.".into(), StatusCode::UNAUTHORIZED)
        }
        Err(SignInError::Locked { retry_after_s }) => again(
            format!(
                "Too many failed sign-ins for this user or from this address. Try again in \
                 {} minutes.",
                retry_after_s.div_ceil(60)
            ),
            StatusCode::TOO_MANY_REQUESTS,
        ),
        Err(SignInError::Failed(e)) => again(format!("Signing in failed: {}", e.message), e.status),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /signout`: ends the session everywhere and clears the cookie.
pub async fn sign_out(
    State(api): State<Api>,
    headers: HeaderMap,
    uri: Uri,
    Form(f): Form<CsrfForm>,
) -> Response {
    let viewer = match page::viewer(&api, &headers, &uri).await {
        Ok(v) => v,
        // Not signed in (any more): nothing to end.
        Err(_) => return Redirect::to("/signin").into_response(),
    };
    if !page::csrf_ok(&viewer, &f.csrf) {
        return page::csrf_refused();
    }
    let principal::Credential::Session { hash, .. } = &viewer.caller.credential else {
        return Redirect::to("/signin").into_response();
    };
    if let Err(e) = api
        .propose(
            &viewer.caller,
            Command::DeleteSession { hash: hash.clone() },
        )
        .await
    {
        return page::error_page(e.status, &e.message);
    }
    let mut response = Redirect::to("/signin").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session::cleared_cookie(api.sessions.secure),
    );
    response
}
