//! The web UI over a large history: 1,000,000 runs and 3,000,000 task attempts (two tenants,
//! two data centers, spread over the last 30 days), written straight into a plane node's model
//! database in the rows the processor makes (a bulk path: applying a million reports through
//! Raft would take hours). Then each page is fetched over loopback with a session, as a
//! browser would: the cross-DC analysis page with no filter, with one, with three combined, a
//! later page (keyset), and the federation overview. Prints each page's time (client-side, so
//! an upper bound on the server's) and size.
//!
//! Run by hand (figures go to BENCHMARKS.md):
//!   cargo bench -p meridian-tests --bench ui
//! Knobs: BENCH_RUNS (default 1000000), BENCH_FETCHES (default 30), BENCH_DB_COPY (a path to
//! copy the filled history to, for study with `sqlite3`).

use std::time::{Duration, Instant};

use meridian_domain::ManualClock;
use meridian_tests::api_plane::{ApiPlane, Cred};
use meridian_tests::{knob, percentile};

const DAY_MS: i64 = 24 * 3_600_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

/// A deterministic spread of numbers (no RNG crate needed for a benchmark's data).
fn mix(i: u64) -> u64 {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 17
}

async fn fill(pool: &sqlx::SqlitePool, runs: u64, now_ms: i64) {
    let started = Instant::now();
    let mut tx = pool.begin().await.unwrap();
    for i in 0..runs {
        let (tenant, dc, cluster, env) = if i % 2 == 0 {
            ("ads", "nj", "nj-main", "prod")
        } else {
            ("bi", "sg", "sg-main", "bi-prod")
        };
        let r = mix(i);
        // Fire times over the last 30 days, most recent first in `i`'s order does not matter.
        let fire = now_ms - (r % (30 * DAY_MS as u64)) as i64;
        let late = (mix(i + 7) % 2_000) as i64 + if r.is_multiple_of(100) { 90_000 } else { 0 };
        let state = match r % 100 {
            0..=89 => "succeeded",
            90..=95 => "failed",
            96 => "killed",
            97 => "skipped",
            _ => "started",
        };
        let run_id = format!("{tenant}.hourly@{fire}-{i}");
        let finished = (state != "started").then_some(fire + late + 5_000);
        sqlx::query(
            "INSERT INTO runs (run_id, tenant, workflow, workflow_version, schedule, fire_ms, \
             environment, cluster, dc, state, agent, epoch, requested_ms, queued_ms, started_ms, \
             finished_ms, message, starts, updated_ms) \
             VALUES (?, ?, 'etl', 1, ?, ?, ?, ?, ?, ?, ?, 1, NULL, ?, ?, ?, '', 1, ?)",
        )
        .bind(&run_id)
        .bind(tenant)
        .bind(format!("{tenant}.hourly"))
        .bind(fire)
        .bind(env)
        .bind(cluster)
        .bind(dc)
        .bind(state)
        .bind(format!("agent-{}.{dc}", r % 4))
        .bind(fire)
        .bind(fire + late)
        .bind(finished)
        .bind(finished.unwrap_or(fire + late))
        .execute(&mut *tx)
        .await
        .unwrap();
        for (n, task) in ["extract", "load", "report"].iter().enumerate() {
            let at = fire + late + n as i64 * 1_000;
            sqlx::query(
                "INSERT INTO task_attempts (run_id, task, attempt, outcome, started_ms, \
                 finished_ms, exit_code, message) VALUES (?, ?, 1, ?, ?, ?, 0, '')",
            )
            .bind(&run_id)
            .bind(task)
            .bind(if state == "started" {
                "started"
            } else {
                "succeeded"
            })
            .bind(at)
            .bind(at + 900)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        if i % 100_000 == 99_999 {
            tx.commit().await.unwrap();
            tx = pool.begin().await.unwrap();
            eprintln!("  {} runs written", i + 1);
        }
    }
    tx.commit().await.unwrap();
    sqlx::query("ANALYZE").execute(pool).await.unwrap();
    println!(
        "history: {runs} runs, {} task attempts, written in {:.0} s",
        runs * 3,
        started.elapsed().as_secs_f64()
    );
}

async fn bench() {
    let runs = knob("BENCH_RUNS", 1_000_000);
    let fetches = knob("BENCH_FETCHES", 30) as usize;
    meridian_tests::browser::install_crypto();
    let now = chrono::Utc::now();
    let plane = ApiPlane::start(1, ManualClock::at(now)).await;
    plane.two_tenants().await;
    plane
        .user("root", &["admin"], "a long enough password")
        .await;
    plane
        .user("dev", &["developer@ads"], "a long enough password")
        .await;
    let node = plane.cluster.shared(0);
    fill(node.state.pool(), runs, now.timestamp_millis()).await;
    if let Ok(path) = std::env::var("BENCH_DB_COPY") {
        // A copy of the filled history to study with `sqlite3` (EXPLAIN QUERY PLAN, .timer).
        sqlx::query("VACUUM INTO ?")
            .bind(&path)
            .execute(node.state.pool())
            .await
            .unwrap();
        println!("history copied to {path}");
    }
    let cookie = |cred: Cred| match cred {
        Cred::Session { cookie, .. } => cookie,
        _ => unreachable!(),
    };
    let admin = cookie(plane.sign_in(0, "root", "a long enough password").await);
    let dev = cookie(plane.sign_in(0, "dev", "a long enough password").await);
    let root = plane.roots[0].clone();
    let client = reqwest::Client::new();
    let fetch = async |path: &str, session: &str| -> (Duration, usize, String) {
        let started = Instant::now();
        let r = client
            .get(format!("{root}{path}"))
            .header("cookie", format!("meridian_session={session}"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        let body = r.text().await.unwrap();
        (started.elapsed(), body.len(), body)
    };
    // A later page: the "next" link of the first.
    let (_, _, first) = fetch("/runs", &admin).await;
    let next = first
        .split("id=\"next-page\"")
        .next()
        .and_then(|before| before.rsplit("<a href=\"").next())
        .and_then(|s| s.split('"').next())
        .filter(|s| s.starts_with("/runs?"))
        .map(|s| s.replace("&amp;", "&"));
    let mut pages: Vec<(&str, String, &str)> = vec![
        ("runs, no filter (last 24 h)", "/runs".into(), "admin"),
        (
            "runs, one filter (tenant)",
            "/runs?tenant=ads".into(),
            "admin",
        ),
        (
            "runs, one filter (state)",
            "/runs?state=failed".into(),
            "admin",
        ),
        (
            "runs, three filters (tenant, dc, state)",
            "/runs?tenant=ads&dc=nj&state=succeeded".into(),
            "admin",
        ),
        ("runs, lateness over 60 s", "/runs?late=60".into(), "admin"),
        ("runs as a developer of one tenant", "/runs".into(), "dev"),
        ("overview", "/overview".into(), "admin"),
    ];
    if let Some(next) = next {
        pages.insert(4, ("runs, second page (keyset)", next, "admin"));
    }
    for (what, path, who) in pages {
        let session = if who == "admin" { &admin } else { &dev };
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..fetches {
            let (t, n, _) = fetch(&path, session).await;
            times.push(t);
            size = n;
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{what} ({path}): n {}, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {:.1} KB",
            times.len(),
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
            ms(*times.last().unwrap()),
            size as f64 / 1024.0
        );
    }
    plane.cluster.shutdown().await;
}
