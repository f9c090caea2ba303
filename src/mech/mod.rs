//! SASL mechanisms as sans-I/O state machines: a mechanism takes the client's bytes and says
//! what happens next ([`Step`]); it never touches a socket or a passdb.
//!
//! PLAIN (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195), SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802,
//! RFC 7677).

pub mod cram_md5;
pub mod login;
pub mod plain;
pub mod scram;

use crate::protocol::dovecot::MechInfo;
use crate::secret::Password;

pub use cram_md5::CramMd5;
pub use login::Login;
pub use plain::Plain;
pub use scram::{Scram, ScramHash};

/// What the exchange needs next.
#[derive(Debug)]
pub enum Step {
    /// Send this challenge (raw bytes; the protocol base64-encodes them) and wait.
    Challenge(Vec<u8>),
    /// Check this user's cleartext password with the passdb.
    VerifyPlain {
        /// The authentication identity, as the client gave it.
        user: Vec<u8>,
        /// The password.
        password: Password,
    },
    /// Look up this user's stored cleartext secret and hand it to [`Mechanism::resume`].
    LookupPlaintext {
        /// The authentication identity, as the client gave it.
        user: Vec<u8>,
    },
    /// The client proved it knows the secret; `final_data` is the server's last message
    /// (SCRAM's `v=`), which the client must see.
    Success {
        /// Data for the client, if the mechanism has some.
        final_data: Option<Vec<u8>>,
    },
    /// The client's data is unusable or its proof wrong: fail (after the failure delay, like
    /// a wrong password).
    Fail(&'static str),
}

/// A user's stored secrets, as a passdb hands them to mechanisms that compute with them.
#[derive(Debug, Default)]
pub struct Credentials {
    /// The cleartext password (sasldb `userPassword`).
    pub plaintext: Option<zeroize::Zeroizing<Vec<u8>>>,
    /// A SCRAM secret (sasldb `authPassword`, `SCRAM-SHA-<n>$<iter>:<salt>$<stored>:<server>`).
    pub auth_password: Option<zeroize::Zeroizing<String>>,
}

/// What mechanisms need to know about this server.
#[derive(Debug, Clone)]
pub struct Context {
    /// The host name, in CRAM-MD5 challenges.
    pub host: String,
    /// SCRAM's PBKDF2 iteration count.
    pub scram_iterations: u32,
}

/// A mechanism in progress.
#[derive(Debug)]
pub enum Mechanism {
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
        name: "SCRAM-SHA-1",
        flags: &["mutual-auth"],
    },
    MechInfo {
        name: "SCRAM-SHA-256",
        flags: &["mutual-auth"],
    },
];

/// What to advertise: only what the passdb can serve (PAM and shadow cannot hand out a
/// secret, so they get PLAIN and LOGIN only).
pub fn offered(passdb_has_plaintext: bool) -> &'static [MechInfo] {
    if passdb_has_plaintext {
        ALL
    } else {
        &ALL[..2]
    }
}

impl Mechanism {
    /// Starts the mechanism named `name` (case-insensitive, as Dovecot) if it is among
    /// `offered`.
    pub fn start(name: &str, offered: &[MechInfo], context: &Context) -> Option<Mechanism> {
        let name = name.to_ascii_uppercase();
        offered.iter().find(|m| m.name == name)?;
        Some(match name.as_str() {
            plain::NAME => Mechanism::Plain(Plain),
            login::NAME => Mechanism::Login(Login::default()),
            cram_md5::NAME => Mechanism::CramMd5(CramMd5::new(&context.host)),
            "SCRAM-SHA-1" => {
                Mechanism::Scram(Scram::new(ScramHash::Sha1, context.scram_iterations))
            }
            "SCRAM-SHA-256" => {
                Mechanism::Scram(Scram::new(ScramHash::Sha256, context.scram_iterations))
            }
            _ => return None,
        })
    }

    /// Feeds the client's data: `None` for "no initial response" (only ever the first step).
    pub fn step(&mut self, input: Option<&[u8]>) -> Step {
        match self {
            Mechanism::Plain(m) => m.step(input),
            Mechanism::Login(m) => m.step(input),
            Mechanism::CramMd5(m) => m.step(input),
            Mechanism::Scram(m) => m.step(input),
        }
    }

    /// Hands the user's stored secrets (empty: no such user) to a mechanism that asked.
    pub fn resume(&mut self, credentials: &Credentials) -> Step {
        let plaintext = credentials.plaintext.as_deref().map(|p| p.as_slice());
        match self {
            Mechanism::CramMd5(m) => m.resume(plaintext),
            Mechanism::Scram(m) => m.resume(
                plaintext,
                credentials.auth_password.as_deref().map(|s| s.as_str()),
            ),
            Mechanism::Plain(_) | Mechanism::Login(_) => Step::Fail("no secret was asked for"),
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
