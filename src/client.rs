//! Clients of both protocols, for `testsaslauthd-rs`, the load generator and the tests.
//! Blocking, like libsasl2's own client, with a timeout on every step (libsasl2 has none).
//!
//! - [`query`]: one saslauthd-protocol request, as libsasl2 and `testsaslauthd` send it.
//! - [`AuthClient`]: a Dovecot auth-client connection, line by line, as Postfix and
//!   `doveadm` hold one. (The SCRAM client side is `mech::ScramClient`.)

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::saslauthd::{self, encode_request};

/// Where Cyrus's clients look for the daemon: `/run/saslauthd/mux`.
pub fn default_socket() -> PathBuf {
    saslauthd::socket_path(Path::new(saslauthd::DEFAULT_RUN_DIR))
}

/// What to send.
#[derive(Debug, Clone, Default)]
pub struct Query<'a> {
    /// The user name.
    pub login: &'a [u8],
    /// The password.
    pub password: &'a [u8],
    /// The service (`imap` is testsaslauthd's default).
    pub service: &'a [u8],
    /// The realm; empty for the default realm.
    pub realm: &'a [u8],
    /// A fifth field, as Cyrus master's clients send.
    pub client_addr: Option<&'a [u8]>,
}

/// Why a query got no answer; the texts are libsasl2's and testsaslauthd's.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("connect() : {0}")]
    Connect(io::Error),
    /// A field does not fit the protocol.
    #[error("saslauthd request too large")]
    TooLarge,
    /// The request could not be sent.
    #[error("write failed: {0}")]
    Write(io::Error),
    /// The connection closed before the length of the reply arrived.
    #[error("size read failed")]
    SizeRead,
    /// The reply was cut short or could not be read.
    #[error("read failed")]
    Read,
}

/// Sends one query and returns the reply body (`OK`, `NO ...`).
pub fn query(socket: &Path, q: &Query<'_>, timeout: Duration) -> Result<Vec<u8>, ClientError> {
    let request = encode_request(q.login, q.password, q.service, q.realm, q.client_addr)
        .map_err(|_| ClientError::TooLarge)?;
    let mut stream = UnixStream::connect(socket).map_err(ClientError::Connect)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(ClientError::Write)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(ClientError::Write)?;
    stream.write_all(&request).map_err(ClientError::Write)?;
    read_reply(&mut stream)
}

/// Reads one framed reply and returns its body.
fn read_reply(stream: &mut impl Read) -> Result<Vec<u8>, ClientError> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(body) = saslauthd::decode_reply(&buf) {
            return Ok(body.to_vec());
        }
        match stream.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ if buf.len() < 2 => return Err(ClientError::SizeRead),
            _ => return Err(ClientError::Read),
        }
    }
}

/// Whether a reply body means success.
pub fn is_ok(body: &[u8]) -> bool {
    saslauthd::is_ok(body)
}

/// A socket read as Postfix reads its Dovecot auth connection (`timed_read`): `poll` for
/// input within the deadline, then `read`. A thread that sleeps in `recv` instead is woken
/// each time the server reads what it sent (the socket's write space wakes every sleeper on
/// it), which costs the server's side a wakeup per request that Postfix never asks of it.
struct Polled {
    stream: UnixStream,
    timeout: Duration,
}

impl Read for Polled {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let within = PollTimeout::try_from(self.timeout).unwrap_or(PollTimeout::MAX);
        loop {
            let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, within) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!("nothing to read within {:?}", self.timeout),
                    ))
                }
                Ok(_) => return self.stream.read(buf),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A connection to a Dovecot auth socket that has read the server's handshake.
pub struct AuthClient {
    reader: BufReader<Polled>,
    writer: UnixStream,
    handshake: String,
}

impl AuthClient {
    /// Connects and reads the handshake through `DONE`; every read waits `timeout` at most.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<AuthClient> {
        let stream = UnixStream::connect(path)?;
        let writer = stream.try_clone()?;
        let mut reader = BufReader::new(Polled { stream, timeout });
        let mut handshake = String::new();
        while !handshake.ends_with("DONE\n") {
            if reader.read_line(&mut handshake)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF in the handshake after {handshake:?}"),
                ));
            }
        }
        Ok(AuthClient {
            reader,
            writer,
            handshake,
        })
    }

    /// The server's handshake, `VERSION` to `DONE`.
    pub fn handshake(&self) -> &str {
        &self.handshake
    }

    /// Sends text as it is (lines with their LF).
    pub fn send(&mut self, text: &str) -> io::Result<()> {
        self.writer.write_all(text.as_bytes())
    }

    /// The next line, with its LF; empty at EOF.
    pub fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        Ok(line)
    }

    /// The next line as bytes (the server returns user names as the client gave them).
    pub fn line_bytes(&mut self) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line)?;
        Ok(line)
    }

    /// Sends a line and reads the answer; EOF is an error.
    pub fn ask(&mut self, line: &str) -> io::Result<String> {
        self.send(line)?;
        let answer = self.line()?;
        if answer.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(answer)
    }

    /// Another handle for writing, for a client that writes from another thread.
    pub fn writer(&self) -> io::Result<UnixStream> {
        self.writer.try_clone()
    }

    /// Whether the server closes the connection within `within` without sending more.
    pub fn closed(&mut self, within: Duration) -> bool {
        self.reader.get_mut().timeout = within;
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            // Closed while our unread lines were still queued on its side.
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }
}

/// Sends one command line to the daemon's admin socket (`<run_dir>/admin`) and returns its
/// whole answer (the daemon closes the connection after it).
pub fn admin(socket: &Path, command: &str, timeout: Duration) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(command.as_bytes())?;
    stream.write_all(b"\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}
