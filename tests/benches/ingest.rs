//! Sustained ingest: how many finished runs a second a 3-node plane takes in, and whether it
//! keeps up for minutes (issue #21: ≥ 5,000 runs/s for 10 minutes with no growing backlog,
//! each run with its start, attempt and end events and a 1 KiB log).
//!
//! A 3-node plane over mutual TLS on loopback (fsync'd redb logs, SQLite state machines and
//! history stores, each node's logbook), and `BENCH_AGENTS` synthetic agents of cluster
//! `main`. The plane is what is measured, so the agents run no processes: each speaks the
//! agent protocol over its own certificate (heartbeats holding its leases, the schedule
//! fetch, reports) and, every second, reports one finished run of every schedule it holds for
//! that second's fire record: `started`, the attempt's start, 1 KiB of log
//! (`BENCH_LOG_BYTES`), the attempt's success and `succeeded` — five outbox entries, sent as
//! the real agent sends them (one call at a time per agent, 2,000 entries a call at most).
//! The schedules (`BENCH_SCHEDULES`, each firing every second) set the offered rate.
//!
//! The runs also leave the model: each node runs a retirer keeping finished runs
//! `BENCH_KEEP_SECONDS` (60) instead of `[history] keep_hours`, so the model stays the size of
//! a minute's runs and the history store takes the rest, as it would in production at this
//! rate with hours.
//!
//! Every 10 s it prints the offered and committed rates, the backlog (runs fired and not yet
//! committed) and its oldest's age, the model's and the history store's run counts and the
//! process's RSS. The plane keeps up when the backlog stays flat.
//!
//! Run by hand (figures go to BENCHMARKS.md):
//!   cargo bench -p meridian-tests --bench ingest
//! Knobs: BENCH_SCHEDULES (5000), BENCH_SECONDS (600), BENCH_AGENTS (4), BENCH_LOG_BYTES
//! (1024), BENCH_KEEP_SECONDS (60), BENCH_BATCH (2000 entries a call), BENCH_NODES (3: the
//! plane's size; 1 measures what one node does with the machine to itself).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_agent::link::Link;
use meridian_domain::OverlapPolicy;
use meridian_domain::fire_record::FireRecord;
use meridian_domain::run::{
    Assignment, AttemptEvent, AttemptOutcome, Jobs, LogChunk, Report, ReportItem, RunEvent,
    RunState,
};
use meridian_domain::schedule::ScheduleSpec;
use meridian_domain::workflow::WorkflowDefinition;
use meridian_domain::{Clock, SystemClock};
use meridian_plane::certs;
use meridian_plane::model::{Command, Proposal, Schedule, Workflow};
use meridian_plane::raft::Outcome;
use meridian_plane::retirement::Retirer;
use meridian_proto::pb;
use meridian_tests::cluster::hostname;
use meridian_tests::federation::{Federation, name};
use meridian_tests::knob;
use meridian_transport::{Role, TlsMaterial};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

/// What the synthetic agents count, together.
#[derive(Default)]
struct Counts {
    fired: AtomicU64,
    committed: AtomicU64,
    refused: AtomicU64,
    calls: AtomicU64,
    failed_calls: AtomicU64,
}

/// A synthetic agent: the plane's side of an agent, without the processes.
struct Synthetic {
    name: String,
    link: Link,
    leases: Mutex<Vec<pb::Lease>>,
    released: Mutex<Vec<pb::Lease>>,
    definitions: AtomicU64,
    /// The schedules it holds, replaced at each fetch.
    schedules: Mutex<Vec<Arc<Assignment>>>,
    /// Fired and not yet reported: a run is its assignment and fire time (its events are
    /// made when sent, so a backlog costs little memory).
    queue: Mutex<VecDeque<(Arc<Assignment>, i64)>>,
    in_flight: AtomicU64,
    seq: AtomicU64,
    log: String,
    batch: usize,
    counts: Arc<Counts>,
}

impl Synthetic {
    async fn heartbeat(&self) -> bool {
        let held = self.leases.lock().unwrap().clone();
        let released = self.released.lock().unwrap().clone();
        let request = pb::HeartbeatRequest {
            agent: self.name.clone(),
            cluster: "main".into(),
            held,
            free_slots: 64,
            releasing: false,
            released: released.clone(),
            heartbeat_ms: 200,
            relinquished: vec![],
            usage: vec![],
            load: None,
        };
        let Ok(reply) = self
            .link
            .call(|mut c| {
                let r = request.clone();
                async move { c.heartbeat(r).await }
            })
            .await
        else {
            return false;
        };
        self.released
            .lock()
            .unwrap()
            .retain(|r| !released.contains(r));
        let given_back: Vec<u32> = reply.release.iter().map(|l| l.partition).collect();
        let leases: Vec<pb::Lease> = reply
            .leases
            .into_iter()
            .filter(|l| !given_back.contains(&l.partition))
            .collect();
        self.released.lock().unwrap().extend(reply.release);
        let mut held = self.leases.lock().unwrap();
        let moved = held
            .iter()
            .map(|l| (l.partition, l.epoch))
            .collect::<Vec<_>>()
            != leases
                .iter()
                .map(|l| (l.partition, l.epoch))
                .collect::<Vec<_>>();
        *held = leases;
        drop(held);
        moved || self.definitions.swap(reply.definitions, Ordering::SeqCst) != reply.definitions
    }

    async fn fetch(&self) {
        let leases = self.leases.lock().unwrap().clone();
        let request = pb::FetchSchedulesRequest {
            agent: self.name.clone(),
            leases,
            limit: 0,
            after: None,
        };
        let reply = self
            .link
            .call(|mut c| {
                let r = request.clone();
                async move { c.fetch_schedules(r).await }
            })
            .await
            .expect("schedules fetched");
        let mut jobs = Jobs::default();
        *self.schedules.lock().unwrap() = reply
            .schedules
            .iter()
            .map(|s| Arc::new(meridian_proto::convert::assignment(s, &mut jobs).unwrap()))
            .collect();
    }

    fn holding(&self) -> usize {
        self.leases.lock().unwrap().len()
    }

    /// Every schedule's record of second `fire_ms` is due.
    fn fire(&self, fire_ms: i64) {
        let schedules = self.schedules.lock().unwrap().clone();
        let due: Vec<_> = schedules
            .into_iter()
            .filter(|a| fire_ms > a.after_ms)
            .map(|a| (a, fire_ms))
            .collect();
        self.counts
            .fired
            .fetch_add(due.len() as u64, Ordering::Relaxed);
        self.queue.lock().unwrap().extend(due);
    }

    fn backlog(&self) -> (u64, Option<i64>) {
        let queue = self.queue.lock().unwrap();
        (
            queue.len() as u64 + self.in_flight.load(Ordering::Relaxed),
            queue.front().map(|(_, at)| *at),
        )
    }

    /// The five outbox entries of one finished run.
    fn entries(&self, a: &Assignment, fire_ms: i64, now: i64) -> Vec<pb::OutboxEntry> {
        let at = chrono::DateTime::from_timestamp_millis(fire_ms).unwrap();
        let run_id = FireRecord::new(a.schedule.clone(), at).id.to_string();
        let run = |state| {
            ReportItem::Run(RunEvent {
                run_id: run_id.clone(),
                schedule: Some(a.schedule.clone()),
                fire_ms: Some(fire_ms),
                tenant: a.job.tenant.clone(),
                workflow: a.job.workflow.clone(),
                workflow_version: a.job.workflow_version,
                environment: a.job.environment.clone(),
                state,
                at_ms: now,
                message: String::new(),
            })
        };
        let attempt = |outcome| {
            ReportItem::Attempt(AttemptEvent {
                run_id: run_id.clone(),
                task: "main".into(),
                attempt: 1,
                outcome,
                at_ms: now,
                exit_code: (outcome == AttemptOutcome::Succeeded).then_some(0),
                message: String::new(),
                warning: String::new(),
            })
        };
        let items = [
            run(RunState::Started),
            attempt(AttemptOutcome::Started),
            ReportItem::Log(LogChunk {
                run_id: run_id.clone(),
                task: "main".into(),
                attempt: 1,
                offset: 0,
                data: self.log.clone(),
            }),
            attempt(AttemptOutcome::Succeeded),
            run(RunState::Succeeded),
        ];
        items
            .into_iter()
            .map(|item| {
                let key = item.key();
                let report = Report::V1 {
                    cluster: a.cluster.clone(),
                    partition: Some(a.partition),
                    epoch: a.epoch,
                    item,
                };
                pb::OutboxEntry::new(
                    self.seq.fetch_add(1, Ordering::Relaxed) + 1,
                    key,
                    serde_json::to_string(&report).unwrap(),
                )
            })
            .collect()
    }

    /// Sends what is queued, one call at a time, until `stop`.
    async fn report(&self, stop: &AtomicBool) {
        let runs_per_call = (self.batch / 5).max(1);
        while !stop.load(Ordering::Relaxed) {
            let runs: Vec<_> = {
                let mut queue = self.queue.lock().unwrap();
                let n = queue.len().min(runs_per_call);
                queue.drain(..n).collect()
            };
            if runs.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            self.in_flight.store(runs.len() as u64, Ordering::Relaxed);
            let now = SystemClock.now_ms();
            let entries: Vec<_> = runs
                .iter()
                .flat_map(|(a, fire_ms)| self.entries(a, *fire_ms, now))
                .collect();
            let request = pb::ReportRequest {
                agent: self.name.clone(),
                entries,
            };
            loop {
                self.counts.calls.fetch_add(1, Ordering::Relaxed);
                match self
                    .link
                    .call(|mut c| {
                        let r = request.clone();
                        async move { c.report(r).await }
                    })
                    .await
                {
                    Ok(reply) => {
                        self.counts
                            .refused
                            .fetch_add(reply.refused.len() as u64, Ordering::Relaxed);
                        break;
                    }
                    Err(e) => {
                        self.counts.failed_calls.fetch_add(1, Ordering::Relaxed);
                        eprintln!("{}: report failed, again: {e}", self.name);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            self.in_flight.store(0, Ordering::Relaxed);
            self.counts
                .committed
                .fetch_add(runs.len() as u64, Ordering::Relaxed);
        }
    }
}

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

async fn model_runs(f: &Federation, i: usize) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM runs")
        .fetch_one(f.plane.node(i).core().state.pool())
        .await
        .unwrap()
}

async fn bench() {
    let schedules = knob("BENCH_SCHEDULES", 5000) as usize;
    let seconds = knob("BENCH_SECONDS", 600);
    let agents = knob("BENCH_AGENTS", 4) as usize;
    let log_bytes = knob("BENCH_LOG_BYTES", 1024) as usize;
    let keep_seconds = knob("BENCH_KEEP_SECONDS", 60) as i64;
    let batch = knob("BENCH_BATCH", 2000) as usize;
    let nodes = knob("BENCH_NODES", 3) as usize;
    let f = Federation::start_on_system_clock(nodes, 30).await;
    for i in 0..nodes {
        let node = f.plane.node(i);
        let retirer = Retirer {
            core: node.core(),
            clock: Arc::new(SystemClock),
            keep_ms: keep_seconds * 1000,
            archiving: false,
        };
        tokio::spawn(retirer.run(node.stopping()));
    }

    let made = Instant::now();
    f.write(Command::ApplyWorkflow(Workflow {
        tenant: name("ads"),
        name: name("job"),
        environment: Some(name("prod")),
        definition: WorkflowDefinition::shell("main", "true"),
    }))
    .await;
    let leader = f.plane.shared(f.plane.leader().await);
    for chunk in (0..schedules).collect::<Vec<_>>().chunks(200) {
        let mut writes = tokio::task::JoinSet::new();
        for i in chunk {
            let schedule = Command::CreateSchedule(Schedule {
                tenant: name("ads"),
                name: name(&format!("s{i}")),
                workflow: name("job"),
                environment: name("prod"),
                spec: ScheduleSpec::cron("* * * * * ?"),
                overlap: OverlapPolicy::AllowAll,
                takeover: f.takeover,
            });
            let leader = leader.clone();
            writes.spawn(async move {
                let proposal = Proposal::new("bench", SystemClock.now_ms(), schedule);
                match leader.write(proposal, Duration::from_secs(60)).await {
                    Ok(Outcome::Applied(_)) => {}
                    other => panic!("making a schedule: {other:?}"),
                }
            });
        }
        writes.join_all().await;
    }
    println!(
        "{schedules} schedules made in {:.1} s",
        made.elapsed().as_secs_f64()
    );

    let counts = Arc::new(Counts::default());
    let endpoints: Vec<String> = (0..nodes)
        .map(|i| format!("{}:{}", hostname(i), f.plane.port(i)))
        .collect();
    let log: String = "x".repeat(log_bytes.saturating_sub(1)) + "\n";
    let mut synthetic = Vec::new();
    for a in 0..agents {
        let agent = format!("agent-{a}.test");
        let leaf = certs::issue(&f.plane.ca, &agent, Role::Agent, Some("main")).unwrap();
        let tls = TlsMaterial {
            ca: f.plane.ca.cert.clone().into_bytes(),
            cert: leaf.cert.into_bytes(),
            key: leaf.key.into_bytes(),
        };
        synthetic.push(Arc::new(Synthetic {
            name: agent,
            link: Link::new(&endpoints, &tls, f.plane.hosts()).unwrap(),
            leases: Mutex::default(),
            released: Mutex::default(),
            definitions: AtomicU64::new(0),
            schedules: Mutex::default(),
            queue: Mutex::default(),
            in_flight: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            log: log.clone(),
            batch,
            counts: counts.clone(),
        }));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let refetch = Arc::new(AtomicBool::new(false));
    for s in &synthetic {
        let (s, stop, refetch) = (s.clone(), stop.clone(), refetch.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if s.heartbeat().await {
                    refetch.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    // Wait until the partitions are spread and still (each agent its share, none moving).
    let share = 16 / agents;
    let settled = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let spread = synthetic.iter().all(|s| s.holding() >= share)
            && synthetic.iter().map(|s| s.holding()).sum::<usize>() == 16
            && synthetic
                .iter()
                .all(|s| s.released.lock().unwrap().is_empty());
        if spread {
            break;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(120),
            "the partitions did not settle: {:?}",
            synthetic.iter().map(|s| s.holding()).collect::<Vec<_>>()
        );
    }
    for s in &synthetic {
        s.fetch().await;
    }
    refetch.store(false, Ordering::Relaxed);
    let held: usize = synthetic
        .iter()
        .map(|s| s.schedules.lock().unwrap().len())
        .sum();
    println!(
        "{agents} synthetic agents hold {:?} partitions, {held} schedules",
        synthetic.iter().map(|s| s.holding()).collect::<Vec<_>>()
    );
    assert_eq!(held, schedules, "every schedule is held");

    for s in &synthetic {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move { s.report(&stop).await });
    }
    // The firer: every whole second, every schedule's record of it.
    {
        let (synthetic, stop, refetch) = (synthetic.clone(), stop.clone(), refetch.clone());
        tokio::spawn(async move {
            let mut second = SystemClock.now_ms() / 1000 * 1000 + 1000;
            while !stop.load(Ordering::Relaxed) {
                let wait = second - SystemClock.now_ms();
                if wait > 0 {
                    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                }
                if refetch.swap(false, Ordering::Relaxed) {
                    eprintln!("leases or definitions moved: fetching again");
                    for s in &synthetic {
                        s.fetch().await;
                    }
                }
                for s in &synthetic {
                    s.fire(second);
                }
                second += 1000;
            }
        });
    }

    let began = Instant::now();
    let mut last = (0u64, 0u64, Instant::now());
    let mut backlogs = Vec::new();
    println!(
        "{:>5} {:>9} {:>10} {:>8} {:>9} {:>10} {:>10} {:>7}",
        "t s", "fired/s", "commit/s", "backlog", "oldest s", "model", "history", "RSS MiB"
    );
    while began.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let fired = counts.fired.load(Ordering::Relaxed);
        let committed = counts.committed.load(Ordering::Relaxed);
        let spent = last.2.elapsed().as_secs_f64();
        let now = SystemClock.now_ms();
        let (mut backlog, mut oldest) = (0, None::<i64>);
        for s in &synthetic {
            let (n, at) = s.backlog();
            backlog += n;
            oldest = match (oldest, at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let leader = f.plane.leader().await;
        let model = model_runs(&f, leader).await;
        let history = f
            .plane
            .node(leader)
            .core()
            .state
            .history()
            .count()
            .await
            .unwrap();
        println!(
            "{:>5.0} {:>9.0} {:>10.0} {:>8} {:>9.1} {:>10} {:>10} {:>7}",
            began.elapsed().as_secs_f64(),
            (fired - last.0) as f64 / spent,
            (committed - last.1) as f64 / spent,
            backlog,
            oldest.map_or(0.0, |at| (now - at) as f64 / 1000.0),
            model,
            history,
            rss_mib()
        );
        backlogs.push(backlog);
        last = (fired, committed, Instant::now());
    }
    stop.store(true, Ordering::Relaxed);
    let spent = began.elapsed().as_secs_f64();
    let committed = counts.committed.load(Ordering::Relaxed);
    println!(
        "{committed} runs committed in {spent:.0} s: {:.0} runs/s sustained (offered {:.0}/s); \
         {} entries refused, {} report calls ({} failed and retried)",
        committed as f64 / spent,
        counts.fired.load(Ordering::Relaxed) as f64 / spent,
        counts.refused.load(Ordering::Relaxed),
        counts.calls.load(Ordering::Relaxed),
        counts.failed_calls.load(Ordering::Relaxed),
    );
    let quarter = backlogs.len() / 4;
    if quarter > 0 {
        let early: u64 = backlogs[..quarter].iter().sum::<u64>() / quarter as u64;
        let late: u64 = backlogs[backlogs.len() - quarter..].iter().sum::<u64>() / quarter as u64;
        println!("backlog: {early} runs on average in the first quarter, {late} in the last");
    }
    let proposals: u64 = (0..nodes)
        .map(|i| {
            let tally = &f.plane.node(i).tally;
            tally.report_proposals.load(Ordering::Relaxed)
        })
        .sum();
    println!(
        "report calls proposed as {proposals} Raft entries ({:.2} reports an entry)",
        counts.calls.load(Ordering::Relaxed) as f64 / proposals.max(1) as f64
    );
    let appended: Vec<u64> = (0..nodes)
        .map(|i| {
            f.plane
                .node(i)
                .tally
                .raft_appended_bytes
                .load(Ordering::Relaxed)
        })
        .collect();
    println!(
        "Raft bytes appended per node: {:?} ({:.0} per committed run)",
        appended,
        appended.iter().sum::<u64>() as f64 / nodes as f64 / committed.max(1) as f64
    );
    f.shutdown().await;
}
