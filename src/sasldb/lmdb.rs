//! The LMDB sasldb2 store, opened exactly as Cyrus's `sasldb/db_lmdb.c` opens it: one data file
//! (`MDB_NOSUBDIR`) plus `<path>-lock`, the unnamed main database, mode 0660 on create. Every
//! change is one write transaction, so a crash never leaves half an entry, and every read starts
//! a fresh read transaction, so a change by another process is seen at once.

use std::io;
use std::path::{Path, PathBuf};

use ::lmdb::{Cursor, Database, Environment, EnvironmentFlags, Transaction, WriteFlags};
use zeroize::Zeroizing;

use super::record::{Change, Entry, OpenMode, Record};
use super::replace::{self, WriteLock};
use super::{with_key, SasldbError};

/// The address space reserved for the map. LMDB grows the file only as data is written; this
/// bound only has to exceed any real sasldb2 (Cyrus's own default is 1 MiB).
const MAP_SIZE: usize = 1 << 30;

/// Mode of a newly created file, before the umask, as Cyrus (`db_lmdb.c`).
const CREATE_MODE: u32 = 0o660;

/// An open LMDB sasldb2 file.
pub(super) struct Lmdb {
    env: Environment,
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Lmdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lmdb").field("path", &self.path).finish()
    }
}

impl Lmdb {
    /// Opens `path`, which the caller has found to hold LMDB, to be empty or to be missing
    /// (for writing).
    pub(super) fn open(path: &Path, mode: OpenMode) -> Result<Lmdb, SasldbError> {
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
        // liblmdb opens (and creates) `<path>-lock` following symlinks: one planted there
        // would have it overwrite the link's target.
        let mut lock = path.as_os_str().to_owned();
        lock.push("-lock");
        if std::fs::symlink_metadata(&lock).is_ok_and(|m| !m.file_type().is_file()) {
            return Err(SasldbError::Symlink {
                path: lock.into(),
                why: "is a symlink or not a file where LMDB's lock file belongs; not opening                       through it",
            });
        }
        let env = Environment::new()
            .set_flags(flags)
            .set_map_size(MAP_SIZE)
            .open_with_permissions(path, CREATE_MODE)
            .map_err(lmdb_err)?;
        let db = env.open_db(None).map_err(lmdb_err)?;
        Ok(Lmdb {
            env,
            db,
            path: path.to_owned(),
        })
    }

    fn lmdb_err(&self, source: ::lmdb::Error) -> SasldbError {
        SasldbError::Lmdb {
            path: self.path.clone(),
            source,
        }
    }

    /// Looks up one property and hands its value (or `None`) to `f`, without copying it out of
    /// the map: a password is compared in place and never leaves LMDB's pages.
    pub(super) fn with_value<R>(
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

    /// Applies `changes` in one write transaction; returns how many keys were deleted.
    pub(super) fn apply(&self, changes: &[Change<'_>]) -> Result<usize, SasldbError> {
        let mut txn = self.env.begin_rw_txn().map_err(|e| self.lmdb_err(e))?;
        let mut deleted = 0;
        for change in changes {
            match change {
                Change::Put(key, value) => txn
                    .put(self.db, key, value, WriteFlags::empty())
                    .map_err(|e| self.lmdb_err(e))?,
                Change::Delete(key) => match txn.del(self.db, key, None) {
                    Ok(()) => deleted += 1,
                    Err(::lmdb::Error::NotFound) => {}
                    Err(e) => return Err(self.lmdb_err(e)),
                },
            }
        }
        txn.commit().map_err(|e| self.lmdb_err(e))?;
        Ok(deleted)
    }

    /// Every record, in LMDB's (sorted) order.
    pub(super) fn records(&self) -> Result<Vec<Record>, SasldbError> {
        let txn = self.env.begin_ro_txn().map_err(|e| self.lmdb_err(e))?;
        let mut records = Vec::new();
        {
            let mut cursor = txn.open_ro_cursor(self.db).map_err(|e| self.lmdb_err(e))?;
            for item in cursor.iter_start() {
                let (key, value) = item.map_err(|e| self.lmdb_err(e))?;
                records.push((key.to_vec(), Zeroizing::new(value.to_vec())));
            }
        }
        txn.commit().map_err(|e| self.lmdb_err(e))?;
        Ok(records)
    }

    /// Writes `records` as a new LMDB file over the locked path (a scratch file filled in one
    /// transaction, then renamed; the scratch file's own lock file is removed).
    pub(super) fn create_replacing(
        lock: &WriteLock,
        records: &[(&[u8], &[u8])],
    ) -> Result<(), SasldbError> {
        replace::replace(lock, CREATE_MODE, |scratch, _| {
            let result = Lmdb::open(scratch, OpenMode::ReadWrite).and_then(|env| {
                let changes: Vec<Change<'_>> = records
                    .iter()
                    .map(|(k, v)| Change::Put(k.to_vec(), v))
                    .collect();
                env.apply(&changes)?;
                env.env.sync(true).map_err(|e| env.lmdb_err(e))
            });
            let mut lock_file = scratch.as_os_str().to_owned();
            lock_file.push("-lock");
            let _ = std::fs::remove_file(lock_file);
            result
        })
    }

    /// Every key in the file, in LMDB's (sorted) order.
    pub(super) fn keys(&self) -> Result<Vec<Entry>, SasldbError> {
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
