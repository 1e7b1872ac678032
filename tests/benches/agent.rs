//! The agent's figures for issue #4, on a real one-node plane and a real agent (mutual TLS on
//! loopback, durable SQLite on both sides), on the system clock:
//!
//! - `precision`: fire precision (lateness = start − fire time, p50/p99/max) with
//!   `BENCH_SCHEDULES` (default 1,000) schedules firing every second for `BENCH_SECONDS`
//!   (default 60, so the 50-record windows are consumed and refilled), a no-op task;
//! - `burst`: `BENCH_BURST` (default 100,000) schedules all due in the same second, a no-op
//!   task: all started, none missed, lateness percentiles;
//! - `shell`: `BENCH_SHELL` (default 3,000) runs of a `/bin/true` shell task all due at once,
//!   runs per second, against a plain spawn-and-wait loop of `/bin/true` on this machine;
//! - `backfill` (issue #20): a backfill of `BENCH_BACKFILL` (default 100,000) records of a
//!   no-op schedule, `BENCH_PARALLEL` (default 64) at once, through the one agent, while
//!   `BENCH_BESIDE` (default 100) other schedules fire every second: records per second, and
//!   the on-time schedules' lateness meanwhile (target p99 < 100 ms).
//!
//! Lateness and rates are read from the plane's run history (the agent stamps the times); the
//! checker counts every due record once.
//!
//! Run by hand (figures go to BENCHMARKS.md):
//!   cargo bench -p meridian-tests --bench agent [-- precision|burst|shell|backfill]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use meridian_agent::supervisor::Supervision;
use meridian_domain::workflow::{TaskKind, TaskSpec, WorkflowDefinition};
use meridian_domain::{Clock, OverlapPolicy, ScheduleSpec, SystemClock};
use meridian_plane::model::query::{self, RunFilter, RunRecord};
use meridian_plane::model::{Command, Schedule, Workflow};
use meridian_tests::cluster::PATIENCE;
use meridian_tests::federation::{Federation, name};
use meridian_tests::{knob, percentile};

fn main() {
    // BENCH_LOG=debug shows the agent's firing passes (and everything else at that level).
    let level = std::env::var("BENCH_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(tracing::Level::WARN);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |m: &str| which.is_empty() || which.iter().any(|w| w == m);
    // The backfill only when asked for: it takes minutes.
    let asked = |m: &str| which.iter().any(|w| w == m);
    runtime.block_on(async {
        if wants("precision") {
            precision().await;
        }
        if wants("burst") {
            burst_noop().await;
        }
        if wants("shell") {
            shell().await;
        }
        if asked("backfill") {
            backfill().await;
        }
    });
}

fn definition(kind: TaskKind) -> WorkflowDefinition {
    WorkflowDefinition {
        tasks: vec![TaskSpec {
            name: "task".into(),
            kind,
            depends_on: vec![],
            timeout_seconds: None,
            retries: 0,
            retry_delay_seconds: 1,
            retry_max_seconds: None,
            resources: Default::default(),
            callbacks: Vec::new(),
        }],
    }
}

/// Workflow `w` of tenant `ads` doing `kind`, and `n` schedules of it on `cron`.
async fn schedules(f: &Federation, n: u64, kind: TaskKind, cron: &str) {
    let started = Instant::now();
    f.write(Command::ApplyWorkflow(Workflow {
        tenant: name("ads"),
        name: name("w"),
        environment: Some(name("prod")),
        definition: definition(kind),
    }))
    .await;
    let ids: Vec<u64> = (0..n).collect();
    for chunk in ids.chunks(1_000) {
        f.write(Command::Batch(
            chunk
                .iter()
                .map(|i| {
                    Command::CreateSchedule(Schedule {
                        tenant: name("ads"),
                        name: name(&format!("s{i:06}")),
                        workflow: name("w"),
                        environment: name("prod"),
                        spec: ScheduleSpec::cron(cron),
                        overlap: OverlapPolicy::AllowAll,
                        takeover: Default::default(),
                    })
                })
                .collect(),
        ))
        .await;
    }
    eprintln!("  {n} schedules created in {:.1?}", started.elapsed());
}

/// Starts the agent and waits until its buffer holds `records` records.
async fn agent_ready(f: &mut Federation, records: u64, slots: u32) {
    let started = Instant::now();
    f.slots = slots;
    f.start_agent("agent-1.bench", "main").await;
    let agent = f.agent("agent-1.bench");
    loop {
        let have = agent.buffer().total().await.unwrap();
        if have >= records {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "the agent buffered {have} of {records} records in 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "  agent holds its partitions and {records} records after {:.1?}",
        started.elapsed()
    );
}

/// Every run whose fire time is in `[from_ms, to_ms]`, once all of them (`expected`) are final.
/// While waiting it only counts (a cheap query), so the benchmark does not load the plane.
async fn wait_for_runs(
    f: &Federation,
    from_ms: i64,
    to_ms: i64,
    expected: usize,
) -> Vec<RunRecord> {
    let started = Instant::now();
    let mut last_said = Instant::now();
    loop {
        let leader = f.plane.leader().await;
        let node = f.plane.node(leader);
        node.read_barrier(PATIENCE).await.expect("read barrier");
        let done: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE fire_ms BETWEEN ? AND ? \
             AND state IN ('succeeded', 'failed', 'killed', 'skipped')",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_one(node.state.pool())
        .await
        .unwrap();
        if done as usize >= expected {
            eprintln!(
                "  the plane has every run's end {:.1?} later",
                started.elapsed()
            );
            let runs = query::runs(
                node.state.pool(),
                &RunFilter {
                    since_ms: Some(from_ms),
                    limit: Some(100_000),
                    ..RunFilter::default()
                },
            )
            .await
            .unwrap();
            return runs
                .into_iter()
                .filter(|r| r.fire_ms.is_some_and(|t| t <= to_ms))
                .collect();
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "the plane has {done} of {expected} runs finished after 15 minutes"
        );
        if last_said.elapsed() > Duration::from_secs(30) {
            eprintln!("  … the plane has {done} runs finished");
            last_said = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Prints the checker's counts and the lateness percentiles; returns them.
fn report(label: &str, runs: &[RunRecord], due: usize) -> (i64, i64, i64) {
    let mut per_record: BTreeMap<&str, u32> = BTreeMap::new();
    for r in runs {
        *per_record.entry(&r.run_id).or_default() += r.starts.max(1);
    }
    let duplicated: u32 = per_record.values().map(|n| n - 1).sum();
    let started: Vec<&RunRecord> = runs.iter().filter(|r| r.started_ms.is_some()).collect();
    let succeeded = runs.iter().filter(|r| r.state == "succeeded").count();
    let mut lateness: Vec<i64> = started.iter().filter_map(|r| r.lateness_ms).collect();
    lateness.sort_unstable();
    let (p50, p99, max) = (
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        *lateness.last().unwrap(),
    );
    println!(
        "{label}: due {due}, started {}, succeeded {succeeded}, missed {}, duplicated {duplicated}; \
         lateness p50 {p50} ms, p99 {p99} ms, max {max} ms",
        started.len(),
        due - per_record.len().min(due),
    );
    (p50, p99, max)
}

/// A Quartz expression firing every hour at `at`'s minute and second: every schedule due at
/// `at` (and an hour later, outside the measurement), as hourly jobs are.
fn hourly_at(at: DateTime<Utc>) -> String {
    format!("{} {} * * * ?", at.second(), at.minute())
}

fn whole_second_after(lead: Duration) -> DateTime<Utc> {
    let at = SystemClock.now() + chrono::TimeDelta::from_std(lead).unwrap();
    DateTime::from_timestamp(at.timestamp() + 1, 0).unwrap()
}

async fn precision() {
    let n = knob("BENCH_SCHEDULES", 1_000);
    let seconds = knob("BENCH_SECONDS", 60) as i64;
    eprintln!("precision: {n} schedules every second for {seconds} s");
    let mut f = Federation::start_on_system_clock(1, 30).await;
    schedules(&f, n, TaskKind::Noop {}, "* * * * * ?").await;
    agent_ready(&mut f, n * 50, 1_000_000).await;
    let from = whole_second_after(Duration::from_secs(2));
    let to = from + chrono::TimeDelta::seconds(seconds - 1);
    let until = (to - SystemClock.now()).to_std().unwrap_or_default() + Duration::from_secs(1);
    tokio::time::sleep(until).await;
    let runs = wait_for_runs(
        &f,
        from.timestamp_millis(),
        to.timestamp_millis(),
        (n as i64 * seconds) as usize,
    )
    .await;
    report(
        &format!("precision ({n} fires/s for {seconds} s)"),
        &runs,
        (n as i64 * seconds) as usize,
    );
    f.shutdown().await;
}

async fn burst_noop() {
    let n = knob("BENCH_BURST", 100_000);
    let lead = Duration::from_secs(knob("BENCH_LEAD", 240));
    eprintln!("burst: {n} schedules due in the same second, no-op task");
    let mut f = Federation::start_on_system_clock(1, 60).await;
    let at = whole_second_after(lead);
    schedules(&f, n, TaskKind::Noop {}, &hourly_at(at)).await;
    agent_ready(&mut f, n * 50, 1_000_000).await;
    assert!(
        SystemClock.now() < at - chrono::TimeDelta::seconds(2),
        "setup took longer than BENCH_LEAD ({lead:?}); raise it"
    );
    let runs = wait_for_runs(&f, at.timestamp_millis(), at.timestamp_millis(), n as usize).await;
    report(&format!("burst ({n} due at once)"), &runs, n as usize);
    task_began(&f, at.timestamp_millis()).await;
    f.shutdown().await;
}

/// The stricter figure: when each run's (only) task actually began, as its attempt records
/// it, less the fire time — past the run's `started` stamp, this counts writing the take and
/// getting the run's task going.
async fn task_began(f: &Federation, fire_ms: i64) {
    let leader = f.plane.leader().await;
    let node = f.plane.node(leader);
    let mut began: Vec<i64> = sqlx::query_scalar(
        "SELECT a.started_ms - r.fire_ms FROM task_attempts a JOIN runs r USING (run_id) \
         WHERE r.fire_ms = ? AND a.attempt = 1 AND a.started_ms IS NOT NULL",
    )
    .bind(fire_ms)
    .fetch_all(node.state.pool())
    .await
    .unwrap();
    began.sort_unstable();
    println!(
        "  first task began ({} attempts): p50 {} ms, p99 {} ms, max {} ms after the fire time",
        began.len(),
        percentile(&began, 0.5),
        percentile(&began, 0.99),
        began.last().copied().unwrap_or_default(),
    );
}

async fn shell() {
    let n = knob("BENCH_SHELL", 3_000);
    let lead = Duration::from_secs(knob("BENCH_LEAD_SHELL", 30));

    // The machine's own rate: spawn `/bin/true` and wait for it, in a loop.
    let started = Instant::now();
    let mut spawned = 0u32;
    while started.elapsed() < Duration::from_secs(5) {
        std::process::Command::new("/bin/true")
            .status()
            .expect("/bin/true runs");
        spawned += 1;
    }
    let raw = f64::from(spawned) / started.elapsed().as_secs_f64();
    println!("spawn-and-wait loop of /bin/true: {raw:.0}/s");

    eprintln!("shell: {n} runs of `true` due at once");
    let mut f = Federation::start_on_system_clock(1, 60).await;
    // Supervised as in production, by a `meridian-agent supervise` process of its own
    // (BENCH_SUPERVISOR=in-process: inside the bench's process, to tell the costs apart).
    f.supervision = match std::env::var("BENCH_SUPERVISOR").as_deref() {
        Ok("in-process") => Supervision::InProcess,
        _ => Supervision::Program(meridian_tests::binary("meridian-agent")),
    };
    let at = whole_second_after(lead);
    schedules(
        &f,
        n,
        TaskKind::Shell {
            script: "true".into(),
        },
        &hourly_at(at),
    )
    .await;
    agent_ready(&mut f, n * 50, knob("BENCH_SHELL_SLOTS", 64) as u32).await;
    let runs = wait_for_runs(&f, at.timestamp_millis(), at.timestamp_millis(), n as usize).await;
    let first = runs.iter().filter_map(|r| r.started_ms).min().unwrap();
    let last = runs.iter().filter_map(|r| r.finished_ms).max().unwrap();
    let rate = n as f64 / ((last - first) as f64 / 1000.0);
    report(&format!("shell ({n} runs of `true`)"), &runs, n as usize);
    println!(
        "shell tasks: {rate:.0}/s = {:.0} % of the spawn-and-wait loop",
        100.0 * rate / raw
    );
    f.shutdown().await;
}

async fn backfill() {
    use meridian_plane::model::backfills::{self, BackfillState};
    use meridian_plane::model::{Backfill, BackfillOrder};
    let n = knob("BENCH_BACKFILL", 100_000);
    let parallel = knob("BENCH_PARALLEL", 64) as u32;
    let beside = knob("BENCH_BESIDE", 100);
    eprintln!(
        "backfill: {n} records, {parallel} at once, beside {beside} schedules firing every second"
    );
    let mut f = Federation::start_on_system_clock(1, 30).await;
    schedules(&f, beside, TaskKind::Noop {}, "* * * * * ?").await;
    f.write(Command::CreateSchedule(Schedule {
        tenant: name("ads"),
        name: name("filled"),
        workflow: name("w"),
        environment: name("prod"),
        spec: ScheduleSpec::cron("* * * * * ?"),
        overlap: OverlapPolicy::Skip,
        takeover: Default::default(),
    }))
    .await;
    agent_ready(&mut f, (beside + 1) * 50, 256).await;
    // Its `n` fire times before it was created (every second).
    let created = SystemClock.now();
    let last = DateTime::from_timestamp(created.timestamp() - 1, 0).unwrap();
    let started = Instant::now();
    let from_ms = SystemClock.now().timestamp_millis();
    let applied = f
        .write(Command::CreateBackfill(Backfill {
            tenant: name("ads"),
            schedule: name("filled"),
            from: last - chrono::TimeDelta::seconds(n as i64 - 1),
            to: last,
            parallel,
            order: BackfillOrder::Asc,
            all: false,
        }))
        .await;
    let made: backfills::Created = serde_json::from_str(&applied.detail.unwrap()).unwrap();
    eprintln!(
        "  backfill of {} records made in {:.1?}",
        made.total,
        started.elapsed()
    );
    let pool = f.plane.node(f.plane.leader().await).state.pool().clone();
    let mut last_said = Instant::now();
    let b = loop {
        let b = backfills::get(&pool, &made.id).await.unwrap().unwrap();
        if b.state == BackfillState::Done {
            break b;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3_600),
            "the backfill is not done after an hour: {b:?}"
        );
        if last_said.elapsed() > Duration::from_secs(30) {
            eprintln!("  … {:?} after {:.0?}", b.progress, started.elapsed());
            last_said = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let took = started.elapsed();
    let to_ms = SystemClock.now().timestamp_millis();
    println!(
        "backfill ({} records, {parallel} at once): {} succeeded, {} failed in {:.1?}: {:.0} records/s",
        made.total,
        b.progress.succeeded,
        b.progress.failed,
        took,
        b.progress.succeeded as f64 / took.as_secs_f64()
    );
    // The filled schedule's own on-time records fire too (every second): counted with them.
    let seconds = (to_ms.div_euclid(1000) - (from_ms + 999).div_euclid(1000) + 1) as usize;
    let due = (beside + 1) as usize * seconds;
    let runs: Vec<RunRecord> = wait_for_runs(&f, from_ms, to_ms, due)
        .await
        .into_iter()
        .filter(|r| r.rerun_of.is_none())
        .collect();
    report(
        &format!(
            "  on-time schedules meanwhile ({} s)",
            (to_ms - from_ms) / 1000
        ),
        &runs,
        runs.len(),
    );
    f.shutdown().await;
}
