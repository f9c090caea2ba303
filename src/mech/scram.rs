//! SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677), one state machine for both hashes,
//! and the client side of the same exchange ([`ScramClient`]) for tests and the load generator.
//!
//! The server's keys come from a Cyrus `authPassword` secret when the sasldb holds one for the
//! hash, otherwise from the stored cleartext password with a salt that is stable per user and
//! server run (HMAC of the user name under the per-process secret of `Context`). Deriving
//! keys from a password is costly (PBKDF2, up to millions of rounds), so the mechanism does not
//! do it: it asks the driver with a `Step::Derive`, and the driver runs the `Derivation` on
//! its blocking pool (or answers from its cache of derived keys).
//!
//! An unknown user is not told apart: it gets a salt like anyone, its keys are derived from a
//! decoy password at the same cost and through the same cache, and it fails at the proof like a
//! wrong password, whatever the client sends (Dovecot fails an unknown user right after
//! client-first, which tells who exists). Channel binding (`p=`) is refused cleanly: the SMTP
//! server, not we, holds the TLS session.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{Context, MechFailure, Message, Step};
pub(crate) use crate::scram_keys::Keys;
pub use crate::scram_keys::ScramHash;

/// The default iteration count (RFC 7677's minimum and Dovecot's default).
pub const ITERATIONS: u32 = 4096;

/// A key derivation a mechanism needs done: PBKDF2 of a password. Pure and costly; the driver
/// decides where it runs, and may answer it from a cache keyed by [`Derivation::cache_id`].
pub(crate) struct Derivation {
    hash: ScramHash,
    user: Vec<u8>,
    password: Zeroizing<Vec<u8>>,
    salt: Vec<u8>,
    iterations: u32,
}

impl fmt::Debug for Derivation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Derivation")
            .field("hash", &self.hash)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Derivation {
    /// The PBKDF2 rounds it costs.
    pub(crate) fn iterations(&self) -> u32 {
        self.iterations
    }

    /// What identifies the result: an HMAC, under `key`, of everything the keys depend on
    /// (the password included, so a changed password is another entry).
    pub(crate) fn cache_id(&self, key: &[u8; 32]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
        for part in [
            self.hash.name().as_bytes(),
            &self.user,
            &self.salt,
            &self.iterations.to_be_bytes(),
            &self.password,
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Runs PBKDF2 and returns the keys.
    pub(crate) fn run(&self) -> Keys {
        let salted = self
            .hash
            .salted_password(&self.password, &self.salt, self.iterations);
        self.hash.keys(&salted)
    }
}

/// The salt of a user: stable for this run, the same kind for users who do not exist.
fn salt_for(secret: &[u8; 32], hash: ScramHash, user: &[u8]) -> Vec<u8> {
    let mut data = hash.name().as_bytes().to_vec();
    data.push(0);
    data.extend_from_slice(user);
    ScramHash::Sha256.hmac(secret, &data)[..16].to_vec()
}

/// The password an unknown user's keys are derived from: nobody can know it.
fn decoy(secret: &[u8; 32]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(ScramHash::Sha256.hmac(secret, b"SCRAM unknown-user decoy"))
}

/// Parses Cyrus's `authPassword` (`SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>`, all
/// base64) when it is for `hash`: (keys, salt, iterations).
fn parse_auth_password(hash: ScramHash, value: &str) -> Option<(Keys, Vec<u8>, u32)> {
    let (scheme, rest) = value.split_once('$')?;
    if scheme != hash.name() {
        return None;
    }
    let (params, keys) = rest.split_once('$')?;
    let (iterations, salt) = params.split_once(':')?;
    let (stored, server) = keys.split_once(':')?;
    let stored = B64.decode(stored).ok().filter(|k| k.len() == hash.len())?;
    let server = B64.decode(server).ok().filter(|k| k.len() == hash.len())?;
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
    let keys = hash.keys(&hash.salted_password(password, salt, iterations));
    format!(
        "{}${iterations}:{}${}:{}",
        hash.name(),
        B64.encode(salt),
        B64.encode(&*keys.stored),
        B64.encode(&*keys.server)
    )
}

/// What client-first fixed: the parts of the AuthMessage to come.
#[derive(Debug)]
pub(crate) struct ClientFirst {
    /// client-first-message-bare.
    bare: String,
    /// The gs2 header (`n,,`).
    gs2_header: String,
    /// The whole nonce (the client's, then ours).
    nonce: String,
}

/// Where the exchange stands.
#[derive(Debug)]
pub(crate) enum Scram {
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
        /// The per-process secret (salts, decoy).
        secret: [u8; 32],
    },
    /// The user's secrets are being looked up.
    AwaitCredentials {
        /// Which hash.
        hash: ScramHash,
        /// The user, unescaped.
        user: Vec<u8>,
        /// The salt to use with a cleartext password.
        salt: Vec<u8>,
        /// The PBKDF2 iteration count.
        iterations: u32,
        /// The per-process secret (the decoy).
        secret: [u8; 32],
        /// client-first.
        first: ClientFirst,
    },
    /// The keys are being derived.
    AwaitKeys {
        /// Which hash.
        hash: ScramHash,
        /// Whether the user exists (`false`: the keys are a decoy's).
        known: bool,
        /// The salt the keys are derived with.
        salt: Vec<u8>,
        /// The PBKDF2 iteration count.
        iterations: u32,
        /// client-first.
        first: ClientFirst,
    },
    /// server-first is out; waiting for client-final.
    AwaitClientFinal {
        /// Which hash.
        hash: ScramHash,
        /// The keys to check the proof with.
        keys: Keys,
        /// Whether the user exists: an unknown user never succeeds.
        known: bool,
        /// client-first-bare "," server-first, the start of the AuthMessage.
        auth_message_start: String,
        /// client-first.
        first: ClientFirst,
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

/// SCRAM's saslname escaping.
fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

impl Scram {
    /// A new exchange with a random server nonce.
    pub(crate) fn new(hash: ScramHash, context: &Context) -> Scram {
        let bytes: [u8; 24] = crate::secret::random_bytes();
        Scram::Start {
            hash,
            server_nonce: B64.encode(bytes),
            salt: None,
            iterations: context.scram_iterations,
            secret: context.secret,
        }
    }

    /// Which hash.
    pub(crate) fn hash(&self) -> ScramHash {
        match self {
            Scram::Start { hash, .. }
            | Scram::AwaitCredentials { hash, .. }
            | Scram::AwaitKeys { hash, .. }
            | Scram::AwaitClientFinal { hash, .. } => *hash,
            // Only the log line asks, and a finished exchange has logged already.
            Scram::Done => ScramHash::Sha256,
        }
    }

    pub(crate) fn step(&mut self, input: Option<&[u8]>) -> Step {
        match std::mem::replace(self, Scram::Done) {
            Scram::Start {
                hash,
                server_nonce,
                salt,
                iterations,
                secret,
            } => {
                let Some(input) = input else {
                    // No initial response: an empty challenge asks for client-first.
                    *self = Scram::Start {
                        hash,
                        server_nonce,
                        salt,
                        iterations,
                        secret,
                    };
                    return Step::Challenge(Vec::new());
                };
                match client_first(&server_nonce, input) {
                    Ok((user, first)) => {
                        let salt = salt.unwrap_or_else(|| salt_for(&secret, hash, user.as_bytes()));
                        *self = Scram::AwaitCredentials {
                            hash,
                            user: user.clone().into_bytes(),
                            salt,
                            iterations,
                            secret,
                            first,
                        };
                        Step::LookupCredentials {
                            user: user.into_bytes(),
                            realm: None,
                        }
                    }
                    Err(failure) => Step::Fail(failure),
                }
            }
            Scram::AwaitClientFinal {
                hash,
                keys,
                known,
                auth_message_start,
                first,
            } => {
                let Some(input) = input else {
                    return Step::Fail(MechFailure::NoResponse);
                };
                client_final(hash, &keys, known, &auth_message_start, &first, input)
            }
            Scram::AwaitCredentials { .. } | Scram::AwaitKeys { .. } | Scram::Done => {
                Step::Fail(MechFailure::Unexpected)
            }
        }
    }

    /// The user's stored password and SCRAM secret (`None`, `None`: no such user). A stored
    /// secret for this hash (Cyrus's `authPassword`) is used as it is, with its own salt and
    /// iteration count, and server-first goes out at once; otherwise the keys are to be derived,
    /// from the password, or for an unknown user from the decoy.
    pub(crate) fn resume_credentials(
        &mut self,
        password: Option<&[u8]>,
        auth_password: Option<&str>,
    ) -> Step {
        let Scram::AwaitCredentials {
            hash,
            user,
            salt,
            iterations,
            secret,
            first,
        } = std::mem::replace(self, Scram::Done)
        else {
            return Step::Fail(MechFailure::Unexpected);
        };
        if let Some((keys, salt, iterations)) =
            auth_password.and_then(|value| parse_auth_password(hash, value))
        {
            return self.server_first(hash, keys, true, &salt, iterations, first);
        }
        let (password, known) = match password {
            Some(password) => (Zeroizing::new(password.to_vec()), true),
            None => (decoy(&secret), false),
        };
        *self = Scram::AwaitKeys {
            hash,
            known,
            salt: salt.clone(),
            iterations,
            first,
        };
        Step::Derive(Derivation {
            hash,
            user,
            password,
            salt,
            iterations,
        })
    }

    /// The keys of a `Step::Derive`: answers with server-first.
    pub(crate) fn resume_keys(&mut self, keys: Keys) -> Step {
        let Scram::AwaitKeys {
            hash,
            known,
            salt,
            iterations,
            first,
        } = std::mem::replace(self, Scram::Done)
        else {
            return Step::Fail(MechFailure::Unexpected);
        };
        self.server_first(hash, keys, known, &salt, iterations, first)
    }

    fn server_first(
        &mut self,
        hash: ScramHash,
        keys: Keys,
        known: bool,
        salt: &[u8],
        iterations: u32,
        first: ClientFirst,
    ) -> Step {
        let server_first = format!("r={},s={},i={iterations}", first.nonce, B64.encode(salt));
        *self = Scram::AwaitClientFinal {
            hash,
            keys,
            known,
            auth_message_start: format!("{},{server_first}", first.bare),
            first,
        };
        Step::Challenge(server_first.into_bytes())
    }
}

/// Parses client-first: the user (unescaped) and what the rest of the exchange needs.
fn client_first(server_nonce: &str, input: &[u8]) -> Result<(String, ClientFirst), MechFailure> {
    let malformed = MechFailure::Malformed(Message::ScramClientFirst);
    let text = std::str::from_utf8(input).map_err(|_| MechFailure::NotUtf8)?;
    let mut parts = text.splitn(3, ',');
    let (Some(cbind), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed);
    };
    match cbind {
        "n" | "y" => {}
        c if c.starts_with("p=") => return Err(MechFailure::ChannelBinding),
        _ => return Err(malformed),
    }
    let mut fields = bare.split(',');
    let (Some(n), Some(r)) = (fields.next(), fields.next()) else {
        return Err(malformed);
    };
    let (Some(name), Some(client_nonce)) = (n.strip_prefix("n="), r.strip_prefix("r=")) else {
        return Err(malformed);
    };
    // Extensions, if any, are `attr=value` (RFC 5802 §7).
    let is_extension =
        |f: &str| f.len() >= 2 && f.as_bytes()[0].is_ascii_alphabetic() && f.as_bytes()[1] == b'=';
    if !fields.all(is_extension) {
        return Err(malformed);
    }
    let user = unescape_name(name)
        .filter(|u| !u.is_empty())
        .ok_or(MechFailure::BadUserName)?;
    if client_nonce.is_empty()
        || !client_nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(MechFailure::BadNonce);
    }
    if !authzid.is_empty() {
        let same = authzid
            .strip_prefix("a=")
            .and_then(unescape_name)
            .is_some_and(|a| a == user);
        if !same {
            return Err(MechFailure::ForeignAuthzid);
        }
    }
    let first = ClientFirst {
        bare: bare.to_owned(),
        gs2_header: format!("{cbind},{authzid},"),
        nonce: format!("{client_nonce}{server_nonce}"),
    };
    Ok((user, first))
}

fn client_final(
    hash: ScramHash,
    keys: &Keys,
    known: bool,
    auth_message_start: &str,
    first: &ClientFirst,
    input: &[u8],
) -> Step {
    let malformed = Step::Fail(MechFailure::Malformed(Message::ScramClientFinal));
    let Ok(text) = std::str::from_utf8(input) else {
        return Step::Fail(MechFailure::NotUtf8);
    };
    let Some(at) = text.rfind(",p=") else {
        return malformed;
    };
    let (without_proof, proof) = (&text[..at], &text[at + 3..]);
    let mut fields = without_proof.split(',');
    let (Some(c), Some(r)) = (fields.next(), fields.next()) else {
        return malformed;
    };
    if c.strip_prefix("c=") != Some(B64.encode(&first.gs2_header).as_str()) {
        return Step::Fail(MechFailure::ChannelBindingMismatch);
    }
    if r.strip_prefix("r=") != Some(first.nonce.as_str()) {
        return Step::Fail(MechFailure::NonceMismatch);
    }
    let Ok(proof) = B64.decode(proof) else {
        return malformed;
    };
    let auth_message = format!("{auth_message_start},{without_proof}");
    let signature = Zeroizing::new(hash.hmac(&keys.stored, auth_message.as_bytes()));
    if proof.len() != signature.len() {
        return malformed;
    }
    let client_key: Zeroizing<Vec<u8>> = Zeroizing::new(
        proof
            .iter()
            .zip(signature.iter())
            .map(|(p, s)| p ^ s)
            .collect(),
    );
    let matches = bool::from(hash.digest(&client_key).ct_eq(&keys.stored));
    // An unknown user's keys are a decoy's: even a proof that matches them is no login.
    if !(matches && known) {
        return Step::Fail(MechFailure::WrongProof);
    }
    let server_signature = hash.hmac(&keys.server, auth_message.as_bytes());
    Step::Success {
        final_data: Some(format!("v={}", B64.encode(server_signature)).into_bytes()),
    }
}

/// The client side of a SCRAM exchange (RFC 5802 §3), for the tests and the load generator:
/// client-first, then from server-first the client-final and the server signature to expect.
/// The SaltedPassword of the last salt is kept, as a real client may keep it, so that a load
/// generator measures the server, not itself.
pub struct ScramClient {
    hash: ScramHash,
    user: String,
    password: Zeroizing<String>,
    bare: String,
    salted: Option<(Vec<u8>, u32, Zeroizing<Vec<u8>>)>,
}

impl ScramClient {
    /// A client for `user` with `password`.
    pub fn new(hash: ScramHash, user: &str, password: &str) -> ScramClient {
        ScramClient {
            hash,
            user: user.to_owned(),
            password: Zeroizing::new(password.to_owned()),
            bare: String::new(),
            salted: None,
        }
    }

    /// client-first-message (`n,,n=user,r=nonce`), starting an exchange with `nonce`.
    pub fn first(&mut self, nonce: &str) -> String {
        self.bare = format!("n={},r={nonce}", escape_name(&self.user));
        format!("n,,{}", self.bare)
    }

    /// From server-first: (client-final-message, the server-final-message `v=...` a genuine
    /// server sends). `None` if server-first lacks its fields.
    pub fn last(&mut self, server_first: &str) -> Option<(String, String)> {
        let field = |k: &str| server_first.split(',').find_map(|f| f.strip_prefix(k));
        let nonce = field("r=")?;
        let salt = B64.decode(field("s=")?).ok()?;
        let iterations: u32 = field("i=")?.parse().ok()?;
        let fresh = !matches!(&self.salted, Some((s, i, _)) if *s == salt && *i == iterations);
        if fresh {
            let salted = self
                .hash
                .salted_password(self.password.as_bytes(), &salt, iterations);
            self.salted = Some((salt, iterations, salted));
        }
        let salted = &self.salted.as_ref()?.2;
        let client_key = Zeroizing::new(self.hash.hmac(salted, b"Client Key"));
        let keys = self.hash.keys(salted);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.bare);
        let signature = self.hash.hmac(&keys.stored, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_signature = self.hash.hmac(&keys.server, auth_message.as_bytes());
        Some((
            format!("{without_proof},p={}", B64.encode(proof)),
            format!("v={}", B64.encode(server_signature)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mech::test_context;

    /// Feeds the keys a mechanism asked for, as the driver would.
    fn derive(m: &mut Scram, step: Step) -> Step {
        match step {
            Step::Derive(d) => m.resume_keys(d.run()),
            other => other,
        }
    }

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
            secret: [1; 32],
        };
        let first = format!("n,,n=user,r={cnonce}");
        assert!(
            matches!(m.step(Some(first.as_bytes())), Step::LookupCredentials { user, .. } if user == b"user")
        );
        let step = m.resume_credentials(Some(b"pencil"), None);
        match derive(&mut m, step) {
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
            let mut m = Scram::new(ScramHash::Sha256, &test_context());
            assert!(
                matches!(m.step(Some(input)), Step::Fail(_)),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let mut m = Scram::new(ScramHash::Sha256, &test_context());
        assert!(
            matches!(m.step(Some(b"n,a=us=2Cer,n=us=2Cer,r=abc")), Step::LookupCredentials { user, .. } if user == b"us,er")
        );
    }

    /// client-first for `user`, then the credentials (`None`: unknown), then the derivation:
    /// the mechanism and server-first.
    fn up_to_server_first(
        context: &Context,
        user: &str,
        password: Option<&[u8]>,
    ) -> (Scram, String, u32) {
        let mut m = Scram::new(ScramHash::Sha256, context);
        m.step(Some(format!("n,,n={user},r=abc").as_bytes()));
        let step = m.resume_credentials(password, None);
        let Step::Derive(d) = step else {
            panic!("{step:?}")
        };
        let work = d.iterations();
        let Step::Challenge(c) = m.resume_keys(d.run()) else {
            panic!()
        };
        (m, String::from_utf8(c).unwrap(), work)
    }

    #[test]
    fn unknown_users_get_a_stable_salt_and_fail_at_the_proof() {
        let context = test_context();
        let (mut m, c1, work_unknown) = up_to_server_first(&context, "ghost", None);
        let (_, c2, _) = up_to_server_first(&context, "ghost", None);
        let (_, _, work_known) = up_to_server_first(&context, "alice", Some(b"pw"));
        assert_eq!(work_unknown, work_known, "the same PBKDF2 work");
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
    fn an_unknown_user_fails_even_with_a_proof_that_matches_its_keys() {
        // Before, an unknown user's keys came from a fixed, public decoy ("\0no such user\0",
        // salt "salt", 1 round): a client that computed its proof from them logged in as any
        // user the sasldb does not have. Now the decoy is secret, and a match is no login.
        let context = test_context();
        let mut m = Scram::new(ScramHash::Sha256, &context);
        m.step(Some(b"n,,n=ghost,r=abc"));
        let Step::Derive(d) = m.resume_credentials(None, None) else {
            panic!()
        };
        let Step::Challenge(c) = m.resume_keys(d.run()) else {
            panic!()
        };
        let server_first = String::from_utf8(c).unwrap();
        // A client that knows the decoy (as a test can) computes a proof that matches.
        let salted_with_decoy = {
            let salt = B64
                .decode(
                    server_first
                        .split(',')
                        .nth(1)
                        .unwrap()
                        .strip_prefix("s=")
                        .unwrap(),
                )
                .unwrap();
            ScramHash::Sha256.salted_password(&decoy(&context.secret), &salt, ITERATIONS)
        };
        let keys = ScramHash::Sha256.keys(&salted_with_decoy);
        let client_key = ScramHash::Sha256.hmac(&salted_with_decoy, b"Client Key");
        let without_proof = format!("c=biws,{}", server_first.split(',').next().unwrap());
        let auth_message = format!("n=ghost,r=abc,{server_first},{without_proof}");
        let signature = ScramHash::Sha256.hmac(&keys.stored, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let last = format!("{without_proof},p={}", B64.encode(proof));
        assert!(matches!(
            m.step(Some(last.as_bytes())),
            Step::Fail(MechFailure::WrongProof)
        ));
    }

    #[test]
    fn wrong_nonce_and_channel_binding_data_fail() {
        let context = test_context();
        let (mut m, _, _) = up_to_server_first(&context, "user", Some(b"pencil"));
        assert!(matches!(
            m.step(Some(b"c=biws,r=abcX,p=AAAA")),
            Step::Fail(_)
        ));
        let (mut m, c, _) = up_to_server_first(&context, "user", Some(b"pencil"));
        let nonce = c.split(',').next().unwrap().to_owned();
        assert!(matches!(
            m.step(Some(format!("c=eSws,{nonce},p=AAAA").as_bytes())),
            Step::Fail(_)
        ));
    }

    #[test]
    fn the_client_side_logs_in_against_the_server_side() {
        let context = test_context();
        let mut m = Scram::new(ScramHash::Sha1, &context);
        let mut client = ScramClient::new(ScramHash::Sha1, "us,er", "pencil");
        let first = client.first("cnonce");
        assert!(matches!(
            m.step(Some(first.as_bytes())),
            Step::LookupCredentials { user, .. } if user == b"us,er"
        ));
        let step = m.resume_credentials(Some(b"pencil"), None);
        let Step::Challenge(c) = derive(&mut m, step) else {
            panic!()
        };
        let (last, expected) = client.last(&String::from_utf8(c).unwrap()).unwrap();
        match m.step(Some(last.as_bytes())) {
            Step::Success { final_data } => assert_eq!(final_data.unwrap(), expected.as_bytes()),
            other => panic!("{other:?}"),
        }
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
        // The RFC 7677 exchange, with no cleartext at all: the secret's salt and keys, and no
        // derivation.
        let mut m = Scram::Start {
            hash: ScramHash::Sha256,
            server_nonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            salt: None,
            iterations: 8192,
            secret: [1; 32],
        };
        m.step(Some(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"));
        let Step::Challenge(first) = m.resume_credentials(None, Some(&stored)) else {
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
