//! A real S3-compatible server for end-to-end tests: moto's `moto_server`, which `tests/run`
//! installs, started on loopback with request recording on, so a test can count what the code
//! under test asked of S3 ("the second run issues a HEAD and no GET").
//!
//! # How requests are counted
//!
//! moto's recorder (`MOTO_ENABLE_RECORDING=1`) appends one JSON object per request — method,
//! raw URL, headers, base64 body — to `MOTO_RECORDER_FILEPATH` *before* handling it, and closes
//! the file, so a request whose response the client has seen is already on disk. Every method
//! is recorded, HEAD included, and so are requests that fail (a HEAD on a missing key). The
//! harness reads that file in the temporary directory it owns rather than through
//! `/moto-api/recorder/download-recording`, which would ship every recorded body back over HTTP.
//!
//! moto writes a record and its newline in two `write`s, so concurrent requests with large
//! bodies can interleave them (`{..}{..}\n\n`); the records are therefore read as a stream of
//! JSON values, not as lines. Each record itself is one `write` with `O_APPEND`, so it is never
//! torn.
//!
//! The harness's own calls ([`S3Server::create_bucket`], [`S3Server::put`],
//! [`S3Server::get`]) carry an `x-meridian-harness` header and are left out of
//! [`S3Server::requests`], as are `/moto-api/` calls; seeding a bucket therefore needs no
//! [`S3Server::reset_requests`] afterwards.
//!
//! Counting is by what was asked, not how it was answered: a conditional GET that moto
//! answers 304 is a GET, and a HEAD or GET of a missing key counts too. Recorded bodies stay
//! on disk (base64) until the next reset, so a test that uploads gigabytes should reset as it
//! goes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::process::free_port;

/// Marks the harness's own requests so [`S3Server::requests`] can leave them out.
const HARNESS_HEADER: &str = "x-meridian-harness";

/// moto lets anonymous requests create objects but then refuses to serve them back (their ACL
/// is private), so the harness sends an Authorization header. moto does not check signatures.
const FAKE_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 \
    Credential=meridian/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";

/// How long moto may take to answer its first request (it is ready in ~1 s).
const STARTUP_PATIENCE: Duration = Duration::from_secs(30);

/// A moto S3 server on 127.0.0.1 at a free port, killed on drop.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`: the `endpoint_url` for the code under test, with path-style
    /// addressing (`/bucket/key`).
    pub endpoint: String,
    child: Option<Child>,
    binary: PathBuf,
    http: reqwest::Client,
    /// Holds the recording and moto's log; removed on drop.
    dir: tempfile::TempDir,
}

/// One request S3 received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, `PUT`, ...
    pub method: String,
    /// Percent-decoded path without the query: `/bucket/key` for path-style requests.
    pub path: String,
    /// The raw query string without `?`, e.g. `x-id=GetObject`; empty when there was none.
    pub query: String,
}

impl S3Server {
    /// Finds `moto_server` ($MERIDIAN_MOTO_SERVER, else the venv that `tests/run` makes under
    /// `${MERIDIAN_CACHE:-$HOME/.cache/meridian}/moto`, else `moto_server` on PATH), starts it
    /// with request recording on and waits until it answers.
    pub async fn start() -> anyhow::Result<S3Server> {
        let binary = find_moto_server()?;
        let http = http_client();
        // The free port is released before moto binds it; another process can take it in
        // between, so a start that fails that way is tried again on another port.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let mut server = S3Server {
                endpoint: format!("http://127.0.0.1:{port}"),
                child: None,
                binary: binary.clone(),
                http: http.clone(),
                dir: tempfile::Builder::new().prefix("meridian-s3-").tempdir()?,
            };
            server.spawn(port)?;
            match server.wait_until_ready().await {
                Ok(()) => return Ok(server),
                Err(_) if attempt < 3 && server.log().contains("Address already in use") => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn spawn(&mut self, port: u16) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.log_path())?;
        let child = Command::new(&self.binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_ENABLE_RECORDING", "1")
            .env("MOTO_RECORDER_FILEPATH", self.recording_path())
            // moto derives the account from a 12-digit access key id; pinning it keeps the
            // harness and the code under test in one account whatever credentials it uses.
            .env("MOTO_ACCOUNT_ID", "123456789012")
            .stdin(Stdio::null())
            // Files, not pipes: moto logs every request and must never block on a full pipe.
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let url = format!("{}/moto-api/data.json", self.endpoint);
        let deadline = Instant::now() + STARTUP_PATIENCE;
        loop {
            if let Ok(response) = self.http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            let child = self.child.as_mut().expect("spawned");
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited ({status}) before answering on {}:\n{}",
                    self.binary.display(),
                    self.endpoint,
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not answer GET {url} within {STARTUP_PATIENCE:?}:\n{}",
                    self.binary.display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a bucket with a plain `PUT /bucket`.
    pub async fn create_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        let url = format!("{}/{}", self.endpoint, encode_path(bucket));
        let response = self.harness(self.http.put(&url)).send().await?;
        check(response, "PUT", &url).await?;
        Ok(())
    }

    /// Stores an object with a plain `PUT`, to seed or replace objects independently of the
    /// code under test.
    pub async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let url = self.object_url(bucket, key);
        let request = self
            .http
            .put(&url)
            // Without a content type, a client may send a form type, which moto then parses.
            .header("content-type", "application/octet-stream")
            .body(body);
        let response = self.harness(request).send().await?;
        check(response, "PUT", &url).await?;
        Ok(())
    }

    /// An object's body, or `None` when the key (or the bucket) does not exist.
    pub async fn get(&self, bucket: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let url = self.object_url(bucket, key);
        let response = self.harness(self.http.get(&url)).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = check(response, "GET", &url).await?;
        Ok(Some(response.bytes().await?.to_vec()))
    }

    /// Forgets the requests recorded so far.
    pub async fn reset_requests(&self) -> anyhow::Result<()> {
        // What moto's own reset-recording does; done on the file so it works after `stop`.
        tokio::fs::write(self.recording_path(), b"")
            .await
            .context("truncating moto's recording")
    }

    /// The requests S3 received since the last reset, in the order moto received them,
    /// leaving out `/moto-api/` calls and the harness's own `create_bucket`, `put` and `get`.
    ///
    /// Still works after [`S3Server::stop`]: it reads what was recorded before.
    pub async fn requests(&self) -> anyhow::Result<Vec<Request>> {
        let bytes = match tokio::fs::read(self.recording_path()).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).context("reading moto's recording"),
        };
        let mut requests = Vec::new();
        for record in serde_json::Deserializer::from_slice(&bytes).into_iter::<serde_json::Value>()
        {
            let record = match record {
                Ok(record) => record,
                // A request still being recorded; it is counted once it has been received.
                Err(e) if e.is_eof() => break,
                Err(e) => return Err(e).context("parsing moto's recording"),
            };
            let from_harness = record["headers"]
                .as_object()
                .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case(HARNESS_HEADER)));
            let (Some(method), Some(url)) = (record["method"].as_str(), record["url"].as_str())
            else {
                bail!("a record in moto's recording has no method or url: {record}");
            };
            let request = parse_url(method, url);
            if from_harness || request.path.starts_with("/moto-api/") {
                continue;
            }
            requests.push(request);
        }
        Ok(requests)
    }

    /// How many requests with this method (`"HEAD"`, `"GET"`, ...) went to a path ending in
    /// `key_suffix` at a `/` boundary: `"out.tar"` matches `/bucket/runs/7/out.tar` but not
    /// `/bucket/runs/7/old-out.tar`; pass `"bucket/key"` to tell buckets apart.
    pub async fn count(&self, method: &str, key_suffix: &str) -> anyhow::Result<usize> {
        let key_suffix = key_suffix.trim_start_matches('/');
        Ok(self
            .requests()
            .await?
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method))
            .filter(|r| {
                r.path
                    .strip_suffix(key_suffix)
                    .is_some_and(|rest| rest.ends_with('/'))
            })
            .count())
    }

    /// Kills the server (for "S3 unreachable" tests); the endpoint then refuses connections.
    /// What it recorded can still be read with [`S3Server::requests`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn harness(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request
            .header(HARNESS_HEADER, "1")
            .header("authorization", FAKE_AUTHORIZATION)
    }

    fn object_url(&self, bucket: &str, key: &str) -> String {
        format!(
            "{}/{}/{}",
            self.endpoint,
            encode_path(bucket),
            encode_path(key)
        )
    }

    fn recording_path(&self) -> PathBuf {
        self.dir.path().join("recording.jsonl")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("moto.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The end of moto's stdout and stderr, for error messages.
    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A reqwest client for plain HTTP, such as the server's endpoint. The workspace's reqwest is
/// built without a TLS provider, so `reqwest::Client::new()` panics unless one was installed
/// process-wide; this one brings rustls on ring (and trusts no roots).
pub fn http_client() -> reqwest::Client {
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("building an HTTP client")
}

/// `$MERIDIAN_MOTO_SERVER`, else the venv `tests/run` makes, else `moto_server` on PATH.
fn find_moto_server() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("MERIDIAN_MOTO_SERVER") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!(
            "MERIDIAN_MOTO_SERVER is {}, which does not exist: run tests/run (it installs moto) \
             or `pip install \"moto[server]\"` and set MERIDIAN_MOTO_SERVER to its moto_server",
            path.display()
        );
    }
    let cache = match std::env::var_os("MERIDIAN_CACHE") {
        Some(cache) => Some(PathBuf::from(cache)),
        None => std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/meridian")),
    };
    let venv = cache.map(|cache| cache.join("moto/bin/moto_server"));
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("moto_server"));
    venv.into_iter()
        .chain(on_path)
        .find(|candidate| candidate.is_file())
        .context(
            "moto_server (an S3-compatible server for tests) was not found: run tests/run (it \
             installs moto) or `pip install \"moto[server]\"` and set MERIDIAN_MOTO_SERVER",
        )
}

/// Fails with the status and body unless the response is a success.
async fn check(
    response: reqwest::Response,
    method: &str,
    url: &str,
) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    bail!("{method} {url}: moto answered {status}: {body}")
}

/// Splits a recorded URL (`http://host:port/path?query`) into a [`Request`].
fn parse_url(method: &str, url: &str) -> Request {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path_and_query = after_scheme
        .find('/')
        .map_or("/", |start| &after_scheme[start..]);
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    Request {
        method: method.to_owned(),
        path: decode_path(path),
        query: query.to_owned(),
    }
}

/// Percent-encodes an S3 key or bucket for a path, keeping `/` as the separator it is.
fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn decode_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = || std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok();
        match (bytes[i], hex().and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_urls_split_into_a_decoded_path_and_the_raw_query() {
        assert_eq!(
            parse_url(
                "GET",
                "http://127.0.0.1:5000/bkt/runs/a%3Ab/out?x-id=GetObject"
            ),
            Request {
                method: "GET".into(),
                path: "/bkt/runs/a:b/out".into(),
                query: "x-id=GetObject".into(),
            }
        );
        assert_eq!(parse_url("PUT", "http://127.0.0.1:5000/bkt").path, "/bkt");
    }

    #[test]
    fn keys_are_encoded_but_keep_their_slashes() {
        assert_eq!(encode_path("runs/7/a b:c"), "runs/7/a%20b%3Ac");
        assert_eq!(decode_path(&encode_path("runs/7/a b:c")), "runs/7/a b:c");
        assert_eq!(decode_path("100%"), "100%");
    }
}
