//! Stored password values with a `{SCHEME}` prefix (RFC 2307's `userPassword`, Dovecot's
//! notation), as the passdbs that read such values from elsewhere compare them: LDAP's
//! `custom` method (Cyrus's `ldap_password_attr`) today.

use base64::Engine;
use md5::Md5;
use sha1::{Digest, Sha1};

/// Whether `password` matches `stored`: `{CRYPT}`/`{UNIX}` (libxcrypt), `{MD5}`,
/// `{SMD5}`, `{SHA}`, `{SSHA}` (base64 of the digest, then the salt), or, with no scheme,
/// the cleartext itself. Compared in constant time.
pub(crate) fn check(stored: &[u8], password: &[u8]) -> bool {
    let text = String::from_utf8_lossy(stored);
    let (scheme, rest) = match text.strip_prefix('{').and_then(|t| t.split_once('}')) {
        Some((scheme, rest)) => (scheme.to_ascii_uppercase(), rest),
        None => return crate::secret::secrets_equal(stored, password),
    };
    let digest_check = |len: usize, digest: &dyn Fn(&[u8]) -> Vec<u8>, salted: bool| {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else {
            return false;
        };
        if decoded.len() < len || (!salted && decoded.len() != len) {
            return false;
        }
        let (want, salt) = decoded.split_at(len);
        let mut input = password.to_vec();
        input.extend_from_slice(salt);
        crate::secret::secrets_equal(&digest(&input), want)
    };
    match scheme.as_str() {
        "CRYPT" | "UNIX" => crate::crypt::verify(password, rest).unwrap_or(false),
        "MD5" => digest_check(16, &|b| Md5::digest(b).to_vec(), false),
        "SMD5" => digest_check(16, &|b| Md5::digest(b).to_vec(), true),
        "SHA" => digest_check(20, &|b| Sha1::digest(b).to_vec(), false),
        "SSHA" => digest_check(20, &|b| Sha1::digest(b).to_vec(), true),
        // An unknown scheme matches nothing (Cyrus: a generic failure).
        _ => false,
    }
}

/// A value of `stored`'s shape that no password matches: the same scheme, and for
/// `{CRYPT}` the same method, cost and salt (so checking it costs what checking `stored`
/// does), with the secret part replaced.
pub(crate) fn decoy(stored: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(stored);
    let Some((scheme, rest)) = text.strip_prefix('{').and_then(|t| t.split_once('}')) else {
        return vec![0; stored.len()];
    };
    let secret = match scheme.to_ascii_uppercase().as_str() {
        "CRYPT" | "UNIX" => match rest.rfind('$') {
            Some(at) => format!("{}{}", &rest[..=at], ".".repeat(rest.len() - at - 1)),
            None => ".".repeat(rest.len()),
        },
        _ => {
            let len = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .map_or(0, |d| d.len());
            base64::engine::general_purpose::STANDARD.encode(vec![0u8; len])
        }
    };
    format!("{{{scheme}}}{secret}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoys_keep_the_shape_not_the_secret() {
        let sha512 = crate::crypt::hash(b"secret", "$6$").unwrap();
        let stored = format!("{{CRYPT}}{sha512}");
        let shape = String::from_utf8(decoy(stored.as_bytes())).unwrap();
        let setting = &stored[..stored.rfind('$').unwrap()];
        assert!(shape.starts_with(setting), "{shape}");
        assert_eq!(shape.len(), stored.len());
        assert!(!check(shape.as_bytes(), b"secret"));
        let mut digest = Sha1::digest(b"passwordsalt").to_vec();
        digest.extend_from_slice(b"salt");
        let ssha = format!(
            "{{SSHA}}{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        );
        assert!(check(ssha.as_bytes(), b"password"));
        let shape = decoy(ssha.as_bytes());
        assert!(shape.starts_with(b"{SSHA}") && shape.len() == ssha.len());
        assert!(!check(&shape, b"password"));
        assert_eq!(decoy(b"cleartext"), vec![0u8; 9]);
    }

    #[test]
    fn schemes() {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let mut ssha = Sha1::digest(b"secretSALT").to_vec();
        ssha.extend_from_slice(b"SALT");
        let ssha = format!("{{SSHA}}{}", b64(&ssha));
        assert!(check(ssha.as_bytes(), b"secret"));
        assert!(!check(ssha.as_bytes(), b"secreT"));
        let sha = format!("{{SHA}}{}", b64(&Sha1::digest(b"secret")));
        assert!(check(sha.as_bytes(), b"secret"));
        let md5 = format!("{{md5}}{}", b64(&Md5::digest(b"secret")));
        assert!(check(md5.as_bytes(), b"secret"));
        let mut smd5 = Md5::digest(b"secretxy").to_vec();
        smd5.extend_from_slice(b"xy");
        assert!(check(
            format!("{{SMD5}}{}", b64(&smd5)).as_bytes(),
            b"secret"
        ));
        let crypt = format!("{{CRYPT}}{}", crate::crypt::hash(b"secret", "$6$").unwrap());
        assert!(check(crypt.as_bytes(), b"secret"));
        assert!(!check(crypt.as_bytes(), b"other"));
        assert!(check(b"cleartext", b"cleartext"));
        assert!(!check(b"{NOPE}x", b"x"));
        assert!(!check(b"{SHA}not base64!", b"x"));
    }
}
