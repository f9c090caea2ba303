//! SASL mechanisms as sans-I/O state machines: a mechanism takes the client's bytes and says
//! what happens next ([`Step`]); it never touches a socket or a passdb.
//!
//! Done here: PLAIN (RFC 4616) and LOGIN. CRAM-MD5 and SCRAM come with the passdbs'
//! credential lookups.

pub mod login;
pub mod plain;

use crate::protocol::dovecot::MechInfo;
use crate::secret::Password;

pub use login::Login;
pub use plain::Plain;

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
    /// The client's data is unusable: fail (after the failure delay, like a wrong password).
    Fail(&'static str),
}

/// A mechanism in progress.
#[derive(Debug)]
pub enum Mechanism {
    /// PLAIN.
    Plain(Plain),
    /// LOGIN.
    Login(Login),
}

/// The mechanisms this build offers, as advertised (Dovecot's flag words).
pub const OFFERED: &[MechInfo] = &[
    MechInfo {
        name: plain::NAME,
        flags: &["plaintext"],
    },
    MechInfo {
        name: login::NAME,
        flags: &["plaintext"],
    },
];

impl Mechanism {
    /// Starts the mechanism named `name` (case-insensitive, as Dovecot); `None` if unknown.
    pub fn start(name: &str) -> Option<Mechanism> {
        Some(match name.to_ascii_uppercase().as_str() {
            plain::NAME => Mechanism::Plain(Plain),
            login::NAME => Mechanism::Login(Login::default()),
            _ => return None,
        })
    }

    /// Feeds the client's data: `None` for "no initial response" (only ever the first step).
    pub fn step(&mut self, input: Option<&[u8]>) -> Step {
        match self {
            Mechanism::Plain(m) => m.step(input),
            Mechanism::Login(m) => m.step(input),
        }
    }
}
