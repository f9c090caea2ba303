//! OAUTHBEARER (RFC 7628) and XOAUTH2 (Google's): the client sends an OAuth 2.0 access token
//! instead of a password. The mechanism parses the client's message and hands the token to the
//! driver ([`Step::VerifyToken`]); a refused token gets the mechanism's error challenge, which
//! the client answers with a dummy message (`\x01` for OAUTHBEARER, empty for XOAUTH2) before
//! the exchange fails, as both specifications say.
//!
//! Stricter than Dovecot 2.3 where it is lax, kinder where RFC 7628 allows more:
//! - XOAUTH2's message must end with its `\x01\x01` (Dovecot takes it without).
//! - OAUTHBEARER's `a=` may be left out (RFC 7628 allows it; Dovecot refuses the message):
//!   the token alone then names the user.
//! - A `p=` (channel binding) header fails: the SMTP server, not we, holds the TLS session.

use super::{MechFailure, Message, Step};
use crate::secret::Password;
use crate::verdict::TokenRefusal;

/// OAUTHBEARER's wire name.
pub(crate) const OAUTHBEARER: &str = "OAUTHBEARER";
/// XOAUTH2's wire name.
pub(crate) const XOAUTH2: &str = "XOAUTH2";

/// The longest client message either mechanism takes (a token from Microsoft's identity
/// platform runs to some 2,500 bytes; 16 KiB leaves room for any real one).
pub(crate) const MAX_MESSAGE: usize = 16 << 10;

/// What a refused token's error challenge tells the client: the scope it should ask for, and
/// where the provider's discovery document is (OAUTHBEARER only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ErrorInfo {
    /// The scope a token needs (`"mail"` when none is configured, as Dovecot says).
    pub(crate) scope: Option<String>,
    /// The provider's `/.well-known/openid-configuration` URL.
    pub(crate) openid_configuration: Option<String>,
}

/// Which of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavour {
    /// RFC 7628.
    Bearer,
    /// Google's XOAUTH2.
    Google,
}

impl Flavour {
    /// Its client message, for [`MechFailure::Malformed`].
    fn message(self) -> Message {
        match self {
            Flavour::Bearer => Message::OAuthBearer,
            Flavour::Google => Message::XOAuth2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the client's message.
    Start,
    /// The token is with the driver.
    Checking,
    /// The error challenge went out: the client's dummy answer ends the exchange.
    Refused(TokenRefusal),
}

/// An OAUTHBEARER or XOAUTH2 exchange.
#[derive(Debug)]
pub(crate) struct OAuth {
    flavour: Flavour,
    state: State,
    error: ErrorInfo,
}

impl OAuth {
    pub(crate) fn new(flavour: Flavour, error: ErrorInfo) -> OAuth {
        OAuth {
            flavour,
            state: State::Start,
            error,
        }
    }

    /// The wire name.
    pub(crate) fn name(&self) -> &'static str {
        match self.flavour {
            Flavour::Bearer => OAUTHBEARER,
            Flavour::Google => XOAUTH2,
        }
    }

    pub(crate) fn step(&mut self, input: Option<&[u8]>) -> Step {
        match self.state {
            State::Start => {
                // Both are client-first: an empty challenge asks for the message.
                let Some(data) = input else {
                    return Step::Challenge(Vec::new());
                };
                let parsed = if data.len() > MAX_MESSAGE {
                    Err(MechFailure::Malformed(self.flavour.message()))
                } else if data.contains(&0) {
                    Err(MechFailure::NulByte)
                } else {
                    match self.flavour {
                        Flavour::Bearer => parse_bearer(data),
                        Flavour::Google => parse_xoauth2(data),
                    }
                };
                match parsed {
                    Ok((user, token)) => {
                        self.state = State::Checking;
                        Step::VerifyToken {
                            user,
                            token: Password::new(token.to_vec()),
                        }
                    }
                    Err(why) => Step::Fail(why),
                }
            }
            // The client's answer to the error challenge: whatever it says, the exchange
            // has failed (RFC 7628 3.2.3: the server fails it on the dummy `\x01`).
            State::Refused(why) => Step::Fail(MechFailure::InvalidToken(why)),
            State::Checking => Step::Fail(MechFailure::Unexpected),
        }
    }

    /// The driver's verdict on the token: a success ends the exchange; a refusal sends the
    /// error challenge first.
    pub(crate) fn resume(&mut self, verdict: Result<(), TokenRefusal>) -> Step {
        if self.state != State::Checking {
            return Step::Fail(MechFailure::Unexpected);
        }
        match verdict {
            Ok(()) => Step::Success { final_data: None },
            Err(why) => {
                self.state = State::Refused(why);
                Step::Challenge(self.error_challenge())
            }
        }
    }

    /// The JSON the client reads a refusal from: RFC 7628 3.2.2 for OAUTHBEARER, Google's
    /// (and Dovecot's) words for XOAUTH2.
    fn error_challenge(&self) -> Vec<u8> {
        let scope = self.error.scope.as_deref().unwrap_or("mail");
        // In the order the specifications show (serde_json's maps sort their keys).
        let quoted = |text: &str| serde_json::Value::from(text).to_string();
        match self.flavour {
            Flavour::Bearer => {
                let mut json =
                    format!("{{\"status\":\"invalid_token\",\"scope\":{}", quoted(scope));
                if let Some(url) = &self.error.openid_configuration {
                    json.push_str(&format!(",\"openid-configuration\":{}", quoted(url)));
                }
                json.push('}');
                json.into_bytes()
            }
            Flavour::Google => format!(
                "{{\"status\":\"401\",\"schemes\":\"bearer\",\"scope\":{}}}",
                quoted(scope)
            )
            .into_bytes(),
        }
    }
}

type Parsed<'a> = Result<(Option<Vec<u8>>, &'a [u8]), MechFailure>;

/// OAUTHBEARER's client message (its size and NUL bytes checked by the caller):
/// `gs2-header \x01 *(key=value \x01) \x01`, where the
/// gs2-header is `n,` or `y,`, an optional `a=authzid` (RFC 5801's `=2C` and `=3D`), and `,`;
/// among the pairs `auth=Bearer TOKEN` is required; `host` and `port` are taken and unused.
fn parse_bearer(data: &[u8]) -> Parsed<'_> {
    let malformed = MechFailure::Malformed(Flavour::Bearer.message());
    let (header, rest) = match memchr::memchr(1, data) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => return Err(malformed),
    };
    let mut fields = header.split(|&b| b == b',');
    let (Some(flag), Some(authzid), Some(b""), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(malformed);
    };
    match flag {
        b"n" | b"y" => {}
        flag if flag.starts_with(b"p=") => return Err(MechFailure::ChannelBinding),
        _ => return Err(malformed),
    }
    let user = match authzid {
        b"" => None,
        a if a.starts_with(b"a=") && a.len() > 2 => {
            Some(saslname(&a[2..]).ok_or(MechFailure::BadUserName)?)
        }
        _ => return Err(malformed),
    };
    // The pairs, each ended by \x01, then one more \x01 and nothing after it.
    let Some(pairs) = rest.strip_suffix(b"\x01") else {
        return Err(malformed);
    };
    let mut token = None;
    if !pairs.is_empty() {
        let Some(pairs) = pairs.strip_suffix(b"\x01") else {
            return Err(malformed);
        };
        for pair in pairs.split(|&b| b == 1) {
            let Some(eq) = memchr::memchr(b'=', pair) else {
                return Err(malformed);
            };
            let (key, value) = (&pair[..eq], &pair[eq + 1..]);
            if key.is_empty() || !key.iter().all(u8::is_ascii_alphabetic) {
                return Err(malformed);
            }
            if key == b"auth" {
                if token.is_some() {
                    return Err(malformed);
                }
                token = Some(bearer_token(value).ok_or(malformed)?);
            }
        }
    }
    let token = token.ok_or(malformed)?;
    Ok((user, token))
}

/// XOAUTH2's message (its size and NUL bytes checked by the caller):
/// `user=USER \x01 auth=Bearer TOKEN \x01 \x01`, nothing more.
fn parse_xoauth2(data: &[u8]) -> Parsed<'_> {
    let malformed = MechFailure::Malformed(Flavour::Google.message());
    let Some(body) = data.strip_suffix(b"\x01\x01") else {
        return Err(malformed);
    };
    let mut parts = body.split(|&b| b == 1);
    let (Some(user), Some(auth), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed);
    };
    let user = user.strip_prefix(b"user=").ok_or(malformed)?;
    if user.is_empty() {
        return Err(MechFailure::EmptyCredentials);
    }
    let token = auth
        .strip_prefix(b"auth=")
        .and_then(bearer_token)
        .ok_or(malformed)?;
    Ok((Some(user.to_vec()), token))
}

/// `Bearer TOKEN` (the scheme in any case, one or more spaces) to its token, which must be a
/// b64token (RFC 6750: letters, digits, `-._~+/`, then `=` padding).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"Bearer") || !rest.starts_with(b" ") {
        return None;
    }
    let token = rest.trim_ascii_start();
    let body_len = token.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let body_ok = token[..body_len]
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    (body_len > 0 && body_ok).then_some(token)
}

/// An RFC 5801 saslname with `=2C` and `=3D` decoded; `None` for a bad escape.
fn saslname(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'=' {
            match raw.get(i + 1..i + 3) {
                Some(b"2C") => out.push(b','),
                Some(b"3D") => out.push(b'='),
                _ => return None,
            }
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mech::describe;

    fn bearer() -> OAuth {
        OAuth::new(
            Flavour::Bearer,
            ErrorInfo {
                scope: Some("openid email".into()),
                openid_configuration: Some(
                    "https://id.example.org/.well-known/openid-configuration".into(),
                ),
            },
        )
    }

    fn google() -> OAuth {
        OAuth::new(Flavour::Google, ErrorInfo::default())
    }

    fn first(m: &mut OAuth, data: &[u8]) -> String {
        match m.step(Some(data)) {
            Step::VerifyToken { user, token } => format!(
                "token {} {}",
                user.map_or("-".into(), |u| String::from_utf8_lossy(&u).into_owned()),
                String::from_utf8_lossy(token.expose())
            ),
            other => describe(other),
        }
    }

    #[test]
    fn oauthbearer_messages() {
        let rows: &[(&[u8], &str)] = &[
            // RFC 7628 3.1's example, and without host and port.
            (
                b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01",
                "token user@example.com vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==",
            ),
            (b"n,a=bob,\x01auth=Bearer abc.def-ghi\x01\x01", "token bob abc.def-ghi"),
            // No a=: the token names the user (Dovecot 2.3 refuses this; RFC 7628 allows it).
            (b"n,,\x01auth=Bearer tok\x01\x01", "token - tok"),
            (b"y,,\x01auth=bearer  tok\x01\x01", "token - tok"),
            // RFC 5801 escapes in the authzid.
            (b"n,a=a=2Cb=3Dc,\x01auth=Bearer t\x01\x01", "token a,b=c t"),
            (b"n,a=a=2,\x01auth=Bearer t\x01\x01", "fail"),
            // Channel binding, a missing or doubled auth, junk after the end, no end.
            (b"p=tls-unique,,\x01auth=Bearer t\x01\x01", "fail"),
            (b"n,,\x01host=x\x01\x01", "fail"),
            (b"n,,\x01auth=Bearer t\x01auth=Bearer u\x01\x01", "fail"),
            (b"n,,\x01auth=Bearer t\x01\x01x", "fail"),
            (b"n,,\x01auth=Bearer t\x01", "fail"),
            (b"n,,\x01auth=Basic dXNlcjpwdw==\x01\x01", "fail"),
            (b"n,,\x01auth=Bearer t\x00u\x01\x01", "fail"),
            (b"n,,\x01auth=Bearer t u\x01\x01", "fail"),
            (b"n,,\x01auth=Bearer \x01\x01", "fail"),
            (b"", "fail"),
            (b"n,a=bob\x01auth=Bearer t\x01\x01", "fail"),
        ];
        for (data, want) in rows {
            assert_eq!(first(&mut bearer(), data), *want, "{}", data.escape_ascii());
        }
        let long = [
            &b"n,,\x01auth=Bearer "[..],
            &[b'a'; MAX_MESSAGE][..],
            b"\x01\x01",
        ]
        .concat();
        assert_eq!(first(&mut bearer(), &long), "fail");
    }

    #[test]
    fn xoauth2_messages() {
        let rows: &[(&[u8], &str)] = &[
            (
                b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01",
                "token someuser@example.com ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg",
            ),
            // Without its closing ^A^A (Dovecot 2.3 takes it), or with more after it.
            (b"user=a\x01auth=Bearer t", "fail"),
            (b"user=a\x01auth=Bearer t\x01", "fail"),
            (b"user=a\x01auth=Bearer t\x01\x01\x01", "fail"),
            (b"user=\x01auth=Bearer t\x01\x01", "fail"),
            (b"auth=Bearer t\x01user=a\x01\x01", "fail"),
            (b"user=a\x01auth=t\x01\x01", "fail"),
        ];
        for (data, want) in rows {
            assert_eq!(first(&mut google(), data), *want, "{}", data.escape_ascii());
        }
    }

    #[test]
    fn a_refused_token_gets_the_error_challenge_then_fails() {
        let mut m = bearer();
        assert_eq!(describe(m.step(None)), "challenge ");
        first(&mut m, b"n,,\x01auth=Bearer t\x01\x01");
        assert_eq!(
            describe(m.resume(Err(TokenRefusal::Expired))),
            "challenge {\"status\":\"invalid_token\",\"scope\":\"openid email\",\
             \"openid-configuration\":\"https://id.example.org/.well-known/openid-configuration\"}"
        );
        assert!(matches!(
            m.step(Some(b"\x01")),
            Step::Fail(MechFailure::InvalidToken(TokenRefusal::Expired))
        ));

        let mut m = google();
        first(&mut m, b"user=a\x01auth=Bearer t\x01\x01");
        assert_eq!(
            describe(m.resume(Err(TokenRefusal::Signature))),
            "challenge {\"status\":\"401\",\"schemes\":\"bearer\",\"scope\":\"mail\"}"
        );
        assert!(matches!(
            m.step(Some(b"")),
            Step::Fail(MechFailure::InvalidToken(_))
        ));

        let mut m = google();
        first(&mut m, b"user=a\x01auth=Bearer t\x01\x01");
        assert!(matches!(
            m.resume(Ok(())),
            Step::Success { final_data: None }
        ));
        // A verdict nobody asked for.
        assert!(matches!(
            google().resume(Ok(())),
            Step::Fail(MechFailure::Unexpected)
        ));
    }
}
