//! Raft bytes per finished run now that task logs stay out of Raft, on a 3-node plane over
//! mutual TLS on loopback (fsync'd redb logs, SQLite state machines, each node's logbook) with
//! one agent running real shell tasks on the system clock.
//!
//! First the plane idles with the agent connected for `BENCH_IDLE_SECONDS` (its heartbeats
//! are Raft entries too: their rate is taken off); then `BENCH_SCHEDULES` schedules fire every
//! second for `BENCH_SECONDS`, each run's one task writing `BENCH_LOG_BYTES` bytes. Raft bytes
//! are what the nodes' log stores appended (`meridian_raft_appended_bytes_total`), per node.
//! It also prints what the same runs' log pieces would add to the Raft log had they gone
//! through it as before (each one an `AgentReport` entry, JSON in the proposal): computed
//! from the pieces the logbooks hold, since that path is gone.
//!
//! Run by hand (figures go to BENCHMARKS.md):
//!   cargo bench -p meridian-tests --bench logs
//! Knobs: BENCH_SCHEDULES (default 20), BENCH_SECONDS (default 30), BENCH_LOG_BYTES (default
//! 1024), BENCH_IDLE_SECONDS (default 10).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use meridian_domain::OverlapPolicy;
use meridian_domain::run::{LogChunk, Report, ReportItem};
use meridian_plane::logs::across;
use meridian_plane::model::ReportEntry;
use meridian_tests::federation::{Federation, is_final};
use meridian_tests::knob;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

fn appended(f: &Federation) -> u64 {
    (0..3)
        .map(|i| {
            f.plane
                .node(i)
                .tally
                .raft_appended_bytes
                .load(Ordering::Relaxed)
        })
        .sum::<u64>()
        / 3
}

async fn bench() {
    let schedules = knob("BENCH_SCHEDULES", 20);
    let seconds = knob("BENCH_SECONDS", 30) as u64;
    let log_bytes = knob("BENCH_LOG_BYTES", 1024);
    let idle = knob("BENCH_IDLE_SECONDS", 10) as u64;
    let mut f = Federation::start_on_system_clock(3, 30).await;
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;

    let (start, at) = (appended(&f), Instant::now());
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let idle_rate = (appended(&f) - start) as f64 / at.elapsed().as_secs_f64();

    let script = format!("head -c {log_bytes} /dev/zero | tr '\\0' x");
    let (start, at) = (appended(&f), Instant::now());
    for i in 0..schedules {
        f.schedule(
            &format!("s{i}"),
            "* * * * * ?",
            &script,
            OverlapPolicy::Skip,
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    // Whatever fired is reported before the agent's stop returns.
    f.stop_agent("agent-1.test").await;
    let spent = at.elapsed().as_secs_f64();
    let raft = (appended(&f) - start) as f64 - idle_rate * spent;

    let mut runs = Vec::new();
    for i in 0..schedules {
        runs.extend(
            f.history(&format!("s{i}"))
                .await
                .into_iter()
                .filter(|r| is_final(&r.state)),
        );
    }
    let leader = f.plane.node(f.plane.leader().await);
    let (mut pieces, mut text, mut as_entries) = (0u64, 0u64, 0u64);
    for run in &runs {
        for (task, attempt) in across::attempts(leader, &run.run_id).await.unwrap() {
            let read = across::after(leader, &run.run_id, &task, attempt, -1, u64::MAX)
                .await
                .unwrap();
            for piece in read.pieces {
                pieces += 1;
                text += piece.data.len() as u64;
                let entry = ReportEntry {
                    seq: 1_000_000,
                    report: Report::V1 {
                        cluster: "main".into(),
                        partition: Some(15),
                        epoch: 12,
                        item: ReportItem::Log(LogChunk {
                            run_id: run.run_id.clone(),
                            task: task.clone(),
                            attempt,
                            offset: piece.offset as u64,
                            data: piece.data,
                        }),
                    },
                };
                // The entry in the proposal's JSON, and the comma before it.
                as_entries += serde_json::to_vec(&entry).unwrap().len() as u64 + 1;
            }
        }
    }
    let held: u64 = (0..3).map(|i| f.plane.node(i).logbook.stored_bytes()).sum();
    let n = runs.len().max(1) as f64;
    println!(
        "{} runs finished in {spent:.0} s ({:.1}/s), {pieces} log pieces, {text} bytes of log text",
        runs.len(),
        runs.len() as f64 / spent
    );
    println!(
        "idle (agent heartbeats): {:.0} Raft bytes/s per node, taken off below",
        idle_rate
    );
    println!(
        "Raft bytes per run per node: {:.0}; the same runs' log pieces as Raft entries (JSON, \
         as they went before logs left Raft) would add {:.0}",
        raft / n,
        as_entries as f64 / n
    );
    println!(
        "logbooks: {held} bytes held across the 3 nodes ({:.0} per run: once, on the node the agent reports to)",
        held as f64 / n
    );
    f.shutdown().await;
}
