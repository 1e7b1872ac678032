//! The agent runtime: workers over the shared buffer, outbox and run registry, each a struct
//! that owns its state and runs until one [`Shutdown`] asks them all to drain, then to stop.
//!
//! - keeping leases ([`crate::keeper`]): heartbeats, renews leases ([`crate::lease`]), gives
//!   back what the plane asks for, fetches schedules when leases or definitions change
//!   ([`crate::buffer`]), takes "run now" and kill commands.
//! - firing ([`crate::firer`]): takes due records from the buffer, decides a pass
//!   ([`crate::pass`]) and starts, queues or skips its runs; missed records are started
//!   through a rate-limited catch-up queue.
//! - reporting ([`crate::reporter`]): sends the outbox to the plane in batches and drops what
//!   the plane committed.
//!
//! Runs are tasks of their own ([`crate::runner`]), launched, waited for and killed by the run
//! registry ([`crate::runs`]); a slot semaphore there bounds how many go at once.
//! Time comes from an injected [`Clock`]: tests drive firing and leases by moving it.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_bucket::Bucket;
use meridian_domain::Clock;
use meridian_domain::run::RunState;
use meridian_transport::TlsMaterial;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::buffer::Buffer;
use crate::config::AgentConfig;
use crate::firer::Firer;
use crate::keeper::LeaseKeeper;
use crate::lease::{Leases, Partition};
use crate::link::Link;
use crate::outbox::Outbox;
use crate::reporter::Reporter;
use crate::resources::ResourceCache;
use crate::runner::Runner;
use crate::runs::RunRegistry;
use crate::shutdown::Shutdown;
use crate::store::StoreError;
use crate::supervisor::Supervisor;
use crate::take::event;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("agent TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Bucket(#[from] meridian_bucket::BucketError),
    #[error(transparent)]
    Resources(#[from] crate::resources::OpenError),
    #[error("metrics: listening on {0}: {1}")]
    Metrics(std::net::SocketAddr, std::io::Error),
    #[error("making the data directory {0} private to the agent: {1}")]
    DataDir(String, std::io::Error),
    #[error("agent config field `supervisor`: {0}")]
    Supervisor(#[from] crate::supervisor::SupervisorError),
}

/// A running agent: its workers and what they share.
pub struct Agent {
    keeper: Arc<LeaseKeeper>,
    firer: Arc<Firer>,
    reporter: Arc<Reporter>,
    registry: Arc<RunRegistry>,
    buffer: Buffer,
    outbox: Outbox,
    clock: Arc<dyn Clock>,
    shutdown: Shutdown,
    /// How long a graceful stop lets runs finish (`kill_grace_seconds`).
    drain: Duration,
    workers: Vec<JoinHandle<()>>,
}

impl Agent {
    /// Opens the agent's database in `config.data_dir`, recovers what a previous process left
    /// (runs it had started are recorded failed; queued ones start again), and starts the
    /// workers.
    pub async fn start(
        config: &AgentConfig,
        tls: &TlsMaterial,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AgentError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| StoreError::Open {
            path: config.data_dir.display().to_string(),
            source: e.into(),
        })?;
        let pool = crate::store::open(&config.data_dir.join("agent.db")).await?;
        let outbox = Outbox::new(pool.clone());
        let buffer = Buffer::open(pool, outbox.writer()).await?;
        let link = Arc::new(
            Link::new(&config.plane, tls, config.hosts.clone())
                .map_err(|e| AgentError::Tls(e.to_string()))?,
        );
        let http = http_client().map_err(AgentError::Tls)?;
        let bucket = config.bucket.as_ref().map(Bucket::new).transpose()?;
        let resources = ResourceCache::open(
            &config.data_dir.join("resources"),
            bucket,
            config.resources.clone(),
            clock.clone(),
        )?;
        // Tasks run as other users from here on: nothing of the agent's may be readable to them.
        crate::run_dir::secure(&config.data_dir, &config.work_dir(), &config.tls.key)
            .map_err(|e| AgentError::DataDir(config.data_dir.display().to_string(), e))?;
        let supervisor = Supervisor::start(
            config.data_dir.join("supervisor"),
            config.supervisor.clone(),
        )
        .await?;
        let reported = Arc::new(Notify::new());
        let wake = Arc::new(Notify::new());
        let shutdown = Shutdown::new();
        let reported_definitions = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let refetch = Arc::new(Notify::new());
        let reporter = Arc::new(Reporter::new(
            config.hostname.clone(),
            link.clone(),
            outbox.clone(),
            reported.clone(),
            shutdown.clone(),
            reported_definitions.clone(),
            refetch.clone(),
        ));
        let runner = Runner {
            outbox: outbox.clone(),
            clock: clock.clone(),
            work_dir: config.work_dir(),
            grace: Duration::from_secs(config.kill_grace_seconds),
            http,
            reported: reported.clone(),
            resources: resources.clone(),
            hostname: config.hostname.clone(),
            supervisor: supervisor.clone(),
        };
        let leases = Arc::new(Mutex::new(Leases::default()));
        let registry = Arc::new(RunRegistry::new(
            config.slots as usize,
            buffer.clone(),
            runner,
            clock.clone(),
            leases.clone(),
            reported.clone(),
            wake.clone(),
            Arc::new(crate::load::Load::new(config.load.clone())),
        ));
        let passes = Arc::new(AtomicU64::new(0));
        let keeper = Arc::new(LeaseKeeper {
            hostname: config.hostname.clone(),
            cluster: config.cluster.clone(),
            heartbeat: Duration::from_millis(config.heartbeat_ms),
            clock: clock.clone(),
            link,
            buffer: buffer.clone(),
            outbox: outbox.clone(),
            leases: leases.clone(),
            passes: passes.clone(),
            registry: registry.clone(),
            wake: wake.clone(),
            reported: reported.clone(),
            shutdown: shutdown.clone(),
            state: Default::default(),
            reported_definitions,
            refetch,
        });
        let firer = Arc::new(Firer {
            clock: clock.clone(),
            catch_up_rate: config.catch_up_rate,
            buffer: buffer.clone(),
            leases,
            passes,
            registry: registry.clone(),
            wake,
            reported,
            shutdown: shutdown.clone(),
            state: Default::default(),
        });
        let agent = Self {
            keeper,
            firer,
            reporter,
            registry,
            buffer,
            outbox,
            clock,
            shutdown,
            drain: Duration::from_secs(config.kill_grace_seconds),
            workers: Vec::new(),
        };
        agent.recover().await?;
        // What it held before a restart is lost to it until granted again: once every report
        // about it is committed the plane is told, to settle what it holds in doubt there.
        for (partition, epoch) in agent.buffer.assigned_partitions() {
            agent.keeper.relinquish(&partition, epoch);
        }
        let mut workers = vec![
            tokio::spawn(agent.keeper.clone().run()),
            tokio::spawn(agent.firer.clone().run()),
            tokio::spawn(agent.reporter.clone().run()),
        ];
        if let Some(listen) = config.metrics_listen {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| AgentError::Metrics(listen, e))?;
            let scrape = Scrape {
                resources,
                keeper: agent.keeper.clone(),
                registry: agent.registry.clone(),
                outbox: agent.outbox.clone(),
                buffer: agent.buffer.clone(),
                clock: agent.clock.clone(),
            };
            workers.push(tokio::spawn(serve_metrics(listener, scrape)));
        }
        Ok(Self { workers, ..agent })
    }

    /// Runs a previous process left: queued ones start again (at the catch-up rate); ones it
    /// had started go on where the supervisor kept their tasks going (re-attached), or, where
    /// that cannot be, have what they left running killed and are recorded failed.
    async fn recover(&self) -> Result<(), StoreError> {
        let runs = self.buffer.runs().await?;
        let supervisor = self.registry.runner.supervisor.clone();
        // Attempts of runs that have left the agent (it stopped between recording a run's end
        // and telling the supervisor) are dropped.
        let here: std::collections::HashSet<&str> =
            runs.iter().map(|r| r.run_id.as_str()).collect();
        if let Ok(known) = supervisor.list(None).await {
            let gone: std::collections::BTreeSet<String> = known
                .into_iter()
                .filter(|k| !here.contains(k.key.run_id.as_str()))
                .map(|k| k.key.run_id)
                .collect();
            supervisor.forget(gone.into_iter().collect()).await;
        }
        let mut lost = Vec::new();
        for run in runs {
            if run.state == RunState::Queued {
                self.registry.lock().queue_catch_up(run);
                continue;
            }
            let known = match supervisor.list(Some(&run.run_id)).await {
                Ok(known) => known,
                Err(e) => {
                    tracing::error!("asking the supervisor about {}: {e}", run.run_id);
                    Vec::new()
                }
            };
            match crate::resume::plan(&run.job.definition.tasks, &known) {
                Ok(plan) => {
                    tracing::info!(
                        run = %run.run_id,
                        reattached = plan.tasks.len(),
                        "the run goes on under the supervisor"
                    );
                    self.registry.resume(run, plan);
                }
                Err(why) => lost.push((run, why.message())),
            }
        }
        // Nothing supervises what the runs that cannot go on left running: it is killed first.
        let ids: std::collections::HashSet<String> =
            lost.iter().map(|(r, _)| r.run_id.clone()).collect();
        let killed = crate::leftovers::kill(&ids);
        for (run, why) in lost {
            // What it did is unknown, so it is not run again (it may have had effects) but
            // recorded as failed.
            let left = killed
                .iter()
                .find(|(r, _)| *r == run.run_id)
                .map_or(0, |(_, n)| *n);
            let message = if left == 0 {
                why
            } else {
                format!("{why}; the {left} process(es) it left running were killed")
            };
            let report = event(&run, RunState::Failed, self.clock.now_ms(), &message);
            self.buffer
                .advance(&run.run_id, RunState::Failed, &report)
                .await?;
            self.registry.runner.forget(&run);
        }
        Ok(())
    }

    /// The resource cache (its metrics, for status and tests).
    pub fn resources(&self) -> &ResourceCache {
        &self.registry.runner.resources
    }

    /// Graceful stop: no new fires; runs going get `kill_grace_seconds` to finish, then are
    /// killed; the outbox is flushed (for as long again); the partitions are given back.
    pub async fn shutdown(self) {
        self.shutdown.drain();
        self.firer.wake.notify_one();
        let start = tokio::time::Instant::now();
        self.settle(start + self.drain, async || self.registry.idle())
            .await;
        self.registry.kill_all();
        self.settle(start + self.drain * 3, async || {
            // A take not yet expanded has reports the outbox does not hold yet.
            self.firer.reported.notify_one();
            self.registry.idle()
                && !self.buffer.expanding()
                && self.outbox.is_empty().await.unwrap_or(true)
        })
        .await;
        self.shutdown.stop();
        for w in &self.workers {
            w.abort();
        }
        self.keeper.release_all().await;
        self.outbox.close().await;
    }

    /// Waits until `done` holds or `deadline` passes, asking again whenever a run ends or a
    /// report round is answered (what a graceful stop waits for), never by polling.
    async fn settle(&self, deadline: tokio::time::Instant, done: impl AsyncFn() -> bool) {
        loop {
            let ended = self.registry.ended();
            let round = self.reporter.answered();
            tokio::pin!(ended, round);
            ended.as_mut().enable();
            round.as_mut().enable();
            if done().await || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                _ = ended => {}
                _ = round => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Stops at once, as a crash would: workers and runs are dropped mid-step (a shell task's
    /// process is killed with its run task). What was written to the database stays.
    pub async fn abort(self) {
        self.shutdown.stop();
        for w in &self.workers {
            w.abort();
        }
        self.registry.abort_all();
        for w in self.workers {
            let _ = w.await;
        }
        self.outbox.close().await;
    }

    /// The partitions held now (for tests and status).
    pub fn held(&self) -> Vec<(Partition, u64)> {
        let now = self.clock.monotonic_ms();
        let leases = self.keeper.leases.lock().expect("leases");
        leases
            .all()
            .filter(|(p, _)| leases.valid(p, now).is_some())
            .map(|(p, h)| (p.clone(), h.epoch))
            .collect()
    }

    /// Runs given back unstarted so far (their lease lapsed between taking and starting).
    pub fn returned_runs(&self) -> u64 {
        self.registry.returned()
    }

    /// Report rounds the plane has answered so far.
    pub fn report_rounds(&self) -> u64 {
        self.reporter.rounds()
    }

    /// Entries waiting in the outbox.
    pub async fn outbox_len(&self) -> u64 {
        self.outbox.len().await.unwrap_or(0)
    }

    pub fn buffer(&self) -> &Buffer {
        &self.buffer
    }
}

/// The client HTTP tasks are sent with: rustls on ring, the system's roots if the host has them.
pub fn http_client() -> Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    // HTTP tasks reach services inside the data center; trust the system's roots if present.
    if let Ok(pem) = std::fs::read("/etc/ssl/certs/ca-certificates.crt") {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
            let _ = roots.add(cert);
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .map_err(|e| e.to_string())
}

/// What `/metrics` reads when scraped.
#[derive(Clone)]
struct Scrape {
    resources: ResourceCache,
    keeper: Arc<LeaseKeeper>,
    registry: Arc<RunRegistry>,
    outbox: Outbox,
    buffer: Buffer,
    clock: Arc<dyn Clock>,
}

impl Scrape {
    async fn text(&self) -> String {
        let (runs_going, waiting_overlap) = {
            let runs = self.registry.lock();
            (
                runs.going.len() as u64,
                runs.waiting.values().map(|w| w.len() as u64).sum(),
            )
        };
        let (outbox_entries, oldest) = self.outbox.backlog().await.unwrap_or((0, None));
        let live = crate::figures::Live {
            leases_held: self.keeper.held_leases().len() as u64,
            runs_going,
            waiting_overlap,
            outbox_entries,
            outbox_oldest_seconds: oldest
                .map_or(0.0, |at| (self.clock.now_ms() - at).max(0) as f64 / 1000.0),
            buffered_records: self.buffer.total().await.unwrap_or(0),
            schedule_fetches: self
                .keeper
                .state
                .fetches
                .load(std::sync::atomic::Ordering::Relaxed),
        };
        self.registry
            .figures
            .encode(live, &self.resources.metrics())
    }
}

/// `GET /metrics`: the agent's figures in the OpenMetrics text format.
async fn serve_metrics(listener: tokio::net::TcpListener, scrape: Scrape) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(async move || {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                scrape.text().await,
            )
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("metrics endpoint stopped: {e}");
    }
}
