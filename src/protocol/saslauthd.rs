//! The saslauthd wire protocol (Cyrus `saslauthd/ipc_unix.c`, `lib/checkpw.c`).
//!
//! A request is a run of counted strings: a `u16` big-endian length, then that many bytes, for
//! `login`, `password`, `service`, `realm` and, from Cyrus master's clients only, `client_addr`.
//! A reply is one counted string: `OK` or `NO <reason>`. One request per connection.
//!
//! These functions are pure: they look at the bytes buffered so far and say whether a whole
//! request is there. The connection (`server::saslauthd`) owns the socket and the buffer;
//! the client side is `client`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::request::{AuthRequest, Peer};
use crate::secret::Password;
use crate::verdict::{Outcome, PassdbKind, PassdbResult, Refusal};

/// Where Cyrus's daemon and its clients look for the socket by default: the run directory
/// of Fedora, Arch and Alpine (on Debian `/var/run` is a link to `/run`, so this is also
/// Debian's `/var/run/saslauthd`).
pub const DEFAULT_RUN_DIR: &str = "/run/saslauthd";

/// The socket's name in the run directory (Cyrus's `SOCKET_FILE "/mux"`).
const SOCKET_NAME: &str = "mux";

/// The socket in a run directory: `<run_dir>/mux`.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET_NAME)
}

/// The largest field Cyrus accepts (`MAX_REQ_LEN` in `saslauthd-main.h`): 256 is allowed,
/// 257 is refused.
pub const MAX_FIELD_LEN: usize = 256;

/// The largest request: five fields at the limit, with their length prefixes.
pub const MAX_REQUEST_LEN: usize = 5 * (2 + MAX_FIELD_LEN);

/// The fields in wire order, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The user name.
    Login,
    /// The password.
    Password,
    /// The service (`smtp`, `imap`).
    Service,
    /// The realm, possibly empty.
    Realm,
    /// `SASL_IPREMOTEPORT` (`192.0.2.7;54321`), sent by Cyrus master's clients only.
    ClientAddr,
}

const FIELDS: [Field; 5] = [
    Field::Login,
    Field::Password,
    Field::Service,
    Field::Realm,
    Field::ClientAddr,
];

impl fmt::Display for Field {
    /// The names Cyrus logs (`login exceeded MAX_REQ_LEN: 256`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Login => "login",
            Field::Password => "password",
            Field::Service => "service",
            Field::Realm => "realm",
            Field::ClientAddr => "client address",
        })
    }
}

/// A request that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A length prefix over [`MAX_FIELD_LEN`]; seen as soon as the prefix arrives.
    #[error("{field} exceeded MAX_REQ_LEN: {max} (length {len})", max = MAX_FIELD_LEN)]
    FieldTooLong {
        /// Which field.
        field: Field,
        /// The announced length.
        len: usize,
    },
}

/// Looks for a whole request at the start of `buf`.
///
/// Returns `Ok(None)` while more bytes are needed: fewer than four whole fields, or a fifth
/// field that has begun but not ended. Four fields followed by nothing are a whole request
/// (Cyrus 2.1.28's clients, libsasl and `testsaslauthd`, send four); bytes after the fourth
/// field are read as the fifth, `client_addr` (Cyrus master). Clients send the request in one
/// `writev`, so waiting for a fifth field that is not there would only add latency.
pub fn decode_request(buf: &[u8]) -> Result<Option<(AuthRequest, Password)>, DecodeError> {
    let mut fields: [&[u8]; 5] = [&[]; 5];
    let mut at = 0;
    for (i, field) in FIELDS.iter().enumerate() {
        if i == 4 && at == buf.len() {
            return Ok(Some(assemble(&fields, None)));
        }
        let Some(prefix) = buf.get(at..at + 2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        if len > MAX_FIELD_LEN {
            return Err(DecodeError::FieldTooLong { field: *field, len });
        }
        let Some(body) = buf.get(at + 2..at + 2 + len) else {
            return Ok(None);
        };
        fields[i] = body;
        at += 2 + len;
    }
    Ok(Some(assemble(&fields, Some(fields[4]))))
}

fn assemble(fields: &[&[u8]; 5], client_addr: Option<&[u8]>) -> (AuthRequest, Password) {
    let request = AuthRequest {
        login: fields[0].to_vec(),
        service: fields[2].to_vec(),
        realm: fields[3].to_vec(),
        peer: Peer::new(client_addr.map(<[u8]>::to_vec)),
    };
    (request, Password::new(fields[1].to_vec()))
}

/// Appends one counted string. Panics if `field` is longer than `u16::MAX`; callers bound it.
fn put_counted(out: &mut Vec<u8>, field: &[u8]) {
    let len = u16::try_from(field.len()).expect("counted strings are bounded by the caller");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

/// A request as a client sends it. `client_addr` adds the fifth field of Cyrus master.
///
/// Fields longer than `u16::MAX` cannot be framed and are an error (libsasl's
/// `saslauthd request too large`).
pub fn encode_request(
    login: &[u8],
    password: &[u8],
    service: &[u8],
    realm: &[u8],
    client_addr: Option<&[u8]>,
) -> Result<Vec<u8>, RequestTooLarge> {
    let fields = [login, password, service, realm];
    let all = fields.iter().copied().chain(client_addr);
    let mut out = Vec::with_capacity(64);
    for field in all {
        if field.len() > usize::from(u16::MAX) {
            return Err(RequestTooLarge);
        }
        put_counted(&mut out, field);
    }
    Ok(out)
}

/// A field too long to frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("saslauthd request too large")]
pub struct RequestTooLarge;

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `OK`, with a text (empty for Cyrus's bare `OK`).
    Ok(&'static str),
    /// `NO`, with a reason (empty for Cyrus's bare `NO`).
    No(std::borrow::Cow<'static, str>),
}

impl Reply {
    /// The reply body, without the length prefix: `OK`, `NO` or `NO <reason>`.
    pub fn body(&self) -> Vec<u8> {
        match self {
            Reply::Ok("") => b"OK".to_vec(),
            Reply::Ok(text) => format!("OK {text}").into_bytes(),
            Reply::No(reason) if reason.is_empty() => b"NO".to_vec(),
            Reply::No(reason) => format!("NO {reason}").into_bytes(),
        }
    }

    /// The framed reply.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        // Reasons are short fixed texts; the body always fits a u16.
        put_counted(&mut out, &self.body());
        out
    }
}

/// The reply to an outcome, in the texts the passdb declares ([`PassdbKind::replies`]), which
/// are Cyrus's where they do not tell an unknown user from a wrong password: a bare `NO` from
/// sasldb, `NO PAM auth error` and `NO PAM acct error` from PAM, `NO authentication failed`
/// from shadow for an unknown user and a wrong password alike (Cyrus answers `NO Invalid
/// username` and `NO Incorrect password`). A refusal before any lookup is the same for every
/// passdb: `NO NULL login received`, `NO NULL password received` (`saslauthd-main.c`). A
/// backend that broke gets `alert`, the text Cyrus has for that failure when the passdb said
/// one (rimap's `[ALERT] ...`), else the passdb's `error` text (`internal mechanism failure`
/// for most).
pub fn reply_for(outcome: &Outcome, passdb: PassdbKind, alert: Option<&'static str>) -> Reply {
    let texts = passdb.replies;
    let no = |text: &'static str| Reply::No(text.into());
    match outcome {
        Outcome::Verdict(PassdbResult::Ok) => Reply::Ok(texts.ok),
        Outcome::Verdict(PassdbResult::PasswordMismatch | PassdbResult::UserUnknown)
        | Outcome::Refused(Refusal::NulByte) => no(texts.failure),
        Outcome::Verdict(PassdbResult::UserDisabled) => no(texts.disabled),
        Outcome::Verdict(PassdbResult::PassExpired) => no(texts.expired),
        Outcome::Refused(Refusal::EmptyLogin) => no("NULL login received"),
        Outcome::Refused(Refusal::EmptyPassword) => no("NULL password received"),
        Outcome::Error => no(alert.unwrap_or(texts.error)),
    }
}

/// The reply Cyrus sends for an over-long field: `send_no(fd, "")`, the three bytes `NO `.
pub const FIELD_TOO_LONG_REPLY: &[u8] = b"\x00\x03NO ";

/// Reads a framed reply body from a buffer: `Ok(None)` while incomplete.
pub fn decode_reply(buf: &[u8]) -> Option<&[u8]> {
    let prefix = buf.get(..2)?;
    let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
    buf.get(2..2 + len)
}

/// Whether a reply body means success: clients test only the first two bytes
/// (`strncmp(response, "OK", 2)` in `lib/checkpw.c`).
pub fn is_ok(body: &[u8]) -> bool {
    body.starts_with(b"OK")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(fields: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in fields {
            put_counted(&mut out, f);
        }
        out
    }

    #[test]
    fn testsaslauthd_bytes_from_the_reference() {
        // strace of `testsaslauthd -u alice -p newpw2 -r example.org -s smtp`
        let wire = b"\x00\x05alice\x00\x06newpw2\x00\x04smtp\x00\x0bexample.org";
        let (r, pw) = decode_request(wire).unwrap().unwrap();
        assert_eq!(r.login, b"alice");
        assert_eq!(pw.expose(), b"newpw2");
        assert_eq!(r.service, b"smtp");
        assert_eq!(r.realm, b"example.org");
        assert_eq!(r.peer.text(), None);
        let again = encode_request(b"alice", b"newpw2", b"smtp", b"example.org", None).unwrap();
        assert_eq!(again, wire);
    }

    #[test]
    fn five_fields_carry_the_client_address() {
        let wire = req(&[b"bob", b"pw", b"imap", b"", b"192.0.2.7;54321"]);
        let (r, _) = decode_request(&wire).unwrap().unwrap();
        assert_eq!(r.peer.text(), Some(&b"192.0.2.7;54321"[..]));
        let empty = req(&[b"bob", b"pw", b"imap", b"", b""]);
        let (r, _) = decode_request(&empty).unwrap().unwrap();
        assert_eq!(r.peer.text(), Some(&b""[..]));
    }

    #[test]
    fn every_prefix_of_a_request_is_incomplete() {
        let wire = req(&[b"alice", b"secret", b"smtp", b"example.org", b"127.0.0.1;1"]);
        let four = req(&[b"alice", b"secret", b"smtp", b"example.org"]).len();
        for cut in 0..wire.len() {
            let got = decode_request(&wire[..cut]).unwrap();
            assert_eq!(got.is_some(), cut == four, "cut at {cut}");
        }
        assert!(decode_request(&wire).unwrap().is_some());
    }

    #[test]
    fn field_limits_match_cyrus() {
        let at_limit = vec![b'a'; 256];
        assert!(decode_request(&req(&[&at_limit, b"p", b"s", b""]))
            .unwrap()
            .is_some());
        let over = req(&[b"alice", &vec![b'p'; 257]]);
        assert_eq!(
            decode_request(&over[..9]).unwrap_err(),
            DecodeError::FieldTooLong {
                field: Field::Password,
                len: 257
            }
        );
        assert_eq!(
            DecodeError::FieldTooLong {
                field: Field::Login,
                len: 300
            }
            .to_string(),
            "login exceeded MAX_REQ_LEN: 256 (length 300)"
        );
        let huge_addr = [req(&[b"a", b"b", b"c", b"d"]), vec![0xff, 0xff]].concat();
        assert!(matches!(
            decode_request(&huge_addr),
            Err(DecodeError::FieldTooLong {
                field: Field::ClientAddr,
                ..
            })
        ));
    }

    #[test]
    fn replies_are_framed_like_cyrus() {
        assert_eq!(Reply::Ok("").encode(), b"\x00\x02OK");
        assert_eq!(Reply::No("".into()).encode(), b"\x00\x02NO");
        assert_eq!(
            Reply::No("NULL login received".into()).encode(),
            b"\x00\x16NO NULL login received"
        );
        assert_eq!(decode_reply(b"\x00\x02OK"), Some(&b"OK"[..]));
        assert_eq!(decode_reply(b"\x00\x02O"), None);
        assert!(is_ok(b"OK"));
        assert!(!is_ok(b"NO"));
    }

    #[test]
    fn oversized_fields_cannot_be_encoded() {
        let big = vec![0u8; 70_000];
        assert_eq!(
            encode_request(&big, b"p", b"s", b"", None),
            Err(RequestTooLarge)
        );
    }
}
