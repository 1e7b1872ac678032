//! Throw-away OS users for isolation tests: made with `useradd`, removed with `userdel` when
//! dropped, a failing test included. Shared by `agent/tests/isolation.rs` and
//! `tests/tests/resource_isolation.rs` (included there by path).
//!
//! These tests need root and `useradd`; without them they fail saying so rather than skip, so
//! a run that could not check isolation never reads as one that did.

use std::process::Command;

/// Fails the test unless it can make users and start tasks as them.
pub fn require_root_and_useradd() {
    let euid = Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    assert_eq!(
        euid.as_deref().ok(),
        Some("0"),
        "this test needs root (it makes throw-away OS users with useradd and starts tasks as \
         them, as an agent running as root does): run it as root, e.g. `sudo -E cargo test \
         ...`; it is not skipped, so a run without root cannot pass for one that checked \
         isolation"
    );
    for tool in ["useradd", "userdel", "groupadd", "groupdel"] {
        let found = Command::new(tool).arg("--help").output();
        assert!(
            found.is_ok(),
            "this test needs `{tool}` on PATH (Debian/Ubuntu: package `passwd`) to make and \
             remove throw-away OS users: {found:?}"
        );
    }
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
            let _ = Command::new("userdel").arg(user).output();
            // userdel removes the user's own group only where USERGROUPS_ENAB says so.
            let _ = Command::new("groupdel").arg(user).output();
        }
        for group in &self.groups {
            let _ = Command::new("groupdel").arg(group).output();
        }
    }
}

fn run(tool: &str, args: &[&str]) {
    let out = Command::new(tool)
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
    let out = Command::new("id").args(args).output().unwrap();
    assert!(out.status.success(), "id {args:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
