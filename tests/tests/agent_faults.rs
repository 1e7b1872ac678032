//! The agent through the failures the issue names: the plane's leader killed while an agent
//! reports, the agent's link cut for longer than its lease, a takeover while the old holder is
//! cut off, the active cluster lost to its backup; and the overlap policies with runs that
//! outlast their schedule's period. Every scenario ends with the history checker.

use std::time::Duration;

use meridian_domain::{Clock, OverlapPolicy, ScheduleSpec};
use meridian_plane::model::query;
use meridian_tests::federation::{Federation, check, epoch};

const EVERY_10S: &str = "0/10 * * * * ?";

fn secs(s: i64) -> chrono::DateTime<chrono::Utc> {
    epoch() + chrono::TimeDelta::seconds(s)
}

fn ms(s: i64) -> i64 {
    secs(s).timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_plane_leader_while_an_agent_reports_loses_no_event_and_no_log_byte() {
    let mut f = Federation::start(3, 30).await;
    // About a second of output in several chunks, so the leader dies mid-stream.
    let script = "for i in $(seq 1 40); do echo \"line $i of $MERIDIAN_RUN_ID\"; sleep 0.02; done";
    f.schedule("chatty", EVERY_10S, script, OverlapPolicy::AllowAll)
        .await;
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    f.advance(Duration::from_secs(20), Duration::from_secs(2))
        .await;
    f.wait_for_history("chatty", 2).await;

    f.advance(Duration::from_secs(10), Duration::from_secs(10))
        .await;
    f.wait_until("the run at 0:30 to be reporting", || async {
        f.history("chatty")
            .await
            .iter()
            .any(|r| r.fire_ms == Some(ms(30)) && r.state == "started")
    })
    .await;
    let old = f.plane.leader().await;
    f.plane.kill(old).await;
    f.advance(Duration::from_secs(30), Duration::from_secs(2))
        .await;
    f.plane.restart(old).await;
    f.advance(Duration::from_secs(30), Duration::from_secs(2))
        .await;

    let runs = f.wait_for_history("chatty", 9).await;
    let summary = check("plane leader killed", EVERY_10S, epoch(), secs(90), &runs);
    assert_eq!(
        (summary.due, summary.ran, summary.lost, summary.duplicated),
        (9, 9, 0, 0),
        "{runs:#?}"
    );
    let leader = f.plane.leader().await;
    let pool = f.plane.node(leader).state.pool().clone();
    for r in &runs {
        assert_eq!(r.state, "succeeded", "{r:?}");
        let text: String = f
            .logs(&r.run_id)
            .await
            .unwrap()
            .iter()
            .map(|chunk| chunk.text.as_str())
            .collect();
        let expected: String = (1..=40)
            .map(|i| format!("line {i} of {}\n", r.run_id))
            .collect();
        assert_eq!(text, expected, "the log of {} is whole", r.run_id);
        assert_eq!(query::attempts_in(&pool, &r.run_id).await.unwrap().len(), 1);
    }
    f.wait_until("the outbox to drain", || async {
        f.agent("agent-1.test").outbox_len().await == 0
    })
    .await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_agent_fires_up_to_its_lease_horizon_then_pauses_and_catches_up_once() {
    let mut f = Federation::start(1, 20).await;
    // Catch-up starts missed records 100 ms apart; on a loaded machine a run can take longer
    // than that, and `skip` would then (rightly) skip one. These fault tests are about leases
    // and history, not the overlap policy (tested on its own below): they let runs overlap.
    f.schedule("autonomous", EVERY_10S, "echo ran", OverlapPolicy::AllowAll)
        .await;
    f.start_agent_behind_link("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    f.advance(Duration::from_secs(20), Duration::from_secs(2))
        .await;
    f.wait_for_history("autonomous", 2).await;

    // Cut for 60 s, three times the 20-second lease.
    f.cut_link("agent-1.test");
    f.advance(Duration::from_secs(60), Duration::from_secs(2))
        .await;
    let agent = f.agent("agent-1.test");
    assert!(agent.held().is_empty(), "the lease ran out while cut off");
    assert!(
        agent.outbox_len().await > 0,
        "what it ran while cut off waits in the outbox"
    );
    assert_eq!(
        f.history("autonomous").await.len(),
        2,
        "nothing reached the plane"
    );

    f.heal_link("agent-1.test");
    f.wait_for_partitions("agent-1.test", 16).await;
    f.advance(Duration::from_secs(20), Duration::from_secs(2))
        .await;
    let runs = f.wait_for_history("autonomous", 10).await;
    let summary = check("link cut > lease", EVERY_10S, epoch(), secs(100), &runs);
    assert_eq!(
        (summary.due, summary.ran, summary.lost, summary.duplicated),
        (10, 10, 0, 0),
        "{runs:#?}"
    );
    // Autonomy: the record at 0:30 fired on time while the link was cut — within a few of the
    // clock's 2 s steps (a loaded machine may miss one), not at the heal 50 s later.
    let at_30 = runs.iter().find(|r| r.fire_ms == Some(ms(30))).unwrap();
    assert!(at_30.lateness_ms.unwrap() < 10_000, "{at_30:?}");
    // Past the horizon it paused: 0:50 to 1:20 ran only once the link was back (at 1:20).
    for r in runs
        .iter()
        .filter(|r| (ms(50)..=ms(80)).contains(&r.fire_ms.unwrap()))
    {
        assert!(r.started_ms.unwrap() >= ms(80), "{r:?} ran while paused");
    }
    assert!(
        runs.iter()
            .all(|r| r.agent.as_deref() == Some("agent-1.test"))
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_while_the_holder_is_cut_off_waits_for_what_it_may_have_fired() {
    // The plane cannot tell a dead agent from a cut-off one. Under takeover `wait` (the
    // default) the records the cut-off holder may have fired before its lease ran out are in
    // doubt: the agent taking over runs none of them, and once the cut heals the old holder's
    // reports settle each — what it ran stays its run, what it never ran the new holder runs.
    // Nothing runs twice; the runs' own ledger says so too.
    let mut f = Federation::start(1, 20).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let script = format!("echo \"$MERIDIAN_RUN_ID\" >> {}", ledger.display());
    f.schedule("contested", EVERY_10S, &script, OverlapPolicy::AllowAll)
        .await;
    f.start_agent_behind_link("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    f.advance(Duration::from_secs(20), Duration::from_secs(2))
        .await;
    f.wait_for_history("contested", 2).await;

    f.cut_link("agent-1.test");
    f.start_agent("agent-2.test", "main").await;
    f.advance(Duration::from_secs(40), Duration::from_secs(2))
        .await;
    f.wait_for_partitions("agent-2.test", 16).await;
    // In doubt: 0:30, which agent-1 fired while cut off, up to its lease's end (0:38 or 0:40,
    // counted from its last heartbeat before the cut, so maybe 0:40 too, which it did not
    // fire: its runs start only before the deadline less a margin); agent-2 ran what fell
    // due after that.
    let leader = f.plane.leader().await;
    let pool = f.plane.node(leader).state.pool().clone();
    let mut conn = pool.acquire().await.unwrap();
    let doubts = meridian_plane::model::doubt::list(&mut conn, None)
        .await
        .unwrap();
    assert_eq!(doubts.len(), 1, "{doubts:#?}");
    assert_eq!(doubts[0].holder, "agent-1.test");
    assert_eq!(doubts[0].current_holder.as_deref(), Some("agent-2.test"));
    let records = &doubts[0].records;
    assert!(
        records == &[ms(30)] || records == &[ms(30), ms(40)],
        "{doubts:#?}"
    );
    let before_heal = f.history("contested").await;
    assert!(
        before_heal
            .iter()
            .all(|r| !doubts[0].records.contains(&r.fire_ms.unwrap())),
        "agent-2 ran a record in doubt: {before_heal:#?}"
    );

    f.heal_link("agent-1.test");
    f.advance(Duration::from_secs(20), Duration::from_secs(2))
        .await;
    f.wait_for_history("contested", 8).await;
    f.wait_until(
        "agent-1's outbox to drain and the doubt to settle",
        || async {
            let mut conn = pool.acquire().await.unwrap();
            f.agent("agent-1.test").outbox_len().await == 0
                && meridian_plane::model::doubt::list(&mut conn, None)
                    .await
                    .unwrap()
                    .is_empty()
        },
    )
    .await;
    f.wait_until("every run to finish", || async {
        let runs = f.history("contested").await;
        runs.len() >= 8 && runs.iter().all(|r| r.state == "succeeded")
    })
    .await;
    let runs = f.history("contested").await;
    let summary = check(
        "takeover of a cut-off holder (wait)",
        EVERY_10S,
        epoch(),
        secs(80),
        &runs,
    );
    assert_eq!(
        (summary.due, summary.lost, summary.duplicated),
        (8, 0, 0),
        "{runs:#?}"
    );
    let at_30 = runs.iter().find(|r| r.fire_ms == Some(ms(30))).unwrap();
    assert_eq!(at_30.agent.as_deref(), Some("agent-1.test"), "{at_30:?}");
    let (total, distinct, text) = ledger_lines(&ledger);
    assert_eq!((total, distinct), (8, 8), "{text}");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_takeover_rerun_the_new_holder_runs_again_what_the_cut_off_one_fired() {
    // At least once, as before `wait`: the records the cut-off holder fired up to its lease's
    // end run again, counted in `starts`; nothing outside that window runs twice.
    let mut f = Federation::start(1, 20).await;
    f.takeover = meridian_domain::TakeoverPolicy::Rerun;
    f.schedule("contested", EVERY_10S, "echo ran", OverlapPolicy::AllowAll)
        .await;
    f.start_agent_behind_link("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    f.advance(Duration::from_secs(20), Duration::from_secs(2))
        .await;
    f.wait_for_history("contested", 2).await;
    f.cut_link("agent-1.test");
    f.start_agent("agent-2.test", "main").await;
    f.advance(Duration::from_secs(40), Duration::from_secs(2))
        .await;
    f.wait_for_partitions("agent-2.test", 16).await;
    f.heal_link("agent-1.test");
    f.advance(Duration::from_secs(20), Duration::from_secs(2))
        .await;
    f.wait_for_history("contested", 8).await;
    f.wait_until("agent-1's outbox to drain", || async {
        f.agent("agent-1.test").outbox_len().await == 0
    })
    .await;
    let runs = f.history("contested").await;
    let summary = check(
        "takeover of a cut-off holder (rerun)",
        EVERY_10S,
        epoch(),
        secs(80),
        &runs,
    );
    assert_eq!((summary.due, summary.lost), (8, 0), "{runs:#?}");
    for r in runs.iter().filter(|r| r.starts > 1) {
        assert!(
            r.fire_ms.unwrap() <= ms(40),
            "ran twice outside the lease: {r:?}"
        );
    }
    assert!(
        summary.duplicated >= 1,
        "the record the cut-off agent ran at 0:30 shows as run twice: {runs:#?}"
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_active_cluster_is_lost_its_backup_runs_the_tenants_granted_there() {
    let mut f = Federation::start_with_backup(1, 10).await;
    f.schedule(
        "shared",
        EVERY_10S,
        "echo \"$GREETING\"",
        OverlapPolicy::AllowAll,
    )
    .await;
    f.schedule_for(
        "solo",
        "alone",
        ScheduleSpec::cron(EVERY_10S),
        "echo alone",
        OverlapPolicy::AllowAll,
    )
    .await;
    f.start_agent("main-1.test", "main").await;
    f.start_agent("spare-1.test", "spare").await;
    f.wait_for_partitions("main-1.test", 16).await;
    f.advance(Duration::from_secs(20), Duration::from_secs(2))
        .await;
    f.wait_for_history("shared", 2).await;
    assert_eq!(f.holding("spare-1.test", "main"), 0);

    // Every agent of `main` is gone: after the lease, `spare` takes its partitions.
    f.kill_agent("main-1.test").await;
    f.advance(Duration::from_secs(40), Duration::from_secs(1))
        .await;
    f.wait_until("spare to hold main's partitions", || async {
        f.holding("spare-1.test", "main") == 16
    })
    .await;
    // What main-1 may have fired before its lease ran out is in doubt (takeover `wait`)
    // until it is back; every other record up to now ran, once.
    let leader = f.plane.leader().await;
    let pool = f.plane.node(leader).state.pool().clone();
    let mut conn = pool.acquire().await.unwrap();
    let doubted: Vec<i64> = meridian_plane::model::doubt::list(&mut conn, None)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.schedule == "ads.shared")
        .flat_map(|d| d.records)
        .collect();
    drop(conn);
    let runs = f.wait_for_history("shared", 6 - doubted.len()).await;
    let summary = check("failover to backup", EVERY_10S, epoch(), secs(60), &runs);
    assert_eq!(
        (summary.due, summary.lost, summary.duplicated),
        (6, doubted.len(), 0),
        "in doubt {doubted:?}: {runs:#?}"
    );
    let on_spare: Vec<_> = runs
        .iter()
        .filter(|r| r.agent.as_deref() == Some("spare-1.test"))
        .collect();
    assert!(!on_spare.is_empty(), "{runs:#?}");
    let logs = f.logs(&on_spare[0].run_id).await.unwrap();
    assert_eq!(
        logs[0].text, "hello from the backup\n",
        "the backup's environment"
    );
    // `solo` has no grant on the backup: its schedule is not handed to `spare` at all.
    assert_eq!(
        f.agent("spare-1.test")
            .buffer()
            .count("solo.alone")
            .await
            .unwrap(),
        0
    );
    assert!(
        f.history_of("solo.alone")
            .await
            .iter()
            .all(|r| r.agent.as_deref() == Some("main-1.test"))
    );

    // `main` comes back: the partitions return, and `solo` catches up what it missed; what
    // was in doubt is settled by main-1's reports (it says it has sent them all).
    f.start_agent("main-1.test", "main").await;
    f.wait_until("the partitions to return to main", || async {
        f.holding("main-1.test", "main") == 16 && f.holding("spare-1.test", "main") == 0
    })
    .await;
    f.advance(Duration::from_secs(20), Duration::from_secs(2))
        .await;
    let solo = f.wait_for_history_of("solo.alone", 8).await;
    let summary = check("solo after failback", EVERY_10S, epoch(), secs(80), &solo);
    assert_eq!((summary.due, summary.lost, summary.duplicated), (8, 0, 0));
    let shared = f.wait_for_history("shared", 8).await;
    let summary = check(
        "shared after failback",
        EVERY_10S,
        epoch(),
        secs(80),
        &shared,
    );
    assert_eq!((summary.due, summary.lost, summary.duplicated), (8, 0, 0));
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_policies_decide_what_a_fire_does_while_the_previous_run_is_going() {
    overlap_policies(Fires::OnTime).await;
}

/// Issue #18, defect 3: fires missed while no agent could run them and caught up afterwards
/// go through the overlap policy too, not all at once beside each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caught_up_fires_go_through_the_overlap_policy() {
    overlap_policies(Fires::CaughtUp).await;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fires {
    /// Each fire on time, with the agent holding the partitions.
    OnTime,
    /// Every fire missed (no agent yet), then caught up one after another when it starts.
    CaughtUp,
}

/// Three fires of one schedule per overlap policy, the first run held at a gate: what each
/// policy makes of the other two, and that nothing is lost or run twice.
async fn overlap_policies(fires: Fires) {
    let mut f = Federation::start(1, 30).await;
    let gate = f.plane.dir.path().join("gate");
    let script = format!(
        "while [ ! -e {g} ]; do sleep 0.05; done; echo done",
        g = gate.display()
    );
    let policies = [
        ("skip", OverlapPolicy::Skip),
        ("buffer-one", OverlapPolicy::BufferOne),
        ("buffer-all", OverlapPolicy::BufferAll),
        ("cancel-older", OverlapPolicy::CancelOlder),
        ("allow-all", OverlapPolicy::AllowAll),
    ];
    for (name, policy) in policies {
        f.schedule(name, EVERY_10S, &script, policy).await;
    }
    // Fires at 0:10, 0:20 and 0:30 while the first run of each is held at the gate.
    if fires == Fires::OnTime {
        f.start_agent("agent-1.test", "main").await;
        f.wait_for_partitions("agent-1.test", 16).await;
    }
    f.advance(Duration::from_secs(30), Duration::from_secs(10))
        .await;
    if fires == Fires::CaughtUp {
        f.start_agent("agent-1.test", "main").await;
        f.wait_for_partitions("agent-1.test", 16).await;
    }
    let states = |runs: &[query::RunRecord]| -> Vec<String> {
        runs.iter().map(|r| r.state.clone()).collect::<Vec<_>>()
    };
    // While the gate is closed, what each policy made of the three fires (caught-up fires are
    // let go one after another, at the catch-up rate, so this is waited for).
    let closed = [
        ("skip", ["started", "skipped", "skipped"]),
        ("buffer-one", ["started", "queued", "skipped"]),
        ("buffer-all", ["started", "queued", "queued"]),
        ("cancel-older", ["killed", "killed", "started"]),
        ("allow-all", ["started", "started", "started"]),
    ];
    f.wait_until("every policy to have decided all three fires", || async {
        let mut decided = true;
        for (name, want) in closed {
            decided &= states(&f.history(name).await) == want;
        }
        decided
    })
    .await;

    std::fs::write(&gate, "").unwrap();
    let mut finals = Vec::new();
    for (name, _) in policies {
        let runs = f.wait_for_history(name, 3).await;
        let summary = check(name, EVERY_10S, epoch(), secs(30), &runs);
        assert_eq!((summary.lost, summary.duplicated), (0, 0), "{name}");
        finals.push((name, states(&runs)));
    }
    assert_eq!(
        finals,
        [
            ("skip", vec!["succeeded", "skipped", "skipped"]),
            ("buffer-one", vec!["succeeded", "succeeded", "skipped"]),
            ("buffer-all", vec!["succeeded", "succeeded", "succeeded"]),
            ("cancel-older", vec!["killed", "killed", "succeeded"]),
            ("allow-all", vec!["succeeded", "succeeded", "succeeded"]),
        ]
        .map(|(n, s)| (n, s.into_iter().map(String::from).collect::<Vec<_>>()))
    );
    // buffer-all ran its queue one after another.
    let queue = f.history("buffer-all").await;
    for w in queue.windows(2) {
        assert!(w[1].started_ms >= w[0].finished_ms, "{queue:#?}");
    }
    f.shutdown().await;
}

/// Issue #18, defect 4: an outbox entry the plane cannot read (a newer agent's report shape,
/// during a rolling upgrade that reached the agents first) is not acknowledged and dropped: it
/// and every report after it stay in the agent's outbox, in order, while the plane says why;
/// once the plane can read it (here: the entry rewritten to a shape this plane reads), they
/// all go, and nothing the agent ran is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_the_plane_cannot_read_stays_in_the_outbox_with_everything_after_it() {
    let mut f = Federation::start(1, 30).await;
    f.schedule("held", EVERY_10S, "echo ran", OverlapPolicy::AllowAll)
        .await;
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        f.agent_dir("agent-1.test").join("agent.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("INSERT INTO outbox (key, at_ms, payload) VALUES ('future-1', 0, ?)")
        .bind(r#"{"v":"2","cluster":"main","item":{"run":{"what":"a newer shape"}}}"#)
        .execute(&db)
        .await
        .unwrap();
    f.advance(Duration::from_secs(20), Duration::from_secs(2))
        .await;
    // Both runs end on the agent (their reports wait behind the entry), and the plane has
    // answered several report rounds since.
    let agent = f.agent("agent-1.test");
    f.wait_until("both runs' reports to be in the outbox", || async {
        agent.outbox_len().await >= 7
    })
    .await;
    let rounds = agent.report_rounds();
    f.wait_until("three more report rounds", || async {
        agent.report_rounds() >= rounds + 3
    })
    .await;
    let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE key = 'future-1'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(held, 1, "the unreadable entry was dropped");
    assert!(
        f.history("held").await.is_empty(),
        "reports after the unreadable entry went ahead of it"
    );

    // The plane can read it now (a report about a run it never heard of: refused for good,
    // which is a reading): it and everything behind it go, and both runs are in the history.
    sqlx::query("UPDATE outbox SET payload = ? WHERE key = 'future-1'")
        .bind(
            serde_json::to_string(&meridian_domain::run::Report::V1 {
                cluster: "main".into(),
                partition: None,
                epoch: 0,
                item: meridian_domain::run::ReportItem::Log(meridian_domain::run::LogChunk {
                    run_id: "ads.nothing@manual-1".into(),
                    task: "main".into(),
                    attempt: 1,
                    offset: 0,
                    data: String::new(),
                }),
            })
            .unwrap(),
        )
        .execute(&db)
        .await
        .unwrap();
    let runs = f.wait_for_history("held", 2).await;
    let summary = check(
        "unreadable report held",
        EVERY_10S,
        epoch(),
        secs(20),
        &runs,
    );
    assert_eq!((summary.lost, summary.duplicated), (0, 0), "{runs:#?}");
    f.wait_until("the outbox to drain", || async {
        agent.outbox_len().await == 0
    })
    .await;
    db.close().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_lease_lapses_before_it_starts_is_given_back_and_runs_once_later() {
    // One slot, held by a run that cannot end until the test lets it. The fires of a second
    // schedule are taken under the lease (queued for the slot) — then the agent is cut off
    // past its lease, which is a holder frozen between taking and starting as far as those
    // runs go. When the slot frees, none may start: each goes back untouched, and runs once
    // the partition is held again. The runs write their own ledger.
    let mut f = Federation::start(1, 20).await;
    f.slots = 1;
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let ledger = dir.path().join("ledger");
    f.schedule(
        "a-blocker",
        EVERY_10S,
        &format!("while [ ! -f {} ]; do sleep 0.05; done", gate.display()),
        OverlapPolicy::Skip,
    )
    .await;
    f.schedule(
        "b-waiting",
        EVERY_10S,
        &format!("echo \"$MERIDIAN_RUN_ID\" >> {}", ledger.display()),
        OverlapPolicy::AllowAll,
    )
    .await;
    f.start_agent_behind_link("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    f.advance(Duration::from_secs(10), Duration::from_secs(2))
        .await;
    f.wait_until("the blocker to start and b's 0:10 to queue", || async {
        let b = f.history("b-waiting").await;
        b.iter()
            .any(|r| r.fire_ms == Some(ms(10)) && r.state == "queued")
            && f.history("a-blocker").await.len() == 1
    })
    .await;

    // Cut off for twice the lease: b's 0:20 is taken (queued) before the deadline, nothing
    // after it.
    f.cut_link("agent-1.test");
    f.advance(Duration::from_secs(40), Duration::from_secs(2))
        .await;
    let agent = f.agent("agent-1.test");
    assert!(agent.held().is_empty(), "the lease ran out while cut off");
    // The slot frees: the queued runs may not start any more.
    std::fs::write(&gate, "").unwrap();
    f.wait_until("b's taken runs to be given back", || async {
        f.agent("agent-1.test").returned_runs() >= 2
    })
    .await;
    assert!(
        !ledger.exists(),
        "a run started after its lease ran out: {}",
        std::fs::read_to_string(&ledger).unwrap_or_default()
    );

    // Healed: the plane hands the records back, and the agent (holding the partition again)
    // runs them once each, with everything it missed.
    let healed = f.clock.now_ms();
    f.heal_link("agent-1.test");
    f.wait_for_partitions("agent-1.test", 16).await;
    f.advance(Duration::from_secs(20), Duration::from_secs(2))
        .await;
    f.wait_for_history("b-waiting", 7).await;
    f.wait_until("b's runs to finish", || async {
        f.history("b-waiting")
            .await
            .iter()
            .filter(|r| r.state == "succeeded")
            .count()
            >= 7
    })
    .await;
    let runs = f.history("b-waiting").await;
    let summary = check("given back", EVERY_10S, epoch(), secs(70), &runs);
    assert_eq!(
        (summary.due, summary.lost, summary.duplicated),
        (7, 0, 0),
        "{runs:#?}"
    );
    for at in [10, 20] {
        let r = runs.iter().find(|r| r.fire_ms == Some(ms(at))).unwrap();
        assert_eq!(r.state, "succeeded", "{r:?}");
        assert!(
            r.started_ms.unwrap() >= healed,
            "{r:?} started while cut off"
        );
    }
    // The ledger the runs wrote: every fire once.
    let (total, distinct, text) = ledger_lines(&ledger);
    assert_eq!((total, distinct), (7, 7), "{text}");
    f.shutdown().await;
}

/// The runs' own ledger (a line per execution): how many lines, how many different ones, and
/// the text.
fn ledger_lines(ledger: &std::path::Path) -> (usize, usize, String) {
    let text = std::fs::read_to_string(ledger).unwrap();
    let (total, distinct) = {
        let mut lines: Vec<&str> = text.lines().collect();
        let total = lines.len();
        lines.sort();
        lines.dedup();
        (total, lines.len())
    };
    (total, distinct, text)
}
