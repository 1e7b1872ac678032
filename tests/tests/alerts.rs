//! Alerts and task callbacks against a real plane and agent on a manual clock, delivered to a
//! real HTTP receiver and a real SMTP server (aiosmtpd): signed webhooks, a receiver down for a
//! minute and a plane restart losing nothing, repeats grouped, task callbacks, the timed checks
//! (SLA, agent lost, data center unheard), and mail.

use std::collections::BTreeSet;
use std::time::Duration;

use hmac::{Hmac, Mac};
use meridian_domain::run::AttemptOutcome;
use meridian_domain::workflow::{TaskCallback, WorkflowDefinition};
use meridian_domain::{Clock, OverlapPolicy};
use meridian_plane::courier::{MailConfig, MailTls};
use meridian_plane::model::alerts::outbox::{self, Delivery, DeliveryFilter};
use meridian_plane::model::{
    AlertChannel, AlertEvent, AlertRule, ChannelKind, Command, RunRequest, Workflow,
};
use meridian_tests::cluster::PATIENCE;
use meridian_tests::federation::{Federation, name};
use meridian_tests::receiver::Receiver;
use meridian_tests::smtp::SmtpServer;
use sha2::Sha256;

const EVERY_10S: &str = "0/10 * * * * ?";
const SECRET: &str = "a-long-shared-secret";

fn webhook(tenant: Option<&str>, channel: &str, url: String) -> Command {
    Command::CreateAlertChannel(AlertChannel {
        tenant: tenant.map(name),
        name: name(channel),
        kind: ChannelKind::Webhook,
        url: Some(url),
        secret: Some(SECRET.into()),
        to: vec![],
        description: String::new(),
    })
}

fn rule(tenant: Option<&str>, rule: &str, on: &[AlertEvent], channel: &str) -> AlertRule {
    AlertRule {
        tenant: tenant.map(name),
        name: name(rule),
        workflow: None,
        schedule: None,
        on: on.to_vec(),
        channels: vec![name(channel)],
        late_seconds: None,
        sla_seconds: None,
        unheard_seconds: None,
        group_seconds: 0,
    }
}

/// Every delivery, oldest first, each with its attempts (after a read barrier on the leader).
async fn deliveries(f: &Federation) -> Vec<Delivery> {
    let leader = f.plane.leader().await;
    let node = f.plane.node(leader);
    node.read_barrier(PATIENCE).await.expect("read barrier");
    let mut conn = node.state.pool().acquire().await.unwrap();
    let list = outbox::list(
        &mut conn,
        &DeliveryFilter {
            limit: 1000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    for d in list.iter().rev() {
        all.push(outbox::get(&mut conn, &d.id).await.unwrap().unwrap());
    }
    all
}

/// The receiver's check of a signature: HMAC-SHA256 over `<t>.<body>` with the shared secret.
fn signed_by_secret(signature: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    v1 == want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_alert_survives_its_receiver_down_for_a_minute_and_a_plane_restart() {
    let mut f = Federation::start(1, 30).await;
    let mut hook = Receiver::start().await;
    f.write(webhook(Some("ads"), "ops", hook.url("/meridian")))
        .await;
    f.schedule("flaky", EVERY_10S, "exit 3", OverlapPolicy::Skip)
        .await;
    f.write(Command::CreateAlertRule(AlertRule {
        schedule: Some(name("flaky")),
        ..rule(Some("ads"), "failures", &[AlertEvent::Failed], "ops")
    }))
    .await;
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;

    // A failure: one signed POST, at once.
    f.advance(Duration::from_secs(10), Duration::from_secs(2))
        .await;
    f.wait_until("the first alert to reach the receiver", || async {
        !hook.received().is_empty()
    })
    .await;
    let first = hook.received()[0].clone();
    assert_eq!(first.path, "/meridian");
    assert!(
        signed_by_secret(&first.headers["x-meridian-signature"], &first.body),
        "the body is signed with the channel's secret: {first:?}"
    );
    let body = first.json();
    assert_eq!(body["event"], "failed");
    assert_eq!(body["tenant"], "ads");
    assert_eq!(body["rule"], "failures");
    assert_eq!(first.headers["x-meridian-delivery"], body["id"]);
    let runs = f.history("flaky").await;
    assert_eq!(
        body["events"][0]["details"]["run_id"],
        runs[0].run_id.as_str()
    );
    assert_eq!(body["events"][0]["details"]["state"], "failed");

    // The receiver goes down for a minute, and the plane restarts meanwhile: the failures of
    // that minute are retried with backoff, and none is lost.
    hook.down().await;
    f.advance(Duration::from_secs(30), Duration::from_secs(2))
        .await;
    f.wait_until(
        "failed attempts against the receiver that is down",
        || async {
            deliveries(&f)
                .await
                .iter()
                .any(|d| d.state == "pending" && d.tries.len() >= 2)
        },
    )
    .await;
    f.plane.kill(0).await;
    f.plane.restart(0).await;
    f.plane.wait_for_leader().await;
    f.advance(Duration::from_secs(30), Duration::from_secs(2))
        .await;
    let pending = deliveries(&f).await;
    assert!(
        pending.iter().filter(|d| d.state == "pending").count() >= 3,
        "a minute's failures wait for the receiver: {pending:#?}"
    );
    hook.up().await;
    f.advance(Duration::from_secs(70), Duration::from_secs(5))
        .await;
    let failed: Vec<String> = f
        .wait_for_history("flaky", 8)
        .await
        .into_iter()
        .filter(|r| r.state == "failed")
        .map(|r| r.run_id)
        .collect();
    f.wait_until("every failure delivered", || async {
        let all = deliveries(&f).await;
        all.len() >= failed.len() && all.iter().all(|d| d.state == "delivered")
    })
    .await;
    let all = deliveries(&f).await;
    // One delivery per failed run, each about its run, each received exactly once.
    let alerted: Vec<String> = all
        .iter()
        .flat_map(|d| d.events.iter())
        .map(|e| e.details["run_id"].as_str().unwrap().to_owned())
        .collect();
    let alerted_set: BTreeSet<&String> = alerted.iter().collect();
    let failed_set: BTreeSet<&String> = failed.iter().collect();
    assert_eq!(alerted.len(), alerted_set.len(), "no run alerted twice");
    assert!(
        failed_set.is_subset(&alerted_set),
        "every failed run alerted: failed {failed:?}, alerted {alerted:?}"
    );
    let received: Vec<String> = hook
        .received()
        .iter()
        .map(|r| r.headers["x-meridian-delivery"].clone())
        .collect();
    let ids: Vec<String> = all.iter().map(|d| d.id.clone()).collect();
    let mut sorted = received.clone();
    sorted.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(sorted, want, "each delivery received exactly once");
    // The attempts are kept: the outage's deliveries failed (connection refused) before they
    // went through, and say so.
    let retried = all
        .iter()
        .find(|d| d.tries.len() >= 3)
        .expect("a delivery retried through the outage");
    assert!(
        retried.tries.iter().rev().skip(1).all(|t| !t.ok),
        "{retried:#?}"
    );
    assert!(retried.tries.last().unwrap().ok, "{retried:#?}");
    assert!(
        retried.tries[0].message.contains("onnect"),
        "the failure names what went wrong: {retried:#?}"
    );
    for w in retried.tries.windows(2) {
        assert!(w[1].at_ms > w[0].at_ms, "attempts spaced out: {retried:#?}");
    }
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_are_grouped_and_task_callbacks_call_on_each_state_change() {
    let mut f = Federation::start(1, 30).await;
    let hook = Receiver::start().await;
    f.write(webhook(Some("ads"), "ops", hook.url("/alerts")))
        .await;
    f.write(webhook(Some("ads"), "ci", hook.url("/callbacks")))
        .await;
    f.schedule("flaky", EVERY_10S, "exit 3", OverlapPolicy::Skip)
        .await;
    f.write(Command::CreateAlertRule(AlertRule {
        schedule: Some(name("flaky")),
        group_seconds: 60,
        ..rule(Some("ads"), "failures", &[AlertEvent::Failed], "ops")
    }))
    .await;
    // A workflow whose tasks call back: `load` succeeds, `report` (after it) fails.
    let mut definition = WorkflowDefinition::shell("load", "true");
    let mut report = WorkflowDefinition::shell("report", "exit 1")
        .tasks
        .remove(0);
    report.depends_on = vec!["load".into()];
    definition.tasks.push(report);
    for task in &mut definition.tasks {
        task.callbacks = vec![TaskCallback {
            channel: "ci".into(),
            on: vec![AttemptOutcome::Succeeded, AttemptOutcome::Failed],
        }];
    }
    f.write(Command::ApplyWorkflow(Workflow {
        tenant: name("ads"),
        name: name("pipeline"),
        environment: Some(name("prod")),
        definition,
    }))
    .await;
    // A task that retries once and fails again: `retries_exhausted` (of every run of ads's;
    // the failures above had no retry to use up).
    let mut retrier = WorkflowDefinition::shell("stubborn", "exit 2");
    retrier.tasks[0].retries = 1;
    f.write(Command::ApplyWorkflow(Workflow {
        tenant: name("ads"),
        name: name("retrier"),
        environment: Some(name("prod")),
        definition: retrier,
    }))
    .await;
    f.write(webhook(Some("ads"), "retries", hook.url("/retries")))
        .await;
    f.write(Command::CreateAlertRule(rule(
        Some("ads"),
        "used-up",
        &[AlertEvent::RetriesExhausted],
        "retries",
    )))
    .await;
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    for workflow in ["pipeline", "retrier"] {
        f.write(Command::RequestRun(RunRequest {
            tenant: name("ads"),
            workflow: name(workflow),
            environment: None,
        }))
        .await;
    }

    // 10 s: the first failure goes at once; 20…60 s: five more wait out the window together.
    f.advance(Duration::from_secs(60), Duration::from_secs(2))
        .await;
    f.wait_for_history("flaky", 6).await;
    let alerts = || {
        hook.received()
            .into_iter()
            .filter(|r| r.path == "/alerts")
            .collect::<Vec<_>>()
    };
    f.wait_until("the first failure's alert", || async {
        alerts().len() == 1
    })
    .await;
    assert_eq!(alerts()[0].json()["count"], 1);
    let held = deliveries(&f).await;
    let waiting: Vec<&Delivery> = held
        .iter()
        .filter(|d| d.rule == "failures" && d.state == "pending")
        .collect();
    assert_eq!(waiting.len(), 1, "repeats wait in one delivery: {held:#?}");
    assert!(waiting[0].tries.is_empty());
    f.advance(Duration::from_secs(14), Duration::from_secs(2))
        .await;
    f.wait_until("the grouped alert", || async { alerts().len() == 2 })
        .await;
    let grouped = alerts()[1].json();
    assert!(
        grouped["count"].as_u64().unwrap() >= 5,
        "the window's failures in one alert: {grouped}"
    );
    assert_eq!(
        grouped["events"].as_array().unwrap().len() as u64,
        grouped["count"].as_u64().unwrap()
    );
    assert!(
        grouped["summary"]
            .as_str()
            .unwrap()
            .contains("more like it"),
        "{grouped}"
    );
    // Failures going on: one alert a window (the next at 130 s), not one per failure.
    f.advance(Duration::from_secs(50), Duration::from_secs(2))
        .await;
    f.wait_for_history("flaky", 12).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(alerts().len(), 2, "the next window is not over");
    f.advance(Duration::from_secs(10), Duration::from_secs(2))
        .await;
    f.wait_until("the next window's alert", || async { alerts().len() == 3 })
        .await;
    assert!(alerts()[2].json()["count"].as_u64().unwrap() >= 5);

    // The callbacks: one call per task state change asked for, each its own.
    let calls: Vec<serde_json::Value> = hook
        .received()
        .into_iter()
        .filter(|r| r.path == "/callbacks")
        .map(|r| r.json())
        .collect();
    let changes: BTreeSet<(String, String)> = calls
        .iter()
        .map(|c| {
            let d = &c["events"][0]["details"];
            (
                d["task"].as_str().unwrap().to_owned(),
                d["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        BTreeSet::from([
            ("load".to_owned(), "succeeded".to_owned()),
            ("report".to_owned(), "failed".to_owned()),
        ]),
        "{calls:#?}"
    );
    assert_eq!(calls.len(), 2, "each change called once: {calls:#?}");
    let used_up: Vec<serde_json::Value> = hook
        .received()
        .into_iter()
        .filter(|r| r.path == "/retries")
        .map(|r| r.json())
        .collect();
    assert_eq!(used_up.len(), 1, "only the run that retried: {used_up:#?}");
    assert_eq!(used_up[0]["event"], "retries_exhausted");
    assert_eq!(used_up[0]["events"][0]["details"]["workflow"], "retrier");
    assert!(calls.iter().all(|c| c["event"] == "task"));
    // A channel a callback uses cannot be deleted from under it.
    let leader = f.plane.leader().await;
    let refused = f
        .plane
        .node(leader)
        .write(
            meridian_plane::model::Proposal::new(
                "test",
                f.clock.now_ms(),
                Command::DeleteAlertChannel {
                    tenant: Some(name("ads")),
                    name: name("ci"),
                },
            ),
            PATIENCE,
        )
        .await
        .unwrap();
    assert!(
        format!("{refused:?}").contains("workflow `pipeline`'s callbacks"),
        "{refused:?}"
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_alerts_a_run_past_its_sla_an_agent_lost_a_data_center_unheard() {
    let mut f = Federation::start(1, 30).await;
    let hook = Receiver::start().await;
    f.write(webhook(Some("ads"), "ops", hook.url("/ads"))).await;
    f.write(webhook(None, "admins", hook.url("/admins"))).await;
    f.write(webhook(Some("ads"), "late", hook.url("/late")))
        .await;
    f.write(Command::ApplyWorkflow(Workflow {
        tenant: name("ads"),
        name: name("report"),
        environment: Some(name("prod")),
        definition: WorkflowDefinition::shell("main", "true"),
    }))
    .await;
    f.write(Command::CreateAlertRule(AlertRule {
        workflow: Some(name("report")),
        sla_seconds: Some(120),
        ..rule(Some("ads"), "report-sla", &[AlertEvent::Sla], "ops")
    }))
    .await;
    // A schedule whose records fall due while the agent is gone: caught up late on its return.
    f.schedule("tick", EVERY_10S, "true", OverlapPolicy::AllowAll)
        .await;
    f.write(Command::CreateAlertRule(AlertRule {
        schedule: Some(name("tick")),
        late_seconds: Some(5),
        ..rule(Some("ads"), "tick-late", &[AlertEvent::Late], "late")
    }))
    .await;
    f.write(Command::CreateAlertRule(AlertRule {
        unheard_seconds: Some(90),
        ..rule(
            None,
            "machines",
            &[AlertEvent::AgentLost, AlertEvent::DcUnheard],
            "admins",
        )
    }))
    .await;
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    f.kill_agent("agent-1.test").await;
    // With no agent left, a run asked for now waits as `requested`.
    f.write(Command::RequestRun(RunRequest {
        tenant: name("ads"),
        workflow: name("report"),
        environment: None,
    }))
    .await;
    let by_path = |path: &str| {
        hook.received()
            .into_iter()
            .filter(|r| r.path == path)
            .map(|r| r.json())
            .collect::<Vec<_>>()
    };
    // Past the lease: the agent is lost, and only that.
    f.advance(Duration::from_secs(40), Duration::from_secs(5))
        .await;
    f.wait_until("the agent-lost alert", || async {
        !by_path("/admins").is_empty()
    })
    .await;
    let lost = by_path("/admins");
    assert_eq!(lost.len(), 1, "{lost:#?}");
    assert_eq!(lost[0]["event"], "agent_lost");
    assert_eq!(lost[0]["events"][0]["subject"], "agent-1.test");
    assert!(by_path("/ads").is_empty(), "the SLA is not due yet");
    // Past 90 s unheard and the 120 s SLA.
    f.advance(Duration::from_secs(90), Duration::from_secs(5))
        .await;
    f.wait_until("the SLA and data center alerts", || async {
        by_path("/admins").len() == 2 && by_path("/ads").len() == 1
    })
    .await;
    let unheard = &by_path("/admins")[1];
    assert_eq!(unheard["event"], "dc_unheard");
    assert_eq!(unheard["events"][0]["subject"], "dc-a");
    let sla = &by_path("/ads")[0];
    assert_eq!(sla["event"], "sla");
    assert_eq!(sla["events"][0]["details"]["state"], "requested");
    // Raised once each: more time changes nothing.
    f.advance(Duration::from_secs(60), Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(by_path("/admins").len(), 2);
    assert_eq!(by_path("/ads").len(), 1);
    assert!(
        by_path("/late").is_empty(),
        "nothing ran late: {:?}",
        by_path("/late")
    );
    // The agent comes back and catches up what fell due while it was gone: late, each run
    // alerted once.
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    f.advance(Duration::from_secs(4), Duration::from_secs(2))
        .await;
    let runs = f.wait_for_history("tick", 10).await;
    let late: Vec<&String> = runs
        .iter()
        .filter(|r| r.lateness_ms.is_some_and(|l| l > 5_000))
        .map(|r| &r.run_id)
        .collect();
    assert!(late.len() >= 10, "{runs:#?}");
    f.wait_until("an alert for each late run", || async {
        by_path("/late").len() == late.len()
    })
    .await;
    let alerted: BTreeSet<String> = by_path("/late")
        .iter()
        .map(|a| {
            assert_eq!(a["event"], "late");
            a["events"][0]["subject"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        alerted,
        late.into_iter().cloned().collect(),
        "only the late runs"
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_left_in_doubt_by_a_takeover_raise_an_alert() {
    let mut f = Federation::start(1, 10).await;
    let hook = Receiver::start().await;
    f.write(webhook(Some("ads"), "ops", hook.url("/ads"))).await;
    f.schedule("moving", EVERY_10S, "true", OverlapPolicy::AllowAll)
        .await;
    f.write(Command::CreateAlertRule(rule(
        Some("ads"),
        "doubts",
        &[AlertEvent::InDoubt],
        "ops",
    )))
    .await;
    f.start_two_agents_holding_half().await;
    // In steps well inside the 10 s lease, so that no lease lapses between two heartbeats.
    f.advance(Duration::from_secs(10), Duration::from_secs(1))
        .await;
    let (owner, survivor) = f.runner_and_other("moving").await;
    let survivor = survivor.as_str();
    // Renewed at 0:10, its lease runs to 0:20: the 0:20 record is one it may have fired.
    f.wait_heard_now(&owner).await;
    assert!(
        hook.received().is_empty(),
        "a handover's doubt raises nothing"
    );
    f.kill_agent(&owner).await;
    f.advance(Duration::from_secs(40), Duration::from_secs(1))
        .await;
    f.wait_for_partitions(survivor, 16).await;
    // A doubt the old holder settles (a handover) raises nothing; one open a minute does.
    assert!(hook.received().is_empty(), "not a minute yet");
    f.advance(Duration::from_secs(70), Duration::from_secs(2))
        .await;
    f.wait_until("the in-doubt alert", || async {
        !hook.received().is_empty()
    })
    .await;
    let got = hook.received();
    assert_eq!(got.len(), 1, "{got:#?}");
    let alert = got[0].json();
    assert_eq!(alert["event"], "in_doubt");
    assert_eq!(alert["events"][0]["subject"], "ads.moving");
    assert_eq!(
        alert["events"][0]["details"]["previous_holder"],
        owner.as_str()
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_alerts_go_through_the_smtp_relay() {
    let smtp = SmtpServer::start();
    let mut f = Federation::start(1, 30).await;
    f.plane.set_mail(
        0,
        Some(MailConfig {
            host: "127.0.0.1".into(),
            port: smtp.port,
            tls: MailTls::None,
            from: "meridian@example.com".into(),
            username: None,
            password_file: None,
        }),
    );
    f.plane.kill(0).await;
    f.plane.restart(0).await;
    f.plane.wait_for_leader().await;
    f.write(Command::CreateAlertChannel(AlertChannel {
        tenant: Some(name("ads")),
        name: name("oncall"),
        kind: ChannelKind::Email,
        url: None,
        secret: None,
        to: vec!["oncall@example.com".into()],
        description: String::new(),
    }))
    .await;
    f.schedule("flaky", EVERY_10S, "exit 3", OverlapPolicy::Skip)
        .await;
    f.write(Command::CreateAlertRule(rule(
        Some("ads"),
        "mail-failures",
        &[AlertEvent::Failed],
        "oncall",
    )))
    .await;
    f.start_agent("agent-1.test", "main").await;
    f.wait_for_partitions("agent-1.test", 16).await;
    f.advance(Duration::from_secs(10), Duration::from_secs(2))
        .await;
    f.wait_until("the mail to arrive", || async {
        !smtp.messages().is_empty()
    })
    .await;
    let run = &f.history("flaky").await[0];
    let mail = &smtp.messages()[0];
    assert!(mail.contains("oncall@example.com"), "{mail}");
    assert!(mail.contains("Subject: [meridian]"), "{mail}");
    assert!(mail.contains(&run.run_id), "{mail}");
    let sent = deliveries(&f).await;
    assert_eq!(sent[0].state, "delivered");
    assert!(sent[0].tries[0].message.starts_with("250"), "{sent:#?}");
    f.shutdown().await;
}

/// A schedule the rule tests name must exist; a rule naming one that does not is refused,
/// and so is a federation event on a tenant's rule, each saying which field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rules_and_channels_are_refused_naming_the_field() {
    let f = Federation::start(1, 30).await;
    let leader = f.plane.leader().await;
    let refused = |command: Command| {
        let node = f.plane.node(leader);
        let now = f.clock.now_ms();
        async move {
            let outcome = node
                .write(
                    meridian_plane::model::Proposal::new("test", now, command),
                    PATIENCE,
                )
                .await
                .unwrap();
            format!("{outcome:?}")
        }
    };
    f.write(webhook(Some("ads"), "ops", "http://127.0.0.1:9/".into()))
        .await;
    let missing = refused(Command::CreateAlertRule(AlertRule {
        schedule: Some(name("nope")),
        ..rule(Some("ads"), "r", &[AlertEvent::Failed], "ops")
    }))
    .await;
    assert!(
        missing.contains("schedule `ads/nope` does not exist"),
        "{missing}"
    );
    let federation_event = refused(Command::CreateAlertRule(rule(
        Some("ads"),
        "r",
        &[AlertEvent::AgentLost],
        "ops",
    )))
    .await;
    assert!(
        federation_event.contains("on: `agent_lost`"),
        "{federation_event}"
    );
    let no_channel = refused(Command::CreateAlertRule(rule(
        Some("ads"),
        "r",
        &[AlertEvent::Failed],
        "nope",
    )))
    .await;
    assert!(
        no_channel.contains("alert channel `ads/nope` does not exist"),
        "{no_channel}"
    );
    let bad_url = refused(webhook(Some("ads"), "x", "ftp://example.com".into())).await;
    assert!(bad_url.contains("url: `ftp://example.com`"), "{bad_url}");
    let callback = refused(Command::ApplyWorkflow(Workflow {
        tenant: name("ads"),
        name: name("w"),
        environment: None,
        definition: {
            let mut d = WorkflowDefinition::shell("main", "true");
            d.tasks[0].callbacks = vec![TaskCallback {
                channel: "nope".into(),
                on: vec![AttemptOutcome::Failed],
            }];
            d
        },
    }))
    .await;
    assert!(
        callback
            .contains("tasks.main.callbacks[0].channel: tenant `ads` has no alert channel `nope`"),
        "{callback}"
    );
    // Nothing was made by any of them.
    let mut conn = f.plane.node(leader).state.pool().acquire().await.unwrap();
    let rules =
        meridian_plane::model::alerts::list::<AlertRule>(&mut conn, Some(Some(&name("ads"))))
            .await
            .unwrap();
    assert!(rules.is_empty(), "{rules:?}");
    drop(conn);
    f.shutdown().await;
}
