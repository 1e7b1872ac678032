//! `meridian plane serve|init|add|remove|status` and `meridian dev`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use meridian_domain::{Clock, SystemClock};
use meridian_transport::HostsMap;
use reqwest::Method;
use serde_json::json;

use super::client::{Client, ClientError};
use crate::api::{DEFAULT_PEER_PORT, WriteReply};
use crate::certs;
use crate::config::PlaneConfig;
use crate::model::{Cluster, ClusterRole, Command, DataCenter, Environment, Grant, Name, Tenant};
use crate::raft::Node;
use crate::raft::backup::{self, BackupError};
use crate::raft::node::{NodeConfig, NodeStatus, Timing};
use crate::server::{self, Server};

#[derive(Debug, Subcommand)]
pub enum PlaneCommand {
    /// Run the node whose plane.toml `--config` names: Raft, the peer/agent service, and the
    /// REST API.
    Serve,
    /// Make the `--config` node a one-member plane and create the admin token (printed once,
    /// kept in <data_dir>/admin.token). Run once, on the first node, before its first `serve`.
    Init,
    /// Add a node (HOSTNAME or HOSTNAME:PORT, default port 7443): it joins as a learner,
    /// catches up, then becomes a voter. Start it with `plane serve` first.
    Add { node: String },
    /// Remove a node from the plane.
    Remove { hostname: String },
    /// Every node: role, term, last log index, applied index, reachable.
    Status,
    /// Snapshot files of the whole plane: backups, and what `plane restore` starts from.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Make the `--config` node a one-node plane holding FILE's state (from `plane snapshot
    /// save` or `export`). Its data_dir must hold no node yet; no partition is leased for one
    /// lease after the restore. Then start it and `plane add` the others, empty.
    Restore { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Write a snapshot of the running plane to FILE: every write acknowledged before it.
    Save {
        file: PathBuf,
        /// This node's copy as it is, without asking the leader (a plane without quorum).
        #[arg(long)]
        stale: bool,
    },
    /// Write a snapshot of the *stopped* `--config` node to FILE, with every entry of its log
    /// applied: for a plane that lost a majority of its nodes (runbooks/restore-from-snapshot.md).
    Export { file: PathBuf },
    /// What a snapshot file holds: applied index, members, counts.
    Inspect { file: PathBuf },
}

fn node_config(config: &PlaneConfig) -> Result<NodeConfig, ClientError> {
    let tls = config
        .tls
        .load()
        .map_err(|e| ClientError::Refused(format!("plane config field `tls`: {e}")))?;
    Ok(NodeConfig {
        hostname: config.hostname.clone(),
        port: config.peer_port(),
        data_dir: config.data_dir.clone(),
        tls,
        hosts: config.hosts.clone(),
        timing: config.timing,
        clock: Arc::new(SystemClock),
        logs: config.logs,
        history: config.history.clone(),
    })
}

pub fn failed(e: impl ToString) -> ClientError {
    ClientError::Failed(e.to_string())
}

/// `plane serve`: runs until Ctrl-C or SIGTERM.
pub async fn serve(path: &Path) -> Result<String, ClientError> {
    let config = PlaneConfig::load(path).map_err(|e| ClientError::Refused(e.to_string()))?;
    let node_config = node_config(&config)?;
    let peer = server::bind_peer(config.listen).await.map_err(failed)?;
    let bucket = config
        .bucket
        .as_ref()
        .map(meridian_bucket::Bucket::new)
        .transpose()
        .map_err(|e| ClientError::Refused(format!("plane config {}: {e}", path.display())))?;
    let http = server::bind_http(config.http.listen).map_err(failed)?;
    let server = Server::start(
        node_config,
        peer,
        http,
        config.http.tls,
        bucket,
        config.http.sessions(),
        config.mail.clone(),
    )
    .await
    .map_err(|e| match e {
        server::ServeError::Node(n) if n.to_string().contains("already open") => {
            ClientError::Failed(format!(
                "{n}: is another `meridian plane serve` using {}?",
                config.data_dir.display()
            ))
        }
        other => failed(other),
    })?;
    let scheme = if config.http.tls { "https" } else { "http" };
    eprintln!(
        "plane node {} serving peers and agents on {}, the API on {scheme}://{}/api/v1",
        config.hostname, config.listen, server.http_addr
    );
    if !server::is_initialized(&server.node).await {
        eprintln!(
            "not part of a plane yet: run `meridian plane init` (first node) or \
             `meridian plane add {}:{}` against a member",
            config.hostname,
            config.peer_port()
        );
    }
    shutdown_signal().await;
    eprintln!("stopping");
    server.shutdown().await;
    Ok(String::new())
}

/// `plane init`: starts the node privately (no peer can reach it, no API), makes it a plane of
/// one, creates the admin token, and stops.
pub async fn init(path: &Path) -> Result<String, ClientError> {
    let config = PlaneConfig::load(path).map_err(|e| ClientError::Refused(e.to_string()))?;
    let node_config = node_config(&config)?;
    let peer = server::bind_peer(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(failed)?;
    let node = crate::raft::node::PlaneNode::start(node_config, peer, None)
        .await
        .map_err(|e| {
            ClientError::Failed(format!(
                "{e}; is `meridian plane serve` running on {}? stop it first",
                config.data_dir.display()
            ))
        })?;
    // Done before, unless a crash left a secret on its way (`*.new`): then this finishes it.
    let file = |name: &str| config.data_dir.join(name);
    let pending = |name: &str| config.data_dir.join(format!("{name}.new"));
    if server::is_initialized(&node).await
        && file(server::ADMIN_TOKEN_FILE).exists()
        && file(server::ADMIN_PASSWORD_FILE).exists()
        && !pending(server::ADMIN_TOKEN_FILE).exists()
        && !pending(server::ADMIN_PASSWORD_FILE).exists()
    {
        node.shutdown().await;
        return Err(ClientError::Refused(format!(
            "{} is already part of a plane (its admin token is in {})",
            config.hostname,
            config.data_dir.join(server::ADMIN_TOKEN_FILE).display()
        )));
    }
    let done = server::bootstrap(&node, &config.data_dir, &SystemClock).await;
    node.shutdown().await;
    let done = done.map_err(failed)?;
    let mut out = format!(
        "initialised a one-node plane on {}; start it with `meridian plane serve --config {}`",
        config.hostname,
        path.display()
    );
    if let Some(secret) = done.admin_token {
        out.push_str(&format!(
            "\nadmin token (shown once; also in {}):\n{secret}",
            done.token_file.display()
        ));
    }
    if let Some(password) = done.admin_password {
        out.push_str(&format!(
            "\nuser `admin`, password (shown once; also in {}):\n{password}",
            done.password_file.display()
        ));
    }
    Ok(out)
}

pub async fn add(client: &Client, node: &str) -> Result<String, ClientError> {
    let (hostname, port) = match node.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>().map_err(|_| {
                ClientError::Refused(format!("`{node}`: the port `{p}` is not a number"))
            })?,
        ),
        None => (node, DEFAULT_PEER_PORT),
    };
    let body = json!({"hostname": hostname, "port": port});
    let reply: WriteReply = client
        .call(Method::POST, "/plane/nodes", Some(&body))
        .await?;
    Ok(format!("added {} as a voter", reply.subject))
}

/// `plane snapshot save`: downloads beside `file`, checks what came, then renames.
pub async fn snapshot_save(
    client: &Client,
    file: &Path,
    stale: bool,
) -> Result<String, ClientError> {
    let part = file.with_extension("part");
    let mut out = tokio::fs::File::create(&part)
        .await
        .map_err(|e| ClientError::Failed(format!("{}: {e}", part.display())))?;
    let path = if stale {
        "/plane/snapshot?stale=true"
    } else {
        "/plane/snapshot"
    };
    let saved = async {
        client.download(path, &mut out).await?;
        out.sync_all()
            .await
            .map_err(|e| ClientError::Failed(format!("{}: {e}", part.display())))?;
        let summary = backup::inspect(&part).await.map_err(failed)?;
        std::fs::rename(&part, file)
            .map_err(|e| ClientError::Failed(format!("{}: {e}", file.display())))?;
        Ok(summary)
    }
    .await;
    if saved.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    Ok(format!("saved {}: {}", file.display(), saved?))
}

/// `plane snapshot export`: from the stopped node's data directory.
pub async fn snapshot_export(path: &Path, file: &Path) -> Result<String, ClientError> {
    let config = PlaneConfig::load(path).map_err(|e| ClientError::Refused(e.to_string()))?;
    let summary = backup::export(&config.data_dir, file)
        .await
        .map_err(|e| match e {
            BackupError::NoNode { .. } => ClientError::Refused(e.to_string()),
            e => failed(e),
        })?;
    Ok(format!(
        "exported {} from {}: {summary}",
        file.display(),
        config.data_dir.display()
    ))
}

pub async fn snapshot_inspect(file: &Path) -> Result<String, ClientError> {
    let summary = backup::inspect(file)
        .await
        .map_err(|e| ClientError::Refused(e.to_string()))?;
    Ok(format!("{}: {summary}", file.display()))
}

/// `plane restore`: seeds the config's data directory from `file`.
pub async fn restore(path: &Path, file: &Path) -> Result<String, ClientError> {
    let config = PlaneConfig::load(path).map_err(|e| ClientError::Refused(e.to_string()))?;
    let node = Node::new(config.hostname.clone(), config.peer_port());
    let summary = backup::restore(file, &config.data_dir, &node, SystemClock.now_ms())
        .await
        .map_err(|e| match e {
            BackupError::Io { .. } => failed(e),
            e => ClientError::Refused(e.to_string()),
        })?;
    Ok(format!(
        "restored {} into {} as a one-node plane of {}: {summary}\n\
         start it with `meridian plane serve --config {}`, then `plane add` the other nodes \
         (started with empty data directories); no partition is leased for one lease",
        file.display(),
        config.data_dir.display(),
        config.hostname,
        path.display()
    ))
}

pub async fn remove(client: &Client, hostname: &str) -> Result<String, ClientError> {
    let reply: WriteReply = client
        .call(
            Method::DELETE,
            &format!("/plane/nodes/{hostname}"),
            None::<&()>,
        )
        .await?;
    Ok(format!("removed {}", reply.subject))
}

pub async fn status(client: &Client) -> Result<String, ClientError> {
    let nodes: Vec<NodeStatus> = client
        .call(Method::GET, "/plane/status", None::<&()>)
        .await?;
    Ok(status_table(&nodes))
}

/// The status table, one row per node.
pub fn status_table(nodes: &[NodeStatus]) -> String {
    let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    let mut rows = vec![[
        "NODE".to_owned(),
        "ROLE".into(),
        "VOTER".into(),
        "TERM".into(),
        "LAST LOG".into(),
        "APPLIED".into(),
        "REACHABLE".into(),
    ]];
    for n in nodes {
        rows.push([
            format!("{}:{}", n.hostname, n.port),
            n.role.clone(),
            if n.voter { "yes" } else { "no" }.into(),
            if n.reachable {
                n.term.to_string()
            } else {
                "-".into()
            },
            opt(n.last_log_index),
            opt(n.applied_index),
            if n.reachable { "yes" } else { "no" }.into(),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the dev plane serves its REST API. Other `meridian` commands look for it at
    /// `--addr` (default http://127.0.0.1:8080): when this differs, the `try:` line dev prints
    /// says the `--addr` to use. (`--data-dir`, default `meridian-data`, is where the plane
    /// keeps its state; a restart with the same directory keeps everything.)
    #[arg(long, default_value = DEFAULT_DEV_HTTP)]
    pub http: SocketAddr,
    /// An S3 endpoint for resources (`http://127.0.0.1:9000`); credentials from
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. Without it, resources are off.
    #[arg(long, env = "MERIDIAN_S3_ENDPOINT", requires = "s3_bucket")]
    pub s3_endpoint: Option<String>,
    /// The bucket at `--s3-endpoint`.
    #[arg(long, env = "MERIDIAN_S3_BUCKET", requires = "s3_endpoint")]
    pub s3_bucket: Option<String>,
    /// How many runs the embedded agent runs at once (its `slots`; an agent's default).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub slots: u32,
}

impl DevArgs {
    fn bucket(&self) -> Option<meridian_bucket::BucketConfig> {
        match (&self.s3_endpoint, &self.s3_bucket) {
            (Some(endpoint), Some(bucket)) => Some(meridian_bucket::BucketConfig::new(
                endpoint.clone(),
                bucket.clone(),
            )),
            _ => None,
        }
    }
}

/// The hostname the dev node calls itself (its certificate is issued for it).
pub const DEV_HOSTNAME: &str = "localhost";

/// The plane half of `meridian dev`: a one-node plane on local defaults with an example
/// federation, serving until [`DevPlane::shutdown`]. The `meridian` binary starts the embedded
/// agent beside it (the plane crate does not link the agent).
pub struct DevPlane {
    server: Server,
    boot: server::Bootstrapped,
    /// The port agents dial the plane on.
    pub port: u16,
    pub clock: Arc<dyn Clock>,
    /// The bucket `--s3-endpoint` names, for the embedded agent too.
    pub bucket: Option<meridian_bucket::BucketConfig>,
    http: SocketAddr,
    dir: PathBuf,
}

impl DevPlane {
    pub async fn start(args: &DevArgs, dir: &Path) -> Result<Self, ClientError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| failed(format!("creating {}: {e}", dir.display())))?;
        let tls = dev_certificates(&dir.join("certs"))?;
        // Peers never dial a one-node plane; the port only fills the membership record.
        let peer = server::bind_peer(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(failed)?;
        let bucket_config = args.bucket();
        let bucket = bucket_config
            .as_ref()
            .map(meridian_bucket::Bucket::new)
            .transpose()
            .map_err(|e| ClientError::Refused(format!("--s3-endpoint: {e}")))?;
        let http = server::bind_http(args.http).map_err(failed)?;
        let port = peer.local_addr().map_err(failed)?.port();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let server = Server::start(
            NodeConfig {
                hostname: DEV_HOSTNAME.into(),
                port,
                data_dir: dir.join("plane"),
                tls,
                hosts: HostsMap::default(),
                timing: Timing::default(),
                clock: clock.clone(),
                logs: Default::default(),
                history: Default::default(),
            },
            peer,
            http,
            false,
            bucket,
            crate::api::session::SessionSettings::default(),
            None,
        )
        .await
        .map_err(|e| {
            failed(format!(
                "{e}; is another `meridian dev` using {}?",
                dir.display()
            ))
        })?;
        let boot = server::bootstrap(&server.node, dir, clock.as_ref())
            .await
            .map_err(failed)?;
        for command in examples() {
            server::ensure(&server.node, clock.as_ref(), command)
                .await
                .map_err(failed)?;
        }
        // An example workflow, applied once (applying again would make a new version).
        let demo = Name::new("demo").expect("valid");
        let hello = Name::new("hello").expect("valid");
        if crate::model::query::workflow(server.node.state.pool(), &demo, &hello, None)
            .await
            .map_err(failed)?
            .is_none()
        {
            server::ensure(
                &server.node,
                clock.as_ref(),
                Command::ApplyWorkflow(crate::model::Workflow {
                    tenant: demo,
                    name: hello,
                    environment: Some(Name::new("dev").expect("valid")),
                    definition: meridian_domain::workflow::WorkflowDefinition::shell(
                        "greet",
                        "echo \"hello from $MERIDIAN_RUN_ID in $MERIDIAN_ENV\"",
                    ),
                }),
            )
            .await
            .map_err(failed)?;
        }
        Ok(Self {
            server,
            boot,
            port,
            clock,
            bucket: bucket_config,
            http: args.http,
            dir: dir.to_owned(),
        })
    }

    /// What `meridian dev` prints once plane and agent are up: where the UI and API are, the
    /// admin's credentials, and a command to try.
    pub fn banner(&self) -> String {
        let url = format!("http://{}", self.server.http_addr);
        let boot = &self.boot;
        let mut out = vec![
            format!(
                "Meridian dev: a one-node plane and an agent (cluster `local`) with state in {}",
                self.dir.display()
            ),
            format!("  web UI    {url}/   (sign in as `admin`)"),
            format!("  REST API  {url}/api/v1   (OpenAPI: {url}/api/v1/openapi.json)"),
        ];
        out.push(match &boot.admin_token {
            Some(secret) => format!(
                "  admin token (shown once; also in {}):\n    {secret}",
                boot.token_file.display()
            ),
            None => format!("  admin token in {}", boot.token_file.display()),
        });
        match &boot.admin_password {
            Some(password) => out.push(format!(
                "  user `admin`, password (shown once; also in {}):\n    {password}",
                boot.password_file.display()
            )),
            None if boot.password_file.exists() => out.push(format!(
                "  user `admin`, password in {}",
                boot.password_file.display()
            )),
            None => {}
        }
        out.push(format!(
            "  try: {} runs now demo hello      (Ctrl-C stops; state is kept)",
            cli_hint(self.http, &self.dir)
        ));
        out.join("\n")
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// How another shell's `meridian` reaches this dev plane: its data directory (for the token)
/// and, when the API is not where the CLI looks by default, its address.
pub fn cli_hint(http: SocketAddr, dir: &Path) -> String {
    let mut hint = String::from("meridian");
    if http.to_string() != DEFAULT_DEV_HTTP {
        // A wildcard address is reached on loopback from this machine.
        let reach = if http.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], http.port()))
        } else {
            http
        };
        hint.push_str(&format!(" --addr http://{reach}"));
    }
    let dir = dir.display().to_string();
    if dir != "meridian-data" {
        hint.push_str(&format!(" --data-dir {dir}"));
    }
    hint
}

/// Where `meridian dev` serves its API unless told otherwise: where the CLI looks by default.
pub const DEFAULT_DEV_HTTP: &str = "127.0.0.1:8080";

/// The embedded agent's hostname (its certificate names it and cluster `local`).
pub const DEV_AGENT: &str = "agent.localhost";

/// The embedded agent's certificate files in `<dir>/certs`, issued by the dev CA for
/// [`DEV_AGENT`] in cluster `local` on first start.
pub fn dev_agent_tls(dir: &Path) -> Result<meridian_transport::TlsFiles, ClientError> {
    let certs_dir = dir.join("certs");
    let cert = certs_dir.join(format!("{DEV_AGENT}.pem"));
    let key = certs_dir.join(format!("{DEV_AGENT}.key"));
    if !cert.exists() {
        let ca = certs::read_ca(&certs_dir).map_err(failed)?;
        let leaf = certs::issue(
            &ca,
            DEV_AGENT,
            meridian_transport::Role::Agent,
            Some("local"),
        )
        .map_err(failed)?;
        let _ = std::fs::remove_file(&key);
        certs::write(&certs_dir, DEV_AGENT, &leaf).map_err(failed)?;
    }
    Ok(meridian_transport::TlsFiles {
        ca: certs_dir.join(certs::CA_CERT),
        cert,
        key,
    })
}

/// A CA and a plane certificate for `localhost` in `dir`, made on first start.
fn dev_certificates(dir: &Path) -> Result<meridian_transport::TlsMaterial, ClientError> {
    let node_cert = dir.join(format!("{DEV_HOSTNAME}.pem"));
    if !node_cert.exists() {
        std::fs::create_dir_all(dir).map_err(failed)?;
        let ca = match certs::read_ca(dir) {
            Ok(ca) => ca,
            Err(_) => {
                let ca = certs::new_ca("Meridian dev CA").map_err(failed)?;
                certs::write(dir, "ca", &ca).map_err(failed)?;
                ca
            }
        };
        let leaf = certs::issue(&ca, DEV_HOSTNAME, meridian_transport::Role::Plane, None)
            .map_err(failed)?;
        // A crash between the two files leaves a key without a certificate; start over.
        let _ = std::fs::remove_file(dir.join(format!("{DEV_HOSTNAME}.key")));
        certs::write(dir, DEV_HOSTNAME, &leaf).map_err(failed)?;
    }
    meridian_transport::TlsFiles {
        ca: dir.join(certs::CA_CERT),
        cert: node_cert,
        key: dir.join(format!("{DEV_HOSTNAME}.key")),
    }
    .load()
    .map_err(failed)
}

/// The example federation `meridian dev` starts with.
fn examples() -> Vec<Command> {
    let n = |s: &str| Name::new(s).expect("example names are valid");
    vec![
        Command::CreateDataCenter(DataCenter {
            name: n("local"),
            description: "This machine".into(),
        }),
        Command::CreateCluster(Cluster {
            name: n("local"),
            dc: n("local"),
            role: ClusterRole::Active,
            backup: None,
            partitions: 16,
            lease_seconds: 30,
        }),
        Command::CreateEnvironment(Environment {
            name: n("dev"),
            cluster: n("local"),
            vars: [("MERIDIAN_ENV".to_owned(), "dev".to_owned())].into(),
            work_dir: None,
            queue: None,
            // `meridian dev` runs tasks as whoever started it: one process on a developer's
            // machine, with no other user to give them.
            run_as: crate::model::RunAs {
                allow_agent_user: true,
                ..Default::default()
            },
        }),
        Command::CreateTenant(Tenant {
            name: n("demo"),
            description: "Example tenant".into(),
            log_retention_days: None,
            history_retention_days: None,
        }),
        Command::CreateGrant(Grant {
            tenant: n("demo"),
            environment: n("dev"),
            // Enforced (issue #20): room for what a laptop runs at once.
            max_concurrent_runs: 1000,
        }),
    ]
}

/// Resolves on Ctrl-C or SIGTERM: how `plane serve` and `meridian dev` are stopped.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
