//! The part of IMAP (RFC 9051, RFC 3501) that `-a rimap` speaks, without I/O: the commands it
//! sends (`LOGIN`, `STARTTLS`) and a strict reader of the server's responses. A line that is
//! not an IMAP response is an error, which the passdb answers as a temporary failure, never a
//! success.

use zeroize::Zeroizing;

/// The tag of every command, Cyrus's (`auth_rimap.c`), so that the IMAP server's log reads
/// the same.
pub(crate) const TAG: &str = "saslauthd";

/// The longest response line read (a greeting with its capabilities is some 300 bytes).
pub(crate) const MAX_LINE: usize = 8192;

/// A response's status word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// `OK`.
    Ok,
    /// `NO`.
    No,
    /// `BAD`.
    Bad,
    /// `PREAUTH` (a greeting only).
    Preauth,
    /// `BYE` (untagged only).
    Bye,
}

/// One response line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Response<'a> {
    /// `* OK|NO|BAD|PREAUTH|BYE [code] text`.
    Status {
        /// The status.
        status: Status,
        /// The response code, between the brackets (`ALERT`, `CAPABILITY IMAP4rev1 ...`).
        code: Option<&'a str>,
        /// The human-readable text.
        text: &'a str,
    },
    /// `* CAPABILITY ...`: the capabilities, as sent.
    Capability(Vec<&'a str>),
    /// Other untagged data (`* 3 EXISTS`, `* ENABLED`), which a login does not need.
    Data,
    /// `+ text`: the server waits for a literal.
    Continue,
    /// `tag OK|NO|BAD [code] text`.
    Tagged {
        /// The tag.
        tag: &'a str,
        /// `Ok`, `No` or `Bad`.
        status: Status,
        /// The response code.
        code: Option<&'a str>,
        /// The text.
        text: &'a str,
    },
}

impl Response<'_> {
    /// The capabilities this response lists: `* CAPABILITY` or a `[CAPABILITY ...]` code.
    pub(crate) fn capabilities(&self) -> Option<Vec<&str>> {
        match self {
            Response::Capability(caps) => Some(caps.clone()),
            Response::Status {
                code: Some(code), ..
            }
            | Response::Tagged {
                code: Some(code), ..
            } => {
                let mut words = code.split(' ');
                let first = words.next()?;
                first
                    .eq_ignore_ascii_case("CAPABILITY")
                    .then(|| words.filter(|w| !w.is_empty()).collect())
            }
            _ => None,
        }
    }
}

/// Why bytes from the server are not an IMAP response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParseError {
    /// A line longer than [`MAX_LINE`].
    #[error("a response line longer than {MAX_LINE} bytes")]
    TooLong,
    /// A line that is not a response, and what is wrong with it.
    #[error("not an IMAP response ({0})")]
    Malformed(&'static str),
}

/// Reads the response at the front of `buf`: `Ok(None)` while its line is incomplete, else
/// the response and the bytes it took (its CRLF included).
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Response<'_>, usize)>, ParseError> {
    let Some(end) = memchr::memchr(b'\n', buf) else {
        return if buf.len() > MAX_LINE {
            Err(ParseError::TooLong)
        } else {
            Ok(None)
        };
    };
    if end + 1 > MAX_LINE {
        return Err(ParseError::TooLong);
    }
    let line = buf[..end]
        .strip_suffix(b"\r")
        .ok_or(ParseError::Malformed("a line that does not end in CRLF"))?;
    if line.iter().any(|&b| b == 0 || b == b'\r') {
        return Err(ParseError::Malformed("a NUL or a CR inside a line"));
    }
    let line =
        std::str::from_utf8(line).map_err(|_| ParseError::Malformed("a line that is not UTF-8"))?;
    if line.ends_with('}') && line.rfind('{').is_some_and(|at| is_literal(&line[at..])) {
        return Err(ParseError::Malformed(
            "a literal, which no login response has",
        ));
    }
    Ok(Some((response(line)?, end + 1)))
}

/// Whether `s` is a literal's announcement: `{N}`, or `{N+}` (LITERAL+ and LITERAL- write it so).
fn is_literal(s: &str) -> bool {
    let inner = &s[1..s.len() - 1];
    let digits = inner.strip_suffix('+').unwrap_or(inner);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn response(line: &str) -> Result<Response<'_>, ParseError> {
    if let Some(rest) = line.strip_prefix('+') {
        if !rest.is_empty() && !rest.starts_with(' ') {
            return Err(ParseError::Malformed("a continuation without a space"));
        }
        return Ok(Response::Continue);
    }
    let (tag, rest) = line
        .split_once(' ')
        .ok_or(ParseError::Malformed("a line without a tag and a status"))?;
    if tag == "*" {
        return untagged(rest);
    }
    if tag.is_empty() || !tag.bytes().all(is_tag_char) {
        return Err(ParseError::Malformed(
            "a tag with characters a tag cannot have",
        ));
    }
    let (word, text) = rest.split_once(' ').unwrap_or((rest, ""));
    let status = match status(word) {
        Some(s @ (Status::Ok | Status::No | Status::Bad)) => s,
        _ => return Err(ParseError::Malformed("a tagged line without OK, NO or BAD")),
    };
    let (code, text) = resp_text(text)?;
    Ok(Response::Tagged {
        tag,
        status,
        code,
        text,
    })
}

fn untagged(rest: &str) -> Result<Response<'_>, ParseError> {
    let (word, text) = rest.split_once(' ').unwrap_or((rest, ""));
    if word.is_empty() {
        return Err(ParseError::Malformed("an untagged line without a word"));
    }
    if let Some(status) = status(word) {
        let (code, text) = resp_text(text)?;
        return Ok(Response::Status { status, code, text });
    }
    if word.eq_ignore_ascii_case("CAPABILITY") {
        let caps: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
        if caps.iter().any(|c| !c.bytes().all(is_atom_char)) {
            return Err(ParseError::Malformed("a capability that is not an atom"));
        }
        return Ok(Response::Capability(caps));
    }
    // `* 3 EXISTS` or an extension's data: an atom or a number first.
    if word.bytes().all(is_atom_char) {
        return Ok(Response::Data);
    }
    Err(ParseError::Malformed(
        "untagged data that does not start with an atom",
    ))
}

fn status(word: &str) -> Option<Status> {
    const WORDS: [(&str, Status); 5] = [
        ("OK", Status::Ok),
        ("NO", Status::No),
        ("BAD", Status::Bad),
        ("PREAUTH", Status::Preauth),
        ("BYE", Status::Bye),
    ];
    WORDS
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(word))
        .map(|&(_, s)| s)
}

/// `[code] text` or `text` (some servers send no text at all).
fn resp_text(text: &str) -> Result<(Option<&str>, &str), ParseError> {
    let Some(coded) = text.strip_prefix('[') else {
        return Ok((None, text));
    };
    let (code, after) = coded
        .split_once(']')
        .ok_or(ParseError::Malformed("a response code without its ]"))?;
    if code.is_empty() {
        return Err(ParseError::Malformed("an empty response code"));
    }
    Ok((Some(code), after.strip_prefix(' ').unwrap_or(after)))
}

/// ATOM-CHAR (RFC 9051): any CHAR but `(){ %*"\]` and controls.
fn is_atom_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !b"(){%*\"\\]".contains(&b)
}

/// A tag's characters: ASTRING-CHAR but `+`.
fn is_tag_char(b: u8) -> bool {
    (is_atom_char(b) || b == b']') && b != b'+'
}

/// Whether `caps` has `name` (capabilities are case-insensitive).
pub(crate) fn has(caps: &[String], name: &str) -> bool {
    caps.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// `saslauthd STARTTLS`.
pub(crate) fn starttls() -> Vec<u8> {
    format!("{TAG} STARTTLS\r\n").into_bytes()
}

/// `saslauthd LOGIN user password` as the pieces to send, or `None` when a value has a NUL
/// (which IMAP cannot carry). A value of printable ASCII (and spaces, tabs) goes quoted, `"`
/// and `\` escaped; any other — CR or LF above all, which Cyrus sends raw inside its quotes,
/// so that a password could carry a second command — goes as a literal. With `LITERAL+` the
/// command is one piece; without, each piece after the first is sent once the server has
/// answered `+` to the literal that ends the one before.
pub(crate) fn login(
    user: &[u8],
    password: &[u8],
    literal_plus: bool,
) -> Option<Vec<Zeroizing<Vec<u8>>>> {
    if user.contains(&0) || password.contains(&0) {
        return None;
    }
    let mut pieces = vec![Zeroizing::new(format!("{TAG} LOGIN ").into_bytes())];
    for (i, value) in [user, password].into_iter().enumerate() {
        if i == 1 {
            pieces.last_mut()?.push(b' ');
        }
        let current = pieces.last_mut()?;
        if value
            .iter()
            .all(|&b| (0x20..0x7f).contains(&b) || b == b'\t')
        {
            current.push(b'"');
            for &b in value {
                if b == b'"' || b == b'\\' {
                    current.push(b'\\');
                }
                current.push(b);
            }
            current.push(b'"');
        } else {
            let plus = if literal_plus { "+" } else { "" };
            current.extend_from_slice(format!("{{{}{plus}}}\r\n", value.len()).as_bytes());
            if literal_plus {
                current.extend_from_slice(value);
            } else {
                pieces.push(Zeroizing::new(value.to_vec()));
            }
        }
    }
    pieces.last_mut()?.extend_from_slice(b"\r\n");
    Some(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &[u8]) -> Result<Response<'_>, ParseError> {
        parse(line).map(|r| r.expect("complete").0)
    }

    #[test]
    fn responses_dovecot_and_cyrus_send() {
        let greeting = b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN] Dovecot (Debian) ready.\r\n";
        let (r, used) = parse(greeting).unwrap().unwrap();
        assert_eq!(used, greeting.len());
        assert!(matches!(
            r,
            Response::Status {
                status: Status::Ok,
                text: "Dovecot (Debian) ready.",
                ..
            }
        ));
        let caps = r.capabilities().unwrap();
        assert!(caps.contains(&"LITERAL+") && caps.contains(&"STARTTLS"));
        assert_eq!(
            one(b"saslauthd NO [AUTHENTICATIONFAILED] Authentication failed.\r\n").unwrap(),
            Response::Tagged {
                tag: "saslauthd",
                status: Status::No,
                code: Some("AUTHENTICATIONFAILED"),
                text: "Authentication failed."
            }
        );
        assert!(matches!(
            one(b"saslauthd ok Logged in\r\n").unwrap(),
            Response::Tagged {
                status: Status::Ok,
                code: None,
                ..
            }
        ));
        assert_eq!(
            one(b"* CAPABILITY IMAP4rev1 LOGINDISABLED\r\n").unwrap(),
            Response::Capability(vec!["IMAP4rev1", "LOGINDISABLED"])
        );
        assert_eq!(one(b"* 3 EXISTS\r\n").unwrap(), Response::Data);
        assert_eq!(one(b"+ \r\n").unwrap(), Response::Continue);
        assert_eq!(one(b"+\r\n").unwrap(), Response::Continue);
        assert!(matches!(
            one(b"* BYE Server shutting down.\r\n").unwrap(),
            Response::Status {
                status: Status::Bye,
                ..
            }
        ));
        assert!(matches!(
            one(b"saslauthd OK\r\n").unwrap(),
            Response::Tagged { text: "", .. }
        ));
    }

    #[test]
    fn what_is_not_imap_is_an_error() {
        assert_eq!(parse(b"* OK partial").unwrap(), None);
        for bad in [
            &b"HTTP/1.1 400 Bad Request\r\n"[..],
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"220 mail.example.org ESMTP\r\n",
            b"* OK no CR\n",
            b"saslauthd MAYBE\r\n",
            b"saslauthd PREAUTH x\r\n",
            b"* OK [ALERT no end\r\n",
            b"* OK a\0b\r\n",
            b"* OK a\rb\r\n",
            b"* OK \xff\r\n",
            b"* FLAGS {5}\r\n",
            b"* \r\n",
            b"*\r\n",
            b"+x\r\n",
            b"a\"b OK\r\n",
            b"* (x)\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(&[b'*'; MAX_LINE + 1]), Err(ParseError::TooLong));
        let mut long = vec![b'x'; MAX_LINE];
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse(&long), Err(ParseError::TooLong));
    }

    #[test]
    fn login_quotes_what_it_can_and_sends_the_rest_as_literals() {
        let flat = |pieces: Vec<Zeroizing<Vec<u8>>>| -> Vec<String> {
            pieces
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect()
        };
        assert_eq!(
            flat(login(b"alice", br#"p"w\d"#, false).unwrap()),
            ["saslauthd LOGIN \"alice\" \"p\\\"w\\\\d\"\r\n"]
        );
        // A password that would end the command and start another.
        let injection = b"x\"\r\nsaslauthd LOGIN \"bob\" \"bobs-pw";
        assert_eq!(
            flat(login(b"alice", injection, false).unwrap()),
            [
                format!("saslauthd LOGIN \"alice\" {{{}}}\r\n", injection.len()),
                format!("{}\r\n", String::from_utf8_lossy(injection)),
            ]
        );
        assert_eq!(
            flat(login("jürgen".as_bytes(), b"pw", true).unwrap()),
            ["saslauthd LOGIN {7+}\r\njürgen \"pw\"\r\n"]
        );
        assert!(login(b"alice", b"secret\0junk", true).is_none());
        assert!(login(b"al\0ice", b"pw", true).is_none());
    }
}
