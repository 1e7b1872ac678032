//! One plane node: its stores, its Raft, and the gRPC server peers (and, later, agents) dial.
//!
//! Writes go through [`PlaneNode::write`], which any node accepts: on a follower it forwards
//! the proposal to the leader over `PlanePeer.Forward`, so clients never need to know who
//! leads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meridian_proto::Clock;
use meridian_proto::pb::agent_link_server::AgentLinkServer;
use meridian_proto::pb::plane_peer_server::PlanePeerServer;
use meridian_proto::transport::{HostsMap, TlsMaterial};
use openraft::error::{InitializeError, RaftError};
use openraft::{ChangeMembers, Config, SnapshotPolicy, TryAsRef};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

use super::agent_service::AgentService;
use super::backup;
use super::log_store::LogStore;
use super::network::{Links, MAX_MESSAGE_BYTES, Peers, Rpc};
use super::peer_service::PeerService;
use super::state_machine::StateMachine;
use super::{Node, NodeId, Outcome, Raft, Request};
use crate::model::Proposal;

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
    /// Build a snapshot after this many entries since the last one.
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
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("opening the Raft log in {path}: {source}")]
    Log { path: PathBuf, source: redb::Error },
    #[error("opening the model database in {path}: {source}")]
    Model { path: PathBuf, source: sqlx::Error },
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

/// What every part of a node that reads or writes the plane shares: Raft, the local state
/// machine, and the peers writes are forwarded to. The agent service holds one too.
pub struct Core {
    pub raft: Raft,
    pub state: StateMachine,
    pub node: Node,
    peers: Peers,
}

/// A running plane node.
pub struct PlaneNode {
    core: Arc<Core>,
    connections: Connections,
    stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    server: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl PlaneNode {
    /// Opens the node's stores in `config.data_dir`, starts Raft, and serves `PlanePeer` on
    /// `listener` with mutual TLS.
    pub async fn start(config: NodeConfig, listener: TcpListener) -> Result<Self, NodeError> {
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
        let state = StateMachine::open(&config.data_dir)
            .await
            .map_err(|source| NodeError::Model {
                path: config.data_dir.clone(),
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
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every),
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
            node,
            peers,
        });
        let tls = config.tls.server();
        let service = PlanePeerServer::new(PeerService::new(raft.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let agents = AgentLinkServer::new(AgentService::new(core.clone(), config.clock.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let router = tonic::transport::Server::builder()
            .tls_config(tls)
            .map_err(|e| NodeError::Server(e.to_string()))?
            .add_service(service)
            .add_service(agents);
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
        })
    }

    /// The shared part, for services that outlive a borrow of the node.
    pub fn core(&self) -> Arc<Core> {
        self.core.clone()
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
    /// the node it went to was not (or no longer) the leader and said so.
    pub async fn ask_leader(&self, ask: Ask, timeout: Duration) -> Result<Answer, AskError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            // A leader cut off from its quorum keeps the ask until it learns it no longer
            // leads, which may be never; the caller's deadline bounds the wait.
            let local = tokio::time::timeout(remaining, answer(&self.raft, ask.clone()))
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
                    Err(e) => return Err(AskError::Failed(e.to_string())),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(AskError::NoLeader(timeout));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Cuts and heals this node's links to peers (fault injection for tests and drills).
    pub fn links(&self) -> &Links {
        self.peers.links()
    }
}

impl PlaneNode {
    /// Stops serving and shuts Raft down.
    pub async fn shutdown(&self) {
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
        if let Some(server) = self.server.lock().expect("server lock").take() {
            server.abort();
        }
        // Connections already accepted are served by their own tasks, which outlive the
        // server task; close their sockets so peers see the node gone, as after a crash.
        self.connections.cut_all();
        let _ = self.raft.shutdown().await;
        self.state.pool().close().await;
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

/// What one node may ask another over `PlanePeer.Forward`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Ask {
    /// Commit a proposal (leader only). Boxed: a proposal is far larger than the other asks
    /// (serde encodes a box as its content, so the wire shape is unchanged).
    Write(Box<Request>),
    /// Add a learner, wait for it to catch up, promote it (leader only).
    AddVoter(Node),
    /// Remove a node by hostname (leader only).
    Remove(String),
    /// Confirm leadership with a quorum and return the index a linearizable read must wait
    /// for (leader only).
    ReadIndex,
    /// This node's own status (any node).
    Status,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Answer {
    Written(Outcome),
    Done,
    ReadIndex(u64),
    Status(NodeStatus),
}

/// Why an ask was not done. `NotLeader` and `Stopped` mean it had no effect and may be sent
/// elsewhere.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AskRefusal {
    NotLeader(Option<Node>),
    /// Another membership change is still committing.
    Busy,
    /// What it names does not exist (e.g. removing a node that is not a member).
    Missing(String),
    Stopped,
    Failed(String),
}

pub type AskReply = Result<Answer, AskRefusal>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    #[error("no plane leader could be reached within {0:?}; check `meridian plane status`")]
    NoLeader(Duration),
    /// Sent, but not confirmed in time: it may yet take effect.
    #[error(
        "not confirmed within {0:?}; it may still take effect, so check before retrying \
         (`meridian plane status` shows whether the plane has a leader)"
    )]
    Timeout(Duration),
    /// What it names does not exist; the message says what.
    #[error("{0}")]
    Missing(String),
    #[error("this plane node is shutting down")]
    Stopped,
    #[error("{0}")]
    Failed(String),
}

/// Does `ask` on this node's Raft. Leader-only asks on a follower come back `NotLeader` with
/// the leader it knows of.
pub async fn answer(raft: &Raft, ask: Ask) -> AskReply {
    match ask {
        Ask::Write(request) => raft
            .client_write(*request)
            .await
            .map(|r| Answer::Written(r.data))
            .map_err(refusal),
        Ask::AddVoter(node) => {
            let id = node.id();
            raft.add_learner(id, node, true)
                .await
                .map_err(membership_refusal)?;
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(membership_refusal)?;
            Ok(Answer::Done)
        }
        Ask::Remove(hostname) => {
            let id = super::node_id(&hostname);
            let stored = raft.metrics().borrow().membership_config.clone();
            let members = stored.membership();
            if members.nodes().all(|(n, _)| *n != id) {
                return Err(AskRefusal::Missing(format!(
                    "removing `{hostname}`: it is not a member of the plane"
                )));
            }
            if members.voter_ids().any(|v| v == id) {
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                    .await
                    .map_err(membership_refusal)?;
            }
            raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(membership_refusal)?;
            Ok(Answer::Done)
        }
        Ask::ReadIndex => {
            let read = raft.ensure_linearizable().await.map_err(refusal)?;
            Ok(Answer::ReadIndex(read.map_or(0, |id| id.index)))
        }
        Ask::Status => Ok(Answer::Status(local_status(raft))),
    }
}

fn refusal<E>(e: RaftError<NodeId, E>) -> AskRefusal
where
    E: std::error::Error + TryAsRef<openraft::error::ForwardToLeader<NodeId, Node>>,
{
    if let Some(forward) = e.forward_to_leader::<Node>() {
        return AskRefusal::NotLeader(forward.leader_node.clone());
    }
    match e {
        RaftError::Fatal(openraft::error::Fatal::Stopped) => AskRefusal::Stopped,
        other => AskRefusal::Failed(other.to_string()),
    }
}

/// Like [`refusal`], but a change refused because another is still committing is `Busy`: it
/// had no effect and can be tried again in a moment.
fn membership_refusal(
    e: RaftError<NodeId, openraft::error::ClientWriteError<NodeId, Node>>,
) -> AskRefusal {
    use openraft::error::{ChangeMembershipError, ClientWriteError};
    match &e {
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(_),
        )) => AskRefusal::Busy,
        _ => refusal(e),
    }
}

/// One node as `meridian plane status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodeStatus {
    pub hostname: String,
    pub port: u16,
    /// `leader`, `follower`, `candidate`, `learner`, `shutdown`, or `unknown` when unreachable.
    pub role: String,
    pub voter: bool,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// The leader this node knows of.
    pub leader: Option<String>,
    pub reachable: bool,
    /// The membership as this node has it.
    pub members: Vec<Node>,
}

impl NodeStatus {
    fn unreachable(member: &Node, voter: bool) -> Self {
        Self {
            hostname: member.hostname.clone(),
            port: member.port,
            role: "unknown".into(),
            voter,
            term: 0,
            last_log_index: None,
            applied_index: None,
            leader: None,
            reachable: false,
            members: Vec::new(),
        }
    }
}

fn local_status(raft: &Raft) -> NodeStatus {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let members: Vec<Node> = membership.nodes().map(|(_, n)| n.clone()).collect();
    let me = membership.get_node(&m.id).cloned().unwrap_or_default();
    let leader = m
        .current_leader
        .and_then(|l| membership.get_node(&l))
        .map(|n| n.hostname.clone());
    NodeStatus {
        hostname: me.hostname,
        port: me.port,
        role: format!("{:?}", m.state).to_ascii_lowercase(),
        voter: membership.voter_ids().any(|v| v == m.id),
        term: m.current_term,
        last_log_index: m.last_log_index,
        applied_index: m.last_applied.map(|l| l.index),
        leader,
        reachable: true,
        members,
    }
}
