//! What the tool binaries share: the notice before their usage, exit codes, and reading a password from a
//! terminal (no echo) or a pipe.

use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::termios::{self, LocalFlags, SetArg, Termios};
use zeroize::Zeroizing;

/// The notice the tools print where Cyrus's print theirs (before the usage text and the
/// version), with the same blank lines around it. Cyrus's credits Carnegie Mellon's Computing
/// Services, which wrote none of this product: ours names the product and its version.
pub const NOTICE: &str = concat!(
    "\nsaslauthd-rs ",
    env!("CARGO_PKG_VERSION"),
    ": a drop-in for Cyrus SASL's tools, written anew in Rust\n\
     (it contains no Cyrus SASL code).\n\n"
);

/// Exit codes of Cyrus's tools: `exit_sasl` exits with the negated SASL code.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// `SASL_FAIL`: generic failure, usage, database errors.
    pub const FAIL: u8 = 1;
    /// `SASL_BADPARAM`: empty or mismatched passwords, bad user names.
    pub const BADPARAM: u8 = 7;
}

/// The longest password `saslpasswd2` reads (one `read(0, buf, 2048)`).
pub const MAX_PASSWORD_LEN: usize = 2048;

/// Whether standard input is a terminal.
pub fn stdin_is_tty() -> bool {
    io::stdin().is_terminal()
}

/// Why no password could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadPasswordError {
    /// More than [`MAX_PASSWORD_LEN`] bytes.
    #[error("the password is longer than {MAX_PASSWORD_LEN} bytes")]
    TooLong,
    /// Reading failed.
    #[error("cannot read the password: {0}")]
    Io(#[from] io::Error),
}

/// Reads a password from a pipe: everything up to end of input, minus one trailing newline
/// (as Cyrus; a `\r` is kept, an inner newline too).
pub fn read_password_pipe(input: &mut impl Read) -> Result<Zeroizing<Vec<u8>>, ReadPasswordError> {
    let mut buf = Zeroizing::new(Vec::with_capacity(64));
    input
        .take(MAX_PASSWORD_LEN as u64 + 2)
        .read_to_end(&mut buf)?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    if buf.len() > MAX_PASSWORD_LEN {
        return Err(ReadPasswordError::TooLong);
    }
    Ok(buf)
}

/// Prompts on stdout and reads one line from the terminal on stdin with echo off (Cyrus's
/// `ECHONL` is kept, so the newline still shows). The terminal is restored even on error.
pub fn read_password_tty(prompt: &str) -> Result<Zeroizing<Vec<u8>>, ReadPasswordError> {
    // Echo goes off before the prompt appears: whatever is typed once the prompt shows is
    // never echoed.
    let stdin = io::stdin();
    let fd = stdin.as_fd();
    let _echo = EchoOff::new(fd)?;
    let mut stdout = io::stdout();
    stdout.write_all(prompt.as_bytes())?;
    stdout.flush()?;
    let mut line = Zeroizing::new(Vec::with_capacity(64));
    let mut byte = [0u8; 1];
    loop {
        // Unbuffered reads: nothing of the password stays in a std buffer.
        match nix::unistd::read(fd, &mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => {
                line.push(byte[0]);
                if line.len() > MAX_PASSWORD_LEN {
                    return Err(ReadPasswordError::TooLong);
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(io::Error::from(e).into()),
        }
    }
    Ok(line)
}

/// Turns terminal echo off for as long as it lives.
struct EchoOff<'fd> {
    fd: BorrowedFd<'fd>,
    saved: Termios,
}

impl<'fd> EchoOff<'fd> {
    fn new(fd: BorrowedFd<'fd>) -> io::Result<EchoOff<'fd>> {
        let saved = termios::tcgetattr(fd)?;
        let mut quiet = saved.clone();
        quiet.local_flags &= !(LocalFlags::ECHO
            | LocalFlags::ECHOE
            | LocalFlags::ECHOK
            | LocalFlags::ECHOCTL
            | LocalFlags::ECHOPRT
            | LocalFlags::ECHOKE);
        quiet.local_flags |= LocalFlags::ICANON | LocalFlags::ECHONL;
        termios::tcsetattr(fd, SetArg::TCSAFLUSH, &quiet)?;
        Ok(EchoOff { fd, saved })
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        // Nothing more to be done if the terminal went away.
        let _ = termios::tcsetattr(self.fd, SetArg::TCSAFLUSH, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_reads_strip_one_newline_only() {
        let read = |input: &[u8]| read_password_pipe(&mut &input[..]).map(|p| p.to_vec());
        assert_eq!(read(b"secret\n").unwrap(), b"secret");
        assert_eq!(read(b"two\nlines\n").unwrap(), b"two\nlines");
        assert_eq!(read(b"pw\r\n").unwrap(), b"pw\r");
        assert_eq!(read(b"x\n\n").unwrap(), b"x\n");
        assert_eq!(read(b"").unwrap(), b"");
        assert_eq!(read(&[b'a'; 2048]).unwrap().len(), 2048);
        assert!(matches!(
            read(&[b'a'; 2049]),
            Err(ReadPasswordError::TooLong)
        ));
    }
}

/// What `-v` says about a sasldb2 file: its format (or why it cannot be read), and the format
/// a new file would get, with the reason.
pub fn describe_sasldb(path: &std::path::Path, new_format: Option<crate::sasldb::Kind>) -> String {
    use crate::sasldb::{host, Store};
    let file = match Store::open_for_listing(path) {
        Ok(store) => format!("{}: {}", path.display(), store.describe()),
        Err(crate::sasldb::SasldbError::Missing(_)) => {
            format!("{}: no such file yet", path.display())
        }
        Err(e) => e.to_string(),
    };
    let new = match new_format {
        Some(kind) => format!("new sasldb files: {kind} (as configured)"),
        None => {
            let host = host::new_file_kind();
            format!("new sasldb files: {} ({})", host.kind, host.why)
        }
    };
    format!("{file}\n{new}")
}

/// Why the tools could not take their settings from the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum SettingsFileError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", file.display())]
    Read {
        /// The file.
        file: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not TOML.
    #[error("{}: {message}", file.display())]
    Toml {
        /// The file.
        file: std::path::PathBuf,
        /// The parser's words.
        message: String,
    },
    /// `sasldb_format` names no format.
    #[error("{}: sasldb_format: {source}", file.display())]
    Format {
        /// The file.
        file: std::path::PathBuf,
        /// The format's error.
        source: crate::sasldb::UnknownKind,
    },
}

/// The sasldb settings of the daemon's TOML configuration file that the tools share:
/// `sasldb` (the file) and `sasldb_format` (the format of a new file). Other keys are the
/// daemon's and are not looked at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SasldbSettings {
    /// `sasldb = "/etc/sasldb2"`.
    pub path: Option<std::path::PathBuf>,
    /// `sasldb_format = "bdb"`.
    pub format: Option<crate::sasldb::Kind>,
}

impl SasldbSettings {
    /// Reads the settings from the configuration file at `path`.
    pub fn load(path: &std::path::Path) -> Result<SasldbSettings, SettingsFileError> {
        #[derive(serde::Deserialize)]
        struct File {
            sasldb: Option<std::path::PathBuf>,
            sasldb_format: Option<String>,
        }
        let file = || path.to_owned();
        let text = std::fs::read_to_string(path).map_err(|source| SettingsFileError::Read {
            file: file(),
            source,
        })?;
        let parsed: File = toml::from_str(&text).map_err(|e| SettingsFileError::Toml {
            file: file(),
            message: e.message().to_owned(),
        })?;
        let format = parsed
            .sasldb_format
            .map(|f| f.parse())
            .transpose()
            .map_err(|source| SettingsFileError::Format {
                file: file(),
                source,
            })?;
        Ok(SasldbSettings {
            path: parsed.sasldb,
            format,
        })
    }
}

#[cfg(test)]
mod settings_tests {
    use super::*;

    #[test]
    fn the_tools_read_their_two_keys_and_ignore_the_daemons() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("saslauthd-rs.toml");
        std::fs::write(
            &path,
            "passdb = \"sasldb\"\nsasldb = \"/srv/sasldb2\"\nsasldb_format = \"gdbm\"\nworkers = 3\n",
        )
        .unwrap();
        let settings = SasldbSettings::load(&path).unwrap();
        assert_eq!(
            settings.path.as_deref(),
            Some(std::path::Path::new("/srv/sasldb2"))
        );
        assert_eq!(settings.format, Some(crate::sasldb::Kind::Gdbm));
        std::fs::write(&path, "sasldb_format = \"ndbm\"\n").unwrap();
        let err = SasldbSettings::load(&path).unwrap_err().to_string();
        assert!(err.contains("unknown sasldb format \"ndbm\""), "{err}");
    }
}

/// The option tables of the tools: what their parsers accept, and what their manual pages
/// and completions say (`crate::manual`).
pub mod options {
    use crate::getopt::{ArgKind, OptDef};

    /// `--format`'s values: the sasldb formats' names.
    fn formats() -> Vec<&'static str> {
        crate::sasldb::Kind::ALL.iter().map(|k| k.name()).collect()
    }

    /// `saslpasswd2-rs`, Cyrus's `saslpasswd2` flags and two of ours.
    pub const SASLPASSWD2: &[OptDef] = &[
        OptDef::flag(
            Some('p'),
            None,
            "Pipe mode: no prompt, the password is read on stdin.",
        ),
        OptDef::flag(Some('c'), None, "Create the account (set its password)."),
        OptDef::flag(Some('d'), None, "Disable: delete the account's entries."),
        OptDef::flag(
            Some('n'),
            None,
            "Do not set the plaintext userPassword (only the mechanism-specific secrets).",
        ),
        OptDef::with(
            Some('f'),
            None,
            "sasldb",
            ArgKind::File,
            "Use this file as the sasldb (default /etc/sasldb2).",
        ),
        OptDef::with(
            Some('a'),
            None,
            "appname",
            ArgKind::Any,
            "Use appname as the application name (accepted as Cyrus does).",
        ),
        OptDef::with(
            Some('u'),
            None,
            "DOM",
            ArgKind::Any,
            "Use DOM as the user's domain (realm); default: the host name.",
        ),
        OptDef::flag(
            Some('v'),
            Some("version"),
            "Print the version and the sasldb's format, and exit.",
        ),
        OptDef::flag(Some('h'), None, "Print the usage and exit 1 (as Cyrus)."),
        OptDef::flag(Some('?'), None, "The same."),
        OptDef::with(
            None,
            Some("format"),
            "format",
            ArgKind::OneOf(formats),
            "The format of a new file (default: the one this host's libsasl2 reads); an \
             existing file keeps its own.",
        ),
        OptDef::with(
            None,
            Some("config"),
            "file",
            ArgKind::File,
            "Read sasldb and sasldb_format from saslauthd-rs's configuration file.",
        ),
    ];

    /// `sasldblistusers2-rs`.
    pub const SASLDBLISTUSERS2: &[OptDef] = &[
        OptDef::with(
            Some('f'),
            None,
            "sasldb",
            ArgKind::File,
            "Use this file as the sasldb (default /etc/sasldb2; also the one operand).",
        ),
        OptDef::flag(
            Some('v'),
            Some("version"),
            "Print the version and the sasldb's format, and exit.",
        ),
        OptDef::flag(Some('h'), None, "Print the usage and exit 1 (as Cyrus)."),
        OptDef::flag(Some('?'), None, "The same."),
        OptDef::flag(
            None,
            Some("json"),
            "Print a JSON array of {\"authid\", \"realm\", \"property\"} objects instead.",
        ),
    ];

    /// `saslauthd-rs-ctl`.
    pub const CTL: &[OptDef] = &[
        OptDef::with(
            Some('m'),
            None,
            "path",
            ArgKind::Dir,
            "The daemon's run directory (default /run/saslauthd).",
        ),
        OptDef::with(
            None,
            Some("service"),
            "service",
            ArgKind::Any,
            "For test: the service the check is for (default smtp).",
        ),
        OptDef::with(
            None,
            Some("realm"),
            "realm",
            ArgKind::Any,
            "For test: the realm (default: the daemon's).",
        ),
        OptDef::with(
            None,
            Some("count"),
            "n",
            ArgKind::Any,
            "For top: stop after this many screens (default: until interrupted).",
        ),
        OptDef::with(
            Some('s'),
            None,
            "scheme",
            ArgKind::Any,
            "For pw: the scheme (default ARGON2ID; -l lists them).",
        ),
        OptDef::with(
            Some('u'),
            None,
            "user",
            ArgKind::Any,
            "For pw: the user, for schemes that hash it in (DIGEST-MD5).",
        ),
        OptDef::with(
            Some('p'),
            None,
            "password",
            ArgKind::Any,
            "For pw: the password (default: asked on the terminal, or a line of stdin).",
        ),
        OptDef::with(
            Some('t'),
            None,
            "hash",
            ArgKind::Any,
            "For pw: test the password against this value instead of making one.",
        ),
        OptDef::flag(Some('l'), None, "For pw: list the schemes it makes."),
        OptDef::flag(Some('h'), Some("help"), "The usage."),
        OptDef::flag(None, Some("version"), "The version."),
    ];

    /// `testsaslauthd-rs`.
    pub const TESTSASLAUTHD: &[OptDef] = &[
        OptDef::with(
            Some('u'),
            None,
            "username",
            ArgKind::User,
            "The user name (required).",
        ),
        OptDef::with(
            Some('p'),
            None,
            "password",
            ArgKind::Any,
            "The password (required; visible to other local users in the process list).",
        ),
        OptDef::with(
            Some('r'),
            None,
            "realm",
            ArgKind::Any,
            "The realm (default: empty).",
        ),
        OptDef::with(
            Some('s'),
            None,
            "servicename",
            ArgKind::Any,
            "The service (default imap).",
        ),
        OptDef::with(
            Some('f'),
            None,
            "socket path",
            ArgKind::File,
            "The daemon's socket (default /run/saslauthd/mux).",
        ),
        OptDef::with(
            Some('R'),
            None,
            "repeatnum",
            ArgKind::Any,
            "Ask this many times.",
        ),
        OptDef::with(
            Some('a'),
            None,
            "clientaddr",
            ArgKind::Any,
            "Send this client address (the protocol's fifth field).",
        ),
        OptDef::flag(Some('h'), None, "Print the usage and exit 1 (as Cyrus)."),
        OptDef::flag(Some('?'), None, "The same."),
        OptDef::flag(None, Some("version"), "Print the version and exit."),
    ];

    /// `sasldb-convert-rs`.
    pub const SASLDB_CONVERT: &[OptDef] = &[
        OptDef::with(
            None,
            Some("to"),
            "format",
            ArgKind::OneOf(formats),
            "The new file's format (default: what the host's libsasl2 reads).",
        ),
        OptDef::flag(
            None,
            Some("replace"),
            "Replace DEST if it exists (keeping its mode, owner and group).",
        ),
        OptDef::flag(None, Some("in-place"), "Replace FILE with its conversion."),
        OptDef::flag(Some('v'), Some("version"), "Print the version and exit."),
        OptDef::flag(Some('h'), None, "Print the usage and exit 1."),
        OptDef::flag(Some('?'), None, "The same."),
    ];
}
