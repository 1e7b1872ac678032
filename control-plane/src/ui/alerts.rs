//! Alerts: the channels and rules the viewer may see (made and deleted here by those who may),
//! and the latest deliveries with every attempt. The same commands and policy as the JSON API.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::page::{self, Layout, Signed, Time, Viewer};
use crate::api::Api;
use crate::model::alerts::outbox::{self, Delivery, DeliveryFilter};
use crate::model::alerts::{self, AlertChannel, AlertEvent, AlertRule, ChannelKind};
use crate::model::{Command, Name};
use crate::policy::{Action, Kind, Object, Scope};

/// A channel's or rule's row.
pub struct Row {
    /// `-` for the federation's.
    pub tenant: String,
    pub name: String,
    pub what: String,
    pub to: String,
    pub may_delete: bool,
}

/// A delivery's row, with its attempts.
pub struct Sent {
    pub id: String,
    pub created: Option<Time>,
    pub state: String,
    pub rule: String,
    pub channel: String,
    pub summary: String,
    pub last_error: String,
    /// When a pending one is tried next.
    pub next: Option<Time>,
    pub tries: Vec<Tried>,
}

pub struct Tried {
    pub attempt: u32,
    pub at: Option<Time>,
    pub node: String,
    pub ok: bool,
    pub took_ms: u64,
    pub message: String,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    layout: Layout,
    channels: Vec<Row>,
    rules: Vec<Row>,
    deliveries: Vec<Sent>,
    /// Where the viewer may make channels and rules: tenants, and `_` (the federation's) for
    /// admins.
    owners: Vec<String>,
    events: Vec<&'static str>,
    error: String,
}

/// The policy object a channel's or rule's owner stands for.
fn object(tenant: Option<&Name>) -> Object {
    match tenant {
        Some(t) => Object::Definition(t.clone()),
        None => Object::Operations,
    }
}

/// `GET /alerts`.
pub async fn show(State(api): State<Api>, viewer: Viewer) -> Response {
    render(&api, &viewer, String::new(), StatusCode::OK).await
}

async fn render(api: &Api, viewer: &Viewer, error: String, status: StatusCode) -> Response {
    let sees = |t: Option<&Name>| viewer.may(Action::Read, &object(t));
    let deletes = |t: Option<&Name>| viewer.may(Action::Change, &object(t));
    let built = async {
        let mut conn = api.node.state.pool().acquire().await?;
        let channels = alerts::list::<AlertChannel>(&mut conn, None).await?;
        let rules = alerts::list::<AlertRule>(&mut conn, None).await?;
        // The viewer's owners' newest, chosen in the query (not the federation's newest,
        // filtered after).
        let owners = match viewer.scope(Kind::Definition) {
            Scope::All => None,
            Scope::Tenants(ts) => Some(
                ts.iter()
                    .map(|t| t.to_string())
                    .chain(sees(None).then(String::new))
                    .collect(),
            ),
            Scope::Nothing => Some(vec![String::new()]),
        };
        let recent = outbox::list(
            &mut conn,
            &DeliveryFilter {
                owners,
                limit: 50,
                ..Default::default()
            },
        )
        .await?;
        let mut deliveries: Vec<Delivery> = Vec::new();
        for d in recent {
            let owner = d.tenant.as_deref().and_then(|t| Name::new(t).ok());
            if sees(owner.as_ref()) {
                deliveries.extend(outbox::get(&mut conn, &d.id).await?);
            }
        }
        let mut owners: Vec<String> = page::writable_tenants(api, viewer)
            .await?
            .iter()
            .map(|t| t.to_string())
            .collect();
        if viewer.may(Action::Create, &Object::Operations) {
            owners.push("_".into());
        }
        Ok::<_, sqlx::Error>((channels, rules, deliveries, owners))
    }
    .await;
    let (channels, rules, deliveries, owners) = match built {
        Ok(b) => b,
        Err(e) => return page::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let tenant = |t: Option<&Name>| t.map_or("-".into(), |t| t.to_string());
    let channels = channels
        .into_iter()
        .filter(|c| sees(c.tenant.as_ref()))
        .map(AlertChannel::shown)
        .map(|c| Row {
            tenant: tenant(c.tenant.as_ref()),
            name: c.name.to_string(),
            what: format!(
                "{}{}",
                c.kind.as_str(),
                if c.secret.is_some() { ", signed" } else { "" }
            ),
            to: c.url.clone().unwrap_or_else(|| c.to.join(", ")),
            may_delete: deletes(c.tenant.as_ref()),
        })
        .collect();
    let rules = rules
        .into_iter()
        .filter(|r| sees(r.tenant.as_ref()))
        .map(|r| Row {
            tenant: tenant(r.tenant.as_ref()),
            name: r.name.to_string(),
            what: rule_in_words(&r),
            to: r
                .channels
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            may_delete: deletes(r.tenant.as_ref()),
        })
        .collect();
    let deliveries = deliveries
        .into_iter()
        .map(|d| Sent {
            summary: d.summary(),
            created: page::time(Some(d.created_ms)),
            next: page::time((d.state == "pending").then_some(d.next_ms)),
            tries: d
                .tries
                .iter()
                .map(|t| Tried {
                    attempt: t.attempt,
                    at: page::time(Some(t.at_ms)),
                    node: t.node.clone(),
                    ok: t.ok,
                    took_ms: t.took_ms,
                    message: t.message.clone(),
                })
                .collect(),
            id: d.id,
            state: d.state,
            rule: d.rule,
            channel: d.channel,
            last_error: d.last_error,
        })
        .collect();
    page::render(
        &AlertsPage {
            layout: Layout::for_viewer(viewer, "Alerts", "/alerts"),
            channels,
            rules,
            deliveries,
            owners,
            events: AlertEvent::ALL.iter().map(|e| e.as_str()).collect(),
            error,
        },
        status,
    )
}

fn rule_in_words(r: &AlertRule) -> String {
    let of = match (&r.workflow, &r.schedule) {
        (Some(w), _) => format!("workflow {w}"),
        (_, Some(s)) => format!("schedule {s}"),
        _ if r.tenant.is_none() => "everything".into(),
        _ => "every run".into(),
    };
    let on: Vec<String> = r
        .on
        .iter()
        .map(|e| match e {
            AlertEvent::Late => format!("late by over {} s", r.late_seconds.unwrap_or(0)),
            AlertEvent::Sla => format!("not finished {} s after due", r.sla_seconds.unwrap_or(0)),
            AlertEvent::DcUnheard => {
                format!("dc unheard {} s", r.unheard_seconds.unwrap_or(0))
            }
            e => e.as_str().replace('_', " "),
        })
        .collect();
    format!(
        "{of}: {}; repeats grouped over {} s",
        on.join(", "),
        r.group_seconds
    )
}

/// The owner field of a form: `_` is the federation's.
fn owner(value: &str) -> Result<Option<Name>, String> {
    match value {
        "_" => Ok(None),
        t => Name::new(t).map(Some).map_err(|e| format!("tenant: {e}")),
    }
}

/// A form field as typed, without surrounding blanks.
fn field(form: &[(String, String)], key: &str) -> String {
    page::value_of(form, key).trim().to_owned()
}

fn seconds(form: &[(String, String)], key: &str) -> Result<Option<u64>, String> {
    match field(form, key).as_str() {
        "" => Ok(None),
        v => v
            .parse()
            .map(Some)
            .map_err(|_| format!("{key}: `{v}` is not a whole number of seconds")),
    }
}

fn channel_of(form: &[(String, String)]) -> Result<AlertChannel, String> {
    let kind = match field(form, "type").as_str() {
        "webhook" => ChannelKind::Webhook,
        "email" => ChannelKind::Email,
        "chat" => ChannelKind::Chat,
        other => return Err(format!("type: `{other}` is not webhook, email or chat")),
    };
    let text = |k: &str| Some(field(form, k).to_owned()).filter(|v| !v.is_empty());
    Ok(AlertChannel {
        tenant: owner(&field(form, "tenant"))?,
        name: Name::new(field(form, "name")).map_err(|e| format!("name: {e}"))?,
        kind,
        url: text("url"),
        secret: text("secret"),
        to: field(form, "to")
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect(),
        description: String::new(),
    })
}

fn rule_of(form: &[(String, String)]) -> Result<AlertRule, String> {
    let name = |k: &str| -> Result<Option<Name>, String> {
        match field(form, k).as_str() {
            "" => Ok(None),
            v => Name::new(v).map(Some).map_err(|e| format!("{k}: {e}")),
        }
    };
    let on = form
        .iter()
        .filter(|(k, _)| k == "on")
        .map(|(_, v)| AlertEvent::parse(v).ok_or_else(|| format!("on: `{v}` is not an event")))
        .collect::<Result<Vec<_>, _>>()?;
    let channels = field(form, "channels")
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| Name::new(c).map_err(|e| format!("channels: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AlertRule {
        tenant: owner(&field(form, "tenant"))?,
        name: Name::new(field(form, "name")).map_err(|e| format!("name: {e}"))?,
        workflow: name("workflow")?,
        schedule: name("schedule")?,
        on,
        channels,
        late_seconds: seconds(form, "late_seconds")?,
        sla_seconds: seconds(form, "sla_seconds")?,
        unheard_seconds: seconds(form, "unheard_seconds")?,
        group_seconds: seconds(form, "group_seconds")?.unwrap_or(300),
    })
}

async fn propose(api: &Api, viewer: &Viewer, command: Result<Command, String>) -> Response {
    let refused = match command {
        Ok(command) => match api.propose(&viewer.caller, command).await {
            Ok(_) => return Redirect::to("/alerts").into_response(),
            Err(e) if e.status == StatusCode::NOT_FOUND || e.status == StatusCode::FORBIDDEN => {
                return page::error_page(e.status, &e.message);
            }
            Err(e) => e.message,
        },
        Err(message) => message,
    };
    render(api, viewer, refused, StatusCode::UNPROCESSABLE_ENTITY).await
}

/// `POST /alerts/channels/new`.
pub async fn new_channel(State(api): State<Api>, Signed { viewer, form }: Signed) -> Response {
    let command = channel_of(&form).map(Command::CreateAlertChannel);
    propose(&api, &viewer, command).await
}

/// `POST /alerts/rules/new`.
pub async fn new_rule(State(api): State<Api>, Signed { viewer, form }: Signed) -> Response {
    let command = rule_of(&form).map(Command::CreateAlertRule);
    propose(&api, &viewer, command).await
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeleteForm {
    pub csrf: String,
    /// `channel` or `rule`.
    pub kind: String,
    /// `-` for the federation's.
    pub tenant: String,
    pub name: String,
}

/// `POST /alerts/delete`.
pub async fn delete(
    State(api): State<Api>,
    Signed { viewer, form }: Signed<DeleteForm>,
) -> Response {
    let command = (|| {
        let tenant = owner(if form.tenant == "-" {
            "_"
        } else {
            &form.tenant
        })?;
        let name = Name::new(form.name.as_str()).map_err(|e| format!("name: {e}"))?;
        match form.kind.as_str() {
            "channel" => Ok(Command::DeleteAlertChannel { tenant, name }),
            "rule" => Ok(Command::DeleteAlertRule { tenant, name }),
            other => Err(format!("kind: `{other}` is not channel or rule")),
        }
    })();
    match command {
        Ok(command) => match api.propose(&viewer.caller, command).await {
            Ok(_) => Redirect::to("/alerts").into_response(),
            Err(e) if e.status == StatusCode::CONFLICT => {
                render(&api, &viewer, e.message, StatusCode::CONFLICT).await
            }
            Err(e) => page::error_page(e.status, &e.message),
        },
        Err(message) => page::error_page(StatusCode::BAD_REQUEST, &message),
    }
}
