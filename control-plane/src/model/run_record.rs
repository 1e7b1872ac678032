//! A run as a report meets it: its state as recorded, how far along a state is, and the
//! checks a scheduled run's event must pass whoever decides it (`history::apply_entry` on the
//! database, `report_batch` in memory).

use sqlx::{Row, SqliteConnection};

use super::Name;
use meridian_domain::run::{RunEvent, RunState};
use meridian_domain::{FireId, ScheduleId};

pub(super) struct CurrentRun {
    pub(super) state: RunState,
    pub(super) agent: Option<String>,
    pub(super) starts: i64,
}

impl CurrentRun {
    /// From a row with the columns `state`, `agent` and `starts`.
    pub(super) fn of(row: &sqlx::sqlite::SqliteRow) -> Self {
        Self {
            state: RunState::parse(row.get::<String, _>("state").as_str())
                .unwrap_or(RunState::Failed),
            agent: row.get("agent"),
            starts: row.get("starts"),
        }
    }
}

pub(super) async fn current_run(
    tx: &mut SqliteConnection,
    run_id: &str,
) -> sqlx::Result<Option<CurrentRun>> {
    let row = sqlx::query("SELECT state, agent, starts FROM runs WHERE run_id = ?")
        .bind(run_id)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(row.as_ref().map(CurrentRun::of))
}

/// How far along a state is: an event never moves a run back.
pub(super) fn rank(state: RunState) -> u8 {
    match state {
        RunState::Requested | RunState::Returned => 0,
        RunState::Queued => 1,
        RunState::Started => 2,
        RunState::Succeeded | RunState::Failed | RunState::Killed | RunState::Skipped => 3,
    }
}

/// The tenant a run belongs to, read from its id: every run id is `<tenant>.<schedule or
/// workflow>@…` (a fire record's id, or a requested run's), names cannot hold a `.`, and a run
/// whose tenant differs from its id's is never recorded. `None`: not a run id.
pub fn tenant_of_run(run_id: &str) -> Option<Name> {
    let (tenant, _) = run_id.split_once('.')?;
    Name::new(tenant).ok()
}

/// The checks a scheduled run's event must pass: a fire time in range, the id of `schedule`
/// at that time, the tenant its id names, a partition. The fire time and partition, or why
/// it is refused.
pub(super) fn checked(
    event: &RunEvent,
    schedule: &ScheduleId,
    partition: Option<u32>,
) -> Result<(i64, u32), String> {
    let Some(fire_ms) = event.fire_ms else {
        return Err(format!("run `{}`: fire_ms is missing", event.run_id));
    };
    let Some(fire_at) = chrono::DateTime::from_timestamp_millis(fire_ms) else {
        return Err(format!("run `{}`: fire_ms is out of range", event.run_id));
    };
    if FireId::derive(schedule, fire_at).as_str() != event.run_id {
        return Err(format!(
            "run `{}`: not the id of schedule `{schedule}` at {fire_ms} ms",
            event.run_id
        ));
    }
    // The run's tenant is the one its id names (what `tenant_of_run` and so the access policy
    // rely on).
    if tenant_of_run(&event.run_id).as_ref().map(Name::as_str) != Some(event.tenant.as_str()) {
        return Err(format!(
            "run `{}`: of tenant `{}`, but its id names another",
            event.run_id, event.tenant
        ));
    }
    let Some(partition) = partition else {
        return Err(format!("run `{}`: partition is missing", event.run_id));
    };
    Ok((fire_ms, partition))
}

/// Why an attempt or a log piece of `run_id` from `agent` is refused: it belongs to a run the
/// agent has taken. `None`: it has.
pub(super) fn not_running_on(
    run: Option<&CurrentRun>,
    run_id: &str,
    agent: &str,
) -> Option<String> {
    run.is_none_or(|r| r.agent.as_deref() != Some(agent))
        .then(|| format!("run `{run_id}` is not running on agent `{agent}`"))
}
