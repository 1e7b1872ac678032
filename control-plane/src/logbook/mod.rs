//! The logbook: task attempts' logs as this plane node received them from agents, kept in
//! `logbook.db` beside the model and never replicated.
//!
//! Log bytes are the bulk of what agents report and they order nothing, so they stay out of
//! consensus: an agent's report batch reaches one node (`agents`), whose run and attempt
//! events go through Raft and whose log pieces land here, acknowledged once they are on disk
//! (`synchronous = FULL`). Any node reads a whole log by asking every member for its pieces
//! (`logs::across`), or from its copy in the bucket ([`object`], made by `logs::archive`).
//!
//! Each attempt's log is cut at the plane's `[logs] cap_bytes` (a marker says so) and kept
//! `[logs] retention_days` after its last piece, or the tenant's own `log_retention_days`
//! ([`sweep`]).

pub mod object;
pub mod sweep;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use meridian_domain::run::LogChunk;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqlitePool, SqliteSynchronous};
use sqlx::{Row, SqliteConnection};
use tokio::sync::watch;

use crate::model::history::tenant_of_run;
pub use crate::model::query::LogPiece;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/logbook");

/// The logbook's file in a node's data directory.
pub const LOGBOOK_FILE: &str = "logbook.db";

/// `[logs]` in `plane.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// An attempt's log is kept up to this many bytes; what the task writes after is not
    /// (a line at the cut says so).
    pub cap_bytes: u64,
    /// Days a log is kept after its last piece, for tenants without `log_retention_days`.
    pub retention_days: u32,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            cap_bytes: 16 * 1024 * 1024,
            retention_days: 30,
        }
    }
}

impl LogsConfig {
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.cap_bytes < 1024 {
            return Err(("cap_bytes", format!("{} is under 1024", self.cap_bytes)));
        }
        if self.retention_days == 0 {
            return Err(("retention_days", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Which pieces of one attempt's log to read: those starting after `after` and before
/// `before`, oldest or newest first, up to `budget` bytes (at least one piece).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceQuery {
    pub run_id: String,
    pub task: String,
    pub attempt: u32,
    pub after: i64,
    pub before: i64,
    pub budget: u64,
    pub newest_first: bool,
}

/// Pieces read, oldest first, and whether the budget left some out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pieces {
    pub pieces: Vec<LogPiece>,
    pub more: bool,
}

/// This node's logbook. Cheap to clone.
#[derive(Clone)]
pub struct Logbook {
    pool: SqlitePool,
    config: LogsConfig,
    /// Bytes of text held (for `/metrics`).
    stored: Arc<AtomicU64>,
    /// Moves whenever a piece is stored: live tails here wake on it.
    changed: Arc<watch::Sender<u64>>,
}

impl Logbook {
    /// Opens (creating if needed) the logbook in `dir`.
    pub async fn open(dir: &Path, config: LogsConfig) -> sqlx::Result<Self> {
        // What is acknowledged leaves the agent's outbox: it must be on disk.
        let path = dir.join(LOGBOOK_FILE);
        let pool = crate::model::open_with(
            &path,
            SqliteSynchronous::Full,
            crate::model::wal::Checkpoints::Inline,
            &MIGRATOR,
        )
        .await?;
        let stored: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(bytes), 0) FROM log_attempts")
            .fetch_one(&pool)
            .await?;
        Ok(Self {
            pool,
            config,
            stored: Arc::new(AtomicU64::new(stored.max(0) as u64)),
            changed: Arc::new(watch::channel(0).0),
        })
    }

    pub fn config(&self) -> LogsConfig {
        self.config
    }

    /// Bytes of log text this node holds.
    pub fn stored_bytes(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// Wakes when a piece is stored here.
    pub fn changed(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Stores `chunks` that `agent` sent, in one transaction, on disk when this returns. A
    /// piece held already is not stored twice; past the cap, the cut piece is followed by a
    /// marker and later pieces are dropped.
    pub async fn store(&self, agent: &str, chunks: &[&LogChunk], now_ms: i64) -> sqlx::Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let mut tx = self.writing().await?;
        let added = store_all(&mut tx, self.config.cap_bytes, agent, chunks, now_ms).await?;
        tx.commit().await?;
        self.stored.fetch_add(added, Ordering::Relaxed);
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// The attempts of `run_id` this node holds any log of, by task and attempt.
    pub async fn attempts(&self, run_id: &str) -> sqlx::Result<Vec<(String, u32)>> {
        Ok(sqlx::query(
            "SELECT task, attempt FROM log_attempts WHERE run_id = ? ORDER BY task, attempt",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| (row.get("task"), row.get::<i64, _>("attempt") as u32))
        .collect())
    }

    /// The pieces `q` asks for that this node holds.
    pub async fn pieces(&self, q: &PieceQuery) -> sqlx::Result<Pieces> {
        use tokio_stream::StreamExt;
        let order = if q.newest_first { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT offset, data FROM log_pieces WHERE run_id = ? AND task = ? AND attempt = ? \
             AND offset > ? AND offset < ? ORDER BY offset {order}"
        );
        let mut rows = sqlx::query(&sql)
            .bind(&q.run_id)
            .bind(&q.task)
            .bind(i64::from(q.attempt))
            .bind(q.after)
            .bind(q.before)
            .fetch(&self.pool);
        let (mut pieces, mut size, mut more) = (Vec::new(), 0u64, false);
        while let Some(row) = rows.next().await {
            let row = row?;
            let data: String = row.get("data");
            if !pieces.is_empty() && size + data.len() as u64 > q.budget {
                more = true;
                break;
            }
            size += data.len() as u64;
            pieces.push(LogPiece {
                offset: row.get("offset"),
                data,
            });
        }
        if q.newest_first {
            pieces.reverse();
        }
        Ok(Pieces { pieces, more })
    }

    /// Deletes what `agent` sent of `run_id`'s logs (its start was refused: not its run).
    pub async fn forget(&self, run_id: &str, agent: &str) -> sqlx::Result<()> {
        let mut tx = self.writing().await?;
        let attempts: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT task, attempt, bytes FROM log_attempts WHERE run_id = ? AND agent = ?",
        )
        .bind(run_id)
        .bind(agent)
        .fetch_all(&mut *tx)
        .await?;
        let mut freed = 0u64;
        for (task, attempt, bytes) in &attempts {
            delete_attempt(&mut tx, run_id, task, *attempt).await?;
            freed += (*bytes).max(0) as u64;
        }
        tx.commit().await?;
        self.release(freed);
        Ok(())
    }

    /// A transaction that reads, then writes: it takes the write lock as it begins. Begun
    /// deferred, two of them at once (reports arriving together) would both read, and the
    /// second to write would fail at once with "database is locked" rather than wait.
    async fn writing(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    fn release(&self, freed: u64) {
        let _ = self
            .stored
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(freed))
            });
    }

    /// Deletes the logs of attempts whose last piece came before their tenant's retention
    /// (`days_of(tenant)`) counted back from `now_ms`; returns how many attempts went.
    pub async fn sweep(&self, now_ms: i64, days_of: impl Fn(&str) -> u32) -> sqlx::Result<u64> {
        let tenants: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT tenant FROM log_attempts ORDER BY tenant")
                .fetch_all(&self.pool)
                .await?;
        let mut gone = 0;
        for tenant in tenants {
            let cutoff = now_ms - i64::from(days_of(&tenant)) * 86_400_000;
            loop {
                // In batches, so a large sweep never holds the database for long.
                let mut tx = self.writing().await?;
                let old = sqlx::query(
                    "SELECT run_id, task, attempt, bytes FROM log_attempts \
                     WHERE tenant = ? AND last_ms < ? ORDER BY last_ms LIMIT 500",
                )
                .bind(&tenant)
                .bind(cutoff)
                .fetch_all(&mut *tx)
                .await?;
                if old.is_empty() {
                    break;
                }
                let mut freed = 0u64;
                for row in &old {
                    let (run_id, task, attempt): (String, String, i64) =
                        (row.get("run_id"), row.get("task"), row.get("attempt"));
                    delete_attempt(&mut tx, &run_id, &task, attempt).await?;
                    freed += row.get::<i64, _>("bytes").max(0) as u64;
                }
                tx.commit().await?;
                self.release(freed);
                gone += old.len() as u64;
            }
        }
        Ok(gone)
    }
}

async fn delete_attempt(
    tx: &mut SqliteConnection,
    run_id: &str,
    task: &str,
    attempt: i64,
) -> sqlx::Result<()> {
    for table in ["log_pieces", "log_attempts"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE run_id = ? AND task = ? AND attempt = ?"
        ))
        .bind(run_id)
        .bind(task)
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// The pieces of all `sources` (each oldest first), one per offset, within `budget` bytes
/// (at least one piece) from the newest end or the oldest. A source that left some out
/// bounds what may be shown: past its last piece read, another source's piece could skip
/// one of its own.
pub fn merge(sources: Vec<Pieces>, budget: u64, newest_first: bool) -> Pieces {
    let mut bound: Option<i64> = None;
    let mut more = false;
    let mut by_offset: BTreeMap<i64, String> = BTreeMap::new();
    for source in sources {
        if source.more {
            more = true;
            let edge = if newest_first {
                source.pieces.first().map(|p| p.offset)
            } else {
                source.pieces.last().map(|p| p.offset)
            };
            if let Some(edge) = edge {
                bound = Some(match bound {
                    None => edge,
                    Some(b) if newest_first => b.max(edge),
                    Some(b) => b.min(edge),
                });
            }
        }
        for piece in source.pieces {
            by_offset.entry(piece.offset).or_insert(piece.data);
        }
    }
    let mut kept: Vec<LogPiece> = Vec::new();
    let mut size = 0u64;
    let ordered: Box<dyn Iterator<Item = (i64, String)>> = if newest_first {
        Box::new(by_offset.into_iter().rev())
    } else {
        Box::new(by_offset.into_iter())
    };
    for (offset, data) in ordered {
        let beyond = bound.is_some_and(|b| if newest_first { offset < b } else { offset > b });
        if beyond || (!kept.is_empty() && size + data.len() as u64 > budget) {
            more = true;
            break;
        }
        size += data.len() as u64;
        kept.push(LogPiece { offset, data });
    }
    if newest_first {
        kept.reverse();
    }
    Pieces { pieces: kept, more }
}

/// An attempt's log, as the logbook keys it: run, task, attempt.
type AttemptKey = (String, String, u32);

/// What one chunk does to its attempt's log.
#[derive(Debug, PartialEq, Eq)]
struct Kept {
    /// The pieces to store (a marker after the cut), each where it starts.
    pieces: Vec<(u64, String)>,
    /// Where the attempt's output held here now ends, at most the cap.
    end: u64,
    /// Whether the attempt is now past the cap.
    cut: bool,
}

/// What `chunk` keeps of its attempt's log under `cap`, given whether the logbook holds the
/// attempt already and if so whether its log was cut (`held`); `None`: nothing at all (an
/// attempt cut already, or a piece past a cut another node made).
fn kept(chunk: &LogChunk, cap: u64, held: Option<bool>) -> Option<Kept> {
    if held == Some(true) {
        return None;
    }
    let offset = chunk.offset;
    let end = offset + chunk.data.len() as u64;
    let mut pieces: Vec<(u64, String)> = Vec::new();
    let cut = end > cap;
    if offset >= cap {
        // Past a cut another node made (the agent moved): nothing more to keep here.
        held?;
    } else if cut {
        let mut keep = (cap - offset) as usize;
        while !chunk.data.is_char_boundary(keep) {
            keep -= 1;
        }
        pieces.push((offset, chunk.data[..keep].to_owned()));
    } else {
        pieces.push((offset, chunk.data.clone()));
    }
    if cut {
        pieces.push((
            cap,
            format!(
                "\n[meridian: the log is cut here, at {cap} bytes (the plane's [logs] \
                 cap_bytes); what the task wrote after is not kept]\n"
            ),
        ));
    }
    Some(Kept {
        pieces,
        end: end.min(cap),
        cut,
    })
}

/// Stores `chunks` in order, in three statements whatever their number (a report carries a
/// piece for each of hundreds of runs, and each statement is a round trip to SQLite's
/// thread): which attempts are held and cut, the new pieces (a piece held already is not
/// stored again), the attempts' rows. Returns the bytes of text added.
async fn store_all(
    tx: &mut SqliteConnection,
    cap: u64,
    agent: &str,
    chunks: &[&LogChunk],
    now_ms: i64,
) -> sqlx::Result<u64> {
    let keys: Vec<_> = chunks
        .iter()
        .map(|c| json!([c.run_id, c.task, c.attempt]))
        .collect();
    let mut held: HashMap<AttemptKey, bool> = sqlx::query_as::<_, (String, String, i64, i64)>(
        "SELECT l.run_id, l.task, l.attempt, l.cut FROM json_each(?) j \
         JOIN log_attempts l ON l.run_id = j.value->>0 AND l.task = j.value->>1 \
         AND l.attempt = j.value->>2",
    )
    .bind(serde_json::Value::Array(keys).to_string())
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(run_id, task, attempt, cut)| ((run_id, task, attempt as u32), cut != 0))
    .collect();
    // Each attempt's row as the chunks leave it: furthest end, whether cut.
    let mut attempts: BTreeMap<AttemptKey, (u64, bool)> = BTreeMap::new();
    let mut pieces: Vec<(AttemptKey, u64, String)> = Vec::new();
    for chunk in chunks {
        let key = (chunk.run_id.clone(), chunk.task.clone(), chunk.attempt);
        let was = held.get(&key).copied();
        let Some(kept) = kept(chunk, cap, was) else {
            continue;
        };
        held.insert(key.clone(), was == Some(true) || kept.cut);
        let row = attempts.entry(key.clone()).or_insert((0, false));
        *row = (row.0.max(kept.end), row.1 || kept.cut);
        pieces.extend(
            kept.pieces
                .into_iter()
                .map(|(at, data)| (key.clone(), at, data)),
        );
    }
    if attempts.is_empty() {
        return Ok(0);
    }
    // The pieces inserted (one already held, here or earlier in the batch, is not), and
    // their sizes: the first sent of each offset is the one kept.
    let mut sizes: HashMap<(&AttemptKey, u64), u64> = HashMap::new();
    for (key, at, data) in &pieces {
        sizes.entry((key, *at)).or_insert(data.len() as u64);
    }
    let rows: Vec<_> = pieces
        .iter()
        .map(|((run_id, task, attempt), at, data)| json!([run_id, task, attempt, at, data]))
        .collect();
    let inserted: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "INSERT INTO log_pieces (run_id, task, attempt, offset, data) \
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4 \
         FROM json_each(?) WHERE true ORDER BY key \
         ON CONFLICT DO NOTHING RETURNING run_id, task, attempt, offset",
    )
    .bind(serde_json::Value::Array(rows).to_string())
    .fetch_all(&mut *tx)
    .await?;
    let mut added_to: HashMap<AttemptKey, u64> = HashMap::new();
    for (run_id, task, attempt, at) in inserted {
        let key = (run_id, task, attempt as u32);
        let size = sizes.get(&(&key, at as u64)).copied().unwrap_or(0);
        *added_to.entry(key).or_insert(0) += size;
    }
    let rows: Vec<_> = attempts
        .iter()
        .map(|(key, (end, cut))| {
            let (run_id, task, attempt) = key;
            let tenant = tenant_of_run(run_id).map_or_else(String::new, |t| t.to_string());
            let added = added_to.get(key).copied().unwrap_or(0);
            json!([run_id, task, attempt, tenant, end, added, i64::from(*cut)])
        })
        .collect();
    sqlx::query(
        "INSERT INTO log_attempts (run_id, task, attempt, tenant, agent, end_offset, bytes, cut, \
         first_ms, last_ms) \
         SELECT value->>0, value->>1, value->>2, value->>3, ?2, value->>4, value->>5, \
         value->>6, ?3, ?3 FROM json_each(?1) WHERE true \
         ON CONFLICT (run_id, task, attempt) DO UPDATE SET \
         end_offset = MAX(end_offset, excluded.end_offset), bytes = bytes + excluded.bytes, \
         cut = MAX(cut, excluded.cut), last_ms = excluded.last_ms, agent = excluded.agent",
    )
    .bind(serde_json::Value::Array(rows).to_string())
    .bind(agent)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    Ok(added_to.values().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(run_id: &str, offset: u64, data: &str) -> LogChunk {
        LogChunk {
            run_id: run_id.into(),
            task: "t".into(),
            attempt: 1,
            offset,
            data: data.into(),
        }
    }

    async fn whole(book: &Logbook, run_id: &str) -> String {
        let q = PieceQuery {
            run_id: run_id.into(),
            task: "t".into(),
            attempt: 1,
            after: -1,
            before: i64::MAX,
            budget: u64::MAX,
            newest_first: false,
        };
        let read = book.pieces(&q).await.unwrap();
        assert!(!read.more);
        read.pieces.into_iter().map(|p| p.data).collect()
    }

    async fn open(dir: &Path, cap_bytes: u64) -> Logbook {
        Logbook::open(
            dir,
            LogsConfig {
                cap_bytes,
                retention_days: 30,
            },
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_piece_sent_again_is_kept_once_and_everything_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let book = open(dir.path(), 1024).await;
        let (a, b) = (chunk("ads.x@1", 0, "one\n"), chunk("ads.x@1", 4, "two\n"));
        book.store("agent-1", &[&a, &b], 1_000).await.unwrap();
        book.store("agent-1", &[&b], 2_000).await.unwrap();
        assert_eq!(whole(&book, "ads.x@1").await, "one\ntwo\n");
        assert_eq!(book.stored_bytes(), 8);
        drop(book);
        let book = open(dir.path(), 1024).await;
        assert_eq!(whole(&book, "ads.x@1").await, "one\ntwo\n");
        assert_eq!(book.stored_bytes(), 8);
        assert_eq!(
            book.attempts("ads.x@1").await.unwrap(),
            [("t".to_owned(), 1)]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reports_storing_pieces_at_once_wait_for_each_other_rather_than_fail() {
        let dir = tempfile::tempdir().unwrap();
        let book = std::sync::Arc::new(open(dir.path(), 1 << 20).await);
        let mut stores = tokio::task::JoinSet::new();
        for agent in 0..8 {
            let book = book.clone();
            stores.spawn(async move {
                for batch in 0..10 {
                    let chunks: Vec<LogChunk> = (0..20)
                        .map(|i| chunk(&format!("ads.a{agent}@{batch}{i}"), 0, "a line\n"))
                        .collect();
                    let refs: Vec<&LogChunk> = chunks.iter().collect();
                    book.store(&format!("agent-{agent}"), &refs, 1_000).await?;
                }
                Ok::<_, sqlx::Error>(())
            });
        }
        for stored in stores.join_all().await {
            stored.expect("every store succeeds");
        }
        assert_eq!(book.stored_bytes(), 8 * 10 * 20 * 7);
    }

    #[tokio::test]
    async fn one_batch_of_many_attempts_keeps_what_piece_by_piece_would() {
        let dir = tempfile::tempdir().unwrap();
        let book = open(dir.path(), 1024).await;
        let mut second = chunk("ads.x@2", 0, "second\n");
        second.attempt = 2;
        let batch = [
            chunk("ads.x@1", 0, "one\n"),
            chunk("ads.x@1", 0, "one\n"), // sent twice in one batch
            second,
            chunk("ads.x@1", 4, "two\n"),
            chunk("web.y@1", 0, &"w".repeat(1000)),
            chunk("web.y@1", 1000, &"w".repeat(100)), // crosses the cap
            chunk("web.y@1", 1100, "after the cut\n"),
            chunk("web.y@1", 500, "under the cap, but after the cut\n"),
            chunk("ads.z@1", 2000, "past a cut made elsewhere\n"), // not held here
        ];
        let refs: Vec<&LogChunk> = batch.iter().collect();
        book.store("agent-1", &refs, 1_000).await.unwrap();
        assert_eq!(whole(&book, "ads.x@1").await, "one\ntwo\n");
        let marker = kept(&batch[5], 1024, Some(false))
            .unwrap()
            .pieces
            .remove(1)
            .1;
        assert_eq!(
            whole(&book, "web.y@1").await,
            format!("{}{marker}", "w".repeat(1024))
        );
        assert_eq!(whole(&book, "ads.z@1").await, "");
        let marker = marker.len() as u64;
        assert_eq!(book.stored_bytes(), 8 + 7 + 1024 + marker);
        // Again, with more after the cut and a new piece: only the new piece is added.
        let more = [
            chunk("ads.x@1", 8, "three\n"),
            chunk("web.y@1", 1200, "more\n"),
        ];
        let refs: Vec<&LogChunk> = more.iter().chain(batch.iter()).collect();
        book.store("agent-2", &refs, 2_000).await.unwrap();
        assert_eq!(whole(&book, "ads.x@1").await, "one\ntwo\nthree\n");
        assert_eq!(book.stored_bytes(), 8 + 6 + 7 + 1024 + marker);
        let rows: Vec<(String, i64, i64, i64, i64, i64, String)> = sqlx::query_as(
            "SELECT run_id, attempt, end_offset, bytes, cut, first_ms, agent FROM log_attempts \
             ORDER BY run_id, attempt",
        )
        .fetch_all(&book.pool)
        .await
        .unwrap();
        assert_eq!(
            rows,
            [
                ("ads.x@1".into(), 1, 14, 14, 0, 1_000, "agent-2".into()),
                ("ads.x@2".into(), 2, 7, 7, 0, 1_000, "agent-2".into()),
                (
                    "web.y@1".into(),
                    1,
                    1024,
                    1024 + marker as i64,
                    1,
                    1_000,
                    "agent-1".into()
                ),
            ]
        );
    }

    #[tokio::test]
    async fn a_log_past_the_cap_is_cut_with_a_marker_and_the_rest_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let book = open(dir.path(), 1024).await;
        let first = chunk("ads.x@1", 0, &"a".repeat(1000));
        let over = chunk("ads.x@1", 1000, &"b".repeat(100));
        let later = chunk("ads.x@1", 1100, "never kept\n");
        book.store("agent-1", &[&first, &over, &later], 1_000)
            .await
            .unwrap();
        let text = whole(&book, "ads.x@1").await;
        let (kept, marker) = text.split_at(1024);
        assert_eq!(kept, format!("{}{}", "a".repeat(1000), "b".repeat(24)));
        assert!(
            marker.contains("the log is cut here, at 1024 bytes"),
            "{marker}"
        );
        assert!(!text.contains("never kept"));
    }

    #[tokio::test]
    async fn logs_older_than_their_tenants_retention_are_swept_and_forgotten_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let book = open(dir.path(), 1024).await;
        let day = 86_400_000;
        book.store("agent-1", &[&chunk("ads.x@1", 0, "old ads\n")], 0)
            .await
            .unwrap();
        book.store("agent-1", &[&chunk("ads.x@2", 0, "new ads\n")], 9 * day)
            .await
            .unwrap();
        book.store("agent-1", &[&chunk("web.y@1", 0, "old web\n")], 0)
            .await
            .unwrap();
        // ads keeps 7 days, web the default 30; it is day 10.
        let days = |tenant: &str| if tenant == "ads" { 7 } else { 30 };
        assert_eq!(book.sweep(10 * day, days).await.unwrap(), 1);
        assert_eq!(whole(&book, "ads.x@1").await, "");
        assert_eq!(whole(&book, "ads.x@2").await, "new ads\n");
        assert_eq!(whole(&book, "web.y@1").await, "old web\n");
        assert_eq!(book.stored_bytes(), 16);
        // Another agent's pieces of a run are not touched by forgetting this one's.
        book.forget("web.y@1", "agent-2").await.unwrap();
        assert_eq!(whole(&book, "web.y@1").await, "old web\n");
        book.forget("web.y@1", "agent-1").await.unwrap();
        assert_eq!(whole(&book, "web.y@1").await, "");
        assert_eq!(book.stored_bytes(), 8);
    }
}
