//! The cache's figures: counters kept while it works, and the snapshot the agent serves at
//! `/metrics` in the OpenMetrics text format.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

/// The cache's counters since the agent started.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub revalidations: AtomicU64,
    pub changed: AtomicU64,
    pub stale: AtomicU64,
    pub errors: AtomicU64,
    pub downloads: AtomicU64,
    pub bytes_downloaded: AtomicU64,
    pub download_micros: AtomicU64,
}

impl Counters {
    /// The counters now, with the index's size.
    pub fn snapshot(&self, objects: u64, bytes: u64) -> Metrics {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Metrics {
            hits: get(&self.hits),
            misses: get(&self.misses),
            revalidations: get(&self.revalidations),
            changed: get(&self.changed),
            stale: get(&self.stale),
            errors: get(&self.errors),
            downloads: get(&self.downloads),
            bytes_downloaded: get(&self.bytes_downloaded),
            download_ms: get(&self.download_micros) / 1000,
            objects,
            bytes,
        }
    }
}

/// A snapshot of the cache's counters and size. Counted per flight: runs that need one
/// object at the same moment share a flight, and count once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Metrics {
    /// Flights served from the cache after a HEAD said the copy is current.
    pub hits: u64,
    /// Flights for an object not in the cache (downloaded).
    pub misses: u64,
    /// HEAD requests made to check a cached copy.
    pub revalidations: u64,
    /// Revalidations that found a new version (downloaded).
    pub changed: u64,
    /// Flights that used a cached copy unchecked because S3 was unreachable.
    pub stale: u64,
    /// Preparations that failed.
    pub errors: u64,
    pub downloads: u64,
    pub bytes_downloaded: u64,
    /// Total time spent downloading, in ms.
    pub download_ms: u64,
    /// Objects and bytes in the index now.
    pub objects: u64,
    pub bytes: u64,
}

impl Metrics {
    /// Registers these figures under `meridian_resource_…` (counters' samples end in
    /// `_total`).
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("resource");
        let counters = [
            (
                "cache_hits",
                "Uses served from the cache after a HEAD found the copy current",
                self.hits,
            ),
            (
                "cache_misses",
                "Uses of an object that was not cached",
                self.misses,
            ),
            (
                "cache_revalidations",
                "HEAD requests checking a cached copy",
                self.revalidations,
            ),
            (
                "cache_changed",
                "Revalidations that found a new version",
                self.changed,
            ),
            (
                "cache_stale",
                "Uses of a cached copy while S3 was unreachable",
                self.stale,
            ),
            ("cache_errors", "Uses that failed", self.errors),
            ("downloads", "Objects downloaded", self.downloads),
            (
                "downloaded_bytes",
                "Bytes downloaded from S3",
                self.bytes_downloaded,
            ),
        ];
        for (name, help, value) in counters {
            let c = Counter::<u64>::default();
            c.inc_by(value);
            sub.register(name, help, c);
        }
        let seconds = Counter::<f64, AtomicU64>::default();
        seconds.inc_by(self.download_ms as f64 / 1000.0);
        sub.register("download_seconds", "Time spent downloading", seconds);
        for (name, help, value) in [
            ("cache_objects", "Objects in the cache index", self.objects),
            ("cache_bytes", "Bytes in the cache index", self.bytes),
        ] {
            let g = Gauge::<i64>::default();
            g.set(value as i64);
            sub.register(name, help, g);
        }
    }

    /// These figures alone, in the OpenMetrics text format.
    pub fn prometheus(&self) -> String {
        let mut registry = Registry::with_prefix("meridian");
        self.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}
