//! The cross-DC job analysis page: one table of runs across every data center the viewer may
//! see, filtered by tenant, data center, cluster, environment, workflow, schedule, task, state,
//! agent, fire-time range and lateness — every filter in the URL, so a view can be bookmarked
//! and shared — with counts per state for the filter, keyset pagination (never OFFSET), and
//! kill for the runs the viewer may control, several at once.
//!
//! It reads through the same query (`model::query::runs`, `run_counts`) and the same policy
//! scope as `GET /api/v1/runs`, and kills through the same command and checks as the API.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::page::{self, Layout, Signed, Time, Viewer, time};
use crate::api::Api;
use crate::model::authorize::{self, Infra};
use crate::model::{Command, Name, query};
use crate::policy::{self, Action, Decision, Kind, Object, Scope};
use meridian_domain::run::RunState;

/// Rows a page shows.
pub const PAGE: u32 = 50;

/// The states a run can be in, for the state filter.
const STATES: [&str; RunState::ALL.len()] = {
    let mut names = [""; RunState::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = RunState::ALL[i].as_str();
        i += 1;
    }
    names
};
/// The page's filters, as the URL carries them (empty fields are no filter).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Filters {
    pub tenant: String,
    pub dc: String,
    pub cluster: String,
    pub environment: String,
    pub workflow: String,
    pub schedule: String,
    pub task: String,
    pub state: String,
    pub agent: String,
    /// Fired at or after (UTC, `YYYY-MM-DDTHH:MM` or RFC 3339); empty: the last 24 hours.
    pub from: String,
    /// Fired before.
    pub to: String,
    /// Started at least this many seconds late.
    pub late: String,
    /// Keyset cursor: the page after this run.
    pub after: String,
}

fn some(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// A time as the page takes it: `2026-11-29T12:00` (a `datetime-local` input, read as UTC) or
/// RFC 3339.
fn instant(field: &str, value: &str) -> Result<Option<i64>, String> {
    let Some(v) = some(value) else {
        return Ok(None);
    };
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&v) {
        return Ok(Some(t.timestamp_millis()));
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(&v, format) {
            return Ok(Some(t.and_utc().timestamp_millis()));
        }
    }
    Err(format!(
        "{field}: `{v}` is not a time (YYYY-MM-DDTHH:MM in UTC, or RFC 3339)"
    ))
}

impl Filters {
    /// The query's filter, or what is wrong with a field (shown beside it).
    fn filter(&self, now_ms: i64) -> Result<query::RunFilter, Vec<(&'static str, String)>> {
        let mut errors = Vec::new();
        let from = instant("from", &self.from).unwrap_or_else(|e| {
            errors.push(("from", e));
            None
        });
        let to = instant("to", &self.to).unwrap_or_else(|e| {
            errors.push(("to", e));
            None
        });
        let late = match some(&self.late) {
            None => None,
            Some(v) => match v.parse::<u32>() {
                Ok(s) => Some(i64::from(s) * 1000),
                Err(_) => {
                    errors.push(("late", format!("late: `{v}` is not a number of seconds")));
                    None
                }
            },
        };
        let state = some(&self.state);
        if let Some(s) = &state
            && !STATES.contains(&s.as_str())
        {
            errors.push(("state", format!("state: `{s}` is not a run state")));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        // The default window: the last 24 hours, unless a range is given.
        let since_ms = match (from, to) {
            (None, None) => Some(now_ms - 24 * 3600 * 1000),
            (from, _) => from,
        };
        Ok(query::RunFilter {
            dc: some(&self.dc),
            cluster: some(&self.cluster),
            tenant: some(&self.tenant),
            environment: some(&self.environment),
            workflow: some(&self.workflow),
            schedule: some(&self.schedule),
            agent: some(&self.agent),
            task: some(&self.task),
            state,
            since_ms,
            until_ms: to,
            lateness_min_ms: late,
            after: some(&self.after),
            limit: Some(PAGE + 1),
            within: None,
        })
    }

    /// This view's own URL (to come back to).
    pub fn href_self(&self) -> String {
        let after = self.after.clone();
        self.href(|f| f.after = after)
    }

    /// This view's URL with `change` applied (and the cursor reset unless it sets one).
    fn href(&self, change: impl FnOnce(&mut Filters)) -> String {
        let mut next = self.clone();
        next.after.clear();
        change(&mut next);
        let pairs: Vec<(&str, &str)> = [
            ("tenant", next.tenant.as_str()),
            ("dc", &next.dc),
            ("cluster", &next.cluster),
            ("environment", &next.environment),
            ("workflow", &next.workflow),
            ("schedule", &next.schedule),
            ("task", &next.task),
            ("state", &next.state),
            ("agent", &next.agent),
            ("from", &next.from),
            ("to", &next.to),
            ("late", &next.late),
            ("after", &next.after),
        ]
        .into_iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .collect();
        let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
        if query.is_empty() {
            "/runs".into()
        } else {
            format!("/runs?{query}")
        }
    }
}

pub struct Row {
    pub run_id: String,
    /// The run's page.
    pub href: String,
    pub state: String,
    pub tenant: String,
    pub workflow: String,
    pub schedule: String,
    pub environment: String,
    pub dc: String,
    pub cluster: String,
    pub agent: String,
    pub fired: Option<Time>,
    pub started: Option<Time>,
    pub lateness: String,
    /// Started more than a minute after its fire time.
    pub late: bool,
    pub message: String,
    /// The viewer may kill it (and it is still going).
    pub killable: bool,
}

pub struct Count {
    pub state: String,
    pub n: u64,
    pub href: String,
    pub chosen: bool,
}

#[derive(Template)]
#[template(path = "runs.html")]
struct RunsPage {
    layout: Layout,
    f: Filters,
    /// Problems with the filters, beside their fields: (field, message).
    errors: Vec<(&'static str, String)>,
    counts: Vec<Count>,
    total: u64,
    all_states_href: String,
    rows: Vec<Row>,
    next_href: Option<String>,
    first_href: Option<String>,
    any_killable: bool,
    tenants: Vec<String>,
    dcs: Vec<String>,
    states: Vec<&'static str>,
}

impl RunsPage {
    fn error_for(&self, field: &str) -> String {
        self.errors
            .iter()
            .filter(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn lateness(ms: Option<i64>) -> (String, bool) {
    match ms {
        None => (String::new(), false),
        Some(ms) if ms < 1000 => (format!("{ms} ms"), false),
        Some(ms) => (format!("{:.1} s", ms as f64 / 1000.0), ms > 60_000),
    }
}

/// `GET /runs`.
pub async fn list(State(api): State<Api>, viewer: Viewer, Query(f): Query<Filters>) -> Response {
    match build(&api, &viewer, f).await {
        Ok(page) => {
            let status = if page.errors.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            };
            page::render(&page, status)
        }
        Err(e) => page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn build(api: &Api, viewer: &Viewer, f: Filters) -> sqlx::Result<RunsPage> {
    let pool = api.node.state.pool();
    let scope = viewer.scope(Kind::Run);
    let mut page = RunsPage {
        layout: Layout::for_viewer(viewer, "Runs", "/runs"),
        errors: vec![],
        counts: vec![],
        total: 0,
        all_states_href: f.href(|n| n.state.clear()),
        rows: vec![],
        next_href: None,
        first_href: None,
        any_killable: false,
        tenants: visible_tenants(pool, &scope).await?,
        dcs: visible_dcs(pool, &viewer.scope(Kind::Infrastructure)).await?,
        states: STATES.to_vec(),
        f,
    };
    if scope == Scope::Nothing {
        return Ok(page);
    }
    let mut filter = match page.f.filter(api.clock.now_ms()) {
        Ok(filter) => filter,
        Err(errors) => {
            page.errors = errors;
            return Ok(page);
        }
    };
    if let Scope::Tenants(ts) = &scope {
        filter.within = Some(ts.iter().map(Name::to_string).collect());
    }
    let counts = api.node.state.runs().run_counts(&filter).await?;
    page.total = counts.iter().map(|(_, n)| n).sum();
    page.counts = counts
        .into_iter()
        .map(|(state, n)| Count {
            href: page.f.href(|f| f.state = state.clone()),
            chosen: page.f.state == state,
            state,
            n,
        })
        .collect();
    let mut runs = api.node.state.runs().runs(&filter).await?;
    if runs.len() > PAGE as usize {
        runs.truncate(PAGE as usize);
        let cursor = runs.last().map(|r| r.cursor()).unwrap_or_default();
        page.next_href = Some(page.f.href(|f| f.after = cursor));
    }
    if !page.f.after.trim().is_empty() {
        page.first_href = Some(page.f.href(|_| {}));
    }
    page.rows = runs
        .into_iter()
        .map(|r| {
            // Ticked to be killed while it goes, or run again once it is over.
            let killable = Name::new(r.tenant.clone()).is_ok_and(|t| {
                policy::decide(viewer.principal(), Action::Control, &Object::Run(t))
                    == Decision::Allow
            });
            let (lateness, late) = lateness(r.lateness_ms);
            Row {
                fired: time(r.fire_ms.or(r.requested_ms)),
                started: time(r.started_ms),
                lateness,
                late,
                killable,
                href: super::run::href(&r.run_id),
                run_id: r.run_id,
                state: r.state,
                tenant: r.tenant,
                workflow: r.workflow,
                schedule: r.schedule.unwrap_or_default(),
                environment: r.environment,
                dc: r.dc,
                cluster: r.cluster,
                agent: r.agent.unwrap_or_default(),
                message: r.message,
            }
        })
        .collect();
    page.any_killable = page.rows.iter().any(|r| r.killable);
    Ok(page)
}

async fn visible_tenants(pool: &sqlx::SqlitePool, scope: &Scope) -> sqlx::Result<Vec<String>> {
    Ok(query::tenants(pool)
        .await?
        .into_iter()
        .filter(|t| scope.contains(&t.name))
        .map(|t| t.name.to_string())
        .collect())
}

async fn visible_dcs(pool: &sqlx::SqlitePool, scope: &Scope) -> sqlx::Result<Vec<String>> {
    let mut conn = pool.acquire().await?;
    let mut out = Vec::new();
    for dc in query::data_centers(pool).await? {
        if *scope == Scope::All
            || scope.any(&authorize::granted_to(&mut conn, Infra::DataCenter, &dc.name).await?)
        {
            out.push(dc.name.to_string());
        }
    }
    Ok(out)
}

/// One run's kill, as the result page shows it.
pub struct Killed {
    pub run_id: String,
    pub ok: bool,
    pub message: String,
}

#[derive(Template)]
#[template(path = "killed.html")]
struct KilledPage {
    layout: Layout,
    /// What was done: `Kill`, `Re-run`, `Recover`.
    title: &'static str,
    killed: Vec<Killed>,
    back: String,
}

/// `POST /runs/rerun-selected`: runs the runs ticked (`run`, repeated) again — recovered when
/// `recover` is set — each through the API's own command and checks; says what became of each.
pub async fn rerun_selected(
    State(api): State<Api>,
    Signed {
        viewer,
        form: fields,
    }: Signed,
) -> Response {
    let recover = page::value_of(&fields, "recover") == "true";
    let mut done = Vec::new();
    let mut status = StatusCode::OK;
    let mut any = false;
    for run_id in fields.iter().filter(|(k, _)| k == "run").map(|(_, v)| v) {
        let outcome = match api.node.state.runs().rerun(run_id, recover).await {
            Ok(rerun) => api.propose(&viewer.caller, Command::Rerun(rerun)).await,
            Err(e) => Err(e.into()),
        };
        done.push(Killed {
            run_id: run_id.clone(),
            ok: outcome.is_ok(),
            message: match outcome {
                Ok(reply) => {
                    any = true;
                    let new = reply
                        .detail
                        .as_ref()
                        .and_then(|d| d["run_id"].as_str())
                        .unwrap_or_default()
                        .to_owned();
                    format!("requested as {new}")
                }
                Err(e) => {
                    if !any && status == StatusCode::OK {
                        status = e.status;
                    }
                    e.message
                }
            },
        });
    }
    let back = page::local_path(&page::value_of(&fields, "back")).to_owned();
    let title = if recover { "Recover" } else { "Re-run" };
    page::render(
        &KilledPage {
            layout: Layout::for_viewer(&viewer, title, "/runs"),
            title,
            killed: done,
            back,
        },
        if any { StatusCode::OK } else { status },
    )
}

/// `POST /runs/kill`: kills the runs ticked (`run`, repeated), each through the API's own
/// command and checks, and says what happened to each.
pub async fn kill(
    State(api): State<Api>,
    Signed {
        viewer,
        form: fields,
    }: Signed,
) -> Response {
    let mut killed = Vec::new();
    // The page's status: OK if any was killed; else the refusal's (403, or 404 for a run the
    // viewer may not know of), so a refused kill is a refusal to a script as to a person.
    let mut status = StatusCode::OK;
    let mut any_killed = false;
    for run_id in fields.iter().filter(|(k, _)| k == "run").map(|(_, v)| v) {
        let outcome = api
            .propose(
                &viewer.caller,
                Command::KillRun {
                    run_id: run_id.clone(),
                },
            )
            .await;
        killed.push(Killed {
            run_id: run_id.clone(),
            ok: outcome.is_ok(),
            message: match outcome {
                Ok(_) => {
                    any_killed = true;
                    "killed: its agent stops it at its next heartbeat".into()
                }
                Err(e) => {
                    if !any_killed && status == StatusCode::OK {
                        status = e.status;
                    }
                    e.message
                }
            },
        });
    }
    let back = page::local_path(&page::value_of(&fields, "back")).to_owned();
    page::render(
        &KilledPage {
            layout: Layout::for_viewer(&viewer, "Kill", "/runs"),
            title: "Kill",
            killed,
            back,
        },
        if any_killed { StatusCode::OK } else { status },
    )
}
