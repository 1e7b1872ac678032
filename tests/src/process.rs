//! Real `meridian` processes: long-running ones ([`Daemon`]) and one-shot CLI calls
//! ([`meridian`]).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::binary;

/// A free TCP port on loopback (bound and released; fine for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a one-shot command did.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `meridian ARGS` with extra environment variables and waits for it.
pub fn meridian(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary("meridian"));
    cmd.args(args)
        .env_remove("MERIDIAN_TOKEN")
        .env_remove("MERIDIAN_ADDR")
        .env_remove("MERIDIAN_CA")
        .env_remove("MERIDIAN_DATA_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running meridian");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The stdout of a call that must succeed (exit 0); panics with the whole output otherwise.
pub fn ok(out: Output) -> String {
    assert_eq!(out.code, Some(0), "{out:?}");
    out.stdout
}

/// Asserts a call was refused as bad input (exit 2) with `needle` in its message.
pub fn refused(out: Output, needle: &str) {
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains(needle),
        "stderr lacks `{needle}`: {out:?}"
    );
}

/// Polls `runs get RUN` through `cli` until the run has succeeded and returns its JSON;
/// panics if it fails or takes longer than `patience`.
pub fn wait_until_succeeded(
    cli: &dyn Fn(&[&str]) -> Output,
    run: &str,
    patience: Duration,
) -> String {
    let deadline = Instant::now() + patience;
    loop {
        let detail = ok(cli(&["runs", "get", run]));
        if detail.contains("\"succeeded\"") {
            return detail;
        }
        assert!(
            !detail.contains("\"failed\"") && Instant::now() < deadline,
            "run {run} did not succeed: {detail}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A `meridian` process that keeps running (a plane node, `meridian dev`); killed on drop.
pub struct Daemon {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Daemon {
    /// Starts `meridian ARGS`, its stderr going to `log`.
    pub fn start(args: &[&str], log: &Path) -> Self {
        Self::start_with_env(args, &[], log)
    }

    /// Starts `meridian ARGS` with `env` added to its environment.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)], log: &Path) -> Self {
        let mut command = Command::new(binary("meridian"));
        command
            .args(args)
            .env_remove("MERIDIAN_TOKEN")
            .envs(env.iter().copied());
        Self::spawn(command, log)
    }

    /// Starts `command` (any program: `meridian-agent` too), its stderr going to `log`.
    pub fn spawn(mut command: Command, log: &Path) -> Self {
        let err = std::fs::File::create(log).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", command.get_program()));
        Self {
            child: Some(child),
            log: log.to_owned(),
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("still running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`, failing with the log after `patience`.
    pub fn wait_for_log(&mut self, needle: &str, patience: Duration) {
        let deadline = Instant::now() + patience;
        loop {
            if self.log().contains(needle) {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "meridian exited ({status}) before saying `{needle}`:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "meridian did not say `{needle}` within {patience:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (e.g. `INT`, `KILL`) and waits for the process to exit; returns its code.
    pub fn signal(&mut self, signal: &str) -> Option<i32> {
        let mut child = self.child.take().expect("still running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} failed");
        child.wait().expect("waiting for meridian").code()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The live processes with an environment entry `matches` accepts (`/proc/<pid>/environ`,
/// `KEY=value` entries): how tests find a run's tasks by their `MERIDIAN_RUN_ID`.
pub fn processes_whose_env(matches: impl Fn(&[u8]) -> bool) -> Vec<u32> {
    processes_whose("environ", |env| env.split(|b| *b == 0).any(&matches))
}

/// The processes whose `/proc/<pid>/<file>` (`environ`, `cmdline`…) `matches` accepts.
pub fn processes_whose(file: &str, matches: impl Fn(&[u8]) -> bool) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/{file}")).is_ok_and(|c| matches(&c)))
        .collect()
}
