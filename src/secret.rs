//! Secrets: a password that is wiped from memory when dropped, never printed, and compared in
//! constant time; and a user's stored secrets as a passdb hands them out ([`Credentials`]).

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A password as the client sent it: raw bytes (not necessarily UTF-8).
///
/// `Debug` prints `<redacted>`; the bytes are zeroed on drop.
#[derive(Clone, Default)]
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    /// Wraps bytes (taking ownership, so no copy is left behind).
    pub fn new(bytes: Vec<u8>) -> Self {
        Password(Zeroizing::new(bytes))
    }

    /// The raw bytes. Callers must not log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Whether the password is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Compares with a stored secret in constant time, length included: see [`secrets_equal`].
    pub fn matches(&self, stored: &[u8]) -> bool {
        secrets_equal(self.expose(), stored)
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A user's stored secrets, as a passdb hands them to mechanisms that compute with them
/// (CRAM-MD5, SCRAM). Empty for an unknown user. Wiped on drop; `Debug` shows only which are
/// there.
#[derive(Clone, Default)]
pub struct Credentials {
    /// The cleartext password (sasldb `userPassword`).
    pub plaintext: Option<Zeroizing<Vec<u8>>>,
    /// A SCRAM secret (sasldb `authPassword`, `SCRAM-SHA-<n>$<iter>:<salt>$<stored>:<server>`).
    pub auth_password: Option<Zeroizing<String>>,
    /// A DIGEST-MD5 secret: MD5 of `user:realm:password` (Dovecot's `{DIGEST-MD5}`), good for
    /// the user and realm it was made with.
    pub digest_md5: Option<Zeroizing<[u8; 16]>>,
    /// HMAC-MD5's two states for the password as Dovecot's `{CRAM-MD5}` stores them (32
    /// bytes: the outer state, then the inner), what CRAM-MD5 can check with.
    pub cram_md5: Option<Zeroizing<[u8; 32]>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("plaintext", &self.plaintext.as_ref().map(|_| "<redacted>"))
            .field(
                "auth_password",
                &self.auth_password.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "digest_md5",
                &self.digest_md5.as_ref().map(|_| "<redacted>"),
            )
            .field("cram_md5", &self.cram_md5.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Random bytes from the kernel (`getrandom(2)`), for keys, nonces and jitter. The kernel's
/// generator does not fail once initialised; should it, the process cannot make keys and
/// stops.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the kernel's random generator failed");
    bytes
}

/// A random `u64` (see [`random_bytes`]).
pub(crate) fn random_u64() -> u64 {
    u64::from_le_bytes(random_bytes())
}

/// Compares two secrets without leaking where they differ or how long either is.
///
/// Both sides are hashed with SHA-256 first, so the comparison time does not depend on the
/// lengths (a byte-wise `ct_eq` returns early when the lengths differ), then the digests are
/// compared with `subtle`, as four 64-bit words (subtle's slice comparison fences every
/// element; 32 one-byte fences cost as much as a SHA-256 block). The cost is the same
/// whether the user exists or not.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    let words = |secret: &[u8]| -> Zeroizing<[u64; 4]> {
        let digest: Zeroizing<[u8; 32]> = Zeroizing::new(Sha256::digest(secret).into());
        let mut words = Zeroizing::new([0u64; 4]);
        for (word, bytes) in words.iter_mut().zip(digest.chunks_exact(8)) {
            *word = u64::from_ne_bytes(bytes.try_into().expect("8 bytes"));
        }
        words
    };
    let (wa, wb) = (words(a), words(b));
    bool::from(wa[..].ct_eq(&wb[..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let p = Password::new(b"hunter2".to_vec());
        assert_eq!(format!("{p:?}"), "Password(<redacted>)");
    }

    #[test]
    fn credentials_debug_shows_no_secret() {
        let c = Credentials {
            plaintext: Some(Zeroizing::new(b"hunter2".to_vec())),
            auth_password: None,
            digest_md5: Some(Zeroizing::new([7; 16])),
            cram_md5: Some(Zeroizing::new([9; 32])),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn compares_exactly() {
        let p = Password::new(b"secret".to_vec());
        assert!(p.matches(b"secret"));
        assert!(!p.matches(b"secret "));
        assert!(!p.matches(b"Secret"));
        assert!(!p.matches(b""));
        assert!(secrets_equal(b"", b""));
    }
}
