//! Dovecot's auth-client protocol, version 1.2 (Dovecot 2.3 `auth-client-connection.c`,
//! `auth-request-handler.c`), as Postfix (`smtpd_sasl_type = dovecot`), Exim and `doveadm`
//! speak it. Pure parsing and encoding over bytes: the connection that owns the socket is
//! `server::dovecot`, the request table that answers is `auth::handler`.
//!
//! Lines end with LF (a CR before it is tolerated); fields are separated by TAB; values are
//! escaped with 0x01 (`\x01 1` = 0x01, `\x01 t` = TAB, `\x01 r` = CR, `\x01 n` = LF, `\x01 0`
//! = NUL), not backslashes. SASL data travels in base64, which this module decodes and
//! encodes: the rest of the daemon sees bytes.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::request::{Input, Peer, SaslStart};
use crate::verdict::{Answer, FailCode};

/// The longest line accepted, LF included (`AUTH_CLIENT_MAX_LINE_LENGTH`); longer: disconnect.
pub(crate) const MAX_LINE: usize = 16384;

/// The protocol version we speak: 1.2, as Dovecot 2.3.
pub(crate) const VERSION: (u32, u32) = (1, 2);

/// Escapes a value for a reply field.
fn escape_into(out: &mut Vec<u8>, value: &[u8]) {
    // Names almost never hold a byte to escape: copy them whole.
    if memchr::memchr3(b'\t', b'\n', b'\r', value).is_none()
        && memchr::memchr2(0, 1, value).is_none()
    {
        out.extend_from_slice(value);
        return;
    }
    for &b in value {
        match b {
            0x01 => out.extend_from_slice(b"\x011"),
            b'\t' => out.extend_from_slice(b"\x01t"),
            b'\r' => out.extend_from_slice(b"\x01r"),
            b'\n' => out.extend_from_slice(b"\x01n"),
            0 => out.extend_from_slice(b"\x010"),
            _ => out.push(b),
        }
    }
}

/// Undoes [`escape_into`]; `\x01` before any other byte yields that byte, a trailing lone `\x01`
/// is dropped (as Dovecot's `str_tabunescape`).
pub(crate) fn unescape(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.iter();
    while let Some(&b) = bytes.next() {
        if b != 0x01 {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'0') => out.push(0),
            Some(b'1') => out.push(0x01),
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(&other) => out.push(other),
            None => {}
        }
    }
    out
}

/// The server's handshake, sent whole on accept before the client says anything (Dovecot 2.3;
/// Exim waits for `DONE` before it sends `VERSION`): a `MECH` line for each (name, flag words)
/// of `mechs`, then `SPID`, `CUID`, `COOKIE`, `DONE`. `MECH` lines come before `SPID`: Postfix
/// takes a `SPID` with no `MECH` before it for an auth-master socket and gives up.
pub(crate) fn handshake<'a>(
    mechs: impl IntoIterator<Item = (&'a str, &'a [&'a str])>,
    spid: u32,
    cuid: u32,
    cookie: &[u8; 16],
) -> Vec<u8> {
    let mut out = format!("VERSION\t{}\t{}\n", VERSION.0, VERSION.1);
    for (name, flags) in mechs {
        out.push_str("MECH\t");
        out.push_str(name);
        for flag in flags {
            out.push('\t');
            out.push_str(flag);
        }
        out.push('\n');
    }
    out.push_str(&format!("SPID\t{spid}\nCUID\t{cuid}\nCOOKIE\t"));
    for b in cookie {
        out.push_str(&format!("{b:02x}"));
    }
    out.push_str("\nDONE\n");
    out.into_bytes()
}

/// A line from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientLine {
    /// `VERSION <major> <minor>`.
    Version(u32, u32),
    /// `CPID <pid>`.
    Cpid(u32),
    /// `AUTH ...`.
    Auth(SaslStart),
    /// `CONT <id> <base64>`.
    Cont(u32, Input),
    /// `CANCEL <id>`.
    Cancel(u32),
}

/// The numbered fields of the client's lines, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumberField {
    /// `VERSION`'s major version.
    VersionMajor,
    /// `VERSION`'s minor version.
    VersionMinor,
    /// `CPID`'s process id.
    Cpid,
    /// `AUTH`'s request id.
    AuthId,
    /// `CONT`'s request id.
    ContId,
    /// `CANCEL`'s request id.
    CancelId,
}

impl std::fmt::Display for NumberField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NumberField::VersionMajor => "VERSION major",
            NumberField::VersionMinor => "VERSION minor",
            NumberField::Cpid => "CPID",
            NumberField::AuthId => "AUTH id",
            NumberField::ContId => "CONT id",
            NumberField::CancelId => "CANCEL id",
        })
    }
}

/// A line that ends the connection, as Dovecot disconnects for it; the text is logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProtocolError {
    /// A number is missing.
    #[error("{0} missing")]
    Missing(NumberField),
    /// A number is not one.
    #[error("{0} is not a number")]
    NotANumber(NumberField),
    /// A number does not fit 32 bits.
    #[error("{0} is out of range")]
    OutOfRange(NumberField),
    /// `CPID 0`.
    #[error("CPID 0")]
    CpidZero,
    /// `AUTH 0 ...`.
    #[error("AUTH id 0")]
    AuthIdZero,
    /// `AUTH <id>` and nothing more.
    #[error("AUTH without mechanism")]
    NoMechanism,
    /// Parameters after `resp=`, which must be last.
    #[error("AUTH parameters after 'resp'")]
    ParametersAfterResp,
    /// `AUTH` without `service=`.
    #[error("AUTH without service=")]
    NoService,
    /// `CONT <id>` and nothing more.
    #[error("CONT without data")]
    ContWithoutData,
    /// A command this protocol does not have.
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// The first line is not `VERSION`.
    #[error("the first line is not VERSION")]
    NoVersion,
    /// A major version other than 1.
    #[error("protocol major version {0} is not 1")]
    MajorVersion(u32),
    /// Something other than `CPID` after `VERSION`.
    #[error("CPID expected after VERSION")]
    NoCpid,
    /// `VERSION` or `CPID` again.
    #[error("handshake command after the handshake")]
    HandshakeAgain,
}

fn number(field: Option<&[u8]>, what: NumberField) -> Result<u32, ProtocolError> {
    let field = field.ok_or(ProtocolError::Missing(what))?;
    if field.is_empty() || !field.iter().all(u8::is_ascii_digit) {
        return Err(ProtocolError::NotANumber(what));
    }
    // ASCII digits only, so this is UTF-8.
    std::str::from_utf8(field)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(ProtocolError::OutOfRange(what))
}

/// Base64 from the client: absent, data, or undecodable.
fn decode(data: &[u8]) -> Input {
    match BASE64.decode(data) {
        Ok(bytes) => Input::Data(bytes),
        Err(_) => Input::Undecodable,
    }
}

/// Parses one line (without its LF; a trailing CR is ignored). `client_minor` is the minor
/// version the client sent (it changes what an empty `resp=` means).
pub(crate) fn parse_line(line: &[u8], client_minor: u32) -> Result<ClientLine, ProtocolError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut fields = line.split(|&b| b == b'\t');
    let command = fields.next().unwrap_or_default();
    match command {
        b"VERSION" => {
            let major = number(fields.next(), NumberField::VersionMajor)?;
            let minor = number(fields.next(), NumberField::VersionMinor)?;
            Ok(ClientLine::Version(major, minor))
        }
        b"CPID" => match number(fields.next(), NumberField::Cpid)? {
            0 => Err(ProtocolError::CpidZero),
            pid => Ok(ClientLine::Cpid(pid)),
        },
        b"AUTH" => parse_auth(fields, client_minor).map(ClientLine::Auth),
        b"CONT" => {
            let id = number(fields.next(), NumberField::ContId)?;
            let data = fields.next().ok_or(ProtocolError::ContWithoutData)?;
            Ok(ClientLine::Cont(id, decode(data)))
        }
        b"CANCEL" => Ok(ClientLine::Cancel(number(
            fields.next(),
            NumberField::CancelId,
        )?)),
        other => Err(ProtocolError::UnknownCommand(
            String::from_utf8_lossy(other).into_owned(),
        )),
    }
}

fn parse_auth<'a>(
    mut fields: impl Iterator<Item = &'a [u8]>,
    client_minor: u32,
) -> Result<SaslStart, ProtocolError> {
    let id = number(fields.next(), NumberField::AuthId)?;
    if id == 0 {
        return Err(ProtocolError::AuthIdZero);
    }
    let mech = fields
        .next()
        .filter(|m| !m.is_empty())
        .ok_or(ProtocolError::NoMechanism)?;
    let mut service = None;
    let mut rip = None;
    let mut final_resp_ok = false;
    let mut initial = Input::Absent;
    let mut after_resp = false;
    for field in fields {
        if after_resp {
            return Err(ProtocolError::ParametersAfterResp);
        }
        let (name, value) = match field.iter().position(|&b| b == b'=') {
            Some(i) => (&field[..i], Some(&field[i + 1..])),
            None => (field, None),
        };
        match (name, value) {
            (b"service" | b"protocol", Some(v)) => service = Some(unescape(v)),
            (b"rip", Some(v)) if !v.is_empty() => rip = Some(unescape(v)),
            (b"final-resp-ok", _) => final_resp_ok = true,
            (b"resp", Some(v)) => {
                after_resp = true;
                // Postfix and Exim say minor 0 and send "resp=" for "no initial response".
                if !(v.is_empty() && client_minor < 2) {
                    initial = decode(v);
                }
            }
            // Unknown parameters (Postfix's "nologin", lip=, secured, ...) are ignored.
            _ => {}
        }
    }
    Ok(SaslStart {
        id,
        mech: String::from_utf8_lossy(mech).into_owned(),
        service: service.ok_or(ProtocolError::NoService)?,
        peer: Peer::new(rip),
        final_resp_ok,
        initial,
    })
}

/// A request, once the handshake is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// `AUTH`: start an exchange.
    Auth(SaslStart),
    /// `CONT`: the client's next step.
    Cont(u32, Input),
    /// `CANCEL`: forget a request.
    Cancel(u32),
}

/// The client's side of one connection: `VERSION` first (major 1), then `CPID`, then
/// requests; anything else in between ends the connection.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Session {
    minor: Option<u32>,
    cpid: bool,
}

impl Session {
    /// A connection that has sent nothing.
    pub(crate) fn new() -> Session {
        Session::default()
    }

    /// Whether `VERSION` and `CPID` have come.
    pub(crate) fn handshaken(&self) -> bool {
        self.cpid
    }

    /// Takes one line: `Ok(None)` for a handshake line, `Ok(Some)` for a request.
    pub(crate) fn read(&mut self, line: &[u8]) -> Result<Option<Request>, ProtocolError> {
        let parsed = parse_line(line, self.minor.unwrap_or(0))?;
        Ok(match (self.minor, self.cpid, parsed) {
            (None, _, ClientLine::Version(1, minor)) => {
                self.minor = Some(minor);
                None
            }
            (None, _, ClientLine::Version(major, _)) => {
                return Err(ProtocolError::MajorVersion(major))
            }
            (None, _, _) => return Err(ProtocolError::NoVersion),
            (Some(_), false, ClientLine::Cpid(_)) => {
                self.cpid = true;
                None
            }
            (Some(_), false, _) => return Err(ProtocolError::NoCpid),
            (Some(_), true, ClientLine::Auth(start)) => Some(Request::Auth(start)),
            (Some(_), true, ClientLine::Cont(id, input)) => Some(Request::Cont(id, input)),
            (Some(_), true, ClientLine::Cancel(id)) => Some(Request::Cancel(id)),
            (Some(_), true, _) => return Err(ProtocolError::HandshakeAgain),
        })
    }
}

/// Appends an answer as its line: `OK <id> user=<name> [resp=<base64>]`, `CONT <id>
/// <base64>` or `FAIL <id> [user=<name>] [code=<code>] [reason=<text>]`.
pub(crate) fn encode(answer: &Answer, out: &mut Vec<u8>) {
    // Written piece by piece, not with `write!`: one answer per request, and the formatting
    // machinery cost more than the rest of the encoding.
    let mut number = itoa::Buffer::new();
    match answer {
        Answer::Continue { id, data } => {
            out.extend_from_slice(b"CONT\t");
            out.extend_from_slice(number.format(*id).as_bytes());
            out.push(b'\t');
            out.extend_from_slice(BASE64.encode(data).as_bytes());
        }
        Answer::Success {
            id,
            user,
            final_data,
        } => {
            out.extend_from_slice(b"OK\t");
            out.extend_from_slice(number.format(*id).as_bytes());
            out.extend_from_slice(b"\tuser=");
            escape_into(out, user);
            if let Some(data) = final_data {
                out.extend_from_slice(b"\tresp=");
                out.extend_from_slice(BASE64.encode(data).as_bytes());
            }
        }
        Answer::Failure {
            id,
            user,
            code,
            reason,
        } => {
            out.extend_from_slice(b"FAIL\t");
            out.extend_from_slice(number.format(*id).as_bytes());
            if let Some(user) = user {
                out.extend_from_slice(b"\tuser=");
                escape_into(out, user);
            }
            if let Some(code) = code {
                out.extend_from_slice(b"\tcode=");
                out.extend_from_slice(code_name(*code).as_bytes());
            }
            if let Some(reason) = reason {
                out.extend_from_slice(b"\treason=");
                escape_into(out, reason.to_string().as_bytes());
            }
        }
    }
    out.push(b'\n');
}

/// Dovecot's names for the failure codes (`AUTH_CLIENT_FAIL_CODE_*`).
fn code_name(code: FailCode) -> &'static str {
    match code {
        FailCode::TempFail => "temp_fail",
        FailCode::UserDisabled => "user_disabled",
        FailCode::PassExpired => "pass_expired",
        FailCode::InvalidBase64 => "invalid_base64",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::FailReason;

    fn escape(value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        escape_into(&mut out, value);
        out
    }

    fn encoded(answer: Answer) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&answer, &mut out);
        out
    }

    #[test]
    fn escaping_round_trips_as_dovecot() {
        let raw = b"al\tice\x01\r\n\0x";
        let escaped = escape(raw);
        assert_eq!(escaped, b"al\x01tice\x011\x01r\x01n\x010x");
        assert_eq!(unescape(&escaped), raw);
        assert_eq!(unescape(b"a\x01zb\x01"), b"azb");
    }

    #[test]
    fn handshake_bytes() {
        let mechs: [(&str, &[&str]); 2] = [("PLAIN", &["plaintext"]), ("LOGIN", &["plaintext"])];
        let h = handshake(mechs, 42, 1, &[0xab; 16]);
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t42\nCUID\t1\n\
             COOKIE\tabababababababababababababababab\nDONE\n"
        );
    }

    #[test]
    fn postfix_and_doveadm_lines() {
        assert_eq!(
            parse_line(b"VERSION\t1\t0", 0).unwrap(),
            ClientLine::Version(1, 0)
        );
        assert_eq!(
            parse_line(b"CPID\t4242\r", 0).unwrap(),
            ClientLine::Cpid(4242)
        );
        // Postfix 3.7: minor 0, empty resp= means no initial response.
        let ClientLine::Auth(a) = parse_line(
            b"AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=192.0.2.7\tresp=",
            0,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (a.id, a.mech.as_str(), a.service.as_slice()),
            (1, "PLAIN", &b"smtp"[..])
        );
        assert_eq!(a.peer.text(), Some(&b"192.0.2.7"[..]));
        assert_eq!(a.initial, Input::Absent);
        // doveadm: minor 2, the IR present (decoded here).
        let ClientLine::Auth(a) = parse_line(
            b"AUTH\t1\tPLAIN\tservice=doveadm\tdebug\tresp=YWxpY2UAYWxpY2UAc2VjcmV0",
            2,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(a.initial, Input::Data(b"alice\0alice\0secret".to_vec()));
        let ClientLine::Auth(a) = parse_line(b"AUTH\t2\tLOGIN\tprotocol=imap\tresp=", 2).unwrap()
        else {
            panic!()
        };
        assert_eq!(a.initial, Input::Data(vec![]));
        assert_eq!(
            parse_line(b"CONT\t7\t", 2).unwrap(),
            ClientLine::Cont(7, Input::Data(vec![]))
        );
        assert_eq!(
            parse_line(b"CONT\t7\t=", 2).unwrap(),
            ClientLine::Cont(7, Input::Undecodable)
        );
        assert_eq!(parse_line(b"CANCEL\t7", 2).unwrap(), ClientLine::Cancel(7));
    }

    #[test]
    fn disconnect_cases() {
        for line in [
            &b"AUTH\t0\tPLAIN\tservice=smtp"[..],
            b"AUTH\tx\tPLAIN\tservice=smtp",
            b"AUTH\t1",
            b"AUTH\t1\tPLAIN",
            b"AUTH\t1\tPLAIN\tservice=smtp\tresp=AA==\tfoo=bar",
            b"HELLO",
            b"CPID\t0",
            b"CONT\t1",
            b"CANCEL\tx",
            b"VERSION\t1",
            b"AUTH\t-1\tPLAIN\tservice=smtp",
            b"AUTH\t99999999999\tPLAIN\tservice=smtp",
        ] {
            assert!(
                parse_line(line, 2).is_err(),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            parse_line(b"HELLO", 2).unwrap_err().to_string(),
            "unknown command \"HELLO\""
        );
    }

    #[test]
    fn the_handshake_comes_first() {
        let mut s = Session::new();
        assert_eq!(s.read(b"CPID\t1").unwrap_err(), ProtocolError::NoVersion);
        let mut s = Session::new();
        assert_eq!(
            s.read(b"VERSION\t2\t0").unwrap_err(),
            ProtocolError::MajorVersion(2)
        );
        let mut s = Session::new();
        assert_eq!(s.read(b"VERSION\t1\t2").unwrap(), None);
        assert!(!s.handshaken());
        assert_eq!(
            s.read(b"AUTH\t1\tPLAIN\tservice=smtp").unwrap_err(),
            ProtocolError::NoCpid
        );
        let mut s = Session::new();
        s.read(b"VERSION\t1\t0").unwrap();
        assert_eq!(s.read(b"CPID\t9").unwrap(), None);
        assert!(s.handshaken());
        assert_eq!(s.read(b"CANCEL\t3").unwrap(), Some(Request::Cancel(3)));
        // Minor 0 (Postfix): an empty resp= is no initial response.
        let Some(Request::Auth(start)) = s.read(b"AUTH\t1\tPLAIN\tservice=smtp\tresp=").unwrap()
        else {
            panic!()
        };
        assert_eq!(start.initial, Input::Absent);
        assert_eq!(
            s.read(b"VERSION\t1\t0").unwrap_err(),
            ProtocolError::HandshakeAgain
        );
    }

    #[test]
    fn replies() {
        assert_eq!(
            encoded(Answer::Success {
                id: 1,
                user: b"alice".to_vec(),
                final_data: None
            }),
            b"OK\t1\tuser=alice\n"
        );
        assert_eq!(
            encoded(Answer::Success {
                id: 2,
                user: b"al\tice".to_vec(),
                final_data: Some(b"v=1".to_vec())
            }),
            b"OK\t2\tuser=al\x01tice\tresp=dj0x\n"
        );
        assert_eq!(
            encoded(Answer::Continue {
                id: 3,
                data: b"Username:".to_vec()
            }),
            b"CONT\t3\tVXNlcm5hbWU6\n"
        );
        assert_eq!(
            encoded(Answer::failure(4, Some(b"bob".to_vec()))),
            b"FAIL\t4\tuser=bob\n"
        );
        assert_eq!(
            encoded(Answer::Failure {
                id: 5,
                user: None,
                code: Some(FailCode::InvalidBase64),
                reason: Some(FailReason::InitialNotBase64),
            }),
            b"FAIL\t5\tcode=invalid_base64\treason=Invalid base64 data in initial response\n"
        );
        assert_eq!(
            encoded(Answer::Failure {
                id: 6,
                user: Some(b"alice".to_vec()),
                code: Some(FailCode::TempFail),
                reason: None,
            }),
            b"FAIL\t6\tuser=alice\tcode=temp_fail\n"
        );
    }
}
