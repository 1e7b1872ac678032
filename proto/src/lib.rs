//! Meridian's wire contract: what travels between the control plane and its agents, and
//! between plane nodes.
//!
//! # Layout
//!
//! - [`pb`]: the gRPC messages and services generated from `proto/meridian/v1/*.proto` by
//!   `build.rs` (tonic + prost; `protoc` is vendored).
//! - [`convert`]: every conversion between a `pb` message and the domain
//!   (`meridian_domain`), in one place, with errors that name the field. Documents with a rich
//!   domain shape (a job, a run report) travel as that type's serde JSON inside a string field;
//!   only `convert` writes and reads those strings.
//!
//! The domain it carries lives in `meridian-domain`; how the bytes get there (hostnames,
//! mutual TLS) in `meridian-transport`.

pub mod convert;

/// Generated gRPC code for package `meridian.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("meridian.v1");
}
