//! Plane backups: snapshot files an operator keeps, and a new plane seeded from one.
//!
//! A snapshot file is the model database as of one applied log entry (`VACUUM INTO`), with
//! its Raft progress inside (`raft_state`): the same thing the plane ships to a lagging node.
//! - A running plane writes one on request ([`StateMachine::copy`], `GET /plane/snapshot`,
//!   after a read barrier, so it holds every write acknowledged before the request).
//! - [`export`] writes one from a *stopped* node's data directory with every entry of that
//!   node's log applied, committed or not: the most a survivor knows when the plane has lost a
//!   majority of its nodes and can commit nothing (etcd's `--force-new-cluster` makes the same
//!   choice).
//! - [`restore`] turns an empty data directory into a one-node plane holding a file's state:
//!   the membership becomes that node alone, every lease epoch jumps past any the rolled-back
//!   timeline can have issued, and for one lease no partition is granted or renewed
//!   (`plane_restores`), so a lease still running on some agent from before runs out first.
//!   The other nodes then join empty, with `plane add`, and catch up by snapshot.
//! - [`inspect`] says what a file holds, and refuses anything that is not a snapshot.
//!
//! [`StateMachine::copy`]: super::state_machine::StateMachine::copy

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{Membership, RaftLogReader, Vote};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::{LogId, Node, StoredMembership};

pub use super::log_store::LOG_FILE;
pub use super::state_machine::MODEL_FILE;

/// How far [`restore`] moves every lease epoch: more grants than the rolled-back timeline can
/// have made since the snapshot, so no restored epoch equals one an agent still carries.
const EPOCH_GAP: i64 = 1 << 32;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: not a Meridian plane snapshot: {reason}")]
    NotASnapshot { path: PathBuf, reason: String },
    #[error(
        "{path} already holds a plane node ({file} exists); `plane restore` seeds an empty \
         data directory: move the old one away first"
    )]
    NotEmpty { path: PathBuf, file: &'static str },
    #[error("{path} holds no plane node (no {file})")]
    NoNode { path: PathBuf, file: &'static str },
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

impl BackupError {
    fn io(path: &Path, e: impl fmt::Display) -> Self {
        Self::Io {
            path: path.to_owned(),
            reason: e.to_string(),
        }
    }
}

/// What a snapshot file holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// The last log entry applied into it.
    pub index: u64,
    pub term: u64,
    /// The plane's voters as recorded in it (`hostname:port`).
    pub members: Vec<String>,
    pub tenants: i64,
    pub workflows: i64,
    pub schedules: i64,
    pub runs: i64,
    pub bytes: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "index {} (term {}), {} bytes: {} tenants, {} workflows, {} schedules, {} runs; \
             members {}",
            self.index,
            self.term,
            self.bytes,
            self.tenants,
            self.workflows,
            self.schedules,
            self.runs,
            self.members.join(", ")
        )
    }
}

/// Reads what the snapshot file at `path` holds; an error names what makes it no snapshot.
pub async fn inspect(path: &Path) -> Result<Summary, BackupError> {
    let not = |reason: String| BackupError::NotASnapshot {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::metadata(path)
        .map_err(|e| BackupError::io(path, e))?
        .len();
    let mut conn = SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .immutable(true),
    )
    .await
    .map_err(|e| not(e.to_string()))?;
    let read = async {
        let (applied, membership) = StateMachine::progress(&mut conn)
            .await
            .map_err(|e| not(format!("no Raft progress in it ({e})")))?;
        let applied = applied.ok_or_else(|| not("it records no applied log entry".into()))?;
        let mut count = async |table: &str| -> Result<i64, BackupError> {
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&mut conn)
                .await
                .map_err(|e| not(format!("table `{table}`: {e}")))
        };
        let mut members: Vec<String> = membership
            .membership()
            .nodes()
            .map(|(_, node)| format!("{}:{}", node.hostname, node.port))
            .collect();
        members.sort();
        Ok(Summary {
            index: applied.index,
            term: applied.leader_id.term,
            members,
            tenants: count("tenants").await?,
            workflows: count("workflows").await?,
            schedules: count("schedules").await?,
            runs: count("runs").await?,
            bytes,
        })
    }
    .await;
    let _ = conn.close().await;
    read
}

/// Writes to `file` a snapshot of the stopped node whose data directory is `data_dir`, with
/// every entry in its log applied.
pub async fn export(data_dir: &Path, file: &Path) -> Result<Summary, BackupError> {
    for name in [LOG_FILE, MODEL_FILE] {
        if !data_dir.join(name).exists() {
            return Err(BackupError::NoNode {
                path: data_dir.to_owned(),
                file: name,
            });
        }
    }
    let log_path = data_dir.join(LOG_FILE);
    let mut log = LogStore::open(&log_path).map_err(|e| {
        BackupError::io(
            &log_path,
            format!("{e}; is `meridian plane serve` running on it? stop it first"),
        )
    })?;
    // Work in a directory beside `file`: a copy of the model, then the log applied to it.
    let work = file.with_extension("export.tmp");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| BackupError::io(&work, e))?;
    let done = async {
        let model = data_dir.join(MODEL_FILE);
        let mut source = SqliteConnection::connect_with(
            &SqliteConnectOptions::new().filename(&model).read_only(true),
        )
        .await
        .map_err(|e| BackupError::io(&model, e))?;
        let copy = work.join(MODEL_FILE);
        let vacuum = sqlx::query("VACUUM INTO ?")
            .bind(copy.to_string_lossy().into_owned())
            .execute(&mut source)
            .await;
        let _ = source.close().await;
        vacuum.map_err(|e| BackupError::io(&model, e))?;
        // Runs the entries retire go to the node's own history store (its default one: the
        // export does not read `plane.toml`), where the node would have put them.
        let history = crate::history_store::HistoryStore::open(data_dir, None)
            .await
            .map_err(|e| BackupError::io(data_dir, e))?;
        let mut state = StateMachine::open(&work, history)
            .await
            .map_err(|e| BackupError::io(&copy, e))?;
        let (applied, _) = state
            .applied_state()
            .await
            .map_err(|e| BackupError::io(&copy, e))?;
        let from = applied.map_or(0, |l| l.index + 1);
        let purged = log
            .get_log_state()
            .await
            .map_err(|e| BackupError::io(&log_path, e))?
            .last_purged_log_id;
        // The log must go on exactly where the model stops: the applied entry itself (same
        // term) or its purge mark, then every entry after it.
        let mut entries = log
            .try_get_log_entries(from.saturating_sub(1)..)
            .await
            .map_err(|e| BackupError::io(&log_path, e))?;
        let joins = match (applied, entries.first()) {
            // Nothing applied yet: nothing may have been purged either.
            (None, _) => purged.is_none(),
            // The applied entry is still in the log: it must be the same entry.
            (Some(applied), Some(first)) if first.log_id.index == applied.index => {
                first.log_id == applied
            }
            // Later entries only: the log must be purged exactly up to the applied one.
            (Some(applied), Some(_)) => purged == Some(applied),
            // The model is as far as the log, or further: nothing to apply.
            (Some(_), None) => true,
        };
        if !joins {
            return Err(BackupError::io(
                &log_path,
                format!(
                    "the log ({} .. {}) does not go on from the model's last applied entry {}",
                    purged.map_or("start".into(), |p| p.to_string()),
                    entries
                        .last()
                        .map_or("empty".into(), |e| e.log_id.to_string()),
                    applied.map_or("(none)".into(), |a| a.to_string()),
                ),
            ));
        }
        entries.retain(|e| e.log_id.index >= from);
        state
            .apply(entries)
            .await
            .map_err(|e| BackupError::io(&copy, e))?;
        let out = work.join("export.db");
        let written = vacuum_into(state.pool(), &out).await;
        state.close().await;
        written.map_err(|e| BackupError::io(&copy, e))?;
        std::fs::rename(&out, file).map_err(|e| BackupError::io(file, e))
    }
    .await;
    let _ = std::fs::remove_dir_all(&work);
    done?;
    inspect(file).await
}

/// Seeds the empty data directory `data_dir` from the snapshot file `file`, as the only member
/// of a new plane: `node`. `now_ms` is when the restore is made (the lease fence counts from
/// it).
pub async fn restore(
    file: &Path,
    data_dir: &Path,
    node: &Node,
    now_ms: i64,
) -> Result<Summary, BackupError> {
    let summary = inspect(file).await?;
    for name in [LOG_FILE, MODEL_FILE] {
        if data_dir.join(name).exists() {
            return Err(BackupError::NotEmpty {
                path: data_dir.to_owned(),
                file: name,
            });
        }
    }
    std::fs::create_dir_all(data_dir).map_err(|e| BackupError::io(data_dir, e))?;
    // Both files are built under staging names and renamed into place, the log last: a
    // restore cut short leaves no node (`plane serve` refuses a model without a log), and a
    // rerun starts over.
    let staged_model = data_dir.join(format!("{MODEL_FILE}{STAGED}"));
    let staged_log = data_dir.join(format!("{LOG_FILE}{STAGED}"));
    let clear = || {
        for work in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{WORK}{work}", staged_model.display()));
        }
        let _ = std::fs::remove_file(&staged_model);
        let _ = std::fs::remove_file(&staged_log);
    };
    clear();
    let _ = std::fs::remove_dir_all(data_dir.join("snapshots"));
    let staged = stage(file, &staged_model, &staged_log, &summary, node, now_ms).await;
    let placed = staged.and_then(|()| {
        for (from, to) in [(&staged_model, MODEL_FILE), (&staged_log, LOG_FILE)] {
            let to = data_dir.join(to);
            std::fs::rename(from, &to).map_err(|e| BackupError::io(&to, e))?;
        }
        std::fs::File::open(data_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| BackupError::io(data_dir, e))
    });
    // Whatever is left under the staging names (all of it on a failure, the work copy on
    // success) goes.
    clear();
    placed?;
    inspect(&data_dir.join(MODEL_FILE))
        .await
        .map(|restored| Summary {
            bytes: summary.bytes,
            ..restored
        })
}

/// The suffix of files a restore is still building.
const STAGED: &str = ".restoring";
/// The suffix, after [`STAGED`], of the copy a restore changes before writing the staged model.
const WORK: &str = "-work";

/// Writes the restored model to `model` (a copy of `file`, brought up to this version's
/// schema, reseated on `node` alone, leases fenced) and its log to `log`.
async fn stage(
    file: &Path,
    model: &Path,
    log: &Path,
    summary: &Summary,
    node: &Node,
    now_ms: i64,
) -> Result<(), BackupError> {
    let work = PathBuf::from(format!("{}{WORK}", model.display()));
    std::fs::copy(file, &work).map_err(|e| BackupError::io(&work, e))?;
    // Opening runs the migrations: a snapshot of an older version comes up to this one.
    let pool = crate::model::open(&work).await.map_err(|e| {
        BackupError::io(
            file,
            format!("bringing it to this version's schema: {e} (made by a newer meridian?)"),
        )
    })?;
    let reseated = async {
        let mut tx = pool.begin().await?;
        let (applied, _) = StateMachine::progress(&mut tx).await?;
        let membership = StoredMembership::new(
            applied,
            Membership::new(
                vec![BTreeSet::from([node.id()])],
                BTreeMap::from([(node.id(), node.clone())]),
            ),
        );
        StateMachine::save_progress(&mut tx, &applied, &membership).await?;
        sqlx::query("UPDATE leases SET epoch = epoch + ?, expires_ms = MIN(expires_ms, ?)")
            .bind(EPOCH_GAP)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM cluster_activity")
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO plane_restores (restored_ms, from_index, node) VALUES (?, ?, ?)")
            .bind(now_ms)
            .bind(summary.index as i64)
            .bind(&node.hostname)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        vacuum_into(&pool, model).await?;
        Ok::<_, sqlx::Error>(applied)
    }
    .await;
    pool.close().await;
    let applied: Option<LogId> = reseated.map_err(|e| BackupError::io(&work, e))?;
    let applied = applied.expect("inspect checked that the file records an applied entry");
    // The vote carries the snapshot's term, so this node's first term as leader comes after
    // every entry it holds.
    let vote = Vote::new(applied.leader_id.term, node.id());
    LogStore::seed(log, applied, &vote).map_err(|e| BackupError::io(log, e))
}

/// Writes the database behind `pool` to the new file `to` (`VACUUM INTO`): one self-contained
/// file with every committed write, safe to rename. The pool's own file may not be: its last
/// connection can still hold the write-ahead log when `close` returns.
async fn vacuum_into(pool: &sqlx::SqlitePool, to: &Path) -> Result<(), sqlx::Error> {
    sqlx::query("VACUUM INTO ?")
        .bind(to.to_string_lossy().into_owned())
        .execute(pool)
        .await
        .map(drop)
}
