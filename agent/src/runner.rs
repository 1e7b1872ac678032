//! Running one workflow run: its tasks in dependency order (independent ones at once), each
//! with its timeout and retries, every attempt and every piece of output written to the
//! outbox as it happens.
//!
//! A task runs once every task it depends on has succeeded. When a task fails for good (its
//! retries spent, or the retry budget `retry_max_seconds` gone), no further task starts, the
//! ones already going finish, and the run fails. A kill stops every attempt going (TERM, grace,
//! KILL) and ends the run `killed`.
//!
//! Who the run's shell tasks run as is decided once per run ([`identity::task_user`]); a shell
//! task the decision refuses fails on its first attempt without starting anything and is not
//! retried (the same attempt would be refused the same way), and the run's message says why.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meridian_domain::Clock;
use meridian_domain::run::{AttemptEvent, AttemptOutcome, LogChunk, Report, ReportItem, RunState};
use meridian_domain::workflow::{TaskKind, TaskSpec};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::identity::{self, IdentityError, TaskUser};
use crate::outbox::Outbox;
use crate::resources::{Prepared, ResourceCache};
use crate::resume::{Resume, TaskResume};
use crate::run_dir;
use crate::store::LogMark;
use crate::supervisor::{AttemptKey, Supervisor};
use crate::take::LocalRun;
use crate::task::{self, Attempt, AttemptEnd, Following, Log};

/// The tasks of `run` that never started, in dependency order, with why: downstream of a
/// task that failed for good (`upstream_failed`, naming it), or left when the run ended
/// first (`not_started`: another branch failed, or the run was killed — then every one).
fn never_started(
    run: &LocalRun,
    started: &BTreeSet<String>,
    failed: &[String],
    killed: bool,
) -> Vec<(String, AttemptOutcome, String)> {
    let definition = &run.job.definition;
    let order: Vec<&str> = definition
        .topological_order()
        .unwrap_or_else(|_| definition.tasks.iter().map(|t| t.name.as_str()).collect());
    // For each task that failed or cannot run because of one: the task that failed.
    let mut cause: BTreeMap<&str, &str> = failed.iter().map(|t| (t.as_str(), t.as_str())).collect();
    let mut out = Vec::new();
    for name in order {
        if started.contains(name) {
            continue;
        }
        let Some(task) = definition.tasks.iter().find(|t| t.name == name) else {
            continue;
        };
        // A kill ends the run whatever failed on the way (its own TERM fails what was going).
        let upstream = (!killed)
            .then(|| {
                task.depends_on
                    .iter()
                    .find_map(|d| cause.get(d.as_str()).copied())
            })
            .flatten();
        match upstream {
            Some(root) => {
                cause.insert(name, root);
                out.push((
                    name.to_owned(),
                    AttemptOutcome::UpstreamFailed,
                    format!("upstream task `{root}` failed"),
                ));
            }
            None => {
                let why = if killed {
                    "the run was killed first".to_owned()
                } else {
                    match failed.first() {
                        Some(t) => format!("the run failed first (task `{t}` failed)"),
                        None => "the run ended first".to_owned(),
                    }
                };
                out.push((name.to_owned(), AttemptOutcome::NotStarted, why));
            }
        }
    }
    out
}

/// What every run shares.
#[derive(Clone)]
pub struct Runner {
    pub outbox: Outbox,
    pub clock: Arc<dyn Clock>,
    /// Base of runs' working directories when the environment names none.
    pub work_dir: PathBuf,
    pub grace: Duration,
    pub http: reqwest::Client,
    /// Wakes the reporter when there is something new in the outbox.
    pub reported: Arc<tokio::sync::Notify>,
    /// Where tasks' resources come from.
    pub resources: ResourceCache,
    /// This agent's hostname, named when a run's OS user does not exist here.
    pub hostname: String,
    /// Who starts shell tasks (and keeps them going through an agent restart).
    pub supervisor: Arc<Supervisor>,
}

/// Who a run's shell tasks run as, or why they may not start; decided once per run.
type RunUser = Option<Arc<Result<TaskUser, IdentityError>>>;

/// How a task ended, for the run.
enum TaskEnd {
    Succeeded,
    Failed,
    /// Refused before anything started; the message says why.
    Refused(String),
}

/// A log is cut into a chunk at this size, or when this long has passed since the first
/// unsent byte.
const CHUNK_BYTES: usize = 32 * 1024;
const CHUNK_DELAY: Duration = Duration::from_millis(200);

impl Runner {
    /// Writes `item` to the outbox under `run`'s lease.
    pub async fn report(&self, run: &LocalRun, item: ReportItem) {
        self.record(run, item, None).await
    }

    /// Writes a log chunk to the outbox, with how far its attempt's output is recorded now
    /// (`upto` bytes: where a re-attached attempt's log goes on from).
    async fn report_log(&self, run: &LocalRun, chunk: LogChunk, upto: u64) {
        let mark = LogMark {
            run_id: chunk.run_id.clone(),
            task: chunk.task.clone(),
            attempt: chunk.attempt,
            upto,
        };
        self.record(run, ReportItem::Log(chunk), Some(mark)).await
    }

    async fn record(&self, run: &LocalRun, item: ReportItem, mark: Option<LogMark>) {
        let report = Report::V1 {
            cluster: run.cluster.clone(),
            partition: run.partition,
            epoch: run.epoch,
            item,
        };
        let Report::V1 { item, .. } = &report;
        let payload = serde_json::to_string(&report).expect("reports serialise");
        // The outbox is the only record of what happened; if the disk refuses, retrying is
        // all there is to do.
        loop {
            let key = item.key();
            let at_ms = self.clock.now_ms();
            let recorded = match &mark {
                Some(mark) => {
                    self.outbox
                        .record_log(&key, at_ms, &payload, mark.clone())
                        .await
                }
                None => self.outbox.record(&key, at_ms, &payload).await,
            };
            match recorded {
                Ok(_) => break,
                Err(e) => {
                    tracing::error!("writing to the outbox: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        self.reported.notify_one();
    }

    /// Lets the supervisor forget `run`'s attempts (soon, in a batch): its end is recorded.
    pub fn forget(&self, run: &LocalRun) {
        let shell = run
            .job
            .definition
            .tasks
            .iter()
            .any(|t| matches!(t.kind, TaskKind::Shell { .. }));
        if shell {
            self.supervisor.forget_later(run.run_id.clone());
        }
    }

    /// Runs `run` to its end — from where `resume` says, for a run a previous agent process
    /// had going. Returns the final state and a message.
    pub async fn run(
        &self,
        run: &LocalRun,
        kill: watch::Receiver<bool>,
        resume: Option<&Resume>,
    ) -> (RunState, String) {
        let tasks = &run.job.definition.tasks;
        let dir = run
            .job
            .work_dir
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| self.work_dir.clone())
            .join(safe_dir_name(&run.run_id));
        let user = self.run_user(run).await;
        let mut succeeded: BTreeSet<String> = BTreeSet::new();
        let mut started: BTreeSet<String> = BTreeSet::new();
        // Tasks that failed for good, in the order they did.
        let mut failed_tasks: Vec<String> = Vec::new();
        // The run's message once a task failed for good.
        let mut failed: Option<String> = None;
        let mut going = JoinSet::new();
        // A recovery: what succeeded in an earlier generation is done, not run again.
        for name in run.job.rerun.iter().flat_map(|r| &r.done) {
            if tasks.iter().any(|t| t.name == *name) {
                started.insert(name.clone());
                succeeded.insert(name.clone());
            }
        }
        for (name, how) in resume.map(|r| &r.tasks).into_iter().flatten() {
            started.insert(name.clone());
            match *how {
                TaskResume::Succeeded => {
                    succeeded.insert(name.clone());
                }
                TaskResume::Reattach {
                    attempt,
                    started_ms,
                } => {
                    let Some(task) = tasks.iter().find(|t| t.name == *name).cloned() else {
                        continue;
                    };
                    let (this, run, dir, kill, user) = (
                        self.clone(),
                        run.clone(),
                        dir.clone(),
                        kill.clone(),
                        user.clone(),
                    );
                    going.spawn(async move {
                        let from = Some((attempt, started_ms));
                        let ended = this.task(&run, &task, dir, user, kill, from).await;
                        (task.name, ended)
                    });
                }
            }
        }
        loop {
            if failed.is_none() && !*kill.borrow() {
                for t in tasks {
                    if !started.contains(&t.name)
                        && t.depends_on.iter().all(|d| succeeded.contains(d))
                    {
                        started.insert(t.name.clone());
                        let this = self.clone();
                        let run = run.clone();
                        let task = t.clone();
                        let dir = dir.clone();
                        let kill = kill.clone();
                        let user = user.clone();
                        going.spawn(async move {
                            let ended = this.task(&run, &task, dir, user, kill, None).await;
                            (task.name, ended)
                        });
                    }
                }
            }
            let Some(joined) = going.join_next().await else {
                break;
            };
            match joined {
                Ok((name, TaskEnd::Succeeded)) => {
                    succeeded.insert(name);
                }
                Ok((name, TaskEnd::Failed)) => {
                    failed.get_or_insert(format!("task `{name}` failed"));
                    failed_tasks.push(name);
                }
                Ok((name, TaskEnd::Refused(why))) => {
                    failed.get_or_insert(format!("task `{name}` could not start: {why}"));
                    failed_tasks.push(name);
                }
                Err(e) => {
                    failed.get_or_insert(format!("task `(a task panicked: {e})` failed"));
                }
            }
        }
        let killed = *kill.borrow();
        for (task, outcome, message) in never_started(run, &started, &failed_tasks, killed) {
            let event = AttemptEvent {
                run_id: run.run_id.clone(),
                task,
                attempt: 0,
                outcome,
                at_ms: self.clock.now_ms(),
                exit_code: None,
                message,
                warning: String::new(),
            };
            self.report(run, ReportItem::Attempt(event)).await;
        }
        if killed {
            (RunState::Killed, "killed".into())
        } else if let Some(message) = failed {
            (RunState::Failed, message)
        } else if succeeded.len() == tasks.len() {
            (RunState::Succeeded, String::new())
        } else {
            (RunState::Failed, "some tasks could not run".into())
        }
    }

    /// Who `run`'s shell tasks run as (looked up off the runtime: the user database may be
    /// on the network); none when it has no shell task, which needs nobody.
    async fn run_user(&self, run: &LocalRun) -> RunUser {
        let tasks = &run.job.definition.tasks;
        if !tasks
            .iter()
            .any(|t| matches!(t.kind, TaskKind::Shell { .. }))
        {
            return None;
        }
        let job = run.job.clone();
        let host = self.hostname.clone();
        let decided = tokio::task::spawn_blocking(move || identity::task_user(&job, &host))
            .await
            .unwrap_or_else(|e| {
                Err(IdentityError::Lookup {
                    what: "the run's OS user".into(),
                    host: self.hostname.clone(),
                    message: e.to_string(),
                })
            });
        if let Err(e) = &decided {
            tracing::warn!("run {}: {e}", run.run_id);
        }
        Some(Arc::new(decided))
    }

    /// Runs one task with its retries; `reattach`: from the attempt (number, start on the
    /// wall clock) a previous agent process had going, which the supervisor kept going.
    async fn task(
        &self,
        run: &LocalRun,
        spec: &TaskSpec,
        dir: PathBuf,
        user: RunUser,
        mut kill: watch::Receiver<bool>,
        reattach: Option<(u32, i64)>,
    ) -> TaskEnd {
        let first_start = tokio::time::Instant::now();
        let first = reattach.map_or(1, |(attempt, _)| attempt);
        if let Some((attempt, started_ms)) = reattach {
            match self
                .reattach(run, spec, attempt, started_ms, kill.clone())
                .await
            {
                AttemptOutcome::Succeeded => return TaskEnd::Succeeded,
                AttemptOutcome::Killed => return TaskEnd::Failed,
                _ if attempt > spec.retries => return TaskEnd::Failed,
                _ => {}
            }
        }
        let vars = run_vars(run);
        let mut delay = Duration::from_secs(spec.retry_delay_seconds);
        let task_user = match (&spec.kind, user.as_deref()) {
            (TaskKind::Shell { .. }, Some(Err(refused))) => {
                return self.refuse(run, spec, refused.to_string()).await;
            }
            (_, Some(Ok(user))) => Some(user),
            _ => None,
        };
        // Files made for the task are its user's.
        let owner = task_user.and_then(TaskUser::owner);
        for attempt in first..=spec.retries.saturating_add(1) {
            if reattach.is_some() && attempt == first {
                // Re-attached above; it failed: the retry after it.
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = kill.wait_for(|k| *k) => return TaskEnd::Failed,
                }
                delay = delay.saturating_mul(2);
                continue;
            }
            // Resources first, on every attempt: a retry after S3 was down tries again.
            let prepared = if spec.resources.is_empty() {
                Ok(Prepared::default())
            } else if let Err(e) = run_dir::make(&dir, owner) {
                Err(format!(
                    "creating the working directory {}: {e}",
                    dir.display()
                ))
            } else {
                tokio::select! {
                    p = self.resources.prepare_for(&run.job.tenant, &spec.resources, &dir, owner) => p.map_err(|e| e.to_string()),
                    _ = kill.wait_for(|k| *k) => Err("killed while preparing resources".to_owned()),
                }
            };
            let warning = match &prepared {
                Ok(p) => p.warnings.join("; "),
                Err(_) => String::new(),
            };
            let started = AttemptEvent {
                run_id: run.run_id.clone(),
                task: spec.name.clone(),
                attempt,
                outcome: AttemptOutcome::Started,
                at_ms: self.clock.now_ms(),
                exit_code: None,
                message: String::new(),
                warning: warning.clone(),
            };
            self.report(run, ReportItem::Attempt(started.clone())).await;
            let (log, drained) = self.log_drain(run, &spec.name, attempt, 0);
            let ended = match prepared {
                Err(message) => AttemptEnd {
                    outcome: if *kill.borrow() {
                        AttemptOutcome::Killed
                    } else {
                        AttemptOutcome::Failed
                    },
                    exit_code: None,
                    message,
                },
                Ok(prepared) => {
                    let preamble = if warning.is_empty() {
                        String::new()
                    } else {
                        format!("meridian: warning: {warning}\n")
                    };
                    let ended = task::run(
                        &spec.kind,
                        Attempt {
                            env: &vars,
                            dir: &dir,
                            user: task_user,
                            timeout: spec.timeout_seconds.map(Duration::from_secs),
                            grace: self.grace,
                            kill: kill.clone(),
                            http: &self.http,
                            supervisor: &self.supervisor,
                            key: AttemptKey {
                                run_id: run.run_id.clone(),
                                task: spec.name.clone(),
                                attempt,
                            },
                            preamble: &preamble,
                        },
                        &log,
                    )
                    .await;
                    // The files stay pinned (not evicted) until the attempt is over.
                    drop(prepared.pins);
                    ended
                }
            };
            drop(log);
            let _ = drained.await;
            self.report(
                run,
                ReportItem::Attempt(AttemptEvent {
                    outcome: ended.outcome,
                    at_ms: self.clock.now_ms(),
                    exit_code: ended.exit_code,
                    message: ended.message,
                    warning: String::new(),
                    ..started
                }),
            )
            .await;
            match ended.outcome {
                AttemptOutcome::Succeeded => return TaskEnd::Succeeded,
                AttemptOutcome::Killed => return TaskEnd::Failed,
                _ => {}
            }
            if attempt > spec.retries {
                break;
            }
            if let Some(max) = spec.retry_max_seconds
                && first_start.elapsed() + delay > Duration::from_secs(max)
            {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = kill.wait_for(|k| *k) => return TaskEnd::Failed,
            }
            delay = delay.saturating_mul(2);
        }
        TaskEnd::Failed
    }

    /// Records a task that may not start: its first attempt, started and failed at once with
    /// `why`, in its log too. No retry: it would be refused the same way.
    async fn refuse(&self, run: &LocalRun, spec: &TaskSpec, why: String) -> TaskEnd {
        let started = AttemptEvent {
            run_id: run.run_id.clone(),
            task: spec.name.clone(),
            attempt: 1,
            outcome: AttemptOutcome::Started,
            at_ms: self.clock.now_ms(),
            exit_code: None,
            message: String::new(),
            warning: String::new(),
        };
        self.report(run, ReportItem::Attempt(started.clone())).await;
        let (log, drained) = self.log_drain(run, &spec.name, 1, 0);
        log.write(format!("meridian: {why}\n").as_bytes());
        drop(log);
        let _ = drained.await;
        self.report(
            run,
            ReportItem::Attempt(AttemptEvent {
                outcome: AttemptOutcome::Failed,
                at_ms: self.clock.now_ms(),
                message: why.clone(),
                ..started
            }),
        )
        .await;
        TaskEnd::Refused(why)
    }

    /// Re-attaches to attempt `attempt` of `spec`, which the supervisor kept going while the
    /// agent was away: sends the rest of its log (from where the outbox stood) and records how
    /// it ended. Its `started` was recorded by the previous process.
    async fn reattach(
        &self,
        run: &LocalRun,
        spec: &TaskSpec,
        attempt: u32,
        started_ms: i64,
        kill: watch::Receiver<bool>,
    ) -> AttemptOutcome {
        let key = AttemptKey {
            run_id: run.run_id.clone(),
            task: spec.name.clone(),
            attempt,
        };
        let from = match self.outbox.log_mark(&run.run_id, &spec.name, attempt).await {
            Ok(from) => from,
            Err(e) => {
                tracing::error!("reading how much of {}'s log was sent: {e}", run.run_id);
                0
            }
        };
        let (log, drained) = self.log_drain(run, &spec.name, attempt, from);
        let ended = match self.supervisor.attach(&key).await {
            Ok(Some(watch)) => {
                // What is left of its timeout, counted from its start.
                let ran = Duration::from_millis(
                    u64::try_from(self.clock.now_ms().saturating_sub(started_ms)).unwrap_or(0),
                );
                let timeout = spec
                    .timeout_seconds
                    .map(|t| Duration::from_secs(t).saturating_sub(ran));
                let following = Following {
                    timeout,
                    grace: self.grace,
                    kill,
                };
                task::follow(watch, from, following, &log).await
            }
            Ok(None) => AttemptEnd {
                outcome: AttemptOutcome::Failed,
                exit_code: None,
                message: "the supervisor no longer knows this attempt; its outcome is unknown"
                    .into(),
            },
            Err(e) => AttemptEnd {
                outcome: AttemptOutcome::Failed,
                exit_code: None,
                message: format!("re-attaching after the agent restarted: {e}"),
            },
        };
        drop(log);
        let _ = drained.await;
        let outcome = ended.outcome;
        self.report(
            run,
            ReportItem::Attempt(AttemptEvent {
                run_id: run.run_id.clone(),
                task: spec.name.clone(),
                attempt,
                outcome,
                at_ms: self.clock.now_ms(),
                exit_code: ended.exit_code,
                message: ended.message,
                warning: String::new(),
            }),
        )
        .await;
        outcome
    }

    /// A log for one attempt from byte `from` (0 but for a re-attached attempt), and the task
    /// that turns what is written to it into outbox chunks (it ends once the log is dropped and
    /// everything is written).
    fn log_drain(
        &self,
        run: &LocalRun,
        task: &str,
        attempt: u32,
        from: u64,
    ) -> (Log, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let this = self.clone();
        let run = run.clone();
        let task = task.to_owned();
        let drain = tokio::spawn(async move {
            let mut offset = from;
            let mut pending: Vec<u8> = Vec::new();
            // When what is pending must be sent: `CHUNK_DELAY` after its first byte, however
            // steadily the task goes on writing (a deadline, not a quiet period: a task that
            // prints a line every 100 ms must not wait for its end or for `CHUNK_BYTES`).
            let mut due = tokio::time::Instant::now();
            let flush = |pending: &mut Vec<u8>, offset: &mut u64| {
                let data = String::from_utf8_lossy(pending).into_owned();
                let chunk = LogChunk {
                    run_id: run.run_id.clone(),
                    task: task.clone(),
                    attempt,
                    offset: *offset,
                    data,
                };
                *offset += pending.len() as u64;
                pending.clear();
                (chunk, *offset)
            };
            loop {
                let next = if pending.is_empty() {
                    rx.recv().await
                } else {
                    match tokio::time::timeout_at(due, rx.recv()).await {
                        Ok(next) => next,
                        Err(_) => {
                            let (chunk, upto) = flush(&mut pending, &mut offset);
                            this.report_log(&run, chunk, upto).await;
                            continue;
                        }
                    }
                };
                match next {
                    Some(data) => {
                        if pending.is_empty() {
                            due = tokio::time::Instant::now() + CHUNK_DELAY;
                        }
                        pending.extend_from_slice(&data);
                        if pending.len() >= CHUNK_BYTES {
                            let (chunk, upto) = flush(&mut pending, &mut offset);
                            this.report_log(&run, chunk, upto).await;
                        }
                    }
                    None => {
                        if !pending.is_empty() {
                            let (chunk, upto) = flush(&mut pending, &mut offset);
                            this.report_log(&run, chunk, upto).await;
                        }
                        break;
                    }
                }
            }
        });
        (Log(tx), drain)
    }
}

/// A run id as a directory name (`@` and `:` are fine on Linux, `/` is not).
fn safe_dir_name(run_id: &str) -> String {
    run_id.replace('/', "_")
}

/// Environment variables a run's tasks get on top of the environment's own.
pub fn run_vars(run: &LocalRun) -> BTreeMap<String, String> {
    let mut vars = run.job.vars.clone();
    vars.insert("MERIDIAN_RUN_ID".into(), run.run_id.clone());
    if let Some(fire) = run.fire_ms {
        vars.insert("MERIDIAN_FIRE_MS".into(), fire.to_string());
    }
    let generation = run.job.rerun.as_ref().map_or(1, |r| r.generation);
    vars.insert("MERIDIAN_GENERATION".into(), generation.to_string());
    vars
}
