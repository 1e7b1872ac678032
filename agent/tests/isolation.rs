//! Where tasks run, against real processes and real OS users: a shell task runs as its
//! tenant's user (uid, gid and supplementary groups), with a clean environment, in a directory
//! of its own, and reaches nothing of the agent's (key, database, data directory) or of another
//! tenant's runs; a task whose environment maps no user, or maps root, is refused with a
//! message that says what to set; allowed, a task runs as the agent itself.
//!
//! The first test makes throw-away users (`useradd`, removed on drop) and so needs root; it
//! fails, saying so, rather than skip. The resource cache's part is in
//! `tests/tests/resource_isolation.rs` (it needs the S3 harness of the tests crate).

#[path = "common/os_users.rs"]
mod os_users;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

use meridian_agent::outbox::Outbox;
use meridian_agent::resources::ResourceCache;
use meridian_agent::run_dir;
use meridian_agent::runner::Runner;
use meridian_agent::supervisor::{Supervision, Supervisor};
use meridian_agent::take::LocalRun;
use meridian_domain::SystemClock;
use meridian_domain::run::{AttemptOutcome, Job, OsUser, Report, ReportItem, RunState};
use meridian_domain::workflow::{TaskKind, TaskSpec, WorkflowDefinition};
use os_users::OsUsers;
use tempfile::TempDir;
use tokio::sync::{Notify, watch};

const PATIENCE: Duration = Duration::from_secs(30);

/// The agent's own credentials, in its environment as an operator would give them.
fn agent_has_credentials() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: set once, before any test of this binary starts a task (each calls this
        // first); nothing else here reads or writes the environment.
        unsafe {
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "agent-secret-access-key");
            std::env::set_var("AWS_ACCESS_KEY_ID", "AKIAAGENTAGENTAGENT");
        }
    });
}

/// A runner laid out as an agent is: a data directory with the database and the cache, the
/// runs under it, and a TLS key in a directory next to it; modes set as `Agent::start` sets
/// them.
struct Agent {
    _root: TempDir,
    data: PathBuf,
    key: PathBuf,
    runner: Runner,
}

impl Agent {
    async fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        // Like /var/lib or /etc: anyone may pass through. (A temporary directory is 0700,
        // which alone would keep every other user out and prove nothing.)
        set_mode(root.path(), 0o755);
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        set_mode(&data, 0o755);
        let certs = root.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        set_mode(&certs, 0o755);
        // Left readable, as an operator might copy it; the agent takes that back.
        let key = certs.join("agent.key");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        set_mode(&key, 0o644);
        let outbox = Outbox::open(&data.join("agent.db")).await.unwrap();
        let runner = Runner {
            outbox,
            clock: Arc::new(SystemClock),
            work_dir: data.join("runs"),
            grace: Duration::from_secs(2),
            http: http_client(),
            reported: Arc::new(Notify::new()),
            resources: ResourceCache::open(
                &data.join("resources"),
                None,
                Default::default(),
                Arc::new(SystemClock),
            )
            .unwrap(),
            hostname: "agent-1".into(),
            supervisor: Supervisor::start(data.join("supervisor"), Supervision::InProcess)
                .await
                .expect("a supervisor"),
        };
        run_dir::secure(&data, &runner.work_dir, &key).unwrap();
        Self {
            _root: root,
            data,
            key,
            runner,
        }
    }

    fn dir(&self, run: &LocalRun) -> PathBuf {
        self.runner.work_dir.join(&run.run_id)
    }

    async fn run(&self, run: &LocalRun) -> (RunState, String) {
        let (_kill, killed) = watch::channel(false);
        tokio::time::timeout(PATIENCE, self.runner.run(run, killed, None))
            .await
            .expect("the run ends")
    }

    async fn reports(&self, run_id: &str) -> Vec<ReportItem> {
        let entries = self.runner.outbox.pending(10_000).await.unwrap();
        entries
            .iter()
            .map(|e| {
                let Report::V1 { item, .. } = serde_json::from_str(&e.payload).unwrap();
                item
            })
            .filter(|item| item.run_id() == run_id)
            .collect()
    }

    /// (task, attempt, outcome, message) of every attempt event of `run_id`, in order.
    async fn attempts(&self, run_id: &str) -> Vec<(String, u32, AttemptOutcome, String)> {
        self.reports(run_id)
            .await
            .into_iter()
            .filter_map(|item| match item {
                ReportItem::Attempt(a) => Some((a.task, a.attempt, a.outcome, a.message)),
                _ => None,
            })
            .collect()
    }

    async fn log(&self, run_id: &str, task: &str) -> String {
        let mut chunks: Vec<_> = self
            .reports(run_id)
            .await
            .into_iter()
            .filter_map(|item| match item {
                ReportItem::Log(l) if l.task == task && l.attempt == 1 => Some(l),
                _ => None,
            })
            .collect();
        chunks.sort_by_key(|c| c.offset);
        chunks.into_iter().map(|c| c.data).collect()
    }
}

/// The client the agent sends HTTP tasks with.
fn http_client() -> reqwest::Client {
    meridian_agent::agent::http_client().expect("an HTTP client")
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_and_owner(path: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap();
    (m.mode() & 0o7777, m.uid(), m.gid())
}

fn os_user(user: &str) -> Option<OsUser> {
    Some(OsUser {
        user: user.into(),
        group: None,
    })
}

fn shell(name: &str, script: &str) -> TaskSpec {
    TaskSpec {
        name: name.into(),
        ..WorkflowDefinition::shell(name, script).tasks.remove(0)
    }
}

/// A run of tenant `tenant` in environment `prod`, whose tenant maps to `os_user`.
fn run(
    run_id: &str,
    tenant: &str,
    os_user: Option<OsUser>,
    allow_agent_user: bool,
    tasks: Vec<TaskSpec>,
    vars: BTreeMap<String, String>,
) -> LocalRun {
    LocalRun {
        run_id: run_id.into(),
        schedule: None,
        fire_ms: None,
        cluster: "main".into(),
        partition: None,
        epoch: 0,
        state: RunState::Started,
        job: Job {
            tenant: tenant.into(),
            workflow: "etl".into(),
            workflow_version: 1,
            definition: WorkflowDefinition { tasks },
            environment: "prod".into(),
            vars,
            work_dir: None,
            os_user,
            allow_agent_user,
            rerun: None,
            backfill: false,
        },
    }
}

/// The groups `id -G` lists, as a set (its order is not the point).
fn group_set(list: &str) -> BTreeSet<u32> {
    list.split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect()
}

/// What a task of tenant A tries. Every line says whether it got in; the variables point it
/// at the agent's files and at tenant B's run.
const PROBE: &str = r#"echo "uid=$(id -u) gid=$(id -g)"
echo "groups=$(id -G)"
echo "user=$USER logname=$LOGNAME home=$HOME path=$PATH"
env | grep '^AWS_' || echo "no AWS variables"
cat "$KEY" >/dev/null 2>&1 && echo "read the agent's key" || echo "key: denied"
cat "$DB" >/dev/null 2>&1 && echo "read the agent's database" || echo "database: denied"
ls "$DATA" >/dev/null 2>&1 && echo "listed the data directory" || echo "data directory: denied"
ls "$RUNS" >/dev/null 2>&1 && echo "listed every run" || echo "runs: denied"
ls "$B_RUN" >/dev/null 2>&1 && echo "listed B's run" || echo "B's run: denied"
cat "$B_RUN/b-file" >/dev/null 2>&1 && echo "read B's file" || echo "B's file: denied"
echo mine > a-file && mkdir a-dir && echo "wrote in its own directory"
"#;

#[tokio::test]
async fn a_task_runs_as_its_tenants_user_and_reaches_nothing_of_the_agent_or_another_tenant() {
    let mut users = OsUsers::new();
    let extra = users.group("g");
    let a = users.user("a", &[&extra]);
    let b = users.user("b", &[]);
    agent_has_credentials();
    let agent = Agent::new().await;

    // The agent's own files, as `Agent::start` leaves them.
    let runs = &agent.runner.work_dir;
    assert_eq!(mode_and_owner(&agent.data), (0o711, 0, 0));
    assert_eq!(mode_and_owner(runs), (0o711, 0, 0));
    assert_eq!(mode_and_owner(&agent.data.join("agent.db")).0, 0o600);
    assert_eq!(mode_and_owner(&agent.data.join("resources")).0, 0o700);
    assert_eq!(mode_and_owner(&agent.key).0, 0o600);

    // Tenant B leaves a file anybody could read, in its own run directory.
    let b_run = run(
        "bee.etl@1",
        "bee",
        os_user(&b.name),
        false,
        vec![shell("main", "umask 022; echo b-secret > b-file")],
        BTreeMap::new(),
    );
    assert_eq!(
        agent.run(&b_run).await,
        (RunState::Succeeded, String::new())
    );
    let b_dir = agent.dir(&b_run);

    let vars = BTreeMap::from([
        ("KEY".to_owned(), agent.key.display().to_string()),
        (
            "DB".to_owned(),
            agent.data.join("agent.db").display().to_string(),
        ),
        ("DATA".to_owned(), agent.data.display().to_string()),
        ("RUNS".to_owned(), runs.display().to_string()),
        ("B_RUN".to_owned(), b_dir.display().to_string()),
    ]);
    let a_run = run(
        "ads.etl@1",
        "ads",
        os_user(&a.name),
        false,
        vec![shell("main", PROBE)],
        vars,
    );
    let (state, message) = agent.run(&a_run).await;
    let log = agent.log("ads.etl@1", "main").await;
    assert_eq!(
        (state, message.as_str()),
        (RunState::Succeeded, ""),
        "{log}"
    );
    let a_dir = agent.dir(&a_run);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], format!("uid={} gid={}", a.uid, a.gid), "{log}");
    // Its own groups, from the host's group database; none of the agent's (root's) left.
    let expected_groups = os_users::command("id")
        .args(["-G", &a.name])
        .output()
        .unwrap();
    let expected_groups = group_set(&String::from_utf8(expected_groups.stdout).unwrap());
    assert_eq!(expected_groups.len(), 2, "{expected_groups:?}");
    assert_eq!(
        group_set(lines[1].trim_start_matches("groups=")),
        expected_groups,
        "{log}"
    );
    assert_eq!(
        lines[2..],
        [
            // A system user without a home: HOME is the working directory.
            format!(
                "user={} logname={} home={} path=/usr/local/bin:/usr/bin:/bin",
                a.name,
                a.name,
                a_dir.display()
            )
            .as_str(),
            "no AWS variables",
            "key: denied",
            "database: denied",
            "data directory: denied",
            "runs: denied",
            "B's run: denied",
            "B's file: denied",
            "wrote in its own directory",
        ],
        "{log}"
    );
    // What each made is its own, in a directory that is its own alone.
    assert_eq!(mode_and_owner(&a_dir), (0o700, a.uid, a.gid));
    for made in ["a-file", "a-dir"] {
        let (_, uid, gid) = mode_and_owner(&a_dir.join(made));
        assert_eq!((uid, gid), (a.uid, a.gid), "{made}");
    }
    assert_eq!(mode_and_owner(&b_dir), (0o700, b.uid, b.gid));
    assert_eq!(mode_and_owner(&b_dir.join("b-file")).1, b.uid);
}

#[tokio::test]
async fn a_task_whose_environment_maps_no_user_or_root_is_refused_saying_what_to_set() {
    agent_has_credentials();
    let agent = Agent::new().await;
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    let me = os_users::command("id")
        .args(["-un", &me.to_string()])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap();

    // No mapping: the script would run as the agent. A no-op task runs inside the agent and
    // needs no user; the shell task is refused once, not retried.
    let unmapped = run(
        "ads.etl@1",
        "ads",
        None,
        false,
        vec![
            TaskSpec {
                kind: TaskKind::Noop {},
                ..shell("join", "")
            },
            TaskSpec {
                retries: 2,
                ..shell("main", "touch ran")
            },
        ],
        BTreeMap::new(),
    );
    let why = format!(
        "refusing to run tenant `ads`'s task as the agent's own user `{me}`: environment `prod` \
         maps no OS user for the tenant; set run_as.tenants.ads or run_as.default on the \
         environment (or run_as.allow_agent_user = true to let tasks run as the agent's user)"
    );
    assert_eq!(
        agent.run(&unmapped).await,
        (
            RunState::Failed,
            format!("task `main` could not start: {why}")
        )
    );
    let mut attempts = agent.attempts("ads.etl@1").await;
    attempts.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        attempts,
        [
            ("join".into(), 1, AttemptOutcome::Started, String::new()),
            ("join".into(), 1, AttemptOutcome::Succeeded, String::new()),
            ("main".into(), 1, AttemptOutcome::Started, String::new()),
            ("main".into(), 1, AttemptOutcome::Failed, why.clone()),
        ]
    );
    assert_eq!(
        agent.log("ads.etl@1", "main").await,
        format!("meridian: {why}\n")
    );
    assert!(
        !agent.dir(&unmapped).exists(),
        "nothing was started or made"
    );

    // Mapped to root, explicitly: refused too.
    let as_root = run(
        "ads.etl@2",
        "ads",
        os_user("root"),
        false,
        vec![shell("main", "touch ran")],
        BTreeMap::new(),
    );
    let (state, message) = agent.run(&as_root).await;
    assert_eq!(state, RunState::Failed);
    assert!(
        message.starts_with(
            "task `main` could not start: refusing to run tenant `ads`'s task as `root` (uid \
             0): it is root, which could read the agent's key, database and every tenant's \
             files; map the tenant to an unprivileged user with run_as.tenants.ads or \
             run_as.default on environment `prod`"
        ),
        "{message}"
    );
    assert!(!agent.dir(&as_root).exists());

    // A user this host does not have: named, with the environment and the host.
    let missing = OsUsers::name("nobody-here");
    let unknown = run(
        "ads.etl@3",
        "ads",
        os_user(&missing),
        true,
        vec![shell("main", "touch ran")],
        BTreeMap::new(),
    );
    assert_eq!(
        agent.run(&unknown).await,
        (
            RunState::Failed,
            format!(
                "task `main` could not start: user `{missing}` of environment `prod` does not \
                 exist on host `agent-1`: create it there (useradd) or change the environment's \
                 run_as"
            )
        )
    );
}

#[tokio::test]
async fn allowed_a_task_runs_as_the_agent_itself_with_nothing_of_its_environment() {
    agent_has_credentials();
    let agent = Agent::new().await;
    let allowed = run(
        "ads.etl@1",
        "ads",
        None,
        true,
        vec![shell(
            "main",
            "id -u; env | cut -d= -f1 | sort; [ \"$PWD\" = \"$(pwd)\" ]",
        )],
        BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]),
    );
    let (state, _) = agent.run(&allowed).await;
    let log = agent.log("ads.etl@1", "main").await;
    assert_eq!(state, RunState::Succeeded, "{log}");
    let mut lines = log.lines();
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    assert_eq!(lines.next(), Some(me.to_string().as_str()), "{log}");
    let names: BTreeSet<&str> = lines.collect();
    // What the shell adds itself (PWD, and SHLVL/OLDPWD/_ for some shells) aside, exactly
    // the environment's variables, the run's and the minimal four.
    let shells_own = ["OLDPWD", "PWD", "SHLVL", "_"];
    let names: BTreeSet<&str> = names
        .into_iter()
        .filter(|n| !shells_own.contains(n))
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "GREETING",
            "HOME",
            "LOGNAME",
            "MERIDIAN_GENERATION",
            "MERIDIAN_RUN_ID",
            "PATH",
            "USER"
        ]),
        "{log}"
    );
    assert_eq!(mode_and_owner(&agent.dir(&allowed)).0, 0o700);
}
