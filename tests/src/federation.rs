//! A plane with clusters, schedules and real agents, in process, on one injected clock: the
//! harness for the agent's tests, and the history checker every fault test ends with.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use meridian_agent::agent::Agent;
use meridian_agent::config::AgentConfig;
use meridian_domain::workflow::WorkflowDefinition;
use meridian_domain::{
    Clock, ManualClock, OverlapPolicy, ScheduleSpec, SystemClock, TakeoverPolicy,
};
use meridian_plane::certs;
use meridian_plane::model::query::{self, RunFilter, RunRecord};
use meridian_plane::model::{
    Cluster as ClusterDef, ClusterRole, Command, DataCenter, Environment, Grant, Name, Proposal,
    RunAs, Schedule, Tenant, Workflow,
};
use meridian_plane::raft::Outcome;
use meridian_plane::raft::node::Timing;
use meridian_transport::{Role, TlsFiles, TlsMaterial};

use crate::cluster::{Cluster, PATIENCE, hostname};
use crate::proxy::Proxy;

pub struct Federation {
    pub plane: Cluster,
    /// The clock tests move (unused by a federation on the system clock).
    pub clock: ManualClock,
    /// The clock the plane and the agents read: `clock`, or the system's.
    time: Arc<dyn Clock>,
    /// Agent settings tests and benchmarks may change before starting agents.
    pub slots: u32,
    pub catch_up_rate: f64,
    /// The takeover policy the schedules tests create get.
    pub takeover: TakeoverPolicy,
    /// The bucket agents take resources from, and their cache settings.
    pub bucket: Option<meridian_bucket::BucketConfig>,
    pub resources: meridian_agent::resources::CacheConfig,
    /// How agents started from now on supervise their tasks (in-process: a task of the test's
    /// own, which goes on through `kill_agent`).
    pub supervision: meridian_agent::supervisor::Supervision,
    /// The load thresholds agents started from now on get (none by default).
    pub load: meridian_agent::load::LoadLimits,
    /// Where the next agent started serves `/metrics` (none by default).
    pub metrics_listen: Option<std::net::SocketAddr>,
    agents: BTreeMap<String, Agent>,
    /// Per agent started behind a link: one cuttable relay per plane node.
    links: BTreeMap<String, Vec<Proxy>>,
}

/// The grants' `max_concurrent_runs` in the harness.
pub const QUOTA: u32 = 1_000_000;

/// The instant every federation test starts at: a whole minute, so cron fires line up.
pub fn epoch() -> DateTime<Utc> {
    // 1 800 000 000 s is a whole minute (2027-01-15T08:00:00Z).
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

pub fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

impl Federation {
    /// A plane of `nodes` nodes on a manual clock at [`epoch`], with data center `dc-a`,
    /// cluster `main` (16 partitions, `lease_seconds`), environment `prod`, tenant `ads`
    /// granted `prod`.
    pub async fn start(nodes: usize, lease_seconds: u32) -> Self {
        Self::start_inner(nodes, lease_seconds, false, None).await
    }

    /// As [`Federation::start`], on the system clock (for benchmarks: time is not moved by
    /// the test, [`Federation::advance`] must not be used).
    pub async fn start_on_system_clock(nodes: usize, lease_seconds: u32) -> Self {
        Self::start_inner(nodes, lease_seconds, false, Some(Arc::new(SystemClock))).await
    }

    /// As [`Federation::start`], and `main` has a backup cluster `spare` (same lease) with an
    /// environment `standby` granted to `ads`. Tenant `solo` is granted `prod` only.
    pub async fn start_with_backup(nodes: usize, lease_seconds: u32) -> Self {
        Self::start_inner(nodes, lease_seconds, true, None).await
    }

    async fn start_inner(
        nodes: usize,
        lease_seconds: u32,
        backup: bool,
        time: Option<Arc<dyn Clock>>,
    ) -> Self {
        let clock = ManualClock::at(epoch());
        let time = time.unwrap_or_else(|| Arc::new(clock.clone()));
        let plane = Cluster::start_on(nodes, Timing::default(), time.clone()).await;
        let mut f = Self {
            plane,
            clock,
            time,
            slots: 64,
            supervision: meridian_agent::supervisor::Supervision::InProcess,
            load: Default::default(),
            metrics_listen: None,
            takeover: TakeoverPolicy::default(),
            bucket: None,
            resources: Default::default(),
            catch_up_rate: 20.0,
            agents: BTreeMap::new(),
            links: BTreeMap::new(),
        };
        f.write(Command::CreateDataCenter(DataCenter {
            name: name("dc-a"),
            description: String::new(),
        }))
        .await;
        if backup {
            f.write(Command::CreateCluster(ClusterDef {
                name: name("spare"),
                dc: name("dc-a"),
                role: ClusterRole::Backup,
                backup: None,
                partitions: 16,
                lease_seconds,
            }))
            .await;
        }
        f.add_cluster("main", lease_seconds, backup.then_some("spare"))
            .await;
        f.write(Command::CreateEnvironment(Environment {
            name: name("prod"),
            cluster: name("main"),
            vars: BTreeMap::from([("GREETING".into(), "hello".into())]),
            work_dir: None,
            queue: None,
            // The harness's agents run tasks as the test's own user (root in CI, or a developer).
            run_as: RunAs {
                allow_agent_user: true,
                ..Default::default()
            },
        }))
        .await;
        f.write(Command::CreateTenant(Tenant {
            name: name("ads"),
            description: String::new(),
            log_retention_days: None,
            history_retention_days: None,
        }))
        .await;
        f.write(Command::CreateGrant(Grant {
            tenant: name("ads"),
            environment: name("prod"),
            // Enforced since issue #20: high enough that no test meets it unless it means to.
            max_concurrent_runs: QUOTA,
        }))
        .await;
        if backup {
            f.write(Command::CreateEnvironment(Environment {
                name: name("standby"),
                cluster: name("spare"),
                vars: BTreeMap::from([("GREETING".into(), "hello from the backup".into())]),
                work_dir: None,
                queue: None,
                // The harness's agents run tasks as the test's own user (root in CI, or a developer).
                run_as: RunAs {
                    allow_agent_user: true,
                    ..Default::default()
                },
            }))
            .await;
            f.write(Command::CreateGrant(Grant {
                tenant: name("ads"),
                environment: name("standby"),
                max_concurrent_runs: QUOTA,
            }))
            .await;
            f.write(Command::CreateTenant(Tenant {
                name: name("solo"),
                description: String::new(),
                log_retention_days: None,
                history_retention_days: None,
            }))
            .await;
            f.write(Command::CreateGrant(Grant {
                tenant: name("solo"),
                environment: name("prod"),
                max_concurrent_runs: QUOTA,
            }))
            .await;
        }
        f
    }

    pub async fn add_cluster(&mut self, cluster: &str, lease_seconds: u32, backup: Option<&str>) {
        self.write(Command::CreateCluster(ClusterDef {
            name: name(cluster),
            dc: name("dc-a"),
            role: ClusterRole::Active,
            backup: backup.map(name),
            partitions: 16,
            lease_seconds,
        }))
        .await;
    }

    /// Commits `command` (through any node) and panics if it is refused.
    pub async fn write(&self, command: Command) -> meridian_plane::model::processor::Applied {
        let leader = self.plane.leader().await;
        let proposal = Proposal::new("test", self.time.now_ms(), command);
        match self.plane.node(leader).write(proposal, PATIENCE).await {
            Ok(Outcome::Applied(applied)) => applied,
            other => panic!("write failed: {other:?}"),
        }
    }

    /// A workflow `name` of tenant `ads` running `script`, and a schedule of it named `name`.
    pub async fn schedule(&self, name_: &str, cron: &str, script: &str, overlap: OverlapPolicy) {
        self.schedule_spec(name_, ScheduleSpec::cron(cron), script, overlap)
            .await
    }

    pub async fn schedule_spec(
        &self,
        name_: &str,
        spec: ScheduleSpec,
        script: &str,
        overlap: OverlapPolicy,
    ) {
        self.schedule_for("ads", name_, spec, script, overlap).await
    }

    /// As [`Federation::schedule_spec`], for tenant `tenant` (environment `prod`).
    pub async fn schedule_for(
        &self,
        tenant: &str,
        name_: &str,
        spec: ScheduleSpec,
        script: &str,
        overlap: OverlapPolicy,
    ) {
        self.write(Command::ApplyWorkflow(Workflow {
            tenant: name(tenant),
            name: name(name_),
            environment: Some(name("prod")),
            definition: WorkflowDefinition::shell("main", script),
        }))
        .await;
        self.write(Command::CreateSchedule(Schedule {
            tenant: name(tenant),
            name: name(name_),
            workflow: name(name_),
            environment: name("prod"),
            spec,
            overlap,
            takeover: self.takeover,
        }))
        .await;
    }

    /// Agent `agent`'s data directory.
    pub fn agent_dir(&self, agent: &str) -> PathBuf {
        self.plane.dir.path().join("agents").join(agent)
    }

    /// Starts (or restarts, on the same data directory) agent `agent` of `cluster`, dialling
    /// the plane nodes directly.
    pub async fn start_agent(&mut self, agent: &str, cluster: &str) {
        let plane = (0..self.plane.size())
            .map(|i| format!("{}:{}", hostname(i), self.plane.port(i)))
            .collect();
        self.start_agent_on(agent, cluster, plane).await
    }

    /// Starts (or restarts) agent `agent` of `cluster` behind a link the test can cut
    /// ([`Federation::cut_link`]): it reaches every plane node, by hostname, through a relay.
    pub async fn start_agent_behind_link(&mut self, agent: &str, cluster: &str) {
        if !self.links.contains_key(agent) {
            let mut relays = Vec::new();
            for i in 0..self.plane.size() {
                let target = format!("127.0.0.1:{}", self.plane.port(i)).parse().unwrap();
                relays.push(Proxy::start(target).await);
            }
            self.links.insert(agent.into(), relays);
        }
        let plane = self.links[agent]
            .iter()
            .enumerate()
            .map(|(i, relay)| format!("{}:{}", hostname(i), relay.port()))
            .collect();
        self.start_agent_on(agent, cluster, plane).await
    }

    /// Cuts agent `agent`'s link to the plane (it must have been started behind one).
    pub fn cut_link(&self, agent: &str) {
        self.links[agent].iter().for_each(Proxy::cut);
    }

    pub fn heal_link(&self, agent: &str) {
        self.links[agent].iter().for_each(Proxy::heal);
    }

    async fn start_agent_on(&mut self, agent: &str, cluster: &str, plane: Vec<String>) {
        let leaf = certs::issue(&self.plane.ca, agent, Role::Agent, Some(cluster)).unwrap();
        let tls = TlsMaterial {
            ca: self.plane.ca.cert.clone().into_bytes(),
            cert: leaf.cert.into_bytes(),
            key: leaf.key.into_bytes(),
        };
        let dir = self.agent_dir(agent);
        let config = AgentConfig {
            hostname: agent.into(),
            cluster: cluster.into(),
            plane,
            data_dir: dir.clone(),
            tls: TlsFiles {
                ca: dir.join("unused"),
                cert: dir.join("unused"),
                key: dir.join("unused"),
            },
            hosts: self.plane.hosts(),
            slots: self.slots,
            catch_up_rate: self.catch_up_rate,
            kill_grace_seconds: 2,
            heartbeat_ms: 200,
            work_dir: None,
            bucket: self.bucket.clone(),
            resources: self.resources.clone(),
            metrics_listen: self.metrics_listen,
            supervisor: self.supervision.clone(),
            load: self.load.clone(),
        };
        let started = Agent::start(&config, &tls, self.time.clone())
            .await
            .expect("agent starts");
        self.agents.insert(agent.into(), started);
    }

    pub fn agent(&self, agent: &str) -> &Agent {
        &self.agents[agent]
    }

    /// Stops agent `agent` gracefully (as SIGTERM does): its runs finish, its outbox is
    /// flushed and its partitions are given back.
    pub async fn stop_agent(&mut self, agent: &str) {
        if let Some(a) = self.agents.remove(agent) {
            a.shutdown().await;
        }
    }

    /// Crashes agent `agent` (no graceful release).
    pub async fn kill_agent(&mut self, agent: &str) {
        if let Some(a) = self.agents.remove(agent) {
            a.abort().await;
        }
    }

    /// How many partitions of `cluster` `agent` holds.
    pub fn holding(&self, agent: &str, cluster: &str) -> usize {
        self.agents[agent]
            .held()
            .iter()
            .filter(|((c, _), _)| c == cluster)
            .count()
    }

    /// Waits until `agent` holds `n` partitions.
    pub async fn wait_for_partitions(&self, agent: &str, n: usize) {
        self.wait_until(&format!("{agent} to hold {n} partitions"), || async {
            self.agents[agent].held().len() == n
        })
        .await;
    }

    /// Waits until the plane has heard `agent` at the clock's present time. Agents heartbeat
    /// on real time, the plane stamps them with the injected clock: right after
    /// [`Federation::advance`] an agent looks unheard since the jump until its next heartbeat,
    /// and its lease still ends where its last renewal before the jump put it.
    pub async fn wait_heard_now(&self, agent: &str) {
        let now = self.clock.now().timestamp_millis();
        let pool = self
            .plane
            .node(self.plane.leader().await)
            .state
            .pool()
            .clone();
        self.wait_until(
            &format!("the plane to hear {agent} at {now} ms"),
            || async {
                query::agents(&pool)
                    .await
                    .unwrap()
                    .iter()
                    .any(|a| a.hostname == agent && a.last_seen_ms >= now)
            },
        )
        .await;
    }

    /// Starts `agent-1.test` and `agent-2.test` in `main` and waits until each holds half of
    /// its 16 partitions.
    pub async fn start_two_agents_holding_half(&mut self) {
        self.start_agent("agent-1.test", "main").await;
        self.start_agent("agent-2.test", "main").await;
        self.wait_until("both agents to hold 8 partitions", || async {
            self.agent("agent-1.test").held().len() == 8
                && self.agent("agent-2.test").held().len() == 8
        })
        .await;
    }

    /// Of the two agents [`Federation::start_two_agents_holding_half`] started: the one that
    /// ran `schedule`'s first record, and the other.
    pub async fn runner_and_other(&self, schedule: &str) -> (String, String) {
        let first = self.wait_for_history(schedule, 1).await;
        let runner = first[0].agent.clone().expect("the first run's agent");
        let other = if runner == "agent-1.test" {
            "agent-2.test"
        } else {
            "agent-1.test"
        };
        (runner, other.to_owned())
    }

    /// Polls `check` every 50 ms until it holds, or panics after 20 s naming `what`.
    pub async fn wait_until<F, Fut>(&self, what: &str, check: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !check().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited 20 s for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every attempt's log of `run_id`, read by the leader from every plane node's logbook.
    pub async fn logs(&self, run_id: &str) -> sqlx::Result<Vec<query::AttemptLog>> {
        let leader = self.plane.leader().await;
        meridian_plane::logs::across::logs(self.plane.node(leader), run_id).await
    }

    /// The run history of schedule `ads.<name>` as a running plane node holds it (after a read
    /// barrier), oldest fire first.
    pub async fn history(&self, schedule: &str) -> Vec<RunRecord> {
        self.history_of(&format!("ads.{schedule}")).await
    }

    /// The run history of schedule `<tenant>.<name>`, oldest fire first.
    pub async fn history_of(&self, schedule: &str) -> Vec<RunRecord> {
        let leader = self.plane.leader().await;
        let node = self.plane.node(leader);
        node.read_barrier(PATIENCE).await.expect("read barrier");
        let mut runs = node
            .state
            .runs()
            .runs(&RunFilter {
                schedule: Some(schedule.to_string()),
                limit: Some(100_000),
                ..RunFilter::default()
            })
            .await
            .expect("runs");
        runs.reverse();
        runs
    }

    /// Waits until every run of `schedule` due up to now has reached a final state on the
    /// plane and there are at least `at_least` of them.
    pub async fn wait_for_history(&self, schedule: &str, at_least: usize) -> Vec<RunRecord> {
        self.wait_for_history_of(&format!("ads.{schedule}"), at_least)
            .await
    }

    /// As [`Federation::wait_for_history`] for schedule `<tenant>.<name>`.
    pub async fn wait_for_history_of(&self, schedule: &str, at_least: usize) -> Vec<RunRecord> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let runs = self.history_of(schedule).await;
            let done = runs.iter().filter(|r| is_final(&r.state)).count();
            if runs.len() >= at_least && done == runs.len() {
                return runs;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited 30 s for {at_least} finished runs of {schedule}; have {}: {:#?}",
                runs.len(),
                runs.iter()
                    .map(|r| (&r.run_id, &r.state))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Moves the clock forward `by`, in steps of at most `step`, letting the agents act after
    /// each step (a jump would look like downtime).
    pub async fn advance(&self, by: Duration, step: Duration) {
        let mut left = by;
        while !left.is_zero() {
            let s = left.min(step);
            self.clock
                .advance(chrono::TimeDelta::from_std(s).expect("small step"));
            left -= s;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    pub async fn shutdown(mut self) {
        for (_, a) in std::mem::take(&mut self.agents) {
            a.abort().await;
        }
        self.links.clear();
        self.plane.shutdown().await;
    }
}

/// A run state nothing follows.
pub fn is_final(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "killed" | "skipped")
}

/// What the checker found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub due: usize,
    pub ran: usize,
    pub skipped: usize,
    pub lost: usize,
    pub duplicated: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "due {}, ran {}, skipped {}, lost {}, duplicated {}",
            self.due, self.ran, self.skipped, self.lost, self.duplicated
        )
    }
}

/// The fire times (ms) of `cron` in `(after, until]`.
pub fn due_times(cron: &str, after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<i64> {
    ScheduleSpec::cron(cron)
        .calendar()
        .unwrap()
        .fire_times(after)
        .take_while(|t| *t <= until)
        .map(|t| t.timestamp_millis())
        .collect()
}

/// Checks a schedule's history against its calendar: every fire time in `(after, until]` must
/// have exactly one run (ran or skipped); no run may have been started by more than one agent
/// or appear for a time the calendar does not have. Prints a one-line summary.
pub fn check(
    label: &str,
    cron: &str,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
    runs: &[RunRecord],
) -> Summary {
    let due = due_times(cron, after, until);
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    let mut duplicated = 0;
    for r in runs {
        let fire = r.fire_ms.expect("scheduled runs have a fire time");
        *seen.entry(fire).or_default() += 1;
        if r.starts > 1 {
            duplicated += r.starts as usize - 1;
        }
    }
    duplicated += seen
        .values()
        .filter(|n| **n > 1)
        .map(|n| n - 1)
        .sum::<usize>();
    let lost_times: Vec<String> = due
        .iter()
        .filter(|t| !seen.contains_key(t))
        .filter_map(|t| DateTime::from_timestamp_millis(*t))
        .map(|t| t.format("%H:%M:%S%.3f").to_string())
        .collect();
    if !lost_times.is_empty() {
        println!("history check [{label}]: no run for {lost_times:?}");
    }
    let lost = lost_times.len();
    let in_window: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| due.contains(&r.fire_ms.unwrap_or(-1)))
        .collect();
    let summary = Summary {
        due: due.len(),
        ran: in_window.iter().filter(|r| r.state != "skipped").count(),
        skipped: in_window.iter().filter(|r| r.state == "skipped").count(),
        lost,
        duplicated,
    };
    println!("history check [{label}]: {summary}");
    summary
}
