//! Meridian's data-center agent.
//!
//! # Layout
//!
//! - [`config`]: the agent's one config file (`agent.toml`), read strictly: an unknown or
//!   missing field is an error that names it.
//! - [`outbox`]: run events and log chunks, durable in the agent's SQLite database from the
//!   moment they happen until the plane has committed them; keyed so nothing counts twice.
//!
//! Still to come (issue #4 and later): `hosts_map` (which address a plane hostname is dialled
//! at), `link` (the mutual-TLS connection to any plane node), `lease` (the partitions this
//! agent holds and their epochs), `buffer` (the 50 pre-generated fire records per schedule, in
//! SQLite), `runner` and `task` (running workflows: shell, HTTP) and `resource_cache` (S3 objects,
//! re-fetched only when they change). Data will flow: leases → buffer (from
//! `meridian_proto::calendar`) → runner at fire time → outbox → plane.

pub mod config;
pub mod outbox;
