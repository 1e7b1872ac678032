//! Committed commands per second and commit latency on a 3-node plane over mutual TLS on
//! loopback with durable storage (fsync'd redb log, SQLite state machine on every node), the
//! clients batching as agents do; then how long a plane without its leader takes to accept
//! writes again.
//!
//! Run by hand (figures go to BENCHMARKS.md):
//!   cargo bench -p meridian-tests --bench plane
//! Knobs: BENCH_CLIENTS (default 2), BENCH_BATCH (commands per proposal, default 250),
//! BENCH_SECONDS (default 10), BENCH_FAILOVERS (default 5), and the Raft timing:
//! BENCH_HEARTBEAT_MS, BENCH_ELECTION_MIN_MS, BENCH_ELECTION_MAX_MS (default: the plane's).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use meridian_plane::model::{Command, Name, Proposal, Tenant};
use meridian_plane::raft::Outcome;
use meridian_plane::raft::node::Timing;
use meridian_tests::cluster::Cluster;
use meridian_tests::{knob, percentile};

fn tenant(name: String) -> Command {
    Command::CreateTenant(Tenant {
        name: Name::new(name).unwrap(),
        description: String::new(),
        log_retention_days: None,
        history_retention_days: None,
    })
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let clients = knob("BENCH_CLIENTS", 2);
    let batch = knob("BENCH_BATCH", 250);
    let seconds = knob("BENCH_SECONDS", 10);
    let failovers = knob("BENCH_FAILOVERS", 5);
    let defaults = Timing::default();
    let timing = Timing {
        heartbeat_ms: knob("BENCH_HEARTBEAT_MS", defaults.heartbeat_ms),
        election_min_ms: knob("BENCH_ELECTION_MIN_MS", defaults.election_min_ms),
        election_max_ms: knob("BENCH_ELECTION_MAX_MS", defaults.election_max_ms),
        ..defaults
    };
    let mut cluster = Cluster::start_with(3, timing).await;

    println!(
        "plane throughput: 3 nodes, {clients} clients, {batch} commands per proposal, {seconds} s"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let nodes: Vec<_> = (0..3).map(|i| cluster.shared(i)).collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let node = nodes[c as usize % 3].clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut committed = 0u64;
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let items = (0..batch)
                    .map(|_| {
                        seq += 1;
                        tenant(format!("c{c}-{seq}"))
                    })
                    .collect();
                let t = Instant::now();
                let outcome = node
                    .write(
                        Proposal::new("bench", 0, Command::Batch(items)),
                        Duration::from_secs(30),
                    )
                    .await
                    .expect("write");
                latencies.push(t.elapsed());
                match outcome {
                    Outcome::Applied(a) => {
                        committed += a.items.iter().filter(|r| r.is_ok()).count() as u64
                    }
                    other => panic!("batch not applied: {other:?}"),
                }
            }
            (committed, latencies)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut committed = 0;
    let mut latencies = Vec::new();
    for t in tasks {
        let (c, l) = t.await.unwrap();
        committed += c;
        latencies.extend(l);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "  committed {committed} commands in {:.2} s: {:.0} commands/s ({} proposals)",
        elapsed.as_secs_f64(),
        committed as f64 / elapsed.as_secs_f64(),
        latencies.len()
    );
    println!(
        "  commit latency per proposal: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    drop(nodes);

    println!(
        "leader loss: {failovers} times, kill -9 the leader (in process), write through a survivor \
         (timing: heartbeat {} ms, election {}–{} ms)",
        timing.heartbeat_ms, timing.election_min_ms, timing.election_max_ms
    );
    let mut recoveries = Vec::new();
    for round in 0..failovers {
        cluster.wait_converged().await;
        let leader = cluster.leader().await;
        let survivor = (leader + 1) % 3;
        cluster.kill(leader).await;
        let killed = Instant::now();
        let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        let mut elected = None;
        let mut attempt = 0;
        loop {
            if elected.is_none()
                && others.iter().any(|i| {
                    cluster.node(*i).raft.metrics().borrow().state == openraft::ServerState::Leader
                })
            {
                elected = Some(killed.elapsed());
            }
            attempt += 1;
            let write = cluster
                .node(survivor)
                .write(
                    Proposal::new("bench", 0, tenant(format!("failover-{round}-{attempt}"))),
                    Duration::from_millis(250),
                )
                .await;
            if matches!(write, Ok(Outcome::Applied(_))) {
                break;
            }
            if std::env::var("BENCH_TRACE").is_ok() {
                let views: Vec<String> = others
                    .iter()
                    .map(|i| {
                        let m = cluster.node(*i).raft.metrics().borrow().clone();
                        format!(
                            "{i}:{:?} t{} log{:?} app{:?} ldr{}",
                            m.state,
                            m.current_term,
                            m.last_log_index,
                            m.last_applied.map(|l| l.index),
                            m.current_leader.is_some()
                        )
                    })
                    .collect();
                println!(
                    "    {:>5} ms attempt {attempt}: {write:?} [{}]",
                    killed.elapsed().as_millis(),
                    views.join(" | ")
                );
            }
        }
        let took = killed.elapsed();
        println!(
            "  round {round}: a new leader accepted a write {:.0} ms after the kill \
             (seen elected by {:.0} ms)",
            took.as_secs_f64() * 1e3,
            elected.unwrap_or(took).as_secs_f64() * 1e3
        );
        recoveries.push(took);
        cluster.restart(leader).await;
    }
    recoveries.sort();
    println!(
        "  median {:.0} ms, max {:.0} ms",
        percentile(&recoveries, 0.5).as_secs_f64() * 1e3,
        recoveries.last().unwrap().as_secs_f64() * 1e3
    );
    cluster.shutdown().await;
}
