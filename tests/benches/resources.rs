//! The resource cache's figure for issue #5: the time to prepare one `BENCH_MIB` (default 50)
//! MiB resource cold (not cached: one GET) and warm (cached: one HEAD), and the bytes that
//! crossed the link in each case, counted by a TCP relay between the cache and a real S3
//! server (moto, as in the tests). `BENCH_ROUNDS` (default 5) of each; medians and ranges.
//! Twice: over loopback, and with the relay limited to `BENCH_LINK_MBIT` (default 100) Mbit/s
//! each way, standing for a thin inter-DC link.
//!
//! Run by hand (figures go to BENCHMARKS.md):
//!   cargo bench -p meridian-tests --bench resources

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_agent::resources::{CacheConfig, ResourceCache};
use meridian_bucket::{Bucket, BucketConfig};
use meridian_domain::SystemClock;
use meridian_domain::resource::ResourceKey;
use meridian_tests::knob;
use meridian_tests::proxy::Proxy;
use meridian_tests::s3::S3Server;

struct Sample {
    took: Duration,
    up: u64,
    down: u64,
    gets: usize,
    heads: usize,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let mib = knob("BENCH_MIB", 50);
    let rounds = knob("BENCH_ROUNDS", 5) as usize;
    let server = S3Server::start().await.expect("moto: run tests/run first");
    server.create_bucket("meridian").await.unwrap();
    let object = "tenants/bench/jars/app.jar";
    let body: Vec<u8> = (0..mib * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    server.put("meridian", object, body).await.unwrap();
    let port: u16 = server.endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let link = Proxy::start(([127, 0, 0, 1], port).into()).await;
    let config = BucketConfig {
        access_key_id: Some("bench".into()),
        secret_access_key: Some("bench".into()),
        request_timeout_ms: 120_000,
        ..BucketConfig::new(format!("http://127.0.0.1:{}", link.port()), "meridian")
    };
    let want: BTreeMap<ResourceKey, String> =
        BTreeMap::from([(ResourceKey::new("jars/app.jar").unwrap(), "app.jar".into())]);
    let dir = tempfile::tempdir().unwrap();
    let mbit = knob("BENCH_LINK_MBIT", 100);
    for (label, rate) in [
        ("loopback".to_owned(), 0),
        (format!("{mbit} Mbit/s link"), mbit * 1_000_000 / 8),
    ] {
        link.limit_rate(rate);
        rounds_over(
            &label,
            rounds,
            mib,
            &server,
            &link,
            &config,
            &want,
            dir.path(),
            object,
        )
        .await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn rounds_over(
    label: &str,
    rounds: usize,
    mib: u64,
    server: &S3Server,
    link: &Proxy,
    config: &BucketConfig,
    want: &BTreeMap<ResourceKey, String>,
    dir: &std::path::Path,
    object: &str,
) {
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for round in 0..rounds {
        // A fresh cache each round: the first prepare is cold, the second warm.
        let cache = ResourceCache::open(
            &dir.join(format!("cache-{label}-{round}")),
            Some(Bucket::new(config).unwrap()),
            CacheConfig::default(),
            Arc::new(SystemClock),
        )
        .unwrap();
        for (which, samples) in [("cold", &mut cold), ("warm", &mut warm)] {
            server.reset_requests().await.unwrap();
            let before = link.bytes();
            let run = dir.join(format!("run-{label}-{round}-{which}"));
            let started = Instant::now();
            let prepared = cache.prepare("bench", want, &run).await.unwrap();
            let took = started.elapsed();
            let after = link.bytes();
            drop(prepared);
            samples.push(Sample {
                took,
                up: after.0 - before.0,
                down: after.1 - before.1,
                gets: server.count("GET", object).await.unwrap(),
                heads: server.count("HEAD", object).await.unwrap(),
            });
        }
    }
    println!("prepare one {mib} MiB resource, {rounds} rounds, {label}:");
    for (which, samples) in [("cold", &mut cold), ("warm", &mut warm)] {
        samples.sort_by_key(|s| s.took);
        let median = &samples[samples.len() / 2];
        println!(
            "  {which}: median {:.1} ms (min {:.1}, max {:.1}); requests GET {} HEAD {}; \
             bytes to S3 {}, from S3 {}",
            median.took.as_secs_f64() * 1e3,
            samples[0].took.as_secs_f64() * 1e3,
            samples[samples.len() - 1].took.as_secs_f64() * 1e3,
            median.gets,
            median.heads,
            median.up,
            median.down,
        );
    }
}
