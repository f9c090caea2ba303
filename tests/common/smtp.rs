//! An SMTP client for the tests: whole sessions line by line, and swaks's AUTH outcome.

use std::io::{BufRead, BufReader, Write};
use std::process::Command;

/// Connects to `addr`, sends `commands` after the greeting, one at a time; every reply line,
/// in order (a closed connection ends the session early).
pub fn session(addr: (&str, u16), commands: &[&str]) -> Vec<String> {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut lines = Vec::new();
    // One (possibly multi-line) reply; false at EOF.
    let mut reply = |lines: &mut Vec<String>| loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        let line = line.trim_end().to_owned();
        let last = line.len() < 4 || line.as_bytes()[3] != b'-';
        lines.push(line);
        if last {
            return true;
        }
    };
    if !reply(&mut lines) {
        return lines;
    }
    for command in commands {
        if w.write_all(format!("{command}\r\n").as_bytes()).is_err() || !reply(&mut lines) {
            break;
        }
    }
    lines
}

/// Runs `swaks` (a prepared command naming the server) for AUTH `mech` on `port`; the SMTP
/// code it saw for AUTH (235, 535, 454, ...), or the whole output when there was none.
pub fn swaks_auth(swaks: Command, port: u16, mech: &str, user: &str, password: &str) -> String {
    let line = swaks_auth_reply(swaks, port, mech, user, password);
    match line.get(..3) {
        Some(code) if code.bytes().all(|b| b.is_ascii_digit()) => code.to_owned(),
        _ => line,
    }
}

/// [`swaks_auth`]'s whole reply line (`535 5.7.8 Error: authentication failed: ...`), or
/// the whole output when there was none.
pub fn swaks_auth_reply(
    mut swaks: Command,
    port: u16,
    mech: &str,
    user: &str,
    password: &str,
) -> String {
    let out = swaks
        .args(["--port", &port.to_string(), "--ehlo", "client.test"])
        .args([
            "--auth",
            mech,
            "--auth-user",
            user,
            "--auth-password",
            password,
            "--quit-after",
            "AUTH",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| {
            ["<-  ", "<~  ", "<** "]
                .iter()
                .find_map(|p| l.strip_prefix(p))
        })
        .find(|l| ["235", "535", "454", "503", "504"].contains(&l.get(..3).unwrap_or_default()))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("no AUTH reply in: {text}"))
}
