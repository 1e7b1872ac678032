//! Meridian's control plane and the `meridian` command.
//!
//! # Layout
//!
//! - [`cli`]: the `meridian` command line: argument types (clap) and one module per command
//!   group. Commands decide in pure functions (which take the time as an argument) and only
//!   `main.rs` prints and picks the exit code.
//! - `cli::schedule`: `meridian schedule preview`, the "cron check" view: a cron expression and
//!   zone turned into concrete fire times with `meridian_proto::calendar`.
//!
//! - [`model`]: the replicated model — entities, the versioned `Command` enum wrapped in a
//!   `Proposal`, the `processor` that applies one to SQLite (validate, write, audit, or refuse
//!   and change nothing), and `query` for reads. SQL schema: `migrations/sqlite/`.
//!
//! Still to come (see the issues): the Raft node (log store, state machine, network), the
//! replicated model (data centers, clusters, environments, tenants, grants, workflows,
//! schedules, leases, runs), the gRPC services for agents and peers, the REST API and UI, and
//! `meridian dev`. Data will flow: API/CLI → command → Raft log → state machine (SQLite) →
//! agents through `AgentLink`.

pub mod api;
pub mod certs;
pub mod cli;
pub mod config;
pub mod model;
pub mod raft;
pub mod server;
