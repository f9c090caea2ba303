//! CRAM-MD5 (RFC 2195): the server sends `<random.timestamp@hostname>`, the client answers
//! `user SP hex(HMAC-MD5(password, challenge))`. Needs the stored cleartext password, or
//! HMAC-MD5's stored states (Dovecot's `{CRAM-MD5}`), so it is offered only by passdbs that
//! have one of them (sasldb, sql).

use hmac::{Hmac, Mac};
use md5::Md5;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{MechFailure, Message, Step};
use crate::hmac_md5::HmacMd5Contexts;

/// The wire name.
pub(crate) const NAME: &str = "CRAM-MD5";

/// Where the exchange stands.
#[derive(Debug)]
pub(crate) enum CramMd5 {
    /// The challenge is ready, not sent.
    Fresh(Vec<u8>),
    /// The challenge is out; the response is awaited.
    Sent(Vec<u8>),
    /// The user's secret is being looked up.
    AwaitSecret {
        /// The challenge that was sent.
        challenge: Vec<u8>,
        /// The client's digest, lower-case hex.
        digest: [u8; 32],
    },
    /// Finished (success or failure).
    Done,
}

/// A challenge: `<` 16 random decimal digits `.` unix time `@` host name `>`, as Dovecot.
pub(crate) fn challenge(random: u64, unix_time: u64, host: &str) -> Vec<u8> {
    format!(
        "<{:016}.{unix_time}@{host}>",
        random % 10_000_000_000_000_000
    )
    .into_bytes()
}

/// `hex(HMAC-MD5(secret, challenge))`, lower case.
pub fn digest_hex(secret: &[u8], challenge: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Md5> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(challenge);
    hex_lower(&mac.finalize().into_bytes().into())
}

/// 16 bytes in lower-case hex.
fn hex_lower(bytes: &[u8; 16]) -> [u8; 32] {
    let mut hex = [0u8; 32];
    for (i, b) in bytes.iter().enumerate() {
        hex[2 * i] = b"0123456789abcdef"[usize::from(b >> 4)];
        hex[2 * i + 1] = b"0123456789abcdef"[usize::from(b & 15)];
    }
    hex
}

impl CramMd5 {
    /// Starts with a fresh challenge naming `host`.
    pub(crate) fn new(host: &str) -> CramMd5 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        CramMd5::Fresh(challenge(crate::secret::random_u64(), now, host))
    }

    pub(crate) fn step(&mut self, input: Option<&[u8]>) -> Step {
        match std::mem::replace(self, CramMd5::Done) {
            // An initial response is ignored (Dovecot does the same): the challenge comes first.
            CramMd5::Fresh(challenge) => {
                let step = Step::Challenge(challenge.clone());
                *self = CramMd5::Sent(challenge);
                step
            }
            CramMd5::Sent(challenge) => {
                let Some(response) = input else {
                    return Step::Fail(MechFailure::NoResponse);
                };
                if response.contains(&0) {
                    return Step::Fail(MechFailure::NulByte);
                }
                // The user name may hold spaces: the digest is after the last one.
                let Some(space) = response.iter().rposition(|&b| b == b' ') else {
                    return Step::Fail(MechFailure::Malformed(Message::CramResponse));
                };
                let (user, hex) = (&response[..space], &response[space + 1..]);
                let Ok(mut digest) = <[u8; 32]>::try_from(hex) else {
                    return Step::Fail(MechFailure::Malformed(Message::CramResponse));
                };
                if user.is_empty() || !digest.iter().all(|b| b.is_ascii_hexdigit()) {
                    return Step::Fail(MechFailure::Malformed(Message::CramResponse));
                }
                digest.make_ascii_lowercase();
                *self = CramMd5::AwaitSecret { challenge, digest };
                Step::LookupCredentials {
                    user: user.to_vec(),
                    realm: None,
                }
            }
            CramMd5::AwaitSecret { .. } | CramMd5::Done => Step::Fail(MechFailure::Unexpected),
        }
    }

    /// The looked-up password (`None`: no such user); compares in constant time.
    pub(crate) fn resume(&mut self, secret: Option<&[u8]>) -> Step {
        self.resume_contexts(secret.map(HmacMd5Contexts::from_key).as_ref())
    }

    /// The looked-up secret as HMAC-MD5's two states (a password's, or Dovecot's stored
    /// `{CRAM-MD5}`; `None`: no such user); compares in constant time. An unknown user costs
    /// the same HMAC as a known one.
    pub(crate) fn resume_contexts(&mut self, secret: Option<&HmacMd5Contexts>) -> Step {
        let CramMd5::AwaitSecret { challenge, digest } = std::mem::replace(self, CramMd5::Done)
        else {
            return Step::Fail(MechFailure::Unexpected);
        };
        let dummy;
        let contexts = match secret {
            Some(contexts) => contexts,
            None => {
                dummy = HmacMd5Contexts::from_key(b"\0no such user\0");
                &dummy
            }
        };
        let expected = Zeroizing::new(hex_lower(&contexts.mac(&challenge)));
        match (secret, bool::from(expected.ct_eq(&digest))) {
            (Some(_), true) => Step::Success { final_data: None },
            _ => Step::Fail(MechFailure::WrongProof),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_2195_vector() {
        let challenge = b"<1896.697170952@postoffice.reston.mci.net>";
        assert_eq!(
            &digest_hex(b"tanstaaftanstaaf", challenge),
            b"b913a602c7eda7a495b4e6e7334d3890"
        );
        let mut m = CramMd5::Sent(challenge.to_vec());
        match m.step(Some(b"tim b913a602c7eda7a495b4e6e7334d3890")) {
            Step::LookupCredentials { user, .. } => assert_eq!(user, b"tim"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            m.resume(Some(b"tanstaaftanstaaf")),
            Step::Success { .. }
        ));
    }

    #[test]
    fn challenge_shape() {
        let c = String::from_utf8(challenge(42, 1_795_481_053, "vm")).unwrap();
        assert_eq!(c, "<0000000000000042.1795481053@vm>");
        let mut m = CramMd5::new("mail.example.org");
        match m.step(Some(b"ignored initial response")) {
            Step::Challenge(c) => {
                let c = String::from_utf8(c).unwrap();
                assert!(
                    c.starts_with('<') && c.ends_with("@mail.example.org>"),
                    "{c}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_responses_and_wrong_secrets_fail() {
        let challenge = b"<1.2@h>".to_vec();
        for response in [
            &b"tim"[..],
            b"tim b913",
            b"tim zz13a602c7eda7a495b4e6e7334d3890",
            b" b913a602c7eda7a495b4e6e7334d3890",
            b"t\0m b913a602c7eda7a495b4e6e7334d3890",
        ] {
            let mut m = CramMd5::Sent(challenge.clone());
            assert!(
                matches!(m.step(Some(response)), Step::Fail(_)),
                "{response:?}"
            );
        }
        let digest = digest_hex(b"right", &challenge);
        let response = [&b"user name "[..], &digest].concat();
        let mut m = CramMd5::Sent(challenge.clone());
        assert!(
            matches!(m.step(Some(&response)), Step::LookupCredentials { user, .. } if user == b"user name")
        );
        assert!(matches!(m.resume(Some(b"wrong")), Step::Fail(_)));
        let mut m = CramMd5::Sent(challenge.clone());
        m.step(Some(&response));
        assert!(matches!(m.resume(None), Step::Fail(_)), "unknown user");
        let mut m = CramMd5::Sent(challenge);
        let upper = [
            &b"u "[..],
            &digest_hex(b"pw", b"<1.2@h>").to_ascii_uppercase(),
        ]
        .concat();
        m.step(Some(&upper));
        assert!(
            matches!(m.resume(Some(b"pw")), Step::Success { .. }),
            "hex case does not matter"
        );
    }
}
