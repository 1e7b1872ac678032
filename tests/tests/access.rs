//! Who may do what, through the real API on a real plane: every route of the OpenAPI document
//! with every role (admin, operator, owner/developer/viewer of the route's tenant and of
//! another tenant, a signed-in session, no credential, an expired token, a deleted user's
//! session); escalation attempts; sessions, CSRF and failed sign-ins; lists filtered to what a
//! principal may see; and, on three nodes, revocations enforced by every node and at apply.

use std::collections::BTreeMap;
use std::time::Duration;

use meridian_domain::ManualClock;
use meridian_domain::workflow::WorkflowDefinition;
use meridian_plane::api::openapi::ROUTES;
use meridian_plane::model::{Author, Command, Name, Proposal, Workflow};
use meridian_plane::raft::Outcome;
use meridian_tests::api_plane::{ApiPlane, Cred, cookie_value};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn t0() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z")
        .unwrap()
        .into()
}

const PASSWORD: &str = "a long enough password";

/// A backfill of `ads/hourly` (created at [`t0`]): its two days of fire times before.
fn backfill_body() -> Value {
    json!({"tenant": "ads", "schedule": "hourly",
           "from": t0() - chrono::Duration::hours(48),
           "to": t0() - chrono::Duration::seconds(1)})
}

/// The principals every route is called as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Admin,
    Operator,
    Owner,
    Developer,
    Viewer,
    /// Developer of the route's tenant, signed in with a session (cookie + CSRF token).
    SessionDeveloper,
    OtherOwner,
    OtherDeveloper,
    OtherViewer,
    Nobody,
    Expired,
    DeletedUsersSession,
}

use Who::*;

const EVERYONE: [Who; 12] = [
    Admin,
    Operator,
    Owner,
    Developer,
    Viewer,
    SessionDeveloper,
    OtherOwner,
    OtherDeveloper,
    OtherViewer,
    Nobody,
    Expired,
    DeletedUsersSession,
];

/// What a route answers each principal: the status for admin, operator, owner, developer and
/// viewer of the route's tenant, and for the three roles of another tenant. A signed-in
/// developer gets what a developer's token gets; no credential, an expired token and a
/// deleted user's session get 401, unless the route is public.
#[derive(Debug, Clone, Copy)]
struct Expect {
    admin: u16,
    operator: u16,
    owner: u16,
    developer: u16,
    viewer: u16,
    /// The developer signed in with a session (mostly what the developer's token gets).
    session: u16,
    other: [u16; 3],
    public: bool,
}

const fn e(admin: u16, operator: u16, tenant: [u16; 3], other: [u16; 3]) -> Expect {
    Expect {
        admin,
        operator,
        owner: tenant[0],
        developer: tenant[1],
        viewer: tenant[2],
        session: tenant[1],
        other,
        public: false,
    }
}

impl Expect {
    fn status(&self, who: Who) -> u16 {
        match who {
            Admin => self.admin,
            Operator => self.operator,
            Owner => self.owner,
            Developer => self.developer,
            SessionDeveloper => self.session,
            Viewer => self.viewer,
            OtherOwner => self.other[0],
            OtherDeveloper => self.other[1],
            OtherViewer => self.other[2],
            Nobody | Expired | DeletedUsersSession if self.public => self.admin,
            Nobody | Expired | DeletedUsersSession => 401,
        }
    }
}

/// Every route's rule, by (method, path as in the OpenAPI document).
fn rules() -> BTreeMap<(&'static str, &'static str), Expect> {
    const ALL_200: Expect = e(200, 200, [200, 200, 200], [200, 200, 200]);
    const ADMIN_CREATE: Expect = e(201, 403, [403, 403, 403], [403, 403, 403]);
    // Read inside the route's tenant (ads); another tenant's members are told it is not there.
    const TENANT_READ: Expect = e(200, 200, [200, 200, 200], [404, 404, 404]);
    // Infrastructure nobody is granted (made fresh for the call): only admins see it to delete.
    const INFRA_DELETE: Expect = e(200, 403, [404, 404, 404], [404, 404, 404]);
    const DEFINITION_WRITE: Expect = e(201, 403, [201, 201, 403], [404, 404, 404]);
    const DEFINITION_CHANGE: Expect = e(200, 403, [200, 200, 403], [404, 404, 404]);
    const OPERATIONS: Expect = e(200, 200, [403, 403, 403], [403, 403, 403]);
    const ADMIN_ONLY: Expect = e(200, 403, [403, 403, 403], [403, 403, 403]);
    // Users and tokens of the route's tenant: its owner manages them; nobody else sees them.
    const PRINCIPAL_CHANGE: Expect = e(200, 404, [200, 404, 404], [404, 404, 404]);
    const PRINCIPAL_LIST: Expect = e(200, 403, [200, 403, 403], [200, 403, 403]);
    const PRINCIPAL_CREATE: Expect = e(201, 403, [201, 403, 403], [404, 404, 404]);
    // No bucket on this plane: whoever passes the policy gets 503.
    const RESOURCE_READ: Expect = e(503, 503, [503, 503, 503], [404, 404, 404]);
    const RESOURCE_WRITE: Expect = e(503, 403, [503, 503, 403], [404, 404, 404]);
    BTreeMap::from([
        (("get", "/dcs"), ALL_200),
        (("post", "/dcs"), ADMIN_CREATE),
        (("get", "/dcs/{name}"), TENANT_READ),
        (("delete", "/dcs/{name}"), INFRA_DELETE),
        (("put", "/dcs/{name}"), INFRA_DELETE),
        (("get", "/clusters"), ALL_200),
        (("post", "/clusters"), ADMIN_CREATE),
        (("get", "/clusters/{name}"), TENANT_READ),
        (("delete", "/clusters/{name}"), INFRA_DELETE),
        (("put", "/clusters/{name}"), INFRA_DELETE),
        (("get", "/environments"), ALL_200),
        (("post", "/environments"), ADMIN_CREATE),
        (("get", "/environments/{name}"), TENANT_READ),
        (("delete", "/environments/{name}"), INFRA_DELETE),
        (("put", "/environments/{name}"), INFRA_DELETE),
        (("get", "/tenants"), ALL_200),
        (("post", "/tenants"), ADMIN_CREATE),
        (("get", "/tenants/{name}"), TENANT_READ),
        // The tenant is in use: an admin passes the policy and is told so (409).
        (
            ("delete", "/tenants/{name}"),
            e(409, 403, [403, 403, 403], [404, 404, 404]),
        ),
        (
            ("put", "/tenants/{name}"),
            e(200, 403, [403, 403, 403], [404, 404, 404]),
        ),
        (("get", "/grants"), ALL_200),
        (
            ("post", "/grants"),
            e(201, 403, [403, 403, 403], [404, 404, 404]),
        ),
        (("get", "/grants/{tenant}/{environment}"), TENANT_READ),
        (
            ("delete", "/grants/{tenant}/{environment}"),
            e(409, 403, [403, 403, 403], [404, 404, 404]),
        ),
        (
            ("put", "/grants/{tenant}/{environment}"),
            e(200, 403, [403, 403, 403], [404, 404, 404]),
        ),
        (("get", "/workflows"), ALL_200),
        (("post", "/workflows"), DEFINITION_WRITE),
        (("get", "/workflows/{tenant}/{name}"), TENANT_READ),
        (("delete", "/workflows/{tenant}/{name}"), DEFINITION_CHANGE),
        (("get", "/schedules"), ALL_200),
        (("post", "/schedules"), DEFINITION_WRITE),
        (("get", "/schedules/{tenant}/{name}"), TENANT_READ),
        (("delete", "/schedules/{tenant}/{name}"), DEFINITION_CHANGE),
        (("put", "/schedules/{tenant}/{name}"), DEFINITION_CHANGE),
        (("patch", "/schedules/{tenant}/{name}"), DEFINITION_CHANGE),
        (("get", "/runs"), ALL_200),
        (
            ("post", "/runs"),
            e(201, 201, [201, 201, 403], [404, 404, 404]),
        ),
        (("get", "/runs/{run_id}"), TENANT_READ),
        (("get", "/runs/{run_id}/logs"), TENANT_READ),
        (("get", "/runs/{run_id}/logs/follow"), TENANT_READ),
        (
            ("post", "/runs/{run_id}/kill"),
            e(200, 200, [200, 200, 403], [404, 404, 404]),
        ),
        (
            ("post", "/runs/{run_id}/rerun"),
            e(200, 200, [200, 200, 403], [404, 404, 404]),
        ),
        (
            ("post", "/runs/{run_id}/recover"),
            e(200, 200, [200, 200, 403], [404, 404, 404]),
        ),
        // Counting what a filter matches: each sees only its own runs (none: zero).
        (("post", "/runs/rerun"), ALL_200),
        (("post", "/runs/kill"), ALL_200),
        (("get", "/in-doubt"), ALL_200),
        (
            ("post", "/in-doubt/resolve"),
            e(200, 200, [200, 200, 403], [404, 404, 404]),
        ),
        (("get", "/pauses"), ALL_200),
        (
            ("post", "/pauses"),
            e(200, 200, [200, 200, 403], [404, 404, 404]),
        ),
        (
            ("post", "/pauses/resume"),
            e(200, 200, [200, 200, 403], [404, 404, 404]),
        ),
        (("get", "/backfills"), ALL_200),
        (
            ("post", "/backfills"),
            e(201, 201, [201, 201, 403], [404, 404, 404]),
        ),
        (("get", "/backfills/{id}"), TENANT_READ),
        (
            ("post", "/backfills/{id}/pause"),
            e(200, 200, [200, 200, 403], [404, 404, 404]),
        ),
        (
            ("post", "/backfills/{id}/resume"),
            e(200, 200, [200, 200, 403], [404, 404, 404]),
        ),
        (
            ("post", "/backfills/{id}/cancel"),
            e(200, 200, [200, 200, 403], [404, 404, 404]),
        ),
        (("get", "/alerts/channels"), ALL_200),
        (("post", "/alerts/channels"), DEFINITION_WRITE),
        (
            ("delete", "/alerts/channels/{tenant}/{name}"),
            DEFINITION_CHANGE,
        ),
        (("get", "/alerts/rules"), ALL_200),
        (("post", "/alerts/rules"), DEFINITION_WRITE),
        (
            ("delete", "/alerts/rules/{tenant}/{name}"),
            DEFINITION_CHANGE,
        ),
        (("get", "/alerts/deliveries"), ALL_200),
        (("get", "/alerts/deliveries/{id}"), TENANT_READ),
        (("get", "/agents"), OPERATIONS),
        (("get", "/leases"), OPERATIONS),
        (("get", "/audit"), ALL_200),
        (("get", "/users"), PRINCIPAL_LIST),
        (("post", "/users"), PRINCIPAL_CREATE),
        (
            ("get", "/users/{name}"),
            e(200, 404, [200, 404, 404], [404, 404, 404]),
        ),
        (("delete", "/users/{name}"), PRINCIPAL_CHANGE),
        (("put", "/users/{name}/password"), PRINCIPAL_CHANGE),
        (
            ("post", "/users/{name}/bindings"),
            e(201, 404, [201, 404, 404], [404, 404, 404]),
        ),
        (
            ("delete", "/users/{name}/bindings/{binding}"),
            PRINCIPAL_CHANGE,
        ),
        (("get", "/tokens"), PRINCIPAL_LIST),
        (("post", "/tokens"), PRINCIPAL_CREATE),
        (("delete", "/tokens/{name}"), PRINCIPAL_CHANGE),
        (
            ("post", "/session"),
            Expect {
                public: true,
                ..e(201, 201, [201, 201, 201], [201, 201, 201])
            },
        ),
        (("get", "/session"), ALL_200),
        // Tokens cannot sign out (400); a session can (204).
        (
            ("delete", "/session"),
            Expect {
                session: 204,
                ..e(400, 400, [400, 400, 400], [400, 400, 400])
            },
        ),
        (("get", "/plane/status"), OPERATIONS),
        (("get", "/plane/snapshot"), ADMIN_ONLY),
        // An admin passes the policy and is told the hostname is bad; a node nobody has is
        // not there.
        (
            ("post", "/plane/nodes"),
            e(400, 403, [403, 403, 403], [403, 403, 403]),
        ),
        (
            ("delete", "/plane/nodes/{hostname}"),
            e(404, 403, [403, 403, 403], [403, 403, 403]),
        ),
        (("get", "/resources/{tenant}"), RESOURCE_READ),
        (("put", "/resources/{tenant}/{key}"), RESOURCE_WRITE),
        (("get", "/resources/{tenant}/{key}"), RESOURCE_READ),
        (("delete", "/resources/{tenant}/{key}"), RESOURCE_WRITE),
        (
            ("get", "/healthz"),
            Expect {
                public: true,
                ..ALL_200
            },
        ),
        (
            ("get", "/readyz"),
            Expect {
                public: true,
                ..ALL_200
            },
        ),
        (("get", "/metrics"), OPERATIONS),
        (
            ("get", "/openapi.json"),
            Expect {
                public: true,
                ..ALL_200
            },
        ),
    ])
}

fn workflow_body(tenant: &str, name: &str) -> Value {
    json!({"tenant": tenant, "name": name, "environment": "prod",
           "definition": {"tasks": [{"name": "main", "kind": {"shell": {"script": "echo <script>"}}}]}})
}

/// A webhook channel of ads's nobody answers.
fn hook(name: &str) -> Value {
    json!({"tenant": "ads", "name": name, "type": "webhook", "url": "http://127.0.0.1:9/hook"})
}

fn alert_rule(name: &str, channel: &str) -> Value {
    json!({"tenant": "ads", "name": name, "on": ["failed"], "channels": [channel]})
}

fn schedule_body(tenant: &str, name: &str, cron: &str) -> Value {
    json!({"tenant": tenant, "name": name, "workflow": "etl", "environment": "prod",
           "spec": {"cron": cron}})
}

/// A federation of two tenants: `ads` on dc `nj` (environment `prod`), `bi` on dc `sg`
/// (environment `bi-prod`), each with a workflow `etl` and a schedule `hourly`.
async fn federation(plane: &ApiPlane) {
    plane.two_tenants().await;
}

struct Principals {
    creds: BTreeMap<Who, Cred>,
}

async fn principals(plane: &ApiPlane) -> Principals {
    let mut creds = BTreeMap::new();
    creds.insert(Admin, plane.admin.clone());
    creds.insert(Operator, plane.token("operator", &["operator"]).await);
    for (who, binding) in [
        (Owner, "owner@ads"),
        (Developer, "developer@ads"),
        (Viewer, "viewer@ads"),
        (OtherOwner, "owner@bi"),
        (OtherDeveloper, "developer@bi"),
        (OtherViewer, "viewer@bi"),
    ] {
        let name = binding.replace('@', "-");
        creds.insert(who, plane.token(&name, &[binding]).await);
    }
    plane.user("sam", &["developer@ads"], PASSWORD).await;
    plane.user("carol", &["developer@ads"], PASSWORD).await;
    creds.insert(SessionDeveloper, plane.sign_in(0, "sam", PASSWORD).await);
    creds.insert(Nobody, Cred::Nobody);
    creds.insert(
        Expired,
        plane
            .token_expiring("expired", &["developer@ads"], Some(60))
            .await,
    );
    plane.user("ghost", &["owner@ads"], PASSWORD).await;
    let ghost = plane.sign_in(0, "ghost", PASSWORD).await;
    plane.must(Method::DELETE, "/users/ghost", json!({})).await;
    creds.insert(DeletedUsersSession, ghost);
    // The expired token's hour is over.
    plane.clock.advance(chrono::Duration::seconds(120));
    Principals { creds }
}

/// A request for `route` as `who`: fresh objects made by the admin where the call would use
/// them up, so every principal meets the same situation. The object a create names is
/// returned, to check afterwards that a refused create stored nothing.
struct Call {
    path: String,
    body: Option<Value>,
    cred: Option<Cred>,
    /// (GET path as the admin, what must be missing afterwards if the call was refused).
    made: Option<String>,
}

async fn prepare(plane: &ApiPlane, method: &str, path: &str, n: usize, who: Who) -> Call {
    let fresh = |kind: &str| format!("{kind}-{n}");
    let call = |p: String, body: Option<Value>| Call {
        path: p,
        body,
        cred: None,
        made: None,
    };
    match (method, path) {
        ("post", "/dcs") => Call {
            made: Some(format!("/dcs/{}", fresh("dc"))),
            ..call(path.into(), Some(json!({"name": fresh("dc")})))
        },
        ("delete", "/dcs/{name}") => {
            plane
                .must(Method::POST, "/dcs", json!({"name": fresh("dc")}))
                .await;
            call(format!("/dcs/{}", fresh("dc")), None)
        }
        ("put", "/dcs/{name}") => {
            plane
                .must(Method::POST, "/dcs", json!({"name": fresh("dc")}))
                .await;
            call(
                format!("/dcs/{}", fresh("dc")),
                Some(json!({"name": fresh("dc"), "description": "changed"})),
            )
        }
        ("post", "/clusters") => Call {
            made: Some(format!("/clusters/{}", fresh("cl"))),
            ..call(path.into(), Some(json!({"name": fresh("cl"), "dc": "nj"})))
        },
        ("delete", "/clusters/{name}") => {
            plane
                .must(
                    Method::POST,
                    "/clusters",
                    json!({"name": fresh("cl"), "dc": "nj"}),
                )
                .await;
            call(format!("/clusters/{}", fresh("cl")), None)
        }
        ("put", "/clusters/{name}") => {
            plane
                .must(
                    Method::POST,
                    "/clusters",
                    json!({"name": fresh("cl"), "dc": "nj"}),
                )
                .await;
            call(
                format!("/clusters/{}", fresh("cl")),
                Some(json!({"name": fresh("cl"), "dc": "nj", "lease_seconds": 45})),
            )
        }
        ("post", "/environments") => Call {
            made: Some(format!("/environments/{}", fresh("env"))),
            ..call(
                path.into(),
                Some(json!({"name": fresh("env"), "cluster": "nj-main"})),
            )
        },
        ("delete", "/environments/{name}") => {
            plane
                .must(
                    Method::POST,
                    "/environments",
                    json!({"name": fresh("env"), "cluster": "nj-main"}),
                )
                .await;
            call(format!("/environments/{}", fresh("env")), None)
        }
        ("put", "/environments/{name}") => {
            plane
                .must(
                    Method::POST,
                    "/environments",
                    json!({"name": fresh("env"), "cluster": "nj-main"}),
                )
                .await;
            call(
                format!("/environments/{}", fresh("env")),
                Some(json!({"name": fresh("env"), "cluster": "nj-main", "vars": {"CHANGED": "1"}})),
            )
        }
        ("post", "/tenants") => Call {
            made: Some(format!("/tenants/{}", fresh("t"))),
            ..call(path.into(), Some(json!({"name": fresh("t")})))
        },
        ("post", "/grants") => {
            plane
                .must(
                    Method::POST,
                    "/environments",
                    json!({"name": fresh("env"), "cluster": "nj-main"}),
                )
                .await;
            Call {
                made: Some(format!("/grants/ads/{}", fresh("env"))),
                ..call(
                    path.into(),
                    Some(json!({"tenant": "ads", "environment": fresh("env")})),
                )
            }
        }
        ("post", "/workflows") => Call {
            made: Some(format!("/workflows/ads/{}", fresh("wf"))),
            ..call(path.into(), Some(workflow_body("ads", &fresh("wf"))))
        },
        ("delete", "/workflows/{tenant}/{name}") => {
            plane
                .must(
                    Method::POST,
                    "/workflows",
                    workflow_body("ads", &fresh("wf")),
                )
                .await;
            call(format!("/workflows/ads/{}", fresh("wf")), None)
        }
        ("post", "/schedules") => Call {
            made: Some(format!("/schedules/ads/{}", fresh("s"))),
            ..call(
                path.into(),
                Some(schedule_body("ads", &fresh("s"), "0 0 * * * ?")),
            )
        },
        ("delete", "/schedules/{tenant}/{name}") => {
            plane
                .must(
                    Method::POST,
                    "/schedules",
                    schedule_body("ads", &fresh("s"), "0 0 * * * ?"),
                )
                .await;
            call(format!("/schedules/ads/{}", fresh("s")), None)
        }
        ("put", "/schedules/{tenant}/{name}") => call(
            "/schedules/ads/hourly".into(),
            Some(schedule_body(
                "ads",
                "hourly",
                &format!("0 {} * * * ?", n % 60),
            )),
        ),
        ("patch", "/schedules/{tenant}/{name}") => call(
            "/schedules/ads/hourly".into(),
            Some(json!({"spec": {"cron": format!("0 {} * * * ?", (n + 7) % 60)}})),
        ),
        ("post", "/runs") => call(
            path.into(),
            Some(json!({"tenant": "ads", "workflow": "etl"})),
        ),
        ("get", "/runs/{run_id}")
        | ("get", "/runs/{run_id}/logs")
        | ("get", "/runs/{run_id}/logs/follow") => {
            let id = plane.run_now("ads").await;
            call(path.replace("{run_id}", &id), None)
        }
        ("post", "/runs/{run_id}/kill") => {
            let id = plane.run_now("ads").await;
            call(format!("/runs/{id}/kill"), None)
        }
        ("post", "/runs/{run_id}/rerun" | "/runs/{run_id}/recover") => {
            // A run of ads's killed before any agent took it: finished, so it may run again.
            let id = plane.run_now("ads").await;
            plane
                .must(Method::POST, &format!("/runs/{id}/kill"), json!({}))
                .await;
            call(path.replace("{run_id}", &id), None)
        }
        ("post", "/runs/rerun") => call(
            "/runs/rerun?tenant=ads&state=succeeded".into(),
            Some(json!({"recover": false})),
        ),
        ("post", "/runs/kill") => call("/runs/kill?tenant=ads".into(), Some(json!({}))),
        ("post", "/in-doubt/resolve") => call(
            path.into(),
            Some(json!({"tenant": "ads", "resolution": "mark_done"})),
        ),
        ("post", "/pauses") => call(
            path.into(),
            Some(
                json!({"scope": {"schedule": {"tenant": "ads", "name": "hourly"}},
                        "reason": format!("call {n}")}),
            ),
        ),
        ("post", "/pauses/resume") => {
            let scope = json!({"workflow": {"tenant": "ads", "name": "etl"}});
            plane
                .must(Method::POST, "/pauses", json!({"scope": scope.clone()}))
                .await;
            call(path.into(), Some(json!({"scope": scope, "catch_up": true})))
        }
        ("post", "/backfills") => call(path.into(), Some(backfill_body())),
        ("get" | "post", p) if p.starts_with("/backfills/{id}") => {
            // A fresh backfill of ads's for each call (nothing runs it: no agent).
            let made = plane
                .must(Method::POST, "/backfills", backfill_body())
                .await;
            let id = made["detail"]["id"].as_str().unwrap().to_owned();
            call(path.replace("{id}", &id), None)
        }
        ("post", "/alerts/channels") => call(path.into(), Some(hook(&fresh("ch")))),
        ("delete", "/alerts/channels/{tenant}/{name}") => {
            plane
                .must(Method::POST, "/alerts/channels", hook(&fresh("ch")))
                .await;
            call(format!("/alerts/channels/ads/{}", fresh("ch")), None)
        }
        ("post", "/alerts/rules") => {
            plane
                .must(Method::POST, "/alerts/channels", hook(&fresh("ch")))
                .await;
            call(path.into(), Some(alert_rule(&fresh("rule"), &fresh("ch"))))
        }
        ("delete", "/alerts/rules/{tenant}/{name}") => {
            plane
                .must(Method::POST, "/alerts/channels", hook(&fresh("ch")))
                .await;
            plane
                .must(
                    Method::POST,
                    "/alerts/rules",
                    alert_rule(&fresh("rule"), &fresh("ch")),
                )
                .await;
            call(format!("/alerts/rules/ads/{}", fresh("rule")), None)
        }
        ("get", "/alerts/deliveries/{id}") => {
            // A kill of ads's raises a delivery (its receiver is nobody: it stays pending).
            plane
                .must(Method::POST, "/alerts/channels", hook(&fresh("ch")))
                .await;
            let mut killed = alert_rule(&fresh("rule"), &fresh("ch"));
            killed["on"] = json!(["killed"]);
            plane.must(Method::POST, "/alerts/rules", killed).await;
            let id = plane.run_now("ads").await;
            plane
                .must(Method::POST, &format!("/runs/{id}/kill"), json!({}))
                .await;
            let list = plane
                .must(
                    Method::GET,
                    &format!("/alerts/deliveries?tenant=ads&rule={}", fresh("rule")),
                    json!({}),
                )
                .await;
            let delivery = list[0]["id"].as_str().expect("a delivery").to_owned();
            call(format!("/alerts/deliveries/{delivery}"), None)
        }
        ("post", "/users") => Call {
            made: Some(format!("/users/{}", fresh("u"))),
            ..call(
                path.into(),
                Some(
                    json!({"name": fresh("u"), "role": "developer", "tenant": "ads",
                            "password": PASSWORD}),
                ),
            )
        },
        ("get", "/users/{name}") => call("/users/carol".into(), None),
        ("delete", "/users/{name}")
        | ("put", "/users/{name}/password")
        | ("post", "/users/{name}/bindings")
        | ("delete", "/users/{name}/bindings/{binding}") => {
            plane.user(&fresh("u"), &["developer@ads"], PASSWORD).await;
            let p = path
                .replace("{name}", &fresh("u"))
                .replace("{binding}", "developer@ads");
            let body = match method {
                "put" => Some(json!({"password": "another long password"})),
                "post" => Some(json!({"role": "viewer", "tenant": "ads"})),
                _ => None,
            };
            call(p, body)
        }
        ("post", "/tokens") => Call {
            made: Some(fresh("tok")),
            ..call(
                path.into(),
                Some(json!({"name": fresh("tok"), "role": "viewer", "tenant": "ads"})),
            )
        },
        ("delete", "/tokens/{name}") => {
            plane.token(&fresh("tok"), &["viewer@ads"]).await;
            call(format!("/tokens/{}", fresh("tok")), None)
        }
        ("post", "/session") => call(
            path.into(),
            Some(json!({"user": "sam", "password": PASSWORD})),
        ),
        ("delete", "/session") => {
            let mut c = call(path.into(), None);
            if who == SessionDeveloper {
                // Its own session would end; sign in afresh for this call.
                c.cred = Some(plane.sign_in(0, "sam", PASSWORD).await);
            }
            c
        }
        ("post", "/plane/nodes") => call(path.into(), Some(json!({"hostname": "bad host"}))),
        ("put", "/tenants/{name}") => call(
            "/tenants/ads".into(),
            Some(json!({"name": "ads", "description": format!("changed by {who:?}")})),
        ),
        ("put", "/grants/{tenant}/{environment}") => call(
            "/grants/ads/prod".into(),
            Some(json!({"tenant": "ads", "environment": "prod", "max_concurrent_runs": 10})),
        ),
        _ => call(
            path.replace(
                "{name}",
                match path {
                    p if p.starts_with("/dcs") => "nj",
                    p if p.starts_with("/clusters") => "nj-main",
                    p if p.starts_with("/environments") => "prod",
                    p if p.starts_with("/tenants") => "ads",
                    p if p.starts_with("/workflows") => "etl",
                    _ => "hourly",
                },
            )
            .replace("{tenant}", "ads")
            .replace("{environment}", "prod")
            .replace("{hostname}", "nohost.test")
            .replace("{key}", "etl/x.sh"),
            None,
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_with_every_role() {
    let plane = ApiPlane::start(1, ManualClock::at(t0())).await;
    federation(&plane).await;
    let who = principals(&plane).await;
    let rules = rules();
    // A route without a rule, or a rule for a route the API does not have, fails here.
    let routes: Vec<(&str, &str)> = ROUTES.iter().map(|r| (r.method, r.path)).collect();
    for route in &routes {
        assert!(rules.contains_key(route), "no rule for {route:?}: add one");
    }
    for rule in rules.keys() {
        assert!(
            routes.contains(rule),
            "a rule for {rule:?}, which is no route"
        );
    }
    let mut n = 0;
    let mut wrong = Vec::new();
    let mut refused_creates = Vec::new();
    for route in ROUTES {
        let expect = rules[&(route.method, route.path)];
        for principal in EVERYONE {
            n += 1;
            let call = prepare(&plane, route.method, route.path, n, principal).await;
            let cred = call
                .cred
                .clone()
                .unwrap_or_else(|| who.creds[&principal].clone());
            let method = Method::from_bytes(route.method.to_uppercase().as_bytes()).unwrap();
            // What a replacing write's target reads before it, to check a refusal changed
            // nothing (a user's password is not readable: its own test covers it).
            let before = if (method == Method::PUT || method == Method::PATCH)
                && !call.path.ends_with("/password")
            {
                Some(plane.call(0, Method::GET, &call.path, None).await)
            } else {
                None
            };
            let reply = plane
                .call_as(&cred, 0, method.clone(), &call.path, call.body.clone())
                .await;
            let want = expect.status(principal);
            if reply.status.as_u16() != want {
                wrong.push(format!(
                    "{method} {} as {principal:?}: {} (want {want}): {}",
                    call.path, reply.status, reply.body
                ));
            }
            if !reply.status.is_success()
                && let Some(before) = before
            {
                let after = plane.call(0, Method::GET, &call.path, None).await;
                if after != before {
                    wrong.push(format!(
                        "{method} {} as {principal:?} was refused ({}) but changed it: {} → {}",
                        call.path, reply.status, before.1, after.1
                    ));
                }
            }
            if !reply.status.is_success()
                && let Some(made) = call.made
            {
                refused_creates.push((route.path, made));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    eprintln!("{n} calls, every one answered as the policy says");

    // A refused create stored nothing.
    let (_, tokens) = plane.call(0, Method::GET, "/tokens", None).await;
    assert!(!refused_creates.is_empty());
    for (route, made) in refused_creates {
        if route == "/tokens" {
            assert!(
                !tokens.to_string().contains(&format!("\"{made}\"")),
                "token {made} was stored"
            );
        } else {
            let (status, body) = plane.call(0, Method::GET, &made, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{made} was stored: {body}");
        }
    }
    // Refused writes are in the audit trail, naming who was refused.
    let refused = wait_for_audit(
        &plane,
        "/audit?outcome=refused&actor=token:viewer-ads&limit=1000",
        |entries| entries.iter().any(|e| e["op"] == "apply_workflow"),
    )
    .await;
    assert!(
        refused
            .iter()
            .all(|e| e["actor"] == "token:viewer-ads" && e["outcome"] == "refused")
    );
    plane.cluster.shutdown().await;
}

/// Refusals are recorded in the background: waits (bounded) until the audit shows what `done`
/// wants.
async fn wait_for_audit(
    plane: &ApiPlane,
    path: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = plane.call(0, Method::GET, path, None).await;
        let entries = body.as_array().cloned().unwrap_or_default();
        if done(&entries) {
            return entries;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the audit trail never showed it: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_gets_more_than_they_hold() {
    let plane = ApiPlane::start(1, ManualClock::at(t0())).await;
    federation(&plane).await;
    let owner = plane.token("owner-ads", &["owner@ads"]).await;
    let dev = plane.token("dev-ads", &["developer@ads"]).await;
    let viewer = plane.token("viewer-ads", &["viewer@ads"]).await;
    let (_, before) = plane
        .call(0, Method::GET, "/audit?outcome=applied&limit=1000", None)
        .await;
    let attempts: Vec<(&Cred, Method, String, Value, u16, &str)> = vec![
        // A tenant token minting an admin token, or one for another tenant.
        (
            &owner,
            Method::POST,
            "/tokens".into(),
            json!({"name": "root", "role": "admin"}),
            403,
            "needs admin",
        ),
        (
            &owner,
            Method::POST,
            "/tokens".into(),
            json!({"name": "spy", "role": "viewer", "tenant": "bi"}),
            404,
            "tenant `bi` does not exist",
        ),
        (
            &owner,
            Method::POST,
            "/tokens".into(),
            json!({"name": "op", "role": "operator"}),
            403,
            "needs admin",
        ),
        // A developer cannot mint tokens at all, not even for its own tenant.
        (
            &dev,
            Method::POST,
            "/tokens".into(),
            json!({"name": "ci", "role": "viewer", "tenant": "ads"}),
            403,
            "owner of tenant `ads`",
        ),
        // An owner making a user an admin.
        (
            &owner,
            Method::POST,
            "/users".into(),
            json!({"name": "eve", "role": "admin", "password": PASSWORD}),
            403,
            "needs admin",
        ),
        // A developer's schedule on an environment its tenant was not granted.
        (
            &dev,
            Method::POST,
            "/schedules".into(),
            json!({"tenant": "ads", "name": "sneaky", "workflow": "etl", "environment": "bi-prod",
                   "spec": {"cron": "0 0 * * * ?"}}),
            422,
            "not granted to tenant `ads`",
        ),
        // A viewer's kill (whether or not the run exists: a viewer kills nothing).
        (
            &viewer,
            Method::POST,
            "/runs/ads.hourly@20261129T120000Z/kill".into(),
            json!(null),
            403,
            "needs operator, owner or developer of tenant `ads`",
        ),
        // A token written the old way: a tenant without a role.
        (
            &owner,
            Method::POST,
            "/tokens".into(),
            json!({"name": "ci", "tenant": "ads"}),
            400,
            "`tenant` needs a `role`",
        ),
    ];
    for (cred, method, path, body, status, needle) in attempts {
        let body = (!body.is_null()).then_some(body);
        let r = plane
            .call_as(cred, 0, method.clone(), &path, body.clone())
            .await;
        assert_eq!(
            r.status.as_u16(),
            status,
            "{method} {path} {body:?}: {}",
            r.body
        );
        let error = r.body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(needle),
            "{method} {path}: `{error}` lacks `{needle}`"
        );
    }
    // An owner, signed in, giving itself admin (or operator): refused, and it stays an owner.
    plane.user("olga", &["owner@ads"], PASSWORD).await;
    let olga = plane.sign_in(0, "olga", PASSWORD).await;
    for role in ["admin", "operator"] {
        let r = plane
            .call_as(
                &olga,
                0,
                Method::POST,
                "/users/olga/bindings",
                Some(json!({"role": role})),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        assert!(
            r.body["error"]
                .as_str()
                .unwrap()
                .contains("user:olga may not"),
            "{}",
            r.body
        );
    }
    let r = plane.call_as(&olga, 0, Method::GET, "/session", None).await;
    assert_eq!(
        r.body["bindings"],
        json!([{"role": "owner", "tenant": "ads"}])
    );
    // A viewer's kill of a run that exists: refused, and the run goes on.
    let id = plane
        .must(
            Method::POST,
            "/runs",
            json!({"tenant": "ads", "workflow": "etl"}),
        )
        .await["detail"]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = plane
        .call_as(&viewer, 0, Method::POST, &format!("/runs/{id}/kill"), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let (_, run) = plane
        .call(0, Method::GET, &format!("/runs/{id}"), None)
        .await;
    assert_eq!(run["state"], "requested");
    // Nothing above was stored: the applied entries are the admin's user and run request and
    // the owner's sign-in only.
    let (_, after) = plane
        .call(0, Method::GET, "/audit?outcome=applied&limit=1000", None)
        .await;
    let new: Vec<&Value> = after
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !before.as_array().unwrap().contains(e))
        .collect();
    let ops: Vec<&str> = new.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["request_run", "sign_in", "create_user"], "{new:?}");
    // What an owner may hand out, it can: a developer token of its tenant, which then works
    // there and nowhere else.
    let r = plane
        .call_as(&owner, 0, Method::POST, "/tokens",
            Some(json!({"name": "ci-ads", "role": "developer", "tenant": "ads", "expires_in_seconds": 3600})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let ci = Cred::Token(r.body["token"].as_str().unwrap().to_owned());
    let r = plane
        .call_as(
            &ci,
            0,
            Method::POST,
            "/workflows",
            Some(workflow_body("ads", "by-ci")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = plane
        .call_as(&ci, 0, Method::GET, "/workflows/bi/etl", None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    // It expires.
    plane.clock.advance(chrono::Duration::seconds(3601));
    let r = plane.call_as(&ci, 0, Method::GET, "/workflows", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("token `ci-ads` expired"),
        "{}",
        r.body
    );
    plane.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_show_a_tenants_members_only_their_tenant() {
    let plane = ApiPlane::start(1, ManualClock::at(t0())).await;
    federation(&plane).await;
    plane
        .must(
            Method::POST,
            "/runs",
            json!({"tenant": "ads", "workflow": "etl"}),
        )
        .await;
    plane
        .must(
            Method::POST,
            "/runs",
            json!({"tenant": "bi", "workflow": "etl"}),
        )
        .await;
    let viewer = plane.token("viewer-ads", &["viewer@ads"]).await;
    let names = |v: &Value, key: &str| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| i[key].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let get = async |path: &str| {
        plane
            .call_as(&viewer, 0, Method::GET, path, None)
            .await
            .body
    };
    // The environment picker: only what was granted to the tenant.
    assert_eq!(names(&get("/environments").await, "name"), ["prod"]);
    assert_eq!(names(&get("/clusters").await, "name"), ["nj-main"]);
    assert_eq!(names(&get("/dcs").await, "name"), ["nj"]);
    assert_eq!(names(&get("/tenants").await, "name"), ["ads"]);
    assert_eq!(names(&get("/grants").await, "tenant"), ["ads"]);
    assert_eq!(names(&get("/schedules").await, "tenant"), ["ads"]);
    assert_eq!(names(&get("/workflows").await, "tenant"), ["ads"]);
    assert_eq!(names(&get("/runs").await, "tenant"), ["ads"]);
    // Asking for another tenant's explicitly gives nothing either.
    assert!(get("/runs?tenant=bi").await.as_array().unwrap().is_empty());
    assert!(
        get("/schedules?tenant=bi")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    // The audit trail: only entries about ads.
    let audit = get("/audit?limit=1000").await;
    assert!(!audit.as_array().unwrap().is_empty());
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["tenant"] == "ads"),
        "{audit}"
    );
    // An admin sees both data centers' runs.
    let (_, all) = plane.call(0, Method::GET, "/runs", None).await;
    let mut tenants = names(&all, "tenant");
    tenants.sort();
    assert_eq!(tenants, ["ads", "bi"]);
    // An owner lists the users with a role in its tenant, and only those roles of theirs.
    plane
        .user("alice", &["developer@ads", "viewer@bi"], PASSWORD)
        .await;
    plane.user("bob", &["viewer@bi"], PASSWORD).await;
    let owner = plane.token("owner-ads", &["owner@ads"]).await;
    let users = plane
        .call_as(&owner, 0, Method::GET, "/users", None)
        .await
        .body;
    assert_eq!(
        users
            .as_array()
            .unwrap()
            .iter()
            .map(|u| (u["name"].clone(), u["bindings"].clone()))
            .collect::<Vec<_>>(),
        vec![(
            json!("alice"),
            json!([{"role": "developer", "tenant": "ads"}])
        )]
    );
    plane.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_cookies_csrf_and_failed_sign_ins() {
    let clock = ManualClock::at(t0());
    let plane = ApiPlane::start(1, clock.clone()).await;
    federation(&plane).await;
    plane.user("alice", &["developer@ads"], PASSWORD).await;
    // Wrong password and unknown user get the same answer.
    for (user, password) in [("alice", "not the password"), ("nobody", PASSWORD)] {
        let r = plane
            .call_as(
                &Cred::Nobody,
                0,
                Method::POST,
                "/session",
                Some(json!({"user": user, "password": password})),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.body["error"], "wrong user or password");
        assert!(cookie_value(&r.headers).is_none());
    }
    // Signed in: an HttpOnly, SameSite=Strict cookie (not Secure: this API is plain HTTP).
    let r = plane
        .call_as(
            &Cred::Nobody,
            0,
            Method::POST,
            "/session",
            Some(json!({"user": "alice", "password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let set = r
        .headers
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains("Secure"),
        "{set}"
    );
    let cookie = cookie_value(&r.headers).unwrap();
    let csrf = r.body["csrf_token"].as_str().unwrap().to_owned();
    let session = Cred::Session {
        cookie: cookie.clone(),
        csrf: csrf.clone(),
    };
    let r = plane
        .call_as(&session, 0, Method::GET, "/session", None)
        .await;
    assert_eq!(
        (r.body["kind"].clone(), r.body["name"].clone()),
        (json!("user"), json!("alice"))
    );
    // A write with the cookie but without the CSRF token is refused and stores nothing.
    let forged = Cred::SessionWithoutCsrf {
        cookie: cookie.clone(),
    };
    let r = plane
        .call_as(
            &forged,
            0,
            Method::POST,
            "/workflows",
            Some(workflow_body("ads", "forged")),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.body["error"].as_str().unwrap().contains("CSRF"),
        "{}",
        r.body
    );
    let wrong_csrf = Cred::Session {
        cookie: cookie.clone(),
        csrf: "0".repeat(64),
    };
    let r = plane
        .call_as(
            &wrong_csrf,
            0,
            Method::POST,
            "/workflows",
            Some(workflow_body("ads", "forged")),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let (status, _) = plane
        .call(0, Method::GET, "/workflows/ads/forged", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // With it, the write is made, and the audit trail names the user.
    let r = plane
        .call_as(
            &session,
            0,
            Method::POST,
            "/workflows",
            Some(workflow_body("ads", "mine")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let (_, audit) = plane
        .call(0, Method::GET, "/audit?limit=1&outcome=applied", None)
        .await;
    assert_eq!(audit[0]["actor"], "user:alice");
    // Signed out: the same cookie is refused from then on (a replay), on its own and with CSRF.
    let r = plane
        .call_as(&session, 0, Method::DELETE, "/session", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert!(
        r.headers
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let r = plane
        .call_as(&session, 0, Method::GET, "/workflows", None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = plane
        .call_as(
            &session,
            0,
            Method::POST,
            "/workflows",
            Some(workflow_body("ads", "replayed")),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A session ends at its expiry.
    let s = plane.sign_in(0, "alice", PASSWORD).await;
    clock.advance(chrono::Duration::hours(12));
    let r = plane.call_as(&s, 0, Method::GET, "/session", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A password change ends the user's sessions; changing one's own needs the current one.
    let s = plane.sign_in(0, "alice", PASSWORD).await;
    let r = plane
        .call_as(
            &s,
            0,
            Method::PUT,
            "/users/alice/password",
            Some(json!({"password": "a brand new password"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = plane
        .call_as(
            &s,
            0,
            Method::PUT,
            "/users/alice/password",
            Some(
                json!({"password": "a brand new password", "current_password": "wrong guess here"}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = plane
        .call_as(
            &s,
            0,
            Method::PUT,
            "/users/alice/password",
            Some(json!({"password": "a brand new password", "current_password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = plane.call_as(&s, 0, Method::GET, "/session", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let s = plane.sign_in(0, "alice", "a brand new password").await;
    // Deleting the user ends its sessions.
    plane.must(Method::DELETE, "/users/alice", json!({})).await;
    let r = plane.call_as(&s, 0, Method::GET, "/session", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Failed sign-ins: five for one user lock it (whatever the password), and are audited.
    plane.user("carol", &["viewer@ads"], PASSWORD).await;
    for _ in 0..5 {
        let r = plane
            .call_as(
                &Cred::Nobody,
                0,
                Method::POST,
                "/session",
                Some(json!({"user": "carol", "password": "guess guess guess"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = plane
        .call_as(
            &Cred::Nobody,
            0,
            Method::POST,
            "/session",
            Some(json!({"user": "carol", "password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(r.headers.get("retry-after").is_some());
    let audit = wait_for_audit(
        &plane,
        "/audit?actor=user:carol&outcome=refused&limit=100",
        |e| e.len() >= 6,
    )
    .await;
    assert!(audit.iter().all(|e| e["op"] == "sign_in"), "{audit:?}");
    assert!(audit.iter().any(|e| {
        e["message"]
            .as_str()
            .unwrap()
            .contains("too many failed sign-ins")
    }));
    // The lock ends.
    clock.advance(chrono::Duration::minutes(15));
    plane.sign_in(0, "carol", PASSWORD).await;

    // Sent all at once, guesses are still counted one by one: at most five get an answer.
    plane.user("dora", &["viewer@ads"], PASSWORD).await;
    let guesses = (0..10).map(|_| {
        plane.call_as(
            &Cred::Nobody,
            0,
            Method::POST,
            "/session",
            Some(json!({"user": "dora", "password": "guess guess guess"})),
        )
    });
    let answers = futures_join_all(guesses).await;
    let tried = answers
        .iter()
        .filter(|r| r.status == StatusCode::UNAUTHORIZED)
        .count();
    let limited = answers
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((tried, limited), (5, 5));
    // A name that is no user name is recorded as such, not copied into the log.
    let long = "x".repeat(10_000);
    let r = plane
        .call_as(
            &Cred::Nobody,
            0,
            Method::POST,
            "/session",
            Some(json!({"user": long, "password": "guess guess guess"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let audit = wait_for_audit(
        &plane,
        "/audit?actor=user:(not a user name)&limit=10",
        |e| !e.is_empty(),
    )
    .await;
    assert!(
        !serde_json::to_string(&audit)
            .unwrap()
            .contains(&"x".repeat(100))
    );
    // Guessing one's own password through a password change is a sign-in guess too.
    clock.advance(chrono::Duration::minutes(15));
    plane.user("erin", &["viewer@ads"], PASSWORD).await;
    let erin = plane.sign_in(0, "erin", PASSWORD).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = plane
            .call_as(&erin, 0, Method::PUT, "/users/erin/password",
                Some(json!({"password": "a brand new password", "current_password": "guess guess guess"})))
            .await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [403, 403, 403, 403, 403, 429]);
    wait_for_audit(
        &plane,
        "/audit?actor=user:erin&outcome=refused&limit=10",
        |e| e.iter().filter(|e| e["op"] == "set_password").count() >= 6,
    )
    .await;
    plane.cluster.shutdown().await;
}

/// Runs the futures together and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let futures: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs = Vec::new();
    let mut pending: Vec<_> = futures.into_iter().map(Some).collect();
    // Poll them all concurrently, in one task: a join, without a crate for it.
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for slot in pending.iter_mut() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(out) => {
                        outputs.push(out);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_text_and_bodies_have_a_limit() {
    let plane = ApiPlane::start(1, ManualClock::at(t0())).await;
    federation(&plane).await;
    // The OpenAPI document: no credential needed, and every route says who may call it.
    let r = plane
        .call_as(&Cred::Nobody, 0, Method::GET, "/openapi.json", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    for route in ROUTES {
        let op = &r.body["paths"][format!("/api/v1{}", route.path)][route.method];
        assert!(
            op["x-meridian-access"]
                .as_str()
                .is_some_and(|a| !a.is_empty()),
            "{} {}: {op}",
            route.method,
            route.path
        );
    }
    assert_eq!(
        r.body["paths"]["/api/v1/session"]["post"]["security"],
        json!([])
    );
    // A body over the limit: 413, saying the limit. (Last: the server closes the connection
    // it did not read the whole body of, and the client's pool may hand that one out next.)
    let big = "x".repeat(3 * 1024 * 1024);
    let (status, reply) = plane
        .call(
            0,
            Method::POST,
            "/workflows",
            Some(json!({"tenant": "ads", "name": "big",
            "definition": {"tasks": [{"name": "main", "kind": {"shell": {"script": big}}}]}})),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("2097152 bytes"),
        "{reply}"
    );
    plane.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_the_leader_holds_on_every_node_and_at_apply() {
    let plane = ApiPlane::start(3, ManualClock::at(t0())).await;
    federation(&plane).await;
    plane.user("alice", &["developer@ads"], PASSWORD).await;
    plane.converged().await;
    let leader = plane.cluster.leader().await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    // Signed in through a follower; works on every node.
    let alice = plane.sign_in(followers[0], "alice", PASSWORD).await;
    for node in 0..3 {
        let r = plane
            .call_as(&alice, node, Method::GET, "/workflows/ads/etl", None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "node {node}: {}", r.body);
    }
    // Revoked on the leader; a follower enforces it on the very next (linearizable) read.
    let r = plane
        .call_as(
            &plane.admin,
            leader,
            Method::DELETE,
            "/users/alice/bindings/developer@ads",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for node in followers.iter().copied().chain([leader]) {
        let r = plane
            .call_as(&alice, node, Method::GET, "/workflows/ads/etl", None)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "node {node}: {}", r.body);
    }
    // A write that passed the check before the revocation is refused when applied: the
    // proposal a node made for alice while she still held the role.
    let Cred::Session { cookie, .. } = &alice else {
        unreachable!()
    };
    let session = meridian_plane::api::token::hash(cookie);
    let proposal = Proposal::by(
        Author::Session {
            user: Name::new("alice").unwrap(),
            session,
        },
        t0().timestamp_millis(),
        Command::ApplyWorkflow(Workflow {
            tenant: Name::new("ads").unwrap(),
            name: Name::new("raced").unwrap(),
            environment: None,
            definition: WorkflowDefinition::shell("main", "true"),
        }),
    );
    let outcome = plane
        .cluster
        .node(followers[1])
        .write(proposal, Duration::from_secs(10))
        .await
        .unwrap();
    let Outcome::Refused(rejection) = outcome else {
        panic!("the raced write was applied: {outcome:?}");
    };
    assert!(
        rejection.message.contains("tenant `ads` does not exist"),
        "{}",
        rejection.message
    );
    let (status, _) = plane
        .call(leader, Method::GET, "/workflows/ads/raced", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Deleting a token on the leader: refused everywhere at once.
    let ci = plane.token("ci", &["developer@ads"]).await;
    plane.converged().await;
    let r = plane
        .call_as(&plane.admin, leader, Method::DELETE, "/tokens/ci", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    for node in followers {
        let r = plane
            .call_as(&ci, node, Method::GET, "/workflows", None)
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "node {node}: {}",
            r.body
        );
    }
    plane.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_exists_elsewhere_is_not_told() {
    let plane = ApiPlane::start(1, ManualClock::at(t0())).await;
    federation(&plane).await;
    // An environment both tenants are granted, mapping each to its own OS user.
    plane
        .must(
            Method::POST,
            "/environments",
            json!({"name": "shared", "cluster": "nj-main",
                   "run_as": {"tenants": {"ads": {"user": "ads-etl"}, "bi": {"user": "bi-secret"}}}}),
        )
        .await;
    for tenant in ["ads", "bi"] {
        plane
            .must(
                Method::POST,
                "/grants",
                json!({"tenant": tenant, "environment": "shared"}),
            )
            .await;
    }
    plane.user("bob", &["viewer@bi"], PASSWORD).await;
    let owner = plane.token("owner-ads", &["owner@ads"]).await;
    let dev = plane.token("dev-ads", &["developer@ads"]).await;
    let viewer = plane.token("viewer-ads", &["viewer@ads"]).await;
    let operator = plane.token("operator", &["operator"]).await;

    // A member sees the shared environment, and only its own tenant's OS user in it.
    let r = plane
        .call_as(&viewer, 0, Method::GET, "/environments/shared", None)
        .await;
    assert_eq!(
        r.body["run_as"]["tenants"],
        json!({"ads": {"user": "ads-etl", "group": null}}),
        "{}",
        r.body
    );
    let r = plane
        .call_as(&viewer, 0, Method::GET, "/environments", None)
        .await;
    assert!(!r.body.to_string().contains("bi-secret"), "{}", r.body);
    let (_, all) = plane
        .call(0, Method::GET, "/environments/shared", None)
        .await;
    assert_eq!(all["run_as"]["tenants"]["bi"]["user"], "bi-secret");

    // Users another tenant's and users nobody has read the same: not there.
    for (cred, method, path, body) in [
        (
            &dev,
            Method::POST,
            "/users/bob/bindings",
            Some(json!({"role": "viewer", "tenant": "ads"})),
        ),
        (
            &dev,
            Method::POST,
            "/users/nobody/bindings",
            Some(json!({"role": "viewer", "tenant": "ads"})),
        ),
        (&owner, Method::DELETE, "/users/bob", None),
        (&owner, Method::DELETE, "/users/nobody", None),
        (&owner, Method::PUT, "/users/bob/password", Some(json!({}))),
        (
            &owner,
            Method::PUT,
            "/users/nobody/password",
            Some(json!({})),
        ),
        (&owner, Method::DELETE, "/tokens/nothing-here", None),
    ] {
        let r = plane.call_as(cred, 0, method.clone(), path, body).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            r.body
        );
        let name = path.split('/').nth(2).unwrap();
        assert!(
            r.body["error"]
                .as_str()
                .unwrap()
                .ends_with(&format!("`{name}` does not exist")),
            "{method} {path}: {}",
            r.body
        );
    }
    // A user or token with no role is an admin's to make: anyone else's attempt is refused
    // (a viewer, an operator, an owner) and stores nothing.
    for cred in [&viewer, &operator, &owner] {
        let r = plane
            .call_as(
                cred,
                0,
                Method::POST,
                "/users",
                Some(json!({"name": "squatter", "password": PASSWORD})),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    }
    let (status, _) = plane.call(0, Method::GET, "/users/squatter", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // An environment the tenant was not granted, existing or not: the same answer.
    let mut answers = Vec::new();
    for env in ["bi-prod", "no-such-env"] {
        let r = plane
            .call_as(
                &dev,
                0,
                Method::POST,
                "/schedules",
                Some(
                    json!({"tenant": "ads", "name": "s", "workflow": "etl", "environment": env,
                            "spec": {"cron": "0 0 * * * ?"}}),
                ),
            )
            .await;
        answers.push((
            r.status,
            r.body["error"].as_str().unwrap().replace(env, "ENV"),
        ));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].0, StatusCode::UNPROCESSABLE_ENTITY);
    plane.cluster.shutdown().await;
}

/// Alerts: the federation's channels and rules (`_`) are admins' to write and operators' to
/// read; a tenant's are its members' only, in every list (channels, rules, deliveries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_federations_alerts_are_admins_and_a_tenants_its_own() {
    let plane = ApiPlane::start(1, ManualClock::at(t0())).await;
    federation(&plane).await;
    let operator = plane.token("operator", &["operator"]).await;
    let owner_ads = plane.token("owner-ads", &["owner@ads"]).await;
    let owner_bi = plane.token("owner-bi", &["owner@bi"]).await;
    let admins = json!({"name": "pager", "type": "webhook", "url": "http://127.0.0.1:9/p"});
    // The federation's: an owner or an operator may not make one; an admin may.
    for who in [&owner_ads, &operator] {
        let made = plane
            .call_as(
                who,
                0,
                Method::POST,
                "/alerts/channels",
                Some(admins.clone()),
            )
            .await;
        assert_eq!(made.status, StatusCode::FORBIDDEN, "{:?}", made.body);
    }
    plane.must(Method::POST, "/alerts/channels", admins).await;
    let machines = json!({"name": "machines", "on": ["agent_lost"], "channels": ["pager"]});
    let made = plane
        .call_as(
            &owner_ads,
            0,
            Method::POST,
            "/alerts/rules",
            Some(machines.clone()),
        )
        .await;
    assert_eq!(made.status, StatusCode::FORBIDDEN, "{:?}", made.body);
    plane.must(Method::POST, "/alerts/rules", machines).await;
    // ads's, with a rule on kills, and a kill: one delivery of ads's.
    plane
        .must(Method::POST, "/alerts/channels", hook("ops"))
        .await;
    let mut kills = alert_rule("kills", "ops");
    kills["on"] = json!(["killed"]);
    plane.must(Method::POST, "/alerts/rules", kills).await;
    let run = plane.run_now("ads").await;
    plane
        .must(Method::POST, &format!("/runs/{run}/kill"), json!({}))
        .await;
    let list = async |who: &Cred, path: &str| -> Vec<String> {
        let got = plane.call_as(who, 0, Method::GET, path, None).await;
        assert_eq!(got.status, StatusCode::OK, "{path}: {:?}", got.body);
        got.body
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                format!(
                    "{}/{}",
                    i["tenant"].as_str().unwrap_or("_"),
                    i["name"].as_str().or(i["rule"].as_str()).unwrap()
                )
            })
            .collect()
    };
    // The operator reads both; each owner only its own, whatever it asks for.
    assert_eq!(
        list(&operator, "/alerts/channels").await,
        ["_/pager", "ads/ops"]
    );
    assert_eq!(
        list(&operator, "/alerts/rules").await,
        ["_/machines", "ads/kills"]
    );
    assert_eq!(list(&owner_ads, "/alerts/channels").await, ["ads/ops"]);
    assert_eq!(list(&owner_ads, "/alerts/rules").await, ["ads/kills"]);
    assert!(list(&owner_bi, "/alerts/channels").await.is_empty());
    assert!(list(&owner_bi, "/alerts/rules?tenant=ads").await.is_empty());
    assert!(
        list(&owner_bi, "/alerts/channels?tenant=_")
            .await
            .is_empty()
    );
    assert_eq!(list(&owner_ads, "/alerts/deliveries").await, ["ads/kills"]);
    assert!(list(&owner_bi, "/alerts/deliveries").await.is_empty());
    assert!(
        list(&owner_bi, "/alerts/deliveries?tenant=ads")
            .await
            .is_empty()
    );
    let id = plane
        .call(0, Method::GET, "/alerts/deliveries?tenant=ads", None)
        .await
        .1[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = plane
        .call_as(
            &owner_bi,
            0,
            Method::GET,
            &format!("/alerts/deliveries/{id}"),
            None,
        )
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{:?}", other.body);
    // Deleting the federation's: not an operator's; ads's: not bi's (as if absent).
    let gone = plane
        .call_as(
            &operator,
            0,
            Method::DELETE,
            "/alerts/rules/_/machines",
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::FORBIDDEN, "{:?}", gone.body);
    let gone = plane
        .call_as(
            &owner_bi,
            0,
            Method::DELETE,
            "/alerts/rules/ads/kills",
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{:?}", gone.body);
    plane.cluster.shutdown().await;
}
