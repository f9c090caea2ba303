//! Credential backends ("passdbs"; Cyrus calls them authentication mechanisms, `-a`).
//!
//! A passdb answers "is this the password of `authid` in `realm`?" with a verdict
//! ([`PassdbResult`]), and, when it has them, hands out a user's stored secrets
//! ([`Credentials`]) for the mechanisms that compute with them. `Err` is kept for a backend
//! that broke, which the driver answers differently from a wrong password. Passdbs are a closed
//! enum dispatched by `match`; they know no socket, no wire and no mechanism, and are called
//! by the driver only.

pub mod ldap;
mod memory;
mod pam;
pub(crate) mod sasldb;
mod shadow;

use std::io;
use std::path::PathBuf;

use crate::request::Peer;
use crate::sasldb::SasldbError;
use crate::secret::{Credentials, Password};
use crate::verdict::{PassdbKind, PassdbResult, SuccessCache};

pub use ldap::Ldap;
pub use memory::Memory;
pub use pam::Pam;
pub use sasldb::Sasldb;
pub(crate) use shadow::fuzz_parse as fuzz_shadow;
pub use shadow::{Shadow, ShadowSource};

/// What a passdb is asked: final names (realm defaulting and `-r` applied), borrowed from the
/// request (the driver copies them for a check that runs on another thread).
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The user name to look up.
    pub authid: &'a [u8],
    /// The realm (sasldb); the others ignore it, as Cyrus's do.
    pub realm: &'a [u8],
    /// The service (PAM's service name).
    pub service: &'a [u8],
    /// The client, when known (`PAM_RHOST`).
    pub peer: &'a Peer,
    /// The password.
    pub password: &'a Password,
}

/// A backend that broke (not a wrong password). Each names what it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PassdbError {
    /// The sasldb file could not be read.
    #[error(transparent)]
    Sasldb(#[from] SasldbError),
    /// A PAM call failed in a way that is no verdict (a module missing, a service file
    /// unreadable, a backend unreachable).
    #[error("PAM {call} (service {service:?}, user {user}): {source}")]
    Pam {
        /// The call (`pam_authenticate`).
        call: &'static str,
        /// The PAM service.
        service: String,
        /// The user, printable.
        user: String,
        /// What PAM said.
        source: pam_client::Error,
    },
    /// The directory could not be asked, or answered with an error that is no verdict.
    #[error("LDAP {server}: {message}")]
    Ldap {
        /// The server (or the list).
        server: String,
        /// What happened.
        message: String,
    },
    /// `getspnam_r` failed (not "no such user").
    #[error("getspnam_r({user}): {source}")]
    Nss {
        /// The user, printable.
        user: String,
        /// The error.
        source: io::Error,
    },
    /// The shadow file could not be read.
    #[error("{}: {source}", path.display())]
    ShadowFile {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// At start-up: a file the passdb needs cannot be read.
    #[error("cannot read {}: {source}{hint}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
        /// What to do about it, when there is something to say.
        hint: &'static str,
    },
    /// At start-up: NSS cannot give shadow entries at all.
    #[error("cannot read shadow entries: {0}")]
    NoShadowEntries(io::Error),
    /// At start-up: libxcrypt cannot hash with yescrypt (the unknown user's dummy hash).
    #[error("libxcrypt cannot make a yescrypt hash")]
    NoYescrypt,
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
    /// A directory (LDAP), asked on the runtime: see [`Passdb::ldap`].
    Ldap(Box<Ldap>),
}

impl Passdb {
    /// Which kind this is.
    pub fn kind(&self) -> PassdbKind {
        match self {
            Passdb::Sasldb(_) => PassdbKind::Sasldb,
            Passdb::Memory(_) => PassdbKind::Memory,
            Passdb::Shadow(_) => PassdbKind::Shadow,
            Passdb::Pam(_) => PassdbKind::Pam,
            Passdb::Ldap(_) => PassdbKind::Ldap,
        }
    }

    /// A check answered here and now when it cannot block: memory always, sasldb when its
    /// file is known not to have changed (a changed one is read again first, which takes a
    /// while for a large file). `None`: run [`Passdb::verify_plain`] on the blocking pool —
    /// always for shadow and PAM (a slow hash, PAM modules sleeping on failure or waiting on
    /// the network).
    ///
    /// sasldb and memory answer from data in memory in about a microsecond, so the driver
    /// runs them inline on the reactor: handing them to a thread pool would cost more than the
    /// lookup (see BENCHMARKS.md).
    pub fn verify_inline(&self, q: &Query<'_>) -> Option<Result<PassdbResult, PassdbError>> {
        match self {
            Passdb::Sasldb(db) => db.verify_plain_fresh(q.authid, q.realm, q.password),
            Passdb::Memory(db) => Some(Ok(db.verify_plain(q.authid, q.realm, q.password))),
            Passdb::Shadow(_) | Passdb::Pam(_) | Passdb::Ldap(_) => None,
        }
    }

    /// The directory, whose checks are asynchronous (the driver awaits them on the runtime
    /// instead of running [`Passdb::verify_plain`] on the pool).
    pub fn ldap(&self) -> Option<&Ldap> {
        match self {
            Passdb::Ldap(db) => Some(db),
            _ => None,
        }
    }

    /// [`Passdb::lookup_credentials`] when it cannot block (as [`Passdb::verify_inline`]);
    /// `None`: run that on the blocking pool.
    pub fn lookup_credentials_inline(
        &self,
        authid: &[u8],
        realm: &[u8],
    ) -> Option<Result<Credentials, PassdbError>> {
        match self {
            Passdb::Sasldb(db) => db.lookup_credentials_fresh(authid, realm),
            Passdb::Ldap(_) => None,
            other => Some(other.lookup_credentials(authid, realm)),
        }
    }

    /// Whether this passdb can hand out a user's stored secrets (what CRAM-MD5 and SCRAM
    /// need): sasldb and memory can, PAM and shadow cannot.
    pub fn has_credentials(&self) -> bool {
        match self {
            Passdb::Sasldb(_) | Passdb::Memory(_) => true,
            Passdb::Ldap(db) => db.has_credentials(),
            Passdb::Shadow(_) | Passdb::Pam(_) => false,
        }
    }

    /// A verdict from the credential cache alone, for a blocking passdb whose cache can be
    /// consulted without blocking; `None` means "ask [`Passdb::verify_plain`]". Lets the driver
    /// answer cache hits on the reactor, without a round trip through the thread pool.
    pub fn verify_cached(&self, q: &Query<'_>, cache: &dyn SuccessCache) -> Option<PassdbResult> {
        match self {
            Passdb::Shadow(db) => db.verify_cached(q, cache),
            Passdb::Pam(db) => db.verify_cached(q, cache),
            Passdb::Sasldb(_) | Passdb::Memory(_) | Passdb::Ldap(_) => None,
        }
    }

    /// The stored secrets of `authid` in `realm` (sasldb `userPassword` and `authPassword`);
    /// empty for an unknown user or a passdb that has none.
    pub fn lookup_credentials(
        &self,
        authid: &[u8],
        realm: &[u8],
    ) -> Result<Credentials, PassdbError> {
        match self {
            Passdb::Sasldb(db) => db.lookup_credentials(authid, realm),
            Passdb::Memory(db) => Ok(db.lookup_credentials(authid, realm)),
            Passdb::Shadow(_) | Passdb::Pam(_) | Passdb::Ldap(_) => Ok(Credentials::default()),
        }
    }

    /// Checks a cleartext password; `cache` is the driver's credential cache (`-c`), for the
    /// passdbs whose checks are worth remembering. May block (see [`Passdb::verify_inline`]).
    pub fn verify_plain(
        &self,
        q: &Query<'_>,
        cache: Option<&dyn SuccessCache>,
    ) -> Result<PassdbResult, PassdbError> {
        match self {
            Passdb::Sasldb(db) => db.verify_plain(q.authid, q.realm, q.password),
            Passdb::Memory(db) => Ok(db.verify_plain(q.authid, q.realm, q.password)),
            Passdb::Shadow(db) => db.verify_plain(q, cache),
            Passdb::Pam(db) => db.verify_plain(q, cache),
            Passdb::Ldap(_) => Err(PassdbError::Ldap {
                server: String::new(),
                message: "the directory is asked asynchronously (a driver bug)".into(),
            }),
        }
    }
}

/// Compares a password with a stored secret, or, for an unknown user, with a dummy of the
/// same cost, so both verdicts take the same time.
fn verdict(stored: Option<&[u8]>, password: &Password) -> PassdbResult {
    match stored {
        Some(stored) if password.matches(stored) => PassdbResult::Ok,
        Some(_) => PassdbResult::PasswordMismatch,
        None => {
            let _ = password.matches(b"\0no such user\0");
            PassdbResult::UserUnknown
        }
    }
}
