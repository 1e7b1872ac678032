//! Running one attempt of one task: a shell script, started by the agent's
//! [`crate::supervisor`] in its own process group with its output going to a file, or an HTTP
//! request. Output goes to a [`Log`] as it comes (a script's as its file grows); a timeout or
//! a kill sends TERM to the whole process group, waits the grace period, then sends KILL.
//!
//! A script starts as the run's [`TaskUser`] (groups, gid, uid set in the child when the agent
//! switches) in its own working directory, with a clean environment: the environment's and the
//! run's variables and a minimal `PATH`, `HOME`, `USER` and `LOGNAME`, nothing of the agent's.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use meridian_domain::run::AttemptOutcome;
use meridian_domain::workflow::TaskKind;
use tokio::sync::watch;

use crate::identity::{Identity, TaskUser};
use crate::run_dir;
use crate::supervisor::{
    AttemptKey, Exit, SpawnRequest, Supervisor, SupervisorError, Switch, Watch,
};

/// Where an attempt's output goes: a channel the runner drains into outbox log chunks, so a
/// task never waits for the disk.
#[derive(Clone)]
pub struct Log(pub tokio::sync::mpsc::UnboundedSender<Vec<u8>>);

impl Log {
    pub fn write(&self, data: &[u8]) {
        let _ = self.0.send(data.to_vec());
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptEnd {
    pub outcome: AttemptOutcome,
    pub exit_code: Option<i32>,
    pub message: String,
}

/// Everything an attempt needs besides the task itself.
pub struct Attempt<'a> {
    /// The environment's and the run's variables; a script gets these and nothing of the
    /// agent's own (see [`task_env`]).
    pub env: &'a BTreeMap<String, String>,
    pub dir: &'a Path,
    /// Who a script runs as; none: it may not start (the run's user was refused), which only
    /// HTTP and no-op tasks, running inside the agent, do not mind.
    pub user: Option<&'a TaskUser>,
    pub timeout: Option<Duration>,
    pub grace: Duration,
    /// Becomes true when the run is killed.
    pub kill: watch::Receiver<bool>,
    pub http: &'a reqwest::Client,
    /// Who starts a script, and the attempt's name there.
    pub supervisor: &'a Supervisor,
    pub key: AttemptKey,
    /// Written to the log before anything the task writes (the agent's warnings).
    pub preamble: &'a str,
}

pub async fn run(kind: &TaskKind, attempt: Attempt<'_>, log: &Log) -> AttemptEnd {
    if !matches!(kind, TaskKind::Shell { .. }) {
        log.write(attempt.preamble.as_bytes());
    }
    match kind {
        TaskKind::Shell { script } => shell(script, attempt, log).await,
        TaskKind::Noop {} => end(AttemptOutcome::Succeeded, None, ""),
        TaskKind::Http {
            method,
            url,
            headers,
            body,
            expect_status,
        } => {
            http(
                method,
                url,
                headers,
                body.as_deref(),
                *expect_status,
                attempt,
                log,
            )
            .await
        }
    }
}

fn end(outcome: AttemptOutcome, exit_code: Option<i32>, message: impl Into<String>) -> AttemptEnd {
    AttemptEnd {
        outcome,
        exit_code,
        message: message.into(),
    }
}

/// Sends `signal` to the process group led by `pid`.
fn signal_group(pid: u32, signal: libc::c_int) {
    // 0 would be the agent's own group (a supervisor that did not know the process).
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-(pid as libc::pid_t), signal);
    }
}

/// The `PATH` a script starts with unless its environment sets one.
pub const TASK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Everything a script's environment holds: a minimal `PATH` and `HOME` (the user's home, or
/// the working directory if it has none), which `vars` may override; then `vars` (the
/// environment's variables and the run's `MERIDIAN_*`); then `USER` and `LOGNAME`, which say
/// who it runs as and are not for the environment to change.
pub fn task_env(
    user: &Identity,
    dir: &Path,
    vars: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let home = user.home.as_deref().unwrap_or(dir);
    let mut env = BTreeMap::from([
        ("PATH".to_owned(), TASK_PATH.to_owned()),
        ("HOME".to_owned(), home.display().to_string()),
    ]);
    env.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.insert("USER".into(), user.name.clone());
    env.insert("LOGNAME".into(), user.name.clone());
    env
}

async fn shell(script: &str, a: Attempt<'_>, log: &Log) -> AttemptEnd {
    let Some(user) = a.user else {
        return end(
            AttemptOutcome::Failed,
            None,
            "no OS user to run the script as",
        );
    };
    if let Err(e) = run_dir::make(a.dir, user.owner()) {
        return end(
            AttemptOutcome::Failed,
            None,
            format!("creating the working directory {}: {e}", a.dir.display()),
        );
    }
    let request = SpawnRequest {
        key: a.key.clone(),
        script: script.to_owned(),
        dir: a.dir.to_owned(),
        // Nothing of the agent's own: its credentials (AWS_*), config paths and the like.
        env: task_env(&user.identity, a.dir, a.env),
        user: user.switch.then(|| Switch {
            uid: user.identity.uid,
            gid: user.identity.gid,
            groups: user.identity.groups.clone(),
        }),
        preamble: a.preamble.to_owned(),
    };
    let watch = match a.supervisor.spawn(request).await {
        Ok(watch) => watch,
        Err(SupervisorError::Refused(message)) => {
            return end(AttemptOutcome::Failed, None, message);
        }
        Err(e) => {
            return end(
                AttemptOutcome::Failed,
                None,
                format!("asking the supervisor to start the script: {e}"),
            );
        }
    };
    follow(
        watch,
        0,
        Following {
            timeout: a.timeout,
            grace: a.grace,
            kill: a.kill,
        },
        log,
    )
    .await
}

/// What following an attempt the supervisor runs needs.
pub struct Following {
    /// How long it may still run.
    pub timeout: Option<Duration>,
    pub grace: Duration,
    /// Becomes true when the run is killed.
    pub kill: watch::Receiver<bool>,
}

/// How often the output file of an attempt going is read for more.
const OUTPUT_POLL: Duration = Duration::from_millis(100);

/// Follows an attempt the supervisor runs to its end: its output file from byte `offset`
/// into `log` as it grows; a timeout or a kill as TERM to its process group, then KILL
/// after the grace period.
pub async fn follow(mut watch: Watch, offset: u64, mut f: Following, log: &Log) -> AttemptEnd {
    let mut output = Output::new(watch.log.clone(), offset);
    let pid = watch.pid;
    let deadline = f.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut stopping: Option<(AttemptOutcome, &'static str)> = None;
    // Fixed when TERM is sent, not made afresh each time round the loop.
    let mut kill_at: Option<tokio::time::Instant> = None;
    let exit = loop {
        let timeout = async {
            match deadline {
                Some(d) if stopping.is_none() => tokio::time::sleep_until(d).await,
                _ => std::future::pending().await,
            }
        };
        let grace_over = async {
            match kill_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            exit = watch.exited() => break exit,
            _ = tokio::time::sleep(OUTPUT_POLL) => output.read_into(log),
            _ = timeout => {
                stopping = Some((AttemptOutcome::TimedOut, "timed out"));
                kill_at = Some(tokio::time::Instant::now() + f.grace);
                signal_group(pid, libc::SIGTERM);
            }
            _ = f.kill.wait_for(|k| *k), if stopping.is_none() => {
                stopping = Some((AttemptOutcome::Killed, "killed"));
                kill_at = Some(tokio::time::Instant::now() + f.grace);
                signal_group(pid, libc::SIGTERM);
            }
            _ = grace_over => {
                kill_at = None;
                signal_group(pid, libc::SIGKILL);
            }
        }
    };
    output.read_into(log);
    match (exit, stopping) {
        (_, Some((outcome, what))) => {
            // The group may have members the shell left behind.
            signal_group(pid, libc::SIGKILL);
            end(outcome, None, what)
        }
        (Exit::Code { code: 0 }, None) => end(AttemptOutcome::Succeeded, Some(0), ""),
        (Exit::Code { code }, None) => end(
            AttemptOutcome::Failed,
            Some(code),
            format!("exit code {code}"),
        ),
        (Exit::Signal { signal }, None) => end(
            AttemptOutcome::Failed,
            None,
            format!("terminated by signal {signal}"),
        ),
        (Exit::Lost, None) => {
            // Nothing waits for what is left of it any more.
            signal_group(pid, libc::SIGKILL);
            end(
                AttemptOutcome::Failed,
                None,
                "the supervisor stopped while the script ran; its outcome is unknown (what \
                 was left of it was killed)",
            )
        }
    }
}

/// An attempt's output file, read from where the log stands.
struct Output {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    offset: u64,
}

impl Output {
    fn new(path: std::path::PathBuf, offset: u64) -> Self {
        Self {
            path,
            file: None,
            offset,
        }
    }

    /// Everything written since the last read, into `log`.
    fn read_into(&mut self, log: &Log) {
        use std::io::{Read, Seek, SeekFrom};
        if self.file.is_none() {
            let Ok(mut file) = std::fs::File::open(&self.path) else {
                return;
            };
            if file.seek(SeekFrom::Start(self.offset)).is_err() {
                return;
            }
            self.file = Some(file);
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = file.read(&mut buf) {
            if n == 0 {
                break;
            }
            self.offset += n as u64;
            log.write(&buf[..n]);
        }
    }
}

async fn http(
    method: &str,
    url: &str,
    headers: &BTreeMap<String, String>,
    body: Option<&str>,
    expect_status: u16,
    mut a: Attempt<'_>,
    log: &Log,
) -> AttemptEnd {
    let method = match reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
        Ok(m) => m,
        Err(_) => {
            return end(
                AttemptOutcome::Failed,
                None,
                format!("method `{method}` is not valid"),
            );
        }
    };
    let mut request = a.http.request(method.clone(), url);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    if let Some(body) = body {
        request = request.body(body.to_owned());
    }
    if let Some(t) = a.timeout {
        request = request.timeout(t);
    }
    let sent = async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Ok::<_, reqwest::Error>((status, text))
    };
    tokio::select! {
        result = sent => match result {
            Ok((status, text)) => {
                log.write(format!("{method} {url} -> {status}\n").as_bytes());
                let shown: String = text.chars().take(64 * 1024).collect();
                log.write(shown.as_bytes());
                if status == expect_status {
                    end(AttemptOutcome::Succeeded, Some(i32::from(status)), "")
                } else {
                    end(
                        AttemptOutcome::Failed,
                        Some(i32::from(status)),
                        format!("status {status}, expected {expect_status}"),
                    )
                }
            }
            Err(e) if e.is_timeout() => end(AttemptOutcome::TimedOut, None, format!("{method} {url}: timed out")),
            Err(e) => end(AttemptOutcome::Failed, None, format!("{method} {url}: {}", why(e))),
        },
        _ = a.kill.wait_for(|k| *k) => end(AttemptOutcome::Killed, None, "killed"),
    }
}

/// A failed request in a few words: what failed and its deepest cause ("error sending request:
/// Connection refused (os error 111)"). reqwest's own message names only the step and repeats
/// the URL, which leaves out why.
fn why(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if std::ptr::addr_eq(cause, &e) {
        e.to_string()
    } else {
        format!("{e}: {cause}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_gets_a_minimal_environment_that_the_environment_may_extend() {
        let user = Identity {
            name: "ads-etl".into(),
            uid: 1001,
            gid: 1001,
            groups: vec![1001],
            home: Some("/home/ads-etl".into()),
        };
        let dir = Path::new("/var/lib/meridian-agent/runs/ads.etl@1");
        let vars = BTreeMap::from([
            ("JAVA_HOME".to_owned(), "/opt/java".to_owned()),
            ("MERIDIAN_RUN_ID".to_owned(), "ads.etl@1".to_owned()),
        ]);
        let env = task_env(&user, dir, &vars);
        let expect = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            env,
            expect(&[
                ("HOME", "/home/ads-etl"),
                ("JAVA_HOME", "/opt/java"),
                ("LOGNAME", "ads-etl"),
                ("MERIDIAN_RUN_ID", "ads.etl@1"),
                ("PATH", TASK_PATH),
                ("USER", "ads-etl"),
            ])
        );
        // No home: the working directory. The environment may set PATH and HOME, not USER.
        let homeless = Identity { home: None, ..user };
        let vars = BTreeMap::from([
            ("PATH".to_owned(), "/opt/tools/bin:/usr/bin:/bin".to_owned()),
            ("USER".to_owned(), "root".to_owned()),
        ]);
        let env = task_env(&homeless, dir, &vars);
        assert_eq!(env["HOME"], dir.display().to_string());
        assert_eq!(env["PATH"], "/opt/tools/bin:/usr/bin:/bin");
        assert_eq!(
            (env["USER"].as_str(), env["LOGNAME"].as_str()),
            ("ads-etl", "ads-etl")
        );
    }
}
