//! The OpenAPI 3.1 document for `/api/v1`, built from [`ROUTES`]. Tests walk `ROUTES` against
//! the live router (so the document cannot list a route the server lacks) and with every role
//! (so no route ships without its rule); each route says who may call it.

use serde_json::{Value, json};

mod examples;
mod routes;
pub use examples::{EXAMPLES, Example};
pub use routes::ROUTES;

/// One operation of the API.
pub struct Route {
    pub method: &'static str,
    /// Path under `/api/v1`, with `{param}` placeholders as in the router.
    pub path: &'static str,
    pub summary: &'static str,
    /// Schema of the JSON body, if any (a name under `components.schemas`).
    pub body: Option<&'static str>,
    /// Schema of the success response, and its status.
    pub reply: (u16, &'static str),
    /// Query parameters: (name, schema type, description).
    pub query: &'static [(&'static str, &'static str, &'static str)],
    /// Who may call it, in words (the policy in `crate::policy` decides; this says what it
    /// decides). Lists show each caller what it may read.
    pub access: &'static str,
}

/// The media type of a body or reply: raw bytes for `Binary`, JSON otherwise.
fn content(name: &str) -> Value {
    if name == "Empty" {
        json!({})
    } else if name == "Binary" {
        json!({"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}})
    } else if name == "Text" {
        json!({"text/plain": {"schema": {"type": "string"}}})
    } else if name == "Metrics" {
        json!({"application/openmetrics-text": {"schema": {"type": "string"}}})
    } else {
        json!({"application/json": {"schema": schema_ref(name)}})
    }
}

fn schema_ref(name: &str) -> Value {
    match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(item) => json!({"type": "array", "items": schema_ref(item)}),
        None if name == "OpenApi" => json!({"type": "object"}),
        None => json!({"$ref": format!("#/components/schemas/{name}")}),
    }
}

fn operation(route: &Route) -> Value {
    let mut parameters: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    parameters.extend(route.query.iter().map(|(name, ty, description)| {
        json!({"name": name, "in": "query", "required": false,
               "description": description, "schema": {"type": ty}})
    }));
    let error = json!({"description": "Refused; `error` says what was wrong and names the field",
        "content": {"application/json": {"schema": schema_ref("Error")}}});
    let mut op = json!({
        "summary": route.summary,
        "description": format!("Who may call it: {}.", route.access),
        "x-meridian-access": route.access,
        "parameters": parameters,
        "responses": {
            route.reply.0.to_string(): {
                "description": "Done",
                "content": content(route.reply.1)
            },
            "400": error.clone(),
            "401": error.clone(),
            "403": error.clone(),
            "404": error.clone(),
            "409": error.clone(),
            "413": error.clone(),
            "422": error.clone(),
            "429": error.clone(),
            "503": error,
        }
    });
    if let Some(body) = route.body {
        let mut content = content(body);
        let example = EXAMPLES
            .iter()
            .find(|e| e.method == route.method && e.route == route.path);
        if let (Some(example), Some(media)) = (example, content.get_mut("application/json")) {
            media["example"] = serde_json::from_str(example.body).expect("examples are JSON");
        }
        op["requestBody"] = json!({"required": true, "content": content});
    }
    if route.access.starts_with("anyone") {
        op["security"] = json!([]);
    }
    op
}

/// Every schema the document names, generated from the types the API reads and writes
/// (`schemars`, following their serde attributes), so a field the server accepts cannot be
/// missing here, nor one it refuses be listed.
fn schemas() -> Value {
    use crate::api::{
        ErrorBody, NewNode, RunDetail, ScheduleChanges, WriteReply, resources, runs, session, users,
    };
    use crate::model::query::{self, AgentRecord, AuditEntry, LeaseRecord};
    use crate::model::{
        Cluster, DataCenter, Environment, Grant, Pause, ResolveDoubts, Resume, RunRequest,
        Schedule, Tenant, Workflow, WorkflowVersion,
    };
    let mut generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    macro_rules! named {
        ($($t:ty),* $(,)?) => {
            $( generator.subschema_for::<$t>(); )*
        };
    }
    named!(
        ErrorBody,
        WriteReply,
        DataCenter,
        Cluster,
        Environment,
        Tenant,
        Grant,
        Workflow,
        WorkflowVersion,
        Schedule,
        ScheduleChanges,
        RunRequest,
        query::RunRecord,
        RunDetail,
        runs::BulkRerun,
        runs::BulkKill,
        runs::BulkReply,
        crate::model::doubt::InDoubt,
        ResolveDoubts,
        Pause,
        Resume,
        crate::model::pauses::PauseRecord,
        crate::model::Backfill,
        crate::model::AlertChannel,
        crate::model::AlertRule,
        crate::model::alerts::outbox::Delivery,
        super::health::Readiness,
        crate::model::backfills::BackfillRecord,
        query::TaskAttempt,
        query::AttemptLog,
        runs::LogFollow,
        AuditEntry,
        AgentRecord,
        LeaseRecord,
        NewNode,
        crate::raft::node::NodeStatus,
        resources::Resource,
        users::TokenView,
        users::NewToken,
        users::CreatedToken,
        crate::model::access::User,
        users::NewUser,
        users::NewPassword,
        users::PasswordReply,
        session::SignIn,
        session::Whoami,
    );
    Value::Object(generator.take_definitions(true))
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for route in ROUTES {
        let entry = paths
            .entry(format!("/api/v1{}", route.path))
            .or_insert_with(|| json!({}));
        entry[route.method] = operation(route);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Meridian control plane",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every call but this document and signing in needs a credential: \
                `Authorization: Bearer <token>`, or the session cookie of `POST /session` \
                (then every write carries the session's CSRF token in `X-CSRF-Token`). Each \
                operation says who may call it; another tenant's objects answer 404. Writes go \
                to any plane node and are forwarded to the leader. Reads are linearizable \
                unless `?stale=true`. Errors are `{\"error\", \"kind\"}` and name the field at \
                fault."
        },
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "meridian_session"}
            }
        },
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_referenced_schema_is_defined() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for piece in text.split("#/components/schemas/").skip(1) {
            let name: String = piece.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(
                schemas.contains_key(&name),
                "schema {name} is referenced, not defined"
            );
        }
        assert_eq!(
            doc["paths"]["/api/v1/grants/{tenant}/{environment}"]["get"]["parameters"][1]["name"],
            "environment"
        );
        if let Ok(path) = std::env::var("MERIDIAN_OPENAPI_OUT") {
            std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        }
    }

    #[test]
    fn every_example_is_for_a_route_that_takes_json() {
        for e in EXAMPLES {
            let route = ROUTES
                .iter()
                .find(|r| r.method == e.method && r.path == e.route)
                .unwrap_or_else(|| panic!("{} {}: no such route", e.method, e.route));
            assert!(route.body.is_some_and(|b| b != "Binary"), "{}", e.route);
            serde_json::from_str::<Value>(e.body).unwrap_or_else(|err| panic!("{}: {err}", e.path));
        }
        // Every route that takes JSON shows one (but adding a plane node).
        for r in ROUTES {
            let shown = EXAMPLES
                .iter()
                .any(|e| e.method == r.method && e.route == r.path);
            let wanted = r.body.is_some_and(|b| b != "Binary") && r.path != "/plane/nodes";
            assert_eq!(shown, wanted, "{} {}", r.method, r.path);
        }
    }

    /// Issue #18, defect 8: what the hand-written schemas left out, now generated from the
    /// types: the `noop` task kind and the retry settings.
    #[test]
    fn the_schemas_say_what_the_server_accepts() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let task = &schemas["TaskSpec"];
        for field in [
            "retry_delay_seconds",
            "retry_max_seconds",
            "resources",
            "timeout_seconds",
        ] {
            assert!(
                task["properties"][field].is_object(),
                "TaskSpec.{field}: {task}"
            );
        }
        let kinds = schemas["TaskKind"].to_string();
        for kind in ["shell", "http", "noop"] {
            assert!(
                kinds.contains(&format!("\"{kind}\"")),
                "TaskKind {kind}: {kinds}"
            );
        }
        // Unknown fields are refused by the server, and the schemas say so.
        assert_eq!(schemas["Cluster"]["additionalProperties"], false);
    }
}
