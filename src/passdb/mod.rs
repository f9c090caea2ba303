//! Credential backends ("passdbs"; Cyrus calls them authentication mechanisms, `-a`).
//!
//! A passdb answers "is this the password of `authid` in `realm`?" with a verdict
//! ([`PassdbResult`]), and, when it has them, hands out a user's stored secrets
//! ([`Credentials`]) for the mechanisms that compute with them. `Err` is kept for a backend
//! that broke, which the driver answers differently from a wrong password.
//!
//! Every passdb sits behind one seam, the [`Passdb`] trait (Dovecot's `struct
//! passdb_module_interface`), and says with each [`Answer`] how it runs: at once (sasldb from
//! memory, a cache hit), blocking (crypt, PAM: the driver runs it on the `-n` pool), or
//! awaiting the network (LDAP). The driver asks every one the same way — one deadline, one
//! mapping of an error, a timeout or a panic to a verdict and the metrics — and names none.
//! A passdb knows no socket, no wire and no mechanism.
//!
//! Adding a passdb is a file here and one line in [`MODULES`].

mod failover;
mod getpwent;
mod kerberos5;
pub mod ldap;
mod memory;
#[cfg(feature = "oauth2")]
mod oauth2;
mod pam;
mod rimap;
pub(crate) mod sasldb;
pub mod scheme;
mod shadow;
#[cfg(feature = "sql")]
mod sql;
mod tls;

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use crate::pool::{JobLost, Pool};
use crate::request::Peer;
use crate::sasldb::SasldbError;
use crate::secret::{Credentials, Password};
use crate::verdict::{PassdbKind, PassdbResult, SuccessCache};

pub use ldap::Ldap;
pub use memory::Memory;
pub use pam::Pam;
pub(crate) use rimap::{fuzz_login as fuzz_imap_login, fuzz_parse_response as fuzz_imap_response};
pub use rimap::{RimapTls, UnknownRimapTls};
pub use sasldb::Sasldb;
pub(crate) use shadow::fuzz_parse as fuzz_shadow;
pub use shadow::{Shadow, ShadowSource};

/// The passdbs this build has, by their `-a` names: what `-a`, `passdb =` and `-v` know.
pub static MODULES: &[Module] = &[
    sasldb::MODULE,
    shadow::MODULE,
    pam::MODULE,
    ldap::MODULE,
    #[cfg(feature = "sql")]
    sql::MODULE,
    getpwent::MODULE,
    kerberos5::MODULE,
    rimap::MODULE,
    memory::MODULE,
];

/// One entry of [`MODULES`]: a passdb's name and how it is opened.
#[derive(Debug, Clone, Copy)]
pub struct Module {
    /// Its name and reply texts.
    pub kind: PassdbKind,
    /// What `-h` and the manual say of it (`None`: not offered, as `memory`).
    pub about: Option<&'static str>,
    /// Opens it as the settings say (at start-up and on a reload, on a blocking thread).
    pub open: fn(&Settings) -> Result<Arc<dyn Passdb>, PassdbError>,
    /// Whether the configuration file may have a table named after it (`[ldap]`).
    pub table: Option<Table>,
}

/// Why a passdb's table has a key it cannot take (the passdb's own error).
pub type KeyError = Box<dyn std::error::Error + Send + Sync>;

/// A passdb's table in the configuration file.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// What the manual says of it.
    pub about: &'static str,
    /// Checks one of its keys (and value, as text) when the file is read: an unknown key is
    /// an error there; the values are checked together when the passdb opens.
    pub check: fn(&str, &str) -> Result<(), KeyError>,
}

/// The module named `name` (case-insensitive, as Cyrus's `strcasecmp`).
pub fn module(name: &str) -> Option<&'static Module> {
    MODULES
        .iter()
        .find(|m| m.kind.name.eq_ignore_ascii_case(name))
}

/// The names of the passdbs a user may choose (`-a`), in the table's order.
pub fn offered() -> impl Iterator<Item = &'static str> {
    MODULES
        .iter()
        .filter(|m| m.about.is_some())
        .map(|m| m.kind.name)
}

/// What the daemon's settings say to the passdbs: each takes what concerns it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `--sasldb`: the sasldb2 file.
    pub sasldb: PathBuf,
    /// `--shadow-file`: shadow(5) entries from this file instead of NSS.
    pub shadow_file: Option<PathBuf>,
    /// `--pam-service`: the PAM service for every request.
    pub pam_service: Option<String>,
    /// `-O`: the options Cyrus passes to its mechanism (a configuration file's path, rimap's
    /// `host/port`).
    pub options: Vec<String>,
    /// `--rimap-tls`: how `-a rimap` protects its connections.
    pub rimap_tls: RimapTls,
    /// `--rimap-ca`: the CA certificates `-a rimap` checks the server with (default: the
    /// system's).
    pub rimap_ca: Option<PathBuf>,
    /// The configuration file's table named after the passdb (`[ldap]`): its keys and values
    /// as text, in the file's order.
    pub table: Vec<(String, String)>,
}

/// A user's check, as the driver asks every passdb: final names (the realm rule and `-r`
/// applied), borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The user name to look up.
    pub authid: &'a [u8],
    /// The realm: the request's own, else the passdb's [default](Passdb::default_realm).
    pub realm: &'a [u8],
    /// The service (`smtp`; PAM's service name, `%s` in a filter).
    pub service: &'a [u8],
    /// The client, when known (`PAM_RHOST`).
    pub peer: &'a Peer,
}

impl Query<'_> {
    /// A copy that lives as long as a check that runs later (on the pool, or awaited).
    pub fn to_owned(&self) -> QueryBuf {
        QueryBuf {
            authid: self.authid.to_vec(),
            realm: self.realm.to_vec(),
            service: self.service.to_vec(),
            peer: self.peer.clone(),
        }
    }
}

/// An owned [`Query`].
#[derive(Debug, Clone)]
pub struct QueryBuf {
    authid: Vec<u8>,
    realm: Vec<u8>,
    service: Vec<u8>,
    peer: Peer,
}

impl QueryBuf {
    /// The query it holds.
    pub fn query(&self) -> Query<'_> {
        Query {
            authid: &self.authid,
            realm: &self.realm,
            service: &self.service,
            peer: &self.peer,
        }
    }
}

/// What the driver lends a check.
pub struct Context<'a> {
    /// The credential cache (`-c`) as this check's user sees it, its lookups counted in the
    /// metrics; `None` without `-c`, or for a passdb that [has no use](Passdb::cache_use) for
    /// it.
    pub cache: Option<&'a Arc<dyn SuccessCache>>,
    /// The `-n` pool, for a passdb that awaits the network and then has costly work to do
    /// (a password scheme): never on the reactor.
    pub pool: &'a Arc<Pool>,
}

/// How a passdb answers: here and now, or with work the driver runs on the pool or awaits.
/// Either way the driver gives it one deadline, and maps what goes wrong the same way.
pub enum Answer<T> {
    /// Answered at once, without blocking (data in memory, a cache hit).
    Now(Result<T, PassdbError>),
    /// A call that blocks (libxcrypt, PAM, a file to read): the driver runs it on the `-n`
    /// pool. (Dovecot: `blocking = TRUE`, a job for the auth workers.)
    Blocking(Box<dyn FnOnce() -> Result<T, PassdbError> + Send>),
    /// Work that awaits the network (a directory, a database): the driver awaits it on the
    /// runtime; it must not block.
    Awaited(Pin<Box<dyn Future<Output = Result<T, PassdbError>> + Send>>),
}

impl<T: Send + 'static> Answer<T> {
    /// The same answer, its value made another by `f`.
    pub fn map<U: Send + 'static>(self, f: fn(T) -> U) -> Answer<U> {
        match self {
            Answer::Now(answered) => Answer::Now(answered.map(f)),
            Answer::Blocking(call) => Answer::Blocking(Box::new(move || call().map(f))),
            Answer::Awaited(work) => Answer::Awaited(Box::pin(async move { work.await.map(f) })),
        }
    }
}

/// A password check's verdict, and the name the passdb knows the user by when it says one (a
/// SQL query's `user` column): what the Dovecot socket's `OK` names (`user=`), as Dovecot's
/// SQL passdb does, and Postfix logs and checks as `sasl_username`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The verdict.
    pub result: PassdbResult,
    /// The user's name as the passdb has it, when it differs from what was asked.
    pub user: Option<Vec<u8>>,
    /// Why an account is refused, in the passdb's words, for the client (Dovecot's `reason`
    /// field: `reason=` in the Dovecot socket's `FAIL`, which Postfix shows in its 535).
    pub reason: Option<String>,
}

impl From<PassdbResult> for Verified {
    fn from(result: PassdbResult) -> Verified {
        Verified {
            result,
            user: None,
            reason: None,
        }
    }
}

impl<T> Answer<T> {
    /// A call for the pool.
    pub fn blocking(call: impl FnOnce() -> Result<T, PassdbError> + Send + 'static) -> Self {
        Answer::Blocking(Box::new(call))
    }

    /// Work to await.
    pub fn awaited(work: impl Future<Output = Result<T, PassdbError>> + Send + 'static) -> Self {
        Answer::Awaited(Box::pin(work))
    }
}

impl<T> fmt::Debug for Answer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Answer::Now(_) => "Answer::Now",
            Answer::Blocking(_) => "Answer::Blocking",
            Answer::Awaited(_) => "Answer::Awaited",
        })
    }
}

/// Which realm stands for a request's empty one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultRealm {
    /// `--realm`, else the host name, as Cyrus's `auth_sasldb` (and what the others ignore).
    Daemon,
    /// This one (`ldap_default_realm`), else `--realm`, never the host name (Cyrus's
    /// `lak.c`); `None`: `--realm` or nothing.
    Own(Option<Vec<u8>>),
}

/// Whether the credential cache (`-c`) helps a passdb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// Its checks are costly: remember successes.
    Useful,
    /// Not worth it; the text says why, for the log.
    Useless(&'static str),
}

/// What a passdb needs of the process once it has dropped its privileges (`--user`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Files it must still be able to read.
    pub files: Vec<PathBuf>,
    /// Supplementary groups to keep, by name.
    pub group_names: Vec<&'static str>,
    /// And by id.
    pub group_ids: Vec<u32>,
}

/// A credential backend.
///
/// Only `kind` and `verify` are required; a passdb that has stored secrets to hand out (what
/// CRAM-MD5 and SCRAM compute with) also says so in `has_credentials` and gives them in
/// `credentials`.
pub trait Passdb: Send + Sync + fmt::Debug + 'static {
    /// Its name and reply texts (its [`Module`]'s).
    fn kind(&self) -> PassdbKind;

    /// Checks a cleartext password.
    fn verify(
        self: Arc<Self>,
        query: &Query<'_>,
        password: Password,
        cx: &Context<'_>,
    ) -> Answer<PassdbResult>;

    /// [`Passdb::verify`], with the name the passdb knows the user by, for a passdb that
    /// can say it (the default says none).
    fn verify_named(
        self: Arc<Self>,
        query: &Query<'_>,
        password: Password,
        cx: &Context<'_>,
    ) -> Answer<Verified> {
        self.verify(query, password, cx).map(Verified::from)
    }

    /// Whether [`Passdb::credentials`] can hand out anything.
    fn has_credentials(&self) -> bool {
        false
    }

    /// The user's stored secrets; empty for an unknown user.
    fn credentials(self: Arc<Self>, query: &Query<'_>, cx: &Context<'_>) -> Answer<Credentials> {
        let _ = (query, cx);
        Answer::Now(Ok(Credentials::default()))
    }

    /// The realm that stands for a request's empty one.
    fn default_realm(&self) -> DefaultRealm {
        DefaultRealm::Daemon
    }

    /// Whether `-c` helps it.
    fn cache_use(&self) -> CacheUse {
        CacheUse::Useful
    }

    /// What it needs of the process after `--user`.
    fn access(&self) -> Access {
        Access::default()
    }

    /// What the log should say once it is up (a file that does not exist yet, say).
    fn notices(&self) -> Vec<String> {
        Vec::new()
    }
}

/// What a token check decided: the user the token proves (what the Dovecot socket's `OK`
/// names), or why it refused it.
pub type TokenVerdict = Result<Vec<u8>, crate::verdict::TokenRefusal>;

/// A check of OAuth 2.0 access tokens (OAUTHBEARER and XOAUTH2), beside the passdb: the
/// `[oauth2]` table. It answers like a passdb ([`Answer`]), within the same deadline; `Err` is
/// a provider that could not be asked, never a refusal.
pub trait TokenCheck: Send + Sync + fmt::Debug + 'static {
    /// Its name in the log and the metrics.
    fn kind(&self) -> PassdbKind;

    /// Checks `token`; `user` is who the client says it is (`None`: whoever the token names).
    fn verify_token(
        self: Arc<Self>,
        user: Option<&[u8]>,
        token: Password,
        cx: &Context<'_>,
    ) -> Answer<TokenVerdict>;

    /// The scope a token must have, for the mechanisms' error challenge.
    fn scope(&self) -> Option<String>;

    /// Where the provider's discovery document is, for OAUTHBEARER's error challenge.
    fn openid_configuration(&self) -> Option<String>;

    /// What the log should say once it is up (a setting that is weaker than it could be).
    fn notices(&self) -> Vec<String> {
        Vec::new()
    }

    /// Asks the provider once, for `--check-config`: what it found, in words.
    #[allow(clippy::type_complexity)]
    fn probe(self: Arc<Self>) -> Pin<Box<dyn Future<Output = Result<String, PassdbError>> + Send>>;
}

/// A configuration table's keys and values, as text, in the file's order.
pub type TableEntries = [(String, String)];

/// A token check's table in the configuration file, and how it is opened from it.
#[derive(Debug, Clone, Copy)]
pub struct TokenModule {
    /// The table's name (`oauth2`).
    pub name: &'static str,
    /// Its keys.
    pub table: Table,
    /// Opens it from the table's keys and values (at start-up and on a reload).
    pub open: fn(&TableEntries) -> Result<Arc<dyn TokenCheck>, PassdbError>,
}

/// The token checks this build has.
pub static TOKEN_MODULES: &[TokenModule] = &[
    #[cfg(feature = "oauth2")]
    oauth2::MODULE,
];

/// The tables the configuration file may have besides the plain keys: each passdb's that
/// takes one (`[ldap]`), and each token check's (`[oauth2]`).
pub fn table(name: &str) -> Option<Table> {
    MODULES
        .iter()
        .find(|m| m.kind.name.eq_ignore_ascii_case(name))
        .and_then(|m| m.table)
        .or_else(|| {
            TOKEN_MODULES
                .iter()
                .find(|m| m.name.eq_ignore_ascii_case(name))
                .map(|m| m.table)
        })
}

/// The names of [`table`]'s tables, in order.
pub fn table_names() -> impl Iterator<Item = &'static str> {
    MODULES
        .iter()
        .filter(|m| m.table.is_some())
        .map(|m| m.kind.name)
        .chain(TOKEN_MODULES.iter().map(|m| m.name))
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
    /// The IMAP server could not be used (`-a rimap`): Cyrus's text for it, and what
    /// happened.
    #[error("IMAP {server}: {message}")]
    Imap {
        /// The server (`host/port`).
        server: String,
        /// What Cyrus's saslauthd answers (after `NO `).
        alert: &'static str,
        /// What happened, for the log.
        message: String,
    },
    /// The KDC could not be asked, or its ticket could not be verified (`-a kerberos5`).
    #[error("Kerberos ({principal}): {message}")]
    Kerberos {
        /// The principal asked for, printable.
        principal: String,
        /// What Cyrus's saslauthd answers (after `NO `).
        reply: &'static str,
        /// What happened.
        message: String,
    },
    /// The OAuth 2.0 provider could not be asked, or answered with something that is no
    /// answer (`[oauth2]`).
    #[error("OAuth 2.0 provider {url}: {message}")]
    OAuth2 {
        /// What was asked (a URL without its query).
        url: String,
        /// What happened.
        message: String,
    },
    /// The database could not be asked (`-a sql`).
    #[error("SQL: {0}")]
    Sql(String),
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
    /// Work lent to the pool did not come back (it panicked).
    #[error(transparent)]
    Lost(#[from] JobLost),
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
    /// At start-up: settings that cannot be used (the message names the key or file).
    #[error("{0}")]
    Settings(String),
}

impl PassdbError {
    /// What the saslauthd socket answers after `NO ` for this failure, where Cyrus's
    /// saslauthd has a text of its own for it (rimap's `[ALERT] ...`); `None`: the common
    /// `internal mechanism failure`.
    pub fn reply(&self) -> Option<&'static str> {
        match self {
            PassdbError::Imap { alert, .. } => Some(alert),
            PassdbError::Kerberos { reply, .. } => Some(reply),
            _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_has_its_own_name_and_answers_to_it() {
        for (i, m) in MODULES.iter().enumerate() {
            assert!(
                MODULES[..i].iter().all(|o| o.kind != m.kind),
                "{} twice",
                m.kind
            );
            assert_eq!(
                module(&m.kind.name.to_ascii_uppercase()).unwrap().kind,
                m.kind
            );
        }
        assert!(module("kerberos4").is_none());
        assert_eq!(
            offered().collect::<Vec<_>>(),
            [
                "sasldb",
                "shadow",
                "pam",
                "ldap",
                "sql",
                "getpwent",
                "kerberos5",
                "rimap"
            ]
        );
    }
}
