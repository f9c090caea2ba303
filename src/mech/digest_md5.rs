//! DIGEST-MD5 (RFC 2831), authentication only (`qop=auth`; no integrity or privacy layer).
//!
//! The server sends `realm`, a random `nonce`, `qop="auth"`, `charset="utf-8"` and
//! `algorithm="md5-sess"`; the client answers with its `username`, `realm`, `cnonce`, `nc`,
//! `digest-uri` and `response`, a hash over the cleartext password; the server proves it knows
//! the password too (`rspauth`), the client acknowledges with an empty message. Like CRAM-MD5
//! it needs the stored cleartext password. The realm is the one the client names (any: a user
//! created with `saslpasswd2 -u example.org` logs in with `realm="example.org"`), else the
//! default realm, as libsasl2's server does. It is historic (RFC 6331) and offered only when
//! asked for.

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{MechFailure, Message, Step};

/// The wire name.
pub(crate) const NAME: &str = "DIGEST-MD5";

/// Where the exchange stands.
#[derive(Debug)]
pub(crate) enum DigestMd5 {
    /// The challenge is ready, not sent.
    Fresh(Challenge),
    /// The challenge is out; the response is awaited.
    Sent(Challenge),
    /// The user's password is being looked up.
    AwaitSecret(Box<Response>),
    /// Finished (success or failure).
    Done,
}

/// What the user's response is checked with.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Secret<'a> {
    /// The cleartext password.
    Password(&'a [u8]),
    /// MD5 of `username:realm:password` as stored (Dovecot's `{DIGEST-MD5}`): it matches only
    /// when the client names the user and realm it was made with.
    Urp(&'a [u8; 16]),
}

/// What the server offered.
#[derive(Debug, Clone)]
pub(crate) struct Challenge {
    /// The realm offered (the default realm).
    realm: String,
    /// The nonce, as sent.
    nonce: String,
    /// The service the exchange is for (`smtp`): the `digest-uri` must name it.
    service: Vec<u8>,
}

/// A client's response that passed every check but the password.
#[derive(Debug)]
pub(crate) struct Response {
    username: Vec<u8>,
    /// As the client sent it (may be empty: the hash is over what it sent).
    realm: Vec<u8>,
    nonce: String,
    cnonce: Vec<u8>,
    nc: Vec<u8>,
    qop: Vec<u8>,
    digest_uri: Vec<u8>,
    authzid: Option<Vec<u8>>,
    /// Lower-case hex.
    response: [u8; 32],
    /// `charset=utf-8`: names and password hash in ISO-8859-1 when they fit.
    utf8: bool,
}

/// Escapes a value for a quoted-string.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl Challenge {
    /// A challenge offering `realm` with a fresh nonce, for an exchange of `service`.
    pub(crate) fn new(realm: &str, service: &[u8]) -> Challenge {
        use base64::Engine;
        let nonce =
            base64::engine::general_purpose::STANDARD.encode(crate::secret::random_bytes::<16>());
        Challenge {
            realm: realm.to_owned(),
            nonce,
            service: service.to_vec(),
        }
    }

    /// The challenge's bytes, in Dovecot's words.
    fn encode(&self) -> Vec<u8> {
        format!(
            "realm={},nonce={},qop=\"auth\",charset=\"utf-8\",algorithm=\"md5-sess\"",
            quote(&self.realm),
            quote(&self.nonce)
        )
        .into_bytes()
    }
}

/// The directives of a response, in order: `name=value` or `name="quoted"`, separated by
/// commas with optional white space. `None` for anything else.
fn directives(input: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < input.len() && (is_space(input[i]) || input[i] == b',') {
            i += 1;
        }
        if i == input.len() {
            return Some(out);
        }
        let start = i;
        while i < input.len() && (input[i].is_ascii_alphanumeric() || b"-_".contains(&input[i])) {
            i += 1;
        }
        if start == i {
            return None;
        }
        let name = String::from_utf8_lossy(&input[start..i]).to_ascii_lowercase();
        while i < input.len() && is_space(input[i]) {
            i += 1;
        }
        if input.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        while i < input.len() && is_space(input[i]) {
            i += 1;
        }
        let mut value = Vec::new();
        if input.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match *input.get(i)? {
                    b'"' => break,
                    b'\\' => {
                        i += 1;
                        value.push(*input.get(i)?);
                    }
                    b => value.push(b),
                }
                i += 1;
            }
            i += 1;
        } else {
            while i < input.len() && input[i] != b',' && !is_space(input[i]) {
                value.push(input[i]);
                i += 1;
            }
        }
        while i < input.len() && is_space(input[i]) {
            i += 1;
        }
        if i < input.len() && input[i] != b',' {
            return None;
        }
        out.push((name, value));
    }
}

/// Bytes as ISO-8859-1 when they are UTF-8 whose every character fits (RFC 2831 2.1.2.1),
/// else as they are.
fn latin1_if_fits(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.chars().all(|c| u32::from(c) <= 0xff) => {
            Zeroizing::new(text.chars().map(|c| c as u8).collect())
        }
        _ => Zeroizing::new(bytes.to_vec()),
    }
}

/// Lower-case hex of 16 bytes.
fn hex(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in bytes.iter().take(16).enumerate() {
        out[2 * i] = b"0123456789abcdef"[usize::from(b >> 4)];
        out[2 * i + 1] = b"0123456789abcdef"[usize::from(b & 15)];
    }
    out
}

impl Response {
    /// Parses and checks a response to `challenge`: everything but the password.
    fn parse(input: &[u8], challenge: &Challenge) -> Result<Response, MechFailure> {
        let malformed = MechFailure::Malformed(Message::DigestResponse);
        if input.contains(&0) {
            return Err(MechFailure::NulByte);
        }
        let mut fields: [Option<Vec<u8>>; 10] = Default::default();
        const NAMES: [&str; 10] = [
            "username",
            "realm",
            "nonce",
            "cnonce",
            "nc",
            "qop",
            "digest-uri",
            "response",
            "charset",
            "authzid",
        ];
        for (name, value) in directives(input).ok_or(malformed)? {
            // Unknown directives (maxbuf, cipher) are ignored, as RFC 2831 says; a known one
            // given twice is an error.
            if let Some(k) = NAMES.iter().position(|n| *n == name) {
                if fields[k].replace(value).is_some() {
                    return Err(malformed);
                }
            }
        }
        let [username, realm, nonce, cnonce, nc, qop, digest_uri, response, charset, authzid] =
            fields;
        let (Some(username), Some(nonce), Some(cnonce), Some(nc), Some(digest_uri), Some(hex)) =
            (username, nonce, cnonce, nc, digest_uri, response)
        else {
            return Err(malformed);
        };
        if username.is_empty() {
            return Err(MechFailure::BadUserName);
        }
        if nonce != challenge.nonce.as_bytes() || cnonce.is_empty() {
            return Err(MechFailure::NonceMismatch);
        }
        // This is never a subsequent authentication: the nonce count is 1.
        if nc.len() != 8
            || u32::from_str_radix(std::str::from_utf8(&nc).unwrap_or("x"), 16) != Ok(1)
        {
            return Err(malformed);
        }
        let qop = qop.unwrap_or_else(|| b"auth".to_vec());
        if qop != b"auth" {
            return Err(MechFailure::Unsupported);
        }
        let utf8 = match charset {
            None => false,
            Some(c) if c.eq_ignore_ascii_case(b"utf-8") => true,
            Some(_) => return Err(malformed),
        };
        // serv-type "/" host ["/" serv-name], for this service (libsasl2 checks the same).
        let mut parts = digest_uri.splitn(3, |&b| b == b'/');
        let (Some(serv_type), Some(host)) = (parts.next(), parts.next()) else {
            return Err(malformed);
        };
        if host.is_empty() || !serv_type.eq_ignore_ascii_case(&challenge.service) {
            return Err(MechFailure::WrongService);
        }
        let Ok(mut response) = <[u8; 32]>::try_from(&hex[..]) else {
            return Err(malformed);
        };
        if !response.iter().all(u8::is_ascii_hexdigit) {
            return Err(malformed);
        }
        response.make_ascii_lowercase();
        let realm = realm.unwrap_or_default();
        if let Some(authzid) = &authzid {
            let full = [&username[..], b"@", &realm[..]].concat();
            if *authzid != username && (realm.is_empty() || *authzid != full) {
                return Err(MechFailure::ForeignAuthzid);
            }
        }
        Ok(Response {
            username,
            realm,
            nonce: challenge.nonce.clone(),
            cnonce,
            nc,
            qop,
            digest_uri,
            authzid,
            response,
            utf8,
        })
    }

    /// `hex(H(A1))` for `password`.
    fn ha1(&self, secret: Secret<'_>) -> Zeroizing<[u8; 32]> {
        let secret = match secret {
            Secret::Password(password) => self.urp(password),
            Secret::Urp(urp) => Zeroizing::new(*urp),
        };
        let mut a1 = Md5::new();
        a1.update(&secret[..]);
        a1.update(b":");
        a1.update(self.nonce.as_bytes());
        a1.update(b":");
        a1.update(&self.cnonce);
        if let Some(authzid) = &self.authzid {
            a1.update(b":");
            a1.update(authzid);
        }
        Zeroizing::new(hex(&a1.finalize()))
    }

    /// MD5 of `username:realm:password`, the names as the client sent them.
    fn urp(&self, password: &[u8]) -> Zeroizing<[u8; 16]> {
        let text = |b: &[u8]| {
            if self.utf8 {
                latin1_if_fits(b)
            } else {
                Zeroizing::new(b.to_vec())
            }
        };
        let mut inner = Md5::new();
        inner.update(&*text(&self.username));
        inner.update(b":");
        inner.update(&*text(&self.realm));
        inner.update(b":");
        inner.update(&*text(password));
        Zeroizing::new(<[u8; 16]>::from(inner.finalize()))
    }

    /// The response value for `ha1`, with A2 = `prefix` `digest-uri` (`AUTHENTICATE:` for
    /// the client's response, empty for the server's `rspauth`).
    fn kd(&self, ha1: &[u8; 32], prefix: &[u8]) -> [u8; 32] {
        let mut a2 = Md5::new();
        a2.update(prefix);
        a2.update(b":");
        a2.update(&self.digest_uri);
        let ha2 = hex(&a2.finalize());
        let mut kd = Md5::new();
        let parts = [
            &ha1[..],
            self.nonce.as_bytes(),
            &self.nc,
            &self.cnonce,
            &self.qop,
            &ha2,
        ];
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                kd.update(b":");
            }
            kd.update(part);
        }
        hex(&kd.finalize())
    }
}

/// The client's side, for tests and the bench: the response to a server's `challenge` for
/// `username` in `realm` (`None`: the realm the server offered) with `password`, and the
/// `rspauth` the server must answer with. `None` for a challenge that does not parse.
pub fn client_response(
    challenge: &[u8],
    username: &str,
    realm: Option<&str>,
    password: &[u8],
    digest_uri: &str,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let offered = directives(challenge)?;
    let get = |name: &str| {
        offered
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let nonce = String::from_utf8(get("nonce")?).ok()?;
    let realm = match realm {
        Some(realm) => realm.as_bytes().to_vec(),
        None => get("realm").unwrap_or_default(),
    };
    let cnonce = hex(&crate::secret::random_bytes::<16>()).to_vec();
    let mut response = Response {
        username: username.as_bytes().to_vec(),
        realm,
        nonce,
        cnonce,
        nc: b"00000001".to_vec(),
        qop: b"auth".to_vec(),
        digest_uri: digest_uri.as_bytes().to_vec(),
        authzid: None,
        response: [0; 32],
        utf8: true,
    };
    let ha1 = response.ha1(Secret::Password(password));
    response.response = response.kd(&ha1, b"AUTHENTICATE");
    let quoted = |b: &[u8]| quote(&String::from_utf8_lossy(b));
    let text = format!(
        "charset=utf-8,username={},realm={},nonce={},nc=00000001,cnonce={},digest-uri={},\
         response={},qop=auth",
        quoted(&response.username),
        quoted(&response.realm),
        quote(&response.nonce),
        quoted(&response.cnonce),
        quoted(&response.digest_uri),
        String::from_utf8_lossy(&response.response),
    );
    let rspauth = [&b"rspauth="[..], &response.kd(&ha1, b"")].concat();
    Some((text.into_bytes(), rspauth))
}

impl DigestMd5 {
    /// Starts an exchange offering `realm`, for `service`.
    pub(crate) fn new(realm: &str, service: &[u8]) -> DigestMd5 {
        DigestMd5::Fresh(Challenge::new(realm, service))
    }

    pub(crate) fn step(&mut self, input: Option<&[u8]>) -> Step {
        match std::mem::replace(self, DigestMd5::Done) {
            // An initial response (a "subsequent authentication") is not supported: the
            // challenge comes first, as Dovecot does.
            DigestMd5::Fresh(challenge) => {
                let step = Step::Challenge(challenge.encode());
                *self = DigestMd5::Sent(challenge);
                step
            }
            DigestMd5::Sent(challenge) => {
                let Some(input) = input else {
                    return Step::Fail(MechFailure::NoResponse);
                };
                match Response::parse(input, &challenge) {
                    Ok(response) => {
                        let user = response.username.clone();
                        // As libsasl2: a user name with its own `@realm` that keeps the realm
                        // offered is split like any other (swaks sends `alice@example.org`
                        // with the server's realm); another realm is the user's realm.
                        let own =
                            response.realm == challenge.realm.as_bytes() && user.contains(&b'@');
                        let realm =
                            (!response.realm.is_empty() && !own).then(|| response.realm.clone());
                        *self = DigestMd5::AwaitSecret(Box::new(response));
                        Step::LookupCredentials { user, realm }
                    }
                    Err(why) => Step::Fail(why),
                }
            }
            DigestMd5::AwaitSecret(_) | DigestMd5::Done => Step::Fail(MechFailure::Unexpected),
        }
    }

    /// The looked-up password (`None`: no such user); compares in constant time. An unknown
    /// user costs the same hashing as a known one, and fails at the same step.
    pub(crate) fn resume(&mut self, secret: Option<Secret<'_>>) -> Step {
        let DigestMd5::AwaitSecret(response) = std::mem::replace(self, DigestMd5::Done) else {
            return Step::Fail(MechFailure::Unexpected);
        };
        let ha1 = response.ha1(secret.unwrap_or(Secret::Password(b"\0no such user\0")));
        let expected = Zeroizing::new(response.kd(&ha1, b"AUTHENTICATE"));
        match (secret, bool::from(expected.ct_eq(&response.response))) {
            (Some(_), true) => {
                let rspauth = response.kd(&ha1, b"");
                Step::Success {
                    final_data: Some([&b"rspauth="[..], &rspauth].concat()),
                }
            }
            _ => Step::Fail(MechFailure::WrongProof),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2831 section 4's example, with the nonce it used.
    fn rfc_challenge() -> Challenge {
        Challenge {
            realm: "elwood.innosoft.com".into(),
            nonce: "OA6MG9tEQGm2hh".into(),
            service: b"imap".to_vec(),
        }
    }

    const RFC_RESPONSE: &[u8] = b"charset=utf-8,username=\"chris\",realm=\"elwood.innosoft.com\",\
nonce=\"OA6MG9tEQGm2hh\",nc=00000001,cnonce=\"OA6MHXh6VqTrRk\",digest-uri=\"imap/elwood.innosoft.com\",\
response=d388dad90d4bbd760a152321f2143af7,qop=auth";

    #[test]
    fn rfc_2831_vector() {
        let mut m = DigestMd5::Sent(rfc_challenge());
        match m.step(Some(RFC_RESPONSE)) {
            Step::LookupCredentials { user, realm } => {
                assert_eq!(user, b"chris");
                assert_eq!(realm.as_deref(), Some(&b"elwood.innosoft.com"[..]));
            }
            other => panic!("{other:?}"),
        }
        match m.resume(Some(Secret::Password(b"secret"))) {
            Step::Success { final_data } => assert_eq!(
                final_data.as_deref(),
                Some(&b"rspauth=ea40f60335c427b5527b84dbabcdfffd"[..])
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stored_user_realm_password_digest_stands_for_the_password() {
        let urp: [u8; 16] = Md5::digest(b"chris:elwood.innosoft.com:secret").into();
        let other: [u8; 16] = Md5::digest(b"chris:elsewhere:secret").into();
        for (secret, ok) in [(urp, true), (other, false)] {
            let mut m = DigestMd5::Sent(rfc_challenge());
            assert!(matches!(
                m.step(Some(RFC_RESPONSE)),
                Step::LookupCredentials { .. }
            ));
            assert_eq!(
                matches!(m.resume(Some(Secret::Urp(&secret))), Step::Success { .. }),
                ok
            );
        }
    }

    #[test]
    fn wrong_password_and_unknown_user_fail_at_the_same_step() {
        for secret in [Some(Secret::Password(b"wrong")), None] {
            let mut m = DigestMd5::Sent(rfc_challenge());
            assert!(matches!(
                m.step(Some(RFC_RESPONSE)),
                Step::LookupCredentials { .. }
            ));
            assert!(matches!(
                m.resume(secret),
                Step::Fail(MechFailure::WrongProof)
            ));
        }
    }

    #[test]
    fn challenge_shape() {
        let mut m = DigestMd5::new("mail.example.org", b"smtp");
        let Step::Challenge(c) = m.step(None) else {
            panic!()
        };
        let fields = directives(&c).unwrap();
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["realm", "nonce", "qop", "charset", "algorithm"]);
        assert_eq!(fields[0].1, b"mail.example.org");
        assert_eq!(fields[1].1.len(), 24, "16 random bytes in base64");
        assert_eq!(fields[2].1, b"auth");
        assert_eq!(fields[4].1, b"md5-sess");
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn directive_syntax() {
        let d = directives(b" a = 1 ,, b=\"x\\\"y,z\" ,c=\"\"").unwrap();
        assert_eq!(
            d,
            [
                ("a".into(), b"1".to_vec()),
                ("b".into(), b"x\"y,z".to_vec()),
                ("c".into(), Vec::new())
            ]
        );
        for bad in [&b"a"[..], b"a=\"open", b"=1", b"a=1 b=2", b"a=\"x\"y"] {
            assert_eq!(directives(bad), None, "{bad:?}");
        }
    }

    /// Replaces `from` in the RFC's response.
    fn edited(from: &str, to: &str) -> Vec<u8> {
        let text = std::str::from_utf8(RFC_RESPONSE).unwrap();
        assert!(text.contains(from));
        text.replacen(from, to, 1).into_bytes()
    }

    #[test]
    fn bad_responses_fail_before_the_lookup() {
        let cases = [
            edited("nonce=\"OA6MG9tEQGm2hh\"", "nonce=\"other\""),
            edited("nc=00000001", "nc=00000002"),
            edited("nc=00000001", "nc=1"),
            edited("qop=auth", "qop=auth-conf"),
            edited("digest-uri=\"imap/", "digest-uri=\"smtp/"),
            edited(
                "digest-uri=\"imap/elwood.innosoft.com\"",
                "digest-uri=\"imap\"",
            ),
            edited("response=d388dad90d4bbd760a152321f2143af7", "response=d388"),
            edited("charset=utf-8", "charset=latin1"),
            edited("username=\"chris\"", "username=\"\""),
            edited("username=\"chris\"", "username=\"chris\",username=\"eve\""),
            edited("cnonce=\"OA6MHXh6VqTrRk\",", ""),
            edited("qop=auth", "qop=auth,authzid=\"eve\""),
            edited("username=\"chris\"", "username=\"ch\0ris\""),
            b"not directives at all".to_vec(),
        ];
        for case in cases {
            let mut m = DigestMd5::Sent(rfc_challenge());
            assert!(
                matches!(m.step(Some(&case)), Step::Fail(_)),
                "{}",
                String::from_utf8_lossy(&case)
            );
        }
        let mut m = DigestMd5::Sent(rfc_challenge());
        assert!(matches!(m.step(None), Step::Fail(MechFailure::NoResponse)));
    }

    #[test]
    fn authzid_of_the_user_itself_is_accepted_and_hashed() {
        let response = edited("qop=auth", "qop=auth,authzid=\"chris@elwood.innosoft.com\"");
        let mut m = DigestMd5::Sent(rfc_challenge());
        assert!(matches!(
            m.step(Some(&response)),
            Step::LookupCredentials { .. }
        ));
        // The RFC's response was computed without an authzid, so A1 now differs.
        assert!(matches!(
            m.resume(Some(Secret::Password(b"secret"))),
            Step::Fail(_)
        ));
    }

    #[test]
    fn utf8_names_that_fit_latin1_are_hashed_as_latin1() {
        let challenge = Challenge::new("", b"smtp");
        let response = Response {
            username: "j\u{fc}rgen".as_bytes().to_vec(),
            realm: Vec::new(),
            nonce: challenge.nonce.clone(),
            cnonce: b"c".to_vec(),
            nc: b"00000001".to_vec(),
            qop: b"auth".to_vec(),
            digest_uri: b"smtp/h".to_vec(),
            authzid: None,
            response: [b'0'; 32],
            utf8: true,
        };
        let latin1 = Response {
            username: b"j\xfcrgen".to_vec(),
            utf8: false,
            nonce: response.nonce.clone(),
            cnonce: b"c".to_vec(),
            nc: b"00000001".to_vec(),
            qop: b"auth".to_vec(),
            digest_uri: b"smtp/h".to_vec(),
            authzid: None,
            realm: Vec::new(),
            response: [b'0'; 32],
        };
        assert_eq!(
            *response.ha1(Secret::Password("p\u{e4}ss".as_bytes())),
            *latin1.ha1(Secret::Password(b"p\xe4ss"))
        );
        assert_eq!(
            &*latin1_if_fits("\u{20ac}".as_bytes()),
            "\u{20ac}".as_bytes()
        );
    }
}
