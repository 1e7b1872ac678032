//! Administration (admin, operator): data centers, clusters, environments, tenants and grants
//! (also as a tenant × environment matrix with each grant's concurrency limit) — listed,
//! created, changed (a grant's limit in its row; the others in [`super::infrastructure`]'s
//! editors) and deleted through the same commands, checks and policy as the API — and the
//! audit trail, filtered by actor, subject, tenant, outcome and time.
//!
//! A refused form comes back as typed with the server's own message beside the field it names;
//! deleting something still in use says what uses it (the plane's message).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, get, post};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::page::{self, Layout, Signed, Time, Viewer, time, value_of};
use crate::api::Api;
use crate::model::{Command, Name, query};
use crate::policy::{Action, Kind as PolicyKind, Object, Scope};

/// How a form field is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Text,
    Number,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// The name of an existing thing of this kind (a select of them).
    Ref(&'static str),
}

#[derive(Debug)]
pub struct FieldSpec {
    /// Its key in the JSON document the API takes.
    pub name: &'static str,
    pub label: &'static str,
    pub input: Input,
    pub required: bool,
}

/// A kind of thing these pages manage.
#[derive(Debug)]
pub struct AdminKind {
    pub slug: &'static str,
    pub path: &'static str,
    pub delete_path: &'static str,
    pub title: &'static str,
    /// `data center`.
    pub one: &'static str,
    pub fields: &'static [FieldSpec],
    /// The fields that name one (what delete sends).
    pub key: &'static [&'static str],
    /// Where one is edited as a whole document (`?name=`), for the kinds that can be.
    pub edit_path: Option<&'static str>,
    /// The one field changed in place in its row, for the kinds that can be (where it posts,
    /// and the field).
    pub change: Option<(&'static str, &'static str)>,
}

const fn field(name: &'static str, label: &'static str, input: Input, required: bool) -> FieldSpec {
    FieldSpec {
        name,
        label,
        input,
        required,
    }
}

pub static KINDS: [AdminKind; 5] = [
    AdminKind {
        slug: "dcs",
        path: "/admin/dcs",
        delete_path: "/admin/dcs/delete",
        title: "Data centers",
        one: "data center",
        fields: &[
            field("name", "Name", Input::Text, true),
            field("description", "Description", Input::Text, false),
        ],
        key: &["name"],
        edit_path: Some("/admin/dcs/edit"),
        change: None,
    },
    AdminKind {
        slug: "clusters",
        path: "/admin/clusters",
        delete_path: "/admin/clusters/delete",
        title: "Clusters",
        one: "cluster",
        fields: &[
            field("name", "Name", Input::Text, true),
            field("dc", "Data center", Input::Ref("dcs"), true),
            field("role", "Role", Input::Choice(&["active", "backup"]), false),
            field("backup", "Backup cluster", Input::Ref("clusters"), false),
            field("partitions", "Partitions", Input::Number, false),
            field("lease_seconds", "Lease (s)", Input::Number, false),
        ],
        key: &["name"],
        edit_path: Some("/admin/clusters/edit"),
        change: None,
    },
    AdminKind {
        slug: "environments",
        path: "/admin/environments",
        delete_path: "/admin/environments/delete",
        title: "Environments",
        one: "environment",
        fields: &[
            field("name", "Name", Input::Text, true),
            field("cluster", "Cluster", Input::Ref("clusters"), true),
            field("work_dir", "Work directory", Input::Text, false),
            field("queue", "Queue", Input::Text, false),
        ],
        key: &["name"],
        edit_path: Some("/admin/environments/edit"),
        change: None,
    },
    AdminKind {
        slug: "tenants",
        path: "/admin/tenants",
        delete_path: "/admin/tenants/delete",
        title: "Tenants",
        one: "tenant",
        fields: &[
            field("name", "Name", Input::Text, true),
            field("description", "Description", Input::Text, false),
        ],
        key: &["name"],
        edit_path: Some("/admin/tenants/edit"),
        change: None,
    },
    AdminKind {
        slug: "grants",
        path: "/admin/grants",
        delete_path: "/admin/grants/delete",
        title: "Grants",
        one: "grant",
        fields: &[
            field("tenant", "Tenant", Input::Ref("tenants"), true),
            field(
                "environment",
                "Environment",
                Input::Ref("environments"),
                true,
            ),
            field("max_concurrent_runs", "Runs at once", Input::Number, false),
        ],
        key: &["tenant", "environment"],
        edit_path: None,
        change: Some(("/admin/grants/update", "max_concurrent_runs")),
    },
];

/// The administration pages' routes: (method, path, handler), for the UI's route table.
pub fn routes() -> Vec<(&'static str, &'static str, MethodRouter<Api>)> {
    let mut all: Vec<(&'static str, &'static str, MethodRouter<Api>)> = vec![
        ("get", "/admin", get(home)),
        ("get", "/admin/audit", get(audit)),
    ];
    for kind in &KINDS {
        if let Some((path, _)) = kind.change {
            all.push((
                "post",
                path,
                post(
                    move |State(api): State<Api>, Signed { viewer, form }: Signed| async move {
                        change(kind, api, viewer, form).await
                    },
                ),
            ));
        }
        all.push((
            "get",
            kind.path,
            get(move |State(api): State<Api>, viewer: Viewer| async move {
                list(kind, api, viewer).await
            }),
        ));
        all.push((
            "post",
            kind.path,
            post(
                move |State(api): State<Api>, Signed { viewer, form }: Signed| async move {
                    create(kind, api, viewer, form).await
                },
            ),
        ));
        all.push((
            "post",
            kind.delete_path,
            post(
                move |State(api): State<Api>, Signed { viewer, form }: Signed| async move {
                    delete(kind, api, viewer, form).await
                },
            ),
        ));
    }
    all
}

/// A field of the form as shown: its spec, what was typed, the choices of a select, and the
/// server's message about it.
pub struct FieldView {
    pub name: &'static str,
    pub label: &'static str,
    pub number: bool,
    pub required: bool,
    /// For a select: its options (an empty first one when it is optional).
    pub choices: Option<Vec<String>>,
    pub value: String,
    pub error: String,
}

/// One thing listed: its key (for delete) and its cells.
pub struct Item {
    pub key: Vec<(&'static str, String)>,
    pub cells: Vec<String>,
    /// Its editor's address, for the kinds edited as a document.
    pub edit: Option<String>,
    /// The value of the field changed in place, for the kinds that have one.
    pub current: String,
}

/// The grant matrix: a row per tenant, a cell per environment.
pub struct Matrix {
    pub environments: Vec<String>,
    pub rows: Vec<(String, Vec<String>)>,
}

pub struct Tab {
    pub href: &'static str,
    pub title: &'static str,
    pub here: bool,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    layout: Layout,
    tabs: Vec<Tab>,
    kind: &'static AdminKind,
    headers: Vec<&'static str>,
    items: Vec<Item>,
    fields: Vec<FieldView>,
    /// A refusal that names no field (a delete still in use, a policy refusal).
    refused: String,
    matrix: Option<Matrix>,
}

/// The administration tabs `viewer` may open: the federation's infrastructure and tenants for
/// admins and operators, users and tokens for admins and tenants' owners, the audit trail for
/// anyone it shows something to (`here`: the one open).
pub fn tabs(viewer: &Viewer, here: &str) -> Vec<Tab> {
    let operations = viewer.may(Action::Read, &Object::Operations);
    let principals = viewer.scope(PolicyKind::Principal) != Scope::Nothing;
    KINDS
        .iter()
        .map(|k| (k.path, k.title))
        .filter(|_| operations)
        .chain(
            [("/admin/users", "Users"), ("/admin/tokens", "Tokens")]
                .into_iter()
                .filter(|_| principals),
        )
        .chain([("/admin/audit", "Audit trail")])
        .map(|(href, title)| Tab {
            href,
            title,
            here: href == here,
        })
        .collect()
}

/// `GET /admin`: the first tab the viewer may open.
pub async fn home(viewer: Viewer) -> Redirect {
    let first = tabs(&viewer, "").first().map_or("/admin/audit", |t| t.href);
    Redirect::to(first)
}

/// The refusal of a viewer who may not see these pages at all (they are for admins and
/// operators); none for one who may.
pub fn refusal(viewer: &Viewer) -> Option<Response> {
    (!viewer.may(Action::Read, &Object::Operations)).then(|| {
        page::error_page(
            StatusCode::FORBIDDEN,
            "Administration is for admins and operators.",
        )
    })
}

/// Every thing of `slug`'s kind, as the JSON the API shows.
async fn things(pool: &sqlx::SqlitePool, slug: &str) -> sqlx::Result<Vec<Value>> {
    fn values<T: serde::Serialize>(items: Vec<T>) -> Vec<Value> {
        items
            .into_iter()
            .filter_map(|i| serde_json::to_value(i).ok())
            .collect()
    }
    Ok(match slug {
        "dcs" => values(query::data_centers(pool).await?),
        "clusters" => values(query::clusters(pool).await?),
        "environments" => values(query::environments(pool).await?),
        "tenants" => values(query::tenants(pool).await?),
        _ => values(query::grants(pool, None).await?),
    })
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

async fn render(
    kind: &'static AdminKind,
    api: &Api,
    viewer: &Viewer,
    typed: &[(String, String)],
    errors: &[(String, String)],
    refused: String,
    status: StatusCode,
) -> Response {
    let pool = api.node.state.pool();
    let built = async {
        let items = things(pool, kind.slug).await?;
        let mut fields = Vec::new();
        for f in kind.fields {
            let choices = match f.input {
                Input::Choice(words) => Some(
                    std::iter::once(String::new())
                        .filter(|_| !f.required)
                        .chain(words.iter().map(|w| (*w).to_owned()))
                        .collect(),
                ),
                Input::Ref(slug) => Some(
                    std::iter::once(String::new())
                        .filter(|_| !f.required)
                        .chain(
                            things(pool, slug)
                                .await?
                                .iter()
                                .map(|t| cell(t.get("name"))),
                        )
                        .collect(),
                ),
                _ => None,
            };
            fields.push(FieldView {
                name: f.name,
                label: f.label,
                number: f.input == Input::Number,
                required: f.required,
                choices,
                value: typed
                    .iter()
                    .find(|(k, _)| k == f.name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default(),
                error: errors
                    .iter()
                    .filter(|(k, _)| k == f.name)
                    .map(|(_, m)| m.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        let matrix = if kind.slug == "grants" {
            let environments: Vec<String> = things(pool, "environments")
                .await?
                .iter()
                .map(|e| cell(e.get("name")))
                .collect();
            let rows = things(pool, "tenants")
                .await?
                .iter()
                .map(|t| {
                    let tenant = cell(t.get("name"));
                    let cells = environments
                        .iter()
                        .map(|e| {
                            items
                                .iter()
                                .find(|g| {
                                    cell(g.get("tenant")) == tenant
                                        && cell(g.get("environment")) == *e
                                })
                                .map(|g| format!("{} at once", cell(g.get("max_concurrent_runs"))))
                                .unwrap_or_default()
                        })
                        .collect();
                    (tenant, cells)
                })
                .collect();
            Some(Matrix { environments, rows })
        } else {
            None
        };
        Ok::<_, sqlx::Error>((items, fields, matrix))
    }
    .await;
    let (items, fields, matrix) = match built {
        Ok(b) => b,
        Err(e) => return page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let items = items
        .iter()
        .map(|v| Item {
            key: kind.key.iter().map(|k| (*k, cell(v.get(*k)))).collect(),
            cells: kind.fields.iter().map(|f| cell(v.get(f.name))).collect(),
            current: kind
                .change
                .map(|(_, field)| cell(v.get(field)))
                .unwrap_or_default(),
            edit: kind.edit_path.map(|path| {
                let query = serde_urlencoded::to_string([("name", cell(v.get("name")))])
                    .unwrap_or_default();
                format!("{path}?{query}")
            }),
        })
        .collect();
    page::render(
        &AdminPage {
            layout: Layout::for_viewer(viewer, kind.title, "/admin"),
            tabs: tabs(viewer, kind.path),
            headers: kind.fields.iter().map(|f| f.label).collect(),
            kind,
            items,
            fields,
            refused,
            matrix,
        },
        status,
    )
}

async fn list(kind: &'static AdminKind, api: Api, viewer: Viewer) -> Response {
    if let Some(refused) = refusal(&viewer) {
        return refused;
    }
    render(kind, &api, &viewer, &[], &[], String::new(), StatusCode::OK).await
}

/// The document the API would take, from the form: empty fields left out (their defaults
/// apply), numbers as numbers when they are.
fn document(kind: &AdminKind, form: &[(String, String)]) -> Value {
    let mut doc = Map::new();
    for f in kind.fields {
        let typed = value_of(form, f.name);
        let typed = typed.trim();
        if typed.is_empty() {
            continue;
        }
        let value = match (f.input, typed.parse::<u64>()) {
            (Input::Number, Ok(n)) => Value::from(n),
            _ => Value::from(typed),
        };
        doc.insert(f.name.to_owned(), value);
    }
    Value::Object(doc)
}

/// What `T` reads from a form's document, or (the field, what is wrong with it).
fn read<T: serde::de::DeserializeOwned>(doc: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let field = e.path().to_string();
        let field = field.split('.').next().unwrap_or_default().to_owned();
        (field, e.into_inner().to_string())
    })
}

/// The create command for `kind` from `doc`, or (the field, what is wrong with it).
fn create_command(kind: &AdminKind, doc: Value) -> Result<Command, (String, String)> {
    Ok(match kind.slug {
        "dcs" => Command::CreateDataCenter(read(doc)?),
        "clusters" => Command::CreateCluster(read(doc)?),
        "environments" => Command::CreateEnvironment(read(doc)?),
        "tenants" => Command::CreateTenant(read(doc)?),
        _ => Command::CreateGrant(read(doc)?),
    })
}

/// The field a refusal is about: the one it names (`…: partitions: must be …`), else the one
/// whose value it quotes (`data center \`gz\` does not exist`); none: about the whole form.
fn field_of(kind: &AdminKind, form: &[(String, String)], message: &str) -> Option<&'static str> {
    let tail = message.split_once(": ").map_or(message, |(_, t)| t);
    kind.fields
        .iter()
        .find(|f| {
            tail.starts_with(&format!("{}:", f.name)) || tail.starts_with(&format!("{}.", f.name))
        })
        .or_else(|| {
            kind.fields.iter().find(|f| {
                let v = value_of(form, f.name);
                !v.trim().is_empty() && tail.contains(&format!("`{}`", v.trim()))
            })
        })
        .map(|f| f.name)
}

async fn create(
    kind: &'static AdminKind,
    api: Api,
    viewer: Viewer,
    form: Vec<(String, String)>,
) -> Response {
    if let Some(refused) = refusal(&viewer) {
        return refused;
    }
    let command = match create_command(kind, document(kind, &form)) {
        Ok(c) => c,
        Err((field, message)) => {
            let errors = [(field, message)];
            return render(
                kind,
                &api,
                &viewer,
                &form,
                &errors,
                String::new(),
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
    };
    match api.propose(&viewer.caller, command).await {
        Ok(_) => Redirect::to(kind.path).into_response(),
        Err(e) => match field_of(kind, &form, &e.message) {
            Some(f) => {
                let errors = [(f.to_owned(), e.message)];
                render(kind, &api, &viewer, &form, &errors, String::new(), e.status).await
            }
            None => render(kind, &api, &viewer, &form, &[], e.message, e.status).await,
        },
    }
}

async fn delete(
    kind: &'static AdminKind,
    api: Api,
    viewer: Viewer,
    form: Vec<(String, String)>,
) -> Response {
    if let Some(refused) = refusal(&viewer) {
        return refused;
    }
    let names: Result<Vec<Name>, _> = kind
        .key
        .iter()
        .map(|k| Name::new(value_of(&form, k)))
        .collect();
    let Ok(names) = names else {
        return render(
            kind,
            &api,
            &viewer,
            &[],
            &[],
            format!("deleting a {}: name it", kind.one),
            StatusCode::BAD_REQUEST,
        )
        .await;
    };
    let mut names = names.into_iter();
    let first = names.next().expect("every kind has a key");
    let command = match kind.slug {
        "dcs" => Command::DeleteDataCenter { name: first },
        "clusters" => Command::DeleteCluster { name: first },
        "environments" => Command::DeleteEnvironment { name: first },
        "tenants" => Command::DeleteTenant { name: first },
        _ => Command::DeleteGrant {
            tenant: first,
            environment: names.next().expect("a grant's key has two names"),
        },
    };
    match api.propose(&viewer.caller, command).await {
        Ok(_) => Redirect::to(kind.path).into_response(),
        Err(e) => render(kind, &api, &viewer, &[], &[], e.message, e.status).await,
    }
}

/// Changes the one field of `kind` changed in place (a grant's limit): the thing named by the
/// form's key, with the form's value, checked and applied as the API's `PUT` does.
async fn change(
    kind: &'static AdminKind,
    api: Api,
    viewer: Viewer,
    form: Vec<(String, String)>,
) -> Response {
    if let Some(refused) = refusal(&viewer) {
        return refused;
    }
    let doc = document(kind, &form);
    let command = match kind.slug {
        "grants" => read(doc).map(Command::UpdateGrant),
        _ => return page::error_page(StatusCode::NOT_FOUND, "Nothing to change here."),
    };
    let command = match command {
        Ok(c) => c,
        Err((field, message)) => {
            let message = if field.is_empty() {
                message
            } else {
                format!("{field}: {message}")
            };
            return render(
                kind,
                &api,
                &viewer,
                &[],
                &[],
                message,
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
    };
    match api.propose(&viewer.caller, command).await {
        Ok(_) => Redirect::to(kind.path).into_response(),
        Err(e) => render(kind, &api, &viewer, &[], &[], e.message, e.status).await,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuditQuery {
    actor: String,
    subject: String,
    tenant: String,
    outcome: String,
    /// Entries older than this one (its log index: the "older" link's), else the newest.
    before: Option<u64>,
}

pub struct AuditRow {
    pub at: Option<Time>,
    pub actor: String,
    pub op: String,
    pub subject: String,
    pub tenant: String,
    pub outcome: String,
    pub message: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    layout: Layout,
    tabs: Vec<Tab>,
    q: AuditQuery,
    rows: Vec<AuditRow>,
    older: Option<String>,
}

/// Entries per page of the audit trail.
const AUDIT_PAGE: u32 = 100;

/// `GET /admin/audit`: the newest entries matching the filters, 100 a page; the entries about
/// its tenants for a tenant's member, everything for admins and operators (the policy's scope,
/// as `GET /api/v1/audit`).
pub async fn audit(
    State(api): State<Api>,
    viewer: Viewer,
    Query(q): Query<AuditQuery>,
) -> Response {
    let within = match viewer.scope(PolicyKind::Audit) {
        Scope::All => None,
        Scope::Tenants(ts) if !ts.is_empty() => Some(ts.iter().map(Name::to_string).collect()),
        _ => {
            return page::error_page(
                StatusCode::FORBIDDEN,
                "The audit trail is for admins, operators and members of a tenant.",
            );
        }
    };
    let some = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    let filter = query::AuditFilter {
        since_ms: 0,
        until_ms: None,
        before_index: q.before,
        actor: some(&q.actor),
        subject: some(&q.subject),
        tenant: some(&q.tenant),
        outcome: some(&q.outcome),
        within,
        limit: AUDIT_PAGE,
    };
    let entries = match query::audit(api.node.state.pool(), &filter).await {
        Ok(e) => e,
        Err(e) => return page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let older = (entries.len() == AUDIT_PAGE as usize)
        .then(|| entries.last().map(|e| e.log_index))
        .flatten()
        .map(|before| {
            let query = serde_urlencoded::to_string([
                ("actor", q.actor.as_str()),
                ("subject", q.subject.as_str()),
                ("tenant", q.tenant.as_str()),
                ("outcome", q.outcome.as_str()),
                ("before", &before.to_string()),
            ])
            .unwrap_or_default();
            format!("/admin/audit?{query}")
        });
    let rows = entries
        .into_iter()
        .map(|e| AuditRow {
            at: time(Some(e.at_ms)),
            actor: e.actor,
            op: e.op,
            subject: e.subject,
            tenant: e.tenant.unwrap_or_default(),
            outcome: e.outcome,
            message: e.message,
        })
        .collect();
    let tabs = tabs(&viewer, "/admin/audit");
    page::render(
        &AuditPage {
            layout: Layout::for_viewer(&viewer, "Audit trail", "/admin"),
            tabs,
            q,
            rows,
            older,
        },
        StatusCode::OK,
    )
}
