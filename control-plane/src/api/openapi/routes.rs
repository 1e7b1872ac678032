//! Every operation the router serves ([`ROUTES`]), each with who may call it.

use super::Route;

/// Every tenant role reads; a list shows each only its tenants' items.
const READ_TENANT: &str =
    "admin, operator; owner, developer, viewer of the tenant (lists: only their tenants')";
const ADMIN: &str = "admin";
const WRITE_TENANT: &str = "admin; owner, developer of the tenant";
/// The filter of the bulk calls (`/runs/rerun`, `/runs/kill`): `GET /runs`'s.
const BULK_FILTER: &[(&str, &str, &str)] = &[
    ("dc", "string", "Only runs in this data center."),
    ("cluster", "string", "Only runs on this cluster."),
    ("tenant", "string", "Only this tenant's runs."),
    ("environment", "string", "Only runs in this environment."),
    ("workflow", "string", "Only runs of this workflow."),
    (
        "schedule",
        "string",
        "Only this schedule's (`tenant.name`).",
    ),
    ("agent", "string", "Only runs on this agent."),
    ("task", "string", "Only runs with an attempt of this task."),
    ("state", "string", "Only runs in this state (`failed`, …)."),
    ("since_ms", "integer", "Only runs at or after this (ms)."),
    ("until_ms", "integer", "Only runs before this instant (ms)."),
];
const CONTROL_RUN: &str = "admin, operator; owner, developer of the run's tenant";
const OPERATIONS: &str = "admin, operator";
const MANAGE_PRINCIPALS: &str = "admin; owner of every tenant the user's (token's) roles name";
const INFRA_READ: &str = "admin, operator; members of a tenant granted an environment it \
     holds (lists: only those)";

/// A tenant's alerts are read as its definitions; the federation's by operators.
const ALERTS_READ: &str = "admin, operator; owner, developer, viewer of the tenant (lists: only \
     their tenants'); the federation's (`_`): admin, operator";
const ALERTS_WRITE: &str = "admin; owner, developer of the tenant; the federation's (`_`): admin";
const ALERT_LIST: &[(&str, &str, &str)] = &[
    STALE,
    (
        "tenant",
        "string",
        "Only this tenant's (`_`: the federation's).",
    ),
];

const STALE: (&str, &str, &str) = (
    "stale",
    "boolean",
    "Read this node's copy without a leader round trip (default: linearizable).",
);
const TENANT: (&str, &str, &str) = ("tenant", "string", "Only this tenant's.");
/// The lists that may hold a million items, read a page at a time in (tenant, name) order.
const PAGED: &[(&str, &str, &str)] = &[
    STALE,
    TENANT,
    (
        "after",
        "string",
        "The items after this one, `tenant/name`: the previous page's last.",
    ),
    (
        "limit",
        "integer",
        "At most this many (default 1000, at most 10000); a shorter page is the last.",
    ),
];

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

/// `POST` with no body, answered with the write's outcome: something done to a tenant's run
/// (or backfill) by whoever controls its runs.
const fn action(path: &'static str, summary: &'static str) -> Route {
    Route {
        body: None,
        reply: (200, "WriteReply"),
        access: CONTROL_RUN,
        ..create(path, summary, "")
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
        query: PAGED,
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
        query: PAGED,
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
        method: "patch",
        access: WRITE_TENANT,
        ..update(
            "/schedules/{tenant}/{name}",
            "Change some of a schedule's fields (a JSON merge patch: fields given replace, \
             objects merge, `null` removes); a new version unless nothing changed",
            "ScheduleChanges",
        )
    },
    Route {
        query: &[STALE, TENANT],
        ..get(
            "/pauses",
            "List pauses: schedules, workflows, tenants and environments held still",
            "[PauseRecord]",
        )
    },
    Route {
        reply: (200, "WriteReply"),
        access: "schedule, workflow, tenant: admin, operator; owner, developer of the tenant. \
             Environment: admin, operator",
        ..create(
            "/pauses",
            "Pause a schedule, every schedule of a workflow, a tenant or an environment: due \
             records are recorded skipped (paused) from the agents' next sync",
            "Pause",
        )
    },
    Route {
        reply: (200, "WriteReply"),
        access: "schedule, workflow, tenant: admin, operator; owner, developer of the tenant. \
             Environment: admin, operator",
        ..create(
            "/pauses/resume",
            "Lift a pause; with `catch_up`, what it skipped runs as far as each schedule's \
             catch-up policy says",
            "Resume",
        )
    },
    Route {
        query: ALERT_LIST,
        access: ALERTS_READ,
        ..get(
            "/alerts/channels",
            "List alert channels (a webhook's secret only shown as set)",
            "[AlertChannel]",
        )
    },
    Route {
        access: ALERTS_WRITE,
        ..create(
            "/alerts/channels",
            "Make an alert channel: a signed JSON webhook, email through the plane's relay, \
             or a chat-style webhook",
            "AlertChannel",
        )
    },
    Route {
        access: ALERTS_WRITE,
        ..delete(
            "/alerts/channels/{tenant}/{name}",
            "Delete an alert channel no rule or current workflow callback uses (`_`: the \
             federation's)",
        )
    },
    Route {
        query: ALERT_LIST,
        access: ALERTS_READ,
        ..get("/alerts/rules", "List alert rules", "[AlertRule]")
    },
    Route {
        access: ALERTS_WRITE,
        ..create(
            "/alerts/rules",
            "Make an alert rule: which events (of a tenant, workflow or schedule; agents and \
             data centers for the federation's) go to which channels, repeats grouped",
            "AlertRule",
        )
    },
    Route {
        access: ALERTS_WRITE,
        ..delete(
            "/alerts/rules/{tenant}/{name}",
            "Delete an alert rule (`_`: the federation's)",
        )
    },
    Route {
        query: &[
            STALE,
            (
                "tenant",
                "string",
                "Only this tenant's (`_`: the federation's).",
            ),
            (
                "state",
                "string",
                "Only `pending`, `delivered` or `failed` ones.",
            ),
            (
                "rule",
                "string",
                "Only this rule's (`~callback/<workflow>/<task>`: a task's callbacks).",
            ),
            (
                "limit",
                "integer",
                "At most this many (default 100, at most 1000).",
            ),
        ],
        access: ALERTS_READ,
        ..get(
            "/alerts/deliveries",
            "List alert and callback deliveries, newest first",
            "[Delivery]",
        )
    },
    Route {
        access: ALERTS_READ,
        ..get(
            "/alerts/deliveries/{id}",
            "One delivery with every attempt (when, which node, the receiver's answer)",
            "Delivery",
        )
    },
    Route {
        query: &[STALE, TENANT],
        ..get(
            "/backfills",
            "List backfills with their progress, newest first",
            "[BackfillRecord]",
        )
    },
    Route {
        access: CONTROL_RUN,
        ..create(
            "/backfills",
            "Fill a range of a schedule's fire times (only the missing ones unless `all`): its \
             records are handed to the schedule's holder at most `parallel` at a time \
             (`detail`: the backfill's id, its record count, what it leaves out)",
            "Backfill",
        )
    },
    get(
        "/backfills/{id}",
        "A backfill with its progress",
        "BackfillRecord",
    ),
    action(
        "/backfills/{id}/pause",
        "Hand a backfill's records no more until resumed (what is handed finishes)",
    ),
    action(
        "/backfills/{id}/resume",
        "Hand a paused backfill's records again",
    ),
    action(
        "/backfills/{id}/cancel",
        "Cancel a backfill: nothing more is handed (what is handed finishes)",
    ),
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
                "requested, queued, started, succeeded, failed, killed, skipped or returned.",
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
        query: &[
            (
                "seen",
                "string",
                "Where the caller got to: `seen` from the previous answer (none: from the start).",
            ),
            (
                "wait_ms",
                "integer",
                "Wait up to this long (ms, at most 10000) for something new before answering.",
            ),
        ],
        ..get(
            "/runs/{run_id}/logs/follow",
            "What a follower has not seen yet of a run's logs, waiting up to `wait_ms` for it",
            "LogFollow",
        )
    },
    action(
        "/runs/{run_id}/kill",
        "Kill a run (its agent is told on its next heartbeat)",
    ),
    Route {
        body: None,
        reply: (200, "WriteReply"),
        access: CONTROL_RUN,
        ..create(
            "/runs/{run_id}/rerun",
            "Run a finished run again for its own fire time and workflow version: a new run \
             `<first run>~<generation>` (`detail.run_id`)",
            "",
        )
    },
    Route {
        body: None,
        reply: (200, "WriteReply"),
        access: CONTROL_RUN,
        ..create(
            "/runs/{run_id}/recover",
            "Recover a failed or killed run: a new generation that runs only the tasks that did \
             not succeed, keeping the others' results",
            "",
        )
    },
    Route {
        reply: (200, "BulkReply"),
        access: "admin, operator; owner, developer of each run's tenant (the filter sees only \
             the caller's runs)",
        query: BULK_FILTER,
        ..create(
            "/runs/rerun",
            "Re-run or recover every finished run the filter matches (at most 1000): without \
             `expect`, only counts them; with `expect` equal to that count, runs them again in \
             one batch (409 if the count moved)",
            "BulkRerun",
        )
    },
    Route {
        reply: (200, "BulkReply"),
        access: "admin, operator; owner, developer of each run's tenant (the filter sees only \
             the caller's runs)",
        query: BULK_FILTER,
        ..create(
            "/runs/kill",
            "Kill every run going (requested, queued, started, returned) the filter matches (at \
             most 1000): without `expect`, only counts them; with `expect` equal to that count, \
             kills them in one batch (409 if the count moved)",
            "BulkKill",
        )
    },
    get(
        "/in-doubt",
        "Records in doubt after a takeover: per schedule, the range its previous holder may \
         have fired, that holder and when it was last heard, and the records not settled yet",
        "[InDoubt]",
    ),
    Route {
        reply: (200, "WriteReply"),
        access: CONTROL_RUN,
        ..create(
            "/in-doubt/resolve",
            "Settle a tenant's records in doubt (of one schedule, if named): `run` hands them \
             to the partition's holder, `mark_done` records them skipped",
            "ResolveDoubts",
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
    Route {
        query: &[],
        access: "anyone (no credential): for load balancers and supervisors",
        ..get(
            "/healthz",
            "Whether this node serves and its Raft runs (200 `ok`; 503 saying why not)",
            "Text",
        )
    },
    Route {
        query: &[],
        access: "anyone (no credential): for load balancers",
        ..get(
            "/readyz",
            "Whether this node should take traffic: it knows a leader and has applied its log \
             to within 1,000 entries (200; 503 with the reason)",
            "Readiness",
        )
    },
    Route {
        query: &[],
        access: OPERATIONS,
        ..get(
            "/metrics",
            "This node's figures for Prometheus (OpenMetrics text; names `meridian_…`)",
            "Metrics",
        )
    },
];
