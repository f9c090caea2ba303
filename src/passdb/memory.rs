//! Users held in memory: the test double for the daemon and the protocols.

use std::collections::HashMap;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::{verdict, Answer, Context, Module, Passdb, PassdbError, Query};
use crate::secret::{Credentials, Password};
use crate::verdict::{PassdbKind, PassdbResult, Replies};

/// `memory`: not offered to `-a` (its users come from code, not settings).
pub(super) const MODULE: Module = Module {
    kind: KIND,
    about: None,
    open: |_| {
        Err(PassdbError::Settings(
            "-a memory exists only inside the test suite".into(),
        ))
    },
    table: None,
};

const KIND: PassdbKind = PassdbKind {
    name: "memory",
    replies: Replies::BARE,
};

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

    fn stored(&self, q: &Query<'_>) -> Option<&Zeroizing<Vec<u8>>> {
        self.users.get(&(q.authid.to_vec(), q.realm.to_vec()))
    }
}

impl Passdb for Memory {
    fn kind(&self) -> PassdbKind {
        KIND
    }

    fn verify(
        self: Arc<Self>,
        q: &Query<'_>,
        password: Password,
        _: &Context<'_>,
    ) -> Answer<PassdbResult> {
        let stored = self.stored(q).map(|s| s.as_slice());
        Answer::Now(Ok(verdict(stored, &password)))
    }

    fn has_credentials(&self) -> bool {
        true
    }

    fn credentials(self: Arc<Self>, q: &Query<'_>, _: &Context<'_>) -> Answer<Credentials> {
        Answer::Now(Ok(Credentials {
            plaintext: self.stored(q).cloned(),
            auth_password: None,
            digest_md5: None,
            cram_md5: None,
        }))
    }
}
