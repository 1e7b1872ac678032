//! What an agent is sent to run: the [`Job`] of a workflow version in an environment — its
//! definition, the environment's variables and work directory, and the OS user the tenant's
//! tasks run as there. Built for "run now" (history) and for every schedule an agent is
//! assigned (query).

use sqlx::{Row, SqliteConnection};

use super::{Name, Workflow};
use meridian_domain::run::Job;

/// The newest version of a workflow that is not deleted.
pub async fn latest_workflow(
    tx: &mut SqliteConnection,
    tenant: &str,
    name: &str,
) -> sqlx::Result<Option<(u64, Workflow)>> {
    let row = sqlx::query(
        "SELECT version, doc FROM workflows WHERE tenant = ? AND name = ? AND deleted = 0 \
         ORDER BY version DESC LIMIT 1",
    )
    .bind(tenant)
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    row.map(|row| {
        let workflow = super::checks::read_doc(&row.get::<String, _>("doc"))?;
        Ok((row.get::<i64, _>("version") as u64, workflow))
    })
    .transpose()
}

/// Version `version` of a workflow, deleted or not (a run of it may be run again).
pub async fn workflow_version(
    tx: &mut SqliteConnection,
    tenant: &str,
    name: &str,
    version: u64,
) -> sqlx::Result<Option<Workflow>> {
    let doc: Option<String> = sqlx::query_scalar(
        "SELECT doc FROM workflows WHERE tenant = ? AND name = ? AND version = ?",
    )
    .bind(tenant)
    .bind(name)
    .bind(version as i64)
    .fetch_optional(&mut *tx)
    .await?;
    doc.map(|d| super::checks::read_doc(&d)).transpose()
}

/// The job an agent runs for `workflow` in `environment`.
pub async fn job_for(
    tx: &mut SqliteConnection,
    workflow: &Workflow,
    version: u64,
    environment: &Name,
) -> sqlx::Result<Job> {
    let doc: String = sqlx::query_scalar("SELECT doc FROM environments WHERE name = ?")
        .bind(environment.as_str())
        .fetch_one(&mut *tx)
        .await?;
    let env: super::Environment = super::checks::read_doc(&doc)?;
    Ok(Job {
        tenant: workflow.tenant.to_string(),
        workflow: workflow.name.to_string(),
        workflow_version: version,
        definition: workflow.definition.clone(),
        environment: environment.to_string(),
        os_user: env.run_as.user_for(&workflow.tenant).cloned(),
        allow_agent_user: env.run_as.allow_agent_user,
        rerun: None,
        backfill: false,
        vars: env.vars,
        work_dir: env.work_dir,
    })
}
