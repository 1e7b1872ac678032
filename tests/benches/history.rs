//! The run history at scale (issue #21): `BENCH_RUNS` retired runs (default 10,000,000, with
//! one task attempt each; two tenants in two data centers over the last 90 days) in a history
//! store — SQLite, or a real PostgreSQL server (`BENCH_BACKEND=postgres`) — beside a plane
//! node's model, which holds the last day's `BENCH_RECENT` runs as the replicated state would.
//! The history is written straight into the store by one generating statement (a bulk path:
//! retiring ten million runs through Raft would take hours), then `ANALYZE`d.
//!
//! Prints: the analysis page's reads through the reader every API and UI read goes through
//! (model and history store together), p50/p99 over `BENCH_READS` each; the model's snapshot
//! (what a joining node receives) and the time to build it and install it on a new node;
//! disk bytes per retired run.
//!
//! Run by hand (figures go to BENCHMARKS.md):
//!   cargo bench -p meridian-tests --bench history
//!   BENCH_BACKEND=postgres cargo bench -p meridian-tests --bench history
//! Knobs: BENCH_RUNS, BENCH_RECENT (default 100000), BENCH_READS (default 100).

use std::time::{Duration, Instant};

use meridian_plane::history_store::HistoryStore;
use meridian_plane::history_store::reader::RunReader;
use meridian_plane::model::query::RunFilter;
use meridian_plane::raft::state_machine::StateMachine;
use meridian_tests::postgres::Postgres;
use meridian_tests::{knob, percentile};
use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;

const DAY_MS: i64 = 86_400_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

/// One statement that writes `runs` runs (and an attempt each) retired before `now_ms`, in
/// the backend's own way of counting rows.
fn fill_sql(postgres: bool, runs: u64, now_ms: i64) -> [String; 2] {
    let rows = if postgres {
        format!("generate_series(0::bigint, {}) AS s(i)", runs - 1)
    } else {
        format!(
            "(WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {}) \
             SELECT i FROM s) AS s",
            runs - 1
        )
    };
    // Constants computed here: PostgreSQL multiplies two literals as 32-bit integers.
    let (end, span) = (now_ms - 2 * DAY_MS, 88 * DAY_MS);
    let fire = format!("({end} - ((i * 2654435761) % {span}))");
    let late = "((i * 31) % 2000 + CASE WHEN (i * 7919) % 100 = 0 THEN 90000 ELSE 0 END)";
    let tenant = "CASE WHEN i % 2 = 0 THEN 'ads' ELSE 'bi' END";
    let id = format!("{tenant} || '.hourly@' || {fire} || '-' || i");
    [
        format!(
            "INSERT INTO runs (run_id, tenant, workflow, workflow_version, schedule, fire_ms, \
             environment, cluster, dc, state, agent, epoch, requested_ms, queued_ms, \
             started_ms, finished_ms, message, starts, updated_ms, order_ms, generation, \
             rerun_of, kept, requested_by, retired_index) \
             SELECT {id}, {tenant}, 'etl', 1, {tenant} || '.hourly', {fire}, \
             CASE WHEN i % 2 = 0 THEN 'prod' ELSE 'bi-prod' END, \
             CASE WHEN i % 2 = 0 THEN 'nj-main' ELSE 'sg-main' END, \
             CASE WHEN i % 2 = 0 THEN 'nj' ELSE 'sg' END, \
             CASE WHEN (i * 7919) % 100 < 90 THEN 'succeeded' \
                  WHEN (i * 7919) % 100 < 96 THEN 'failed' \
                  WHEN (i * 7919) % 100 = 96 THEN 'killed' ELSE 'skipped' END, \
             'agent-' || (i % 7), 1, NULL, NULL, {fire} + {late}, {fire} + {late} + 5000, '', \
             1, {fire} + {late} + 5000, {fire}, 1, NULL, NULL, NULL, 1 + i / 5000 FROM {rows}"
        ),
        format!(
            "INSERT INTO task_attempts (run_id, task, attempt, outcome, started_ms, \
             finished_ms, exit_code, message, warning) \
             SELECT {id}, 'main', 1, 'succeeded', {fire} + {late}, {fire} + {late} + 5000, 0, \
             '', '' FROM {rows}"
        ),
    ]
}

async fn bench() {
    let runs = knob("BENCH_RUNS", 10_000_000);
    let recent = knob("BENCH_RECENT", 100_000);
    let reads = knob("BENCH_READS", 100) as usize;
    let postgres = std::env::var("BENCH_BACKEND").is_ok_and(|b| b == "postgres");
    let now_ms = chrono::Utc::now().timestamp_millis();
    let dir = tempfile::tempdir().unwrap();
    let pg = postgres.then(|| Postgres::start().expect("PostgreSQL"));
    let url = match &pg {
        Some(pg) => Some(pg.database("history").await.unwrap()),
        None => None,
    };
    let history = HistoryStore::open(dir.path(), url.as_deref())
        .await
        .unwrap();
    let sm = StateMachine::open(dir.path(), history.clone())
        .await
        .unwrap();

    let started = Instant::now();
    {
        use sqlx::Connection;
        let url = url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("history.db").display()));
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        for sql in fill_sql(postgres, runs, now_ms) {
            sqlx::query(&sql).execute(&mut conn).await.unwrap();
        }
        // (PostgreSQL: VACUUM as autovacuum would, so index-only scans see the pages as
        // all-visible.)
        let analyze = if postgres {
            "VACUUM ANALYZE"
        } else {
            "ANALYZE"
        };
        sqlx::query(analyze).execute(&mut conn).await.unwrap();
    }
    let through = 1 + (runs - 1) / 5000;
    println!(
        "history: {runs} runs and attempts written in {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        if postgres { "PostgreSQL" } else { "SQLite" }
    );

    // The model: the last day's runs, as the replicated state holds them before they retire.
    let started = Instant::now();
    let model = sm.pool().clone();
    sqlx::query(&format!(
        "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {}) \
         INSERT INTO runs (run_id, tenant, workflow, workflow_version, schedule, fire_ms, \
         environment, cluster, dc, state, agent, epoch, started_ms, finished_ms, message, starts, \
         updated_ms) \
         SELECT CASE WHEN i % 2 = 0 THEN 'ads' ELSE 'bi' END || '.hourly@recent-' || i, \
         CASE WHEN i % 2 = 0 THEN 'ads' ELSE 'bi' END, 'etl', 1, \
         CASE WHEN i % 2 = 0 THEN 'ads' ELSE 'bi' END || '.hourly', {now_ms} - (i * 863) % {DAY_MS}, \
         'prod', 'nj-main', CASE WHEN i % 2 = 0 THEN 'nj' ELSE 'sg' END, \
         CASE WHEN i % 50 = 0 THEN 'started' ELSE 'succeeded' END, 'agent-1', 1, \
         {now_ms} - (i * 863) % {DAY_MS} + 500, {now_ms} - (i * 863) % {DAY_MS} + 5500, '', 1, \
         {now_ms} - (i * 863) % {DAY_MS} + 5500 FROM s",
        recent.max(1) - 1
    ))
    .execute(&model)
    .await
    .unwrap();
    sqlx::query("UPDATE counters SET value = ? WHERE name = 'retired_through'")
        .bind(through as i64)
        .execute(&model)
        .await
        .unwrap();
    sqlx::query("ANALYZE").execute(&model).await.unwrap();
    println!(
        "model: {recent} recent runs written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let reader = sm.runs();
    let day = |d: i64| now_ms - d * DAY_MS;
    let window = |since: i64, until: Option<i64>| RunFilter {
        since_ms: Some(since),
        until_ms: until,
        limit: Some(50),
        ..RunFilter::default()
    };
    let week_ago = window(day(8), Some(day(7)));
    let second = {
        let first = reader.runs(&week_ago).await.unwrap();
        RunFilter {
            after: Some(first.last().unwrap().cursor()),
            ..week_ago.clone()
        }
    };
    let cases: Vec<(&str, RunFilter, bool)> = vec![
        (
            "last 24 h (model), first page and counts",
            window(day(1), None),
            true,
        ),
        (
            "a day a week ago (history), first page and counts",
            week_ago.clone(),
            true,
        ),
        (
            "a day a week ago, tenant",
            RunFilter {
                tenant: Some("ads".into()),
                ..week_ago.clone()
            },
            true,
        ),
        (
            "a day a week ago, state failed",
            RunFilter {
                state: Some("failed".into()),
                ..week_ago.clone()
            },
            true,
        ),
        (
            "a day a week ago, tenant + dc + state",
            RunFilter {
                tenant: Some("ads".into()),
                dc: Some("nj".into()),
                state: Some("failed".into()),
                ..week_ago.clone()
            },
            true,
        ),
        ("a day a week ago, second page", second, false),
        (
            "a day a week ago, late by over 60 s",
            RunFilter {
                lateness_min_ms: Some(60_000),
                ..week_ago.clone()
            },
            true,
        ),
        (
            "last 7 days (both), first page and counts",
            window(day(7), None),
            true,
        ),
        (
            "last 30 days, first page and counts",
            window(day(30), None),
            true,
        ),
        (
            "a schedule's runs, first page (no window)",
            RunFilter {
                schedule: Some("bi.hourly".into()),
                limit: Some(50),
                ..RunFilter::default()
            },
            false,
        ),
    ];
    println!("| read ({runs} retired runs, {recent} in the model) | p50 | p99 | runs |");
    println!("| --- | --- | --- | --- |");
    for (name, filter, counts) in &cases {
        let (times, n) = timed(reads, || page(&reader, filter, *counts)).await;
        println!("| {name} | {} | {} | {n} |", ms(times.0), ms(times.1));
    }
    let some_id = reader.runs(&week_ago).await.unwrap()[7].run_id.clone();
    let (times, _) = timed(reads, || async {
        let run = reader.run(&some_id).await.unwrap().unwrap();
        reader.attempts(&run.run_id).await.unwrap().len()
    })
    .await;
    println!(
        "| one retired run and its attempts | {} | {} | 1 |",
        ms(times.0),
        ms(times.1)
    );
    let (times, _) = timed(reads, || async {
        reader.run_activity(day(1)).await.unwrap().len()
            + reader.lateness_by_dc(day(1)).await.unwrap().len()
    })
    .await;
    println!(
        "| overview's reads (24 h activity and lateness) | {} | {} | |",
        ms(times.0),
        ms(times.1)
    );

    // What a joining node receives: the model's snapshot, whatever the history holds.
    let mut builder = sm.clone();
    let started = Instant::now();
    let snapshot = builder.build_snapshot().await.unwrap();
    let built = started.elapsed();
    let bytes = snapshot.snapshot.metadata().await.unwrap().len();
    let other = tempfile::tempdir().unwrap();
    let other_history = HistoryStore::open(other.path(), None).await.unwrap();
    let mut joining = StateMachine::open(other.path(), other_history)
        .await
        .unwrap();
    let started = Instant::now();
    // As the leader sends it: the file streamed into the one the joining node receives into.
    let mut sent = snapshot.snapshot;
    let mut received = joining.begin_receiving_snapshot().await.unwrap();
    tokio::io::copy(&mut *sent, &mut *received).await.unwrap();
    joining
        .install_snapshot(&snapshot.meta, received)
        .await
        .unwrap();
    let installed = started.elapsed();
    println!(
        "snapshot: {:.1} MB (the model with {recent} recent runs); built in {:.2} s, installed \
         on a new node in {:.2} s",
        bytes as f64 / 1e6,
        built.as_secs_f64(),
        installed.as_secs_f64()
    );
    // Retiring the model's finished runs through the state machine's apply, as every node
    // does: the processor moves them out, the history store takes them before the commit.
    let mut sm = sm;
    let mut index = 10_000_000_u64;
    let mut retired = 0;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    loop {
        index += 1;
        let entry = openraft::Entry::<meridian_plane::raft::TypeConfig> {
            log_id: openraft::testing::log_id(1, 1, index),
            payload: openraft::EntryPayload::Normal(meridian_plane::raft::Request(
                meridian_plane::model::Proposal::new(
                    "history",
                    now_ms,
                    meridian_plane::model::Command::RetireRuns(
                        meridian_plane::model::retire::RetireRuns {
                            before_ms: now_ms + DAY_MS,
                            limit: 2000,
                            await_archive: false,
                        },
                    ),
                ),
            )),
        };
        let one = Instant::now();
        sm.apply([entry]).await.unwrap();
        slowest = slowest.max(one.elapsed());
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE state <> 'started'")
            .fetch_one(sm.pool())
            .await
            .unwrap();
        let now_retired = recent as i64 - recent as i64 / 50 - left;
        if now_retired as u64 == retired {
            break;
        }
        retired = now_retired as u64;
    }
    let took = started.elapsed();
    println!(
        "retirement: {retired} runs through the apply in {:.1} s ({:.0} runs/s; the slowest \
         2,000-run apply {:.0} ms)",
        took.as_secs_f64(),
        retired as f64 / took.as_secs_f64(),
        slowest.as_secs_f64() * 1000.0
    );
    if !postgres {
        let size = std::fs::metadata(dir.path().join("history.db"))
            .map(|m| m.len())
            .unwrap_or(0);
        println!(
            "history.db: {:.1} MB, {:.0} bytes per retired run (with its attempt)",
            size as f64 / 1e6,
            size as f64 / runs as f64
        );
    } else {
        let pool = sqlx::PgPool::connect(url.as_deref().unwrap())
            .await
            .unwrap();
        let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(&pool)
            .await
            .unwrap();
        println!(
            "PostgreSQL database: {:.1} MB, {:.0} bytes per retired run (with its attempt)",
            size as f64 / 1e6,
            size as f64 / runs as f64
        );
    }
    drop(pg);
}

/// A first page of `filter` (and its per-state counts, as the analysis page shows them).
async fn page(reader: &RunReader, filter: &RunFilter, counts: bool) -> usize {
    let runs = reader.runs(filter).await.unwrap();
    if counts {
        reader.run_counts(filter).await.unwrap();
    }
    runs.len()
}

async fn timed<F, Fut>(n: usize, mut f: F) -> ((Duration, Duration), usize)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let mut times = Vec::with_capacity(n);
    let mut last = 0;
    for _ in 0..n {
        let started = Instant::now();
        last = f().await;
        times.push(started.elapsed());
    }
    times.sort();
    ((percentile(&times, 0.5), percentile(&times, 0.99)), last)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
