//! `meridian dev` measured from outside, as its user sees it (issue #19): the release binary
//! started as a process of its own, schedules made through its REST API, the start times read
//! back from its run history; against the same number of raw spawns of the same task
//! (`/bin/sh -c true`) on this machine, one after another, each waited for.
//!
//! - `every10`: `BENCH_DEV_SCHEDULES` (default 100) schedules firing together every 10 s for
//!   `BENCH_DEV_CYCLES` (default 6) cycles: lateness (start − fire time) p50, p99, max, over
//!   every run after the first cycle; against the time the N-th of N raw spawns starts.
//! - `once`: `BENCH_DEV_ONCE` (default 1,000) schedules all due in the same second: how long
//!   after the fire time the last run started (and ended); against N raw spawns.
//!
//! `BENCH_DEV_SLOTS` (default 64, dev's own default) is passed as `--slots`.
//!
//! Run by hand (figures go to BENCHMARKS.md):
//!   cargo build --release --bins && cargo bench -p meridian-tests --bench dev [-- every10|once]

use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use meridian_plane::model::query::RunRecord;
use meridian_tests::process::{Daemon, free_port};
use meridian_tests::{knob, percentile};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(120);

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |m: &str| which.is_empty() || which.iter().any(|w| w == m);
    runtime.block_on(async {
        if wants("every10") {
            every10().await;
        }
        if wants("once") {
            once().await;
        }
    });
}

/// A `meridian dev` of its own, and a client for its API.
struct Dev {
    _dir: tempfile::TempDir,
    _daemon: Daemon,
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Dev {
    async fn start(slots: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let http = format!("127.0.0.1:{}", free_port());
        let mut daemon = Daemon::start(
            &[
                "--data-dir",
                data.to_str().unwrap(),
                "dev",
                "--http",
                &http,
                "--slots",
                &slots.to_string(),
            ],
            &dir.path().join("dev.log"),
        );
        daemon.wait_for_log("REST API", PATIENCE);
        let token = std::fs::read_to_string(data.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        let dev = Self {
            _dir: dir,
            _daemon: daemon,
            base: format!("http://{http}/api/v1"),
            token,
            http: meridian_tests::s3::http_client(),
        };
        dev.post(
            "/workflows",
            json!({"tenant": "demo", "name": "true", "environment": "dev",
                   "definition": {"tasks": [{"name": "main", "kind": {"shell": {"script": "true"}}}]}}),
        )
        .await;
        dev
    }

    async fn post(&self, path: &str, body: Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(
            status.is_success(),
            "POST {path}: {status} {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// `n` schedules of the `true` workflow on `cron`, named `<prefix>-<i>`.
    async fn schedules(&self, prefix: &str, n: usize, cron: &str) {
        let began = Instant::now();
        for i in 0..n {
            self.post(
                "/schedules",
                json!({"tenant": "demo", "name": format!("{prefix}-{i}"), "workflow": "true",
                       "environment": "dev", "spec": {"cron": cron}}),
            )
            .await;
        }
        eprintln!("  {n} schedules created in {:.1?}", began.elapsed());
    }

    /// The runs fired at or after `since_ms`.
    async fn runs(&self, since_ms: i64) -> Vec<RunRecord> {
        self.http
            .get(format!(
                "{}/runs?tenant=demo&since_ms={since_ms}&limit=100000",
                self.base
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until `n` runs fired in `[from_ms, to_ms]` have ended; returns them.
    async fn ended(&self, from_ms: i64, to_ms: i64, n: usize) -> Vec<RunRecord> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let runs: Vec<RunRecord> = self
                .runs(from_ms)
                .await
                .into_iter()
                .filter(|r| r.fire_ms.is_some_and(|f| f >= from_ms && f <= to_ms))
                .collect();
            let done = runs.iter().filter(|r| r.finished_ms.is_some()).count();
            if done >= n {
                return runs;
            }
            assert!(
                Instant::now() < deadline,
                "only {done} of {n} runs ended within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// `n` spawns of `/bin/sh -c true`, one after another, each waited for: when each started,
/// after the first (ms), and the whole loop's time.
fn raw_spawns(n: usize) -> (Vec<i64>, Duration) {
    let began = Instant::now();
    let mut starts = Vec::with_capacity(n);
    for _ in 0..n {
        starts.push(began.elapsed().as_millis() as i64);
        std::process::Command::new("/bin/sh")
            .args(["-c", "true"])
            .status()
            .expect("/bin/sh runs");
    }
    (starts, began.elapsed())
}

fn whole_second_after(lead: Duration) -> DateTime<Utc> {
    let at = Utc::now() + chrono::TimeDelta::from_std(lead).unwrap();
    DateTime::from_timestamp(at.timestamp() + 1, 0).unwrap()
}

async fn every10() {
    let n = knob("BENCH_DEV_SCHEDULES", 100) as usize;
    let cycles = knob("BENCH_DEV_CYCLES", 6) as i64;
    let slots = knob("BENCH_DEV_SLOTS", 64) as u32;
    let (raw, raw_took) = raw_spawns(n);
    let raw_last = *raw.last().unwrap();
    println!(
        "raw: {n} spawns of `sh -c true` one after another: the last starts after {raw_last} ms, all done in {} ms",
        raw_took.as_millis()
    );
    eprintln!("every10: meridian dev --slots {slots}, {n} schedules every 10 s, {cycles} cycles");
    let dev = Dev::start(slots).await;
    dev.schedules("every10", n, "0/10 * * * * ?").await;
    // From the first whole 10 s after the schedules are there, skipping one cycle (the agent
    // picks them up within a heartbeat or two).
    let now = Utc::now().timestamp_millis();
    let first = (now / 10_000 + 2) * 10_000;
    let last = first + (cycles - 1) * 10_000;
    let runs = dev.ended(first, last, n * cycles as usize).await;
    let mut lateness: Vec<i64> = runs.iter().filter_map(|r| r.lateness_ms).collect();
    lateness.sort_unstable();
    let per_cycle: Vec<i64> = (0..cycles)
        .map(|c| {
            let fire = first + c * 10_000;
            runs.iter()
                .filter(|r| r.fire_ms == Some(fire))
                .filter_map(|r| r.lateness_ms)
                .max()
                .unwrap_or_default()
        })
        .collect();
    let p99 = percentile(&lateness, 0.99);
    println!(
        "meridian dev --slots {slots}, {n} schedules every 10 s, {} runs over {cycles} cycles: \
         lateness p50 {} ms, p99 {p99} ms, max {} ms; the last start of each cycle {per_cycle:?} ms",
        lateness.len(),
        percentile(&lateness, 0.5),
        lateness.last().copied().unwrap_or_default(),
    );
    println!(
        "  p99 lateness / the raw loop's last start: {:.2}x",
        p99 as f64 / raw_last.max(1) as f64
    );
}

async fn once() {
    let n = knob("BENCH_DEV_ONCE", 1_000) as usize;
    let slots = knob("BENCH_DEV_SLOTS", 64) as u32;
    let lead = Duration::from_secs(knob("BENCH_DEV_LEAD", 40));
    let (raw, raw_took) = raw_spawns(n);
    println!(
        "raw: {n} spawns of `sh -c true` one after another: the last starts after {} ms, all done in {} ms",
        raw.last().unwrap(),
        raw_took.as_millis()
    );
    eprintln!("once: meridian dev --slots {slots}, {n} schedules due at once");
    let dev = Dev::start(slots).await;
    let at = whole_second_after(lead);
    let cron = format!("{} {} {} * * ?", at.second(), at.minute(), at.hour());
    dev.schedules("once", n, &cron).await;
    assert!(
        Utc::now() < at,
        "the schedules took longer than the lead; raise BENCH_DEV_LEAD"
    );
    let fire = at.timestamp_millis();
    let runs = dev.ended(fire, fire, n).await;
    let last_start = runs.iter().filter_map(|r| r.started_ms).max().unwrap() - fire;
    let last_end = runs.iter().filter_map(|r| r.finished_ms).max().unwrap() - fire;
    let mut lateness: Vec<i64> = runs.iter().filter_map(|r| r.lateness_ms).collect();
    lateness.sort_unstable();
    println!(
        "meridian dev --slots {slots}, {n} due at once: all {} started {last_start} ms after the \
         fire time (p50 {} ms), all ended after {last_end} ms",
        runs.len(),
        percentile(&lateness, 0.5),
    );
    println!(
        "  last start / the raw loop's last start: {:.2}x; last end / the raw loop's time: {:.2}x",
        last_start as f64 / (*raw.last().unwrap()).max(1) as f64,
        last_end as f64 / raw_took.as_millis().max(1) as f64
    );
}
