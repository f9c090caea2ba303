//! Users held in memory: the test double for the daemon and the protocols.

use std::collections::HashMap;

use zeroize::Zeroizing;

use super::verdict;
use crate::secret::{Credentials, Password};
use crate::verdict::PassdbResult;

/// A user's key: `(authid, realm)`.
type UserKey = (Vec<u8>, Vec<u8>);

/// An in-memory passdb: `(authid, realm) -> password`.
#[derive(Default)]
pub struct Memory {
    users: HashMap<UserKey, Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("users", &self.users.len())
            .finish()
    }
}

impl Memory {
    /// An empty passdb.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a user.
    pub fn with_user(mut self, authid: &str, realm: &str, password: &str) -> Self {
        self.users.insert(
            (authid.as_bytes().to_vec(), realm.as_bytes().to_vec()),
            Zeroizing::new(password.as_bytes().to_vec()),
        );
        self
    }

    pub(crate) fn lookup_credentials(&self, authid: &[u8], realm: &[u8]) -> Credentials {
        Credentials {
            plaintext: self.users.get(&(authid.to_vec(), realm.to_vec())).cloned(),
            auth_password: None,
        }
    }

    pub(crate) fn verify_plain(
        &self,
        authid: &[u8],
        realm: &[u8],
        password: &Password,
    ) -> PassdbResult {
        let stored = self.users.get(&(authid.to_vec(), realm.to_vec()));
        verdict(stored.map(|s| s.as_slice()), password)
    }
}
