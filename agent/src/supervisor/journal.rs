//! The supervisor's exit journal: one file, `exits`, with a versioned line per ended attempt
//! and one per batch of attempts forgotten. Appending a line costs one write to an open file,
//! where a file per exit cost two creations and a rename per attempt — and creating files
//! is what a busy supervisor spends its time on (on ext4 without a journal each creation
//! walks past every inode deleted in the last minutes).
//!
//! Opening the journal reads it back (a torn or unreadable line, from a supervisor killed
//! mid-write, is skipped) and rewrites it with just the exits not forgotten (write, rename); it is
//! rewritten the same way once forgotten lines outnumber the live ones. Exits a supervisor of
//! the previous layout left one file each (`<stem>.exit`) are taken in and their files go.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::protocol::{AttemptKey, ExitRecord};
use meridian_domain::stored;

/// Rewrite once the journal has this many lines and more than twice as many as it needs.
const REWRITE_AT: usize = 4096;

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "line", rename_all = "snake_case")]
enum Line {
    Exited(ExitRecord),
    Forgot { keys: Vec<AttemptKey> },
}

pub struct Journal {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    file: File,
    /// The file's length: where it is cut back to when an append fails part way.
    len: u64,
    /// Lines in the file.
    lines: usize,
    /// The exits not forgotten: what a rewrite keeps.
    live: HashMap<AttemptKey, ExitRecord>,
}

impl Journal {
    /// Opens `<dir>/exits`: reads it back, rewrites it with what is live and returns that.
    pub fn open(dir: &Path) -> io::Result<(Journal, Vec<ExitRecord>)> {
        let path = dir.join("exits");
        let mut live = HashMap::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                for line in bytes.split(|b| *b == b'\n') {
                    let read = std::str::from_utf8(line)
                        .map_err(|e| e.to_string())
                        .and_then(|l| stored::read::<Line>(l).map_err(|e| e.to_string()));
                    match read {
                        Ok(Line::Exited(record)) => {
                            live.insert(record.key.clone(), record);
                        }
                        Ok(Line::Forgot { keys }) => {
                            for key in &keys {
                                live.remove(key);
                            }
                        }
                        Err(_) if line.iter().all(u8::is_ascii_whitespace) => {}
                        Err(e) => eprintln!("supervisor: {}: a line skipped: {e}", path.display()),
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let legacy = legacy_exit_files(dir);
        for (_, record) in &legacy {
            live.insert(record.key.clone(), record.clone());
        }
        let (file, len, lines) = rewrite(&path, &live)?;
        for (file, _) in legacy {
            let _ = std::fs::remove_file(file);
        }
        let records = live.values().cloned().collect();
        let journal = Journal {
            path,
            inner: Mutex::new(Inner {
                file,
                len,
                lines,
                live,
            }),
        };
        Ok((journal, records))
    }

    /// Appends an attempt's exit (on disk, not synced, when this returns).
    pub fn exited(&self, record: &ExitRecord) -> io::Result<()> {
        let mut inner = self.inner.lock().expect("journal");
        append(&mut inner, &Line::Exited(record.clone()))?;
        inner.live.insert(record.key.clone(), record.clone());
        Ok(())
    }

    /// Appends that the attempts `keys` are forgotten; rewrites the journal when mostly
    /// forgotten lines.
    pub fn forgot(&self, keys: &[AttemptKey]) -> io::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut inner = self.inner.lock().expect("journal");
        append(
            &mut inner,
            &Line::Forgot {
                keys: keys.to_vec(),
            },
        )?;
        for key in keys {
            inner.live.remove(key);
        }
        if inner.lines >= REWRITE_AT && inner.lines > 2 * inner.live.len() {
            let (file, len, lines) = rewrite(&self.path, &inner.live)?;
            inner.file = file;
            inner.len = len;
            inner.lines = lines;
        }
        Ok(())
    }
}

fn append(inner: &mut Inner, line: &Line) -> io::Result<()> {
    let mut text = stored::write(line);
    text.push('\n');
    // One write per line: a kill mid-way leaves at most the last line torn; a write that
    // fails part way is cut back off, so the next line does not start inside it.
    if let Err(e) = inner.file.write_all(text.as_bytes()) {
        let _ = inner.file.set_len(inner.len);
        return Err(e);
    }
    inner.len += text.len() as u64;
    inner.lines += 1;
    Ok(())
}

/// Writes `live` to a fresh journal beside `path` and renames it over `path`; returns it
/// open for appending (the very file renamed: nothing to reopen), its length and lines.
fn rewrite(path: &Path, live: &HashMap<AttemptKey, ExitRecord>) -> io::Result<(File, u64, usize)> {
    let tmp = path.with_extension("tmp");
    let mut records: Vec<&ExitRecord> = live.values().collect();
    records.sort_by(|a, b| a.key.cmp(&b.key));
    let mut text = String::new();
    for record in &records {
        text.push_str(&stored::write(&Line::Exited((*record).clone())));
        text.push('\n');
    }
    // Appending and truncating do not go together: a leftover from a rewrite cut short goes.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    std::fs::rename(&tmp, path)?;
    Ok((file, text.len() as u64, records.len()))
}

/// Exit statuses written one file each (`<stem>.exit`) by a supervisor of the previous layout.
fn legacy_exit_files(dir: &Path) -> Vec<(PathBuf, ExitRecord)> {
    super::files_ending(dir, "exit")
        .into_iter()
        .filter_map(|p| {
            let record = std::fs::read_to_string(&p)
                .ok()
                .and_then(|t| stored::read::<ExitRecord>(&t).ok())?;
            Some((p, record))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::protocol::Exit;

    fn record(run: &str, task: &str, code: i32) -> ExitRecord {
        ExitRecord {
            key: AttemptKey {
                run_id: run.into(),
                task: task.into(),
                attempt: 1,
            },
            pid: 40,
            started_ms: 7,
            exit: Exit::Code { code },
        }
    }

    fn sorted(mut v: Vec<ExitRecord>) -> Vec<ExitRecord> {
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    #[test]
    fn a_reopened_journal_knows_every_exit_not_forgotten_and_skips_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (journal, found) = Journal::open(dir.path()).unwrap();
            assert!(found.is_empty());
            journal.exited(&record("r1", "a", 0)).unwrap();
            journal.exited(&record("r2", "a", 3)).unwrap();
            journal.exited(&record("r2", "b", 0)).unwrap();
            journal.forgot(&[record("r1", "a", 0).key]).unwrap();
            // Forgetting is by attempt: one of the same run that ends later stays.
            journal.exited(&record("r1", "b", 4)).unwrap();
        }
        // A supervisor killed in the middle of a line.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("exits"))
            .unwrap();
        file.write_all(b"{\"v\":\"1\",\"doc\":{\"line\":\"exi\xC3")
            .unwrap();
        let (journal, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(
            sorted(found),
            vec![
                record("r1", "b", 4),
                record("r2", "a", 3),
                record("r2", "b", 0)
            ]
        );
        // Reopening rewrote it: just the live exits, the torn line gone.
        let text = std::fs::read_to_string(dir.path().join("exits")).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        journal.exited(&record("r3", "a", 1)).unwrap();
        drop(journal);
        let (_, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(found.len(), 4);
    }

    #[test]
    fn a_mostly_forgotten_journal_is_rewritten_with_what_is_live() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        journal.exited(&record("kept", "a", 0)).unwrap();
        for i in 0..REWRITE_AT {
            journal.exited(&record(&format!("r{i}"), "a", 0)).unwrap();
            journal
                .forgot(&[record(&format!("r{i}"), "a", 0).key])
                .unwrap();
        }
        // Appended after the last rewrite: in the file that replaced the old one.
        journal.exited(&record("after", "a", 5)).unwrap();
        let lines = std::fs::read_to_string(dir.path().join("exits"))
            .unwrap()
            .lines()
            .count();
        assert!(lines < REWRITE_AT, "{lines} lines: never rewritten");
        drop(journal);
        let (_, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(
            sorted(found),
            vec![record("after", "a", 5), record("kept", "a", 0)]
        );
    }

    #[test]
    fn exit_files_of_the_previous_layout_are_taken_in_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let old = record("r", "a", 2);
        let file = dir.path().join(format!("{}.exit", old.key.stem()));
        std::fs::write(&file, stored::write(&old)).unwrap();
        let (_, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(found, vec![old.clone()]);
        assert!(!file.exists());
        let (_, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(found, vec![old]);
    }
}
