//! The server side of `PlanePeer`: hands openraft's RPCs from peers to the local Raft, and
//! answers [`Ask`]s — writes, membership changes and read barriers forwarded to the leader,
//! and status and logbook questions any node answers for itself.
//!
//! Every agent also holds a certificate from the federation CA, so TLS alone would let an
//! agent speak Raft; each method therefore checks that the caller's certificate says `plane`.

use meridian_proto::pb::RaftPayload;
use meridian_proto::pb::plane_peer_server::PlanePeer;
use meridian_transport::{PeerIdentity, Role};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use super::ask::{Ask, Stores, answer};
use super::network::PAYLOAD_VERSION;
use super::{NodeId, Raft, TypeConfig, decode, encode};

pub struct PeerService {
    raft: Raft,
    stores: Stores,
}

impl PeerService {
    pub fn new(raft: Raft, stores: Stores) -> Self {
        Self { raft, stores }
    }
}

fn open<T: DeserializeOwned>(request: Request<RaftPayload>) -> Result<T, Status> {
    let caller = PeerIdentity::of_request(&request)?;
    if caller.role != Role::Plane {
        return Err(Status::permission_denied(format!(
            "{} holds a {:?} certificate; only plane nodes may call PlanePeer",
            caller.hostname, caller.role
        )));
    }
    let payload = request.into_inner();
    if payload.version != PAYLOAD_VERSION {
        return Err(Status::invalid_argument(format!(
            "payload version {} is not {PAYLOAD_VERSION}: upgrade this node",
            payload.version
        )));
    }
    decode(&payload.data).map_err(|e| Status::invalid_argument(format!("decoding payload: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    let data = encode(value).map_err(|e| Status::internal(format!("encoding reply: {e}")))?;
    Ok(Response::new(RaftPayload {
        version: PAYLOAD_VERSION,
        data,
    }))
}

#[tonic::async_trait]
impl PlanePeer for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = open(request)?;
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<NodeId> = open(request)?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = open(request)?;
        reply(&self.raft.install_snapshot(rpc).await)
    }

    async fn forward(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let ask: Ask = open(request)?;
        reply(&answer(&self.raft, &self.stores, ask).await)
    }
}
