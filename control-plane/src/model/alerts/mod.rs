//! Alerts: channels (where an alert goes), rules (what raises one), and the durable delivery
//! outbox the leader's courier ([`crate::courier`]) empties.
//!
//! - This module: the channel and rule documents, their checks, creating and deleting them.
//! - [`raise`]: what an applied command raises (`follow`, called by the processor after every
//!   command, as `backfills::follow` is: a run that failed, succeeded, was killed or started
//!   late, a record in doubt, a task's attempt with a callback), the timed checks the leader
//!   proposes (`CheckAlerts`: a run past its SLA, an agent lost, a data center unheard), and how
//!   a raised event becomes a delivery: once per rule and event (`alert_marks`), repeats of one
//!   thing grouped into one delivery per rule's window.
//! - [`outbox`]: the deliveries: what is due, each attempt's outcome recorded (`AlertAttempts`,
//!   proposed by the courier) with its backoff, and the reads the API and UI show.
//!
//! Everything is decided while applying, at the proposal's time, so every replica holds the
//! same outbox and a new leader carries on where the last one stopped: a plane restart or an
//! unreachable receiver loses no alert. A delivery may be sent twice (the leader sent it and
//! lost its leadership before the attempt was recorded): receivers dedupe on its id.

pub mod outbox;
pub mod raise;

use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection};

use super::Name;
use super::checks::Table;
use super::checks::{doc, invalid, read_doc, subject};
use super::outcome::{Applied, ApplyError, Refusal};

/// How a channel delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// A JSON POST, signed with HMAC-SHA256 when the channel has a secret.
    Webhook,
    /// Mail through the plane's SMTP relay (`[mail]` in `plane.toml`).
    Email,
    /// A chat-style webhook (Slack, Mattermost, DingTalk-compatible): `{"text": "…"}`.
    Chat,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Email => "email",
            Self::Chat => "chat",
        }
    }
}

/// Where alerts go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertChannel {
    /// Its tenant; none: the federation's own (admins').
    #[serde(default)]
    pub tenant: Option<Name>,
    pub name: Name,
    #[serde(rename = "type")]
    pub kind: ChannelKind,
    /// The receiver (webhook and chat): `http://` or `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The key webhook bodies are signed with (`X-Meridian-Signature`). Never shown back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The recipients (email).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl AlertChannel {
    /// The first field that cannot work, as (field, problem).
    pub fn problem(&self) -> Option<(&'static str, String)> {
        let url = self.url.as_deref().map(str::trim).unwrap_or("");
        match self.kind {
            ChannelKind::Webhook | ChannelKind::Chat => {
                if url.is_empty() {
                    return Some(("url", format!("a {} channel needs one", self.kind.as_str())));
                }
                match url::Url::parse(url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                    Ok(_) => return Some(("url", format!("`{url}`: want http:// or https://"))),
                    Err(e) => return Some(("url", format!("`{url}`: {e}"))),
                }
                if !self.to.is_empty() {
                    return Some(("to", "only an email channel has recipients".into()));
                }
                if self.kind == ChannelKind::Chat && self.secret.is_some() {
                    return Some(("secret", "a chat channel is not signed".into()));
                }
                if self.secret.as_deref().is_some_and(|s| s.len() < 16) {
                    return Some(("secret", "at least 16 characters".into()));
                }
            }
            ChannelKind::Email => {
                if self.to.is_empty() {
                    return Some(("to", "an email channel needs a recipient".into()));
                }
                if let Some(bad) = self
                    .to
                    .iter()
                    .find(|a| a.parse::<lettre::Address>().is_err())
                {
                    return Some(("to", format!("`{bad}` is not an email address")));
                }
                if self.url.is_some() {
                    return Some(("url", "an email channel has recipients, not a URL".into()));
                }
                if self.secret.is_some() {
                    return Some(("secret", "only a webhook channel is signed".into()));
                }
            }
        }
        None
    }

    /// As shown to anyone (and kept in the audit trail): the secret only said to be set, and
    /// a URL only up to its host — chat services put their credential in the path or query.
    pub fn shown(mut self) -> Self {
        if self.secret.is_some() {
            self.secret = Some("(set)".into());
        }
        self.url = self.url.map(|u| match url::Url::parse(&u) {
            Ok(parsed) if parsed.path() != "/" || parsed.query().is_some() => {
                format!("{}/…", parsed.origin().ascii_serialization())
            }
            Ok(_) => u,
            Err(_) => "(unreadable)".into(),
        });
        self
    }
}

/// What raises an alert.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AlertEvent {
    /// A run failed.
    Failed,
    /// A run failed after a task had used its retries (it failed on a later attempt).
    RetriesExhausted,
    Succeeded,
    Killed,
    /// A takeover left fire records in doubt (`meridian doubts`).
    InDoubt,
    /// A run started more than `late_seconds` after its fire time.
    Late,
    /// A run not finished `sla_seconds` after its fire (or request) time.
    Sla,
    /// Federation rules only: an agent stopped heartbeating for longer than its lease.
    AgentLost,
    /// Federation rules only: no agent of a data center heard for `unheard_seconds`.
    DcUnheard,
}

impl AlertEvent {
    pub const ALL: [AlertEvent; 9] = [
        Self::Failed,
        Self::RetriesExhausted,
        Self::Succeeded,
        Self::Killed,
        Self::InDoubt,
        Self::Late,
        Self::Sla,
        Self::AgentLost,
        Self::DcUnheard,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::RetriesExhausted => "retries_exhausted",
            Self::Succeeded => "succeeded",
            Self::Killed => "killed",
            Self::InDoubt => "in_doubt",
            Self::Late => "late",
            Self::Sla => "sla",
            Self::AgentLost => "agent_lost",
            Self::DcUnheard => "dc_unheard",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// About the federation's machines, not a tenant's runs.
    pub fn is_federation(self) -> bool {
        matches!(self, Self::AgentLost | Self::DcUnheard)
    }
}

/// When and where to alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Its tenant; none: the federation's (admins'), which may also watch agents and data
    /// centers, and sees every tenant's runs.
    #[serde(default)]
    pub tenant: Option<Name>,
    pub name: Name,
    /// Only this workflow's runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Name>,
    /// Only this schedule's runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Name>,
    pub on: Vec<AlertEvent>,
    /// Channels of the same tenant (or the federation's, for a federation rule).
    pub channels: Vec<Name>,
    /// `late`: how late a start must be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_seconds: Option<u64>,
    /// `sla`: how long after its fire time a run must have finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_seconds: Option<u64>,
    /// `dc_unheard`: how long a data center may be silent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unheard_seconds: Option<u64>,
    /// Repeats of one thing (the same event of the same schedule, workflow, agent or data
    /// center) within this window after an alert go out together, once, at its end.
    #[serde(default = "default_group_seconds")]
    pub group_seconds: u64,
}

fn default_group_seconds() -> u64 {
    300
}

impl AlertRule {
    /// The first field that cannot work, as (field, problem), from the document alone.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.on.is_empty() {
            return Some(("on", "name at least one event".into()));
        }
        if self.channels.is_empty() {
            return Some(("channels", "name at least one channel".into()));
        }
        if self.tenant.is_some()
            && let Some(e) = self.on.iter().find(|e| e.is_federation())
        {
            return Some((
                "on",
                format!(
                    "`{}` is about the federation's agents: a rule without a tenant (admins')",
                    e.as_str()
                ),
            ));
        }
        if self.tenant.is_none() && (self.workflow.is_some() || self.schedule.is_some()) {
            return Some((
                "tenant",
                "a rule naming a workflow or schedule names its tenant".into(),
            ));
        }
        if self.workflow.is_some() && self.schedule.is_some() {
            return Some(("schedule", "name a workflow or a schedule, not both".into()));
        }
        let needs = [
            (AlertEvent::Late, "late_seconds", self.late_seconds),
            (AlertEvent::Sla, "sla_seconds", self.sla_seconds),
            (
                AlertEvent::DcUnheard,
                "unheard_seconds",
                self.unheard_seconds,
            ),
        ];
        for (event, field, value) in needs {
            let on = self.on.contains(&event);
            match value {
                None if on => {
                    return Some((field, format!("`{}` needs it", event.as_str())));
                }
                Some(_) if !on => {
                    return Some((field, format!("only for `{}`", event.as_str())));
                }
                Some(0) => return Some((field, "must be more than 0".into())),
                _ => {}
            }
        }
        if self.group_seconds > 86_400 {
            return Some(("group_seconds", "at most a day (86400)".into()));
        }
        None
    }
}

/// A channel's or rule's owner in the tables: its tenant, or '' for the federation's.
pub(crate) fn owner(tenant: Option<&Name>) -> &str {
    tenant.map(Name::as_str).unwrap_or("")
}

/// How a channel or rule is named in messages: `ads/ops`, or `ops` for the federation's.
pub fn label(tenant: Option<&Name>, name: &Name) -> String {
    match tenant {
        Some(t) => format!("{t}/{name}"),
        None => name.to_string(),
    }
}

pub(super) async fn create_channel(
    tx: &mut SqliteConnection,
    channel: &AlertChannel,
) -> Result<Applied, ApplyError> {
    let doing = format!(
        "creating alert channel `{}`",
        label(channel.tenant.as_ref(), &channel.name)
    );
    if let Some((field, problem)) = channel.problem() {
        return Err(invalid(&doing, field, &problem));
    }
    if let Some(t) = &channel.tenant {
        super::checks::present(tx, Table::Tenants, t, &doing).await?;
    }
    let inserted = sqlx::query(
        "INSERT INTO alert_channels (tenant, name, doc) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(owner(channel.tenant.as_ref()))
    .bind(channel.name.as_str())
    .bind(doc(channel))
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(Refusal::Exists {
            doing,
            kind: "alert channel",
            name: label(channel.tenant.as_ref(), &channel.name),
        }
        .into());
    }
    Ok(subject(format!(
        "alert channel {}",
        label(channel.tenant.as_ref(), &channel.name)
    )))
}

pub(super) async fn delete_channel(
    tx: &mut SqliteConnection,
    tenant: Option<&Name>,
    name: &Name,
) -> Result<Applied, ApplyError> {
    let doing = format!("deleting alert channel `{}`", label(tenant, name));
    if channel(tx, tenant, name).await?.is_none() {
        return Err(missing(doing, "alert channel", label(tenant, name)));
    }
    let mut users: Vec<String> = list::<AlertRule>(tx, Some(tenant))
        .await?
        .into_iter()
        .filter(|r| r.channels.contains(name))
        .map(|r| format!("rule `{}`", r.name))
        .collect();
    let callbacks: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT workflow FROM task_callbacks WHERE tenant = ? AND channel = ? \
         AND version = (SELECT MAX(version) FROM workflows v WHERE v.deleted = 0 \
                        AND v.tenant = task_callbacks.tenant AND v.name = task_callbacks.workflow)",
    )
    .bind(owner(tenant))
    .bind(name.as_str())
    .fetch_all(&mut *tx)
    .await?;
    users.extend(
        callbacks
            .into_iter()
            .map(|w| format!("workflow `{w}`'s callbacks")),
    );
    if !users.is_empty() {
        return Err(Refusal::InUse {
            doing,
            users: users.join(", "),
        }
        .into());
    }
    sqlx::query("DELETE FROM alert_channels WHERE tenant = ? AND name = ?")
        .bind(owner(tenant))
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(subject(format!("alert channel {}", label(tenant, name))))
}

pub(super) async fn create_rule(
    tx: &mut SqliteConnection,
    rule: &AlertRule,
) -> Result<Applied, ApplyError> {
    let tenant = rule.tenant.as_ref();
    let doing = format!("creating alert rule `{}`", label(tenant, &rule.name));
    if let Some((field, problem)) = rule.problem() {
        return Err(invalid(&doing, field, &problem));
    }
    if let Some(t) = tenant {
        super::checks::present(tx, Table::Tenants, t, &doing).await?;
        if let Some(w) = &rule.workflow
            && !super::checks::workflow_exists(tx, t, w).await?
        {
            return Err(missing(doing, "workflow", format!("{t}/{w}")));
        }
        if let Some(s) = &rule.schedule {
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM schedules WHERE tenant = ? AND name = ?)",
            )
            .bind(t.as_str())
            .bind(s.as_str())
            .fetch_one(&mut *tx)
            .await?;
            if !exists {
                return Err(missing(doing, "schedule", format!("{t}/{s}")));
            }
        }
    }
    for c in &rule.channels {
        if channel(tx, tenant, c).await?.is_none() {
            return Err(missing(doing, "alert channel", label(tenant, c)));
        }
    }
    let inserted = sqlx::query(
        "INSERT INTO alert_rules (tenant, name, doc) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(owner(tenant))
    .bind(rule.name.as_str())
    .bind(doc(rule))
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(Refusal::Exists {
            doing,
            kind: "alert rule",
            name: label(tenant, &rule.name),
        }
        .into());
    }
    Ok(subject(format!("alert rule {}", label(tenant, &rule.name))))
}

pub(super) async fn delete_rule(
    tx: &mut SqliteConnection,
    tenant: Option<&Name>,
    name: &Name,
) -> Result<Applied, ApplyError> {
    let doing = format!("deleting alert rule `{}`", label(tenant, name));
    let deleted = sqlx::query("DELETE FROM alert_rules WHERE tenant = ? AND name = ?")
        .bind(owner(tenant))
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(missing(doing, "alert rule", label(tenant, name)));
    }
    // What it raised is forgotten with it: a rule made again under the name starts afresh.
    sqlx::query("DELETE FROM alert_marks WHERE tenant = ? AND rule = ?")
        .bind(owner(tenant))
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(subject(format!("alert rule {}", label(tenant, name))))
}

/// A workflow's task callbacks, checked: each names a webhook or chat channel of the tenant.
/// Decided before the workflow's version is written; [`Callbacks::write`] after.
pub(super) struct Callbacks(Vec<(String, &'static str, String)>);

pub(super) async fn callbacks(
    tx: &mut SqliteConnection,
    tenant: &Name,
    definition: &meridian_domain::workflow::WorkflowDefinition,
    doing: &str,
) -> Result<Callbacks, ApplyError> {
    let mut rows = Vec::new();
    for task in &definition.tasks {
        for (i, callback) in task.callbacks.iter().enumerate() {
            let field = format!("tasks.{}.callbacks[{i}].channel", task.name);
            let name = Name::new(callback.channel.clone())
                .map_err(|e| invalid(doing, &field, &e.to_string()))?;
            match channel(tx, Some(tenant), &name).await? {
                None => {
                    return Err(invalid(
                        doing,
                        &field,
                        &format!("tenant `{tenant}` has no alert channel `{name}`"),
                    ));
                }
                Some(c) if c.kind == ChannelKind::Email => {
                    return Err(invalid(
                        doing,
                        &field,
                        &format!("`{name}` is an email channel; a callback calls a webhook"),
                    ));
                }
                Some(_) => {}
            }
            for outcome in &callback.on {
                rows.push((task.name.clone(), outcome.as_str(), name.to_string()));
            }
        }
    }
    Ok(Callbacks(rows))
}

impl Callbacks {
    pub(super) async fn write(
        self,
        tx: &mut SqliteConnection,
        tenant: &Name,
        workflow: &Name,
        version: i64,
    ) -> sqlx::Result<()> {
        for (task, outcome, channel) in self.0 {
            sqlx::query(
                "INSERT INTO task_callbacks (tenant, workflow, version, task, outcome, channel) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(tenant.as_str())
            .bind(workflow.as_str())
            .bind(version)
            .bind(task)
            .bind(outcome)
            .bind(channel)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

/// A tenant's alert objects go with it (called when the tenant is deleted).
pub(super) async fn forget_tenant(tx: &mut SqliteConnection, tenant: &Name) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM alert_attempts WHERE delivery_id IN \
         (SELECT id FROM alert_deliveries WHERE tenant = ?)",
    )
    .bind(tenant.as_str())
    .execute(&mut *tx)
    .await?;
    for table in [
        "alert_rules",
        "alert_channels",
        "alert_marks",
        "alert_deliveries",
        "task_callbacks",
    ] {
        sqlx::query(&format!("DELETE FROM {table} WHERE tenant = ?"))
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

fn missing(doing: String, kind: &'static str, name: String) -> ApplyError {
    Refusal::Missing { doing, kind, name }.into()
}

pub async fn channel(
    conn: &mut SqliteConnection,
    tenant: Option<&Name>,
    name: &Name,
) -> sqlx::Result<Option<AlertChannel>> {
    let doc: Option<String> =
        sqlx::query_scalar("SELECT doc FROM alert_channels WHERE tenant = ? AND name = ?")
            .bind(owner(tenant))
            .bind(name.as_str())
            .fetch_optional(&mut *conn)
            .await?;
    doc.map(|d| read_doc(&d)).transpose()
}

/// A channel or a rule: a document with an owner (a tenant, or none: the federation), kept in
/// its own table.
pub trait Owned: serde::de::DeserializeOwned {
    const TABLE: &'static str;
    fn tenant(&self) -> Option<&Name>;
}

impl Owned for AlertChannel {
    const TABLE: &'static str = "alert_channels";
    fn tenant(&self) -> Option<&Name> {
        self.tenant.as_ref()
    }
}

impl Owned for AlertRule {
    const TABLE: &'static str = "alert_rules";
    fn tenant(&self) -> Option<&Name> {
        self.tenant.as_ref()
    }
}

/// Channels or rules of one owner (`Some(Some(t))`: tenant `t`; `Some(None)`: the
/// federation's) or of all (`None`), by owner and name.
pub async fn list<T: Owned>(
    conn: &mut SqliteConnection,
    owner_is: Option<Option<&Name>>,
) -> sqlx::Result<Vec<T>> {
    let table = T::TABLE;
    let rows = match owner_is {
        Some(o) => {
            sqlx::query(&format!(
                "SELECT doc FROM {table} WHERE tenant = ? ORDER BY name"
            ))
            .bind(owner(o))
            .fetch_all(&mut *conn)
            .await?
        }
        None => {
            sqlx::query(&format!("SELECT doc FROM {table} ORDER BY tenant, name"))
                .fetch_all(&mut *conn)
                .await?
        }
    };
    rows.iter()
        .map(|r| read_doc(r.get::<&str, _>("doc")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(on: &[AlertEvent]) -> AlertRule {
        AlertRule {
            tenant: Some(Name::new("ads").unwrap()),
            name: Name::new("r").unwrap(),
            workflow: None,
            schedule: None,
            on: on.to_vec(),
            channels: vec![Name::new("ops").unwrap()],
            late_seconds: None,
            sla_seconds: None,
            unheard_seconds: None,
            group_seconds: 300,
        }
    }

    #[test]
    fn a_rule_names_what_its_events_need() {
        assert_eq!(rule(&[AlertEvent::Failed]).problem(), None);
        assert_eq!(rule(&[]).problem().unwrap().0, "on");
        assert_eq!(
            rule(&[AlertEvent::Late]).problem().unwrap().0,
            "late_seconds"
        );
        let mut sla = rule(&[AlertEvent::Sla]);
        sla.sla_seconds = Some(60);
        assert_eq!(sla.problem(), None);
        sla.late_seconds = Some(5);
        assert_eq!(sla.problem().unwrap().0, "late_seconds");
        // A tenant's rule cannot watch the federation's agents.
        assert_eq!(rule(&[AlertEvent::AgentLost]).problem().unwrap().0, "on");
        let mut fed = rule(&[AlertEvent::AgentLost]);
        fed.tenant = None;
        assert_eq!(fed.problem(), None);
        fed.workflow = Some(Name::new("w").unwrap());
        assert_eq!(fed.problem().unwrap().0, "tenant");
    }

    #[test]
    fn a_channel_has_what_its_type_delivers_with() {
        let hook = AlertChannel {
            tenant: None,
            name: Name::new("h").unwrap(),
            kind: ChannelKind::Webhook,
            url: Some("https://example.com/hook".into()),
            secret: Some("0123456789abcdef".into()),
            to: vec![],
            description: String::new(),
        };
        assert_eq!(hook.problem(), None);
        let no_url = AlertChannel {
            url: None,
            ..hook.clone()
        };
        assert_eq!(no_url.problem().unwrap().0, "url");
        let ftp = AlertChannel {
            url: Some("ftp://x".into()),
            ..hook.clone()
        };
        assert_eq!(ftp.problem().unwrap().0, "url");
        let short = AlertChannel {
            secret: Some("short".into()),
            ..hook.clone()
        };
        assert_eq!(short.problem().unwrap().0, "secret");
        let mail = AlertChannel {
            kind: ChannelKind::Email,
            url: None,
            secret: None,
            to: vec!["ops@example.com".into(), "not an address".into()],
            ..hook.clone()
        };
        assert_eq!(mail.problem().unwrap().0, "to");
        let shown = hook.shown();
        assert_eq!(shown.secret.as_deref(), Some("(set)"));
        assert_eq!(shown.url.as_deref(), Some("https://example.com/…"));
    }
}
