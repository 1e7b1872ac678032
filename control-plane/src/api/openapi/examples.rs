//! The request bodies the OpenAPI document shows ([`EXAMPLES`]), one per route that takes JSON.
//! A test sends them all, in order, to a fresh plane and expects every one accepted.

/// One documented request.
pub struct Example {
    pub method: &'static str,
    /// The route's path, as in [`super::ROUTES`].
    pub route: &'static str,
    /// Where this example is sent.
    pub path: &'static str,
    pub body: &'static str,
}

const fn example(
    method: &'static str,
    route: &'static str,
    path: &'static str,
    body: &'static str,
) -> Example {
    Example {
        method,
        route,
        path,
        body,
    }
}

/// The request bodies the document shows, one per route that takes JSON (but adding a plane
/// node, which needs a node to add). Each builds on the ones before it: a test sends them all,
/// in this order, to a fresh plane and expects every one accepted.
pub const EXAMPLES: &[Example] = &[
    example(
        "post",
        "/dcs",
        "/dcs",
        r#"{"name": "nj", "description": "New Jersey"}"#,
    ),
    example(
        "put",
        "/dcs/{name}",
        "/dcs/nj",
        r#"{"name": "nj", "description": "Newark, rack 4"}"#,
    ),
    example("post", "/dcs", "/dcs", r#"{"name": "sg"}"#),
    example(
        "post",
        "/clusters",
        "/clusters",
        r#"{"name": "nj-main", "dc": "nj", "role": "active", "backup": null,
            "partitions": 16, "lease_seconds": 30}"#,
    ),
    example(
        "put",
        "/clusters/{name}",
        "/clusters/nj-main",
        r#"{"name": "nj-main", "dc": "nj", "role": "active", "partitions": 16,
            "lease_seconds": 60}"#,
    ),
    example(
        "post",
        "/environments",
        "/environments",
        r#"{"name": "prod-nj", "cluster": "nj-main", "vars": {"REGION": "us-east"},
            "work_dir": "/srv/meridian/runs", "queue": null,
            "run_as": {"tenants": {"ads": {"user": "ads-etl", "group": "etl"}},
                       "default": null, "allow_agent_user": false}}"#,
    ),
    example(
        "put",
        "/environments/{name}",
        "/environments/prod-nj",
        r#"{"name": "prod-nj", "cluster": "nj-main", "vars": {"REGION": "us-east-1"},
            "run_as": {"tenants": {"ads": {"user": "ads-etl"}}}}"#,
    ),
    example(
        "post",
        "/tenants",
        "/tenants",
        r#"{"name": "ads", "description": "Advertising"}"#,
    ),
    example(
        "put",
        "/tenants/{name}",
        "/tenants/ads",
        r#"{"name": "ads", "description": "Advertising and reporting"}"#,
    ),
    example(
        "post",
        "/grants",
        "/grants",
        r#"{"tenant": "ads", "environment": "prod-nj", "max_concurrent_runs": 5}"#,
    ),
    example(
        "put",
        "/grants/{tenant}/{environment}",
        "/grants/ads/prod-nj",
        r#"{"tenant": "ads", "environment": "prod-nj", "max_concurrent_runs": 8}"#,
    ),
    example(
        "post",
        "/workflows",
        "/workflows",
        r#"{"tenant": "ads", "name": "etl", "environment": "prod-nj", "definition": {"tasks": [
            {"name": "extract", "kind": {"shell": {"script": "sh extract.sh"}},
             "resources": {"etl/extract.sh": "extract.sh"},
             "timeout_seconds": 600, "retries": 2, "retry_delay_seconds": 5,
             "retry_max_seconds": 120},
            {"name": "notify", "depends_on": ["extract"], "kind": {"http": {
                "method": "POST", "url": "https://hooks.example/etl",
                "headers": {"content-type": "application/json"}, "body": "{}",
                "expect_status": 200}}},
            {"name": "done", "depends_on": ["notify"], "kind": {"noop": {}}}]}}"#,
    ),
    example(
        "post",
        "/schedules",
        "/schedules",
        r#"{"tenant": "ads", "name": "nightly", "workflow": "etl", "environment": "prod-nj",
            "spec": {"cron": "0 0 2 * * ?", "time_zone": "America/New_York",
                     "start": "2026-01-01T00:00:00Z", "end": null,
                     "catch_up": {"policy": "all", "window_seconds": 3600, "max": 50}},
            "overlap": "skip"}"#,
    ),
    example(
        "put",
        "/schedules/{tenant}/{name}",
        "/schedules/ads/nightly",
        r#"{"tenant": "ads", "name": "nightly", "workflow": "etl", "environment": "prod-nj",
            "spec": {"cron": "0 30 1 * * ?", "time_zone": "America/New_York",
                     "catch_up": {"policy": "latest"}},
            "overlap": "buffer_one"}"#,
    ),
    example(
        "patch",
        "/schedules/{tenant}/{name}",
        "/schedules/ads/nightly",
        r#"{"spec": {"cron": "0 0 3 * * ?", "end": "2027-01-01T00:00:00Z"}}"#,
    ),
    example(
        "post",
        "/runs/rerun",
        "/runs/rerun?tenant=ads&state=failed",
        r#"{"recover": true}"#,
    ),
    example(
        "post",
        "/runs/kill",
        "/runs/kill?tenant=ads&state=queued",
        r#"{"expect": 0}"#,
    ),
    example(
        "post",
        "/backfills",
        "/backfills",
        r#"{"tenant": "ads", "schedule": "nightly", "from": "2026-10-01T00:00:00Z",
            "to": "2026-10-31T23:59:59Z", "parallel": 4, "order": "asc", "all": false}"#,
    ),
    example(
        "post",
        "/alerts/channels",
        "/alerts/channels",
        r#"{"tenant": "ads", "name": "ops-hook", "type": "webhook",
            "url": "https://hooks.example.com/meridian", "secret": "a-long-shared-secret"}"#,
    ),
    example(
        "post",
        "/alerts/rules",
        "/alerts/rules",
        r#"{"tenant": "ads", "name": "nightly-failures", "schedule": "nightly",
            "on": ["failed", "sla"], "sla_seconds": 7200, "channels": ["ops-hook"],
            "group_seconds": 600}"#,
    ),
    example(
        "post",
        "/pauses",
        "/pauses",
        r#"{"scope": {"schedule": {"tenant": "ads", "name": "nightly"}}, "reason": "release 4.2"}"#,
    ),
    example(
        "post",
        "/pauses/resume",
        "/pauses/resume",
        r#"{"scope": {"schedule": {"tenant": "ads", "name": "nightly"}}, "catch_up": true}"#,
    ),
    example(
        "post",
        "/runs",
        "/runs",
        r#"{"tenant": "ads", "workflow": "etl", "environment": "prod-nj"}"#,
    ),
    example(
        "post",
        "/in-doubt/resolve",
        "/in-doubt/resolve",
        r#"{"tenant": "ads", "schedule": "nightly", "resolution": "run"}"#,
    ),
    example(
        "post",
        "/users",
        "/users",
        r#"{"name": "erin", "bindings": [{"role": "developer", "tenant": "ads"}],
            "password": "a long enough passphrase"}"#,
    ),
    example(
        "put",
        "/users/{name}/password",
        "/users/erin/password",
        r#"{"password": "another long passphrase"}"#,
    ),
    example(
        "post",
        "/users/{name}/bindings",
        "/users/erin/bindings",
        r#"{"role": "viewer", "tenant": "ads"}"#,
    ),
    example(
        "post",
        "/tokens",
        "/tokens",
        r#"{"name": "ci", "role": "developer", "tenant": "ads", "expires_in_seconds": 2592000}"#,
    ),
    example(
        "post",
        "/session",
        "/session",
        r#"{"user": "erin", "password": "another long passphrase"}"#,
    ),
];
