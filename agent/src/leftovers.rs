//! Processes a previous agent process left behind: the tasks of runs it had started when it
//! stopped (killed, crashed). Nothing supervises them any more, so before those runs are
//! recorded failed their processes are found — every process whose environment names one of
//! the runs (`MERIDIAN_RUN_ID`, which every task gets) — and killed with their process groups.
//! A process that cleared its environment and left its group is not found; under systemd the
//! unit's control group ends them all when the agent stops (`KillMode=control-group`).

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

/// What was found of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    pid: i32,
    pgid: i32,
    run_id: String,
}

/// The run a process's environment (`/proc/<pid>/environ`: `KEY=value` entries separated by
/// NUL bytes) names, if it is one of `runs`.
fn run_of(environ: &[u8], runs: &HashSet<String>) -> Option<String> {
    environ
        .split(|b| *b == 0)
        .filter_map(|entry| entry.strip_prefix(b"MERIDIAN_RUN_ID="))
        .filter_map(|id| std::str::from_utf8(id).ok())
        .find(|id| runs.contains(*id))
        .map(str::to_owned)
}

/// The process group in `/proc/<pid>/stat` (the fifth field, after the command in
/// parentheses, which may itself hold spaces and parentheses).
fn pgid_of(stat: &str) -> Option<i32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(2)?.parse().ok()
}

fn scan(proc: &Path, runs: &HashSet<String>) -> Vec<Found> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let Some(run_id) = run_of(&environ, runs) else {
            continue;
        };
        let Some(pgid) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| pgid_of(&s))
        else {
            continue;
        };
        found.push(Found { pid, pgid, run_id });
    }
    found
}

/// Kills every process left running for one of `runs`, with its process group (never the
/// agent's own). Returns how many processes were found, per run.
pub fn kill(runs: &HashSet<String>) -> Vec<(String, usize)> {
    if runs.is_empty() {
        return Vec::new();
    }
    let found = scan(Path::new("/proc"), runs);
    // SAFETY: getpgrp(2) has no preconditions.
    let own_group = unsafe { libc::getpgrp() };
    let groups: BTreeSet<i32> = found
        .iter()
        .map(|f| f.pgid)
        .filter(|g| *g > 1 && *g != own_group)
        .collect();
    for group in &groups {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
    for f in &found {
        // One that left its group (or shares the agent's) is killed on its own.
        // SAFETY: as above, for one process.
        unsafe {
            libc::kill(f.pid, libc::SIGKILL);
        }
    }
    let mut per_run: Vec<(String, usize)> = Vec::new();
    for f in found {
        match per_run.iter_mut().find(|(r, _)| *r == f.run_id) {
            Some((_, n)) => *n += 1,
            None => per_run.push((f.run_id, 1)),
        }
    }
    if !per_run.is_empty() {
        tracing::warn!(
            ?per_run,
            "killed the processes a previous agent process left running"
        );
    }
    per_run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_known_by_the_run_its_environment_names_and_its_group_by_its_stat() {
        let runs: HashSet<String> = ["ads.s@20270101T000000Z".to_owned()].into();
        let environ = b"PATH=/bin\0MERIDIAN_RUN_ID=ads.s@20270101T000000Z\0HOME=/tmp\0";
        assert_eq!(
            run_of(environ, &runs).as_deref(),
            Some("ads.s@20270101T000000Z")
        );
        assert_eq!(run_of(b"MERIDIAN_RUN_ID=other\0", &runs), None);
        assert_eq!(
            run_of(b"XMERIDIAN_RUN_ID=ads.s@20270101T000000Z\0", &runs),
            None
        );
        // The command may hold spaces and parentheses.
        assert_eq!(pgid_of("4242 (sh (x) y) S 1 4240 4240 0 -1"), Some(4240));
        assert_eq!(pgid_of("garbage"), None);
    }

    #[test]
    fn processes_left_for_a_run_are_killed_with_their_group() {
        use std::os::unix::process::CommandExt;
        let run = format!("ads.leftover@{}", std::process::id());
        // A shell in its own group with a child of its own, as a task is.
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("sleep 300 & sleep 300; wait")
            .env("MERIDIAN_RUN_ID", &run)
            .process_group(0)
            .spawn()
            .unwrap();
        let runs: HashSet<String> = [run.clone()].into();
        // The shell and both sleeps, once they are there.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while scan(Path::new("/proc"), &runs).len() < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "the processes started"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(kill(&runs), [(run.clone(), 3)]);
        let _ = child.wait();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // Killed processes may linger as zombies until reaped by init: only live ones count.
        while scan(Path::new("/proc"), &runs)
            .iter()
            .any(|f| !zombie(f.pid))
        {
            assert!(std::time::Instant::now() < deadline, "they died");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn zombie(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s[s.rfind(')').unwrap_or(0)..].starts_with(") Z"))
            .unwrap_or(true)
    }
}
