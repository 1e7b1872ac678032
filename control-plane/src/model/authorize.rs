//! What each command asks of the access policy, and the facts it reads for it.
//!
//! The API asks [`command`] before it proposes a write (from its node's copy), and the
//! processor asks it again while applying the command (from the model as it is at that point of
//! the log, with the author's bindings as they are then), so a binding revoked in between is
//! enforced. Both get the same answer for the same state; refusals name what was attempted, and
//! a refusal the policy hides reads exactly like the object not existing.

use sqlx::SqliteConnection;

use super::outcome::Refusal;
use super::{
    ApiToken, Cluster, Command, DataCenter, Name, Pause, PauseScope, Rerun, Resume, Tenant, query,
};
use crate::policy::{self, Action, Binding, Decision, Object, Principal};

/// What a command was attempting, in the words the processor's refusals use.
pub fn doing(command: &Command) -> String {
    match command {
        Command::CreateDataCenter(dc) => format!("creating data center `{}`", dc.name),
        Command::UpdateDataCenter(dc) => format!("updating data center `{}`", dc.name),
        Command::DeleteDataCenter { name } => format!("deleting data center `{name}`"),
        Command::CreateCluster(c) => format!("creating cluster `{}`", c.name),
        Command::UpdateCluster(c) => format!("updating cluster `{}`", c.name),
        Command::DeleteCluster { name } => format!("deleting cluster `{name}`"),
        Command::CreateEnvironment(e) => format!("creating environment `{}`", e.name),
        Command::UpdateEnvironment(e) => format!("updating environment `{}`", e.name),
        Command::DeleteEnvironment { name } => format!("deleting environment `{name}`"),
        Command::CreateTenant(t) => format!("creating tenant `{}`", t.name),
        Command::UpdateTenant(t) => format!("updating tenant `{}`", t.name),
        Command::DeleteTenant { name } => format!("deleting tenant `{name}`"),
        Command::CreateGrant(g) => format!(
            "granting environment `{}` to tenant `{}`",
            g.environment, g.tenant
        ),
        Command::UpdateGrant(g) => format!(
            "changing the grant of environment `{}` to tenant `{}`",
            g.environment, g.tenant
        ),
        Command::DeleteGrant {
            tenant,
            environment,
        } => format!("revoking environment `{environment}` from tenant `{tenant}`"),
        Command::ApplyWorkflow(w) => {
            format!("applying workflow `{}` of tenant `{}`", w.name, w.tenant)
        }
        Command::DeleteWorkflow { tenant, name } => {
            format!("deleting workflow `{name}` of tenant `{tenant}`")
        }
        Command::CreateSchedule(s) => {
            format!("creating schedule `{}` of tenant `{}`", s.name, s.tenant)
        }
        Command::UpdateSchedule(s) => {
            format!("updating schedule `{}` of tenant `{}`", s.name, s.tenant)
        }
        Command::PatchSchedule(p) => {
            format!("updating schedule `{}` of tenant `{}`", p.name, p.tenant)
        }
        Command::Pause(p) => format!("pausing {}", p.scope),
        Command::Resume(r) => format!("resuming {}", r.scope),
        Command::DeleteSchedule { tenant, name } => {
            format!("deleting schedule `{name}` of tenant `{tenant}`")
        }
        Command::CreateToken(t) => format!("creating token `{}`", t.name),
        Command::DeleteToken { name } => format!("deleting token `{name}`"),
        Command::AgentHeartbeat(hb) => format!("heartbeat of agent `{}`", hb.agent),
        Command::AgentReport(r) => format!("report of agent `{}`", r.agent),
        Command::RequestRun(r) => {
            format!("running workflow `{}` of tenant `{}`", r.workflow, r.tenant)
        }
        Command::KillRun { run_id } => format!("killing run `{run_id}`"),
        Command::Rerun(r) if r.recover => format!("recovering run `{}`", r.run_id),
        Command::Rerun(r) => format!("re-running run `{}`", r.run_id),
        Command::CreateBackfill(b) => format!("backfilling schedule `{}/{}`", b.tenant, b.schedule),
        Command::ControlBackfill(c) => format!(
            "{} backfill `{}`",
            match c.action {
                super::BackfillAction::Pause => "pausing",
                super::BackfillAction::Resume => "resuming",
                super::BackfillAction::Cancel => "cancelling",
            },
            c.id
        ),
        Command::ResolveDoubts(r) => match &r.schedule {
            Some(s) => format!(
                "settling the records in doubt of schedule `{s}` of tenant `{}`",
                r.tenant
            ),
            None => format!("settling the records in doubt of tenant `{}`", r.tenant),
        },
        Command::Batch(items) => format!("a batch of {}", items.len()),
        Command::CreateUser { user, .. } => format!("creating user `{}`", user.name),
        Command::DeleteUser { name } => format!("deleting user `{name}`"),
        Command::SetPassword { user, .. } => {
            format!("changing the password of user `{user}`")
        }
        Command::BindUser { user, binding } => {
            format!("binding `{binding}` to user `{user}`")
        }
        Command::UnbindUser { user, binding } => {
            format!("unbinding `{binding}` from user `{user}`")
        }
        Command::CreateSession(s) => format!("signing in user `{}`", s.user),
        Command::DeleteSession { .. } => "signing out".into(),
        Command::Record(r) => format!("recording `{}`", r.op),
        Command::CreateAlertChannel(c) => format!(
            "creating alert channel `{}`",
            super::alerts::label(c.tenant.as_ref(), &c.name)
        ),
        Command::DeleteAlertChannel { tenant, name } => format!(
            "deleting alert channel `{}`",
            super::alerts::label(tenant.as_ref(), name)
        ),
        Command::CreateAlertRule(r) => format!(
            "creating alert rule `{}`",
            super::alerts::label(r.tenant.as_ref(), &r.name)
        ),
        Command::DeleteAlertRule { tenant, name } => format!(
            "deleting alert rule `{}`",
            super::alerts::label(tenant.as_ref(), name)
        ),
        Command::AlertAttempts(a) => format!("recording {} alert attempts", a.len()),
        Command::CheckAlerts => "checking timed alerts".into(),
        Command::ArchiveLogs(l) => format!("recording {} task logs copied to the bucket", l.len()),
        Command::RetireRuns(r) => format!("retiring runs finished before {} ms", r.before_ms),
        Command::ForgetArchivedLogs(l) => {
            format!("forgetting {} task logs deleted from the bucket", l.len())
        }
    }
}

/// One question to the policy: the action, the object's facts, and how a hidden object is
/// named when the refusal says it does not exist.
struct Need {
    action: Action,
    object: Object,
    hidden_as: (&'static str, String),
}

impl Need {
    fn new(action: Action, object: Object, kind: &'static str, name: impl Into<String>) -> Self {
        Self {
            action,
            object,
            hidden_as: (kind, name.into()),
        }
    }
}

/// Asks the policy about `command` on behalf of `principal`; `Ok` when every need is allowed.
pub async fn command(
    conn: &mut SqliteConnection,
    principal: &Principal,
    command: &Command,
) -> Result<(), Refusal> {
    // Admins may do anything: skip reading facts.
    if principal.is_admin() {
        return Ok(());
    }
    let needs = needs(conn, principal, command)
        .await
        .map_err(|e| Refusal::Invalid {
            doing: doing(command),
            field: "(model)".into(),
            problem: format!("reading what the access check needs: {e}"),
        })?;
    check(principal, &doing(command), &needs)
}

fn check(principal: &Principal, doing: &str, needs: &[Need]) -> Result<(), Refusal> {
    // Hidden first: a request touching another tenant reads as if it did not exist, whatever
    // else is wrong with it.
    let decisions: Vec<Decision> = needs
        .iter()
        .map(|n| policy::decide(principal, n.action, &n.object))
        .collect();
    if let Some(need) = needs
        .iter()
        .zip(&decisions)
        .find(|(_, d)| **d == Decision::Hidden)
        .map(|(n, _)| n)
    {
        return Err(Refusal::Missing {
            doing: doing.to_owned(),
            kind: need.hidden_as.0,
            name: need.hidden_as.1.clone(),
        });
    }
    if let Some(need) = needs
        .iter()
        .zip(&decisions)
        .find(|(_, d)| **d == Decision::Forbidden)
        .map(|(n, _)| n)
    {
        return Err(Refusal::Forbidden {
            doing: doing.to_owned(),
            actor: principal.actor(),
            needs: policy::who_may(need.action, &need.object),
        });
    }
    Ok(())
}

async fn needs(
    conn: &mut SqliteConnection,
    principal: &Principal,
    command: &Command,
) -> sqlx::Result<Vec<Need>> {
    use Action::*;
    let infra_create = |kind: &'static str, name: &Name| {
        vec![Need::new(
            Create,
            Object::Infrastructure { granted_to: vec![] },
            kind,
            name.to_string(),
        )]
    };
    Ok(match command {
        Command::CreateDataCenter(dc) => infra_create("data center", &dc.name),
        Command::CreateCluster(c) => infra_create("cluster", &c.name),
        Command::CreateEnvironment(e) => infra_create("environment", &e.name),
        Command::UpdateDataCenter(DataCenter { name, .. }) | Command::DeleteDataCenter { name } => {
            vec![Need::new(
                Change,
                Object::Infrastructure {
                    granted_to: granted_to(conn, Infra::DataCenter, name).await?,
                },
                "data center",
                name.to_string(),
            )]
        }
        Command::UpdateCluster(Cluster { name, .. }) | Command::DeleteCluster { name } => {
            vec![Need::new(
                Change,
                Object::Infrastructure {
                    granted_to: granted_to(conn, Infra::Cluster, name).await?,
                },
                "cluster",
                name.to_string(),
            )]
        }
        Command::DeleteEnvironment { name } => vec![Need::new(
            Change,
            Object::Infrastructure {
                granted_to: granted_to(conn, Infra::Environment, name).await?,
            },
            "environment",
            name.to_string(),
        )],
        Command::UpdateEnvironment(e) => vec![Need::new(
            Change,
            Object::Infrastructure {
                granted_to: granted_to(conn, Infra::Environment, &e.name).await?,
            },
            "environment",
            e.name.to_string(),
        )],
        Command::CreateTenant(t) => vec![Need::new(
            Create,
            Object::Tenant(t.name.clone()),
            "tenant",
            t.name.to_string(),
        )],
        Command::UpdateTenant(Tenant { name, .. }) | Command::DeleteTenant { name } => {
            vec![Need::new(
                Change,
                Object::Tenant(name.clone()),
                "tenant",
                name.to_string(),
            )]
        }
        Command::CreateGrant(g) => vec![Need::new(
            Create,
            Object::Grant(g.tenant.clone()),
            "tenant",
            g.tenant.to_string(),
        )],
        Command::DeleteGrant {
            tenant,
            environment,
        } => vec![Need::new(
            Change,
            Object::Grant(tenant.clone()),
            "grant",
            format!("{tenant}/{environment}"),
        )],
        Command::UpdateGrant(g) => vec![Need::new(
            Change,
            Object::Grant(g.tenant.clone()),
            "grant",
            format!("{}/{}", g.tenant, g.environment),
        )],
        Command::ApplyWorkflow(w) => vec![Need::new(
            Create,
            Object::Definition(w.tenant.clone()),
            "tenant",
            w.tenant.to_string(),
        )],
        Command::CreateSchedule(s) => vec![Need::new(
            Create,
            Object::Definition(s.tenant.clone()),
            "tenant",
            s.tenant.to_string(),
        )],
        Command::UpdateSchedule(s) => vec![Need::new(
            Change,
            Object::Definition(s.tenant.clone()),
            "schedule",
            format!("{}/{}", s.tenant, s.name),
        )],
        Command::PatchSchedule(p) => vec![Need::new(
            Change,
            Object::Definition(p.tenant.clone()),
            "schedule",
            format!("{}/{}", p.tenant, p.name),
        )],
        Command::Pause(Pause { scope, .. }) | Command::Resume(Resume { scope, .. }) => {
            match scope {
                PauseScope::Environment { name } => vec![Need::new(
                    Control,
                    Object::Infrastructure {
                        granted_to: granted_to(conn, Infra::Environment, name).await?,
                    },
                    "environment",
                    name.to_string(),
                )],
                PauseScope::Schedule { tenant, name } | PauseScope::Workflow { tenant, name } => {
                    let kind = match scope {
                        PauseScope::Schedule { .. } => "schedule",
                        _ => "workflow",
                    };
                    vec![Need::new(
                        Control,
                        Object::Run(tenant.clone()),
                        kind,
                        format!("{tenant}/{name}"),
                    )]
                }
                PauseScope::Tenant { name } => vec![Need::new(
                    Control,
                    Object::Run(name.clone()),
                    "tenant",
                    name.to_string(),
                )],
            }
        }
        Command::DeleteWorkflow { tenant, name } => vec![Need::new(
            Change,
            Object::Definition(tenant.clone()),
            "workflow",
            format!("{tenant}/{name}"),
        )],
        Command::DeleteSchedule { tenant, name } => vec![Need::new(
            Change,
            Object::Definition(tenant.clone()),
            "schedule",
            format!("{tenant}/{name}"),
        )],
        Command::RequestRun(r) => vec![Need::new(
            Control,
            Object::Run(r.tenant.clone()),
            "workflow",
            format!("{}/{}", r.tenant, r.workflow),
        )],
        // The tenant is in the run's id (`history::tenant_of_run`): no read needed. A run
        // that does not exist is the processor's to say.
        Command::Rerun(Rerun { run_id, .. }) => match super::history::tenant_of_run(run_id) {
            Some(tenant) => vec![Need::new(Control, Object::Run(tenant), "run", run_id)],
            None => vec![],
        },
        Command::KillRun { run_id } => match super::history::tenant_of_run(run_id) {
            Some(tenant) => vec![Need::new(Control, Object::Run(tenant), "run", run_id)],
            None => vec![],
        },
        Command::CreateBackfill(b) => vec![Need::new(
            Control,
            Object::Run(b.tenant.clone()),
            "schedule",
            format!("{}/{}", b.tenant, b.schedule),
        )],
        // Its id names its tenant, as a run's does.
        Command::ControlBackfill(c) => match super::history::tenant_of_run(&c.id) {
            Some(tenant) => vec![Need::new(Control, Object::Run(tenant), "backfill", &c.id)],
            None => vec![],
        },
        Command::ResolveDoubts(r) => vec![Need::new(
            Control,
            Object::Run(r.tenant.clone()),
            "schedule",
            match &r.schedule {
                Some(s) => format!("{}/{s}", r.tenant),
                None => r.tenant.to_string(),
            },
        )],
        Command::CreateToken(t) => new_principal("token", &t.name, &t.bindings),
        Command::CreateUser { user, .. } => new_principal("user", &user.name, &user.bindings),
        // A user or token that does not exist is, to anyone but an admin, one they may not
        // see: the same answer as another tenant's, at once (no oracle for what exists).
        Command::DeleteToken { name } => vec![Need::new(
            Change,
            Object::Principal {
                bindings: token(conn, name)
                    .await?
                    .map(|t| t.bindings)
                    .unwrap_or_default(),
                own: false,
            },
            "token",
            name.to_string(),
        )],
        Command::DeleteUser { name } => vec![Need::new(
            Change,
            Object::Principal {
                bindings: user_bindings(conn, name).await?.unwrap_or_default(),
                own: false,
            },
            "user",
            name.to_string(),
        )],
        Command::SetPassword { user, .. } => {
            let own = principal.user() == Some(user);
            let bindings = user_bindings(conn, user).await?;
            vec![Need::new(
                Change,
                Object::Password {
                    // Missing: only its own user could see it, and that user exists.
                    own: own && bindings.is_some(),
                    bindings: bindings.unwrap_or_default(),
                },
                "user",
                user.to_string(),
            )]
        }
        Command::BindUser { user, binding } | Command::UnbindUser { user, binding } => {
            let action = if matches!(command, Command::BindUser { .. }) {
                Create
            } else {
                Change
            };
            // The user must be one the principal may see at all (a missing one is not).
            let bindings = user_bindings(conn, user).await?;
            vec![
                Need::new(
                    Read,
                    Object::Principal {
                        own: principal.user() == Some(user) && bindings.is_some(),
                        bindings: bindings.unwrap_or_default(),
                    },
                    "user",
                    user.to_string(),
                ),
                binding_need(action, binding),
            ]
        }
        // Made only by the plane's own code, never from a request body: a sign-in the node
        // checked, a sign-out of the caller's own session, a refusal being recorded.
        Command::CreateSession(_) | Command::DeleteSession { .. } | Command::Record(_) => {
            vec![]
        }
        // A tenant's alerts are its members' to write as its definitions are; the federation's
        // are the admins' (operators see them).
        Command::CreateAlertChannel(super::AlertChannel { tenant, name, .. })
        | Command::CreateAlertRule(super::AlertRule { tenant, name, .. }) => {
            let kind = if matches!(command, Command::CreateAlertRule(_)) {
                "alert rule"
            } else {
                "alert channel"
            };
            vec![alert_need(Create, tenant.as_ref(), kind, name)]
        }
        Command::DeleteAlertChannel { tenant, name } => {
            vec![alert_need(Change, tenant.as_ref(), "alert channel", name)]
        }
        Command::DeleteAlertRule { tenant, name } => {
            vec![alert_need(Change, tenant.as_ref(), "alert rule", name)]
        }
        // The courier's, proposed by the plane itself; never from a request.
        Command::AlertAttempts(_) | Command::CheckAlerts => {
            vec![Need::new(Change, Object::Plane, "alerts", String::new())]
        }
        // The archiver's, proposed by the plane itself; never from a request.
        Command::ArchiveLogs(_) | Command::ForgetArchivedLogs(_) => {
            vec![Need::new(Change, Object::Plane, "logs", String::new())]
        }
        // The retirer's, proposed by the plane itself; never from a request.
        Command::RetireRuns(_) => {
            vec![Need::new(Change, Object::Plane, "history", String::new())]
        }
        // Agents' traffic is authorised by their certificates; a person or token never sends it.
        Command::AgentHeartbeat(_) | Command::AgentReport(_) => vec![Need::new(
            Change,
            Object::Operations,
            "agent",
            String::new(),
        )],
        Command::Batch(items) => {
            let mut all = Vec::new();
            for item in items {
                all.extend(Box::pin(needs(conn, principal, item)).await?);
            }
            all
        }
    })
}

/// A tenant's alert channel or rule is one of its definitions; the federation's are
/// operations (seen by operators, written by admins).
fn alert_need(action: Action, tenant: Option<&Name>, kind: &'static str, name: &Name) -> Need {
    match (tenant, action) {
        (Some(t), Action::Create) => Need::new(
            action,
            Object::Definition(t.clone()),
            "tenant",
            t.to_string(),
        ),
        (Some(t), _) => Need::new(
            action,
            Object::Definition(t.clone()),
            kind,
            format!("{t}/{name}"),
        ),
        (None, _) => Need::new(action, Object::Operations, kind, name.to_string()),
    }
}

/// A new user or token: each of its bindings must be the principal's to give, and one with no
/// binding at all is an admin's to make (it would hold nobody's role, so no owner's).
fn new_principal(kind: &'static str, name: &Name, bindings: &[Binding]) -> Vec<Need> {
    let mut needs: Vec<Need> = bindings
        .iter()
        .map(|b| binding_need(Action::Create, b))
        .collect();
    needs.push(Need::new(
        Action::Create,
        Object::Principal {
            bindings: bindings.to_vec(),
            own: false,
        },
        kind,
        name.to_string(),
    ));
    needs
}

fn binding_need(action: Action, binding: &Binding) -> Need {
    let (kind, name) = match &binding.tenant {
        Some(t) => ("tenant", t.to_string()),
        None => ("role", binding.role.to_string()),
    };
    Need::new(action, Object::Binding(binding.clone()), kind, name)
}

/// Infrastructure, for the grants that reveal it to tenants.
#[derive(Clone, Copy)]
pub enum Infra {
    DataCenter,
    Cluster,
    Environment,
}

/// The tenants whose grants name this data center, cluster or environment (through one of its
/// environments): who may see it.
pub async fn granted_to(
    conn: &mut SqliteConnection,
    kind: Infra,
    name: &Name,
) -> sqlx::Result<Vec<Name>> {
    let sql = match kind {
        Infra::DataCenter => {
            "SELECT DISTINCT g.tenant FROM grants g JOIN environments e ON e.name = g.environment \
             JOIN clusters c ON c.name = e.cluster WHERE c.dc = ? ORDER BY g.tenant"
        }
        Infra::Cluster => {
            "SELECT DISTINCT g.tenant FROM grants g JOIN environments e ON e.name = g.environment \
             WHERE e.cluster = ? ORDER BY g.tenant"
        }
        Infra::Environment => {
            "SELECT DISTINCT tenant FROM grants WHERE environment = ? ORDER BY tenant"
        }
    };
    let rows: Vec<String> = sqlx::query_scalar(sql)
        .bind(name.as_str())
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.into_iter().filter_map(|t| Name::new(t).ok()).collect())
}

async fn token(conn: &mut SqliteConnection, name: &Name) -> sqlx::Result<Option<ApiToken>> {
    let doc: Option<String> = sqlx::query_scalar("SELECT doc FROM tokens WHERE name = ?")
        .bind(name.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    doc.map(query::decode).transpose()
}

async fn user_bindings(
    conn: &mut SqliteConnection,
    name: &Name,
) -> sqlx::Result<Option<Vec<Binding>>> {
    Ok(super::access::user(conn, name).await?.map(|u| u.bindings))
}
