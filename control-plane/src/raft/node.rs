//! One plane node: its stores, its Raft, and the gRPC server peers (and, later, agents) dial.
//!
//! Writes go through [`PlaneNode::write`], which any node accepts: on a follower it forwards
//! the proposal to the leader over `PlanePeer.Forward`, so clients never need to know who
//! leads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meridian_proto::pb::plane_peer_server::PlanePeerServer;
use meridian_proto::transport::{HostsMap, TlsMaterial};
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, Config, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::log_store::LogStore;
use super::network::{MAX_MESSAGE_BYTES, Peers, Rpc};
use super::peer_service::{ForwardReply, PeerService};
use super::state_machine::StateMachine;
use super::{Node, NodeId, Outcome, Raft, Request};
use crate::model::Proposal;

/// Raft timings. Defaults suit one data center or a fast WAN; raise them for slow links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// How often the leader sends heartbeats, in milliseconds.
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
            election_min_ms: 500,
            election_max_ms: 1000,
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
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("opening the Raft log in {path}: {source}")]
    Log { path: PathBuf, source: redb::Error },
    #[error("opening the model database in {path}: {source}")]
    Model { path: PathBuf, source: sqlx::Error },
    #[error("Raft configuration: {0}")]
    Config(String),
    #[error("starting Raft: {0}")]
    Raft(String),
    #[error("gRPC server: {0}")]
    Server(String),
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no plane leader could be reached within {0:?}; check `meridian plane status`")]
    NoLeader(Duration),
    #[error("the write failed: {0}")]
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("{0}")]
    Raft(String),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// A running plane node.
pub struct PlaneNode {
    pub raft: Raft,
    pub state: StateMachine,
    pub node: Node,
    peers: Peers,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl PlaneNode {
    /// Opens the node's stores in `config.data_dir`, starts Raft, and serves `PlanePeer` on
    /// `listener` with mutual TLS.
    pub async fn start(config: NodeConfig, listener: TcpListener) -> Result<Self, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| NodeError::Model {
            path: config.data_dir.clone(),
            source: e.into(),
        })?;
        let log_path = config.data_dir.join("raft.redb");
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

        let tls = config.tls.server();
        let service = PlanePeerServer::new(PeerService::new(raft.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let router = tonic::transport::Server::builder()
            .tls_config(tls)
            .map_err(|e| NodeError::Server(e.to_string()))?
            .add_service(service);
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let server = tokio::spawn(async move {
            let _ = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            raft,
            state,
            node,
            peers,
            stop: Some(stop),
            server: Some(server),
        })
    }

    pub fn id(&self) -> NodeId {
        self.node.id()
    }

    /// Makes this node a one-member plane. Idempotent: a node already initialised is left
    /// as it is.
    pub async fn initialize(&self) -> Result<(), MembershipError> {
        let members = BTreeMap::from([(self.id(), self.node.clone())]);
        match self.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(MembershipError::Raft(e.to_string())),
        }
    }

    /// Adds `node` as a learner, waits for it to catch up, then promotes it to voter. Must run
    /// on the leader.
    pub async fn add_voter(&self, node: Node) -> Result<(), MembershipError> {
        let id = node.id();
        self.raft
            .add_learner(id, node, true)
            .await
            .map_err(membership)?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(membership)?;
        Ok(())
    }

    /// Removes the node with `hostname` from the plane. Must run on the leader.
    pub async fn remove(&self, hostname: &str) -> Result<(), MembershipError> {
        let id = super::node_id(hostname);
        self.raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(membership)?;
        self.raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(membership)?;
        Ok(())
    }

    /// Commits `proposal` through whichever node leads, and returns what applying it did.
    ///
    /// Retries only where the write cannot have been applied: while there is no leader, or
    /// when the node it went to was not (or no longer) the leader and said so.
    pub async fn write(
        &self,
        proposal: Proposal,
        timeout: Duration,
    ) -> Result<Outcome, WriteError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let request = Request(proposal);
        loop {
            let local: ForwardReply = self
                .raft
                .client_write(request.clone())
                .await
                .map(|r| r.data);
            let refusal = match local {
                Ok(outcome) => return Ok(outcome),
                Err(e) => e,
            };
            let Some(forward) = refusal.forward_to_leader() else {
                return Err(WriteError::Failed(refusal.to_string()));
            };
            if let Some(leader) = forward
                .leader_node
                .clone()
                .filter(|l| l.hostname != self.node.hostname)
            {
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self
                    .peers
                    .call::<_, ForwardReply>(&leader, Rpc::Forward, &request, remaining)
                    .await
                {
                    Ok(Ok(outcome)) => return Ok(outcome),
                    // Not the leader (any more), or its Raft already stopped (a crashed
                    // node whose connections linger): the write was not taken; try again.
                    Ok(Err(e)) if forward_to_leader(&e) || stopped(&e) => {}
                    Ok(Err(e)) => return Err(WriteError::Failed(e.to_string())),
                    Err(e) if e.is_unreachable() => {}
                    Err(e) => return Err(WriteError::Failed(e.to_string())),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(WriteError::NoLeader(timeout));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops serving and shuts Raft down.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        let _ = self.raft.shutdown().await;
    }

    /// Stops abruptly, as a crash would: the server stops answering at once and Raft stops
    /// without handing leadership over. Returns once the node's files are released.
    pub async fn abort(mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        let _ = self.raft.shutdown().await;
        self.state.pool().close().await;
    }
}

fn membership(e: impl std::fmt::Display) -> MembershipError {
    MembershipError::Raft(e.to_string())
}

fn forward_to_leader(e: &RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> bool {
    e.forward_to_leader().is_some()
}

fn stopped(e: &RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> bool {
    matches!(e, RaftError::Fatal(openraft::error::Fatal::Stopped))
}
