//! End-to-end tests of Meridian over real processes.
//!
//! # Layout
//!
//! - [`binary`]: finds the `meridian` and `meridian-agent` executables that `tests/run` built
//!   next to the test binaries, so tests run exactly what a user deploys.
//! - [`api_plane`]: the REST API on every node of a [`cluster::Cluster`], and a client calling
//!   it as any principal (a token, a signed-in session with its CSRF token, nobody).
//! - [`browser`]: Debian's chromium over WebDriver (its chromedriver), for the web UI's tests.
//! - [`cluster`]: an in-process plane cluster over real mutual TLS on loopback
//!   (`Cluster::start(3)`, `leader()`, `kill(i)`, `restart(i)`, `wait_for_leader()`).
//! - [`process`]: real `meridian` processes: daemons (`meridian dev`, `plane serve`) stopped
//!   by signal, one-shot CLI calls, free ports.
//! - [`s3`]: a real S3-compatible server (moto, installed by `tests/run`) on loopback that
//!   records every request, so tests can count the HEADs and GETs the code under test sent.
//! - [`receiver`]: a real HTTP receiver for webhooks that records what it gets, and can be
//!   taken down and brought back on its port.
//! - [`smtp`]: a real SMTP server (aiosmtpd, installed by `tests/run`) storing what it receives.
//! - `tests/*.rs`: the scenarios: the plane cluster (replication, failover, snapshots, TLS
//!   refusals) and the agent binary's config handling. Coming with issues #4–#6: network
//!   partitions, the three-DC lab in network namespaces, fault scenarios and the run history
//!   checker (no fire record lost, none run twice).

pub mod api_plane;
pub mod browser;
pub mod cluster;
pub mod federation;
pub mod lab;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod receiver;
pub mod runbook;
pub mod s3;
pub mod smtp;

use std::path::PathBuf;

/// The `p`-quantile (0–1) of `sorted` samples (nearest rank): the benchmarks' p50 and p99.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The metric names the Grafana dashboard in `infra/grafana/meridian.json` queries whose name
/// `of` says is theirs (`meridian_agent_…` and `meridian_resource_…` are the agents'), as
/// exposed (a histogram's `_bucket` series by the histogram's name + `_bucket`).
pub fn dashboard_metrics(of: impl Fn(&str) -> bool) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/grafana/meridian.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut names: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .flat_map(|t| {
            let expr = t["expr"].as_str().expect("expr").to_owned();
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("meridian_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|n| of(n))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The value of the series `name` (with its labels, as written: `meridian_runs{state="killed"}`)
/// in a Prometheus/OpenMetrics text exposition, if it is there.
pub fn metric<T: std::str::FromStr>(text: &str, name: &str) -> Option<T> {
    let series = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
}

/// A benchmark's knob: the environment variable `name` as a number, or `default`.
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The path of a workspace binary built into the same target directory as this test.
///
/// Panics with what to run when it is missing, rather than letting a test fail obscurely.
pub fn binary(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` (tests/run does)",
        path.display()
    );
    path
}

/// `target/<profile>` of this test binary (`target/<profile>/deps/<test>`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binaries live in target/<profile>/deps")
        .to_owned()
}
