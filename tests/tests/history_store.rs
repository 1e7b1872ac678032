//! Finished runs leaving the replicated model for the history store (issue #21), through the
//! real state machine, with the store in SQLite and in a real PostgreSQL server (the same
//! test for both): what readers see before, during and after a retirement — including the
//! state a crash between the history store's write and the model's commit leaves — is every
//! run exactly once, the same runs in the same order; the model keeps only what is open; a
//! retired run is re-run from the store; retention empties it.

use std::collections::BTreeMap;

use meridian_domain::workflow::WorkflowDefinition;
use meridian_plane::history_store::HistoryStore;
use meridian_plane::model::query::{RunFilter, RunRecord};
use meridian_plane::model::retire::{self, RetireRuns};
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
