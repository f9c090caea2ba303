//! The unit of work: who asks to be checked, for which service and realm, from where.

use std::fmt;

/// A request to check a password, as a protocol decoded it. The fields are raw bytes: the
/// saslauthd protocol carries no encoding, and sasldb keys are bytes too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthRequest {
    /// The user name exactly as sent (the saslauthd protocol never splits it at `@`).
    pub login: Vec<u8>,
    /// The service (`smtp`, `imap`); Cyrus's PAM service name.
    pub service: Vec<u8>,
    /// The realm; empty means the default realm.
    pub realm: Vec<u8>,
    /// The client's address (`192.0.2.7;54321`) when the client sent one.
    pub client_addr: Option<Vec<u8>>,
}

/// Bytes shown in a log line: printable ASCII as is, anything else escaped, so a user name
/// cannot forge log lines or hide behind control characters.
pub struct Printable<'a>(pub &'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_control() || c == '\\' {
                    write!(f, "{}", c.escape_default())?;
                } else {
                    write!(f, "{c}")?;
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// The host name as `gethostname(2)` returns it: Cyrus's default realm in `auth_sasldb` and
/// `saslpasswd2` (not the FQDN).
pub fn host_name() -> std::io::Result<Vec<u8>> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success when
    // the name fits, and we stop at the first NUL or the end of the buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(buf[..len].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_and_invalid_bytes() {
        assert_eq!(Printable(b"alice").to_string(), "alice");
        assert_eq!(Printable(b"a\nb\0c\xff").to_string(), "a\\nb\\u{0}c\\xff");
        assert_eq!(
            Printable("dave.o-brien Ü".as_bytes()).to_string(),
            "dave.o-brien Ü"
        );
    }

    #[test]
    fn host_name_is_not_empty() {
        assert!(!host_name().unwrap().is_empty());
    }
}
