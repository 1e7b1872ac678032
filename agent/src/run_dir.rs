//! Where tasks run, and what of the agent's they must not reach.
//!
//! - A run's working directory is its task user's alone: mode 0700, owned by that user (or by
//!   the agent when the task runs as the agent).
//! - The base the run directories are in (`<data_dir>/runs` by default) and the agent's data
//!   directory are 0711 and the agent's: a task can pass through to its own directory but not
//!   list the others, the database or the cache.
//! - The database (`agent.db` and its `-wal` and `-shm`) is 0600, the resource cache 0700, the
//!   agent's TLS key 0600: nothing a task user can read.
//!
//! Modes are set when the agent starts, so a data directory made by an older agent is brought
//! in line; a directory the agent does not own, or one anybody may write to (a shared `/tmp`
//! named as a base), is left as it is and logged.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::identity::Owner;

/// A run's working directory: its user's alone.
pub const RUN_DIR_MODE: u32 = 0o700;
/// The data directory and the base of run directories: others may pass through to what they
/// own inside, not list it.
pub const TRAVERSE_ONLY: u32 = 0o711;
/// The database and key files: the agent's alone.
pub const PRIVATE_FILE: u32 = 0o600;
/// The resource cache: only the agent reads it; tasks get links or copies.
pub const PRIVATE_DIR: u32 = 0o700;

/// Makes the run's working directory `dir` (mode 0700, owned by `owner`, or by the agent when
/// none), and its base (0711) if that is missing. An existing `dir` is brought to that mode
/// and owner, unless it is not a directory or belongs to somebody else: then it is refused,
/// since a directory planted in a shared base could hold links to what the task user must not
/// see.
pub fn make(dir: &Path, owner: Option<Owner>) -> io::Result<()> {
    if let Some(base) = dir.parent()
        && !base.as_os_str().is_empty()
        && std::fs::symlink_metadata(base).is_err()
    {
        std::fs::create_dir_all(base)?;
        std::fs::set_permissions(base, Permissions::from_mode(TRAVERSE_ONLY))?;
    }
    match DirBuilder::new().mode(RUN_DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // Opened without following a symlink, then changed through the descriptor: what is
    // changed is the directory just checked, not whatever a symlink swapped in points to.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
                io::Error::other("it exists and is not a directory (a symlink or a file)")
            }
            _ => e,
        })?;
    let found = opened.metadata()?;
    let agent = agent_uid();
    let want_uid = owner.map_or(agent, |o| o.uid);
    if found.uid() != agent && found.uid() != want_uid {
        return Err(io::Error::other(format!(
            "it exists and belongs to uid {}, neither the agent nor the task's user",
            found.uid()
        )));
    }
    if let Some(owner) = owner
        && (found.uid(), found.gid()) != (owner.uid, owner.gid)
    {
        std::os::unix::fs::fchown(&opened, Some(owner.uid), Some(owner.gid))?;
    }
    if found.mode() & 0o7777 != RUN_DIR_MODE {
        opened.set_permissions(Permissions::from_mode(RUN_DIR_MODE))?;
    }
    Ok(())
}

/// Brings the agent's own files to their modes: `data_dir` 0711, the database files 0600,
/// `resources` 0700, the runs base `runs` 0711 (made if missing), the TLS key 0600. Called
/// when the agent starts; what cannot be changed is logged, not fatal (a task user could read
/// it, which the log says).
pub fn secure(data_dir: &Path, runs: &Path, key: &Path) -> io::Result<()> {
    set_dir_mode(data_dir, TRAVERSE_ONLY)?;
    for name in ["agent.db", "agent.db-wal", "agent.db-shm"] {
        set_file_mode(&data_dir.join(name), PRIVATE_FILE)?;
    }
    let resources = data_dir.join("resources");
    if resources.exists() {
        set_dir_mode(&resources, PRIVATE_DIR)?;
    }
    if std::fs::symlink_metadata(runs).is_err() {
        std::fs::create_dir_all(runs)?;
    }
    set_dir_mode(runs, TRAVERSE_ONLY)?;
    set_file_mode(key, PRIVATE_FILE)?;
    Ok(())
}

/// Sets a directory of the agent's to `mode`, unless it is shared (anybody may write to it)
/// or somebody else's: changing those would break others, so it is only logged.
fn set_dir_mode(dir: &Path, mode: u32) -> io::Result<()> {
    let found = std::fs::metadata(dir)?;
    let current = found.mode() & 0o7777;
    if current == mode {
        return Ok(());
    }
    if current & 0o002 != 0 || found.uid() != agent_uid() {
        tracing::warn!(
            "{} is mode {current:o} and owned by uid {}: left as it is; tasks may list it",
            dir.display(),
            found.uid()
        );
        return Ok(());
    }
    std::fs::set_permissions(dir, Permissions::from_mode(mode))
}

/// Takes group and other permissions off a file of the agent's, if it exists.
///
/// By its path (through a symlink, as a key often is), never opened: closing a descriptor of
/// a file drops every POSIX lock the process holds on it, SQLite's included, and the database
/// is open by now. Another process opening it next (an operator's `sqlite3`) would then think
/// itself alone, reset the `-shm` index under the agent's feet and crash it with SIGBUS on its
/// next large write.
fn set_file_mode(file: &Path, mode: u32) -> io::Result<()> {
    let found = match std::fs::metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !found.file_type().is_file() {
        tracing::warn!("{} is not a plain file: left as it is", file.display());
        return Ok(());
    }
    if found.mode() & 0o077 == 0 {
        return Ok(());
    }
    if found.uid() != agent_uid() {
        tracing::warn!(
            "{} is mode {:o} and owned by uid {}, not the agent: tasks may be able to read it",
            file.display(),
            found.mode() & 0o7777,
            found.uid()
        );
        return Ok(());
    }
    std::fs::set_permissions(file, Permissions::from_mode(mode))
}

fn agent_uid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_run_directory_is_its_users_alone_in_a_base_others_cannot_list() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("runs").join("ads.etl@1");
        make(&dir, None).unwrap();
        assert_eq!(mode(&dir), RUN_DIR_MODE);
        assert_eq!(mode(&tmp.path().join("runs")), TRAVERSE_ONLY);
        // Made again (the next attempt), and a mode a task loosened is put back.
        std::fs::set_permissions(&dir, Permissions::from_mode(0o777)).unwrap();
        make(&dir, None).unwrap();
        assert_eq!(mode(&dir), RUN_DIR_MODE);
    }

    #[test]
    fn a_symlink_or_file_in_the_run_directorys_place_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::set_permissions(&elsewhere, Permissions::from_mode(0o755)).unwrap();
        let dir = tmp.path().join("ads.etl@1");
        std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
        let e = make(&dir, None).unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "{e}");
        assert_eq!(mode(&elsewhere), 0o755, "the symlink's target is untouched");
    }

    /// Whether some open file description holds a lock that conflicts with a write lock on
    /// `byte` of `file` (OFD locks see this process's own POSIX locks as conflicting).
    /// (`f` must stay open until this process is done with the database: closing it would
    /// drop the locks too, the very thing tested.)
    fn locked(f: &std::fs::File, byte: i64) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: a zeroed flock is a valid value; fcntl only writes into it.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = libc::F_WRLCK as _;
        lock.l_whence = libc::SEEK_SET as _;
        lock.l_start = byte;
        lock.l_len = 1;
        // SAFETY: a valid descriptor and a pointer to a live flock.
        let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        lock.l_type != libc::F_UNLCK as libc::c_short
    }

    /// Securing the files of an open database keeps SQLite's locks: the `-shm` index's
    /// "somebody has it open" byte (128) stays locked, so another process opening the database
    /// does not reset the index under the agent.
    #[tokio::test]
    async fn securing_an_open_database_keeps_its_locks() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let pool = crate::store::open(&data.join("agent.db")).await.unwrap();
        sqlx::query("SELECT COUNT(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        let shm = data.join("agent.db-shm");
        std::fs::set_permissions(&shm, Permissions::from_mode(0o644)).unwrap();
        let probe = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&shm)
            .unwrap();
        assert!(locked(&probe, 128), "SQLite holds the index");
        secure(&data, &data.join("runs"), &tmp.path().join("no.key")).unwrap();
        assert_eq!(mode(&shm), PRIVATE_FILE);
        assert!(locked(&probe, 128), "securing dropped SQLite's locks");
        pool.close().await;
        drop(probe);
    }

    #[test]
    fn the_agents_files_are_made_private_and_its_directories_unlistable() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("resources")).unwrap();
        for dir in [&data, &data.join("resources")] {
            std::fs::set_permissions(dir, Permissions::from_mode(0o755)).unwrap();
        }
        for file in ["agent.db", "agent.db-wal", "agent.db-shm"] {
            std::fs::write(data.join(file), b"").unwrap();
            std::fs::set_permissions(data.join(file), Permissions::from_mode(0o644)).unwrap();
        }
        let key = tmp.path().join("agent.key");
        std::fs::write(&key, b"").unwrap();
        std::fs::set_permissions(&key, Permissions::from_mode(0o640)).unwrap();
        let runs = data.join("runs");
        secure(&data, &runs, &key).unwrap();
        assert_eq!(mode(&data), TRAVERSE_ONLY);
        assert_eq!(mode(&runs), TRAVERSE_ONLY);
        assert_eq!(mode(&data.join("resources")), PRIVATE_DIR);
        for file in ["agent.db", "agent.db-wal", "agent.db-shm"] {
            assert_eq!(mode(&data.join(file)), PRIVATE_FILE, "{file}");
        }
        assert_eq!(mode(&key), PRIVATE_FILE);
        // A shared base (like /tmp) is left alone; a missing key is no error.
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, Permissions::from_mode(0o1777)).unwrap();
        secure(&data, &shared, &tmp.path().join("no-such.key")).unwrap();
        assert_eq!(mode(&shared), 0o1777);
    }
}
