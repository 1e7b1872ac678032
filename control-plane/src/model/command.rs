//! What the processor and the audit trail ask of a [`Command`]: its operation name, the tenant
//! it concerns, whether it is audited, whether it changes access or definitions, and the shape
//! the audit trail keeps (secrets left out).

use super::{
    ApiToken, BackfillAction, BackfillControl, Command, Name, Rerun, Session, history, only_tenant,
};

impl Command {
    /// A short operation name for the audit trail (`create_cluster`).
    pub fn op(&self) -> &'static str {
        match self {
            Self::CreateDataCenter(_) => "create_data_center",
            Self::UpdateDataCenter(_) => "update_data_center",
            Self::DeleteDataCenter { .. } => "delete_data_center",
            Self::CreateCluster(_) => "create_cluster",
            Self::UpdateCluster(_) => "update_cluster",
            Self::DeleteCluster { .. } => "delete_cluster",
            Self::CreateEnvironment(_) => "create_environment",
            Self::UpdateEnvironment(_) => "update_environment",
            Self::DeleteEnvironment { .. } => "delete_environment",
            Self::CreateTenant(_) => "create_tenant",
            Self::UpdateTenant(_) => "update_tenant",
            Self::DeleteTenant { .. } => "delete_tenant",
            Self::CreateGrant(_) => "create_grant",
            Self::UpdateGrant(_) => "update_grant",
            Self::DeleteGrant { .. } => "delete_grant",
            Self::ApplyWorkflow(_) => "apply_workflow",
            Self::DeleteWorkflow { .. } => "delete_workflow",
            Self::CreateSchedule(_) => "create_schedule",
            Self::DeleteSchedule { .. } => "delete_schedule",
            Self::CreateToken(_) => "create_token",
            Self::DeleteToken { .. } => "delete_token",
            Self::UpdateSchedule(_) => "update_schedule",
            Self::AgentHeartbeat(_) => "agent_heartbeat",
            Self::AgentReport(_) => "agent_report",
            Self::RequestRun(_) => "request_run",
            Self::KillRun { .. } => "kill_run",
            Self::ResolveDoubts(_) => "resolve_doubts",
            Self::Batch(_) => "batch",
            Self::CreateUser { .. } => "create_user",
            Self::DeleteUser { .. } => "delete_user",
            Self::SetPassword { .. } => "set_password",
            Self::BindUser { .. } => "bind_user",
            Self::UnbindUser { .. } => "unbind_user",
            Self::CreateSession(_) => "sign_in",
            Self::DeleteSession { .. } => "sign_out",
            // The operation's own name is in the record's audit row.
            Self::Record(_) => "record",
            Self::PatchSchedule(_) => "update_schedule",
            Self::Pause(_) => "pause",
            Self::Resume(_) => "resume",
            Self::Rerun(r) if r.recover => "recover_run",
            Self::Rerun(_) => "rerun",
            Self::CreateBackfill(_) => "create_backfill",
            Self::ControlBackfill(c) => match c.action {
                BackfillAction::Pause => "pause_backfill",
                BackfillAction::Resume => "resume_backfill",
                BackfillAction::Cancel => "cancel_backfill",
            },
            Self::CreateAlertChannel(_) => "create_alert_channel",
            Self::DeleteAlertChannel { .. } => "delete_alert_channel",
            Self::CreateAlertRule(_) => "create_alert_rule",
            Self::DeleteAlertRule { .. } => "delete_alert_rule",
            Self::AlertAttempts(_) => "alert_attempts",
            Self::CheckAlerts => "check_alerts",
            Self::ArchiveLogs(_) => "archive_logs",
            Self::ForgetArchivedLogs(_) => "forget_archived_logs",
            Self::RetireRuns(_) => "retire_runs",
        }
    }

    /// The tenant the command concerns, for the audit trail (none: the federation). A kill
    /// or re-run names its run, whose id names the tenant; a batch whose commands all concern
    /// one tenant concerns it.
    pub fn tenant(&self) -> Option<Name> {
        match self {
            Self::KillRun { run_id }
            | Self::Rerun(Rerun { run_id, .. })
            | Self::ControlBackfill(BackfillControl { id: run_id, .. }) => {
                history::tenant_of_run(run_id)
            }
            Self::Batch(items) => {
                let mut tenants = items.iter().map(Command::tenant);
                let first = tenants.next().flatten()?;
                tenants.all(|t| t.as_ref() == Some(&first)).then_some(first)
            }
            other => other.own_tenant().cloned(),
        }
    }

    /// [`Command::tenant`] where the command holds the name itself.
    fn own_tenant(&self) -> Option<&Name> {
        match self {
            Self::CreateGrant(g) | Self::UpdateGrant(g) => Some(&g.tenant),
            Self::ApplyWorkflow(w) => Some(&w.tenant),
            Self::CreateSchedule(s) | Self::UpdateSchedule(s) => Some(&s.tenant),
            Self::PatchSchedule(p) => Some(&p.tenant),
            Self::Pause(p) => p.scope.tenant(),
            Self::Resume(r) => r.scope.tenant(),
            Self::UpdateTenant(t) => Some(&t.name),
            Self::DeleteTenant { name } => Some(name),
            Self::DeleteGrant { tenant, .. }
            | Self::DeleteWorkflow { tenant, .. }
            | Self::DeleteSchedule { tenant, .. } => Some(tenant),
            Self::RequestRun(r) => Some(&r.tenant),
            Self::CreateBackfill(b) => Some(&b.tenant),
            Self::CreateAlertChannel(c) => c.tenant.as_ref(),
            Self::CreateAlertRule(r) => r.tenant.as_ref(),
            Self::DeleteAlertChannel { tenant, .. } | Self::DeleteAlertRule { tenant, .. } => {
                tenant.as_ref()
            }
            Self::CreateToken(t) => only_tenant(&t.bindings),
            Self::CreateUser { user, .. } => only_tenant(&user.bindings),
            Self::BindUser { binding, .. } | Self::UnbindUser { binding, .. } => {
                binding.tenant.as_ref()
            }
            Self::Record(r) => r.tenant.as_ref(),
            _ => None,
        }
    }

    /// Whether the audit trail records it. Agents' heartbeats and reports are machine traffic
    /// many times a second; their effect is in the leases and the run history. A batch is
    /// when any of its commands is (the intake's batches of reports are not).
    pub fn audited(&self) -> bool {
        if let Self::Batch(items) = self {
            return items.iter().any(Command::audited);
        }
        !matches!(
            self,
            Self::AgentHeartbeat(_)
                | Self::AgentReport(_)
                | Self::AlertAttempts(_)
                | Self::CheckAlerts
                | Self::ArchiveLogs(_)
                | Self::ForgetArchivedLogs(_)
                | Self::RetireRuns(_)
        )
    }

    /// Whether it changes who may do what (credentials, bindings, sessions), so resolved
    /// principals must be looked up again.
    pub fn changes_access(&self) -> bool {
        match self {
            Self::CreateToken(_)
            | Self::DeleteToken { .. }
            | Self::CreateUser { .. }
            | Self::DeleteUser { .. }
            | Self::SetPassword { .. }
            | Self::BindUser { .. }
            | Self::UnbindUser { .. }
            | Self::CreateSession(_)
            | Self::DeleteSession { .. }
            | Self::DeleteTenant { .. } => true,
            Self::Batch(items) => items.iter().any(Command::changes_access),
            _ => false,
        }
    }

    /// Whether it changes what agents run, so they must fetch their schedules again.
    pub fn changes_definitions(&self) -> bool {
        match self {
            Self::CreateCluster(_)
            | Self::UpdateCluster(_)
            | Self::DeleteCluster { .. }
            | Self::CreateEnvironment(_)
            | Self::UpdateEnvironment(_)
            | Self::DeleteEnvironment { .. }
            | Self::CreateGrant(_)
            | Self::UpdateGrant(_)
            | Self::DeleteGrant { .. }
            | Self::ApplyWorkflow(_)
            | Self::DeleteWorkflow { .. }
            | Self::CreateSchedule(_)
            | Self::UpdateSchedule(_)
            | Self::PatchSchedule(_)
            | Self::Pause(_)
            | Self::Resume(_)
            | Self::DeleteSchedule { .. } => true,
            Self::Batch(items) => items.iter().any(Command::changes_definitions),
            _ => false,
        }
    }

    /// The command as the audit trail records it: secrets' hashes left out.
    pub fn redacted(&self) -> Command {
        match self {
            Self::CreateToken(token) => Self::CreateToken(ApiToken {
                hash: "(redacted)".into(),
                ..token.clone()
            }),
            Self::Batch(items) => Self::Batch(items.iter().map(Command::redacted).collect()),
            Self::CreateUser { user, .. } => Self::CreateUser {
                user: user.clone(),
                password: "(redacted)".into(),
            },
            Self::SetPassword { user, .. } => Self::SetPassword {
                user: user.clone(),
                password: "(redacted)".into(),
            },
            Self::CreateSession(session) => Self::CreateSession(Session {
                hash: "(redacted)".into(),
                ..session.clone()
            }),
            Self::DeleteSession { .. } => Self::DeleteSession {
                hash: "(redacted)".into(),
            },
            Self::CreateAlertChannel(c) => Self::CreateAlertChannel(c.clone().shown()),
            other => other.clone(),
        }
    }
}
