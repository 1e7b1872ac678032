//! A run's page: what it is and where it ran, its DAG with each task coloured by state (a task
//! that never started says why), a Gantt chart and a table of its attempts, and each attempt's
//! log — the last 64 KiB first with "load earlier", a download of the whole, and a live tail
//! over SSE from this plane node while the run goes (the browser never talks to an agent: logs
//! reach the plane's logbooks through the agents' reports, and this node reads every member's,
//! `logs::across`). Actions: kill, run again now.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::chart::{self, Gantt};
use super::dag::{self, Dag};
use super::page::{self, Layout, Signed, Time, Viewer, time};
use crate::api::Api;
use crate::logbook::Pieces;
use crate::logs::across;
use crate::model::history::tenant_of_run;
use crate::model::query::{self, RunRecord, TaskAttempt};
use crate::model::{Command, Name, RunRequest};
use crate::policy::{Action, Object};

/// How much of each attempt's log the page shows at first, and "load earlier" adds.
pub const LOG_PAGE_BYTES: u64 = 64 * 1024;
/// How often a live tail asks the other plane nodes for pieces (those sent to this node wake
/// it at once).
const TAIL_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// States a run does not leave.
fn finished(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "killed" | "skipped")
}

/// `/runs/<id>`, with the id's characters that a path cannot hold escaped.
pub fn href(run_id: &str) -> String {
    let mut url = url::Url::parse("http://x/runs").expect("a valid base");
    url.path_segments_mut()
        .expect("a base with a path")
        .push(run_id);
    url.path().to_owned()
}

/// The run, if the viewer may see it; otherwise the 404 a run that does not exist gets.
async fn readable(api: &Api, viewer: &Viewer, run_id: &str) -> Result<RunRecord, Response> {
    // The same words whether it does not exist or is another tenant's.
    let missing = || page::error_page(StatusCode::NOT_FOUND, "No such run.");
    let Some(tenant) = tenant_of_run(run_id) else {
        return Err(missing());
    };
    if !viewer.may(Action::Read, &Object::Run(tenant)) {
        return Err(missing());
    }
    match api.node.state.runs().run(run_id).await {
        Ok(Some(run)) => Ok(run),
        Ok(None) => Err(missing()),
        Err(e) => Err(page::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
        )),
    }
}

/// Each task's state in this run: its latest attempt's outcome; for a task with none, why not
/// (`not-started`: an upstream task failed or the run ended; `waiting`: the run still goes).
fn task_states(
    dag: &mut Dag,
    definition: &meridian_domain::workflow::WorkflowDefinition,
    attempts: &[TaskAttempt],
    run_state: &str,
) {
    let mut latest: HashMap<&str, &TaskAttempt> = HashMap::new();
    for a in attempts {
        let newer = latest
            .get(a.task.as_str())
            .is_none_or(|seen| seen.attempt < a.attempt);
        if newer {
            latest.insert(&a.task, a);
        }
    }
    let deps: HashMap<&str, &Vec<String>> = definition
        .tasks
        .iter()
        .map(|t| (t.name.as_str(), &t.depends_on))
        .collect();
    // Tasks that did not succeed, directly or through what they wait for.
    let mut blocked: HashSet<String> = HashSet::new();
    if let Ok(order) = definition.topological_order() {
        for name in order {
            let failed = latest
                .get(name)
                .is_some_and(|a| matches!(a.outcome.as_str(), "failed" | "timed_out" | "killed"));
            let upstream = deps
                .get(name)
                .is_some_and(|d| d.iter().any(|d| blocked.contains(d)));
            if failed || (upstream && !latest.contains_key(name)) {
                blocked.insert(name.to_owned());
            }
        }
    }
    for node in &mut dag.nodes {
        let (state, text) = match latest.get(node.name.as_str()) {
            // Recorded by the agent as never started, with why.
            Some(a) if matches!(a.outcome.as_str(), "upstream_failed" | "not_started") => {
                ("not-started".into(), format!("not started: {}", a.message))
            }
            Some(a) => (a.outcome.replace('_', "-"), a.outcome.replace('_', " ")),
            None => {
                let upstream_failed = deps
                    .get(node.name.as_str())
                    .is_some_and(|d| d.iter().any(|d| blocked.contains(d)));
                match (upstream_failed, finished(run_state)) {
                    (true, _) => ("not-started".into(), "not started: upstream failed".into()),
                    (false, true) => (
                        "not-started".into(),
                        format!("not started: the run {run_state}"),
                    ),
                    (false, false) => ("waiting".into(), "waiting".into()),
                }
            }
        };
        node.state = state;
        node.state_text = text;
    }
}

pub struct AttemptRow {
    pub task: String,
    pub attempt: u32,
    pub outcome: String,
    pub started: Option<Time>,
    pub duration: String,
    pub exit_code: String,
    pub message: String,
    pub warning: String,
}

/// One attempt's log as the page shows it.
pub struct LogView {
    pub task: String,
    pub attempt: u32,
    /// The live tail's event for this log (`log-0`): what it appends here.
    pub event: String,
    pub text: String,
    /// "Load earlier", when the log is longer than what is shown.
    pub earlier: Option<String>,
    pub download: String,
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    layout: Layout,
    run: RunRecord,
    fired: Option<Time>,
    requested: Option<Time>,
    started: Option<Time>,
    finished: Option<Time>,
    lateness: String,
    dag: Option<Dag>,
    gantt: Gantt,
    attempts: Vec<AttemptRow>,
    logs: Vec<LogView>,
    /// Where the live tail connects (empty: the run is over).
    tail: String,
    can_kill: bool,
    can_again: bool,
    /// Finished, and the viewer controls its runs: it may be re-run (and, failed or killed,
    /// recovered).
    can_rerun: bool,
    can_recover: bool,
    workflow_href: String,
    here: String,
}

fn log_href(run_id: &str, what: &str, task: &str, attempt: u32, before: Option<i64>) -> String {
    let mut query = vec![("task", task.to_owned()), ("attempt", attempt.to_string())];
    if let Some(b) = before {
        query.push(("before", b.to_string()));
    }
    format!(
        "{}/{what}?{}",
        href(run_id),
        serde_urlencoded::to_string(query).unwrap_or_default()
    )
}

/// `GET /runs/{run_id}`.
pub async fn show(State(api): State<Api>, viewer: Viewer, Path(run_id): Path<String>) -> Response {
    let run = match readable(&api, &viewer, &run_id).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    match build(&api, &viewer, run).await {
        Ok(p) => page::render(&p, StatusCode::OK),
        Err(e) => page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn build(api: &Api, viewer: &Viewer, run: RunRecord) -> sqlx::Result<RunPage> {
    let pool = api.node.state.pool();
    let attempts = api.node.state.runs().attempts(&run.run_id).await?;
    let tenant = Name::new(run.tenant.clone()).ok();
    let workflow = match (&tenant, Name::new(run.workflow.clone())) {
        (Some(t), Ok(w)) => query::workflow(pool, t, &w, Some(run.workflow_version)).await?,
        _ => None,
    };
    let dag = workflow.map(|w| {
        let mut dag = dag::layout(&w.workflow.definition);
        task_states(&mut dag, &w.workflow.definition, &attempts, &run.state);
        dag
    });
    let mut logs = Vec::new();
    let mut seen: Vec<(String, u32, i64)> = Vec::new();
    for (i, (task, attempt)) in across::attempts(&api.node, &run.run_id)
        .await?
        .into_iter()
        .enumerate()
    {
        let Pieces { pieces, more } =
            across::tail(&api.node, &run.run_id, &task, attempt, None, LOG_PAGE_BYTES).await?;
        seen.push((
            task.clone(),
            attempt,
            pieces.last().map_or(-1, |p| p.offset),
        ));
        logs.push(LogView {
            event: format!("log-{i}"),
            earlier: more.then(|| {
                log_href(
                    &run.run_id,
                    "log",
                    &task,
                    attempt,
                    pieces.first().map(|p| p.offset),
                )
            }),
            download: log_href(&run.run_id, "log/download", &task, attempt, None),
            text: pieces.into_iter().map(|p| p.data).collect(),
            task,
            attempt,
        });
    }
    let going = !finished(&run.state);
    let now = api.clock.now_ms();
    let may = |action| {
        tenant
            .clone()
            .is_some_and(|t| viewer.may(action, &Object::Run(t)))
    };
    let tail = if going {
        let seen = serde_json::to_string(&seen).unwrap_or_default();
        format!(
            "{}/tail?{}",
            href(&run.run_id),
            serde_urlencoded::to_string([("seen", seen)]).unwrap_or_default()
        )
    } else {
        String::new()
    };
    Ok(RunPage {
        layout: Layout::for_viewer(viewer, &format!("Run {}", run.run_id), "/runs"),
        fired: time(run.fire_ms),
        requested: time(run.requested_ms),
        started: time(run.started_ms),
        finished: time(run.finished_ms),
        lateness: run.lateness_ms.map(chart::duration).unwrap_or_default(),
        gantt: chart::gantt(&attempts, now),
        attempts: attempts
            .iter()
            .map(|a| AttemptRow {
                task: a.task.clone(),
                attempt: a.attempt,
                outcome: a.outcome.clone(),
                started: time(a.started_ms),
                duration: a
                    .started_ms
                    .map(|s| chart::duration(a.finished_ms.unwrap_or(now) - s))
                    .unwrap_or_default(),
                exit_code: a.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                message: a.message.clone(),
                warning: a.warning.clone(),
            })
            .collect(),
        logs,
        tail,
        can_kill: going && may(Action::Control),
        can_again: may(Action::Control),
        can_rerun: !going && may(Action::Control),
        can_recover: matches!(run.state.as_str(), "failed" | "killed") && may(Action::Control),
        workflow_href: format!(
            "/workflows/{}/{}?version={}",
            run.tenant, run.workflow, run.workflow_version
        ),
        here: href(&run.run_id),
        dag,
        run,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LogQuery {
    task: String,
    attempt: u32,
    before: Option<i64>,
}

#[derive(Template)]
#[template(path = "log_earlier.html")]
struct Earlier {
    text: String,
    earlier: Option<String>,
}

/// `GET /runs/{run_id}/log?task=&attempt=&before=`: the 64 KiB of an attempt's log before
/// `before`, with a link to what comes before that (what "load earlier" swaps in).
pub async fn earlier(
    State(api): State<Api>,
    viewer: Viewer,
    Path(run_id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Response {
    if let Err(response) = readable(&api, &viewer, &run_id).await {
        return response;
    }
    match across::tail(
        &api.node,
        &run_id,
        &q.task,
        q.attempt,
        q.before,
        LOG_PAGE_BYTES,
    )
    .await
    {
        Ok(Pieces { pieces, more }) => page::render(
            &Earlier {
                earlier: more.then(|| {
                    log_href(
                        &run_id,
                        "log",
                        &q.task,
                        q.attempt,
                        pieces.first().map(|p| p.offset),
                    )
                }),
                text: pieces.into_iter().map(|p| p.data).collect(),
            },
            StatusCode::OK,
        ),
        Err(e) => page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `GET /runs/{run_id}/log/download?task=&attempt=`: the whole log, as a text attachment.
pub async fn download(
    State(api): State<Api>,
    viewer: Viewer,
    Path(run_id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Response {
    if let Err(response) = readable(&api, &viewer, &run_id).await {
        return response;
    }
    match across::whole(&api.node, &run_id, &q.task, q.attempt).await {
        Ok(text) => page::attachment(
            text.into_response(),
            "text/plain; charset=utf-8",
            &format!("{run_id}-{}-{}.log", q.task, q.attempt),
        ),
        Err(e) => page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TailQuery {
    /// What the page holds already: `[[task, attempt, offset of its last piece]]`, JSON.
    seen: String,
}

/// Text for the page, escaped.
#[derive(Template)]
#[template(source = "{{ text }}", ext = "html")]
struct Text<'a> {
    text: &'a str,
}

fn escaped(text: &str) -> String {
    Text { text }.render().unwrap_or_default()
}

/// `GET /runs/{run_id}/tail?seen=`: server-sent events while the run goes — `log-<i>` with
/// what the page's `i`-th log has not shown yet, `log-new` with logs of attempts begun since
/// the page loaded (each headed by its task and attempt), `state` when the run's state moves,
/// and `end` once it is over and every piece has been sent. Woken by this node applying log
/// entries (openraft's metrics) and by pieces reaching its logbook; pieces sent to other
/// plane nodes are asked for every 250 ms. Each event's id is the cursor after it, so a
/// browser that reconnects (`Last-Event-ID`) resumes where it was.
pub async fn tail(
    State(api): State<Api>,
    headers: HeaderMap,
    viewer: Viewer,
    Path(run_id): Path<String>,
    Query(q): Query<TailQuery>,
) -> Response {
    let run = match readable(&api, &viewer, &run_id).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    // A browser reconnecting after a drop says where it had got to (each event's id is the
    // cursor after it), so nothing is sent twice; a first connection starts from the page's.
    let cursor = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(&q.seen);
    let seen: Vec<(String, u32, i64)> = serde_json::from_str(cursor).unwrap_or_default();
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(Tail::new(api, run, seen, tx).run());
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The worker behind one page's live tail: ends when the run is over or the page goes away.
struct Tail {
    api: Api,
    run_id: String,
    state: String,
    /// Per log: (task, attempt, offset of the last piece sent); the page's own come first.
    seen: Vec<(String, u32, i64)>,
    on_page: usize,
    /// The attempt the `log-new` area last showed a piece of.
    last_new: Option<(String, u32)>,
    /// The last sweep read everything there was.
    settled: bool,
    tx: mpsc::Sender<Result<Event, Infallible>>,
}

impl Tail {
    fn new(
        api: Api,
        run: RunRecord,
        seen: Vec<(String, u32, i64)>,
        tx: mpsc::Sender<Result<Event, Infallible>>,
    ) -> Self {
        Self {
            api,
            run_id: run.run_id,
            state: run.state,
            on_page: seen.len(),
            seen,
            last_new: None,
            settled: true,
            tx,
        }
    }

    /// Sends one event, its id the cursor after it; false when the page has gone.
    async fn send(&self, event: &str, data: String) -> bool {
        let id = serde_json::to_string(&self.seen).unwrap_or_default();
        self.tx
            .send(Ok(Event::default().event(event).data(data).id(id)))
            .await
            .is_ok()
    }

    /// Sends every piece not sent yet; false when the page has gone. `self.settled` says
    /// whether that was everything (no plane node holding pieces left unanswered).
    async fn sweep(&mut self) -> sqlx::Result<bool> {
        self.settled = true;
        let node = self.api.node.clone();
        for (task, attempt) in across::attempts(&node, &self.run_id).await? {
            let i = match self
                .seen
                .iter()
                .position(|(t, a, _)| *t == task && *a == attempt)
            {
                Some(i) => i,
                None => {
                    self.seen.push((task.clone(), attempt, -1));
                    self.seen.len() - 1
                }
            };
            loop {
                let after = self.seen[i].2;
                let read =
                    across::after(&node, &self.run_id, &task, attempt, after, LOG_PAGE_BYTES)
                        .await?;
                for piece in read.pieces {
                    self.seen[i].2 = piece.offset;
                    let sent = if i < self.on_page {
                        self.send(&format!("log-{i}"), escaped(&piece.data)).await
                    } else {
                        let which = Some((task.clone(), attempt));
                        let head = if self.last_new != which {
                            self.last_new = which;
                            format!("── {task} #{attempt} ──\n")
                        } else {
                            String::new()
                        };
                        self.send("log-new", escaped(&format!("{head}{}", piece.data)))
                            .await
                    };
                    if !sent {
                        return Ok(false);
                    }
                }
                if !read.more || self.seen[i].2 == after {
                    self.settled &= !read.more;
                    break;
                }
            }
        }
        Ok(true)
    }

    async fn run(mut self) {
        let mut applied = self.api.node.raft.metrics();
        let mut stored = self.api.node.logbook.changed();
        loop {
            match self.sweep().await {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
            let state = match self.api.node.state.runs().run(&self.run_id).await {
                Ok(Some(run)) => run.state,
                _ => return,
            };
            if state != self.state {
                self.state = state;
                if !self.send("state", escaped(&self.state)).await {
                    return;
                }
            }
            if finished(&self.state) {
                // What arrived with the last report, then the end — unless a plane node that
                // holds pieces did not answer: wait for it.
                match self.sweep().await {
                    Ok(true) if self.settled => {
                        self.send("end", escaped(&self.state)).await;
                        return;
                    }
                    Ok(true) => {}
                    Ok(false) | Err(_) => return,
                }
            }
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return },
                changed = stored.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(TAIL_POLL) => {}
                () = self.tx.closed() => return,
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AgainForm {
    csrf: String,
    run: String,
}

#[derive(Debug, Deserialize)]
pub struct RerunForm {
    run: String,
    /// Recover (only the tasks that did not succeed) rather than re-run whole.
    #[serde(default)]
    recover: bool,
}

/// `POST /runs/rerun`: the run again for its own fire time, one generation further (or
/// recovered); then the new run's page.
pub async fn rerun(
    State(api): State<Api>,
    Signed { viewer, form: f }: Signed<RerunForm>,
) -> Response {
    let run = match readable(&api, &viewer, &f.run).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let rerun = match api.node.state.runs().rerun(&run.run_id, f.recover).await {
        Ok(rerun) => rerun,
        Err(e) => return page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    to_new_run(&api, &viewer, Command::Rerun(rerun)).await
}

/// `POST /runs/again`: a new run of the same workflow in the same environment, now; then its
/// page.
pub async fn again(
    State(api): State<Api>,

    Signed { viewer, form: f }: Signed<AgainForm>,
) -> Response {
    let run = match readable(&api, &viewer, &f.run).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let (Ok(tenant), Ok(workflow), Ok(environment)) = (
        Name::new(run.tenant.clone()),
        Name::new(run.workflow.clone()),
        Name::new(run.environment.clone()),
    ) else {
        return page::error_page(StatusCode::BAD_REQUEST, "the run names no workflow to run");
    };
    let request = RunRequest {
        tenant,
        workflow,
        environment: Some(environment),
    };
    to_new_run(&api, &viewer, Command::RequestRun(request)).await
}

/// Proposes `command`, which asks for a run (a run now, a re-run), and answers with the new
/// run's page (or the runs, if the reply names none), or the refusal.
async fn to_new_run(api: &Api, viewer: &Viewer, command: Command) -> Response {
    match api.propose(&viewer.caller, command).await {
        Ok(reply) => {
            let new = reply
                .detail
                .as_ref()
                .and_then(|d| d.get("run_id"))
                .and_then(|id| id.as_str())
                .map(href)
                .unwrap_or_else(|| "/runs".into());
            Redirect::to(&new).into_response()
        }
        Err(e) => page::error_page(e.status, &e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_domain::workflow::WorkflowDefinition;

    fn attempt(task: &str, n: u32, outcome: &str) -> TaskAttempt {
        TaskAttempt {
            task: task.into(),
            attempt: n,
            outcome: outcome.into(),
            started_ms: Some(1),
            finished_ms: Some(2),
            exit_code: None,
            message: String::new(),
            warning: String::new(),
        }
    }

    #[test]
    fn a_task_that_never_started_says_why() {
        let mut def = WorkflowDefinition::shell("extract", "true");
        let mut next = def.tasks[0].clone();
        next.name = "load".into();
        next.depends_on = vec!["extract".into()];
        let mut last = next.clone();
        last.name = "report".into();
        last.depends_on = vec!["load".into()];
        let mut side = def.tasks[0].clone();
        side.name = "side".into();
        def.tasks.extend([next, last, side]);
        let mut dag = dag::layout(&def);
        // extract failed twice (the retry is the latest); side was never reached: the run failed.
        let attempts = [
            attempt("extract", 1, "failed"),
            attempt("extract", 2, "timed_out"),
        ];
        task_states(&mut dag, &def, &attempts, "failed");
        fn state(dag: &Dag, n: &str) -> (String, String) {
            let node = dag.nodes.iter().find(|x| x.name == n).unwrap();
            (node.state.clone(), node.state_text.clone())
        }
        assert_eq!(
            state(&dag, "extract"),
            ("timed-out".into(), "timed out".into())
        );
        let upstream = (
            "not-started".to_owned(),
            "not started: upstream failed".to_owned(),
        );
        assert_eq!(state(&dag, "load"), upstream);
        assert_eq!(state(&dag, "report"), upstream);
        assert_eq!(
            state(&dag, "side"),
            ("not-started".into(), "not started: the run failed".into())
        );
        // While the run goes, a task not reached yet is waiting.
        task_states(&mut dag, &def, &attempts[..1], "started");
        assert_eq!(state(&dag, "side"), ("waiting".into(), "waiting".into()));
        // What the agent recorded as never started (attempt 0) is shown with its reason.
        let recorded = |task: &str, outcome: &str, message: &str| TaskAttempt {
            started_ms: None,
            message: message.into(),
            ..attempt(task, 0, outcome)
        };
        let attempts = [
            attempt("extract", 1, "failed"),
            recorded("load", "upstream_failed", "upstream task `extract` failed"),
            recorded(
                "side",
                "not_started",
                "the run failed first (task `extract` failed)",
            ),
        ];
        task_states(&mut dag, &def, &attempts, "failed");
        assert_eq!(
            state(&dag, "load"),
            (
                "not-started".into(),
                "not started: upstream task `extract` failed".into()
            )
        );
        assert_eq!(
            state(&dag, "side"),
            (
                "not-started".into(),
                "not started: the run failed first (task `extract` failed)".into()
            )
        );
    }

    #[test]
    fn run_ids_become_one_path_segment() {
        assert_eq!(href("ads.etl@now-12"), "/runs/ads.etl@now-12");
        assert_eq!(href("ads.x/y?z#w"), "/runs/ads.x%2Fy%3Fz%23w");
    }
}
