//! The checks and small writes every room of the model shares: whether a named thing exists
//! (and the refusal when it does not, or already does), whether it is still used, whether an
//! environment is granted, and the JSON every entity is stored as. Each decides before it
//! writes: a refusal changes nothing.

use sqlx::{Row, SqliteConnection};

use super::Name;
use super::outcome::{Applied, ApplyError, Refusal};

/// Tables keyed by a single `name` column. Table names are constants, never user input.
#[derive(Clone, Copy)]
pub(super) enum Table {
    DataCenters,
    Clusters,
    Environments,
    Tenants,
    Tokens,
}

impl Table {
    fn sql_name(self) -> &'static str {
        match self {
            Self::DataCenters => "data_centers",
            Self::Clusters => "clusters",
            Self::Environments => "environments",
            Self::Tenants => "tenants",
            Self::Tokens => "tokens",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Self::DataCenters => "data center",
            Self::Clusters => "cluster",
            Self::Environments => "environment",
            Self::Tenants => "tenant",
            Self::Tokens => "token",
        }
    }
}

pub(super) async fn exists(
    tx: &mut SqliteConnection,
    table: Table,
    name: &Name,
) -> sqlx::Result<bool> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE name = ?)",
        table.sql_name()
    );
    sqlx::query_scalar(&sql)
        .bind(name.as_str())
        .fetch_one(&mut *tx)
        .await
}

pub(super) async fn present(
    tx: &mut SqliteConnection,
    table: Table,
    name: &Name,
    doing: &str,
) -> Result<(), ApplyError> {
    if exists(tx, table, name).await? {
        Ok(())
    } else {
        Err(Refusal::Missing {
            doing: doing.to_owned(),
            kind: table.kind(),
            name: name.to_string(),
        }
        .into())
    }
}

/// Inserts the row of a new `name` with `sql` (an `INSERT … ON CONFLICT DO NOTHING`), or
/// refuses when the name is taken. The insert is the uniqueness check: one statement instead
/// of a lookup and an insert, and a refusal writes nothing.
pub(super) async fn insert_new(
    tx: &mut SqliteConnection,
    table: Table,
    name: &Name,
    sql: &str,
    binds: &[Option<&str>],
    doing: &str,
) -> Result<(), ApplyError> {
    let mut query = sqlx::query(sql);
    for b in binds {
        query = query.bind(*b);
    }
    if query.execute(&mut *tx).await?.rows_affected() == 0 {
        return Err(Refusal::Exists {
            doing: doing.to_owned(),
            kind: table.kind(),
            name: name.to_string(),
        }
        .into());
    }
    Ok(())
}

pub(super) async fn granted(
    tx: &mut SqliteConnection,
    tenant: &Name,
    env: &Name,
) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM grants WHERE tenant = ? AND environment = ?)")
        .bind(tenant.as_str())
        .bind(env.as_str())
        .fetch_one(&mut *tx)
        .await
}

/// Refuses unless `env` is granted to `tenant`. An environment that does not exist is not
/// granted either, and is answered the same way: a tenant's member learns nothing of
/// environments its tenant was not given (a grant's environment always exists).
pub(super) async fn must_be_granted(
    tx: &mut SqliteConnection,
    tenant: &Name,
    env: &Name,
    doing: &str,
) -> Result<(), ApplyError> {
    if granted(tx, tenant, env).await? {
        Ok(())
    } else {
        Err(Refusal::NotGranted {
            doing: doing.to_owned(),
            environment: env.to_string(),
            tenant: tenant.to_string(),
        }
        .into())
    }
}

pub(super) async fn workflow_exists(
    tx: &mut SqliteConnection,
    tenant: &Name,
    name: &Name,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM workflows WHERE tenant = ? AND name = ? AND deleted = 0)",
    )
    .bind(tenant.as_str())
    .bind(name.as_str())
    .fetch_one(&mut *tx)
    .await
}

/// The first column of every row of `sql`, sorted, for "still used by" messages.
pub(super) async fn names(
    tx: &mut SqliteConnection,
    sql: &str,
    binds: &[&Name],
) -> sqlx::Result<Vec<String>> {
    let mut query = sqlx::query(sql);
    for b in binds {
        query = query.bind(b.as_str());
    }
    let mut names: Vec<String> = query
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| row.get::<String, _>(0))
        .collect();
    names.sort();
    Ok(names)
}

pub(super) async fn delete(
    tx: &mut SqliteConnection,
    sql: &str,
    binds: &[&Name],
) -> sqlx::Result<()> {
    let mut query = sqlx::query(sql);
    for b in binds {
        query = query.bind(b.as_str());
    }
    query.execute(&mut *tx).await.map(|_| ())
}

/// Refuses when any of the `(kind, query)` queries, run with `binds`, finds a row: the thing
/// being deleted is still used, and the refusal names every user.
pub(super) async fn refuse_if_used(
    tx: &mut SqliteConnection,
    doing: &str,
    binds: &[&Name],
    users: &[(&str, &str)],
) -> Result<(), ApplyError> {
    let mut found = Vec::with_capacity(users.len());
    for (kind, sql) in users {
        found.push((*kind, names(tx, sql, binds).await?));
    }
    Ok(unused(doing, &found)?)
}

/// Refuses when any of the `(kind, names)` lists is non-empty, naming every user.
pub(super) fn unused(doing: &str, users: &[(&str, Vec<String>)]) -> Result<(), Refusal> {
    let described: Vec<String> = users
        .iter()
        .filter(|(_, names)| !names.is_empty())
        .map(|(kind, names)| {
            let plural = if names.len() == 1 { "" } else { "s" };
            let list: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            format!("{kind}{plural} {}", list.join(", "))
        })
        .collect();
    if described.is_empty() {
        Ok(())
    } else {
        Err(Refusal::InUse {
            doing: doing.to_owned(),
            users: described.join("; "),
        })
    }
}

pub(super) fn invalid(doing: &str, field: &str, problem: &str) -> ApplyError {
    Refusal::Invalid {
        doing: doing.to_owned(),
        field: field.to_owned(),
        problem: problem.to_owned(),
    }
    .into()
}

/// Whether a run in `state` (as the history stores it) has ended.
pub(super) fn is_final(state: &str) -> bool {
    meridian_domain::run::RunState::parse(state).is_some_and(|s| s.is_final())
}

/// The `definitions` counter: agents fetch their assignments again when it moves.
pub(super) async fn definitions(tx: &mut SqliteConnection) -> sqlx::Result<u64> {
    let value: Option<i64> =
        sqlx::query_scalar("SELECT value FROM counters WHERE name = 'definitions'")
            .fetch_optional(&mut *tx)
            .await?;
    Ok(value.unwrap_or(0) as u64)
}

/// Moves the `definitions` counter to log index `index`: agents fetch their assignments again.
pub(super) async fn definitions_moved(tx: &mut SqliteConnection, index: u64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO counters (name, value) VALUES ('definitions', ?) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )
    .bind(index as i64)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(super) fn subject(subject: String) -> Applied {
    Applied {
        subject,
        version: None,
        items: Vec::new(),
        detail: None,
    }
}

/// An entity as its table's `doc` column keeps it: with the version of its shape
/// (`meridian_domain::stored`), so a later build still reads it and an older one refuses it
/// by name. Read back with [`read_doc`].
pub(super) fn doc<T: serde::Serialize>(value: &T) -> String {
    meridian_domain::stored::write(value)
}

/// A `doc` column [`doc`] wrote, or one written before versions (the bare document).
pub fn read_doc<T: serde::de::DeserializeOwned>(doc: &str) -> sqlx::Result<T> {
    meridian_domain::stored::read(doc).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

pub(super) fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("model types always serialise to JSON")
}
