//! What administration lists, edited in place as one JSON or TOML document each (the body of
//! the API's `PUT`): a data center's or tenant's description; a cluster's role, backup and
//! lease (never its data center or partition count, which the plane refuses to change,
//! saying why); an environment's variables, work directory, queue and the OS users each
//! tenant's tasks run as (`run_as`, checked by the plane). Saved through the same commands,
//! checks and policy as the API, with what is wrong (down to the field's path) beside the
//! document. Nothing is renamed.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, get, post};
use serde::Deserialize;
use serde_json::Value;
use sqlx::SqlitePool;

use super::admin::{refusal, tabs};
use super::document::{self, Editor, Format, typed};
use super::page::{self, Layout, Signed, Viewer};
use crate::api::Api;
use crate::model::{Cluster, Command, DataCenter, Environment, Name, Tenant, query};

/// A kind of thing edited here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Editable {
    DataCenter,
    Cluster,
    Environment,
    Tenant,
}

impl Editable {
    pub const ALL: [Editable; 4] = [
        Self::DataCenter,
        Self::Cluster,
        Self::Environment,
        Self::Tenant,
    ];

    /// Where it is listed (its administration tab).
    fn list_path(self) -> &'static str {
        match self {
            Self::DataCenter => "/admin/dcs",
            Self::Cluster => "/admin/clusters",
            Self::Environment => "/admin/environments",
            Self::Tenant => "/admin/tenants",
        }
    }

    /// Where one is edited (`?name=`).
    pub fn edit_path(self) -> &'static str {
        match self {
            Self::DataCenter => "/admin/dcs/edit",
            Self::Cluster => "/admin/clusters/edit",
            Self::Environment => "/admin/environments/edit",
            Self::Tenant => "/admin/tenants/edit",
        }
    }

    fn word(self) -> &'static str {
        match self {
            Self::DataCenter => "data center",
            Self::Cluster => "cluster",
            Self::Environment => "environment",
            Self::Tenant => "tenant",
        }
    }

    fn heading(self, name: &str) -> String {
        let title = match self {
            Self::DataCenter => "Data center",
            Self::Cluster => "Cluster",
            Self::Environment => "Environment",
            Self::Tenant => "Tenant",
        };
        format!("{title} {name}")
    }

    fn what(self) -> &'static str {
        match self {
            Self::DataCenter => "The data center",
            Self::Cluster => "The cluster",
            Self::Environment => "The environment",
            Self::Tenant => "The tenant",
        }
    }

    fn shape(self) -> &'static str {
        match self {
            Self::DataCenter => "PUT /api/v1/dcs/{name}",
            Self::Cluster => "PUT /api/v1/clusters/{name}",
            Self::Environment => "PUT /api/v1/environments/{name}",
            Self::Tenant => "PUT /api/v1/tenants/{name}",
        }
    }

    fn after(self) -> &'static str {
        match self {
            Self::DataCenter | Self::Tenant => "saving replaces it",
            Self::Cluster => {
                "saving replaces it; its data center and partition count stay as created; a new \
                 lease duration or backup applies from its agents' next heartbeat"
            }
            Self::Environment => {
                "saving replaces it; runs already going keep what they started with"
            }
        }
    }

    /// What to do instead of renaming one.
    fn instead(self) -> &'static str {
        match self {
            Self::DataCenter => "make a new one and move the clusters",
            Self::Cluster => "make a new one and move the environments",
            Self::Environment => "make a new one and move the grants",
            Self::Tenant => "make a new one and move its workflows and schedules",
        }
    }

    /// The stored one as a document in `format` (written from its type: TOML has no null, so
    /// an unset field is left out rather than written as one).
    async fn load(
        self,
        pool: &SqlitePool,
        name: &Name,
        format: Format,
    ) -> sqlx::Result<Option<String>> {
        fn written<T: serde::Serialize>(v: Option<T>, format: Format) -> Option<String> {
            v.map(|v| format.write(&v))
        }
        Ok(match self {
            Self::DataCenter => written(query::data_center(pool, name).await?, format),
            Self::Cluster => written(query::cluster(pool, name).await?, format),
            Self::Environment => written(query::environment(pool, name).await?, format),
            Self::Tenant => written(query::tenant(pool, name).await?, format),
        })
    }

    /// The document typed as this kind (a wrong field named by its path): the name it gives
    /// and the command that saves it.
    fn command(self, doc: Value) -> Result<(Name, Command), String> {
        Ok(match self {
            Self::DataCenter => {
                let d: DataCenter = typed(doc)?;
                (d.name.clone(), Command::UpdateDataCenter(d))
            }
            Self::Cluster => {
                let c: Cluster = typed(doc)?;
                (c.name.clone(), Command::UpdateCluster(c))
            }
            Self::Environment => {
                let e: Environment = typed(doc)?;
                (e.name.clone(), Command::UpdateEnvironment(e))
            }
            Self::Tenant => {
                let t: Tenant = typed(doc)?;
                (t.name.clone(), Command::UpdateTenant(t))
            }
        })
    }
}

pub fn routes() -> Vec<(&'static str, &'static str, MethodRouter<Api>)> {
    Editable::ALL
        .into_iter()
        .flat_map(|kind| {
            [
                (
                    "get",
                    kind.edit_path(),
                    get(
                        move |api: State<Api>, viewer: Viewer, q: Query<EditQuery>| {
                            edit(kind, api, viewer, q)
                        },
                    ),
                ),
                (
                    "post",
                    kind.edit_path(),
                    post(move |api: State<Api>, form: Signed<EditForm>| save(kind, api, form)),
                ),
            ]
        })
        .collect()
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

/// The editor for `kind` `name`, holding `document` (and why it was not saved).
fn editor(
    kind: Editable,
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
            (
                f.name(),
                format!("{}?{query}", kind.edit_path()),
                f == format,
            )
        })
        .collect();
    let heading = kind.heading(name);
    document::render(
        Editor {
            layout: Layout::for_viewer(viewer, &heading, "/admin"),
            tabs: tabs(viewer, kind.list_path()),
            heading,
            action: kind.edit_path(),
            what: kind.what(),
            shape: kind.shape(),
            after: kind.after(),
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

/// `GET /admin/{kind}/edit?name=&format=`.
async fn edit(
    kind: Editable,
    State(api): State<Api>,
    viewer: Viewer,
    Query(q): Query<EditQuery>,
) -> Response {
    if let Some(refused) = refusal(&viewer) {
        return refused;
    }
    let missing = || {
        page::error_page(
            StatusCode::NOT_FOUND,
            &format!("There is no {} `{}`.", kind.word(), q.name),
        )
    };
    let Ok(name) = Name::new(q.name.trim()) else {
        return missing();
    };
    let format = Format::of(&q.format);
    match kind.load(api.node.state.pool(), &name, format).await {
        Ok(Some(document)) => editor(
            kind,
            &viewer,
            name.as_str(),
            format,
            document,
            String::new(),
            StatusCode::OK,
        ),
        Ok(None) => missing(),
        Err(e) => page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `POST /admin/{kind}/edit`: the document read, typed (a wrong field named by its path), kept
/// to the one being edited (not a rename), then proposed.
async fn save(
    kind: Editable,
    State(api): State<Api>,
    Signed { viewer, form: f }: Signed<EditForm>,
) -> Response {
    if let Some(refused) = refusal(&viewer) {
        return refused;
    }
    let format = Format::of(&f.format);
    let back = |error: String, status: StatusCode| {
        editor(
            kind,
            &viewer,
            &f.name,
            format,
            f.document.clone(),
            error,
            status,
        )
    };
    let (name, command) = match format.read(&f.document).and_then(|v| kind.command(v)) {
        Ok(c) => c,
        Err(e) => return back(e, StatusCode::BAD_REQUEST),
    };
    if name.as_str() != f.name {
        return back(
            format!(
                "document: name: this is {} `{}`; it cannot be renamed ({})",
                kind.word(),
                f.name,
                kind.instead()
            ),
            StatusCode::BAD_REQUEST,
        );
    }
    match api.propose(&viewer.caller, command).await {
        Ok(_) => Redirect::to(kind.list_path()).into_response(),
        Err(e) => back(e.message, e.status),
    }
}
