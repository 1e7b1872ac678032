//! An environment's editor (administration): the whole environment as one JSON or TOML
//! document — its variables, work directory, queue and the OS users each tenant's tasks run
//! as (`run_as`) — saved through the same command and checks as
//! `PUT /api/v1/environments/{name}`, with what is wrong (down to the field's path) beside
//! the document.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, get, post};
use serde::Deserialize;

use super::admin::{refusal, tabs};
use super::document::{self, Editor, Format, typed};
use super::page::{self, Layout, Signed, Viewer};
use crate::api::Api;
use crate::model::{Command, Environment, Name, query};

const PATH: &str = "/admin/environments/edit";

pub fn routes() -> Vec<(&'static str, &'static str, MethodRouter<Api>)> {
    vec![("get", PATH, get(edit)), ("post", PATH, post(save))]
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EditQuery {
    name: String,
    format: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EditForm {
    name: String,
    format: String,
    document: String,
}

/// The editor for environment `name`, holding `document` (and why it was not saved).
fn editor(
    viewer: &Viewer,
    name: &str,
    format: Format,
    document: String,
    error: String,
    status: StatusCode,
) -> Response {
    let switch = [Format::Json, Format::Toml]
        .into_iter()
        .map(|f| {
            let query = serde_urlencoded::to_string([("name", name), ("format", f.name())])
                .unwrap_or_default();
            (f.name(), format!("{PATH}?{query}"), f == format)
        })
        .collect();
    let heading = format!("Environment {name}");
    document::render(
        Editor {
            layout: Layout::for_viewer(viewer, &heading, "/admin"),
            tabs: tabs(viewer, "/admin/environments"),
            heading,
            action: PATH,
            what: "The environment",
            shape: "PUT /api/v1/environments/{name}",
            after: "saving replaces it; runs already going keep what they started with",
            key: vec![("name", name.to_owned())],
            switch,
            format: format.name(),
            document,
            error,
            refused: String::new(),
        },
        status,
    )
}

/// `GET /admin/environments/edit?name=&format=`.
pub async fn edit(State(api): State<Api>, viewer: Viewer, Query(q): Query<EditQuery>) -> Response {
    if let Some(refused) = refusal(&viewer) {
        return refused;
    }
    let missing = || {
        page::error_page(
            StatusCode::NOT_FOUND,
            &format!("There is no environment `{}`.", q.name),
        )
    };
    let Ok(name) = Name::new(q.name.trim()) else {
        return missing();
    };
    let format = Format::of(&q.format);
    match query::environment(api.node.state.pool(), &name).await {
        Ok(Some(env)) => editor(
            &viewer,
            name.as_str(),
            format,
            format.write(&env),
            String::new(),
            StatusCode::OK,
        ),
        Ok(None) => missing(),
        Err(e) => page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `POST /admin/environments/edit`: the document read, typed (a wrong field named by its
/// path), kept to the environment being edited (not a rename), then proposed.
pub async fn save(
    State(api): State<Api>,
    Signed { viewer, form: f }: Signed<EditForm>,
) -> Response {
    if let Some(refused) = refusal(&viewer) {
        return refused;
    }
    let format = Format::of(&f.format);
    let back = |error: String, status: StatusCode| {
        editor(&viewer, &f.name, format, f.document.clone(), error, status)
    };
    let env: Environment = match format.read(&f.document).and_then(typed) {
        Ok(e) => e,
        Err(e) => return back(e, StatusCode::BAD_REQUEST),
    };
    if env.name.as_str() != f.name {
        return back(
            format!(
                "document: name: this is environment `{}`; it cannot be renamed (make a new one \
                 and move the grants)",
                f.name
            ),
            StatusCode::BAD_REQUEST,
        );
    }
    match api
        .propose(&viewer.caller, Command::UpdateEnvironment(env))
        .await
    {
        Ok(_) => Redirect::to("/admin/environments").into_response(),
        Err(e) => back(e.message, e.status),
    }
}
