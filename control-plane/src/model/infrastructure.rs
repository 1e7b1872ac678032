//! Data centers, clusters and environments: created, changed in place (never moved: a cluster
//! keeps its data center and partition count, an environment its cluster) and deleted once
//! nothing uses them.

use sqlx::SqliteConnection;

use super::checks::{
    Table, delete, doc, insert_new, invalid, present, read_doc, refuse_if_used, subject,
};
use super::outcome::{Applied, ApplyError, Refusal};
use super::{Cluster, DataCenter, Environment, Name};

pub(super) async fn create_data_center(
    tx: &mut SqliteConnection,
    dc: &DataCenter,
) -> Result<Applied, ApplyError> {
    let doing = format!("creating data center `{}`", dc.name);
    insert_new(
        tx,
        Table::DataCenters,
        &dc.name,
        "INSERT INTO data_centers (name, doc) VALUES (?, ?) ON CONFLICT DO NOTHING",
        &[Some(dc.name.as_str()), Some(&doc(dc))],
        &doing,
    )
    .await?;
    Ok(subject(format!("data center {}", dc.name)))
}

pub(super) async fn update_data_center(
    tx: &mut SqliteConnection,
    dc: &DataCenter,
) -> Result<Applied, ApplyError> {
    let doing = format!("updating data center `{}`", dc.name);
    present(tx, Table::DataCenters, &dc.name, &doing).await?;
    sqlx::query("UPDATE data_centers SET doc = ? WHERE name = ?")
        .bind(doc(dc))
        .bind(dc.name.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(subject(format!("data center {}", dc.name)))
}

pub(super) async fn delete_data_center(
    tx: &mut SqliteConnection,
    name: &Name,
) -> Result<Applied, ApplyError> {
    let doing = format!("deleting data center `{name}`");
    present(tx, Table::DataCenters, name, &doing).await?;
    refuse_if_used(
        tx,
        &doing,
        &[name],
        &[("cluster", "SELECT name FROM clusters WHERE dc = ?")],
    )
    .await?;
    delete(tx, "DELETE FROM data_centers WHERE name = ?", &[name]).await?;
    Ok(subject(format!("data center {name}")))
}

pub(super) async fn create_cluster(
    tx: &mut SqliteConnection,
    c: &Cluster,
) -> Result<Applied, ApplyError> {
    let doing = format!("creating cluster `{}`", c.name);
    present(tx, Table::DataCenters, &c.dc, &doing).await?;
    check_cluster(tx, c, &doing).await?;
    insert_new(
        tx,
        Table::Clusters,
        &c.name,
        "INSERT INTO clusters (name, dc, backup, doc) VALUES (?, ?, ?, ?) \
         ON CONFLICT DO NOTHING",
        &[
            Some(c.name.as_str()),
            Some(c.dc.as_str()),
            c.backup.as_ref().map(Name::as_str),
            Some(&doc(c)),
        ],
        &doing,
    )
    .await?;
    Ok(subject(format!("cluster {}", c.name)))
}

pub(super) async fn update_cluster(
    tx: &mut SqliteConnection,
    c: &Cluster,
) -> Result<Applied, ApplyError> {
    let doing = format!("updating cluster `{}`", c.name);
    let stored: Option<String> = sqlx::query_scalar("SELECT doc FROM clusters WHERE name = ?")
        .bind(c.name.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let Some(stored) = stored else {
        return Err(Refusal::Missing {
            doing,
            kind: "cluster",
            name: c.name.to_string(),
        }
        .into());
    };
    let was: super::Cluster = read_doc(&stored)?;
    if was.dc != c.dc {
        // Its agents are in that data center; another place is another cluster.
        return Err(invalid(
            &doing,
            "dc",
            &format!(
                "a cluster stays in its data center (`{}`); create a cluster in `{}` \
                 instead",
                was.dc, c.dc
            ),
        ));
    }
    if was.partitions != c.partitions {
        // Its schedules are hashed into that many partitions, and leased by them.
        return Err(invalid(
            &doing,
            "partitions",
            &format!(
                "fixed when the cluster was created ({}): its schedules are placed and \
                 leased by that count",
                was.partitions
            ),
        ));
    }
    check_cluster(tx, c, &doing).await?;
    sqlx::query("UPDATE clusters SET backup = ?, doc = ? WHERE name = ?")
        .bind(c.backup.as_ref().map(Name::as_str))
        .bind(doc(c))
        .bind(c.name.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(subject(format!("cluster {}", c.name)))
}

pub(super) async fn delete_cluster(
    tx: &mut SqliteConnection,
    name: &Name,
) -> Result<Applied, ApplyError> {
    let doing = format!("deleting cluster `{name}`");
    present(tx, Table::Clusters, name, &doing).await?;
    refuse_if_used(
        tx,
        &doing,
        &[name],
        &[
            (
                "environment",
                "SELECT name FROM environments WHERE cluster = ?",
            ),
            (
                "cluster (as backup)",
                "SELECT name FROM clusters WHERE backup = ?",
            ),
        ],
    )
    .await?;
    delete(tx, "DELETE FROM leases WHERE cluster = ?", &[name]).await?;
    delete(tx, "DELETE FROM clusters WHERE name = ?", &[name]).await?;
    Ok(subject(format!("cluster {name}")))
}

pub(super) async fn create_environment(
    tx: &mut SqliteConnection,
    e: &Environment,
) -> Result<Applied, ApplyError> {
    let doing = format!("creating environment `{}`", e.name);
    present(tx, Table::Clusters, &e.cluster, &doing).await?;
    check_environment(e, &doing)?;
    insert_new(
        tx,
        Table::Environments,
        &e.name,
        "INSERT INTO environments (name, cluster, doc) VALUES (?, ?, ?) \
         ON CONFLICT DO NOTHING",
        &[
            Some(e.name.as_str()),
            Some(e.cluster.as_str()),
            Some(&doc(e)),
        ],
        &doing,
    )
    .await?;
    Ok(subject(format!("environment {}", e.name)))
}

pub(super) async fn update_environment(
    tx: &mut SqliteConnection,
    e: &Environment,
) -> Result<Applied, ApplyError> {
    let doing = format!("updating environment `{}`", e.name);
    let cluster: Option<String> =
        sqlx::query_scalar("SELECT cluster FROM environments WHERE name = ?")
            .bind(e.name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    let Some(cluster) = cluster else {
        return Err(Refusal::Missing {
            doing,
            kind: "environment",
            name: e.name.to_string(),
        }
        .into());
    };
    if cluster != e.cluster.as_str() {
        // Its schedules are placed on its cluster's partitions; moving them is a new
        // environment and new schedules, not an edit.
        return Err(invalid(
            &doing,
            "cluster",
            &format!(
                "an environment stays on its cluster (`{cluster}`); create a new \
                 environment on `{}` instead",
                e.cluster
            ),
        ));
    }
    check_environment(e, &doing)?;
    sqlx::query("UPDATE environments SET doc = ? WHERE name = ?")
        .bind(doc(e))
        .bind(e.name.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(subject(format!("environment {}", e.name)))
}

pub(super) async fn delete_environment(
    tx: &mut SqliteConnection,
    name: &Name,
) -> Result<Applied, ApplyError> {
    let doing = format!("deleting environment `{name}`");
    present(tx, Table::Environments, name, &doing).await?;
    refuse_if_used(
        tx,
        &doing,
        &[name],
        &[
            (
                "grant to tenant",
                "SELECT tenant FROM grants WHERE environment = ?",
            ),
            (
                "schedule",
                "SELECT tenant || '/' || name FROM schedules WHERE environment = ?",
            ),
            (
                "workflow",
                "SELECT DISTINCT tenant || '/' || name FROM workflows \
         WHERE environment = ? AND deleted = 0",
            ),
        ],
    )
    .await?;
    delete(tx, "DELETE FROM environments WHERE name = ?", &[name]).await?;
    super::pauses::forget(tx, &super::PauseScope::Environment { name: name.clone() }).await?;
    Ok(subject(format!("environment {name}")))
}

/// What a cluster's settings must be, created or changed: a backup that is another cluster
/// that exists, partitions in range, a lease of at least a second.
async fn check_cluster(
    tx: &mut SqliteConnection,
    c: &super::Cluster,
    doing: &str,
) -> Result<(), ApplyError> {
    if let Some(backup) = &c.backup {
        if backup == &c.name {
            return Err(invalid(doing, "backup", "a cluster cannot back itself up"));
        }
        present(tx, Table::Clusters, backup, doing).await?;
    }
    if !(1..=4096).contains(&c.partitions) {
        return Err(invalid(doing, "partitions", "must be between 1 and 4096"));
    }
    if c.lease_seconds == 0 {
        return Err(invalid(doing, "lease_seconds", "must be at least 1"));
    }
    Ok(())
}

/// What a created or updated environment must satisfy (beyond its cluster existing).
fn check_environment(e: &super::Environment, doing: &str) -> Result<(), ApplyError> {
    if let Some(bad) = e.vars.keys().find(|k| !is_env_var_name(k)) {
        return Err(invalid(
            doing,
            "vars",
            &format!("`{bad}` is not a valid environment variable name"),
        ));
    }
    if let Some((field, problem)) = e.run_as.problem() {
        return Err(invalid(doing, &field, problem));
    }
    Ok(())
}

fn is_env_var_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
