//! SASL mechanisms as sans-I/O state machines: a mechanism takes the client's bytes and says
//! what happens next (`Step`); it never touches a socket or a passdb, never waits, and does
//! no costly work itself: a key derivation is handed to the driver as a `Derivation`, which
//! runs it on the blocking pool and hands the keys back.
//!
//! PLAIN (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195), SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802,
//! RFC 7677), each with the names Dovecot advertises them under (`MechInfo`).

pub mod cram_md5;
pub(crate) mod login;
pub(crate) mod plain;
pub mod scram;

use std::fmt;

use crate::secret::{Credentials, Password};

use cram_md5::CramMd5;
use login::Login;
use plain::Plain;
pub(crate) use scram::{Derivation, Keys, Scram};
pub use scram::{ScramClient, ScramHash};

/// What the exchange needs next.
#[derive(Debug)]
pub(crate) enum Step {
    /// Send this challenge (raw bytes; the protocol encodes them) and wait.
    Challenge(Vec<u8>),
    /// Check this user's cleartext password with the passdb.
    VerifyPlain {
        /// The authentication identity, as the client gave it.
        user: Vec<u8>,
        /// The password.
        password: Password,
    },
    /// Look up this user's stored secrets and hand them to [`Mechanism::resume_credentials`].
    LookupCredentials {
        /// The authentication identity, as the client gave it.
        user: Vec<u8>,
    },
    /// Derive keys (costly) and hand them to [`Mechanism::resume_keys`].
    Derive(Derivation),
    /// The client proved it knows the secret; `final_data` is the server's last message
    /// (SCRAM's `v=`), which the client must see.
    Success {
        /// Data for the client, if the mechanism has some.
        final_data: Option<Vec<u8>>,
    },
    /// The client's data is unusable or its proof wrong: fail (after the failure delay, like
    /// a wrong password).
    Fail(MechFailure),
}

/// Why a mechanism failed an exchange. Logged, never sent: on the wire every failure looks the
/// same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MechFailure {
    /// A message that does not parse.
    Malformed(Message),
    /// No data where the client had to send some.
    NoResponse,
    /// Data in a state that expects none.
    Unexpected,
    /// A NUL byte where none may be.
    NulByte,
    /// Text that is not UTF-8.
    NotUtf8,
    /// An empty user name or password.
    EmptyCredentials,
    /// An authorization identity other than the user (we have no master users).
    ForeignAuthzid,
    /// A user name that cannot be one (empty, or a bad SCRAM escape).
    BadUserName,
    /// A SCRAM nonce with characters it may not hold.
    BadNonce,
    /// SCRAM channel binding (`p=`): the SMTP server, not we, holds the TLS session.
    ChannelBinding,
    /// SCRAM channel-binding data other than the gs2 header sent first.
    ChannelBindingMismatch,
    /// A SCRAM nonce other than the one agreed.
    NonceMismatch,
    /// A wrong CRAM-MD5 digest or SCRAM proof: the verdict.
    WrongProof,
}

/// The messages a mechanism parses, for [`MechFailure::Malformed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Message {
    /// PLAIN's `authzid NUL authcid NUL password`.
    PlainData,
    /// CRAM-MD5's `user SP digest`.
    CramResponse,
    /// SCRAM's client-first-message.
    ScramClientFirst,
    /// SCRAM's client-final-message.
    ScramClientFinal,
}

impl fmt::Display for MechFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MechFailure::Malformed(message) => write!(f, "malformed {message}"),
            MechFailure::NoResponse => f.write_str("no response"),
            MechFailure::Unexpected => f.write_str("unexpected data"),
            MechFailure::NulByte => f.write_str("NUL byte in the client's data"),
            MechFailure::NotUtf8 => f.write_str("the client's data is not UTF-8"),
            MechFailure::EmptyCredentials => f.write_str("empty user name or password"),
            MechFailure::ForeignAuthzid => {
                f.write_str("authorization identity differs from the user")
            }
            MechFailure::BadUserName => f.write_str("bad user name"),
            MechFailure::BadNonce => f.write_str("bad nonce"),
            MechFailure::ChannelBinding => f.write_str("channel binding is not supported"),
            MechFailure::ChannelBindingMismatch => {
                f.write_str("channel binding data does not match")
            }
            MechFailure::NonceMismatch => f.write_str("nonce does not match"),
            MechFailure::WrongProof => f.write_str("wrong response"),
        }
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Message::PlainData => "PLAIN data (not authzid NUL authcid NUL password)",
            Message::CramResponse => "CRAM-MD5 response (not user SP 32 hex digits)",
            Message::ScramClientFirst => "SCRAM client-first",
            Message::ScramClientFinal => "SCRAM client-final",
        })
    }
}

/// A mechanism as advertised: its name and Dovecot's flag words, in Dovecot's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MechInfo {
    /// The SASL name (`PLAIN`).
    pub(crate) name: &'static str,
    /// Flag words (`plaintext`, `dictionary`, `active`, `mutual-auth`).
    pub(crate) flags: &'static [&'static str],
}

/// What mechanisms need to know about this server, worked out once at start-up.
#[derive(Clone)]
pub(crate) struct Context {
    /// The host name, in CRAM-MD5 challenges.
    pub(crate) host: String,
    /// SCRAM's PBKDF2 iteration count.
    pub(crate) scram_iterations: u32,
    /// A random per-process secret: SCRAM's per-user salts and its unknown-user decoy are
    /// derived from it.
    pub(crate) secret: [u8; 32],
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("host", &self.host)
            .field("scram_iterations", &self.scram_iterations)
            .finish_non_exhaustive()
    }
}

/// A mechanism in progress.
#[derive(Debug)]
pub(crate) enum Mechanism {
    /// PLAIN.
    Plain(Plain),
    /// LOGIN.
    Login(Login),
    /// CRAM-MD5.
    CramMd5(CramMd5),
    /// SCRAM-SHA-1 or SCRAM-SHA-256.
    Scram(Scram),
}

/// Every mechanism, in advertising order: the first two need only "is this the password?",
/// the rest need the stored secret.
const ALL: &[MechInfo] = &[
    MechInfo {
        name: plain::NAME,
        flags: &["plaintext"],
    },
    MechInfo {
        name: login::NAME,
        flags: &["plaintext"],
    },
    MechInfo {
        name: cram_md5::NAME,
        flags: &["dictionary", "active"],
    },
    MechInfo {
        name: ScramHash::Sha1.name(),
        flags: &["mutual-auth"],
    },
    MechInfo {
        name: ScramHash::Sha256.name(),
        flags: &["mutual-auth"],
    },
];

/// What to advertise: only what the passdb can serve (PAM and shadow cannot hand out a
/// secret, so they get PLAIN and LOGIN only).
pub(crate) fn offered(passdb_has_credentials: bool) -> &'static [MechInfo] {
    if passdb_has_credentials {
        ALL
    } else {
        &ALL[..2]
    }
}

impl Mechanism {
    /// Starts the mechanism named `name` (case-insensitive, as Dovecot) if it is among
    /// `offered`.
    pub(crate) fn start(name: &str, offered: &[MechInfo], context: &Context) -> Option<Mechanism> {
        let info = offered.iter().find(|m| m.name.eq_ignore_ascii_case(name))?;
        Some(match info.name {
            plain::NAME => Mechanism::Plain(Plain),
            login::NAME => Mechanism::Login(Login::default()),
            cram_md5::NAME => Mechanism::CramMd5(CramMd5::new(&context.host)),
            name if name == ScramHash::Sha1.name() => {
                Mechanism::Scram(Scram::new(ScramHash::Sha1, context))
            }
            name if name == ScramHash::Sha256.name() => {
                Mechanism::Scram(Scram::new(ScramHash::Sha256, context))
            }
            _ => return None,
        })
    }

    /// The wire name, for log lines.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Mechanism::Plain(_) => plain::NAME,
            Mechanism::Login(_) => login::NAME,
            Mechanism::CramMd5(_) => cram_md5::NAME,
            Mechanism::Scram(m) => m.hash().name(),
        }
    }

    /// Feeds the client's data: `None` for "no initial response" (only ever the first step).
    pub(crate) fn step(&mut self, input: Option<&[u8]>) -> Step {
        match self {
            Mechanism::Plain(m) => m.step(input),
            Mechanism::Login(m) => m.step(input),
            Mechanism::CramMd5(m) => m.step(input),
            Mechanism::Scram(m) => m.step(input),
        }
    }

    /// Hands the user's stored secrets (empty: no such user) to a mechanism that asked.
    pub(crate) fn resume_credentials(&mut self, credentials: &Credentials) -> Step {
        let plaintext = credentials.plaintext.as_deref().map(|p| p.as_slice());
        match self {
            Mechanism::CramMd5(m) => m.resume(plaintext),
            Mechanism::Scram(m) => m.resume_credentials(
                plaintext,
                credentials.auth_password.as_deref().map(|s| s.as_str()),
            ),
            Mechanism::Plain(_) | Mechanism::Login(_) => Step::Fail(MechFailure::Unexpected),
        }
    }

    /// Hands derived keys to a mechanism that asked for a [`Step::Derive`].
    pub(crate) fn resume_keys(&mut self, keys: Keys) -> Step {
        match self {
            Mechanism::Scram(m) => m.resume_keys(keys),
            _ => Step::Fail(MechFailure::Unexpected),
        }
    }
}

/// A step in words, for the mechanisms' test tables.
#[cfg(test)]
pub(crate) fn describe(step: Step) -> String {
    match step {
        Step::Challenge(c) => format!("challenge {}", String::from_utf8_lossy(&c)),
        Step::VerifyPlain { user, password } => format!(
            "verify {} {}",
            String::from_utf8_lossy(&user),
            String::from_utf8_lossy(password.expose())
        ),
        Step::Fail(_) => "fail".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
pub(crate) fn test_context() -> Context {
    Context {
        host: "test.host".into(),
        scram_iterations: scram::ITERATIONS,
        secret: [7; 32],
    }
}
