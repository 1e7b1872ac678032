//! How plane nodes and agents reach each other: by hostname, over mutual TLS.
//!
//! - [`HostsMap`]: which address a hostname is dialled at *from this node* — a peer in the
//!   same data center by its internal address, one elsewhere by its public address. Hostnames
//!   not in the map are resolved by DNS.
//! - [`TlsFiles`] / [`TlsMaterial`]: the federation CA and this node's certificate and key.
//! - [`dial`]: a gRPC channel to `https://<hostname>:<port>` that opens its TCP connection to
//!   the mapped address but verifies the server's certificate against the hostname, whatever
//!   address was dialled.
//! - [`PeerIdentity`]: who is on the other end, read from its verified client certificate
//!   (hostname, role, and for agents the cluster they may act for).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};

/// Hostname → address (`ip`, `ip:port`, or `name:port`) as seen from this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HostsMap(pub BTreeMap<String, String>);

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{0}` is not `hostname:port`")]
    BadEndpoint(String),
    #[error("dialling {endpoint}: {source}")]
    Dial {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("client certificate: {0}")]
    Identity(String),
}

impl HostsMap {
    /// The socket address to open for `host:port`. A mapped address without a port takes the
    /// endpoint's port.
    pub async fn resolve(&self, host: &str, port: u16) -> std::io::Result<SocketAddr> {
        let target = match self.0.get(host) {
            Some(addr) if addr.contains(':') && addr.parse::<std::net::Ipv6Addr>().is_err() => {
                addr.clone()
            }
            Some(addr) => format!("{addr}:{port}"),
            None => format!("{host}:{port}"),
        };
        tokio::net::lookup_host(&target)
            .await?
            .next()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no address for `{target}` (add `{host}` to the hosts map)"),
                )
            })
    }
}

/// Paths of the PEM files a node needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The federation CA's certificate: every peer and agent must present a certificate it
    /// signed.
    pub ca: PathBuf,
    /// This node's certificate, issued for its hostname.
    pub cert: PathBuf,
    /// This node's private key (PKCS#8 PEM).
    pub key: PathBuf,
}

/// The loaded PEM contents.
#[derive(Clone)]
pub struct TlsMaterial {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl TlsFiles {
    pub fn load(&self) -> Result<TlsMaterial, TransportError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|source| TransportError::Read {
                what,
                path: path.to_owned(),
                source,
            })
        };
        Ok(TlsMaterial {
            ca: read("CA certificate", &self.ca)?,
            cert: read("certificate", &self.cert)?,
            key: read("private key", &self.key)?,
        })
    }
}

impl TlsMaterial {
    /// Server side: present this node's certificate and require a client certificate signed
    /// by the federation CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
    }

    /// Client side: trust only the federation CA and present this node's certificate.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.cert, &self.key))
    }
}

/// A lazily connecting channel to `hostname:port`, reached through `hosts`, verified against
/// `hostname`. The connection is opened on first use and re-opened after failures; note that
/// under TLS 1.3 a refused client certificate only shows on the first call.
/// How often an idle or busy connection is pinged, and how long the answer may take.
const KEEP_ALIVE: Duration = Duration::from_secs(3);

pub fn dial(
    endpoint: &str,
    tls: &TlsMaterial,
    hosts: Arc<HostsMap>,
    connect_timeout: Duration,
) -> Result<Channel, TransportError> {
    let (host, port) = split_endpoint(endpoint)?;
    let uri = format!("https://{host}:{port}");
    let channel = Endpoint::from_shared(uri)
        .map_err(|source| TransportError::Dial {
            endpoint: endpoint.to_owned(),
            source,
        })?
        .tls_config(tls.client())
        .map_err(|source| TransportError::Dial {
            endpoint: endpoint.to_owned(),
            source,
        })?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        // A connection whose peer went silent (a cut link, a machine gone) is found dead by
        // an unanswered HTTP/2 ping and dropped, so the next call dials afresh instead of
        // waiting out its whole timeout on it.
        .http2_keep_alive_interval(KEEP_ALIVE)
        .keep_alive_timeout(KEEP_ALIVE)
        .keep_alive_while_idle(true)
        .connect_with_connector_lazy(tower::service_fn(move |uri: tonic::codegen::http::Uri| {
            let hosts = hosts.clone();
            async move {
                let host = uri.host().unwrap_or_default().to_owned();
                let port = uri.port_u16().unwrap_or(443);
                let addr = hosts.resolve(&host, port).await?;
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tcp))
            }
        }));
    Ok(channel)
}

/// Splits `hostname:port`.
pub fn split_endpoint(endpoint: &str) -> Result<(&str, u16), TransportError> {
    endpoint
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse().ok()?)))
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| TransportError::BadEndpoint(endpoint.to_owned()))
}

/// The role a certificate was issued for, in its organizational unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Plane,
    Agent,
}

/// URI SAN prefix that carries an agent certificate's cluster.
pub const CLUSTER_URI_PREFIX: &str = "meridian:cluster:";

/// Who presented a (CA-verified) client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub hostname: String,
    pub role: Role,
    /// For agents: the one cluster they may act for.
    pub cluster: Option<String>,
}

impl PeerIdentity {
    /// Reads the identity from a DER certificate (already verified by TLS against the CA).
    pub fn from_der(der: &[u8]) -> Result<Self, TransportError> {
        use x509_parser::extensions::GeneralName;
        use x509_parser::prelude::{FromDer, X509Certificate};
        let bad = |m: String| TransportError::Identity(m);
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
        let mut hostname = None;
        let mut cluster = None;
        if let Some(san) = cert
            .subject_alternative_name()
            .map_err(|e| bad(e.to_string()))?
        {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) if hostname.is_none() => hostname = Some(d.to_string()),
                    GeneralName::URI(u) => {
                        if let Some(c) = u.strip_prefix(CLUSTER_URI_PREFIX) {
                            cluster = Some(c.to_owned());
                        }
                    }
                    _ => {}
                }
            }
        }
        let role = match cert
            .subject()
            .iter_organizational_unit()
            .next()
            .and_then(|ou| ou.as_str().ok())
        {
            Some("plane") => Role::Plane,
            Some("agent") => Role::Agent,
            other => {
                return Err(bad(format!(
                    "role (OU) is {other:?}, expected plane or agent"
                )));
            }
        };
        Ok(Self {
            hostname: hostname.ok_or_else(|| bad("no DNS name".into()))?,
            role,
            cluster,
        })
    }

    /// The identity of the client of a tonic request, if it presented a certificate.
    pub fn of_request<T>(request: &tonic::Request<T>) -> Result<Self, tonic::Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| tonic::Status::unauthenticated("no client certificate"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| tonic::Status::unauthenticated("empty client certificate chain"))?;
        Self::from_der(leaf.as_ref()).map_err(|e| tonic::Status::unauthenticated(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_hosts_map_picks_the_mapped_address_and_keeps_the_port() {
        let hosts = HostsMap(BTreeMap::from([
            ("plane-1.dc-a.example".to_string(), "127.0.0.1".to_string()),
            (
                "plane-2.dc-b.example".to_string(),
                "127.0.0.2:9000".to_string(),
            ),
        ]));
        assert_eq!(
            hosts.resolve("plane-1.dc-a.example", 7443).await.unwrap(),
            "127.0.0.1:7443".parse().unwrap()
        );
        assert_eq!(
            hosts.resolve("plane-2.dc-b.example", 7443).await.unwrap(),
            "127.0.0.2:9000".parse().unwrap()
        );
        assert_eq!(
            hosts.resolve("localhost", 7).await.unwrap().port(),
            7,
            "unmapped names fall back to DNS"
        );
    }

    #[test]
    fn endpoints_need_a_port() {
        assert_eq!(split_endpoint("plane-1:7443").unwrap(), ("plane-1", 7443));
        assert!(split_endpoint("plane-1").is_err());
        assert!(split_endpoint(":7443").is_err());
    }
}
