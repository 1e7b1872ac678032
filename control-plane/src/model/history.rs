//! Applying agents' reports to the run history, and the user's "run now" and "kill".
//!
//! Each outbox entry is decided on its own (accepted or refused for good) and is idempotent,
//! because an agent re-sends a batch whose acknowledgement it never saw:
//! - a run's *first* event from an agent (queued, started or skipped — the fire record taken)
//!   must carry an epoch of the agent's current tenure of the partition; an agent that lost
//!   the partition to another is fenced off. Later events of a run it started are accepted
//!   whatever happened to the lease since, so a run that began legitimately can finish.
//! - the same event again changes nothing; a final state is never left.
//! - a `started` from a *second* agent for the same run is not applied but counted, once per
//!   agent (`fenced_starts`, added into `starts` by the queries): the history keeps the
//!   evidence that a record ran twice. So is a `started` refused because the agent had been
//!   fenced off: it ran there all the same, typically while the agent was cut off and its
//!   lease ran out, and the agent that took the partition over may run the record again.
//! - log chunks are keyed by their byte offset.

use serde::{Deserialize, Serialize};
use sqlx::SqliteConnection;

use super::checks::{Table, json, must_be_granted, present, subject};
use super::job::{job_for, latest_workflow};
use super::outcome::{Applied, ApplyError, Context, Refusal};
pub use super::run_record::tenant_of_run;
use super::run_record::{CurrentRun, checked, current_run, not_running_on, rank};
use super::{AgentReport, Name, RunRequest};
use meridian_domain::run::{
    AttemptEvent, AttemptOutcome, LogChunk, Report, ReportItem, RunEvent, RunState,
};

/// What a report did: the entries refused for good, with why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportOutcome {
    pub refused: Vec<(u64, String)>,
    /// The definitions counter after the report (see `HeartbeatOutcome::definitions`).
    #[serde(default)]
    pub definitions: u64,
    /// Runs whose start it carried but another agent had taken (their log pieces go).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<String>,
}

pub async fn report(
    tx: &mut SqliteConnection,
    context: Context,
    report: &AgentReport,
) -> Result<Applied, ApplyError> {
    let mut outcome = ReportOutcome::default();
    let dc: Option<String> = sqlx::query_scalar("SELECT dc FROM clusters WHERE name = ?")
        .bind(report.cluster.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    match &dc {
        None => outcome.refused.extend(report.entries.iter().map(|entry| {
            let reason = format!(
                "agent `{}`: its cluster `{}` does not exist",
                report.agent, report.cluster
            );
            (entry.seq, reason)
        })),
        Some(dc) => {
            // Ordinary entries are decided in memory and written together; the rest one at
            // a time on the database (`report_batch`).
            let mut batch = super::report_batch::ReportBatch::load(tx, report).await?;
            for entry in &report.entries {
                let decided = match batch.decide(context, report, dc, &entry.report) {
                    Some(decided) => decided,
                    None => {
                        batch.write(tx).await?;
                        let decided = apply_entry(
                            tx,
                            context,
                            report,
                            dc,
                            &entry.report,
                            &mut outcome.others,
                        )
                        .await?;
                        batch.reread(tx, entry.report.item().run_id()).await?;
                        decided
                    }
                };
                if let Err(reason) = decided {
                    outcome.refused.push((entry.seq, reason));
                }
            }
            batch.write(tx).await?;
        }
    }
    // Runs that ended move their backfills on (`backfills::follow`, after this); the agent
    // fetches its schedules again at once when that moved the counter, not only at its next
    // heartbeat.
    outcome.definitions = super::checks::definitions(tx).await?;
    Ok(Applied {
        detail: Some(json(&outcome)),
        ..subject(format!(
            "report of agent {} ({} entries, {} refused)",
            report.agent,
            report.entries.len(),
            outcome.refused.len()
        ))
    })
}

/// Keeps a start that is not applied (`fenced_starts`, once per run and agent; the run
/// queries count it into `starts`). True if it was not kept already.
async fn keep_start(
    tx: &mut SqliteConnection,
    context: Context,
    agent: &str,
    epoch: u64,
    run_id: &str,
) -> Result<bool, ApplyError> {
    let kept = sqlx::query(
        "INSERT INTO fenced_starts (run_id, agent, epoch, at_ms) \
         VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(run_id)
    .bind(agent)
    .bind(epoch as i64)
    .bind(context.at_ms)
    .execute(&mut *tx)
    .await?;
    Ok(kept.rows_affected() > 0)
}

/// Decides one entry and, if accepted, applies it. `Err(reason)` is a refusal for good.
async fn apply_entry(
    tx: &mut SqliteConnection,
    context: Context,
    report: &AgentReport,
    dc: &str,
    entry: &Report,
    others: &mut Vec<String>,
) -> Result<Result<(), String>, ApplyError> {
    let Report::V1 {
        cluster,
        partition,
        epoch,
        item,
    } = entry;
    let agent = report.agent.as_str();
    // An agent acts for its own cluster, or for a cluster it is the backup of.
    if cluster != report.cluster.as_str()
        && !super::query::backs_up(tx, report.cluster.as_str(), cluster).await?
    {
        return Ok(Err(format!(
            "agent `{agent}` of cluster `{}` may not report for cluster `{cluster}`",
            report.cluster
        )));
    }
    let run = current_run(tx, item.run_id()).await?;
    match item {
        ReportItem::Run(event) => {
            // A record given back is anyone's to take again (under the partition's tenure).
            let given_back = run.as_ref().is_some_and(|r| r.state == RunState::Returned);
            // Its skip while paused, sent again after a resume handed it back to catch up,
            // is old news: it must not undo the hand-back.
            if given_back
                && event.state == RunState::Skipped
                && event.message == meridian_domain::run::PAUSED
            {
                let handed_ms: i64 =
                    sqlx::query_scalar("SELECT updated_ms FROM runs WHERE run_id = ?")
                        .bind(&event.run_id)
                        .fetch_one(&mut *tx)
                        .await?;
                if event.at_ms < handed_ms {
                    return Ok(Ok(()));
                }
            }
            let first_from_agent = given_back || run.as_ref().is_none_or(|r| r.agent.is_none());
            if let Some(schedule) = &event.schedule {
                let (fire_ms, partition) = match checked(event, schedule, *partition) {
                    Ok(checked) => checked,
                    Err(reason) => return Ok(Err(reason)),
                };
                if run.is_none()
                    && super::retire::was_retired(tx, schedule.as_str(), fire_ms).await?
                {
                    return Ok(Err(super::retire::late_copy(&event.run_id)));
                }
                let mine = !given_back
                    && run
                        .as_ref()
                        .is_some_and(|r| r.agent.as_deref() == Some(agent));
                if event.state == RunState::Returned {
                    return give_back(tx, context, agent, run.as_ref(), event).await;
                }
                // A run's first event, and its start, must come under the agent's current
                // tenure of the partition, whatever was accepted for the run before. (A start
                // already recorded, sent again, changes nothing and is not checked again.)
                let starting = event.state == RunState::Started
                    && run
                        .as_ref()
                        .is_none_or(|r| rank(r.state) < rank(RunState::Started));
                if !mine || starting {
                    let tenure: Option<(Option<String>, i64)> = sqlx::query_as(
                        "SELECT tenure_holder, tenure_epoch FROM leases \
                         WHERE cluster = ? AND partition = ?",
                    )
                    .bind(cluster)
                    .bind(i64::from(partition))
                    .fetch_optional(&mut *tx)
                    .await?;
                    let fenced = match &tenure {
                        Some((Some(holder), since)) => holder != agent || (*epoch as i64) < *since,
                        _ => true,
                    };
                    // Except a start of a run it took, stamped before its tenure's lease ran
                    // out: a start within the lease whose report came late.
                    let late = fenced
                        && mine
                        && starting
                        && started_within_ended_tenure(
                            tx,
                            cluster,
                            partition,
                            agent,
                            *epoch,
                            event.at_ms,
                        )
                        .await?;
                    // Or a record in doubt for that very tenure (the takeover waits for its
                    // reports): taken, or started before the lease's end, it is settled so.
                    let doubted = fenced
                        && !late
                        && run.is_none()
                        && in_doubt(tx, schedule.as_str(), fire_ms, agent, *epoch)
                            .await?
                            .is_some_and(|through| {
                                event.state != RunState::Started || event.at_ms < through
                            });
                    if fenced && !late && !doubted {
                        let why = format!(
                            "run `{}`: stale lease: partition {partition} of cluster \
                             `{cluster}` is no longer held by `{agent}` under epoch {epoch}",
                            event.run_id
                        );
                        if event.state == RunState::Started {
                            // Refused, but it ran: keep the evidence for the history.
                            keep_start(tx, context, agent, *epoch, &event.run_id).await?;
                            if mine {
                                started_outside_lease(tx, context, &event.run_id, &why).await?;
                            }
                        }
                        return Ok(Err(why));
                    }
                }
            } else if run.is_none() {
                return Ok(Err(format!(
                    "run `{}` was never requested from the plane",
                    event.run_id
                )));
            }
            match run {
                None => insert_run(tx, context, agent, &report.cluster, dc, *epoch, event).await?,
                Some(run) if first_from_agent || run.agent.as_deref() == Some(agent) => {
                    advance_run(tx, context, agent, &report.cluster, dc, *epoch, &run, event)
                        .await?
                }
                Some(_) => {
                    others.push(event.run_id.clone());
                    // Another agent already ran this record: keep the evidence, change nothing
                    // else. Kept with the fenced-off starts, one row per agent (counted into
                    // `starts` by the queries): a re-sent report must not count twice.
                    if event.state == RunState::Started
                        && keep_start(tx, context, agent, *epoch, &event.run_id).await?
                    {
                        sqlx::query("UPDATE runs SET updated_ms = ? WHERE run_id = ?")
                            .bind(context.at_ms)
                            .bind(&event.run_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            if let (Some(schedule), Some(fire_ms)) = (&event.schedule, event.fire_ms)
                && event.state.takes_the_record()
            {
                sqlx::query(
                    "INSERT INTO schedule_cursors (schedule_id, fire_ms) VALUES (?, ?) \
                     ON CONFLICT (schedule_id) DO UPDATE SET \
                     fire_ms = MAX(fire_ms, excluded.fire_ms)",
                )
                .bind(schedule.as_str())
                .bind(fire_ms)
                .execute(&mut *tx)
                .await?;
                // Taken (a hand-back is only ever taken by a first event): handed to nobody
                // any more.
                if first_from_agent {
                    super::doubt::taken(tx, schedule.as_str(), fire_ms).await?;
                }
            }
            Ok(Ok(()))
        }
        ReportItem::Attempt(_) | ReportItem::Log(_) => {
            // Attempts and logs belong to a run this agent has already taken.
            if let Some(refused) = not_running_on(run.as_ref(), item.run_id(), agent) {
                return Ok(Err(refused));
            }
            match item {
                ReportItem::Attempt(attempt) => record_attempt(tx, context, attempt).await?,
                ReportItem::Log(chunk) => record_log(tx, chunk).await?,
                ReportItem::Run(_) => unreachable!("matched above"),
            }
            Ok(Ok(()))
        }
    }
}

async fn insert_run(
    tx: &mut SqliteConnection,
    context: Context,
    agent: &str,
    cluster: &Name,
    dc: &str,
    epoch: u64,
    e: &RunEvent,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO runs (run_id, tenant, workflow, workflow_version, schedule, fire_ms, \
         environment, cluster, dc, state, agent, epoch, queued_ms, started_ms, finished_ms, \
         message, starts, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&e.run_id)
    .bind(&e.tenant)
    .bind(&e.workflow)
    .bind(e.workflow_version as i64)
    .bind(e.schedule.as_ref().map(|s| s.as_str()))
    .bind(e.fire_ms)
    .bind(&e.environment)
    .bind(cluster.as_str())
    .bind(dc)
    .bind(e.state.as_str())
    .bind(agent)
    .bind(epoch as i64)
    .bind((e.state == RunState::Queued).then_some(e.at_ms))
    .bind((e.state == RunState::Started).then_some(e.at_ms))
    .bind(e.state.is_final().then_some(e.at_ms))
    .bind(&e.message)
    .bind(i64::from(e.state == RunState::Started))
    .bind(context.at_ms)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Moves a run this agent owns (or is taking: a requested run-now) forward. Never leaves a
/// final state; a repeated event changes nothing.
#[allow(clippy::too_many_arguments)]
async fn advance_run(
    tx: &mut SqliteConnection,
    context: Context,
    agent: &str,
    cluster: &Name,
    dc: &str,
    epoch: u64,
    run: &CurrentRun,
    e: &RunEvent,
) -> sqlx::Result<()> {
    if run.state.is_final() || rank(e.state) <= rank(run.state) {
        return Ok(());
    }
    let column = match e.state {
        RunState::Queued => Some("queued_ms"),
        RunState::Started => Some("started_ms"),
        RunState::Requested => None,
        _ => Some("finished_ms"),
    };
    let starts = if e.state == RunState::Started && run.starts == 0 {
        1
    } else {
        run.starts
    };
    // A run-now taken by this agent: it now belongs to the agent's cluster and data center.
    let sql = format!(
        "UPDATE runs SET state = ?, agent = ?, cluster = ?, dc = ?, epoch = ?, message = ?, \
         starts = ?, updated_ms = ?{} WHERE run_id = ?",
        column.map(|c| format!(", {c} = ?")).unwrap_or_default()
    );
    let mut query = sqlx::query(&sql)
        .bind(e.state.as_str())
        .bind(agent)
        .bind(cluster.as_str())
        .bind(dc)
        .bind(epoch as i64)
        .bind(&e.message)
        .bind(starts)
        .bind(context.at_ms);
    if column.is_some() {
        query = query.bind(e.at_ms);
    }
    query.bind(&e.run_id).execute(&mut *tx).await?;
    Ok(())
}

/// Whether `agent` held `partition` of `cluster` under `epoch` in a tenure that has ended,
/// and `at_ms` is before that tenure's lease ran out.
async fn started_within_ended_tenure(
    tx: &mut SqliteConnection,
    cluster: &str,
    partition: u32,
    agent: &str,
    epoch: u64,
    at_ms: i64,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tenures WHERE cluster = ?1 AND partition = ?2 \
         AND holder = ?3 AND first_epoch <= ?4 AND last_epoch >= ?4 AND ended_ms > ?5)",
    )
    .bind(cluster)
    .bind(i64::from(partition))
    .bind(agent)
    .bind(epoch as i64)
    .bind(at_ms)
    .fetch_one(&mut *tx)
    .await
}

/// If `fire_ms` of `schedule` is in doubt for `agent`'s tenure that `epoch` belongs to: the
/// end of that range (the tenure's lease end).
async fn in_doubt(
    tx: &mut SqliteConnection,
    schedule: &str,
    fire_ms: i64,
    agent: &str,
    epoch: u64,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT through_ms FROM doubts WHERE schedule_id = ?1 AND holder = ?2 \
         AND first_epoch <= ?3 AND last_epoch >= ?3 AND after_ms < ?4 AND through_ms >= ?4",
    )
    .bind(schedule)
    .bind(agent)
    .bind(epoch as i64)
    .bind(fire_ms)
    .fetch_optional(&mut *tx)
    .await
}

/// The agent that took a run started it outside its lease: the start is refused (and kept
/// with the fenced-off starts), the run ends failed, saying so. It ran there all the same;
/// nobody else is handed the record.
async fn started_outside_lease(
    tx: &mut SqliteConnection,
    context: Context,
    run_id: &str,
    why: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE runs SET state = 'failed', finished_ms = ?, updated_ms = ?, message = ? \
         WHERE run_id = ? AND state IN ('queued', 'started')",
    )
    .bind(context.at_ms)
    .bind(context.at_ms)
    .bind(format!(
        "{why}: it started after its holder's lease ran out, and is not recorded as run here"
    ))
    .bind(run_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A record given back unstarted by the agent that took it: the run is `returned` (its start,
/// if the take reported one, undone) and the partition's holder is handed the record to fire
/// ([`super::doubt::hand`]).
async fn give_back(
    tx: &mut SqliteConnection,
    context: Context,
    agent: &str,
    run: Option<&CurrentRun>,
    e: &RunEvent,
) -> Result<Result<(), String>, ApplyError> {
    let Some(run) = run.filter(|r| r.agent.as_deref() == Some(agent)) else {
        return Ok(Err(format!(
            "run `{}` is not taken by agent `{agent}`: it has nothing to give back",
            e.run_id
        )));
    };
    match run.state {
        // The same report again.
        RunState::Returned => return Ok(Ok(())),
        RunState::Queued | RunState::Started => {}
        state => {
            return Ok(Err(format!(
                "run `{}` is {state}: it cannot be given back",
                e.run_id
            )));
        }
    }
    sqlx::query(
        "UPDATE runs SET state = 'returned', started_ms = NULL, message = ?, updated_ms = ?, \
         starts = CASE WHEN state = 'started' AND starts > 0 THEN starts - 1 ELSE starts END \
         WHERE run_id = ?",
    )
    .bind(&e.message)
    .bind(context.at_ms)
    .bind(&e.run_id)
    .execute(&mut *tx)
    .await?;
    if let (Some(schedule), Some(fire_ms)) = (&e.schedule, e.fire_ms) {
        super::doubt::hand(tx, context, schedule.as_str(), fire_ms).await?;
    }
    Ok(Ok(()))
}

async fn record_attempt(
    tx: &mut SqliteConnection,
    context: Context,
    a: &AttemptEvent,
) -> sqlx::Result<()> {
    if a.outcome == AttemptOutcome::Started {
        sqlx::query(
            "INSERT INTO task_attempts (run_id, task, attempt, outcome, started_ms, warning) \
             VALUES (?1, ?2, ?3, 'started', ?4, ?5) ON CONFLICT DO UPDATE SET warning = ?5 \
             WHERE ?5 != ''",
        )
        .bind(&a.run_id)
        .bind(&a.task)
        .bind(i64::from(a.attempt))
        .bind(a.at_ms)
        .bind(&a.warning)
        .execute(&mut *tx)
        .await?;
    } else {
        sqlx::query(
            "INSERT INTO task_attempts (run_id, task, attempt, outcome, finished_ms, exit_code, \
             message, ended_index) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (run_id, task, attempt) \
             DO UPDATE SET outcome = ?4, finished_ms = ?5, exit_code = ?6, message = ?7, \
             ended_index = CASE WHEN outcome IS ?4 AND finished_ms IS ?5 AND exit_code IS ?6 \
             AND message IS ?7 THEN ended_index ELSE ?8 END",
        )
        .bind(&a.run_id)
        .bind(&a.task)
        .bind(i64::from(a.attempt))
        .bind(a.outcome.as_str())
        .bind(a.at_ms)
        .bind(a.exit_code)
        .bind(&a.message)
        .bind(context.index as i64)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn record_log(tx: &mut SqliteConnection, chunk: &LogChunk) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO run_logs (run_id, task, attempt, offset, data) VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&chunk.run_id)
    .bind(&chunk.task)
    .bind(i64::from(chunk.attempt))
    .bind(chunk.offset as i64)
    .bind(&chunk.data)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// What "run now" gives back: the new run's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestedRun {
    pub run_id: String,
}

pub async fn request_run(
    tx: &mut SqliteConnection,
    context: Context,
    request: &RunRequest,
) -> Result<Applied, ApplyError> {
    let doing = format!(
        "running workflow `{}` of tenant `{}`",
        request.workflow, request.tenant
    );
    present(tx, Table::Tenants, &request.tenant, &doing).await?;
    let Some((version, workflow)) =
        latest_workflow(tx, request.tenant.as_str(), request.workflow.as_str()).await?
    else {
        return Err(Refusal::Missing {
            doing,
            kind: "workflow",
            name: format!("{}/{}", request.tenant, request.workflow),
        }
        .into());
    };
    let Some(environment) = request.environment.clone().or(workflow.environment.clone()) else {
        return Err(Refusal::Invalid {
            doing,
            field: "environment".into(),
            problem: "give one: the workflow has no default environment".into(),
        }
        .into());
    };
    must_be_granted(tx, &request.tenant, &environment, &doing).await?;
    let job = job_for(tx, &workflow, version, &environment).await?;
    // Derived from the log position: unique, and the same on every replica.
    let run_id = format!(
        "{}.{}@manual-{}",
        request.tenant,
        request.workflow,
        context.position()
    );
    order_run(tx, context, &run_id, &job, None).await
}

/// A requested run's row and its order to the next agent of the environment's cluster that
/// heartbeats; `rerun`: what it runs again (the first generation's id, and the tasks kept).
pub(super) async fn order_run(
    tx: &mut SqliteConnection,
    context: Context,
    run_id: &str,
    job: &meridian_domain::run::Job,
    rerun: Option<(&str, &str)>,
) -> Result<Applied, ApplyError> {
    let cluster: String = sqlx::query_scalar("SELECT cluster FROM environments WHERE name = ?")
        .bind(&job.environment)
        .fetch_one(&mut *tx)
        .await?;
    let dc: String = sqlx::query_scalar("SELECT dc FROM clusters WHERE name = ?")
        .bind(&cluster)
        .fetch_one(&mut *tx)
        .await?;
    let generation = job.rerun.as_ref().map_or(1, |r| i64::from(r.generation));
    // A re-run of a record is listed with its schedule's runs, but has no fire time of its
    // own (the job carries the record's): it sorts by when it was asked for, and its start is
    // no lateness.
    let schedule = rerun.and_then(|(first, _)| schedule_of_record(first));
    sqlx::query(
        "INSERT INTO runs (run_id, tenant, workflow, workflow_version, environment, cluster, dc, \
         state, requested_ms, updated_ms, schedule, generation, rerun_of, request_index, kept) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'requested', ?8, ?8, ?9, ?10, ?11, ?12, ?13)",
    )
    .bind(run_id)
    .bind(&job.tenant)
    .bind(&job.workflow)
    .bind(job.workflow_version as i64)
    .bind(&job.environment)
    .bind(&cluster)
    .bind(&dc)
    .bind(context.at_ms)
    .bind(schedule)
    .bind(generation)
    .bind(rerun.map(|r| r.0))
    .bind(context.index as i64)
    .bind(rerun.map(|r| r.1))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO agent_commands (kind, run_id, cluster, job, created_ms) \
         VALUES ('run_now', ?, ?, ?, ?)",
    )
    .bind(run_id)
    .bind(&cluster)
    .bind(meridian_domain::stored::write(job))
    .bind(context.at_ms)
    .execute(&mut *tx)
    .await?;
    Ok(Applied {
        detail: Some(json(&RequestedRun {
            run_id: run_id.to_owned(),
        })),
        ..subject(format!("run {run_id}"))
    })
}

/// The schedule a record's run id names (`ads.nightly@…` → `ads.nightly`); none for a
/// run-now's.
fn schedule_of_record(run_id: &str) -> Option<String> {
    let (schedule, at) = run_id.split_once('@')?;
    (!at.starts_with("manual-")).then(|| schedule.to_owned())
}

pub async fn kill_run(
    tx: &mut SqliteConnection,
    context: Context,
    run_id: &str,
) -> Result<Applied, ApplyError> {
    let doing = format!("killing run `{run_id}`");
    let Some(run) = current_run(tx, run_id).await? else {
        return Err(Refusal::Missing {
            doing,
            kind: "run",
            name: run_id.to_owned(),
        }
        .into());
    };
    if run.state.is_final() {
        return Err(Refusal::Invalid {
            doing,
            field: "state".into(),
            problem: format!("the run has already ended ({})", run.state),
        }
        .into());
    }
    match &run.agent {
        // Nobody has taken it yet (or it was given back, untouched): it ends here.
        _ if run.state == RunState::Returned => {
            sqlx::query(
                "UPDATE runs SET state = 'killed', finished_ms = ?1, updated_ms = ?1, \
                 message = 'killed after it was given back, before anyone started it' \
                 WHERE run_id = ?2",
            )
            .bind(context.at_ms)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        }
        None => {
            sqlx::query(
                "UPDATE runs SET state = 'killed', finished_ms = ?1, updated_ms = ?1, \
                 message = 'killed before an agent took it' WHERE run_id = ?2",
            )
            .bind(context.at_ms)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        }
        Some(agent) => {
            let cluster: String = sqlx::query_scalar("SELECT cluster FROM runs WHERE run_id = ?")
                .bind(run_id)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO agent_commands (kind, run_id, cluster, agent, created_ms) \
                 VALUES ('kill', ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(run_id)
            .bind(&cluster)
            .bind(agent)
            .bind(context.at_ms)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(subject(format!("run {run_id}")))
}
