//! Secrets: a password that is wiped from memory when dropped, never printed, and compared in
//! constant time.

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

/// Compares two secrets without leaking where they differ or how long either is.
///
/// Both sides are hashed with SHA-256 first, so the comparison time does not depend on the
/// lengths (a byte-wise `ct_eq` returns early when the lengths differ), then the digests are
/// compared with `subtle`. The cost is the same whether the user exists or not.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    let da: Zeroizing<[u8; 32]> = Zeroizing::new(Sha256::digest(a).into());
    let db: Zeroizing<[u8; 32]> = Zeroizing::new(Sha256::digest(b).into());
    bool::from(da.ct_eq(&*db))
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
    fn compares_exactly() {
        let p = Password::new(b"secret".to_vec());
        assert!(p.matches(b"secret"));
        assert!(!p.matches(b"secret "));
        assert!(!p.matches(b"Secret"));
        assert!(!p.matches(b""));
        assert!(secrets_equal(b"", b""));
    }
}
