//! The agent runtime: two loops over shared state and a worker beside them, each doing what
//! the pure parts decide; one [`Shutdown`] asks them all to drain, then to stop.
//!
//! - heartbeat: renews leases ([`crate::lease`]), gives back what the plane asks for, fetches
//!   schedules when leases or definitions change ([`crate::buffer`]), takes "run now" and kill
//!   commands.
//! - firing: takes due records from the buffer, classifies them ([`crate::firing`]) and starts,
//!   queues or skips them; missed records are started through a rate-limited catch-up queue.
//! - reporting ([`crate::reporter`], a worker of its own): sends the outbox to the plane in
//!   batches and drops what the plane committed.
//!
//! Runs are tasks of their own ([`crate::runner`]), launched, waited for and killed by the run
//! registry ([`crate::runs`]); a slot semaphore there bounds how many go at once.
//! Time comes from an injected [`Clock`]: tests drive firing and leases by moving it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::DateTime;
use meridian_domain::run::{Assignment, Job, RunState};
use meridian_domain::{Clock, FireRecord, OverlapPolicy};
use meridian_proto::pb;
use meridian_transport::TlsMaterial;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::task::JoinHandle;

use crate::buffer::{Buffer, DueKey};
use crate::config::AgentConfig;
use crate::firing::{self, Fate, Overlap};
use crate::lease::{Granted, Leases, Partition};
use crate::link::ExchangeError;
use crate::link::Link;
use crate::outbox::Outbox;
use crate::reporter::Reporter;
use crate::resources::ResourceCache;
use crate::runner::Runner;
use crate::runs::RunRegistry;
use crate::shutdown::Shutdown;
use crate::store::StoreError;
use crate::take::{LocalRun, Take, TakeItem, Took, event};
use meridian_bucket::Bucket;

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
}

/// How many due records one pass of the firing loop takes.
const FIRE_BATCH: u32 = 100_000;
/// The firing loop looks at the clock at least this often (an injected clock may jump).
const FIRE_TICK: Duration = Duration::from_millis(100);

/// A partition given back, waiting for its reports to be committed before the plane is told.
struct Releasing {
    lease: pb::Lease,
    /// Passes completed when it was given back.
    passes: u64,
    /// The last take written once no pass that could have taken its records is running:
    /// its reports are in the outbox once it is expanded.
    takes: Option<i64>,
    /// The outbox's last entry once that take is expanded: every entry up to it must be
    /// committed before the release is reported.
    mark: Option<i64>,
}

/// Where the agent's writes are, as [`ready_to_report`] needs them.
#[derive(Debug, Clone, Copy)]
struct Written {
    /// Firing passes completed.
    passes: u64,
    /// The last take written, and every take up to this one is expanded.
    take: i64,
    expanded: i64,
    /// The outbox's last and first waiting entry (read after `expanded`).
    last: Option<i64>,
    first: Option<i64>,
}

/// Decides which given-back partitions may be reported released. A release notes the last
/// take written once a firing pass ended after it (`passes` moved past its count); gets its
/// mark (the outbox's `last` entry's seq, 0 when empty) once that take is expanded; and is
/// ready once the outbox's `first` waiting entry is past the mark (seqs never repeat). Removes
/// and returns the ready ones.
fn ready_to_report(releasing: &mut Vec<Releasing>, w: Written) -> Vec<pb::Lease> {
    let mut ready = Vec::new();
    releasing.retain_mut(|r| {
        if r.takes.is_none() && w.passes > r.passes {
            r.takes = Some(w.take);
        }
        if r.mark.is_none() && r.takes.is_some_and(|t| w.expanded >= t) {
            r.mark = Some(w.last.unwrap_or(0));
        }
        match r.mark {
            Some(mark) if w.first.is_none_or(|f| f > mark) => {
                ready.push(r.lease.clone());
                false
            }
            _ => true,
        }
    });
    ready
}

struct Shared {
    hostname: String,
    cluster: String,
    heartbeat: Duration,
    catch_up_rate: f64,
    drain: Duration,
    clock: Arc<dyn Clock>,
    link: Arc<Link>,
    buffer: Buffer,
    outbox: Outbox,
    leases: Mutex<Leases>,
    /// Partitions the plane asked back, not yet reported released: they wait until every
    /// report about them is committed (see [`Shared::ready_releases`]).
    releasing: Mutex<Vec<Releasing>>,
    /// Released partitions to report in the next heartbeat.
    released: Mutex<Vec<pb::Lease>>,
    /// Firing passes completed (a pass that began before a release has taken its records
    /// once this moves past the count seen at the release).
    passes: AtomicU64,
    /// The runs going here: launched, waited for, killed.
    registry: Arc<RunRegistry>,
    /// Schedules whose records were taken and not yet topped up.
    refill: Mutex<HashMap<String, Arc<Assignment>>>,
    wake: Arc<Notify>,
    reported: Arc<Notify>,
    definitions: AtomicU64,
    shutdown: Shutdown,
    /// The reporting worker (a graceful stop waits for its rounds to empty the outbox).
    reporter: Arc<Reporter>,
}

/// A running agent.
pub struct Agent {
    shared: Arc<Shared>,
    loops: Vec<JoinHandle<()>>,
}

impl Agent {
    /// Opens the agent's database in `config.data_dir`, recovers what a previous process left
    /// (runs it had started are recorded failed; queued ones start again), and starts the
    /// loops.
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
        let reported = Arc::new(Notify::new());
        let shutdown = Shutdown::new();
        let reporter = Arc::new(Reporter::new(
            config.hostname.clone(),
            link.clone(),
            outbox.clone(),
            reported.clone(),
            shutdown.clone(),
        ));
        let wake = Arc::new(Notify::new());
        let runner = Runner {
            outbox: outbox.clone(),
            clock: clock.clone(),
            work_dir: config.work_dir(),
            grace: Duration::from_secs(config.kill_grace_seconds),
            http,
            reported: reported.clone(),
            resources: resources.clone(),
            hostname: config.hostname.clone(),
        };
        let registry = Arc::new(RunRegistry::new(
            config.slots as usize,
            buffer.clone(),
            runner,
            clock.clone(),
            reported.clone(),
            wake.clone(),
        ));
        let shared = Arc::new(Shared {
            hostname: config.hostname.clone(),
            cluster: config.cluster.clone(),
            heartbeat: Duration::from_millis(config.heartbeat_ms),
            catch_up_rate: config.catch_up_rate,
            drain: Duration::from_secs(config.kill_grace_seconds),
            clock: clock.clone(),
            link,
            buffer,
            outbox: outbox.clone(),
            leases: Mutex::new(Leases::default()),
            releasing: Mutex::new(Vec::new()),
            released: Mutex::new(Vec::new()),
            passes: AtomicU64::new(0),
            registry: registry.clone(),
            refill: Mutex::new(HashMap::new()),
            wake,
            reported,
            definitions: AtomicU64::new(u64::MAX),
            shutdown: shutdown.clone(),
            reporter: reporter.clone(),
        });
        shared.recover().await?;
        let mut loops = vec![
            tokio::spawn(shared.clone().heartbeat_loop()),
            tokio::spawn(shared.clone().fire_loop()),
            tokio::spawn(reporter.run()),
        ];
        if let Some(listen) = config.metrics_listen {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| AgentError::Metrics(listen, e))?;
            loops.push(tokio::spawn(serve_metrics(listener, resources)));
        }
        Ok(Self { shared, loops })
    }

    /// The resource cache (its metrics, for status and tests).
    pub fn resources(&self) -> &ResourceCache {
        &self.shared.registry.runner.resources
    }

    /// Graceful stop: no new fires; runs going get `kill_grace_seconds` to finish, then are
    /// killed; the outbox is flushed (for as long again); the partitions are given back.
    pub async fn shutdown(self) {
        let s = &self.shared;
        s.shutdown.drain();
        s.wake.notify_one();
        let start = tokio::time::Instant::now();
        s.settle(start + s.drain, async || s.registry.idle()).await;
        s.registry.kill_all();
        s.settle(start + s.drain * 3, async || {
            // A take not yet expanded has reports the outbox does not hold yet.
            s.reported.notify_one();
            s.registry.idle() && !s.buffer.expanding() && s.outbox.is_empty().await.unwrap_or(true)
        })
        .await;
        s.shutdown.stop();
        for l in &self.loops {
            l.abort();
        }
        s.release_all().await;
        s.outbox.close().await;
    }

    /// Stops at once, as a crash would: loops and runs are dropped mid-step (a shell task's
    /// process is killed with its run task). What was written to the database stays.
    pub async fn abort(self) {
        self.shared.shutdown.stop();
        for l in &self.loops {
            l.abort();
        }
        self.shared.registry.abort_all();
        for l in self.loops {
            let _ = l.await;
        }
        self.shared.outbox.close().await;
    }

    /// The partitions held now (for tests and status).
    pub fn held(&self) -> Vec<(Partition, u64)> {
        let now = self.shared.clock.now_ms();
        let leases = self.shared.leases.lock().expect("leases");
        leases
            .all()
            .filter(|(p, _)| leases.valid(p, now).is_some())
            .map(|(p, h)| (p.clone(), h.epoch))
            .collect()
    }

    /// Report rounds the plane has answered so far.
    pub fn report_rounds(&self) -> u64 {
        self.shared.reporter.rounds()
    }

    /// Entries waiting in the outbox.
    pub async fn outbox_len(&self) -> u64 {
        self.shared.outbox.len().await.unwrap_or(0)
    }

    pub fn buffer(&self) -> &Buffer {
        &self.shared.buffer
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

/// Where the firing loop's reads of due records got to.
#[derive(Default)]
struct Reading {
    reached: Option<DueKey>,
    /// The last read stopped at its batch.
    full: bool,
}

/// What one pass of the firing loop decided: the records it takes (written as one take),
/// then what to do with each run once the take is durable.
#[derive(Default)]
struct Pass {
    items: Vec<TakeItem>,
    then: Vec<Then>,
    /// Per schedule: runs this pass starts and queues (the overlap policy counts them).
    planned: HashMap<String, (usize, usize)>,
    /// Schedules this pass queues fires of to catch up.
    catching_up: HashSet<String>,
}

enum Then {
    Launch {
        run: LocalRun,
        permit: Option<OwnedSemaphorePermit>,
        /// Kill the schedule's runs going first (overlap `cancel_older`).
        cancel_older: bool,
    },
    Wait(String, LocalRun),
    CatchUp(LocalRun),
}

impl Pass {
    /// Takes `record` as `took`; returns its run (none when skipped).
    fn take(
        &mut self,
        a: &Arc<Assignment>,
        epoch: u64,
        record: &FireRecord,
        took: Took,
    ) -> Option<LocalRun> {
        let item = TakeItem {
            assignment: a.clone(),
            fire_ms: record.fire_at.timestamp_millis(),
            epoch,
            took,
        };
        let run = item.run();
        self.items.push(item);
        run
    }

    /// Takes `record` to be started at the catch-up rate, in fire order.
    fn catch_up(&mut self, a: &Arc<Assignment>, epoch: u64, record: &FireRecord) {
        let run = self.take(a, epoch, record, Took::CatchingUp);
        self.then.push(Then::CatchUp(run.expect("queued")));
        self.catching_up.insert(a.schedule.to_string());
    }
}

impl Shared {
    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    async fn recover(self: &Arc<Self>) -> Result<(), StoreError> {
        for run in self.buffer.runs().await? {
            if run.state == RunState::Queued {
                self.registry.lock().queue_catch_up(run);
            } else {
                // It was going when the agent stopped; what it did is unknown, so it is not run
                // again (it may have had effects) but recorded as failed.
                let report = event(
                    &run,
                    RunState::Failed,
                    self.now(),
                    "the agent stopped while the run was going",
                );
                self.buffer
                    .advance(&run.run_id, RunState::Failed, &report)
                    .await?;
            }
        }
        Ok(())
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

    // ----- heartbeat -----

    async fn heartbeat_loop(self: Arc<Self>) {
        loop {
            if let Err(e) = self.heartbeat_once().await {
                tracing::warn!("heartbeat to {}: {e}", self.link.current());
            }
            tokio::select! {
                _ = tokio::time::sleep(self.heartbeat) => {}
                _ = self.shutdown.stopped() => return,
            }
        }
    }

    /// Every held partition (valid or lapsed) as the plane is told of it.
    fn held_leases(&self) -> Vec<pb::Lease> {
        self.leases
            .lock()
            .expect("leases")
            .all()
            .map(|((cluster, partition), h)| pb::Lease {
                partition: *partition,
                epoch: h.epoch,
                expires_at_ms: 0,
                cluster: cluster.clone(),
            })
            .collect()
    }

    async fn heartbeat_once(self: &Arc<Self>) -> Result<(), ExchangeError> {
        let sent = self.now();
        let held = self.held_leases();
        self.ready_releases().await;
        let released = self.released.lock().expect("released").clone();
        let request = pb::HeartbeatRequest {
            agent: self.hostname.clone(),
            cluster: self.cluster.clone(),
            held,
            free_slots: self.registry.free_slots() as u32,
            releasing: false,
            released: released.clone(),
        };
        let reply = self
            .link
            .call(|mut c| {
                let r = request.clone();
                async move { c.heartbeat(r).await }
            })
            .await?;
        self.released
            .lock()
            .expect("released")
            .retain(|r| !released.contains(r));
        let granted: Vec<Granted> = reply
            .leases
            .iter()
            .map(|l| Granted {
                cluster: l.cluster.clone(),
                partition: l.partition,
                epoch: l.epoch,
                expires_ms: l.expires_at_ms,
            })
            .collect();
        let change = {
            let mut leases = self.leases.lock().expect("leases");
            let change = leases.renew(sent, reply.now_ms, &granted);
            // Asked to give partitions back: stop firing them now, say so next heartbeat.
            let give_back: Vec<Partition> = reply
                .release
                .iter()
                .map(|l| (l.cluster.clone(), l.partition))
                .collect();
            leases.release(&give_back);
            // The plane renews a partition it asked back until told: a second ask for the
            // same lease keeps the first one's progress.
            let passes = self.passes.load(Ordering::SeqCst);
            let mut releasing = self.releasing.lock().expect("releasing");
            for lease in &reply.release {
                if !releasing.iter().any(|r| r.lease == *lease) {
                    releasing.push(Releasing {
                        lease: lease.clone(),
                        passes,
                        takes: None,
                        mark: None,
                    });
                }
            }
            drop(releasing);
            change
        };
        if !reply.release.is_empty() {
            // A pass now marks where the partitions' last takes are.
            self.wake.notify_one();
        }
        let definitions_moved =
            self.definitions.swap(reply.definitions, Ordering::SeqCst) != reply.definitions;
        if !change.is_empty() || definitions_moved || !reply.release.is_empty() {
            self.fetch().await?;
        }
        for command in reply.commands {
            match command.command {
                Some(pb::agent_command::Command::RunNow(r)) => self.run_now(r).await?,
                Some(pb::agent_command::Command::Kill(k)) => self.registry.kill(&k.run_id),
                None => {}
            }
        }
        Ok(())
    }

    /// Moves given-back partitions to `released` once the plane has every report about them.
    ///
    /// The plane hands a released partition to another agent, which fires from the plane's
    /// last acknowledged fire time: reporting the release before the records this agent took
    /// are committed would let the next holder run them again. So a release waits for a firing
    /// pass to end after it (no take of the partition can still be in flight), marks the
    /// outbox's last entry, and is reported once the outbox has nothing up to that mark.
    async fn ready_releases(&self) {
        if self.releasing.lock().expect("releasing").is_empty() {
            // The usual heartbeat: nothing given back, no outbox to read.
            return;
        }
        // In this order: a pass counted has written its take; a take counted expanded has its
        // entries in the outbox.
        let passes = self.passes.load(Ordering::SeqCst);
        let take = self.buffer.progress().written();
        let expanded = self.buffer.progress().expanded();
        let outbox = async {
            Ok::<_, StoreError>((
                self.outbox.last_seq().await?,
                self.outbox.first_seq().await?,
            ))
        };
        let (last, first) = match outbox.await {
            Ok(seqs) => seqs,
            Err(e) => {
                tracing::warn!("reading the outbox: {e}");
                return;
            }
        };
        let ready = ready_to_report(
            &mut self.releasing.lock().expect("releasing"),
            Written {
                passes,
                take,
                expanded,
                last,
                first,
            },
        );
        self.released.lock().expect("released").extend(ready);
    }

    /// Fetches the schedules of every held partition and syncs the buffer with them.
    async fn fetch(self: &Arc<Self>) -> Result<(), ExchangeError> {
        let leases = self.held_leases();
        let request = pb::FetchSchedulesRequest {
            agent: self.hostname.clone(),
            leases,
        };
        let reply = self
            .link
            .call(|mut c| {
                let r = request.clone();
                async move { c.fetch_schedules(r).await }
            })
            .await?;
        let mut assignments = Vec::with_capacity(reply.schedules.len());
        for s in reply.schedules {
            match Assignment::try_from(&s) {
                Ok(a) => assignments.push(a),
                Err(e) => tracing::warn!("schedule {}: {e}", s.schedule_id),
            }
        }
        let synced = self.buffer.sync(&assignments).await?;
        for u in synced.unreadable {
            tracing::error!(
                schedule = %u.schedule,
                version = u.version,
                "this agent cannot read the schedule's calendar ({}): it fires nothing here \
                 until the plane sends a version this agent can read; upgrade the agent",
                u.why
            );
        }
        self.wake.notify_one();
        Ok(())
    }

    async fn run_now(self: &Arc<Self>, r: pb::RunNow) -> Result<(), ExchangeError> {
        let job: Job = r.job().map_err(|e| ExchangeError::Unreadable {
            what: "a run-now job",
            why: e.to_string(),
        })?;
        let run = LocalRun {
            run_id: r.run_id.clone(),
            schedule: None,
            fire_ms: None,
            cluster: self.cluster.clone(),
            partition: None,
            epoch: 0,
            state: RunState::Queued,
            job,
        };
        let report = event(&run, RunState::Queued, self.now(), "run now");
        if self.buffer.take_manual(&run, &report).await? {
            self.reported.notify_one();
            self.registry.launch(run, None);
        }
        Ok(())
    }

    async fn release_all(&self) {
        let request = pb::HeartbeatRequest {
            agent: self.hostname.clone(),
            cluster: self.cluster.clone(),
            held: Vec::new(),
            free_slots: 0,
            releasing: true,
            released: Vec::new(),
        };
        if let Err(e) = self
            .link
            .call(|mut c| {
                let r = request.clone();
                async move { c.heartbeat(r).await }
            })
            .await
        {
            tracing::warn!("giving the partitions back: {e}; they move when the leases expire");
        }
    }

    // ----- firing -----

    async fn fire_loop(self: Arc<Self>) {
        let mut last_catch_up = tokio::time::Instant::now();
        let mut tokens = 1.0f64;
        let mut reading = Reading::default();
        loop {
            let mut more = false;
            if !self.shutdown.draining() {
                match self.fire_due(&mut reading).await {
                    Ok(full) => more = full,
                    Err(e) => tracing::error!("firing: {e}"),
                }
                // Catch-up: a token bucket at `catch_up_rate`, at most one second's worth saved.
                let elapsed = last_catch_up.elapsed().as_secs_f64();
                last_catch_up = tokio::time::Instant::now();
                tokens = (tokens + elapsed * self.catch_up_rate).min(self.catch_up_rate.max(1.0));
                while tokens >= 1.0 {
                    let next = self.registry.lock().next_catch_up();
                    let Some(run) = next else { break };
                    tokens -= 1.0;
                    self.registry.catch_up(run);
                }
            }
            self.passes.fetch_add(1, Ordering::SeqCst);
            if more {
                // The pass stopped at its batch: more is due now.
                tokio::task::yield_now().await;
                continue;
            }
            let now = self.now();
            let next = self.buffer.next_fire_ms(now).await.ok().flatten();
            let mut wait = FIRE_TICK;
            if let Some(next) = next {
                wait = wait.min(Duration::from_millis((next - now).max(0) as u64));
            }
            if !self.registry.lock().catch_up.is_empty() {
                wait = wait.min(Duration::from_secs_f64(1.0 / self.catch_up_rate));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = self.shutdown.stopped() => return,
            }
        }
    }

    /// Takes the due records (up to [`FIRE_BATCH`]) as one take, then starts, queues or holds
    /// back the runs as decided. Returns whether it stopped at the batch.
    async fn fire_due(self: &Arc<Self>, reading: &mut Reading) -> Result<bool, StoreError> {
        let now = self.now();
        let began = std::time::Instant::now();
        // Reads go on from where the last one got to while records it took may still be
        // buffered (their take is not expanded yet) or it stopped at its batch; otherwise from
        // the start, which also finds records a refill or sync put behind that point and ones
        // left because their partition was not held.
        if !reading.full && !self.buffer.expanding() {
            reading.reached = None;
        }
        let firing = self.buffer.firing().await;
        let due = self
            .buffer
            .due(now, reading.reached.as_ref(), FIRE_BATCH)
            .await?;
        reading.full = due.full;
        if due.reached.is_some() {
            reading.reached = due.reached;
        }
        if due.records.is_empty() {
            drop(firing);
            if !due.full {
                // Nothing (more) due: top up what the last passes took (it waits for their
                // takes to be expanded; firing does not wait for it).
                let refill: Vec<Arc<Assignment>> =
                    std::mem::take(&mut *self.refill.lock().expect("refill"))
                        .into_values()
                        .collect();
                if !refill.is_empty() {
                    let this = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = this.buffer.refill(refill).await
                            && !this.shutdown.is_stopped()
                        {
                            tracing::error!("topping up the buffer: {e}");
                        }
                    });
                }
            }
            return Ok(due.full);
        }
        let records = due.records.len();
        let read = began.elapsed();
        // Grouped by schedule (one assignment per schedule: keyed by its address), in the
        // order the schedules first fall due.
        let mut by_schedule: HashMap<usize, usize> = HashMap::new();
        let mut grouped: Vec<(Arc<Assignment>, Vec<FireRecord>)> = Vec::new();
        for (a, record) in due.records {
            let at = *by_schedule
                .entry(Arc::as_ptr(&a) as usize)
                .or_insert_with(|| {
                    grouped.push((a, Vec::new()));
                    grouped.len() - 1
                });
            grouped[at].1.push(record);
        }
        let now_at = DateTime::from_timestamp_millis(now).unwrap_or_default();
        let mut pass = Pass::default();
        {
            let leases = self.leases.lock().expect("leases");
            let mut partition: (String, u32) = Default::default();
            for (a, records) in grouped {
                if partition.0 != a.cluster {
                    partition.0 = a.cluster.clone();
                }
                partition.1 = a.partition;
                // No valid lease: paused (the autonomy horizon passed, or the partition moved).
                let Some(held) = leases.valid(&partition, now) else {
                    continue;
                };
                for (record, fate) in
                    firing::classify(&records, held.since_ms, &a.spec.catch_up, now_at)
                {
                    match fate {
                        Fate::Skip => {
                            pass.take(&a, held.epoch, &record, Took::Missed);
                        }
                        Fate::CatchUp => pass.catch_up(&a, held.epoch, &record),
                        Fate::OnTime => self.decide(&a, held.epoch, &record, &mut pass),
                    }
                }
            }
        }
        let decided = began.elapsed();
        {
            let mut refill = self.refill.lock().expect("refill");
            for item in &pass.items {
                let schedule = item.assignment.schedule.as_str();
                if !refill.contains_key(schedule) {
                    refill.insert(schedule.to_owned(), item.assignment.clone());
                }
            }
        }
        // Stamped now: the runs start as soon as the take is durable.
        let take = Take {
            at_ms: self.now(),
            items: pass.items,
        };
        self.buffer.take_all(take).await?;
        drop(firing);
        let written = began.elapsed();
        for then in pass.then {
            match then {
                Then::Launch {
                    run,
                    permit,
                    cancel_older,
                } => {
                    if cancel_older && let Some(schedule) = &run.schedule {
                        self.registry.lock().cancel_going(schedule.as_str());
                    }
                    self.registry.launch(run, permit);
                }
                Then::Wait(schedule, run) => self
                    .registry
                    .lock()
                    .waiting
                    .entry(schedule)
                    .or_default()
                    .push_back(run),
                Then::CatchUp(run) => self.registry.lock().queue_catch_up(run),
            }
        }
        self.reported.notify_one();
        tracing::debug!(
            records,
            read_ms = read.as_millis() as u64,
            decided_ms = decided.as_millis() as u64,
            written_ms = written.as_millis() as u64,
            launched_ms = began.elapsed().as_millis() as u64,
            "firing pass"
        );
        Ok(due.full)
    }

    /// Decides an on-time record under the schedule's overlap policy, counting what this pass
    /// has already decided for the schedule (behind its fires still catching up, if any).
    fn decide(
        self: &Arc<Self>,
        a: &Arc<Assignment>,
        epoch: u64,
        record: &FireRecord,
        pass: &mut Pass,
    ) {
        let schedule = a.schedule.as_str();
        let (going, waiting, catching_up) = {
            let runs = self.registry.lock();
            (
                runs.going_for(schedule),
                runs.waiting.get(schedule).map_or(0, VecDeque::len),
                runs.catching_up_for(schedule),
            )
        };
        // While older fires of the schedule are still catching up, a new one queues behind
        // them: the overlap policy sees its fires in order.
        if a.overlap != OverlapPolicy::AllowAll
            && (catching_up > 0 || pass.catching_up.contains(schedule))
        {
            return pass.catch_up(a, epoch, record);
        }
        let planned = pass.planned.entry(schedule.to_owned()).or_default();
        let (going, waiting) = (going + planned.0, waiting + planned.1);
        match firing::on_fire(a.overlap, going, waiting) {
            Overlap::Skip => {
                pass.take(a, epoch, record, Took::Overlapping);
            }
            Overlap::Queue => {
                planned.1 += 1;
                let run = pass.take(a, epoch, record, Took::Waiting);
                pass.then
                    .push(Then::Wait(schedule.to_owned(), run.expect("queued")));
            }
            decision @ (Overlap::Start | Overlap::CancelThenStart) => {
                planned.0 += 1;
                // Started at once if a slot is free, else queued for one.
                let permit = self.registry.try_slot();
                let took = if permit.is_some() {
                    Took::Started
                } else {
                    Took::Queued
                };
                let run = pass.take(a, epoch, record, took);
                pass.then.push(Then::Launch {
                    run: run.expect("started or queued"),
                    permit,
                    cancel_older: decision == Overlap::CancelThenStart,
                });
            }
        }
    }
}

/// `GET /metrics`: the Prometheus text exposition of the agent's figures.
async fn serve_metrics(listener: tokio::net::TcpListener, resources: ResourceCache) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(async move || {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4",
                )],
                resources.metrics().prometheus(),
            )
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("metrics endpoint stopped: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_is_reported_only_once_its_reports_are_committed() {
        let lease = |partition| pb::Lease {
            partition,
            epoch: 3,
            expires_at_ms: 0,
            cluster: "main".into(),
        };
        let w = |passes, take, expanded, last, first| Written {
            passes,
            take,
            expanded,
            last,
            first,
        };
        let mut releasing = vec![Releasing {
            lease: lease(1),
            passes: 7,
            takes: None,
            mark: None,
        }];
        // A pass that began before the release may still be taking its records: nothing
        // noted yet, even with an empty outbox.
        assert!(ready_to_report(&mut releasing, w(7, 3, 3, None, None)).is_empty());
        assert_eq!((releasing[0].takes, releasing[0].mark), (None, None));
        // A pass ended; its take (5) is written but its reports are not all in the outbox yet
        // (only take 4 is expanded): no mark, though the outbox is empty.
        assert!(ready_to_report(&mut releasing, w(8, 5, 4, None, None)).is_empty());
        assert_eq!((releasing[0].takes, releasing[0].mark), (Some(5), None));
        // Take 5 expanded (and a later take 6 written, which does not matter): the mark is
        // the outbox's last entry, which still waits.
        assert!(ready_to_report(&mut releasing, w(9, 6, 5, Some(40), Some(12))).is_empty());
        assert_eq!(releasing[0].mark, Some(40));
        // Later entries do not hold it back; entries up to the mark do.
        assert!(ready_to_report(&mut releasing, w(9, 6, 5, Some(55), Some(40))).is_empty());
        assert_eq!(
            ready_to_report(&mut releasing, w(9, 6, 6, Some(55), Some(41))),
            [lease(1)]
        );
        assert!(releasing.is_empty());
        // Nothing waiting at all once a pass ended and its take is expanded: ready at once.
        let mut releasing = vec![Releasing {
            lease: lease(2),
            passes: 0,
            takes: None,
            mark: None,
        }];
        assert_eq!(
            ready_to_report(&mut releasing, w(1, 2, 2, None, None)),
            [lease(2)]
        );
    }

    #[tokio::test]
    async fn metrics_are_served_in_the_prometheus_text_format() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResourceCache::open(
            dir.path(),
            None,
            Default::default(),
            Arc::new(meridian_domain::SystemClock),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = tokio::spawn(serve_metrics(listener, cache));
        let response = http_client()
            .unwrap()
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        let text = response.text().await.unwrap();
        assert!(
            text.contains("# TYPE meridian_resource_cache_hits_total counter\n")
                && text.contains("meridian_resource_cache_objects 0\n"),
            "{text}"
        );
        served.abort();
    }
}
