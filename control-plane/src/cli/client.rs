//! How CLI commands reach a plane: the REST API, a bearer token, and (over HTTPS) the
//! federation CA as the only trusted root.
//!
//! Where to go and with what token, in order: `--config plane.toml` (that node's API address,
//! CA and data directory), else `--addr`/`MERIDIAN_ADDR` and `--ca`/`MERIDIAN_CA`; the token
//! from `MERIDIAN_TOKEN`, else `<data-dir>/admin.token` (`--data-dir`/`MERIDIAN_DATA_DIR`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use reqwest::{Method, StatusCode};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::ErrorBody;
use crate::config::PlaneConfig;
use crate::server::ADMIN_TOKEN_FILE;

/// Flags every API command takes.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Base URL of any plane node's API.
    #[arg(
        long,
        env = "MERIDIAN_ADDR",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub addr: String,
    /// CA certificate (PEM) that signed the API's certificate, for https.
    #[arg(long, env = "MERIDIAN_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Data directory whose `admin.token` is used when MERIDIAN_TOKEN is not set.
    #[arg(
        long,
        env = "MERIDIAN_DATA_DIR",
        default_value = "meridian-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// A node's plane.toml: talk to that node's API with its CA and data directory.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Dial HOST at ADDR (`ip:port`) instead of looking it up, as curl's `--resolve`: TLS
    /// still verifies HOST. Repeatable; `MERIDIAN_RESOLVE` takes a comma-separated list.
    #[arg(
        long = "resolve",
        env = "MERIDIAN_RESOLVE",
        value_name = "HOST=ADDR",
        value_delimiter = ',',
        global = true
    )]
    pub resolve: Vec<String>,
}

/// Parses `--resolve` entries (`HOST=IP:PORT`).
pub fn resolve_entries(entries: &[String]) -> Result<Vec<(String, SocketAddr)>, ClientError> {
    entries
        .iter()
        .filter(|e| !e.trim().is_empty())
        .map(|entry| {
            let (host, addr) = entry.trim().split_once('=').ok_or_else(|| {
                ClientError::Refused(format!("--resolve `{entry}`: want HOST=IP:PORT"))
            })?;
            let addr = addr.parse().map_err(|e| {
                ClientError::Refused(format!(
                    "--resolve `{entry}`: `{addr}` is not IP:PORT ({e})"
                ))
            })?;
            if host.is_empty() {
                return Err(ClientError::Refused(format!(
                    "--resolve `{entry}`: the host name is empty"
                )));
            }
            Ok((host.to_owned(), addr))
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The input was refused (by the CLI or the API): exit code 2.
    #[error("{0}")]
    Refused(String),
    /// Anything else: unreachable plane, server error: exit code 1.
    #[error("{0}")]
    Failed(String),
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Refused(_) => 2,
            Self::Failed(_) => 1,
        }
    }
}

/// A connected API client.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(target: &Target) -> Result<Self, ClientError> {
        let (base, ca, data_dir, resolve) = match &target.config {
            Some(path) => {
                let config =
                    PlaneConfig::load(path).map_err(|e| ClientError::Refused(e.to_string()))?;
                let scheme = if config.http.tls { "https" } else { "http" };
                let port = config.http.listen.port();
                // Dial the node by its hostname (what its certificate names), at the address
                // it listens on, or loopback when it listens on every interface.
                let ip = if config.http.listen.ip().is_unspecified() {
                    [127, 0, 0, 1].into()
                } else {
                    config.http.listen.ip()
                };
                (
                    format!("{scheme}://{}:{port}", config.hostname),
                    config.http.tls.then(|| config.tls.ca.clone()),
                    config.data_dir.clone(),
                    Some((config.hostname.clone(), SocketAddr::new(ip, port))),
                )
            }
            None => (
                target.addr.trim_end_matches('/').to_owned(),
                target.ca.clone(),
                target.data_dir.clone(),
                None,
            ),
        };
        let token = token(&data_dir)?;
        let mut builder = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .use_preconfigured_tls(tls(ca.as_deref())?);
        if let Some((host, addr)) = resolve {
            builder = builder.resolve(&host, addr);
        }
        for (host, addr) in resolve_entries(&target.resolve)? {
            builder = builder.resolve(&host, addr);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Failed(format!("building the HTTP client: {e}")))?;
        Ok(Self { http, base, token })
    }

    /// Calls `method path` with an optional JSON body and decodes the JSON reply.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let (url, request) = self.request(method, path);
        let request = match body {
            Some(body) => request.json(body),
            None => request,
        };
        self.send(&url, request).await
    }

    /// `GET path`, decoded; `None` when the plane says there is no such thing (404: also what
    /// another tenant's object answers).
    pub async fn find<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, ClientError> {
        let (url, request) = self.request(Method::GET, path);
        let response = request.send().await.map_err(|e| {
            ClientError::Failed(format!(
                "calling {url}: {}; is the plane running there? (`--addr`, MERIDIAN_ADDR)",
                error_chain(&e)
            ))
        })?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = Self::checked(&url, response).await?;
        Self::decode(&url, response).await.map(Some)
    }

    /// Sends `body` as is (`application/octet-stream`) and decodes the JSON reply.
    pub async fn upload<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: reqwest::Body,
    ) -> Result<T, ClientError> {
        let (url, request) = self.request(method, path);
        let request = request
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        self.send(&url, request).await
    }

    /// `GET path`, the reply's bytes as they are, written to `out` as they come.
    pub async fn download(
        &self,
        path: &str,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        use tokio::io::AsyncWriteExt;
        use tokio_stream::StreamExt;
        let (url, request) = self.request(Method::GET, path);
        let mut body = self.response(&url, request).await?.bytes_stream();
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk
                .map_err(|e| ClientError::Failed(format!("reading the reply from {url}: {e}")))?;
            out.write_all(&chunk)
                .await
                .map_err(|e| ClientError::Failed(format!("writing the download: {e}")))?;
            written += chunk.len() as u64;
        }
        out.flush()
            .await
            .map_err(|e| ClientError::Failed(format!("writing the download: {e}")))?;
        Ok(written)
    }

    fn request(&self, method: Method, path: &str) -> (String, reqwest::RequestBuilder) {
        let url = format!("{}/api/v1{path}", self.base);
        let request = self.http.request(method, &url).bearer_auth(&self.token);
        (url, request)
    }

    /// Sends and decodes the JSON reply.
    async fn send<T: DeserializeOwned>(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = self.response(url, request).await?;
        Self::decode(url, response).await
    }

    /// A success reply's JSON, decoded.
    async fn decode<T: DeserializeOwned>(
        url: &str,
        response: reqwest::Response,
    ) -> Result<T, ClientError> {
        let text = response
            .text()
            .await
            .map_err(|e| ClientError::Failed(format!("reading the reply from {url}: {e}")))?;
        serde_json::from_str(&text).map_err(|e| {
            ClientError::Failed(format!(
                "the reply from {url} is not what was expected: {e}"
            ))
        })
    }
    /// Sends; a success status gives the response, anything else the error it carries.
    async fn response(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(|e| {
            ClientError::Failed(format!(
                "calling {url}: {}; is the plane running there? (`--addr`, MERIDIAN_ADDR)",
                error_chain(&e)
            ))
        })?;
        Self::checked(url, response).await
    }

    /// The response if its status is a success, else the error it carries.
    async fn checked(
        url: &str,
        response: reqwest::Response,
    ) -> Result<reqwest::Response, ClientError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response
            .text()
            .await
            .map_err(|e| ClientError::Failed(format!("reading the reply from {url}: {e}")))?;
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or(text);
        if status.is_client_error() && status != StatusCode::UNAUTHORIZED {
            Err(ClientError::Refused(message))
        } else {
            Err(ClientError::Failed(format!("{status}: {message}")))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn token(data_dir: &Path) -> Result<String, ClientError> {
    if let Ok(t) = std::env::var("MERIDIAN_TOKEN")
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_owned());
    }
    let file = data_dir.join(ADMIN_TOKEN_FILE);
    std::fs::read_to_string(&file)
        .map(|t| t.trim().to_owned())
        .map_err(|e| {
            ClientError::Refused(format!(
                "no API token: MERIDIAN_TOKEN is not set and {} cannot be read ({e}); \
                 set MERIDIAN_TOKEN or point --data-dir at the plane's data directory",
                file.display()
            ))
        })
}

/// TLS for the client: trust only `ca` (none given: no roots, so https fails clearly).
pub fn tls(ca: Option<&Path>) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|e| {
            ClientError::Refused(format!("reading the CA certificate {}: {e}", ca.display()))
        })?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| {
                ClientError::Refused(format!("CA certificate {}: {e}", ca.display()))
            })?;
            roots.add(cert).map_err(|e| {
                ClientError::Refused(format!("CA certificate {}: {e}", ca.display()))
            })?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError::Failed(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_entries_name_what_is_wrong() {
        let ok = resolve_entries(&["plane-1.dc-a.example=203.0.113.11:8443".into()]).unwrap();
        assert_eq!(
            ok,
            [(
                "plane-1.dc-a.example".to_owned(),
                "203.0.113.11:8443".parse().unwrap()
            )]
        );
        for (bad, says) in [
            ("plane-1.dc-a.example", "want HOST=IP:PORT"),
            ("plane-1=203.0.113.11", "is not IP:PORT"),
            ("=10.0.0.1:1", "host name is empty"),
        ] {
            let err = resolve_entries(&[bad.into()]).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains(bad), "{bad}: {err}");
        }
    }
}
