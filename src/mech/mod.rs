//! SASL mechanisms as sans-I/O state machines: a mechanism takes the client's bytes and says
//! what happens next (`Step`); it never touches a socket or a passdb, never waits, and does
//! no costly work itself: a key derivation is handed to the driver as a `Derivation`, which
//! runs it on the blocking pool and hands the keys back.
//!
//! PLAIN (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195), DIGEST-MD5 (RFC 2831, offered only when
//! asked for), SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677), each with the names and
//! flags Dovecot advertises them under (`MechInfo`).

pub mod cram_md5;
pub mod digest_md5;
pub(crate) mod login;
pub(crate) mod oauth;
pub(crate) mod plain;
pub mod scram;

use std::fmt;

use crate::secret::{Credentials, Password};

use cram_md5::CramMd5;
use digest_md5::DigestMd5;
use login::Login;
use oauth::{Flavour, OAuth};
use plain::Plain;
pub(crate) use scram::{Derivation, Keys, Scram};
pub use scram::{ScramClient, ScramHash};

/// What the exchange needs next.
#[derive(Debug)]
pub(crate) enum Step {
    /// Send this challenge (raw bytes; the protocol encodes them) and wait.
    Challenge(Vec<u8>),
    /// Check this user's cleartext password with the passdb.
    VerifyPlain {
        /// The authentication identity, as the client gave it.
        user: Vec<u8>,
        /// The password.
        password: Password,
    },
    /// Look up this user's stored secrets and hand them to [`Mechanism::resume_credentials`].
    LookupCredentials {
        /// The authentication identity, as the client gave it.
        user: Vec<u8>,
        /// The realm, where the mechanism carries one apart from the user (DIGEST-MD5);
        /// `None`: the user name's own `@realm`, or the default realm.
        realm: Option<Vec<u8>>,
    },
    /// Check this OAuth 2.0 access token, and hand the verdict to [`Mechanism::resume_token`].
    VerifyToken {
        /// The user the client names (OAUTHBEARER's `a=` may be left out: `None`).
        user: Option<Vec<u8>>,
        /// The bearer token.
        token: Password,
    },
    /// Derive keys (costly) and hand them to [`Mechanism::resume_keys`].
    Derive(Derivation),
    /// The client proved it knows the secret; `final_data` is the server's last message
    /// (SCRAM's `v=`), which the client must see.
    Success {
        /// Data for the client, if the mechanism has some.
        final_data: Option<Vec<u8>>,
    },
    /// The client's data is unusable or its proof wrong: fail (after the failure delay, like
    /// a wrong password).
    Fail(MechFailure),
}

/// Why a mechanism failed an exchange. Logged, never sent: on the wire every failure looks the
/// same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MechFailure {
    /// A message that does not parse.
    Malformed(Message),
    /// No data where the client had to send some.
    NoResponse,
    /// Data in a state that expects none.
    Unexpected,
    /// A NUL byte where none may be.
    NulByte,
    /// Text that is not UTF-8.
    NotUtf8,
    /// An empty user name or password.
    EmptyCredentials,
    /// An authorization identity other than the user (we have no master users).
    ForeignAuthzid,
    /// A user name that cannot be one (empty, or a bad SCRAM escape).
    BadUserName,
    /// A SCRAM nonce with characters it may not hold.
    BadNonce,
    /// SCRAM channel binding (`p=`): the SMTP server, not we, holds the TLS session.
    ChannelBinding,
    /// SCRAM channel-binding data other than the gs2 header sent first.
    ChannelBindingMismatch,
    /// A SCRAM or DIGEST-MD5 nonce other than the one agreed.
    NonceMismatch,
    /// A DIGEST-MD5 `qop` other than `auth` (no security layers here).
    Unsupported,
    /// A DIGEST-MD5 `digest-uri` for another service than the exchange's.
    WrongService,
    /// A wrong CRAM-MD5 digest or SCRAM proof: the verdict.
    WrongProof,
    /// An OAuth 2.0 token the token check refused: the verdict, and why.
    InvalidToken(crate::verdict::TokenRefusal),
}

/// The messages a mechanism parses, for [`MechFailure::Malformed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Message {
    /// PLAIN's `authzid NUL authcid NUL password`.
    PlainData,
    /// CRAM-MD5's `user SP digest`.
    CramResponse,
    /// DIGEST-MD5's digest-response.
    DigestResponse,
    /// SCRAM's client-first-message.
    ScramClientFirst,
    /// SCRAM's client-final-message.
    ScramClientFinal,
    /// OAUTHBEARER's client message.
    OAuthBearer,
    /// XOAUTH2's client message.
    XOAuth2,
}

impl fmt::Display for MechFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MechFailure::Malformed(message) => write!(f, "malformed {message}"),
            MechFailure::NoResponse => f.write_str("no response"),
            MechFailure::Unexpected => f.write_str("unexpected data"),
            MechFailure::NulByte => f.write_str("NUL byte in the client's data"),
            MechFailure::NotUtf8 => f.write_str("the client's data is not UTF-8"),
            MechFailure::EmptyCredentials => f.write_str("empty user name or password"),
            MechFailure::ForeignAuthzid => {
                f.write_str("authorization identity differs from the user")
            }
            MechFailure::BadUserName => f.write_str("bad user name"),
            MechFailure::BadNonce => f.write_str("bad nonce"),
            MechFailure::ChannelBinding => f.write_str("channel binding is not supported"),
            MechFailure::ChannelBindingMismatch => {
                f.write_str("channel binding data does not match")
            }
            MechFailure::NonceMismatch => f.write_str("nonce does not match"),
            MechFailure::Unsupported => f.write_str("quality of protection other than auth"),
            MechFailure::WrongService => f.write_str("digest-uri names another service"),
            MechFailure::WrongProof => f.write_str("wrong response"),
            MechFailure::InvalidToken(why) => write!(f, "token refused: {why}"),
        }
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Message::PlainData => "PLAIN data (not authzid NUL authcid NUL password)",
            Message::CramResponse => "CRAM-MD5 response (not user SP 32 hex digits)",
            Message::DigestResponse => "DIGEST-MD5 response",
            Message::ScramClientFirst => "SCRAM client-first",
            Message::ScramClientFinal => "SCRAM client-final",
            Message::OAuthBearer => "OAUTHBEARER message (RFC 7628)",
            Message::XOAuth2 => "XOAUTH2 message (user=... ^A auth=Bearer ... ^A^A)",
        })
    }
}

/// A mechanism as advertised: its name and Dovecot's flag words, in Dovecot's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MechInfo {
    /// The SASL name (`PLAIN`).
    pub(crate) name: &'static str,
    /// Flag words (`plaintext`, `dictionary`, `active`, `mutual-auth`).
    pub(crate) flags: &'static [&'static str],
}

/// What mechanisms need to know about this server, worked out once at start-up.
#[derive(Clone)]
pub(crate) struct Context {
    /// The host name, in CRAM-MD5 challenges.
    pub(crate) host: String,
    /// The default realm, offered in DIGEST-MD5 challenges.
    pub(crate) realm: String,
    /// SCRAM's PBKDF2 iteration count.
    pub(crate) scram_iterations: u32,
    /// A random per-process secret: SCRAM's per-user salts and its unknown-user decoy are
    /// derived from it.
    pub(crate) secret: [u8; 32],
    /// What OAUTHBEARER's and XOAUTH2's error challenges say.
    pub(crate) oauth: oauth::ErrorInfo,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("host", &self.host)
            .field("realm", &self.realm)
            .field("scram_iterations", &self.scram_iterations)
            .finish_non_exhaustive()
    }
}

/// A mechanism in progress.
#[derive(Debug)]
pub(crate) enum Mechanism {
    /// PLAIN.
    Plain(Plain),
    /// LOGIN.
    Login(Login),
    /// CRAM-MD5.
    CramMd5(CramMd5),
    /// DIGEST-MD5.
    DigestMd5(DigestMd5),
    /// SCRAM-SHA-1 or SCRAM-SHA-256.
    Scram(Scram),
    /// OAUTHBEARER or XOAUTH2.
    OAuth(OAuth),
}

/// Every mechanism, in advertising order (Dovecot's): the first two need only "is this the
/// password?", the rest need the stored secret.
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
        name: digest_md5::NAME,
        flags: &["dictionary", "active", "mutual-auth"],
    },
    MechInfo {
        name: ScramHash::Sha1.name(),
        flags: &["mutual-auth"],
    },
    MechInfo {
        name: ScramHash::Sha256.name(),
        flags: &["mutual-auth"],
    },
    // Dovecot flags both plaintext: the token is as good as a password to whoever sees it.
    MechInfo {
        name: oauth::OAUTHBEARER,
        flags: &["plaintext"],
    },
    MechInfo {
        name: oauth::XOAUTH2,
        flags: &["plaintext"],
    },
];

/// How many of [`ALL`] need only "is this the password?" (PAM and shadow serve only those).
const PLAINTEXT: usize = 2;

/// Where in [`ALL`] the mechanisms that carry an OAuth 2.0 token begin: served only with an
/// `[oauth2]` table, by any passdb.
const TOKENS: usize = 6;

/// Whether `m` carries an OAuth 2.0 token (one of [`ALL`]'s last, from [`TOKENS`]).
fn takes_token(m: &MechInfo) -> bool {
    ALL[TOKENS..].contains(m)
}

/// Whether `m` can be served over a passdb that has (or lacks) stored secrets, with (or
/// without) a token check.
fn servable(m: &MechInfo, passdb_has_credentials: bool, tokens: bool) -> bool {
    if takes_token(m) {
        tokens
    } else {
        ALL[..PLAINTEXT].contains(m) || passdb_has_credentials
    }
}

/// The mechanisms offered when none are named: all but the historic DIGEST-MD5.
const DEFAULT_OFF: &[&str] = &[digest_md5::NAME];

/// Every mechanism name, in advertising order.
pub(crate) fn all_names_list() -> impl Iterator<Item = &'static str> {
    ALL.iter().map(|m| m.name)
}

/// Every mechanism name, for error messages.
fn all_names() -> String {
    all_names_list().collect::<Vec<_>>().join(" ")
}

/// A list of mechanism names that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MechListError {
    /// A name that is no mechanism of ours.
    #[error("unknown mechanism {0:?} (known: {known})", known = all_names())]
    Unknown(String),
    /// A mechanism that carries an OAuth 2.0 token, with no token check configured.
    #[error(
        "mechanism {0} needs an [oauth2] table in the configuration file (what checks its tokens)"
    )]
    NoTokenCheck(&'static str),
    /// A mechanism that needs the stored password, over a passdb that only checks one.
    #[error("mechanism {mech} needs the stored password, which the {passdb} passdb cannot hand out (it can serve PLAIN and LOGIN)")]
    NotServable {
        /// The mechanism.
        mech: &'static str,
        /// The passdb.
        passdb: String,
    },
    /// An empty list.
    #[error("no mechanism named")]
    Empty,
}

/// Parses a list of mechanism names (comma- or space-separated, case-insensitive) into their
/// canonical names, in the order given, without repeats.
pub fn parse_names(text: &str) -> Result<Vec<&'static str>, MechListError> {
    let mut names = Vec::new();
    for word in text.split(|c: char| c == ',' || c.is_whitespace()) {
        if word.is_empty() {
            continue;
        }
        let info = ALL
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(word))
            .ok_or_else(|| MechListError::Unknown(word.to_owned()))?;
        if !names.contains(&info.name) {
            names.push(info.name);
        }
    }
    if names.is_empty() {
        return Err(MechListError::Empty);
    }
    Ok(names)
}

/// What to advertise, in advertising order: the mechanisms `names` lists (canonical names,
/// from [`parse_names`]), or by default all the passdb can serve but DIGEST-MD5. A named
/// mechanism the passdb cannot serve (PAM and shadow cannot hand out a secret) is an error.
/// With `tokens` (an `[oauth2]` table), OAUTHBEARER and XOAUTH2 too.
pub(crate) fn offered(
    names: Option<&[&str]>,
    passdb_has_credentials: bool,
    tokens: bool,
    passdb: &str,
) -> Result<Vec<MechInfo>, MechListError> {
    let can = |m: &&MechInfo| servable(m, passdb_has_credentials, tokens);
    let Some(names) = names else {
        return Ok(ALL
            .iter()
            .filter(can)
            .filter(|m| !DEFAULT_OFF.contains(&m.name))
            .copied()
            .collect());
    };
    for name in names {
        let info = ALL
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| MechListError::Unknown((*name).to_owned()))?;
        if !can(&info) {
            return Err(if takes_token(info) {
                MechListError::NoTokenCheck(info.name)
            } else {
                MechListError::NotServable {
                    mech: info.name,
                    passdb: passdb.to_owned(),
                }
            });
        }
    }
    Ok(ALL
        .iter()
        .filter(can)
        .filter(|m| names.iter().any(|n| m.name.eq_ignore_ascii_case(n)))
        .copied()
        .collect())
}

impl Mechanism {
    /// Starts the mechanism named `name` (case-insensitive, as Dovecot) if it is among
    /// `offered`, for an exchange of `service`.
    pub(crate) fn start(
        name: &str,
        offered: &[MechInfo],
        context: &Context,
        service: &[u8],
    ) -> Option<Mechanism> {
        let info = offered.iter().find(|m| m.name.eq_ignore_ascii_case(name))?;
        Some(match info.name {
            plain::NAME => Mechanism::Plain(Plain),
            login::NAME => Mechanism::Login(Login::default()),
            cram_md5::NAME => Mechanism::CramMd5(CramMd5::new(&context.host)),
            digest_md5::NAME => Mechanism::DigestMd5(DigestMd5::new(&context.realm, service)),
            name if name == ScramHash::Sha1.name() => {
                Mechanism::Scram(Scram::new(ScramHash::Sha1, context))
            }
            name if name == ScramHash::Sha256.name() => {
                Mechanism::Scram(Scram::new(ScramHash::Sha256, context))
            }
            oauth::OAUTHBEARER => {
                Mechanism::OAuth(OAuth::new(Flavour::Bearer, context.oauth.clone()))
            }
            oauth::XOAUTH2 => Mechanism::OAuth(OAuth::new(Flavour::Google, context.oauth.clone())),
            _ => return None,
        })
    }

    /// The wire name, for log lines.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Mechanism::Plain(_) => plain::NAME,
            Mechanism::Login(_) => login::NAME,
            Mechanism::CramMd5(_) => cram_md5::NAME,
            Mechanism::DigestMd5(_) => digest_md5::NAME,
            Mechanism::Scram(m) => m.hash().name(),
            Mechanism::OAuth(m) => m.name(),
        }
    }

    /// Whether it carries an OAuth 2.0 token (the token check answers, not the passdb).
    pub(crate) fn carries_token(&self) -> bool {
        matches!(self, Mechanism::OAuth(_))
    }

    /// Feeds the client's data: `None` for "no initial response" (only ever the first step).
    pub(crate) fn step(&mut self, input: Option<&[u8]>) -> Step {
        match self {
            Mechanism::Plain(m) => m.step(input),
            Mechanism::Login(m) => m.step(input),
            Mechanism::CramMd5(m) => m.step(input),
            Mechanism::DigestMd5(m) => m.step(input),
            Mechanism::Scram(m) => m.step(input),
            Mechanism::OAuth(m) => m.step(input),
        }
    }

    /// Hands the token check's verdict to a mechanism that asked for a
    /// [`Step::VerifyToken`].
    pub(crate) fn resume_token(
        &mut self,
        verdict: Result<(), crate::verdict::TokenRefusal>,
    ) -> Step {
        match self {
            Mechanism::OAuth(m) => m.resume(verdict),
            _ => Step::Fail(MechFailure::Unexpected),
        }
    }

    /// Hands the user's stored secrets (empty: no such user) to a mechanism that asked.
    pub(crate) fn resume_credentials(&mut self, credentials: &Credentials) -> Step {
        let plaintext = credentials.plaintext.as_deref().map(|p| p.as_slice());
        match self {
            Mechanism::CramMd5(m) => match plaintext {
                Some(password) => m.resume(Some(password)),
                None => m.resume_contexts(
                    credentials
                        .cram_md5
                        .as_deref()
                        .map(crate::hmac_md5::HmacMd5Contexts::from_dovecot)
                        .as_ref(),
                ),
            },
            Mechanism::DigestMd5(m) => m.resume(
                plaintext.map(digest_md5::Secret::Password).or(credentials
                    .digest_md5
                    .as_deref()
                    .map(digest_md5::Secret::Urp)),
            ),
            Mechanism::Scram(m) => m.resume_credentials(
                plaintext,
                credentials.auth_password.as_deref().map(|s| s.as_str()),
            ),
            Mechanism::Plain(_) | Mechanism::Login(_) | Mechanism::OAuth(_) => {
                Step::Fail(MechFailure::Unexpected)
            }
        }
    }

    /// Hands derived keys to a mechanism that asked for a [`Step::Derive`].
    pub(crate) fn resume_keys(&mut self, keys: Keys) -> Step {
        match self {
            Mechanism::Scram(m) => m.resume_keys(keys),
            _ => Step::Fail(MechFailure::Unexpected),
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

#[cfg(test)]
pub(crate) fn test_context() -> Context {
    Context {
        host: "test.host".into(),
        realm: "test.realm".into(),
        scram_iterations: scram::ITERATIONS,
        secret: [7; 32],
        oauth: oauth::ErrorInfo::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[MechInfo]) -> Vec<&'static str> {
        list.iter().map(|m| m.name).collect()
    }

    #[test]
    fn what_is_offered() {
        let all = "PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256";
        assert_eq!(
            names(&offered(None, true, false, "sasldb").unwrap()).join(" "),
            all
        );
        assert_eq!(
            names(&offered(None, false, false, "pam").unwrap()),
            ["PLAIN", "LOGIN"]
        );
        // Named: in advertising order, whatever order they were named in.
        let named = parse_names("digest-md5, Plain  cram-md5,plain").unwrap();
        assert_eq!(named, ["DIGEST-MD5", "PLAIN", "CRAM-MD5"]);
        assert_eq!(
            names(&offered(Some(&named), true, false, "sasldb").unwrap()),
            ["PLAIN", "CRAM-MD5", "DIGEST-MD5"]
        );
        let digest = &offered(Some(&named), true, false, "sasldb").unwrap()[2];
        assert_eq!(digest.flags, ["dictionary", "active", "mutual-auth"]);
        assert_eq!(
            offered(Some(&named), false, false, "shadow")
                .unwrap_err()
                .to_string(),
            "mechanism DIGEST-MD5 needs the stored password, which the shadow passdb cannot \
             hand out (it can serve PLAIN and LOGIN)"
        );
        assert_eq!(
            parse_names("plain gssapi").unwrap_err(),
            MechListError::Unknown("gssapi".into())
        );
        assert_eq!(parse_names(" , ").unwrap_err(), MechListError::Empty);
        // OAUTHBEARER and XOAUTH2: only with a token check, over any passdb.
        assert_eq!(
            names(&offered(None, false, true, "pam").unwrap()),
            ["PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2"]
        );
        let named = parse_names("xoauth2 plain").unwrap();
        assert_eq!(
            names(&offered(Some(&named), false, true, "pam").unwrap()),
            ["PLAIN", "XOAUTH2"]
        );
        assert_eq!(
            offered(Some(&named), true, false, "sasldb")
                .unwrap_err()
                .to_string(),
            "mechanism XOAUTH2 needs an [oauth2] table in the configuration file (what checks \
             its tokens)"
        );
    }
}
