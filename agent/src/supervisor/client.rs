//! The agent's handle on its supervisor: starts one when none answers, stays connected (the
//! agent's presence, which keeps the supervisor from ending), and asks it to start, re-attach
//! to, list and forget attempts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

use super::Supervision;
use super::protocol::{AttemptKey, Exit, Known, Reply, Request, SpawnRequest, VERSION};

/// How long the agent waits for a supervisor it started to answer.
const STARTING: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(
        "the supervisor's socket path {0} is longer than a Unix socket allows (107 bytes); use a shorter data_dir"
    )]
    PathTooLong(String),
    #[error("starting the supervisor ({program} supervise --dir {dir}): {source}")]
    Start {
        program: String,
        dir: String,
        source: std::io::Error,
    },
    #[error("the supervisor at {0} did not answer within 10 s of being started")]
    NotAnswering(String),
    #[error("the supervisor at {socket}: {source}")]
    Io {
        socket: String,
        source: std::io::Error,
    },
    #[error("the supervisor at {socket} answered `{answer}`")]
    Protocol { socket: String, answer: String },
    #[error(
        "the supervisor at {socket} speaks protocol version {theirs}, this agent {VERSION}: \
         it was started by another release; stop it (kill {pid}) once its tasks are done"
    )]
    Version {
        socket: String,
        theirs: u32,
        pid: u32,
    },
    #[error("the supervisor refused: {0}")]
    Refused(String),
}

/// The agent's supervisor.
pub struct Supervisor {
    dir: PathBuf,
    socket: PathBuf,
    how: Supervision,
    presence: tokio::task::AbortHandle,
    /// Runs whose end is recorded, told to the supervisor in batches off the runs' way.
    ended: tokio::sync::mpsc::UnboundedSender<String>,
    forgetting: tokio::task::AbortHandle,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.presence.abort();
        self.forgetting.abort();
    }
}

/// An attempt the supervisor runs: its process (group), output file and exit to come.
pub struct Watch {
    pub pid: u32,
    pub log: PathBuf,
    pub started_ms: i64,
    exit: oneshot::Receiver<Exit>,
}

impl Watch {
    /// The attempt's exit, once it has one (`Lost` if the supervisor went first). Cancel-safe.
    pub async fn exited(&mut self) -> Exit {
        (&mut self.exit).await.unwrap_or(Exit::Lost)
    }
}

impl Supervisor {
    /// Connects to the supervisor of `dir`, starting one (as `how` says) when none answers,
    /// and stays connected for as long as the handle lives.
    pub async fn start(dir: PathBuf, how: Supervision) -> Result<Arc<Self>, SupervisorError> {
        let socket = super::socket_path(&dir);
        if socket.as_os_str().len() > 107 {
            return Err(SupervisorError::PathTooLong(socket.display().to_string()));
        }
        let (ready, present) = oneshot::channel();
        let presence = tokio::spawn(presence(dir.clone(), how.clone(), ready));
        let (ended, runs) = tokio::sync::mpsc::unbounded_channel();
        let forgetting = tokio::spawn(forgetting(dir.clone(), how.clone(), runs));
        let supervisor = Arc::new(Self {
            dir,
            socket,
            how,
            presence: presence.abort_handle(),
            ended,
            forgetting: forgetting.abort_handle(),
        });
        match present.await {
            Ok(Ok(())) => Ok(supervisor),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SupervisorError::NotAnswering(
                supervisor.socket.display().to_string(),
            )),
        }
    }

    /// Asks for an attempt to be started.
    pub async fn spawn(&self, request: SpawnRequest) -> Result<Watch, SupervisorError> {
        let (reply, read) = self.ask(&Request::Spawn(Box::new(request))).await?;
        self.watch(reply, read)
    }

    /// Re-attaches to an attempt; none if the supervisor does not know it.
    pub async fn attach(&self, key: &AttemptKey) -> Result<Option<Watch>, SupervisorError> {
        let (reply, read) = self.ask(&Request::Attach { key: key.clone() }).await?;
        match reply {
            Reply::Unknown => Ok(None),
            reply => self.watch(reply, read).map(Some),
        }
    }

    /// Every attempt of `run_id` (none: of every run) the supervisor knows, in key order.
    pub async fn list(&self, run_id: Option<&str>) -> Result<Vec<Known>, SupervisorError> {
        let request = Request::List {
            run_id: run_id.map(str::to_owned),
        };
        match self.ask(&request).await? {
            (Reply::Attempts { attempts }, _) => Ok(attempts),
            (other, _) => Err(self.unexpected(&other)),
        }
    }

    /// Lets the supervisor drop the attempts of run `run_id` soon, in a batch with other runs'
    /// (its end is recorded; a crash before the batch goes only leaves the agent's next start
    /// to drop them).
    pub fn forget_later(&self, run_id: String) {
        let _ = self.ended.send(run_id);
    }

    /// Lets the supervisor drop the ended attempts of `runs` and their files (their outcome
    /// is recorded).
    pub async fn forget(&self, runs: Vec<String>) {
        if runs.is_empty() {
            return;
        }
        if let Err(e) = self.ask(&Request::Forget { runs }).await {
            tracing::warn!("telling the supervisor to forget attempts: {e}");
        }
    }

    /// The supervisor's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn watch(&self, reply: Reply, read: BufReader<UnixStream>) -> Result<Watch, SupervisorError> {
        match reply {
            Reply::Spawned {
                pid,
                log,
                started_ms,
            } => {
                let (tell, exit) = oneshot::channel();
                tokio::spawn(async move {
                    let mut lines = read.lines();
                    let exit = match lines.next_line().await {
                        Ok(Some(line)) => match serde_json::from_str::<Reply>(&line) {
                            Ok(Reply::Exited { exit }) => exit,
                            _ => Exit::Lost,
                        },
                        _ => Exit::Lost,
                    };
                    let _ = tell.send(exit);
                });
                Ok(Watch {
                    pid,
                    log,
                    started_ms,
                    exit,
                })
            }
            Reply::Refused { message } => Err(SupervisorError::Refused(message)),
            other => Err(self.unexpected(&other)),
        }
    }

    fn unexpected(&self, reply: &Reply) -> SupervisorError {
        SupervisorError::Protocol {
            socket: self.socket.display().to_string(),
            answer: serde_json::to_string(reply).unwrap_or_default(),
        }
    }

    /// Sends one request on a connection of its own; its first reply, and the connection to
    /// read on.
    async fn ask(
        &self,
        request: &Request,
    ) -> Result<(Reply, BufReader<UnixStream>), SupervisorError> {
        let stream = connect(&self.dir, &self.how).await?;
        exchange(stream, &self.socket, request).await
    }
}

async fn exchange(
    stream: UnixStream,
    socket: &Path,
    request: &Request,
) -> Result<(Reply, BufReader<UnixStream>), SupervisorError> {
    let io = |source| SupervisorError::Io {
        socket: socket.display().to_string(),
        source,
    };
    let mut stream = stream;
    let mut line = serde_json::to_vec(request).expect("requests serialise");
    line.push(b'\n');
    stream.write_all(&line).await.map_err(io)?;
    // Not shut for writing: on a `hello` connection, that reads as the agent gone.
    let mut read = BufReader::new(stream);
    let mut answer = String::new();
    let n = read.read_line(&mut answer).await.map_err(io)?;
    if n == 0 {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed without answering",
        )));
    }
    let reply = serde_json::from_str(&answer).map_err(|_| SupervisorError::Protocol {
        socket: socket.display().to_string(),
        answer: answer.trim().to_owned(),
    })?;
    Ok((reply, read))
}

/// A connection to `dir`'s supervisor, starting one when none answers.
async fn connect(dir: &Path, how: &Supervision) -> Result<UnixStream, SupervisorError> {
    let socket = super::socket_path(dir);
    if let Ok(stream) = UnixStream::connect(&socket).await {
        return Ok(stream);
    }
    start(dir, how)?;
    let deadline = tokio::time::Instant::now() + STARTING;
    loop {
        match UnixStream::connect(&socket).await {
            Ok(stream) => return Ok(stream),
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => return Err(SupervisorError::NotAnswering(socket.display().to_string())),
        }
    }
}

/// Starts a supervisor for `dir`. One that finds another already serving ends at once.
fn start(dir: &Path, how: &Supervision) -> Result<(), SupervisorError> {
    match how {
        Supervision::InProcess => {
            let dir = dir.to_owned();
            tokio::spawn(async move {
                if let Err(e) = super::server::serve(dir).await {
                    tracing::debug!("in-process supervisor: {e}");
                }
            });
            Ok(())
        }
        Supervision::Process | Supervision::Program(_) => {
            let program = match how {
                Supervision::Program(program) => program.clone(),
                _ => std::env::current_exe().map_err(|source| SupervisorError::Start {
                    program: "(the agent's executable)".into(),
                    dir: dir.display().to_string(),
                    source,
                })?,
            };
            let failed = |source| SupervisorError::Start {
                program: program.display().to_string(),
                dir: dir.display().to_string(),
                source,
            };
            std::fs::create_dir_all(dir).map_err(failed)?;
            let errors = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("supervisor.log"))
                .map_err(failed)?;
            let mut command = tokio::process::Command::new(&program);
            command
                .arg("supervise")
                .arg("--dir")
                .arg(dir)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(errors)
                .kill_on_drop(false);
            // SAFETY: setsid(2) between fork and exec, async-signal-safe: a session of its own,
            // so nothing aimed at the agent's group or terminal reaches it.
            unsafe {
                command.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
            let mut child = command.spawn().map_err(failed)?;
            // Reaped when it ends (it outlives this process if this one goes first).
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            Ok(())
        }
    }
}

/// Tells the supervisor the runs whose end is recorded: whatever has come, one request at a
/// time.
async fn forgetting(
    dir: PathBuf,
    how: Supervision,
    mut ended: tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let socket = super::socket_path(&dir);
    let mut runs = Vec::new();
    while ended.recv_many(&mut runs, 10_000).await > 0 {
        let request = Request::Forget {
            runs: std::mem::take(&mut runs),
        };
        let asked = match connect(&dir, &how).await {
            Ok(stream) => exchange(stream, &socket, &request).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = asked {
            tracing::warn!("telling the supervisor to forget ended runs: {e}");
        }
    }
}

/// Holds the agent's presence: a `hello` connection, made again (starting a supervisor)
/// whenever it closes. Tells `ready` how the first attempt went.
async fn presence(
    dir: PathBuf,
    how: Supervision,
    ready: oneshot::Sender<Result<(), SupervisorError>>,
) {
    let socket = super::socket_path(&dir);
    let mut ready = Some(ready);
    loop {
        let connected = match connect(&dir, &how).await {
            Ok(stream) => exchange(stream, &socket, &Request::Hello { version: VERSION }).await,
            Err(e) => Err(e),
        };
        let read = match connected {
            Ok((Reply::Hello { version, .. }, read)) if version == VERSION => Ok(read),
            Ok((Reply::Hello { version, pid }, _)) => Err(SupervisorError::Version {
                socket: socket.display().to_string(),
                theirs: version,
                pid,
            }),
            Ok((other, _)) => Err(SupervisorError::Protocol {
                socket: socket.display().to_string(),
                answer: serde_json::to_string(&other).unwrap_or_default(),
            }),
            Err(e) => Err(e),
        };
        match (read, ready.take()) {
            (Ok(mut read), ready) => {
                if let Some(ready) = ready {
                    let _ = ready.send(Ok(()));
                }
                // Nothing more comes on it; it ends when the supervisor does.
                let mut rest = String::new();
                while let Ok(n) = read.read_line(&mut rest).await {
                    if n == 0 {
                        break;
                    }
                }
                tracing::warn!(
                    "the supervisor at {} went; starting another",
                    socket.display()
                );
            }
            (Err(e), Some(ready)) => {
                let _ = ready.send(Err(e));
                return;
            }
            (Err(e), None) => {
                tracing::error!("{e}; trying again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
