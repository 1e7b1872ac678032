//! The three-DC lab (`infra/lab`) driven from tests: the same script a user runs, the release
//! binaries, the example configs of `infra/federation/`. One lab at a time (the namespaces
//! have fixed names), so [`Lab::up`] takes a process-wide turn and `Drop` tears it down,
//! printing the tail of every node's log first when the test failed.
//!
//! Time here is real: the nodes are separate processes in separate namespaces, so waits are
//! for conditions read back through the API (leases held, runs recorded), each with a patience
//! that fails the test saying what did not happen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use meridian_plane::model::query::{LeaseRecord, RunRecord};
use serde_json::Value;

use crate::federation::{Summary, check, due_times, is_final};
use crate::process::Output;

static ONE_LAB: Mutex<()> = Mutex::new(());

/// Where the lab keeps its files while a test runs.
pub const LAB_DIR: &str = "/tmp/meridian-lab-test";

/// The repository's root (the lab script is `infra/lab` there).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_owned()
}

/// The release binaries `tests/run` built (`cargo build --release --bins`), in the target
/// directory this test was built into (`MERIDIAN_LAB_BIN` names another directory, e.g. the
/// debug binaries while working on a scenario).
pub fn release_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MERIDIAN_LAB_BIN") {
        return PathBuf::from(dir);
    }
    let dir = crate::profile_dir()
        .parent()
        .expect("target/<profile> is in target/")
        .join("release");
    for name in ["meridian", "meridian-agent"] {
        assert!(
            dir.join(name).is_file(),
            "{} is missing: the lab runs the release binaries; build them with \
             `cargo build --release --bins` (tests/run does)",
            dir.join(name).display()
        );
    }
    dir
}

/// Runs `infra/lab ARGS` against the test lab directory.
pub fn lab(args: &[&str]) -> Output {
    let out = Command::new(repo().join("infra/lab"))
        .args(args)
        .env("MERIDIAN_LAB_DIR", LAB_DIR)
        .env_remove("MERIDIAN_TOKEN")
        .output()
        .expect("running infra/lab");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A schedule a scenario runs throughout: its name (`lab.<name>`) and cron.
#[derive(Debug, Clone)]
pub struct Scheduled {
    pub name: String,
    pub cron: String,
    pub created: DateTime<Utc>,
}

/// Writes going on in the background ([`Lab::start_writer`]).
pub struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(Vec<String>, usize)>,
}

/// A lab that is up; [`Drop`] takes it down.
pub struct Lab {
    http: reqwest::Client,
    token: String,
    /// Plane hostnames (in order) and their public API addresses.
    planes: Vec<String>,
    /// Every write the plane acknowledged during the test: (API path, what it must contain).
    acknowledged: Vec<(String, String)>,
    /// How long each scheduled task runs after writing its ledger line (0: it ends at once).
    pub task_seconds: u32,
    _turn: MutexGuard<'static, ()>,
}

/// The ledger the scenarios' tasks write themselves: a line per execution, its run id (the
/// lab's nodes share this machine's filesystem).
pub fn ledger_path() -> PathBuf {
    Path::new(LAB_DIR).join("ledger")
}

/// What the tasks' own ledger says of `schedule` (`lab.<name>`): lines, and executions beyond
/// the first of one fire record.
pub fn ledger(schedule: &str) -> (usize, usize) {
    let text = std::fs::read_to_string(ledger_path()).unwrap_or_default();
    let prefix = format!("lab.{schedule}@");
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(&prefix)) {
        *seen.entry(line.trim()).or_default() += 1;
    }
    let lines = seen.values().sum();
    let twice = seen.values().map(|n| n - 1).sum();
    (lines, twice)
}

impl Lab {
    /// `infra/lab up ARGS` with the release binaries (a lab left over by a crashed run is
    /// taken down first).
    pub fn up(args: &[&str]) -> Self {
        let turn = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
        let _ = lab(&["down"]);
        let bin = release_dir();
        let mut all = vec!["up", "--bin", bin.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = lab(&all);
        if out.code != Some(0) {
            let logs = node_logs();
            let _ = lab(&["down"]);
            panic!("infra/lab up failed: {out:?}\n{logs}");
        }
        println!("{}", out.stdout);
        let env = lab(&["env"]);
        assert_eq!(env.code, Some(0), "{env:?}");
        let vars: BTreeMap<String, String> = env
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        // TLS trusting only the lab's CA, as the CLI builds it.
        let tls = meridian_plane::cli::client::tls(Some(Path::new(&vars["MERIDIAN_CA"])))
            .expect("the lab's CA");
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .use_preconfigured_tls(tls);
        let mut planes = Vec::new();
        for entry in vars["MERIDIAN_RESOLVE"].split(',') {
            let (host, addr) = entry.split_once('=').unwrap();
            builder = builder.resolve(host, addr.parse().unwrap());
            planes.push(host.to_owned());
        }
        Self {
            http: builder.build().unwrap(),
            token: vars["MERIDIAN_TOKEN"].clone(),
            planes,
            acknowledged: Vec::new(),
            task_seconds: 0,
            _turn: turn,
        }
    }

    /// `infra/lab ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = lab(args);
        assert_eq!(out.code, Some(0), "infra/lab {args:?}: {out:?}");
        out.stdout
    }

    /// `meridian ARGS` against the lab from the operator's host (`infra/lab cli`).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut all = vec!["cli"];
        all.extend_from_slice(args);
        lab(&all)
    }

    /// `GET /api/v1{path}` from the first plane node that answers.
    pub async fn get(&self, path: &str) -> Result<Value, String> {
        let mut errors = Vec::new();
        for host in &self.planes {
            let url = format!("https://{host}:8443/api/v1{path}");
            match self.http.get(&url).bearer_auth(&self.token).send().await {
                Ok(reply) if reply.status().is_success() => {
                    return reply.json().await.map_err(|e| format!("{url}: {e}"));
                }
                Ok(reply) => errors.push(format!("{url}: {}", reply.status())),
                Err(e) => errors.push(format!("{url}: {e}")),
            }
        }
        Err(errors.join("; "))
    }

    /// Creates a one-task workflow and a schedule running it in `env` on `cron` (allow_all:
    /// catch-up starts missed records a few per second, and the scenarios are about leases
    /// and history, not overlap), remembering both as acknowledged writes.
    pub fn schedule(&mut self, name: &str, env: &str, cron: &str) -> Scheduled {
        self.schedule_with(name, env, cron, "all")
    }

    /// As [`Lab::schedule`], with the catch-up policy `catch_up` (none, latest or all).
    pub fn schedule_with(
        &mut self,
        name: &str,
        env: &str,
        cron: &str,
        catch_up: &str,
    ) -> Scheduled {
        // Each execution says so in the ledger before anything else.
        let mut script = format!(
            "echo $MERIDIAN_RUN_ID; echo $MERIDIAN_RUN_ID >> {}",
            ledger_path().display()
        );
        if self.task_seconds > 0 {
            script.push_str(&format!("; sleep {}", self.task_seconds));
        }
        for args in [
            vec![
                "workflow", "create", "lab", name, "--shell", &script, "--env", env,
            ],
            vec![
                "schedule",
                "create",
                "lab",
                name,
                "--workflow",
                name,
                "--env",
                env,
                "--cron",
                cron,
                "--overlap",
                "allow_all",
                "--catch-up",
                catch_up,
            ],
        ] {
            let out = self.cli(&args);
            assert_eq!(out.code, Some(0), "{args:?}: {out:?}");
        }
        // The checker's window opens once the plane has acknowledged the schedule: a fire
        // time between the request and the answer may rightly not be the schedule's.
        let created = Utc::now();
        self.acknowledged
            .push((format!("/workflows/lab/{name}"), format!("\"{name}\"")));
        self.acknowledged
            .push((format!("/schedules/lab/{name}"), cron.to_owned()));
        Scheduled {
            name: name.to_owned(),
            cron: cron.to_owned(),
            created,
        }
    }

    /// Starts writing through the API while a fault goes on: creates workflows `<prefix>-N`
    /// one after another (from the operator's host, via `infra/lab cli`) until the returned
    /// writer is finished.
    pub fn start_writer(&self, prefix: &str) -> Writer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let prefix = prefix.to_owned();
        let thread = std::thread::spawn(move || {
            let (mut acked, mut failed) = (Vec::new(), 0);
            let mut n = 0;
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                let name = format!("{prefix}-{n}");
                let out = lab(&["cli", "workflow", "create", "lab", &name, "--shell", "true"]);
                if out.code == Some(0) {
                    acked.push(name);
                } else {
                    failed += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            (acked, failed)
        });
        Writer { stop, thread }
    }

    /// Stops `writer`; every workflow it had acknowledged joins the writes that must survive.
    pub fn finish_writer(&mut self, writer: Writer) {
        writer.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (acked, failed) = writer.thread.join().expect("the writer thread");
        println!(
            "writes during the fault: {} acknowledged, {failed} refused or failed",
            acked.len()
        );
        assert!(
            !acked.is_empty(),
            "no write was acknowledged during the fault"
        );
        for name in acked {
            self.acknowledged
                .push((format!("/workflows/lab/{name}"), format!("\"{name}\"")));
        }
    }

    /// The lab node (`plane-N`) that leads the plane now.
    pub async fn leader(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Value::Array(nodes)) = self.get("/plane/status").await {
                let leader = nodes.iter().find(|n| n["role"] == "leader");
                if let Some(host) = leader.and_then(|n| n["hostname"].as_str()) {
                    return host.split('.').next().unwrap().to_owned();
                }
            }
            assert!(Instant::now() < deadline, "no plane leader within 30 s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until every plane node reports itself reachable and applied within `lag` of the
    /// leader.
    pub async fn wait_for_plane(&self, patience: Duration) {
        let deadline = Instant::now() + patience;
        loop {
            let status = self.get("/plane/status").await;
            if let Ok(Value::Array(nodes)) = &status {
                let applied: Vec<u64> = nodes
                    .iter()
                    .filter_map(|n| n["applied_index"].as_u64())
                    .collect();
                let has_leader = nodes.iter().any(|n| n["role"] == "leader");
                if nodes.len() == 3
                    && applied.len() == 3
                    && has_leader
                    && nodes.iter().all(|n| n["reachable"] == true)
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the plane is not whole within {patience:?}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every write acknowledged during the test is still there (read from the leader).
    pub async fn assert_acknowledged_writes_kept(&self) {
        for (path, needle) in &self.acknowledged {
            let body = self
                .get(path)
                .await
                .unwrap_or_else(|e| panic!("acknowledged write {path} is gone: {e}"));
            assert!(
                body.to_string().contains(needle.as_str()),
                "acknowledged write {path} lost `{needle}`: {body}"
            );
        }
        println!(
            "acknowledged writes: {} kept, 0 lost",
            self.acknowledged.len()
        );
    }

    /// Every partition's lease.
    pub async fn leases(&self) -> Vec<LeaseRecord> {
        serde_json::from_value(self.get("/leases").await.expect("reading leases")).unwrap()
    }

    /// Waits until every partition of `cluster` is held by an agent named in `holders`.
    /// The records in doubt now (`GET /in-doubt`), summed over every schedule.
    pub async fn in_doubt(&self) -> usize {
        let listed = self.get("/in-doubt").await.unwrap_or_default();
        listed
            .as_array()
            .map(|ranges| {
                ranges
                    .iter()
                    .map(|r| r["records"].as_array().map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Waits until nothing is in doubt (the old holders' reports settled it).
    pub async fn wait_until_settled(&self, patience: Duration) {
        let deadline = Instant::now() + patience;
        loop {
            let left = self.in_doubt().await;
            if left == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{left} records still in doubt after {patience:?}: {:?}",
                self.get("/in-doubt").await
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn wait_for_holders(&self, cluster: &str, holders: &[&str], patience: Duration) {
        let deadline = Instant::now() + patience;
        loop {
            let leases = self
                .get("/leases")
                .await
                .ok()
                .map(|v| serde_json::from_value::<Vec<LeaseRecord>>(v).expect("lease records"));
            if let Some(leases) = &leases {
                let mine: Vec<&LeaseRecord> =
                    leases.iter().filter(|l| l.cluster == cluster).collect();
                if !mine.is_empty()
                    && mine.iter().all(|l| {
                        l.holder
                            .as_deref()
                            .is_some_and(|h| holders.iter().any(|w| h.starts_with(w)))
                    })
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{cluster}'s partitions not all held by {holders:?} within {patience:?}: {leases:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A schedule's whole history.
    pub async fn runs(&self, schedule: &str) -> Result<Vec<RunRecord>, String> {
        let value = self
            .get(&format!("/runs?schedule=lab.{schedule}&limit=100000"))
            .await?;
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    /// Waits until every fire time of `s` in `(s.created, until]` has a final run (or
    /// `patience` is over), then runs the history checker over that window and returns its
    /// summary.
    pub async fn check(
        &self,
        label: &str,
        s: &Scheduled,
        until: DateTime<Utc>,
        patience: Duration,
    ) -> Summary {
        let due = due_times(&s.cron, s.created, until);
        let deadline = Instant::now() + patience;
        let runs = loop {
            let runs = self.runs(&s.name).await;
            if let Ok(runs) = &runs {
                let done = |t: &i64| {
                    runs.iter()
                        .any(|r| r.fire_ms == Some(*t) && is_final(&r.state))
                };
                if due.iter().all(done) {
                    break runs.clone();
                }
            }
            if Instant::now() > deadline {
                break runs.unwrap_or_default();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        check(
            &format!("{label} {}", s.name),
            &s.cron,
            s.created,
            until,
            &runs,
        )
    }
}

impl Lab {
    /// Two schedules on dc-a's cluster, one on dc-b's, one on dc-c's: `a-one`, `a-two`,
    /// `b-one`, `c-one`.
    pub fn schedules(&mut self, cron: &str) -> Vec<Scheduled> {
        vec![
            self.schedule("a-one", "a-prod", cron),
            self.schedule("a-two", "a-prod", cron),
            self.schedule("b-one", "b-prod", cron),
            self.schedule("c-one", "c-prod", cron),
        ]
    }

    /// Ends a scenario: the history checker over every schedule (records due up to now), the
    /// acknowledged writes, and the lab's address check; prints the scenario's one-line
    /// summary and fails on any lost or duplicated fire record.
    pub async fn finish(&self, scenario: &str, schedules: &[Scheduled]) -> Summary {
        let until = Utc::now() - chrono::Duration::seconds(1);
        let mut total = Summary {
            due: 0,
            ran: 0,
            skipped: 0,
            lost: 0,
            duplicated: 0,
        };
        let mut ledger_twice = 0;
        for s in schedules {
            let one = self
                .check(scenario, s, until, Duration::from_secs(90))
                .await;
            // The tasks' own ledger: no fire record executed twice, and every run the
            // history says succeeded executed.
            let (lines, twice) = ledger(&s.name);
            ledger_twice += twice;
            let succeeded = self
                .runs(&s.name)
                .await
                .unwrap_or_default()
                .iter()
                .filter(|r| r.state == "succeeded")
                .count();
            assert!(
                lines >= succeeded,
                "[{scenario}] {}: the history has {succeeded} succeeded runs, the ledger {lines} \
                 executions",
                s.name
            );
            total.due += one.due;
            total.ran += one.ran;
            total.skipped += one.skipped;
            total.lost += one.lost;
            total.duplicated += one.duplicated;
        }
        // Straight to stderr, past the test harness's capture: CI shows one line per scenario.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "scenario [{scenario}]: {total}; ledger: {ledger_twice} executed twice"
        );
        assert_eq!(
            ledger_twice, 0,
            "[{scenario}] the tasks' ledger has fire records executed twice"
        );
        assert!(total.due > 0, "[{scenario}] nothing was due: {total}");
        assert_eq!(
            (total.lost, total.duplicated),
            (0, 0),
            "[{scenario}] fire records lost or run twice: {total}"
        );
        assert_eq!(total.ran + total.skipped, total.due, "[{scenario}] {total}");
        self.assert_acknowledged_writes_kept().await;
        self.ok(&["check"]);
        total
    }
}

/// The last lines of every node's log.
fn node_logs() -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(LAB_DIR) else {
        return out;
    };
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    dirs.sort();
    for dir in dirs {
        if let Ok(log) = std::fs::read_to_string(dir.join("log")) {
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            out.push_str(&format!("==> {} <==\n{}\n", dir.display(), tail.join("\n")));
        }
    }
    out
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", node_logs());
            let status = lab(&["status"]);
            eprintln!("{}{}", status.stdout, status.stderr);
        }
        if std::thread::panicking() && std::env::var_os("MERIDIAN_LAB_KEEP").is_some() {
            eprintln!("MERIDIAN_LAB_KEEP: the lab stays up in {LAB_DIR} (infra/lab down)");
            return;
        }
        let out = lab(&["down"]);
        if out.code != Some(0) && !std::thread::panicking() {
            panic!("infra/lab down left something behind: {out:?}");
        }
    }
}
