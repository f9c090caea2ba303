//! Credential backends ("passdbs"; Cyrus calls them authentication mechanisms, `-a`).
//!
//! A passdb answers one question, "is this the password of `authid` in `realm`?", with a
//! verdict ([`PassdbResult`]); `Err` is kept for a backend that broke, which callers answer
//! differently from a wrong password. Passdbs are a closed enum dispatched by `match`.

pub mod memory;
pub mod pam;
pub mod sasldb;
pub mod shadow;

use std::fmt;

use crate::sasldb::SasldbError;
use crate::secret::Password;

pub use memory::Memory;
pub use pam::Pam;
pub use sasldb::Sasldb;
pub use shadow::{Shadow, ShadowSource};

/// What a passdb is asked: final names (realm defaulting and `-r` applied), owned, so that a
/// blocking passdb can take it to another thread.
#[derive(Debug, Clone)]
pub struct Query {
    /// The user name to look up.
    pub authid: Vec<u8>,
    /// The realm (sasldb); the others ignore it, as Cyrus's do.
    pub realm: Vec<u8>,
    /// The service (PAM's service name).
    pub service: Vec<u8>,
    /// The client's address, when known (`PAM_RHOST`).
    pub remote: Option<Vec<u8>>,
    /// The password.
    pub password: Password,
}

/// The verdict of a passdb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassdbResult {
    /// The password is right.
    Ok,
    /// The user exists; the password is wrong.
    PasswordMismatch,
    /// No such user.
    UserUnknown,
    /// The account is locked or disabled.
    UserDisabled,
    /// The password or account has expired.
    PassExpired,
}

impl PassdbResult {
    /// The reason written in log lines (never on the wire: there, unknown user and wrong
    /// password look the same).
    pub fn log_reason(self) -> &'static str {
        match self {
            PassdbResult::Ok => "success",
            PassdbResult::PasswordMismatch => "password mismatch",
            PassdbResult::UserUnknown => "unknown user",
            PassdbResult::UserDisabled => "account disabled",
            PassdbResult::PassExpired => "password expired",
        }
    }
}

/// A backend that broke (not a wrong password).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PassdbError {
    /// The sasldb file could not be read.
    #[error(transparent)]
    Sasldb(#[from] SasldbError),
    /// PAM, NSS or a shadow file failed; the text names the call and the cause.
    #[error("{0}")]
    Backend(String),
    /// The backend did not answer in time (the call may still be running).
    #[error("no answer from the {0} passdb within {1:?}")]
    Timeout(PassdbKind, std::time::Duration),
}

/// The passdbs this build knows, by their Cyrus `-a` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassdbKind {
    /// `-a sasldb`.
    Sasldb,
    /// `-a shadow`.
    Shadow,
    /// `-a pam`.
    Pam,
    /// In-memory users, for tests.
    Memory,
}

impl PassdbKind {
    /// Parses a Cyrus `-a` name (case-insensitive, as Cyrus's `strcasecmp`).
    pub fn from_name(name: &str) -> Option<PassdbKind> {
        Some(match name.to_ascii_lowercase().as_str() {
            "sasldb" => PassdbKind::Sasldb,
            "shadow" => PassdbKind::Shadow,
            "pam" => PassdbKind::Pam,
            "memory" => PassdbKind::Memory,
            _ => return None,
        })
    }

    /// The `-a` name.
    pub fn name(self) -> &'static str {
        match self {
            PassdbKind::Sasldb => "sasldb",
            PassdbKind::Shadow => "shadow",
            PassdbKind::Pam => "pam",
            PassdbKind::Memory => "memory",
        }
    }
}

impl fmt::Display for PassdbKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A configured passdb.
#[derive(Debug)]
pub enum Passdb {
    /// A sasldb2 file.
    Sasldb(Sasldb),
    /// Users held in memory.
    Memory(Memory),
    /// shadow(5) entries and libxcrypt.
    Shadow(Shadow),
    /// A PAM stack.
    Pam(Pam),
}

impl Passdb {
    /// Which kind this is.
    pub fn kind(&self) -> PassdbKind {
        match self {
            Passdb::Sasldb(_) => PassdbKind::Sasldb,
            Passdb::Memory(_) => PassdbKind::Memory,
            Passdb::Shadow(_) => PassdbKind::Shadow,
            Passdb::Pam(_) => PassdbKind::Pam,
        }
    }

    /// Whether a check may block for long (a slow hash, PAM modules sleeping on failure or
    /// waiting on the network): such checks run on the bounded blocking pool.
    pub fn is_blocking(&self) -> bool {
        matches!(self, Passdb::Shadow(_) | Passdb::Pam(_))
    }

    /// A verdict from the credential cache alone, for a blocking passdb whose cache can be
    /// consulted without blocking; `None` means "ask [`Passdb::verify_plain`]". Cache hits
    /// are answered on the reactor, without a round trip through the thread pool.
    pub fn verify_cached(&self, q: &Query) -> Option<PassdbResult> {
        match self {
            Passdb::Shadow(db) => db.verify_cached(q),
            Passdb::Pam(db) => db.verify_cached(q),
            Passdb::Sasldb(_) | Passdb::Memory(_) => None,
        }
    }

    /// Whether this passdb can hand out a stored cleartext secret (what CRAM-MD5 and SCRAM
    /// need): sasldb and memory can, PAM and shadow cannot.
    pub fn has_plaintext(&self) -> bool {
        matches!(self, Passdb::Sasldb(_) | Passdb::Memory(_))
    }

    /// The stored secrets of `authid` in `realm` (sasldb `userPassword` and
    /// `authPassword`), for mechanisms that compute with them; empty for an unknown user or
    /// a passdb that has none.
    pub fn lookup_credentials(
        &self,
        authid: &[u8],
        realm: &[u8],
    ) -> Result<crate::mech::Credentials, PassdbError> {
        match self {
            Passdb::Sasldb(db) => db.lookup_credentials(authid, realm),
            Passdb::Memory(db) => Ok(crate::mech::Credentials {
                plaintext: db.lookup_plaintext(authid, realm),
                auth_password: None,
            }),
            Passdb::Shadow(_) | Passdb::Pam(_) => Ok(crate::mech::Credentials::default()),
        }
    }

    /// Checks a cleartext password.
    ///
    /// sasldb and memory answer from memory-mapped or in-process data in about a
    /// microsecond, so the driver runs them inline on the reactor: handing them to a thread
    /// pool would cost more than the lookup (see BENCHMARKS.md). Shadow and PAM block.
    pub fn verify_plain(&self, q: &Query) -> Result<PassdbResult, PassdbError> {
        match self {
            Passdb::Sasldb(db) => db.verify_plain(&q.authid, &q.realm, &q.password),
            Passdb::Memory(db) => Ok(db.verify_plain(&q.authid, &q.realm, &q.password)),
            Passdb::Shadow(db) => db.verify_plain(q),
            Passdb::Pam(db) => db.verify_plain(q),
        }
    }
}

/// Compares a password with a stored secret, or, for an unknown user, with a dummy of the
/// same cost, so both verdicts take the same time.
pub(crate) fn verdict(stored: Option<&[u8]>, password: &Password) -> PassdbResult {
    match stored {
        Some(stored) if password.matches(stored) => PassdbResult::Ok,
        Some(_) => PassdbResult::PasswordMismatch,
        None => {
            let _ = password.matches(b"\0no such user\0");
            PassdbResult::UserUnknown
        }
    }
}
