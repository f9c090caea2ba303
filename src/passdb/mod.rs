//! Credential backends ("passdbs"; Cyrus calls them authentication mechanisms, `-a`).
//!
//! A passdb answers one question, "is this the password of `authid` in `realm`?", with a
//! verdict ([`PassdbResult`]); `Err` is kept for a backend that broke, which callers answer
//! differently from a wrong password. Passdbs are a closed enum dispatched by `match`.

pub mod memory;
pub mod sasldb;

use std::fmt;

use crate::sasldb::SasldbError;
use crate::secret::Password;

pub use memory::Memory;
pub use sasldb::Sasldb;

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
}

/// The passdbs this build knows, by their Cyrus `-a` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassdbKind {
    /// `-a sasldb`.
    Sasldb,
    /// `-a shadow` (a later issue).
    Shadow,
    /// `-a pam` (a later issue).
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
}

impl Passdb {
    /// Which kind this is.
    pub fn kind(&self) -> PassdbKind {
        match self {
            Passdb::Sasldb(_) => PassdbKind::Sasldb,
            Passdb::Memory(_) => PassdbKind::Memory,
        }
    }

    /// Checks a cleartext password. `authid` and `realm` are final (realm defaulting and
    /// `-r` already applied).
    ///
    /// sasldb and memory answer from memory-mapped or in-process data in about a
    /// microsecond, so they run inline on the reactor: handing them to a thread pool would
    /// cost more than the lookup (see BENCHMARKS.md).
    pub fn verify_plain(
        &self,
        authid: &[u8],
        realm: &[u8],
        password: &Password,
    ) -> Result<PassdbResult, PassdbError> {
        match self {
            Passdb::Sasldb(db) => db.verify_plain(authid, realm, password),
            Passdb::Memory(db) => Ok(db.verify_plain(authid, realm, password)),
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
