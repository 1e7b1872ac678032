//! The OpenAPI 3.1 document for `/api/v1`, built from [`ROUTES`]. Tests walk `ROUTES` against
//! the live router (so the document cannot list a route the server lacks) and with every role
//! (so no route ships without its rule); each route says who may call it.

use serde_json::{Value, json};

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

/// Every tenant role reads; a list shows each only its tenants' items.
const READ_TENANT: &str =
    "admin, operator; owner, developer, viewer of the tenant (lists: only their tenants')";
const ADMIN: &str = "admin";
const WRITE_TENANT: &str = "admin; owner, developer of the tenant";
const CONTROL_RUN: &str = "admin, operator; owner, developer of the run's tenant";
const OPERATIONS: &str = "admin, operator";
const MANAGE_PRINCIPALS: &str = "admin; owner of every tenant the user's (token's) roles name";
const INFRA_READ: &str = "admin, operator; members of a tenant granted an environment it \
     holds (lists: only those)";

const STALE: (&str, &str, &str) = (
    "stale",
    "boolean",
    "Read this node's copy without a leader round trip (default: linearizable).",
);
const TENANT: (&str, &str, &str) = ("tenant", "string", "Only this tenant's.");

/// A `GET` of a list or of one item, answering `item`.
const fn get(path: &'static str, summary: &'static str, item: &'static str) -> Route {
    Route {
        method: "get",
        path,
        summary,
        body: None,
        reply: (200, item),
        query: &[STALE],
        access: READ_TENANT,
    }
}

const fn create(path: &'static str, summary: &'static str, body: &'static str) -> Route {
    Route {
        method: "post",
        path,
        summary,
        body: Some(body),
        reply: (201, "WriteReply"),
        query: &[],
        access: ADMIN,
    }
}

/// `PUT`: the whole entity replaces the stored one (same name as the path).
const fn update(path: &'static str, summary: &'static str, body: &'static str) -> Route {
    Route {
        method: "put",
        reply: (200, "WriteReply"),
        ..create(path, summary, body)
    }
}

const fn delete(path: &'static str, summary: &'static str) -> Route {
    Route {
        method: "delete",
        path,
        summary,
        body: None,
        reply: (200, "WriteReply"),
        query: &[],
        access: ADMIN,
    }
}

/// Every operation the router serves. A list reply is named `[Item]`.
pub const ROUTES: &[Route] = &[
    Route {
        access: INFRA_READ,
        ..get("/dcs", "List data centers", "[DataCenter]")
    },
    create("/dcs", "Create a data center", "DataCenter"),
    Route {
        access: INFRA_READ,
        ..get("/dcs/{name}", "Get a data center", "DataCenter")
    },
    delete(
        "/dcs/{name}",
        "Delete a data center (refused while clusters use it)",
    ),
    update(
        "/dcs/{name}",
        "Change a data center's description (the whole document)",
        "DataCenter",
    ),
    Route {
        access: INFRA_READ,
        ..get("/clusters", "List clusters", "[Cluster]")
    },
    create("/clusters", "Create a cluster", "Cluster"),
    Route {
        access: INFRA_READ,
        ..get("/clusters/{name}", "Get a cluster", "Cluster")
    },
    delete(
        "/clusters/{name}",
        "Delete a cluster (refused while in use)",
    ),
    update(
        "/clusters/{name}",
        "Change a cluster's role, backup or lease duration (the whole document; never its data \
         center or partition count), effective from its agents' next heartbeat",
        "Cluster",
    ),
    Route {
        access: INFRA_READ,
        ..get(
            "/environments",
            "List environments (a tenant's members: only those granted to it)",
            "[Environment]",
        )
    },
    create("/environments", "Create an environment", "Environment"),
    Route {
        access: INFRA_READ,
        ..get("/environments/{name}", "Get an environment", "Environment")
    },
    delete(
        "/environments/{name}",
        "Delete an environment (refused while in use)",
    ),
    update(
        "/environments/{name}",
        "Change an environment (the whole document; never its cluster), effective from the \
         agents' next run",
        "Environment",
    ),
    get("/tenants", "List tenants", "[Tenant]"),
    create("/tenants", "Create a tenant", "Tenant"),
    get("/tenants/{name}", "Get a tenant", "Tenant"),
    delete("/tenants/{name}", "Delete a tenant (refused while in use)"),
    update(
        "/tenants/{name}",
        "Change a tenant's description (the whole document)",
        "Tenant",
    ),
    Route {
        query: &[STALE, TENANT],
        ..get("/grants", "List grants", "[Grant]")
    },
    create("/grants", "Grant an environment to a tenant", "Grant"),
    get("/grants/{tenant}/{environment}", "Get a grant", "Grant"),
    delete("/grants/{tenant}/{environment}", "Revoke a grant"),
    update(
        "/grants/{tenant}/{environment}",
        "Change a grant's limit of runs at once (the whole document)",
        "Grant",
    ),
    Route {
        query: &[STALE, TENANT],
        ..get(
            "/workflows",
            "List workflows (newest versions)",
            "[WorkflowVersion]",
        )
    },
    Route {
        access: WRITE_TENANT,
        ..create(
            "/workflows",
            "Apply a workflow (a new version if it exists)",
            "Workflow",
        )
    },
    Route {
        query: &[
            STALE,
            ("version", "integer", "This version (default: the newest)."),
        ],
        ..get(
            "/workflows/{tenant}/{name}",
            "Get a workflow",
            "WorkflowVersion",
        )
    },
    Route {
        access: WRITE_TENANT,
        ..delete("/workflows/{tenant}/{name}", "Delete a workflow")
    },
    Route {
        query: &[STALE, TENANT],
        ..get("/schedules", "List schedules", "[Schedule]")
    },
    Route {
        access: WRITE_TENANT,
        ..create("/schedules", "Create a schedule", "Schedule")
    },
    get("/schedules/{tenant}/{name}", "Get a schedule", "Schedule"),
    Route {
        access: WRITE_TENANT,
        ..delete("/schedules/{tenant}/{name}", "Delete a schedule")
    },
    Route {
        access: WRITE_TENANT,
        ..update(
            "/schedules/{tenant}/{name}",
            "Change a schedule (a new version, effective from the agents' next record)",
            "Schedule",
        )
    },
    Route {
        query: &[
            STALE,
            ("dc", "string", "Only runs in this data center."),
            ("cluster", "string", "Only runs on this cluster."),
            ("tenant", "string", "Only this tenant's runs."),
            ("environment", "string", "Only runs in this environment."),
            ("workflow", "string", "Only runs of this workflow."),
            ("agent", "string", "Only runs on this agent."),
            ("task", "string", "Only runs with an attempt of this task."),
            (
                "schedule",
                "string",
                "Only runs of this schedule (`tenant.name`).",
            ),
            (
                "state",
                "string",
                "requested, queued, started, succeeded, failed, killed or skipped.",
            ),
            (
                "since_ms",
                "integer",
                "Only runs fired or requested at or after this (ms since the epoch).",
            ),
            (
                "until_ms",
                "integer",
                "Only runs fired or requested before this (ms since the epoch).",
            ),
            (
                "lateness_min_ms",
                "integer",
                "Only runs that started at least this late (ms).",
            ),
            (
                "after",
                "string",
                "Keyset pagination: the cursor of the last run of the previous page.",
            ),
            (
                "limit",
                "integer",
                "At most this many, newest first (default 100).",
            ),
        ],
        ..get("/runs", "The run history across data centers", "[Run]")
    },
    Route {
        reply: (201, "WriteReply"),
        access: CONTROL_RUN,
        ..create(
            "/runs",
            "Run a workflow now, on an agent of its environment's cluster",
            "RunRequest",
        )
    },
    get(
        "/runs/{run_id}",
        "A run with its task attempts",
        "RunDetail",
    ),
    get("/runs/{run_id}/logs", "A run's task logs", "[AttemptLog]"),
    Route {
        body: None,
        reply: (200, "WriteReply"),
        access: CONTROL_RUN,
        ..create(
            "/runs/{run_id}/kill",
            "Kill a run (its agent is told on its next heartbeat)",
            "",
        )
    },
    Route {
        access: OPERATIONS,
        ..get("/agents", "Agents the plane has heard from", "[Agent]")
    },
    Route {
        access: OPERATIONS,
        ..get("/leases", "Partition leases of every cluster", "[Lease]")
    },
    Route {
        query: &[
            STALE,
            (
                "since_ms",
                "integer",
                "Only entries at or after this time (ms since the epoch).",
            ),
            (
                "until_ms",
                "integer",
                "Only entries before this time (ms since the epoch).",
            ),
            (
                "actor",
                "string",
                "Only this actor's (`user:alice`, `token:ci`).",
            ),
            (
                "subject",
                "string",
                "Only entries whose subject contains this.",
            ),
            ("tenant", "string", "Only this tenant's."),
            ("outcome", "string", "`applied` or `refused`."),
            (
                "limit",
                "integer",
                "At most this many, newest first (1–1000, default 100).",
            ),
        ],
        ..get(
            "/audit",
            "The audit trail: every applied command and every refused write, who and when",
            "[AuditEntry]",
        )
    },
    Route {
        access: "admin; owner of a tenant (only users holding a role in it, and those roles)",
        ..get("/users", "List users (never a password hash)", "[User]")
    },
    Route {
        reply: (201, "PasswordReply"),
        access: "admin; owner of every tenant the new user's roles name",
        ..create(
            "/users",
            "Create a user; without a password one is generated and shown in this reply only",
            "NewUser",
        )
    },
    Route {
        access: "admin; owner of a tenant the user holds a role in; the user itself",
        ..get("/users/{name}", "Get a user", "User")
    },
    Route {
        access: MANAGE_PRINCIPALS,
        ..delete("/users/{name}", "Delete a user; its sessions end at once")
    },
    Route {
        method: "put",
        reply: (200, "PasswordReply"),
        access: "admin; owner of every tenant the user's roles name; the user itself (with \
             `current_password`)",
        ..create(
            "/users/{name}/password",
            "Set a user's password (generated if none is given); every session of the user ends",
            "NewPassword",
        )
    },
    Route {
        access: "admin; owner of the binding's tenant (and of a tenant the user holds a role in)",
        ..create("/users/{name}/bindings", "Give a user a role", "Binding")
    },
    Route {
        access: "admin; owner of the binding's tenant (and of a tenant the user holds a role in)",
        ..delete(
            "/users/{name}/bindings/{binding}",
            "Take a role from a user (`binding`: ROLE or ROLE@TENANT)",
        )
    },
    Route {
        access: "admin; owner of a tenant (only tokens holding a role in it, and those roles)",
        ..get(
            "/tokens",
            "List API tokens (never their secrets)",
            "[Token]",
        )
    },
    Route {
        reply: (201, "CreatedToken"),
        access: "admin; owner of every tenant the new token's roles name (never more than the \
             caller holds)",
        ..create(
            "/tokens",
            "Create an API token; the secret is in this reply only",
            "NewToken",
        )
    },
    Route {
        access: MANAGE_PRINCIPALS,
        ..delete("/tokens/{name}", "Delete an API token")
    },
    Route {
        reply: (201, "Whoami"),
        access: "anyone (no credential): the user and password are the credential",
        ..create(
            "/session",
            "Sign in: sets the session cookie (HttpOnly, SameSite=Strict) and returns its CSRF \
             token",
            "SignIn",
        )
    },
    Route {
        query: &[],
        access: "any credential",
        ..get(
            "/session",
            "Who is calling: name, roles, and a session's CSRF token",
            "Whoami",
        )
    },
    Route {
        reply: (204, "Empty"),
        access: "a session (its own)",
        ..delete("/session", "Sign out: the session ends on every node")
    },
    Route {
        query: &[],
        access: OPERATIONS,
        ..get(
            "/plane/status",
            "Every plane node: role, term, log, applied, reachable",
            "[NodeStatus]",
        )
    },
    Route {
        reply: (201, "WriteReply"),
        access: ADMIN,
        ..create(
            "/plane/nodes",
            "Add a node: learner first, promoted to voter once caught up",
            "NewNode",
        )
    },
    delete("/plane/nodes/{hostname}", "Remove a node from the plane"),
    Route {
        access: "admin (a snapshot holds every credential's hash)",
        ..get(
            "/plane/snapshot",
            "A snapshot file of the whole plane (SQLite; `meridian plane snapshot save`)",
            "Binary",
        )
    },
    Route {
        query: &[("prefix", "string", "Only keys starting with this.")],
        ..get(
            "/resources/{tenant}",
            "List a tenant's resources in the S3 bucket",
            "[Resource]",
        )
    },
    Route {
        method: "put",
        reply: (201, "Resource"),
        access: WRITE_TENANT,
        ..create(
            "/resources/{tenant}/{key}",
            "Upload a resource (the body is the file; `key` may contain `/`)",
            "Binary",
        )
    },
    Route {
        query: &[],
        ..get("/resources/{tenant}/{key}", "Download a resource", "Binary")
    },
    Route {
        reply: (200, "Resource"),
        access: WRITE_TENANT,
        ..delete("/resources/{tenant}/{key}", "Delete a resource")
    },
    Route {
        query: &[],
        access: "anyone (no credential)",
        ..get("/openapi.json", "This document", "OpenApi")
    },
];

/// The media type of a body or reply: raw bytes for `Binary`, JSON otherwise.
fn content(name: &str) -> Value {
    if name == "Empty" {
        json!({})
    } else if name == "Binary" {
        json!({"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}})
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
        op["requestBody"] = json!({"required": true, "content": content(body)});
    }
    if route.access.starts_with("anyone") {
        op["security"] = json!([]);
    }
    op
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "additionalProperties": false,
           "required": required, "properties": properties})
}

fn schemas() -> Value {
    let mut all = model_schemas();
    let access = access_schemas();
    if let (Some(all), Some(access)) = (all.as_object_mut(), access.as_object()) {
        all.extend(access.clone());
    }
    all
}

fn name_schema() -> Value {
    json!({"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"})
}

fn opt_name_schema() -> Value {
    json!({"type": ["string", "null"], "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"})
}

/// Users, tokens, sessions and roles.
fn access_schemas() -> Value {
    let name = name_schema();
    let opt_name = opt_name_schema();
    json!({
        "Binding": object(&["role"], json!({
            "role": {"type": "string", "enum": ["admin", "operator", "owner", "developer", "viewer"]},
            "tenant": {"type": "string", "description": "For owner, developer and viewer: the tenant"}})),
        "Token": {"type": "object", "required": ["name", "bindings"], "properties": {
            "name": name, "bindings": {"type": "array", "items": schema_ref("Binding")},
            "expires_ms": {"type": ["integer", "null"]}, "created_by": {"type": "string"},
            "created_ms": {"type": "integer"}}},
        "NewToken": object(&["name"], json!({
            "name": name,
            "bindings": {"type": "array", "items": schema_ref("Binding")},
            "role": {"type": "string", "description": "One binding: its role (with `tenant`)"},
            "tenant": opt_name,
            "expires_in_seconds": {"type": ["integer", "null"], "minimum": 1}})),
        "CreatedToken": {"type": "object", "required": ["name", "token"], "properties": {
            "name": name, "token": {"type": "string", "description": "Shown only here"},
            "expires_ms": {"type": ["integer", "null"]}}},
        "User": {"type": "object", "required": ["name", "bindings"], "properties": {
            "name": name, "bindings": {"type": "array", "items": schema_ref("Binding")},
            "created_by": {"type": "string"}, "created_ms": {"type": "integer"}}},
        "NewUser": object(&["name"], json!({
            "name": name,
            "bindings": {"type": "array", "items": schema_ref("Binding")},
            "role": {"type": "string"}, "tenant": opt_name,
            "password": {"type": ["string", "null"], "minLength": super::password::MIN_LENGTH,
                "description": "None: one is generated and shown in the reply only"}})),
        "NewPassword": object(&[], json!({
            "password": {"type": ["string", "null"], "minLength": super::password::MIN_LENGTH},
            "current_password": {"type": ["string", "null"],
                "description": "Required to change one's own password"}})),
        "PasswordReply": {"type": "object", "required": ["subject"], "properties": {
            "subject": {"type": "string"},
            "password": {"type": "string", "description": "The generated password, shown only here"}}},
        "SignIn": object(&["user", "password"], json!({
            "user": {"type": "string"}, "password": {"type": "string"}})),
        "Whoami": {"type": "object", "required": ["kind", "name", "bindings"], "properties": {
            "kind": {"type": "string", "enum": ["user", "token"]}, "name": {"type": "string"},
            "bindings": {"type": "array", "items": schema_ref("Binding")},
            "csrf_token": {"type": "string",
                "description": "A session's: send it as `X-CSRF-Token` with every write"},
            "expires_ms": {"type": ["integer", "null"]}}},
    })
}

fn model_schemas() -> Value {
    let name = name_schema();
    let opt_name = opt_name_schema();
    json!({
        "Error": {"type": "object", "required": ["error", "kind"], "properties": {
            "error": {"type": "string"},
            "kind": {"type": "string", "enum": ["invalid", "missing", "exists", "in_use",
                "not_granted", "unauthorized", "forbidden", "rate_limited", "too_large",
                "unavailable", "internal"]}}},
        "WriteReply": {"type": "object", "required": ["subject"], "properties": {
            "subject": {"type": "string"}, "version": {"type": "integer"}}},
        "DataCenter": object(&["name"], json!({"name": name, "description": {"type": "string"}})),
        "Cluster": object(&["name", "dc"], json!({
            "name": name, "dc": name,
            "role": {"type": "string", "enum": ["active", "backup"], "default": "active"},
            "backup": opt_name,
            "partitions": {"type": "integer", "minimum": 1, "maximum": 4096, "default": 16},
            "lease_seconds": {"type": "integer", "minimum": 1, "default": 30}})),
        "Environment": object(&["name", "cluster"], json!({
            "name": name, "cluster": name,
            "vars": {"type": "object", "additionalProperties": {"type": "string"}},
            "work_dir": {"type": ["string", "null"]},
            "queue": {"type": ["string", "null"]},
            "run_as": run_as_schema()})),
        "Tenant": object(&["name"], json!({"name": name, "description": {"type": "string"}})),
        "Grant": object(&["tenant", "environment"], json!({
            "tenant": name, "environment": name,
            "max_concurrent_runs": {"type": "integer", "minimum": 1, "default": 10}})),
        "Task": object(&["name", "kind"], json!({
            "name": {"type": "string"},
            "kind": {"oneOf": [
                object(&["shell"], json!({"shell": object(&["script"], json!({"script": {"type": "string"}}))})),
                object(&["http"], json!({"http": object(&["method", "url"], json!({
                    "method": {"type": "string"}, "url": {"type": "string"},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "body": {"type": ["string", "null"]},
                    "expect_status": {"type": "integer", "default": 200}}))}))]},
            "depends_on": {"type": "array", "items": {"type": "string"}},
            "resources": {"type": "object", "additionalProperties": {"type": "string"},
                "description": "resource key → file name in the run's working directory"},
            "timeout_seconds": {"type": ["integer", "null"]},
            "retries": {"type": "integer", "default": 0}})),
        "Workflow": object(&["tenant", "name", "definition"], json!({
            "tenant": name, "name": name, "environment": opt_name,
            "definition": object(&["tasks"], json!({"tasks": {"type": "array", "items": schema_ref("Task")}}))})),
        "WorkflowVersion": {"allOf": [schema_ref("Workflow"),
            {"type": "object", "required": ["version"], "properties": {"version": {"type": "integer"}}}]},
        "Schedule": object(&["tenant", "name", "workflow", "environment", "spec"], json!({
            "tenant": name, "name": name, "workflow": name, "environment": name,
            "spec": object(&["cron"], json!({
                "cron": {"type": "string", "description": "Quartz (6–7 fields) or Unix (5 fields)"},
                "time_zone": {"type": "string", "default": "UTC"},
                "start": {"type": ["string", "null"], "format": "date-time"},
                "end": {"type": ["string", "null"], "format": "date-time"},
                "catch_up": {"type": "object", "required": ["policy"], "properties": {
                    "policy": {"type": "string", "enum": ["none", "latest", "all"]},
                    "window_seconds": {"type": "integer"}, "max": {"type": "integer"}}}})),
            "overlap": {"type": "string",
                "enum": ["skip", "buffer_one", "buffer_all", "cancel_older", "allow_all"]}})),
        "AuditEntry": {"type": "object", "properties": {
            "log_index": {"type": "integer"}, "actor": {"type": "string"},
            "at_ms": {"type": "integer"}, "op": {"type": "string"},
            "subject": {"type": "string"}, "command": {"type": "object"},
            "tenant": {"type": ["string", "null"]},
            "outcome": {"type": "string", "enum": ["applied", "refused"]},
            "message": {"type": "string", "description": "why it was refused"}}},
        "RunRequest": object(&["tenant", "workflow"], json!({
            "tenant": name, "workflow": name, "environment": opt_name})),
        "Run": {"type": "object", "required": ["run_id", "tenant", "workflow", "state"],
            "properties": {
            "run_id": {"type": "string"}, "tenant": {"type": "string"},
            "workflow": {"type": "string"}, "workflow_version": {"type": "integer"},
            "schedule": {"type": ["string", "null"]}, "fire_ms": {"type": ["integer", "null"]},
            "environment": {"type": "string"}, "cluster": {"type": "string"},
            "dc": {"type": "string"},
            "state": {"type": "string", "enum": ["requested", "queued", "started", "succeeded",
                "failed", "killed", "skipped"]},
            "agent": {"type": ["string", "null"]}, "epoch": {"type": "integer"},
            "requested_ms": {"type": ["integer", "null"]},
            "queued_ms": {"type": ["integer", "null"]},
            "started_ms": {"type": ["integer", "null"]},
            "finished_ms": {"type": ["integer", "null"]},
            "lateness_ms": {"type": ["integer", "null"], "description": "start - fire time"},
            "message": {"type": "string"},
            "starts": {"type": "integer",
                "description": "agents that reported starting it; more than 1 is a double run"}}},
        "TaskAttempt": {"type": "object", "properties": {
            "task": {"type": "string"},
            "attempt": {"type": "integer",
                "description": "1 for the first; 0 for a task that never started"},
            "outcome": {"type": "string", "enum": ["started", "succeeded", "failed",
                "timed_out", "killed", "upstream_failed", "not_started"]},
            "started_ms": {"type": ["integer", "null"]},
            "finished_ms": {"type": ["integer", "null"]},
            "exit_code": {"type": ["integer", "null"]}, "message": {"type": "string"},
            "warning": {"type": "string",
                "description": "set when it started despite a problem (a stale resource)"}}},
        "Resource": {"type": "object", "required": ["key", "size", "etag", "last_modified_ms"],
            "properties": {"key": {"type": "string"}, "size": {"type": "integer"},
            "etag": {"type": "string"}, "last_modified_ms": {"type": "integer"}}},
        "RunDetail": {"allOf": [{"$ref": "#/components/schemas/Run"},
            {"type": "object", "properties": {"attempts": {"type": "array",
                "items": {"$ref": "#/components/schemas/TaskAttempt"}}}}]},
        "AttemptLog": {"type": "object", "properties": {
            "task": {"type": "string"}, "attempt": {"type": "integer"},
            "text": {"type": "string"}}},
        "Agent": {"type": "object", "properties": {
            "hostname": {"type": "string"}, "cluster": {"type": "string"},
            "last_seen_ms": {"type": "integer"}, "free_slots": {"type": "integer"},
            "gone": {"type": "boolean"}}},
        "Lease": {"type": "object", "properties": {
            "cluster": {"type": "string"}, "partition": {"type": "integer"},
            "holder": {"type": ["string", "null"]}, "epoch": {"type": "integer"},
            "expires_ms": {"type": "integer"}}},
        "NewNode": object(&["hostname"], json!({
            "hostname": {"type": "string"},
            "port": {"type": "integer", "default": super::DEFAULT_PEER_PORT}})),
        "NodeStatus": {"type": "object", "properties": {
            "hostname": {"type": "string"}, "port": {"type": "integer"},
            "role": {"type": "string", "enum": ["leader", "follower", "candidate", "learner",
                "shutdown", "unknown"]},
            "voter": {"type": "boolean"}, "term": {"type": "integer"},
            "last_log_index": {"type": ["integer", "null"]},
            "applied_index": {"type": ["integer", "null"]},
            "leader": {"type": ["string", "null"]}, "reachable": {"type": "boolean"},
            "members": {"type": "array", "items": {"type": "object"}}}},
    })
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

/// An environment's `run_as`, with the OS user inline (built apart: the schemas' one json!
/// is near the macro recursion limit).
fn run_as_schema() -> Value {
    // As `meridian_proto::run::os_name_problem` accepts them.
    let os_name = "^([a-z_][a-z0-9_-]{0,31}|[0-9]+)$";
    let os_user = object(
        &["user"],
        json!({
            "user": {"type": "string", "pattern": os_name},
            "group": {"type": ["string", "null"], "pattern": os_name,
                "description": "default: the user's primary group"}}),
    );
    object(
        &[],
        json!({
            "default": {"oneOf": [{"type": "null"}, os_user],
                "description": "the OS user of tenants not in `tenants`"},
            "tenants": {"type": "object", "additionalProperties": os_user,
                "description": "tenant → the OS user its tasks run as on the agents"},
            "allow_agent_user": {"type": "boolean", "default": false,
                "description": "let tasks run as the agent's own user or root (dev, labs)"}}),
    )
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
    }
}
