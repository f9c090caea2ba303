//! One sasldb2 file, whatever its format: the interface the rest of the code uses.
//!
//! A store opened for reading (the daemon, the listing tool) reads the file whole into a
//! [`Table`], whatever its format, and never maps it (a mapped file that is truncated kills
//! the process). For writing, an LMDB file is used in place, as Cyrus's `db_lmdb.c` uses it:
//! every change one write transaction; a Berkeley DB or GDBM file is held as a table and every
//! change writes a whole new file that is renamed over the old one (see `replace`). Writers of every format hold the writers' lock while the store is open.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use super::format::{self, Format};
use super::lmdb::Lmdb;
use super::record::{Change, Entry, OpenMode, Record};
use super::replace::WriteLock;
use super::table::{Stamp, Table, Variant};
use super::{host, user_prefix, with_key, Kind, SasldbError, STALE_SECRETS, USER_PASSWORD};

/// How long a reader waits for a GDBM writer's lock: the daemon not at all (it keeps serving
/// what it has), a tool a few seconds.
const TOOL_LOCK_WAIT: Duration = Duration::from_secs(5);

/// An open sasldb2 file.
pub struct Store {
    path: PathBuf,
    backend: Backend,
    /// Held by a store opened for writing.
    lock: Option<WriteLock>,
    /// The file's stamp when an LMDB store was opened (a table keeps its own).
    opened: Option<Stamp>,
    /// For a GDBM file opened for writing: a shared lock on it, held until the store is
    /// dropped, so that a C GDBM writer (which locks exclusively) cannot change the file
    /// between our read and our rename, where its change would be lost.
    _guard: Option<std::fs::File>,
}

enum Backend {
    Lmdb(Lmdb),
    Table(Table),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("kind", &self.kind())
            .finish()
    }
}

/// What is at a path, for opening it.
fn sniff(path: &Path, mode: OpenMode) -> Result<Option<Kind>, SasldbError> {
    let missing = || {
        if mode == OpenMode::ReadWrite {
            Ok(None)
        } else {
            Err(SasldbError::Missing(path.to_owned()))
        }
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(SasldbError::Io {
                path: path.to_owned(),
                source: io::Error::from(io::ErrorKind::IsADirectory),
            })
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return missing(),
        Err(source) => {
            return Err(SasldbError::Io {
                path: path.to_owned(),
                source,
            })
        }
    }
    match format::sniff(path) {
        Ok(Format::Lmdb) => Ok(Some(Kind::Lmdb)),
        Ok(Format::BerkeleyDb("hash")) => Ok(Some(Kind::BerkeleyDb)),
        Ok(Format::Gdbm) => Ok(Some(Kind::Gdbm)),
        // Written into as a new file, as Berkeley DB and GDBM do with an empty file.
        Ok(Format::Empty) if mode == OpenMode::ReadWrite => Ok(None),
        Ok(other) => Err(SasldbError::ForeignFormat {
            path: path.to_owned(),
            format: other,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => missing(),
        Err(source) => Err(SasldbError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

impl Store {
    /// Checks, without opening or creating anything, that `path` can be opened in `mode`, and
    /// says which format it holds (`None`: nothing yet, it will be created). Tools call it
    /// before prompting for a password.
    pub fn check(path: &Path, mode: OpenMode) -> Result<Option<Kind>, SasldbError> {
        sniff(path, mode)
    }

    /// Opens `path`. For writing, a missing (or empty) file is created in the format the
    /// host's libsasl2 reads ([`host::new_file_kind`]).
    pub fn open(path: &Path, mode: OpenMode) -> Result<Store, SasldbError> {
        Self::open_inner(path, mode, None)
    }

    /// Opens `path` for writing; a missing file is created as `new`. An existing file keeps
    /// its own format.
    pub fn open_creating(path: &Path, new: Kind) -> Result<Store, SasldbError> {
        Self::open_inner(path, OpenMode::ReadWrite, Some(new))
    }

    fn open_inner(path: &Path, mode: OpenMode, new: Option<Kind>) -> Result<Store, SasldbError> {
        let lock = match mode {
            OpenMode::ReadWrite => Some(WriteLock::take(path)?),
            OpenMode::ReadOnly => None,
        };
        let path = lock.as_ref().map_or(path, |l| l.target()).to_owned();
        let found = sniff(&path, mode)?;
        let kind = found.unwrap_or_else(|| new.unwrap_or_else(|| host::new_file_kind().kind));
        let guard = match (mode, found) {
            (OpenMode::ReadWrite, Some(Kind::Gdbm)) => Some(shared_lock(&path)?),
            _ => None,
        };
        let backend = match (kind, found) {
            (Kind::Lmdb, _) if mode == OpenMode::ReadWrite => {
                Backend::Lmdb(Lmdb::open(&path, mode)?)
            }
            (_, Some(_)) => {
                let wait = match mode {
                    OpenMode::ReadOnly => Duration::ZERO,
                    OpenMode::ReadWrite => TOOL_LOCK_WAIT,
                };
                Backend::Table(Table::load(&path, kind, wait)?)
            }
            (_, None) => Backend::Table(Table::empty(
                Variant::new_file(kind).expect("a table format"),
            )),
        };
        let opened = std::fs::metadata(&path).ok().map(|m| Stamp::of(&m));
        Ok(Store {
            path,
            backend,
            lock,
            opened,
            _guard: guard,
        })
    }

    /// Opens `path` read-only, waiting a few seconds for a GDBM writer (for the tools; the
    /// daemon does not wait).
    pub fn open_for_listing(path: &Path) -> Result<Store, SasldbError> {
        match sniff(path, OpenMode::ReadOnly)? {
            Some(Kind::Gdbm) => Ok(Store {
                path: path.to_owned(),
                backend: Backend::Table(Table::load(path, Kind::Gdbm, TOOL_LOCK_WAIT)?),
                lock: None,
                opened: None,
                _guard: None,
            }),
            _ => Store::open(path, OpenMode::ReadOnly),
        }
    }

    /// The file this store reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's format.
    pub fn kind(&self) -> Kind {
        match &self.backend {
            Backend::Lmdb(_) => Kind::Lmdb,
            Backend::Table(table) => table.variant.kind(),
        }
    }

    /// The format in words, with its variant (byte order, page size), for `-v` outputs.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Lmdb(_) => "LMDB (one data file, with its lock file beside it)".into(),
            Backend::Table(table) => table.variant.to_string(),
        }
    }

    /// Whether this store still serves the file whose metadata is `stamp`: an LMDB store
    /// serves every version of its inode (a change in place is seen by the next read
    /// transaction); a file held in memory serves only the version it read.
    pub fn serves(&self, stamp: &Stamp) -> bool {
        match &self.backend {
            Backend::Lmdb(_) => self.opened.is_some_and(|own| stamp.same_inode(&own)),
            Backend::Table(table) => table.stamp.as_ref() == Some(stamp),
        }
    }

    /// Looks up one property and hands its value (or `None`) to `f`, without copying it: a
    /// password is compared where it lies (LMDB's pages, or the table).
    pub fn with_value<R>(
        &self,
        authid: &[u8],
        realm: &[u8],
        property: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, SasldbError> {
        match &self.backend {
            Backend::Lmdb(env) => env.with_value(authid, realm, property, f),
            Backend::Table(table) => Ok(with_key(authid, realm, property, |key| {
                f(table.records.get(key).map(|v| &v[..]))
            })),
        }
    }

    /// A copy of one property's value, wiped when dropped.
    pub fn get(
        &self,
        authid: &[u8],
        realm: &[u8],
        property: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, SasldbError> {
        self.with_value(authid, realm, property, |v| {
            v.map(|v| Zeroizing::new(v.to_vec()))
        })
    }

    /// Sets a user's password as `saslpasswd2` does, in one change: writes `userPassword`
    /// (unless `password` is `None`, Cyrus's `-n`) and deletes the stale `cmusaslsecret*`
    /// properties.
    pub fn set_password(
        &mut self,
        authid: &[u8],
        realm: &[u8],
        password: Option<&[u8]>,
    ) -> Result<(), SasldbError> {
        let mut changes: Vec<Change<'_>> = STALE_SECRETS
            .iter()
            .map(|property| Change::Delete(super::encode_key(authid, realm, property)))
            .collect();
        if let Some(password) = password {
            changes.push(Change::Put(
                super::encode_key(authid, realm, USER_PASSWORD),
                password,
            ));
        }
        self.apply(&changes).map(|_| ())
    }

    /// Writes one property (e.g. `authPassword`).
    pub fn put(
        &mut self,
        authid: &[u8],
        realm: &[u8],
        property: &[u8],
        value: &[u8],
    ) -> Result<(), SasldbError> {
        let key = super::encode_key(authid, realm, property);
        self.apply(&[Change::Put(key, value)]).map(|_| ())
    }

    /// Deletes every property of one user in one change; returns how many were removed.
    pub fn delete_user(&mut self, authid: &[u8], realm: &[u8]) -> Result<usize, SasldbError> {
        let prefix = user_prefix(authid, realm);
        let keys: Vec<Change<'_>> = self
            .keys()?
            .into_iter()
            .filter(|e| {
                // Only this user's keys: the property part holds no other NUL.
                e.key.starts_with(&prefix) && !e.key[prefix.len()..].contains(&0)
            })
            .map(|e| Change::Delete(e.key))
            .collect();
        self.apply(&keys)
    }

    /// Applies `changes` as one: all of them or, on an error, none. Returns how many keys
    /// were deleted.
    fn apply(&mut self, changes: &[Change<'_>]) -> Result<usize, SasldbError> {
        let Some(lock) = &self.lock else {
            return Err(SasldbError::ReadOnly(self.path.clone()));
        };
        match &mut self.backend {
            Backend::Lmdb(env) => env.apply(changes),
            Backend::Table(table) => {
                let mut records = table.records.clone();
                let mut deleted = 0;
                for change in changes {
                    match change {
                        Change::Put(key, value) => {
                            records.insert(
                                key.clone().into_boxed_slice(),
                                Zeroizing::new(value.to_vec().into_boxed_slice()),
                            );
                        }
                        Change::Delete(key) => {
                            deleted += usize::from(records.shift_remove(&key[..]).is_some());
                        }
                    }
                }
                let stamp = Table::save(lock, table.variant, &records)?;
                table.records = records;
                table.stamp = Some(stamp);
                Ok(deleted)
            }
        }
    }

    /// Every key in the file, in the file's order (LMDB: sorted; Berkeley DB: its cursor
    /// order, which is Cyrus's `sasldblistusers2` order; GDBM: its `nextkey` order).
    pub fn keys(&self) -> Result<Vec<Entry>, SasldbError> {
        match &self.backend {
            Backend::Lmdb(env) => env.keys(),
            Backend::Table(table) => Ok(table
                .records
                .keys()
                .map(|k| Entry { key: k.to_vec() })
                .collect()),
        }
    }

    /// Every record, key and value, for a conversion.
    pub fn records(&self) -> Result<Vec<Record>, SasldbError> {
        match &self.backend {
            Backend::Lmdb(env) => env.records(),
            Backend::Table(table) => Ok(table
                .records
                .iter()
                .map(|(k, v)| (k.to_vec(), Zeroizing::new(v.to_vec())))
                .collect()),
        }
    }

    /// Writes `records` as a new file at `path` in `kind`, in one step: the file appears
    /// whole or not at all. An existing file is replaced only when `replace` is set (it keeps
    /// its mode, owner and group); otherwise it is an error.
    pub fn create(
        path: &Path,
        kind: Kind,
        records: &[Record],
        replace: bool,
    ) -> Result<(), SasldbError> {
        let lock = WriteLock::take(path)?;
        let target = lock.target().to_owned();
        if !replace && std::fs::symlink_metadata(&target).is_ok() {
            return Err(SasldbError::Exists(target));
        }
        let pairs: Vec<(&[u8], &[u8])> = records.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        match Variant::new_file(kind) {
            Some(variant) => Table::save(&lock, variant, &pairs_map(&pairs)).map(|_| ()),
            None => Lmdb::create_replacing(&lock, &pairs),
        }
    }
}

/// A shared `flock` on `path`, as C GDBM's readers take, waiting a few seconds for a writer.
fn shared_lock(path: &Path) -> Result<std::fs::File, SasldbError> {
    let io = |source| SasldbError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let deadline = std::time::Instant::now() + TOOL_LOCK_WAIT;
    loop {
        match file.try_lock_shared() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(SasldbError::Busy {
                    path: path.to_owned(),
                    why: "a GDBM writer has held its lock for 5 seconds",
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
    }
}

fn pairs_map(pairs: &[(&[u8], &[u8])]) -> indexmap::IndexMap<Box<[u8]>, Zeroizing<Box<[u8]>>> {
    pairs
        .iter()
        .map(|(k, v)| (Box::from(*k), Zeroizing::new(Box::from(*v))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasldb::Key;

    fn names(store: &Store) -> Vec<String> {
        let mut keys: Vec<String> = store
            .keys()
            .unwrap()
            .iter()
            .map(|e| Key::parse(&e.key).unwrap().to_string())
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn set_get_delete_in_a_new_file_of_every_format() {
        for kind in Kind::ALL {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("sasldb2");
            let mut store = Store::open_creating(&path, kind).unwrap();
            assert_eq!(store.kind(), kind);
            store
                .set_password(b"alice", b"example.org", Some(b"secret"))
                .unwrap();
            store
                .set_password(b"alice", b"other.test", Some(b"x"))
                .unwrap();
            store.set_password(b"alic", b"e", Some(b"y")).unwrap();
            drop(store);
            assert_eq!(crate::sasldb::format::sniff(&path).unwrap().to_string(), {
                match kind {
                    Kind::BerkeleyDb => "Berkeley DB (hash)".to_string(),
                    other => other.to_string(),
                }
            });
            let mut store = Store::open(&path, OpenMode::ReadWrite).unwrap();
            assert_eq!(store.kind(), kind, "an existing file keeps its format");
            assert_eq!(
                store
                    .get(b"alice", b"example.org", USER_PASSWORD)
                    .unwrap()
                    .as_deref()
                    .map(|v| &v[..]),
                Some(&b"secret"[..])
            );
            assert_eq!(store.delete_user(b"alice", b"example.org").unwrap(), 1);
            assert_eq!(
                store.get(b"alice", b"example.org", USER_PASSWORD).unwrap(),
                None
            );
            drop(store);
            let store = Store::open(&path, OpenMode::ReadOnly).unwrap();
            assert_eq!(
                names(&store),
                ["alic@e: userPassword", "alice@other.test: userPassword"],
                "{kind}"
            );
            assert_eq!(
                dir.path().join("sasldb2-lock").exists(),
                kind == Kind::Lmdb,
                "only LMDB has a lock file"
            );
        }
    }

    #[test]
    fn a_read_only_store_refuses_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasldb2");
        Store::create(&path, Kind::BerkeleyDb, &[], false).unwrap();
        let mut store = Store::open(&path, OpenMode::ReadOnly).unwrap();
        let err = store.put(b"a", b"b", USER_PASSWORD, b"c").unwrap_err();
        assert!(matches!(err, SasldbError::ReadOnly(_)), "{err}");
    }

    #[test]
    fn read_only_open_of_a_missing_file_fails_without_creating_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasldb2");
        let err = Store::open(&path, OpenMode::ReadOnly).unwrap_err();
        assert!(matches!(err, SasldbError::Missing(_)), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn foreign_files_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasldb2");
        std::fs::write(&path, b"user:password\n").unwrap();
        let err = Store::open(&path, OpenMode::ReadWrite).unwrap_err();
        assert!(
            err.to_string().contains("match no database format"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"user:password\n");
        assert!(!dir.path().join("sasldb2-lock").exists());
        let err = Store::open(dir.path(), OpenMode::ReadOnly).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
    }

    #[test]
    fn create_copies_every_record_and_will_not_overwrite() {
        let records: Vec<Record> = vec![
            (
                b"a\0r\0userPassword".to_vec(),
                Zeroizing::new(b"pw".to_vec()),
            ),
            (
                b"a\0r\0cmusaslsecretOTP".to_vec(),
                Zeroizing::new(b"otp".to_vec()),
            ),
            (
                b"not a sasldb key".to_vec(),
                Zeroizing::new(vec![0u8, 1, 2]),
            ),
        ];
        for kind in Kind::ALL {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("out");
            Store::create(&path, kind, &records, false).unwrap();
            let mut back = Store::open(&path, OpenMode::ReadOnly)
                .unwrap()
                .records()
                .unwrap();
            back.sort_by(|a, b| a.0.cmp(&b.0));
            let mut want = records.clone();
            want.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(back, want, "{kind}");
            let err = Store::create(&path, kind, &records, false).unwrap_err();
            assert!(matches!(err, SasldbError::Exists(_)), "{err}");
            Store::create(&path, kind, &records[..1], true).unwrap();
            assert_eq!(
                Store::open(&path, OpenMode::ReadOnly)
                    .unwrap()
                    .records()
                    .unwrap()
                    .len(),
                1
            );
            assert!(!dir.path().join(".out.saslauthd-rs-new").exists());
            assert!(!dir.path().join(".out.saslauthd-rs-new-lock").exists());
        }
    }
}
