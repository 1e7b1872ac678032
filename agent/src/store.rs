//! The agent's one SQLite database (`<data_dir>/agent.db`): the outbox, the fire-record
//! buffer and the runs it has taken, in one file so that taking a fire record and writing its
//! outbox entry are one transaction.

use std::path::Path;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the agent's database at {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("the agent's database: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("the agent's database holds an unreadable {what}: {problem}")]
    Corrupt { what: &'static str, problem: String },
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
