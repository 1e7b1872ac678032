//! The agent against a real plane, in process, on a manual clock: leases, the 50-record
//! buffer, firing, shell tasks, the outbox, and the run history they produce.

use std::time::Duration;

use meridian_plane::model::query;
use meridian_proto::{OverlapPolicy, WINDOW};
use meridian_tests::federation::{Federation, check, epoch};

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
    let logs = query::logs(&pool, &runs[0].run_id).await.unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].text, format!("hello from {}\n", runs[0].run_id));
    let attempts = query::attempts(&pool, &runs[0].run_id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "succeeded");
    assert_eq!(attempts[0].exit_code, Some(0));
    f.shutdown().await;
}
