//! What the agent and its supervisor say to each other: one JSON object per line. A
//! connection carries one request; `spawn` and `attach` then stay open until the attempt's
//! exit is told, `hello` until the agent goes (it is the agent's presence).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The protocol's version, told in `hello`: an agent refuses a supervisor of another version
/// (one left running by a previous release) rather than misunderstand it.
pub const VERSION: u32 = 1;

/// One attempt of one task of one run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttemptKey {
    pub run_id: String,
    pub task: String,
    pub attempt: u32,
}

impl AttemptKey {
    /// The attempt's files' name without extension: the key with every byte outside
    /// `[A-Za-z0-9._@-]` written `%XX`, fields separated by `+`.
    pub fn stem(&self) -> String {
        let mut out = String::new();
        for (i, part) in [self.run_id.as_str(), self.task.as_str()]
            .iter()
            .enumerate()
        {
            if i > 0 {
                out.push('+');
            }
            for b in part.bytes() {
                if b.is_ascii_alphanumeric() || b"._@-".contains(&b) {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
        format!("{out}+{}", self.attempt)
    }
}

/// How an attempt's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum Exit {
    Code {
        code: i32,
    },
    Signal {
        signal: i32,
    },
    /// Not known: the supervisor stopped while it ran (or could not wait for it).
    Lost,
}

/// Who an attempt runs as when the supervisor (root) switches to another user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switch {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Start an attempt: `/bin/sh -c script` in `dir` with exactly `env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnRequest {
    pub key: AttemptKey,
    pub script: String,
    pub dir: PathBuf,
    pub env: BTreeMap<String, String>,
    /// None: it runs as the supervisor's own user.
    pub user: Option<Switch>,
    /// Written to the output file before the script starts (the agent's warnings about it).
    pub preamble: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Hello {
        version: u32,
    },
    Spawn(Box<SpawnRequest>),
    Attach {
        key: AttemptKey,
    },
    /// Every attempt of one run (none: of every run).
    List {
        run_id: Option<String>,
    },
    /// Drop every attempt of these runs (ended: their outcome is recorded) and their files.
    Forget {
        runs: Vec<String>,
    },
}

/// What the supervisor knows of one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    pub key: AttemptKey,
    /// Its process (and process group); 0 when a previous supervisor started it.
    pub pid: u32,
    /// When it started, wall clock (ms since the epoch).
    pub started_ms: i64,
    /// None: still running.
    pub exit: Option<Exit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Hello {
        version: u32,
        pid: u32,
    },
    Spawned {
        pid: u32,
        log: PathBuf,
        started_ms: i64,
    },
    Refused {
        message: String,
    },
    Exited {
        exit: Exit,
    },
    Unknown,
    Attempts {
        attempts: Vec<Known>,
    },
    Forgotten,
}

/// An attempt's exit status as its file keeps it (a versioned document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub key: AttemptKey,
    pub pid: u32,
    pub started_ms: i64,
    pub exit: Exit,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempts_file_name_keeps_only_safe_bytes_and_tells_keys_apart() {
        let key = |run: &str, task: &str, attempt| AttemptKey {
            run_id: run.into(),
            task: task.into(),
            attempt,
        };
        assert_eq!(
            key("ads.etl@20270101T000000Z", "load", 2).stem(),
            "ads.etl@20270101T000000Z+load+2"
        );
        assert_eq!(key("a/b c", "t+x", 1).stem(), "a%2Fb%20c+t%2Bx+1");
        assert_ne!(key("a+b", "c", 1).stem(), key("a", "b+c", 1).stem());
        let line = serde_json::to_string(&Request::Attach {
            key: key("r", "t", 1),
        })
        .unwrap();
        assert_eq!(
            line,
            r#"{"op":"attach","key":{"run_id":"r","task":"t","attempt":1}}"#
        );
        let exit: Reply =
            serde_json::from_str(r#"{"reply":"exited","exit":{"how":"code","code":3}}"#).unwrap();
        assert_eq!(
            exit,
            Reply::Exited {
                exit: Exit::Code { code: 3 }
            }
        );
    }
}
