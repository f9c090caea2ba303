//! The LMDB sasldb2 store, opened exactly as Cyrus's `sasldb/db_lmdb.c` opens it: one data file
//! (`MDB_NOSUBDIR`) plus `<path>-lock`, the unnamed main database, mode 0660 on create. Every
//! change is one write transaction, so a crash never leaves half an entry, and every read starts
//! a fresh read transaction, so a change by another process is seen at once.

use std::io;
use std::path::{Path, PathBuf};

use ::lmdb::{Cursor, Database, Environment, EnvironmentFlags, Transaction, WriteFlags};
use zeroize::Zeroizing;

use super::format::{self, Format};
use super::{encode_key, user_prefix, with_key, SasldbError, STALE_SECRETS, USER_PASSWORD};

/// The address space reserved for the map. LMDB grows the file only as data is written; this
/// bound only has to exceed any real sasldb2 (Cyrus's own default is 1 MiB).
const MAP_SIZE: usize = 1 << 30;

/// Mode of a newly created file, before the umask, as Cyrus (`db_lmdb.c`).
const CREATE_MODE: u32 = 0o660;

/// How to open a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only (the daemon, `sasldblistusers2-rs`); the file must exist.
    ReadOnly,
    /// Read and write (`saslpasswd2-rs`); the file is created when missing.
    ReadWrite,
}

/// One record's key, split; as listed by `sasldblistusers2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The raw key bytes.
    pub key: Vec<u8>,
}

/// An open sasldb2 file.
pub struct Store {
    env: Environment,
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Checks, without opening or creating anything, that `path` can be opened in `mode`:
    /// it holds LMDB (or, for writing, is empty or missing). Tools call it before prompting.
    pub fn check(path: &Path, mode: OpenMode) -> Result<(), SasldbError> {
        match format::sniff(path) {
            Ok(Format::Lmdb) => Ok(()),
            Ok(Format::Empty) if mode == OpenMode::ReadWrite => Ok(()),
            Ok(Format::Empty) => Err(SasldbError::Missing(path.to_owned())),
            Ok(other) => Err(SasldbError::ForeignFormat {
                path: path.to_owned(),
                format: other,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound && mode == OpenMode::ReadWrite => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(SasldbError::Missing(path.to_owned()))
            }
            Err(source) => Err(SasldbError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Opens `path`. The format is checked first ([`Store::check`]), so a Berkeley DB or GDBM
    /// file is refused by name and left untouched (no `-lock` file is created beside it).
    pub fn open(path: &Path, mode: OpenMode) -> Result<Store, SasldbError> {
        Self::check(path, mode)?;
        // NO_TLS: a reader slot belongs to the transaction, not to the thread. With slots kept
        // in thread-local storage, a file replaced under a running daemon (`mv new sasldb2`)
        // failed with MDB_BAD_RSLOT: closing the old environment frees its TLS key, the new
        // one may get the same key, and the thread's stale slot is the old environment's.
        let mut flags = EnvironmentFlags::NO_SUB_DIR | EnvironmentFlags::NO_TLS;
        if mode == OpenMode::ReadOnly {
            flags |= EnvironmentFlags::READ_ONLY;
        }
        let lmdb_err = |source: ::lmdb::Error| match source {
            ::lmdb::Error::Other(code) => SasldbError::Io {
                path: path.to_owned(),
                source: io::Error::from_raw_os_error(code),
            },
            source => SasldbError::Lmdb {
                path: path.to_owned(),
                source,
            },
        };
        let env = Environment::new()
            .set_flags(flags)
            .set_map_size(MAP_SIZE)
            .open_with_permissions(path, CREATE_MODE)
            .map_err(lmdb_err)?;
        let db = env.open_db(None).map_err(lmdb_err)?;
        Ok(Store {
            env,
            db,
            path: path.to_owned(),
        })
    }

    /// The file this store reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lmdb_err(&self, source: ::lmdb::Error) -> SasldbError {
        SasldbError::Lmdb {
            path: self.path.clone(),
            source,
        }
    }

    /// Looks up one property and hands its value (or `None`) to `f`, without copying it out of
    /// the map: a password is compared in place and never leaves LMDB's pages.
    pub fn with_value<R>(
        &self,
        authid: &[u8],
        realm: &[u8],
        property: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, SasldbError> {
        let txn = self.env.begin_ro_txn().map_err(|e| self.lmdb_err(e))?;
        let found = with_key(authid, realm, property, |key| {
            match txn.get(self.db, &key) {
                Ok(value) => Ok(Some(value)),
                Err(::lmdb::Error::NotFound) => Ok(None),
                Err(e) => Err(e),
            }
        });
        let result = match found {
            Ok(value) => f(value),
            Err(e) => return Err(self.lmdb_err(e)),
        };
        txn.commit().map_err(|e| self.lmdb_err(e))?;
        Ok(result)
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

    /// Sets a user's password as `saslpasswd2` does, in one transaction: writes `userPassword`
    /// (unless `password` is `None`, Cyrus's `-n`) and deletes the stale `cmusaslsecret*`
    /// properties.
    pub fn set_password(
        &self,
        authid: &[u8],
        realm: &[u8],
        password: Option<&[u8]>,
    ) -> Result<(), SasldbError> {
        let mut txn = self.env.begin_rw_txn().map_err(|e| self.lmdb_err(e))?;
        if let Some(password) = password {
            let key = encode_key(authid, realm, USER_PASSWORD);
            txn.put(self.db, &key, &password, WriteFlags::empty())
                .map_err(|e| self.lmdb_err(e))?;
        }
        for property in STALE_SECRETS {
            match txn.del(self.db, &encode_key(authid, realm, property), None) {
                Ok(()) | Err(::lmdb::Error::NotFound) => {}
                Err(e) => return Err(self.lmdb_err(e)),
            }
        }
        txn.commit().map_err(|e| self.lmdb_err(e))
    }

    /// Writes one property (e.g. `authPassword`) in its own transaction.
    pub fn put(
        &self,
        authid: &[u8],
        realm: &[u8],
        property: &[u8],
        value: &[u8],
    ) -> Result<(), SasldbError> {
        let mut txn = self.env.begin_rw_txn().map_err(|e| self.lmdb_err(e))?;
        let key = encode_key(authid, realm, property);
        txn.put(self.db, &key, &value, WriteFlags::empty())
            .map_err(|e| self.lmdb_err(e))?;
        txn.commit().map_err(|e| self.lmdb_err(e))
    }

    /// Deletes every property of one user in one transaction; returns how many were removed.
    pub fn delete_user(&self, authid: &[u8], realm: &[u8]) -> Result<usize, SasldbError> {
        let prefix = user_prefix(authid, realm);
        let mut txn = self.env.begin_rw_txn().map_err(|e| self.lmdb_err(e))?;
        let keys: Vec<Vec<u8>> = {
            let mut cursor = txn.open_ro_cursor(self.db).map_err(|e| self.lmdb_err(e))?;
            let mut keys = Vec::new();
            for item in cursor.iter_from(&prefix) {
                let (key, _) = item.map_err(|e| self.lmdb_err(e))?;
                if !key.starts_with(&prefix) {
                    break;
                }
                // Only this user's keys: the property part must not hold another NUL.
                if !key[prefix.len()..].contains(&0) {
                    keys.push(key.to_vec());
                }
            }
            keys
        };
        for key in &keys {
            txn.del(self.db, key, None).map_err(|e| self.lmdb_err(e))?;
        }
        txn.commit().map_err(|e| self.lmdb_err(e))?;
        Ok(keys.len())
    }

    /// Every key in the file, in LMDB's (sorted) order.
    pub fn keys(&self) -> Result<Vec<Entry>, SasldbError> {
        let txn = self.env.begin_ro_txn().map_err(|e| self.lmdb_err(e))?;
        let mut entries = Vec::new();
        {
            let mut cursor = txn.open_ro_cursor(self.db).map_err(|e| self.lmdb_err(e))?;
            for item in cursor.iter_start() {
                let (key, _) = item.map_err(|e| self.lmdb_err(e))?;
                entries.push(Entry { key: key.to_vec() });
            }
        }
        txn.commit().map_err(|e| self.lmdb_err(e))?;
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasldb::Key;

    #[test]
    fn set_get_delete_in_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasldb2");
        let store = Store::open(&path, OpenMode::ReadWrite).unwrap();
        store
            .set_password(b"alice", b"example.org", Some(b"secret"))
            .unwrap();
        store
            .set_password(b"alice", b"other.test", Some(b"x"))
            .unwrap();
        store.set_password(b"alic", b"e", Some(b"y")).unwrap();
        assert_eq!(
            store
                .get(b"alice", b"example.org", USER_PASSWORD)
                .unwrap()
                .as_deref()
                .map(|v| &v[..]),
            Some(&b"secret"[..])
        );
        assert!(dir.path().join("sasldb2-lock").exists());
        assert_eq!(store.delete_user(b"alice", b"example.org").unwrap(), 1);
        assert_eq!(
            store.get(b"alice", b"example.org", USER_PASSWORD).unwrap(),
            None
        );
        let keys: Vec<String> = store
            .keys()
            .unwrap()
            .iter()
            .map(|e| Key::parse(&e.key).unwrap().to_string())
            .collect();
        assert_eq!(
            keys,
            ["alic@e: userPassword", "alice@other.test: userPassword"]
        );
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
    fn foreign_formats_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasldb2");
        std::fs::write(&path, b"user:password\n").unwrap();
        let err = Store::open(&path, OpenMode::ReadWrite).unwrap_err();
        assert!(err.to_string().contains("unrecognised"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"user:password\n");
        assert!(!dir.path().join("sasldb2-lock").exists());
    }
}
