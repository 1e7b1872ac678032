//! The REST API and web UI served by every node of an in-process plane ([`Cluster`]), on one injected
//! clock, and a client that calls it as any principal: a token, a signed-in session (cookie and
//! CSRF token), or nobody.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_domain::{ManualClock, SystemClock};
use meridian_plane::api::Api;
use meridian_plane::api::session::SessionSettings;
use meridian_plane::raft::node::PlaneNode;
use meridian_plane::server;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::cluster::Cluster;

/// How a request authenticates.
#[derive(Debug, Clone)]
pub enum Cred {
    Token(String),
    /// A session: the cookie's value and the CSRF token writes carry.
    Session {
        cookie: String,
        csrf: String,
    },
    /// Also a session's cookie, but writes leave the CSRF token out.
    SessionWithoutCsrf {
        cookie: String,
    },
    Nobody,
}

pub struct ApiPlane {
    pub cluster: Cluster,
    /// Base URL of each node's API (`…/api/v1`).
    pub urls: Vec<String>,
    /// Base URL of each node (its web UI at `/`).
    pub roots: Vec<String>,
    /// The admin token.
    pub admin: Cred,
    pub http: reqwest::Client,
    pub clock: ManualClock,
}

/// A reply: its status, headers and JSON body (or the text, as a JSON string).
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

async fn serve(
    node: Arc<PlaneNode>,
    clock: ManualClock,
    bucket: Option<&meridian_bucket::BucketConfig>,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = server::app(Api::new(
        node,
        Arc::new(clock),
        Duration::from_secs(10),
        bucket.map(|b| meridian_bucket::Bucket::new(b).unwrap()),
        SessionSettings::default(),
    ));
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    url
}

impl ApiPlane {
    /// `n` plane nodes, each serving the API, with the admin token bootstrapped.
    pub async fn start(n: usize, clock: ManualClock) -> Self {
        Self::start_with_bucket(n, clock, None).await
    }

    /// The same, with the resource center on `bucket`.
    pub async fn start_with_bucket(
        n: usize,
        clock: ManualClock,
        bucket: Option<meridian_bucket::BucketConfig>,
    ) -> Self {
        let cluster = Cluster::start(n).await;
        let dir = cluster.dir.path().to_owned();
        let boot = server::bootstrap(cluster.node(0), &dir, &SystemClock)
            .await
            .unwrap();
        let token = boot.admin_token.expect("a fresh plane gets an admin token");
        let mut roots = Vec::new();
        for i in 0..n {
            roots.push(serve(cluster.shared(i), clock.clone(), bucket.as_ref()).await);
        }
        let urls = roots.iter().map(|r| format!("{r}/api/v1")).collect();
        // Authentication reads each node's own copy: let the token reach every node.
        cluster.wait_converged().await;
        Self {
            cluster,
            urls,
            roots,
            admin: Cred::Token(token),
            http: reqwest::Client::new(),
            clock,
        }
    }

    /// Agent `agent` of `cluster` heartbeating to node 0 now (by the plane's clock): connected,
    /// and holding whatever partitions the plane leases it.
    pub async fn heartbeat(&self, agent: &str, cluster: &str, free_slots: u32) {
        let api = Api::new(
            self.cluster.shared(0),
            Arc::new(self.clock.clone()),
            Duration::from_secs(10),
            None,
            SessionSettings::default(),
        );
        let beat = meridian_plane::model::Heartbeat {
            agent: agent.into(),
            cluster: meridian_plane::model::Name::new(cluster).unwrap(),
            free_slots,
            releasing: false,
            released: vec![],
            heartbeat_ms: 0,
            relinquished: vec![],
            usage: vec![],
            load: None,
        };
        api.propose_as_plane(
            "test-agent",
            meridian_plane::model::Command::AgentHeartbeat(beat),
        )
        .await
        .unwrap_or_else(|e| panic!("heartbeat of {agent}: {}", e.message));
    }

    /// Calls node `node` as `cred`.
    pub async fn call_as(
        &self,
        cred: &Cred,
        node: usize,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.urls[node]));
        req = match cred {
            Cred::Token(t) => req.bearer_auth(t),
            Cred::Session { cookie, csrf } => req
                .header("cookie", format!("meridian_session={cookie}"))
                .header("x-csrf-token", csrf),
            Cred::SessionWithoutCsrf { cookie } => {
                req.header("cookie", format!("meridian_session={cookie}"))
            }
            Cred::Nobody => req,
        };
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        Reply {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    /// Calls as the admin; returns status and body.
    pub async fn call(
        &self,
        node: usize,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let r = self.call_as(&self.admin, node, method, path, body).await;
        (r.status, r.body)
    }

    /// As the admin, a write that must succeed.
    pub async fn must(&self, method: Method, path: &str, body: Value) -> Value {
        let (status, reply) = self.call(0, method.clone(), path, Some(body)).await;
        assert!(
            status.is_success(),
            "{method} {path} as admin: {status} {reply}"
        );
        reply
    }

    /// A token holding `bindings` (`["developer@ads"]`), created by the admin.
    pub async fn token(&self, name: &str, bindings: &[&str]) -> Cred {
        self.token_expiring(name, bindings, None).await
    }

    pub async fn token_expiring(
        &self,
        name: &str,
        bindings: &[&str],
        expires_in_seconds: Option<u64>,
    ) -> Cred {
        let reply = self
            .must(
                Method::POST,
                "/tokens",
                json!({"name": name, "bindings": bindings_json(bindings),
                       "expires_in_seconds": expires_in_seconds}),
            )
            .await;
        Cred::Token(reply["token"].as_str().unwrap().to_owned())
    }

    /// A user holding `bindings`, with `password`, created by the admin.
    pub async fn user(&self, name: &str, bindings: &[&str], password: &str) {
        self.must(
            Method::POST,
            "/users",
            json!({"name": name, "bindings": bindings_json(bindings), "password": password}),
        )
        .await;
    }

    /// Signs `user` in through node `node`; the session's credential.
    pub async fn sign_in(&self, node: usize, user: &str, password: &str) -> Cred {
        let r = self
            .call_as(
                &Cred::Nobody,
                node,
                Method::POST,
                "/session",
                Some(json!({"user": user, "password": password})),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "signing in {user}: {}",
            r.body
        );
        let cookie = cookie_value(&r.headers).expect("a session cookie");
        Cred::Session {
            cookie,
            csrf: r.body["csrf_token"].as_str().unwrap().to_owned(),
        }
    }

    /// Two tenants on two data centers: `ads` on dc `nj` (cluster `nj-main`, environment
    /// `prod`), `bi` on dc `sg` (`sg-main`, `bi-prod`), each with a workflow `etl` and an hourly
    /// schedule `hourly`.
    pub async fn two_tenants(&self) {
        for (path, body) in [
            ("/dcs", json!({"name": "nj"})),
            ("/dcs", json!({"name": "sg"})),
            ("/clusters", json!({"name": "nj-main", "dc": "nj"})),
            ("/clusters", json!({"name": "sg-main", "dc": "sg"})),
            (
                "/environments",
                json!({"name": "prod", "cluster": "nj-main"}),
            ),
            (
                "/environments",
                json!({"name": "bi-prod", "cluster": "sg-main"}),
            ),
            ("/tenants", json!({"name": "ads"})),
            ("/tenants", json!({"name": "bi"})),
            ("/grants", json!({"tenant": "ads", "environment": "prod"})),
            ("/grants", json!({"tenant": "bi", "environment": "bi-prod"})),
            (
                "/workflows",
                json!({"tenant": "ads", "name": "etl", "environment": "prod",
                       "definition": {"tasks": [{"name": "main",
                                                 "kind": {"shell": {"script": "echo <script>"}}}]}}),
            ),
            (
                "/workflows",
                json!({"tenant": "bi", "name": "etl", "environment": "bi-prod",
                       "definition": {"tasks": [{"name": "main", "kind": {"noop": {}}}]}}),
            ),
            (
                "/schedules",
                json!({"tenant": "ads", "name": "hourly", "workflow": "etl",
                       "environment": "prod", "spec": {"cron": "0 0 * * * ?"}}),
            ),
            (
                "/schedules",
                json!({"tenant": "bi", "name": "hourly", "workflow": "etl",
                       "environment": "bi-prod", "spec": {"cron": "0 0 * * * ?"}}),
            ),
        ] {
            self.must(Method::POST, path, body).await;
        }
    }

    /// A run of `tenant`'s `etl` asked for now (no agent takes it: it stays `requested`); its id.
    pub async fn run_now(&self, tenant: &str) -> String {
        self.must(
            Method::POST,
            "/runs",
            json!({"tenant": tenant, "workflow": "etl"}),
        )
        .await["detail"]["run_id"]
            .as_str()
            .expect("run now answers the run's id")
            .to_owned()
    }

    pub async fn converged(&self) {
        self.cluster.wait_converged().await;
    }
}

/// `["developer@ads", "admin"]` as the API's binding objects.
pub fn bindings_json(bindings: &[&str]) -> Value {
    Value::Array(
        bindings
            .iter()
            .map(|b| match b.split_once('@') {
                Some((role, tenant)) => json!({"role": role, "tenant": tenant}),
                None => json!({"role": b}),
            })
            .collect(),
    )
}

/// The session cookie a reply sets.
pub fn cookie_value(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.strip_prefix("meridian_session=")
                .map(|rest| rest.split(';').next().unwrap_or("").to_owned())
        })
}
