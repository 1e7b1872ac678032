//! Fault scenarios in the three-DC lab (`infra/lab`, release binaries, network namespaces).
//! Each one runs schedules throughout, breaks something on purpose, and ends with the history
//! checker reading the run history through the API: every fire record due in the scenario's
//! window ran exactly once, none twice, and every write the plane acknowledged is still there.
//!
//! Leases are 6 s and schedules fire every 2 s (20 s for the plane outage), so each scenario
//! takes seconds, not hours. The lab's nodes are real processes on the real clock: the pauses
//! below are how long a fault lasts, and every wait for an outcome is a poll with a deadline.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use meridian_tests::federation::is_final;
use meridian_tests::lab::{LAB_DIR, Lab};

const LEASE_SECONDS: u64 = 6;
const EVERY_2S: &str = "*/2 * * * * ?";

fn lease() -> Duration {
    Duration::from_secs(LEASE_SECONDS)
}

/// A line for CI's log, past the test harness's capture.
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

async fn pause(d: Duration) {
    tokio::time::sleep(d).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plane_leader_killed_then_restarted() {
    let mut lab = Lab::up(&[]);
    let s = lab.schedules(EVERY_2S);
    pause(Duration::from_secs(4)).await;
    let leader = lab.leader().await;
    let writer = lab.start_writer("while-leaderless");
    lab.ok(&["kill", &leader]);
    pause(Duration::from_secs(8)).await;
    let next = lab.leader().await;
    assert_ne!(next, leader, "a new leader was elected among the other two");
    lab.ok(&["start", &leader]);
    lab.wait_for_plane(Duration::from_secs(60)).await;
    pause(Duration::from_secs(4)).await;
    lab.finish_writer(writer);
    lab.finish("plane leader killed, restarted", &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_its_partitions_move_within_its_cluster() {
    // The central layout (every plane node in dc-a): dc-b's and dc-c's agents reach the plane
    // only by public addresses, dc-a's only by internal ones.
    let mut lab = Lab::up(&["--planes", "central"]);
    let s = lab.schedules(EVERY_2S);
    lab.wait_for_holders("a-main", &["agent-a1", "agent-a2"], lease() * 3)
        .await;
    pause(Duration::from_secs(4)).await;
    lab.ok(&["kill", "agent-a1"]);
    lab.wait_for_holders("a-main", &["agent-a2"], lease() * 4)
        .await;
    // What agent-a1 may have fired before its lease ran out is in doubt (takeover `wait`):
    // nobody runs it while it may yet report. It is not coming back: an operator settles it.
    // (Whether any is depends on which partitions agent-a1 held.)
    let listed = lab.cli(&["in-doubt"]);
    assert_eq!(listed.code, Some(0), "{listed:?}");
    println!("agent killed, in doubt:\n{}", listed.stdout.trim());
    assert!(
        listed
            .stdout
            .lines()
            .skip(1)
            .all(|l| l.contains("agent-a1.dc-a.example")),
        "only agent-a1's records are in doubt: {listed:?}"
    );
    let resolved = lab.cli(&["in-doubt", "resolve", "--run"]);
    assert_eq!(resolved.code, Some(0), "{resolved:?}");
    say(&format!("agent killed: {}", resolved.stdout.trim()));
    let after = lab.cli(&["in-doubt"]);
    assert_eq!(after.stdout.trim().lines().count(), 1, "settled: {after:?}");
    pause(Duration::from_secs(4)).await;
    lab.finish("agent killed", &s).await;
    let ran_by_a2 = lab.runs("a-one").await.unwrap();
    assert!(
        ran_by_a2
            .iter()
            .chain(lab.runs("a-two").await.unwrap().iter())
            .any(|r| r.agent.as_deref() == Some("agent-a2.dc-a.example")),
        "agent-a2 ran dc-a's schedules after agent-a1 died"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dc_public_link_cut_longer_then_shorter_than_the_lease() {
    let mut lab = Lab::up(&[]);
    let s = lab.schedules(EVERY_2S);
    pause(Duration::from_secs(4)).await;

    // Longer than the lease: dc-b fires up to its horizon, pauses, catches up after the heal.
    // dc-b's cluster has no backup, so nobody else may take its partitions meanwhile.
    let cut = Utc::now();
    lab.ok(&["cut", "b"]);
    pause(lease() * 2 + Duration::from_secs(4)).await;
    for lease in lab.leases().await.iter().filter(|l| l.cluster == "b-main") {
        assert!(
            lease
                .holder
                .as_deref()
                .is_none_or(|h| h == "agent-b1.dc-b.example"),
            "b-main's partitions stay with agent-b1 or nobody: {lease:?}"
        );
    }
    lab.ok(&["heal", "b"]);
    let healed = std::time::Instant::now();
    let so_far = lab
        .check(
            "after the long cut",
            &s[2],
            Utc::now(),
            Duration::from_secs(90),
        )
        .await;
    println!(
        "dc-b caught up {:.1} s after the heal: {so_far}",
        healed.elapsed().as_secs_f64()
    );
    let b = lab.runs("b-one").await.unwrap();
    let caught_up = b
        .iter()
        .filter(|r| r.fire_ms.unwrap() > cut.timestamp_millis())
        .filter(|r| r.lateness_ms.unwrap_or(0) > (LEASE_SECONDS as i64) * 1000 / 2)
        .count();
    assert!(
        caught_up > 0,
        "records due after dc-b's horizon ran late, on catch-up: {b:?}"
    );

    // Shorter than the lease: dc-b keeps firing on time; its reports arrive after the heal.
    let cut = Utc::now();
    lab.ok(&["cut", "b"]);
    pause(lease() / 2).await;
    lab.ok(&["heal", "b"]);
    let healed = Utc::now();
    pause(Duration::from_secs(6)).await;
    lab.finish("dc-b cut beyond, then within, its lease", &s)
        .await;
    let during: Vec<_> = lab
        .runs("b-one")
        .await
        .unwrap()
        .into_iter()
        .filter(|r| {
            let fire = r.fire_ms.unwrap();
            fire > cut.timestamp_millis() && fire <= healed.timestamp_millis()
        })
        .collect();
    assert!(!during.is_empty(), "records fell due during the short cut");
    for r in &during {
        assert!(
            r.lateness_ms.unwrap() < 1500,
            "a cut within the lease does not delay firing: {r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dc_a_cut_past_its_lease_its_backup_takes_over_and_nothing_runs_twice() {
    // Both of a-main's agents are cut off together (the DC's uplink): the plane (majority in
    // dc-b and dc-c) grants their partitions to neither — it does not hear them — but to the
    // backup cluster's agent once their leases ran out. What they fired up to then is in doubt
    // (takeover `wait`): b2 runs none of it; after the heal their reports settle it.
    let mut lab = Lab::up(&[]);
    let s = lab.schedules(EVERY_2S);
    lab.wait_for_holders("a-main", &["agent-a1", "agent-a2"], lease() * 3)
        .await;
    pause(Duration::from_secs(4)).await;
    lab.ok(&["cut", "a"]);
    lab.wait_for_holders("a-main", &["agent-b2"], lease() * 4)
        .await;
    pause(Duration::from_secs(4)).await;
    let doubted = lab.in_doubt().await;
    lab.ok(&["heal", "a"]);
    lab.wait_until_settled(lease() * 4).await;
    lab.wait_for_holders("a-main", &["agent-a1", "agent-a2"], lease() * 4)
        .await;
    pause(Duration::from_secs(4)).await;
    say(&format!(
        "dc-a cut: {doubted} records in doubt, settled by the heal"
    ));
    lab.finish("dc-a cut past its lease, backup takeover (wait)", &s)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_frozen_past_its_lease_starts_nothing_when_it_wakes() {
    // agent-a1 stopped with SIGSTOP — between taking records and starting them, as far as it
    // can tell — well past its lease; a2 takes its partitions. Woken, it starts none of what it
    // had taken (its lease is gone: each goes back, for a2 to run), and what it may have fired
    // before the freeze is settled by its reports.
    let mut lab = Lab::up(&[]);
    let s = lab.schedules(EVERY_2S);
    lab.wait_for_holders("a-main", &["agent-a1", "agent-a2"], lease() * 3)
        .await;
    pause(Duration::from_secs(4)).await;
    lab.ok(&["freeze", "agent-a1"]);
    lab.wait_for_holders("a-main", &["agent-a2"], lease() * 4)
        .await;
    pause(lease()).await;
    let doubted = lab.in_doubt().await;
    lab.ok(&["thaw", "agent-a1"]);
    lab.wait_until_settled(lease() * 4).await;
    pause(Duration::from_secs(4)).await;
    say(&format!(
        "agent-a1 frozen: {doubted} records in doubt, settled once it woke"
    ));
    lab.finish("a holder frozen past its lease, then woken", &s)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_agent_killed_with_tasks_running_reattaches_and_leaves_no_process_behind() {
    // Tasks that take five seconds, every agent killed (SIGKILL) while some run. Their
    // supervisors keep them going; each agent, restarted, re-attaches and records how they
    // really ended (succeeded), with nothing left over, lost or run twice.
    let mut lab = Lab::up(&[]);
    lab.task_seconds = 5;
    let s = lab.schedules(EVERY_2S);
    // Killed while tasks run: wait until some do (the agents pick the schedules up within a
    // heartbeat or two; each task then runs 5 s, longer than the five kills take).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let runs_going = || {
        lab_tasks()
            .into_iter()
            .filter_map(run_of)
            .collect::<BTreeSet<String>>()
    };
    while runs_going().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "three runs were not going at once within 30 s"
        );
        pause(Duration::from_millis(100)).await;
    }
    const AGENTS: [&str; 5] = ["agent-a1", "agent-a2", "agent-b1", "agent-b2", "agent-c1"];
    // The runs going as the kills begin: some end while no agent is there, some go on.
    let mut going = runs_going();
    for agent in AGENTS {
        lab.ok(&["kill", agent]);
    }
    let left = lab_tasks();
    assert!(
        !left.is_empty(),
        "the killed agents' tasks go on under their supervisors"
    );
    going.extend(left.iter().filter_map(|pid| run_of(*pid)));
    for agent in AGENTS {
        lab.ok(&["start", agent]);
    }
    // Every run going at the kill ends as its task did: succeeded.
    let deadline = std::time::Instant::now() + lease() * 4;
    let ended = loop {
        let mut ended = Vec::new();
        for run in &going {
            let schedule = run
                .strip_prefix("lab.")
                .and_then(|r| r.split_once('@'))
                .map_or("", |(s, _)| s);
            let runs = lab.runs(schedule).await.unwrap_or_default();
            if let Some(r) = runs.iter().find(|r| r.run_id == *run && is_final(&r.state)) {
                ended.push(r.clone());
            }
        }
        if ended.len() == going.len() {
            break ended;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "runs going at the kill not ended yet: {} of {}",
            going.len() - ended.len(),
            going.len()
        );
        pause(Duration::from_millis(250)).await;
    };
    assert!(
        ended.iter().all(|r| r.state == "succeeded"),
        "the runs going at the kill end as their tasks did: {ended:#?}"
    );
    // No orphan: every process those runs had is gone (checked in the namespaces' shared
    // process table).
    let still: Vec<u32> = lab_tasks()
        .into_iter()
        .filter(|pid| left.contains(pid))
        .collect();
    assert!(
        still.is_empty(),
        "processes of ended runs still running: {still:?}"
    );
    say(&format!(
        "every agent killed: {} runs going at the kill ({} processes still running after it), \
         all re-attached and recorded succeeded; no process left",
        going.len(),
        left.len()
    ));
    pause(Duration::from_secs(6)).await;
    lab.finish("every agent killed with tasks running", &s)
        .await;
}

/// The run a process's environment names (`MERIDIAN_RUN_ID`).
fn run_of(pid: u32) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0)
        .find_map(|e| e.strip_prefix(b"MERIDIAN_RUN_ID="))
        .map(|id| String::from_utf8_lossy(id).into_owned())
}

/// The processes of the lab's tasks now: every process whose environment names a run of
/// tenant `lab` (the lab's nodes share this machine's process table; network namespaces only).
fn lab_tasks() -> Vec<u32> {
    meridian_tests::process::processes_whose_env(|entry| entry.starts_with(b"MERIDIAN_RUN_ID=lab."))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_plane_node_stopped_for_three_minutes() {
    let outage = Duration::from_secs(meridian_tests::knob("LAB_OUTAGE_SECONDS", 180));
    let mut lab = Lab::up(&[]);
    let mut s = lab.schedules("*/20 * * * * ?");
    // Catch-up `none`: what falls due while dc-b's agent is paused is recorded as skipped.
    s.push(lab.schedule_with("b-none", "b-prod", "*/20 * * * * ?", "none"));
    pause(Duration::from_secs(22)).await;
    let stopped = Utc::now();
    for node in ["plane-1", "plane-2", "plane-3"] {
        lab.ok(&["stop", node]);
    }
    // An agent may renew its lease with a node not yet stopped: its horizon counts from the
    // last stop, not the first.
    let all_stopped = Utc::now();
    pause(outage).await;
    let restarted = Utc::now();
    for node in ["plane-1", "plane-2", "plane-3"] {
        lab.ok(&["start", node]);
    }
    lab.wait_for_plane(Duration::from_secs(60)).await;
    pause(Duration::from_secs(4)).await;
    let summary = lab.finish("plane stopped for the outage", &s).await;
    // Skipped exactly as `none` says: every record of b-none due after the agent's horizon and
    // before the plane was back, and nothing due before the outage.
    let none = lab.runs("b-none").await.unwrap();
    let horizon = all_stopped.timestamp_millis() + (LEASE_SECONDS as i64) * 1000;
    for r in &none {
        let fire = r.fire_ms.unwrap();
        if fire > horizon && fire <= restarted.timestamp_millis() {
            assert_eq!(r.state, "skipped", "missed while paused: {r:?}");
        }
        if fire <= stopped.timestamp_millis() || fire > restarted.timestamp_millis() + 30_000 {
            assert_ne!(r.state, "skipped", "due while an agent held it: {r:?}");
        }
    }
    let skipped = none.iter().filter(|r| r.state == "skipped").count();
    let paused = (outage.as_secs() as usize).saturating_sub(LEASE_SECONDS as usize) / 20;
    assert!(
        skipped >= paused.saturating_sub(1) && summary.skipped == skipped,
        "the outage skipped b-none's records ({skipped}, about {paused} expected): {summary}"
    );
    // Caught up in fire order: dispatched (queued) in fire order; runs dispatched together
    // (the catch-up rate allows a second's worth at once) share a queued time.
    for one in &s {
        let mut runs = lab.runs(&one.name).await.unwrap();
        runs.retain(|r| r.state != "skipped");
        runs.sort_by_key(|r| r.fire_ms);
        let dispatched: Vec<i64> = runs
            .iter()
            .filter_map(|r| r.queued_ms.or(r.started_ms))
            .collect();
        assert_eq!(dispatched.len(), runs.len(), "every run started: {runs:?}");
        assert!(
            dispatched.windows(2).all(|w| w[0] <= w[1]),
            "{} ran its records in fire order: {runs:?}",
            one.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_every_plane_node() {
    let mut lab = Lab::up(&[]);
    let s = lab.schedules(EVERY_2S);
    pause(Duration::from_secs(4)).await;
    let writer = lab.start_writer("while-rolling");
    for node in ["plane-1", "plane-2", "plane-3"] {
        lab.ok(&["stop", node]);
        pause(Duration::from_secs(2)).await;
        lab.ok(&["start", node]);
        lab.wait_for_plane(Duration::from_secs(60)).await;
    }
    pause(Duration::from_secs(4)).await;
    lab.finish_writer(writer);
    lab.finish("rolling restart of the plane", &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_cluster_lost_backup_takes_over_and_hands_back() {
    let mut lab = Lab::up(&[]);
    let s = lab.schedules(EVERY_2S);
    pause(Duration::from_secs(4)).await;
    lab.ok(&["kill", "agent-a1"]);
    lab.ok(&["kill", "agent-a2"]);
    lab.wait_for_holders("a-main", &["agent-b2"], lease() * 4)
        .await;
    pause(Duration::from_secs(6)).await;
    lab.ok(&["start", "agent-a1"]);
    lab.ok(&["start", "agent-a2"]);
    lab.wait_for_holders("a-main", &["agent-a1", "agent-a2"], lease() * 4)
        .await;
    pause(Duration::from_secs(4)).await;
    lab.finish("active cluster lost", &s).await;
    let a = lab.runs("a-one").await.unwrap();
    assert!(
        a.iter()
            .any(|r| r.agent.as_deref() == Some("agent-b2.dc-b.example")),
        "the backup cluster's agent ran dc-a's schedule: {a:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_dialling_a_same_dc_plane_node_by_its_public_address_is_a_config_error() {
    let mut lab = Lab::up(&[]);
    let s = lab.schedules(EVERY_2S);
    let config = format!("{LAB_DIR}/agent-b1/agent.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    // plane-2 is in dc-b: name it by its public address, and dial it first.
    let bad = good
        .replace(
            "\"plane-2.dc-b.example\" = \"10.2.0.12\"",
            "\"plane-2.dc-b.example\" = \"203.0.113.12\"",
        )
        .replace(
            "plane = [\"plane-1.dc-a.example:7443\", \"plane-2.dc-b.example:7443\"",
            "plane = [\"plane-2.dc-b.example:7443\", \"plane-1.dc-a.example:7443\"",
        );
    assert_ne!(bad, good, "the example config has the expected lines");
    std::fs::write(&config, &bad).unwrap();
    lab.ok(&["stop", "agent-b1"]);
    lab.ok(&["start", "agent-b1"]);
    lab.wait_for_holders("b-main", &["agent-b1"], lease() * 3)
        .await;
    // Both the config and the live connection are reported.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let found = loop {
        let out = meridian_tests::lab::lab(&["check"]);
        if out.stderr.contains("is connected to") || std::time::Instant::now() > deadline {
            break out;
        }
        pause(Duration::from_millis(500)).await;
    };
    assert_eq!(found.code, Some(1), "{found:?}");
    for needle in [
        "configuration error: agent-b1 (agent-b1.dc-b.example, dc-b): hosts maps plane-2.dc-b.example (dc-b) to 203.0.113.12, its public address; it must be 10.2.0.12",
        "configuration error: agent-b1 (agent-b1.dc-b.example, dc-b) is connected to plane-2.dc-b.example at its public address 203.0.113.12 from inside dc-b; it must dial 10.2.0.12",
    ] {
        assert!(found.stderr.contains(needle), "lacks `{needle}`: {found:?}");
    }
    // Mended, the check passes again.
    std::fs::write(&config, &good).unwrap();
    lab.ok(&["stop", "agent-b1"]);
    lab.ok(&["start", "agent-b1"]);
    lab.wait_for_holders("b-main", &["agent-b1"], lease() * 3)
        .await;
    pause(Duration::from_secs(2)).await;
    lab.finish("same-DC public address", &s).await;
}
