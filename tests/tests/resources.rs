//! The agent's resource cache against a real S3 server (moto, started here; `tests/run`
//! installs it): download once, HEAD after, download again only on change; one GET for
//! concurrent runs; eviction that never pulls a file from under a running task; a stale copy
//! (or a clear error) when S3 is down; a cache that survives a restart. Requests are counted
//! by the server, not by the code under test.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use meridian_agent::resources::{CacheConfig, Metrics, ResourceCache};
use meridian_bucket::{Bucket, BucketConfig};
use meridian_domain::SystemClock;
use meridian_domain::resource::ResourceKey;
use meridian_tests::s3::S3Server;

const BUCKET: &str = "meridian";

fn config(server: &S3Server) -> BucketConfig {
    BucketConfig {
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        attempts: 1,
        connect_timeout_ms: 500,
        request_timeout_ms: 5_000,
        ..BucketConfig::new(server.endpoint.clone(), BUCKET)
    }
}

async fn server() -> S3Server {
    let server = S3Server::start().await.expect("an S3 server for the tests");
    server.create_bucket(BUCKET).await.unwrap();
    server
}

fn open(dir: &Path, server: &S3Server, cache: CacheConfig) -> ResourceCache {
    ResourceCache::open(
        dir,
        Some(Bucket::new(&config(server)).unwrap()),
        cache,
        Arc::new(SystemClock),
    )
    .unwrap()
}

/// Object key of tenant `ads`'s `key`.
fn object(key: &str) -> String {
    format!("tenants/ads/{key}")
}

fn wants(pairs: &[(&str, &str)]) -> BTreeMap<ResourceKey, String> {
    pairs
        .iter()
        .map(|(k, n)| (ResourceKey::new(*k).unwrap(), (*n).to_owned()))
        .collect()
}

async fn gets_and_heads(server: &S3Server, key: &str) -> (usize, usize) {
    let suffix = object(key);
    (
        server.count("GET", &suffix).await.unwrap(),
        server.count("HEAD", &suffix).await.unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_once_then_only_revalidates_until_the_object_changes() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    server
        .put(BUCKET, &object("etl/run.sh"), b"echo v1\n".to_vec())
        .await
        .unwrap();
    server.reset_requests().await.unwrap();
    let cache = open(&dir.path().join("cache"), &server, CacheConfig::default());
    let want = wants(&[("etl/run.sh", "run.sh")]);

    let run1 = dir.path().join("run-1");
    let first = cache.prepare("ads", &want, &run1).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(run1.join("run.sh")).unwrap(),
        "echo v1\n"
    );
    assert!(
        std::fs::symlink_metadata(run1.join("run.sh"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "linked, not copied"
    );
    assert_eq!(gets_and_heads(&server, "etl/run.sh").await, (1, 0));
    drop(first);

    server.reset_requests().await.unwrap();
    let run2 = dir.path().join("run-2");
    let second = cache.prepare("ads", &want, &run2).await.unwrap();
    assert_eq!(
        gets_and_heads(&server, "etl/run.sh").await,
        (0, 1),
        "a cached copy costs one HEAD and no GET"
    );
    assert!(second.warnings.is_empty());

    // Replaced while run 2 still has its copy linked (same second, same size: only the ETag
    // tells).
    server
        .put(BUCKET, &object("etl/run.sh"), b"echo v2\n".to_vec())
        .await
        .unwrap();
    server.reset_requests().await.unwrap();
    let run3 = dir.path().join("run-3");
    let third = cache.prepare("ads", &want, &run3).await.unwrap();
    assert_eq!(gets_and_heads(&server, "etl/run.sh").await, (1, 1));
    assert_eq!(
        std::fs::read_to_string(run3.join("run.sh")).unwrap(),
        "echo v2\n"
    );
    assert_eq!(
        std::fs::read_to_string(run2.join("run.sh")).unwrap(),
        "echo v1\n",
        "a running task keeps the version it started with"
    );
    drop(second);
    assert!(
        std::fs::read_to_string(run2.join("run.sh")).is_err(),
        "the superseded copy goes once nothing uses it"
    );
    drop(third);

    let m = cache.metrics();
    assert_eq!(
        (m.misses, m.revalidations, m.hits, m.changed, m.downloads),
        (1, 2, 1, 1, 2),
        "{m:?}"
    );
    assert_eq!(m.bytes_downloaded, 16);
    assert_eq!((m.objects, m.bytes), (1, 8));
    let text = m.prometheus();
    assert!(
        text.contains("meridian_resource_cache_hits_total 1\n")
            && text.contains("meridian_resource_downloaded_bytes_total 16\n"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_needing_one_object_share_one_download() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    server
        .put(BUCKET, &object("jars/app.jar"), body.clone())
        .await
        .unwrap();
    server.reset_requests().await.unwrap();
    let cache = open(&dir.path().join("cache"), &server, CacheConfig::default());
    let want = wants(&[("jars/app.jar", "lib/app.jar")]);
    let runs: Vec<_> = (0..8)
        .map(|i| {
            let cache = cache.clone();
            let want = want.clone();
            let run = dir.path().join(format!("run-{i}"));
            tokio::spawn(async move {
                let prepared = cache.prepare("ads", &want, &run).await.unwrap();
                let read = std::fs::read(run.join("lib/app.jar")).unwrap();
                drop(prepared);
                read
            })
        })
        .collect();
    for run in runs {
        assert!(
            run.await.unwrap() == body,
            "every run sees the whole object"
        );
    }
    let (gets, _heads) = gets_and_heads(&server, "jars/app.jar").await;
    assert_eq!(gets, 1, "eight runs at once, one GET");
    assert_eq!(cache.metrics().downloads, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_under_a_small_disk_limit_never_removes_a_file_in_use() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let a: Vec<u8> = vec![b'a'; 600 * 1024];
    let b: Vec<u8> = vec![b'b'; 600 * 1024];
    server
        .put(BUCKET, &object("a.bin"), a.clone())
        .await
        .unwrap();
    server
        .put(BUCKET, &object("b.bin"), b.clone())
        .await
        .unwrap();
    server.reset_requests().await.unwrap();
    // 1 MiB holds one of the two.
    let cache = open(
        &dir.path().join("cache"),
        &server,
        CacheConfig {
            disk_limit_mb: 1,
            ..CacheConfig::default()
        },
    );
    let run_a = dir.path().join("run-a");
    let using_a = cache
        .prepare("ads", &wants(&[("a.bin", "a.bin")]), &run_a)
        .await
        .unwrap();
    let run_b = dir.path().join("run-b");
    let using_b = cache
        .prepare("ads", &wants(&[("b.bin", "b.bin")]), &run_b)
        .await
        .unwrap();
    let m = cache.metrics();
    assert_eq!(m.objects, 1, "b pushed a out of the index: {m:?}");
    assert!(
        std::fs::read(run_a.join("a.bin")).unwrap() == a,
        "a is still whole on disk for the task using it"
    );
    drop(using_a);
    assert!(
        std::fs::read(run_a.join("a.bin")).is_err(),
        "and goes once that task is done"
    );
    assert!(std::fs::read(run_b.join("b.bin")).unwrap() == b);
    drop(using_b);
    // a is fetched again: it was evicted, not kept.
    let again = cache
        .prepare(
            "ads",
            &wants(&[("a.bin", "a.bin")]),
            &dir.path().join("run-a2"),
        )
        .await
        .unwrap();
    assert_eq!(gets_and_heads(&server, "a.bin").await, (2, 0));
    drop(again);
    let files = std::fs::read_dir(dir.path().join("cache/objects"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none_or(|x| x != "json"))
        .count();
    assert_eq!(files, 1, "only the one indexed object is left on disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_s3_down_a_cached_copy_is_used_with_a_warning_or_the_task_fails_naming_key_and_endpoint()
 {
    let mut server = server().await;
    let dir = tempfile::tempdir().unwrap();
    server
        .put(BUCKET, &object("sql/load.sql"), b"select 1;\n".to_vec())
        .await
        .unwrap();
    let want = wants(&[("sql/load.sql", "load.sql")]);
    let stale_ok = open(&dir.path().join("lenient"), &server, CacheConfig::default());
    let strict = open(
        &dir.path().join("strict"),
        &server,
        CacheConfig {
            stale_if_error: false,
            ..CacheConfig::default()
        },
    );
    drop(
        stale_ok
            .prepare("ads", &want, &dir.path().join("r1"))
            .await
            .unwrap(),
    );
    drop(
        strict
            .prepare("ads", &want, &dir.path().join("r2"))
            .await
            .unwrap(),
    );
    let endpoint = server.endpoint.clone();
    server.stop();

    let run = dir.path().join("r3");
    let prepared = stale_ok.prepare("ads", &want, &run).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(run.join("load.sql")).unwrap(),
        "select 1;\n"
    );
    assert_eq!(prepared.warnings.len(), 1);
    let warning = &prepared.warnings[0];
    assert!(
        warning.contains("sql/load.sql") && warning.contains(&endpoint),
        "{warning}"
    );
    assert_eq!(stale_ok.metrics().stale, 1);

    let refused = strict
        .prepare("ads", &want, &dir.path().join("r4"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("sql/load.sql") && refused.contains(&endpoint),
        "{refused}"
    );
    // Nothing cached: no stale copy to fall back on, whatever the setting.
    let missing = stale_ok
        .prepare(
            "ads",
            &wants(&[("sql/other.sql", "o.sql")]),
            &dir.path().join("r5"),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("sql/other.sql") && missing.contains(&endpoint),
        "{missing}"
    );
    assert_eq!(stale_ok.metrics().errors, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_survives_an_agent_restart() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    server
        .put(BUCKET, &object("etl/run.sh"), b"echo kept\n".to_vec())
        .await
        .unwrap();
    let want = wants(&[("etl/run.sh", "run.sh")]);
    let cache = open(&cache_dir, &server, CacheConfig::default());
    drop(
        cache
            .prepare("ads", &want, &dir.path().join("r1"))
            .await
            .unwrap(),
    );
    drop(cache);
    // What a crash mid-download leaves: a partial file in tmp/, a data file with no metadata.
    std::fs::write(cache_dir.join("tmp/partial"), b"half").unwrap();
    std::fs::write(cache_dir.join("objects/orphan.1-0"), b"no sidecar").unwrap();

    server.reset_requests().await.unwrap();
    let reopened = open(&cache_dir, &server, CacheConfig::default());
    assert_eq!(
        reopened.metrics(),
        Metrics {
            objects: 1,
            bytes: 10,
            ..Metrics::default()
        },
        "the index is rebuilt from disk"
    );
    let run = dir.path().join("r2");
    drop(reopened.prepare("ads", &want, &run).await.unwrap());
    assert_eq!(gets_and_heads(&server, "etl/run.sh").await, (0, 1));
    assert!(!cache_dir.join("tmp/partial").exists());
    assert!(!cache_dir.join("objects/orphan.1-0").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_object_fails_naming_the_key_and_bucket() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir.path().join("cache"), &server, CacheConfig::default());
    let e = cache
        .prepare(
            "ads",
            &wants(&[("nope.sh", "nope.sh")]),
            &dir.path().join("r"),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nope.sh") && e.contains("does not exist") && e.contains(BUCKET),
        "{e}"
    );
    // Tenants are prefixes: `ads` cannot name `media`'s object, nor one at the bucket's root.
    for other in ["tenants/media/secret.sh", "secret.sh"] {
        server.put(BUCKET, other, b"x".to_vec()).await.unwrap();
    }
    server.reset_requests().await.unwrap();
    let e = cache
        .prepare(
            "ads",
            &wants(&[("secret.sh", "s.sh")]),
            &dir.path().join("r2"),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
    let asked: Vec<String> = server
        .requests()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(
        asked,
        ["/meridian/tenants/ads/secret.sh"],
        "only ads's own key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_download_neither_aborts_the_download_nor_leaves_files_behind() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..24 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    server
        .put(BUCKET, &object("jars/big.jar"), body.clone())
        .await
        .unwrap();
    server.reset_requests().await.unwrap();
    let cache = open(&dir.path().join("cache"), &server, CacheConfig::default());
    let want = wants(&[("jars/big.jar", "big.jar")]);
    let killed = {
        let (cache, want, run) = (cache.clone(), want.clone(), dir.path().join("killed"));
        tokio::spawn(async move { cache.prepare("ads", &want, &run).await.map(drop) })
    };
    // Kill it once its GET has reached the server (moto records a request before serving it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while gets_and_heads(&server, "jars/big.jar").await.0 == 0 {
        assert!(std::time::Instant::now() < deadline, "the GET never came");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    killed.abort();
    let run = dir.path().join("next");
    let prepared = cache.prepare("ads", &want, &run).await.unwrap();
    assert!(std::fs::read(run.join("big.jar")).unwrap() == body);
    assert_eq!(
        gets_and_heads(&server, "jars/big.jar").await.0,
        1,
        "the next run got the download the killed one started"
    );
    drop(prepared);
    assert_eq!(
        std::fs::read_dir(dir.path().join("cache/tmp"))
            .unwrap()
            .count(),
        0,
        "nothing half-written left in tmp/"
    );
}
