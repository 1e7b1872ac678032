//! Meridian's control plane and the `meridian` command.
//!
//! # Layout
//!
//! - [`model`]: the replicated model — entities, the versioned `Command` enum wrapped in a
//!   `Proposal` that names its author, the `processor` that applies one to SQLite (the policy
//!   again with the author's bindings as they are then, validate, write, audit; or refuse,
//!   audit the refusal and change nothing else), users, tokens and sessions (`access`), each
//!   command's policy needs (`authorize`), and `query` for reads. SQL schema:
//!   `migrations/sqlite/`.
//! - [`raft`]: the plane's Raft group on openraft — redb log store, SQLite state machine
//!   wrapping the processor, the `PlanePeer` network and service over mutual TLS, and
//!   `node::PlaneNode` with its `Ask`s (writes, membership, read barriers, status) that any
//!   node forwards to the leader.
//! - [`agents`]: the server side of `AgentLink`, served beside `PlanePeer` on every node:
//!   agents' heartbeats and reports become commands (their log pieces go to the node's
//!   logbook instead); schedule fetches read the node's copy after a read barrier.
//! - [`intake`]: the reports a node's agents send, proposed together when several wait (one
//!   Raft entry and one transaction on every node for all of them).
//! - [`logbook`]: task logs out of consensus — each node's `logbook.db` of the pieces agents
//!   sent it, cut at a cap and swept after retention; an attempt's copy in the bucket
//!   (`logbook::object`).
//! - [`logs`]: a log read across the plane by asking every member, or from its copy in the
//!   bucket (`logs::across`); the leader's archiver making and expiring those copies.
//! - [`api`]: the REST API under `/api/v1` (axum): who is calling (bearer tokens, session
//!   cookies with CSRF tokens), sign-in, users and tokens, every read and list through the
//!   policy, linearizable or stale reads, writes as commands, the OpenAPI document.
//! - [`ui`]: the web UI on the same listener (`/` pages, `/api/v1` JSON): server-rendered
//!   pages over the same queries, commands and policy as the API.
//! - [`server`]: a node with its API as a running service, and the crash-safe bootstrap
//!   (`plane init`, `dev`): one-member plane, the admin token and the `admin` user.
//! - [`config`]: the `plane.toml` file of a node, strict and documented.
//! - [`certs`]: the federation CA and node certificates (rcgen).
//! - [`policy`]: who may do what — roles, bindings, principals, and the one pure function every
//!   route, list and replicated write asks.
//! - [`name`]: the one pattern every entity's name follows (the model and the policy both
//!   read names; neither owns them).
//! - [`lease`]: pure partition-lease placement (who fires which slice of a cluster's
//!   schedules), decided at each agent heartbeat.
//! - [`cli`]: the `meridian` command line — the dev plane (`DevPlane`; the `meridian` package
//!   starts the agent beside it), `plane`, the model nouns through the API (`client`), users
//!   and tokens, `certs`, `schedule preview`. Only the `meridian` package's `main.rs` prints
//!   and picks exit codes. This crate does not link the agent.
//!
//! Data flows: CLI/API → principal (`api::principal`) → policy → `Command` in a `Proposal` with
//! its author → `PlaneNode::write` (forwarded to the leader) → Raft log → every node's state
//! machine (SQLite; the policy asked again) → reads through `query`, filtered by the policy.
//! Agents' heartbeats and reports arrive through [`agents`] as commands too.

pub mod agents;
pub mod api;
pub mod certs;
pub mod cli;
pub mod config;
pub mod courier;
pub mod history_store;
pub mod intake;
pub mod lease;
pub mod logbook;
pub mod logs;
pub mod model;
pub mod name;
pub mod policy;
pub mod raft;
pub mod retirement;
pub mod server;
pub mod ui;
