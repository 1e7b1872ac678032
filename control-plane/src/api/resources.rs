//! The resource center: `/api/v1/resources/{tenant}[/{key}]` — upload, list, download and
//! delete a tenant's scripts, jars and SQL files in the federation's S3 bucket.
//!
//! Keys are relative to the tenant's prefix (`<root>tenants/<tenant>/`), so no key can name
//! another tenant's object; the policy decides who may read (any role in the tenant) and who
//! may change (owner, developer) a tenant's files.
//! Uploads stream to a temporary file first (never whole into memory) and go to S3 in one PUT;
//! downloads stream from a temporary file.

use axum::body::Body as RawBody;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{MethodRouter, get};
use axum::{Extension, Json};
use meridian_bucket::{Bucket, BucketError, ObjectMeta};
use meridian_domain::resource::{ResourceKey, object_key, tenant_prefix};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_stream::{Stream, StreamExt};

use super::principal::Caller;
use super::{Api, ApiError, ApiResult, Params, name};
use crate::model::AuditOutcome;
use crate::model::{Name, query};
use crate::policy::{Action, Object};

/// The largest object one PUT may carry (S3's own limit).
pub const MAX_UPLOAD_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// A resource as listed: its key relative to the tenant, and what S3 says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Resource {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: i64,
}

/// `GET /resources/{tenant}` parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListOptions {
    /// Only keys starting with this.
    #[serde(default)]
    pub prefix: Option<String>,
}

impl From<BucketError> for ApiError {
    fn from(e: BucketError) -> Self {
        let status = match &e {
            BucketError::NotFound { .. } => StatusCode::NOT_FOUND,
            BucketError::Unreachable { .. } | BucketError::Config(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            BucketError::Refused { .. } => StatusCode::BAD_GATEWAY,
            BucketError::TooBig { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BucketError::Local { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let kind = match status {
            StatusCode::NOT_FOUND => "missing",
            StatusCode::INTERNAL_SERVER_ERROR => "internal",
            _ => "unavailable",
        };
        ApiError::new(status, kind, e.to_string())
    }
}

/// The bucket and the checked tenant, once the policy allows `action` on the tenant's files
/// (`op`: what a refused write is recorded as).
async fn scope<'a>(
    api: &'a Api,
    caller: &Caller,
    tenant: String,
    action: Action,
    op: &str,
) -> ApiResult<(&'a Bucket, Name)> {
    let tenant = name("tenant", tenant)?;
    let what = format!("tenant `{tenant}`");
    let object = Object::Definition(tenant.clone());
    if action == Action::Read {
        api.reader(caller, true)
            .await?
            .allow(action, &object, &what)?;
    } else {
        api.allow_write(caller, action, &object, op, &what, &tenant)?;
    }
    let Some(bucket) = &api.bucket else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the resource center needs a [bucket] section in this node's plane.toml",
        ));
    };
    if query::tenant(api.node.state.pool(), &tenant)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!("{what} does not exist")));
    }
    Ok((bucket, tenant))
}

fn key(value: String) -> ApiResult<ResourceKey> {
    ResourceKey::new(value).map_err(|e| ApiError::bad_input(format!("path parameter `key`: {e}")))
}

fn view(prefix: &str, meta: ObjectMeta) -> Resource {
    Resource {
        key: meta
            .key
            .strip_prefix(prefix)
            .unwrap_or(&meta.key)
            .to_owned(),
        size: meta.size,
        etag: meta.etag,
        last_modified_ms: meta.last_modified_ms,
    }
}

/// The tenant's resources under `prefix` (`list_resources`; any role in the tenant).
pub async fn list_of(
    api: &Api,
    caller: &Caller,
    tenant: String,
    prefix: Option<String>,
) -> ApiResult<Vec<Resource>> {
    let (bucket, tenant) = scope(api, caller, tenant, Action::Read, "list_resources").await?;
    let root = tenant_prefix(bucket.root(), tenant.as_str());
    let under = format!("{root}{}", prefix.unwrap_or_default());
    let objects = bucket.list(&under).await?;
    Ok(objects.into_iter().map(|m| view(&root, m)).collect())
}

/// One resource's bytes, streamed from a temporary copy (`get_resource`).
pub async fn download(api: &Api, caller: &Caller, tenant: String, k: String) -> ApiResult<RawBody> {
    let (bucket, tenant) = scope(api, caller, tenant, Action::Read, "get_resource").await?;
    let object = object_key(bucket.root(), tenant.as_str(), &key(k)?);
    let file = tempfile::NamedTempFile::new()
        .map_err(|e| ApiError::internal(format!("a temporary file: {e}")))?;
    bucket
        .download(&object, file.path(), MAX_UPLOAD_BYTES)
        .await?;
    // Streamed from the open file, which outlives its (already removed) name.
    let open = tokio::fs::File::open(file.path())
        .await
        .map_err(|e| ApiError::internal(format!("reading the download back: {e}")))?;
    drop(file);
    Ok(RawBody::from_stream(tokio_util::io::ReaderStream::new(
        open,
    )))
}

/// Stores `body` as the tenant's resource `k` (`upload_resource`; owner, developer): streamed
/// to a temporary file first (never whole into memory), then one PUT; audited.
pub async fn upload<S, E>(
    api: &Api,
    caller: &Caller,
    tenant: String,
    k: String,
    mut body: S,
) -> ApiResult<Resource>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let (bucket, tenant) = scope(api, caller, tenant, Action::Create, "upload_resource").await?;
    let prefix = tenant_prefix(bucket.root(), tenant.as_str());
    let object = object_key(bucket.root(), tenant.as_str(), &key(k)?);
    let file = tempfile::NamedTempFile::new()
        .map_err(|e| ApiError::internal(format!("a temporary file: {e}")))?;
    let mut out = tokio::fs::File::create(file.path())
        .await
        .map_err(|e| ApiError::internal(format!("a temporary file: {e}")))?;
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_input(format!("request body: {e}")))?;
        size += chunk.len() as u64;
        if size > MAX_UPLOAD_BYTES {
            return Err(ApiError::bad_input(format!(
                "request body: more than {MAX_UPLOAD_BYTES} bytes, S3's limit for one PUT"
            )));
        }
        out.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal(format!("a temporary file: {e}")))?;
    }
    out.flush()
        .await
        .map_err(|e| ApiError::internal(format!("a temporary file: {e}")))?;
    let meta = bucket.upload(&object, file.path()).await?;
    tracing::info!(actor = %caller.actor(), object, size, "resource uploaded");
    let subject = format!("resource {tenant}/{}", view(&prefix, meta.clone()).key);
    api.note(
        caller,
        AuditOutcome::Applied,
        "upload_resource",
        &subject,
        Some(&tenant),
        "",
    );
    Ok(view(&prefix, meta))
}

/// Deletes the tenant's resource `k` (`delete_resource`; owner, developer); audited.
pub async fn delete(api: &Api, caller: &Caller, tenant: String, k: String) -> ApiResult<Resource> {
    let (bucket, tenant) = scope(api, caller, tenant, Action::Change, "delete_resource").await?;
    let prefix = tenant_prefix(bucket.root(), tenant.as_str());
    let object = object_key(bucket.root(), tenant.as_str(), &key(k)?);
    let meta = bucket.delete(&object).await?;
    tracing::info!(actor = %caller.actor(), object, "resource deleted");
    let subject = format!("resource {tenant}/{}", view(&prefix, meta.clone()).key);
    api.note(
        caller,
        AuditOutcome::Applied,
        "delete_resource",
        &subject,
        Some(&tenant),
        "",
    );
    Ok(view(&prefix, meta))
}

/// `/resources/{tenant}`: list.
pub fn list() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Path(tenant): Path<String>,
               Params(o): Params<ListOptions>|
               -> ApiResult<Json<Vec<Resource>>> {
            list_of(&api, &c, tenant, o.prefix).await.map(Json)
        },
    )
}

/// `/resources/{tenant}/{*key}`: upload (PUT), download (GET), delete (DELETE).
pub fn one() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Path((tenant, k)): Path<(String, String)>|
               -> ApiResult<RawBody> { download(&api, &c, tenant, k).await },
    )
    .put(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Path((tenant, k)): Path<(String, String)>,
               body: RawBody|
               -> ApiResult<(StatusCode, Json<Resource>)> {
            let stored = upload(&api, &c, tenant, k, body.into_data_stream()).await?;
            Ok((StatusCode::CREATED, Json(stored)))
        },
    )
    .delete(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Path((tenant, k)): Path<(String, String)>|
               -> ApiResult<Json<Resource>> { delete(&api, &c, tenant, k).await.map(Json) },
    )
}
