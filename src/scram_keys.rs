//! SCRAM's keys (RFC 5802 §3): SaltedPassword, StoredKey and ServerKey, for SCRAM-SHA-1 and
//! SCRAM-SHA-256. The words both the SCRAM mechanism (`mech::scram`) and the stored-value
//! schemes (`passdb::scheme`'s `{SCRAM-SHA-*}`) compute with, so neither reaches into the other.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The hash of a SCRAM variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SCRAM-SHA-1.
    Sha1,
    /// SCRAM-SHA-256.
    Sha256,
}

impl ScramHash {
    /// The wire name.
    pub const fn name(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }

    pub(crate) fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => {
                let mut m = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha256 => {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    pub(crate) fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    pub(crate) fn len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    /// SaltedPassword: PBKDF2 of the password (RFC 5802 §3). The costly step.
    pub(crate) fn salted_password(
        self,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Zeroizing<Vec<u8>> {
        let mut salted = Zeroizing::new(vec![0u8; self.len()]);
        match self {
            ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut salted),
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted)
            }
        }
        salted
    }

    /// The StoredKey of `password` with this salt and iteration count (what a stored
    /// `{SCRAM-SHA-*}` value is checked against).
    pub(crate) fn stored_key(
        self,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Zeroizing<Vec<u8>> {
        self.keys(&self.salted_password(password, salt, iterations))
            .stored
    }

    /// StoredKey and ServerKey from a SaltedPassword.
    pub(crate) fn keys(self, salted: &[u8]) -> Keys {
        let client_key = Zeroizing::new(self.hmac(salted, b"Client Key"));
        Keys {
            stored: Zeroizing::new(self.digest(&client_key)),
            server: Zeroizing::new(self.hmac(salted, b"Server Key")),
        }
    }
}

/// The two keys a server needs.
#[derive(Clone)]
pub(crate) struct Keys {
    pub(crate) stored: Zeroizing<Vec<u8>>,
    pub(crate) server: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

/// Formats a SCRAM secret as Dovecot's `{SCRAM-SHA-*}` value: `iterations,salt,StoredKey,
/// ServerKey`, each in base64.
pub fn format_dovecot(hash: ScramHash, password: &[u8], salt: &[u8], iterations: u32) -> String {
    let keys = hash.keys(&hash.salted_password(password, salt, iterations));
    format!(
        "{iterations},{},{},{}",
        B64.encode(salt),
        B64.encode(&*keys.stored),
        B64.encode(&*keys.server)
    )
}
