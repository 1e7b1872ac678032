//! The plane's Raft storage (redb log store, SQLite state machine) against openraft's own
//! storage test suite, plus what the suite cannot check: proposals applied through the model,
//! refusals recorded as outcomes, snapshots carrying the model to another node, and a stopped
//! node exported to a snapshot file with its whole log applied.

use std::collections::BTreeMap;

use meridian_plane::history_store::HistoryStore;
use meridian_plane::model::{Command, DataCenter, Name, Proposal, query};
use meridian_plane::raft::backup;
use meridian_plane::raft::log_store::LogStore;
use meridian_plane::raft::state_machine::StateMachine;
use meridian_plane::raft::{Entry, Node, Outcome, Request, StorageError, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite, log_id};
use openraft::{EntryPayload, Membership, RaftSnapshotBuilder};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(&dir.path().join("raft.redb")).expect("open log");
        let history = HistoryStore::open(dir.path(), None)
            .await
            .expect("open history store");
        let sm = StateMachine::open(dir.path(), history)
            .await
            .expect("open state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

fn create_dc(name: &str) -> Request {
    Request(Proposal::new(
        "admin",
        1,
        Command::CreateDataCenter(DataCenter {
            name: Name::new(name).unwrap(),
            description: String::new(),
        }),
    ))
}

fn normal(index: u64, request: Request) -> Entry {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(request),
    }
}

#[tokio::test]
async fn proposals_apply_through_the_model_and_refusals_are_outcomes() {
    let (_dir, _log, mut sm) = Builder.build().await.unwrap();
    let outcomes = sm
        .apply([normal(1, create_dc("nj")), normal(2, create_dc("nj"))])
        .await
        .unwrap();
    assert!(matches!(&outcomes[0], Outcome::Applied(a) if a.subject == "data center nj"));
    assert_eq!(
        outcomes[1],
        Outcome::Refused(meridian_plane::model::processor::Rejection {
            kind: meridian_plane::model::processor::RefusalKind::Exists,
            message: "creating data center `nj`: data center `nj` already exists".into()
        })
    );
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(
        applied,
        Some(log_id(1, 1, 2)),
        "a refused entry is still applied"
    );
}

#[tokio::test]
async fn a_snapshot_carries_the_model_to_another_node() {
    let (_a_dir, _a_log, mut a) = Builder.build().await.unwrap();
    let members = Membership::new(
        vec![[1u64].into()],
        BTreeMap::from([(1u64, Node::new("plane-1", 7443))]),
    );
    a.apply([
        Entry {
            log_id: log_id(1, 1, 1),
            payload: EntryPayload::Membership(members),
        },
        normal(2, create_dc("nj")),
        normal(3, create_dc("shanghai")),
    ])
    .await
    .unwrap();
    let snapshot = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 1, 3)));

    let (_b_dir, _b_log, mut b) = Builder.build().await.unwrap();
    // b had diverged state of its own; the snapshot replaces it entirely.
    b.apply([normal(1, create_dc("berlin"))]).await.unwrap();
    b.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    let names: Vec<String> = query::data_centers(b.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name.to_string())
        .collect();
    assert_eq!(names, ["nj", "shanghai"]);
    let (applied, membership) = b.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1, 3)));
    assert_eq!(
        membership.membership().get_node(&1).unwrap().hostname,
        "plane-1"
    );
    let current = b.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.snapshot_id, snapshot.meta.snapshot_id);
}

#[tokio::test]
async fn the_log_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.redb");
    {
        let mut log = LogStore::open(&path).unwrap();
        log.blocking_append([normal(1, create_dc("nj")), normal(2, create_dc("sh"))])
            .await
            .unwrap();
    }
    let mut log = LogStore::open(&path).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 2)));
}

#[tokio::test]
async fn an_export_applies_the_whole_log_and_refuses_a_log_that_does_not_join_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        std::fs::create_dir_all(&data).unwrap();
        let mut log = LogStore::open(&data.join("raft.redb")).unwrap();
        let history = HistoryStore::open(&data, None).await.unwrap();
        let mut sm = StateMachine::open(&data, history).await.unwrap();
        let entries: Vec<Entry> = ["a", "b", "c", "d"]
            .iter()
            .enumerate()
            .map(|(i, name)| normal(i as u64 + 1, create_dc(name)))
            .collect();
        log.blocking_append(entries.clone()).await.unwrap();
        // The model applied two of the four entries the log holds.
        sm.apply(entries[..2].to_vec()).await.unwrap();
        sm.pool().close().await;
    }
    let file = dir.path().join("export.snapshot");
    let summary = backup::export(&data, &file).await.unwrap();
    assert_eq!(summary.index, 4);
    let conn = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", file.display()))
        .await
        .unwrap();
    let dcs: Vec<String> = sqlx::query_scalar("SELECT name FROM data_centers ORDER BY name")
        .fetch_all(&conn)
        .await
        .unwrap();
    assert_eq!(dcs, ["a", "b", "c", "d"]);

    // Purged past what the model applied: entries would be missing, so no file is written.
    let mut log = LogStore::open(&data.join("raft.redb")).unwrap();
    log.purge(log_id(1, 1, 3)).await.unwrap();
    drop(log);
    let refused = dir.path().join("refused.snapshot");
    let err = backup::export(&data, &refused)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not go on from the model's last applied entry"),
        "{err}"
    );
    assert!(!refused.exists());
}
