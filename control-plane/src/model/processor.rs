//! Applies proposals to the model's SQLite state.
//!
//! [`apply`] asks the access policy again (with the author's bindings as they are at this
//! point of the log), then `execute`'s one exhaustive `match` over [`Command`] dispatches to
//! the room of the command's family (`infrastructure`, `tenancy`, `definitions`, `leasing`,
//! `history`, `access`), what it means for the backfills and alerts follows (`backfills::follow`,
//! `alerts::raise::follow`), and the
//! outcome is audited. Every room decides (reads what it must check, refuses with a message
//! naming what is wrong) before it writes; no room refuses after it has written anything,
//! which lets a batch skip per-command savepoints. Everything
//! happens inside a nested transaction (a savepoint when the caller already holds one), so a
//! refused command leaves no trace and the caller — the Raft state machine — can still record
//! the log index as applied in its own transaction.

use sqlx::{Connection, SqliteConnection};

use super::checks::{json, subject};
use super::{Author, Command, Name, Proposal};

pub use super::outcome::{Applied, ApplyError, Context, Refusal, RefusalKind, Rejection};

/// Applies `proposal`, which is the Raft log entry at `index`. On refusal nothing changes but
/// the audit trail, which records the refusal and who was refused.
pub async fn apply(
    conn: &mut SqliteConnection,
    index: u64,
    proposal: &Proposal,
) -> Result<Applied, ApplyError> {
    let command = proposal.command();
    let mut tx = conn.begin().await?;
    let context = Context {
        index,
        at_ms: proposal.at_ms(),
        item: None,
    };
    let outcome = match authorize(&mut tx, proposal).await {
        Ok(()) => execute(&mut tx, context, command).await,
        Err(refused) => Err(refused),
    };
    match outcome {
        Ok(applied) => {
            super::backfills::follow(&mut tx, context, command).await?;
            super::alerts::raise::follow(&mut tx, context, command).await?;
            if command.changes_definitions() {
                super::checks::definitions_moved(&mut tx, index).await?;
            }
            if command.audited() {
                let entry = match command {
                    Command::Record(r) => AuditRow {
                        actor: r.actor.clone(),
                        op: &r.op,
                        subject: r.subject.clone(),
                        outcome: r.outcome.as_str(),
                        message: r.message.clone(),
                    },
                    _ => AuditRow {
                        actor: audit_actor(proposal),
                        op: command.op(),
                        subject: applied.subject.clone(),
                        outcome: "applied",
                        message: String::new(),
                    },
                };
                audit(&mut tx, index, proposal, entry).await?;
            }
            tx.commit().await?;
            Ok(applied)
        }
        Err(ApplyError::Refused(refusal)) => {
            tx.rollback().await?;
            if command.audited() {
                let entry = AuditRow {
                    actor: audit_actor(proposal),
                    op: command.op(),
                    subject: super::authorize::doing(command),
                    outcome: "refused",
                    message: refusal.to_string(),
                };
                audit(&mut *conn, index, proposal, entry).await?;
            }
            Err(refusal.into())
        }
        Err(storage) => {
            tx.rollback().await?;
            Err(storage)
        }
    }
}

/// One row of the audit trail.
struct AuditRow<'a> {
    actor: String,
    op: &'a str,
    subject: String,
    outcome: &'static str,
    message: String,
}

async fn audit(
    conn: &mut SqliteConnection,
    index: u64,
    proposal: &Proposal,
    row: AuditRow<'_>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit (log_index, actor, at_ms, op, subject, command, tenant, outcome, message) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(index as i64)
    .bind(row.actor)
    .bind(proposal.at_ms())
    .bind(row.op)
    .bind(row.subject)
    .bind(json(&proposal.command().redacted()))
    .bind(proposal.command().tenant().as_ref().map(Name::as_str))
    .bind(row.outcome)
    .bind(row.message)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// Who the audit trail names: the proposal's author, except for a sign-in, which the plane
/// proposes on behalf of the user whose password it checked.
fn audit_actor(proposal: &Proposal) -> String {
    match proposal.command() {
        Command::CreateSession(s) => format!("user:{}", s.user),
        _ => proposal.actor(),
    }
}

/// The policy again, at apply time: the author as the model holds it now (a deleted token or
/// a revoked binding no longer counts), asked about this command.
async fn authorize(tx: &mut SqliteConnection, proposal: &Proposal) -> Result<(), ApplyError> {
    let command = proposal.command();
    let author = proposal.author();
    if let Author::Agent { hostname, cluster } = &author {
        let own = match command {
            Command::AgentHeartbeat(hb) => &hb.cluster == cluster && &hb.agent == hostname,
            Command::AgentReport(r) => &r.cluster == cluster && &r.agent == hostname,
            _ => false,
        };
        if !own {
            return Err(Refusal::Forbidden {
                doing: super::authorize::doing(command),
                actor: author.actor(),
                needs: "an agent's own heartbeats and reports only".into(),
            }
            .into());
        }
        return Ok(());
    }
    let doing = super::authorize::doing(command);
    let Some(principal) = super::access::principal(tx, &author, proposal.at_ms(), &doing).await?
    else {
        return Ok(());
    };
    super::authorize::command(tx, &principal, command).await?;
    Ok(())
}

async fn execute(
    tx: &mut SqliteConnection,
    context: Context,
    command: &Command,
) -> Result<Applied, ApplyError> {
    match command {
        Command::CreateDataCenter(dc) => super::infrastructure::create_data_center(tx, dc).await,
        Command::UpdateDataCenter(dc) => super::infrastructure::update_data_center(tx, dc).await,
        Command::DeleteDataCenter { name } => {
            super::infrastructure::delete_data_center(tx, name).await
        }
        Command::CreateCluster(c) => super::infrastructure::create_cluster(tx, c).await,
        Command::UpdateCluster(c) => super::infrastructure::update_cluster(tx, c).await,
        Command::DeleteCluster { name } => super::infrastructure::delete_cluster(tx, name).await,
        Command::CreateEnvironment(e) => super::infrastructure::create_environment(tx, e).await,
        Command::UpdateEnvironment(e) => super::infrastructure::update_environment(tx, e).await,
        Command::DeleteEnvironment { name } => {
            super::infrastructure::delete_environment(tx, name).await
        }
        Command::CreateTenant(t) => super::tenancy::create_tenant(tx, t).await,
        Command::UpdateTenant(t) => super::tenancy::update_tenant(tx, t).await,
        Command::DeleteTenant { name } => super::tenancy::delete_tenant(tx, name).await,
        Command::CreateGrant(g) => super::tenancy::create_grant(tx, g).await,
        Command::UpdateGrant(g) => super::tenancy::update_grant(tx, g).await,
        Command::DeleteGrant {
            tenant,
            environment,
        } => super::tenancy::delete_grant(tx, tenant, environment).await,
        Command::ApplyWorkflow(w) => super::definitions::apply_workflow(tx, w).await,
        Command::DeleteWorkflow { tenant, name } => {
            super::definitions::delete_workflow(tx, tenant, name).await
        }
        Command::CreateSchedule(s) => super::definitions::create_schedule(tx, context, s).await,
        Command::UpdateSchedule(s) => super::definitions::update_schedule(tx, s).await,
        Command::PatchSchedule(p) => super::definitions::patch_schedule(tx, p).await,
        Command::Pause(p) => super::pauses::pause(tx, context, p).await,
        Command::Resume(r) => super::pauses::resume(tx, context, r).await,
        Command::Rerun(r) => super::rerun::rerun(tx, context, r).await,
        Command::CreateBackfill(b) => super::backfills::create(tx, context, b).await,
        Command::ControlBackfill(c) => super::backfills::control(tx, context, c).await,
        Command::CreateAlertChannel(c) => super::alerts::create_channel(tx, c).await,
        Command::DeleteAlertChannel { tenant, name } => {
            super::alerts::delete_channel(tx, tenant.as_ref(), name).await
        }
        Command::CreateAlertRule(r) => super::alerts::create_rule(tx, r).await,
        Command::DeleteAlertRule { tenant, name } => {
            super::alerts::delete_rule(tx, tenant.as_ref(), name).await
        }
        Command::AlertAttempts(a) => super::alerts::outbox::record(tx, context, a).await,
        Command::CheckAlerts => super::alerts::raise::check(tx, context).await,
        Command::ArchiveLogs(logs) => super::archive::record(tx, context, logs).await,
        Command::ForgetArchivedLogs(attempts) => super::archive::forget(tx, attempts).await,
        Command::RetireRuns(retire) => super::retire::retire(tx, context, retire).await,
        Command::AgentHeartbeat(heartbeat) => {
            super::leasing::heartbeat(tx, context, heartbeat).await
        }
        Command::AgentReport(report) => super::history::report(tx, context, report).await,
        Command::RequestRun(request) => super::history::request_run(tx, context, request).await,
        Command::KillRun { run_id } => super::history::kill_run(tx, context, run_id).await,
        Command::ResolveDoubts(r) => super::doubt::resolve_command(tx, context, r).await,
        Command::DeleteSchedule { tenant, name } => {
            super::definitions::delete_schedule(tx, context, tenant, name).await
        }
        Command::Batch(items) => batch(tx, context, items).await,
        Command::CreateToken(token) => super::access::create_token(tx, token).await,
        Command::DeleteToken { name } => super::access::delete_token(tx, name).await,
        Command::CreateUser { user, password } => {
            super::access::create_user(tx, user, password).await
        }
        Command::DeleteUser { name } => super::access::delete_user(tx, name).await,
        Command::SetPassword { user, password } => {
            super::access::set_password(tx, user, password).await
        }
        Command::BindUser { user, binding } => super::access::bind_user(tx, user, binding).await,
        Command::UnbindUser { user, binding } => {
            super::access::unbind_user(tx, user, binding).await
        }
        Command::CreateSession(session) => {
            super::access::create_session(tx, session, context.at_ms).await
        }
        Command::DeleteSession { hash } => super::access::delete_session(tx, hash).await,
        // Its whole effect is its audit row, written by `apply`.
        Command::Record(r) => Ok(subject(r.subject.clone())),
    }
}

/// Applies each command of a batch on its own, in order; one outcome per command.
async fn batch(
    tx: &mut SqliteConnection,
    context: Context,
    items: &[Command],
) -> Result<Applied, ApplyError> {
    let mut results = Vec::with_capacity(items.len());
    for (place, item) in items.iter().enumerate() {
        if matches!(item, Command::Batch(_)) {
            results.push(Err(Rejection {
                kind: RefusalKind::Invalid,
                message: "batch: a batch may not contain a batch".into(),
            }));
            continue;
        }
        // No savepoint per command: every arm decides before it writes (a refusal
        // comes before any change), so a refused command has nothing to undo. This
        // halves the statements a batch costs; `tests/model.rs` re-runs every refusal
        // inside a batch to hold the arms to it.
        let context = Context {
            item: Some(place),
            ..context
        };
        match Box::pin(execute(tx, context, item)).await {
            Ok(applied) => results.push(Ok(applied)),
            Err(ApplyError::Refused(refusal)) => results.push(Err(refusal.into())),
            Err(storage) => return Err(storage),
        }
    }
    let refused = results.iter().filter(|r| r.is_err()).count();
    Ok(Applied {
        subject: format!("batch of {} ({refused} refused)", results.len()),
        version: None,
        items: results,
        detail: None,
    })
}
