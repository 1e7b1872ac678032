//! One plane node: its stores, its Raft, and the gRPC server peers (and, later, agents) dial.
//!
//! Writes go through [`PlaneNode::write`], which any node accepts: on a follower it forwards
//! the proposal to the leader over `PlanePeer.Forward`, so clients never need to know who
//! leads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meridian_domain::Clock;
use meridian_proto::pb::plane_peer_server::PlanePeerServer;
use meridian_transport::{HostsMap, TlsMaterial};
use openraft::error::{InitializeError, RaftError};
use openraft::{Config, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;

pub use super::ask::{Answer, Ask, AskError, NodeStatus, answer};
use super::ask::{AskRefusal, AskReply, local_status};
use super::backup;
use super::log_store::LogStore;
use super::network::{Links, MAX_MESSAGE_BYTES, Peers, Rpc};
use super::peer_service::PeerService;
use super::state_machine::StateMachine;
use super::{Node, NodeId, Outcome, Raft, Request};
use crate::history_store::{HistoryConfig, HistoryStore};
use crate::logbook::sweep::Sweeper;
use crate::logbook::{Logbook, LogsConfig};
use crate::model::Proposal;
use crate::model::wal::Checkpointer;

/// Raft timings. Defaults suit one data center or a fast WAN; raise them for slow links.
///
/// openraft uses `election_max_ms` as the leader lease (followers refuse to vote for that long
/// after the last heartbeat) and a survivor then waits out its own timeout, so a plane that
/// lost its leader elects another after about twice `election_max_ms` (measured: 1.0 s with
/// the defaults; see BENCHMARKS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// How often the leader sends heartbeats, in milliseconds. openraft also gives up on an
    /// AppendEntries after this long, so it must cover a loaded follower's fsync'd append: at
    /// 80 ms, appends timed out under load and a new leader stalled for seconds.
    pub heartbeat_ms: u64,
    /// A follower that hears nothing for a random time between these starts an election.
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot after this many entries since the last one, times one more for each
    /// 64 MiB the last snapshot took (`compaction`).
    pub snapshot_every: u64,
    /// Log entries kept after they are in a snapshot, so a briefly lagging peer can catch up
    /// from the log instead of a whole snapshot.
    pub keep_after_snapshot: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_ms: 150,
            election_min_ms: 300,
            election_max_ms: 500,
            snapshot_every: 5000,
            keep_after_snapshot: 1000,
        }
    }
}

/// What a node needs to start.
#[derive(Clone)]
pub struct NodeConfig {
    /// This node's hostname, as in its certificate.
    pub hostname: String,
    /// The port peers dial (advertised in the membership).
    pub port: u16,
    pub data_dir: PathBuf,
    pub tls: TlsMaterial,
    pub hosts: HostsMap,
    pub timing: Timing,
    /// Stamps agents' heartbeats and reports (lease expiries are decided at that time).
    pub clock: Arc<dyn Clock>,
    /// The cap and retention of the task logs this node keeps (`[logs]`).
    pub logs: LogsConfig,
    /// Where finished runs go, when, and for how long (`[history]`).
    pub history: HistoryConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("opening the Raft log in {path}: {source}")]
    Log { path: PathBuf, source: redb::Error },
    #[error("opening the model database in {path}: {source}")]
    Model { path: PathBuf, source: sqlx::Error },
    #[error("opening the history store {at}: {source}")]
    History { at: String, source: sqlx::Error },
    #[error("opening the logbook in {path}: {source}")]
    Logbook { path: PathBuf, source: sqlx::Error },
    #[error(
        "{0} holds a model (model.db) but no Raft log (raft.redb): a `plane restore` was cut \
         short or the log is lost; move the directory away and restore into an empty one"
    )]
    NoLog(PathBuf),
    #[error("Raft configuration: {0}")]
    Config(String),
    #[error("starting Raft: {0}")]
    Raft(String),
    #[error("gRPC server: {0}")]
    Server(String),
}

/// Counts of what agents sent this node, and of what it wrote to its Raft log, since it
/// started; `/metrics` shows them as counters.
#[derive(Debug, Default)]
pub struct Tally {
    /// Report calls answered.
    pub reports: std::sync::atomic::AtomicU64,
    /// Raft entries proposed for reports (`intake`: reports waiting together are one).
    pub report_proposals: std::sync::atomic::AtomicU64,
    /// Run and attempt events committed through Raft.
    pub events_applied: std::sync::atomic::AtomicU64,
    /// Events and log pieces refused for good.
    pub entries_refused: std::sync::atomic::AtomicU64,
    /// Log pieces stored in this node's logbook, and their bytes.
    pub log_pieces: std::sync::atomic::AtomicU64,
    pub log_bytes: std::sync::atomic::AtomicU64,
    /// Bytes of Raft log entries this node wrote (as leader or follower).
    pub raft_appended_bytes: Arc<std::sync::atomic::AtomicU64>,
}

/// What every part of a node that reads or writes the plane shares: Raft, the local state
/// machine, and the peers writes are forwarded to. The agent service holds one too.
pub struct Core {
    pub raft: Raft,
    pub state: StateMachine,
    /// The task logs agents sent to this node (not replicated).
    pub logbook: Logbook,
    /// What this node's agent service has done since it started (for `/metrics`).
    pub tally: Arc<Tally>,
    /// The bucket task logs are copied to, once the archiver starts (`logs::archive`).
    pub archive: std::sync::OnceLock<crate::logbook::object::Archive>,
    pub node: Node,
    peers: Peers,
}

/// A running plane node.
pub struct PlaneNode {
    core: Arc<Core>,
    connections: Connections,
    stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    server: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Cancelled when the node stops: the workers that run beside it (the alert courier)
    /// stop with it.
    stopping: tokio_util::sync::CancellationToken,
}

/// Builds the gRPC services a node serves beside `PlanePeer` on its listener, from its core.
pub type Beside = Box<dyn FnOnce(Arc<Core>) -> Routes + Send>;

impl PlaneNode {
    /// Opens the node's stores in `config.data_dir`, starts Raft, and serves `PlanePeer` on
    /// `listener` with mutual TLS, beside the services `beside` builds from the node's core
    /// (the agents' `AgentLink`, which the server composes; none for a node started only to
    /// initialise or restore the plane).
    pub async fn start(
        config: NodeConfig,
        listener: TcpListener,
        beside: Option<Beside>,
    ) -> Result<Self, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| NodeError::Model {
            path: config.data_dir.clone(),
            source: e.into(),
        })?;
        let log_path = config.data_dir.join(backup::LOG_FILE);
        if !log_path.exists() && config.data_dir.join(backup::MODEL_FILE).exists() {
            return Err(NodeError::NoLog(config.data_dir.clone()));
        }
        let log = LogStore::open(&log_path).map_err(|source| NodeError::Log {
            path: log_path,
            source,
        })?;
        let appended = log.appended();
        let history = HistoryStore::open(&config.data_dir, config.history.url.as_deref())
            .await
            .map_err(|source| NodeError::History {
                at: config.history.url.as_deref().map_or_else(
                    || {
                        config
                            .data_dir
                            .join(crate::history_store::HISTORY_FILE)
                            .display()
                            .to_string()
                    },
                    redacted,
                ),
                source,
            })?;
        let state = StateMachine::open(&config.data_dir, history)
            .await
            .map_err(|source| NodeError::Model {
                path: config.data_dir.clone(),
                source,
            })?;
        // Runs the model retired that the history store never got (a restore, a lost file)
        // are copied in from the other members (`retirement::Filler`).
        state
            .mark_history_gap()
            .await
            .map_err(|source| NodeError::History {
                at: "(its gaps)".into(),
                source,
            })?;
        let logbook = Logbook::open(&config.data_dir, config.logs)
            .await
            .map_err(|source| NodeError::Logbook {
                path: config.data_dir.join(crate::logbook::LOGBOOK_FILE),
                source,
            })?;
        let t = config.timing;
        let raft_config = Config {
            cluster_name: "meridian-plane".into(),
            heartbeat_interval: t.heartbeat_ms,
            election_timeout_min: t.election_min_ms,
            election_timeout_max: t.election_max_ms,
            install_snapshot_timeout: 10_000,
            snapshot_max_chunk_size: 1024 * 1024,
            // `compaction::Compactor` asks for snapshots instead (their cost grows with the
            // model; its interval does too).
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: t.keep_after_snapshot,
            purge_batch_size: 256,
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::Config(e.to_string()))?;
        let peers = Peers::new(config.tls.clone(), config.hosts.clone());
        let node = Node::new(&config.hostname, config.port);
        let raft = Raft::new(
            node.id(),
            Arc::new(raft_config),
            peers.clone(),
            log,
            state.clone(),
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;

        let core = Arc::new(Core {
            raft: raft.clone(),
            state,
            logbook: logbook.clone(),
            tally: Arc::new(Tally {
                raft_appended_bytes: appended,
                ..Tally::default()
            }),
            archive: std::sync::OnceLock::new(),
            node,
            peers,
        });
        let stopping = tokio_util::sync::CancellationToken::new();
        let compactor = super::compaction::Compactor {
            raft: raft.clone(),
            state: core.state.clone(),
            snapshot_every: t.snapshot_every,
        };
        tokio::spawn(compactor.run(stopping.clone()));
        let sweeper = Sweeper {
            logbook: logbook.clone(),
            model: core.state.pool().clone(),
            clock: config.clock.clone(),
        };
        tokio::spawn(sweeper.run(stopping.clone()));
        let history_sweeper = crate::history_store::sweep::Sweeper {
            history: core.state.history().clone(),
            model: core.state.pool().clone(),
            clock: config.clock.clone(),
            retention_days: config.history.retention_days,
        };
        tokio::spawn(history_sweeper.run(stopping.clone()));
        // The apply's commits never checkpoint (`model::wal`): these do, beside it.
        let model_wal =
            Checkpointer::new("model", core.state.pool().clone(), core.state.wal_restart());
        tokio::spawn(model_wal.run(stopping.clone()));
        let history = core.state.history();
        let history_wal =
            Checkpointer::new("history store", history.clone(), history.wal_restart());
        tokio::spawn(history_wal.run(stopping.clone()));
        let tls = config.tls.server();
        let stores = super::ask::Stores {
            logbook,
            history: core.state.history().clone(),
        };
        let peer = PlanePeerServer::new(PeerService::new(raft.clone(), stores))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let routes = match beside {
            Some(build) => build(core.clone()).add_service(peer),
            None => Routes::new(peer),
        };
        let router = tonic::transport::Server::builder()
            .tls_config(tls)
            .map_err(|e| NodeError::Server(e.to_string()))?
            .add_routes(routes);
        let (stop, stopped) = oneshot::channel::<()>();
        let connections = Connections::default();
        let tracked = connections.clone();
        let incoming = TcpListenerStream::new(listener).map(move |accepted| {
            if let Ok(tcp) = &accepted {
                let _ = tcp.set_nodelay(true);
                tracked.track(tcp);
            }
            accepted
        });
        let server = tokio::spawn(async move {
            let _ = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            core,
            connections,
            stop: std::sync::Mutex::new(Some(stop)),
            server: std::sync::Mutex::new(Some(server)),
            stopping,
        })
    }

    /// The shared part, for services that outlive a borrow of the node.
    pub fn core(&self) -> Arc<Core> {
        self.core.clone()
    }

    /// Cancelled when the node shuts down or is aborted: workers started beside it wait on it.
    pub fn stopping(&self) -> tokio_util::sync::CancellationToken {
        self.stopping.clone()
    }

    /// Makes this node a one-member plane. Idempotent: a node already initialised is left
    /// as it is.
    pub async fn initialize(&self) -> Result<(), AskError> {
        let members = BTreeMap::from([(self.id(), self.node.clone())]);
        match self.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(AskError::Failed(format!("initialising the plane: {e}"))),
        }
    }
}

impl std::ops::Deref for PlaneNode {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Core {
    pub fn id(&self) -> NodeId {
        self.node.id()
    }

    /// Adds `node` as a learner, waits for it to catch up, then promotes it to voter. Any node
    /// may be asked; the work is done by the leader.
    pub async fn add_voter(&self, node: Node, timeout: Duration) -> Result<(), AskError> {
        self.ask_leader(Ask::AddVoter(node), timeout)
            .await
            .map(drop)
    }

    /// Removes the node with `hostname` from the plane. Any node may be asked.
    pub async fn remove(&self, hostname: &str, timeout: Duration) -> Result<(), AskError> {
        self.ask_leader(Ask::Remove(hostname.to_owned()), timeout)
            .await
            .map(drop)
    }

    /// Commits `proposal` through whichever node leads, and returns what applying it did.
    pub async fn write(&self, proposal: Proposal, timeout: Duration) -> Result<Outcome, AskError> {
        match self
            .ask_leader(Ask::Write(Box::new(Request(proposal))), timeout)
            .await?
        {
            Answer::Written(outcome) => Ok(outcome),
            other => Err(AskError::Failed(format!("unexpected answer {other:?}"))),
        }
    }

    /// Waits until this node's state machine holds everything committed before the call: asks
    /// the leader for its read index (the leader first confirms with a quorum that it still
    /// leads), then waits for the local apply to reach it. A read after this is linearizable.
    pub async fn read_barrier(&self, timeout: Duration) -> Result<(), AskError> {
        let Answer::ReadIndex(index) = self.ask_leader(Ask::ReadIndex, timeout).await? else {
            return Err(AskError::Failed(
                "the leader answered a read barrier oddly".into(),
            ));
        };
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "read barrier")
            .await
            .map_err(|e| AskError::Failed(format!("waiting to apply the read index: {e}")))?;
        Ok(())
    }

    /// This node's own view: role, term, log and apply progress, leader, members.
    pub fn status(&self) -> NodeStatus {
        local_status(&self.raft)
    }

    /// Every member's status as it reports it; members that do not answer within `timeout`
    /// are listed from the membership, marked unreachable.
    pub async fn plane_status(&self, timeout: Duration) -> Vec<NodeStatus> {
        let me = self.status();
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let mut all = Vec::new();
        for member in &me.members {
            if member.hostname == self.node.hostname {
                all.push(me.clone());
                continue;
            }
            let asked = self
                .peers
                .call::<_, AskReply>(member, Rpc::Forward, &Ask::Status, timeout)
                .await;
            match asked {
                Ok(Ok(Answer::Status(status))) => all.push(status),
                _ => all.push(NodeStatus::unreachable(
                    member,
                    membership
                        .membership()
                        .voter_ids()
                        .any(|v| v == member.id()),
                )),
            }
        }
        all
    }

    /// Runs `ask` on the leader: here if this node leads, else forwarded to the leader.
    ///
    /// Retries only where the ask cannot have taken effect: while there is no leader, or when
    /// the node it went to was not (or no longer) the leader and said so — and a read
    /// whose link broke mid-call. A write whose link broke is [`AskError::Unconfirmed`].
    pub async fn ask_leader(&self, ask: Ask, timeout: Duration) -> Result<Answer, AskError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            // A leader cut off from its quorum keeps the ask until it learns it no longer
            // leads, which may be never; the caller's deadline bounds the wait.
            let local = tokio::time::timeout(
                remaining,
                answer(
                    &self.raft,
                    &super::ask::Stores {
                        logbook: self.logbook.clone(),
                        history: self.state.history().clone(),
                    },
                    ask.clone(),
                ),
            )
            .await
            .map_err(|_| AskError::Timeout(timeout))?;
            let leader = match local {
                Ok(done) => return Ok(done),
                Err(AskRefusal::NotLeader(leader)) => leader,
                Err(AskRefusal::Busy) => None,
                Err(AskRefusal::Failed(e)) => return Err(AskError::Failed(e)),
                Err(AskRefusal::Missing(e)) => return Err(AskError::Missing(e)),
                Err(AskRefusal::Stopped) => return Err(AskError::Stopped),
            };
            if let Some(leader) = leader.filter(|l| l.hostname != self.node.hostname) {
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self
                    .peers
                    .call::<_, AskReply>(&leader, Rpc::Forward, &ask, remaining)
                    .await
                {
                    Ok(Ok(done)) => return Ok(done),
                    // Not the leader (any more), or its Raft already stopped (a crashed
                    // node whose connections linger): the ask was not taken; try again.
                    Ok(Err(AskRefusal::NotLeader(_) | AskRefusal::Busy | AskRefusal::Stopped)) => {}
                    Ok(Err(AskRefusal::Failed(e))) => return Err(AskError::Failed(e)),
                    Ok(Err(AskRefusal::Missing(e))) => return Err(AskError::Missing(e)),
                    Err(e) if e.is_unreachable() => {}
                    Err(e) if e.is_timeout() => return Err(AskError::Timeout(timeout)),
                    // The link broke mid-call (the leader killed, say): a read is asked
                    // again, a write may have been taken and is not.
                    Err(e) if e.is_broken() && !ask.changes_the_plane() => {}
                    Err(e) if e.is_broken() => return Err(AskError::Unconfirmed(e.to_string())),
                    Err(e) => return Err(AskError::Failed(e.to_string())),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(AskError::NoLeader(timeout));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks every other member `ask` (any-node asks: status, logbook reads), all at once; a
    /// member that does not answer within `timeout` gives an error.
    pub async fn ask_others(
        &self,
        ask: &Ask,
        timeout: Duration,
    ) -> Vec<(Node, Result<Answer, String>)> {
        let mut calls = tokio::task::JoinSet::new();
        for (i, member) in self.others().into_iter().enumerate() {
            let (peers, ask) = (self.peers.clone(), ask.clone());
            calls.spawn(async move {
                let answer = ask_member(&peers, &member, &ask, timeout).await;
                (i, member, answer)
            });
        }
        let mut all: Vec<_> = calls.join_all().await;
        all.sort_by_key(|(i, _, _)| *i);
        all.into_iter().map(|(_, m, a)| (m, a)).collect()
    }

    /// Asks one other member `ask`.
    pub async fn ask_member(
        &self,
        member: &Node,
        ask: &Ask,
        timeout: Duration,
    ) -> Result<Answer, String> {
        ask_member(&self.peers, member, ask, timeout).await
    }

    /// The plane's other members, as this node's membership says.
    pub fn others(&self) -> Vec<Node> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership()
            .nodes()
            .map(|(_, n)| n.clone())
            .filter(|n| n.hostname != self.node.hostname)
            .collect()
    }

    /// Cuts and heals this node's links to peers (fault injection for tests and drills).
    pub fn links(&self) -> &Links {
        self.peers.links()
    }
}

impl PlaneNode {
    /// Stops serving and shuts Raft down.
    pub async fn shutdown(&self) {
        self.stopping.cancel();
        if let Some(stop) = self.stop.lock().expect("stop lock").take() {
            let _ = stop.send(());
        }
        let server = self.server.lock().expect("server lock").take();
        if let Some(server) = server {
            let _ = server.await;
        }
        let _ = self.raft.shutdown().await;
    }

    /// Stops abruptly, as a crash would: the server stops answering at once and Raft stops
    /// without handing leadership over. Returns once the node's files are released.
    pub async fn abort(&self) {
        self.stopping.cancel();
        if let Some(server) = self.server.lock().expect("server lock").take() {
            server.abort();
        }
        // Connections already accepted are served by their own tasks, which outlive the
        // server task; close their sockets so peers see the node gone, as after a crash.
        self.connections.cut_all();
        let _ = self.raft.shutdown().await;
        self.state.close().await;
    }
}

/// The sockets of accepted connections (duplicated descriptors), so [`PlaneNode::abort`] can
/// close them.
#[derive(Clone, Default)]
struct Connections(Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>);

impl Connections {
    fn track(&self, tcp: &tokio::net::TcpStream) {
        use std::os::fd::AsFd;
        let Ok(fd) = tcp.as_fd().try_clone_to_owned() else {
            return;
        };
        let mut all = self.0.lock().expect("connections lock");
        // Forget sockets whose connection is gone, so the list stays as long as the live ones.
        all.retain(|s| s.peer_addr().is_ok());
        all.push(std::net::TcpStream::from(fd));
    }

    fn cut_all(&self) {
        for socket in self.0.lock().expect("connections lock").drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A database URL with its password (if any) left out, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// `ask` of `member` over the peer links: its answer, or why there is none.
async fn ask_member(
    peers: &Peers,
    member: &Node,
    ask: &Ask,
    timeout: Duration,
) -> Result<Answer, String> {
    match peers
        .call::<_, AskReply>(member, Rpc::Forward, ask, timeout)
        .await
    {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(refusal)) => Err(format!("{refusal:?}")),
        Err(e) => Err(e.to_string()),
    }
}
