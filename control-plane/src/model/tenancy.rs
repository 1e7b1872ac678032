//! Tenants and the environments granted to them (each grant with its limit of runs at once).

use sqlx::SqliteConnection;

use super::checks::{
    Table, delete, doc, granted, insert_new, invalid, present, refuse_if_used, subject,
};
use super::outcome::{Applied, ApplyError, Refusal};
use super::{Grant, Name, Tenant};

pub(super) async fn create_tenant(
    tx: &mut SqliteConnection,
    t: &Tenant,
) -> Result<Applied, ApplyError> {
    let doing = format!("creating tenant `{}`", t.name);
    check_tenant(t, &doing)?;
    insert_new(
        tx,
        Table::Tenants,
        &t.name,
        "INSERT INTO tenants (name, doc) VALUES (?, ?) ON CONFLICT DO NOTHING",
        &[Some(t.name.as_str()), Some(&doc(t))],
        &doing,
    )
    .await?;
    Ok(subject(format!("tenant {}", t.name)))
}

pub(super) async fn update_tenant(
    tx: &mut SqliteConnection,
    t: &Tenant,
) -> Result<Applied, ApplyError> {
    let doing = format!("updating tenant `{}`", t.name);
    check_tenant(t, &doing)?;
    present(tx, Table::Tenants, &t.name, &doing).await?;
    sqlx::query("UPDATE tenants SET doc = ? WHERE name = ?")
        .bind(doc(t))
        .bind(t.name.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(subject(format!("tenant {}", t.name)))
}

fn check_tenant(t: &Tenant, doing: &str) -> Result<(), ApplyError> {
    if t.log_retention_days == Some(0) {
        return Err(invalid(doing, "log_retention_days", "must be at least 1"));
    }
    if t.history_retention_days == Some(0) {
        return Err(invalid(
            doing,
            "history_retention_days",
            "must be at least 1",
        ));
    }
    Ok(())
}

pub(super) async fn delete_tenant(
    tx: &mut SqliteConnection,
    name: &Name,
) -> Result<Applied, ApplyError> {
    let doing = format!("deleting tenant `{name}`");
    present(tx, Table::Tenants, name, &doing).await?;
    refuse_if_used(
        tx,
        &doing,
        &[name],
        &[
            (
                "grant of environment",
                "SELECT environment FROM grants WHERE tenant = ?",
            ),
            (
                "workflow",
                "SELECT DISTINCT name FROM workflows WHERE tenant = ? AND deleted = 0",
            ),
            ("schedule", "SELECT name FROM schedules WHERE tenant = ?"),
        ],
    )
    .await?;
    delete(tx, "DELETE FROM workflows WHERE tenant = ?", &[name]).await?;
    super::access::forget_tenant(tx, name).await?;
    delete(tx, "DELETE FROM tenants WHERE name = ?", &[name]).await?;
    super::pauses::forget_tenant(tx, name).await?;
    super::backfills::forget_tenant(tx, name).await?;
    super::alerts::forget_tenant(tx, name).await?;
    Ok(subject(format!("tenant {name}")))
}

pub(super) async fn create_grant(
    tx: &mut SqliteConnection,
    g: &Grant,
) -> Result<Applied, ApplyError> {
    let doing = format!(
        "granting environment `{}` to tenant `{}`",
        g.environment, g.tenant
    );
    present(tx, Table::Tenants, &g.tenant, &doing).await?;
    present(tx, Table::Environments, &g.environment, &doing).await?;
    if g.max_concurrent_runs == 0 {
        return Err(invalid(&doing, "max_concurrent_runs", "must be at least 1"));
    }
    if granted(tx, &g.tenant, &g.environment).await? {
        return Err(Refusal::Exists {
            doing,
            kind: "grant",
            name: format!("{}/{}", g.tenant, g.environment),
        }
        .into());
    }
    sqlx::query("INSERT INTO grants (tenant, environment, doc) VALUES (?, ?, ?)")
        .bind(g.tenant.as_str())
        .bind(g.environment.as_str())
        .bind(doc(g))
        .execute(&mut *tx)
        .await?;
    Ok(subject(format!("grant {}/{}", g.tenant, g.environment)))
}

pub(super) async fn update_grant(
    tx: &mut SqliteConnection,
    g: &Grant,
) -> Result<Applied, ApplyError> {
    let doing = format!(
        "changing the grant of environment `{}` to tenant `{}`",
        g.environment, g.tenant
    );
    if g.max_concurrent_runs == 0 {
        return Err(invalid(&doing, "max_concurrent_runs", "must be at least 1"));
    }
    if !granted(tx, &g.tenant, &g.environment).await? {
        return Err(Refusal::Missing {
            doing,
            kind: "grant",
            name: format!("{}/{}", g.tenant, g.environment),
        }
        .into());
    }
    sqlx::query("UPDATE grants SET doc = ? WHERE tenant = ? AND environment = ?")
        .bind(doc(g))
        .bind(g.tenant.as_str())
        .bind(g.environment.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(subject(format!("grant {}/{}", g.tenant, g.environment)))
}

pub(super) async fn delete_grant(
    tx: &mut SqliteConnection,
    tenant: &Name,
    environment: &Name,
) -> Result<Applied, ApplyError> {
    let doing = format!("revoking environment `{environment}` from tenant `{tenant}`");
    if !granted(tx, tenant, environment).await? {
        return Err(Refusal::Missing {
            doing,
            kind: "grant",
            name: format!("{tenant}/{environment}"),
        }
        .into());
    }
    refuse_if_used(
        tx,
        &doing,
        &[tenant, environment],
        &[
            (
                "schedule",
                "SELECT name FROM schedules WHERE tenant = ? AND environment = ?",
            ),
            (
                "workflow",
                "SELECT DISTINCT name FROM workflows \
         WHERE tenant = ? AND environment = ? AND deleted = 0",
            ),
        ],
    )
    .await?;
    delete(
        tx,
        "DELETE FROM grants WHERE tenant = ? AND environment = ?",
        &[tenant, environment],
    )
    .await?;
    Ok(subject(format!("grant {tenant}/{environment}")))
}
