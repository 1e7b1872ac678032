//! The REST API on a three-node plane: every node serves it, writes go through any node,
//! reads are linearizable, bad input is refused with the field named, and every call needs a
//! token.

use meridian_domain::ManualClock;
use meridian_plane::api::openapi::{EXAMPLES, ROUTES};
use meridian_tests::api_plane::{ApiPlane, Cred};
use meridian_tests::cluster::hostname;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Plane {
    inner: ApiPlane,
}

impl std::ops::Deref for Plane {
    type Target = ApiPlane;
    fn deref(&self) -> &ApiPlane {
        &self.inner
    }
}

impl Plane {
    async fn start(clock: ManualClock) -> Self {
        Self {
            inner: ApiPlane::start(3, clock).await,
        }
    }

    async fn call_as(
        &self,
        token: &str,
        node: usize,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let cred = if token.is_empty() {
            Cred::Nobody
        } else {
            Cred::Token(token.to_owned())
        };
        let r = self.inner.call_as(&cred, node, method, path, body).await;
        (r.status, r.body)
    }

    /// Creates a small federation through node `via`.
    async fn seed(&self, via: usize) {
        for (path, body) in [
            ("/dcs", json!({"name": "nj"})),
            ("/clusters", json!({"name": "nj-main", "dc": "nj"})),
            (
                "/environments",
                json!({"name": "prod-nj", "cluster": "nj-main", "vars": {"A": "1"}}),
            ),
            (
                "/environments",
                json!({"name": "test-nj", "cluster": "nj-main"}),
            ),
            ("/tenants", json!({"name": "ads"})),
            (
                "/grants",
                json!({"tenant": "ads", "environment": "prod-nj", "max_concurrent_runs": 3}),
            ),
            (
                "/workflows",
                json!({"tenant": "ads", "name": "etl", "definition":
                {"tasks": [{"name": "main", "kind": {"shell": {"script": "echo hi"}}}]}}),
            ),
            (
                "/schedules",
                json!({"tenant": "ads", "name": "hourly", "workflow": "etl",
                "environment": "prod-nj", "spec": {"cron": "0 0 * * * ?", "time_zone": "America/New_York"}}),
            ),
        ] {
            let (status, reply) = self.call(via, Method::POST, path, Some(body)).await;
            assert_eq!(status, StatusCode::CREATED, "POST {path}: {reply}");
        }
    }
}

fn t0() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
        .unwrap()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_one_node_are_read_at_once_through_another() {
    let plane = Plane::start(ManualClock::at(t0())).await;
    let leader = plane.cluster.leader().await;
    let (writer, reader) = ((leader + 1) % 3, (leader + 2) % 3);
    plane.seed(writer).await;
    // No waiting: a linearizable read on another follower must already see every write.
    let (status, schedule) = plane
        .call(reader, Method::GET, "/schedules/ads/hourly", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{schedule}");
    assert_eq!(schedule["spec"]["time_zone"], "America/New_York");
    let (_, envs) = plane.call(reader, Method::GET, "/environments", None).await;
    assert_eq!(envs.as_array().unwrap().len(), 2);
    let (_, grants) = plane
        .call(reader, Method::GET, "/grants?tenant=ads", None)
        .await;
    assert_eq!(grants[0]["max_concurrent_runs"], 3);
    let (_, wf) = plane
        .call(reader, Method::GET, "/workflows/ads/etl", None)
        .await;
    assert_eq!(wf["version"], 1);
    // Applying a workflow again makes a new version; the old one stays readable.
    let (status, reply) = plane
        .call(leader, Method::POST, "/workflows", Some(json!({"tenant": "ads", "name": "etl",
            "definition": {"tasks": [{"name": "main", "kind": {"shell": {"script": "echo v2"}}}]}})))
        .await;
    assert_eq!(
        (status, reply["version"].clone()),
        (StatusCode::CREATED, json!(2))
    );
    let (_, v1) = plane
        .call(reader, Method::GET, "/workflows/ads/etl?version=1", None)
        .await;
    assert_eq!(
        v1["definition"]["tasks"][0]["kind"]["shell"]["script"],
        "echo hi"
    );
    // A stale read is allowed and answers from the local copy.
    let (status, _) = plane
        .call(reader, Method::GET, "/dcs?stale=true", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    plane.inner.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_field_and_changes_nothing() {
    let plane = Plane::start(ManualClock::at(t0())).await;
    plane.seed(0).await;
    let applied = "/audit?limit=1000&outcome=applied";
    let (_, before) = plane.call(1, Method::GET, applied, None).await;
    let cases = [
        (
            "/clusters",
            json!({"name": "x", "dc": "nj", "partitions": "many"}),
            StatusCode::BAD_REQUEST,
            "partitions",
        ),
        (
            "/clusters",
            json!({"name": "x", "dc": "nj", "colour": "red"}),
            StatusCode::BAD_REQUEST,
            "unknown field `colour`",
        ),
        (
            "/clusters",
            json!({"name": "x", "dc": "nj", "partitions": 0}),
            StatusCode::BAD_REQUEST,
            "partitions: must be between 1 and 4096",
        ),
        (
            "/dcs",
            json!({"name": "a.b"}),
            StatusCode::BAD_REQUEST,
            "name `a.b`",
        ),
        (
            "/schedules",
            json!({"tenant": "ads", "name": "bad", "workflow": "etl", "environment": "prod-nj",
            "spec": {"cron": "0 0 25 * * ?"}}),
            StatusCode::BAD_REQUEST,
            "cron.hour",
        ),
        (
            "/schedules",
            json!({"tenant": "ads", "name": "s2", "workflow": "etl", "environment": "test-nj",
            "spec": {"cron": "0 0 * * * ?"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "environment `test-nj` is not granted to tenant `ads`",
        ),
        (
            "/dcs",
            json!({"name": "nj"}),
            StatusCode::CONFLICT,
            "data center `nj` already exists",
        ),
    ];
    for (path, body, status, needle) in cases {
        let (got, reply) = plane.call(1, Method::POST, path, Some(body.clone())).await;
        assert_eq!(got, status, "POST {path} {body}: {reply}");
        let error = reply["error"].as_str().unwrap();
        assert!(
            error.contains(needle),
            "POST {path} {body}: `{error}` lacks `{needle}`"
        );
    }
    let (status, reply) = plane
        .call(2, Method::DELETE, "/clusters/nj-main", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let error = reply["error"].as_str().unwrap();
    assert!(
        error.contains("environment") && error.contains("prod-nj") && error.contains("test-nj"),
        "{error}"
    );
    let (status, reply) = plane.call(2, Method::GET, "/clusters/a.b", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("path parameter `name`"),
        "{reply}"
    );
    let (status, _) = plane.call(2, Method::GET, "/audit?limit=0", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = plane.call(2, Method::GET, "/tenants/nobody", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nothing above changed the model: the audit trail's applied entries are as they were.
    let (_, after) = plane.call(1, Method::GET, applied, None).await;
    assert_eq!(before, after);
    plane.inner.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infrastructure_is_changed_in_place_but_never_moved() {
    let plane = Plane::start(ManualClock::at(t0())).await;
    plane.seed(0).await;
    plane
        .must(Method::POST, "/dcs", json!({"name": "sh"}))
        .await;
    plane
        .must(
            Method::POST,
            "/clusters",
            json!({"name": "nj-dr", "dc": "nj"}),
        )
        .await;
    // Descriptions change, read back through another node.
    for (path, body) in [
        (
            "/dcs/nj",
            json!({"name": "nj", "description": "Newark, rack 4"}),
        ),
        (
            "/tenants/ads",
            json!({"name": "ads", "description": "Advertising"}),
        ),
    ] {
        let (status, reply) = plane.call(0, Method::PUT, path, Some(body.clone())).await;
        assert_eq!(status, StatusCode::OK, "PUT {path}: {reply}");
        let (_, stored) = plane.call(1, Method::GET, path, None).await;
        assert_eq!(stored, body, "{path}");
    }
    // A cluster's backup and lease change; its agents' next lease runs for the new duration.
    plane.heartbeat("a1", "nj-main", 4).await;
    let expiry = |leases: Value| {
        leases
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["cluster"] == "nj-main" && l["holder"] == "a1")
            .map(|l| l["expires_ms"].as_i64().unwrap())
            .max()
            .expect("a1 holds a partition of nj-main")
    };
    let now_ms = t0().timestamp_millis();
    let (_, leases) = plane.call(0, Method::GET, "/leases", None).await;
    assert_eq!(expiry(leases), now_ms + 30_000);
    let changed = json!({"name": "nj-main", "dc": "nj", "role": "active", "backup": "nj-dr",
        "partitions": 16, "lease_seconds": 90});
    let (status, reply) = plane
        .call(0, Method::PUT, "/clusters/nj-main", Some(changed.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (_, stored) = plane.call(2, Method::GET, "/clusters/nj-main", None).await;
    assert_eq!(stored, changed);
    plane.heartbeat("a1", "nj-main", 4).await;
    let (_, leases) = plane.call(0, Method::GET, "/leases", None).await;
    assert_eq!(expiry(leases), now_ms + 90_000);

    // What a cluster is placed by cannot move, and every refusal names its field.
    let applied = "/audit?limit=1000&outcome=applied";
    let (_, before) = plane.call(1, Method::GET, applied, None).await;
    let with = |field: &str, value: Value| {
        let mut c = changed.clone();
        c[field] = value;
        c
    };
    let cases = [
        (
            "/clusters/nj-main",
            with("dc", json!("sh")),
            StatusCode::BAD_REQUEST,
            "dc: a cluster stays in its data center (`nj`)",
        ),
        (
            "/clusters/nj-main",
            with("partitions", json!(32)),
            StatusCode::BAD_REQUEST,
            "partitions: fixed when the cluster was created (16)",
        ),
        (
            "/clusters/nj-main",
            with("backup", json!("nj-main")),
            StatusCode::BAD_REQUEST,
            "backup: a cluster cannot back itself up",
        ),
        (
            "/clusters/nj-main",
            with("backup", json!("nowhere")),
            StatusCode::NOT_FOUND,
            "cluster `nowhere`",
        ),
        (
            "/clusters/nj-main",
            with("lease_seconds", json!(0)),
            StatusCode::BAD_REQUEST,
            "lease_seconds: must be at least 1",
        ),
        (
            "/clusters/nj-main",
            with("name", json!("nj-dr")),
            StatusCode::BAD_REQUEST,
            "body: names cluster `nj-dr`, but the path is `nj-main`",
        ),
        (
            "/clusters/nj-gone",
            with("name", json!("nj-gone")),
            StatusCode::NOT_FOUND,
            "cluster `nj-gone`",
        ),
        (
            "/dcs/nj",
            json!({"name": "nj", "colour": "red"}),
            StatusCode::BAD_REQUEST,
            "unknown field `colour`",
        ),
        (
            "/tenants/nobody",
            json!({"name": "nobody"}),
            StatusCode::NOT_FOUND,
            "tenant `nobody`",
        ),
    ];
    for (path, body, status, needle) in cases {
        let (got, reply) = plane.call(1, Method::PUT, path, Some(body.clone())).await;
        assert_eq!(got, status, "PUT {path} {body}: {reply}");
        let error = reply["error"].as_str().unwrap();
        assert!(
            error.contains(needle),
            "PUT {path} {body}: `{error}` lacks `{needle}`"
        );
    }
    let (_, stored) = plane.call(2, Method::GET, "/clusters/nj-main", None).await;
    assert_eq!(stored, changed);
    let (_, after) = plane.call(1, Method::GET, applied, None).await;
    assert_eq!(before, after);
    plane.inner.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_needs_a_valid_token_and_the_audit_names_its_holder() {
    let clock = ManualClock::at(t0());
    let plane = Plane::start(clock.clone()).await;
    for (token, path) in [("", "/dcs"), ("mrd_wrong", "/dcs"), ("", "/plane/status")] {
        let (status, reply) = plane.call_as(token, 0, Method::GET, path, None).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{path} with `{token}`: {reply}"
        );
    }
    let no_header = plane
        .http
        .get(format!("{}/dcs", plane.urls[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(no_header.status(), StatusCode::UNAUTHORIZED);

    // The OpenAPI document is not a secret.
    let (status, _) = plane
        .call_as("", 0, Method::GET, "/openapi.json", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, created) = plane
        .call(
            1,
            Method::POST,
            "/tokens",
            Some(json!({"name": "ci", "role": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["token"].as_str().unwrap().to_owned();
    plane.cluster.wait_converged().await;
    clock.advance(chrono::Duration::seconds(90));
    let (status, reply) = plane
        .call_as(
            &secret,
            2,
            Method::POST,
            "/dcs",
            Some(json!({"name": "sg"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let (_, audit) = plane.call(0, Method::GET, "/audit?limit=1", None).await;
    assert_eq!(audit[0]["actor"], "token:ci");
    assert_eq!(audit[0]["op"], "create_data_center");
    assert_eq!(
        audit[0]["at_ms"],
        (t0() + chrono::Duration::seconds(90)).timestamp_millis()
    );
    // The token's hash is never shown: not in the list, not in the audit trail.
    let (_, tokens) = plane.call(0, Method::GET, "/tokens", None).await;
    let listed: Vec<(String, Value)> = tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["bindings"].clone(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("admin".to_owned(), json!([{"role": "admin"}])),
            ("ci".to_owned(), json!([{"role": "admin"}]))
        ]
    );
    assert!(!tokens.to_string().contains("hash"), "{tokens}");
    let (_, all) = plane.call(0, Method::GET, "/audit?limit=1000", None).await;
    let hash = meridian_plane::api::token::hash(&secret);
    assert!(!all.to_string().contains(&hash));

    let (status, _) = plane.call(0, Method::DELETE, "/tokens/ci", None).await;
    assert_eq!(status, StatusCode::OK);
    plane.cluster.wait_converged().await;
    for node in 0..3 {
        let (status, _) = plane
            .call_as(&secret, node, Method::GET, "/dcs", None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", hostname(node));
    }
    plane.inner.cluster.shutdown().await;
}

/// Issue #18, defect 8: every request the OpenAPI document shows is one the server accepts,
/// sent in the document's order to a fresh plane; and what it stored reads back as sent
/// (nothing in an example is silently dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_example_is_accepted() {
    let plane = Plane::start(ManualClock::at(t0())).await;
    assert!(EXAMPLES.len() >= 20);
    for e in EXAMPLES {
        let method = Method::from_bytes(e.method.to_uppercase().as_bytes()).unwrap();
        let body: Value = serde_json::from_str(e.body).unwrap();
        let (status, reply) = plane
            .call(0, method.clone(), e.path, Some(body.clone()))
            .await;
        assert!(
            status.is_success(),
            "{method} {}: {status} {reply}\n{}",
            e.path,
            e.body
        );
        // A definition reads back with every field it was sent with.
        let stored = match (e.method, e.route) {
            ("post", "/dcs" | "/clusters" | "/environments" | "/tenants") => {
                Some(format!("{}/{}", e.path, body["name"].as_str().unwrap()))
            }
            ("put", r) if !r.starts_with("/users") => Some(e.path.to_owned()),
            ("post", "/workflows" | "/schedules") => Some(format!(
                "{}/{}/{}",
                e.path,
                body["tenant"].as_str().unwrap(),
                body["name"].as_str().unwrap()
            )),
            _ => None,
        };
        if let Some(path) = stored {
            let (_, read) = plane.call(1, Method::GET, &path, None).await;
            assert!(holds(&read, &body), "{path}: sent {body}, reads {read}");
        }
    }
    plane.inner.cluster.shutdown().await;
}

/// Whether `read` has everything `sent` gave (objects may have more: defaults filled in; a
/// null sent is an unset field).
fn holds(read: &Value, sent: &Value) -> bool {
    match (read, sent) {
        (_, Value::Null) => true,
        (Value::Object(r), Value::Object(s)) => s
            .iter()
            .all(|(k, v)| holds(r.get(k).unwrap_or(&Value::Null), v)),
        (Value::Array(r), Value::Array(s)) => {
            r.len() == s.len() && r.iter().zip(s).all(|(r, s)| holds(r, s))
        }
        _ => read == sent,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served() {
    let plane = Plane::start(ManualClock::at(t0())).await;
    let (status, doc) = plane.call(0, Method::GET, "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for route in ROUTES {
        let path = route
            .path
            .replace("{tenant}", "nobody")
            .replace("{environment}", "nowhere")
            .replace("{hostname}", "nohost.test")
            .replace("{name}", "nothing")
            .replace("{run_id}", "nothing")
            .replace("{key}", "etl/x.sh");
        let method = Method::from_bytes(route.method.to_uppercase().as_bytes()).unwrap();
        assert!(doc["paths"][format!("/api/v1{}", route.path)][route.method].is_object());
        // Bodies are deliberately empty objects: the route must exist (no fallback 404, no
        // 405) even where the input is refused.
        let body = route.body.map(|_| json!({}));
        let (status, reply) = plane.call(1, method.clone(), &path, body).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        let text = reply.to_string();
        assert!(!text.contains("no API route"), "{method} {path}: {text}");
    }
    plane.inner.cluster.shutdown().await;
}

/// `/healthz` and `/readyz` answer anyone, for load balancers; `/metrics` answers operators
/// with each node's own figures: one leader among the three, the runs by state. A node left
/// without a quorum stays healthy but says it is not ready, and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_on_every_node() {
    let mut plane = ApiPlane::start(3, ManualClock::at(chrono::Utc::now())).await;
    plane.two_tenants().await;
    let run = plane.run_now("ads").await;
    plane
        .must(Method::POST, &format!("/runs/{run}/kill"), json!({}))
        .await;
    plane.cluster.wait_converged().await;
    let viewer = plane.token("viewer-ads", &["viewer@ads"]).await;
    let mut leaders = 0;
    for node in 0..3 {
        let health = plane
            .call_as(&Cred::Nobody, node, Method::GET, "/healthz", None)
            .await;
        assert_eq!(
            (health.status, health.body),
            (StatusCode::OK, json!("ok\n"))
        );
        let ready = plane
            .call_as(&Cred::Nobody, node, Method::GET, "/readyz", None)
            .await;
        assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
        assert_eq!(ready.body["ready"], true);
        let metrics = plane
            .call_as(&plane.admin, node, Method::GET, "/metrics", None)
            .await;
        assert_eq!(metrics.status, StatusCode::OK);
        assert!(
            metrics.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text"),
            "{:?}",
            metrics.headers
        );
        let text = metrics.body.as_str().unwrap().to_owned();
        let value = |name: &str| -> i64 {
            meridian_tests::metric(&text, name).unwrap_or_else(|| panic!("{name} in {text}"))
        };
        leaders += value("meridian_raft_leader");
        assert!(value("meridian_raft_term") >= 1, "{text}");
        assert_eq!(value("meridian_raft_apply_lag_entries"), 0, "{text}");
        assert_eq!(value("meridian_runs{state=\"killed\"}"), 1, "{text}");
        assert!(text.contains("# TYPE meridian_runs gauge"), "{text}");
        // No agent here: nothing reported, no log held; the counters say so.
        assert_eq!(value("meridian_log_stored_bytes"), 0, "{text}");
        assert_eq!(value("meridian_reports_received_total"), 0, "{text}");
        assert!(
            text.contains("# TYPE meridian_log_pieces_stored counter"),
            "{text}"
        );
        assert!(value("meridian_lease_grants") >= 0, "{text}");
        for database in ["model", "history"] {
            let name = format!("meridian_database_wal_bytes{{database=\"{database}\"}}");
            assert!(value(&name) >= 0, "{text}");
        }
        // Every plane figure the Grafana dashboard shows is one this node exposes.
        let shown = meridian_tests::dashboard_metrics(|n| {
            !n.starts_with("meridian_agent_") && !n.starts_with("meridian_resource_")
        });
        assert!(shown.len() >= 20, "{shown:?}");
        for name in shown {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{name} "))
                        || l.starts_with(&format!("{name}{{"))),
                "the dashboard's {name} is not in {text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        let refused = plane
            .call_as(&viewer, node, Method::GET, "/metrics", None)
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(leaders, 1, "one leader among the nodes");
    // The leader and another node go: the last one, a follower, loses its leader.
    let leader = plane.cluster.leader().await;
    let other = (0..3).find(|&i| i != leader).unwrap();
    let last = (0..3).find(|&i| i != leader && i != other).unwrap();
    plane.cluster.kill(leader).await;
    plane.cluster.kill(other).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let ready = loop {
        let ready = plane
            .call_as(&Cred::Nobody, last, Method::GET, "/readyz", None)
            .await;
        if ready.status == StatusCode::SERVICE_UNAVAILABLE {
            break ready;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", ready.body);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(ready.body["ready"], false);
    assert!(
        ready.body["reason"]
            .as_str()
            .unwrap()
            .contains("knows no leader"),
        "{}",
        ready.body
    );
    let health = plane
        .call_as(&Cred::Nobody, last, Method::GET, "/healthz", None)
        .await;
    assert_eq!(health.status, StatusCode::OK, "still serving");
    plane.cluster.shutdown().await;
}

/// Issue #21: workflows and schedules — lists that may hold a million items — are read a page
/// at a time in (tenant, name) order. Walking the pages gives every item once; a caller who
/// sees some tenants gets pages full of theirs (the scope is part of the query, so another
/// tenant's items never make a page come up short and end the walk early); a bad cursor or
/// size is refused naming the query parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_and_schedules_are_listed_a_page_at_a_time() {
    let plane = Plane::start(ManualClock::at(t0())).await;
    plane.inner.two_tenants().await;
    for (tenant, env, names) in [
        ("ads", "prod", ["a1", "a2", "a3", "a4", "a5"]),
        ("bi", "bi-prod", ["b1", "b2", "b3", "b4", "b5"]),
    ] {
        for name in names {
            plane
                .inner
                .must(
                    Method::POST,
                    "/workflows",
                    json!({"tenant": tenant, "name": name, "environment": env,
                           "definition": {"tasks": [{"name": "main", "kind": {"noop": {}}}]}}),
                )
                .await;
            plane
                .inner
                .must(
                    Method::POST,
                    "/schedules",
                    json!({"tenant": tenant, "name": name, "workflow": name,
                           "environment": env, "spec": {"cron": "0 0 * * * ?"}}),
                )
                .await;
        }
    }
    let bi_viewer = plane.inner.token("bi-viewer", &["viewer@bi"]).await;
    let admin = &plane.inner.admin;
    // Every page of `path` in turn, `limit` at a time: the items' `tenant/name`s, and each
    // page's length.
    let walk = async |who: &Cred, path: &str, limit: usize| {
        let (mut seen, mut sizes, mut after) = (Vec::new(), Vec::new(), None::<String>);
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let mut url = format!("{path}{sep}limit={limit}");
            if let Some(a) = &after {
                url.push_str(&format!("&after={a}"));
            }
            let reply = plane.inner.call_as(who, 1, Method::GET, &url, None).await;
            assert_eq!(reply.status, StatusCode::OK, "{url}: {}", reply.body);
            let page = reply.body.as_array().unwrap().clone();
            sizes.push(page.len());
            let keys: Vec<String> = page
                .iter()
                .map(|i| {
                    format!(
                        "{}/{}",
                        i["tenant"].as_str().unwrap(),
                        i["name"].as_str().unwrap()
                    )
                })
                .collect();
            seen.extend(keys.iter().cloned());
            if page.len() < limit {
                return (seen, sizes);
            }
            after = keys.last().cloned();
        }
    };
    let names = |tenant: &str, also: &str| {
        let mut n: Vec<String> = ["a1", "a2", "a3", "a4", "a5", "b1", "b2", "b3", "b4", "b5"]
            .iter()
            .filter(|n| n.starts_with(&tenant[..1]))
            .map(|n| format!("{tenant}/{n}"))
            .collect();
        n.push(format!("{tenant}/{also}"));
        n.sort();
        n
    };
    let ads_schedules = names("ads", "hourly");
    let bi_schedules = names("bi", "hourly");
    let every: Vec<String> = ads_schedules.iter().chain(&bi_schedules).cloned().collect();

    let (seen, sizes) = walk(admin, "/schedules", 4).await;
    assert_eq!(seen, every, "each schedule once, in (tenant, name) order");
    assert_eq!(sizes, vec![4, 4, 4, 0]);
    // Without a size, a page of up to 1,000: here all of them.
    let (_, whole) = plane.call(1, Method::GET, "/schedules", None).await;
    assert_eq!(whole.as_array().unwrap().len(), every.len());
    // A viewer of `bi` walks only bi's, in full pages, though ads's come first in the order.
    let (seen, sizes) = walk(&bi_viewer, "/schedules", 2).await;
    assert_eq!(seen, bi_schedules);
    assert_eq!(sizes, vec![2, 2, 2, 0]);
    let (seen, _) = walk(&bi_viewer, "/workflows", 5).await;
    assert_eq!(seen, names("bi", "etl"));
    // One tenant's, asked for.
    let (seen, sizes) = walk(admin, "/workflows?tenant=ads", 3).await;
    assert_eq!(seen, names("ads", "etl"));
    assert_eq!(sizes, vec![3, 3, 0]);
    // Asking bi's viewer for ads's finds nothing to show.
    let (seen, _) = walk(&bi_viewer, "/schedules?tenant=ads", 3).await;
    assert!(seen.is_empty(), "{seen:?}");

    for (query, says) in [
        ("after=ads", "query `after`: `ads` is not `tenant/name`"),
        (
            "after=ads/No%20such",
            "query `after`: `ads/No such` is not `tenant/name`",
        ),
        ("limit=0", "query `limit`: 0 is not between 1 and 10000"),
        (
            "limit=10001",
            "query `limit`: 10001 is not between 1 and 10000",
        ),
        ("tenant=a.b", "query `tenant`"),
    ] {
        for list in ["/schedules", "/workflows"] {
            let (status, reply) = plane
                .call(1, Method::GET, &format!("{list}?{query}"), None)
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{list}?{query}: {reply}");
            assert!(
                reply.to_string().contains(says),
                "{list}?{query}: {reply} lacks {says}"
            );
        }
    }
    plane.inner.cluster.shutdown().await;
}
