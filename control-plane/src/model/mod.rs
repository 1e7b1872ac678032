//! The replicated model: what the plane knows about the federation, and the one command enum
//! that changes it.
//!
//! - This module: the entities (data centers, clusters, environments, tenants, grants,
//!   workflows, schedules) and [`Command`] wrapped in a versioned [`Proposal`]; an entity's
//!   [`Name`] is [`crate::name`]'s.
//! - [`processor`]: applies one proposal to the SQLite state: asks the policy again, then one
//!   `match` over [`Command`] that only dispatches to the room of the command's family, and
//!   audits; a refusal changes nothing. It knows nothing about Raft, so recovery and tests
//!   drive it directly; the Raft state machine only wraps it.
//! - The rooms, each deciding before it writes: `infrastructure` (data centers, clusters,
//!   environments), `tenancy` (tenants, grants), `definitions` (workflows and schedules,
//!   versions that never repeat), [`leasing`] (agent heartbeats: agents, partition leases —
//!   the pure plan is [`crate::lease`] — and the commands waiting for each agent),
//!   [`history`] (agent reports and run requests: run history, task attempts, logs, with the
//!   epoch fencing that keeps a fire record from counting twice), [`job`] (what an agent is
//!   sent to run: a workflow version in an environment, as its tenant's OS user),
//!   [`access`] (users, API tokens and sign-in sessions with their role bindings, and how a
//!   proposal's author becomes a principal when it is applied).
//! - [`outcome`]: what applying comes to (applied, refused, storage failed) and the context a
//!   command is applied in; `checks`: what the rooms share (exists, still used, granted,
//!   stored as JSON).
//! - [`authorize`]: what each command asks of the access policy ([`crate::policy`]), with the
//!   facts it reads; the API asks it before proposing, the processor again when applying.
//! - [`query`]: reads for the API, CLI and UI.
//!
//! Proposals carry their author and time, stamped once by the node that accepted the write,
//! so every replica applies exactly the same thing and the audit trail agrees everywhere.

pub mod access;
pub mod alerts;
pub mod archive;
pub use alerts::{AlertChannel, AlertEvent, AlertRule, ChannelKind};
pub mod authorize;
pub mod backfills;
mod command;
pub use backfills::{Backfill, BackfillAction, BackfillControl, BackfillOrder};
mod checks;
mod definitions;
pub mod doubt;
pub mod history;
mod infrastructure;
pub mod job;
pub mod leasing;
pub mod outcome;
pub mod pauses;
pub use pauses::{Pause, PauseScope, Resume};
pub mod processor;
pub mod query;
pub mod quotas;
mod report_batch;
pub mod rerun;
pub mod retire;
mod run_record;
mod tenancy;
pub mod wal;

pub use crate::name::{Name, NameError};
pub use crate::policy::{Binding, Role};
pub use access::{ApiToken, Session, User};

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use meridian_domain::workflow::WorkflowDefinition;
use meridian_domain::{OverlapPolicy, ScheduleSpec, TakeoverPolicy};
use serde::{Deserialize, Serialize};

/// The model's schema, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// Opens (creating if needed) the model database at `path` and brings its schema up to date.
///
/// WAL with `synchronous = NORMAL`: a crash may lose the last transactions but never leaves a
/// half-applied one, and the Raft log (fsync'd) replays whatever the database lost.
///
/// Its log is checkpointed by a worker, not by the apply's commits ([`wal`]): whoever opens it
/// for long runs a [`wal::Checkpointer`] beside it (a plane node does); a short-lived opener
/// (a restore) leaves it to SQLite's checkpoint when the last connection closes.
pub async fn open(path: &Path) -> sqlx::Result<SqlitePool> {
    open_with(
        path,
        SqliteSynchronous::Normal,
        wal::Checkpoints::Worker,
        &MIGRATOR,
    )
    .await
}

/// Opens (creating if needed) one of a node's SQLite databases at `path` — WAL, foreign keys,
/// four connections — syncing as `synchronous` says, its schema brought up to date by
/// `migrator`, its log checkpointed as `checkpoints` says. Each connection caches up to
/// 8 MiB of pages, the writer's 32 MiB ([`writer`]): with SQLite's 2 MiB default, a model of a
/// few hundred thousand runs re-read its index pages from the file at every report (`pread` was
/// a tenth of the plane's time under the ingest benchmark). No memory map: session 25 added a
/// 256 MiB map per connection, each connection's mapped pages counted in the process's RSS,
/// and a plane holding a million schedules sat at 1.9 GiB instead of ~110 MiB (BENCHMARKS.md,
/// memory at scale).
pub async fn open_with(
    path: &Path,
    synchronous: SqliteSynchronous,
    checkpoints: wal::Checkpoints,
    migrator: &Migrator,
) -> sqlx::Result<SqlitePool> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5))
        .pragma("cache_size", READER_CACHE)
        .pragma("wal_autocheckpoint", checkpoints.pragma())
        .pragma("journal_size_limit", wal::KEEP_BYTES);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    migrator.run(&pool).await?;
    Ok(pool)
}

/// The one connection a database's writer keeps, beside `pool`'s (the same file and
/// settings). SQLite drops a connection's page cache, and unmaps its file, whenever it finds
/// that another connection wrote since its last transaction: a writer taking whichever of the
/// pool's connections was free started most transactions with a cold cache. Never closed
/// for idleness or age.
pub async fn writer(pool: &SqlitePool) -> sqlx::Result<SqlitePool> {
    let options = (*pool.connect_options())
        .clone()
        .pragma("cache_size", WRITER_CACHE);
    SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await
}

/// Page caches (`cache_size`, negative: KiB): a reader's 8 MiB, a writer's 32 MiB. Every
/// connection's cache is the process's memory once the database is bigger than it.
pub const READER_CACHE: &str = "-8192";
pub const WRITER_CACHE: &str = "-32768";

/// A data center: a site with its own private network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataCenter {
    pub name: Name,
    #[serde(default)]
    pub description: String,
}

/// Whether a cluster runs its own schedules or stands by for another's.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ClusterRole {
    #[default]
    Active,
    Backup,
}

/// A compute cluster inside a data center; its agents run the work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: Name,
    /// The data center it is in.
    pub dc: Name,
    #[serde(default)]
    pub role: ClusterRole,
    /// The cluster that takes this one's partitions when all its agents are gone.
    #[serde(default)]
    pub backup: Option<Name>,
    /// How many partitions its schedules are hashed into (the unit of leasing).
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Lease duration: how long a cut-off data center keeps firing on its own (the
    /// "autonomy horizon").
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u32,
}

fn default_partitions() -> u32 {
    16
}

fn default_lease_seconds() -> u32 {
    30
}

/// A cluster plus the settings runs there get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub name: Name,
    pub cluster: Name,
    /// Environment variables every task run in this environment gets.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Base directory for run working directories on the agents.
    #[serde(default)]
    pub work_dir: Option<String>,
    /// Queue (slot pool) name on the cluster, for operators who split capacity.
    #[serde(default)]
    pub queue: Option<String>,
    /// Which OS user each tenant's tasks run as on the agents. Without it a task would run as
    /// the agent's own user (root in production), able to read the agent's key, database and
    /// credentials and every other tenant's files; the agent refuses that unless allowed here.
    #[serde(default)]
    pub run_as: RunAs,
}

/// `run_as` of an environment: tenant → OS user on the cluster's agents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunAs {
    /// The user for granted tenants not listed in `tenants`, so an environment with one
    /// service account needs no entry per tenant.
    #[serde(default)]
    pub default: Option<meridian_domain::run::OsUser>,
    /// Tenant → user: one user per tenant keeps tenants out of each other's run directories
    /// and resources.
    #[serde(default)]
    pub tenants: BTreeMap<Name, meridian_domain::run::OsUser>,
    /// Lets tasks run as the agent's own user or root: for `meridian dev` (tasks run as the
    /// developer) and labs, never for environments shared by tenants who must not see each
    /// other.
    #[serde(default)]
    pub allow_agent_user: bool,
}

impl RunAs {
    /// The first user or group name no host would accept, as (its field, e.g.
    /// `run_as.tenants.ads.user`, the problem).
    pub fn problem(&self) -> Option<(String, &'static str)> {
        let named = self
            .default
            .iter()
            .map(|u| ("run_as.default".to_owned(), u))
            .chain(
                self.tenants
                    .iter()
                    .map(|(t, u)| (format!("run_as.tenants.{t}"), u)),
            );
        for (at, user) in named {
            if let Some((field, problem)) = user.problem() {
                return Some((format!("{at}.{field}"), problem));
            }
        }
        None
    }

    /// The user `tenant`'s tasks run as: its own entry, else the default.
    pub fn user_for(&self, tenant: &Name) -> Option<&meridian_domain::run::OsUser> {
        self.tenants.get(tenant).or(self.default.as_ref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub name: Name,
    #[serde(default)]
    pub description: String,
    /// Days the tenant's task logs are kept after their last line (none: the plane's
    /// `[logs] retention_days`, 30 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_retention_days: Option<u32>,
    /// Days the tenant's runs are kept in the history store (none: the plane's
    /// `[history] retention_days`, 90 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_retention_days: Option<u32>,
}

/// Lets a tenant run on an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub tenant: Name,
    pub environment: Name,
    /// How many of the tenant's runs may be going at once in this environment.
    #[serde(default = "default_max_concurrent_runs")]
    pub max_concurrent_runs: u32,
}

fn default_max_concurrent_runs() -> u32 {
    10
}

/// A tenant's workflow. Applying one with an existing name makes a new version; runs
/// already going keep the version they started with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    pub tenant: Name,
    pub name: Name,
    /// Environment for "run now" when none is given; must be granted to the tenant.
    #[serde(default)]
    pub environment: Option<Name>,
    pub definition: WorkflowDefinition,
}

/// A stored workflow version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkflowVersion {
    pub version: u64,
    #[serde(flatten)]
    pub workflow: Workflow,
}

/// When a tenant's workflow runs, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub tenant: Name,
    pub name: Name,
    pub workflow: Name,
    /// Must be granted to the tenant.
    pub environment: Name,
    pub spec: ScheduleSpec,
    #[serde(default)]
    pub overlap: OverlapPolicy,
    /// What an agent taking its partition over does with records the previous holder may
    /// have fired (`wait`: in doubt until settled; `rerun`: run them again).
    #[serde(default, skip_serializing_if = "is_default")]
    pub takeover: TakeoverPolicy,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl Schedule {
    /// `<tenant>.<name>`: the id fire records are derived from.
    pub fn id(&self) -> String {
        format!("{}.{}", self.tenant, self.name)
    }
}

/// An agent's heartbeat as replicated. `agent` and `cluster` come from its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub agent: String,
    pub cluster: Name,
    #[serde(default)]
    pub free_slots: u32,
    /// Graceful shutdown: give every partition back and stop counting as connected.
    #[serde(default)]
    pub releasing: bool,
    /// Partitions the agent stopped firing and gives back.
    #[serde(default)]
    pub released: Vec<PartitionRef>,
    /// How often the agent heartbeats (ms; 0: not said). Partitions are granted only to an
    /// agent heard within two of these.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub heartbeat_ms: u64,
    /// Partitions the agent lost and has every report of committed: its records there in
    /// doubt are settled ([`doubt::settle_relinquished`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relinquished: Vec<Relinquished>,
    /// Per grant it runs runs of: its runs going and waiting, and the share it enforces
    /// ([`quotas`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage: Vec<QuotaUsage>,
    /// Its host's load, and whether it is above its own thresholds (none: an older agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<AgentLoad>,
}

/// An agent's host as its heartbeat says it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AgentLoad {
    /// CPU busy since its previous heartbeat, of all cores.
    pub cpu_percent: u32,
    /// Memory in use (total less available).
    pub memory_percent: u32,
    /// The one-minute load average, in hundredths.
    pub load1_hundredths: u32,
    pub cores: u32,
    /// Above its thresholds (`[load]` in agent.toml), and which: it starts nothing new, and the
    /// plane moves its partitions to an agent that is not. None: under them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overloaded: Option<String>,
}

/// What an agent says of one grant (a tenant in an environment) in its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaUsage {
    pub tenant: String,
    pub environment: String,
    pub going: u32,
    pub waiting: u32,
    /// The share it enforces now (the last one the plane gave it).
    pub share: u32,
}

/// An operator's settling of records in doubt: a tenant's (of one of its schedules, if
/// named), run by the partition's holder or marked done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveDoubts {
    pub tenant: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Name>,
    pub resolution: doubt::Resolution,
}

/// A partition an agent lost, up to which epoch of it everything is reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relinquished {
    pub cluster: Name,
    pub partition: u32,
    pub epoch: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A partition of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionRef {
    pub cluster: Name,
    pub partition: u32,
}

/// Outbox entries from one agent. `agent` and `cluster` come from its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentReport {
    pub agent: String,
    pub cluster: Name,
    pub entries: Vec<ReportEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportEntry {
    /// The agent's outbox sequence number.
    pub seq: u64,
    pub report: meridian_domain::run::Report,
}

/// A "run now" request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub tenant: Name,
    pub workflow: Name,
    /// Where to run (none: the workflow's default environment).
    #[serde(default)]
    pub environment: Option<Name>,
}

/// Every change to the model. One enum, applied by one exhaustive `match` in `processor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    CreateDataCenter(DataCenter),
    /// A data center's description changed (its name names it).
    UpdateDataCenter(DataCenter),
    DeleteDataCenter {
        name: Name,
    },
    CreateCluster(Cluster),
    /// A cluster's role, backup or lease duration changed; never its data center or its
    /// partition count (its schedules are placed by that count). Effective from its agents'
    /// next heartbeat.
    UpdateCluster(Cluster),
    DeleteCluster {
        name: Name,
    },
    CreateEnvironment(Environment),
    /// A changed environment (its variables, paths, queue, OS users; never its cluster),
    /// effective from the agents' next run.
    UpdateEnvironment(Environment),
    DeleteEnvironment {
        name: Name,
    },
    CreateTenant(Tenant),
    /// A tenant's description changed.
    UpdateTenant(Tenant),
    DeleteTenant {
        name: Name,
    },
    CreateGrant(Grant),
    /// A grant's limit changed (the tenant and environment name it).
    UpdateGrant(Grant),
    DeleteGrant {
        tenant: Name,
        environment: Name,
    },
    ApplyWorkflow(Workflow),
    DeleteWorkflow {
        tenant: Name,
        name: Name,
    },
    CreateSchedule(Schedule),
    DeleteSchedule {
        tenant: Name,
        name: Name,
    },
    CreateToken(ApiToken),
    DeleteToken {
        name: Name,
    },
    /// A changed schedule: a new version, effective from the agents' next record.
    UpdateSchedule(Schedule),
    /// An agent's heartbeat: its liveness and releases; the leader's lease plan for the
    /// agent's cluster (and the clusters it backs up) is decided while applying it, at the
    /// proposal's time, so every replica computes the same leases.
    AgentHeartbeat(Heartbeat),
    /// A batch from an agent's outbox: run events, task attempts, log chunks.
    AgentReport(AgentReport),
    /// "Run now": a run of a workflow, taken by the next agent of the environment's cluster
    /// that heartbeats. Its id is derived from the log index, so every replica agrees on it.
    RequestRun(RunRequest),
    /// Kill a run: its agent is told on its next heartbeat.
    KillRun {
        run_id: String,
    },
    /// Settle a tenant's records in doubt after a takeover (of one schedule, if named).
    ResolveDoubts(ResolveDoubts),
    /// Several commands in one log entry, as a client that batches sends them (an agent's
    /// reports). Each is applied or refused on its own, in order; the outcome lists each.
    Batch(Vec<Command>),
    /// A new user; `password` is the Argon2id hash the accepting node made.
    CreateUser {
        user: User,
        password: String,
    },
    DeleteUser {
        name: Name,
    },
    /// A new password (its hash); signs the user out everywhere.
    SetPassword {
        user: Name,
        password: String,
    },
    BindUser {
        user: Name,
        binding: Binding,
    },
    UnbindUser {
        user: Name,
        binding: Binding,
    },
    /// A sign-in, made by the node that checked the password.
    CreateSession(Session),
    /// A sign-out: the session with this hash ends.
    DeleteSession {
        hash: String,
    },
    /// An audit entry for what did not pass through the processor as a command of its own: a
    /// write the policy refused before it became one, a failed sign-in, a change outside the
    /// model (a resource file, the plane's membership). Changes nothing else.
    Record(AuditRecord),
    /// Some of a schedule's fields changed (a JSON merge patch, RFC 7396, of its document,
    /// kept as text: the log's codec carries no free-form value). Merged with the schedule as
    /// it is when applied, so two patches never lose each other's fields; an unchanged result
    /// makes no new version.
    PatchSchedule(SchedulePatch),
    /// Hold a schedule, a workflow's schedules, a tenant's or an environment's still: their
    /// due records are recorded skipped (paused), effective from the agents' next sync.
    Pause(Pause),
    /// Lift a pause; with `catch_up`, the records it skipped go through the schedules' catch-up
    /// policy and those it keeps are handed to the holders to run.
    Resume(Resume),
    /// Run a finished run again for its own fire time, one generation further; a recovery
    /// runs only the tasks that did not succeed.
    Rerun(Rerun),
    /// Fill a range of a schedule's fire times: a replicated backfill whose records are handed
    /// to the schedule's holder at most `parallel` at a time. Its id is derived from the log
    /// index, so every replica agrees on it.
    CreateBackfill(Backfill),
    /// Pause, resume or cancel a backfill.
    ControlBackfill(BackfillControl),
    /// Where a tenant's (or, without one, the federation's) alerts may go.
    CreateAlertChannel(AlertChannel),
    /// A channel no rule and no current workflow's callback uses.
    DeleteAlertChannel {
        #[serde(default)]
        tenant: Option<Name>,
        name: Name,
    },
    /// What raises alerts, and to which channels.
    CreateAlertRule(AlertRule),
    DeleteAlertRule {
        #[serde(default)]
        tenant: Option<Name>,
        name: Name,
    },
    /// The leader's courier tried these deliveries: each outcome recorded, failures retried
    /// with backoff. The plane's own; never from a request.
    AlertAttempts(Vec<alerts::outbox::AlertAttempt>),
    /// Raise the timed alerts due at the proposal's time (runs past their SLA, agents lost,
    /// data centers unheard), proposed by the leader when it sees one due. The plane's own.
    CheckAlerts,
    /// The leader's archiver copied these attempts' logs to the bucket. The plane's own.
    ArchiveLogs(Vec<archive::ArchivedLog>),
    /// Retention deleted these attempts' objects from the bucket. The plane's own.
    ForgetArchivedLogs(Vec<archive::AttemptRef>),
    /// The leader's retirer moves finished runs to the history store. The plane's own.
    RetireRuns(retire::RetireRuns),
}

/// A run to run again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rerun {
    pub run_id: String,
    /// Only its failed and not-started tasks run; the succeeded ones keep their results
    /// (a failed or killed run only).
    #[serde(default)]
    pub recover: bool,
    /// The run as the history store holds it, when it has left the model (the proposer
    /// reads it there: `RunReader::retired_family`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub retired: Option<Box<rerun::RetiredFamily>>,
}

/// A merge patch of one schedule's document: `{"spec": {"cron": "0 0 6 * * ?"}}`; `null`
/// removes a field (its default applies); an object whose `policy` tag changes replaces the
/// old object instead of merging into it (`catch_up`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulePatch {
    pub tenant: Name,
    pub name: Name,
    /// The patch, as JSON text.
    pub patch: String,
}

/// Whether an audited write was made or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    Applied,
    Refused,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Refused => "refused",
        }
    }
}

/// An audit entry made outside the processor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Who did it or was refused, as the audit trail names principals (`token:ci`).
    pub actor: String,
    pub outcome: AuditOutcome,
    /// What was done or attempted (`create_data_center`, `sign_in`, `upload_resource`).
    pub op: String,
    pub subject: String,
    /// The tenant it concerned, so that tenant's members see it.
    #[serde(default)]
    pub tenant: Option<Name>,
    pub message: String,
}

/// Who proposed a command. The processor turns it back into a principal at apply time and
/// asks the policy again, with the bindings the model holds then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Author {
    /// The plane itself (bootstrap, seeding, sign-ins it checked): trusted.
    System { name: String },
    /// An agent, identified by its certificate; only its own heartbeats and reports.
    Agent { hostname: String, cluster: Name },
    /// An API token, by name and the hash of its secret: a token deleted and made again under
    /// the same name between the API's check and the commit is another token.
    Token { name: Name, token: String },
    /// A signed-in user; `session` is the session's hash, which must still be live.
    Session { user: Name, session: String },
}

impl Author {
    /// How the audit trail names it (`token:ci`, `user:alice`, `agent:a1.dc`, `bootstrap`).
    pub fn actor(&self) -> String {
        match self {
            Self::System { name } => name.clone(),
            Self::Agent { hostname, .. } => format!("agent:{hostname}"),
            Self::Token { name, .. } => format!("token:{name}"),
            Self::Session { user, .. } => format!("user:{user}"),
        }
    }
}

/// A command as replicated: who asked, when (stamped once, by the accepting node), and what.
///
/// Serialised as JSON bytes inside whatever envelope carries it (the Raft log, peer RPCs), so
/// the model's serde shapes (tagged enums, defaults) never meet a binary codec that cannot
/// represent them, and the version tag lets a rolling upgrade read the previous shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "v")]
pub enum Proposal {
    /// Before principals: the actor was a token's name and every token was an admin, so a V1
    /// entry replays as the plane's own (as it was applied when it was written).
    #[serde(rename = "1")]
    V1 {
        actor: String,
        at_ms: i64,
        command: Command,
    },
    #[serde(rename = "2")]
    V2 {
        author: Author,
        at_ms: i64,
        command: Command,
    },
}

impl Proposal {
    /// A proposal of the plane's own, named `actor` in the audit trail.
    pub fn new(actor: impl Into<String>, at_ms: i64, command: Command) -> Self {
        Self::by(Author::System { name: actor.into() }, at_ms, command)
    }

    pub fn by(author: Author, at_ms: i64, command: Command) -> Self {
        Self::V2 {
            author,
            at_ms,
            command,
        }
    }

    pub fn command(&self) -> &Command {
        match self {
            Self::V1 { command, .. } | Self::V2 { command, .. } => command,
        }
    }

    pub fn author(&self) -> Author {
        match self {
            Self::V1 { actor, .. } => Author::System {
                name: actor.clone(),
            },
            Self::V2 { author, .. } => author.clone(),
        }
    }

    /// How the audit trail names whoever proposed it.
    pub fn actor(&self) -> String {
        match self {
            Self::V1 { actor, .. } => actor.clone(),
            Self::V2 { author, .. } => author.actor(),
        }
    }

    pub fn at_ms(&self) -> i64 {
        match self {
            Self::V1 { at_ms, .. } | Self::V2 { at_ms, .. } => *at_ms,
        }
    }
}

/// The tenant of a set of bindings when they all name the same one.
fn only_tenant(bindings: &[Binding]) -> Option<&Name> {
    let first = bindings.first()?.tenant.as_ref()?;
    bindings
        .iter()
        .all(|b| b.tenant.as_ref() == Some(first))
        .then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposals_are_versioned_json() {
        let p = Proposal::new(
            "admin",
            1,
            Command::DeleteTenant {
                name: Name::new("ads").unwrap(),
            },
        );
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"v":"2","author":{"kind":"system","name":"admin"},"at_ms":1,"command":{"delete_tenant":{"name":"ads"}}}"#
        );
        assert_eq!(serde_json::from_str::<Proposal>(&json).unwrap(), p);
        // The shape before principals still reads, as the plane's own.
        let v1: Proposal = serde_json::from_str(
            r#"{"v":"1","actor":"ci","at_ms":1,"command":{"delete_tenant":{"name":"ads"}}}"#,
        )
        .unwrap();
        assert_eq!(v1.actor(), "ci");
        assert_eq!(v1.author(), Author::System { name: "ci".into() });
    }
}
