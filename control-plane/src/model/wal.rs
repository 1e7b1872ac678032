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
//! the writer or a reader, and the log is reused once one has copied it all.
//!
//! Crash safety is SQLite's either way: a checkpoint only copies committed pages, and the log
//! is the record until it has.

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

/// A database whose log a [`Checkpointer`] can copy in.
pub trait Checkpoint: Send + Sync + 'static {
    /// One passive checkpoint.
    fn checkpoint(&self) -> impl Future<Output = sqlx::Result<()>> + Send;
}

impl Checkpoint for sqlx::SqlitePool {
    async fn checkpoint(&self) -> sqlx::Result<()> {
        sqlx::query(PASSIVE).execute(self).await.map(drop)
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
}

impl<D: Checkpoint> Checkpointer<D> {
    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(EVERY) => {}
            }
            // A failed one (the disk full, the pool closing) is tried again at the next
            // tick; the log only grows meanwhile.
            if let Err(e) = self.database.checkpoint().await {
                tracing::warn!("checkpointing the {} database's log: {e}", self.name);
            }
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
}
