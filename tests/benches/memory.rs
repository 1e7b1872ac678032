//! Memory at scale (issue #21), measured from outside as an operator would see it: a one-node
//! plane (`meridian plane serve`, the release build) and an agent (`meridian-agent`) as two
//! processes of their own, over mutual TLS on loopback, each with its own data directory.
//!
//! The plane is given `BENCH_SCHEDULES` schedules (default 100,000) of one workflow, made
//! through its REST API `BENCH_CLIENTS` (default 64) at a time, firing once a day at an hour
//! twelve hours from now (so nothing fires while it runs; what an agent buffers is the same 50
//! records a schedule whatever its calendar). Then an agent of the schedules' cluster starts,
//! holds every partition, and buffers the next 50 fire records of each. Printed, for each
//! process: resident memory (`VmRSS`) and its peak (`VmHWM`) from `/proc`, after the fill and
//! once the agent holds everything (read from its own `/metrics`: `buffered_records`); then the
//! agent is restarted and measured again once it has fetched and synced the same schedules
//! (`schedule_fetches_total`), holding the same buffer from its store. Then the plane once it
//! has listed every schedule (the list routes are not paged yet). Disk sizes of both data
//! directories too.
//!
//! Run by hand (figures go to BENCHMARKS.md):
//!   cargo build --release --bins && cargo bench -p meridian-tests --bench memory
//!   BENCH_SCHEDULES=1000000 cargo bench -p meridian-tests --bench memory
//! Knobs: BENCH_SCHEDULES, BENCH_CLIENTS, BENCH_SETTLE_SECONDS (default 20: how long the
//! processes idle before a reading).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Timelike;
use meridian_domain::WINDOW;
use meridian_tests::process::{Daemon, free_port};
use meridian_tests::{binary, knob, metric};
use serde_json::{Value, json};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

/// A process of ours (killed when dropped), started in `dir`, logging to `dir/<name>.log`.
fn start(program: &Path, args: &[&str], dir: &Path, name: &str) -> Daemon {
    let mut command = Command::new(program);
    command.args(args).current_dir(dir);
    Daemon::spawn(command, &dir.join(format!("{name}.log")))
}

/// Resident and peak resident memory of `process`, MiB, from `/proc/<pid>/status`.
fn memory(process: &Daemon) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", process.pid()))
        .unwrap_or_else(|e| panic!("process {} is gone: {e}", process.pid()));
    let field = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {key} in {status}"))
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn meridian(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(binary("meridian"))
        .args(args)
        .current_dir(dir)
        .env_remove("MERIDIAN_TOKEN")
        .env_remove("MERIDIAN_ADDR")
        .output()
        .unwrap();
    assert!(out.status.success(), "meridian {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn du(path: &Path) -> f64 {
    let out = Command::new("du").arg("-sb").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1e6
}

struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    async fn post(&self, path: &str, body: &Value) {
        for attempt in 0.. {
            let response = self
                .http
                .post(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .json(body)
                .send()
                .await;
            match response {
                Ok(r) if r.status().is_success() => return,
                // A retry of a create whose first answer was lost made it.
                Ok(r) if r.status() == reqwest::StatusCode::CONFLICT && attempt > 0 => return,
                Ok(r) if r.status().is_server_error() && attempt < 5 => {}
                Ok(r) => panic!(
                    "POST {path}: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ),
                Err(e) if attempt < 5 => eprintln!("POST {path}: {e}; again"),
                Err(e) => panic!("POST {path}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

async fn run() {
    let schedules = knob("BENCH_SCHEDULES", 100_000);
    let clients = knob("BENCH_CLIENTS", 64) as usize;
    let settle = Duration::from_secs(knob("BENCH_SETTLE_SECONDS", 20));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    println!("memory: {schedules} schedules, one plane node and one agent");

    // A CA, a plane node's and an agent's certificates, their configs.
    meridian(root, &["certs", "init", "--dir", "ca"]);
    for (host, role, out) in [
        ("plane-1", "plane", "plane/certs"),
        ("agent-1", "agent", "agent/certs"),
    ] {
        std::fs::create_dir_all(root.join(out)).unwrap();
        let mut args = vec![
            "certs",
            "issue",
            "--dir",
            "ca",
            "--hostname",
            host,
            "--role",
            role,
            "--out",
            out,
        ];
        if role == "agent" {
            args.extend(["--cluster", "main"]);
        }
        meridian(root, &args);
        std::fs::copy(root.join("ca/ca.pem"), root.join(out).join("ca.pem")).unwrap();
    }
    let (peer_port, http_port, metrics_port) = (free_port(), free_port(), free_port());
    std::fs::write(
        root.join("plane/plane.toml"),
        format!(
            "hostname = \"plane-1\"\ndata_dir = \"data\"\nlisten = \"127.0.0.1:{peer_port}\"\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\ntls = false\n\
             [tls]\nca = \"certs/ca.pem\"\ncert = \"certs/plane-1.pem\"\nkey = \"certs/plane-1.key\"\n\
             [hosts]\n\"plane-1\" = \"127.0.0.1\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("agent/agent.toml"),
        format!(
            "hostname = \"agent-1\"\ncluster = \"main\"\nplane = [\"plane-1:{peer_port}\"]\n\
             data_dir = \"data\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\
             [tls]\nca = \"certs/ca.pem\"\ncert = \"certs/agent-1.pem\"\nkey = \"certs/agent-1.key\"\n\
             [hosts]\n\"plane-1\" = \"127.0.0.1\"\n"
        ),
    )
    .unwrap();
    let plane_dir = root.join("plane");
    meridian(&plane_dir, &["--config", "plane.toml", "plane", "init"]);
    let mut plane = start(
        &binary("meridian"),
        &["--config", "plane.toml", "plane", "serve"],
        &plane_dir,
        "plane",
    );
    let api = Arc::new(Api {
        base: format!("http://127.0.0.1:{http_port}/api/v1"),
        token: std::fs::read_to_string(plane_dir.join("data/admin.token"))
            .unwrap()
            .trim()
            .to_owned(),
        http: meridian_tests::s3::http_client(),
    });
    wait_ready(&api).await;

    for (path, body) in [
        ("/dcs", json!({"name": "here"})),
        ("/clusters", json!({"name": "main", "dc": "here"})),
        ("/environments", json!({"name": "prod", "cluster": "main"})),
        ("/tenants", json!({"name": "demo"})),
        ("/grants", json!({"tenant": "demo", "environment": "prod"})),
        (
            "/workflows",
            json!({"tenant": "demo", "name": "nothing", "environment": "prod",
                   "definition": {"tasks": [{"name": "main", "kind": {"noop": {}}}]}}),
        ),
    ] {
        api.post(path, &body).await;
    }
    // Once a day, twelve hours from now: nothing fires while this runs.
    let at = (chrono::Utc::now() + chrono::Duration::hours(12)).hour();
    let cron = format!("0 17 {at} * * ?");
    let began = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..clients {
        let (api, next, cron) = (api.clone(), next.clone(), cron.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= schedules {
                    return;
                }
                api.post(
                    "/schedules",
                    &json!({"tenant": "demo", "name": format!("s-{i}"), "workflow": "nothing",
                            "environment": "prod", "spec": {"cron": cron}}),
                )
                .await;
                if i > 0 && i % 100_000 == 0 {
                    eprintln!("  {i} schedules in {:.0?}", began.elapsed());
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let filled = began.elapsed();
    println!(
        "filled: {schedules} schedules in {:.0} s ({:.0}/s)",
        filled.as_secs_f64(),
        schedules as f64 / filled.as_secs_f64()
    );
    tokio::time::sleep(settle).await;
    let mut rows = vec![("plane, schedules made, no agent yet", memory(&plane))];

    // The agent: it holds every partition and buffers 50 records of each schedule.
    let agent_dir = root.join("agent");
    let agent_args = ["--config", "agent.toml"];
    let mut agent = start(&binary("meridian-agent"), &agent_args, &agent_dir, "agent");
    let began = Instant::now();
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    let buffered = wait_for(
        &api.http,
        &metrics,
        "buffered_records",
        schedules * WINDOW as u64,
    )
    .await;
    println!(
        "buffered: {buffered} records of {schedules} schedules in {:.0} s",
        began.elapsed().as_secs_f64()
    );
    tokio::time::sleep(settle).await;
    rows.push(("plane, the agent holding everything", memory(&plane)));
    rows.push(("agent, after its first sync", memory(&agent)));
    agent.signal("TERM");
    let mut agent = start(&binary("meridian-agent"), &agent_args, &agent_dir, "agent");
    wait_for(&api.http, &metrics, "schedule_fetches_total", 1).await;
    tokio::time::sleep(settle).await;
    rows.push(("agent, restarted, holding the same", memory(&agent)));
    rows.push(("plane, after the agent's restart", memory(&plane)));
    // Every schedule listed once, a page of 10,000 at a time as a client walks the list
    // (`meridian schedule list` reads a thousand at a time), and what it leaves the plane at.
    let began = Instant::now();
    let (mut bytes, mut items, mut pages) = (0, 0, 0);
    let mut after: Option<String> = None;
    let mut peak_during = 0.0f64;
    loop {
        let mut url = format!("{}/schedules?tenant=demo&limit=10000", api.base);
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let page: Vec<serde_json::Value> = api
            .http
            .get(url)
            .bearer_auth(&api.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        items += page.len();
        bytes += serde_json::to_vec(&page).unwrap().len();
        peak_during = peak_during.max(memory(&plane).0);
        match page.last() {
            Some(last) if page.len() == 10_000 => {
                after = Some(format!(
                    "{}/{}",
                    last["tenant"].as_str().unwrap(),
                    last["name"].as_str().unwrap()
                ));
            }
            _ => break,
        }
    }
    println!(
        "listing every schedule: {items} in {pages} pages, {:.0} MB in {:.1} s; \
         plane RSS at most {peak_during:.0} MiB between pages",
        bytes as f64 / 1e6,
        began.elapsed().as_secs_f64()
    );
    rows.push(("plane, after listing every schedule once", memory(&plane)));

    println!("| process, moment | RSS (MiB) | peak RSS (MiB) |\n|---|---|---|");
    for (what, (rss, peak)) in &rows {
        println!("| {what} | {rss:.0} | {peak:.0} |");
    }
    println!(
        "disk: plane data {:.0} MB, agent data {:.0} MB",
        du(&plane_dir.join("data")),
        du(&agent_dir.join("data"))
    );
    agent.signal("TERM");
    plane.signal("TERM");
}

async fn wait_ready(api: &Api) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = api
            .http
            .get(format!("{}/readyz", api.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "the plane never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the agent's `meridian_agent_<name>` reads at least `want`; what it reads.
async fn wait_for(http: &reqwest::Client, metrics: &str, name: &str, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3600);
    let series = format!("meridian_agent_{name}");
    let mut last = 0;
    loop {
        let text = match http.get(metrics).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if let Some(n) = metric::<u64>(&text, &series) {
            if n != last {
                eprintln!("  {name} {n}");
                last = n;
            }
            if n >= want {
                return n;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the agent's {name} read {last}, not {want}, within an hour"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
