//! The cache's figures: counters kept while it works, and the snapshot the agent serves at
//! `/metrics` in the Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering};

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
    /// The Prometheus text exposition of these figures.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            out.push_str(&format!(
                "# HELP meridian_resource_{name} {help}\n# TYPE meridian_resource_{name} {kind}\n\
                 meridian_resource_{name} {value}\n"
            ));
        };
        metric(
            "cache_hits_total",
            "counter",
            "Uses served from the cache after a HEAD found the copy current.",
            self.hits as f64,
        );
        metric(
            "cache_misses_total",
            "counter",
            "Uses of an object that was not cached.",
            self.misses as f64,
        );
        metric(
            "cache_revalidations_total",
            "counter",
            "HEAD requests checking a cached copy.",
            self.revalidations as f64,
        );
        metric(
            "cache_changed_total",
            "counter",
            "Revalidations that found a new version.",
            self.changed as f64,
        );
        metric(
            "cache_stale_total",
            "counter",
            "Uses of a cached copy while S3 was unreachable.",
            self.stale as f64,
        );
        metric(
            "cache_errors_total",
            "counter",
            "Uses that failed.",
            self.errors as f64,
        );
        metric(
            "downloads_total",
            "counter",
            "Objects downloaded.",
            self.downloads as f64,
        );
        metric(
            "downloaded_bytes_total",
            "counter",
            "Bytes downloaded from S3.",
            self.bytes_downloaded as f64,
        );
        metric(
            "download_seconds_total",
            "counter",
            "Time spent downloading.",
            self.download_ms as f64 / 1000.0,
        );
        metric(
            "cache_objects",
            "gauge",
            "Objects in the cache index.",
            self.objects as f64,
        );
        metric(
            "cache_bytes",
            "gauge",
            "Bytes in the cache index.",
            self.bytes as f64,
        );
        out
    }
}
