//! A plane node joining beside a long run history (issue #21): a 3-node plane (in this
//! process, mutual TLS on loopback) whose two live nodes' history stores hold `BENCH_RUNS`
//! retired runs (default 1,000,000, one task attempt each), and a third that was down while
//! they were retired and the log was compacted past them, so it must catch up by a snapshot.
//!
//! Prints: the snapshot's size; the time from the node's start until it has installed the
//! snapshot and applied everything (a member again: it votes, serves reads of the model and
//! applies new entries) — independent of the history; and the time until its background copy
//! of the retired runs from a peer is done (`/readyz` ready), which is proportional to them, with
//! the copy's rate.
//!
//! The live stores are written through the store's own write path (`HistoryStore::put`, 5,000
//! runs a call), not through Raft: retiring a million runs through the apply would be the
//! retirement bench, not this one.
//!
//! Run by hand (figures go to BENCHMARKS.md):
//!   cargo bench -p meridian-tests --bench join
//! Knobs: BENCH_RUNS.

use std::time::{Duration, Instant};

use meridian_plane::model::query::{RunRecord, TaskAttempt};
use meridian_plane::model::retire::Retired;
use meridian_plane::model::{Command, DataCenter, Name, Proposal};
use meridian_tests::cluster::{Cluster, hostname};
use meridian_tests::knob;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

/// Retired run `i` of a history ending at `end_ms`, fired a second before the next.
fn run(i: u64, end_ms: i64) -> Retired {
    let fire = end_ms - i as i64 * 1000;
    let tenant = if i.is_multiple_of(2) { "ads" } else { "bi" };
    Retired {
        run: RunRecord {
            run_id: format!("{tenant}.hourly@{fire}-{i}"),
            tenant: tenant.into(),
            workflow: "etl".into(),
            workflow_version: 1,
            schedule: Some(format!("{tenant}.hourly")),
            fire_ms: Some(fire),
            environment: "prod".into(),
            cluster: "nj-main".into(),
            dc: "nj".into(),
            state: "succeeded".into(),
            agent: Some(format!("agent-{}", i % 7)),
            epoch: 1,
            requested_ms: None,
            queued_ms: None,
            started_ms: Some(fire + 40),
            finished_ms: Some(fire + 5040),
            lateness_ms: None,
            message: String::new(),
            starts: 1,
            order_ms: Some(fire + 5040),
            generation: 1,
            rerun_of: None,
            requested_by: None,
            kept: Vec::new(),
        },
        attempts: vec![TaskAttempt {
            task: "main".into(),
            attempt: 1,
            outcome: "succeeded".into(),
            started_ms: Some(fire + 40),
            finished_ms: Some(fire + 5040),
            exit_code: Some(0),
            message: String::new(),
            warning: String::new(),
        }],
    }
}

async fn write(cluster: &Cluster, command: Command) {
    let leader = cluster.leader().await;
    cluster
        .node(leader)
        .write(Proposal::new("bench", 0, command), Duration::from_secs(30))
        .await
        .expect("write");
}

fn du(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

async fn bench() {
    let runs = knob("BENCH_RUNS", 1_000_000);
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let down = (leader + 1) % 3;
    let live: Vec<usize> = (0..3).filter(|i| *i != down).collect();
    let mut cluster = cluster;
    cluster.kill(down).await;

    // The history, retired (as far as the model knows) through the leader's current entry.
    let through = cluster.node(leader).status().applied_index.unwrap();
    let end_ms = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    let mut next = 0;
    while next < runs {
        let batch: Vec<(u64, Retired)> = (next..(next + 5000).min(runs))
            .map(|i| (through, run(i, end_ms)))
            .collect();
        for i in &live {
            cluster.node(*i).state.history().put(&batch).await.unwrap();
        }
        next += batch.len() as u64;
    }
    for i in &live {
        sqlx::query("UPDATE counters SET value = ? WHERE name = 'retired_through'")
            .bind(through as i64)
            .execute(cluster.node(*i).state.pool())
            .await
            .unwrap();
    }
    println!(
        "history: {runs} retired runs written into both live nodes' stores in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Compacted past: the down node can only catch up by a snapshot.
    for k in 0..30 {
        write(
            &cluster,
            Command::CreateDataCenter(DataCenter {
                name: Name::new(format!("filler-{k}")).unwrap(),
                description: String::new(),
            }),
        )
        .await;
    }
    let raft = &cluster.node(leader).raft;
    raft.trigger().snapshot().await.unwrap();
    let last = cluster.node(leader).status().applied_index.unwrap();
    raft.wait(Some(Duration::from_secs(60)))
        .metrics(|m| m.snapshot.is_some_and(|s| s.index >= last), "snapshot")
        .await
        .unwrap();
    raft.trigger().purge_log(last).await.unwrap();
    let snapshots = cluster.dir.path().join(hostname(leader)).join("snapshots");
    println!(
        "snapshot: {:.1} MB (the model: definitions and open work)",
        du(&snapshots) as f64 / 1e6
    );

    let started = Instant::now();
    cluster.restart(down).await;
    loop {
        let applied = cluster.node(down).status().applied_index.unwrap_or(0);
        if applied >= last {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "no catch-up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let member = started.elapsed();
    println!(
        "joined: snapshot installed and applied through entry {last} {:.2} s after start",
        member.as_secs_f64()
    );
    let history = cluster.node(down).state.history();
    let mut reported = Instant::now();
    loop {
        if history.gaps().await.unwrap().is_empty() {
            break;
        }
        if reported.elapsed() > Duration::from_secs(10) {
            println!(
                "  copying: {} runs after {:.0} s",
                history.count().await.unwrap(),
                started.elapsed().as_secs_f64()
            );
            reported = Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(7200),
            "copy not done"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = started.elapsed();
    let copied = history.count().await.unwrap();
    assert_eq!(copied, runs, "every retired run copied");
    let copy = (ready - member).as_secs_f64();
    println!(
        "ready: every retired run copied from a peer {:.1} s after start ({copied} runs in \
         {copy:.1} s: {:.0} runs/s)",
        ready.as_secs_f64(),
        copied as f64 / copy.max(0.001)
    );
    cluster.shutdown().await;
}
