//! The supervisor itself: serves one agent's requests on its socket, starts attempts with
//! their output going to files, waits for them and writes each exit status to a file before
//! telling it. Ends once no agent is connected and no attempt of its runs (after at least
//! [`FIRST_CONTACT`] when no agent ever came).

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, watch};

use super::journal::Journal;
use super::protocol::{AttemptKey, Exit, ExitRecord, Known, Reply, Request, SpawnRequest, VERSION};
use crate::identity;

/// How long a supervisor nobody has talked to yet waits for an agent before it ends.
const FIRST_CONTACT: Duration = Duration::from_secs(30);

/// One attempt the supervisor knows.
struct Entry {
    pid: u32,
    started_ms: i64,
    log: PathBuf,
    exit: watch::Receiver<Option<Exit>>,
}

struct State {
    dir: PathBuf,
    journal: Journal,
    attempts: Mutex<HashMap<AttemptKey, Entry>>,
    /// Agents connected (`hello` connections open).
    agents: AtomicUsize,
    /// Attempts running.
    running: AtomicUsize,
    /// Something that may let the supervisor end happened.
    changed: Notify,
}

/// Why a supervisor could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("supervisor directory {0}: {1}")]
    Dir(String, io::Error),
    /// Another supervisor serves this directory (not an error for whoever started this one).
    #[error("another supervisor already serves {0}")]
    Taken(String),
    #[error("supervisor socket {0}: {1}")]
    Socket(String, io::Error),
}

/// The `supervise` command: serves `dir` until idle, on a runtime of its own (two threads:
/// starting a process blocks its thread until the exec). Exits 0 when another supervisor
/// already serves `dir`.
pub fn main(dir: &Path) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the supervisor's runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(dir.to_owned())) {
        Ok(()) | Err(ServeError::Taken(_)) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Serves `dir` (created 0700) until no agent is connected and nothing runs.
pub async fn serve(dir: PathBuf) -> Result<(), ServeError> {
    let shown = dir.display().to_string();
    create_private_dir(&dir).map_err(|e| ServeError::Dir(shown.clone(), e))?;
    let _lock = lock(&dir).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock => ServeError::Taken(shown.clone()),
        _ => ServeError::Dir(shown.clone(), e),
    })?;
    let socket = super::socket_path(&dir);
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .map_err(|e| ServeError::Socket(socket.display().to_string(), e))?;
    let (journal, exits) = Journal::open(&dir).map_err(|e| ServeError::Dir(shown.clone(), e))?;
    let state = Arc::new(State {
        attempts: Mutex::new(recorded(&dir, exits)),
        journal,
        dir,
        agents: AtomicUsize::new(0),
        running: AtomicUsize::new(0),
        changed: Notify::new(),
    });
    let first_contact = tokio::time::sleep(FIRST_CONTACT);
    tokio::pin!(first_contact);
    let mut contacted = false;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    contacted = true;
                    tokio::spawn(connection(stream, state.clone()));
                }
            }
            _ = state.changed.notified() => {
                if state.idle() {
                    break;
                }
            }
            _ = &mut first_contact, if !contacted => {
                if state.idle() {
                    break;
                }
            }
        }
    }
    // Stops answering before it lets go of the directory: an agent that comes now starts
    // another supervisor, which takes the lock once this one has dropped it.
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

impl State {
    fn idle(&self) -> bool {
        self.agents.load(Ordering::SeqCst) == 0 && self.running.load(Ordering::SeqCst) == 0
    }

    fn known(&self, key: &AttemptKey, e: &Entry) -> Known {
        Known {
            key: key.clone(),
            pid: e.pid,
            started_ms: e.started_ms,
            exit: *e.exit.borrow(),
        }
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// An exclusive lock on `<dir>/lock`, held as long as the file stays open.
fn lock(dir: &Path) -> io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))?;
    // SAFETY: flock(2) on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// What a previous supervisor left in `dir`: the attempts whose exit its journal has, and
/// those with an output file but no exit (running when it stopped: lost).
fn recorded(dir: &Path, exits: Vec<ExitRecord>) -> HashMap<AttemptKey, Entry> {
    let mut found = HashMap::new();
    for record in exits {
        let (_, exit) = watch::channel(Some(record.exit));
        let log = super::output_path(dir, &record.key);
        found.insert(
            record.key,
            Entry {
                pid: record.pid,
                started_ms: record.started_ms,
                log,
                exit,
            },
        );
    }
    for log in super::files_ending(dir, "log") {
        let Some(key) = log
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(key_of_stem)
        else {
            continue;
        };
        if found.contains_key(&key) {
            continue;
        }
        let (_, exit) = watch::channel(Some(Exit::Lost));
        found.insert(
            key,
            Entry {
                pid: 0,
                started_ms: 0,
                log,
                exit,
            },
        );
    }
    found
}

/// The key a file stem names ([`AttemptKey::stem`] read back).
fn key_of_stem(stem: &str) -> Option<AttemptKey> {
    let mut parts = stem.rsplitn(2, '+');
    let attempt = parts.next()?.parse().ok()?;
    let (run, task) = parts.next()?.split_once('+')?;
    let decode = |s: &str| -> Option<String> {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).ok()
    };
    Some(AttemptKey {
        run_id: decode(run)?,
        task: decode(task)?,
        attempt,
    })
}

async fn connection(stream: UnixStream, state: Arc<State>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let Ok(Some(line)) = lines.next_line().await else {
        return;
    };
    let request = match serde_json::from_str::<Request>(&line) {
        Ok(r) => r,
        Err(e) => {
            let _ = send(
                &mut write,
                &Reply::Refused {
                    message: format!("bad request: {e}"),
                },
            )
            .await;
            return;
        }
    };
    match request {
        Request::Hello { .. } => {
            state.agents.fetch_add(1, Ordering::SeqCst);
            let hello = Reply::Hello {
                version: VERSION,
                pid: std::process::id(),
            };
            if send(&mut write, &hello).await.is_ok() {
                // Present until the agent closes the connection (or dies).
                while let Ok(Some(_)) = lines.next_line().await {}
            }
            state.agents.fetch_sub(1, Ordering::SeqCst);
            state.changed.notify_one();
        }
        Request::Spawn(request) => {
            let (reply, exit) = spawn(&state, *request);
            tell_then_wait(&mut write, reply, exit).await;
        }
        Request::Attach { key } => {
            let found = {
                let attempts = state.attempts.lock().expect("attempts");
                attempts.get(&key).map(|e| {
                    (
                        Reply::Spawned {
                            pid: e.pid,
                            log: e.log.clone(),
                            started_ms: e.started_ms,
                        },
                        e.exit.clone(),
                    )
                })
            };
            match found {
                Some((reply, exit)) => tell_then_wait(&mut write, reply, Some(exit)).await,
                None => {
                    let _ = send(&mut write, &Reply::Unknown).await;
                }
            }
        }
        Request::List { run_id } => {
            let attempts: Vec<Known> = {
                let attempts = state.attempts.lock().expect("attempts");
                let mut known: Vec<Known> = attempts
                    .iter()
                    .filter(|(k, _)| run_id.as_ref().is_none_or(|r| k.run_id == *r))
                    .map(|(k, e)| state.known(k, e))
                    .collect();
                known.sort_by(|a, b| a.key.cmp(&b.key));
                known
            };
            let _ = send(&mut write, &Reply::Attempts { attempts }).await;
        }
        Request::Forget { runs } => {
            let runs: std::collections::HashSet<String> = runs.into_iter().collect();
            let gone: Vec<(AttemptKey, Entry)> = state
                .attempts
                .lock()
                .expect("attempts")
                .extract_if(|k, e| runs.contains(&k.run_id) && e.exit.borrow().is_some())
                .collect();
            // Output first: a supervisor killed in between knows exits without output files,
            // not output files without exits (which would read as lost).
            for (_, e) in &gone {
                let _ = std::fs::remove_file(&e.log);
            }
            let keys: Vec<AttemptKey> = gone.into_iter().map(|(k, _)| k).collect();
            if let Err(e) = state.journal.forgot(&keys) {
                eprintln!("supervisor: writing its journal: {e}");
            }
            let _ = send(&mut write, &Reply::Forgotten).await;
        }
    }
}

/// Sends `reply`; then, for a started attempt, its exit once it has one.
async fn tell_then_wait(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    reply: Reply,
    exit: Option<watch::Receiver<Option<Exit>>>,
) {
    if send(write, &reply).await.is_err() {
        return;
    }
    let Some(mut exit) = exit else {
        return;
    };
    let exit = match exit.wait_for(Option::is_some).await {
        Ok(e) => e.unwrap_or(Exit::Lost),
        Err(_) => Exit::Lost,
    };
    let _ = send(write, &Reply::Exited { exit }).await;
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> io::Result<()> {
    let mut line = serde_json::to_vec(reply).expect("replies serialise");
    line.push(b'\n');
    write.write_all(&line).await
}

/// Starts an attempt (or, asked again for one it knows, answers as for `attach`).
fn spawn(
    state: &Arc<State>,
    request: SpawnRequest,
) -> (Reply, Option<watch::Receiver<Option<Exit>>>) {
    if let Some(e) = state.attempts.lock().expect("attempts").get(&request.key) {
        let reply = Reply::Spawned {
            pid: e.pid,
            log: e.log.clone(),
            started_ms: e.started_ms,
        };
        return (reply, Some(e.exit.clone()));
    }
    let log = super::output_path(&state.dir, &request.key);
    let started = match start(&request, &log) {
        Ok(child) => child,
        Err(message) => {
            let _ = std::fs::remove_file(&log);
            return (Reply::Refused { message }, None);
        }
    };
    let pid = started.id().unwrap_or(0);
    let started_ms = chrono::Utc::now().timestamp_millis();
    let (tell, exit) = watch::channel(None);
    // Not held while the process starts: that blocks until its exec.
    state.attempts.lock().expect("attempts").insert(
        request.key.clone(),
        Entry {
            pid,
            started_ms,
            log: log.clone(),
            exit: exit.clone(),
        },
    );
    state.running.fetch_add(1, Ordering::SeqCst);
    let state = state.clone();
    let key = request.key;
    let reply = Reply::Spawned {
        pid,
        log: log.clone(),
        started_ms,
    };
    tokio::spawn(async move {
        let mut child = started;
        let ended = match child.wait().await {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                match (status.code(), status.signal()) {
                    (Some(code), _) => Exit::Code { code },
                    (None, Some(signal)) => Exit::Signal { signal },
                    _ => Exit::Lost,
                }
            }
            Err(_) => Exit::Lost,
        };
        // On disk before it is told: a supervisor started after this one ends still knows.
        let record = ExitRecord {
            key,
            pid,
            started_ms,
            exit: ended,
        };
        if let Err(e) = state.journal.exited(&record) {
            eprintln!("supervisor: writing its journal: {e}");
        }
        let _ = tell.send(Some(ended));
        state.running.fetch_sub(1, Ordering::SeqCst);
        state.changed.notify_one();
    });
    (reply, Some(exit))
}

/// `/bin/sh -c script` in a process group of its own, output (both streams) to `log`.
fn start(request: &SpawnRequest, log: &Path) -> Result<tokio::process::Child, String> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(log)
        .map_err(|e| format!("creating the output file {}: {e}", log.display()))?;
    if !request.preamble.is_empty() {
        use std::io::Write;
        file.write_all(request.preamble.as_bytes())
            .map_err(|e| format!("writing the output file {}: {e}", log.display()))?;
    }
    let err = file
        .try_clone()
        .map_err(|e| format!("the output file {}: {e}", log.display()))?;
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(&request.script)
        .current_dir(&request.dir)
        .env_clear()
        .envs(&request.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(false);
    if let Some(user) = &request.user {
        let groups: Vec<libc::gid_t> = user.groups.clone();
        let (gid, uid) = (user.gid, user.uid);
        // SAFETY: the closure runs between fork and exec; `become_user` makes only
        // async-signal-safe system calls on data moved in here, allocated before the fork.
        unsafe {
            command.pre_exec(move || identity::become_user(&groups, gid, uid));
        }
    }
    command.spawn().map_err(|e| match &request.user {
        Some(u) => format!("starting /bin/sh as uid {}, gid {}: {e}", u.uid, u.gid),
        None => format!("starting /bin/sh: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_stem_reads_back_as_its_key() {
        let key = AttemptKey {
            run_id: "ads.etl@2027 01/x".into(),
            task: "lo+ad".into(),
            attempt: 12,
        };
        assert_eq!(key_of_stem(&key.stem()), Some(key));
        assert_eq!(key_of_stem("garbage"), None);
    }

    #[test]
    fn a_new_supervisor_knows_the_exits_written_and_that_what_ran_unended_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let key = |task: &str| AttemptKey {
            run_id: "ads.etl@1".into(),
            task: task.into(),
            attempt: 1,
        };
        let ended = ExitRecord {
            key: key("ended"),
            pid: 4242,
            started_ms: 7,
            exit: Exit::Code { code: 3 },
        };
        let stem = ended.key.stem();
        std::fs::write(dir.path().join(format!("{stem}.log")), "out").unwrap();
        Journal::open(dir.path()).unwrap().0.exited(&ended).unwrap();
        std::fs::write(dir.path().join(format!("{}.log", key("cut").stem())), "").unwrap();
        let (_, exits) = Journal::open(dir.path()).unwrap();
        let found = recorded(dir.path(), exits);
        assert_eq!(found.len(), 2);
        let e = &found[&key("ended")];
        assert_eq!(
            (e.pid, e.started_ms, *e.exit.borrow()),
            (4242, 7, Some(Exit::Code { code: 3 }))
        );
        assert_eq!(*found[&key("cut")].exit.borrow(), Some(Exit::Lost));
    }
}
