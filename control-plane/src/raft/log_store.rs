//! The Raft log and vote, in redb.
//!
//! redb commits with fsync by default, so when `append` tells openraft the entries are flushed
//! they are on disk: a `kill -9` right after cannot lose an acknowledged write. redb calls
//! block, so each runs on tokio's blocking pool.
//!
//! Layout: table `log` maps the entry index to the postcard-encoded entry; table `meta` holds
//! the vote, the last purged log id and the committed log id.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, StorageIOError, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Entry, LogId, NodeId, StorageError, TypeConfig, decode, encode};

/// The Raft log's file in a node's data directory.
pub const LOG_FILE: &str = "raft.redb";

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const PURGED: &str = "last_purged";
const COMMITTED: &str = "committed";

/// A handle to the log; clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// Bytes of entries appended since the process opened the log (for `/metrics`).
    appended: Arc<AtomicU64>,
}

impl LogStore {
    /// Opens or creates the log at `path`.
    pub fn open(path: &Path) -> Result<Self, redb::Error> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(Self {
            db: Arc::new(db),
            appended: Arc::default(),
        })
    }

    /// Counts the bytes of entries appended from now on.
    pub fn appended(&self) -> Arc<AtomicU64> {
        self.appended.clone()
    }

    /// Creates the log of a restored node at `path`: empty, purged up to `last` (which the
    /// state machine has applied already, so that is where the log goes on), committed up to
    /// it too, with `vote` as the node's vote. Fails if `path` exists.
    pub fn seed(path: &Path, last: LogId, vote: &Vote<NodeId>) -> Result<(), BoxError> {
        if path.exists() {
            return Err(format!("{} exists", path.display()).into());
        }
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(PURGED, encode(&Some(last))?.as_slice())?;
            meta.insert(COMMITTED, encode(&Some(last))?.as_slice())?;
            meta.insert(VOTE, encode(vote)?.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Runs `f` on the blocking pool with the database; a failure becomes a storage error
    /// about `what`.
    async fn blocking<T, F>(&self, what: Io, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, BoxError> + Send + 'static,
    {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || f(&db)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(what.error(AnyError(e))),
            Err(join) => Err(what.error(AnyError(Box::new(join)))),
        }
    }

    async fn read_meta<T: for<'de> serde::Deserialize<'de> + Send + 'static>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>, StorageError> {
        self.blocking(Io::ReadMeta, move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(META)?;
            Ok(match table.get(key)? {
                Some(v) => Some(decode(v.value())?),
                None => None,
            })
        })
        .await
    }

    async fn write_meta<T: serde::Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durability: Durability,
    ) -> Result<(), StorageError> {
        let bytes = encode(value).map_err(|e| StorageIOError::write(&e))?;
        self.blocking(Io::WriteMeta, move |db| {
            let mut txn = db.begin_write()?;
            txn.set_durability(durability)?;
            txn.open_table(META)?.insert(key, bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a failed blocking call was doing, for openraft's error subject.
#[derive(Clone, Copy)]
enum Io {
    ReadLogs,
    WriteLogs,
    ReadMeta,
    WriteMeta,
}

impl Io {
    fn error(self, e: AnyError) -> StorageError {
        match self {
            Self::ReadLogs => StorageIOError::read_logs(e),
            Self::WriteLogs => StorageIOError::write_logs(e),
            Self::ReadMeta => StorageIOError::read(e),
            Self::WriteMeta => StorageIOError::write(e),
        }
        .into()
    }
}

/// Wraps boxed errors so openraft's `AnyError` can take them by reference.
#[derive(Debug)]
struct AnyError(BoxError);

impl std::fmt::Display for AnyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for AnyError {}

impl From<AnyError> for openraft::AnyError {
    fn from(e: AnyError) -> Self {
        openraft::AnyError::new(&e)
    }
}

fn owned_bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let bounds = owned_bounds(&range);
        self.blocking(Io::ReadLogs, move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(LOG)?;
            let mut entries = Vec::new();
            for item in table.range::<u64>(bounds)? {
                let (_, value) = item?;
                entries.push(decode(value.value())?);
            }
            Ok(entries)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.read_meta::<Option<LogId>>(PURGED).await?.flatten();
        let last: Option<LogId> = self
            .blocking(Io::ReadLogs, |db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(LOG)?;
                Ok(match table.last()? {
                    Some((_, v)) => Some(decode::<Entry>(v.value())?.log_id),
                    None => None,
                })
            })
            .await?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.write_meta(VOTE, vote, Durability::Immediate).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(VOTE).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not fsync'd on its own: losing it only means re-applying a few committed entries
        // after a crash, which the state machine's own progress marker makes harmless. It
        // becomes durable with the next append.
        self.write_meta(COMMITTED, &committed, Durability::None)
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED).await?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes =
                encode(&entry).map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            encoded.push((entry.log_id.index, bytes));
        }
        let bytes: usize = encoded.iter().map(|(_, b)| b.len()).sum();
        let appended = self.appended.clone();
        let result = self
            .blocking(Io::WriteLogs, move |db| {
                let txn = db.begin_write()?;
                {
                    let mut table = txn.open_table(LOG)?;
                    for (index, bytes) in &encoded {
                        table.insert(index, bytes.as_slice())?;
                    }
                }
                // Durability::Immediate (the default): fsync before returning.
                txn.commit()?;
                Ok(())
            })
            .await;
        match result {
            Ok(()) => {
                appended.fetch_add(bytes as u64, Ordering::Relaxed);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(err) => {
                callback.log_io_completed(Err(std::io::Error::other(err.to_string())));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(Io::WriteLogs, move |db| {
            let txn = db.begin_write()?;
            txn.open_table(LOG)?
                .retain_in(log_id.index.., |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record how far the log is purged before deleting, so a crash in between never
        // leaves a log that looks shorter at its start than it claims.
        let bytes = encode(&Some(log_id)).map_err(|e| StorageIOError::write(&e))?;
        self.blocking(Io::WriteLogs, move |db| {
            let txn = db.begin_write()?;
            txn.open_table(META)?.insert(PURGED, bytes.as_slice())?;
            txn.open_table(LOG)?
                .retain_in(..=log_id.index, |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
    }
}
