//! The federation's one S3 bucket: its settings (`[bucket]` in `agent.toml` and `plane.toml`)
//! and the few operations Meridian needs — head, download to a file, upload from a file, list
//! and delete — with errors that name the key and the endpoint.
//!
//! Works with no internet: the region and credentials come from the config (or the usual
//! `AWS_*` variables), never from instance metadata, and TLS is rustls on ring.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig, retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

/// `[bucket]`: where resources live. `Debug` leaves the secrets out.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// The S3 endpoint, `http(s)://host[:port]` (AWS: `https://s3.<region>.amazonaws.com`).
    pub endpoint: String,
    /// The bucket's region (any value for most S3-compatible stores).
    #[serde(default = "default_region")]
    pub region: String,
    /// The bucket every cluster shares.
    pub bucket: String,
    /// Address the bucket in the path (`endpoint/bucket/key`) rather than the host name
    /// (`bucket.endpoint/key`); self-hosted stores usually need it.
    #[serde(default = "yes")]
    pub path_style: bool,
    /// Prefix of everything Meridian keeps in the bucket: empty, or ending in `/`. Tenants'
    /// resources are under `<root>tenants/<tenant>/`.
    #[serde(default)]
    pub root: String,
    /// Static credentials. When both are absent, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` are read from the environment.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// The secret key matching `access_key_id`.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// A temporary session's token, with temporary keys.
    #[serde(default)]
    pub session_token: Option<String>,
    /// Give up connecting after this long.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Give up waiting for an answer after this long (a download's body may take longer: it
    /// only has to keep moving).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Attempts per request, the first included.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
}

impl std::fmt::Debug for BucketConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<hidden>");
        f.debug_struct("BucketConfig")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("path_style", &self.path_style)
            .field("root", &self.root)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("attempts", &self.attempts)
            .finish()
    }
}

fn default_region() -> String {
    "us-east-1".into()
}

fn yes() -> bool {
    true
}

fn default_connect_timeout_ms() -> u64 {
    2_000
}

fn default_request_timeout_ms() -> u64 {
    30_000
}

fn default_attempts() -> u32 {
    2
}

impl BucketConfig {
    /// A config for `bucket` at `endpoint`, everything else defaulted.
    pub fn new(endpoint: impl Into<String>, bucket: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            region: default_region(),
            bucket: bucket.into(),
            path_style: true,
            root: String::new(),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            connect_timeout_ms: default_connect_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            attempts: default_attempts(),
        }
    }

    /// The first problem found, as (field under `bucket.`, what is wrong).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            return Err((
                "endpoint",
                format!("`{}` must start with http:// or https://", self.endpoint),
            ));
        }
        if self.bucket.trim().is_empty() {
            return Err(("bucket", "must not be empty".into()));
        }
        if self.region.trim().is_empty() {
            return Err(("region", "must not be empty".into()));
        }
        if !(self.root.is_empty() || self.root.ends_with('/')) || self.root.starts_with('/') {
            return Err((
                "root",
                format!(
                    "`{}` must be empty or a relative prefix ending in `/`",
                    self.root
                ),
            ));
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err((
                "access_key_id",
                "give both access_key_id and secret_access_key, or neither (then the AWS_* \
                 environment variables are used)"
                    .into(),
            ));
        }
        if self.attempts == 0 {
            return Err(("attempts", "must be at least 1".into()));
        }
        if self.connect_timeout_ms == 0 || self.request_timeout_ms == 0 {
            return Err(("request_timeout_ms", "timeouts must be positive".into()));
        }
        Ok(())
    }
}

/// What S3 says about an object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectMeta {
    /// The object key in the bucket.
    pub key: String,
    pub size: u64,
    pub etag: String,
    /// Last-Modified, ms since the epoch (S3 keeps whole seconds).
    pub last_modified_ms: i64,
}

/// Why a bucket operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BucketError {
    #[error("bucket: {0}")]
    Config(String),
    #[error("object `{key}` does not exist in bucket `{bucket}` at {endpoint}")]
    NotFound {
        key: String,
        bucket: String,
        endpoint: String,
    },
    #[error("S3 at {endpoint} could not be reached for `{key}`: {message}")]
    Unreachable {
        key: String,
        endpoint: String,
        message: String,
    },
    #[error("S3 at {endpoint} refused {operation} of `{key}`: {message}")]
    Refused {
        operation: &'static str,
        key: String,
        endpoint: String,
        message: String,
    },
    #[error("object `{key}` is {size} bytes, more than the {limit} allowed here")]
    TooBig { key: String, size: u64, limit: u64 },
    #[error("{what} {path}: {message}")]
    Local {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
}

impl BucketError {
    /// True when S3 did not answer at all (as opposed to answering no).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

/// A client for the configured bucket.
#[derive(Clone, Debug)]
pub struct Bucket {
    client: aws_sdk_s3::Client,
    name: String,
    endpoint: String,
    root: String,
}

impl Bucket {
    /// Builds a client; makes no request.
    pub fn new(config: &BucketConfig) -> Result<Self, BucketError> {
        config
            .check()
            .map_err(|(field, problem)| BucketError::Config(format!("{field}: {problem}")))?;
        let credentials = match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => Credentials::new(
                id,
                secret,
                config.session_token.clone(),
                None,
                "meridian-config",
            ),
            _ => {
                let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
                match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
                    (Some(id), Some(secret)) => Credentials::new(
                        id,
                        secret,
                        var("AWS_SESSION_TOKEN"),
                        None,
                        "meridian-environment",
                    ),
                    _ => {
                        return Err(BucketError::Config(
                            "no credentials: set access_key_id and secret_access_key, or the \
                             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY environment variables"
                                .into(),
                        ));
                    }
                }
            }
        };
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let s3 = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .region(Region::new(config.region.clone()))
            .endpoint_url(config.endpoint.trim_end_matches('/'))
            .force_path_style(config.path_style)
            .credentials_provider(credentials)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(RetryConfig::standard().with_max_attempts(config.attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
                    .operation_attempt_timeout(Duration::from_millis(config.request_timeout_ms))
                    .build(),
            )
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(Duration::from_secs(5))
                    .build(),
            )
            .build();
        Ok(Self {
            client: aws_sdk_s3::Client::from_conf(s3),
            name: config.bucket.clone(),
            endpoint: config.endpoint.clone(),
            root: config.root.clone(),
        })
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configured prefix of everything Meridian keeps here.
    pub fn root(&self) -> &str {
        &self.root
    }

    fn failed<E>(
        &self,
        operation: &'static str,
        key: &str,
        e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> BucketError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let message = DisplayErrorContext(&e).to_string();
        // A server error, a timeout or throttling says as little about the object as no
        // answer at all: S3 (or a proxy on the way) is not serving it now.
        let overloaded = e
            .raw_response()
            .map(|r| r.status().as_u16())
            .is_some_and(|s| s >= 500 || s == 408 || s == 429);
        match &e {
            _ if overloaded => BucketError::Unreachable {
                key: key.into(),
                endpoint: self.endpoint.clone(),
                message,
            },
            SdkError::DispatchFailure(_)
            | SdkError::TimeoutError(_)
            | SdkError::ResponseError(_) => BucketError::Unreachable {
                key: key.into(),
                endpoint: self.endpoint.clone(),
                message,
            },
            _ => BucketError::Refused {
                operation,
                key: key.into(),
                endpoint: self.endpoint.clone(),
                message,
            },
        }
    }

    fn not_found(&self, key: &str) -> BucketError {
        BucketError::NotFound {
            key: key.into(),
            bucket: self.name.clone(),
            endpoint: self.endpoint.clone(),
        }
    }

    /// HEAD: the object's size, ETag and Last-Modified.
    pub async fn head(&self, key: &str) -> Result<ObjectMeta, BucketError> {
        match self
            .client
            .head_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(meta(
                key,
                head.content_length,
                head.e_tag.as_deref(),
                head.last_modified.as_ref(),
            )),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
                Err(self.not_found(key))
            }
            Err(e) => Err(self.failed("HEAD", key, e)),
        }
    }

    /// GET: the object's head and its body still to read.
    async fn get_object(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, BucketError> {
        match self
            .client
            .get_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
        {
            Ok(o) => Ok(o),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                Err(self.not_found(key))
            }
            Err(e) => Err(self.failed("GET", key, e)),
        }
    }

    /// GET into `path` (created or truncated, synced before returning). The size written is
    /// checked against Content-Length; an object over `max_bytes` is refused before any of it
    /// is written.
    pub async fn download(
        &self,
        key: &str,
        path: &Path,
        max_bytes: u64,
    ) -> Result<ObjectMeta, BucketError> {
        let object = self.get_object(key).await?;
        let meta = meta(
            key,
            object.content_length,
            object.e_tag.as_deref(),
            object.last_modified.as_ref(),
        );
        if meta.size > max_bytes {
            return Err(BucketError::TooBig {
                key: key.into(),
                size: meta.size,
                limit: max_bytes,
            });
        }
        let local = |what, e: std::io::Error| BucketError::Local {
            what,
            path: path.to_owned(),
            message: e.to_string(),
        };
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|e| local("creating", e))?;
        let mut body = object.body;
        let mut written = 0u64;
        loop {
            match body.try_next().await {
                Ok(Some(bytes)) => {
                    file.write_all(&bytes)
                        .await
                        .map_err(|e| local("writing", e))?;
                    written += bytes.len() as u64;
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(BucketError::Unreachable {
                        key: key.into(),
                        endpoint: self.endpoint.clone(),
                        message: format!("the download broke off after {written} bytes: {e}"),
                    });
                }
            }
        }
        file.sync_all().await.map_err(|e| local("syncing", e))?;
        if written != meta.size {
            return Err(BucketError::Unreachable {
                key: key.into(),
                endpoint: self.endpoint.clone(),
                message: format!("the download ended after {written} of {} bytes", meta.size),
            });
        }
        Ok(meta)
    }

    /// PUT `bytes` as `key`.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BucketError> {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| self.failed("PUT", key, e))?;
        Ok(())
    }

    /// GET `key` whole, refusing an object over `max_bytes`.
    pub async fn get(&self, key: &str, max_bytes: u64) -> Result<Vec<u8>, BucketError> {
        let object = self.get_object(key).await?;
        let size = object.content_length.unwrap_or(0).max(0) as u64;
        if size > max_bytes {
            return Err(BucketError::TooBig {
                key: key.into(),
                size,
                limit: max_bytes,
            });
        }
        let bytes = object
            .body
            .collect()
            .await
            .map_err(|e| BucketError::Unreachable {
                key: key.into(),
                endpoint: self.endpoint.clone(),
                message: format!("the download broke off: {e}"),
            })?;
        Ok(bytes.into_bytes().to_vec())
    }

    /// DELETE `key` (gone already is fine).
    pub async fn remove(&self, key: &str) -> Result<(), BucketError> {
        self.client
            .delete_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .map_err(|e| self.failed("DELETE", key, e))?;
        Ok(())
    }

    /// PUT the file at `path` as `key`.
    pub async fn upload(&self, key: &str, path: &Path) -> Result<ObjectMeta, BucketError> {
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| BucketError::Local {
                what: "reading",
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(body)
            .send()
            .await
            .map_err(|e| self.failed("PUT", key, e))?;
        self.head(key).await
    }

    /// Every object whose key starts with `prefix`, in key order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, BucketError> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.name)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.failed("LIST", prefix, e))?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                objects.push(meta(key, o.size, o.e_tag(), o.last_modified()));
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.into()),
                _ => break,
            }
        }
        Ok(objects)
    }

    /// Deletes `key` and returns what it was; an error if it does not exist.
    pub async fn delete(&self, key: &str) -> Result<ObjectMeta, BucketError> {
        let meta = self.head(key).await?;
        self.remove(key).await?;
        Ok(meta)
    }
}

fn meta(
    key: &str,
    size: Option<i64>,
    etag: Option<&str>,
    last_modified: Option<&DateTime>,
) -> ObjectMeta {
    ObjectMeta {
        key: key.into(),
        size: size.unwrap_or(0).max(0) as u64,
        etag: etag.unwrap_or_default().trim_matches('"').to_owned(),
        last_modified_ms: last_modified.and_then(|t| t.to_millis().ok()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_field_by_field() {
        let ok = BucketConfig::new("http://127.0.0.1:9000", "meridian");
        assert_eq!(ok.check(), Ok(()));
        let field = |c: BucketConfig| c.check().unwrap_err().0;
        assert_eq!(
            field(BucketConfig::new("127.0.0.1:9000", "meridian")),
            "endpoint"
        );
        assert_eq!(field(BucketConfig::new("http://s3", " ")), "bucket");
        assert_eq!(
            field(BucketConfig {
                root: "meridian".into(),
                ..ok.clone()
            }),
            "root"
        );
        assert_eq!(
            field(BucketConfig {
                access_key_id: Some("AKIA".into()),
                ..ok.clone()
            }),
            "access_key_id"
        );
    }

    #[test]
    fn static_credentials_build_a_client_without_any_network() {
        let config = BucketConfig {
            access_key_id: Some("id".into()),
            secret_access_key: Some("secret".into()),
            ..BucketConfig::new("http://127.0.0.1:1", "meridian")
        };
        let bucket = Bucket::new(&config).unwrap();
        assert_eq!(bucket.endpoint(), "http://127.0.0.1:1");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("secret\"") && shown.contains("<hidden>"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_named_in_the_error() {
        let config = BucketConfig {
            access_key_id: Some("id".into()),
            secret_access_key: Some("secret".into()),
            attempts: 1,
            ..BucketConfig::new("http://127.0.0.1:1", "meridian")
        };
        let e = Bucket::new(&config)
            .unwrap()
            .head("tenants/ads/x.sh")
            .await
            .unwrap_err();
        assert!(e.is_unreachable(), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("http://127.0.0.1:1") && text.contains("tenants/ads/x.sh"),
            "{text}"
        );
    }
}
