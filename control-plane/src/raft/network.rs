//! openraft's network: each RPC is one unary `PlanePeer` call carrying the postcard-encoded
//! openraft request; the reply carries the encoded `Result` the peer's Raft returned.
//!
//! Channels are opened lazily, cached per peer, and dial the peer's hostname through this
//! node's hosts map; TLS verifies the peer's certificate against that hostname.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_proto::pb::RaftPayload;
use meridian_proto::pb::plane_peer_client::PlanePeerClient;
use meridian_transport::{HostsMap, TlsMaterial, dial};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use super::{Node, NodeId, TypeConfig, decode, encode};

/// Encoding version of `RaftPayload.data`.
pub const PAYLOAD_VERSION: u32 = 1;

/// Limit for one peer message: above the snapshot chunk size and a full AppendEntries batch.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Dials peers; shared by the Raft network and write forwarding.
#[derive(Clone)]
pub struct Peers {
    tls: TlsMaterial,
    hosts: Arc<HostsMap>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    links: Links,
}

/// Which peers this node currently may not reach: fault injection for partition tests and
/// drills. A cut link fails like an unreachable host, before any bytes are sent.
#[derive(Debug, Clone, Default)]
pub struct Links {
    cut: Arc<Mutex<HashSet<String>>>,
}

impl Links {
    /// Stops talking to `hostname` until healed.
    pub fn cut(&self, hostname: &str) {
        self.cut
            .lock()
            .expect("links lock")
            .insert(hostname.to_ascii_lowercase());
    }

    pub fn heal(&self, hostname: &str) {
        self.cut
            .lock()
            .expect("links lock")
            .remove(&hostname.to_ascii_lowercase());
    }

    pub fn heal_all(&self) {
        self.cut.lock().expect("links lock").clear();
    }

    pub fn is_cut(&self, hostname: &str) -> bool {
        self.cut
            .lock()
            .expect("links lock")
            .contains(&hostname.to_ascii_lowercase())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer {endpoint}: {source}")]
    Dial {
        endpoint: String,
        source: meridian_transport::TransportError,
    },
    #[error("peer {endpoint}: {status}")]
    Call {
        endpoint: String,
        status: tonic::Status,
    },
    #[error("peer {endpoint}: encoding the request: {source}")]
    Encode {
        endpoint: String,
        source: postcard::Error,
    },
    #[error("peer {endpoint}: decoding its reply: {source}")]
    Decode {
        endpoint: String,
        source: super::CodecError,
    },
    #[error("peer {endpoint}: replied with payload version {version}, expected {PAYLOAD_VERSION}")]
    Version { endpoint: String, version: u32 },
    #[error("peer {endpoint}: the link is cut")]
    Cut { endpoint: String },
    /// Encoded, the request is over [`MAX_MESSAGE_BYTES`]; nothing was sent.
    #[error("peer {endpoint}: the request is {bytes} bytes, over the {MAX_MESSAGE_BYTES} limit")]
    TooLarge { endpoint: String, bytes: usize },
}

impl PeerError {
    /// Whether the call was sent but its answer did not come in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Call { status, .. }
            if matches!(status.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled))
    }

    /// Whether the connection broke during the call (the transport failed, not the peer's
    /// service): the request may or may not have been received and acted on.
    pub fn is_broken(&self) -> bool {
        let Self::Call { status, .. } = self else {
            return false;
        };
        if self.is_unreachable() || self.is_timeout() {
            return false;
        }
        let mut cause = std::error::Error::source(status);
        while let Some(e) = cause {
            if e.is::<tonic::transport::Error>() || e.is::<std::io::Error>() {
                return true;
            }
            cause = e.source();
        }
        false
    }

    /// Whether the peer could not be reached at all (as opposed to a failed exchange).
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Dial { .. } | Self::Cut { .. } => true,
            Self::Call { status, .. } => status.code() == tonic::Code::Unavailable,
            _ => false,
        }
    }
}

/// Which `PlanePeer` method to call.
#[derive(Debug, Clone, Copy)]
pub enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
    Forward,
}

impl Peers {
    pub fn new(tls: TlsMaterial, hosts: HostsMap) -> Self {
        Self {
            tls,
            hosts: Arc::new(hosts),
            channels: Arc::default(),
            links: Links::default(),
        }
    }

    pub fn links(&self) -> &Links {
        &self.links
    }

    fn channel(&self, endpoint: &str) -> Result<Channel, PeerError> {
        let mut channels = self.channels.lock().expect("channel cache lock");
        if let Some(channel) = channels.get(endpoint) {
            return Ok(channel.clone());
        }
        let channel = dial(
            endpoint,
            &self.tls,
            self.hosts.clone(),
            Duration::from_secs(3),
        )
        .map_err(|source| PeerError::Dial {
            endpoint: endpoint.to_owned(),
            source,
        })?;
        channels.insert(endpoint.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Sends `request` to `node` and decodes the reply as `Reply`.
    pub async fn call<Req: Serialize, Reply: DeserializeOwned>(
        &self,
        node: &Node,
        rpc: Rpc,
        request: &Req,
        timeout: Duration,
    ) -> Result<Reply, PeerError> {
        let endpoint = node.endpoint();
        if self.links.is_cut(&node.hostname) {
            return Err(PeerError::Cut { endpoint });
        }
        let data = encode(request).map_err(|source| PeerError::Encode {
            endpoint: endpoint.clone(),
            source,
        })?;
        if data.len() > MAX_MESSAGE_BYTES {
            return Err(PeerError::TooLarge {
                endpoint,
                bytes: data.len(),
            });
        }
        let mut client = PlanePeerClient::new(self.channel(&endpoint)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut req = tonic::Request::new(RaftPayload {
            version: PAYLOAD_VERSION,
            data,
        });
        req.set_timeout(timeout);
        let call = async {
            match rpc {
                Rpc::AppendEntries => client.append_entries(req).await,
                Rpc::Vote => client.vote(req).await,
                Rpc::InstallSnapshot => client.install_snapshot(req).await,
                Rpc::Forward => client.forward(req).await,
            }
        };
        // `grpc-timeout` only asks the server to give up; a peer that died with its
        // connection open never answers, so the client enforces the deadline itself.
        let reply = tokio::time::timeout(timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(format!(
                    "no answer within {timeout:?}"
                )))
            })
            .map_err(|status| PeerError::Call {
                endpoint: endpoint.clone(),
                status,
            })?
            .into_inner();
        if reply.version != PAYLOAD_VERSION {
            return Err(PeerError::Version {
                endpoint,
                version: reply.version,
            });
        }
        decode(&reply.data).map_err(|source| PeerError::Decode { endpoint, source })
    }
}

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = PeerLink;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerLink {
        PeerLink {
            peers: self.clone(),
            target,
            node: node.clone(),
        }
    }
}

/// The Raft network to one peer.
pub struct PeerLink {
    peers: Peers,
    target: NodeId,
    node: Node,
}

/// Why an RPC to a peer failed: too large to send (a [`PeerError::TooLarge`], its encoded
/// size), or as openraft is told.
enum Sent<E: std::error::Error> {
    TooLarge(PeerError, usize),
    Failed(RPCError<NodeId, Node, RaftError<NodeId, E>>),
}

impl<E: std::error::Error> Sent<E> {
    fn into_rpc(self) -> RPCError<NodeId, Node, RaftError<NodeId, E>> {
        match self {
            Self::TooLarge(e, _) => RPCError::Network(NetworkError::new(&e)),
            Self::Failed(e) => e,
        }
    }
}

/// How many of `entries` entries, `bytes` encoded together, to send at once so the next
/// request fits the message limit: proportionally fewer, with room for uneven entries; at
/// least one.
pub fn entries_that_fit(entries: usize, bytes: usize) -> u64 {
    let fit = entries as u128 * (MAX_MESSAGE_BYTES as u128 / 2) / bytes.max(1) as u128;
    let fewer = (entries as u128).saturating_sub(1).max(1);
    fit.clamp(1, fewer) as u64
}

impl PeerLink {
    async fn send<Req, Resp, E>(
        &self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, Sent<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let reply: Result<Resp, RaftError<NodeId, E>> = self
            .peers
            .call(&self.node, rpc, request, option.hard_ttl())
            .await
            .map_err(|e| match e {
                PeerError::TooLarge { bytes, .. } => Sent::TooLarge(e, bytes),
                e if e.is_unreachable() => {
                    Sent::Failed(RPCError::Unreachable(Unreachable::new(&e)))
                }
                e => Sent::Failed(RPCError::Network(NetworkError::new(&e))),
            })?;
        reply.map_err(|e| {
            Sent::Failed(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            )))
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let entries = rpc.entries.len();
        self.send(Rpc::AppendEntries, &rpc, &option)
            .await
            .map_err(|e| match e {
                // A follower far behind is sent as many entries as openraft's batch holds;
                // while reports are large that can be over the message limit, and the same
                // batch would be refused forever. openraft sends fewer for the next few calls.
                Sent::TooLarge(_, bytes) => RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(entries_that_fit(entries, bytes)),
                ),
                Sent::Failed(e) => e,
            })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send(Rpc::InstallSnapshot, &rpc, &option)
            .await
            .map_err(Sent::into_rpc)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.send(Rpc::Vote, &rpc, &option)
            .await
            .map_err(Sent::into_rpc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_over_the_limit_is_cut_to_fewer_entries_that_fit() {
        // 300 entries in 96 MiB: 100 of them would be 32 MiB, half the limit.
        assert_eq!(entries_that_fit(300, 96 * 1024 * 1024), 100);
        // Always fewer than were sent, so a retry is never the same batch.
        assert_eq!(entries_that_fit(300, MAX_MESSAGE_BYTES + 1), 149);
        // At least one, even when one entry alone is over.
        assert_eq!(entries_that_fit(2, 10 * MAX_MESSAGE_BYTES), 1);
        assert_eq!(entries_that_fit(1, 10 * MAX_MESSAGE_BYTES), 1);
    }

    #[test]
    fn a_call_whose_connection_broke_is_told_from_an_answer_and_an_absent_peer() {
        let call = |status: tonic::Status| PeerError::Call {
            endpoint: "plane-1.test:7000".into(),
            status,
        };
        // What tonic gives when the leader dies mid-call: an unknown status over the I/O error.
        let mut broke = tonic::Status::unknown("transport error");
        broke.set_source(std::sync::Arc::new(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "stream closed because of a broken pipe",
        )));
        assert!(call(broke).is_broken());
        // The peer's service answering an error is an answer, not a broken link.
        assert!(!call(tonic::Status::internal("refused")).is_broken());
        // Not reached at all, or no answer in time: told apart, each with its own handling.
        let mut refused = tonic::Status::unavailable("connection refused");
        refused.set_source(std::sync::Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(!call(refused).is_broken());
        assert!(!call(tonic::Status::deadline_exceeded("no answer")).is_broken());
        assert!(
            !PeerError::Cut {
                endpoint: "plane-1.test:7000".into()
            }
            .is_broken()
        );
    }
}
