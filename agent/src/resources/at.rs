//! File operations relative to an open directory, never following a symlink in the names
//! they are given: what [`super::ResourceCache::link`] places inside a directory a task owns.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::identity::Owner;

fn c(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::other("a name holds a NUL byte"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens `name` (in `parent`, or a path when `parent` is none) as a directory; a symlink
/// fails (`ELOOP`) instead of being followed.
pub fn open_dir(parent: Option<&OwnedFd>, name: &OsStr) -> io::Result<OwnedFd> {
    let name = c(name)?;
    let at = parent.map_or(libc::AT_FDCWD, |p| p.as_raw_fd());
    // SAFETY: a valid C string and directory descriptor; the result is checked.
    let fd = unsafe {
        libc::openat(
            at,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The directory `name` in `parent`, made (mode 0700, `owner`'s) if missing.
pub fn make_dir(parent: &OwnedFd, name: &str, owner: Option<Owner>) -> io::Result<OwnedFd> {
    let c_name = c(OsStr::new(name))?;
    // SAFETY: a valid C string and directory descriptor.
    let made = unsafe { libc::mkdirat(parent.as_raw_fd(), c_name.as_ptr(), 0o700) };
    let created = match check(made) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e),
    };
    let dir = open_dir(Some(parent), OsStr::new(name)).map_err(|e| {
        // O_NOFOLLOW with O_DIRECTORY answers ENOTDIR (or ELOOP) for a symlink.
        if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) {
            if is_symlink(parent, name) {
                io::Error::other(format!(
                    "`{name}` is a symlink; resources are not placed through one"
                ))
            } else {
                io::Error::other(format!("`{name}` is in the way: not a directory"))
            }
        } else {
            e
        }
    })?;
    if created && let Some(owner) = owner {
        // By descriptor: whatever the name points at now, this is the directory opened.
        // SAFETY: a valid open descriptor.
        check(unsafe { libc::fchown(dir.as_raw_fd(), owner.uid, owner.gid) })?;
    }
    Ok(dir)
}

fn is_symlink(dir: &OwnedFd, name: &str) -> bool {
    kind(dir, name).is_ok_and(|k| k == Some(libc::S_IFLNK))
}

/// Whether `name` in `dir` is a directory (not following a symlink).
pub fn is_dir(dir: &OwnedFd, name: &str) -> io::Result<bool> {
    Ok(kind(dir, name)? == Some(libc::S_IFDIR))
}

/// The file type of `name` in `dir` (`S_IFDIR`, `S_IFLNK`, …; none: missing), not
/// following a symlink.
fn kind(dir: &OwnedFd, name: &str) -> io::Result<Option<libc::mode_t>> {
    let c_name = c(OsStr::new(name))?;
    // SAFETY: zeroed plain-old-data, filled by fstatat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string, descriptor and out-pointer.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c_name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    match check(rc) {
        Ok(()) => Ok(Some(st.st_mode & libc::S_IFMT)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A hard link to `file` (the agent's cache) named `name` in `dir`.
pub fn hard_link(file: &Path, dir: &OwnedFd, name: &str) -> io::Result<()> {
    let (from, to) = (c(file.as_os_str())?, c(OsStr::new(name))?);
    // SAFETY: valid C strings and descriptors; flags 0: the source is not followed if a
    // link, the new name is never followed.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            dir.as_raw_fd(),
            to.as_ptr(),
            0,
        )
    })
}

pub fn symlink(file: &Path, dir: &OwnedFd, name: &str) -> io::Result<()> {
    let (target, to) = (c(file.as_os_str())?, c(OsStr::new(name))?);
    // SAFETY: valid C strings and descriptor.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), to.as_ptr()) })
}

/// Renames `from` to `to` inside `dir`: a symlink at `to` is replaced, never followed.
pub fn rename(dir: &OwnedFd, from: &str, to: &str) -> io::Result<()> {
    let (a, b) = (c(OsStr::new(from))?, c(OsStr::new(to))?);
    // SAFETY: valid C strings and descriptor.
    check(unsafe { libc::renameat(dir.as_raw_fd(), a.as_ptr(), dir.as_raw_fd(), b.as_ptr()) })
}

/// Removes `name` from `dir` (a staged link left by a failure); errors are ignored.
pub fn remove(dir: &OwnedFd, name: &str) {
    if let Ok(n) = c(OsStr::new(name)) {
        // SAFETY: a valid C string and descriptor.
        unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), 0) };
    }
}

/// Copies the cached `file` to the new name `name` in `dir`, `owner`'s and read-only
/// (0400). The name is created, never opened: a symlink planted there fails the copy.
pub fn copy_for(file: &Path, dir: &OwnedFd, name: &str, owner: Owner) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let to = c(OsStr::new(name))?;
    // SAFETY: a valid C string and descriptor; the result is checked.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            to.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let mut copy = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let copied = (|| {
        let mut from = std::fs::File::open(file)?;
        io::copy(&mut from, &mut copy)?;
        std::os::unix::fs::fchown(&copy, Some(owner.uid), Some(owner.gid))?;
        copy.set_permissions(std::fs::Permissions::from_mode(0o400))
    })();
    copied.inspect_err(|_| remove(dir, name))
}
