//! Connections of the saslauthd protocol on `<run_dir>/mux`: read one request within the
//! deadline, ask the driver, write the reply, close. The request's bounds (256 bytes a field,
//! five fields) are the codec's; the verdict is the driver's.

use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{bind_socket, serve, Limits};
use crate::auth::metrics::Protocol;
use crate::auth::{Live, Via};
use crate::protocol::saslauthd::{self, DecodeError, MAX_REQUEST_LEN};

/// Binds `<run_dir>/mux` with `mode`, non-blocking, ready for `tokio::net::UnixListener::from_std`.
pub fn bind(run_dir: &Path, mode: u32) -> io::Result<std::os::unix::net::UnixListener> {
    bind_socket(&saslauthd::socket_path(run_dir), mode, None)
}

/// Serves the saslauthd protocol on `listener` until `shutdown` completes.
pub async fn serve_saslauthd<L: super::Listen>(
    listener: L,
    auth: Arc<Live>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let read_timeout = limits.read_timeout;
    let counts = auth
        .current()
        .metrics()
        .listener("saslauthd", listener.name());
    // A connection here lives one request, within the read timeout: none is worth evicting.
    serve(
        listener,
        counts,
        limits,
        shutdown,
        || false,
        move |stream, token, slot| {
            handle_connection(stream, auth.current(), read_timeout, token, slot)
        },
    )
    .await
}

/// One connection: read one request within the deadline, answer it, close.
async fn handle_connection<S: super::Connection>(
    mut stream: S,
    auth: Arc<crate::auth::Authenticator>,
    read_timeout: Duration,
    token: Arc<CancellationToken>,
    _slot: super::Slot,
) {
    let (auth, token) = (&auth, &*token);
    let deadline = Instant::now() + read_timeout;
    // On the heap and small: the connection's future is moved into its task whole, and real
    // requests are a few dozen bytes. It grows, up to MAX_REQUEST_LEN, for long ones.
    let mut buf: Vec<u8> = Vec::with_capacity(128);
    let decoded = loop {
        match saslauthd::decode_request(&buf) {
            Ok(Some(decoded)) => break decoded,
            Ok(None) => {}
            Err(e @ DecodeError::FieldTooLong { .. }) => {
                tracing::warn!("{e}");
                let _ = write_reply(&mut stream, saslauthd::FIELD_TOO_LONG_REPLY, deadline).await;
                return;
            }
        }
        // decode_request needs at most MAX_REQUEST_LEN bytes to decide, so the buffer is
        // shorter than that here. What has arrived is taken at once (the usual case: clients
        // send the whole request in one write right after connecting); only a client that
        // has sent nothing yet is waited for, with the deadline and the shutdown token.
        if buf.len() == buf.capacity() {
            buf.reserve_exact(MAX_REQUEST_LEN - buf.len());
        }
        match stream.try_read_buf(&mut buf) {
            Ok(0) => return, // EOF before a whole request: Cyrus closes without a reply.
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::debug!("read failed: {e}");
                return;
            }
        }
        // Boxed: the timer and the token's waiter exist only for clients that make us wait.
        let waited = Box::pin(async {
            tokio::select! {
                biased;
                _ = token.cancelled() => None,
                readable = tokio::time::timeout_at(deadline, stream.readable()) => Some(readable),
            }
        });
        match waited.await {
            None => return,
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => {
                tracing::debug!("read failed: {e}");
                return;
            }
            Some(Err(_)) => {
                tracing::debug!("no whole request within {read_timeout:?}; closing");
                return;
            }
        }
    };
    let (request, password) = decoded;
    // The request buffer held the password; wipe it before answering.
    zeroize::Zeroize::zeroize(&mut buf);
    let in_flight = auth.metrics().in_flight(Protocol::Saslauthd);
    let decision = auth.verify_plain(&request, password, Via::SASLAUTHD).await;
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    let reply = saslauthd::reply_for(&decision.outcome, auth.passdb_kind()).encode();
    // Answered: no longer in flight once the reply is decided, so that a client that has read
    // it (and scrapes next) never sees it still counted.
    drop(in_flight);
    if let Err(e) = write_reply(&mut stream, &reply, deadline).await {
        tracing::debug!("reply not sent: {e}");
    }
}

async fn write_reply<S: super::Connection>(
    stream: &mut S,
    reply: &[u8],
    deadline: Instant,
) -> io::Result<()> {
    // A reply is a few bytes and nearly always fits the socket buffer at once; the deadline
    // only guards against a peer whose buffer is full.
    let reply = match stream.try_write(reply) {
        Ok(n) if n == reply.len() => return Ok(()),
        Ok(n) => &reply[n..],
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => reply,
        Err(e) => return Err(e),
    };
    let write_deadline = deadline.max(Instant::now() + Duration::from_secs(1));
    Box::pin(tokio::time::timeout_at(
        write_deadline,
        stream.write_all(reply),
    ))
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))?
}
