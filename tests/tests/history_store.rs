//! Finished runs leaving the replicated model for the history store (issue #21), through the
//! real state machine, with the store in SQLite and in a real PostgreSQL server (the same
//! test for both): what readers see before, during and after a retirement — including the
//! state a crash between the history store's write and the model's commit leaves — is every
//! run exactly once, the same runs in the same order; the model keeps only what is open; a
//! retired run is re-run from the store; retention empties it.

use std::collections::BTreeMap;

use meridian_domain::workflow::WorkflowDefinition;
use meridian_plane::history_store::HistoryStore;
use meridian_plane::model::query::{RunFilter, RunRecord, TaskAttempt};
use meridian_plane::model::retire::{self, RetireRuns, Retired};
use meridian_plane::model::{
    Cluster, ClusterRole, Command, DataCenter, Environment, Grant, Name, Proposal, RunRequest,
    Tenant, Workflow, processor,
};
use meridian_plane::raft::state_machine::StateMachine;
use meridian_plane::raft::{Entry, Outcome, Request};
use meridian_tests::postgres::Postgres;
use openraft::EntryPayload;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use sqlx::Connection;

const T0: i64 = 1_800_000_000_000;

fn n(s: &str) -> Name {
    Name::new(s).unwrap()
}

struct Plane {
    _dir: tempfile::TempDir,
    sm: StateMachine,
    index: u64,
}

impl Plane {
    /// A state machine whose history store is `url`'s (none: SQLite beside the model).
    async fn new(url: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let history = HistoryStore::open(dir.path(), url).await.unwrap();
        let sm = StateMachine::open(dir.path(), history).await.unwrap();
        Self {
            _dir: dir,
            sm,
            index: 0,
        }
    }

    fn entry(&mut self, command: Command) -> Entry {
        self.index += 1;
        Entry {
            log_id: log_id(1, 1, self.index),
            payload: EntryPayload::Normal(Request(Proposal::new(
                "admin",
                T0 + self.index as i64,
                command,
            ))),
        }
    }

    /// Applies `commands`, one entry each, in one batch; their outcomes' details.
    async fn apply(&mut self, commands: Vec<Command>) -> Vec<Option<String>> {
        let entries: Vec<Entry> = commands.into_iter().map(|c| self.entry(c)).collect();
        self.sm
            .apply(entries)
            .await
            .unwrap()
            .into_iter()
            .map(|o| match o {
                Outcome::Applied(a) => a.detail,
                other => panic!("not applied: {other:?}"),
            })
            .collect()
    }

    async fn federation(&mut self) {
        self.apply(vec![
            Command::CreateDataCenter(DataCenter {
                name: n("nj"),
                description: String::new(),
            }),
            Command::CreateCluster(Cluster {
                name: n("nj-main"),
                dc: n("nj"),
                role: ClusterRole::Active,
                backup: None,
                partitions: 4,
                lease_seconds: 30,
            }),
            Command::CreateEnvironment(Environment {
                name: n("prod-nj"),
                cluster: n("nj-main"),
                vars: Default::default(),
                work_dir: None,
                queue: None,
                run_as: Default::default(),
            }),
            Command::CreateTenant(Tenant {
                name: n("ads"),
                description: String::new(),
                log_retention_days: None,
                history_retention_days: Some(30),
            }),
            Command::CreateGrant(Grant {
                tenant: n("ads"),
                environment: n("prod-nj"),
                max_concurrent_runs: 5,
            }),
            Command::ApplyWorkflow(Workflow {
                tenant: n("ads"),
                name: n("etl"),
                environment: None,
                definition: WorkflowDefinition::shell("main", "true"),
            }),
        ])
        .await;
    }

    /// Everything a reader sees of the runs: the whole list, pages of seven walked by cursor,
    /// the counts per state, and each run on its own.
    async fn seen(&self) -> (Vec<RunRecord>, Vec<String>, Vec<(String, u64)>) {
        let reader = self.sm.runs();
        let all = RunFilter {
            limit: Some(100_000),
            ..RunFilter::default()
        };
        let list = reader.runs(&all).await.unwrap();
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = reader
                .runs(&RunFilter {
                    limit: Some(7),
                    after: after.clone(),
                    ..RunFilter::default()
                })
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.cursor());
            paged.extend(page.into_iter().map(|r| r.run_id));
        }
        for run in &list {
            assert_eq!(reader.run(&run.run_id).await.unwrap().as_ref(), Some(run));
        }
        let counts = reader.run_counts(&all).await.unwrap();
        (list, paged, counts)
    }

    async fn model_runs(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM runs")
            .fetch_one(self.sm.pool())
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn sqlite_retired_runs_are_read_exactly_once_before_during_and_after_a_retirement() {
    retired_runs_are_read_exactly_once(Plane::new(None).await).await;
}

#[tokio::test]
async fn postgres_retired_runs_are_read_exactly_once_before_during_and_after_a_retirement() {
    let pg = Postgres::start().expect("PostgreSQL");
    let url = pg.database("history").await.unwrap();
    retired_runs_are_read_exactly_once(Plane::new(Some(&url)).await).await;
}

async fn retired_runs_are_read_exactly_once(mut p: Plane) {
    p.federation().await;
    let ask = Command::RequestRun(RunRequest {
        tenant: n("ads"),
        workflow: n("etl"),
        environment: Some(n("prod-nj")),
    });
    let details = p.apply(vec![ask; 120]).await;
    let ids: Vec<String> = details
        .iter()
        .map(|d| {
            let d: serde_json::Value = serde_json::from_str(d.as_deref().unwrap()).unwrap();
            d["run_id"].as_str().unwrap().to_owned()
        })
        .collect();
    // Every run but each fourth killed: those are final, the rest still asked for.
    let kills: Vec<Command> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 4 != 0)
        .map(|(_, id)| Command::KillRun { run_id: id.clone() })
        .collect();
    p.apply(kills).await;
    let before = p.seen().await;
    assert_eq!(before.0.len(), 120);
    assert_eq!(before.1.len(), 120);
    assert_eq!(
        before.2,
        vec![("killed".to_owned(), 90), ("requested".to_owned(), 30)]
    );

    // A crash after the history store took a retirement's runs and before the model's commit:
    // the rows are in the store, the model still holds the runs. Readers see each once.
    let retire = Command::RetireRuns(RetireRuns {
        before_ms: T0 + 1_000_000,
        limit: 50,
        await_archive: false,
    });
    let index = p.index + 1;
    {
        let mut conn = p.sm.pool().acquire().await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        let proposal = Proposal::new("history", T0 + index as i64, retire.clone());
        processor::apply(&mut tx, index, &proposal).await.unwrap();
        let leaving = retire::retiring(&mut tx).await.unwrap();
        assert_eq!(leaving.len(), 50);
        p.sm.history().put(&leaving).await.unwrap();
        tx.rollback().await.unwrap();
    }
    assert_eq!(p.sm.history().count().await.unwrap(), 50);
    assert_eq!(p.model_runs().await, 120);
    assert_eq!(
        p.seen().await,
        before,
        "a run seen twice or missed mid-retirement"
    );

    // The entry applied again after the restart, then the rest: the same rows once more (not
    // twice), gone from the model.
    p.apply(vec![retire.clone(), retire.clone()]).await;
    assert_eq!(p.sm.history().count().await.unwrap(), 90);
    assert_eq!(p.model_runs().await, 30);
    assert_eq!(
        p.seen().await,
        before,
        "what readers see changed with the retirement"
    );
    let mut conn = p.sm.pool().acquire().await.unwrap();
    assert!(retire::retiring(&mut conn).await.unwrap().is_empty());
    let retired: Vec<String> = sqlx::query_scalar("SELECT run_id FROM runs ORDER BY run_id")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let open: Vec<&String> = before
        .0
        .iter()
        .filter(|r| r.state == "requested")
        .map(|r| &r.run_id)
        .collect();
    assert_eq!(retired.len(), open.len());

    // Filters read both places alike.
    let killed =
        p.sm.runs()
            .runs(&RunFilter {
                state: Some("killed".into()),
                limit: Some(1000),
                ..RunFilter::default()
            })
            .await
            .unwrap();
    assert_eq!(killed.len(), 90);
    let by_id: BTreeMap<&str, &RunRecord> =
        before.0.iter().map(|r| (r.run_id.as_str(), r)).collect();
    assert!(killed.iter().all(|r| by_id[r.run_id.as_str()] == r));

    // A retired run is re-run from what the history store holds, one generation further; the
    // model alone does not know it.
    let old = killed.last().unwrap().run_id.clone();
    let bare = Command::Rerun(meridian_plane::model::Rerun {
        run_id: old.clone(),
        recover: false,
        retired: None,
    });
    let entry = p.entry(bare);
    let refused = p.sm.apply([entry]).await.unwrap();
    assert!(
        matches!(&refused[0], Outcome::Refused(r) if r.message.contains("does not exist")),
        "{refused:?}"
    );
    let rerun = p.sm.runs().rerun(&old, false).await.unwrap();
    assert_eq!(rerun.retired.as_ref().unwrap().run.run_id, old);
    let detail = p.apply(vec![Command::Rerun(rerun)]).await;
    let detail: serde_json::Value = serde_json::from_str(detail[0].as_deref().unwrap()).unwrap();
    let again = detail["run_id"].as_str().unwrap().to_owned();
    assert_eq!(again, format!("{old}~2"));
    let again = p.sm.runs().run(&again).await.unwrap().unwrap();
    assert_eq!(
        (
            again.generation,
            again.rerun_of.as_deref(),
            again.state.as_str()
        ),
        (2, Some(old.as_str()), "requested")
    );

    // Retention: the tenant keeps 30 days; a sweep as of 31 days on empties the store, the
    // open runs stay.
    let day = 86_400_000;
    let gone =
        p.sm.history()
            .forget(Some("ads"), &[], T0 + 31 * day)
            .await
            .unwrap();
    assert_eq!(gone, 90);
    assert_eq!(p.sm.history().count().await.unwrap(), 0);
    assert_eq!(p.seen().await.0.len(), 31);
}

#[tokio::test]
async fn sqlite_store_writers_at_once_wait_for_each_other() {
    let dir = tempfile::tempdir().unwrap();
    writers_at_once(HistoryStore::open(dir.path(), None).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_store_writers_at_once_wait_for_each_other() {
    let pg = Postgres::start().expect("PostgreSQL");
    let url = pg.database("writers").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    writers_at_once(HistoryStore::open(dir.path(), Some(&url)).await.unwrap()).await;
}

/// The store's writers — the state machine's put, the sweeper, the gap marker — at work on
/// the same store at once, round after round: every one of them succeeds (on SQLite, one
/// that had read and then found another's write since would fail at once with "database is
/// locked"), and what they leave is what they did.
async fn writers_at_once(store: HistoryStore) {
    let mut next = 0u64;
    let mut gone = 0;
    for _ in 0..25 {
        let mut writers = tokio::task::JoinSet::new();
        for _ in 0..3 {
            let batch: Vec<(u64, Retired)> = (0..40)
                .map(|_| {
                    next += 1;
                    (next, old_run(next))
                })
                .collect();
            let s = store.clone();
            writers.spawn(async move { s.put(&batch).await.map(|()| 0) });
            let s = store.clone();
            writers.spawn(async move { s.forget(None, &[], T0 + 1).await });
        }
        let s = store.clone();
        let through = next + 5;
        writers.spawn(async move { s.mark_gap(through).await.map(|_| 0) });
        while let Some(done) = writers.join_next().await {
            gone += done.unwrap().expect("a writer failed rather than waited");
        }
    }
    gone += store.forget(None, &[], T0 + 1).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 0);
    assert!(gone >= next, "{gone} of {next} runs forgotten");
    assert_eq!(store.applied_through().await.unwrap(), next + 5);
}

/// A killed run fired at `T0`, numbered `i`.
fn old_run(i: u64) -> Retired {
    stored_run(&format!("ads.w{i}"), "ads", "prod-nj", "killed", T0)
}

/// A run of `tenant` in `environment` (on cluster and data center `nj`, or `sg` for an
/// environment ending so) fired at `fire_ms`, in `state`.
fn stored_run(id: &str, tenant: &str, environment: &str, state: &str, fire_ms: i64) -> Retired {
    let dc = if environment.ends_with("sg") {
        "sg"
    } else {
        "nj"
    };
    Retired {
        run: RunRecord {
            run_id: id.into(),
            tenant: tenant.into(),
            workflow: "etl".into(),
            workflow_version: 1,
            schedule: None,
            fire_ms: Some(fire_ms),
            environment: environment.into(),
            cluster: dc.into(),
            dc: dc.into(),
            state: state.into(),
            agent: None,
            epoch: 0,
            requested_ms: None,
            queued_ms: None,
            started_ms: None,
            finished_ms: Some(fire_ms),
            lateness_ms: None,
            message: String::new(),
            starts: 0,
            order_ms: Some(fire_ms),
            generation: 1,
            rerun_of: None,
            requested_by: None,
            kept: Vec::new(),
        },
        attempts: vec![TaskAttempt {
            task: "main".into(),
            attempt: 1,
            outcome: state.into(),
            started_ms: None,
            finished_ms: Some(fire_ms),
            exit_code: None,
            message: String::new(),
            warning: String::new(),
        }],
    }
}

#[tokio::test]
async fn sqlite_counts_from_hourly_totals_are_the_runs_counted_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    hourly_counts_are_exact(HistoryStore::open(dir.path(), None).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_counts_from_hourly_totals_are_the_runs_counted_one_by_one() {
    let pg = Postgres::start().expect("PostgreSQL");
    let url = pg.database("hours").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    hourly_counts_are_exact(HistoryStore::open(dir.path(), Some(&url)).await.unwrap()).await;
}

/// The per-state counts a long window reads from `run_hours` (whole hours) and the runs (its
/// ends, and what was retired after the reader's index) are the runs the same filter lists,
/// counted one by one: for windows aligned and not, open on either side, within one hour,
/// before 1970; for every filter the counts carry and one they do not; as of the newest
/// retirement and an older one; after a retirement written twice, a row rewritten in another
/// state, and a sweep.
async fn hourly_counts_are_exact(store: HistoryStore) {
    const MINUTE: i64 = 60_000;
    let envs = ["prod-nj", "test-nj", "prod-sg"];
    let states = ["succeeded", "failed", "killed"];
    let runs: Vec<Retired> = (0..600i64)
        .map(|i| {
            // 7 min 11 s apart over three days, the first twenty before 1970.
            let at = if i < 20 {
                -i * 7 * MINUTE - 1
            } else {
                T0 + i * 431_000
            };
            let tenant = if i % 2 == 0 { "ads" } else { "bi" };
            stored_run(
                &format!("{tenant}.r{i}"),
                tenant,
                envs[i as usize % 3],
                states[i as usize / 3 % 3],
                at,
            )
        })
        .collect();
    let batches: Vec<Vec<(u64, Retired)>> = runs
        .chunks(50)
        .enumerate()
        .map(|(b, chunk)| chunk.iter().map(|r| (b as u64 + 1, r.clone())).collect())
        .collect();
    for batch in &batches {
        store.put(batch).await.unwrap();
    }
    let hour = 3_600_000;
    let day = 24 * hour;
    let windows: Vec<(Option<i64>, Option<i64>)> = vec![
        (None, None),
        (Some(T0), None),
        (None, Some(T0 + day + 17 * MINUTE)),
        (Some(T0 + 5 * hour), Some(T0 + 2 * day)),
        (Some(T0 + 5 * hour + 1), Some(T0 + 2 * day - 1)),
        (
            Some(T0 + 3 * hour + 10 * MINUTE),
            Some(T0 + 3 * hour + 50 * MINUTE),
        ),
        (
            Some(T0 + 3 * hour + 10 * MINUTE),
            Some(T0 + 5 * hour + 50 * MINUTE),
        ),
        (Some(-2 * hour - 1), Some(T0 + 7 * hour)),
        (Some(-hour / 2), Some(0)),
        (Some(-3 * hour - 5 * MINUTE), Some(-hour + 5 * MINUTE)),
    ];
    let filters = |since_ms, until_ms| {
        let base = RunFilter {
            since_ms,
            until_ms,
            limit: Some(100_000),
            ..RunFilter::default()
        };
        vec![
            base.clone(),
            RunFilter {
                tenant: Some("bi".into()),
                ..base.clone()
            },
            RunFilter {
                dc: Some("sg".into()),
                state: Some("failed".into()),
                ..base.clone()
            },
            RunFilter {
                environment: Some("test-nj".into()),
                cluster: Some("nj".into()),
                ..base.clone()
            },
            RunFilter {
                within: Some(vec!["ads".into()]),
                ..base.clone()
            },
            RunFilter {
                within: Some(vec![]),
                ..base.clone()
            },
            RunFilter {
                workflow: Some("etl".into()),
                tenant: Some("ads".into()),
                ..base
            },
        ]
    };
    let check = async |through: u64, when: &str| {
        for (since, until) in &windows {
            for filter in filters(*since, *until) {
                let listed = store
                    .runs(
                        &RunFilter {
                            state: None,
                            ..filter.clone()
                        },
                        through,
                    )
                    .await
                    .unwrap();
                let mut one_by_one: BTreeMap<String, u64> = BTreeMap::new();
                for run in listed {
                    *one_by_one.entry(run.state).or_default() += 1;
                }
                let counted: BTreeMap<String, u64> = store
                    .run_counts(&filter, through)
                    .await
                    .unwrap()
                    .into_iter()
                    .collect();
                assert_eq!(counted, one_by_one, "{when}, through {through}: {filter:?}");
            }
        }
    };
    check(12, "all written").await;
    check(7, "all written").await;
    // A retirement written again, and a run written again in another state.
    store.put(&batches[3]).await.unwrap();
    let mut changed = batches[4][7].clone();
    assert_eq!(changed.1.run.state, "succeeded");
    changed.1.run.state = "failed".into();
    // From the window's second day into its third.
    changed.1.run.fire_ms = Some(changed.1.run.fire_ms.unwrap() + 30 * hour);
    changed.1.run.order_ms = changed.1.run.fire_ms;
    store.put(&[changed]).await.unwrap();
    check(12, "rewritten").await;
    check(4, "rewritten").await;
    // bi's runs before the second day swept.
    let gone = store.forget(Some("bi"), &[], T0 + day).await.unwrap();
    assert_eq!(gone, 100);
    check(12, "swept").await;
    check(9, "swept").await;
}

#[tokio::test]
async fn sqlite_a_gap_is_copied_page_by_page_with_every_runs_attempts() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    gap_copied(
        HistoryStore::open(a.path(), None).await.unwrap(),
        HistoryStore::open(b.path(), None).await.unwrap(),
    )
    .await;
}

#[tokio::test]
async fn postgres_a_gap_is_copied_page_by_page_with_every_runs_attempts() {
    let pg = Postgres::start().expect("PostgreSQL");
    let (a, b) = (
        pg.database("from").await.unwrap(),
        pg.database("to").await.unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    gap_copied(
        HistoryStore::open(dir.path(), Some(&a)).await.unwrap(),
        HistoryStore::open(dir.path(), Some(&b)).await.unwrap(),
    )
    .await;
}

/// A store that missed retirements copies them from another a page at a time, as a node's
/// filler does: every run, with all its attempts in their order, and nothing past the gap.
async fn gap_copied(from: HistoryStore, to: HistoryStore) {
    let mut rows = Vec::new();
    for i in 0..60u64 {
        let mut r = stored_run(
            &format!("ads.g{i:02}"),
            "ads",
            "prod-nj",
            "failed",
            T0 + i as i64,
        );
        // Some runs have three attempts, one none.
        if i % 4 == 0 {
            for n in [2, 3] {
                let mut again = r.attempts[0].clone();
                again.attempt = n;
                again.started_ms = Some(T0 + i as i64 + n as i64);
                r.attempts.push(again);
            }
        }
        if i == 5 {
            r.attempts.clear();
        }
        rows.push((i / 10 + 1, r));
    }
    from.put(&rows).await.unwrap();
    // Retired through index 5 as far as `to`'s model knows; index 6 is past it.
    assert!(to.mark_gap(5).await.unwrap());
    let gap = to.gaps().await.unwrap().remove(0);
    let mut at = gap.clone();
    let mut pages = 0;
    loop {
        let page = from.page(&at, 7).await.unwrap();
        assert!(page.whole);
        let last = page.rows.len() < 7;
        to.fill(&gap, &page.rows, last).await.unwrap();
        pages += 1;
        match page.rows.last() {
            Some((index, r)) if !last => {
                at.after_index = *index;
                at.after_run = r.run.run_id.clone();
            }
            _ => break,
        }
    }
    assert_eq!(pages, 8, "50 runs in pages of 7");
    assert!(to.gaps().await.unwrap().is_empty());
    assert_eq!(to.count().await.unwrap(), 50);
    for (index, r) in &rows {
        let copied = to.run(&r.run.run_id, 1_000).await.unwrap();
        if *index > 5 {
            assert_eq!(copied, None, "{} is past the gap", r.run.run_id);
            continue;
        }
        assert_eq!(copied.as_ref(), Some(&r.run), "{}", r.run.run_id);
        assert_eq!(to.attempts(&r.run.run_id).await.unwrap(), r.attempts);
    }
}
