//! The task supervisor: one small process per agent that starts the agent's shell tasks and
//! outlives the agent (as Nomad's executor does, but one per agent rather than one per task).
//!
//! The agent asks it, over a Unix socket in `<data_dir>/supervisor`, to start an attempt; it
//! starts `/bin/sh -c <script>` in a process group of its own with the output going straight
//! to a file beside the socket, waits for it, and appends its exit status to a journal there.
//! The agent reads the output file as it grows (the log it reports) and is told the exit
//! status on the connection it asked on. When the agent dies, nothing of this stops: the
//! restarted agent lists what the supervisor has for the runs it had going, re-attaches to
//! each attempt (still running or ended meanwhile), sends the rest of its log from where its
//! outbox stood, and records the real outcome. Once the outcome is in the outbox, the agent
//! tells the supervisor to forget the attempt (its files go).
//!
//! The supervisor ends on its own once no agent is connected and no task of its is running;
//! an agent starts one when none answers. A supervisor that starts finds the exit statuses its
//! predecessor journalled; an attempt with an output file but no status was running when the
//! previous supervisor stopped: its outcome is lost, and the agent kills what is left of it
//! ([`crate::leftovers`]) before recording it failed.
//!
//! - [`protocol`]: the requests and replies (JSON lines), and the attempt's key and exit.
//! - [`server`]: the supervisor itself (`meridian-agent supervise --dir DIR`).
//! - [`journal`]: its exit journal (a versioned line per ended attempt, one file).
//! - [`client`]: the agent's handle on it.

pub mod client;
mod journal;
pub mod protocol;
pub mod server;

pub use client::{Supervisor, SupervisorError, Watch};
pub use protocol::{AttemptKey, Exit, Known, SpawnRequest, Switch};

use serde::Deserialize;

/// How an agent's shell tasks are supervised (`supervisor` in agent.toml).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Supervision {
    /// A process of its own (`<the agent's executable> supervise`), started by the agent when
    /// none answers: tasks go on through an agent restart, and the restarted agent re-attaches.
    #[default]
    Process,
    /// A task inside the agent's own process: the same protocol, but tasks die with the
    /// process. For test harnesses and programs that embed an agent without a `supervise`
    /// command.
    InProcess,
    /// A process of its own, from this program's `supervise` command (not in agent.toml:
    /// for programs whose own executable has no such command, such as test harnesses).
    #[serde(skip)]
    Program(std::path::PathBuf),
}

/// The socket in a supervisor's directory.
pub fn socket_path(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("socket")
}

/// An attempt's output file in a supervisor's directory.
fn output_path(dir: &std::path::Path, key: &AttemptKey) -> std::path::PathBuf {
    dir.join(format!("{}.log", key.stem()))
}

/// The files in `dir` named `*.<extension>` (none if it cannot be read).
fn files_ending(dir: &std::path::Path, extension: &str) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(extension))
        .collect()
}
