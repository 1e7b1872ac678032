//! The agent's one SQLite database (`<data_dir>/agent.db`): the outbox, the fire-record
//! buffer and the runs it has taken, in one file so that taking fire records and writing their
//! outbox entries cannot come apart.
//!
//! Every write goes through one [`Writer`]: a task that takes whatever writes are waiting,
//! applies them in one transaction (a few multi-row statements, whatever the number of writes)
//! and answers each caller once the transaction is durable. Under load many writes share one
//! `fsync` (group commit); alone, a write costs what it did before. A caller that has its answer
//! knows its write survives a crash; one that was interrupted before it does not know, and the
//! write is either wholly there or wholly absent.
//!
//! Takes go first. A [`Take`] (what a firing pass took) is written as one row of `takes`, ahead
//! of every other write waiting, and answered: its runs may start. Its rows in `records`,
//! `cursors`, `runs` and `outbox` are then written from it a chunk at a time ("expanded"), each
//! chunk in a transaction that also moves the take's `expanded` count, and a new take may come
//! between two chunks. Every other write waits until no take is left to expand, so the outbox
//! holds a run's `started` before its end, and a sync or refill reads cursors that count every
//! take. A restart expands what is left before anything else ([`Write::Resume`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::DateTime;
use meridian_domain::WINDOW;
use meridian_domain::run::{Assignment, Report, ReportItem, RunState};
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::take::{LocalRun, Take, Took};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the agent's database at {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("the agent's database: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("the agent's database holds an unreadable {what}: {problem}")]
    Corrupt { what: &'static str, problem: String },
    /// A write shared a transaction that failed: that failure, shared by every write in it.
    #[error("the agent's database: a write failed: {0}")]
    Write(#[source] Arc<StoreError>),
    /// The writing task is gone (the agent is stopping).
    #[error("the agent's database is closed")]
    Closed,
}

impl StoreError {
    /// Something read back from the database that cannot be understood.
    pub fn corrupt(what: &'static str, e: impl ToString) -> Self {
        Self::Corrupt {
            what,
            problem: e.to_string(),
        }
    }
}

/// Opens (creating) the database and brings its schema up to date. WAL with
/// `synchronous = FULL`: what a write returned for survives a power cut, not only a crash.
pub async fn open(path: &Path) -> Result<SqlitePool, StoreError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10));
    let failed = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .map_err(failed)?;
    MIGRATOR.run(&pool).await.map_err(|e| failed(e.into()))?;
    Ok(pool)
}

/// An outbox entry to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub key: String,
    pub at_ms: i64,
    /// The report as JSON.
    pub payload: String,
}

impl NewEntry {
    /// The outbox entry of `report`.
    pub fn of(report: &Report) -> Self {
        let Report::V1 { item, .. } = report;
        let at_ms = match item {
            ReportItem::Run(e) => e.at_ms,
            ReportItem::Attempt(a) => a.at_ms,
            ReportItem::Log(_) => 0,
        };
        NewEntry {
            key: item.key(),
            at_ms,
            payload: serde_json::to_string(report).expect("reports serialise"),
        }
    }
}

/// How far takes are written and expanded (take ids grow; takes expand in id order).
#[derive(Debug, Default)]
pub struct Progress {
    written: AtomicI64,
    expanded: AtomicI64,
}

impl Progress {
    /// The id of the last take written.
    pub fn written(&self) -> i64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Every take up to this id is expanded.
    pub fn expanded(&self) -> i64 {
        self.expanded.load(Ordering::SeqCst)
    }

    /// Whether some take written is not yet wholly expanded.
    pub fn expanding(&self) -> bool {
        self.expanded() < self.written()
    }
}

/// How far one attempt's log is recorded in the outbox: `upto` bytes of its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogMark {
    pub run_id: String,
    pub task: String,
    pub attempt: u32,
    pub upto: u64,
}

/// Every kind of write, applied by [`apply`].
#[derive(Debug)]
pub enum Write {
    /// Replace the assignments (every schedule of every held partition); new and changed
    /// schedules get their window regenerated after the later of the plane's and the agent's
    /// cursor; schedules no longer assigned lose their records.
    Sync(Vec<Arc<Assignment>>),
    /// Fire records taken: durable as one row when answered, expanded afterwards.
    Take(Take),
    /// Takes a previous process wrote, with how many items of each it expanded: expanded
    /// before any other write (answered at once).
    Resume(Vec<(i64, Take, usize)>),
    /// Nothing: answered once every take written before it is expanded.
    Settle,
    /// Top these schedules up to [`WINDOW`] records (after takes, once the firing pass has
    /// nothing more due: generating records is not on the way to starting runs).
    Refill(Vec<Arc<Assignment>>),
    /// A "run now" run taken, unless it already was (answers 0 then).
    TakeManual { run: Box<LocalRun>, entry: NewEntry },
    /// A run moved to `state` (forgotten once it is final), with its report.
    Advance {
        run_id: String,
        state: RunState,
        entry: NewEntry,
    },
    /// An outbox entry (answers 0 when its key is already waiting).
    Record(NewEntry),
    /// A log chunk's outbox entry, and how far the attempt's log is recorded with it.
    RecordLog { entry: NewEntry, mark: LogMark },
    /// The plane committed every entry up to `seq` (answers how many left).
    Acknowledge(i64),
}

type Reply = oneshot::Sender<Result<u64, Arc<StoreError>>>;

/// The handle to the database's one writing task.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::UnboundedSender<(Write, Reply)>,
    progress: Arc<Progress>,
}

/// At most this many writes share a transaction.
const GROUP: usize = 50_000;
/// Rows per multi-row statement (keeps each statement's JSON argument modest).
const ROWS: usize = 20_000;
/// Items of a take expanded per transaction: a take arriving meanwhile waits at most this.
pub(crate) const EXPAND_CHUNK: usize = 2_000;

impl Writer {
    /// Starts the writing task on `pool` (it ends when every handle is dropped).
    pub fn start(pool: SqlitePool) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        let progress = Arc::new(Progress::default());
        tokio::spawn(write_loop(pool, waiting, progress.clone()));
        Self { queue, progress }
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Applies `write` and waits until it is durable.
    pub async fn write(&self, write: Write) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((write, reply))
            .map_err(|_| StoreError::Closed)?;
        answer
            .await
            .map_err(|_| StoreError::Closed)?
            .map_err(StoreError::Write)
    }
}

/// A take being expanded: its id, and how many items are written.
struct Expanding {
    id: i64,
    take: Take,
    done: usize,
}

async fn write_loop(
    pool: SqlitePool,
    mut waiting: mpsc::UnboundedReceiver<(Write, Reply)>,
    progress: Arc<Progress>,
) {
    let mut takes: Vec<(Write, Reply)> = Vec::new();
    let mut held: VecDeque<(Write, Reply)> = VecDeque::new();
    let mut expanding: VecDeque<Expanding> = VecDeque::new();
    let route = |next: (Write, Reply), takes: &mut Vec<_>, held: &mut VecDeque<_>| match next.0 {
        Write::Take(_) | Write::Resume(_) => takes.push(next),
        _ => held.push_back(next),
    };
    loop {
        if held.is_empty() && expanding.is_empty() {
            match waiting.recv().await {
                Some(next) => route(next, &mut takes, &mut held),
                None => return,
            }
        }
        while let Ok(next) = waiting.try_recv() {
            route(next, &mut takes, &mut held);
        }
        if !takes.is_empty() {
            write_takes(&pool, std::mem::take(&mut takes), &mut expanding, &progress).await;
        } else if let Some(front) = expanding.front_mut() {
            match expand(&pool, front).await {
                Ok(()) if front.done == front.take.items.len() => {
                    progress.expanded.store(front.id, Ordering::SeqCst);
                    expanding.pop_front();
                }
                Ok(()) => {}
                Err(_) if pool.is_closed() => return,
                Err(e) => {
                    // The take is durable; writing its rows is retried until it works.
                    tracing::error!("expanding take {}: {e}; retrying", front.id);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        } else if !held.is_empty() {
            let group: Vec<(Write, Reply)> = held.drain(..held.len().min(GROUP)).collect();
            let (writes, replies): (Vec<Write>, Vec<Reply>) = group.into_iter().unzip();
            answer(replies, apply(&pool, &writes).await);
        }
    }
}

fn answer(replies: Vec<Reply>, answers: Result<Vec<u64>, StoreError>) {
    match answers {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Err(e) => {
            let shared = Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(shared.clone()));
            }
        }
    }
}

/// Writes new takes as one row each, in one transaction, and queues them (and resumed ones)
/// for expansion.
async fn write_takes(
    pool: &SqlitePool,
    group: Vec<(Write, Reply)>,
    expanding: &mut VecDeque<Expanding>,
    progress: &Progress,
) {
    let (writes, replies): (Vec<Write>, Vec<Reply>) = group.into_iter().unzip();
    let written: Result<Vec<Expanding>, StoreError> = async {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut out = Vec::new();
        for write in writes {
            match write {
                Write::Take(take) => {
                    let items: Vec<(&str, i64, u64, Took)> = take
                        .items
                        .iter()
                        .map(|i| (i.assignment.schedule.as_str(), i.fire_ms, i.epoch, i.took))
                        .collect();
                    let items = meridian_domain::stored::write(&items);
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO takes (at_ms, items) VALUES (?, ?) RETURNING id",
                    )
                    .bind(take.at_ms)
                    .bind(items)
                    .fetch_one(&mut *tx)
                    .await?;
                    out.push(Expanding { id, take, done: 0 });
                }
                Write::Resume(resumed) => {
                    out.extend(resumed.into_iter().map(|(id, take, done)| Expanding {
                        id,
                        take,
                        done,
                    }))
                }
                _ => unreachable!("only takes are routed here"),
            }
        }
        tx.commit().await?;
        Ok(out)
    }
    .await;
    match written {
        Ok(written) => {
            if let Some(last) = written.iter().map(|e| e.id).max() {
                progress.written.fetch_max(last, Ordering::SeqCst);
            }
            expanding.extend(written);
            let n = replies.len();
            answer(replies, Ok(vec![1; n]));
        }
        Err(e) => answer(replies, Err(e)),
    }
}

/// Rows gathered from a group of writes, written table by table.
#[derive(Default)]
struct Rows<'a> {
    sync: Option<&'a [Arc<Assignment>]>,
    new_runs: Vec<serde_json::Value>,
    run_states: Vec<serde_json::Value>,
    finished_runs: Vec<String>,
    /// Runs given back: handed to this agent again, they are put into `records` again.
    returned_runs: Vec<String>,
    /// Entries in the order their writes came.
    entries: Vec<(usize, &'a NewEntry)>,
    log_marks: Vec<serde_json::Value>,
    refill: BTreeMap<String, Arc<Assignment>>,
    acknowledge: Option<i64>,
}

fn run_row(run: &LocalRun) -> serde_json::Value {
    json!([
        run.run_id,
        run.schedule.as_ref().map(|s| s.as_str()),
        run.fire_ms,
        run.cluster,
        run.partition,
        run.epoch as i64,
        run.state.as_str(),
        meridian_domain::stored::write(&run.job),
    ])
}

/// Applies a group of writes in one transaction; one answer per write.
async fn apply(pool: &SqlitePool, writes: &[Write]) -> Result<Vec<u64>, StoreError> {
    let began = std::time::Instant::now();
    let mut lap: Vec<(&str, Duration)> = Vec::new();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut answers = vec![0u64; writes.len()];
    let mut rows = Rows::default();
    // "Run now" runs already taken are recognised first: their writes do nothing.
    let manual: Vec<&str> = writes
        .iter()
        .filter_map(|w| match w {
            Write::TakeManual { run, .. } => Some(run.run_id.as_str()),
            _ => None,
        })
        .collect();
    let known: HashSet<String> = if manual.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_scalar(
            "SELECT run_id FROM runs WHERE run_id IN (SELECT value FROM json_each(?))",
        )
        .bind(json!(manual).to_string())
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect()
    };
    for (i, write) in writes.iter().enumerate() {
        match write {
            Write::Sync(assignments) => rows.sync = Some(assignments),
            // Routed to the take lane; a settle only waits for it.
            Write::Take(_) | Write::Resume(_) | Write::Settle => {}
            Write::Refill(assignments) => {
                for a in assignments {
                    rows.refill.insert(a.schedule.to_string(), a.clone());
                }
            }
            Write::TakeManual { run, entry } => {
                if !known.contains(&run.run_id) {
                    rows.new_runs.push(run_row(run));
                    rows.entries.push((i, entry));
                    answers[i] = 1;
                }
            }
            Write::Advance {
                run_id,
                state,
                entry,
            } => {
                if state.leaves_the_agent() {
                    if *state == RunState::Returned {
                        rows.returned_runs.push(run_id.clone());
                    }
                    rows.finished_runs.push(run_id.clone());
                } else {
                    rows.run_states.push(json!([run_id, state.as_str()]));
                }
                rows.entries.push((i, entry));
            }
            Write::Record(entry) => rows.entries.push((i, entry)),
            Write::RecordLog { entry, mark } => {
                rows.entries.push((i, entry));
                rows.log_marks
                    .push(json!([mark.run_id, mark.task, mark.attempt, mark.upto]));
            }
            Write::Acknowledge(seq) => {
                rows.acknowledge = Some(rows.acknowledge.map_or(*seq, |s| s.max(*seq)))
            }
        }
    }
    lap.push(("prepared", began.elapsed()));
    if let Some(assignments) = rows.sync {
        sync(&mut tx, assignments).await?;
    }
    lap.push(("synced", began.elapsed()));
    insert_runs(&mut tx, &rows.new_runs).await?;
    lap.push(("runs", began.elapsed()));
    for chunk in rows.run_states.chunks(ROWS) {
        sqlx::query(
            "UPDATE runs SET state = j.value->>1 FROM json_each(?) AS j \
             WHERE runs.run_id = j.value->>0",
        )
        .bind(json!(chunk).to_string())
        .execute(&mut *tx)
        .await?;
    }
    for chunk in rows.finished_runs.chunks(ROWS) {
        sqlx::query("DELETE FROM runs WHERE run_id IN (SELECT value FROM json_each(?))")
            .bind(json!(chunk).to_string())
            .execute(&mut *tx)
            .await?;
    }
    for chunk in rows.log_marks.chunks(ROWS) {
        sqlx::query(
            "INSERT INTO log_marks (run_id, task, attempt, upto) \
             SELECT j.value->>0, j.value->>1, j.value->>2, j.value->>3 FROM json_each(?1) AS j \
             WHERE true ON CONFLICT DO UPDATE SET upto = MAX(upto, excluded.upto)",
        )
        .bind(json!(chunk).to_string())
        .execute(&mut *tx)
        .await?;
    }
    for chunk in rows.finished_runs.chunks(ROWS) {
        sqlx::query("DELETE FROM log_marks WHERE run_id IN (SELECT value FROM json_each(?1))")
            .bind(json!(chunk).to_string())
            .execute(&mut *tx)
            .await?;
    }
    for chunk in rows.returned_runs.chunks(ROWS) {
        sqlx::query("DELETE FROM handed WHERE run_id IN (SELECT value FROM json_each(?))")
            .bind(json!(chunk).to_string())
            .execute(&mut *tx)
            .await?;
    }
    lap.push(("states", began.elapsed()));
    record(&mut tx, &rows.entries, &mut answers).await?;
    lap.push(("outbox", began.elapsed()));
    refill(&mut tx, &rows.refill).await?;
    lap.push(("refill", began.elapsed()));
    if let Some(seq) = rows.acknowledge {
        let gone = sqlx::query("DELETE FROM outbox WHERE seq <= ?")
            .bind(seq)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        for (i, w) in writes.iter().enumerate() {
            if matches!(w, Write::Acknowledge(_)) {
                answers[i] = gone;
            }
        }
    }
    lap.push(("acknowledged", began.elapsed()));
    tx.commit().await?;
    lap.push(("committed", began.elapsed()));
    if began.elapsed() > Duration::from_millis(200) {
        tracing::debug!(writes = writes.len(), "slow write group: {lap:?}");
    }
    Ok(answers)
}

/// Expands the next chunk of a take: deletes its records, moves its schedules' cursors,
/// remembers its runs and writes its reports, and counts the chunk in the take's row (the row
/// goes with the last chunk), in one transaction.
async fn expand(pool: &SqlitePool, e: &mut Expanding) -> Result<(), StoreError> {
    let end = (e.done + EXPAND_CHUNK).min(e.take.items.len());
    let items = &e.take.items[e.done..end];
    let mut records = Vec::with_capacity(items.len());
    let mut cursors: BTreeMap<&str, i64> = BTreeMap::new();
    let mut runs = Vec::new();
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let schedule = item.assignment.schedule.as_str();
        records.push(json!([schedule, item.fire_ms]));
        let cursor = cursors.entry(schedule).or_insert(item.fire_ms);
        *cursor = (*cursor).max(item.fire_ms);
        let (run, report) = item.expanded(e.take.at_ms);
        if let Some(run) = run {
            runs.push(run_row(&run));
        }
        entries.push(NewEntry::of(&report));
    }
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "DELETE FROM records WHERE (schedule_id, fire_ms) IN \
         (SELECT value->>0, value->>1 FROM json_each(?))",
    )
    .bind(serde_json::Value::Array(records).to_string())
    .execute(&mut *tx)
    .await?;
    let cursors: Vec<serde_json::Value> = cursors.iter().map(|(s, f)| json!([s, f])).collect();
    sqlx::query(
        "INSERT INTO cursors (schedule_id, fired_ms) \
         SELECT value->>0, value->>1 FROM json_each(?) WHERE true \
         ON CONFLICT (schedule_id) DO UPDATE SET fired_ms = MAX(fired_ms, excluded.fired_ms)",
    )
    .bind(serde_json::Value::Array(cursors).to_string())
    .execute(&mut *tx)
    .await?;
    insert_runs(&mut tx, &runs).await?;
    let entries: Vec<(usize, &NewEntry)> = entries.iter().map(|e| (0, e)).collect();
    record(&mut tx, &entries, &mut [0]).await?;
    if end == e.take.items.len() {
        sqlx::query("DELETE FROM takes WHERE id = ?")
            .bind(e.id)
            .execute(&mut *tx)
            .await?;
    } else {
        sqlx::query("UPDATE takes SET expanded = ? WHERE id = ?")
            .bind(end as i64)
            .bind(e.id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    e.done = end;
    Ok(())
}

async fn insert_runs(
    tx: &mut SqliteConnection,
    runs: &[serde_json::Value],
) -> Result<(), StoreError> {
    for chunk in runs.chunks(ROWS) {
        sqlx::query(
            "INSERT INTO runs (run_id, schedule_id, fire_ms, cluster, partition, epoch, state, job) \
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, \
             value->>7 FROM json_each(?) WHERE true ON CONFLICT (run_id) DO NOTHING",
        )
        .bind(json!(chunk).to_string())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Writes outbox entries in order; a key already waiting (or earlier in the group) keeps its
/// first entry, and a plain [`Write::Record`] of it answers 0.
async fn record(
    tx: &mut SqliteConnection,
    entries: &[(usize, &NewEntry)],
    answers: &mut [u64],
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = entries.iter().map(|(_, e)| e.key.as_str()).collect();
    let mut waiting: HashSet<String> = HashSet::new();
    for chunk in keys.chunks(ROWS) {
        waiting.extend(
            sqlx::query_scalar::<_, String>(
                "SELECT key FROM outbox WHERE key IN (SELECT value FROM json_each(?))",
            )
            .bind(json!(chunk).to_string())
            .fetch_all(&mut *tx)
            .await?,
        );
    }
    let mut fresh = Vec::with_capacity(entries.len());
    for (i, e) in entries {
        if waiting.insert(e.key.clone()) {
            answers[*i] = answers[*i].max(1);
            fresh.push(json!([e.key, e.at_ms, e.payload]));
        }
    }
    for chunk in fresh.chunks(ROWS) {
        sqlx::query(
            "INSERT INTO outbox (key, at_ms, payload) \
             SELECT value->>0, value->>1, value->>2 FROM json_each(?) WHERE true \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(json!(chunk).to_string())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// The buffered count and last fire time, and the cursor, of each of `schedules`.
async fn positions(
    tx: &mut SqliteConnection,
    schedules: &[&str],
) -> Result<HashMap<String, (i64, Option<i64>, Option<i64>)>, StoreError> {
    let mut out: HashMap<String, (i64, Option<i64>, Option<i64>)> = HashMap::new();
    for chunk in schedules.chunks(ROWS) {
        let ids = json!(chunk).to_string();
        for row in sqlx::query(
            "SELECT schedule_id, COUNT(*) AS n, MAX(fire_ms) AS last FROM records \
             WHERE schedule_id IN (SELECT value FROM json_each(?)) GROUP BY schedule_id",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        {
            let entry = out.entry(row.get("schedule_id")).or_default();
            entry.0 = row.get("n");
            entry.1 = row.get("last");
        }
        for row in sqlx::query(
            "SELECT schedule_id, fired_ms FROM cursors \
             WHERE schedule_id IN (SELECT value FROM json_each(?))",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        {
            out.entry(row.get("schedule_id")).or_default().2 = row.get("fired_ms");
        }
    }
    Ok(out)
}

/// Tops each schedule up to [`WINDOW`] records after the last one buffered (or its cursor).
async fn refill(
    tx: &mut SqliteConnection,
    schedules: &BTreeMap<String, Arc<Assignment>>,
) -> Result<(), StoreError> {
    if schedules.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = schedules.keys().map(String::as_str).collect();
    // Only schedules still assigned, at the version the caller saw (a sync in between has
    // already regenerated or dropped the others).
    let mut current: HashMap<String, i64> = HashMap::new();
    for chunk in ids.chunks(ROWS) {
        current.extend(
            sqlx::query_as::<_, (String, i64)>(
                "SELECT schedule_id, version FROM assignments \
                 WHERE schedule_id IN (SELECT value FROM json_each(?))",
            )
            .bind(json!(chunk).to_string())
            .fetch_all(&mut *tx)
            .await?,
        );
    }
    let at = positions(tx, &ids).await?;
    let mut records = Records::default();
    for (id, a) in schedules {
        if current.get(id) != Some(&(a.version as i64)) {
            continue;
        }
        let (count, last, fired) = at.get(id).copied().unwrap_or_default();
        if count as usize >= WINDOW {
            continue;
        }
        let after = [Some(a.after_ms), fired, last]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(a.after_ms);
        records
            .window(tx, a, after, WINDOW - count as usize)
            .await?;
    }
    records.insert(tx).await
}

/// Fire records on their way into the `records` table, at most a statement's worth held at
/// once: the windows of 100,000 schedules (5,000,000 records) are written as they are made.
#[derive(Default)]
struct Records(Vec<serde_json::Value>);

impl Records {
    /// Adds `n` fire records of `a` after `after_ms`, writing what it holds once that is full.
    async fn window(
        &mut self,
        tx: &mut SqliteConnection,
        a: &Assignment,
        after_ms: i64,
        n: usize,
    ) -> Result<(), StoreError> {
        // The plane validated the spec; one this agent cannot read (a newer version's) fires
        // nothing rather than something wrong. `Buffer::sync` says so for each such version.
        let Ok(calendar) = a.spec.calendar() else {
            return Ok(());
        };
        let after = DateTime::from_timestamp_millis(after_ms)
            .ok_or_else(|| StoreError::corrupt("fire time", "out of range"))?;
        for record in calendar.window(&a.schedule, after, n) {
            let at = record.fire_at.timestamp_millis();
            self.0.push(json!([a.schedule.as_str(), at]));
        }
        if self.0.len() >= ROWS {
            self.insert(tx).await?;
        }
        Ok(())
    }

    async fn insert(&mut self, tx: &mut SqliteConnection) -> Result<(), StoreError> {
        insert_records(tx, &self.0).await?;
        self.0.clear();
        Ok(())
    }
}

async fn insert_records(
    tx: &mut SqliteConnection,
    records: &[serde_json::Value],
) -> Result<(), StoreError> {
    for chunk in records.chunks(ROWS) {
        sqlx::query(
            "INSERT INTO records (schedule_id, fire_ms) \
             SELECT value->>0, value->>1 FROM json_each(?) WHERE true ON CONFLICT DO NOTHING",
        )
        .bind(json!(chunk).to_string())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn sync(
    tx: &mut SqliteConnection,
    assignments: &[Arc<Assignment>],
) -> Result<(), StoreError> {
    let current: HashMap<String, i64> = sqlx::query("SELECT schedule_id, version FROM assignments")
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| (r.get("schedule_id"), r.get("version")))
        .collect();
    let assigned: HashSet<&str> = assignments.iter().map(|a| a.schedule.as_str()).collect();
    let gone: Vec<&str> = current
        .keys()
        .map(String::as_str)
        .filter(|id| !assigned.contains(id))
        .collect();
    for chunk in gone.chunks(ROWS) {
        let ids = json!(chunk).to_string();
        for table in ["assignments", "records"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE schedule_id IN (SELECT value FROM json_each(?))"
            ))
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        }
    }
    // A chunk at a time: the documents of 100,000 schedules at once would be the agent's
    // largest allocation.
    for chunk in assignments.chunks(ROWS / 10) {
        let docs: Vec<serde_json::Value> = chunk
            .iter()
            .map(|a| {
                json!([
                    a.schedule.as_str(),
                    a.cluster,
                    a.partition,
                    a.version as i64,
                    meridian_domain::stored::write(a.as_ref()),
                ])
            })
            .collect();
        sqlx::query(
            "INSERT INTO assignments (schedule_id, cluster, partition, version, doc) \
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4 FROM json_each(?) \
             WHERE true ON CONFLICT (schedule_id) DO UPDATE SET cluster = excluded.cluster, \
             partition = excluded.partition, version = excluded.version, doc = excluded.doc",
        )
        .bind(serde_json::Value::Array(docs).to_string())
        .execute(&mut *tx)
        .await?;
    }
    // New or changed: regenerate from the later of the plane's and our own cursor.
    let changed: Vec<&Arc<Assignment>> = assignments
        .iter()
        .filter(|a| current.get(a.schedule.as_str()) != Some(&(a.version as i64)))
        .collect();
    if !changed.is_empty() {
        let ids: Vec<&str> = changed.iter().map(|a| a.schedule.as_str()).collect();
        let at = positions(tx, &ids).await?;
        for chunk in ids.chunks(ROWS) {
            sqlx::query(
                "DELETE FROM records WHERE schedule_id IN (SELECT value FROM json_each(?))",
            )
            .bind(json!(chunk).to_string())
            .execute(&mut *tx)
            .await?;
        }
        let mut records = Records::default();
        for a in changed {
            let fired = at.get(a.schedule.as_str()).and_then(|p| p.2);
            let after = fired.map_or(a.after_ms, |f| f.max(a.after_ms));
            records.window(tx, a, after, WINDOW).await?;
        }
        records.insert(tx).await?;
    }
    hand_back(tx, assignments).await
}

/// Puts the records the plane hands back (`Assignment::returned`) or a backfill hands
/// (`Assignment::backfill`) into `records`, each once
/// (`handed` remembers it while the plane lists it), and forgets those it no longer lists.
async fn hand_back(
    tx: &mut SqliteConnection,
    assignments: &[Arc<Assignment>],
) -> Result<(), StoreError> {
    let listed: Vec<serde_json::Value> = assignments
        .iter()
        .flat_map(|a| {
            a.returned.iter().chain(&a.backfill).map(|fire_ms| {
                let at = DateTime::from_timestamp_millis(*fire_ms).unwrap_or_default();
                let run_id = meridian_domain::FireId::derive(&a.schedule, at);
                json!([a.schedule.as_str(), fire_ms, run_id.as_str()])
            })
        })
        .collect();
    // Listed no more (its taking reached the plane, it was killed, or the schedule moved
    // away): forgotten, and no longer fired if it is still waiting here.
    let ids: Vec<&str> = assignments.iter().map(|a| a.schedule.as_str()).collect();
    let gone: Vec<(String, i64)> = sqlx::query_as(
        "DELETE FROM handed WHERE schedule_id NOT IN (SELECT value FROM json_each(?1)) \
         OR (schedule_id, fire_ms) NOT IN (SELECT value->>0, value->>1 FROM json_each(?2)) \
         RETURNING schedule_id, fire_ms",
    )
    .bind(json!(ids).to_string())
    .bind(serde_json::Value::Array(listed.clone()).to_string())
    .fetch_all(&mut *tx)
    .await?;
    if !gone.is_empty() {
        let gone: Vec<serde_json::Value> = gone.iter().map(|(s, f)| json!([s, f])).collect();
        sqlx::query(
            "DELETE FROM records WHERE (schedule_id, fire_ms) IN \
             (SELECT value->>0, value->>1 FROM json_each(?))",
        )
        .bind(serde_json::Value::Array(gone).to_string())
        .execute(&mut *tx)
        .await?;
    }
    if listed.is_empty() {
        return Ok(());
    }
    for chunk in listed.chunks(ROWS) {
        let new: Vec<(String, i64)> = sqlx::query_as(
            "INSERT INTO handed (schedule_id, fire_ms, run_id) \
             SELECT value->>0, value->>1, value->>2 FROM json_each(?) WHERE true \
             ON CONFLICT DO NOTHING RETURNING schedule_id, fire_ms",
        )
        .bind(json!(chunk).to_string())
        .fetch_all(&mut *tx)
        .await?;
        let records: Vec<serde_json::Value> = new.iter().map(|(s, f)| json!([s, f])).collect();
        insert_records(tx, &records).await?;
    }
    Ok(())
}
