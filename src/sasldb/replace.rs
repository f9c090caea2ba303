//! Crash-safe rewrites: a whole new file beside the old one, fsynced, then renamed over it,
//! under a lock that serializes every writer of ours.
//!
//! A reader (the daemon, libsasl2, Cyrus's tools) opens the path and gets either the old file
//! or the new one, never half of either; a writer killed at any moment leaves the old file in
//! place and a scratch file that the next writer removes. The new file keeps the old one's
//! mode, owner, group, SELinux label and access ACL, or the writer stops with an error that
//! says which it could not keep: a file that the mail server can no longer read is worse than
//! a change not made.
//!
//! The lock is an exclusive `flock` on the file's directory: it outlives the renames (a lock
//! on the file itself would stay with the old inode), creates nothing in `/etc`, and is not a
//! lock any reader takes, so nobody waits for it but our own writers.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::SasldbError;

/// Extended attributes that decide who may read the file, copied to the new file.
const KEPT_XATTRS: [&str; 2] = ["security.selinux", "system.posix_acl_access"];

/// How long a writer waits for another one to finish.
const LOCK_WAIT: Duration = Duration::from_secs(10);

fn io_err(path: &Path, source: io::Error) -> SasldbError {
    SasldbError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The directory a file lives in (`.` for a bare name).
pub(super) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// An exclusive lock held by one writer, for as long as the value lives.
#[derive(Debug)]
pub(super) struct WriteLock {
    _dir: File,
    target: PathBuf,
}

impl WriteLock {
    /// Takes the writers' lock for `path`, waiting up to ten seconds for another writer.
    ///
    /// A symlink is followed only when it and its directory belong to root or to us (so no
    /// other user can point it at a file of ours), and only to a file that exists (nothing is
    /// created through one): the file it points to is the one rewritten (renaming over the
    /// link would turn it into a file of its own), and its directory is the one locked.
    pub(super) fn take(path: &Path) -> Result<WriteLock, SasldbError> {
        let target = match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let dir = std::fs::metadata(parent(path)).map_err(|e| io_err(path, e))?;
                let me = nix::unistd::geteuid().as_raw();
                if ![0, me].contains(&meta.uid()) || ![0, me].contains(&dir.uid()) {
                    return Err(SasldbError::Symlink {
                        path: path.to_owned(),
                        why: "is a symlink owned by another user, or in another user's                               directory; not following it",
                    });
                }
                match std::fs::canonicalize(path) {
                    Ok(target) => target,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(SasldbError::Symlink {
                            path: path.to_owned(),
                            why: "is a symlink to nothing; not creating a file through it",
                        })
                    }
                    Err(e) => return Err(io_err(path, e)),
                }
            }
            _ => path.to_owned(),
        };
        let dir_path = parent(&target);
        let dir_err = |source| SasldbError::Directory {
            path: target.clone(),
            source,
        };
        let dir = File::open(dir_path).map_err(dir_err)?;
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match dir.try_lock() {
                Ok(()) => return Ok(WriteLock { _dir: dir, target }),
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(SasldbError::Busy {
                        path: path.to_owned(),
                        why: "another saslpasswd2-rs (or converter) has been changing it for \
                              10 seconds",
                    })
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(dir_err(e)),
            }
        }
    }

    /// The file the holder may rewrite (the path, or the file its symlink points to).
    pub(super) fn target(&self) -> &Path {
        &self.target
    }
}

/// The scratch file a rewrite of `path` builds: hidden, beside it, one name per file, so a
/// crashed writer's leftovers are found and replaced by the next one.
pub(super) fn scratch_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    parent(path).join(format!(
        ".{}.saslauthd-rs-new",
        name.as_deref().unwrap_or("sasldb2")
    ))
}

/// Replaces the locked file with a new one whose contents `fill` writes into the scratch file
/// (given by path and open handle). `create_mode` is the mode of a file that did not exist
/// (before the umask, as Cyrus's backends create theirs).
pub(super) fn replace(
    lock: &WriteLock,
    create_mode: u32,
    fill: impl FnOnce(&Path, &mut File) -> Result<(), SasldbError>,
) -> Result<(), SasldbError> {
    let path = lock.target();
    let old = match std::fs::metadata(path) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(path, e)),
    };
    let scratch = scratch_path(path);
    match std::fs::remove_file(&scratch) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&scratch, e)),
    }
    // Nobody else may read the new file before it is finished and has the old one's mode.
    let mut file = OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(if old.is_some() { 0o600 } else { create_mode })
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&scratch)
        .map_err(|e| io_err(&scratch, e))?;
    let result = fill(&scratch, &mut file)
        .and_then(|()| match &old {
            Some(old) => keep_access(path, old, &file, &scratch),
            None => Ok(()),
        })
        .and_then(|()| file.sync_all().map_err(|e| io_err(&scratch, e)))
        .and_then(|()| std::fs::rename(&scratch, path).map_err(|e| io_err(path, e)));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&scratch);
        return Err(e);
    }
    // The rename itself is durable once the directory is.
    let dir = parent(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

/// Gives the new file the old one's owner, group, mode and access-deciding attributes.
fn keep_access(path: &Path, old: &Metadata, new: &File, scratch: &Path) -> Result<(), SasldbError> {
    let meta = new.metadata().map_err(|e| io_err(scratch, e))?;
    if meta.uid() != old.uid() || meta.gid() != old.gid() {
        std::os::unix::fs::fchown(new, Some(old.uid()), Some(old.gid())).map_err(|e| {
            SasldbError::KeepAccess {
                path: path.to_owned(),
                what: format!("its owner and group ({}:{})", old.uid(), old.gid()),
                source: e,
            }
        })?;
    }
    use std::os::unix::fs::PermissionsExt;
    new.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o7777))
        .map_err(|e| SasldbError::KeepAccess {
            path: path.to_owned(),
            what: format!("its mode ({:04o})", old.mode() & 0o7777),
            source: e,
        })?;
    for name in KEPT_XATTRS {
        let value = match xattr::get(path, name) {
            Ok(Some(value)) => value,
            Ok(None) => continue,
            Err(e) if unsupported(&e) => continue,
            Err(e) => return Err(io_err(path, e)),
        };
        if let Err(e) = xattr::FileExt::set_xattr(new, name, &value) {
            return Err(SasldbError::KeepAccess {
                path: path.to_owned(),
                what: format!("its {name} attribute"),
                source: e,
            });
        }
    }
    Ok(())
}

fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA))
}

/// Writes all of `bytes` to `file` (used by the formats built in memory).
pub(super) fn write_all(scratch: &Path, file: &mut File, bytes: &[u8]) -> Result<(), SasldbError> {
    file.write_all(bytes).map_err(|e| io_err(scratch, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_rewrite_keeps_the_mode_and_leaves_no_scratch_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasldb2");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let lock = WriteLock::take(&path).unwrap();
        replace(&lock, 0o660, |scratch, file| {
            write_all(scratch, file, b"new")
        })
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert!(!scratch_path(&path).exists());
    }

    #[test]
    fn a_failed_fill_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasldb2");
        std::fs::write(&path, b"old").unwrap();
        let lock = WriteLock::take(&path).unwrap();
        let err = replace(&lock, 0o660, |scratch, _| {
            Err(io_err(scratch, io::Error::other("disk full")))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert!(!scratch_path(&path).exists());
    }

    #[test]
    fn a_crashed_writers_scratch_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasldb2");
        std::fs::write(scratch_path(&path), b"half a file").unwrap();
        let lock = WriteLock::take(&path).unwrap();
        replace(&lock, 0o600, |scratch, file| {
            write_all(scratch, file, b"whole")
        })
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
        assert!(!scratch_path(&path).exists());
    }

    #[test]
    fn writers_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasldb2");
        let held = WriteLock::take(&path).unwrap();
        let dir_file = File::open(dir.path()).unwrap();
        assert!(dir_file.try_lock().is_err(), "the directory is locked");
        drop(held);
        assert!(dir_file.try_lock().is_ok());
    }

    #[test]
    fn a_symlinked_file_is_rewritten_where_it_lives() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        let target = dir.path().join("real/sasldb2");
        std::fs::write(&target, b"old").unwrap();
        let link = dir.path().join("sasldb2");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let lock = WriteLock::take(&link).unwrap();
        replace(&lock, 0o600, |scratch, file| {
            write_all(scratch, file, b"new")
        })
        .unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
    }
}
