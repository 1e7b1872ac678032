//! A real PostgreSQL server for the history store's tests: Debian's PostgreSQL (which
//! `tests/run` installs), a cluster of its own made with `initdb` in a temporary directory and
//! started on a free loopback port (trust authentication, nothing else listening), stopped
//! and removed on drop. Run as root, the server runs as the `postgres` user, as it must.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::process::free_port;

/// A running PostgreSQL cluster.
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl Postgres {
    /// Makes a cluster and starts it; an error says what is missing.
    pub fn start() -> anyhow::Result<Self> {
        let bin = find_bin()?;
        let dir = tempfile::Builder::new().prefix("meridian-pg").tempdir()?;
        let as_postgres = nix_is_root();
        if as_postgres {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .context("handing the cluster's directory to the postgres user")?;
        }
        let data = dir.path().join("data");
        let pg = Self {
            bin,
            dir,
            port: free_port(),
            as_postgres,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )?;
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            pg.port,
            pg.dir.path().display()
        );
        pg.run(
            "pg_ctl",
            &[
                "-D",
                &data.display().to_string(),
                "-o",
                &options,
                "-l",
                &pg.dir.path().join("log").display().to_string(),
                "-w",
                "start",
            ],
        )?;
        Ok(pg)
    }

    /// A new empty database: its URL for `[history] url`.
    pub async fn database(&self, name: &str) -> anyhow::Result<String> {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres")).await?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        Ok(self.url(name))
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let path = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", path.display()))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
            bail!(
                "{tool} failed: {}{}\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self.run(
            "pg_ctl",
            &["-D", &data.display().to_string(), "-m", "immediate", "stop"],
        );
    }
}

/// `$MERIDIAN_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin` with `initdb`.
fn find_bin() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("MERIDIAN_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    found.sort();
    match found.pop() {
        Some(bin) => Ok(bin),
        None => bail!(
            "PostgreSQL's server programs (initdb, pg_ctl) are missing: install them (Debian: \
             apt-get install -y postgresql; tests/run does) or set MERIDIAN_PG_BIN"
        ),
    }
}

fn nix_is_root() -> bool {
    // The owner of this process's /proc entry is its user.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn postgres_ids() -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.first() == Some(&"postgres") && f.len() > 3 {
            return Ok((f[2].parse()?, f[3].parse()?));
        }
    }
    bail!("there is no `postgres` user to run the server as (Debian's postgresql package makes it)")
}
