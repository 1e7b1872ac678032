//! The plane's Raft group, on openraft.
//!
//! - This module: the type configuration — node ids derived from hostnames, the node record
//!   (its hostname), the request (a model [`Proposal`]) and the response ([`Outcome`]).
//! - [`log_store`]: the Raft log and vote in redb, fsync'd before openraft is told an append
//!   is durable.
//! - [`state_machine`]: the model's SQLite database; applying an entry is running the model
//!   processor on it, and a snapshot is a consistent copy of the database file.
//! - [`network`]: openraft's RPCs to peers over the `PlanePeer` gRPC service, mutual TLS,
//!   dialled by hostname through the hosts map; and forwarding a write to the leader.
//! - [`peer_service`]: the server side of `PlanePeer`, open to plane certificates only, which
//!   answers [`ask`]s: what one node asks another (a write, a membership change, a read
//!   barrier, its status).
//! - [`compaction`]: when a node snapshots and compacts its log (more entries between
//!   snapshots as the model grows).
//! - [`backup`]: snapshot files an operator keeps (save, export, inspect) and a new plane
//!   seeded from one (restore).
//! - [`node`]: one plane node: stores, Raft, the gRPC server (the peer service, beside what
//!   the caller adds: the agents' service, [`crate::agents`]), and writes that go to whoever
//!   leads.
//!
//! Nodes are known by hostname everywhere a person looks (membership, config, certificates);
//! openraft needs a small `Copy` id, so the id is a stable hash of the hostname.

pub mod ask;
pub mod backup;
pub mod compaction;
pub mod log_store;
pub mod network;
pub mod node;
pub mod peer_service;
pub mod state_machine;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::Proposal;
use crate::model::processor::{Applied, Rejection};

pub type NodeId = u64;

/// A plane node as recorded in the Raft membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Node {
    /// The node's hostname: its identity, the name in its certificate, and the key of every
    /// hosts map that says how to reach it.
    pub hostname: String,
    /// The port its peer and agent gRPC service listens on.
    pub port: u16,
}

impl Node {
    pub fn new(hostname: impl Into<String>, port: u16) -> Self {
        Self {
            hostname: hostname.into(),
            port,
        }
    }

    /// `hostname:port`, what peers dial (through their hosts maps).
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.hostname, self.port)
    }

    pub fn id(&self) -> NodeId {
        node_id(&self.hostname)
    }
}

/// The Raft id of the node with this hostname: FNV-1a over the lower-cased hostname. Stable
/// across versions and platforms; every node and the CLI compute the same id.
pub fn node_id(hostname: &str) -> NodeId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in hostname.trim().to_ascii_lowercase().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The application data of a log entry: one model proposal.
///
/// It travels inside openraft's own structures, which the plane encodes with a binary codec;
/// the proposal itself is written as JSON bytes so its serde shape (tagged enums, defaults) is
/// never asked of that codec, and its version tag survives into the log. JSON of
/// `COMPRESS_FROM` bytes or more is zstd-compressed (a batch of agents' reports repeats its
/// keys and ids: about a tenth of the bytes), and read back by the frame's magic number,
/// which JSON (`{`) never starts with; entries written before compression read as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request(pub Proposal);

/// Proposals whose JSON is at least this long are compressed.
const COMPRESS_FROM: usize = 512;
/// A proposal never decompresses to more (a message between nodes is at most as large).
const MAX_PROPOSAL_BYTES: usize = 64 * 1024 * 1024;
/// zstd's frame magic number, as it starts a compressed proposal.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl Serialize for Request {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let json = serde_json::to_vec(&self.0).map_err(serde::ser::Error::custom)?;
        if json.len() < COMPRESS_FROM {
            return s.serialize_bytes(&json);
        }
        let packed = zstd::bulk::compress(&json, 1).map_err(serde::ser::Error::custom)?;
        s.serialize_bytes(&packed)
    }
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = Vec::<u8>::deserialize(d)?;
        let json = if bytes.starts_with(&ZSTD_MAGIC) {
            zstd::bulk::decompress(&bytes, MAX_PROPOSAL_BYTES).map_err(|e| {
                let why = format!("decompressing the proposal: {e}");
                UNREADABLE.with(|u| *u.borrow_mut() = Some(why.clone()));
                serde::de::Error::custom(why)
            })?
        } else {
            bytes
        };
        serde_json::from_slice(&json).map(Request).map_err(|e| {
            // The binary codec keeps no message of its own: say why for `decode` to report.
            UNREADABLE.with(|u| *u.borrow_mut() = Some(e.to_string()));
            serde::de::Error::custom(e)
        })
    }
}

thread_local! {
    /// Why the last proposal this thread failed to read could not be read (decoding is
    /// synchronous, so [`decode`] finds it on the same thread).
    static UNREADABLE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// What the binary codec could not read. When a proposal inside was the problem (written by
/// a newer node: a command or field this build does not know), `proposal` says why: the node
/// refuses it, whole, rather than apply anything of it, and says to upgrade.
#[derive(Debug, thiserror::Error)]
#[error(
    "{source}{}",
    proposal.as_ref().map(|why| format!(
        ": a proposal this node cannot read ({why}); it was written by a newer version, \
         upgrade this node"
    )).unwrap_or_default()
)]
pub struct CodecError {
    pub source: postcard::Error,
    pub proposal: Option<String>,
}

/// What applying one log entry did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A proposal that changed the model.
    Applied(Applied),
    /// A proposal the model refused; nothing changed. The message names what was wrong.
    Refused(Rejection),
    /// A blank or membership entry: Raft's own bookkeeping.
    #[default]
    Internal,
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Request,
        R = Outcome,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;

/// Encodes openraft's structures for the log and the wire (postcard: compact, no schema).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, CodecError> {
    UNREADABLE.with(|u| u.borrow_mut().take());
    postcard::from_bytes(bytes).map_err(|source| CodecError {
        source,
        proposal: UNREADABLE.with(|u| u.borrow_mut().take()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Command, DataCenter, Name};

    #[test]
    fn node_ids_are_stable_and_ignore_case() {
        assert_eq!(
            node_id("plane-1.dc-a.example"),
            node_id("Plane-1.DC-A.example")
        );
        assert_ne!(
            node_id("plane-1.dc-a.example"),
            node_id("plane-2.dc-a.example")
        );
        // Pinned (FNV-1a 64, checked independently): changing it would orphan every membership.
        assert_eq!(node_id("plane-1"), 0x1f76_1a1b_e212_62bb);
    }

    #[test]
    fn entries_with_proposals_survive_the_binary_codec() {
        let proposal = Proposal::new(
            "admin",
            7,
            Command::CreateDataCenter(DataCenter {
                name: Name::new("nj").unwrap(),
                description: String::new(),
            }),
        );
        let entry = Entry {
            log_id: openraft::testing::log_id(3, 1, 42),
            payload: openraft::EntryPayload::Normal(Request(proposal)),
        };
        let back: Entry = decode(&encode(&entry).unwrap()).unwrap();
        assert_eq!(back.log_id, entry.log_id);
        match (back.payload, entry.payload) {
            (openraft::EntryPayload::Normal(a), openraft::EntryPayload::Normal(b)) => {
                assert_eq!(a, b)
            }
            _ => panic!("payload kind changed"),
        }
    }

    #[test]
    fn large_proposals_are_compressed_and_old_uncompressed_ones_still_read() {
        let proposal = Proposal::new(
            "admin",
            7,
            Command::CreateDataCenter(DataCenter {
                name: Name::new("nj").unwrap(),
                description: "a data center in New Jersey, ".repeat(40),
            }),
        );
        let json = serde_json::to_vec(&proposal).unwrap();
        let packed = encode(&Request(proposal.clone())).unwrap();
        assert!(
            packed.len() * 5 < json.len(),
            "{} of {}",
            packed.len(),
            json.len()
        );
        assert_eq!(decode::<Request>(&packed).unwrap().0, proposal);
        // An entry written before compression: the JSON bytes as they are.
        let old = postcard::to_stdvec(&serde_bytes_of(&json)).unwrap();
        assert_eq!(decode::<Request>(&old).unwrap().0, proposal);
    }

    /// What the codec made of a `Request` before compression: its JSON as a byte string.
    fn serde_bytes_of(json: &[u8]) -> impl serde::Serialize + '_ {
        struct Bytes<'a>(&'a [u8]);
        impl serde::Serialize for Bytes<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        Bytes(json)
    }
}
