//! The agent's connection to the plane: mutual TLS to any plane node, dialled by hostname
//! through the hosts map (`meridian_transport::dial`, the same as plane peers use).
//!
//! Calls go to the node that answered last; when it is unreachable the call moves on to the
//! next node in the list, so one plane node down costs a retry, not an outage. The agent only
//! ever dials out.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use meridian_proto::pb::agent_link_client::AgentLinkClient;
use meridian_transport::{HostsMap, TlsMaterial, TransportError};
use tonic::transport::Channel;

/// How long one call may take before the next plane node is tried.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Link {
    endpoints: Vec<String>,
    channels: Vec<Channel>,
    current: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("no plane node answered (tried {tried}); last error: {last}")]
    Unreachable { tried: String, last: String },
    /// The plane answered and refused: trying another node would not help.
    #[error("the plane refused: {0}")]
    Refused(tonic::Status),
}

impl Link {
    pub fn new(
        endpoints: &[String],
        tls: &TlsMaterial,
        hosts: HostsMap,
    ) -> Result<Self, TransportError> {
        let hosts = Arc::new(hosts);
        let channels = endpoints
            .iter()
            .map(|e| meridian_transport::dial(e, tls, hosts.clone(), CONNECT_TIMEOUT))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            endpoints: endpoints.to_vec(),
            channels,
            current: AtomicUsize::new(0),
        })
    }

    /// The plane node calls go to now.
    pub fn current(&self) -> &str {
        &self.endpoints[self.current.load(Ordering::Relaxed) % self.endpoints.len()]
    }

    /// Calls `f` on the current node, moving on to the next on a transport failure, each node
    /// at most once.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, LinkError>
    where
        F: Fn(AgentLinkClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for step in 0..self.channels.len() {
            let i = (start + step) % self.channels.len();
            let client = AgentLinkClient::new(self.channels[i].clone())
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024);
            match tokio::time::timeout(CALL_TIMEOUT, f(client)).await {
                Ok(Ok(response)) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) if moves_on(&status) => {
                    last = format!("{}: {}", self.endpoints[i], status.message());
                }
                Ok(Err(status)) => return Err(LinkError::Refused(status)),
                Err(_) => {
                    last = format!("{}: no answer within {CALL_TIMEOUT:?}", self.endpoints[i])
                }
            }
        }
        // Start with the next node next time.
        self.current.store(start + 1, Ordering::Relaxed);
        Err(LinkError::Unreachable {
            tried: self.endpoints.join(", "),
            last,
        })
    }
}

/// Statuses that say "this node cannot serve you now" rather than "no".
fn moves_on(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Internal
    )
}

/// Why one exchange with the plane failed. The loops log it and try again.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The plane sent something this agent cannot read (a newer plane's shape).
    #[error("the plane sent {what} this agent cannot read: {why}")]
    Unreadable { what: &'static str, why: String },
    /// The plane cannot read an outbox entry yet: it and every later one stay.
    #[error("outbox entry {seq} stays in the outbox: {reason}")]
    Held { seq: u64, reason: String },
}
