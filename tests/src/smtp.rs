//! A real SMTP server for the alert tests: aiosmtpd (from the venv `tests/run` makes) on a
//! loopback port, storing what it receives in a Maildir the test reads.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SmtpServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

/// `$MERIDIAN_AIOSMTPD`, else the venv `tests/run` makes. Panics saying what to install.
fn find() -> PathBuf {
    if let Some(path) = std::env::var_os("MERIDIAN_AIOSMTPD") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "MERIDIAN_AIOSMTPD is {}, which does not exist: run tests/run (it installs \
             aiosmtpd) or `pip install aiosmtpd==1.4.6` and point MERIDIAN_AIOSMTPD at it",
            path.display()
        );
        return path;
    }
    let cache = std::env::var_os("MERIDIAN_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/meridian")));
    let venv = cache.map(|c| c.join("moto/bin/aiosmtpd"));
    match venv {
        Some(path) if path.is_file() => path,
        _ => panic!(
            "aiosmtpd (the SMTP server the alert tests send mail to) is missing: run tests/run, \
             which installs it, or `pip install aiosmtpd==1.4.6` and set MERIDIAN_AIOSMTPD"
        ),
    }
}

impl SmtpServer {
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let maildir = dir.path().join("mail");
        let child = Command::new(find())
            .args(["-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting aiosmtpd");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { port, dir, child }
    }

    /// Every message received so far, as its raw text.
    pub fn messages(&self) -> Vec<String> {
        let new = self.dir.path().join("mail/new");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&new)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
