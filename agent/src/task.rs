//! Running one attempt of one task: a shell script in its own process group, or an HTTP
//! request. Output goes to a [`LogSink`] as it comes; a timeout or a kill sends TERM to the
//! whole process group, waits the grace period, then sends KILL.
//!
//! A script starts as the run's [`TaskUser`] (groups, gid, uid set in the child when the agent
//! switches) in its own working directory, with a clean environment: the environment's and the
//! run's variables and a minimal `PATH`, `HOME`, `USER` and `LOGNAME`, nothing of the agent's.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use meridian_domain::run::AttemptOutcome;
use meridian_domain::workflow::TaskKind;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::identity::{self, Identity, TaskUser};
use crate::run_dir;

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
}

pub async fn run(kind: &TaskKind, attempt: Attempt<'_>, log: &Log) -> AttemptEnd {
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

async fn shell(script: &str, mut a: Attempt<'_>, log: &Log) -> AttemptEnd {
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
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(script)
        .current_dir(a.dir)
        // Nothing of the agent's own: its credentials (AWS_*), config paths and the like.
        .env_clear()
        .envs(task_env(&user.identity, a.dir, a.env))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if user.switch {
        let groups: Vec<libc::gid_t> = user.identity.groups.clone();
        let (gid, uid) = (user.identity.gid, user.identity.uid);
        // SAFETY: the closure runs between fork and exec; `become_user` makes only
        // async-signal-safe system calls on data moved in here, allocated before the fork.
        unsafe {
            command.pre_exec(move || identity::become_user(&groups, gid, uid));
        }
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) if user.switch => {
            return end(
                AttemptOutcome::Failed,
                None,
                format!(
                    "starting /bin/sh as `{}` (uid {}, gid {}): {e}",
                    user.identity.name, user.identity.uid, user.identity.gid
                ),
            );
        }
        Err(e) => {
            return end(
                AttemptOutcome::Failed,
                None,
                format!("starting /bin/sh: {e}"),
            );
        }
    };
    let pid = child.id().unwrap_or(0);
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let mut out_buf = vec![0u8; 16 * 1024];
    let mut err_buf = vec![0u8; 16 * 1024];
    let (mut out_open, mut err_open) = (true, true);
    let deadline = a.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut stopping: Option<(AttemptOutcome, &'static str)> = None;
    // Fixed when TERM is sent: a timer made afresh each time round the loop would start over
    // with every piece of output, and a script that ignores TERM and keeps printing would
    // never get its KILL.
    let mut kill_at: Option<tokio::time::Instant> = None;
    let status = loop {
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
            n = stdout.read(&mut out_buf), if out_open => match n {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => log.write(&out_buf[..n]),
            },
            n = stderr.read(&mut err_buf), if err_open => match n {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => log.write(&err_buf[..n]),
            },
            status = child.wait() => break status,
            _ = timeout => {
                stopping = Some((AttemptOutcome::TimedOut, "timed out"));
                kill_at = Some(tokio::time::Instant::now() + a.grace);
                signal_group(pid, libc::SIGTERM);
            }
            _ = a.kill.wait_for(|k| *k), if stopping.is_none() => {
                stopping = Some((AttemptOutcome::Killed, "killed"));
                kill_at = Some(tokio::time::Instant::now() + a.grace);
                signal_group(pid, libc::SIGTERM);
            }
            _ = grace_over => {
                kill_at = None;
                signal_group(pid, libc::SIGKILL);
            }
        }
    };
    // Output still buffered in the pipes; a background child holding them open must not keep
    // the attempt from ending.
    for (open, pipe, buf) in [
        (
            out_open,
            &mut stdout as &mut (dyn tokio::io::AsyncRead + Unpin + Send),
            &mut out_buf,
        ),
        (err_open, &mut stderr, &mut err_buf),
    ] {
        if !open {
            continue;
        }
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), pipe.read(buf)).await
        {
            if n == 0 {
                break;
            }
            log.write(&buf[..n]);
        }
    }
    match (status, stopping) {
        (_, Some((outcome, what))) => {
            // The group may have members the shell left behind.
            signal_group(pid, libc::SIGKILL);
            end(outcome, None, what)
        }
        (Ok(status), None) if status.success() => end(AttemptOutcome::Succeeded, Some(0), ""),
        (Ok(status), None) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => end(
                    AttemptOutcome::Failed,
                    Some(code),
                    format!("exit code {code}"),
                ),
                (None, Some(sig)) => end(
                    AttemptOutcome::Failed,
                    None,
                    format!("terminated by signal {sig}"),
                ),
                _ => end(AttemptOutcome::Failed, None, "ended abnormally"),
            }
        }
        (Err(e), None) => end(
            AttemptOutcome::Failed,
            None,
            format!("waiting for the shell: {e}"),
        ),
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
