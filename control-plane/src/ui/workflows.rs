//! A tenant's workflows: the list (newest version of each), a workflow's page (its versions, its
//! DAG drawn as SVG with each task's kind, its tasks, its document), and the editor — the whole
//! document as JSON or TOML, the same shape `POST /api/v1/workflows` takes, checked by the
//! server as it is saved: a document that does not parse or a definition that does not
//! validate comes back as typed with the message beside it; saving makes a new version.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use meridian_domain::workflow::{TaskKind, WorkflowDefinition};
use serde::Deserialize;

use super::dag::{self, Dag};
use super::document::{self, Editor, Format};
use super::page::{self, Layout, Signed, Viewer};
use crate::api::Api;
use crate::model::{Command, Name, Workflow, WorkflowVersion, query};
use crate::policy::{Action, Object};

/// A workflow in the list.
pub struct Listed {
    pub tenant: String,
    pub name: String,
    pub version: u64,
    pub environment: String,
    pub tasks: usize,
    /// The kinds of its tasks, `shell ×3, noop`.
    pub kinds: String,
}

#[derive(Template)]
#[template(path = "workflows.html")]
struct WorkflowsPage {
    layout: Layout,
    workflows: Vec<Listed>,
    can_create: bool,
    first_href: Option<String>,
    next_href: Option<String>,
}

/// Workflows a page of the list shows.
const LIST_PAGE: u32 = 100;

fn kinds(w: &Workflow) -> String {
    let mut counted: Vec<(&str, usize)> = Vec::new();
    for t in &w.definition.tasks {
        let k = dag::kind_name(&t.kind);
        match counted.iter_mut().find(|(n, _)| *n == k) {
            Some((_, c)) => *c += 1,
            None => counted.push((k, 1)),
        }
    }
    counted
        .iter()
        .map(|(k, c)| match c {
            1 => (*k).to_owned(),
            c => format!("{k} ×{c}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `GET /workflows?tenant=&after=`: a page of the workflows the viewer may see, each at its
/// newest version.
pub async fn list(
    State(api): State<Api>,
    viewer: Viewer,
    Query(paging): Query<page::Paging>,
) -> Response {
    let asked = match paging.page(&viewer, LIST_PAGE) {
        Ok(asked) => asked,
        Err(wrong) => return page::error_page(StatusCode::BAD_REQUEST, &wrong),
    };
    let built = async {
        let workflows = query::workflows(api.node.state.pool(), &asked).await?;
        let can_create = !page::writable_tenants(&api, &viewer).await?.is_empty();
        Ok::<_, sqlx::Error>((workflows, can_create))
    }
    .await;
    let (workflows, can_create) = match built {
        Ok(b) => b,
        Err(e) => return page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let (first_href, next_href) = paging.links(
        "/workflows",
        workflows.len(),
        LIST_PAGE,
        workflows
            .last()
            .map(|w| format!("{}/{}", w.workflow.tenant, w.workflow.name)),
    );
    let workflows = workflows
        .into_iter()
        .map(|WorkflowVersion { version, workflow }| Listed {
            tenant: workflow.tenant.to_string(),
            name: workflow.name.to_string(),
            version,
            environment: workflow
                .environment
                .as_ref()
                .map(Name::to_string)
                .unwrap_or_default(),
            tasks: workflow.definition.tasks.len(),
            kinds: kinds(&workflow),
        })
        .collect();
    page::render(
        &WorkflowsPage {
            layout: Layout::for_viewer(&viewer, "Workflows", "/workflows"),
            workflows,
            can_create,
            first_href,
            next_href,
        },
        StatusCode::OK,
    )
}

/// A task as the workflow's page lists it.
pub struct TaskRow {
    pub name: String,
    pub kind: &'static str,
    /// What it does, in a line: the script's first line, `GET https://…`, or nothing.
    pub what: String,
    pub depends_on: String,
    pub timeout: String,
    pub retries: u32,
    pub resources: String,
}

#[derive(Template)]
#[template(path = "workflow.html")]
struct WorkflowPage {
    layout: Layout,
    tenant: String,
    name: String,
    version: u64,
    newest: u64,
    versions: Vec<u64>,
    environment: String,
    dag: Dag,
    tasks: Vec<TaskRow>,
    document: String,
    can_edit: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct VersionQuery {
    version: Option<u64>,
}

/// What answers a page about a workflow that does not exist or that the viewer may not see:
/// the same 404 either way.
fn missing(tenant: &str, name: &str) -> Response {
    page::error_page(
        StatusCode::NOT_FOUND,
        &format!("workflow `{name}` of tenant `{tenant}` not found"),
    )
}

/// `GET /workflows/{tenant}/{name}` (`?version=`: an older one).
pub async fn show(
    State(api): State<Api>,
    viewer: Viewer,
    Path((tenant, name)): Path<(String, String)>,
    Query(q): Query<VersionQuery>,
) -> Response {
    let (Ok(t), Ok(n)) = (Name::new(&tenant), Name::new(&name)) else {
        return missing(&tenant, &name);
    };
    if !viewer.may(Action::Read, &Object::Definition(t.clone())) {
        return missing(&tenant, &name);
    }
    let pool = api.node.state.pool();
    let found = async {
        let w = query::workflow(pool, &t, &n, q.version).await?;
        let versions = query::workflow_version_numbers(pool, &t, &n).await?;
        Ok::<_, sqlx::Error>((w, versions))
    }
    .await;
    let (w, versions) = match found {
        Ok((Some(w), versions)) => (w, versions),
        Ok((None, _)) => return missing(&tenant, &name),
        Err(e) => return page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let tasks = w
        .workflow
        .definition
        .tasks
        .iter()
        .map(|t| TaskRow {
            name: t.name.clone(),
            kind: dag::kind_name(&t.kind),
            what: match &t.kind {
                TaskKind::Shell { script } => script.lines().next().unwrap_or_default().to_owned(),
                TaskKind::Http { method, url, .. } => format!("{method} {url}"),
                TaskKind::Noop {} => String::new(),
            },
            depends_on: t.depends_on.join(", "),
            timeout: t
                .timeout_seconds
                .map(|s| format!("{s} s"))
                .unwrap_or_default(),
            retries: t.retries,
            resources: t
                .resources
                .iter()
                .map(|(k, v)| format!("{k} → {v}"))
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect();
    page::render(
        &WorkflowPage {
            layout: Layout::for_viewer(&viewer, &format!("Workflow {tenant}/{name}"), "/workflows"),
            dag: dag::layout(&w.workflow.definition),
            document: serde_json::to_string_pretty(&w.workflow).unwrap_or_default(),
            environment: w
                .workflow
                .environment
                .as_ref()
                .map(Name::to_string)
                .unwrap_or_default(),
            can_edit: viewer.may(Action::Create, &Object::Definition(t)),
            newest: versions.first().copied().unwrap_or(w.version),
            version: w.version,
            versions,
            tasks,
            tenant,
            name,
        },
        StatusCode::OK,
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EditQuery {
    tenant: String,
    name: String,
    format: String,
}

/// A first workflow for a tenant: one shell task on the tenant's first granted environment.
fn starter(tenant: &Name, environment: Option<Name>) -> Workflow {
    Workflow {
        tenant: tenant.clone(),
        name: Name::new("new-workflow").expect("a valid name"),
        environment,
        definition: WorkflowDefinition::shell("hello", "echo hello from Meridian"),
    }
}

/// `GET /workflows/edit` (`?tenant=&name=`: a workflow's newest version; none: a new one;
/// `&format=toml`).
pub async fn edit(State(api): State<Api>, viewer: Viewer, Query(q): Query<EditQuery>) -> Response {
    let format = Format::of(&q.format);
    let pool = api.node.state.pool();
    let switch = |tenant: &str, name: &str| {
        [Format::Json, Format::Toml]
            .into_iter()
            .map(|f| {
                let query = serde_urlencoded::to_string([
                    ("tenant", tenant),
                    ("name", name),
                    ("format", f.name()),
                ])
                .unwrap_or_default();
                (f.name(), format!("/workflows/edit?{query}"), f == format)
            })
            .collect::<Vec<_>>()
    };
    let page = if q.name.is_empty() {
        // A new workflow, in the tenant asked for if the viewer may write there.
        let tenants = match page::writable_tenants(&api, &viewer).await {
            Ok(t) => t,
            Err(e) => return page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        let tenant = tenants
            .iter()
            .find(|t| t.as_str() == q.tenant)
            .or(tenants.first());
        let Some(tenant) = tenant else {
            return render_edit(
                &viewer,
                "New workflow".into(),
                vec![],
                format,
                String::new(),
                String::new(),
                "You may not create workflows: it needs owner or developer of a tenant.".into(),
                StatusCode::OK,
            );
        };
        let environment = match query::grants(pool, Some(tenant)).await {
            Ok(g) => g.into_iter().next().map(|g| g.environment),
            Err(e) => return page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        (
            "New workflow".to_owned(),
            switch(tenant.as_str(), ""),
            format.write(&starter(tenant, environment)),
        )
    } else {
        let (Ok(t), Ok(n)) = (Name::new(&q.tenant), Name::new(&q.name)) else {
            return missing(&q.tenant, &q.name);
        };
        if !viewer.may(Action::Read, &Object::Definition(t.clone())) {
            return missing(&q.tenant, &q.name);
        }
        let w = match query::workflow(pool, &t, &n, None).await {
            Ok(Some(w)) => w,
            Ok(None) => return missing(&q.tenant, &q.name),
            Err(e) => return page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        if !viewer.may(Action::Create, &Object::Definition(t)) {
            return render_edit(
                &viewer,
                format!("Edit workflow {}/{}", q.tenant, q.name),
                vec![],
                format,
                String::new(),
                String::new(),
                format!(
                    "You may not change workflows of tenant `{}`: it needs owner or developer of it.",
                    q.tenant
                ),
                StatusCode::OK,
            );
        }
        (
            format!(
                "Edit workflow {}/{} (version {})",
                q.tenant, q.name, w.version
            ),
            switch(&q.tenant, &q.name),
            format.write(&w.workflow),
        )
    };
    let (heading, switch, document) = page;
    render_edit(
        &viewer,
        heading,
        switch,
        format,
        document,
        String::new(),
        String::new(),
        StatusCode::OK,
    )
}

#[allow(clippy::too_many_arguments)]
fn render_edit(
    viewer: &Viewer,
    heading: String,
    switch: Vec<(&'static str, String, bool)>,
    format: Format,
    document: String,
    error: String,
    refused: String,
    status: StatusCode,
) -> Response {
    document::render(
        Editor {
            layout: Layout::for_viewer(viewer, &heading, "/workflows"),
            tabs: vec![],
            heading,
            action: "/workflows/edit",
            what: "The workflow",
            shape: "POST /api/v1/workflows",
            after: "saving makes a new version",
            key: vec![],
            switch,
            format: format.name(),
            document,
            error,
            refused,
        },
        status,
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EditForm {
    csrf: String,
    format: String,
    document: String,
}

/// `POST /workflows/edit`: the document parsed (JSON or TOML), the caller checked against the
/// tenant it names, its definition validated as the plane will, then applied as a new version;
/// what is wrong comes back beside the document as typed.
pub async fn save(
    State(api): State<Api>,

    Signed { viewer, form: f }: Signed<EditForm>,
) -> Response {
    let format = Format::of(&f.format);
    let back = |error: String, status: StatusCode| {
        render_edit(
            &viewer,
            "Edit workflow".into(),
            vec![],
            format,
            f.document.clone(),
            error,
            String::new(),
            status,
        )
    };
    let value = match format.read(&f.document) {
        Ok(v) => v,
        Err(e) => return back(e, StatusCode::BAD_REQUEST),
    };
    // Who may is asked before what is wrong with the definition (the plane asks again when it
    // applies the command).
    if let Some(t) = value
        .get("tenant")
        .and_then(|t| t.as_str())
        .and_then(|t| Name::new(t).ok())
    {
        let what = format!(
            "workflow {t}/{}",
            value.get("name").and_then(|n| n.as_str()).unwrap_or("")
        );
        if let Err(e) = api.allow_write(
            &viewer.caller,
            Action::Create,
            &Object::Definition(t.clone()),
            "apply_workflow",
            &what,
            &t,
        ) {
            return page::error_page(e.status, &e.message);
        }
    }
    let workflow: Workflow = match serde_json::from_value(value) {
        Ok(w) => w,
        Err(e) => return back(format!("document: {e}"), StatusCode::BAD_REQUEST),
    };
    if let Err(e) = workflow.definition.validate() {
        return back(format!("definition: {e}"), StatusCode::BAD_REQUEST);
    }
    let (tenant, name) = (workflow.tenant.clone(), workflow.name.clone());
    match api
        .propose(&viewer.caller, Command::ApplyWorkflow(workflow))
        .await
    {
        Ok(reply) => {
            let version = reply.version.map(|v| format!("?version={v}"));
            Redirect::to(&format!(
                "/workflows/{tenant}/{name}{}",
                version.unwrap_or_default()
            ))
            .into_response()
        }
        Err(e) => back(e.message, e.status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workflow_reads_back_from_either_format_as_it_was_written() {
        let mut w = starter(&Name::new("ads").unwrap(), None);
        w.definition.tasks[0].timeout_seconds = Some(30);
        let mut second = w.definition.tasks[0].clone();
        second.name = "after".into();
        second.depends_on = vec!["hello".into()];
        second.timeout_seconds = None;
        second.kind = TaskKind::Noop {};
        w.definition.tasks.push(second);
        for format in [Format::Json, Format::Toml] {
            let text = format.write(&w);
            let back: Workflow = serde_json::from_value(format.read(&text).unwrap()).unwrap();
            assert_eq!(back, w, "{text}");
        }
    }
}
