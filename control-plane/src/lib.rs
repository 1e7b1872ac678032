//! Meridian's control plane and the `meridian` command.
//!
//! # Layout
//!
//! - [`model`]: the replicated model — entities, the versioned `Command` enum wrapped in a
//!   `Proposal`, the `processor` that applies one to SQLite (validate, write, audit, or refuse
//!   and change nothing), and `query` for reads. SQL schema: `migrations/sqlite/`.
//! - [`raft`]: the plane's Raft group on openraft — redb log store, SQLite state machine
//!   wrapping the processor, the `PlanePeer` network and service over mutual TLS, and
//!   `node::PlaneNode` with its `Ask`s (writes, membership, read barriers, status) that any
//!   node forwards to the leader.
//! - [`api`]: the REST API under `/api/v1` (axum): bearer tokens, linearizable or stale reads,
//!   writes as commands, the OpenAPI document.
//! - [`server`]: a node with its API as a running service, and the crash-safe bootstrap
//!   (`plane init`, `dev`): one-member plane and the admin token.
//! - [`config`]: the `plane.toml` file of a node, strict and documented.
//! - [`certs`]: the federation CA and node certificates (rcgen).
//! - [`policy`]: who may do what — roles, bindings, principals, and the one pure function every
//!   route, list and replicated write asks.
//! - [`lease`]: pure partition-lease placement (who fires which slice of a cluster's
//!   schedules), to be driven by agent heartbeats (issue #4).
//! - [`cli`]: the `meridian` command line — `dev`, `plane`, the model nouns through the API
//!   (`client`), `certs`, `schedule preview`. Only `main.rs` prints and picks exit codes.
//!
//! Data flows: CLI/API → `Command` → `PlaneNode::write` (forwarded to the leader) → Raft log →
//! every node's state machine (SQLite) → reads through `query`; agents arrive with issue #4.

pub mod api;
pub mod certs;
pub mod cli;
pub mod config;
pub mod lease;
pub mod model;
pub mod policy;
pub mod raft;
pub mod server;
