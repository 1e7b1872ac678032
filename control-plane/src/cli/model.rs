//! `meridian dc|cluster|env|tenant|grant|workflow|schedule create|list|get|delete`: the model
//! through the REST API.
//!
//! Every noun takes the same verbs. `create` builds the JSON document from flags, or takes it
//! whole from `-f FILE` (JSON, or TOML or YAML by the name's extension); the plane validates it
//! and its errors name the field. `get` and `list` print JSON as the API answers; documents
//! for `apply` are [`super::document`]'s.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::client::{Client, ClientError};
use crate::api::WriteReply;

/// One noun's verbs; `C` is its `create` flags.
#[derive(Debug, Subcommand)]
pub enum Verb<C: Args> {
    /// Create one, from flags or from `-f FILE`.
    Create(Create<C>),
    /// List them (JSON).
    List(ListArgs),
    /// Show one (JSON).
    Get(KeyArgs),
    /// Delete one. Refused while something still uses it; the error names the users.
    Delete(KeyArgs),
    /// Change one: with `-f FILE`, the whole document replaces it; with flags, schedules
    /// change only the fields given (others take the whole document from flags). A schedule's
    /// new version is effective from the agents' next record; nothing changed, no new version.
    Update(Create<C>),
}

/// `create`: a noun's flags, or the whole document from a file.
#[derive(Debug, Args)]
pub struct Create<C: Args> {
    #[command(flatten)]
    pub flags: C,
    #[command(flatten)]
    pub file: FileArg,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this tenant's (grants, workflows, schedules).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Read the node's local copy without asking the leader (may be slightly behind).
    #[arg(long)]
    pub stale: bool,
    /// Workflows and schedules: one page of at most this many (default: every page, read a
    /// thousand at a time).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Workflows and schedules: the page after this item, TENANT/NAME (the previous page's
    /// last).
    #[arg(long)]
    pub after: Option<String>,
    /// Workflows and schedules without `--limit`: items asked for per request as every page
    /// is read in turn.
    #[arg(long, default_value_t = crate::api::PAGE)]
    pub chunk_size: u32,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    /// NAME; or TENANT NAME for workflows and schedules; or TENANT ENVIRONMENT for grants.
    #[arg(required = true, num_args = 1..=2)]
    pub keys: Vec<String>,
    /// A workflow version (get only; default: the newest).
    #[arg(long)]
    pub version: Option<u64>,
    #[arg(long)]
    pub stale: bool,
}

#[derive(Debug, Args)]
pub struct FileArg {
    /// The whole document as the API takes it: JSON, or TOML or YAML by the file's extension
    /// (what `meridian get` prints is taken).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DcCreate {
    pub name: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ClusterRoleArg {
    Active,
    Backup,
}

#[derive(Debug, Args)]
pub struct ClusterCreate {
    pub name: Option<String>,
    /// The data center it is in.
    #[arg(long)]
    pub dc: Option<String>,
    #[arg(long, value_enum)]
    pub role: Option<ClusterRoleArg>,
    /// The cluster that takes over this one's schedules when all its agents are gone.
    #[arg(long)]
    pub backup: Option<String>,
    #[arg(long)]
    pub partitions: Option<u32>,
    #[arg(long)]
    pub lease_seconds: Option<u32>,
}

#[derive(Debug, Args)]
pub struct EnvCreate {
    pub name: Option<String>,
    #[arg(long)]
    pub cluster: Option<String>,
    /// An environment variable for every run here, `KEY=VALUE` (repeatable).
    #[arg(long = "var")]
    pub vars: Vec<String>,
    #[arg(long)]
    pub work_dir: Option<String>,
    #[arg(long)]
    pub queue: Option<String>,
    /// The OS user a tenant's tasks run as on the agents, `TENANT=USER[:GROUP]` (repeatable;
    /// without GROUP, the user's primary group).
    #[arg(long = "run-as", value_name = "TENANT=USER[:GROUP]")]
    pub run_as: Vec<String>,
    /// The OS user for tenants without a `--run-as` of their own.
    #[arg(long, value_name = "USER[:GROUP]")]
    pub run_as_default: Option<String>,
    /// Let tasks run as the agent's own user (root, when the agent runs as root): for
    /// development machines and labs only. Without a user for the tenant, tasks are refused.
    #[arg(long)]
    pub allow_agent_user: bool,
}

#[derive(Debug, Args)]
pub struct TenantCreate {
    pub name: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// Days the tenant's task logs are kept (default: the plane's `[logs] retention_days`).
    #[arg(long, value_name = "DAYS")]
    pub log_retention_days: Option<u32>,
    /// Days the tenant's runs are kept (default: the plane's `[history] retention_days`).
    #[arg(long, value_name = "DAYS")]
    pub history_retention_days: Option<u32>,
}

#[derive(Debug, Args)]
pub struct GrantCreate {
    pub tenant: Option<String>,
    pub environment: Option<String>,
    #[arg(long)]
    pub max_concurrent_runs: Option<u32>,
}

#[derive(Debug, Args)]
pub struct WorkflowCreate {
    pub tenant: Option<String>,
    pub name: Option<String>,
    /// A one-task workflow running this shell script (for more, use `-f`).
    #[arg(long)]
    pub shell: Option<String>,
    /// Default environment for "run now".
    #[arg(long = "env")]
    pub environment: Option<String>,
    #[arg(long)]
    pub timeout_seconds: Option<u64>,
    #[arg(long)]
    pub retries: Option<u32>,
    /// A resource the task needs, as `KEY=NAME`: the tenant's resource KEY linked as NAME in
    /// the working directory (or just `KEY`: named after its last segment). Repeatable.
    #[arg(long = "resource", value_name = "KEY=NAME")]
    pub resources: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ScheduleCreate {
    pub tenant: Option<String>,
    pub name: Option<String>,
    #[arg(long)]
    pub workflow: Option<String>,
    #[arg(long = "env")]
    pub environment: Option<String>,
    /// Quartz (6–7 fields) or Unix (5 fields) cron expression.
    #[arg(long)]
    pub cron: Option<String>,
    /// IANA time zone the expression is read in (default UTC).
    #[arg(long)]
    pub time_zone: Option<String>,
    /// No fire before this instant (RFC 3339; `update --start none` removes it).
    #[arg(long)]
    pub start: Option<String>,
    /// No fire after this instant (RFC 3339; `update --end none` removes it).
    #[arg(long)]
    pub end: Option<String>,
    /// skip, buffer_one, buffer_all, cancel_older or allow_all.
    #[arg(long)]
    pub overlap: Option<String>,
    /// When another agent takes the schedule's partition over from one that went silent:
    /// wait (the records the old holder may have fired are in doubt until its reports settle
    /// them or an operator resolves them: exactly once; default) or rerun (run them again: at
    /// least once).
    #[arg(long)]
    pub takeover: Option<String>,
    /// What to do with records missed while nothing could fire them: none (skip them all),
    /// latest (run the most recent) or all (run them, oldest first; default, within an hour,
    /// at most 50). Finer settings: `-f`.
    #[arg(long)]
    pub catch_up: Option<String>,
}

/// A noun of the model and where the API keeps it.
pub struct Noun {
    /// As the CLI says it.
    pub word: &'static str,
    pub path: &'static str,
    /// Names of the keys in `get`/`delete` (one or two).
    pub keys: &'static [&'static str],
    /// Whether `update` may replace one (`PUT` on its path).
    pub updatable: bool,
    /// Fields the plane adds to what it keeps (a workflow's `version`), never part of a
    /// document a user writes.
    pub kept: &'static [&'static str],
    /// Another word a document's `kind` may use for it.
    pub alias: Option<&'static str>,
    /// Whether the API lists it a page at a time (`after`, `limit`).
    pub paged: bool,
}

pub const DC: Noun = Noun {
    word: "dc",
    path: "/dcs",
    keys: &["NAME"],
    updatable: true,
    kept: &[],
    alias: None,
    paged: false,
};
pub const CLUSTER: Noun = Noun {
    word: "cluster",
    path: "/clusters",
    keys: &["NAME"],
    updatable: true,
    kept: &[],
    alias: None,
    paged: false,
};
pub const ENV: Noun = Noun {
    word: "env",
    path: "/environments",
    keys: &["NAME"],
    updatable: true,
    kept: &[],
    alias: Some("environment"),
    paged: false,
};
pub const TENANT: Noun = Noun {
    word: "tenant",
    path: "/tenants",
    keys: &["NAME"],
    updatable: true,
    kept: &[],
    alias: None,
    paged: false,
};
pub const GRANT: Noun = Noun {
    word: "grant",
    path: "/grants",
    keys: &["TENANT", "ENVIRONMENT"],
    updatable: true,
    kept: &[],
    alias: None,
    paged: false,
};
pub const WORKFLOW: Noun = Noun {
    word: "workflow",
    path: "/workflows",
    keys: &["TENANT", "NAME"],
    updatable: false,
    kept: &["version"],
    alias: None,
    paged: true,
};
pub const SCHEDULE: Noun = Noun {
    word: "schedule",
    path: "/schedules",
    keys: &["TENANT", "NAME"],
    updatable: true,
    kept: &[],
    alias: None,
    paged: true,
};

/// Builds the JSON document a `create` sends.
pub trait CreateBody {
    /// The document from flags; `Err` names a missing flag or argument.
    fn flags_document(&self) -> Result<Value, ClientError>;

    /// For `update` without `-f`, where the noun takes a merge patch: the keys and only the
    /// fields the flags give. `None`: `update` replaces the whole document.
    fn patch_document(&self) -> Option<Result<(Vec<String>, Value), ClientError>> {
        None
    }
}

impl<C: Args + CreateBody> Create<C> {
    fn body(&self, noun: &Noun) -> Result<Value, ClientError> {
        match &self.file.file {
            Some(path) => {
                let flags = self.flags.flags_document().ok().filter(|v| v != &json!({}));
                if flags.is_some() {
                    return Err(ClientError::Refused(
                        "give either -f FILE or flags, not both".into(),
                    ));
                }
                for_noun(noun, read_document(path)?)
            }
            None => self.flags.flags_document(),
        }
    }
}

/// A document as a user wrote it (or `meridian get` printed it), for `meridian NOUN create -f`:
/// its `kind`, if it has one, must be the noun's; what the plane keeps (a workflow's
/// `version`) is left out.
pub fn for_noun(noun: &Noun, mut document: Value) -> Result<Value, ClientError> {
    let Some(fields) = document.as_object_mut() else {
        return Ok(document);
    };
    if let Some(given) = fields.remove("kind")
        && !given
            .as_str()
            .is_some_and(|k| k == noun.word || Some(k) == noun.alias)
    {
        return Err(ClientError::Refused(format!(
            "kind: {given} is not `{}`; `meridian apply -f FILE` takes documents of any kind",
            noun.word
        )));
    }
    for field in noun.kept {
        fields.remove(*field);
    }
    Ok(document)
}

/// The keys a document names in its noun's path: its name, or its tenant and name (a grant's
/// tenant and environment).
pub fn document_keys(noun: &Noun, body: &Value) -> Result<Vec<String>, ClientError> {
    noun.keys
        .iter()
        .map(|k| {
            let field = match *k {
                "TENANT" => "tenant",
                "ENVIRONMENT" => "environment",
                _ => "name",
            };
            body[field]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| ClientError::Refused(format!("the document has no `{field}`")))
        })
        .collect()
}

fn read_document(path: &PathBuf) -> Result<Value, ClientError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Refused(format!("reading {}: {e}", path.display())))?;
    let parsed = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => toml::from_str::<Value>(&text).map_err(|e| e.to_string()),
        Some("yaml" | "yml") => serde_yaml_ng::from_str::<Value>(&text).map_err(|e| e.to_string()),
        _ => serde_json::from_str::<Value>(&text).map_err(|e| e.to_string()),
    };
    parsed.map_err(|e| ClientError::Refused(format!("{}: {e}", path.display())))
}

/// Collects set fields; `need` fails naming the argument when a required one is missing.
#[derive(Default)]
struct Doc(Map<String, Value>);

impl Doc {
    fn need(&mut self, key: &str, arg: &str, value: &Option<String>) -> Result<(), ClientError> {
        match value {
            Some(v) => {
                self.0.insert(key.into(), json!(v));
                Ok(())
            }
            None => Err(ClientError::Refused(format!(
                "{arg} is required (or give the whole document with -f FILE)"
            ))),
        }
    }

    fn opt(&mut self, key: &str, value: Option<Value>) {
        if let Some(v) = value {
            self.0.insert(key.into(), v);
        }
    }

    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

impl CreateBody for DcCreate {
    fn flags_document(&self) -> Result<Value, ClientError> {
        let mut d = Doc::default();
        d.need("name", "NAME", &self.name)?;
        d.opt("description", self.description.as_ref().map(|v| json!(v)));
        Ok(d.done())
    }
}

impl CreateBody for ClusterCreate {
    fn flags_document(&self) -> Result<Value, ClientError> {
        let mut d = Doc::default();
        d.need("name", "NAME", &self.name)?;
        d.need("dc", "--dc", &self.dc)?;
        d.opt(
            "role",
            self.role.map(|r| match r {
                ClusterRoleArg::Active => json!("active"),
                ClusterRoleArg::Backup => json!("backup"),
            }),
        );
        d.opt("backup", self.backup.as_ref().map(|v| json!(v)));
        d.opt("partitions", self.partitions.map(|v| json!(v)));
        d.opt("lease_seconds", self.lease_seconds.map(|v| json!(v)));
        Ok(d.done())
    }
}

impl CreateBody for EnvCreate {
    fn flags_document(&self) -> Result<Value, ClientError> {
        let mut d = Doc::default();
        d.need("name", "NAME", &self.name)?;
        d.need("cluster", "--cluster", &self.cluster)?;
        let mut vars = Map::new();
        for var in &self.vars {
            let (k, v) = var.split_once('=').ok_or_else(|| {
                ClientError::Refused(format!("--var `{var}`: expected KEY=VALUE"))
            })?;
            vars.insert(k.to_owned(), json!(v));
        }
        if !vars.is_empty() {
            d.opt("vars", Some(Value::Object(vars)));
        }
        d.opt("work_dir", self.work_dir.as_ref().map(|v| json!(v)));
        d.opt("queue", self.queue.as_ref().map(|v| json!(v)));
        let mut run_as = Map::new();
        let mut tenants = Map::new();
        for entry in &self.run_as {
            let (tenant, user) = entry.split_once('=').ok_or_else(|| {
                ClientError::Refused(format!("--run-as `{entry}`: expected TENANT=USER[:GROUP]"))
            })?;
            tenants.insert(tenant.to_owned(), os_user(user));
        }
        if let Some(user) = &self.run_as_default {
            run_as.insert("default".into(), os_user(user));
        }
        if !tenants.is_empty() {
            run_as.insert("tenants".into(), Value::Object(tenants));
        }
        if self.allow_agent_user {
            run_as.insert("allow_agent_user".into(), json!(true));
        }
        if !run_as.is_empty() {
            d.opt("run_as", Some(Value::Object(run_as)));
        }
        Ok(d.done())
    }
}

/// `USER[:GROUP]` as the API's `{"user", "group"}`; the plane checks the names.
fn os_user(spec: &str) -> Value {
    match spec.split_once(':') {
        Some((user, group)) => json!({"user": user, "group": group}),
        None => json!({"user": spec}),
    }
}

impl CreateBody for TenantCreate {
    fn flags_document(&self) -> Result<Value, ClientError> {
        let mut d = Doc::default();
        d.need("name", "NAME", &self.name)?;
        d.opt("description", self.description.as_ref().map(|v| json!(v)));
        d.opt(
            "log_retention_days",
            self.log_retention_days.map(|v| json!(v)),
        );
        d.opt(
            "history_retention_days",
            self.history_retention_days.map(|v| json!(v)),
        );
        Ok(d.done())
    }
}

impl CreateBody for GrantCreate {
    fn flags_document(&self) -> Result<Value, ClientError> {
        let mut d = Doc::default();
        d.need("tenant", "TENANT", &self.tenant)?;
        d.need("environment", "ENVIRONMENT", &self.environment)?;
        d.opt(
            "max_concurrent_runs",
            self.max_concurrent_runs.map(|v| json!(v)),
        );
        Ok(d.done())
    }
}

impl CreateBody for WorkflowCreate {
    fn flags_document(&self) -> Result<Value, ClientError> {
        let mut d = Doc::default();
        d.need("tenant", "TENANT", &self.tenant)?;
        d.need("name", "NAME", &self.name)?;
        let Some(script) = &self.shell else {
            return Err(ClientError::Refused(
                "--shell SCRIPT is required (or give the whole document with -f FILE)".into(),
            ));
        };
        let mut task = Doc::default();
        task.opt("name", Some(json!("main")));
        task.opt("kind", Some(json!({"shell": {"script": script}})));
        task.opt("timeout_seconds", self.timeout_seconds.map(|v| json!(v)));
        task.opt("retries", self.retries.map(|v| json!(v)));
        if !self.resources.is_empty() {
            let map: serde_json::Map<String, Value> = self
                .resources
                .iter()
                .map(|r| match r.split_once('=') {
                    Some((key, name)) => (key.to_owned(), json!(name)),
                    None => (r.clone(), json!(r.rsplit('/').next().unwrap_or(r))),
                })
                .collect();
            task.opt("resources", Some(Value::Object(map)));
        }
        d.opt("definition", Some(json!({"tasks": [task.done()]})));
        d.opt("environment", self.environment.as_ref().map(|v| json!(v)));
        Ok(d.done())
    }
}

impl CreateBody for ScheduleCreate {
    fn flags_document(&self) -> Result<Value, ClientError> {
        let mut d = Doc::default();
        d.need("tenant", "TENANT", &self.tenant)?;
        d.need("name", "NAME", &self.name)?;
        d.need("workflow", "--workflow", &self.workflow)?;
        d.need("environment", "--env", &self.environment)?;
        let mut spec = Doc::default();
        spec.need("cron", "--cron", &self.cron)?;
        spec.opt("time_zone", self.time_zone.as_ref().map(|v| json!(v)));
        spec.opt("start", self.start.as_ref().map(|v| json!(v)));
        spec.opt("end", self.end.as_ref().map(|v| json!(v)));
        spec.opt("catch_up", self.catch_up.as_deref().map(catch_up));
        d.opt("spec", Some(spec.done()));
        d.opt("overlap", self.overlap.as_ref().map(|v| json!(v)));
        d.opt("takeover", self.takeover.as_ref().map(|v| json!(v)));
        Ok(d.done())
    }

    fn patch_document(&self) -> Option<Result<(Vec<String>, Value), ClientError>> {
        Some(self.patch())
    }
}

impl ScheduleCreate {
    /// The merge patch `schedule update` sends: only the flags given.
    fn patch(&self) -> Result<(Vec<String>, Value), ClientError> {
        let (Some(tenant), Some(name)) = (&self.tenant, &self.name) else {
            return Err(ClientError::Refused(
                "`meridian schedule update` takes TENANT NAME".into(),
            ));
        };
        // `none` clears a start or end (JSON merge patch: `null` removes the field).
        let instant = |v: &String| if v == "none" { Value::Null } else { json!(v) };
        let mut spec = Doc::default();
        spec.opt("cron", self.cron.as_ref().map(|v| json!(v)));
        spec.opt("time_zone", self.time_zone.as_ref().map(|v| json!(v)));
        spec.opt("start", self.start.as_ref().map(instant));
        spec.opt("end", self.end.as_ref().map(instant));
        spec.opt("catch_up", self.catch_up.as_deref().map(catch_up));
        let spec = spec.done();
        let mut d = Doc::default();
        d.opt("workflow", self.workflow.as_ref().map(|v| json!(v)));
        d.opt("environment", self.environment.as_ref().map(|v| json!(v)));
        if spec != json!({}) {
            d.opt("spec", Some(spec));
        }
        d.opt("overlap", self.overlap.as_ref().map(|v| json!(v)));
        d.opt("takeover", self.takeover.as_ref().map(|v| json!(v)));
        let patch = d.done();
        if patch == json!({}) {
            return Err(ClientError::Refused(
                "nothing to change: give the flags to change (--cron, --time-zone, --start, \
                 --end, --catch-up, --overlap, --takeover, --workflow, --env), or the whole \
                 document with -f FILE"
                    .into(),
            ));
        }
        Ok((vec![tenant.clone(), name.clone()], patch))
    }
}

/// `--catch-up` as the document's `catch_up`.
fn catch_up(policy: &str) -> Value {
    match policy {
        // `all` alone means the default window and maximum.
        "all" => json!(meridian_domain::CatchUpPolicy::default()),
        other => json!({ "policy": other }),
    }
}

/// Runs one noun's verb; returns what to print.
pub async fn run<C: Args + CreateBody>(
    client: &Client,
    noun: &Noun,
    verb: &Verb<C>,
) -> Result<String, ClientError> {
    match verb {
        Verb::Create(args) => {
            let body = args.body(noun)?;
            let reply: WriteReply = client.call(Method::POST, noun.path, Some(&body)).await?;
            if reply
                .detail
                .as_ref()
                .is_some_and(|d| d["unchanged"] == true)
            {
                return Ok(format!(
                    "{} unchanged{}",
                    reply.subject,
                    reply
                        .version
                        .map(|v| format!(" (version {v})"))
                        .unwrap_or_default()
                ));
            }
            let mut said = match reply.version {
                Some(v) => format!("created {} (version {v})", reply.subject),
                None => format!("created {}", reply.subject),
            };
            // A schedule starting in the past fires from now on; what lies before is a
            // backfill's, offered here.
            if let Some(offer) = reply.detail.as_ref().map(|d| &d["backfill_offer"])
                && let (Some(n), Some(from), Some(to)) = (
                    offer["records"].as_u64(),
                    offer["from"].as_str(),
                    offer["to"].as_str(),
                )
                && let (Some(tenant), Some(name)) = (body["tenant"].as_str(), body["name"].as_str())
            {
                said.push_str(&format!(
                    "\nits start is in the past: it fires from now on; the {n} fire time{} \
                     between {from} and {to} run only if you backfill them:\n  \
                     meridian backfill create {tenant} {name} --from {from} --to {to}",
                    if n == 1 { "" } else { "s" }
                ));
            }
            Ok(said)
        }
        Verb::List(args) => list(client, noun, args).await,
        Verb::Get(args) => {
            let mut query = vec![];
            if let Some(v) = args.version {
                query.push(format!("version={v}"));
            }
            if args.stale {
                query.push("stale=true".into());
            }
            let path = with_query(&key_path(noun, &args.keys)?, &query);
            let one: Value = client.call(Method::GET, &path, None::<&()>).await?;
            Ok(pretty(&one))
        }
        Verb::Delete(args) => {
            let reply: WriteReply = client
                .call(Method::DELETE, &key_path(noun, &args.keys)?, None::<&()>)
                .await?;
            Ok(format!("deleted {}", reply.subject))
        }
        Verb::Update(args) => {
            if !noun.updatable {
                return Err(ClientError::Refused(format!(
                    "`meridian {} update` is not supported: delete it and create it again",
                    noun.word
                )));
            }
            // Flags given without a file change only what they name (PATCH), where the noun
            // takes that; a document replaces the whole entity.
            let (method, keys, body) = match (&args.file.file, args.flags.patch_document()) {
                (None, Some(patch)) => {
                    let (keys, body) = patch?;
                    (Method::PATCH, keys, body)
                }
                _ => {
                    let body = args.body(noun)?;
                    // The document names what it replaces: its tenant (if any) and name.
                    (Method::PUT, document_keys(noun, &body)?, body)
                }
            };
            let reply: WriteReply = client
                .call(method, &key_path(noun, &keys)?, Some(&body))
                .await?;
            if reply
                .detail
                .as_ref()
                .is_some_and(|d| d["unchanged"] == true)
            {
                return Ok(format!("{} unchanged", reply.subject));
            }
            Ok(match reply.version {
                Some(v) => format!("updated {} (version {v})", reply.subject),
                None => format!("updated {}", reply.subject),
            })
        }
    }
}

pub fn key_path(noun: &Noun, keys: &[String]) -> Result<String, ClientError> {
    if keys.len() != noun.keys.len() {
        return Err(ClientError::Refused(format!(
            "`meridian {}` takes {} (got {} argument{})",
            noun.word,
            noun.keys.join(" "),
            keys.len(),
            if keys.len() == 1 { "" } else { "s" }
        )));
    }
    let mut path = noun.path.to_owned();
    for k in keys {
        path.push('/');
        path.push_str(&encode(k));
    }
    Ok(path)
}

/// `list`: one answer; for the nouns listed a page at a time, the page asked for, or every
/// page in turn.
async fn list(client: &Client, noun: &Noun, args: &ListArgs) -> Result<String, ClientError> {
    let mut query = vec![];
    if let Some(t) = &args.tenant {
        query.push(format!("tenant={}", encode(t)));
    }
    if args.stale {
        query.push("stale=true".into());
    }
    if !noun.paged {
        if args.limit.is_some() || args.after.is_some() || args.chunk_size != crate::api::PAGE {
            return Err(ClientError::Refused(
                "--limit, --after and --chunk-size: only workflows and schedules are listed a \
                 page at a time"
                    .into(),
            ));
        }
        let list: Value = client
            .call(Method::GET, &with_query(noun.path, &query), None::<&()>)
            .await?;
        return Ok(pretty(&list));
    }
    let size = args.limit.unwrap_or(args.chunk_size);
    let items = pages(
        client,
        noun,
        query,
        size,
        args.after.clone(),
        args.limit.is_none(),
    )
    .await?;
    Ok(pretty(&Value::Array(items)))
}

/// A paged noun's items from the page after `after` (none: the first), `size` a request:
/// that page alone, or with `every`, each page in turn to the last.
pub async fn pages(
    client: &Client,
    noun: &Noun,
    mut query: Vec<String>,
    size: u32,
    mut after: Option<String>,
    every: bool,
) -> Result<Vec<Value>, ClientError> {
    query.push(format!("limit={size}"));
    let mut items = Vec::new();
    loop {
        let mut asked = query.clone();
        if let Some(a) = &after {
            asked.push(format!("after={}", encode(a)));
        }
        let page: Vec<Value> = client
            .call(Method::GET, &with_query(noun.path, &asked), None::<&()>)
            .await?;
        let full = page.len() == size as usize;
        after = page.last().and_then(|last| {
            Some(format!(
                "{}/{}",
                last["tenant"].as_str()?,
                last["name"].as_str()?
            ))
        });
        items.extend(page);
        if !every || !full || after.is_none() {
            return Ok(items);
        }
    }
}

pub fn with_query(path: &str, query: &[String]) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// Percent-encodes a path segment or query value (names are plain, but input may not be).
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("JSON values always print")
}
