//! Alert delivery latency: from the command that raises an alert being proposed to the
//! webhook receiver having the signed POST, on a one-node plane on the system clock (fsync'd
//! log, SQLite state machine) and a real HTTP receiver on loopback. First one alert at a time
//! (a kill every `BENCH_GAP_MS`), then a burst of `BENCH_BURST` kills in one log entry (the
//! courier sends at most 32 per round, each round's attempts one proposal).
//!
//! Run by hand (figures go to BENCHMARKS.md):
//!   cargo bench -p meridian-tests --bench alerts
//! Knobs: BENCH_ALERTS (default 500), BENCH_GAP_MS (default 20), BENCH_BURST (default 1000).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meridian_domain::workflow::WorkflowDefinition;
use meridian_plane::model::{
    AlertChannel, AlertEvent, AlertRule, ChannelKind, Command, RunRequest, Workflow,
};
use meridian_tests::federation::{Federation, name};
use meridian_tests::receiver::Receiver;
use meridian_tests::{knob, percentile};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

async fn run_now(f: &Federation) -> String {
    let applied = f
        .write(Command::RequestRun(RunRequest {
            tenant: name("ads"),
            workflow: name("etl"),
            environment: None,
        }))
        .await;
    let detail: serde_json::Value = serde_json::from_str(&applied.detail.unwrap()).unwrap();
    detail["run_id"].as_str().unwrap().to_owned()
}

/// Waits until the receiver has an alert for each of `runs`; their arrival times by run.
async fn arrivals(hook: &Receiver, runs: usize) -> BTreeMap<String, Instant> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let got: BTreeMap<String, Instant> = hook
            .received()
            .iter()
            .map(|r| {
                let run = r.json()["events"][0]["details"]["run_id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                (run, r.at)
            })
            .collect();
        if got.len() >= runs {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {runs} alerts arrived",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn report(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{what}: {} alerts, latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        percentile(&ms, 0.99),
        ms.last().unwrap()
    );
}

async fn bench() {
    let n = knob("BENCH_ALERTS", 500) as usize;
    let gap = Duration::from_millis(knob("BENCH_GAP_MS", 20));
    let burst = knob("BENCH_BURST", 1000) as usize;
    let f = Federation::start_on_system_clock(1, 30).await;
    let hook = Receiver::start().await;
    f.write(Command::ApplyWorkflow(Workflow {
        tenant: name("ads"),
        name: name("etl"),
        environment: Some(name("prod")),
        definition: WorkflowDefinition::shell("main", "true"),
    }))
    .await;
    f.write(Command::CreateAlertChannel(AlertChannel {
        tenant: Some(name("ads")),
        name: name("ops"),
        kind: ChannelKind::Webhook,
        url: Some(hook.url("/hook")),
        secret: Some("a-long-shared-secret".into()),
        to: vec![],
        description: String::new(),
    }))
    .await;
    f.write(Command::CreateAlertRule(AlertRule {
        tenant: Some(name("ads")),
        name: name("kills"),
        workflow: None,
        schedule: None,
        on: vec![AlertEvent::Killed],
        channels: vec![name("ops")],
        late_seconds: None,
        sla_seconds: None,
        unheard_seconds: None,
        group_seconds: 0,
    }))
    .await;

    // One at a time: no agent takes the runs, so a kill ends each at once and raises.
    let mut committed = BTreeMap::new();
    for _ in 0..n {
        let run = run_now(&f).await;
        // From the kill's proposal: its commit is part of the latency (the courier wakes as
        // the entry applies, often before the write's answer is back).
        let proposed = Instant::now();
        f.write(Command::KillRun {
            run_id: run.clone(),
        })
        .await;
        committed.insert(run, proposed);
        tokio::time::sleep(gap).await;
    }
    let got = arrivals(&hook, n).await;
    let ms: Vec<f64> = committed
        .iter()
        .map(|(run, at)| got[run].saturating_duration_since(*at).as_secs_f64() * 1000.0)
        .collect();
    report(
        &format!("one at a time (a kill every {} ms)", gap.as_millis()),
        ms,
    );

    // A burst: every kill in one log entry.
    let mut runs = Vec::new();
    for _ in 0..burst {
        runs.push(run_now(&f).await);
    }
    let before = hook.received().len();
    let started = Instant::now();
    f.write(Command::Batch(
        runs.iter()
            .map(|r| Command::KillRun { run_id: r.clone() })
            .collect(),
    ))
    .await;
    let committed_at = Instant::now();
    let got = arrivals(&hook, before + burst).await;
    let ms: Vec<f64> = runs
        .iter()
        .map(|r| got[r].saturating_duration_since(started).as_secs_f64() * 1000.0)
        .collect();
    let last = ms.iter().cloned().fold(0.0, f64::max);
    report(&format!("burst of {burst} in one entry"), ms);
    println!(
        "burst: its commit took {:.1} ms; all delivered {:.0} ms after the proposal \
         ({:.0} alerts/s)",
        (committed_at - started).as_secs_f64() * 1000.0,
        last,
        burst as f64 / (last / 1000.0)
    );
    f.shutdown().await;
}
