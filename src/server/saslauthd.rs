//! Connections of the saslauthd protocol on `<run_dir>/mux`: read one request within the
//! deadline, ask the driver, write the reply, close. The request's bounds (256 bytes a field,
//! five fields) are the codec's; the verdict is the driver's.

use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncWrite, AsyncWriteExt, Interest};
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{serve, Limits};
use crate::auth::{Live, Via};
use crate::metrics::{ListenerCounts, Protocol};
use crate::protocol::saslauthd::{self, DecodeError, MAX_REQUEST_LEN};

/// The mux socket's listener. Its connections stay out of the reactor until one must be
/// waited for: a client of this protocol writes its whole request right after connecting
/// (libsasl2 does), so nearly every connection is read, answered and closed without being
/// added to epoll and taken out again: two system calls of the eight a request cost. One that
/// must be waited for is added then, with the same descriptor (the connection budget counts
/// one a connection).
#[derive(Debug)]
pub struct MuxListener(AsyncFd<std::os::unix::net::UnixListener>);

impl MuxListener {
    /// Serves `listener` (from [`super::serving::bind`], or the service manager's). Call inside the runtime.
    #[allow(unsafe_code)]
    pub fn new(listener: std::os::unix::net::UnixListener) -> io::Result<MuxListener> {
        listener.set_nonblocking(true)?;
        // SAFETY: the AsyncFd owns the listener, so its descriptor stays open and the same
        // for as long as the registration lives.
        unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }
            .map(MuxListener)
            .map_err(io::Error::from)
    }
}

impl super::Listen for MuxListener {
    type Stream = MuxStream;
    async fn next(&self, _: &ListenerCounts) -> io::Result<MuxStream> {
        loop {
            let mut ready = self.0.readable().await?;
            if let Ok(accepted) = ready.try_io(|listener| accept(listener.get_ref())) {
                return accepted;
            }
        }
    }
    fn name(&self) -> String {
        let addr = self.0.get_ref().local_addr().ok();
        super::unix_name(addr.as_ref().and_then(|a| a.as_pathname()))
    }
}

/// The next connection, non-blocking from the start (`accept4`, where std's `accept` would
/// need a second system call to say so).
#[allow(unsafe_code)]
fn accept(listener: &std::os::unix::net::UnixListener) -> io::Result<MuxStream> {
    use nix::sys::socket::{accept4, SockFlag};
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = accept4(listener.as_raw_fd(), flags)?;
    // SAFETY: accept4 has just returned this descriptor; nothing else owns it.
    let socket = StdUnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(MuxStream {
        reactor: OnceCell::new(),
        socket,
    })
}

/// A connection on the mux socket, added to the reactor the first time it must be waited for.
#[derive(Debug)]
pub struct MuxStream {
    /// Declared before `socket`, so dropped first: the registration leaves epoll while the
    /// descriptor it names is still open (and still this connection's).
    reactor: OnceCell<AsyncFd<RawFd>>,
    socket: StdUnixStream,
}

impl MuxStream {
    #[allow(unsafe_code)]
    fn register(&self) -> io::Result<AsyncFd<RawFd>> {
        let interest = Interest::READABLE | Interest::WRITABLE;
        // SAFETY: `socket` owns the descriptor, never closes it before it is dropped, and is
        // dropped after the registration (the fields' order).
        unsafe { AsyncFd::register_with_interest(self.socket.as_raw_fd(), interest) }
            .map_err(io::Error::from)
    }

    /// Runs `io` on the socket: at once while it is out of the reactor, and through the
    /// reactor's readiness (which a `WouldBlock` clears) once it is in.
    fn try_io<R>(&self, interest: Interest, io: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        match self.reactor.get() {
            None => io(),
            Some(reactor) => reactor.try_io(interest, |_| io()),
        }
    }
}

impl super::Connection for MuxStream {
    async fn readable(&self) -> io::Result<()> {
        let reactor = self
            .reactor
            .get_or_try_init(|| async { self.register() })
            .await?;
        reactor.readable().await?.retain_ready();
        Ok(())
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.try_io(Interest::READABLE, || (&self.socket).read(buf))
    }
    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.try_io(Interest::READABLE, || {
            // Zeroed rather than read into uninitialised room: a few dozen bytes, and no
            // second copy of the password on the stack.
            let filled = buf.len();
            buf.resize(buf.capacity(), 0);
            let read = (&self.socket).read(&mut buf[filled..]);
            buf.truncate(filled + *read.as_ref().unwrap_or(&0));
            read
        })
    }
    fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        self.try_io(Interest::WRITABLE, || (&self.socket).write(data))
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.reactor.get().is_none() {
            this.reactor = OnceCell::from(this.register()?);
        }
        let reactor = this.reactor.get().expect("registered above");
        loop {
            let mut ready = ready!(reactor.poll_write_ready(cx))?;
            if let Ok(written) = ready.try_io(|_| (&this.socket).write(data)) {
                return Poll::Ready(written);
            }
        }
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.socket.shutdown(std::net::Shutdown::Write))
    }
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
    let reply =
        saslauthd::reply_for(&decision.outcome, auth.passdb_kind(), decision.alert).encode();
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
