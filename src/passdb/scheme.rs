//! Stored password values in Dovecot's `{SCHEME}` notation (RFC 2307's `userPassword` is the
//! same notation), as the passdbs that read such values from elsewhere compare them: the SQL
//! passdb (Dovecot's schemes and `default_pass_scheme`), and LDAP's `custom` method (Cyrus's
//! `ldap_password_attr`, where a value without a prefix is the cleartext).
//!
//! Schemes, as Dovecot 2.3 verifies them (`doveadm pw -t` gives the same verdicts; the test
//! suite makes its hashes with Debian's `doveadm pw`):
//!
//! - `PLAIN`, `CLEAR`, `CLEARTEXT`: the cleartext.
//! - `CRYPT`, `DES-CRYPT`, `MD5-CRYPT`, `SHA256-CRYPT`, `SHA512-CRYPT`, `BLF-CRYPT`: crypt(3)
//!   through the system's libxcrypt (which knows every one of them, and yescrypt).
//! - `MD5`: MD5-CRYPT when the value starts with `$1$`, else a raw MD5 digest (RFC 2307's
//!   `{MD5}`); `PLAIN-MD5` (hex), `LDAP-MD5` (base64), `PLAIN-MD4` (hex).
//! - `SHA`, `SHA1`, `SHA256`, `SHA512` (base64 of the digest); `SMD5`, `SSHA`, `SSHA256`,
//!   `SSHA512` (base64 of the digest of password and salt, then the salt).
//! - `DIGEST-MD5` (hex of MD5 of `user:realm:password`, the login split at its `@`).
//! - `CRAM-MD5` (`HMAC-MD5`): hex of HMAC-MD5's two MD5 states for the password (outer, then
//!   inner), which CRAM-MD5 also checks with.
//! - `SCRAM-SHA-1`, `SCRAM-SHA-256` (`iterations,salt,StoredKey,ServerKey`, RFC 5802).
//! - `PBKDF2` (Dovecot's `$1$salt$rounds$hex`, PBKDF2-HMAC-SHA1).
//! - `ARGON2I`, `ARGON2ID` (the PHC string, RustCrypto's `argon2`).
//!
//! A `.b64`, `.base64` or `.hex` suffix on the scheme's name says how the digest is written;
//! without one, a digest is read as its scheme's usual encoding, or as hex when its length is
//! exactly that of the digest in hex (as Dovecot guesses). Not verified yet: `OTP`,
//! `PLAIN-TRUNC`; such a value matches nothing, and the passdb says so in the log.
//! Every comparison is in constant time.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::Hmac;
use sha1::{Digest, Sha1};
use sha2::{Sha256, Sha512};

use zeroize::Zeroizing;

use crate::hmac_md5::HmacMd5Contexts;
use crate::scram_keys::ScramHash;
use crate::secret::Credentials;

/// Why a stored value cannot be checked: it matches nothing, and the passdb logs why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemeError {
    /// A scheme this module does not know (or does not verify yet).
    #[error("unknown password scheme {0}")]
    Unknown(String),
    /// The value does not have its scheme's form (bad base64, a digest of the wrong length).
    #[error("a {0} value that is not in that scheme's form")]
    Malformed(String),
}

/// How the digest of a value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Base64,
    Hex,
}

/// A stored value, split into its scheme (upper case, without the encoding suffix), the
/// encoding the suffix names, and the rest.
struct Stored<'a> {
    scheme: String,
    encoding: Option<Encoding>,
    value: &'a str,
}

/// Splits `stored` at its `{SCHEME}` prefix; a value without one is in `default`.
fn split<'a>(stored: &'a str, default: &str) -> Stored<'a> {
    let (name, value) = match stored.strip_prefix('{').and_then(|t| t.split_once('}')) {
        Some((name, value)) => (name, value),
        None => (default, stored),
    };
    let name = name.to_ascii_uppercase();
    let (scheme, encoding) = match name.rsplit_once('.') {
        Some((scheme, "B64" | "BASE64")) => (scheme.to_string(), Some(Encoding::Base64)),
        Some((scheme, "HEX")) => (scheme.to_string(), Some(Encoding::Hex)),
        _ => (name, None),
    };
    Stored {
        scheme,
        encoding,
        value,
    }
}

/// The canonical name of a scheme's aliases.
fn canonical(scheme: &str) -> &str {
    match scheme {
        "CLEAR" | "CLEARTEXT" => "PLAIN",
        "SHA1" => "SHA",
        "DES-CRYPT" => "CRYPT",
        "HMAC-MD5" => "CRAM-MD5",
        other => other,
    }
}

/// Whether `password` matches `stored`, a value in Dovecot's notation whose scheme, when it
/// has no `{SCHEME}` prefix, is `default` (Dovecot's `default_pass_scheme`). `user` is the
/// login, for the schemes that hash it in (`DIGEST-MD5`).
pub fn verify(
    stored: &[u8],
    password: &[u8],
    user: &[u8],
    default: &str,
) -> Result<bool, SchemeError> {
    let Ok(text) = std::str::from_utf8(stored) else {
        return Err(SchemeError::Malformed(default.to_string()));
    };
    let stored = split(text, default);
    let scheme = canonical(&stored.scheme);
    let malformed = || SchemeError::Malformed(stored.scheme.clone());
    let equal = crate::secret::secrets_equal;
    let digest = |len: usize, default_encoding: Encoding| {
        decode(stored.value, stored.encoding, default_encoding, Some(len)).ok_or_else(malformed)
    };
    let salted = |len: usize| {
        let raw =
            decode(stored.value, stored.encoding, Encoding::Base64, None).ok_or_else(malformed)?;
        if raw.len() < len {
            return Err(malformed());
        }
        Ok(raw.split_at(len).0.to_vec()).map(|want| (want, raw[len..].to_vec()))
    };
    let with_salt = |salt: &[u8]| [password, salt].concat();
    Ok(match scheme {
        "PLAIN" => match stored.encoding {
            None => equal(stored.value.as_bytes(), password),
            Some(encoding) => {
                let raw =
                    decode(stored.value, Some(encoding), encoding, None).ok_or_else(malformed)?;
                equal(&raw, password)
            }
        },
        "CRYPT" | "MD5-CRYPT" | "SHA256-CRYPT" | "SHA512-CRYPT" | "BLF-CRYPT" => {
            crate::crypt::verify(password, stored.value).ok_or_else(malformed)?
        }
        "MD5" if stored.value.starts_with("$1$") => {
            crate::crypt::verify(password, stored.value).ok_or_else(malformed)?
        }
        "MD5" => equal(&md5::Md5::digest(password), &digest(16, Encoding::Base64)?),
        "PLAIN-MD5" => equal(&md5::Md5::digest(password), &digest(16, Encoding::Hex)?),
        "LDAP-MD5" => equal(&md5::Md5::digest(password), &digest(16, Encoding::Base64)?),
        "PLAIN-MD4" => equal(&md4::Md4::digest(password), &digest(16, Encoding::Hex)?),
        "SHA" => equal(&Sha1::digest(password), &digest(20, Encoding::Base64)?),
        "SHA256" => equal(&Sha256::digest(password), &digest(32, Encoding::Base64)?),
        "SHA512" => equal(&Sha512::digest(password), &digest(64, Encoding::Base64)?),
        "SMD5" => {
            let (want, salt) = salted(16)?;
            equal(&md5::Md5::digest(with_salt(&salt)), &want)
        }
        "SSHA" => {
            let (want, salt) = salted(20)?;
            equal(&Sha1::digest(with_salt(&salt)), &want)
        }
        "SSHA256" => {
            let (want, salt) = salted(32)?;
            equal(&Sha256::digest(with_salt(&salt)), &want)
        }
        "SSHA512" => {
            let (want, salt) = salted(64)?;
            equal(&Sha512::digest(with_salt(&salt)), &want)
        }
        "DIGEST-MD5" => {
            let want = digest(16, Encoding::Hex)?;
            let (name, realm) = match user.iter().rposition(|&b| b == b'@') {
                Some(at) => (&user[..at], &user[at + 1..]),
                None => (user, &b""[..]),
            };
            let a1 = [name, b":", realm, b":", password].concat();
            equal(&md5::Md5::digest(a1), &want)
        }
        "CRAM-MD5" => {
            let want = digest(32, Encoding::Hex)?;
            equal(&HmacMd5Contexts::from_key(password).to_dovecot(), &want)
        }
        "SCRAM-SHA-1" => scram(ScramHash::Sha1, stored.value, password).ok_or_else(malformed)?,
        "SCRAM-SHA-256" => {
            scram(ScramHash::Sha256, stored.value, password).ok_or_else(malformed)?
        }
        "PBKDF2" => pbkdf2_sha1(stored.value, password).ok_or_else(malformed)?,
        "ARGON2I" | "ARGON2ID" => {
            use argon2::password_hash::{PasswordHash, PasswordVerifier};
            let hash = PasswordHash::new(stored.value).map_err(|_| malformed())?;
            argon2::Argon2::default()
                .verify_password(password, &hash)
                .is_ok()
        }
        other => return Err(SchemeError::Unknown(other.to_string())),
    })
}

/// Whether checking `stored` costs enough to belong on the blocking pool (crypt, PBKDF2,
/// SCRAM's iterations, Argon2) rather than on the reactor (one digest).
pub fn is_costly(stored: &[u8], default: &str) -> bool {
    let text = String::from_utf8_lossy(stored);
    let stored = split(&text, default);
    !matches!(
        canonical(&stored.scheme),
        "PLAIN"
            | "PLAIN-MD5"
            | "LDAP-MD5"
            | "PLAIN-MD4"
            | "SHA"
            | "SHA256"
            | "SHA512"
            | "SMD5"
            | "SSHA"
            | "SSHA256"
            | "SSHA512"
            | "DIGEST-MD5"
            | "CRAM-MD5"
    ) && (canonical(&stored.scheme) != "MD5" || stored.value.starts_with("$1$"))
}

/// What the mechanisms that compute with a stored secret can take from a user's values, as
/// Dovecot's mechanisms follow the stored scheme: the cleartext of a plain value (every one of
/// them), a `{SCRAM-SHA-*}` value's keys (SCRAM with that hash), a `{DIGEST-MD5}` value
/// (DIGEST-MD5, when the client names the user and realm it was made for). The first value of
/// each kind counts; a value of another scheme gives nothing (the mechanism then fails for the
/// user, as for an unknown one).
pub fn credentials<'a>(values: impl IntoIterator<Item = &'a [u8]>, default: &str) -> Credentials {
    let mut found = Credentials::default();
    for value in values {
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        let stored = split(text, default);
        match canonical(&stored.scheme) {
            "PLAIN" if found.plaintext.is_none() => {
                found.plaintext = cleartext(value, default).map(Zeroizing::new);
            }
            "SCRAM-SHA-1" | "SCRAM-SHA-256" if found.auth_password.is_none() => {
                let hash = if stored.scheme == "SCRAM-SHA-1" {
                    ScramHash::Sha1
                } else {
                    ScramHash::Sha256
                };
                found.auth_password = scram_secret(hash, stored.value).map(Zeroizing::new);
            }
            "CRAM-MD5" if found.cram_md5.is_none() => {
                found.cram_md5 = decode(stored.value, stored.encoding, Encoding::Hex, Some(32))
                    .and_then(|d| <[u8; 32]>::try_from(d).ok())
                    .map(Zeroizing::new);
            }
            "DIGEST-MD5" if found.digest_md5.is_none() => {
                found.digest_md5 = decode(stored.value, stored.encoding, Encoding::Hex, Some(16))
                    .and_then(|d| <[u8; 16]>::try_from(d).ok())
                    .map(Zeroizing::new);
            }
            _ => {}
        }
    }
    found
}

/// Dovecot's `iterations,salt,StoredKey,ServerKey` as Cyrus's `authPassword`
/// (`SCRAM-SHA-256$iterations:salt$StoredKey:ServerKey`), which the SCRAM mechanism takes;
/// `None` when it is not in that form.
fn scram_secret(hash: ScramHash, value: &str) -> Option<String> {
    let fields: Vec<&str> = value.trim().split(',').collect();
    let [iterations, salt, stored, server] = fields[..] else {
        return None;
    };
    iterations.parse::<u32>().ok().filter(|&n| n > 0)?;
    for key in [stored, server] {
        B64.decode(key).ok().filter(|k| k.len() == hash.len())?;
    }
    B64.decode(salt).ok()?;
    Some(format!(
        "{}${iterations}:{salt}${stored}:{server}",
        hash.name()
    ))
}

/// The cleartext of a value stored in a plain scheme (what CRAM-MD5, DIGEST-MD5 and SCRAM
/// need from a passdb); `None` for a hash.
pub fn cleartext(stored: &[u8], default: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(stored).ok()?;
    let stored = split(text, default);
    (canonical(&stored.scheme) == "PLAIN").then(|| match stored.encoding {
        None => Some(stored.value.as_bytes().to_vec()),
        Some(encoding) => decode(stored.value, Some(encoding), encoding, None),
    })?
}

/// `value` decoded as `encoding` (or, unsaid, as `usual`, or as hex when it is exactly
/// `len` bytes in hex); of length `len` when given.
fn decode(
    value: &str,
    encoding: Option<Encoding>,
    usual: Encoding,
    len: Option<usize>,
) -> Option<Vec<u8>> {
    let value = value.trim();
    let encoding = encoding.unwrap_or(match len {
        Some(len) if value.len() == len * 2 && value.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Encoding::Hex
        }
        _ => usual,
    });
    let raw = match encoding {
        Encoding::Hex => hex::decode(value).ok()?,
        Encoding::Base64 => B64.decode(value).ok()?,
    };
    match len {
        Some(len) if raw.len() != len => None,
        _ => Some(raw),
    }
}

/// `iterations,salt,StoredKey,ServerKey`: the password's StoredKey (RFC 5802) against the
/// stored one.
fn scram(hash: ScramHash, value: &str, password: &[u8]) -> Option<bool> {
    let mut fields = value.trim().split(',');
    let iterations: u32 = fields.next()?.parse().ok()?;
    let salt = B64.decode(fields.next()?).ok()?;
    let stored_key = B64.decode(fields.next()?).ok()?;
    let _server_key = fields.next()?;
    if iterations == 0 || fields.next().is_some() {
        return None;
    }
    let computed = hash.stored_key(password, &salt, iterations);
    Some(crate::secret::secrets_equal(&computed, &stored_key))
}

/// Dovecot's PBKDF2: `$1$salt$rounds$hex`, PBKDF2-HMAC-SHA1 of the salt as written.
fn pbkdf2_sha1(value: &str, password: &[u8]) -> Option<bool> {
    let mut fields = value.trim().strip_prefix("$1$")?.split('$');
    let salt = fields.next()?;
    let rounds: u32 = fields.next()?.parse().ok()?;
    let want = hex::decode(fields.next()?).ok()?;
    if fields.next().is_some() || rounds == 0 || want.is_empty() || want.len() > 64 {
        return None;
    }
    let mut got = vec![0u8; want.len()];
    pbkdf2::pbkdf2::<Hmac<Sha1>>(password, salt.as_bytes(), rounds, &mut got).ok()?;
    Some(crate::secret::secrets_equal(&got, &want))
}

/// The schemes [`generate`] makes, in `doveadm pw -l`'s spirit: the strong ones first.
pub const GENERATED: &[&str] = &[
    "ARGON2ID",
    "ARGON2I",
    "SHA512-CRYPT",
    "SHA256-CRYPT",
    "BLF-CRYPT",
    "PBKDF2",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
    "SSHA512",
    "SSHA256",
    "SSHA",
    "SMD5",
    "SHA512",
    "SHA256",
    "SHA",
    "SHA1",
    "MD5-CRYPT",
    "MD5",
    "CRYPT",
    "PLAIN-MD5",
    "LDAP-MD5",
    "PLAIN-MD4",
    "DIGEST-MD5",
    "CRAM-MD5",
    "PLAIN",
    "CLEAR",
    "CLEARTEXT",
];

/// A new value of `scheme` for `password`, with a fresh salt, at Dovecot 2.3's costs
/// (Argon2 m=64 MiB t=3 p=1, PBKDF2 5,000 rounds, SCRAM 4,096 iterations), prefixed with
/// `{SCHEME}` as `doveadm pw` prints it. `user` is hashed in by `DIGEST-MD5` (`user@realm`).
pub fn generate(scheme: &str, password: &[u8], user: &[u8]) -> Result<String, SchemeError> {
    let upper = scheme.to_ascii_uppercase();
    let (name, encoding) = match upper.rsplit_once('.') {
        Some((name, "B64" | "BASE64")) => (name, Some(Encoding::Base64)),
        Some((name, "HEX")) => (name, Some(Encoding::Hex)),
        _ => (upper.as_str(), None),
    };
    let unknown = || SchemeError::Unknown(upper.clone());
    let salt = || crate::secret::random_bytes::<16>();
    let encode = |raw: &[u8], usual: Encoding| match encoding.unwrap_or(usual) {
        Encoding::Base64 => B64.encode(raw),
        Encoding::Hex => hex::encode(raw),
    };
    let salted = |digest: Vec<u8>, salt: &[u8]| [digest, salt.to_vec()].concat();
    let crypt = |prefix: &str| crate::crypt::hash(password, prefix).ok_or_else(unknown);
    let value = match canonical(name) {
        "PLAIN" => match encoding {
            None => String::from_utf8(password.to_vec()).map_err(|_| unknown())?,
            Some(_) => encode(password, Encoding::Base64),
        },
        "SHA512-CRYPT" => crypt("$6$")?,
        "SHA256-CRYPT" => crypt("$5$")?,
        // Dovecot's MD5 (its default_pass_scheme) is MD5-CRYPT.
        "MD5-CRYPT" | "MD5" => crypt("$1$")?,
        // Dovecot 2.3's CRYPT is bcrypt, its strongest crypt(3) scheme.
        "BLF-CRYPT" | "CRYPT" => crypt("$2y$")?,
        "SHA512" => encode(&Sha512::digest(password), Encoding::Base64),
        "SHA256" => encode(&Sha256::digest(password), Encoding::Base64),
        "SHA" => encode(&Sha1::digest(password), Encoding::Base64),
        "PLAIN-MD5" => encode(&md5::Md5::digest(password), Encoding::Hex),
        "LDAP-MD5" => encode(&md5::Md5::digest(password), Encoding::Base64),
        "PLAIN-MD4" => encode(&md4::Md4::digest(password), Encoding::Hex),
        "SSHA512" => {
            let salt = salt();
            encode(
                &salted(Sha512::digest([password, &salt].concat()).to_vec(), &salt),
                Encoding::Base64,
            )
        }
        "SSHA256" => {
            let salt = salt();
            encode(
                &salted(Sha256::digest([password, &salt].concat()).to_vec(), &salt),
                Encoding::Base64,
            )
        }
        "SSHA" => {
            let salt = salt();
            encode(
                &salted(Sha1::digest([password, &salt].concat()).to_vec(), &salt),
                Encoding::Base64,
            )
        }
        "SMD5" => {
            let salt = salt();
            encode(
                &salted(md5::Md5::digest([password, &salt].concat()).to_vec(), &salt),
                Encoding::Base64,
            )
        }
        "DIGEST-MD5" => {
            let (name, realm) = match user.iter().rposition(|&b| b == b'@') {
                Some(at) => (&user[..at], &user[at + 1..]),
                None => (user, &b""[..]),
            };
            encode(
                &md5::Md5::digest([name, b":", realm, b":", password].concat()),
                Encoding::Hex,
            )
        }
        "CRAM-MD5" => encode(
            &HmacMd5Contexts::from_key(password).to_dovecot(),
            Encoding::Hex,
        ),
        "SCRAM-SHA-1" => {
            crate::scram_keys::format_dovecot(ScramHash::Sha1, password, &salt(), 4096)
        }
        "SCRAM-SHA-256" => {
            crate::scram_keys::format_dovecot(ScramHash::Sha256, password, &salt(), 4096)
        }
        "PBKDF2" => {
            // Dovecot's salt is printable; sixteen characters of base64.
            let salt = B64.encode(salt())[..16].replace(['/', '+'], ".");
            let mut out = [0u8; 20];
            pbkdf2::pbkdf2::<Hmac<Sha1>>(password, salt.as_bytes(), 5000, &mut out)
                .map_err(|_| unknown())?;
            format!("$1${salt}$5000${}", hex::encode(out))
        }
        "ARGON2ID" | "ARGON2I" => {
            use argon2::password_hash::{PasswordHasher, SaltString};
            let algorithm = match canonical(name) {
                "ARGON2I" => argon2::Algorithm::Argon2i,
                _ => argon2::Algorithm::Argon2id,
            };
            let params = argon2::Params::new(65536, 3, 1, None).map_err(|_| unknown())?;
            let argon = argon2::Argon2::new(algorithm, argon2::Version::V0x13, params);
            let salt = SaltString::encode_b64(&salt()).map_err(|_| unknown())?;
            argon
                .hash_password(password, &salt)
                .map_err(|_| unknown())?
                .to_string()
        }
        _ => return Err(unknown()),
    };
    Ok(format!("{{{upper}}}{value}"))
}

/// Whether `password` matches `stored` as Cyrus's LDAP `custom` method reads
/// `ldap_password_attr`: Dovecot's schemes, and a value without a prefix is the cleartext.
/// A value in no known scheme matches nothing.
pub(crate) fn check(stored: &[u8], password: &[u8]) -> bool {
    verify(stored, password, b"", "PLAIN").unwrap_or(false)
}

/// A value of `stored`'s shape that no password matches: the same scheme, and for the crypt
/// family the same method, cost and salt (so checking it costs what checking `stored` does),
/// with the secret part replaced.
pub(crate) fn decoy(stored: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(stored);
    let Some((scheme, rest)) = text.strip_prefix('{').and_then(|t| t.split_once('}')) else {
        return vec![0; stored.len()];
    };
    let secret = if rest.starts_with('$') {
        match rest.rfind('$') {
            Some(at) => format!("{}{}", &rest[..=at], ".".repeat(rest.len() - at - 1)),
            None => ".".repeat(rest.len()),
        }
    } else {
        let len = B64.decode(rest.trim()).map_or(0, |d| d.len());
        B64.encode(vec![0u8; len])
    };
    format!("{{{scheme}}}{secret}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanisms_get_what_the_stored_scheme_gives() {
        let scram = format!(
            "{{SCRAM-SHA-256}}{}",
            crate::scram_keys::format_dovecot(ScramHash::Sha256, b"secret", b"salt", 4096)
        );
        let digest = format!(
            "{{DIGEST-MD5}}{}",
            hex::encode(md5::Md5::digest(b"alice:example.org:secret"))
        );
        let values: [&[u8]; 5] = [
            b"{SSHA}bm90IGEgcmVhbCBoYXNoIGF0IGFsbA==",
            scram.as_bytes(),
            digest.as_bytes(),
            b"{PLAIN}secret",
            b"{PLAIN}second",
        ];
        let found = credentials(values, "MD5");
        assert_eq!(
            found.plaintext.as_deref().map(|p| p.as_slice()),
            Some(&b"secret"[..])
        );
        let secret = found.auth_password.as_deref().unwrap();
        assert!(
            secret.starts_with("SCRAM-SHA-256$4096:c2FsdA==$"),
            "{secret}"
        );
        assert_eq!(
            found.digest_md5.as_deref(),
            Some(&md5::Md5::digest(b"alice:example.org:secret").into())
        );
        // A hash alone gives the mechanisms nothing; an unprefixed value is the default's.
        let none = credentials([&b"{SHA512-CRYPT}$6$x$y"[..], b"{SCRAM-SHA-1}1,x"], "PLAIN");
        assert!(none.plaintext.is_none() && none.auth_password.is_none());
        let plain = credentials([&b"bare"[..]], "CLEAR");
        assert_eq!(
            plain.plaintext.as_deref().map(|p| p.as_slice()),
            Some(&b"bare"[..])
        );
    }

    /// Values `doveadm pw -s SCHEME -p secret -u alice@example.org` printed (Dovecot 2.3.19).
    const DOVEADM: &[&str] = &[
        "{PLAIN-MD5}5ebe2294ecd0e0f08eab7690d2a6ee69",
        "{LDAP-MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==",
        "{MD5}$1$fDiAqkCb$iJHy7V8d.E5bsc83hr1OJ.",
        "{SMD5}6u6rCOOdoifAPIRY0K87n21vjEI=",
        "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        "{SHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=",
        "{SSHA512}Kv5y9XBX2sqSe7MFgvoqGgFuWk0omLtTx8LrdAemgIEfzqx55VvwfDJU1aZa5kAbvcH+pK4RPTJzyr3J7d3IIx09BeM=",
        "{DIGEST-MD5}543e1aec5d3614f03141652d6ada51b2",
        "{CRAM-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56",
        "{HMAC-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56",
        "{PBKDF2}$1$c2oU3pxHYj1Xn2Tu$5000$9ffb0e6ecbc896bc973f30112384dae8c3bace54",
        "{SCRAM-SHA-256}4096,KkgFxyQH8HIc0UutvIxv1Q==,sdkp7+Hp5n3WcuqdcTD0Eqgd016bTlAl8nmoRqZVy4Y=,iozwFI94En9sdKWsXymaTLIOzvM9v+l3/JGCaD8Ju6k=",
        "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$VLb0biSupv7a6CN0vhGCiw$uD1b7yBxNmLRMc9NTYTytVrBrm4wMwc+2wmQ3jWMQlk",
        "{PLAIN-MD4}67d3dafef63ff00603aeef3769cfbf0d",
        "{BLF-CRYPT}$2y$05$x3HaxzUzWraox1YnLvf0iulp1kJPz0OeHczsxn2bA02H7Gw9zSfw.",
        "{SHA512-CRYPT}$6$f9dv3iZAae8i6jgp$GSP6c2ET4ABxQ5txYw6BaUpAabKIzud4mxAQtGvpR0OkEgb8zMwUmYJy/Z/iy7L0kxMTAIzbK8/iiMOG4Hcsp0",
        "{SHA.HEX}e5e9fa1ba31ecd1ae84f75caaa474f3a663f05f4",
        "{SSHA.B64}P4SPc1X2S2/DDialA9nMnukDL+wg8Gz/",
        "{PLAIN.B64}c2VjcmV0",
    ];

    #[test]
    fn doveadm_values_match_their_password_only() {
        for stored in DOVEADM {
            let user = b"alice@example.org";
            assert_eq!(
                verify(stored.as_bytes(), b"secret", user, "MD5"),
                Ok(true),
                "{stored}"
            );
            assert_eq!(
                verify(stored.as_bytes(), b"Secret", user, "MD5"),
                Ok(false),
                "{stored}"
            );
        }
    }

    #[test]
    fn default_scheme_suffixes_and_guesses() {
        // No prefix: the default scheme, as Dovecot's default_pass_scheme.
        assert_eq!(
            verify(
                b"5ebe2294ecd0e0f08eab7690d2a6ee69",
                b"secret",
                b"",
                "PLAIN-MD5"
            ),
            Ok(true)
        );
        assert_eq!(verify(b"secret", b"secret", b"", "PLAIN"), Ok(true));
        assert_eq!(verify(b"secret", b"secret", b"", "CLEARTEXT"), Ok(true));
        // A SHA digest in hex without the suffix: guessed from its length.
        assert_eq!(
            verify(
                b"{SHA}e5e9fa1ba31ecd1ae84f75caaa474f3a663f05f4",
                b"secret",
                b"",
                "PLAIN"
            ),
            Ok(true)
        );
        assert_eq!(
            verify(
                b"{sha256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=",
                b"secret",
                b"",
                "PLAIN"
            ),
            Ok(true)
        );
        assert_eq!(
            verify(b"{NOPE}x", b"x", b"", "PLAIN"),
            Err(SchemeError::Unknown("NOPE".into()))
        );
        assert_eq!(
            verify(b"{SHA}not base64!", b"x", b"", "PLAIN"),
            Err(SchemeError::Malformed("SHA".into()))
        );
        assert_eq!(
            verify(b"{SHA}c2VjcmV0", b"secret", b"", "PLAIN"),
            Err(SchemeError::Malformed("SHA".into())),
            "a digest of the wrong length"
        );
        assert_eq!(
            cleartext(b"{PLAIN.B64}c2VjcmV0", "MD5").as_deref(),
            Some(&b"secret"[..])
        );
        assert_eq!(
            cleartext(b"secret", "CLEAR").as_deref(),
            Some(&b"secret"[..])
        );
        assert_eq!(
            cleartext(b"{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "PLAIN"),
            None
        );
        assert!(is_costly(b"{SHA512-CRYPT}$6$x$y", "PLAIN"));
        assert!(is_costly(b"{MD5}$1$x$y", "PLAIN"));
        assert!(!is_costly(b"{MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==", "PLAIN"));
        assert!(!is_costly(b"abc", "SSHA512"));
        assert!(is_costly(b"abc", "ARGON2ID"));
    }

    #[test]
    fn what_generate_makes_verifies() {
        for scheme in GENERATED
            .iter()
            .chain(&["SHA.HEX", "SSHA512.HEX", "PLAIN.B64"])
        {
            let value = generate(scheme, b"Secret-1", b"alice@example.org").unwrap();
            let user = b"alice@example.org";
            assert_eq!(
                verify(value.as_bytes(), b"Secret-1", user, "PLAIN"),
                Ok(true),
                "{value}"
            );
            assert_eq!(
                verify(value.as_bytes(), b"secret-1", user, "PLAIN"),
                Ok(false),
                "{value}"
            );
        }
        assert_eq!(
            generate("NOPE", b"x", b""),
            Err(SchemeError::Unknown("NOPE".into()))
        );
    }

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
        let ssha = format!("{{SSHA}}{}", B64.encode(digest));
        assert!(check(ssha.as_bytes(), b"password"));
        let shape = decoy(ssha.as_bytes());
        assert!(shape.starts_with(b"{SSHA}") && shape.len() == ssha.len());
        assert!(!check(&shape, b"password"));
        assert_eq!(decoy(b"cleartext"), vec![0u8; 9]);
    }

    #[test]
    fn cyrus_custom_values() {
        let b64 = |b: &[u8]| B64.encode(b);
        let mut ssha = Sha1::digest(b"secretSALT").to_vec();
        ssha.extend_from_slice(b"SALT");
        let ssha = format!("{{SSHA}}{}", b64(&ssha));
        assert!(check(ssha.as_bytes(), b"secret"));
        assert!(!check(ssha.as_bytes(), b"secreT"));
        let md5 = format!("{{md5}}{}", b64(&md5::Md5::digest(b"secret")));
        assert!(check(md5.as_bytes(), b"secret"));
        let crypt = format!("{{CRYPT}}{}", crate::crypt::hash(b"secret", "$6$").unwrap());
        assert!(check(crypt.as_bytes(), b"secret"));
        assert!(!check(crypt.as_bytes(), b"other"));
        assert!(check(b"cleartext", b"cleartext"));
        assert!(!check(b"{NOPE}x", b"x"));
        assert!(!check(b"{SHA}not base64!", b"x"));
    }
}
