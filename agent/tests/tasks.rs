//! Task execution against real processes, a real outbox and a local HTTP server: one attempt
//! ([`task::run`]) — what a script sees, what is captured, how timeouts and kills end it — and
//! whole runs ([`Runner::run`]) — retries, the DAG, kills — read back from the outbox as the
//! plane would receive them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use meridian_agent::identity::TaskUser;
use meridian_agent::outbox::Outbox;
use meridian_agent::resources::ResourceCache;
use meridian_agent::runner::Runner;
use meridian_agent::supervisor::{AttemptKey, Supervision, Supervisor};
use meridian_agent::take::LocalRun;
use meridian_agent::task::{self, Attempt, AttemptEnd, Log};
use meridian_domain::SystemClock;
use meridian_domain::run::{AttemptEvent, AttemptOutcome, Job, Report, ReportItem, RunState};
use meridian_domain::workflow::{TaskKind, TaskSpec, WorkflowDefinition};
use tempfile::TempDir;
use tokio::sync::{Notify, mpsc, watch};

/// Long enough that an attempt ending before it shows TERM alone ended it.
const LONG_GRACE: Duration = Duration::from_secs(10);
/// How long any one wait in these tests may take before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(15);

/// The client the agent sends HTTP tasks with.
fn http_client() -> reqwest::Client {
    meridian_agent::agent::http_client().expect("an HTTP client")
}

fn shell(script: &str) -> TaskKind {
    TaskKind::Shell {
        script: script.into(),
    }
}

/// What one attempt needs, kept alive for the attempt's borrows. The kill sender is held so
/// the attempt is killed only when a test says so.
struct Fixture {
    dir: TempDir,
    env: BTreeMap<String, String>,
    http: reqwest::Client,
    kill: watch::Sender<bool>,
    /// Scripts run as the test's own user.
    user: TaskUser,
    /// Starts the scripts (in the test's process).
    supervisor: Arc<Supervisor>,
    attempts: std::sync::atomic::AtomicU32,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let supervisor = Supervisor::start(dir.path().join("supervisor"), Supervision::InProcess)
            .await
            .expect("a supervisor");
        Self {
            dir,
            env: BTreeMap::new(),
            http: http_client(),
            kill: watch::channel(false).0,
            user: TaskUser::agent().unwrap(),
            supervisor,
            attempts: Default::default(),
        }
    }

    fn attempt(&self, timeout: Option<Duration>, grace: Duration) -> Attempt<'_> {
        Attempt {
            env: &self.env,
            dir: self.dir.path(),
            user: Some(&self.user),
            timeout,
            grace,
            kill: self.kill.subscribe(),
            http: &self.http,
            supervisor: &self.supervisor,
            key: AttemptKey {
                run_id: "ads.etl@1".into(),
                task: "t".into(),
                attempt: self
                    .attempts
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                    + 1,
            },
            preamble: "",
        }
    }
}

/// Runs one attempt to its end; returns how it ended and its whole log.
async fn run(kind: &TaskKind, attempt: Attempt<'_>) -> (AttemptEnd, String) {
    let (tx, rx) = mpsc::unbounded_channel();
    let end = tokio::time::timeout(PATIENCE, task::run(kind, attempt, &Log(tx)))
        .await
        .expect("the attempt ends");
    (end, drain(rx, Vec::new()))
}

/// Everything left in a log whose writer is gone, after `seen`.
fn drain(mut rx: mpsc::UnboundedReceiver<Vec<u8>>, mut seen: Vec<u8>) -> String {
    while let Ok(chunk) = rx.try_recv() {
        seen.extend(chunk);
    }
    String::from_utf8(seen).unwrap()
}

/// Reads the log until `line` has been written; returns what was read.
async fn read_until(rx: &mut mpsc::UnboundedReceiver<Vec<u8>>, line: &str) -> Vec<u8> {
    let mut seen = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while !String::from_utf8_lossy(&seen).contains(line) {
            seen.extend(rx.recv().await.expect("the script is still writing"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("`{line}` never came; the log: {seen:?}"));
    seen
}

/// A shell attempt killed once it has printed `ready`: how it ended, its log, and how long
/// it took to end after the kill.
async fn killed_after_ready(script: &str, grace: Duration) -> (AttemptEnd, String, Duration) {
    let f = Fixture::new().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let log = Log(tx);
    let kind = shell(script);
    let attempt = async {
        let end = task::run(&kind, f.attempt(None, grace), &log).await;
        (end, Instant::now())
    };
    let control = async {
        let seen = read_until(&mut rx, "ready").await;
        f.kill.send(true).unwrap();
        (seen, Instant::now())
    };
    let ((end, ended_at), (seen, killed_at)) =
        tokio::time::timeout(PATIENCE, async { tokio::join!(attempt, control) })
            .await
            .expect("the killed attempt ends");
    drop(log);
    (end, drain(rx, seen), ended_at - killed_at)
}

/// True while `pid` is a live process (a zombie waiting to be reaped is not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself hold spaces.
        Ok(stat) => !matches!(
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}

/// Waits for `pid` to die; SIGKILL is delivered asynchronously.
async fn gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[tokio::test]
async fn a_script_gets_its_env_and_directory_and_its_output_and_exit_code_are_kept() {
    let mut f = Fixture::new().await;
    f.env.insert("GREETING".into(), "hello there".into());
    // Not there yet: the attempt creates it.
    let dir = f.dir.path().join("runs").join("ads.etl@1");
    let script = "echo \"out: $GREETING\"; echo \"err: in $(basename \"$PWD\")\" >&2; \
                  touch made-here; exit 3";
    let (end, log) = run(
        &shell(script),
        Attempt {
            dir: &dir,
            ..f.attempt(None, LONG_GRACE)
        },
    )
    .await;
    assert_eq!(
        end,
        AttemptEnd {
            outcome: AttemptOutcome::Failed,
            exit_code: Some(3),
            message: "exit code 3".into(),
        }
    );
    assert!(log.contains("out: hello there\n"), "{log:?}");
    assert!(log.contains("err: in ads.etl@1\n"), "{log:?}");
    assert!(dir.join("made-here").exists());

    let (end, log) = run(&shell("echo fine"), f.attempt(None, LONG_GRACE)).await;
    assert_eq!(
        (end.outcome, end.exit_code, log.as_str()),
        (AttemptOutcome::Succeeded, Some(0), "fine\n")
    );
}

#[tokio::test]
async fn a_timed_out_script_is_stopped_with_the_children_it_left_behind() {
    let f = Fixture::new().await;
    // The child ignores TERM, so only the group-wide KILL after the shell is gone can end it.
    let script = "(trap '' TERM; exec sleep 30) & echo $! > child.pid; echo waiting; wait";
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    let (end, log) = run(&shell(script), f.attempt(Some(timeout), LONG_GRACE)).await;
    let took = started.elapsed();
    assert_eq!(
        end,
        AttemptEnd {
            outcome: AttemptOutcome::TimedOut,
            exit_code: None,
            message: "timed out".into(),
        }
    );
    assert_eq!(log, "waiting\n");
    // The shell died of TERM; nothing waited for the grace period.
    assert!(
        took >= timeout && took < LONG_GRACE / 2,
        "took {took:?} with a timeout of {timeout:?}"
    );
    let pid: i32 = std::fs::read_to_string(f.dir.path().join("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        gone(pid).await,
        "the background child {pid} outlived the attempt"
    );
}

#[tokio::test]
async fn a_killed_script_that_ignores_term_is_killed_after_the_grace_period() {
    let grace = Duration::from_secs(1);
    let (end, log, took) =
        killed_after_ready("trap '' TERM; echo ready; sleep 30; echo survived", grace).await;
    assert_eq!(
        (end.outcome, end.exit_code, end.message.as_str()),
        (AttemptOutcome::Killed, None, "killed")
    );
    assert_eq!(log, "ready\n");
    assert!(
        took >= grace && took < grace + Duration::from_secs(5),
        "ended {took:?} after the kill, with a grace of {grace:?}"
    );
}

#[tokio::test]
async fn a_killed_script_that_keeps_printing_is_still_killed_after_the_grace_period() {
    // Output arriving during the grace period must not push the KILL back.
    let grace = Duration::from_secs(1);
    let (end, log, took) = killed_after_ready(
        "trap '' TERM; echo ready; while :; do echo tick; sleep 0.1; done",
        grace,
    )
    .await;
    assert_eq!(end.outcome, AttemptOutcome::Killed);
    assert!(
        log.starts_with("ready\n") && log.contains("tick\n"),
        "{log:?}"
    );
    assert!(
        took >= grace && took < grace + Duration::from_secs(5),
        "ended {took:?} after the kill, with a grace of {grace:?}"
    );
}

#[tokio::test]
async fn a_killed_script_that_exits_on_term_ends_at_once() {
    let (end, log, took) =
        killed_after_ready("echo ready; sleep 30; echo survived", LONG_GRACE).await;
    assert_eq!(
        (end.outcome, end.exit_code, end.message.as_str()),
        (AttemptOutcome::Killed, None, "killed")
    );
    assert_eq!(log, "ready\n");
    assert!(
        took < Duration::from_secs(3),
        "ended {took:?} after the kill, with a grace of {LONG_GRACE:?}"
    );
}

/// A request as the test server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    method: String,
    path: String,
    token: Option<String>,
    content_type: Option<String>,
    body: String,
}

type Inbox = Arc<Mutex<Vec<Received>>>;

/// Answers every request under `/hooks/` with 201 and a body, after recording it; `/slow`
/// never answers.
async fn serve() -> (String, Inbox) {
    async fn hook(
        State(inbox): State<Inbox>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: String,
    ) -> (StatusCode, &'static str) {
        let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
        inbox.lock().unwrap().push(Received {
            method: method.to_string(),
            path: uri.path().to_owned(),
            token: header("x-meridian-token"),
            content_type: header("content-type"),
            body,
        });
        (StatusCode::CREATED, "created job 7\n")
    }
    let inbox = Inbox::default();
    let app = axum::Router::new()
        .route("/hooks/{name}", axum::routing::any(hook))
        .route("/slow", axum::routing::get(std::future::pending::<()>))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, inbox)
}

fn http(method: &str, url: &str, expect_status: u16) -> TaskKind {
    TaskKind::Http {
        method: method.into(),
        url: url.into(),
        headers: BTreeMap::from([
            ("X-Meridian-Token".into(), "s3cret".into()),
            ("Content-Type".into(), "application/json".into()),
        ]),
        body: Some(r#"{"load":"nightly"}"#.into()),
        expect_status,
    }
}

#[tokio::test]
async fn an_http_task_sends_what_it_specifies_and_checks_the_status() {
    let (base, inbox) = serve().await;
    let f = Fixture::new().await;
    let url = format!("{base}/hooks/load");

    let (end, log) = run(&http("PUT", &url, 201), f.attempt(None, LONG_GRACE)).await;
    assert_eq!(
        end,
        AttemptEnd {
            outcome: AttemptOutcome::Succeeded,
            exit_code: Some(201),
            message: String::new(),
        }
    );
    assert_eq!(log, format!("PUT {url} -> 201\ncreated job 7\n"));
    assert_eq!(
        *inbox.lock().unwrap(),
        [Received {
            method: "PUT".into(),
            path: "/hooks/load".into(),
            token: Some("s3cret".into()),
            content_type: Some("application/json".into()),
            body: r#"{"load":"nightly"}"#.into(),
        }]
    );

    let (end, log) = run(&http("POST", &url, 200), f.attempt(None, LONG_GRACE)).await;
    assert_eq!(
        end,
        AttemptEnd {
            outcome: AttemptOutcome::Failed,
            exit_code: Some(201),
            message: "status 201, expected 200".into(),
        }
    );
    assert_eq!(log, format!("POST {url} -> 201\ncreated job 7\n"));
    assert_eq!(inbox.lock().unwrap().len(), 2);
    assert_eq!(inbox.lock().unwrap()[1].method, "POST");
}

#[tokio::test]
async fn an_http_task_that_cannot_connect_fails_saying_so() {
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hooks/load", listener.local_addr().unwrap())
    };
    let f = Fixture::new().await;
    let (end, log) = run(&http("POST", &refused, 200), f.attempt(None, LONG_GRACE)).await;
    assert_eq!((end.outcome, end.exit_code), (AttemptOutcome::Failed, None));
    assert!(
        end.message.starts_with(&format!("POST {refused}: "))
            && end.message.to_lowercase().contains("connection refused"),
        "{}",
        end.message
    );
    assert_eq!(log, "");
}

#[tokio::test]
async fn an_http_task_past_its_timeout_times_out() {
    let (base, _) = serve().await;
    let f = Fixture::new().await;
    let url = format!("{base}/slow");
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let (end, _) = run(
        &http("GET", &url, 200),
        f.attempt(Some(timeout), LONG_GRACE),
    )
    .await;
    assert_eq!(
        (end.outcome, end.message),
        (AttemptOutcome::TimedOut, format!("GET {url}: timed out"))
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A runner writing to an outbox in a directory of its own.
struct Agent {
    _dir: TempDir,
    runner: Runner,
}

impl Agent {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("agent.db")).await.unwrap();
        let runner = Runner {
            outbox,
            clock: Arc::new(SystemClock),
            work_dir: dir.path().join("runs"),
            grace: LONG_GRACE,
            http: http_client(),
            reported: Arc::new(Notify::new()),
            resources: ResourceCache::open(
                &dir.path().join("resources"),
                None,
                Default::default(),
                Arc::new(SystemClock),
            )
            .unwrap(),
            hostname: "agent-1".into(),
            supervisor: Supervisor::start(dir.path().join("supervisor"), Supervision::InProcess)
                .await
                .expect("a supervisor"),
        };
        Self { _dir: dir, runner }
    }

    /// The run's working directory.
    fn dir(&self, run: &LocalRun) -> PathBuf {
        self.runner.work_dir.join(&run.run_id)
    }

    /// Runs `run` to its end, with nobody killing it.
    async fn run(&self, run: &LocalRun) -> (RunState, String) {
        // Held to the end: a dropped sender reads as a kill to the attempts going.
        let (_kill, killed) = watch::channel(false);
        tokio::time::timeout(PATIENCE, self.runner.run(run, killed, None))
            .await
            .expect("the run ends")
    }

    /// Everything reported so far, in the order the plane would receive it.
    async fn reports(&self) -> Vec<ReportItem> {
        let entries = self.runner.outbox.pending(10_000).await.unwrap();
        entries
            .iter()
            .map(|e| {
                let report: Report = serde_json::from_str(&e.payload).unwrap();
                let Report::V1 { item, .. } = report;
                assert_eq!(item.key(), e.key, "entries are keyed by what they report");
                item
            })
            .collect()
    }

    async fn attempts(&self) -> Vec<AttemptEvent> {
        self.reports()
            .await
            .into_iter()
            .filter_map(|item| match item {
                ReportItem::Attempt(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    /// (task, attempt, outcome) of every attempt event, in order.
    async fn outcomes(&self) -> Vec<(String, u32, AttemptOutcome)> {
        self.attempts()
            .await
            .into_iter()
            .map(|a| (a.task, a.attempt, a.outcome))
            .collect()
    }

    /// One attempt's log, put together from its chunks.
    async fn log(&self, task: &str, attempt: u32) -> String {
        let mut chunks: Vec<_> = self
            .reports()
            .await
            .into_iter()
            .filter_map(|item| match item {
                ReportItem::Log(l) if l.task == task && l.attempt == attempt => Some(l),
                _ => None,
            })
            .collect();
        chunks.sort_by_key(|c| c.offset);
        chunks.into_iter().map(|c| c.data).collect()
    }
}

fn local_run(tasks: Vec<TaskSpec>) -> LocalRun {
    LocalRun {
        run_id: "ads.etl@20260101T000000Z".into(),
        schedule: None,
        fire_ms: None,
        cluster: "nj".into(),
        partition: Some(3),
        epoch: 2,
        state: RunState::Started,
        job: Job {
            tenant: "ads".into(),
            workflow: "etl".into(),
            workflow_version: 1,
            definition: WorkflowDefinition { tasks },
            environment: "prod".into(),
            vars: BTreeMap::new(),
            work_dir: None,
            os_user: None,
            // These tests run scripts as the test's own user; `isolation.rs` runs them as
            // others.
            allow_agent_user: true,
            rerun: None,
            backfill: false,
        },
    }
}

fn spec(name: &str, script: &str) -> TaskSpec {
    TaskSpec {
        name: name.into(),
        ..WorkflowDefinition::shell(name, script).tasks.remove(0)
    }
}

/// Fails until its third attempt in the same working directory.
const THIRD_TIME_LUCKY: &str = "n=$(( $(cat tries 2>/dev/null || echo 0) + 1 )); echo $n > tries; \
                                echo \"attempt $n\"; [ $n -ge 3 ]";

fn outcomes(task: &str, list: &[(u32, AttemptOutcome)]) -> Vec<(String, u32, AttemptOutcome)> {
    list.iter()
        .map(|&(attempt, outcome)| (task.to_owned(), attempt, outcome))
        .collect()
}

#[tokio::test]
async fn a_failing_task_is_retried_with_doubling_delays_until_it_succeeds() {
    use AttemptOutcome::*;
    let agent = Agent::new().await;
    let run = local_run(vec![TaskSpec {
        retries: 2,
        retry_delay_seconds: 1,
        ..spec("flaky", THIRD_TIME_LUCKY)
    }]);
    assert_eq!(agent.run(&run).await, (RunState::Succeeded, String::new()));
    assert_eq!(
        agent.outcomes().await,
        outcomes(
            "flaky",
            &[
                (1, Started),
                (1, Failed),
                (2, Started),
                (2, Failed),
                (3, Started),
                (3, Succeeded),
            ]
        )
    );
    let attempts = agent.attempts().await;
    assert_eq!(attempts[1].exit_code, Some(1));
    assert_eq!(attempts[5].exit_code, Some(0));
    for attempt in 1..=3 {
        assert_eq!(
            agent.log("flaky", attempt).await,
            format!("attempt {attempt}\n")
        );
    }
    // The wait before a retry runs from the previous attempt's end: 1 s, then 2 s.
    let first_wait = attempts[2].at_ms - attempts[1].at_ms;
    let second_wait = attempts[4].at_ms - attempts[3].at_ms;
    assert!(
        (1_000..2_000).contains(&first_wait) && second_wait >= 2_000,
        "waited {first_wait} ms, then {second_wait} ms"
    );
}

#[tokio::test]
async fn retries_stop_when_the_retry_budget_is_spent() {
    use AttemptOutcome::*;
    let agent = Agent::new().await;
    // Attempt 2 would start at 1 s (in budget); attempt 3 at 3 s (past it).
    let run = local_run(vec![TaskSpec {
        retries: 5,
        retry_delay_seconds: 1,
        retry_max_seconds: Some(2),
        ..spec("flaky", THIRD_TIME_LUCKY)
    }]);
    assert_eq!(
        agent.run(&run).await,
        (RunState::Failed, "task `flaky` failed".into())
    );
    assert_eq!(
        agent.outcomes().await,
        outcomes(
            "flaky",
            &[(1, Started), (1, Failed), (2, Started), (2, Failed)]
        )
    );
    let tries = std::fs::read_to_string(agent.dir(&run).join("tries")).unwrap();
    assert_eq!(tries, "2\n");
}

#[tokio::test]
async fn a_task_whose_dependency_failed_never_starts_and_says_why() {
    use AttemptOutcome::*;
    let agent = Agent::new().await;
    let run = local_run(vec![
        spec("a", "echo a; exit 1"),
        TaskSpec {
            depends_on: vec!["a".into()],
            ..spec("b", "touch b-ran")
        },
        // Downstream of `b`: not started because of `a` too.
        TaskSpec {
            depends_on: vec!["b".into()],
            ..spec("d", "touch d-ran")
        },
        // Independent of `a`: it runs alongside.
        spec("c", "echo c"),
        // Independent too, but after one still going when `a` fails: the run ends first.
        spec("slow", "sleep 0.5"),
        TaskSpec {
            depends_on: vec!["slow".into()],
            ..spec("later", "touch later-ran")
        },
    ]);
    assert_eq!(
        agent.run(&run).await,
        (RunState::Failed, "task `a` failed".into())
    );
    let mut outcomes = agent.outcomes().await;
    // Tasks run at once; each one's events stay in order (the sort is stable).
    outcomes.sort_by(|x, y| x.0.cmp(&y.0));
    let at = |task: &str, attempt, outcome| (task.to_owned(), attempt, outcome);
    assert_eq!(
        outcomes,
        [
            at("a", 1, Started),
            at("a", 1, Failed),
            at("b", 0, UpstreamFailed),
            at("c", 1, Started),
            at("c", 1, Succeeded),
            at("d", 0, UpstreamFailed),
            at("later", 0, NotStarted),
            at("slow", 1, Started),
            at("slow", 1, Succeeded),
        ]
    );
    let said: BTreeMap<String, String> = agent
        .attempts()
        .await
        .into_iter()
        .filter(|a| a.attempt == 0)
        .map(|a| (a.task, a.message))
        .collect();
    assert_eq!(said["b"], "upstream task `a` failed");
    assert_eq!(said["d"], "upstream task `a` failed");
    assert_eq!(said["later"], "the run failed first (task `a` failed)");
    for never in ["b-ran", "d-ran", "later-ran"] {
        assert!(!agent.dir(&run).join(never).exists(), "{never}");
    }
    assert_eq!(agent.log("a", 1).await, "a\n");
}

#[tokio::test]
async fn a_dependent_task_starts_only_after_its_dependency_succeeded() {
    let agent = Agent::new().await;
    let run = local_run(vec![
        TaskSpec {
            depends_on: vec!["a".into()],
            ..spec("b", "cat from-a")
        },
        spec("a", "sleep 0.2; echo handed-over > from-a"),
    ]);
    assert_eq!(agent.run(&run).await, (RunState::Succeeded, String::new()));
    let order: Vec<_> = agent
        .outcomes()
        .await
        .into_iter()
        .map(|(task, _, outcome)| (task, outcome))
        .collect();
    assert_eq!(
        order,
        [
            ("a".to_owned(), AttemptOutcome::Started),
            ("a".to_owned(), AttemptOutcome::Succeeded),
            ("b".to_owned(), AttemptOutcome::Started),
            ("b".to_owned(), AttemptOutcome::Succeeded),
        ]
    );
    assert_eq!(agent.log("b", 1).await, "handed-over\n");
}

#[tokio::test]
async fn a_killed_run_ends_killed_without_retrying() {
    use AttemptOutcome::*;
    let agent = Agent::new().await;
    let run = local_run(vec![
        TaskSpec {
            retries: 3,
            ..spec("long", "echo ready; sleep 30")
        },
        TaskSpec {
            depends_on: vec!["long".into()],
            ..spec("after", "true")
        },
    ]);
    let (kill, killed) = watch::channel(false);
    let started = Instant::now();
    let control = async {
        // The runner wakes `reported` after every outbox write.
        while !agent.log("long", 1).await.contains("ready") {
            agent.runner.reported.notified().await;
        }
        kill.send(true).unwrap();
    };
    let ((state, message), ()) = tokio::time::timeout(PATIENCE, async {
        tokio::join!(agent.runner.run(&run, killed, None), control)
    })
    .await
    .expect("the killed run ends");
    assert_eq!((state, message.as_str()), (RunState::Killed, "killed"));
    assert!(
        started.elapsed() < LONG_GRACE,
        "took {:?}: the script should have ended on TERM",
        started.elapsed()
    );
    let attempts = agent.attempts().await;
    let mut expected = outcomes("long", &[(1, Started), (1, Killed)]);
    expected.extend(outcomes("after", &[(0, NotStarted)]));
    assert_eq!(agent.outcomes().await, expected);
    assert_eq!(attempts[1].message, "killed");
    assert_eq!(attempts[2].message, "the run was killed first");
}
