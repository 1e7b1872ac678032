//! What one plane node asks another over `PlanePeer.Forward` (a write, a membership change, a
//! read barrier, its status), how it is answered from the node's Raft, and why an ask was not
//! done. The node sends asks (to the leader, or to one node); the peer service answers them.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::RaftError;
use openraft::{ChangeMembers, TryAsRef};
use serde::{Deserialize, Serialize};

use super::{Node, NodeId, Outcome, Raft, Request};
use crate::history_store::HistoryStore;
use crate::history_store::gaps::Gap;
use crate::logbook::{Logbook, PieceQuery, Pieces};

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
    /// The attempts of a run this node holds log pieces of (any node).
    LogAttempts(String),
    /// The log pieces this node holds of one attempt (any node).
    LogPieces(PieceQuery),
    /// A page of the runs this node's history store holds in a range (a gap of the asker's).
    HistoryPage { gap: Gap, limit: u32 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Answer {
    Written(Outcome),
    Done,
    ReadIndex(u64),
    Status(NodeStatus),
    LogAttempts(Vec<(String, u32)>),
    LogPieces(Pieces),
    /// A `history_store::gaps::Page`, as JSON (its runs' optional fields are left out when
    /// empty, which a non-self-describing encoding cannot read back).
    HistoryPage(String),
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

impl Ask {
    /// Whether doing it twice could differ from doing it once (a write, a membership change):
    /// one whose forwarding broke mid-call is not sent again.
    pub fn changes_the_plane(&self) -> bool {
        matches!(self, Self::Write(_) | Self::AddVoter(_) | Self::Remove(_))
    }
}

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
    /// Sent to the leader, but the link broke before it answered: it may yet take effect.
    #[error(
        "the link to the plane leader broke before it answered ({0}); it may still take \
         effect, so check before retrying"
    )]
    Unconfirmed(String),
    /// What it names does not exist; the message says what.
    #[error("{0}")]
    Missing(String),
    #[error("this plane node is shutting down")]
    Stopped,
    #[error("{0}")]
    Failed(String),
}

/// Does `ask` on this node's Raft (or reads its logbook). Leader-only asks on a follower come
/// back `NotLeader` with the leader it knows of.
/// What this node's stores answer from, besides its Raft.
#[derive(Clone)]
pub struct Stores {
    pub logbook: Logbook,
    pub history: HistoryStore,
}

pub async fn answer(raft: &Raft, stores: &Stores, ask: Ask) -> AskReply {
    let logbook = &stores.logbook;
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
        Ask::LogAttempts(run_id) => logbook
            .attempts(&run_id)
            .await
            .map(Answer::LogAttempts)
            .map_err(|e| AskRefusal::Failed(format!("reading the logbook: {e}"))),
        Ask::LogPieces(q) => logbook
            .pieces(&q)
            .await
            .map(Answer::LogPieces)
            .map_err(|e| AskRefusal::Failed(format!("reading the logbook: {e}"))),
        Ask::HistoryPage { gap, limit } => stores
            .history
            .page(&gap, limit.min(crate::history_store::gaps::PAGE))
            .await
            .map(|page| Answer::HistoryPage(serde_json::to_string(&page).expect("a page")))
            .map_err(|e| AskRefusal::Failed(format!("reading the history store: {e}"))),
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
    pub(super) fn unreachable(member: &Node, voter: bool) -> Self {
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

pub(super) fn local_status(raft: &Raft) -> NodeStatus {
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
