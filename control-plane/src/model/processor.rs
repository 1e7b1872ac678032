//! Applies proposals to the model's SQLite state.
//!
//! One exhaustive `match` over [`Command`]. Each arm first decides (reads what it must check,
//! refuses with a message naming what is wrong) and then writes; no arm refuses after it has
//! written anything, which lets a batch skip per-command savepoints. Everything happens inside a
//! nested transaction (a savepoint when the caller already holds one), so a refused command
//! leaves no trace and the caller — the Raft state machine — can still record the log index
//! as applied in its own transaction.

use sqlx::{Connection, Row, SqliteConnection};

use super::{Author, Command, Name, Proposal};
use meridian_proto::ScheduleId;

/// Why a command was refused. Messages say what was being attempted and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{doing}: {kind} `{name}` does not exist")]
    Missing {
        doing: String,
        kind: &'static str,
        name: String,
    },
    #[error("{doing}: {kind} `{name}` already exists")]
    Exists {
        doing: String,
        kind: &'static str,
        name: String,
    },
    #[error("{doing}: it is still used by {users}; delete or move those first")]
    InUse { doing: String, users: String },
    #[error("{doing}: environment `{environment}` is not granted to tenant `{tenant}`")]
    NotGranted {
        doing: String,
        environment: String,
        tenant: String,
    },
    #[error("{doing}: {field}: {problem}")]
    Invalid {
        doing: String,
        field: String,
        problem: String,
    },
    /// The access policy refused: the principal may see the object but not do this.
    #[error("{doing}: {actor} may not do this; it needs {needs}")]
    Forbidden {
        doing: String,
        actor: String,
        needs: String,
    },
    /// The author's credential was gone by the time the command was applied.
    #[error("{doing}: {why}")]
    Unauthenticated { doing: String, why: String },
}

/// What sort of refusal, so callers can answer with the right status without parsing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    Missing,
    Exists,
    InUse,
    NotGranted,
    Invalid,
    Forbidden,
    Unauthenticated,
}

impl Refusal {
    pub fn kind(&self) -> RefusalKind {
        match self {
            Self::Missing { .. } => RefusalKind::Missing,
            Self::Exists { .. } => RefusalKind::Exists,
            Self::InUse { .. } => RefusalKind::InUse,
            Self::NotGranted { .. } => RefusalKind::NotGranted,
            Self::Invalid { .. } => RefusalKind::Invalid,
            Self::Forbidden { .. } => RefusalKind::Forbidden,
            Self::Unauthenticated { .. } => RefusalKind::Unauthenticated,
        }
    }
}

/// A refusal as it travels back to the client: its kind and its message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub kind: RefusalKind,
    pub message: String,
}

impl From<Refusal> for Rejection {
    fn from(refusal: Refusal) -> Self {
        Self {
            kind: refusal.kind(),
            message: refusal.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The database failed; the command's effect is unknown to the caller and must not be
    /// acknowledged. (Distinct from a refusal, which is a deterministic outcome.)
    #[error("model storage: {0}")]
    Storage(#[from] sqlx::Error),
}

/// What an applied command did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    /// What was changed, e.g. `cluster nj-main` or `workflow ads/etl`.
    pub subject: String,
    /// The new version, for versioned things (workflows, schedules).
    pub version: Option<u64>,
    /// For a batch: each command's own outcome, in order (empty otherwise).
    pub items: Vec<Result<Applied, Rejection>>,
    /// What the command's caller needs back beyond the subject (an agent's leases after a
    /// heartbeat, which report entries were refused, a requested run's id), as JSON text:
    /// outcomes cross the peer link in a binary codec that cannot carry a free-form value.
    pub detail: Option<String>,
}

/// The log entry being applied: its index and the proposal's stamped time, for commands that
/// decide with the time (leases) or derive ids from the position in the log (run-now ids).
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub index: u64,
    pub at_ms: i64,
    /// Inside a batch, the command's place in it (ids derived from the log position must
    /// tell a batch's commands apart).
    pub item: Option<usize>,
}

impl Context {
    /// A unique, replica-independent name for this command's place in the log: the entry's
    /// index, and its place in a batch (`42`, `42.1`).
    pub fn position(&self) -> String {
        match self.item {
            None => self.index.to_string(),
            Some(i) => format!("{}.{i}", self.index),
        }
    }
}

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
            if command.changes_definitions() {
                sqlx::query(
                    "INSERT INTO counters (name, value) VALUES ('definitions', ?) \
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                )
                .bind(index as i64)
                .execute(&mut *tx)
                .await?;
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
    .bind(proposal.command().tenant().map(Name::as_str))
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
        Command::CreateDataCenter(dc) => {
            let doing = format!("creating data center `{}`", dc.name);
            insert_new(
                tx,
                Table::DataCenters,
                &dc.name,
                "INSERT INTO data_centers (name, doc) VALUES (?, ?) ON CONFLICT DO NOTHING",
                &[Some(dc.name.as_str()), Some(&json(dc))],
                &doing,
            )
            .await?;
            Ok(subject(format!("data center {}", dc.name)))
        }
        Command::UpdateDataCenter(dc) => {
            let doing = format!("updating data center `{}`", dc.name);
            present(tx, Table::DataCenters, &dc.name, &doing).await?;
            sqlx::query("UPDATE data_centers SET doc = ? WHERE name = ?")
                .bind(json(dc))
                .bind(dc.name.as_str())
                .execute(&mut *tx)
                .await?;
            Ok(subject(format!("data center {}", dc.name)))
        }
        Command::DeleteDataCenter { name } => {
            let doing = format!("deleting data center `{name}`");
            present(tx, Table::DataCenters, name, &doing).await?;
            refuse_if_used(
                tx,
                &doing,
                &[name],
                &[("cluster", "SELECT name FROM clusters WHERE dc = ?")],
            )
            .await?;
            delete(tx, "DELETE FROM data_centers WHERE name = ?", &[name]).await?;
            Ok(subject(format!("data center {name}")))
        }
        Command::CreateCluster(c) => {
            let doing = format!("creating cluster `{}`", c.name);
            present(tx, Table::DataCenters, &c.dc, &doing).await?;
            check_cluster(tx, c, &doing).await?;
            insert_new(
                tx,
                Table::Clusters,
                &c.name,
                "INSERT INTO clusters (name, dc, backup, doc) VALUES (?, ?, ?, ?) \
                 ON CONFLICT DO NOTHING",
                &[
                    Some(c.name.as_str()),
                    Some(c.dc.as_str()),
                    c.backup.as_ref().map(Name::as_str),
                    Some(&json(c)),
                ],
                &doing,
            )
            .await?;
            Ok(subject(format!("cluster {}", c.name)))
        }
        Command::UpdateCluster(c) => {
            let doing = format!("updating cluster `{}`", c.name);
            let stored: Option<String> =
                sqlx::query_scalar("SELECT doc FROM clusters WHERE name = ?")
                    .bind(c.name.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(stored) = stored else {
                return Err(Refusal::Missing {
                    doing,
                    kind: "cluster",
                    name: c.name.to_string(),
                }
                .into());
            };
            let was: super::Cluster =
                serde_json::from_str(&stored).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            if was.dc != c.dc {
                // Its agents are in that data center; another place is another cluster.
                return Err(invalid(
                    &doing,
                    "dc",
                    &format!(
                        "a cluster stays in its data center (`{}`); create a cluster in `{}` \
                         instead",
                        was.dc, c.dc
                    ),
                ));
            }
            if was.partitions != c.partitions {
                // Its schedules are hashed into that many partitions, and leased by them.
                return Err(invalid(
                    &doing,
                    "partitions",
                    &format!(
                        "fixed when the cluster was created ({}): its schedules are placed and \
                         leased by that count",
                        was.partitions
                    ),
                ));
            }
            check_cluster(tx, c, &doing).await?;
            sqlx::query("UPDATE clusters SET backup = ?, doc = ? WHERE name = ?")
                .bind(c.backup.as_ref().map(Name::as_str))
                .bind(json(c))
                .bind(c.name.as_str())
                .execute(&mut *tx)
                .await?;
            Ok(subject(format!("cluster {}", c.name)))
        }
        Command::DeleteCluster { name } => {
            let doing = format!("deleting cluster `{name}`");
            present(tx, Table::Clusters, name, &doing).await?;
            refuse_if_used(
                tx,
                &doing,
                &[name],
                &[
                    (
                        "environment",
                        "SELECT name FROM environments WHERE cluster = ?",
                    ),
                    (
                        "cluster (as backup)",
                        "SELECT name FROM clusters WHERE backup = ?",
                    ),
                ],
            )
            .await?;
            delete(tx, "DELETE FROM leases WHERE cluster = ?", &[name]).await?;
            delete(tx, "DELETE FROM clusters WHERE name = ?", &[name]).await?;
            Ok(subject(format!("cluster {name}")))
        }
        Command::CreateEnvironment(e) => {
            let doing = format!("creating environment `{}`", e.name);
            present(tx, Table::Clusters, &e.cluster, &doing).await?;
            check_environment(e, &doing)?;
            insert_new(
                tx,
                Table::Environments,
                &e.name,
                "INSERT INTO environments (name, cluster, doc) VALUES (?, ?, ?) \
                 ON CONFLICT DO NOTHING",
                &[
                    Some(e.name.as_str()),
                    Some(e.cluster.as_str()),
                    Some(&json(e)),
                ],
                &doing,
            )
            .await?;
            Ok(subject(format!("environment {}", e.name)))
        }
        Command::UpdateEnvironment(e) => {
            let doing = format!("updating environment `{}`", e.name);
            let cluster: Option<String> =
                sqlx::query_scalar("SELECT cluster FROM environments WHERE name = ?")
                    .bind(e.name.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(cluster) = cluster else {
                return Err(Refusal::Missing {
                    doing,
                    kind: "environment",
                    name: e.name.to_string(),
                }
                .into());
            };
            if cluster != e.cluster.as_str() {
                // Its schedules are placed on its cluster's partitions; moving them is a new
                // environment and new schedules, not an edit.
                return Err(invalid(
                    &doing,
                    "cluster",
                    &format!(
                        "an environment stays on its cluster (`{cluster}`); create a new \
                         environment on `{}` instead",
                        e.cluster
                    ),
                ));
            }
            check_environment(e, &doing)?;
            sqlx::query("UPDATE environments SET doc = ? WHERE name = ?")
                .bind(json(e))
                .bind(e.name.as_str())
                .execute(&mut *tx)
                .await?;
            Ok(subject(format!("environment {}", e.name)))
        }
        Command::DeleteEnvironment { name } => {
            let doing = format!("deleting environment `{name}`");
            present(tx, Table::Environments, name, &doing).await?;
            refuse_if_used(
                tx,
                &doing,
                &[name],
                &[
                    (
                        "grant to tenant",
                        "SELECT tenant FROM grants WHERE environment = ?",
                    ),
                    (
                        "schedule",
                        "SELECT tenant || '/' || name FROM schedules WHERE environment = ?",
                    ),
                    (
                        "workflow",
                        "SELECT DISTINCT tenant || '/' || name FROM workflows \
                 WHERE environment = ? AND deleted = 0",
                    ),
                ],
            )
            .await?;
            delete(tx, "DELETE FROM environments WHERE name = ?", &[name]).await?;
            Ok(subject(format!("environment {name}")))
        }
        Command::CreateTenant(t) => {
            let doing = format!("creating tenant `{}`", t.name);
            insert_new(
                tx,
                Table::Tenants,
                &t.name,
                "INSERT INTO tenants (name, doc) VALUES (?, ?) ON CONFLICT DO NOTHING",
                &[Some(t.name.as_str()), Some(&json(t))],
                &doing,
            )
            .await?;
            Ok(subject(format!("tenant {}", t.name)))
        }
        Command::UpdateTenant(t) => {
            let doing = format!("updating tenant `{}`", t.name);
            present(tx, Table::Tenants, &t.name, &doing).await?;
            sqlx::query("UPDATE tenants SET doc = ? WHERE name = ?")
                .bind(json(t))
                .bind(t.name.as_str())
                .execute(&mut *tx)
                .await?;
            Ok(subject(format!("tenant {}", t.name)))
        }
        Command::DeleteTenant { name } => {
            let doing = format!("deleting tenant `{name}`");
            present(tx, Table::Tenants, name, &doing).await?;
            refuse_if_used(
                tx,
                &doing,
                &[name],
                &[
                    (
                        "grant of environment",
                        "SELECT environment FROM grants WHERE tenant = ?",
                    ),
                    (
                        "workflow",
                        "SELECT DISTINCT name FROM workflows WHERE tenant = ? AND deleted = 0",
                    ),
                    ("schedule", "SELECT name FROM schedules WHERE tenant = ?"),
                ],
            )
            .await?;
            delete(tx, "DELETE FROM workflows WHERE tenant = ?", &[name]).await?;
            super::access::forget_tenant(tx, name).await?;
            delete(tx, "DELETE FROM tenants WHERE name = ?", &[name]).await?;
            Ok(subject(format!("tenant {name}")))
        }
        Command::CreateGrant(g) => {
            let doing = format!(
                "granting environment `{}` to tenant `{}`",
                g.environment, g.tenant
            );
            present(tx, Table::Tenants, &g.tenant, &doing).await?;
            present(tx, Table::Environments, &g.environment, &doing).await?;
            if g.max_concurrent_runs == 0 {
                return Err(invalid(&doing, "max_concurrent_runs", "must be at least 1"));
            }
            if granted(tx, &g.tenant, &g.environment).await? {
                return Err(Refusal::Exists {
                    doing,
                    kind: "grant",
                    name: format!("{}/{}", g.tenant, g.environment),
                }
                .into());
            }
            sqlx::query("INSERT INTO grants (tenant, environment, doc) VALUES (?, ?, ?)")
                .bind(g.tenant.as_str())
                .bind(g.environment.as_str())
                .bind(json(g))
                .execute(&mut *tx)
                .await?;
            Ok(subject(format!("grant {}/{}", g.tenant, g.environment)))
        }
        Command::UpdateGrant(g) => {
            let doing = format!(
                "changing the grant of environment `{}` to tenant `{}`",
                g.environment, g.tenant
            );
            if g.max_concurrent_runs == 0 {
                return Err(invalid(&doing, "max_concurrent_runs", "must be at least 1"));
            }
            if !granted(tx, &g.tenant, &g.environment).await? {
                return Err(Refusal::Missing {
                    doing,
                    kind: "grant",
                    name: format!("{}/{}", g.tenant, g.environment),
                }
                .into());
            }
            sqlx::query("UPDATE grants SET doc = ? WHERE tenant = ? AND environment = ?")
                .bind(json(g))
                .bind(g.tenant.as_str())
                .bind(g.environment.as_str())
                .execute(&mut *tx)
                .await?;
            Ok(subject(format!("grant {}/{}", g.tenant, g.environment)))
        }
        Command::DeleteGrant {
            tenant,
            environment,
        } => {
            let doing = format!("revoking environment `{environment}` from tenant `{tenant}`");
            if !granted(tx, tenant, environment).await? {
                return Err(Refusal::Missing {
                    doing,
                    kind: "grant",
                    name: format!("{tenant}/{environment}"),
                }
                .into());
            }
            refuse_if_used(
                tx,
                &doing,
                &[tenant, environment],
                &[
                    (
                        "schedule",
                        "SELECT name FROM schedules WHERE tenant = ? AND environment = ?",
                    ),
                    (
                        "workflow",
                        "SELECT DISTINCT name FROM workflows \
                 WHERE tenant = ? AND environment = ? AND deleted = 0",
                    ),
                ],
            )
            .await?;
            delete(
                tx,
                "DELETE FROM grants WHERE tenant = ? AND environment = ?",
                &[tenant, environment],
            )
            .await?;
            Ok(subject(format!("grant {tenant}/{environment}")))
        }
        Command::ApplyWorkflow(w) => {
            let doing = format!("applying workflow `{}` of tenant `{}`", w.name, w.tenant);
            present(tx, Table::Tenants, &w.tenant, &doing).await?;
            w.definition
                .validate()
                .map_err(|e| invalid(&doing, "definition", &e.to_string()))?;
            if let Some(env) = &w.environment {
                must_be_granted(tx, &w.tenant, env, &doing).await?;
            }
            // Versions never repeat, even across a delete and re-create (of it or its tenant),
            // so a run's recorded version always names exactly one definition.
            let version = next_version(tx, Versioned::Workflow, &w.tenant, &w.name).await?;
            sqlx::query(
                "INSERT INTO workflows (tenant, name, version, environment, deleted, doc) \
                 VALUES (?, ?, ?, ?, 0, ?)",
            )
            .bind(w.tenant.as_str())
            .bind(w.name.as_str())
            .bind(version)
            .bind(w.environment.as_ref().map(Name::as_str))
            .bind(json(w))
            .execute(&mut *tx)
            .await?;
            Ok(Applied {
                version: Some(version as u64),
                ..subject(format!("workflow {}/{}", w.tenant, w.name))
            })
        }
        Command::DeleteWorkflow { tenant, name } => {
            let doing = format!("deleting workflow `{name}` of tenant `{tenant}`");
            if !workflow_exists(tx, tenant, name).await? {
                return Err(Refusal::Missing {
                    doing,
                    kind: "workflow",
                    name: format!("{tenant}/{name}"),
                }
                .into());
            }
            refuse_if_used(
                tx,
                &doing,
                &[tenant, name],
                &[(
                    "schedule",
                    "SELECT name FROM schedules WHERE tenant = ? AND workflow = ?",
                )],
            )
            .await?;
            // Versions are kept (runs refer to them) but hidden.
            sqlx::query("UPDATE workflows SET deleted = 1 WHERE tenant = ? AND name = ?")
                .bind(tenant.as_str())
                .bind(name.as_str())
                .execute(&mut *tx)
                .await?;
            Ok(subject(format!("workflow {tenant}/{name}")))
        }
        Command::CreateSchedule(s) => {
            let doing = format!("creating schedule `{}` of tenant `{}`", s.name, s.tenant);
            let placed = check_schedule(tx, s, &doing).await?;
            if schedule_version(tx, s).await?.is_some() {
                return Err(Refusal::Exists {
                    doing,
                    kind: "schedule",
                    name: format!("{}/{}", s.tenant, s.name),
                }
                .into());
            }
            // One created again under an old name is a new identity: its versions go on from
            // the old one's, so an agent that missed the delete drops the old calendar.
            let version = next_version(tx, Versioned::Schedule, &s.tenant, &s.name).await?;
            sqlx::query(
                "INSERT INTO schedules \
                 (tenant, name, workflow, environment, version, doc, cluster, partition, created_ms) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(s.tenant.as_str())
            .bind(s.name.as_str())
            .bind(s.workflow.as_str())
            .bind(s.environment.as_str())
            .bind(version)
            .bind(json(s))
            .bind(&placed.cluster)
            .bind(placed.partition)
            .bind(context.at_ms)
            .execute(&mut *tx)
            .await?;
            Ok(Applied {
                version: Some(version as u64),
                ..subject(format!("schedule {}/{}", s.tenant, s.name))
            })
        }
        Command::UpdateSchedule(s) => {
            let doing = format!("updating schedule `{}` of tenant `{}`", s.name, s.tenant);
            let placed = check_schedule(tx, s, &doing).await?;
            if schedule_version(tx, s).await?.is_none() {
                return Err(Refusal::Missing {
                    doing,
                    kind: "schedule",
                    name: format!("{}/{}", s.tenant, s.name),
                }
                .into());
            }
            let version = next_version(tx, Versioned::Schedule, &s.tenant, &s.name).await?;
            sqlx::query(
                "UPDATE schedules SET workflow = ?, environment = ?, version = ?, doc = ?, \
                 cluster = ?, partition = ? WHERE tenant = ? AND name = ?",
            )
            .bind(s.workflow.as_str())
            .bind(s.environment.as_str())
            .bind(version)
            .bind(json(s))
            .bind(&placed.cluster)
            .bind(placed.partition)
            .bind(s.tenant.as_str())
            .bind(s.name.as_str())
            .execute(&mut *tx)
            .await?;
            Ok(Applied {
                version: Some(version as u64),
                ..subject(format!("schedule {}/{}", s.tenant, s.name))
            })
        }
        Command::AgentHeartbeat(heartbeat) => {
            super::leasing::heartbeat(tx, context, heartbeat).await
        }
        Command::AgentReport(report) => super::history::report(tx, context, report).await,
        Command::RequestRun(request) => super::history::request_run(tx, context, request).await,
        Command::KillRun { run_id } => super::history::kill_run(tx, context, run_id).await,
        Command::DeleteSchedule { tenant, name } => {
            let doing = format!("deleting schedule `{name}` of tenant `{tenant}`");
            let deleted = sqlx::query("DELETE FROM schedules WHERE tenant = ? AND name = ?")
                .bind(tenant.as_str())
                .bind(name.as_str())
                .execute(&mut *tx)
                .await?;
            if deleted.rows_affected() == 0 {
                return Err(Refusal::Missing {
                    doing,
                    kind: "schedule",
                    name: format!("{tenant}/{name}"),
                }
                .into());
            }
            // Its cursor goes with it: one created again under the name fires from its own
            // creation (the assignments also never go back before it, for a late report).
            sqlx::query("DELETE FROM schedule_cursors WHERE schedule_id = ?")
                .bind(format!("{tenant}.{name}"))
                .execute(&mut *tx)
                .await?;
            Ok(subject(format!("schedule {tenant}/{name}")))
        }
        Command::Batch(items) => {
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

/// What a cluster's settings must be, created or changed: a backup that is another cluster
/// that exists, partitions in range, a lease of at least a second.
async fn check_cluster(
    tx: &mut SqliteConnection,
    c: &super::Cluster,
    doing: &str,
) -> Result<(), ApplyError> {
    if let Some(backup) = &c.backup {
        if backup == &c.name {
            return Err(invalid(doing, "backup", "a cluster cannot back itself up"));
        }
        present(tx, Table::Clusters, backup, doing).await?;
    }
    if !(1..=4096).contains(&c.partitions) {
        return Err(invalid(doing, "partitions", "must be between 1 and 4096"));
    }
    if c.lease_seconds == 0 {
        return Err(invalid(doing, "lease_seconds", "must be at least 1"));
    }
    Ok(())
}

/// Tables keyed by a single `name` column. Table names are constants, never user input.
#[derive(Clone, Copy)]
pub(super) enum Table {
    DataCenters,
    Clusters,
    Environments,
    Tenants,
    Tokens,
}

impl Table {
    fn sql_name(self) -> &'static str {
        match self {
            Self::DataCenters => "data_centers",
            Self::Clusters => "clusters",
            Self::Environments => "environments",
            Self::Tenants => "tenants",
            Self::Tokens => "tokens",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Self::DataCenters => "data center",
            Self::Clusters => "cluster",
            Self::Environments => "environment",
            Self::Tenants => "tenant",
            Self::Tokens => "token",
        }
    }
}

async fn exists(tx: &mut SqliteConnection, table: Table, name: &Name) -> sqlx::Result<bool> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE name = ?)",
        table.sql_name()
    );
    sqlx::query_scalar(&sql)
        .bind(name.as_str())
        .fetch_one(&mut *tx)
        .await
}

pub(super) async fn present(
    tx: &mut SqliteConnection,
    table: Table,
    name: &Name,
    doing: &str,
) -> Result<(), ApplyError> {
    if exists(tx, table, name).await? {
        Ok(())
    } else {
        Err(Refusal::Missing {
            doing: doing.to_owned(),
            kind: table.kind(),
            name: name.to_string(),
        }
        .into())
    }
}

/// Inserts the row of a new `name` with `sql` (an `INSERT … ON CONFLICT DO NOTHING`), or
/// refuses when the name is taken. The insert is the uniqueness check: one statement instead
/// of a lookup and an insert, and a refusal writes nothing.
async fn insert_new(
    tx: &mut SqliteConnection,
    table: Table,
    name: &Name,
    sql: &str,
    binds: &[Option<&str>],
    doing: &str,
) -> Result<(), ApplyError> {
    let mut query = sqlx::query(sql);
    for b in binds {
        query = query.bind(*b);
    }
    if query.execute(&mut *tx).await?.rows_affected() == 0 {
        return Err(Refusal::Exists {
            doing: doing.to_owned(),
            kind: table.kind(),
            name: name.to_string(),
        }
        .into());
    }
    Ok(())
}

pub(super) async fn granted(
    tx: &mut SqliteConnection,
    tenant: &Name,
    env: &Name,
) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM grants WHERE tenant = ? AND environment = ?)")
        .bind(tenant.as_str())
        .bind(env.as_str())
        .fetch_one(&mut *tx)
        .await
}

/// Refuses unless `env` is granted to `tenant`. An environment that does not exist is not
/// granted either, and is answered the same way: a tenant's member learns nothing of
/// environments its tenant was not given (a grant's environment always exists).
pub(super) async fn must_be_granted(
    tx: &mut SqliteConnection,
    tenant: &Name,
    env: &Name,
    doing: &str,
) -> Result<(), ApplyError> {
    if granted(tx, tenant, env).await? {
        Ok(())
    } else {
        Err(Refusal::NotGranted {
            doing: doing.to_owned(),
            environment: env.to_string(),
            tenant: tenant.to_string(),
        }
        .into())
    }
}

pub(super) async fn workflow_exists(
    tx: &mut SqliteConnection,
    tenant: &Name,
    name: &Name,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM workflows WHERE tenant = ? AND name = ? AND deleted = 0)",
    )
    .bind(tenant.as_str())
    .bind(name.as_str())
    .fetch_one(&mut *tx)
    .await
}

/// The first column of every row of `sql`, sorted, for "still used by" messages.
async fn names(tx: &mut SqliteConnection, sql: &str, binds: &[&Name]) -> sqlx::Result<Vec<String>> {
    let mut query = sqlx::query(sql);
    for b in binds {
        query = query.bind(b.as_str());
    }
    let mut names: Vec<String> = query
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| row.get::<String, _>(0))
        .collect();
    names.sort();
    Ok(names)
}

async fn delete(tx: &mut SqliteConnection, sql: &str, binds: &[&Name]) -> sqlx::Result<()> {
    let mut query = sqlx::query(sql);
    for b in binds {
        query = query.bind(b.as_str());
    }
    query.execute(&mut *tx).await.map(|_| ())
}

/// Refuses when any of the `(kind, query)` queries, run with `binds`, finds a row: the thing
/// being deleted is still used, and the refusal names every user.
async fn refuse_if_used(
    tx: &mut SqliteConnection,
    doing: &str,
    binds: &[&Name],
    users: &[(&str, &str)],
) -> Result<(), ApplyError> {
    let mut found = Vec::with_capacity(users.len());
    for (kind, sql) in users {
        found.push((*kind, names(tx, sql, binds).await?));
    }
    Ok(unused(doing, &found)?)
}

/// Refuses when any of the `(kind, names)` lists is non-empty, naming every user.
fn unused(doing: &str, users: &[(&str, Vec<String>)]) -> Result<(), Refusal> {
    let described: Vec<String> = users
        .iter()
        .filter(|(_, names)| !names.is_empty())
        .map(|(kind, names)| {
            let plural = if names.len() == 1 { "" } else { "s" };
            let list: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            format!("{kind}{plural} {}", list.join(", "))
        })
        .collect();
    if described.is_empty() {
        Ok(())
    } else {
        Err(Refusal::InUse {
            doing: doing.to_owned(),
            users: described.join("; "),
        })
    }
}

pub(super) fn invalid(doing: &str, field: &str, problem: &str) -> ApplyError {
    Refusal::Invalid {
        doing: doing.to_owned(),
        field: field.to_owned(),
        problem: problem.to_owned(),
    }
    .into()
}

pub(super) fn subject(subject: String) -> Applied {
    Applied {
        subject,
        version: None,
        items: Vec::new(),
        detail: None,
    }
}

/// Where a schedule's records are fired: its environment's cluster and its partition there.
struct Placement {
    cluster: String,
    partition: u32,
}

/// Checks everything a created or updated schedule must satisfy; writes nothing.
async fn check_schedule(
    tx: &mut SqliteConnection,
    s: &super::Schedule,
    doing: &str,
) -> Result<Placement, ApplyError> {
    let doing = doing.to_owned();
    present(tx, Table::Tenants, &s.tenant, &doing).await?;
    if !workflow_exists(tx, &s.tenant, &s.workflow).await? {
        return Err(Refusal::Missing {
            doing,
            kind: "workflow",
            name: format!("{}/{}", s.tenant, s.workflow),
        }
        .into());
    }
    must_be_granted(tx, &s.tenant, &s.environment, &doing).await?;
    s.spec.calendar().map_err(|e| Refusal::Invalid {
        doing: doing.clone(),
        field: format!("spec.{}", e.field()),
        problem: e.to_string(),
    })?;
    let id = ScheduleId::new(s.id()).map_err(|e| invalid(&doing, "name", &e.to_string()))?;
    let row = sqlx::query(
        "SELECT c.name, c.doc FROM environments e JOIN clusters c ON c.name = e.cluster \
         WHERE e.name = ?",
    )
    .bind(s.environment.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let cluster: super::Cluster = serde_json::from_str(&row.get::<String, _>("doc"))
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(Placement {
        cluster: row.get("name"),
        partition: meridian_proto::run::partition_of(&id, cluster.partitions),
    })
}

async fn schedule_version(
    tx: &mut SqliteConnection,
    s: &super::Schedule,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT version FROM schedules WHERE tenant = ? AND name = ?")
        .bind(s.tenant.as_str())
        .bind(s.name.as_str())
        .fetch_optional(&mut *tx)
        .await
}

/// What has versions that must never repeat under one name.
#[derive(Clone, Copy)]
enum Versioned {
    Workflow,
    Schedule,
}

/// The next version of `tenant`'s `name`: one past the highest it has ever had (kept in
/// `name_versions` across deletes of it and of its tenant), recorded as taken.
async fn next_version(
    tx: &mut SqliteConnection,
    kind: Versioned,
    tenant: &Name,
    name: &Name,
) -> sqlx::Result<i64> {
    let kind = match kind {
        Versioned::Workflow => "workflow",
        Versioned::Schedule => "schedule",
    };
    sqlx::query_scalar(
        "INSERT INTO name_versions (kind, tenant, name, version) VALUES (?, ?, ?, 1) \
         ON CONFLICT (kind, tenant, name) DO UPDATE SET version = version + 1 \
         RETURNING version",
    )
    .bind(kind)
    .bind(tenant.as_str())
    .bind(name.as_str())
    .fetch_one(&mut *tx)
    .await
}

pub(super) fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("model types always serialise to JSON")
}

/// What a created or updated environment must satisfy (beyond its cluster existing).
fn check_environment(e: &super::Environment, doing: &str) -> Result<(), ApplyError> {
    if let Some(bad) = e.vars.keys().find(|k| !is_env_var_name(k)) {
        return Err(invalid(
            doing,
            "vars",
            &format!("`{bad}` is not a valid environment variable name"),
        ));
    }
    if let Some((field, problem)) = e.run_as.problem() {
        return Err(invalid(doing, &field, problem));
    }
    Ok(())
}

fn is_env_var_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
