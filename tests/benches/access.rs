//! What access control costs: a sign-in (Argon2id, alone and through the API), and the
//! authorization work every request adds — resolving its credential from the model and asking
//! the policy, for reads and for writes (whose facts the policy reads from the model).
//!
//! Run by hand (figures go to BENCHMARKS.md):
//!   cargo bench -p meridian-tests --bench access
//! Knobs: BENCH_LOGINS (default 20), BENCH_CHECKS (default 20000).

use std::time::{Duration, Instant};

use meridian_domain::ManualClock;
use meridian_domain::workflow::WorkflowDefinition;
use meridian_plane::api::password;
use meridian_plane::api::principal::{self, Credential};
use meridian_plane::api::token;
use meridian_plane::model::authorize;
use meridian_plane::model::{Command, Name, Workflow};
use meridian_plane::policy::{self, Action, Object};
use meridian_tests::api_plane::{ApiPlane, Cred};
use meridian_tests::{knob, percentile};
use reqwest::{Method, StatusCode};
use serde_json::json;

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{what}: n {}, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        samples.len(),
        us(percentile(&samples, 0.5)),
        us(percentile(&samples, 0.99)),
        us(*samples.last().unwrap())
    );
}

fn report_ms(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{what}: n {}, min {:.0} ms, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        samples.len(),
        ms(samples[0]),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap())
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let logins = knob("BENCH_LOGINS", 20) as usize;
    let checks = knob("BENCH_CHECKS", 20_000) as usize;

    // Argon2id alone, with the plane's parameters.
    let phc = password::hash("a long enough password").unwrap();
    let mut hashing = Vec::new();
    let mut verifying = Vec::new();
    for _ in 0..logins {
        let t = Instant::now();
        password::hash("a long enough password").unwrap();
        hashing.push(t.elapsed());
        let t = Instant::now();
        assert!(password::verify("a long enough password", &phc));
        verifying.push(t.elapsed());
    }
    println!(
        "argon2id m={} KiB t={} p=1",
        password::MEMORY_KIB,
        password::ITERATIONS
    );
    report_ms("  hash a password", hashing);
    report_ms("  verify a password", verifying);

    // A sign-in through the API of a one-node plane: read barrier, verify, the session
    // committed.
    let plane = ApiPlane::start(1, ManualClock::at(chrono::Utc::now())).await;
    for (path, body) in [
        ("/dcs", json!({"name": "nj"})),
        ("/clusters", json!({"name": "nj-main", "dc": "nj"})),
        (
            "/environments",
            json!({"name": "prod", "cluster": "nj-main"}),
        ),
        ("/tenants", json!({"name": "ads"})),
        ("/grants", json!({"tenant": "ads", "environment": "prod"})),
        (
            "/workflows",
            json!({"tenant": "ads", "name": "etl", "environment": "prod",
                   "definition": {"tasks": [{"name": "main", "kind": {"noop": {}}}]}}),
        ),
    ] {
        plane.must(Method::POST, path, body).await;
    }
    plane
        .user("alice", &["developer@ads"], "a long enough password")
        .await;
    let mut signing_in = Vec::new();
    for _ in 0..logins {
        let t = Instant::now();
        let r = plane
            .call_as(
                &Cred::Nobody,
                0,
                Method::POST,
                "/session",
                Some(json!({"user": "alice", "password": "a long enough password"})),
            )
            .await;
        signing_in.push(t.elapsed());
        assert_eq!(r.status, StatusCode::CREATED);
    }
    report_ms("sign in through the API (POST /session)", signing_in);

    // Per request: resolving a token from the model, a session from the model, the policy's
    // decision for a read, and the policy's check of a write with the facts it reads.
    let Cred::Token(secret) = plane.token("ci", &["developer@ads"]).await else {
        unreachable!()
    };
    let session = plane.sign_in(0, "alice", "a long enough password").await;
    let pool = plane.cluster.node(0).state.pool().clone();
    let token_cred = Credential::Token {
        hash: token::hash(&secret),
    };
    let Cred::Session { cookie, csrf } = session else {
        unreachable!()
    };
    let session_cred = Credential::Session {
        hash: token::hash(&cookie),
        csrf,
    };
    let now = chrono::Utc::now().timestamp_millis();
    let api = meridian_plane::api::Api::new(
        plane.cluster.shared(0),
        std::sync::Arc::new(meridian_domain::SystemClock),
        Duration::from_secs(10),
        None,
        Default::default(),
    );
    let mut cached = Vec::new();
    let mut resolving = Vec::new();
    let mut resolving_session = Vec::new();
    let mut deciding = Vec::new();
    let mut writing = Vec::new();
    let mut killing = Vec::new();
    let ads = Name::new("ads").unwrap();
    let write = Command::ApplyWorkflow(Workflow {
        tenant: ads.clone(),
        name: Name::new("etl").unwrap(),
        environment: Some(Name::new("prod").unwrap()),
        definition: WorkflowDefinition::shell("main", "true"),
    });
    let kill = Command::KillRun {
        run_id: "ads.etl@20261129T000000Z".into(),
    };
    let mut conn = pool.acquire().await.unwrap();
    for i in 0..checks {
        let t = Instant::now();
        let p = principal::resolve(&pool, &token_cred, now).await.unwrap();
        resolving.push(t.elapsed());
        let t = Instant::now();
        let again = api.resolve(&token_cred).await.unwrap();
        cached.push(t.elapsed());
        assert_eq!(again, p);
        let t = Instant::now();
        principal::resolve(&pool, &session_cred, now).await.unwrap();
        resolving_session.push(t.elapsed());
        let t = Instant::now();
        let d = policy::decide(&p, Action::Read, &Object::Definition(ads.clone()));
        deciding.push(t.elapsed());
        assert_eq!(d, policy::Decision::Allow);
        let (command, samples) = if i % 2 == 0 {
            (&write, &mut writing)
        } else {
            (&kill, &mut killing)
        };
        let t = Instant::now();
        authorize::command(&mut conn, &p, command).await.unwrap();
        samples.push(t.elapsed());
    }
    println!("per request ({checks} each):");
    report(
        "  resolve a bearer token as every request does (cached while access is unchanged)",
        cached,
    );
    report(
        "  resolve a bearer token from the model (SHA-256, one SQLite lookup)",
        resolving,
    );
    report(
        "  resolve a session cookie (SHA-256, one SQLite join)",
        resolving_session,
    );
    report("  policy decision for a read (pure)", deciding);
    report(
        "  policy check of a write whose command names its tenant (apply_workflow)",
        writing,
    );
    report(
        "  policy check of a write naming its object (kill_run: the tenant read from the run id)",
        killing,
    );

    // End to end, for scale: a stale read of one workflow as a developer token.
    let cred = Cred::Token(secret);
    let mut requests = Vec::new();
    for _ in 0..(checks / 10).max(100) {
        let t = Instant::now();
        let r = plane
            .call_as(&cred, 0, Method::GET, "/workflows/ads/etl?stale=true", None)
            .await;
        requests.push(t.elapsed());
        assert_eq!(r.status, StatusCode::OK);
    }
    report(
        "GET /workflows/ads/etl?stale=true as a developer (whole request, loopback HTTP)",
        requests,
    );
    plane.cluster.shutdown().await;
}
