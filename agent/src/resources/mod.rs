//! The resource cache: S3 objects a task needs, kept on the agent's disk and downloaded again
//! only when they changed.
//!
//! - **Revalidate, then maybe download.** A cached object costs one HEAD per use; it is
//!   downloaded again only when its ETag, Last-Modified or size differ (Last-Modified alone
//!   has whole-second resolution, so an overwrite within the second shows only in the ETag).
//! - **Never a half-written file.** A download goes to `tmp/` and is synced, then renamed into
//!   `objects/` under a fresh generation name; a changed object gets a new file, so a task
//!   still reading the old one keeps it. Its metadata is written next to it afterwards, so a
//!   file without metadata is an interrupted download and is removed on open.
//! - **One download per object at a time.** Runs needing the same object at once share one
//!   flight (HEAD and, if needed, GET), which runs in its own task: a run killed while waiting
//!   does not abort it.
//! - **A byte budget, but never under a running task.** The index is a moka cache weighed in
//!   KiB with LRU eviction. A task pins what it links; an entry evicted (or replaced) while
//!   pinned leaves the index at once but its file stays until the last pin is dropped. So the
//!   disk may briefly hold more than the limit, never less than what is in use.
//! - **Survives restarts.** The index is rebuilt from `objects/*.json` on open.
//! - **S3 down.** With `stale_if_error` a cached copy is used and the run gets a warning that
//!   says which copy; without it, or with nothing cached, the task fails naming the key and
//!   the endpoint.
//! - **Only the task's user reads it.** The cache directory is the agent's alone (0700), so a
//!   task running as another user could not follow a symlink into it: for such a task the file
//!   is hard-linked into its working directory (0700, its own), or copied there (owned by it,
//!   mode 0400) when the directory is on another file system. Cached files stay 0444 and the
//!   agent's, so a hard link gives the task nothing to write.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use meridian_domain::Clock;
use meridian_domain::resource::{ResourceKey, object_key};
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

mod at;
mod metrics;

use metrics::Counters;
pub use metrics::Metrics;

use crate::identity::Owner;
use meridian_bucket::{Bucket, BucketError, ObjectMeta};

/// `[resources]` in `agent.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// The most the cache keeps on disk, in MiB. Files in use by a running task are never
    /// removed, even when that means going over for a while.
    #[serde(default = "default_disk_limit_mb")]
    pub disk_limit_mb: u64,
    /// When S3 cannot be reached, run with the cached copy (and record a warning on the run)
    /// rather than fail.
    #[serde(default = "yes")]
    pub stale_if_error: bool,
    /// How a resource appears in the run's working directory: `symlink` to the cached file,
    /// or `hardlink` (same file system only).
    #[serde(default)]
    pub link: LinkKind,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    #[default]
    Symlink,
    Hardlink,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            disk_limit_mb: default_disk_limit_mb(),
            stale_if_error: true,
            link: LinkKind::Symlink,
        }
    }
}

fn default_disk_limit_mb() -> u64 {
    10 * 1024
}

fn yes() -> bool {
    true
}

/// Why a task's resources could not be prepared. Cloneable: runs sharing a flight share its
/// outcome.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PrepareError {
    #[error(
        "resource `{key}`: this agent has no [bucket] in its config, so it cannot fetch resources"
    )]
    NoBucket { key: String },
    #[error("resource `{key}`: {source}")]
    Bucket { key: String, source: BucketError },
    #[error(
        "resource `{key}` is {size} bytes, more than the cache's whole disk limit ({limit} bytes)"
    )]
    TooBig { key: String, size: u64, limit: u64 },
    #[error("resource `{key}`: {message}")]
    Local { key: String, message: String },
}

/// Why the cache could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("resource cache {path}: {source}")]
pub struct OpenError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// What the cache knows about one cached file: its sidecar `<file>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sidecar {
    /// The sidecar format; a file of another version is dropped (downloaded again).
    v: u32,
    meta: ObjectMeta,
    fetched_ms: i64,
}

const SIDECAR_VERSION: u32 = 1;

/// Whether a cached copy is still the object S3 has: same ETag, Last-Modified and size.
/// Last-Modified has whole-second resolution, so an overwrite within the second differs only
/// in the ETag; the ETag alone could repeat across stores that compute it oddly.
fn is_current(cached: &ObjectMeta, now: &ObjectMeta) -> bool {
    cached.etag == now.etag
        && cached.last_modified_ms == now.last_modified_ms
        && cached.size == now.size
}

/// One cached file.
#[derive(Debug)]
struct Cached {
    file: PathBuf,
    meta: ObjectMeta,
    fetched_ms: i64,
    pins: Mutex<PinState>,
}

#[derive(Debug, Default)]
struct PinState {
    pins: usize,
    /// Out of the index: the file goes when the last pin does.
    doomed: bool,
}

impl Cached {
    /// A pin, unless the entry has already left the index.
    fn pin(self: &Arc<Self>) -> Option<Pin> {
        let mut state = self.pins.lock().expect("pins");
        if state.doomed {
            return None;
        }
        state.pins += 1;
        Some(Pin(self.clone()))
    }

    fn doom(&self) {
        let mut state = self.pins.lock().expect("pins");
        state.doomed = true;
        if state.pins == 0 {
            self.remove_files();
        }
    }

    fn remove_files(&self) {
        let _ = std::fs::remove_file(sidecar_path(&self.file));
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Keeps a cached file on disk while a task uses it.
#[derive(Debug)]
pub struct Pin(Arc<Cached>);

impl Pin {
    pub fn file(&self) -> &Path {
        &self.0.file
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut state = self.0.pins.lock().expect("pins");
        state.pins -= 1;
        if state.pins == 0 && state.doomed {
            self.0.remove_files();
        }
    }
}

/// A task's resources, linked into its working directory.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Hold these while the task runs.
    pub pins: Vec<Pin>,
    /// Things the run should know (a stale copy used).
    pub warnings: Vec<String>,
}

/// One flight's outcome: the entry, and a warning if it is a stale copy.
type Flight = Result<(Arc<Cached>, Option<String>), PrepareError>;

/// The cache. Cheap to clone.
#[derive(Clone)]
pub struct ResourceCache {
    inner: Arc<Inner>,
}

struct Inner {
    bucket: Option<Bucket>,
    objects: PathBuf,
    tmp: PathBuf,
    index: moka::sync::Cache<String, Arc<Cached>>,
    limit_bytes: u64,
    flights: Mutex<HashMap<String, watch::Receiver<Option<Flight>>>>,
    config: CacheConfig,
    counters: Counters,
    generation: AtomicU64,
    clock: Arc<dyn Clock>,
}

fn sidecar_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

/// The file-name stem of an object key: its SHA-256, so any key makes a safe, flat name.
fn stem(object_key: &str) -> String {
    Sha256::digest(object_key.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl ResourceCache {
    /// Opens the cache in `dir` (created if missing) and rebuilds its index from the files
    /// there; interrupted downloads and superseded copies are removed.
    pub fn open(
        dir: &Path,
        bucket: Option<Bucket>,
        config: CacheConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, OpenError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| OpenError { path, source }
        };
        let objects = dir.join("objects");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&objects).map_err(io(&objects))?;
        // The agent's alone: tasks of other users get links or copies, never a way in.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                dir,
                std::fs::Permissions::from_mode(crate::run_dir::PRIVATE_DIR),
            )
            .map_err(io(dir))?;
        }
        // Anything in tmp/ is a download a previous process did not finish.
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        // Links in working directories must not depend on where the agent was started.
        let objects = objects.canonicalize().map_err(io(&objects))?;
        let tmp = tmp.canonicalize().map_err(io(&tmp))?;
        let limit_bytes = config.disk_limit_mb.saturating_mul(1024 * 1024);
        let index = moka::sync::Cache::builder()
            .max_capacity(limit_bytes / 1024)
            .weigher(|_: &String, c: &Arc<Cached>| {
                u32::try_from(c.meta.size.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
            })
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(|_key: Arc<String>, c: Arc<Cached>, _cause: RemovalCause| c.doom())
            .build();
        let cache = Self {
            inner: Arc::new(Inner {
                bucket,
                objects,
                tmp,
                index,
                limit_bytes,
                flights: Mutex::new(HashMap::new()),
                config,
                counters: Counters::default(),
                // A uniqueness token, not a time: names must not repeat across restarts even
                // when the injected clock does.
                generation: AtomicU64::new(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or(0),
                ),
                clock,
            }),
        };
        cache.rebuild().map_err(io(dir))?;
        Ok(cache)
    }

    /// Reads every sidecar; keeps the newest complete copy of each object, oldest use first so
    /// LRU order roughly survives; removes the rest.
    fn rebuild(&self) -> std::io::Result<()> {
        let inner = &self.inner;
        let mut found: Vec<(PathBuf, Sidecar)> = Vec::new();
        let mut files: Vec<PathBuf> = Vec::new();
        for entry in std::fs::read_dir(&inner.objects)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let file = path.with_extension("");
                let sidecar = std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Sidecar>(&b).ok());
                match sidecar {
                    Some(s)
                        if s.v == SIDECAR_VERSION
                            && std::fs::metadata(&file).is_ok_and(|m| m.len() == s.meta.size) =>
                    {
                        found.push((file, s));
                    }
                    _ => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            } else {
                files.push(path);
            }
        }
        found.sort_by_key(|(_, s)| s.fetched_ms);
        let mut newest: HashMap<String, (PathBuf, Sidecar)> = HashMap::new();
        for (file, s) in found {
            if let Some((old, _)) = newest.insert(s.meta.key.clone(), (file, s)) {
                let _ = std::fs::remove_file(sidecar_path(&old));
                let _ = std::fs::remove_file(&old);
            }
        }
        let mut kept: Vec<(PathBuf, Sidecar)> = newest.into_values().collect();
        kept.sort_by_key(|(_, s)| s.fetched_ms);
        let keep: std::collections::HashSet<PathBuf> =
            kept.iter().map(|(f, _)| f.clone()).collect();
        for file in files {
            if !keep.contains(&file) {
                let _ = std::fs::remove_file(&file);
            }
        }
        for (file, s) in kept {
            let key = s.meta.key.clone();
            inner.index.insert(
                key,
                Arc::new(Cached {
                    file,
                    meta: s.meta,
                    fetched_ms: s.fetched_ms,
                    pins: Mutex::new(PinState::default()),
                }),
            );
        }
        inner.index.run_pending_tasks();
        Ok(())
    }

    /// The counters and the index's size now.
    pub fn metrics(&self) -> Metrics {
        self.inner.index.run_pending_tasks();
        self.inner.counters.snapshot(
            self.inner.index.entry_count(),
            self.inner.index.iter().map(|(_, c)| c.meta.size).sum(),
        )
    }

    /// Makes `resources` (key → name) of `tenant` available in `dir`: each fetched or
    /// revalidated, then linked as `dir/<name>`. All or nothing: the first failure is returned.
    pub async fn prepare(
        &self,
        tenant: &str,
        resources: &BTreeMap<ResourceKey, String>,
        dir: &Path,
    ) -> Result<Prepared, PrepareError> {
        self.prepare_for(tenant, resources, dir, None).await
    }

    /// [`prepare`](Self::prepare) for a task running as `owner` (none: as the agent): its
    /// files are hard links or copies it can read, since it cannot enter the cache.
    pub async fn prepare_for(
        &self,
        tenant: &str,
        resources: &BTreeMap<ResourceKey, String>,
        dir: &Path,
        owner: Option<Owner>,
    ) -> Result<Prepared, PrepareError> {
        let mut prepared = Prepared::default();
        for (key, name) in resources {
            let (pin, warning) = match self.fetch(tenant, key).await {
                Ok(fetched) => fetched,
                Err(e) => {
                    self.inner.counters.errors.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            };
            self.link(pin.file(), dir, name, owner)
                .map_err(|e| PrepareError::Local {
                    key: key.to_string(),
                    message: format!("linking it as {}: {e}", dir.join(name).display()),
                })?;
            prepared.warnings.extend(warning);
            prepared.pins.push(pin);
        }
        Ok(prepared)
    }

    /// One object, pinned: from the cache if a HEAD says it is current, else downloaded; one
    /// flight per object at a time.
    pub async fn fetch(
        &self,
        tenant: &str,
        key: &ResourceKey,
    ) -> Result<(Pin, Option<String>), PrepareError> {
        let inner = &self.inner;
        let Some(bucket) = &inner.bucket else {
            return Err(PrepareError::NoBucket {
                key: key.to_string(),
            });
        };
        let object = object_key(bucket.root(), tenant, key);
        // An entry can leave the index between its flight and the pin (evicted to make room);
        // then fly again. Three times unlucky means the cache is far too small.
        for _ in 0..3 {
            let mut landed = self.flight(key, &object);
            // The flight runs in its own task and owns the sender: a run killed while waiting
            // (dropping this future) neither aborts a download others wait for nor leaves half
            // of it behind.
            let waited = landed
                .wait_for(Option::is_some)
                .await
                .map(|outcome| outcome.clone().expect("waited for it"));
            let outcome = match waited {
                Ok(outcome) => outcome,
                Err(_) => {
                    let mut flights = inner.flights.lock().expect("flights");
                    if flights
                        .get(&object)
                        .is_some_and(|f| f.same_channel(&landed))
                    {
                        flights.remove(&object);
                    }
                    Err(PrepareError::Local {
                        key: key.to_string(),
                        message: "the download task ended without an outcome".into(),
                    })
                }
            };
            let (cached, warning) = outcome?;
            if let Some(pin) = cached.pin() {
                return Ok((pin, warning));
            }
        }
        Err(PrepareError::Local {
            key: key.to_string(),
            message: format!(
                "evicted again before it could be used: the cache's disk limit ({} MiB) is too \
                 small for the resources in use",
                inner.config.disk_limit_mb
            ),
        })
    }

    /// The flight for `object`: the one under way, or a new one started in its own task.
    fn flight(&self, key: &ResourceKey, object: &str) -> watch::Receiver<Option<Flight>> {
        let mut flights = self.inner.flights.lock().expect("flights");
        if let Some(under_way) = flights.get(object) {
            return under_way.clone();
        }
        let (landed, waiting) = watch::channel(None);
        flights.insert(object.to_owned(), waiting.clone());
        let this = self.clone();
        let (key, object) = (key.clone(), object.to_owned());
        tokio::spawn(async move {
            let outcome = this.resolve(&key, &object).await;
            // Out of the map first: a caller arriving after this starts a fresh flight (a
            // HEAD) rather than take an outcome it might find stale.
            this.inner.flights.lock().expect("flights").remove(&object);
            landed.send_replace(Some(outcome));
        });
        waiting
    }

    /// The flight itself: revalidate a cached copy, or download.
    async fn resolve(&self, key: &ResourceKey, object: &str) -> Flight {
        let inner = &self.inner;
        let bucket = inner.bucket.as_ref().expect("fetch checked the bucket");
        let counters = &inner.counters;
        let cached = inner
            .index
            .get(object)
            .filter(|c| std::fs::metadata(&c.file).is_ok_and(|m| m.len() == c.meta.size));
        let Some(cached) = cached else {
            counters.misses.fetch_add(1, Ordering::Relaxed);
            return self.download(bucket, key, object).await.map(|c| (c, None));
        };
        counters.revalidations.fetch_add(1, Ordering::Relaxed);
        match bucket.head(object).await {
            Ok(now) if is_current(&cached.meta, &now) => {
                counters.hits.fetch_add(1, Ordering::Relaxed);
                Ok((cached, None))
            }
            Ok(_) => {
                counters.changed.fetch_add(1, Ordering::Relaxed);
                self.download(bucket, key, object).await.map(|c| (c, None))
            }
            Err(e) if e.is_unreachable() && inner.config.stale_if_error => {
                counters.stale.fetch_add(1, Ordering::Relaxed);
                let warning = format!(
                    "resource `{key}`: S3 at {} could not be reached, so the copy cached at {} \
                     (ETag {}, {} bytes) was used unchecked",
                    bucket.endpoint(),
                    chrono::DateTime::from_timestamp_millis(cached.fetched_ms)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| cached.fetched_ms.to_string()),
                    cached.meta.etag,
                    cached.meta.size,
                );
                tracing::warn!("{warning}");
                Ok((cached, Some(warning)))
            }
            Err(e) => {
                if matches!(e, BucketError::NotFound { .. }) {
                    // Deleted from the bucket: the copy must not be used again.
                    inner.index.invalidate(object);
                }
                Err(PrepareError::Bucket {
                    key: key.to_string(),
                    source: e,
                })
            }
        }
    }

    /// GET into tmp/, then rename into objects/ under a fresh name, then the sidecar, then
    /// the index.
    async fn download(
        &self,
        bucket: &Bucket,
        key: &ResourceKey,
        object: &str,
    ) -> Result<Arc<Cached>, PrepareError> {
        let inner = &self.inner;
        let local = |message: String| PrepareError::Local {
            key: key.to_string(),
            message,
        };
        let name = format!(
            "{}.{}-{}",
            stem(object),
            inner.clock.now_ms(),
            inner.generation.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = inner.tmp.join(&name);
        let file = inner.objects.join(&name);
        let started = Instant::now();
        let meta = match bucket.download(object, &tmp, inner.limit_bytes).await {
            Ok(meta) => meta,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(match e {
                    BucketError::TooBig { size, limit, .. } => PrepareError::TooBig {
                        key: key.to_string(),
                        size,
                        limit,
                    },
                    e => PrepareError::Bucket {
                        key: key.to_string(),
                        source: e,
                    },
                });
            }
        };
        let counters = &inner.counters;
        counters.downloads.fetch_add(1, Ordering::Relaxed);
        counters
            .bytes_downloaded
            .fetch_add(meta.size, Ordering::Relaxed);
        counters
            .download_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        let sidecar = Sidecar {
            v: SIDECAR_VERSION,
            meta: meta.clone(),
            fetched_ms: inner.clock.now_ms(),
        };
        let sidecar_tmp = inner.tmp.join(format!("{name}.json"));
        let committed = async {
            // Read-only: every run links the same file, and none may change it for the others.
            use std::os::unix::fs::PermissionsExt;
            tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444)).await?;
            // A link, not a rename: it fails rather than replace a file of the same name.
            tokio::fs::hard_link(&tmp, &file).await?;
            tokio::fs::remove_file(&tmp).await?;
            write_synced(
                &sidecar_tmp,
                &serde_json::to_vec(&sidecar).expect("sidecars serialise"),
            )
            .await?;
            tokio::fs::rename(&sidecar_tmp, sidecar_path(&file)).await
        }
        .await;
        if let Err(e) = committed {
            for leftover in [&tmp, &sidecar_tmp, &sidecar_path(&file), &file] {
                let _ = tokio::fs::remove_file(leftover).await;
            }
            return Err(local(format!(
                "putting the download into the cache as {}: {e}",
                file.display()
            )));
        }
        let cached = Arc::new(Cached {
            file,
            meta,
            fetched_ms: sidecar.fetched_ms,
            pins: Mutex::new(PinState::default()),
        });
        inner.index.insert(object.to_owned(), cached.clone());
        inner.index.run_pending_tasks();
        Ok(cached)
    }

    /// Links `file` as `dir/name`, replacing whatever link was there in one rename (a task
    /// of the same run using the old link never finds the name missing).
    ///
    /// The run directory and what is in it may be the task's own, and the agent is root: every
    /// step is taken relative to a directory opened without following symlinks (`openat` with
    /// `O_NOFOLLOW`, `mkdirat`, `linkat`, `renameat`), so a symlink a task planted anywhere on
    /// the way makes the placement fail instead of sending root's write elsewhere.
    ///
    /// For a task running as `owner` (another user than the agent) the link is a hard link,
    /// or a copy of its own (mode 0400) across file systems, and directories made on the way
    /// are its own; a symlink into the cache would be one it cannot follow.
    fn link(
        &self,
        file: &Path,
        dir: &Path,
        name: &str,
        owner: Option<Owner>,
    ) -> std::io::Result<()> {
        let parts: Vec<&str> = name.split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(std::io::Error::other(
                "a resource's name is a relative path without empty, `.` or `..` parts",
            ));
        }
        let (last, parents) = parts.split_last().expect("split gives one part at least");
        std::fs::create_dir_all(dir)?;
        let mut at = at::open_dir(None, dir.as_os_str())?;
        for part in parents {
            at = at::make_dir(&at, part, owner)?;
        }
        if at::is_dir(&at, last)? {
            return Err(std::io::Error::other(
                "a directory of that name is in the way",
            ));
        }
        let staged = format!(
            ".meridian-link-{}",
            self.inner.generation.fetch_add(1, Ordering::Relaxed)
        );
        let made = match (owner, self.inner.config.link) {
            (Some(owner), _) => match at::hard_link(file, &at, &staged) {
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    at::copy_for(file, &at, &staged, owner)
                }
                linked => linked,
            },
            (None, LinkKind::Symlink) => at::symlink(file, &at, &staged),
            (None, LinkKind::Hardlink) => at::hard_link(file, &at, &staged).map_err(|e| {
                if e.raw_os_error() == Some(libc::EXDEV) {
                    std::io::Error::other(format!(
                        "{e}: hard links need the working directory on the cache's file \
                         system; use link = \"symlink\" or move work_dir"
                    ))
                } else {
                    e
                }
            }),
        };
        made.and_then(|()| at::rename(&at, &staged, last))
            .inspect_err(|_| at::remove(&at, &staged))
    }
}

async fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut f = tokio::fs::File::create(path).await?;
    f.write_all(bytes).await?;
    f.sync_all().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(etag: &str, last_modified_ms: i64, size: u64) -> ObjectMeta {
        ObjectMeta {
            key: "tenants/ads/etl/run.sh".into(),
            size,
            etag: etag.into(),
            last_modified_ms,
        }
    }

    #[test]
    fn a_copy_is_current_only_if_etag_time_and_size_all_match() {
        let cached = meta("abc", 1_000, 8);
        assert!(is_current(&cached, &meta("abc", 1_000, 8)));
        // Overwritten within the same second with the same size: only the ETag tells.
        assert!(!is_current(&cached, &meta("def", 1_000, 8)));
        assert!(!is_current(&cached, &meta("abc", 2_000, 8)));
        assert!(!is_current(&cached, &meta("abc", 1_000, 9)));
    }

    #[test]
    fn a_link_cannot_be_redirected_outside_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResourceCache::open(
            &dir.path().join("cache"),
            None,
            CacheConfig::default(),
            Arc::new(meridian_domain::SystemClock),
        )
        .unwrap();
        let file = dir.path().join("object");
        std::fs::write(&file, b"x").unwrap();
        let run = dir.path().join("run");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, run.join("lib")).unwrap();
        let e = cache.link(&file, &run, "lib/app.jar", None).unwrap_err();
        assert!(e.to_string().contains("`lib` is a symlink"), "{e}");
        assert!(!outside.join("app.jar").exists());
        // Nor through a deeper one, nor by making directories through it (as root, making
        // `x/ssh.service.d` through `x -> /etc/systemd/system` would hand a task root).
        std::fs::create_dir_all(run.join("a")).unwrap();
        std::os::unix::fs::symlink(&outside, run.join("a/b")).unwrap();
        for name in ["a/b/app.jar", "a/b/new/app.jar", "lib/new/deeper/app.jar"] {
            let e = cache.link(&file, &run, name, None).unwrap_err();
            assert!(e.to_string().contains("is a symlink"), "{name}: {e}");
        }
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing was made through a planted symlink"
        );
        // A symlink planted as the resource's own name is replaced, not written through.
        std::fs::write(outside.join("victim"), b"keep").unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), run.join("app.jar")).unwrap();
        cache.link(&file, &run, "app.jar", None).unwrap();
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"keep");
        for bad in ["../escape.jar", "a/../b.jar", "/abs.jar", "a//b.jar"] {
            assert!(cache.link(&file, &run, bad, None).is_err(), "{bad}");
        }
        // An ordinary name is linked, and linking again replaces it.
        cache.link(&file, &run, "conf/app.jar", None).unwrap();
        cache.link(&file, &run, "conf/app.jar", None).unwrap();
        assert_eq!(std::fs::read(run.join("conf/app.jar")).unwrap(), b"x");
        assert_eq!(
            std::fs::read_dir(run.join("conf")).unwrap().count(),
            1,
            "no staged leftovers"
        );
    }
}
