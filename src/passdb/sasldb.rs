//! The sasldb passdb: `userPassword` from a sasldb2 file, compared in constant time.
//!
//! Unlike Cyrus's `auth_sasldb`, which always opens the compile-time path, the path is
//! configurable (`--sasldb`). The file is opened once and kept open; each request stats the
//! path, and if the file was replaced (another inode, e.g. `mv new sasldb2`) or appeared
//! after start-up, it is reopened. Changes made in place by `saslpasswd2-rs` need no reopen:
//! every lookup is a fresh LMDB read transaction.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    current: Mutex<Option<Opened>>,
}

#[derive(Debug)]
struct Opened {
    file_id: (u64, u64),
    store: Arc<Store>,
}

impl Sasldb {
    /// Prepares to read `path`. A missing file is not an error here (Cyrus starts without
    /// one too, and every user is unknown until it appears); another format is.
    pub fn new(path: &Path) -> Result<Sasldb, SasldbError> {
        let db = Sasldb {
            path: path.to_owned(),
            current: Mutex::new(None),
        };
        match db.store() {
            Ok(_) | Err(SasldbError::Missing(_)) => Ok(db),
            Err(e) => Err(e),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open store for the file now at the path.
    fn store(&self) -> Result<Arc<Store>, SasldbError> {
        let meta = std::fs::metadata(&self.path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                SasldbError::Missing(self.path.clone())
            } else {
                SasldbError::Io {
                    path: self.path.clone(),
                    source,
                }
            }
        })?;
        let file_id = (meta.dev(), meta.ino());
        // The lock is held only to clone or swap an Arc; nothing blocks while holding it
        // except the rare (re)open itself.
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(opened) = current.as_ref().filter(|o| o.file_id == file_id) {
            return Ok(Arc::clone(&opened.store));
        }
        let store = Arc::new(Store::open(&self.path, OpenMode::ReadOnly)?);
        if current.is_some() {
            tracing::info!(path = %self.path.display(), "sasldb file replaced; reopened");
        }
        *current = Some(Opened {
            file_id,
            store: Arc::clone(&store),
        });
        Ok(store)
    }

    fn forget(&self) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub(crate) fn lookup_credentials(
        &self,
        authid: &[u8],
        realm: &[u8],
    ) -> Result<Credentials, PassdbError> {
        let store = match self.store() {
            Ok(store) => store,
            Err(SasldbError::Missing(_)) => return Ok(Credentials::default()),
            Err(e) => return Err(e.into()),
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
    }

    pub(crate) fn verify_plain(
        &self,
        authid: &[u8],
        realm: &[u8],
        password: &Password,
    ) -> Result<PassdbResult, PassdbError> {
        let lookup = |store: &Store| {
            store.with_value(authid, realm, USER_PASSWORD, |stored| {
                verdict(stored, password)
            })
        };
        let store = match self.store() {
            Ok(store) => store,
            Err(SasldbError::Missing(_)) => return Ok(verdict(None, password)),
            Err(e) => return Err(e.into()),
        };
        match lookup(&store) {
            // Another process grew the map beyond ours: open the environment afresh.
            Err(SasldbError::Lmdb {
                source: ::lmdb::Error::MapResized,
                ..
            }) => {
                drop(store);
                self.forget();
                let store = self.store()?;
                Ok(lookup(&store)?)
            }
            other => Ok(other?),
        }
    }
}
