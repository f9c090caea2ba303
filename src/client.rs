//! A saslauthd-protocol client: `testsaslauthd-rs`, the load generator and the tests use it.
//! Blocking, like libsasl2's own client, with a timeout on every step (libsasl2 has none).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::protocol::saslauthd::{self, encode_request};

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

/// Reads one framed reply.
pub fn read_reply(stream: &mut impl Read) -> Result<Vec<u8>, ClientError> {
    let mut len = [0u8; 2];
    stream
        .read_exact(&mut len)
        .map_err(|_| ClientError::SizeRead)?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream
        .read_exact(&mut body)
        .map_err(|_| ClientError::Read)?;
    Ok(body)
}

/// Whether a reply body means success.
pub fn is_ok(body: &[u8]) -> bool {
    saslauthd::is_ok(body)
}
