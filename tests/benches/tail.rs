//! The live tail's delay: from a task writing a line to the line arriving on the run page's
//! event stream (`GET /runs/{id}/tail`, what the browser's SSE extension reads), on loopback.
//!
//! `meridian dev` (a one-node plane with its embedded agent, the release build) runs a task
//! that prints a line every `BENCH_INTERVAL_MS`, each carrying the wall-clock time it was
//! written (`date +%s%N`, the same clock this process reads); the stream is read as a browser
//! would, with the admin's session, and each line's delay is the time it arrived minus the
//! time it was written.
//!
//! Run by hand (figures go to BENCHMARKS.md):
//!   cargo build --release --bin meridian && cargo bench -p meridian-tests --bench tail
//! Knobs: BENCH_LINES (default 200), BENCH_INTERVAL_MS (default 100).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meridian_tests::process::{Daemon, free_port, meridian, ok};
use meridian_tests::{knob, percentile};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

async fn bench() {
    meridian_tests::browser::install_crypto();
    let lines = knob("BENCH_LINES", 200);
    let interval_ms = knob("BENCH_INTERVAL_MS", 100);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = format!("127.0.0.1:{}", free_port());
    let root = format!("http://{http}");
    let mut daemon = Daemon::start(
        &["--data-dir", data.to_str().unwrap(), "dev", "--http", &http],
        &dir.path().join("dev.log"),
    );
    daemon.wait_for_log("REST API", Duration::from_secs(60));
    let password = std::fs::read_to_string(data.join("admin.password"))
        .unwrap()
        .trim()
        .to_owned();
    let cli = |args: &[&str]| {
        let mut all = vec!["--addr", &root, "--data-dir", data.to_str().unwrap()];
        all.extend_from_slice(args);
        ok(meridian(&all, &[]))
    };
    // A pause first, so the stream is open before the first line is written.
    let script = format!(
        "sleep 3; i=0; while [ $i -lt {lines} ]; do i=$((i+1)); \
         echo \"tail-line $i $(date +%s%N)\"; sleep {}; done",
        interval_ms as f64 / 1000.0
    );
    cli(&[
        "workflow", "create", "demo", "tail", "--env", "dev", "--shell", &script,
    ]);
    let run = cli(&["runs", "now", "demo", "tail"]).trim().to_owned();
    let client = reqwest::Client::new();
    let session = client
        .post(format!("{root}/api/v1/session"))
        .json(&serde_json::json!({"user": "admin", "password": password}))
        .send()
        .await
        .unwrap();
    assert!(
        session.status().is_success(),
        "signing in: {}",
        session.status()
    );
    let cookie = meridian_tests::api_plane::cookie_value(session.headers()).expect("a cookie");
    let mut stream = client
        .get(format!("{root}/runs/{run}/tail"))
        .header("cookie", format!("meridian_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert!(
        stream.status().is_success(),
        "the tail: {}",
        stream.status()
    );
    let mut delays: BTreeMap<u64, Duration> = BTreeMap::new();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(lines * interval_ms * 3)
        + Duration::from_secs(60);
    while delays.len() < lines as usize {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("every line within the patience")
            .unwrap();
        let arrived = now_ns();
        let Some(chunk) = chunk else { break };
        text.push_str(&String::from_utf8_lossy(&chunk));
        // Whole lines only; the rest waits for the next chunk.
        let Some(end) = text.rfind('\n') else {
            continue;
        };
        for line in text[..end].lines() {
            let mut words = line.split("tail-line ").nth(1).unwrap_or("").split(' ');
            let (Some(i), Some(written)) = (words.next(), words.next()) else {
                continue;
            };
            let (Ok(i), Ok(written)) = (i.parse::<u64>(), written.trim().parse::<u128>()) else {
                continue;
            };
            delays
                .entry(i)
                .or_insert(Duration::from_nanos(arrived.saturating_sub(written) as u64));
        }
        text.drain(..=end);
    }
    let mut all: Vec<Duration> = delays.values().copied().collect();
    all.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "live tail, a line every {interval_ms} ms: n {}, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        all.len(),
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99)),
        ms(*all.last().expect("lines arrived")),
    );
    assert_eq!(all.len(), lines as usize, "every line arrived");
}
