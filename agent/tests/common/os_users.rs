//! Throw-away OS users for isolation tests: made with `useradd`, removed with `userdel` when
//! dropped, a failing test included. Shared by `agent/tests/isolation.rs` and
//! `tests/tests/resource_isolation.rs` (included there by path).
//!
//! These tests need root and `useradd`; without them they fail saying so rather than skip, so
//! a run that could not check isolation never reads as one that did.

use std::process::Command;

/// Fails the test unless it can make users and start tasks as them.
pub fn require_root_and_useradd() {
    // The effective uid, from the kernel: no tool that could itself be missing.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1));
    assert_eq!(
        euid,
        Some("0"),
        "this test needs root (it makes throw-away OS users with useradd and starts tasks as \
         them, as an agent running as root does): run it as root, e.g. `sudo -E cargo test \
         ...`; it is not skipped, so a run without root cannot pass for one that checked \
         isolation"
    );
    for tool in ["useradd", "userdel", "groupadd", "groupdel"] {
        assert!(
            find(tool).is_some(),
            "this test needs `{tool}` (on PATH, in /usr/sbin or /sbin; Debian/Ubuntu: package \
             `passwd`) to make and remove throw-away OS users"
        );
    }
}

/// Where `tool` is: on PATH, or in the system directories (sbin: a non-login root shell may
/// leave them off PATH).
fn find(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| std::path::Path::new(dir).join(tool))
        .find(|candidate| candidate.is_file())
}

/// `tool`, found as [`find`] does.
pub fn command(tool: &str) -> Command {
    Command::new(find(tool).unwrap_or_else(|| tool.into()))
}

/// OS users and groups that exist until this is dropped.
pub struct OsUsers {
    users: Vec<String>,
    groups: Vec<String>,
}

/// One throw-away user.
#[derive(Debug, Clone)]
pub struct OsUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl OsUsers {
    pub fn new() -> Self {
        require_root_and_useradd();
        Self {
            users: Vec::new(),
            groups: Vec::new(),
        }
    }

    /// `mrd-iso-<pid>-<suffix>`: unique to this test process, at most 32 characters.
    pub fn name(suffix: &str) -> String {
        format!("mrd-iso-{}-{suffix}", std::process::id())
    }

    /// A group of its own (for supplementary membership).
    pub fn group(&mut self, suffix: &str) -> String {
        let name = Self::name(suffix);
        // Recorded before it exists: a half-made group is removed too.
        self.groups.push(name.clone());
        run("groupadd", &["--system", &name]);
        name
    }

    /// A system user without a home, in a group of its own name, and in `groups`.
    pub fn user(&mut self, suffix: &str, groups: &[&str]) -> OsUser {
        let name = Self::name(suffix);
        self.users.push(name.clone());
        let mut args = vec!["--system", "--no-create-home", "--user-group"];
        let joined = groups.join(",");
        if !groups.is_empty() {
            args.extend(["--groups", &joined]);
        }
        args.push(&name);
        run("useradd", &args);
        OsUser {
            uid: id(&["-u", &name]),
            gid: id(&["-g", &name]),
            name,
        }
    }
}

impl Drop for OsUsers {
    fn drop(&mut self) {
        for user in &self.users {
            let _ = command("userdel").arg(user).output();
            // userdel removes the user's own group only where USERGROUPS_ENAB says so.
            let _ = command("groupdel").arg(user).output();
        }
        for group in &self.groups {
            let _ = command("groupdel").arg(group).output();
        }
    }
}

fn run(tool: &str, args: &[&str]) {
    let out = command(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn id(args: &[&str]) -> u32 {
    let out = command("id").args(args).output().unwrap();
    assert!(out.status.success(), "id {args:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
