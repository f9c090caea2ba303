//! SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677), one state machine for both hashes.
//!
//! The keys are derived from the stored cleartext password (sasldb `userPassword`) with a
//! salt that is stable per user and server run (HMAC of the user name under a per-process
//! key), so an unknown user gets a salt like anyone else and fails at the same step as a
//! wrong password (Dovecot fails an unknown user right after client-first, which tells who
//! exists). Derived keys are cached per (user, salt, password), so PBKDF2 runs once per user
//! and password, not on every login; a changed password is a different cache entry.
//! Channel binding (`p=`) is refused cleanly: the SMTP server, not we, holds the TLS session.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::Step;

/// The default iteration count (RFC 7677's minimum and Dovecot's default).
pub const ITERATIONS: u32 = 4096;

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
    pub fn name(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
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

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// StoredKey and ServerKey for a password (RFC 5802 §3).
    pub fn derive(self, password: &[u8], salt: &[u8], iterations: u32) -> Keys {
        let mut salted = Zeroizing::new(vec![0u8; self.digest(b"").len()]);
        match self {
            ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut salted),
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted)
            }
        }
        let client_key = Zeroizing::new(self.hmac(&salted, b"Client Key"));
        Keys {
            stored: Zeroizing::new(self.digest(&client_key)),
            server: Zeroizing::new(self.hmac(&salted, b"Server Key")),
        }
    }
}

/// The two keys a server needs.
#[derive(Clone)]
pub struct Keys {
    stored: Zeroizing<Vec<u8>>,
    server: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

/// Per-process secret for salts and the key cache.
fn process_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        crate::random::fill(&mut k);
        k
    })
}

/// The salt of a user: stable for this run, the same kind for users who do not exist.
fn salt_for(hash: ScramHash, user: &[u8]) -> Vec<u8> {
    let mut data = hash.name().as_bytes().to_vec();
    data.push(0);
    data.extend_from_slice(user);
    ScramHash::Sha256.hmac(process_key(), &data)[..16].to_vec()
}

const MAX_CACHED_KEYS: usize = 16_384;

/// Keys for (hash, user, salt, iterations, password), from the cache or PBKDF2.
fn cached_keys(
    hash: ScramHash,
    user: &[u8],
    salt: &[u8],
    iterations: u32,
    password: &[u8],
) -> Keys {
    static CACHE: OnceLock<Mutex<HashMap<Vec<u8>, Keys>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut id = Vec::with_capacity(64);
    for part in [
        hash.name().as_bytes(),
        user,
        salt,
        &iterations.to_be_bytes(),
        password,
    ] {
        id.extend_from_slice(&(part.len() as u64).to_be_bytes());
        id.extend_from_slice(part);
    }
    let slot = ScramHash::Sha256.hmac(process_key(), &id);
    drop(Zeroizing::new(id));
    if let Some(keys) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&slot) {
        return keys.clone();
    }
    let keys = hash.derive(password, salt, iterations);
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= MAX_CACHED_KEYS {
        map.clear();
    }
    map.insert(slot, keys.clone());
    keys
}

/// Parses Cyrus's `authPassword` (`SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>`, all
/// base64) when it is for `hash`: (keys, salt, iterations).
pub fn parse_auth_password(hash: ScramHash, value: &str) -> Option<(Keys, Vec<u8>, u32)> {
    let (scheme, rest) = value.split_once('$')?;
    if scheme != hash.name() {
        return None;
    }
    let (params, keys) = rest.split_once('$')?;
    let (iterations, salt) = params.split_once(':')?;
    let (stored, server) = keys.split_once(':')?;
    let len = hash.digest(b"").len();
    let stored = B64.decode(stored).ok().filter(|k| k.len() == len)?;
    let server = B64.decode(server).ok().filter(|k| k.len() == len)?;
    let keys = Keys {
        stored: Zeroizing::new(stored),
        server: Zeroizing::new(server),
    };
    Some((
        keys,
        B64.decode(salt).ok()?,
        iterations.parse().ok().filter(|&n| n > 0)?,
    ))
}

/// Formats a SCRAM secret as Cyrus's `authPassword`.
pub fn format_auth_password(
    hash: ScramHash,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> String {
    let keys = hash.derive(password, salt, iterations);
    format!(
        "{}${iterations}:{}${}:{}",
        hash.name(),
        B64.encode(salt),
        B64.encode(&*keys.stored),
        B64.encode(&*keys.server)
    )
}

/// Where the exchange stands.
#[derive(Debug)]
pub enum Scram {
    /// Waiting for client-first.
    Start {
        /// Which hash.
        hash: ScramHash,
        /// Our half of the nonce.
        server_nonce: String,
        /// A fixed salt (tests with RFC vectors); `None`: the per-user salt.
        salt: Option<Vec<u8>>,
        /// The PBKDF2 iteration count.
        iterations: u32,
    },
    /// The user's secret is being looked up.
    AwaitSecret {
        /// Which hash.
        hash: ScramHash,
        /// The user, unescaped.
        user: Vec<u8>,
        /// The salt to use.
        salt: Vec<u8>,
        /// The PBKDF2 iteration count.
        iterations: u32,
        /// client-first-message-bare.
        client_first_bare: String,
        /// The gs2 header (`n,,`).
        gs2_header: String,
        /// The whole nonce.
        nonce: String,
    },
    /// server-first is out; waiting for client-final.
    AwaitClientFinal {
        /// Which hash.
        hash: ScramHash,
        /// `None` for an unknown user: the proof cannot match.
        keys: Option<Keys>,
        /// client-first-bare "," server-first, the start of the AuthMessage.
        auth_message_start: String,
        /// The gs2 header (`n,,`).
        gs2_header: String,
        /// The whole nonce.
        nonce: String,
    },
    /// Finished.
    Done,
}

/// Undoes SCRAM's saslname escaping (`=2C` → `,`, `=3D` → `=`); other `=` are invalid.
fn unescape_name(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

impl Scram {
    /// A new exchange with a random server nonce and `iterations` PBKDF2 rounds.
    pub fn new(hash: ScramHash, iterations: u32) -> Scram {
        let mut bytes = [0u8; 24];
        crate::random::fill(&mut bytes);
        Scram::Start {
            hash,
            server_nonce: B64.encode(bytes),
            salt: None,
            iterations,
        }
    }

    pub(crate) fn step(&mut self, input: Option<&[u8]>) -> Step {
        match std::mem::replace(self, Scram::Done) {
            Scram::Start {
                hash,
                server_nonce,
                salt,
                iterations,
            } => {
                let Some(input) = input else {
                    // No initial response: an empty challenge asks for client-first.
                    *self = Scram::Start {
                        hash,
                        server_nonce,
                        salt,
                        iterations,
                    };
                    return Step::Challenge(Vec::new());
                };
                self.client_first(hash, &server_nonce, salt, iterations, input)
            }
            Scram::AwaitClientFinal {
                hash,
                keys,
                auth_message_start,
                gs2_header,
                nonce,
            } => {
                let Some(input) = input else {
                    return Step::Fail("no SCRAM client-final");
                };
                client_final(hash, keys, &auth_message_start, &gs2_header, &nonce, input)
            }
            Scram::AwaitSecret { .. } | Scram::Done => Step::Fail("unexpected SCRAM data"),
        }
    }

    fn client_first(
        &mut self,
        hash: ScramHash,
        server_nonce: &str,
        salt: Option<Vec<u8>>,
        iterations: u32,
        input: &[u8],
    ) -> Step {
        let Ok(text) = std::str::from_utf8(input) else {
            return Step::Fail("SCRAM data is not UTF-8");
        };
        let mut parts = text.splitn(3, ',');
        let (Some(cbind), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
        else {
            return Step::Fail("malformed SCRAM client-first");
        };
        match cbind {
            "n" | "y" => {}
            c if c.starts_with("p=") => {
                return Step::Fail("SCRAM channel binding is not supported")
            }
            _ => return Step::Fail("malformed SCRAM gs2 header"),
        }
        let mut fields = bare.split(',');
        let (Some(n), Some(r)) = (fields.next(), fields.next()) else {
            return Step::Fail("malformed SCRAM client-first");
        };
        let (Some(name), Some(client_nonce)) = (n.strip_prefix("n="), r.strip_prefix("r=")) else {
            return Step::Fail("SCRAM client-first without n= and r=");
        };
        // Extensions, if any, are `attr=value` (RFC 5802 §7).
        let is_extension = |f: &str| {
            f.len() >= 2 && f.as_bytes()[0].is_ascii_alphabetic() && f.as_bytes()[1] == b'='
        };
        if !fields.all(is_extension) {
            return Step::Fail("malformed SCRAM extension");
        }
        let Some(user) = unescape_name(name).filter(|u| !u.is_empty()) else {
            return Step::Fail("bad SCRAM user name");
        };
        if client_nonce.is_empty()
            || !client_nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Step::Fail("bad SCRAM nonce");
        }
        if !authzid.is_empty() {
            let same = authzid
                .strip_prefix("a=")
                .and_then(unescape_name)
                .is_some_and(|a| a == user);
            if !same {
                return Step::Fail("SCRAM authorization identity differs from the user");
            }
        }
        let salt = salt.unwrap_or_else(|| salt_for(hash, user.as_bytes()));
        *self = Scram::AwaitSecret {
            hash,
            user: user.clone().into_bytes(),
            salt,
            iterations,
            client_first_bare: bare.to_owned(),
            gs2_header: format!("{cbind},{authzid},"),
            nonce: format!("{client_nonce}{server_nonce}"),
        };
        Step::LookupPlaintext {
            user: user.into_bytes(),
        }
    }

    /// The user's stored password and SCRAM secret (`None`, `None`: no such user); answers
    /// with server-first. A stored secret for this hash (Cyrus's `authPassword`) is used as
    /// it is, with its own salt and iteration count; otherwise keys come from the password.
    pub(crate) fn resume(&mut self, secret: Option<&[u8]>, auth_password: Option<&str>) -> Step {
        let Scram::AwaitSecret {
            hash,
            user,
            salt,
            iterations,
            client_first_bare,
            gs2_header,
            nonce,
        } = std::mem::replace(self, Scram::Done)
        else {
            return Step::Fail("unexpected SCRAM state");
        };
        let stored = auth_password.and_then(|value| parse_auth_password(hash, value));
        let (keys, salt, iterations) = match stored {
            Some((keys, salt, iterations)) => (Some(keys), salt, iterations),
            None => {
                let keys =
                    secret.map(|password| cached_keys(hash, &user, &salt, iterations, password));
                (keys, salt, iterations)
            }
        };
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(&salt));
        let auth_message_start = format!("{client_first_bare},{server_first}");
        *self = Scram::AwaitClientFinal {
            hash,
            keys,
            auth_message_start,
            gs2_header,
            nonce,
        };
        Step::Challenge(server_first.into_bytes())
    }
}

fn client_final(
    hash: ScramHash,
    keys: Option<Keys>,
    auth_message_start: &str,
    gs2_header: &str,
    nonce: &str,
    input: &[u8],
) -> Step {
    let Ok(text) = std::str::from_utf8(input) else {
        return Step::Fail("SCRAM data is not UTF-8");
    };
    let Some(at) = text.rfind(",p=") else {
        return Step::Fail("SCRAM client-final without proof");
    };
    let (without_proof, proof) = (&text[..at], &text[at + 3..]);
    let mut fields = without_proof.split(',');
    let (Some(c), Some(r)) = (fields.next(), fields.next()) else {
        return Step::Fail("malformed SCRAM client-final");
    };
    if c.strip_prefix("c=") != Some(B64.encode(gs2_header).as_str()) {
        return Step::Fail("SCRAM channel binding data does not match");
    }
    if r.strip_prefix("r=") != Some(nonce) {
        return Step::Fail("SCRAM nonce does not match");
    }
    let Ok(proof) = B64.decode(proof) else {
        return Step::Fail("SCRAM proof is not base64");
    };
    let auth_message = format!("{auth_message_start},{without_proof}");
    // An unknown user is checked against keys nobody has, at the same cost.
    let keys = keys.unwrap_or_else(|| hash.derive(b"\0no such user\0", b"salt", 1));
    let signature = Zeroizing::new(hash.hmac(&keys.stored, auth_message.as_bytes()));
    if proof.len() != signature.len() {
        return Step::Fail("SCRAM proof has the wrong length");
    }
    let client_key: Zeroizing<Vec<u8>> = Zeroizing::new(
        proof
            .iter()
            .zip(signature.iter())
            .map(|(p, s)| p ^ s)
            .collect(),
    );
    if !bool::from(hash.digest(&client_key).ct_eq(&keys.stored)) {
        return Step::Fail("SCRAM proof does not match");
    }
    let server_signature = hash.hmac(&keys.server, auth_message.as_bytes());
    Step::Success {
        final_data: Some(format!("v={}", B64.encode(server_signature)).into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(
        hash: ScramHash,
        cnonce: &str,
        snonce: &str,
        salt: &str,
        final_: &str,
        server_final: &str,
    ) {
        let mut m = Scram::Start {
            hash,
            server_nonce: snonce.to_owned(),
            salt: Some(B64.decode(salt).unwrap()),
            iterations: ITERATIONS,
        };
        let first = format!("n,,n=user,r={cnonce}");
        assert!(
            matches!(m.step(Some(first.as_bytes())), Step::LookupPlaintext { user } if user == b"user")
        );
        match m.resume(Some(b"pencil"), None) {
            Step::Challenge(c) => {
                assert_eq!(
                    String::from_utf8(c).unwrap(),
                    format!("r={cnonce}{snonce},s={salt},i=4096")
                )
            }
            other => panic!("{other:?}"),
        }
        match m.step(Some(final_.as_bytes())) {
            Step::Success { final_data } => {
                assert_eq!(final_data.unwrap(), server_final.as_bytes())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rfc_5802_sha1() {
        vector(
            ScramHash::Sha1,
            "fyko+d2lbbFgONRv9qkxdawL",
            "3rfcNHYJY1ZVvWVs7j",
            "QSXCR+Q6sek8bf92",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        );
    }

    #[test]
    fn rfc_7677_sha256() {
        vector(
            ScramHash::Sha256,
            "rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            "W22ZaJ0SNY7soEsUEjb6gQ==",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        );
    }

    #[test]
    fn malformed_client_first() {
        for input in [
            &b"p=tls-unique,,n=user,r=abc"[..],
            b"x,,n=user,r=abc",
            b"n,,r=abc",
            b"n,,n=,r=abc",
            b"n,,n=us=er,r=abc",
            b"n,,n=user,r=",
            b"n,,n=user,r=a,b",
            b"n,a=other,n=user,r=abc",
            b"n,,m=ext,n=user,r=abc",
            b"\xff",
        ] {
            let mut m = Scram::new(ScramHash::Sha256, ITERATIONS);
            assert!(
                matches!(m.step(Some(input)), Step::Fail(_)),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let mut m = Scram::new(ScramHash::Sha256, ITERATIONS);
        assert!(
            matches!(m.step(Some(b"n,a=us=2Cer,n=us=2Cer,r=abc")), Step::LookupPlaintext { user } if user == b"us,er")
        );
    }

    #[test]
    fn unknown_users_get_a_stable_salt_and_fail_at_the_proof() {
        let first = |user: &str| {
            let mut m = Scram::new(ScramHash::Sha256, ITERATIONS);
            m.step(Some(format!("n,,n={user},r=abc").as_bytes()));
            let Step::Challenge(c) = m.resume(None, None) else {
                panic!()
            };
            (m, String::from_utf8(c).unwrap())
        };
        let (mut m, c1) = first("ghost");
        let (_, c2) = first("ghost");
        let salt = |c: &str| c.split(',').nth(1).unwrap().to_owned();
        assert_eq!(salt(&c1), salt(&c2), "the same salt every time");
        let nonce = c1.split(',').next().unwrap();
        let proof = B64.encode([0u8; 32]);
        assert!(matches!(
            m.step(Some(format!("c=biws,{nonce},p={proof}").as_bytes())),
            Step::Fail(_)
        ));
    }

    #[test]
    fn wrong_nonce_and_channel_binding_data_fail() {
        let mut m = Scram::new(ScramHash::Sha1, ITERATIONS);
        m.step(Some(b"n,,n=user,r=abc"));
        m.resume(Some(b"pencil"), None);
        assert!(matches!(
            m.step(Some(b"c=biws,r=abcX,p=AAAA")),
            Step::Fail(_)
        ));
        let mut m = Scram::new(ScramHash::Sha1, ITERATIONS);
        m.step(Some(b"n,,n=user,r=abc"));
        let Step::Challenge(c) = m.resume(Some(b"pencil"), None) else {
            panic!()
        };
        let nonce = String::from_utf8(c)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_owned();
        assert!(matches!(
            m.step(Some(format!("c=eSws,{nonce},p=AAAA").as_bytes())),
            Step::Fail(_)
        ));
    }

    #[test]
    fn cyrus_auth_password_is_used_as_stored() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let stored = format_auth_password(ScramHash::Sha256, b"pencil", &salt, 4096);
        assert!(
            stored.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"),
            "{stored}"
        );
        assert!(
            parse_auth_password(ScramHash::Sha1, &stored).is_none(),
            "another hash"
        );
        assert!(parse_auth_password(ScramHash::Sha256, "SCRAM-SHA-256$x:y$z").is_none());
        // The RFC 7677 exchange, with no cleartext at all: the secret's salt and keys.
        let mut m = Scram::Start {
            hash: ScramHash::Sha256,
            server_nonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            salt: None,
            iterations: 8192,
        };
        m.step(Some(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"));
        let Step::Challenge(first) = m.resume(None, Some(&stored)) else {
            panic!()
        };
        assert!(String::from_utf8(first)
            .unwrap()
            .ends_with(",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"));
        let last = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                    p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        match m.step(Some(last.as_bytes())) {
            Step::Success { final_data } => {
                assert_eq!(
                    final_data.unwrap(),
                    b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
