//! The Raft state machine: the model's SQLite database.
//!
//! Applying a batch of entries is one SQLite transaction: each proposal goes through the model
//! processor (in its own savepoint, so a refusal changes nothing), and the last applied log id
//! and membership are written in the same transaction. After a crash the database therefore
//! says exactly which entry to replay from.
//!
//! A snapshot is `VACUUM INTO` a new file: a consistent copy of the database as of one
//! transaction, taken while applies go on, with the Raft progress inside it (so the snapshot's
//! metadata is read from the copy itself and always matches its contents). Snapshots live in
//! `<dir>/snapshots/` as `<id>.db` plus `<id>.json` (the metadata); only the newest is kept.
//! Installing one copies every table of the received file into the live database in one
//! transaction, so readers sharing the connection pool never see a half-installed state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};

use super::{Entry, LogId, Outcome, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::history_store::HistoryStore;
use crate::history_store::reader::RunReader;
use crate::model::processor::{self, ApplyError};
use crate::model::wal::{self, Restart};
use crate::model::{Command, retire};

/// The model database's file in a node's data directory.
pub const MODEL_FILE: &str = "model.db";

/// How the name of a snapshot file being received starts.
const RECEIVING: &str = "receiving-";

/// The state machine; clones share the database and the snapshot directory.
#[derive(Clone)]
pub struct StateMachine {
    pool: SqlitePool,
    /// The apply's own connection (`model::writer`).
    writer: SqlitePool,
    /// Where finished runs go when they leave the model (`model::retire`).
    history: HistoryStore,
    snapshots: PathBuf,
    /// Serialises snapshot building and installing with each other (not with applies).
    snapshot_lock: Arc<tokio::sync::Mutex<()>>,
    counter: Arc<AtomicU64>,
    /// The file a snapshot from the leader is being received into (`receiving-<n>.tmp`).
    receiving: Arc<std::sync::Mutex<Option<PathBuf>>>,
    /// Bumped after every commit that changed who may do what (a token, user, binding or
    /// session), so the API's cache of resolved principals knows when to look again.
    access: Arc<AtomicU64>,
    /// Shared with the checkpointer of the model's log (`model::wal`): the apply is its writer.
    restart: Restart,
}

impl StateMachine {
    /// Opens the model database in `dir` (`model.db`) and its snapshot directory, beside
    /// `history`, the node's history store.
    pub async fn open(dir: &Path, history: HistoryStore) -> Result<Self, sqlx::Error> {
        let snapshots = dir.join("snapshots");
        std::fs::create_dir_all(&snapshots)?;
        // Leftovers of a snapshot build or install cut short by a crash.
        for entry in std::fs::read_dir(&snapshots)?.flatten() {
            if entry.path().extension().is_some_and(|e| e == "tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let pool = crate::model::open(&dir.join(MODEL_FILE)).await?;
        let writer = crate::model::writer(&pool).await?;
        Ok(Self {
            pool,
            writer,
            history,
            snapshots,
            snapshot_lock: Arc::default(),
            counter: Arc::default(),
            receiving: Arc::default(),
            access: Arc::default(),
            restart: Restart::default(),
        })
    }

    /// Closes the model's connections, the apply's among them.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    /// For the model's log's checkpointer.
    pub fn wal_restart(&self) -> Restart {
        self.restart.clone()
    }

    /// The runs, wherever they are: the model's and the history store's.
    pub fn runs(&self) -> RunReader {
        RunReader {
            model: self.pool.clone(),
            history: self.history.clone(),
        }
    }

    pub fn history(&self) -> &HistoryStore {
        &self.history
    }

    /// Records as a gap of the history store the runs the model has retired but the store
    /// was never given (`history_store::gaps`); whether there was one.
    pub async fn mark_history_gap(&self) -> Result<bool, sqlx::Error> {
        let through = retire::retired_through(&mut *self.pool.acquire().await?).await?;
        self.history.mark_gap(through).await
    }

    /// Writes what this transaction's retirements moved out of the model to the history
    /// store, then forgets it in the model. Until the store takes it, the apply waits (as it
    /// would for its disk), retrying: the model must not commit runs it has let go of.
    async fn hand_over(&self, tx: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
        let leaving = retire::retiring(&mut *tx).await?;
        if leaving.is_empty() {
            return Ok(());
        }
        let mut wait = std::time::Duration::from_millis(100);
        while let Err(e) = self.history.put(&leaving).await {
            tracing::warn!(
                "writing {} retired runs to the history store (retrying in {wait:?}): {e}",
                leaving.len()
            );
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(5));
        }
        retire::retired(tx).await
    }

    /// How many commits have changed credentials or bindings since this process started.
    pub fn access_generation(&self) -> u64 {
        self.access.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Bytes of the newest snapshot on disk (0: none yet).
    pub fn snapshot_bytes(&self) -> u64 {
        std::fs::read_dir(&self.snapshots)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "db"))
            .filter_map(|e| e.metadata().ok())
            .max_by_key(|m| m.modified().ok())
            .map_or(0, |m| m.len())
    }

    /// The model database, for reads (API, CLI, UI).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A consistent copy of the database as of the last applied entry — a snapshot file
    /// (`raft::backup`) — opened for reading and already unlinked, so it vanishes once read.
    pub async fn copy(&self) -> Result<tokio::fs::File, sqlx::Error> {
        // Snapshot builds and installs clear the directory of everything but their snapshot.
        let _guard = self.snapshot_lock.lock().await;
        let (tmp, _) = self.vacuum_into_tmp("copy").await?;
        let file = tokio::fs::File::open(&tmp).await;
        let _ = std::fs::remove_file(&tmp);
        Ok(file?)
    }

    /// `VACUUM INTO` a new `<kind>-<pid>-<n>.tmp` file in the snapshot directory (where a
    /// crash's leftovers are cleared at open); returns it and its `n`, unique in this process.
    /// The caller holds the snapshot lock.
    async fn vacuum_into_tmp(&self, kind: &str) -> Result<(PathBuf, u64), sqlx::Error> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .snapshots
            .join(format!("{kind}-{}-{n}.tmp", std::process::id()));
        sqlx::query("VACUUM INTO ?")
            .bind(tmp.to_string_lossy().into_owned())
            .execute(&self.pool)
            .await?;
        Ok((tmp, n))
    }

    pub(super) async fn progress(
        conn: &mut SqliteConnection,
    ) -> sqlx::Result<(Option<LogId>, StoredMembership)> {
        let rows = sqlx::query("SELECT key, value FROM raft_state")
            .fetch_all(&mut *conn)
            .await?;
        let mut applied = None;
        let mut membership = StoredMembership::default();
        for row in rows {
            let value: String = row.get("value");
            let decode = |e| sqlx::Error::Decode(Box::new(e));
            match row.get::<String, _>("key").as_str() {
                "last_applied" => applied = serde_json::from_str(&value).map_err(decode)?,
                "membership" => membership = serde_json::from_str(&value).map_err(decode)?,
                _ => {}
            }
        }
        Ok((applied, membership))
    }

    pub(super) async fn save_progress(
        conn: &mut SqliteConnection,
        applied: &Option<LogId>,
        membership: &StoredMembership,
    ) -> sqlx::Result<()> {
        for (key, value) in [
            ("last_applied", serde_json::to_string(applied)),
            ("membership", serde_json::to_string(membership)),
        ] {
            let value = value.map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            sqlx::query(
                "INSERT INTO raft_state (key, value) VALUES (?, ?) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(key)
            .bind(value)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// Puts the snapshot `data` holds at `db_path`: the file it was received into is moved
    /// there; any other (a snapshot built here, handed back) is copied, from its start.
    async fn keep_received(
        &self,
        mut data: tokio::fs::File,
        db_path: &Path,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        use tokio::io::AsyncSeekExt;
        data.sync_all().await?;
        let same =
            |a: &std::fs::Metadata, b: &std::fs::Metadata| (a.dev(), a.ino()) == (b.dev(), b.ino());
        let given = data.metadata().await?;
        let receiving = self.receiving.lock().expect("receiving").take();
        if let Some(path) = receiving {
            if std::fs::metadata(&path).is_ok_and(|m| same(&m, &given)) {
                return std::fs::rename(&path, db_path);
            }
            // A receive openraft gave up on (it had nothing newer): not coming back.
            let _ = std::fs::remove_file(&path);
        }
        let tmp = db_path.with_extension("db.tmp");
        let mut copy = tokio::fs::File::create(&tmp).await?;
        data.seek(std::io::SeekFrom::Start(0)).await?;
        tokio::io::copy(&mut data, &mut copy).await?;
        copy.sync_all().await?;
        std::fs::rename(&tmp, db_path)
    }

    fn paths(&self, id: &str) -> (PathBuf, PathBuf) {
        (
            self.snapshots.join(format!("{id}.db")),
            self.snapshots.join(format!("{id}.json")),
        )
    }

    /// Makes `id` the only kept snapshot: writes its metadata last (its presence marks the
    /// snapshot complete) and removes older ones.
    fn keep_only(&self, id: &str, meta: &SnapshotMeta) -> std::io::Result<()> {
        let (_, meta_path) = self.paths(id);
        let tmp = meta_path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(meta)?)?;
        std::fs::rename(&tmp, &meta_path)?;
        for entry in std::fs::read_dir(&self.snapshots)?.flatten() {
            let path = entry.path();
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            // A snapshot being received is the receiver's to keep or drop.
            if stem != id && !stem.starts_with(RECEIVING) {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(())
    }

    /// The newest complete snapshot on disk.
    fn current(&self) -> std::io::Result<Option<(SnapshotMeta, PathBuf)>> {
        let mut best: Option<(SnapshotMeta, PathBuf)> = None;
        for entry in std::fs::read_dir(&self.snapshots)?.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let meta: SnapshotMeta = serde_json::from_slice(&std::fs::read(&path)?)?;
            let db = path.with_extension("db");
            if db.exists()
                && best
                    .as_ref()
                    .is_none_or(|(b, _)| meta.last_log_id > b.last_log_id)
            {
                best = Some((meta, db));
            }
        }
        Ok(best)
    }
}

/// A snapshot id as a safe file name (ids embed leader ids, which may contain `:`).
fn file_stem(snapshot_id: &str) -> String {
    snapshot_id.replace(['/', ' ', ':'], "_")
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, &e).into()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let _guard = self.snapshot_lock.lock().await;
        let (tmp, n) = self.vacuum_into_tmp("building").await.map_err(snap_err)?;
        // Read the Raft progress from the copy itself: it is exactly what the copy contains.
        let mut copy = sqlx::SqliteConnection::connect_with(
            &sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&tmp)
                .read_only(true),
        )
        .await
        .map_err(snap_err)?;
        let (last_applied, membership) = Self::progress(&mut copy).await.map_err(snap_err)?;
        copy.close().await.map_err(snap_err)?;
        let snapshot_id = file_stem(&match last_applied {
            Some(log) => format!("{}-{}-{n}", log.leader_id, log.index),
            None => format!("none-{n}"),
        });
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id: snapshot_id.clone(),
        };
        let (db_path, _) = self.paths(&snapshot_id);
        std::fs::rename(&tmp, &db_path).map_err(snap_err)?;
        self.keep_only(&snapshot_id, &meta).map_err(snap_err)?;
        // Read from the file as it is sent, a chunk at a time: a plane of a million
        // schedules has a snapshot of most of a gigabyte.
        let data = tokio::fs::File::open(&db_path).await.map_err(snap_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let mut conn = self.pool.acquire().await.map_err(sm_err)?;
        Self::progress(&mut conn).await.map_err(sm_err)
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut conn = self.writer.acquire().await.map_err(sm_err)?;
        // The log has grown long: copied in once more here, this transaction starts it over.
        if self.restart.asked() {
            sqlx::query(wal::PASSIVE)
                .execute(&mut *conn)
                .await
                .map_err(sm_err)?;
        }
        let mut tx = conn.begin().await.map_err(sm_err)?;
        let (mut applied, mut membership) = Self::progress(&mut tx).await.map_err(sm_err)?;
        let mut outcomes = Vec::new();
        let mut access_changed = false;
        let mut retiring = false;
        for entry in entries {
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::Internal,
                EntryPayload::Normal(request) => {
                    match processor::apply(&mut tx, entry.log_id.index, &request.0).await {
                        Ok(done) => {
                            access_changed |= request.0.command().changes_access();
                            retiring |= matches!(request.0.command(), Command::RetireRuns(_));
                            Outcome::Applied(done)
                        }
                        Err(ApplyError::Refused(refusal)) => Outcome::Refused(refusal.into()),
                        Err(ApplyError::Storage(e)) => {
                            return Err(StorageIOError::apply(entry.log_id, &e).into());
                        }
                    }
                }
                EntryPayload::Membership(m) => {
                    membership = StoredMembership::new(Some(entry.log_id), m);
                    Outcome::Internal
                }
            };
            applied = Some(entry.log_id);
            outcomes.push(outcome);
        }
        if retiring {
            self.hand_over(&mut tx).await.map_err(sm_err)?;
        }
        Self::save_progress(&mut tx, &applied, &membership)
            .await
            .map_err(sm_err)?;
        tx.commit().await.map_err(sm_err)?;
        // After the commit: whoever sees the new generation reads the new rows.
        if access_changed {
            self.access
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        // Received straight into a file, never into memory.
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let path = self.snapshots.join(format!("{RECEIVING}{n}.tmp"));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(snap_err)?;
        let earlier = self.receiving.lock().expect("receiving").replace(path);
        // One cut short (the leader moved on to a newer snapshot) is not coming back.
        if let Some(earlier) = earlier {
            let _ = std::fs::remove_file(earlier);
        }
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let _guard = self.snapshot_lock.lock().await;
        let id = file_stem(&meta.snapshot_id);
        let (db_path, _) = self.paths(&id);
        self.keep_received(*snapshot, &db_path)
            .await
            .map_err(snap_err)?;

        // Replace every table's rows with the snapshot's, in one transaction.
        let mut conn = self.pool.acquire().await.map_err(snap_err)?;
        sqlx::query("ATTACH DATABASE ? AS snapshot")
            .bind(db_path.to_string_lossy().into_owned())
            .execute(&mut *conn)
            .await
            .map_err(snap_err)?;
        let copied = async {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM main.sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx_%'",
            )
            .fetch_all(&mut *conn)
            .await?;
            let mut tx = conn.begin().await?;
            sqlx::query("PRAGMA defer_foreign_keys = ON")
                .execute(&mut *tx)
                .await?;
            // Every table emptied before any is filled: a child row deleted after its parent
            // is otherwise left counted against the deferred foreign keys, and the commit
            // refused (once the model forgets runs, a node's runs are not a subset of the
            // snapshot's).
            for table in &tables {
                sqlx::query(&format!("DELETE FROM main.\"{table}\""))
                    .execute(&mut *tx)
                    .await?;
            }
            for table in &tables {
                // What triggers wrote into it as earlier tables were filled (the hourly run
                // counts) goes too: the snapshot's rows say it all.
                sqlx::query(&format!("DELETE FROM main.\"{table}\""))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&format!(
                    "INSERT INTO main.\"{table}\" SELECT * FROM snapshot.\"{table}\""
                ))
                .execute(&mut *tx)
                .await?;
            }
            Self::save_progress(&mut tx, &meta.last_log_id, &meta.last_membership).await?;
            // The runs the snapshot's model retired past this node's are not in its history
            // store: a gap, recorded before the model moves past them.
            let through = retire::retired_through(&mut tx).await?;
            self.history.mark_gap(through).await?;
            tx.commit().await
        }
        .await;
        let detached = sqlx::query("DETACH DATABASE snapshot")
            .execute(&mut *conn)
            .await;
        // Whatever the snapshot holds, credentials may have changed with it.
        self.access
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        copied.map_err(snap_err)?;
        detached.map_err(snap_err)?;
        self.keep_only(&id, meta).map_err(snap_err)?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some((meta, path)) = self.current().map_err(snap_err)? else {
            return Ok(None);
        };
        let data = tokio::fs::File::open(&path).await.map_err(snap_err)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(data),
        }))
    }
}
