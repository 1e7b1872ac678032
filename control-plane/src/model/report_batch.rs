//! A report's ordinary entries, decided in memory and written together.
//!
//! Most of what agents report is ordinary: a run of the agent's own cluster starting under
//! the partition's current tenure, its attempts, its end. Deciding each entry with its own
//! reads and writing it with its own statements costs a dozen statements a run, each a round
//! trip to SQLite's worker thread; at thousands of runs a second on every plane node that
//! round trip, not SQLite, was the plane's limit (issue #21's ingest benchmark). So a report
//! first reads, in one statement each, what its entries need to know (their runs as they
//! are, the cluster's tenures, the schedules' retired fire times), decides each ordinary entry
//! against that view, and writes what they did at the end in a few statements (`write`).
//!
//! Anything else (a fenced-off start, a run another agent has, a hand-back, a backup
//! cluster's run, a run-now, a log piece) is decided by `history::apply_entry` as before,
//! on the database itself: what was gathered so far is written first, and the entry's run read
//! again after it. Every entry is decided exactly as `apply_entry` would decide it, in order.

use std::collections::{BTreeMap, HashMap};

use serde_json::json;
use sqlx::{Row, SqliteConnection};

use super::AgentReport;
use super::outcome::Context;
use super::run_record::{CurrentRun, checked, current_run, not_running_on, rank};
use meridian_domain::run::{AttemptEvent, AttemptOutcome, Report, ReportItem, RunEvent, RunState};

/// A run's row as the batch will leave it. For a run already in the model, `None` in a time
/// column means unchanged; for a new run, not set.
struct RunRow {
    new: bool,
    event: RunEvent,
    dc: String,
    cluster: String,
    agent: String,
    epoch: u64,
    queued_ms: Option<i64>,
    started_ms: Option<i64>,
    finished_ms: Option<i64>,
    starts: i64,
    updated_ms: i64,
}

pub(super) struct ReportBatch {
    /// Every run the report names, as it is now (`None`: not in the model).
    runs: HashMap<String, Option<CurrentRun>>,
    /// The report's cluster's partitions: their tenure's holder and first epoch.
    tenures: HashMap<u32, (Option<String>, i64)>,
    /// The newest retired fire time of each schedule the report names.
    retired: HashMap<String, i64>,
    rows: Vec<RunRow>,
    row_of: HashMap<String, usize>,
    attempts: Vec<(AttemptEvent, u64)>,
    cursors: BTreeMap<String, i64>,
    taken: Vec<(String, i64)>,
}

impl ReportBatch {
    /// Reads what `report`'s entries need to be decided.
    pub(super) async fn load(
        tx: &mut SqliteConnection,
        report: &AgentReport,
    ) -> sqlx::Result<Self> {
        let mut ids: Vec<&str> = Vec::new();
        let mut schedules: Vec<&str> = Vec::new();
        for entry in &report.entries {
            let Report::V1 { item, .. } = &entry.report;
            ids.push(item.run_id());
            if let ReportItem::Run(RunEvent {
                schedule: Some(s), ..
            }) = item
            {
                schedules.push(s.as_str());
            }
        }
        ids.sort_unstable();
        ids.dedup();
        schedules.sort_unstable();
        schedules.dedup();
        let mut runs: HashMap<String, Option<CurrentRun>> =
            ids.iter().map(|id| ((*id).to_owned(), None)).collect();
        let rows = sqlx::query(
            "SELECT run_id, state, agent, starts FROM runs \
             WHERE run_id IN (SELECT value FROM json_each(?))",
        )
        .bind(json!(ids).to_string())
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            runs.insert(row.get("run_id"), Some(CurrentRun::of(&row)));
        }
        let tenures = sqlx::query_as::<_, (i64, Option<String>, i64)>(
            "SELECT partition, tenure_holder, tenure_epoch FROM leases WHERE cluster = ?",
        )
        .bind(report.cluster.as_str())
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(p, holder, epoch)| (p as u32, (holder, epoch)))
        .collect();
        let retired = sqlx::query_as::<_, (String, i64)>(
            "SELECT schedule, fire_ms FROM retired_fires \
             WHERE schedule IN (SELECT value FROM json_each(?))",
        )
        .bind(json!(schedules).to_string())
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        Ok(Self {
            runs,
            tenures,
            retired,
            rows: Vec::new(),
            row_of: HashMap::new(),
            attempts: Vec::new(),
            cursors: BTreeMap::new(),
            taken: Vec::new(),
        })
    }

    /// Decides `entry` if it is ordinary (the refusal, or what it does gathered for
    /// [`ReportBatch::write`]); `None` when `apply_entry` must decide it on the database.
    pub(super) fn decide(
        &mut self,
        context: Context,
        report: &AgentReport,
        dc: &str,
        entry: &Report,
    ) -> Option<Result<(), String>> {
        let Report::V1 {
            cluster,
            partition,
            epoch,
            item,
        } = entry;
        let agent = report.agent.as_str();
        // A backup cluster's run: whether this agent may report for it is asked of the model.
        if cluster != report.cluster.as_str() {
            return None;
        }
        let run = self.runs.get(item.run_id())?;
        match item {
            ReportItem::Run(event) => {
                let schedule = event.schedule.as_ref()?;
                if run.as_ref().is_some_and(|r| {
                    r.state == RunState::Returned || r.agent.as_deref() != Some(agent)
                }) {
                    // Given back, taken by another agent, or a plane-made run not yet taken.
                    return None;
                }
                if event.state == RunState::Returned {
                    return None;
                }
                let (fire_ms, partition) = match checked(event, schedule, *partition) {
                    Ok(checked) => checked,
                    Err(reason) => return Some(Err(reason)),
                };
                if run.is_none()
                    && self
                        .retired
                        .get(schedule.as_str())
                        .is_some_and(|newest| fire_ms <= *newest)
                {
                    return Some(Err(super::retire::late_copy(&event.run_id)));
                }
                // From here the run is new, or this agent's own.
                let first_from_agent = run.is_none();
                let starting = event.state == RunState::Started
                    && run
                        .as_ref()
                        .is_none_or(|r| rank(r.state) < rank(RunState::Started));
                if first_from_agent || starting {
                    let fenced = match self.tenures.get(&partition) {
                        Some((Some(holder), since)) => holder != agent || (*epoch as i64) < *since,
                        _ => true,
                    };
                    if fenced {
                        return None;
                    }
                }
                self.run_event(context, report, dc, *epoch, event);
                if event.state.takes_the_record() {
                    // The newest taken fire time, as the upsert's MAX keeps it (a fire time
                    // may be before 1970: no floor at 0).
                    self.cursors
                        .entry(schedule.as_str().to_owned())
                        .and_modify(|cursor| *cursor = (*cursor).max(fire_ms))
                        .or_insert(fire_ms);
                    if first_from_agent {
                        self.taken.push((schedule.as_str().to_owned(), fire_ms));
                    }
                }
                Some(Ok(()))
            }
            ReportItem::Attempt(attempt) => {
                if let Some(refused) = not_running_on(run.as_ref(), &attempt.run_id, agent) {
                    return Some(Err(refused));
                }
                self.attempts.push((attempt.clone(), context.index));
                Some(Ok(()))
            }
            ReportItem::Log(_) => None,
        }
    }

    /// A run event of this agent's: the run's row made, or moved on (as `insert_run` and
    /// `advance_run` would).
    fn run_event(
        &mut self,
        context: Context,
        report: &AgentReport,
        dc: &str,
        epoch: u64,
        e: &RunEvent,
    ) {
        let current = self
            .runs
            .get_mut(&e.run_id)
            .expect("the report's runs are read");
        let Some(run) = current else {
            let started = e.state == RunState::Started;
            *current = Some(CurrentRun {
                state: e.state,
                agent: Some(report.agent.clone()),
                starts: i64::from(started),
            });
            self.row_of.insert(e.run_id.clone(), self.rows.len());
            self.rows.push(RunRow {
                new: true,
                event: e.clone(),
                dc: dc.to_owned(),
                cluster: report.cluster.as_str().to_owned(),
                agent: report.agent.clone(),
                epoch,
                queued_ms: (e.state == RunState::Queued).then_some(e.at_ms),
                started_ms: started.then_some(e.at_ms),
                finished_ms: e.state.is_final().then_some(e.at_ms),
                starts: i64::from(started),
                updated_ms: context.at_ms,
            });
            return;
        };
        if run.state.is_final() || rank(e.state) <= rank(run.state) {
            return;
        }
        if e.state == RunState::Started && run.starts == 0 {
            run.starts = 1;
        }
        run.state = e.state;
        let starts = run.starts;
        let i = *self.row_of.entry(e.run_id.clone()).or_insert_with(|| {
            self.rows.push(RunRow {
                new: false,
                event: e.clone(),
                dc: String::new(),
                cluster: String::new(),
                agent: String::new(),
                epoch: 0,
                queued_ms: None,
                started_ms: None,
                finished_ms: None,
                starts: 0,
                updated_ms: 0,
            });
            self.rows.len() - 1
        });
        let row = &mut self.rows[i];
        row.event.state = e.state;
        row.event.message = e.message.clone();
        row.dc = dc.to_owned();
        row.cluster = report.cluster.as_str().to_owned();
        row.agent = report.agent.clone();
        row.epoch = epoch;
        row.starts = starts;
        row.updated_ms = context.at_ms;
        match e.state {
            RunState::Queued => row.queued_ms = Some(e.at_ms),
            RunState::Started => row.started_ms = Some(e.at_ms),
            RunState::Requested => {}
            _ => row.finished_ms = Some(e.at_ms),
        }
    }

    /// Writes what the entries decided so far did, in order of kind: runs, attempts, the
    /// schedules' cursors, the records taken (no longer handed).
    pub(super) async fn write(&mut self, tx: &mut SqliteConnection) -> sqlx::Result<()> {
        let (new, moved): (Vec<&RunRow>, Vec<&RunRow>) = self.rows.iter().partition(|r| r.new);
        if !new.is_empty() {
            let rows: Vec<_> = new
                .iter()
                .map(|r| {
                    let e = &r.event;
                    json!([
                        e.run_id,
                        e.tenant,
                        e.workflow,
                        e.workflow_version as i64,
                        e.schedule.as_ref().map(|s| s.as_str()),
                        e.fire_ms,
                        e.environment,
                        r.cluster,
                        r.dc,
                        e.state.as_str(),
                        r.agent,
                        r.epoch as i64,
                        r.queued_ms,
                        r.started_ms,
                        r.finished_ms,
                        e.message,
                        r.starts,
                        r.updated_ms
                    ])
                })
                .collect();
            sqlx::query(
                "INSERT INTO runs (run_id, tenant, workflow, workflow_version, schedule, fire_ms, \
                 environment, cluster, dc, state, agent, epoch, queued_ms, started_ms, \
                 finished_ms, message, starts, updated_ms) \
                 SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, \
                 value->>6, value->>7, value->>8, value->>9, value->>10, value->>11, \
                 value->>12, value->>13, value->>14, value->>15, value->>16, value->>17 \
                 FROM json_each(?) ORDER BY key",
            )
            .bind(serde_json::Value::Array(rows).to_string())
            .execute(&mut *tx)
            .await?;
        }
        if !moved.is_empty() {
            let rows: Vec<_> = moved
                .iter()
                .map(|r| {
                    json!([
                        r.event.run_id,
                        r.event.state.as_str(),
                        r.agent,
                        r.cluster,
                        r.dc,
                        r.epoch as i64,
                        r.event.message,
                        r.starts,
                        r.updated_ms,
                        r.queued_ms,
                        r.started_ms,
                        r.finished_ms
                    ])
                })
                .collect();
            sqlx::query(
                "UPDATE runs SET state = m.value->>1, agent = m.value->>2, \
                 cluster = m.value->>3, dc = m.value->>4, epoch = m.value->>5, \
                 message = m.value->>6, starts = m.value->>7, updated_ms = m.value->>8, \
                 queued_ms = COALESCE(m.value->>9, queued_ms), \
                 started_ms = COALESCE(m.value->>10, started_ms), \
                 finished_ms = COALESCE(m.value->>11, finished_ms) \
                 FROM json_each(?) AS m WHERE runs.run_id = m.value->>0",
            )
            .bind(serde_json::Value::Array(rows).to_string())
            .execute(&mut *tx)
            .await?;
        }
        if !self.attempts.is_empty() {
            let rows: Vec<_> = self
                .attempts
                .iter()
                .map(|(a, index)| {
                    let started = a.outcome == AttemptOutcome::Started;
                    json!([
                        a.run_id,
                        a.task,
                        a.attempt,
                        a.outcome.as_str(),
                        started.then_some(a.at_ms),
                        (!started).then_some(a.at_ms),
                        if started { None } else { a.exit_code },
                        if started { "" } else { a.message.as_str() },
                        if started { a.warning.as_str() } else { "" },
                        (!started).then_some(*index as i64)
                    ])
                })
                .collect();
            // As `record_attempt` does one at a time: a start adds the attempt (or only its
            // warning, if it has one); an end records how it went, its `ended_index` moved
            // only when that changed.
            sqlx::query(
                "INSERT INTO task_attempts (run_id, task, attempt, outcome, started_ms, \
                 finished_ms, exit_code, message, warning, ended_index) \
                 SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, \
                 value->>6, value->>7, value->>8, value->>9 FROM json_each(?) WHERE true \
                 ORDER BY key \
                 ON CONFLICT (run_id, task, attempt) DO UPDATE SET \
                 warning = CASE WHEN excluded.outcome = 'started' AND excluded.warning != '' \
                   THEN excluded.warning ELSE warning END, \
                 outcome = CASE WHEN excluded.outcome = 'started' THEN outcome \
                   ELSE excluded.outcome END, \
                 finished_ms = CASE WHEN excluded.outcome = 'started' THEN finished_ms \
                   ELSE excluded.finished_ms END, \
                 exit_code = CASE WHEN excluded.outcome = 'started' THEN exit_code \
                   ELSE excluded.exit_code END, \
                 message = CASE WHEN excluded.outcome = 'started' THEN message \
                   ELSE excluded.message END, \
                 ended_index = CASE WHEN excluded.outcome = 'started' THEN ended_index \
                   WHEN outcome IS excluded.outcome AND finished_ms IS excluded.finished_ms \
                   AND exit_code IS excluded.exit_code AND message IS excluded.message \
                   THEN ended_index ELSE excluded.ended_index END",
            )
            .bind(serde_json::Value::Array(rows).to_string())
            .execute(&mut *tx)
            .await?;
        }
        if !self.cursors.is_empty() {
            sqlx::query(
                "INSERT INTO schedule_cursors (schedule_id, fire_ms) \
                 SELECT key, value FROM json_each(?) WHERE true \
                 ON CONFLICT (schedule_id) DO UPDATE SET \
                 fire_ms = MAX(fire_ms, excluded.fire_ms)",
            )
            .bind(json!(self.cursors).to_string())
            .execute(&mut *tx)
            .await?;
        }
        if !self.taken.is_empty() {
            sqlx::query(
                "DELETE FROM handed WHERE (schedule_id, fire_ms) IN \
                 (SELECT value->>0, value->>1 FROM json_each(?))",
            )
            .bind(json!(self.taken).to_string())
            .execute(&mut *tx)
            .await?;
        }
        self.rows.clear();
        self.row_of.clear();
        self.attempts.clear();
        self.cursors.clear();
        self.taken.clear();
        Ok(())
    }

    /// Reads `run_id` again, after `apply_entry` decided an entry of it on the database.
    pub(super) async fn reread(
        &mut self,
        tx: &mut SqliteConnection,
        run_id: &str,
    ) -> sqlx::Result<()> {
        let run = current_run(tx, run_id).await?;
        self.runs.insert(run_id.to_owned(), run);
        Ok(())
    }
}
