//! Checkpoints of a SQLite write-ahead log, beside the writer instead of in its commits.
//!
//! By default SQLite checkpoints inside the commit that takes the log past 1,000 pages: that
//! commit copies the log's pages into the database file and syncs it. The state machine's
//! transactions are large (a report of hundreds of runs dirties ~1,500 pages), so nearly every
//! one paid a checkpoint; and the state machine applies one entry at a time, so the plane's
//! ingest waited on them (40 ms of a report's 90 ms; the history store's write in a
//! retirement the same: BENCHMARKS "Ingest, session 26"). The databases the
//! apply writes open with `wal_autocheckpoint = 0` ([`Checkpoints::Worker`]) and a
//! [`Checkpointer`] does the copying on its own connection: a passive checkpoint never blocks
//! the writer or a reader.
//!
//! Copying is not enough to keep the log small. SQLite writes a log from its beginning again
//! only in a write transaction whose read began with the whole log copied in; a writer that
//! commits back to back (the apply, under load) has always begun its next transaction before
//! the checkpointer copies the last one, so the log only grows (a plane filled with a million
//! schedules: 14.5 GB of log beside a 200 MB database, every read slower for it). So when a
//! checkpoint finds the log longer than [`RESTART_FRAMES`], the checkpointer asks the writer
//! ([`Restart`]), which, between two transactions, checkpoints once itself: its next
//! transaction begins with the log all copied and starts it over, and `journal_size_limit`
//! gives the file back.
//!
//! Crash safety is SQLite's either way: a checkpoint only copies committed pages, and the log
//! is the record until it has.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Who checkpoints a database's write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoints {
    /// SQLite, inside the commit that takes the log past 1,000 pages.
    Inline,
    /// A [`Checkpointer`], never a commit.
    Worker,
}

impl Checkpoints {
    /// The `wal_autocheckpoint` pragma's value.
    pub fn pragma(self) -> &'static str {
        match self {
            Self::Inline => "1000",
            Self::Worker => "0",
        }
    }
}

/// One passive checkpoint, in SQL.
pub const PASSIVE: &str = "PRAGMA wal_checkpoint(PASSIVE)";

/// How long a log the checkpointer lets grow before it asks the writer to start it over:
/// 65,536 pages of 4 KiB, 256 MiB. The writer's checkpoint then copies what the worker has
/// not yet (up to a tick's worth: ~90 ms under the ingest benchmark), so not too often.
pub const RESTART_FRAMES: i64 = 65_536;

/// The file size a log is cut back to once started over (`journal_size_limit`): 64 MiB.
pub const KEEP_BYTES: &str = "67108864";

/// A database whose log a [`Checkpointer`] can copy in.
pub trait Checkpoint: Send + Sync + 'static {
    /// One passive checkpoint; how many pages the log holds (copied or not).
    fn checkpoint(&self) -> impl Future<Output = sqlx::Result<i64>> + Send;
}

impl Checkpoint for sqlx::SqlitePool {
    async fn checkpoint(&self) -> sqlx::Result<i64> {
        let (_busy, log, _copied): (i64, i64, i64) =
            sqlx::query_as(PASSIVE).fetch_one(self).await?;
        Ok(log)
    }
}

/// SQLite's page size, which no database here changes: a log frame holds one page.
pub const PAGE_BYTES: i64 = 4096;

/// The checkpointer's request to a database's writer to start the log over, and the log's
/// length at its last checkpoint (for `/metrics`); clones share both.
#[derive(Debug, Clone, Default)]
pub struct Restart {
    asked: Arc<AtomicBool>,
    frames: Arc<AtomicI64>,
}

impl Restart {
    fn ask(&self) {
        self.asked.store(true, Ordering::Relaxed);
    }

    /// Bytes of the write-ahead log at the checkpointer's last look (copied in or not): what
    /// a writer that never lets it start over would show growing.
    pub fn log_bytes(&self) -> i64 {
        self.frames.load(Ordering::Relaxed) * PAGE_BYTES
    }

    /// For the writer, before it begins a transaction: whether it was asked since it last
    /// looked (and forgets it). If so it runs one [`PASSIVE`] checkpoint first, on any
    /// connection: its transaction then begins with the log all copied (unless a reader
    /// older than that copy is still reading: asked again at the next tick).
    pub fn asked(&self) -> bool {
        self.asked.swap(false, Ordering::Relaxed)
    }
}

/// How often the checkpointer looks: often enough that the log stays a few MiB under a
/// steady stream of large commits.
const EVERY: Duration = Duration::from_millis(250);

/// The worker that checkpoints one database's log every [`EVERY`] until stopped.
pub struct Checkpointer<D> {
    /// For its warnings: which database.
    pub name: &'static str,
    pub database: D,
    /// Shared with the database's writer.
    pub restart: Restart,
    /// Past how many pages it asks for the log to start over ([`RESTART_FRAMES`]).
    pub restart_frames: i64,
}

impl<D: Checkpoint> Checkpointer<D> {
    pub fn new(name: &'static str, database: D, restart: Restart) -> Self {
        Self {
            name,
            database,
            restart,
            restart_frames: RESTART_FRAMES,
        }
    }

    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(EVERY) => {}
            }
            self.once().await;
        }
    }

    /// One checkpoint; when the log is longer than `restart_frames`, asks the writer to
    /// start it over.
    pub async fn once(&self) {
        match self.database.checkpoint().await {
            Ok(frames) => {
                self.restart.frames.store(frames, Ordering::Relaxed);
                if frames > self.restart_frames {
                    self.restart.ask();
                }
            }
            // A failed one (the disk full, the pool closing) is tried again at the next
            // tick; the log only grows meanwhile.
            Err(e) => tracing::warn!("checkpointing the {} database's log: {e}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::SqliteSynchronous;

    static NO_SCHEMA: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

    async fn open(file: &std::path::Path, checkpoints: Checkpoints) -> sqlx::SqlitePool {
        let normal = SqliteSynchronous::Normal;
        crate::model::open_with(file, normal, checkpoints, &NO_SCHEMA)
            .await
            .unwrap()
    }

    /// Writes ~5 MiB (over 1,000 pages) in one commit; returns the database file's size then.
    async fn write_a_lot(pool: &sqlx::SqlitePool, file: &std::path::Path) -> u64 {
        sqlx::query("CREATE TABLE t (x BLOB)")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO t SELECT randomblob(4096) FROM json_each(json_array(\
             1,2,3,4,5,6,7,8,9,10)) a, json_each(json_array(1,2,3,4,5,6,7,8,9,10)) b, \
             json_each(json_array(1,2,3,4,5,6,7,8,9,10,11,12)) c",
        )
        .execute(pool)
        .await
        .unwrap();
        std::fs::metadata(file).unwrap().len()
    }

    #[tokio::test]
    async fn a_worker_checkpointed_database_copies_its_log_only_when_the_worker_does() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("worker.db");
        let pool = open(&file, Checkpoints::Worker).await;
        let after_commit = write_a_lot(&pool, &file).await;
        assert!(
            after_commit < 1 << 20,
            "the commit copied its log: {after_commit}"
        );
        pool.checkpoint().await.unwrap();
        let after_checkpoint = std::fs::metadata(&file).unwrap().len();
        assert!(after_checkpoint > 4 << 20, "{after_checkpoint}");
        // The control: SQLite's own checkpoint copies it in the commit.
        let file = dir.path().join("inline.db");
        let pool = open(&file, Checkpoints::Inline).await;
        assert!(write_a_lot(&pool, &file).await > 4 << 20);
    }

    /// A writer that begins each transaction before the checkpointer has copied the last
    /// (back-to-back applies) never starts the log over by itself; asked, it does.
    #[tokio::test]
    async fn a_back_to_back_writer_starts_the_log_over_when_the_checkpointer_asks() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("busy.db");
        let pool = open(&file, Checkpoints::Worker).await;
        sqlx::query("CREATE TABLE t (x BLOB)")
            .execute(&pool)
            .await
            .unwrap();
        let checkpointer = Checkpointer {
            restart_frames: 60,
            ..Checkpointer::new("test", pool.clone(), Restart::default())
        };
        let mut writer = pool.acquire().await.unwrap();
        let log = dir.path().join("busy.db-wal");
        let mut longest = Vec::new();
        let mut reported = Vec::new();
        for heeding in [false, true] {
            let mut bytes = 0;
            let mut seen = 0;
            for _ in 0..12 {
                if heeding && checkpointer.restart.asked() {
                    sqlx::query(PASSIVE).execute(&mut *writer).await.unwrap();
                }
                let mut tx = sqlx::Connection::begin(&mut *writer).await.unwrap();
                let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
                // The checkpointer copies everything committed so far, while the writer's
                // transaction is open (as the next apply has begun by then under load).
                checkpointer.once().await;
                seen = seen.max(checkpointer.restart.log_bytes());
                sqlx::query(
                    "INSERT INTO t SELECT randomblob(4096) FROM json_each(json_array(\
                     1,2,3,4,5,6,7,8,9,10)) a, json_each(json_array(1,2,3,4,5)) b",
                )
                .execute(&mut *tx)
                .await
                .unwrap();
                tx.commit().await.unwrap();
                bytes = bytes.max(std::fs::metadata(&log).unwrap().len());
            }
            longest.push(bytes);
            reported.push(seen);
            // The second round starts from a log cut back to nothing.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut *writer)
                .await
                .unwrap();
        }
        // Twelve transactions of 50 pages (~200 KiB): all of them in the log when the writer
        // does not heed, a couple when it does.
        assert!(longest[0] > 12 * 200 * 1024, "{longest:?}");
        assert!(longest[1] < 4 * 200 * 1024, "{longest:?}");
        // What `/metrics` shows: the log's length at each checkpoint (eleven transactions
        // before the twelfth's, unheeded).
        assert!(reported[0] >= 11 * 50 * PAGE_BYTES, "{reported:?}");
        assert!(reported[1] < 4 * 50 * PAGE_BYTES, "{reported:?}");
    }
}
