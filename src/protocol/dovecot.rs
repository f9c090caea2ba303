//! Dovecot's auth-client protocol, version 1.2 (Dovecot 2.3 `auth-client-connection.c`,
//! `auth-request-handler.c`), as Postfix (`smtpd_sasl_type = dovecot`), Exim and `doveadm`
//! speak it. Pure parsing and encoding; the connection lives in `server.rs`.
//!
//! Lines end with LF (a CR before it is tolerated); fields are separated by TAB; values are
//! escaped with 0x01 (`\x01 1` = 0x01, `\x01 t` = TAB, `\x01 r` = CR, `\x01 n` = LF, `\x01 0`
//! = NUL), not backslashes.

use std::fmt;

/// The longest line accepted, LF included (`AUTH_CLIENT_MAX_LINE_LENGTH`); longer: disconnect.
pub const MAX_LINE: usize = 16384;

/// The protocol version we speak: 1.2, as Dovecot 2.3.
pub const VERSION: (u32, u32) = (1, 2);

/// Escapes a value for a reply field.
pub fn escape(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
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
    out
}

/// Undoes [`escape`]; `\x01` before any other byte yields that byte, a trailing lone `\x01`
/// is dropped (as Dovecot's `str_tabunescape`).
pub fn unescape(value: &[u8]) -> Vec<u8> {
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

/// A mechanism as advertised: its name and Dovecot's flag words, in Dovecot's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MechInfo {
    /// The SASL name (`PLAIN`).
    pub name: &'static str,
    /// Flag words (`plaintext`, `dictionary`, `active`, `mutual-auth`).
    pub flags: &'static [&'static str],
}

/// The server's handshake, sent whole on accept before the client says anything (Dovecot 2.3;
/// Exim waits for `DONE` before it sends `VERSION`). `MECH` lines come before `SPID`: Postfix
/// takes a `SPID` with no `MECH` before it for an auth-master socket and gives up.
pub fn handshake(mechs: &[MechInfo], spid: u32, cuid: u32, cookie: &[u8; 16]) -> Vec<u8> {
    let mut out = format!("VERSION\t{}\t{}\n", VERSION.0, VERSION.1);
    for mech in mechs {
        out.push_str("MECH\t");
        out.push_str(mech.name);
        for flag in mech.flags {
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

/// An `AUTH` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The request id (non-zero).
    pub id: u32,
    /// The mechanism name as sent (matched case-insensitively).
    pub mech: String,
    /// `service=` (2.4: `protocol=`).
    pub service: Vec<u8>,
    /// `rip=`, the SMTP client's address, when sent and not empty.
    pub rip: Option<Vec<u8>>,
    /// `final-resp-ok`: the server's last data may ride on `OK` as `resp=`.
    pub final_resp_ok: bool,
    /// The initial response: `None` when absent (or `resp=` from a client of minor < 2, as
    /// Postfix and Exim send it), otherwise the base64 text (possibly empty).
    pub resp: Option<Vec<u8>>,
}

/// A line from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientLine {
    /// `VERSION <major> <minor>`.
    Version(u32, u32),
    /// `CPID <pid>`.
    Cpid(u32),
    /// `AUTH ...`.
    Auth(Auth),
    /// `CONT <id> <base64>`.
    Cont(u32, Vec<u8>),
    /// `CANCEL <id>`.
    Cancel(u32),
}

/// A line that ends the connection, as Dovecot disconnects for it; the text is logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(text: impl Into<String>) -> ProtocolError {
    ProtocolError(text.into())
}

fn number(field: Option<&[u8]>, what: &str) -> Result<u32, ProtocolError> {
    let field = field.ok_or_else(|| bad(format!("{what} missing")))?;
    let text = std::str::from_utf8(field).map_err(|_| bad(format!("{what} is not a number")))?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("{what} is not a number")));
    }
    text.parse()
        .map_err(|_| bad(format!("{what} is out of range")))
}

/// Parses one line (without its LF; a trailing CR is ignored). `client_minor` is the minor
/// version the client sent (it changes what an empty `resp=` means).
pub fn parse_line(line: &[u8], client_minor: u32) -> Result<ClientLine, ProtocolError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut fields = line.split(|&b| b == b'\t');
    let command = fields.next().unwrap_or_default();
    match command {
        b"VERSION" => {
            let major = number(fields.next(), "VERSION major")?;
            let minor = number(fields.next(), "VERSION minor")?;
            Ok(ClientLine::Version(major, minor))
        }
        b"CPID" => {
            let pid = number(fields.next(), "CPID")?;
            if pid == 0 {
                return Err(bad("CPID 0"));
            }
            Ok(ClientLine::Cpid(pid))
        }
        b"AUTH" => parse_auth(fields, client_minor).map(ClientLine::Auth),
        b"CONT" => {
            let id = number(fields.next(), "CONT id")?;
            let data = fields.next().ok_or_else(|| bad("CONT without data"))?;
            Ok(ClientLine::Cont(id, data.to_vec()))
        }
        b"CANCEL" => Ok(ClientLine::Cancel(number(fields.next(), "CANCEL id")?)),
        other => Err(bad(format!(
            "unknown command {:?}",
            String::from_utf8_lossy(other)
        ))),
    }
}

fn parse_auth<'a>(
    mut fields: impl Iterator<Item = &'a [u8]>,
    client_minor: u32,
) -> Result<Auth, ProtocolError> {
    let id = number(fields.next(), "AUTH id")?;
    if id == 0 {
        return Err(bad("AUTH id 0"));
    }
    let mech = fields
        .next()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("AUTH without mechanism"))?;
    let mut auth = Auth {
        id,
        mech: String::from_utf8_lossy(mech).into_owned(),
        service: Vec::new(),
        rip: None,
        final_resp_ok: false,
        resp: None,
    };
    let mut has_service = false;
    let mut after_resp = false;
    for field in fields {
        if after_resp {
            return Err(bad("AUTH parameters after 'resp'"));
        }
        let (name, value) = match field.iter().position(|&b| b == b'=') {
            Some(i) => (&field[..i], Some(&field[i + 1..])),
            None => (field, None),
        };
        match (name, value) {
            (b"service" | b"protocol", Some(v)) => {
                auth.service = unescape(v);
                has_service = true;
            }
            (b"rip", Some(v)) if !v.is_empty() => auth.rip = Some(unescape(v)),
            (b"final-resp-ok", _) => auth.final_resp_ok = true,
            (b"resp", Some(v)) => {
                after_resp = true;
                // Postfix and Exim say minor 0 and send "resp=" for "no initial response".
                auth.resp = if v.is_empty() && client_minor < 2 {
                    None
                } else {
                    Some(v.to_vec())
                };
            }
            // Unknown parameters (Postfix's "nologin", lip=, secured, ...) are ignored.
            _ => {}
        }
    }
    if !has_service {
        return Err(bad("AUTH without service="));
    }
    Ok(auth)
}

/// `OK <id> user=<name>`, with the server's final data as `resp=` when there is some.
pub fn ok(id: u32, user: &[u8], final_data: Option<&str>) -> Vec<u8> {
    let mut out = format!("OK\t{id}\tuser=").into_bytes();
    out.extend_from_slice(&escape(user));
    if let Some(data) = final_data {
        out.extend_from_slice(b"\tresp=");
        out.extend_from_slice(data.as_bytes());
    }
    out.push(b'\n');
    out
}

/// `CONT <id> <base64>`.
pub fn cont(id: u32, base64: &str) -> Vec<u8> {
    format!("CONT\t{id}\t{base64}\n").into_bytes()
}

/// `FAIL <id> [user=<name>] [code=<code>] [reason=<text>]`.
pub fn fail(id: u32, user: Option<&[u8]>, code: Option<&str>, reason: Option<&str>) -> Vec<u8> {
    let mut out = format!("FAIL\t{id}").into_bytes();
    if let Some(user) = user {
        out.extend_from_slice(b"\tuser=");
        out.extend_from_slice(&escape(user));
    }
    if let Some(code) = code {
        out.extend_from_slice(format!("\tcode={code}").as_bytes());
    }
    if let Some(reason) = reason {
        out.extend_from_slice(b"\treason=");
        out.extend_from_slice(&escape(reason.as_bytes()));
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mechs = [
            MechInfo {
                name: "PLAIN",
                flags: &["plaintext"],
            },
            MechInfo {
                name: "LOGIN",
                flags: &["plaintext"],
            },
        ];
        let h = handshake(&mechs, 42, 1, &[0xab; 16]);
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
        assert_eq!(a.rip.as_deref(), Some(&b"192.0.2.7"[..]));
        assert_eq!(a.resp, None);
        // doveadm: minor 2, the IR present.
        let ClientLine::Auth(a) = parse_line(
            b"AUTH\t1\tPLAIN\tservice=doveadm\tdebug\tresp=YWxpY2UAYWxpY2UAc2VjcmV0",
            2,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(a.resp.as_deref(), Some(&b"YWxpY2UAYWxpY2UAc2VjcmV0"[..]));
        let ClientLine::Auth(a) = parse_line(b"AUTH\t2\tLOGIN\tprotocol=imap\tresp=", 2).unwrap()
        else {
            panic!()
        };
        assert_eq!(a.resp.as_deref(), Some(&b""[..]));
        assert_eq!(
            parse_line(b"CONT\t7\t", 2).unwrap(),
            ClientLine::Cont(7, vec![])
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
    }

    #[test]
    fn replies() {
        assert_eq!(ok(1, b"alice", None), b"OK\t1\tuser=alice\n");
        assert_eq!(
            ok(2, b"al\tice", Some("dj0x")),
            b"OK\t2\tuser=al\x01tice\tresp=dj0x\n"
        );
        assert_eq!(cont(3, "VXNlcm5hbWU6"), b"CONT\t3\tVXNlcm5hbWU6\n");
        assert_eq!(fail(4, Some(b"bob"), None, None), b"FAIL\t4\tuser=bob\n");
        assert_eq!(
            fail(
                5,
                None,
                Some("invalid_base64"),
                Some("Invalid base64 data in initial response")
            ),
            b"FAIL\t5\tcode=invalid_base64\treason=Invalid base64 data in initial response\n"
        );
    }
}
