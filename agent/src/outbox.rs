//! The outbox: every run event and log chunk is written here, durably, before anything else
//! happens, and leaves only once the plane has committed it.
//!
//! Entries are keyed (`<fire id>/<event>`…), so recording the same event twice (a restart
//! replaying what it already wrote) keeps one entry, and the plane can recognise an entry it
//! has already applied when a batch is re-sent after a lost acknowledgement. Order is the
//! order of recording (`seq`), which is the order the plane sees.

use sqlx::{Row, SqlitePool};
use std::path::Path;

use crate::store::{LogMark, NewEntry, Write, Writer};

pub use crate::store::StoreError as OutboxError;

/// One entry waiting for the plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: i64,
    pub key: String,
    pub at_ms: i64,
    /// The event as JSON (its shape belongs to the run protocol).
    pub payload: String,
}

#[derive(Clone)]
pub struct Outbox {
    pool: SqlitePool,
    writer: Writer,
}

impl Outbox {
    /// Opens (creating) the agent's database at `path`.
    pub async fn open(path: &Path) -> Result<Self, OutboxError> {
        Ok(Self::new(crate::store::open(path).await?))
    }

    /// The outbox of the database behind `pool`, with the database's one writer (share it
    /// through [`Outbox::writer`]).
    pub fn new(pool: SqlitePool) -> Self {
        let writer = Writer::start(pool.clone());
        Self { pool, writer }
    }

    /// The database's writer, for everything else that writes to it.
    pub fn writer(&self) -> Writer {
        self.writer.clone()
    }

    /// How many entries wait, and when the oldest was recorded.
    pub async fn backlog(&self) -> Result<(u64, Option<i64>), OutboxError> {
        let row = sqlx::query("SELECT COUNT(*) AS n, MIN(at_ms) AS oldest FROM outbox")
            .fetch_one(&self.pool)
            .await?;
        Ok((row.get::<i64, _>("n") as u64, row.get("oldest")))
    }

    /// Records an entry durably. Recording a key already waiting is a no-op (returns false).
    pub async fn record(&self, key: &str, at_ms: i64, payload: &str) -> Result<bool, OutboxError> {
        let written = self
            .writer
            .write(Write::Record(NewEntry {
                key: key.to_owned(),
                at_ms,
                payload: payload.to_owned(),
            }))
            .await?;
        Ok(written == 1)
    }

    /// Records a log chunk's entry durably, with how far its attempt's log is recorded now
    /// (`mark`), in one transaction.
    pub async fn record_log(
        &self,
        key: &str,
        at_ms: i64,
        payload: &str,
        mark: LogMark,
    ) -> Result<bool, OutboxError> {
        let entry = NewEntry {
            key: key.to_owned(),
            at_ms,
            payload: payload.to_owned(),
        };
        let written = self.writer.write(Write::RecordLog { entry, mark }).await?;
        Ok(written == 1)
    }

    /// How many bytes of an attempt's output are recorded (0: none, or its run has left).
    pub async fn log_mark(
        &self,
        run_id: &str,
        task: &str,
        attempt: u32,
    ) -> Result<u64, OutboxError> {
        let upto: Option<i64> = sqlx::query_scalar(
            "SELECT upto FROM log_marks WHERE run_id = ?1 AND task = ?2 AND attempt = ?3",
        )
        .bind(run_id)
        .bind(task)
        .bind(i64::from(attempt))
        .fetch_optional(&self.pool)
        .await?;
        Ok(upto.unwrap_or(0) as u64)
    }

    /// The oldest `limit` entries, in recording order: the next batch to send.
    pub async fn pending(&self, limit: u32) -> Result<Vec<Entry>, OutboxError> {
        let rows = sqlx::query("SELECT seq, key, at_ms, payload FROM outbox ORDER BY seq LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| Entry {
                seq: r.get("seq"),
                key: r.get("key"),
                at_ms: r.get("at_ms"),
                payload: r.get("payload"),
            })
            .collect())
    }

    /// Drops every entry up to and including `seq`: the plane has committed them.
    pub async fn acknowledge(&self, seq: i64) -> Result<u64, OutboxError> {
        self.writer.write(Write::Acknowledge(seq)).await
    }

    /// How many entries are waiting.
    pub async fn len(&self) -> Result<u64, OutboxError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    /// The newest entry's `seq`, if any waits.
    pub async fn last_seq(&self) -> Result<Option<i64>, OutboxError> {
        Ok(sqlx::query_scalar("SELECT MAX(seq) FROM outbox")
            .fetch_one(&self.pool)
            .await?)
    }

    /// The oldest waiting entry's `seq`, if any waits.
    pub async fn first_seq(&self) -> Result<Option<i64>, OutboxError> {
        Ok(sqlx::query_scalar("SELECT MIN(seq) FROM outbox")
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn is_empty(&self) -> Result<bool, OutboxError> {
        Ok(self.len().await? == 0)
    }

    /// Closes the database (waits for writes in flight).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_wait_in_order_until_acknowledged_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        let outbox = Outbox::open(&path).await.unwrap();
        assert!(outbox.record("a.s@1/started", 1, "{}").await.unwrap());
        assert!(outbox.record("a.s@1/succeeded", 2, "{}").await.unwrap());
        assert!(
            !outbox.record("a.s@1/started", 3, "{}").await.unwrap(),
            "same key twice"
        );
        outbox.close().await;

        let outbox = Outbox::open(&path).await.unwrap();
        let batch = outbox.pending(10).await.unwrap();
        let keys: Vec<&str> = batch.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["a.s@1/started", "a.s@1/succeeded"]);
        assert_eq!(batch[0].at_ms, 1, "the first recording wins");
        assert_eq!(outbox.acknowledge(batch[0].seq).await.unwrap(), 1);
        let rest = outbox.pending(10).await.unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].key, "a.s@1/succeeded");
        outbox.acknowledge(rest[0].seq).await.unwrap();
        assert!(outbox.is_empty().await.unwrap());
    }
}
