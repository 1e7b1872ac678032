//! What raises an alert, and how a raised event becomes a delivery.
//!
//! Events come from two places: an applied command ([`follow`]: a run ended or started late,
//! a task's attempt has a callback) and the leader's timed checks ([`check`], the `CheckAlerts`
//! command: a run past its SLA, records in doubt for a minute, an agent lost, a data center
//! unheard), which the courier proposes only when [`due`] finds something to raise.
//! Each rule raises an event once (`alert_marks`); each channel of the rule gets a delivery,
//! or a repeat joins the one waiting for the group's window.

use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection};

use super::{AlertEvent, AlertRule, owner};
use crate::model::Command;
use crate::model::checks::{json, read_doc, subject};
use crate::model::outcome::{Applied, ApplyError, Context};
use meridian_domain::run::{AttemptEvent, ReportItem, RunState};

/// A delivery holds at most this many of its grouped events (its count counts them all).
pub const GROUPED: usize = 20;

/// One event as a delivery carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Notice {
    /// `failed`, `late`, … or `task` for a task's callback.
    pub event: String,
    pub at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// What it is about: a run's id, an agent, a data center, a schedule.
    pub subject: String,
    /// One line for people (mail, chat).
    pub text: String,
    /// The facts, for programs (run id, workflow, schedule, state, agent, task, …).
    #[serde(default)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// An event some rules may want.
struct Raised {
    event: AlertEvent,
    workflow: Option<String>,
    /// The schedule's name (not its id).
    schedule: Option<String>,
    /// What repeats are grouped by: the schedule, workflow, agent or data center.
    object: String,
    /// What the rule raises once: the run and event, the agent and when it was last seen.
    key: String,
    /// Lateness of a start, for `late`.
    late_ms: Option<i64>,
    notice: Notice,
}

/// What an applied command raises, in the same log entry. Called by the processor after
/// every command; a refused item of a batch finds nothing to raise (its run did not move).
pub(in crate::model) async fn follow(
    tx: &mut SqliteConnection,
    context: Context,
    command: &Command,
) -> Result<(), ApplyError> {
    if !matches!(
        command,
        Command::AgentReport(_) | Command::KillRun { .. } | Command::Batch(_)
    ) {
        return Ok(());
    }
    // Most entries are agents' traffic: with no rule and no callback anywhere, one read and
    // nothing more per entry.
    let (rules, callbacks): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM alert_rules), EXISTS (SELECT 1 FROM task_callbacks)",
    )
    .fetch_one(&mut *tx)
    .await?;
    let wanted = Wanted { rules, callbacks };
    if rules || callbacks {
        raised_by(tx, context, command, wanted).await?;
    }
    Ok(())
}

/// What anyone may want raised: rules exist, callbacks exist.
#[derive(Clone, Copy)]
struct Wanted {
    rules: bool,
    callbacks: bool,
}

async fn raised_by(
    tx: &mut SqliteConnection,
    context: Context,
    command: &Command,
    wanted: Wanted,
) -> Result<(), ApplyError> {
    match command {
        Command::AgentReport(report) => {
            // A run's start and end often come in one report: each run is looked at once, as
            // it is after the whole report (the order is the ids', the same on every replica).
            let mut runs = std::collections::BTreeSet::new();
            for entry in &report.entries {
                let meridian_domain::run::Report::V1 { item, .. } = &entry.report;
                match item {
                    ReportItem::Run(e)
                        if wanted.rules && (e.state.is_final() || e.state == RunState::Started) =>
                    {
                        runs.insert(e.run_id.as_str());
                    }
                    ReportItem::Attempt(a) if wanted.callbacks => {
                        attempt(tx, context, report.agent.as_str(), a).await?
                    }
                    _ => {}
                }
            }
            for run in runs {
                run_seen(tx, context, run).await?;
            }
        }
        Command::KillRun { run_id } if wanted.rules => run_seen(tx, context, run_id).await?,
        Command::Batch(items) => {
            for item in items {
                Box::pin(raised_by(tx, context, item, wanted)).await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A run as it is now: late if it started late, and its end if it ended. Decided from the
/// run's row, not the event that led here (a start and an end applied in one report, a run the
/// plane itself ended); each event is raised once per rule (`alert_marks`).
async fn run_seen(
    tx: &mut SqliteConnection,
    context: Context,
    run_id: &str,
) -> Result<(), ApplyError> {
    let Some(row) = sqlx::query(
        "SELECT tenant, workflow, schedule, state, fire_ms, requested_ms, started_ms, message, \
         agent, dc, environment FROM runs WHERE run_id = ?",
    )
    .bind(run_id)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(());
    };
    let Some(state) = RunState::parse(row.get::<&str, _>("state")) else {
        return Ok(());
    };
    let tenant: String = row.get("tenant");
    // The rules that may want this run, read once for all its events.
    let rules = rules_for(tx, &tenant).await?;
    if rules.is_empty() {
        return Ok(());
    }
    let workflow: String = row.get("workflow");
    let schedule_id: Option<String> = row.get("schedule");
    let schedule = schedule_id
        .as_deref()
        .and_then(|id| id.split_once('.'))
        .map(|(_, name)| name.to_owned());
    let message: String = row.get("message");
    let mut details = serde_json::Map::new();
    details.insert("run_id".into(), run_id.into());
    details.insert("state".into(), state.as_str().into());
    details.insert("workflow".into(), workflow.clone().into());
    if let Some(s) = &schedule {
        details.insert("schedule".into(), s.clone().into());
    }
    for column in ["fire_ms", "requested_ms", "started_ms"] {
        if let Some(v) = row.get::<Option<i64>, _>(column) {
            details.insert(column.into(), v.into());
        }
    }
    for column in ["agent", "dc", "environment"] {
        if let Some(v) = row.get::<Option<String>, _>(column) {
            details.insert(column.into(), v.into());
        }
    }
    if !message.is_empty() {
        details.insert("message".into(), message.clone().into());
    }
    let object = schedule_id.unwrap_or_else(|| format!("{tenant}/{workflow}"));
    let raised = |event: AlertEvent, text: String, late_ms: Option<i64>| Raised {
        event,
        workflow: Some(workflow.clone()),
        schedule: schedule.clone(),
        object: object.clone(),
        key: format!("{run_id}:{}", event.as_str()),
        late_ms,
        notice: Notice {
            event: event.as_str().into(),
            at_ms: context.at_ms,
            tenant: Some(tenant.clone()),
            subject: run_id.to_owned(),
            text,
            details: details.clone(),
        },
    };
    let said = if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    };
    if let (Some(fire), Some(started)) = (
        row.get::<Option<i64>, _>("fire_ms"),
        row.get::<Option<i64>, _>("started_ms"),
    ) {
        let late = started - fire;
        let text = format!(
            "run {run_id} started {} late",
            meridian_domain::clock::spoken(late)
        );
        raise(
            tx,
            context,
            &rules,
            raised(AlertEvent::Late, text, Some(late)),
        )
        .await?;
    }
    match state {
        RunState::Failed => {
            raise(
                tx,
                context,
                &rules,
                raised(
                    AlertEvent::Failed,
                    format!("run {run_id} failed{said}"),
                    None,
                ),
            )
            .await?;
            // A task whose last attempt failed after a retry (not one that retried and then
            // succeeded while another task failed the run).
            let wanted = rules
                .iter()
                .any(|r| r.on.contains(&AlertEvent::RetriesExhausted));
            let retried: bool = wanted
                && sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM task_attempts t WHERE t.run_id = ?1 \
                 AND t.attempt > 1 AND t.outcome IN ('failed', 'timed_out') \
                 AND t.attempt = (SELECT MAX(u.attempt) FROM task_attempts u \
                                  WHERE u.run_id = ?1 AND u.task = t.task))",
                )
                .bind(run_id)
                .fetch_one(&mut *tx)
                .await?;
            if retried {
                let text = format!("run {run_id} failed after its retries{said}");
                raise(
                    tx,
                    context,
                    &rules,
                    raised(AlertEvent::RetriesExhausted, text, None),
                )
                .await?;
            }
        }
        RunState::Succeeded => {
            let text = format!("run {run_id} succeeded");
            raise(
                tx,
                context,
                &rules,
                raised(AlertEvent::Succeeded, text, None),
            )
            .await?;
        }
        RunState::Killed => {
            let text = format!("run {run_id} was killed{said}");
            raise(tx, context, &rules, raised(AlertEvent::Killed, text, None)).await?;
        }
        _ => {}
    }
    Ok(())
}

/// A task's attempt changed state: its callbacks, if it has any for that outcome.
async fn attempt(
    tx: &mut SqliteConnection,
    context: Context,
    agent: &str,
    a: &AttemptEvent,
) -> Result<(), ApplyError> {
    // Only the run's own agent's attempts: another's (fenced off, refused) call nobody.
    let rows = sqlx::query(
        "SELECT c.channel, r.tenant, r.workflow, r.workflow_version FROM runs r \
         JOIN task_callbacks c ON c.tenant = r.tenant AND c.workflow = r.workflow \
         AND c.version = r.workflow_version WHERE r.run_id = ? AND r.agent = ? AND c.task = ? \
         AND c.outcome = ? ORDER BY c.channel",
    )
    .bind(&a.run_id)
    .bind(agent)
    .bind(&a.task)
    .bind(a.outcome.as_str())
    .fetch_all(&mut *tx)
    .await?;
    for row in rows {
        let tenant: String = row.get("tenant");
        let channel: String = row.get("channel");
        let workflow: String = row.get("workflow");
        let mut details = serde_json::Map::new();
        details.insert("run_id".into(), a.run_id.clone().into());
        details.insert("workflow".into(), workflow.clone().into());
        details.insert(
            "workflow_version".into(),
            row.get::<i64, _>("workflow_version").into(),
        );
        details.insert("task".into(), a.task.clone().into());
        details.insert("attempt".into(), a.attempt.into());
        details.insert("outcome".into(), a.outcome.as_str().into());
        if let Some(code) = a.exit_code {
            details.insert("exit_code".into(), code.into());
        }
        if !a.message.is_empty() {
            details.insert("message".into(), a.message.clone().into());
        }
        let rule = format!("~callback/{workflow}/{}", a.task);
        let key = format!(
            "{}:{}:{}:{}",
            a.run_id,
            a.task,
            a.attempt,
            a.outcome.as_str()
        );
        if !mark(tx, context, &tenant, &rule, &key).await? {
            continue;
        }
        let notice = Notice {
            event: "task".into(),
            at_ms: a.at_ms,
            tenant: Some(tenant.clone()),
            subject: format!("{}/{}", a.run_id, a.task),
            text: format!(
                "task {} of run {} (attempt {}): {}",
                a.task,
                a.run_id,
                a.attempt,
                a.outcome.as_str()
            ),
            details,
        };
        // Callbacks are never grouped: each state change is its own call.
        let to = Target {
            owner: &tenant,
            rule: &rule,
            channel: &channel,
            event: "task",
            object: &key,
            group_ms: 0,
        };
        enqueue(tx, context, &to, &notice).await?;
    }
    Ok(())
}

/// How long records stay in doubt before a rule hears of it: a handover's doubt is settled
/// within a heartbeat or two by the old holder's report; one open this long means that holder
/// is silent and someone must settle it (`meridian in-doubt`).
pub const DOUBT_GRACE_MS: i64 = 60_000;

/// Records in doubt for longer than [`DOUBT_GRACE_MS`], of the rule's scope.
async fn open_doubts(
    conn: &mut SqliteConnection,
    rule: &AlertRule,
    now_ms: i64,
) -> sqlx::Result<Vec<Raised>> {
    let rows = sqlx::query(
        "SELECT d.schedule_id, d.holder, d.first_epoch, d.after_ms, d.through_ms, d.since_ms, \
         s.tenant, s.name, s.workflow FROM doubts d JOIN schedules s \
         ON s.tenant || '.' || s.name = d.schedule_id WHERE d.since_ms < ?1 \
         AND (?2 = '' OR s.tenant = ?2) AND (?3 IS NULL OR s.workflow = ?3) \
         AND (?4 IS NULL OR s.name = ?4) \
         ORDER BY d.schedule_id, d.holder, d.first_epoch LIMIT 100",
    )
    .bind(now_ms - DOUBT_GRACE_MS)
    .bind(owner(rule.tenant.as_ref()))
    .bind(rule.workflow.as_ref().map(|w| w.as_str()))
    .bind(rule.schedule.as_ref().map(|s| s.as_str()))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let schedule_id: String = row.get("schedule_id");
            let holder: String = row.get("holder");
            let mut details = serde_json::Map::new();
            details.insert("schedule".into(), row.get::<String, _>("name").into());
            details.insert("workflow".into(), row.get::<String, _>("workflow").into());
            details.insert("previous_holder".into(), holder.clone().into());
            details.insert("after_ms".into(), row.get::<i64, _>("after_ms").into());
            details.insert("through_ms".into(), row.get::<i64, _>("through_ms").into());
            details.insert("since_ms".into(), row.get::<i64, _>("since_ms").into());
            let tenant: String = row.get("tenant");
            Raised {
                event: AlertEvent::InDoubt,
                workflow: Some(row.get("workflow")),
                schedule: Some(row.get("name")),
                object: schedule_id.clone(),
                key: format!(
                    "{schedule_id}:{holder}:{}:in_doubt",
                    row.get::<i64, _>("first_epoch")
                ),
                late_ms: None,
                notice: Notice {
                    event: AlertEvent::InDoubt.as_str().into(),
                    at_ms: now_ms,
                    tenant: Some(tenant),
                    subject: schedule_id.clone(),
                    text: format!(
                        "records of schedule {schedule_id} are in doubt since a takeover from \
                         {holder}, who has not reported since (`meridian in-doubt`)"
                    ),
                    details,
                },
            }
        })
        .collect())
}

/// The rules that see `tenant`'s runs: its own and the federation's.
async fn rules_for(tx: &mut SqliteConnection, tenant: &str) -> sqlx::Result<Vec<AlertRule>> {
    let docs: Vec<String> = sqlx::query_scalar(
        "SELECT doc FROM alert_rules WHERE tenant = ? OR tenant = '' ORDER BY tenant, name",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    docs.iter().map(|d| read_doc(d)).collect()
}

/// Hands `raised` to each of `rules` that wants it.
async fn raise(
    tx: &mut SqliteConnection,
    context: Context,
    rules: &[AlertRule],
    raised: Raised,
) -> Result<(), ApplyError> {
    for rule in rules {
        if !rule.on.contains(&raised.event) {
            continue;
        }
        if rule.workflow.is_some()
            && rule.workflow.as_ref().map(|w| w.as_str()) != raised.workflow.as_deref()
        {
            continue;
        }
        if rule.schedule.is_some()
            && rule.schedule.as_ref().map(|s| s.as_str()) != raised.schedule.as_deref()
        {
            continue;
        }
        if raised.event == AlertEvent::Late
            && raised.late_ms.unwrap_or(0) <= rule.late_seconds.unwrap_or(0) as i64 * 1000
        {
            continue;
        }
        to_rule(tx, context, rule, &raised).await?;
    }
    Ok(())
}

/// The rule raises `raised` once: a delivery to each of its channels.
async fn to_rule(
    tx: &mut SqliteConnection,
    context: Context,
    rule: &AlertRule,
    raised: &Raised,
) -> Result<(), ApplyError> {
    let owner = owner(rule.tenant.as_ref());
    if !mark(tx, context, owner, rule.name.as_str(), &raised.key).await? {
        return Ok(());
    }
    for channel in &rule.channels {
        let to = Target {
            owner,
            rule: rule.name.as_str(),
            channel: channel.as_str(),
            event: raised.event.as_str(),
            object: &raised.object,
            group_ms: rule.group_seconds as i64 * 1000,
        };
        enqueue(tx, context, &to, &raised.notice).await?;
    }
    Ok(())
}

/// Whether `key` is new to the rule (and now marked).
async fn mark(
    tx: &mut SqliteConnection,
    context: Context,
    owner: &str,
    rule: &str,
    key: &str,
) -> sqlx::Result<bool> {
    let marked = sqlx::query(
        "INSERT INTO alert_marks (tenant, rule, key, at_ms) VALUES (?, ?, ?, ?) \
         ON CONFLICT DO NOTHING",
    )
    .bind(owner)
    .bind(rule)
    .bind(key)
    .bind(context.at_ms)
    .execute(&mut *tx)
    .await?;
    Ok(marked.rows_affected() > 0)
}

/// Where a notice goes.
struct Target<'a> {
    owner: &'a str,
    rule: &'a str,
    channel: &'a str,
    event: &'a str,
    object: &'a str,
    group_ms: i64,
}

/// A delivery of `notice` to the target's channel: joined to the one waiting out the group's
/// window, or a new one — due now, or at the end of the window when the group had one within
/// it.
async fn enqueue(
    tx: &mut SqliteConnection,
    context: Context,
    to: &Target<'_>,
    notice: &Notice,
) -> sqlx::Result<()> {
    let group = format!(
        "{}/{}/{}/{}/{}",
        to.owner, to.rule, to.channel, to.event, to.object
    );
    let waiting = sqlx::query(
        "SELECT id, count, events FROM alert_deliveries WHERE group_key = ? AND state = 'pending' \
         AND attempts = 0 AND next_ms > ? ORDER BY created_ms DESC LIMIT 1",
    )
    .bind(&group)
    .bind(context.at_ms)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = waiting {
        let mut events: Vec<Notice> = serde_json::from_str(row.get::<&str, _>("events"))
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        if events.len() < GROUPED {
            events.push(notice.clone());
        }
        sqlx::query("UPDATE alert_deliveries SET count = count + 1, events = ? WHERE id = ?")
            .bind(json(&events))
            .bind(row.get::<String, _>("id"))
            .execute(&mut *tx)
            .await?;
        return Ok(());
    }
    // The window runs from when the group's last delivery was due, so repeats go out at most
    // once per window however long they go on.
    let last: Option<i64> =
        sqlx::query_scalar("SELECT MAX(next_ms) FROM alert_deliveries WHERE group_key = ?")
            .bind(&group)
            .fetch_one(&mut *tx)
            .await?;
    let next = match last {
        Some(last) if to.group_ms > 0 && last + to.group_ms > context.at_ms => last + to.group_ms,
        _ => context.at_ms,
    };
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM alert_deliveries WHERE log_index = ?")
        .bind(context.index as i64)
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO alert_deliveries (id, log_index, tenant, rule, channel, event, group_key, \
         events, count, created_ms, next_ms, state) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, 'pending')",
    )
    .bind(format!("{}-{n}", context.index))
    .bind(context.index as i64)
    .bind(to.owner)
    .bind(to.rule)
    .bind(to.channel)
    .bind(to.event)
    .bind(&group)
    .bind(json(&vec![notice]))
    .bind(context.at_ms)
    .bind(next)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// How many timed events (SLA, agent lost, data center unheard) a check at `now_ms` would
/// raise: the courier proposes `CheckAlerts` only when there is one.
pub async fn due(conn: &mut SqliteConnection, now_ms: i64) -> sqlx::Result<usize> {
    Ok(timed(conn, now_ms).await?.len())
}

/// `CheckAlerts`: raises the timed events due at the proposal's time.
pub(in crate::model) async fn check(
    tx: &mut SqliteConnection,
    context: Context,
) -> Result<Applied, ApplyError> {
    let found = timed(tx, context.at_ms).await?;
    let n = found.len();
    for (rule, raised) in found {
        to_rule(tx, context, &rule, &raised).await?;
    }
    Ok(subject(format!("alert check ({n} raised)")))
}

/// The timed events not yet raised by their rules at `now_ms`.
async fn timed(conn: &mut SqliteConnection, now_ms: i64) -> sqlx::Result<Vec<(AlertRule, Raised)>> {
    let timed_rules: Vec<AlertRule> = super::list::<AlertRule>(conn, None)
        .await?
        .into_iter()
        .filter(|r| {
            r.on.iter().any(|e| {
                matches!(
                    e,
                    AlertEvent::Sla
                        | AlertEvent::InDoubt
                        | AlertEvent::AgentLost
                        | AlertEvent::DcUnheard
                )
            })
        })
        .collect();
    let mut found = Vec::new();
    for rule in timed_rules {
        let owner = owner(rule.tenant.as_ref()).to_owned();
        let mut candidates = Vec::new();
        if let Some(sla) = rule
            .sla_seconds
            .filter(|_| rule.on.contains(&AlertEvent::Sla))
        {
            candidates.extend(late_runs(conn, &rule, sla, now_ms).await?);
        }
        if rule.on.contains(&AlertEvent::InDoubt) {
            candidates.extend(open_doubts(conn, &rule, now_ms).await?);
        }
        if rule.on.contains(&AlertEvent::AgentLost) {
            candidates.extend(lost_agents(conn, now_ms).await?);
        }
        if let Some(silence) = rule
            .unheard_seconds
            .filter(|_| rule.on.contains(&AlertEvent::DcUnheard))
        {
            candidates.extend(unheard_dcs(conn, silence, now_ms).await?);
        }
        for raised in candidates {
            let marked: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM alert_marks WHERE tenant = ? AND rule = ? AND key = ?)",
            )
            .bind(&owner)
            .bind(rule.name.as_str())
            .bind(&raised.key)
            .fetch_one(&mut *conn)
            .await?;
            if !marked {
                found.push((rule.clone(), raised));
            }
        }
    }
    Ok(found)
}

/// Runs of the rule's scope not finished `sla` seconds after their fire (or request) time.
async fn late_runs(
    conn: &mut SqliteConnection,
    rule: &AlertRule,
    sla: u64,
    now_ms: i64,
) -> sqlx::Result<Vec<Raised>> {
    let deadline = now_ms - sla as i64 * 1000;
    let rows = sqlx::query(
        "SELECT run_id, tenant, workflow, schedule, state, COALESCE(fire_ms, requested_ms) AS due \
         FROM runs WHERE state IN ('requested', 'queued', 'started', 'returned') \
         AND COALESCE(fire_ms, requested_ms) < ?1 \
         AND (?2 = '' OR tenant = ?2) AND (?3 IS NULL OR workflow = ?3) \
         AND (?4 IS NULL OR schedule = ?2 || '.' || ?4) \
         AND NOT EXISTS (SELECT 1 FROM alert_marks m WHERE m.tenant = ?2 AND m.rule = ?5 \
                         AND m.key = runs.run_id || ':sla') \
         ORDER BY due, run_id LIMIT 100",
    )
    .bind(deadline)
    .bind(owner(rule.tenant.as_ref()))
    .bind(rule.workflow.as_ref().map(|w| w.as_str()))
    .bind(rule.schedule.as_ref().map(|s| s.as_str()))
    .bind(rule.name.as_str())
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let run_id: String = row.get("run_id");
            let tenant: String = row.get("tenant");
            let workflow: String = row.get("workflow");
            let schedule_id: Option<String> = row.get("schedule");
            let due: i64 = row.get("due");
            let mut details = serde_json::Map::new();
            details.insert("run_id".into(), run_id.clone().into());
            details.insert("state".into(), row.get::<String, _>("state").into());
            details.insert("workflow".into(), workflow.clone().into());
            details.insert("due_ms".into(), due.into());
            details.insert("sla_seconds".into(), sla.into());
            Raised {
                event: AlertEvent::Sla,
                workflow: Some(workflow.clone()),
                schedule: None,
                object: schedule_id.unwrap_or_else(|| format!("{tenant}/{workflow}")),
                key: format!("{run_id}:sla"),
                late_ms: None,
                notice: Notice {
                    event: AlertEvent::Sla.as_str().into(),
                    at_ms: now_ms,
                    tenant: Some(tenant),
                    subject: run_id.clone(),
                    text: format!(
                        "run {run_id} not finished {} after it was due",
                        meridian_domain::clock::spoken(sla as i64 * 1000)
                    ),
                    details,
                },
            }
        })
        .collect())
}

/// Agents heard of, not stopped gracefully, silent for longer than their cluster's lease.
async fn lost_agents(conn: &mut SqliteConnection, now_ms: i64) -> sqlx::Result<Vec<Raised>> {
    let rows = sqlx::query(
        "SELECT a.hostname, a.cluster, a.last_seen_ms, c.dc FROM agents a \
         JOIN clusters c ON c.name = a.cluster \
         WHERE a.gone = 0 AND a.last_seen_ms + 1000 * COALESCE(json_extract(c.doc, \
         '$.doc.lease_seconds'), json_extract(c.doc, '$.lease_seconds'), 30) < ? \
         ORDER BY a.hostname",
    )
    .bind(now_ms)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let host: String = row.get("hostname");
            let seen: i64 = row.get("last_seen_ms");
            let mut details = serde_json::Map::new();
            details.insert("agent".into(), host.clone().into());
            details.insert("cluster".into(), row.get::<String, _>("cluster").into());
            details.insert("dc".into(), row.get::<String, _>("dc").into());
            details.insert("last_seen_ms".into(), seen.into());
            Raised {
                event: AlertEvent::AgentLost,
                workflow: None,
                schedule: None,
                object: host.clone(),
                key: format!("{host}@{seen}"),
                late_ms: None,
                notice: Notice {
                    event: AlertEvent::AgentLost.as_str().into(),
                    at_ms: now_ms,
                    tenant: None,
                    subject: host.clone(),
                    text: format!(
                        "agent {host} lost: last heard {} ago",
                        meridian_domain::clock::spoken(now_ms - seen)
                    ),
                    details,
                },
            }
        })
        .collect())
}

/// Data centers none of whose agents has been heard for `silence` seconds.
async fn unheard_dcs(
    conn: &mut SqliteConnection,
    silence: u64,
    now_ms: i64,
) -> sqlx::Result<Vec<Raised>> {
    let rows = sqlx::query(
        "SELECT c.dc, MAX(a.last_seen_ms) AS seen FROM agents a \
         JOIN clusters c ON c.name = a.cluster GROUP BY c.dc HAVING MAX(a.last_seen_ms) < ? \
         ORDER BY c.dc",
    )
    .bind(now_ms - silence as i64 * 1000)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let dc: String = row.get("dc");
            let seen: i64 = row.get("seen");
            let mut details = serde_json::Map::new();
            details.insert("dc".into(), dc.clone().into());
            details.insert("last_heard_ms".into(), seen.into());
            Raised {
                event: AlertEvent::DcUnheard,
                workflow: None,
                schedule: None,
                object: dc.clone(),
                key: format!("{dc}@{seen}"),
                late_ms: None,
                notice: Notice {
                    event: AlertEvent::DcUnheard.as_str().into(),
                    at_ms: now_ms,
                    tenant: None,
                    subject: dc.clone(),
                    text: format!(
                        "data center {dc} unheard for {}",
                        meridian_domain::clock::spoken(now_ms - seen)
                    ),
                    details,
                },
            }
        })
        .collect())
}
