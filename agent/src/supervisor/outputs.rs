//! Attempts' output files, recycled: a forgotten attempt's file is renamed into `spare/`
//! (up to [`SPARES`] of them) rather than deleted, and the next attempt's file is a spare
//! renamed into place and emptied rather than a new file — as PostgreSQL recycles its WAL
//! segments. A rename allocates no inode; on ext4 without a journal (this project's CI
//! machine) creating a file walks past every inode deleted in the last minutes, which at a
//! few thousand attempts a minute cost more than starting the attempts.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Spare files kept at most.
const SPARES: usize = 1024;

pub struct Outputs {
    spare_dir: PathBuf,
    free: Mutex<Vec<PathBuf>>,
    named: AtomicU64,
}

impl Outputs {
    /// The spares in `<dir>/spare` (created if missing).
    pub fn open(dir: &Path) -> io::Result<Outputs> {
        let spare_dir = dir.join("spare");
        std::fs::create_dir_all(&spare_dir)?;
        let mut free = Vec::new();
        let mut named = 0;
        for entry in std::fs::read_dir(&spare_dir)?.flatten() {
            let path = entry.path();
            if let Some(n) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u64>().ok())
            {
                named = named.max(n + 1);
            }
            free.push(path);
        }
        Ok(Outputs {
            spare_dir,
            free: Mutex::new(free),
            named: AtomicU64::new(named),
        })
    }

    /// `path`, empty and open for writing: a spare renamed there, or a new file.
    pub fn create(&self, path: &Path) -> io::Result<File> {
        let spare = self.free.lock().expect("spares").pop();
        if let Some(spare) = spare
            && std::fs::rename(&spare, path).is_ok()
        {
            // Opened after the rename: a file left at `path` before is replaced whole.
            return std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path);
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)
    }

    /// Done with `path`: kept as a spare while there is room, deleted otherwise.
    pub fn retire(&self, path: &Path) {
        let mut free = self.free.lock().expect("spares");
        if free.len() < SPARES {
            let spare = self
                .spare_dir
                .join(self.named.fetch_add(1, Ordering::Relaxed).to_string());
            if std::fs::rename(path, &spare).is_ok() {
                free.push(spare);
                return;
            }
        }
        drop(free);
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_retired_file_comes_back_empty_as_the_next_output_without_a_new_inode() {
        let dir = tempfile::tempdir().unwrap();
        let outputs = Outputs::open(dir.path()).unwrap();
        let first = dir.path().join("a.log");
        outputs
            .create(&first)
            .unwrap()
            .write_all(b"old output")
            .unwrap();
        let inode = std::fs::metadata(&first).unwrap().ino();
        outputs.retire(&first);
        assert!(!first.exists());

        // A supervisor started later finds the spare too.
        let outputs = Outputs::open(dir.path()).unwrap();
        let second = dir.path().join("b.log");
        let mut file = outputs.create(&second).unwrap();
        assert_eq!(std::fs::metadata(&second).unwrap().ino(), inode);
        assert_eq!(std::fs::read(&second).unwrap(), b"");
        file.write_all(b"new").unwrap();
        assert_eq!(std::fs::read(&second).unwrap(), b"new");

        // No spare left: a new file.
        let third = dir.path().join("c.log");
        outputs.create(&third).unwrap();
        assert_ne!(std::fs::metadata(&third).unwrap().ino(), inode);
    }
}
