//! A tenant's schedules: the list with each one's next fire times, and the form that creates
//! one. The form offers only the environments granted to the tenant — each labelled with its
//! cluster and data center: the tenant's environment picker — and previews the next ten fire
//! times in the schedule's zone as the expression is typed, with the calendar's own error
//! beside the field for a bad one. Creating, editing (start and end, which the form does not
//! show, kept) and deleting go through the API's commands and checks.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use meridian_domain::{CalendarError, CatchUpPolicy, OverlapPolicy, ScheduleSpec, TakeoverPolicy};
use serde::Deserialize;

use super::page::{self, Layout, Signed, Viewer};
use crate::api::Api;
use crate::model::{Command, Name, Schedule, query};
use crate::policy::{Action, Object};

/// Fire times the list shows per schedule, and the preview shows.
const NEXT_IN_LIST: usize = 3;
const NEXT_IN_PREVIEW: usize = 10;

/// The next `n` fire times of `spec` after `now` (the plane's clock), in its zone; or the
/// calendar's error.
fn next_times(
    spec: &ScheduleSpec,
    n: usize,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<String>, CalendarError> {
    let calendar = spec.calendar()?;
    Ok(calendar
        .fire_times(now)
        .take(n)
        .map(|t| {
            t.with_timezone(&calendar.zone())
                .format("%Y-%m-%d %H:%M:%S %Z")
                .to_string()
        })
        .collect())
}

/// The form field a calendar error belongs beside.
fn field_of(e: &CalendarError) -> &'static str {
    if e.field().starts_with("time_zone") {
        "time_zone"
    } else {
        "cron"
    }
}

/// What the live preview shows: the next fire times, or the calendar's own error beside the
/// field it names (the other field's error cleared).
#[derive(Default)]
struct Preview {
    times: Vec<String>,
    cron_error: String,
    time_zone_error: String,
}

impl Preview {
    fn of(spec: &ScheduleSpec, now: chrono::DateTime<chrono::Utc>) -> Self {
        if spec.cron.trim().is_empty() {
            return Self::default();
        }
        match next_times(spec, NEXT_IN_PREVIEW, now) {
            Ok(times) => Self {
                times,
                ..Self::default()
            },
            Err(e) if field_of(&e) == "time_zone" => Self {
                time_zone_error: e.to_string(),
                ..Self::default()
            },
            Err(e) => Self {
                cron_error: e.to_string(),
                ..Self::default()
            },
        }
    }
}

pub struct Listed {
    pub tenant: String,
    pub name: String,
    pub workflow: String,
    pub environment: String,
    pub cron: String,
    pub time_zone: String,
    pub next: Vec<String>,
    /// The viewer may edit and delete it (owner or developer of its tenant).
    pub may_change: bool,
    /// `tenant=…&name=…`, for its edit link.
    pub query: String,
    /// `schedule=tenant/name`, for its backfill link.
    pub backfill_query: String,
    /// Its records in doubt after a takeover, if any.
    pub doubt: Option<Doubt>,
    /// The viewer may settle them (controls the tenant's runs), and pause and resume it.
    pub may_resolve: bool,
    /// The pauses holding it, in words (`paused since … (release 4.2)`, `held by the pause
    /// of tenant ads since …`).
    pub paused: Vec<String>,
    /// Paused itself (so a resume here lifts that pause).
    pub paused_itself: bool,
}

/// A schedule's records in doubt, as the list says them.
pub struct Doubt {
    pub records: usize,
    pub first: String,
    pub last: String,
    /// The agent that may have fired them, and when it was last heard.
    pub holder: String,
    pub last_heard: String,
    pub now_held_by: String,
}

fn at(ms: i64) -> String {
    page::time(Some(ms)).map_or_else(|| "-".into(), |t| t.text)
}

/// The list's view of every range in doubt, by schedule id (ranges of one schedule summed).
fn doubts(all: Vec<crate::model::doubt::InDoubt>) -> std::collections::HashMap<String, Doubt> {
    let mut out: std::collections::HashMap<String, Doubt> = std::collections::HashMap::new();
    for d in all {
        if d.records.is_empty() {
            continue;
        }
        let entry = out.entry(d.schedule.clone()).or_insert_with(|| Doubt {
            records: 0,
            first: at(d.records[0]),
            last: String::new(),
            holder: d.holder.clone(),
            last_heard: d.holder_last_heard_ms.map_or("never".into(), at),
            now_held_by: d.current_holder.clone().unwrap_or_else(|| "nobody".into()),
        });
        entry.records += d.records.len();
        entry.last = at(*d.records.last().expect("not empty"));
    }
    out
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct SchedulesPage {
    layout: Layout,
    schedules: Vec<Listed>,
    can_create: bool,
    first_href: Option<String>,
    next_href: Option<String>,
}

/// Schedules a page of the list shows.
const LIST_PAGE: u32 = 100;

/// `GET /schedules?tenant=&after=`: a page of the schedules the viewer may see.
pub async fn list(
    State(api): State<Api>,
    viewer: Viewer,
    Query(paging): Query<page::Paging>,
) -> Response {
    let asked = match paging.page(&viewer, LIST_PAGE) {
        Ok(asked) => asked,
        Err(wrong) => return page::error_page(StatusCode::BAD_REQUEST, &wrong),
    };
    let built = async {
        let schedules = query::schedules(api.node.state.pool(), &asked).await?;
        let can_create = !page::writable_tenants(&api, &viewer).await?.is_empty();
        let mut conn = api.node.state.pool().acquire().await?;
        let in_doubt = crate::model::doubt::list(&mut conn, None).await?;
        let pauses = crate::model::pauses::all(&mut conn).await?;
        Ok::<_, sqlx::Error>((schedules, can_create, doubts(in_doubt), pauses))
    }
    .await;
    let (schedules, can_create, mut in_doubt, pauses) = match built {
        Ok(b) => b,
        Err(e) => return page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let (first_href, next_href) = paging.links(
        "/schedules",
        schedules.len(),
        LIST_PAGE,
        schedules.last().map(|s| format!("{}/{}", s.tenant, s.name)),
    );
    let schedules = schedules
        .into_iter()
        .map(|s| Listed {
            paused: crate::model::pauses::covering(&pauses, &s)
                .iter()
                .map(|p| paused_in_words(p))
                .collect(),
            paused_itself: crate::model::pauses::covering(&pauses, &s)
                .iter()
                .any(|p| matches!(p.scope, crate::model::PauseScope::Schedule { .. })),
            doubt: in_doubt.remove(&s.id()),
            may_resolve: viewer.may(Action::Control, &Object::Run(s.tenant.clone())),
            next: next_times(&s.spec, NEXT_IN_LIST, api.clock.now()).unwrap_or_default(),
            may_change: viewer.may(Action::Create, &Object::Definition(s.tenant.clone())),
            query: serde_urlencoded::to_string([
                ("tenant", s.tenant.as_str()),
                ("name", s.name.as_str()),
            ])
            .unwrap_or_default(),
            backfill_query: serde_urlencoded::to_string([(
                "schedule",
                format!("{}/{}", s.tenant, s.name),
            )])
            .unwrap_or_default(),
            tenant: s.tenant.to_string(),
            name: s.name.to_string(),
            workflow: s.workflow.to_string(),
            environment: s.environment.to_string(),
            cron: s.spec.cron.clone(),
            time_zone: s.spec.time_zone.clone(),
        })
        .collect();
    page::render(
        &SchedulesPage {
            layout: Layout::for_viewer(&viewer, "Schedules", "/schedules"),
            schedules,
            can_create,
            first_href,
            next_href,
        },
        StatusCode::OK,
    )
}

/// A pause holding `s`, as its row says it.
fn paused_in_words(p: &crate::model::pauses::PauseRecord) -> String {
    let why = if p.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", p.reason)
    };
    match &p.scope {
        crate::model::PauseScope::Schedule { .. } => {
            format!("paused since {}{why}", at(p.since_ms))
        }
        other => format!("held by the pause of {other} since {}{why}", at(p.since_ms)),
    }
}

#[derive(Debug, Deserialize)]
pub struct PauseForm {
    pub tenant: String,
    pub name: String,
    /// `pause`, `resume` or `catch_up` (resume, running what the pause skipped as the
    /// catch-up policy says).
    pub action: String,
    #[serde(default)]
    pub reason: String,
}

/// `POST /schedules/pause`: pauses the schedule, or resumes it (catching up if asked).
pub async fn pause(
    State(api): State<Api>,
    Signed { viewer, form: f }: Signed<PauseForm>,
) -> Response {
    let s = match stored(&api, &viewer, &f.tenant, &f.name).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let scope = crate::model::PauseScope::Schedule {
        tenant: s.tenant,
        name: s.name,
    };
    let command = match f.action.as_str() {
        "pause" => Command::Pause(crate::model::Pause {
            scope,
            reason: f.reason.trim().to_owned(),
        }),
        "resume" | "catch_up" => Command::Resume(crate::model::Resume {
            scope,
            catch_up: f.action == "catch_up",
        }),
        other => {
            return page::error_page(
                StatusCode::BAD_REQUEST,
                &format!("action: `{other}` is not pause, resume or catch_up"),
            );
        }
    };
    match api.propose(&viewer.caller, command).await {
        Ok(_) => Redirect::to("/schedules").into_response(),
        Err(e) => page::error_page(e.status, &e.message),
    }
}

/// An environment the picker offers: granted to the tenant, with where it runs.
pub struct Choice {
    pub name: String,
    pub label: String,
}

/// What the form holds (as typed, so a refused one comes back as it was).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ScheduleForm {
    pub csrf: String,
    pub tenant: String,
    pub name: String,
    pub workflow: String,
    pub environment: String,
    pub cron: String,
    pub time_zone: String,
    pub catch_up: String,
    pub overlap: String,
    pub takeover: String,
    /// Editing the schedule `tenant`/`name` (which stay as they are) rather than creating one.
    pub editing: bool,
}

#[derive(Template)]
#[template(path = "schedule_new.html")]
struct NewSchedulePage {
    layout: Layout,
    f: ScheduleForm,
    tenants: Vec<String>,
    workflows: Vec<String>,
    environments: Vec<Choice>,
    /// Problems beside their fields: (field, message).
    errors: Vec<(&'static str, String)>,
    /// A refusal that names no field of the form.
    refused: String,
    preview: Preview,
}

impl NewSchedulePage {
    fn error_for(&self, field: &str) -> String {
        self.errors
            .iter()
            .filter(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The environments granted to `tenant`, labelled `prod — cluster nj-main, data center nj`.
async fn granted(api: &Api, tenant: &Name) -> sqlx::Result<Vec<Choice>> {
    let pool = api.node.state.pool();
    let mut out = Vec::new();
    for g in query::grants(pool, Some(tenant)).await? {
        let Some(env) = query::environment(pool, &g.environment).await? else {
            continue;
        };
        let dc = query::cluster(pool, &env.cluster)
            .await?
            .map(|c| c.dc.to_string())
            .unwrap_or_default();
        out.push(Choice {
            label: format!("{} — cluster {}, data center {dc}", env.name, env.cluster),
            name: env.name.to_string(),
        });
    }
    Ok(out)
}

async fn form_page(
    api: &Api,
    viewer: &Viewer,
    mut f: ScheduleForm,
    errors: Vec<(&'static str, String)>,
    refused: String,
) -> Result<NewSchedulePage, sqlx::Error> {
    let tenants: Vec<Name> = page::writable_tenants(api, viewer).await?;
    // A tenant the viewer may not write in is not echoed back: the first writable one instead.
    let tenant = tenants
        .iter()
        .find(|t| t.as_str() == f.tenant)
        .or(tenants.first().filter(|_| !f.editing))
        .cloned();
    f.tenant = tenant.as_ref().map(Name::to_string).unwrap_or_default();
    let (workflows, environments) = match &tenant {
        Some(t) => (
            query::workflows(api.node.state.pool(), &query::Page::of(t))
                .await?
                .into_iter()
                .map(|w| w.workflow.name.to_string())
                .collect(),
            granted(api, t).await?,
        ),
        None => (vec![], vec![]),
    };
    if f.time_zone.is_empty() {
        f.time_zone = "UTC".into();
    }
    let preview = Preview::of(&spec_of(&f), api.clock.now());
    // A bad expression in the query (or a refused submit) reads the same beside its field.
    let mut errors = errors;
    for (field, e) in [
        ("cron", &preview.cron_error),
        ("time_zone", &preview.time_zone_error),
    ] {
        if !e.is_empty() && !errors.iter().any(|(f, _)| *f == field) {
            errors.push((field, e.clone()));
        }
    }
    Ok(NewSchedulePage {
        layout: Layout::for_viewer(
            viewer,
            if f.editing {
                "Edit schedule"
            } else {
                "New schedule"
            },
            "/schedules",
        ),
        tenants: tenants.iter().map(Name::to_string).collect(),
        workflows,
        environments,
        errors,
        refused,
        preview,
        f,
    })
}

fn spec_of(f: &ScheduleForm) -> ScheduleSpec {
    spec_over(ScheduleSpec::cron(""), f)
}

/// The catch-up policy a form names; none when it names the policy `was` already is (so an
/// edit keeps its window and limit).
fn catch_up_of(f: &ScheduleForm, was: &CatchUpPolicy) -> CatchUpPolicy {
    let name = |p: &CatchUpPolicy| match p {
        CatchUpPolicy::None => "none",
        CatchUpPolicy::Latest => "latest",
        CatchUpPolicy::All { .. } => "all",
    };
    match f.catch_up.as_str() {
        chosen if chosen == name(was) => *was,
        "none" => CatchUpPolicy::None,
        "latest" => CatchUpPolicy::Latest,
        _ => CatchUpPolicy::default(),
    }
}

/// `base` (a stored spec when editing: its start and end stay) with what the form sets.
fn spec_over(base: ScheduleSpec, f: &ScheduleForm) -> ScheduleSpec {
    ScheduleSpec {
        time_zone: match f.time_zone.trim() {
            "" => "UTC".to_owned(),
            zone => zone.to_owned(),
        },
        catch_up: catch_up_of(f, &base.catch_up),
        cron: f.cron.trim().to_owned(),
        ..base
    }
}

/// `GET /schedules/new` (`?tenant=`: whose).
pub async fn new(
    State(api): State<Api>,
    viewer: Viewer,
    Query(f): Query<ScheduleForm>,
) -> Response {
    match form_page(&api, &viewer, f, vec![], String::new()).await {
        Ok(p) => page::render(&p, StatusCode::OK),
        Err(e) => page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `POST /schedules/new`: checks the form the way the plane will (a field's error beside it),
/// then proposes the schedule; what the plane refuses comes back above the form.
pub async fn create(
    State(api): State<Api>,
    Signed {
        viewer,
        form: mut f,
    }: Signed<ScheduleForm>,
) -> Response {
    f.editing = false;
    save(api, viewer, f).await
}

/// `POST /schedules/edit`: the same checks, then the schedule `tenant`/`name` changed (its
/// start and end, which the form does not show, kept).
pub async fn update(
    State(api): State<Api>,
    Signed {
        viewer,
        form: mut f,
    }: Signed<ScheduleForm>,
) -> Response {
    f.editing = true;
    save(api, viewer, f).await
}

/// The stored schedule `tenant`/`name` if the viewer may see it; else the page saying there
/// is none (the same for one hidden by the policy).
async fn stored(
    api: &Api,
    viewer: &Viewer,
    tenant: &str,
    name: &str,
) -> Result<Schedule, Response> {
    let missing = || {
        page::error_page(
            StatusCode::NOT_FOUND,
            &format!("There is no schedule {tenant}/{name}."),
        )
    };
    let (Ok(t), Ok(n)) = (Name::new(tenant.trim()), Name::new(name.trim())) else {
        return Err(missing());
    };
    if !viewer.may(Action::Read, &Object::Definition(t.clone())) {
        return Err(missing());
    }
    match query::schedule(api.node.state.pool(), &t, &n).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(missing()),
        Err(e) => Err(page::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
        )),
    }
}

/// `GET /schedules/edit?tenant=&name=`: the form, filled in from the stored schedule.
pub async fn edit(
    State(api): State<Api>,
    viewer: Viewer,
    Query(q): Query<ScheduleForm>,
) -> Response {
    let s = match stored(&api, &viewer, &q.tenant, &q.name).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let f = ScheduleForm {
        csrf: String::new(),
        tenant: s.tenant.to_string(),
        name: s.name.to_string(),
        workflow: s.workflow.to_string(),
        environment: s.environment.to_string(),
        cron: s.spec.cron.clone(),
        time_zone: s.spec.time_zone.clone(),
        catch_up: match s.spec.catch_up {
            CatchUpPolicy::None => "none",
            CatchUpPolicy::Latest => "latest",
            CatchUpPolicy::All { .. } => "all",
        }
        .into(),
        overlap: serde_json::to_value(s.overlap)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        takeover: s.takeover.as_str().into(),
        editing: true,
    };
    if !viewer.may(Action::Create, &Object::Definition(s.tenant.clone())) {
        return page::error_page(
            StatusCode::FORBIDDEN,
            &format!(
                "You may not change schedules of tenant `{}`: it needs owner or developer of it.",
                s.tenant
            ),
        );
    }
    match form_page(&api, &viewer, f, vec![], String::new()).await {
        Ok(p) => page::render(&p, StatusCode::OK),
        Err(e) => page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteForm {
    pub tenant: String,
    pub name: String,
}

/// `POST /schedules/delete`: the schedule gone (its runs stay in the history).
pub async fn delete(
    State(api): State<Api>,
    Signed { viewer, form: f }: Signed<DeleteForm>,
) -> Response {
    let s = match stored(&api, &viewer, &f.tenant, &f.name).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    match api
        .propose(
            &viewer.caller,
            Command::DeleteSchedule {
                tenant: s.tenant,
                name: s.name,
            },
        )
        .await
    {
        Ok(_) => Redirect::to("/schedules").into_response(),
        Err(e) => page::error_page(e.status, &e.message),
    }
}

#[derive(Debug, Deserialize)]
pub struct DoubtForm {
    pub tenant: String,
    pub name: String,
    /// `run` or `mark_done`.
    pub resolution: String,
}

/// `POST /schedules/in-doubt`: settles a schedule's records in doubt (the partition's holder
/// runs them, or they are marked done).
pub async fn resolve(
    State(api): State<Api>,
    Signed { viewer, form: f }: Signed<DoubtForm>,
) -> Response {
    let s = match stored(&api, &viewer, &f.tenant, &f.name).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let resolution = match f.resolution.as_str() {
        "run" => crate::model::doubt::Resolution::Run,
        "mark_done" => crate::model::doubt::Resolution::MarkDone,
        other => {
            return page::error_page(
                StatusCode::BAD_REQUEST,
                &format!("resolution: `{other}` is not run or mark_done"),
            );
        }
    };
    let command = Command::ResolveDoubts(crate::model::ResolveDoubts {
        tenant: s.tenant,
        schedule: Some(s.name),
        resolution,
    });
    match api.propose(&viewer.caller, command).await {
        Ok(_) => Redirect::to("/schedules").into_response(),
        Err(e) => page::error_page(e.status, &e.message),
    }
}

async fn save(api: Api, viewer: Viewer, f: ScheduleForm) -> Response {
    // Who may is asked before what is wrong with the form: a refused caller learns nothing
    // about the fields (the plane asks again when it applies the command).
    if let Ok(t) = Name::new(f.tenant.trim()) {
        let what = format!("schedule {t}/{}", f.name.trim());
        if let Err(e) = api.allow_write(
            &viewer.caller,
            Action::Create,
            &Object::Definition(t.clone()),
            if f.editing {
                "update_schedule"
            } else {
                "create_schedule"
            },
            &what,
            &t,
        ) {
            return page::error_page(e.status, &e.message);
        }
    }
    let mut errors: Vec<(&'static str, String)> = Vec::new();
    let name = Name::new(f.name.trim()).map_err(|e| errors.push(("name", e.to_string())));
    let tenant = Name::new(f.tenant.trim()).map_err(|e| errors.push(("tenant", e.to_string())));
    let workflow = Name::new(f.workflow.trim())
        .map_err(|_| errors.push(("workflow", "choose a workflow".into())));
    let environment = Name::new(f.environment.trim())
        .map_err(|_| errors.push(("environment", "choose an environment".into())));
    let spec = if f.editing {
        match stored(&api, &viewer, &f.tenant, &f.name).await {
            Ok(s) => spec_over(s.spec, &f),
            Err(response) => return response,
        }
    } else {
        spec_of(&f)
    };
    if let Err(e) = spec.calendar() {
        errors.push((field_of(&e), e.to_string()));
    }
    let overlap: Option<OverlapPolicy> = if f.overlap.is_empty() {
        Some(OverlapPolicy::default())
    } else {
        serde_json::from_value(serde_json::json!(f.overlap)).ok()
    };
    if overlap.is_none() {
        errors.push((
            "overlap",
            format!("`{}` is not an overlap policy", f.overlap),
        ));
    }
    let takeover = match f.takeover.as_str() {
        "" | "wait" => Some(TakeoverPolicy::Wait),
        "rerun" => Some(TakeoverPolicy::Rerun),
        other => {
            errors.push((
                "takeover",
                format!("`{other}` is not a takeover policy (wait or rerun)"),
            ));
            None
        }
    };
    let (Ok(name), Ok(tenant), Ok(workflow), Ok(environment), Some(overlap), Some(takeover), true) = (
        name,
        tenant,
        workflow,
        environment,
        overlap,
        takeover,
        errors.is_empty(),
    ) else {
        return match form_page(&api, &viewer, f, errors, String::new()).await {
            Ok(p) => page::render(&p, StatusCode::BAD_REQUEST),
            Err(e) => page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
    };
    let schedule = Schedule {
        tenant,
        name,
        workflow,
        environment,
        spec,
        overlap,
        takeover,
    };
    let command = if f.editing {
        Command::UpdateSchedule(schedule)
    } else {
        Command::CreateSchedule(schedule)
    };
    match api.propose(&viewer.caller, command).await {
        Ok(_) => Redirect::to("/schedules").into_response(),
        Err(e) => {
            let status = e.status;
            match form_page(&api, &viewer, f, vec![], e.message).await {
                Ok(p) => page::render(&p, status),
                Err(e) => page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
    }
}

#[derive(Template)]
#[template(path = "preview_live.html")]
struct PreviewFragment {
    preview: Preview,
}

#[derive(Deserialize)]
pub struct PreviewQuery {
    #[serde(default)]
    cron: String,
    #[serde(default)]
    time_zone: String,
}

/// `GET /schedules/preview?cron=&time_zone=`: the next ten fire times in the zone, or the
/// calendar's error — the fragment the form swaps in as the expression is typed.
pub async fn preview(
    State(api): State<Api>,
    _signed_in: Viewer,
    Query(q): Query<PreviewQuery>,
) -> Response {
    let spec = ScheduleSpec {
        time_zone: if q.time_zone.trim().is_empty() {
            "UTC".into()
        } else {
            q.time_zone.trim().to_owned()
        },
        ..ScheduleSpec::cron(q.cron.trim())
    };
    page::render(
        &PreviewFragment {
            preview: Preview::of(&spec, api.clock.now()),
        },
        StatusCode::OK,
    )
}
