//! `/plane`: the plane's status, a snapshot of its state, and its membership (adding and
//! removing nodes), each audited on the node that took it.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Json};
use serde::Deserialize;

use super::principal::Caller;
use super::{Api, ApiError, ApiResult, Body, Params, ReadOptions, WriteReply};
use crate::model::AuditOutcome;
use crate::policy::{Action, Object};
use crate::raft::Node;

/// `POST /plane/nodes`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNode {
    pub hostname: String,
    /// The node's peer port (default 7443).
    #[serde(default = "default_peer_port")]
    pub port: u16,
}

pub const DEFAULT_PEER_PORT: u16 = 7443;

fn default_peer_port() -> u16 {
    DEFAULT_PEER_PORT
}

/// `GET /plane/status`.
pub fn status() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>, Extension(c): Extension<Caller>| -> ApiResult<_> {
            // The plane's health must answer when it has no leader: no read barrier.
            let read = api.reader(&c, true).await?;
            read.allow(Action::Read, &Object::Operations, "the plane's status")?;
            Ok(Json(api.node.plane_status(Duration::from_secs(2)).await))
        },
    )
}

/// `GET /plane/snapshot`: the state machine's database, streamed.
pub fn snapshot() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Params(o): Params<ReadOptions>|
               -> ApiResult<axum::body::Body> {
            let read = api.reader(&c, o.stale).await?;
            read.allow(Action::Read, &Object::Plane, "the plane's snapshot")?;
            let file = api.node.state.copy().await?;
            Ok(axum::body::Body::from_stream(
                tokio_util::io::ReaderStream::new(file),
            ))
        },
    )
}

/// `POST /plane/nodes`: add a voter.
pub fn nodes() -> MethodRouter<Api> {
    post(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Body(v): Body<NewNode>|
               -> ApiResult<_> {
            let read = api.reader(&c, true).await?;
            read.allow(Action::Change, &Object::Plane, "the plane's membership")?;
            let hostname = v.hostname.trim().to_ascii_lowercase();
            if hostname.is_empty() || hostname.contains(['/', ' ', ':']) {
                return Err(ApiError::bad_input(format!(
                    "request body: hostname: `{}` is not a hostname",
                    v.hostname
                )));
            }
            // Catching up a new node may take a while; allow for it.
            api.node
                .add_voter(Node::new(hostname.clone(), v.port), api.timeout * 6)
                .await?;
            let subject = format!("plane node {hostname}");
            api.note(
                &c,
                AuditOutcome::Applied,
                "add_plane_node",
                &subject,
                None,
                "",
            );
            Ok((
                StatusCode::CREATED,
                Json(WriteReply {
                    subject: format!("plane node {hostname}"),
                    version: None,
                    detail: None,
                }),
            ))
        },
    )
}

/// `DELETE /plane/nodes/{hostname}`.
pub fn node() -> MethodRouter<Api> {
    axum::routing::delete(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Path(h): Path<String>|
               -> ApiResult<_> {
            let read = api.reader(&c, true).await?;
            read.allow(Action::Change, &Object::Plane, "the plane's membership")?;
            api.node.remove(&h, api.timeout).await?;
            let subject = format!("plane node {h}");
            api.note(
                &c,
                AuditOutcome::Applied,
                "remove_plane_node",
                &subject,
                None,
                "",
            );
            Ok(Json(WriteReply {
                subject: format!("plane node {h}"),
                version: None,
                detail: None,
            }))
        },
    )
}
