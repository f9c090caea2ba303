//! The sasldb passdb: `userPassword` from a sasldb2 file, compared in constant time.
//!
//! Unlike Cyrus's `auth_sasldb`, which always opens the compile-time path, the path is
//! configurable (`--sasldb`). The file is opened once and kept open. Changes made in place
//! (`saslpasswd2-rs`, any LMDB writer) need no reopen: every lookup is a fresh LMDB read
//! transaction. A file replaced by another (another inode: `mv new sasldb2`, `rm` and
//! re-create) or created after start-up is opened on the next request.
//!
//! To know that without a `stat` of the path on every request (a path walk, the largest
//! single cost of a sasldb check), the file's directory is watched with inotify: a request
//! asks only whether events are pending (`poll` with no wait), and looks at the path when they
//! are. Events are consumed under the write lock, and a request that saw none held the read
//! lock meanwhile, so a request that comes after a replacement always sees it. When the path
//! or its directory goes through a symlink (whose target's directory is not watched), when
//! inotify is not available, or when the watch is lost, every request looks at the path, as
//! before.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockWriteGuard};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::{verdict, PassdbError};
use crate::sasldb::{OpenMode, SasldbError, Store, AUTH_PASSWORD, USER_PASSWORD};
use crate::secret::{Credentials, Password};
use crate::verdict::PassdbResult;

/// The file the sasldb passdb reads unless told otherwise (Cyrus's `SASL_DB_PATH`).
pub(crate) use crate::sasldb::DEFAULT_PATH;

/// A sasldb2 file, reopened when it is replaced.
#[derive(Debug)]
pub struct Sasldb {
    path: PathBuf,
    seen: RwLock<Seen>,
    watch: Option<Watch>,
}

/// What the path held when it was last looked at.
#[derive(Debug)]
enum Seen {
    /// Not known (never looked, or the last look failed): look again.
    Unknown,
    /// No file: every user is unknown.
    Missing,
    /// This file, open.
    Open {
        file_id: (u64, u64),
        store: Arc<Store>,
    },
}

/// The inotify watch on the file's directory.
#[derive(Debug)]
struct Watch {
    inotify: Inotify,
    /// The file's name in the directory (for the log line).
    name: OsString,
    /// Cleared when the watch can no longer be trusted (the directory went away, the path
    /// became a symlink): from then on every request looks at the path.
    alive: AtomicBool,
}

impl Watch {
    /// A watch on `path`'s directory, unless the path or its directory goes through a
    /// symlink or inotify is not available.
    fn on(path: &Path) -> Option<Watch> {
        let name = path.file_name()?.to_owned();
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let absolute = std::path::absolute(dir).ok()?;
        if std::fs::canonicalize(dir).ok()? != absolute || is_symlink(path) {
            return None;
        }
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
        let events = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR;
        inotify.add_watch(dir, events).ok()?;
        Some(Watch {
            inotify,
            name,
            alive: AtomicBool::new(true),
        })
    }

    /// Whether events are pending (or the watch cannot tell): `poll` with no wait, which
    /// consumes nothing.
    fn pending(&self) -> bool {
        if !self.alive.load(Ordering::Acquire) {
            return true;
        }
        let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
        !matches!(nix::poll::poll(&mut fds, PollTimeout::ZERO), Ok(0))
    }

    /// Consumes the pending events (under the write lock); a sign that the watch is gone
    /// turns it off.
    fn drain(&self) {
        let gone = AddWatchFlags::IN_IGNORED
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_UNMOUNT;
        while let Ok(events) = self.inotify.read_events() {
            if events.iter().any(|e| e.mask.intersects(gone)) {
                tracing::info!(
                    "the directory of the sasldb file {} went away; looking at the path on \
                     every request from now on",
                    Path::new(&self.name).display()
                );
                self.alive.store(false, Ordering::Release);
            }
        }
    }
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

impl Sasldb {
    /// Prepares to read `path`. A missing file is not an error here (Cyrus starts without
    /// one too, and every user is unknown until it appears); another format is.
    pub fn new(path: &Path) -> Result<Sasldb, SasldbError> {
        let db = Sasldb {
            path: path.to_owned(),
            seen: RwLock::new(Seen::Unknown),
            watch: Watch::on(path),
        };
        db.with_store(|_| Ok(()))?;
        Ok(db)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the store of the file now at the path (`None`: there is none), under the
    /// read lock: readers share it, from every thread, and no reference count is touched per
    /// request. A map grown by another process is opened afresh and `f` run again.
    fn with_store<R>(
        &self,
        f: impl Fn(Option<&Store>) -> Result<R, SasldbError>,
    ) -> Result<R, SasldbError> {
        match self.with_store_once(&f) {
            Err(SasldbError::Lmdb {
                source: ::lmdb::Error::MapResized,
                ..
            }) => {
                self.forget();
                self.with_store_once(&f)
            }
            other => other,
        }
    }

    fn with_store_once<R>(
        &self,
        f: &impl Fn(Option<&Store>) -> Result<R, SasldbError>,
    ) -> Result<R, SasldbError> {
        {
            let seen = self.seen.read().unwrap_or_else(|e| e.into_inner());
            let unchanged = self.watch.as_ref().is_some_and(|w| !w.pending());
            match &*seen {
                Seen::Open { store, .. } if unchanged => return f(Some(store)),
                Seen::Missing if unchanged => return f(None),
                _ => {}
            }
        }
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        if let Some(watch) = &self.watch {
            watch.drain();
        }
        let looked = self.look(&mut seen);
        drop(seen);
        match looked {
            Ok(store) => f(Some(&store)),
            Err(SasldbError::Missing(_)) => f(None),
            Err(e) => Err(e),
        }
    }

    /// Looks at the path and opens what is there, when it is not what is open already.
    fn look(&self, seen: &mut RwLockWriteGuard<'_, Seen>) -> Result<Arc<Store>, SasldbError> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(source) => {
                let missing = source.kind() == std::io::ErrorKind::NotFound;
                **seen = if missing {
                    Seen::Missing
                } else {
                    Seen::Unknown
                };
                return Err(if missing {
                    SasldbError::Missing(self.path.clone())
                } else {
                    SasldbError::Io {
                        path: self.path.clone(),
                        source,
                    }
                });
            }
        };
        if let (Some(watch), true) = (&self.watch, is_symlink(&self.path)) {
            // The link's target is in a directory nobody watches.
            watch.alive.store(false, Ordering::Release);
        }
        let file_id = (meta.dev(), meta.ino());
        if let Seen::Open {
            file_id: known,
            store,
        } = &**seen
        {
            if *known == file_id {
                return Ok(Arc::clone(store));
            }
        }
        let reopened = matches!(**seen, Seen::Open { .. });
        match Store::open(&self.path, OpenMode::ReadOnly) {
            Ok(store) => {
                if reopened {
                    tracing::info!(path = %self.path.display(), "sasldb file replaced; reopened");
                }
                let store = Arc::new(store);
                **seen = Seen::Open {
                    file_id,
                    store: Arc::clone(&store),
                };
                Ok(store)
            }
            Err(e) => {
                **seen = Seen::Unknown;
                Err(e)
            }
        }
    }

    fn forget(&self) {
        *self.seen.write().unwrap_or_else(|e| e.into_inner()) = Seen::Unknown;
    }

    pub(crate) fn lookup_credentials(
        &self,
        authid: &[u8],
        realm: &[u8],
    ) -> Result<Credentials, PassdbError> {
        Ok(self.with_store(|store| {
            let Some(store) = store else {
                return Ok(Credentials::default());
            };
            let plaintext = store.get(authid, realm, USER_PASSWORD)?;
            let auth_password = store
                .get(authid, realm, AUTH_PASSWORD)?
                .and_then(|v| String::from_utf8(v.to_vec()).ok())
                .map(zeroize::Zeroizing::new);
            Ok(Credentials {
                plaintext,
                auth_password,
            })
        })?)
    }

    pub(crate) fn verify_plain(
        &self,
        authid: &[u8],
        realm: &[u8],
        password: &Password,
    ) -> Result<PassdbResult, PassdbError> {
        Ok(self.with_store(|store| match store {
            Some(store) => store.with_value(authid, realm, USER_PASSWORD, |stored| {
                verdict(stored, password)
            }),
            None => Ok(verdict(None, password)),
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_db(path: &Path, password: &[u8]) {
        let store = Store::open(path, OpenMode::ReadWrite).unwrap();
        store
            .set_password(b"alice", b"example.org", Some(password))
            .unwrap();
    }

    fn check(db: &Sasldb, password: &[u8]) -> PassdbResult {
        db.verify_plain(b"alice", b"example.org", &Password::new(password.to_vec()))
            .unwrap()
    }

    #[test]
    fn a_replaced_file_is_served_on_the_next_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasldb2");
        let db = Sasldb::new(&path).unwrap();
        assert!(db.watch.is_some(), "a plain directory is watched");
        assert_eq!(check(&db, b"one"), PassdbResult::UserUnknown, "no file yet");
        write_db(&path, b"one");
        assert_eq!(
            check(&db, b"one"),
            PassdbResult::Ok,
            "created after start-up"
        );
        for round in 0..20u8 {
            // Replaced by rename, with or without its -lock file.
            let new = dir.path().join("new");
            write_db(&new, &[b'a' + round]);
            if round % 2 == 0 {
                std::fs::rename(dir.path().join("new-lock"), dir.path().join("sasldb2-lock"))
                    .unwrap();
            }
            std::fs::rename(&new, &path).unwrap();
            assert_eq!(
                check(&db, &[b'a' + round]),
                PassdbResult::Ok,
                "round {round}"
            );
        }
        std::fs::remove_file(&path).unwrap();
        assert_eq!(check(&db, b"one"), PassdbResult::UserUnknown, "removed");
        write_db(&path, b"two");
        assert_eq!(check(&db, b"two"), PassdbResult::Ok, "re-created");
        assert!(db.watch.as_ref().unwrap().alive.load(Ordering::Acquire));
    }

    #[test]
    fn through_a_symlink_every_request_looks_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real");
        write_db(&target, b"one");
        let link = dir.path().join("sasldb2");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let db = Sasldb::new(&link).unwrap();
        assert!(db.watch.is_none());
        assert_eq!(check(&db, b"one"), PassdbResult::Ok);
        let other = dir.path().join("other");
        write_db(&other, b"two");
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&other, &link).unwrap();
        assert_eq!(
            check(&db, b"two"),
            PassdbResult::Ok,
            "the link now points elsewhere"
        );
    }
}
