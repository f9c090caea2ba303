//! The sasldb passdb: `userPassword` from a sasldb2 file, compared in constant time.
//!
//! Unlike Cyrus's `auth_sasldb`, which always opens the compile-time path, the path is
//! configurable (`--sasldb`), and the file may be in any of the three formats (see
//! `crate::sasldb`). The file is read whole, never mapped (a mapped file that is truncated or
//! overwritten kills the process), held in memory and read again when it changes: replaced by
//! another file (our writers, `mv new sasldb2`) or changed in place (liblmdb's writers,
//! Cyrus's tools, `cp other sasldb2`). A file created after start-up is opened on the next
//! request.
//!
//! To know that without a `stat` of the path on every request (a path walk, the largest
//! single cost of a sasldb check), the file's directory is watched with inotify: a request
//! asks only whether events are pending (`epoll_wait` with no wait on an epoll set that holds
//! the inotify descriptor: half the cost of a `poll`, which sets up and tears down a wait for
//! each call), and looks at the path when they are. Events are consumed under the write
//! lock, and a request that saw none held the read lock meanwhile, so a request that comes
//! after a change always sees it. When the path or its directory goes through a symlink (whose
//! target's directory is not watched), when inotify is not available, or when the watch is
//! lost, every request looks at the path.
//!
//! A torn read is never served. A Berkeley DB file that a Cyrus tool is writing in place (the
//! watch has seen it modified and not yet closed) is not read until the writer closes it; a
//! GDBM file is read under C GDBM's shared lock; a file that changes while it is read is read
//! again. A version that cannot be read (damaged, not a database) is logged once and makes
//! every request fail until the file changes: the last good version is not served, as it may
//! hold a password changed since.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::{verdict, Access, Answer, CacheUse, Context, Module, Passdb, PassdbError, Query};
use crate::sasldb::{OpenMode, SasldbError, Stamp, Store, AUTH_PASSWORD, USER_PASSWORD};
use crate::secret::{Credentials, Password};
use crate::verdict::{PassdbKind, PassdbResult, Replies};

/// `-a sasldb`.
pub(super) const MODULE: Module = Module {
    kind: PassdbKind {
        name: "sasldb",
        // A bare NO for every failure, as Cyrus's auth_sasldb.
        replies: Replies::BARE,
    },
    about: Some("a sasldb2 file (--sasldb; LMDB, Berkeley DB or GDBM)"),
    open: |settings| Ok(Arc::new(Sasldb::new(&settings.sasldb)?)),
    table: None,
};

/// The file the sasldb passdb reads unless told otherwise (Cyrus's `SASL_DB_PATH`).
pub(crate) use crate::sasldb::DEFAULT_PATH;
/// The sasldb2 formats, named in the daemon's configuration.
pub(crate) use crate::sasldb::{Kind as Format, UnknownKind as UnknownFormat};

/// How long a file can go on being written in place before it is read anyway (a writer that
/// keeps it open for good would otherwise hide every change).
const WRITER_GRACE: Duration = Duration::from_secs(2);

/// A sasldb2 file, reopened when it is replaced.
#[derive(Debug)]
pub struct Sasldb {
    path: PathBuf,
    seen: RwLock<Seen>,
    watch: Option<Watch>,
}

/// What the path held when it was last looked at.
#[derive(Debug, Default)]
struct Seen {
    /// The store that serves requests; `None`: no file (every user is unknown), or none read.
    store: Option<Arc<Store>>,
    /// Whether `store` is what the path holds, as far as the watch knows; when not, the
    /// next request looks at the path.
    current: bool,
    /// A version of the file that could not be read, with the reason: not read again until
    /// it changes.
    refused: Option<(Stamp, String)>,
}

/// The inotify watch on the file's directory.
#[derive(Debug)]
struct Watch {
    inotify: Inotify,
    /// An epoll set holding only `inotify` (level-triggered): ready while events are pending.
    /// The kernel marks it ready when the event is queued, so a request that comes after a
    /// change sees it.
    ready: Epoll,
    /// The file's name in the directory: events for other names are ignored.
    name: OsString,
    /// Cleared when the watch can no longer be trusted (the directory went away, the path
    /// became a symlink): from then on every request looks at the path.
    alive: AtomicBool,
    /// Set while the file is being written in place (modified, not yet closed).
    writing: AtomicBool,
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
            | AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR;
        inotify.add_watch(dir, events).ok()?;
        let ready = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).ok()?;
        ready
            .add(&inotify, EpollEvent::new(EpollFlags::EPOLLIN, 0))
            .ok()?;
        Some(Watch {
            inotify,
            ready,
            name,
            alive: AtomicBool::new(true),
            writing: AtomicBool::new(false),
        })
    }

    /// Whether events are pending (or the watch cannot tell): `epoll_wait` with no wait,
    /// which consumes nothing.
    fn pending(&self) -> bool {
        if !self.alive.load(Ordering::Acquire) {
            return true;
        }
        let mut events = [EpollEvent::empty()];
        !matches!(self.ready.wait(&mut events, EpollTimeout::ZERO), Ok(0))
    }

    /// Consumes the pending events (under the write lock) and says whether any concerned
    /// the file; a sign that the watch is gone turns it off.
    fn drain(&self) -> bool {
        let gone = AddWatchFlags::IN_IGNORED
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_UNMOUNT;
        let mut touched = !self.alive.load(Ordering::Acquire);
        while let Ok(events) = self.inotify.read_events() {
            for event in &events {
                if event.mask.intersects(gone) {
                    tracing::info!(
                        "the directory of the sasldb file {} went away; looking at the path \
                         on every request from now on",
                        Path::new(&self.name).display()
                    );
                    self.alive.store(false, Ordering::Release);
                    touched = true;
                } else if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    touched = true;
                } else if event.name.as_deref() == Some(self.name.as_os_str()) {
                    touched = true;
                    if event.mask.contains(AddWatchFlags::IN_MODIFY) {
                        self.writing.store(true, Ordering::Release);
                    } else {
                        // Closed after writing, replaced, created or removed: whatever is
                        // at the path now is whole.
                        self.writing.store(false, Ordering::Release);
                    }
                }
            }
        }
        touched
    }

    fn writing(&self) -> bool {
        self.writing.load(Ordering::Acquire)
    }
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

impl Sasldb {
    /// Prepares to read `path`. A missing file is not an error here (Cyrus starts without
    /// one too, and every user is unknown until it appears); another format, or a file that
    /// cannot be read, is.
    pub fn new(path: &Path) -> Result<Sasldb, SasldbError> {
        let db = Sasldb {
            path: path.to_owned(),
            seen: RwLock::new(Seen::default()),
            watch: Watch::on(path),
        };
        match db.with_store(|_| Ok(())) {
            // A writer holds the file (a C GDBM writer's lock): start, and read it on the
            // first request.
            Err(SasldbError::Busy { .. }) => {
                tracing::warn!(path = %path.display(), "sasldb file busy at start-up; it is read on the first request")
            }
            other => other?,
        }
        Ok(db)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the store of the file now at the path (`None`: there is none), under the
    /// read lock: readers share it, from every thread, and no reference count is touched per
    /// request.
    fn with_store<R>(
        &self,
        f: impl Fn(Option<&Store>) -> Result<R, SasldbError>,
    ) -> Result<R, SasldbError> {
        {
            let seen = self.seen.read().unwrap_or_else(|e| e.into_inner());
            if seen.current && self.watch.as_ref().is_some_and(|w| !w.pending()) {
                return f(seen.store.as_deref());
            }
        }
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        let touched = self.watch.as_ref().is_none_or(|w| w.drain());
        if touched || !seen.current {
            self.look(&mut seen)?;
        }
        let store = seen.store.clone();
        drop(seen);
        f(store.as_deref())
    }

    /// Runs `f` on the store when it is known to be what the path holds without reading
    /// anything: the watch saw nothing happen to the file (events about other names in its
    /// directory, a log file say, are consumed here), or, unwatched, a `stat` shows the same
    /// file. `None`: the path must be looked at, which may read a whole file; the caller does
    /// that off the reactor, through [`Sasldb::with_store`].
    fn with_fresh_store<R>(
        &self,
        f: impl Fn(Option<&Store>) -> Result<R, SasldbError>,
    ) -> Option<Result<R, SasldbError>> {
        match &self.watch {
            Some(watch) if watch.alive.load(Ordering::Acquire) => {
                {
                    let seen = self.seen.read().unwrap_or_else(|e| e.into_inner());
                    if !seen.current {
                        return None;
                    }
                    if !watch.pending() {
                        return Some(f(seen.store.as_deref()));
                    }
                }
                let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
                if watch.drain() {
                    // Looked at by the next request that may read.
                    seen.current = false;
                }
                seen.current.then(|| f(seen.store.as_deref()))
            }
            _ => {
                let seen = self.seen.read().unwrap_or_else(|e| e.into_inner());
                match std::fs::metadata(&self.path) {
                    Ok(meta) => {
                        let store = seen.store.as_deref()?;
                        store.serves(&Stamp::of(&meta)).then(|| f(Some(store)))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        (seen.store.is_none() && seen.refused.is_none()).then(|| f(None))
                    }
                    Err(_) => None,
                }
            }
        }
    }

    /// Looks at the path and opens what is there, when it is not what is open already.
    /// `Err` only when there is nothing to serve.
    fn look(&self, seen: &mut Seen) -> Result<(), SasldbError> {
        let watched = self
            .watch
            .as_ref()
            .is_some_and(|w| w.alive.load(Ordering::Acquire));
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if seen.store.is_some() {
                    tracing::info!(path = %self.path.display(), "sasldb file removed; every user is unknown");
                }
                *seen = Seen {
                    current: watched,
                    ..Seen::default()
                };
                return Ok(());
            }
            Err(source) => {
                seen.current = false;
                return Err(SasldbError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        if let (Some(watch), true) = (&self.watch, is_symlink(&self.path)) {
            // The link's target is in a directory nobody watches.
            watch.alive.store(false, Ordering::Release);
        }
        let stamp = Stamp::of(&meta);
        seen.current = watched;
        if seen.store.as_ref().is_some_and(|s| s.serves(&stamp)) {
            return Ok(());
        }
        if let Some((refused, why)) = &seen.refused {
            if *refused == stamp {
                // Every request looks (a stat) and fails, until the file changes.
                seen.current = false;
                return Err(SasldbError::Unreadable(why.clone()));
            }
        }
        let being_written = self.watch.as_ref().is_some_and(|w| w.writing())
            && meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .is_some_and(|age| age < WRITER_GRACE);
        if being_written && seen.store.is_some() {
            // Serve the last version until the writer closes the file.
            seen.current = false;
            return Ok(());
        }
        match Store::open(&self.path, OpenMode::ReadOnly) {
            Ok(store) => {
                if seen.store.is_some() {
                    tracing::info!(path = %self.path.display(), format = %store.kind(), "sasldb file changed; reread");
                }
                seen.store = Some(Arc::new(store));
                seen.refused = None;
                seen.current = watched && !being_written;
                Ok(())
            }
            Err(SasldbError::Missing(_)) => {
                *seen = Seen {
                    current: watched,
                    ..Seen::default()
                };
                Ok(())
            }
            Err(e @ SasldbError::Busy { .. }) => {
                // Look again on the next request.
                seen.current = false;
                match seen.store {
                    Some(_) => Ok(()),
                    None => Err(e),
                }
            }
            Err(e) => {
                // Not the last good version: it may hold a password that was changed since.
                tracing::error!("{e}; every request fails until the file changes");
                seen.store = None;
                seen.current = false;
                seen.refused = Some((stamp, e.to_string()));
                Err(e)
            }
        }
    }

    /// A user's stored secrets, looking at the path first when it may have changed.
    pub(crate) fn lookup_credentials(
        &self,
        authid: &[u8],
        realm: &[u8],
    ) -> Result<Credentials, PassdbError> {
        Ok(self.with_store(|store| credentials(store, authid, realm))?)
    }

    /// Checks a password, looking at the path first when it may have changed.
    pub(crate) fn verify_plain(
        &self,
        authid: &[u8],
        realm: &[u8],
        password: &Password,
    ) -> Result<PassdbResult, PassdbError> {
        Ok(self.with_store(|store| check(store, authid, realm, password))?)
    }

    /// The same, answered only when that needs no look at the path (see
    /// [`Sasldb::with_fresh_store`]): what [`Passdb::verify`] answers at once.
    #[cfg(test)]
    fn verify_plain_fresh(
        &self,
        authid: &[u8],
        realm: &[u8],
        password: &Password,
    ) -> Option<Result<PassdbResult, PassdbError>> {
        self.with_fresh_store(|store| check(store, authid, realm, password))
            .map(|r| r.map_err(PassdbError::from))
    }
}

/// The file is read into memory and a check is a lookup there, about a microsecond: answered
/// on the reactor, where handing it to a thread would cost more than the lookup (see
/// BENCHMARKS.md). Only when the file may have changed does a check go to the pool, which
/// reads it again first (a large file takes a while).
impl Passdb for Sasldb {
    fn kind(&self) -> PassdbKind {
        MODULE.kind
    }

    fn verify(
        self: Arc<Self>,
        q: &Query<'_>,
        password: Password,
        _: &Context<'_>,
    ) -> Answer<PassdbResult> {
        let (authid, realm) = (q.authid, q.realm);
        match self.with_fresh_store(|store| check(store, authid, realm, &password)) {
            Some(checked) => Answer::Now(checked.map_err(PassdbError::from)),
            None => {
                let q = q.to_owned();
                Answer::blocking(move || {
                    let q = q.query();
                    self.verify_plain(q.authid, q.realm, &password)
                })
            }
        }
    }

    fn has_credentials(&self) -> bool {
        true
    }

    fn credentials(self: Arc<Self>, q: &Query<'_>, _: &Context<'_>) -> Answer<Credentials> {
        let (authid, realm) = (q.authid, q.realm);
        match self.with_fresh_store(|store| credentials(store, authid, realm)) {
            Some(found) => Answer::Now(found.map_err(PassdbError::from)),
            None => {
                let q = q.to_owned();
                Answer::blocking(move || {
                    let q = q.query();
                    self.lookup_credentials(q.authid, q.realm)
                })
            }
        }
    }

    fn cache_use(&self) -> CacheUse {
        CacheUse::Useless(
            "-c: sasldb reads LMDB on every request, which is faster than a cache; no cache used",
        )
    }

    fn access(&self) -> Access {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(&self.path) {
            Ok(meta) => Access {
                files: vec![self.path.clone()],
                group_ids: vec![meta.gid()],
                ..Access::default()
            },
            Err(_) => Access::default(),
        }
    }

    fn notices(&self) -> Vec<String> {
        match self.path.exists() {
            true => Vec::new(),
            false => vec![format!(
                "{} does not exist yet: every user is unknown until it is created \
                 (saslpasswd2-rs -f {} -c USER)",
                self.path.display(),
                self.path.display()
            )],
        }
    }
}

fn credentials(
    store: Option<&Store>,
    authid: &[u8],
    realm: &[u8],
) -> Result<Credentials, SasldbError> {
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
        digest_md5: None,
        cram_md5: None,
    })
}

fn check(
    store: Option<&Store>,
    authid: &[u8],
    realm: &[u8],
    password: &Password,
) -> Result<PassdbResult, SasldbError> {
    match store {
        Some(store) => store.with_value(authid, realm, USER_PASSWORD, |stored| {
            verdict(stored, password)
        }),
        None => Ok(verdict(None, password)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_db(path: &Path, password: &[u8]) {
        let mut store = Store::open_creating(path, crate::sasldb::Kind::Lmdb).unwrap();
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

    /// What the reactor may answer itself: nothing that needs a file read.
    #[test]
    fn a_changed_file_is_never_read_on_the_fast_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasldb2");
        write_db(&path, b"one");
        let db = Sasldb::new(&path).unwrap();
        let fresh = |password: &[u8]| {
            db.verify_plain_fresh(b"alice", b"example.org", &Password::new(password.to_vec()))
                .map(Result::unwrap)
        };
        assert_eq!(fresh(b"one"), Some(PassdbResult::Ok), "read at start-up");
        let new = dir.path().join("new");
        write_db(&new, b"two");
        std::fs::rename(&new, &path).unwrap();
        assert_eq!(
            fresh(b"two"),
            None,
            "replaced: the caller must read it off the reactor"
        );
        assert_eq!(fresh(b"two"), None, "still, until somebody has");
        assert_eq!(
            check(&db, b"two"),
            PassdbResult::Ok,
            "the slow path reads it"
        );
        assert_eq!(fresh(b"two"), Some(PassdbResult::Ok));
        assert_eq!(fresh(b"one"), Some(PassdbResult::PasswordMismatch));
        // Other files in the directory (a log) are none of its business.
        std::fs::write(dir.path().join("daemon.log"), b"a line\n").unwrap();
        assert_eq!(
            fresh(b"two"),
            Some(PassdbResult::Ok),
            "another name changed"
        );
        // Unwatched (through a symlink), a stat tells.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let linked = Sasldb::new(&link).unwrap();
        let fresh = |password: &[u8]| {
            linked
                .verify_plain_fresh(b"alice", b"example.org", &Password::new(password.to_vec()))
                .map(Result::unwrap)
        };
        assert_eq!(fresh(b"two"), Some(PassdbResult::Ok));
        write_db(&new, b"three");
        std::fs::rename(&new, &path).unwrap();
        assert_eq!(fresh(b"three"), None);
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
