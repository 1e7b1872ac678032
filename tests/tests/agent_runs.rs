//! The agent against a real plane, in process, on a manual clock: leases, the 50-record
//! buffer, firing, shell tasks, the outbox, and the run history they produce.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use meridian_agent::supervisor::Supervision;
use meridian_domain::Clock;
use meridian_domain::run::{LogChunk, Report, ReportItem, RunEvent, RunState};
use meridian_domain::workflow::WorkflowDefinition;
use meridian_domain::{OverlapPolicy, ScheduleSpec, WINDOW};
use meridian_plane::model::{Command, Environment, Grant, Name, Schedule, Tenant, Workflow, query};
use meridian_tests::cluster::PATIENCE;
use meridian_tests::federation::{Federation, check, epoch, name};

const EVERY_10S: &str = "0/10 * * * * ?";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_runs_fire_on_time_once_each_with_their_logs() {
    let mut f = Federation::start(1, 30).await;
    f.schedule(
        "hello",
        EVERY_10S,
        "echo \"$GREETING from $MERIDIAN_RUN_ID\"",
        OverlapPolicy::Skip,
    )
    .await;
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    let agent = f.agent("agent-1.test");
    f.wait_until("the buffer to hold 50 records", || async {
        agent.buffer().count("ads.hello").await.unwrap() == WINDOW as u64
    })
    .await;

    f.advance(Duration::from_secs(60), Duration::from_secs(2))
        .await;
    let runs = f.wait_for_history("hello", 6).await;
    let summary = check(
        "on time",
        EVERY_10S,
        epoch(),
        epoch() + chrono::TimeDelta::seconds(60),
        &runs,
    );
    assert_eq!(
        (summary.due, summary.ran, summary.lost, summary.duplicated),
        (6, 6, 0, 0)
    );
    for r in &runs {
        assert_eq!(r.state, "succeeded", "{r:?}");
        assert_eq!(r.agent.as_deref(), Some("agent-1.test"));
        let lateness = r.lateness_ms.expect("started");
        assert!((0..=2_000).contains(&lateness), "lateness {lateness} ms");
    }
    // The buffer was refilled as records were consumed.
    assert_eq!(
        agent.buffer().count("ads.hello").await.unwrap(),
        WINDOW as u64
    );

    let leader = f.plane.leader().await;
    let pool = f.plane.node(leader).state.pool().clone();
    let logs = f.logs(&runs[0].run_id).await.unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].text, format!("hello from {}\n", runs[0].run_id));
    // The logs never went through Raft: no node's replicated model holds a byte of them, the
    // logbooks of the nodes the agent reported to do, and every node reads them all.
    let mut held = 0;
    for i in 0..f.plane.size() {
        let node = f.plane.node(i);
        let in_model: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM run_logs")
            .fetch_one(node.state.pool())
            .await
            .unwrap();
        assert_eq!(in_model, 0, "node {i} holds logs in its model");
        held += node.logbook.stored_bytes();
        for r in &runs {
            let logs = meridian_plane::logs::across::logs(node, &r.run_id)
                .await
                .unwrap();
            assert_eq!(logs.len(), 1, "node {i}: {logs:?}");
            assert_eq!(logs[0].text, format!("hello from {}\n", r.run_id));
        }
    }
    assert!(
        held >= runs.len() as u64 * 20,
        "{held} bytes in the logbooks"
    );
    // Retention: the plane's 30 days by default, the tenant's own once it has one.
    let later = meridian_domain::ManualClock::at(epoch() + chrono::TimeDelta::days(8));
    let sweep = |i: usize| meridian_plane::logbook::sweep::Sweeper {
        logbook: f.plane.node(i).logbook.clone(),
        model: f.plane.node(i).state.pool().clone(),
        clock: std::sync::Arc::new(later.clone()),
    };
    for i in 0..f.plane.size() {
        assert_eq!(sweep(i).sweep().await.unwrap(), 0);
    }
    f.write(Command::UpdateTenant(Tenant {
        name: Name::new("ads").unwrap(),
        description: String::new(),
        log_retention_days: Some(7),
        history_retention_days: None,
    }))
    .await;
    for i in 0..f.plane.size() {
        f.plane.node(i).read_barrier(PATIENCE).await.unwrap();
        sweep(i).sweep().await.unwrap();
        assert_eq!(f.plane.node(i).logbook.stored_bytes(), 0, "node {i}");
    }
    assert!(f.logs(&runs[0].run_id).await.unwrap().is_empty());
    let attempts = query::attempts_in(&pool, &runs[0].run_id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "succeeded");
    assert_eq!(attempts[0].exit_code, Some(0));

    // The agent made its own files private when it started, and each run's directory is the
    // run's alone.
    let data = f.agent_dir("agent-1.test");
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().mode() & 0o7777;
    assert_eq!(mode(&data), 0o711);
    assert_eq!(mode(&data.join("agent.db")), 0o600);
    assert_eq!(mode(&data.join("resources")), 0o700);
    assert_eq!(mode(&data.join("runs")), 0o711);
    assert_eq!(mode(&data.join("runs").join(&runs[0].run_id)), 0o700);
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_in_an_environment_that_maps_no_os_user_fails_saying_what_to_set() {
    let mut f = Federation::start(1, 30).await;
    // Like `prod`, but as an environment is by default: no user for any tenant, and the
    // agent's own user not allowed.
    f.write(Command::CreateEnvironment(Environment {
        name: name("bare"),
        cluster: name("main"),
        vars: Default::default(),
        work_dir: None,
        queue: None,
        run_as: Default::default(),
    }))
    .await;
    f.write(Command::CreateGrant(Grant {
        tenant: name("ads"),
        environment: name("bare"),
        max_concurrent_runs: 10,
    }))
    .await;
    f.write(Command::ApplyWorkflow(Workflow {
        tenant: name("ads"),
        name: name("bare"),
        environment: None,
        definition: WorkflowDefinition {
            tasks: vec![meridian_domain::workflow::TaskSpec {
                retries: 3,
                ..WorkflowDefinition::shell("main", "echo ran")
                    .tasks
                    .remove(0)
            }],
        },
    }))
    .await;
    f.write(Command::CreateSchedule(Schedule {
        tenant: name("ads"),
        name: name("bare"),
        workflow: name("bare"),
        environment: name("bare"),
        spec: ScheduleSpec::cron(EVERY_10S),
        overlap: OverlapPolicy::AllowAll,
        takeover: Default::default(),
    }))
    .await;
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    f.advance(Duration::from_secs(10), Duration::from_secs(2))
        .await;
    let runs = f.wait_for_history("bare", 1).await;
    let run = &runs[0];
    assert_eq!(run.state, "failed", "{run:?}");
    assert!(
        run.message.starts_with(
            "task `main` could not start: refusing to run tenant `ads`'s task as the agent's \
             own user `"
        ) && run.message.contains(
            "environment `bare` maps no OS user for the tenant; set run_as.tenants.ads or \
             run_as.default on the environment"
        ),
        "{}",
        run.message
    );
    let leader = f.plane.leader().await;
    let pool = f.plane.node(leader).state.pool().clone();
    // One attempt, not retried; nothing ran.
    let attempts = query::attempts_in(&pool, &run.run_id).await.unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].outcome, "failed");
    let logs = f.logs(&run.run_id).await.unwrap();
    assert!(logs.iter().all(|l| !l.text.contains("ran\n")), "{logs:?}");
    f.shutdown().await;
}

const EVERY_20S: &str = "0/20 * * * * ?";

fn secs(s: i64) -> chrono::DateTime<chrono::Utc> {
    epoch() + chrono::TimeDelta::seconds(s)
}

/// A slow first run of schedule `slow` (every 10 s) on `agent-1.test`: it prints `begin`,
/// waits for gate `one`, prints `middle`, waits for gate `two`, prints `end`. Later runs print
/// `done` at once. Returns the federation, the first run's id and the gates' paths.
async fn slow_first_run(f: &mut Federation) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let marker = f.plane.dir.path().join("first-run");
    let (one, two) = (
        f.plane.dir.path().join("one"),
        f.plane.dir.path().join("two"),
    );
    let wait = |g: &std::path::Path| format!("while [ ! -e {} ]; do sleep 0.05; done", g.display());
    let script = format!(
        "if [ ! -e {m} ]; then touch {m}; echo begin; {w1}; echo middle; {w2}; echo end; \
         else echo done; fi",
        m = marker.display(),
        w1 = wait(&one),
        w2 = wait(&two),
    );
    f.schedule("slow", EVERY_10S, &script, OverlapPolicy::AllowAll)
        .await;
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    f.advance(Duration::from_secs(10), Duration::from_secs(10))
        .await;
    // Going, with the first part of its log at the plane.
    f.wait_until("the first run's `begin` to reach the plane", || async {
        let Some(run) = f.history("slow").await.first().cloned() else {
            return false;
        };
        let logs = f.logs(&run.run_id).await.unwrap();
        logs.iter().any(|l| l.text.contains("begin"))
    })
    .await;
    (f.history("slow").await[0].run_id.clone(), one, two)
}

/// Once the restarted agent holds its partitions again, the next 30 s: `slow`'s four records
/// due by then, each run once, none lost; its history.
async fn after_the_restart(f: &Federation) -> Vec<meridian_plane::model::query::RunRecord> {
    f.wait_for_partitions("agent-1.test", 16).await;
    f.advance(Duration::from_secs(30), Duration::from_secs(2))
        .await;
    let runs = f.wait_for_history("slow", 4).await;
    let summary = check("agent restart mid-run", EVERY_10S, epoch(), secs(40), &runs);
    assert_eq!(
        (summary.due, summary.lost, summary.duplicated),
        (4, 0, 0),
        "{runs:#?}"
    );
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_mid_run_reattaches_and_records_the_real_outcome_and_whole_log() {
    let mut f = Federation::start(1, 30).await;
    let (first, one, two) = slow_first_run(&mut f).await;
    // Killed: the task goes on under the supervisor, and writes while no agent is there.
    f.kill_agent("agent-1.test").await;
    assert!(
        !running_for(&first).is_empty(),
        "the run's task goes on under the supervisor"
    );
    std::fs::write(&one, "").unwrap();
    f.start_agent("agent-1.test", "main").await;
    assert!(
        !running_for(&first).is_empty(),
        "the restarted agent re-attaches rather than kill"
    );
    std::fs::write(&two, "").unwrap();
    let runs = after_the_restart(&f).await;
    assert!(runs.iter().all(|r| r.state == "succeeded"), "{runs:#?}");
    let pool = f.plane.node(f.plane.leader().await).state.pool().clone();
    // One attempt, ended as it really did; its log whole, nothing twice.
    let attempts = query::attempts_in(&pool, &first).await.unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(
        (attempts[0].outcome.as_str(), attempts[0].exit_code),
        ("succeeded", Some(0))
    );
    let log: String = f
        .logs(&first)
        .await
        .unwrap()
        .iter()
        .map(|l| l.text.as_str())
        .collect();
    assert_eq!(log, "begin\nmiddle\nend\n");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_supervisor_gone_too_the_tasks_are_killed_before_the_run_is_recorded_failed() {
    let mut f = Federation::start(1, 30).await;
    // A supervisor process of its own (`meridian-agent supervise`), to be killed.
    f.supervision = Supervision::Program(meridian_tests::binary("meridian-agent"));
    let (first, _one, _two) = slow_first_run(&mut f).await;
    let dir = f.agent_dir("agent-1.test").join("supervisor");
    let supervisors = supervisors_of(&dir);
    assert_eq!(supervisors.len(), 1, "one supervisor for the agent");
    f.kill_agent("agent-1.test").await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &supervisors[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(
        !running_for(&first).is_empty(),
        "the run's processes outlive both, unsupervised"
    );
    f.start_agent("agent-1.test", "main").await;
    // The restarted agent kills them before it records the run failed.
    assert!(running_for(&first).is_empty(), "{:?}", running_for(&first));
    let runs = after_the_restart(&f).await;
    assert_eq!(runs[0].state, "failed");
    assert!(
        runs[0]
            .message
            .contains("the agent and the supervisor stopped")
            && runs[0]
                .message
                .contains("process(es) it left running were killed"),
        "{}",
        runs[0].message
    );
    assert!(
        runs[1..].iter().all(|r| r.state == "succeeded"),
        "{runs:#?}"
    );
    // The agent started a new supervisor, which runs the later tasks.
    assert_eq!(supervisors_of(&dir).len(), 1);
    f.shutdown().await;
}

/// The supervisor processes serving `dir` (by their command line).
fn supervisors_of(dir: &std::path::Path) -> Vec<u32> {
    let wanted = format!("supervise\0--dir\0{}\0", dir.display());
    meridian_tests::process::processes_whose("cmdline", |c| {
        String::from_utf8_lossy(c).contains(&wanted)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_three_minute_plane_outage_every_missed_record_runs_once_in_order() {
    let mut f = Federation::start(1, 30).await;
    f.schedule("every20", EVERY_20S, "echo ran", OverlapPolicy::AllowAll)
        .await;
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    f.advance(Duration::from_secs(40), Duration::from_secs(5))
        .await;
    f.wait_for_history("every20", 2).await;

    // The whole plane is down for three minutes. The agent keeps firing until its lease runs
    // out (the autonomy horizon), then pauses.
    f.plane.kill(0).await;
    f.advance(Duration::from_secs(180), Duration::from_secs(5))
        .await;
    f.plane.restart(0).await;

    let runs = f.wait_for_history("every20", 11).await;
    let summary = check(
        "3-minute plane outage",
        EVERY_20S,
        epoch(),
        secs(220),
        &runs,
    );
    assert_eq!(
        (summary.due, summary.ran, summary.lost, summary.duplicated),
        (11, 11, 0, 0),
        "{runs:#?}"
    );
    // Fired on time while the lease held; the rest caught up after the outage, in fire order.
    let starts: Vec<i64> = runs.iter().map(|r| r.started_ms.unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
    assert!(
        runs.iter().any(|r| r.lateness_ms.unwrap() >= 60_000),
        "some records ran late, after the outage: {runs:#?}"
    );
    f.wait_until("the outbox to drain", || async {
        f.agent("agent-1.test").outbox_len().await == 0
    })
    .await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agents_partitions_move_after_the_lease_and_nothing_is_lost_or_doubled() {
    let mut f = Federation::start(1, 10).await;
    f.schedule("moving", EVERY_10S, "echo ran", OverlapPolicy::AllowAll)
        .await;
    f.start_two_agents_holding_half().await;
    // In 1 s steps: a single 10 s step would be the whole lease, and whichever agent
    // heartbeated first after it would be given every partition for a moment.
    f.advance(Duration::from_secs(10), Duration::from_secs(1))
        .await;
    let (owner, survivor) = f.runner_and_other("moving").await;
    let survivor = survivor.as_str();
    // Its lease renewed at 0:10 (not at 0:09, the step before) runs to 0:20: the 0:20 record
    // is one it may have fired.
    f.wait_heard_now(&owner).await;

    f.kill_agent(&owner).await;
    f.advance(Duration::from_secs(40), Duration::from_secs(1))
        .await;
    f.wait_for_partitions(survivor, 16).await;
    // What the killed agent may have fired before its lease ran out is in doubt (takeover
    // `wait`): nobody runs it while the agent may yet report it.
    let leader = f.plane.leader().await;
    let pool = f.plane.node(leader).state.pool().clone();
    let in_doubt = || async {
        let mut conn = pool.acquire().await.unwrap();
        meridian_plane::model::doubt::list(&mut conn, None)
            .await
            .unwrap()
    };
    let doubts = in_doubt().await;
    assert_eq!(doubts.len(), 1, "{doubts:#?}");
    assert_eq!(doubts[0].holder, owner);
    // The machine comes back: the restarted agent has every report of what it held before
    // committed, says so, and what it never ran goes to the survivor.
    f.start_agent(&owner, "main").await;
    f.wait_until("the doubt to settle", || async {
        in_doubt().await.is_empty()
    })
    .await;
    f.advance(Duration::from_secs(2), Duration::from_secs(1))
        .await;
    let runs = f.wait_for_history("moving", 5).await;
    let summary = check("agent killed", EVERY_10S, epoch(), secs(50), &runs);
    assert_eq!(
        (summary.due, summary.lost, summary.duplicated),
        (5, 0, 0),
        "{runs:#?}"
    );
    assert_eq!(runs.last().unwrap().agent.as_deref(), Some(survivor));
    f.wait_until("every run to finish", || async {
        f.history("moving")
            .await
            .iter()
            .all(|r| r.state == "succeeded")
    })
    .await;
    f.shutdown().await;
}

/// A graceful stop (SIGTERM, Ctrl-C in `meridian dev`): no new fire starts, the run going
/// finishes, every report about it reaches the plane before the agent is gone, and its
/// partitions are handed over at once, not after the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_finishes_the_run_going_reports_it_and_hands_over_at_once() {
    let mut f = Federation::start(1, 30).await;
    let gate = f.plane.dir.path().join("gate");
    let script = format!(
        "echo begin; while [ ! -e {g} ]; do sleep 0.05; done; echo end",
        g = gate.display()
    );
    f.schedule("slowish", EVERY_10S, &script, OverlapPolicy::Skip)
        .await;
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    f.start_agent("agent-2.test", "main").await;
    f.wait_until("the partitions to be shared", || async {
        f.holding("agent-1.test", "main") == 8 && f.holding("agent-2.test", "main") == 8
    })
    .await;
    f.advance(Duration::from_secs(10), Duration::from_secs(10))
        .await;
    f.wait_until("the run to be going", || async {
        f.history("slowish")
            .await
            .first()
            .is_some_and(|r| r.state == "started")
    })
    .await;
    let holder = f.history("slowish").await[0]
        .agent
        .clone()
        .expect("started");
    let other = if holder == "agent-1.test" {
        "agent-2.test"
    } else {
        "agent-1.test"
    };
    // The run ends once the stop has begun (it waits for it: `kill_grace_seconds`, 2 s).
    std::fs::write(&gate, "").unwrap();
    f.stop_agent(&holder).await;
    // Everything about the run was reported before the stop returned.
    let runs = f.history("slowish").await;
    assert_eq!(runs[0].state, "succeeded", "{runs:#?}");
    let log: String = f
        .logs(&runs[0].run_id)
        .await
        .unwrap()
        .iter()
        .map(|c| c.text.as_str())
        .collect();
    assert_eq!(log, "begin\nend\n");
    // The partitions move to the other agent without waiting out the 30 s lease (the clock
    // does not move).
    f.wait_for_partitions(other, 16).await;
    f.shutdown().await;
}

/// The live processes whose environment names run `run_id` (as every task's does).
fn running_for(run_id: &str) -> Vec<u32> {
    let needle = format!("MERIDIAN_RUN_ID={run_id}");
    meridian_tests::process::processes_whose_env(|entry| entry == needle.as_bytes())
}

/// Issue #20: a paused schedule fires nothing — the ledger its task writes gains no line while
/// its due records are recorded skipped (paused) — and a resume with catch-up runs, once each,
/// exactly the skipped records its catch-up policy keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_schedule_fires_nothing_and_a_resume_catches_up_what_its_policy_keeps() {
    use meridian_domain::{CatchUpPolicy, Clock};
    use meridian_plane::model::{Pause, PauseScope, Resume};
    let mut f = Federation::start(1, 30).await;
    let ledger = f.plane.dir.path().join("ledger");
    let lines = || -> Vec<i64> {
        std::fs::read_to_string(&ledger)
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect()
    };
    let policy = CatchUpPolicy::All {
        window_seconds: 45,
        max: 50,
    };
    f.schedule_spec(
        "held",
        ScheduleSpec {
            catch_up: policy,
            ..ScheduleSpec::cron(EVERY_10S)
        },
        &format!("echo $MERIDIAN_FIRE_MS >> {}", ledger.display()),
        OverlapPolicy::AllowAll,
    )
    .await;
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    f.advance(Duration::from_secs(30), Duration::from_secs(2))
        .await;
    let ran = f.wait_for_history("held", 3).await.len();

    // The workflow paused: every schedule running it is held still.
    let scope = PauseScope::Workflow {
        tenant: name("ads"),
        name: name("held"),
    };
    f.write(Command::Pause(Pause {
        scope: scope.clone(),
        reason: "release".into(),
    }))
    .await;
    let agent = f.agent("agent-1.test");
    f.wait_until("the agent to hold the schedule paused", || async {
        agent
            .buffer()
            .assigned("ads.held")
            .is_some_and(|a| a.paused)
    })
    .await;
    let before = lines();
    assert_eq!(before.len(), ran, "one line per run");
    f.advance(Duration::from_secs(60), Duration::from_secs(2))
        .await;
    let runs = f.wait_for_history("held", ran + 6).await;
    let skipped: Vec<i64> = runs
        .iter()
        .filter(|r| r.state == "skipped" && r.message == "paused")
        .map(|r| r.fire_ms.unwrap())
        .collect();
    assert!(skipped.len() >= 6, "{runs:#?}");
    assert_eq!(lines(), before, "nothing ran while paused");

    // Resumed with catch-up: the records of the last 45 s run, the older ones stay skipped.
    let now = f.clock.now();
    let applied = f
        .write(Command::Resume(Resume {
            scope,
            catch_up: true,
        }))
        .await;
    let records: Vec<meridian_domain::FireRecord> = skipped
        .iter()
        .map(|ms| {
            meridian_domain::FireRecord::new(
                meridian_domain::ScheduleId::new("ads.held").unwrap(),
                chrono::DateTime::from_timestamp_millis(*ms).unwrap(),
            )
        })
        .collect();
    let kept: Vec<i64> = policy
        .decide(&records, now)
        .run
        .iter()
        .map(|r| r.fire_at.timestamp_millis())
        .collect();
    assert!(
        !kept.is_empty() && kept.len() < skipped.len(),
        "{kept:?} of {skipped:?}"
    );
    assert_eq!(
        applied.detail,
        Some(format!(r#"{{"caught_up":{}}}"#, kept.len()))
    );
    f.advance(Duration::from_secs(4), Duration::from_secs(1))
        .await;
    f.wait_until("the caught-up records to run", || async {
        kept.iter().all(|k| lines().contains(k))
    })
    .await;
    let runs = f.wait_for_history("held", ran + 6).await;
    for r in &runs {
        let fire = r.fire_ms.unwrap();
        let expected = if skipped.contains(&fire) && !kept.contains(&fire) {
            "skipped"
        } else {
            "succeeded"
        };
        assert_eq!(r.state, expected, "{r:?}");
        assert!(r.starts <= 1, "{r:?}");
    }
    // The ledger: every run that succeeded wrote one line, none twice, none of a skipped one.
    let mut written = lines();
    written.sort();
    let mut succeeded: Vec<i64> = runs
        .iter()
        .filter(|r| r.state == "succeeded")
        .map(|r| r.fire_ms.unwrap())
        .collect();
    succeeded.sort();
    assert_eq!(written, succeeded);
    f.shutdown().await;
}

/// Issue #20: a failed scheduled run recovered runs only its failed task, with the record's
/// fire time; re-run whole, every task runs again, one generation further; after a plane
/// restart the generations are kept and the next re-run goes on from them. The tasks' own
/// ledger says which ran, for which fire time and generation, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_recovered_and_re_run_for_its_own_fire_time() {
    use meridian_domain::workflow::{TaskKind, TaskSpec};
    use meridian_plane::model::Rerun;
    let mut f = Federation::start(1, 30).await;
    let dir = f.plane.dir.path().to_owned();
    let ledger = dir.join("ledger");
    let fixed = dir.join("fixed");
    let line = |task: &str| {
        format!(
            "echo \"{task} $MERIDIAN_FIRE_MS $MERIDIAN_GENERATION\" >> {}",
            ledger.display()
        )
    };
    let shell = |name: &str, script: String, after: &[&str]| TaskSpec {
        depends_on: after.iter().map(|s| s.to_string()).collect(),
        kind: TaskKind::Shell { script },
        ..WorkflowDefinition::shell(name, "true").tasks.remove(0)
    };
    // `load` fails until the file `fixed` exists: the bug fixed after the night's failure.
    let definition = WorkflowDefinition {
        tasks: vec![
            shell("extract", line("extract"), &[]),
            shell(
                "load",
                format!("test -f {} && {}", fixed.display(), line("load")),
                &["extract"],
            ),
        ],
    };
    f.write(Command::ApplyWorkflow(Workflow {
        tenant: name("ads"),
        name: name("etl"),
        environment: Some(name("prod")),
        definition,
    }))
    .await;
    f.write(Command::CreateSchedule(Schedule {
        tenant: name("ads"),
        name: name("nightly"),
        workflow: name("etl"),
        environment: name("prod"),
        spec: ScheduleSpec::cron("0 * * * * ?"),
        overlap: OverlapPolicy::Skip,
        takeover: Default::default(),
    }))
    .await;
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    f.advance(Duration::from_secs(65), Duration::from_secs(5))
        .await;
    let runs = f.wait_for_history("nightly", 1).await;
    assert_eq!(runs[0].state, "failed", "{runs:?}");
    let first = runs[0].run_id.clone();
    let fire = runs[0].fire_ms.unwrap();
    // The ledger's lines for this record (a later minute's record may run meanwhile).
    let lines = || {
        std::fs::read_to_string(&ledger)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!(" {fire} ")))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    assert_eq!(lines(), format!("extract {fire} 1\n"));

    let history = async |f: &Federation, id: String| {
        let leader = f.plane.leader().await;
        query::run_in(f.plane.node(leader).state.pool(), &id)
            .await
            .unwrap()
    };
    // Waits for run `id` to finish, moving the clock a little per look so the agent
    // heartbeats, takes the order and runs it.
    let finished = async |f: &Federation, id: &str| {
        f.wait_until(&format!("{id} to finish"), || async {
            f.clock.advance(chrono::TimeDelta::milliseconds(100));
            history(f, id.to_owned())
                .await
                .is_some_and(|r| r.state == "succeeded" || r.state == "failed")
        })
        .await;
        history(f, id.to_owned()).await.unwrap()
    };
    // Fixed; recovered: only `load` runs, for the record's fire time, as generation 2.
    std::fs::write(&fixed, "").unwrap();
    let recovered = f
        .write(Command::Rerun(Rerun {
            run_id: first.clone(),
            recover: true,
            retired: None,
        }))
        .await;
    assert_eq!(
        recovered.detail,
        Some(format!(r#"{{"run_id":"{first}~2"}}"#))
    );
    let second = finished(&f, &format!("{first}~2")).await;
    assert_eq!(second.state, "succeeded", "{second:?}");
    assert_eq!(second.kept, ["extract"]);
    assert_eq!(
        lines(),
        format!("extract {fire} 1\nload {fire} 2\n"),
        "only the failed task ran again"
    );
    // The plane restarts; the generations are kept, and a re-run whole is the third.
    f.plane.kill(0).await;
    f.plane.restart(0).await;
    let again = history(&f, format!("{first}~2")).await.unwrap();
    assert_eq!(
        (again.generation, again.rerun_of.as_deref()),
        (2, Some(first.as_str()))
    );
    f.write(Command::Rerun(Rerun {
        run_id: format!("{first}~2"),
        recover: false,
        retired: None,
    }))
    .await;
    let third = finished(&f, &format!("{first}~3")).await;
    assert_eq!(third.state, "succeeded", "{third:?}");
    assert_eq!(
        lines(),
        format!("extract {fire} 1\nload {fire} 2\nextract {fire} 3\nload {fire} 3\n")
    );
    // The record's history: three generations, the first failed, the others succeeded.
    let all = f.history("nightly").await;
    let mut generations: Vec<(u32, String)> = all
        .iter()
        .filter(|r| r.run_id.starts_with(&first))
        .map(|r| (r.generation, r.state.clone()))
        .collect();
    generations.sort();
    assert_eq!(
        generations,
        [
            (1, "failed".to_owned()),
            (2, "succeeded".to_owned()),
            (3, "succeeded".to_owned())
        ]
    );
    f.shutdown().await;
}

/// Issue #20: a pause also holds what the agent has taken and not started — fires waiting
/// behind the schedule's run going (overlap `buffer_all`) are recorded skipped (paused) when
/// their turn comes, and never run (the task-written ledger says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_holds_fires_already_waiting_on_the_agent() {
    use meridian_plane::model::{Pause, PauseScope};
    let mut f = Federation::start(1, 30).await;
    let ledger = f.plane.dir.path().join("ledger");
    let release = f.plane.dir.path().join("release");
    // Each run writes its line, then waits for the test to let it end.
    f.schedule(
        "slow",
        EVERY_10S,
        &format!(
            "echo $MERIDIAN_FIRE_MS >> {}; while [ ! -f {} ]; do sleep 0.1; done",
            ledger.display(),
            release.display()
        ),
        OverlapPolicy::BufferAll,
    )
    .await;
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    f.advance(Duration::from_secs(30), Duration::from_secs(2))
        .await;
    // The first fire runs; the next two wait behind it.
    f.wait_until("the first run to write its line", || async {
        std::fs::read_to_string(&ledger).is_ok_and(|l| l.lines().count() == 1)
    })
    .await;
    f.wait_until("two fires to wait behind it", || async {
        f.history("slow")
            .await
            .iter()
            .filter(|r| r.state == "queued")
            .count()
            == 2
    })
    .await;
    f.write(Command::Pause(Pause {
        scope: PauseScope::Schedule {
            tenant: name("ads"),
            name: name("slow"),
        },
        reason: String::new(),
    }))
    .await;
    let agent = f.agent("agent-1.test");
    f.wait_until("the agent to hold the schedule paused", || async {
        agent
            .buffer()
            .assigned("ads.slow")
            .is_some_and(|a| a.paused)
    })
    .await;
    std::fs::write(&release, "").unwrap();
    let runs = f.wait_for_history("slow", 3).await;
    let states: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| (r.state.as_str(), r.message.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("succeeded", ""),
            ("skipped", "paused"),
            ("skipped", "paused")
        ],
        "{runs:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(&ledger).unwrap().lines().count(),
        1,
        "only the first ran"
    );
    f.shutdown().await;
}

/// Issue #20: a backfill of 500 records with `parallel` 4 runs each record once — checked by a
/// ledger the task writes, one line per execution — never more than 4 at a time (the task
/// counts who else is going), whatever the schedule's own catch-up policy (`none`) says, and
/// the agent killed a third of the way and restarted, then the plane, loses and doubles nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_of_500_runs_each_once_at_most_4_at_a_time_through_agent_and_plane_restarts() {
    use meridian_domain::CatchUpPolicy;
    use meridian_plane::model::backfills::{self, BackfillState, Created};
    use meridian_plane::model::{Backfill, BackfillOrder};
    let mut f = Federation::start(1, 30).await;
    let dir = f.plane.dir.path().to_owned();
    let (ledger, peaks, going) = (dir.join("ledger"), dir.join("peaks"), dir.join("going"));
    std::fs::create_dir_all(&going).unwrap();
    let script = format!(
        "touch {g}/$MERIDIAN_FIRE_MS; ls {g} | wc -l >> {p}; sleep 0.02; \
         rm {g}/$MERIDIAN_FIRE_MS; echo $MERIDIAN_FIRE_MS >> {l}",
        g = going.display(),
        p = peaks.display(),
        l = ledger.display()
    );
    f.schedule_spec(
        "filled",
        ScheduleSpec {
            catch_up: CatchUpPolicy::None,
            ..ScheduleSpec::cron(EVERY_10S)
        },
        &script,
        OverlapPolicy::Skip,
    )
    .await;
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    // The 500 fire times before the schedule was created.
    let from = epoch() - chrono::TimeDelta::seconds(5_000);
    let to = epoch() - chrono::TimeDelta::seconds(1);
    let applied = f
        .write(Command::CreateBackfill(Backfill {
            tenant: name("ads"),
            schedule: name("filled"),
            from,
            to,
            parallel: 4,
            order: BackfillOrder::Asc,
            all: false,
        }))
        .await;
    let created: Created = serde_json::from_str(&applied.detail.unwrap()).unwrap();
    assert_eq!(created.total, 500);
    let lines = || -> Vec<i64> {
        std::fs::read_to_string(&ledger)
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while lines().len() < 170 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 180 s for a third of the records to run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Crashed a third of the way, and back: what it took runs once, what it did not is handed
    // again.
    f.kill_agent("agent-1.test").await;
    f.start_agent("agent-1.test", "main").await;
    while lines().len() < 340 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 180 s for two thirds of the records to run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Then the plane: the backfill is replicated state, and goes on where it was.
    f.plane.kill(0).await;
    f.plane.restart(0).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let pool = f.plane.node(0).state.pool().clone();
        let b = backfills::get(&pool, &created.id).await.unwrap().unwrap();
        if b.state == BackfillState::Done {
            assert_eq!(
                (b.progress.succeeded, b.progress.failed, b.progress.dropped),
                (500, 0, 0),
                "{b:#?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 180 s: {b:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let expected: Vec<i64> = (0..500)
        .map(|i| (from + chrono::TimeDelta::seconds(10 * i)).timestamp_millis())
        .collect();
    let mut written = lines();
    written.sort();
    assert_eq!(
        written, expected,
        "every record ran once: none lost, none twice"
    );
    let peak: u32 = std::fs::read_to_string(&peaks)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse::<u32>().unwrap())
        .max()
        .unwrap();
    assert!(
        (2..=4).contains(&peak),
        "at most 4 at once (and more than one): {peak}"
    );
    let runs = f.history("filled").await;
    assert_eq!(runs.len(), 500);
    assert!(runs.iter().all(|r| r.state == "succeeded" && r.starts <= 1));
    f.shutdown().await;
}

/// Issue #20: a grant's `max_concurrent_runs` of 3 holds across three agents — twelve
/// schedules firing together, each run counting who else is going (never more than 3) and
/// writing a ledger line — and drops nothing: every record runs, once, after waiting its turn
/// queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_of_3_at_once_holds_across_three_agents_and_drops_nothing() {
    let mut f = Federation::start(1, 30).await;
    let dir = f.plane.dir.path().to_owned();
    let (ledger, peaks, going) = (dir.join("ledger"), dir.join("peaks"), dir.join("going"));
    std::fs::create_dir_all(&going).unwrap();
    f.write(Command::UpdateGrant(Grant {
        tenant: name("ads"),
        environment: name("prod"),
        max_concurrent_runs: 3,
    }))
    .await;
    let script = format!(
        "touch {g}/$MERIDIAN_RUN_ID; ls {g} | wc -l >> {p}; sleep 0.5; \
         rm {g}/$MERIDIAN_RUN_ID; echo $MERIDIAN_RUN_ID >> {l}",
        g = going.display(),
        p = peaks.display(),
        l = ledger.display()
    );
    for i in 0..12 {
        f.schedule(
            &format!("q{i:02}"),
            EVERY_10S,
            &script,
            OverlapPolicy::AllowAll,
        )
        .await;
    }
    for agent in ["agent-1.test", "agent-2.test", "agent-3.test"] {
        f.start_agent(agent, "main").await;
    }
    f.wait_until("the three agents to share the partitions", || async {
        ["agent-1.test", "agent-2.test", "agent-3.test"]
            .iter()
            .all(|a| !f.agent(a).held().is_empty())
            && ["agent-1.test", "agent-2.test", "agent-3.test"]
                .iter()
                .map(|a| f.agent(a).held().len())
                .sum::<usize>()
                == 16
    })
    .await;
    // Two rounds of twelve fires at once.
    f.advance(Duration::from_secs(20), Duration::from_secs(10))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let lines = || -> Vec<String> {
        std::fs::read_to_string(&ledger)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    while lines().len() < 24 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of 24 runs after 120 s",
            lines().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut written = lines();
    written.sort();
    let before = written.len();
    written.dedup();
    assert_eq!(
        (before, written.len()),
        (24, 24),
        "each record once: {written:?}"
    );
    let peak: u32 = std::fs::read_to_string(&peaks)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse::<u32>().unwrap())
        .max()
        .unwrap();
    assert!((2..=3).contains(&peak), "never more than 3 at once: {peak}");
    let mut runs = Vec::new();
    for i in 0..12 {
        runs.extend(f.wait_for_history(&format!("q{i:02}"), 2).await);
    }
    assert_eq!(runs.len(), 24);
    assert!(
        runs.iter().all(|r| r.state == "succeeded" && r.starts <= 1),
        "{runs:#?}"
    );
    // More than one agent ran them: the grant was shared, not held by one.
    let agents: std::collections::BTreeSet<_> =
        runs.iter().filter_map(|r| r.agent.clone()).collect();
    assert!(agents.len() >= 2, "{agents:?}");
    f.shutdown().await;
}

/// Issue #20: an agent above its load thresholds (here a threshold any host is above) is given
/// no partition and no run now while another agent is not, and says so to the plane; left
/// alone, it is given the partitions, but its fires wait queued, saying why, instead of starting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_agent_is_passed_over_and_starts_nothing_new() {
    let mut f = Federation::start(1, 30).await;
    f.schedule("loaded", EVERY_10S, "echo ran", OverlapPolicy::AllowAll)
        .await;
    f.start_agent("agent-1.test", "main").await;
    f.load = meridian_agent::load::LoadLimits {
        max_load_per_core: Some(0.0),
        ..Default::default()
    };
    f.start_agent("agent-2.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    let pool = f.plane.node(0).state.pool().clone();
    f.wait_until("the plane to know agent-2 is overloaded", || async {
        query::agents(&pool).await.unwrap().iter().any(|a| {
            a.hostname == "agent-2.test"
                && a.load.as_ref().is_some_and(|l| {
                    l.overloaded
                        .as_deref()
                        .is_some_and(|w| w.starts_with("load per core"))
                })
        })
    })
    .await;
    // Three of agent-2's heartbeats go by (1 s each; an absence can only be watched for a
    // while): where the two would share the 16 partitions 8/8, agent-2 still holds nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(f.agent("agent-2.test").held().is_empty());
    assert_eq!(f.agent("agent-1.test").held().len(), 16);
    f.advance(Duration::from_secs(10), Duration::from_secs(10))
        .await;
    // The clock jumped 10 s: until agent-1 is heard again it looks gone to the plane, and an
    // overloaded agent-2 heartbeating first would rightly take the run now itself.
    f.wait_heard_now("agent-1.test").await;
    let asked = f
        .write(Command::RequestRun(meridian_plane::model::RunRequest {
            tenant: name("ads"),
            workflow: name("loaded"),
            environment: None,
        }))
        .await;
    let now: serde_json::Value = serde_json::from_str(&asked.detail.unwrap()).unwrap();
    let now = now["run_id"].as_str().unwrap().to_owned();
    f.wait_until("the run now to run on agent-1", || async {
        query::run_in(&pool, &now)
            .await
            .unwrap()
            .is_some_and(|r| r.state == "succeeded" && r.agent.as_deref() == Some("agent-1.test"))
    })
    .await;
    let runs = f.wait_for_history("loaded", 1).await;
    assert!(
        runs.iter()
            .all(|r| r.agent.as_deref() == Some("agent-1.test")),
        "{runs:#?}"
    );
    // agent-1 gone: agent-2 is the only one, overloaded or not; its fires wait, saying why.
    f.kill_agent("agent-1.test").await;
    f.advance(Duration::from_secs(40), Duration::from_secs(1))
        .await;
    f.wait_for_partitions("agent-2.test", 16).await;
    f.advance(Duration::from_secs(10), Duration::from_secs(10))
        .await;
    f.wait_until("a fire queued on agent-2 for its load", || async {
        f.history("loaded").await.iter().any(|r| {
            r.agent.as_deref() == Some("agent-2.test")
                && r.state == "queued"
                && r.message == meridian_agent::take::LOAD_QUEUED
        })
    })
    .await;
    assert!(
        !f.history("loaded")
            .await
            .iter()
            .any(|r| r.agent.as_deref() == Some("agent-2.test") && r.started_ms.is_some()),
        "nothing started on the overloaded agent"
    );
    f.shutdown().await;
}

/// The agent's `/metrics` (issue #21): its starts with their lateness, ends by state, leases
/// held, the 50-record buffer and the outbox, beside the resource cache's, in OpenMetrics text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_metrics_count_its_starts_ends_leases_buffer_and_outbox() {
    meridian_tests::browser::install_crypto();
    let mut f = Federation::start(1, 30).await;
    f.schedule("hello", EVERY_10S, "true", OverlapPolicy::Skip)
        .await;
    f.schedule("failing", EVERY_10S, "exit 1", OverlapPolicy::Skip)
        .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    f.metrics_listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    f.advance(Duration::from_secs(30), Duration::from_secs(2))
        .await;
    f.wait_for_history("hello", 3).await;
    f.wait_for_history("failing", 3).await;
    let scrape = async || {
        let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        response.text().await.unwrap()
    };
    let value = |text: &str, name: &str| -> f64 {
        meridian_tests::metric(text, name).unwrap_or_else(|| panic!("{name} in {text}"))
    };
    // The outbox drains once the plane has committed what the runs reported.
    let mut text = scrape().await;
    for _ in 0..100 {
        if value(&text, "meridian_agent_outbox_entries") == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = scrape().await;
    }
    assert_eq!(value(&text, "meridian_agent_outbox_entries"), 0.0, "{text}");
    // Every agent figure the Grafana dashboard shows is one the agent exposes.
    let shown = meridian_tests::dashboard_metrics(|n| {
        n.starts_with("meridian_agent_") || n.starts_with("meridian_resource_")
    });
    assert!(shown.len() >= 10, "{shown:?}");
    for name in shown {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"))),
            "the dashboard's {name} is not in {text}"
        );
    }
    assert_eq!(
        value(&text, "meridian_agent_outbox_oldest_seconds"),
        0.0,
        "{text}"
    );
    assert_eq!(value(&text, "meridian_agent_starts_total"), 6.0, "{text}");
    assert_eq!(
        value(
            &text,
            "meridian_agent_runs_ended_total{state=\"succeeded\"}"
        ),
        3.0
    );
    assert_eq!(
        value(&text, "meridian_agent_runs_ended_total{state=\"failed\"}"),
        3.0
    );
    assert_eq!(
        value(&text, "meridian_agent_start_lateness_seconds_count"),
        6.0
    );
    // On time, on a manual clock: every start within its fire second.
    assert_eq!(
        value(
            &text,
            "meridian_agent_start_lateness_seconds_bucket{le=\"2.5\"}"
        ),
        6.0
    );
    assert_eq!(value(&text, "meridian_agent_leases_held"), 16.0);
    assert_eq!(
        value(&text, "meridian_agent_buffered_records"),
        100.0,
        "{text}"
    );
    assert_eq!(value(&text, "meridian_agent_runs_going"), 0.0);
    // It fetched its schedules at least once (the first heartbeat's grant).
    assert!(
        value(&text, "meridian_agent_schedule_fetches_total") >= 1.0,
        "{text}"
    );
    assert!(
        text.contains("meridian_resource_cache_objects 0\n"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_output_reaches_every_plane_node_while_it_runs_and_none_replicates_it() {
    use meridian_plane::logs::across;
    let mut f = Federation::start(3, 30).await;
    let gate = tempfile::tempdir().unwrap();
    let go = gate.path().join("go");
    f.schedule(
        "gated",
        "10 0 8 * * ?",
        &format!(
            "echo first; while [ ! -e {} ]; do sleep 0.05; done; echo second",
            go.display()
        ),
        OverlapPolicy::Skip,
    )
    .await;
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    f.advance(Duration::from_secs(12), Duration::from_secs(2))
        .await;
    f.wait_until("the run to start", || async {
        !f.history("gated").await.is_empty()
    })
    .await;
    let run_id = f.history("gated").await[0].run_id.clone();
    // While the task waits at its gate, every node reads its first line, though only the
    // node the agent reports to holds it.
    for i in 0..3 {
        let node = f.plane.node(i);
        f.wait_until("every node to read the first line", || async {
            let read = across::after(node, &run_id, "main", 1, -1, 1 << 20)
                .await
                .unwrap();
            read.pieces
                .iter()
                .map(|p| p.data.as_str())
                .collect::<String>()
                == "first\n"
        })
        .await;
    }
    let holders = (0..3)
        .filter(|i| f.plane.node(*i).logbook.stored_bytes() > 0)
        .count();
    assert_eq!(holders, 1, "the agent reports to one node");
    let counted: u64 = (0..3)
        .map(|i| {
            let tally = &f.plane.node(i).tally;
            tally.log_pieces.load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    assert!(counted >= 1, "the pieces stored are counted");
    assert!(!meridian_tests::federation::is_final(
        &f.history("gated").await[0].state
    ));
    // Another agent of the cluster cannot write into the run, not even by claiming to start
    // it in the same batch: both entries are refused and every node reads what it did.
    let intruder = "intruder.test";
    let leaf = meridian_plane::certs::issue(
        &f.plane.ca,
        intruder,
        meridian_transport::Role::Agent,
        Some("main"),
    )
    .unwrap();
    let tls = meridian_transport::TlsMaterial {
        ca: f.plane.ca.cert.clone().into_bytes(),
        cert: leaf.cert.into_bytes(),
        key: leaf.key.into_bytes(),
    };
    let endpoints: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "{}:{}",
                meridian_tests::cluster::hostname(i),
                f.plane.port(i)
            )
        })
        .collect();
    let link = meridian_agent::link::Link::new(&endpoints, &tls, f.plane.hosts()).unwrap();
    let entry = |seq: u64, item: ReportItem| {
        let report = Report::V1 {
            cluster: "main".into(),
            partition: None,
            epoch: 0,
            item,
        };
        meridian_proto::pb::OutboxEntry::new(
            seq,
            format!("forged/{seq}"),
            serde_json::to_string(&report).unwrap(),
        )
    };
    let run = f.history("gated").await[0].clone();
    let request = meridian_proto::pb::ReportRequest {
        agent: intruder.into(),
        entries: vec![
            entry(
                1,
                ReportItem::Run(RunEvent {
                    run_id: run_id.clone(),
                    schedule: None,
                    fire_ms: None,
                    tenant: "ads".into(),
                    workflow: "gated".into(),
                    workflow_version: run.workflow_version,
                    environment: "prod".into(),
                    state: RunState::Started,
                    at_ms: f.clock.now_ms(),
                    message: String::new(),
                }),
            ),
            entry(
                2,
                ReportItem::Log(LogChunk {
                    run_id: run_id.clone(),
                    task: "main".into(),
                    attempt: 1,
                    offset: 6,
                    data: "forged\n".into(),
                }),
            ),
        ],
    };
    let reply = link
        .call(|mut c| {
            let r = request.clone();
            async move { c.report(r).await }
        })
        .await
        .unwrap();
    assert!(
        reply.refused.iter().any(|r| r.seq == 2),
        "the forged piece is refused: {reply:?}"
    );
    std::fs::write(&go, "").unwrap();
    f.wait_until("the run to end", || async {
        meridian_tests::federation::is_final(&f.history("gated").await[0].state)
    })
    .await;
    // Once the run is over its whole log is there on every node (stored before the end was
    // committed), and no node's replicated model holds a byte of it.
    for i in 0..3 {
        let node = f.plane.node(i);
        let logs = across::logs(node, &run_id).await.unwrap();
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert_eq!(logs[0].text, "first\nsecond\n", "node {i}");
        let in_model: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM run_logs")
            .fetch_one(node.state.pool())
            .await
            .unwrap();
        assert_eq!(in_model, 0, "node {i}");
    }
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_attempts_log_is_copied_to_the_bucket_and_outlives_the_node_that_held_it() {
    use meridian_plane::logbook::object::Archive;
    use meridian_plane::logs::{across, archive};
    use meridian_tests::s3::S3Server;
    let s3 = S3Server::start().await.expect("an S3 server for the tests");
    s3.create_bucket("meridian").await.unwrap();
    let bucket = meridian_bucket::Bucket::new(&meridian_bucket::BucketConfig {
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        attempts: 1,
        ..meridian_bucket::BucketConfig::new(s3.endpoint.clone(), "meridian")
    })
    .unwrap();
    let mut f = Federation::start(3, 30).await;
    for i in 0..3 {
        archive::start(
            f.plane.node(i),
            std::sync::Arc::new(f.clock.clone()),
            bucket.clone(),
        );
    }
    f.schedule(
        "kept",
        "10 0 8 * * ?",
        "for i in 1 2 3; do echo \"line $i\"; done",
        OverlapPolicy::Skip,
    )
    .await;
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    f.advance(Duration::from_secs(12), Duration::from_secs(2))
        .await;
    let run_id = f.wait_for_history("kept", 1).await[0].run_id.clone();
    let key = |i: usize| {
        let pool = f.plane.node(i).state.pool().clone();
        let run_id = run_id.clone();
        async move {
            meridian_plane::model::archive::archived(&pool, &run_id, "main", 1)
                .await
                .unwrap()
        }
    };
    f.wait_until("the leader's archiver to copy the log", || async {
        key(f.plane.leader().await).await.is_some()
    })
    .await;
    let key = key(f.plane.leader().await).await.unwrap().key;
    assert!(key.starts_with("logs/ads/"), "{key}");
    let object = s3.get("meridian", &key).await.unwrap().expect("the object");
    let object = String::from_utf8(object).unwrap();
    assert!(
        object.contains("line 1") && object.contains("line 3"),
        "{object}"
    );

    // The node the agent reported to goes for good: the others still read the whole log,
    // from the bucket.
    f.stop_agent("agent-1.test").await;
    let holder = (0..3)
        .find(|i| f.plane.node(*i).logbook.stored_bytes() > 0)
        .expect("a node holds the pieces");
    f.plane.kill(holder).await;
    let reader = (0..3).find(|i| *i != holder).unwrap();
    f.plane.node(reader).read_barrier(PATIENCE).await.unwrap();
    let logs = across::logs(f.plane.node(reader), &run_id).await.unwrap();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].text, "line 1\nline 2\nline 3\n");

    // Past the tenant's retention the object is deleted and forgotten.
    f.write(Command::UpdateTenant(Tenant {
        name: Name::new("ads").unwrap(),
        description: String::new(),
        log_retention_days: Some(1),
        history_retention_days: None,
    }))
    .await;
    let leader = f.plane.leader().await;
    let later = meridian_domain::ManualClock::at(epoch() + chrono::TimeDelta::days(2));
    let archiver = archive::Archiver::new(
        f.plane.shared(leader).core(),
        std::sync::Arc::new(later),
        Archive::new(bucket.clone()),
    );
    assert!(
        !archiver.round().await.unwrap(),
        "one attempt: not a full round"
    );
    assert_eq!(s3.get("meridian", &key).await.unwrap(), None);
    f.plane.node(leader).read_barrier(PATIENCE).await.unwrap();
    let pool = f.plane.node(leader).state.pool();
    // Its row stays, emptied, so the archiver never copies it again.
    let copy = meridian_plane::model::archive::archived(pool, &run_id, "main", 1)
        .await
        .unwrap()
        .expect("the row stays");
    assert_eq!(copy.key, "");
    assert!(
        across::logs(f.plane.node(leader), &run_id)
            .await
            .unwrap()
            .iter()
            .all(|l| l.text.is_empty())
    );
    f.shutdown().await;
}
