//! Running one attempt of one task: a shell script in its own process group, or an HTTP
//! request. Output goes to a [`LogSink`] as it comes; a timeout or a kill sends TERM to the
//! whole process group, waits the grace period, then sends KILL.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use meridian_proto::run::AttemptOutcome;
use meridian_proto::workflow::TaskKind;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

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
    pub env: &'a BTreeMap<String, String>,
    pub dir: &'a Path,
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

async fn shell(script: &str, mut a: Attempt<'_>, log: &Log) -> AttemptEnd {
    if let Err(e) = tokio::fs::create_dir_all(a.dir).await {
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
        .envs(a.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
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
