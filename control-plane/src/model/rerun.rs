//! Re-running a finished run (`Rerun`), one generation further: from the model, or — for a
//! run retired to the history store (`model::retire`) — from what the proposer read there and
//! sent along ([`RetiredFamily`]).

use meridian_domain::run::RunState;
use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection};

use super::Name;
use super::checks::{invalid, must_be_granted};
use super::history::order_run;
use super::job::job_for;
use super::outcome::{Applied, ApplyError, Context, Refusal};
use super::query::RunRecord;

/// A retired run as a re-run needs it: its row, its record's fire time, the newest
/// generation of its family in the history store, and its tasks that succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredFamily {
    pub run: RunRecord,
    pub fire_ms: Option<i64>,
    pub generation: u32,
    #[serde(default)]
    pub succeeded: Vec<String>,
}

/// What a re-run starts from.
struct Original {
    tenant: String,
    workflow: String,
    workflow_version: u64,
    environment: String,
    state: String,
    rerun_of: Option<String>,
    kept: Option<String>,
}

/// Runs a finished run again, one generation further, for its own fire time and with the
/// workflow version and environment it ran with; a recovery keeps the tasks that succeeded.
pub async fn rerun(
    tx: &mut SqliteConnection,
    context: Context,
    r: &super::Rerun,
) -> Result<Applied, ApplyError> {
    let doing = if r.recover {
        format!("recovering run `{}`", r.run_id)
    } else {
        format!("re-running run `{}`", r.run_id)
    };
    let row = sqlx::query(
        "SELECT tenant, workflow, workflow_version, environment, state, rerun_of, kept \
         FROM runs WHERE run_id = ?",
    )
    .bind(&r.run_id)
    .fetch_optional(&mut *tx)
    .await?;
    let original = match (row, &r.retired) {
        (Some(row), _) => Original {
            tenant: row.get("tenant"),
            workflow: row.get("workflow"),
            workflow_version: row.get::<i64, _>("workflow_version") as u64,
            environment: row.get("environment"),
            state: row.get("state"),
            rerun_of: row.get("rerun_of"),
            kept: row.get("kept"),
        },
        // Gone from the model to the history store: as the proposer read it there.
        (None, Some(retired)) => Original {
            tenant: retired.run.tenant.clone(),
            workflow: retired.run.workflow.clone(),
            workflow_version: retired.run.workflow_version,
            environment: retired.run.environment.clone(),
            state: retired.run.state.clone(),
            rerun_of: retired.run.rerun_of.clone(),
            kept: (!retired.run.kept.is_empty())
                .then(|| serde_json::to_string(&retired.run.kept).expect("names")),
        },
        (None, None) => {
            return Err(Refusal::Missing {
                doing,
                kind: "run",
                name: r.run_id.clone(),
            }
            .into());
        }
    };
    let state = RunState::parse(&original.state).unwrap_or(RunState::Failed);
    if !state.is_final() {
        return Err(invalid(
            &doing,
            "run_id",
            &format!("the run is {state}: only a finished run is run again (kill it first)"),
        ));
    }
    if r.recover && !matches!(state, RunState::Failed | RunState::Killed) {
        return Err(invalid(
            &doing,
            "recover",
            &format!(
                "the run {state}: recovering runs a failed or killed run's tasks that did not \
                 succeed; re-run it whole instead"
            ),
        ));
    }
    let (tenant, name) = (original.tenant, original.workflow);
    let version = original.workflow_version;
    let Some(workflow) = super::job::workflow_version(tx, &tenant, &name, version).await? else {
        return Err(Refusal::Missing {
            doing,
            kind: "workflow version",
            name: format!("{tenant}/{name} version {version}"),
        }
        .into());
    };
    let environment = Name::new(original.environment)
        .map_err(|e| invalid(&doing, "environment", &e.to_string()))?;
    must_be_granted(tx, &workflow.tenant, &environment, &doing).await?;
    // Generations count from the first run: `<first>~2`, `<first>~3`, …
    let first: String = original.rerun_of.unwrap_or_else(|| r.run_id.clone());
    // One generation of a record at a time: a record's runs never overlap.
    let going: Option<String> = sqlx::query_scalar(
        "SELECT run_id FROM runs WHERE (run_id = ?1 OR rerun_of = ?1) \
         AND state NOT IN ('succeeded', 'failed', 'killed', 'skipped') LIMIT 1",
    )
    .bind(&first)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(going) = going {
        return Err(invalid(
            &doing,
            "run_id",
            &format!(
                "`{going}`, a generation of the same run, has not finished: wait for it or kill it first"
            ),
        ));
    }
    // The record's fire time is the first generation's (later ones have none of their own).
    let fire_ms: Option<i64> = sqlx::query_scalar("SELECT fire_ms FROM runs WHERE run_id = ?")
        .bind(&first)
        .fetch_optional(&mut *tx)
        .await?
        .flatten()
        .or(r.retired.as_ref().and_then(|f| f.fire_ms));
    let generation: i64 = sqlx::query_scalar::<_, Option<i64>>(
        "SELECT MAX(generation) + 1 FROM runs WHERE run_id = ?1 OR rerun_of = ?1",
    )
    .bind(&first)
    .fetch_one(&mut *tx)
    .await?
    .unwrap_or(2)
    .max(
        r.retired
            .as_ref()
            .map_or(0, |f| i64::from(f.generation) + 1),
    );
    let mut done = std::collections::BTreeSet::new();
    if r.recover {
        if let Some(kept) = original.kept {
            done.extend(serde_json::from_str::<Vec<String>>(&kept).unwrap_or_default());
        }
        let succeeded: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT task FROM task_attempts WHERE run_id = ? AND outcome = 'succeeded'",
        )
        .bind(&r.run_id)
        .fetch_all(&mut *tx)
        .await?;
        done.extend(succeeded);
        if let Some(retired) = &r.retired {
            done.extend(retired.succeeded.iter().cloned());
        }
    }
    let mut job = job_for(tx, &workflow, version, &environment).await?;
    job.rerun = Some(meridian_domain::run::RerunOf {
        fire_ms,
        generation: u32::try_from(generation).unwrap_or(u32::MAX),
        done: done.clone(),
    });
    let run_id = format!("{first}~{generation}");
    let kept = serde_json::to_string(&done).expect("names print as JSON");
    order_run(tx, context, &run_id, &job, Some((&first, &kept))).await
}
