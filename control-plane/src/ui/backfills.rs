//! Backfills: each with a live progress bar (done, running, failed, remaining, rate), the
//! controls to pause, resume and cancel it, and the form that makes one — offered from a
//! schedule's row on the schedules page. The same commands and policy as the JSON API.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::page::{self, Layout, Signed, Viewer};
use crate::api::Api;
use crate::model::backfills::{self, BackfillRecord, BackfillState};
use crate::model::{
    Backfill, BackfillAction, BackfillControl, BackfillOrder, Command, Name, query,
};
use crate::policy::{Action, Kind, Object};

/// A backfill as its row shows it.
pub struct Row {
    pub id: String,
    pub schedule: String,
    pub range: String,
    pub state: &'static str,
    pub total: u64,
    /// Records handled (ended or dropped): the bar's value.
    pub ended: u64,
    pub done: u64,
    pub running: u64,
    pub failed: u64,
    pub remaining: u64,
    pub dropped: u64,
    /// Records per second since it began (while it runs).
    pub rate: String,
    pub by: String,
    pub may_control: bool,
    pub paused: bool,
    pub over: bool,
}

/// The form, as typed (a refused one comes back as it was).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NewForm {
    pub csrf: String,
    /// `tenant/name`.
    pub schedule: String,
    pub from: String,
    pub to: String,
    pub parallel: String,
    pub order: String,
    /// `all`: every fire time; else only the missing ones.
    pub records: String,
}

#[derive(Template)]
#[template(path = "backfills.html")]
struct BackfillsPage {
    layout: Layout,
    rows: Vec<Row>,
    /// Schedules the viewer may backfill (`tenant/name`).
    schedules: Vec<String>,
    form: NewForm,
    error: String,
    live: bool,
}

/// Schedules the form suggests at most.
const OFFERED: u32 = 1_000;

/// `GET /backfills?schedule=tenant/name&from=…&to=…`: the list, and the form prefilled.
pub async fn list(State(api): State<Api>, viewer: Viewer, Query(form): Query<NewForm>) -> Response {
    show(&api, &viewer, form, String::new(), StatusCode::OK).await
}

async fn show(
    api: &Api,
    viewer: &Viewer,
    mut form: NewForm,
    error: String,
    status: StatusCode,
) -> Response {
    let scope = viewer.scope(Kind::Run);
    let pool = api.node.state.pool();
    let built = async {
        let all = backfills::list(pool, None).await?;
        // The form offers (as suggestions) the first of the schedules the viewer may backfill.
        let controlled: Vec<Name> = query::tenants(pool)
            .await?
            .into_iter()
            .map(|t| t.name)
            .filter(|t| viewer.may(Action::Control, &Object::Run(t.clone())))
            .collect();
        let schedules = if controlled.is_empty() {
            Vec::new()
        } else {
            let offered = query::Page {
                within: Some(controlled),
                limit: Some(OFFERED),
                ..query::Page::all()
            };
            query::schedules(pool, &offered).await?
        };
        Ok::<_, sqlx::Error>((all, schedules))
    }
    .await;
    let (all, schedules) = match built {
        Ok(b) => b,
        Err(e) => return page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let now = api.clock.now_ms();
    let rows: Vec<Row> = all
        .into_iter()
        .filter(|b| scope.contains(&b.request.tenant))
        .map(|b| row(viewer, &b, now))
        .collect();
    let schedules: Vec<String> = schedules
        .into_iter()
        .map(|s| format!("{}/{}", s.tenant, s.name))
        .collect();
    if form.parallel.is_empty() {
        form.parallel = "1".into();
    }
    let live = rows.iter().any(|r| !r.over);
    page::render(
        &BackfillsPage {
            layout: Layout::for_viewer(viewer, "Backfills", "/schedules"),
            rows,
            schedules,
            form,
            error,
            live,
        },
        status,
    )
}

fn row(viewer: &Viewer, b: &BackfillRecord, now_ms: i64) -> Row {
    let p = &b.progress;
    let t = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let to = b.left_out.clamped_to.unwrap_or(b.request.to);
    let over = matches!(b.state, BackfillState::Done | BackfillState::Cancelled);
    let seconds = (b.finished_ms.unwrap_or(now_ms) - b.created_ms) as f64 / 1000.0;
    Row {
        id: b.id.clone(),
        schedule: format!("{}/{}", b.request.tenant, b.request.schedule),
        range: format!("{} to {} UTC", t(b.request.from), t(to)),
        state: match b.state {
            BackfillState::Running if b.held_by_pause => "held: its schedule is paused",
            BackfillState::Running => "running",
            BackfillState::Paused => "paused",
            BackfillState::Cancelled => "cancelled",
            BackfillState::Done => "done",
        },
        total: b.total,
        ended: p.ended() + p.dropped,
        done: p.succeeded + p.skipped,
        running: p.running,
        failed: p.failed,
        remaining: p.remaining,
        dropped: p.dropped,
        rate: if seconds >= 1.0 {
            format!("{:.1}/s", p.ended() as f64 / seconds)
        } else {
            String::new()
        },
        by: b.requested_by.clone().unwrap_or_default(),
        may_control: viewer.may(Action::Control, &Object::Run(b.request.tenant.clone())),
        paused: b.state == BackfillState::Paused,
        over,
    }
}

fn request(f: &NewForm) -> Result<Backfill, String> {
    let (tenant, schedule) = f
        .schedule
        .split_once('/')
        .ok_or_else(|| "schedule: choose one".to_owned())?;
    let name = |field: &str, v: &str| Name::new(v).map_err(|e| format!("{field}: {e}"));
    Ok(Backfill {
        tenant: name("schedule", tenant)?,
        schedule: name("schedule", schedule)?,
        from: backfills::bound("from", &f.from, false)?,
        to: backfills::bound("to", &f.to, true)?,
        parallel: f
            .parallel
            .trim()
            .parse()
            .map_err(|_| format!("parallel: `{}` is not a whole number", f.parallel))?,
        order: if f.order == "desc" {
            BackfillOrder::Desc
        } else {
            BackfillOrder::Asc
        },
        all: f.records == "all",
    })
}

/// `POST /backfills/new`.
pub async fn create(State(api): State<Api>, Signed { viewer, form }: Signed<NewForm>) -> Response {
    let refused = match request(&form) {
        Ok(b) => match api
            .propose(&viewer.caller, Command::CreateBackfill(b))
            .await
        {
            Ok(_) => return Redirect::to("/backfills").into_response(),
            Err(e) if e.status == StatusCode::NOT_FOUND || e.status == StatusCode::FORBIDDEN => {
                return page::error_page(e.status, &e.message);
            }
            Err(e) => e.message,
        },
        Err(message) => message,
    };
    show(
        &api,
        &viewer,
        form,
        refused,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

#[derive(Debug, Clone, Deserialize)]
pub struct ControlForm {
    pub csrf: String,
    pub id: String,
    pub action: String,
}

/// `POST /backfills/control`: pause, resume or cancel one.
pub async fn control(
    State(api): State<Api>,
    Signed { viewer, form }: Signed<ControlForm>,
) -> Response {
    let action = match form.action.as_str() {
        "pause" => BackfillAction::Pause,
        "resume" => BackfillAction::Resume,
        "cancel" => BackfillAction::Cancel,
        other => {
            return page::error_page(
                StatusCode::BAD_REQUEST,
                &format!("action: `{other}` is not pause, resume or cancel"),
            );
        }
    };
    let command = Command::ControlBackfill(BackfillControl {
        id: form.id,
        action,
    });
    match api.propose(&viewer.caller, command).await {
        Ok(_) => Redirect::to("/backfills").into_response(),
        Err(e) => page::error_page(e.status, &e.message),
    }
}
