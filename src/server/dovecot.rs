//! Connections of Dovecot's auth-client protocol (`--dovecot-socket`): the handshake on
//! accept, then lines, many requests multiplexed on one long-lived connection (Postfix keeps
//! one per smtpd process). This is the socket loop only: it frames lines (16 KiB at most),
//! hands them to the codec's `Session`, passes the requests to the driver's
//! `Handler`, and writes the answers as they come, with its deadlines: the handshake,
//! a client that does not read, and the expiry sweep.
//!
//! Disconnects, as Dovecot: a bad or missing `VERSION`, `CPID`, an unknown command or
//! mechanism, a missing `service=`, id 0, a duplicate active id, parameters after `resp=`, a
//! line over 16 KiB. Everything about the user's data (bad base64, a wrong password, garbage
//! SASL input) is a `FAIL`, never a disconnect.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, Sleep};

use super::{serve, Limits};
use crate::auth::handler::{Handler, Settings, Violation};
use crate::auth::{Authenticator, Live};
use crate::protocol::dovecot::{self, ProtocolError, Request, Session, MAX_LINE};

/// How a Dovecot-protocol listener behaves.
#[derive(Debug, Clone, Copy)]
pub struct DovecotOptions {
    /// Split a user name at its last `@` into sasldb authid and realm (as libsasl2 does
    /// before it asks saslauthd). Off for sites whose authids hold `@`.
    pub split_realm: bool,
    /// When the passdb breaks, answer `FAIL ... code=temp_fail` instead of closing the
    /// connection (Postfix answers a closed connection with 454, a temporary error).
    pub temp_fail: bool,
    /// Requests in flight on one connection at most; more is a protocol error.
    pub max_requests: usize,
    /// A request waiting for `CONT` is forgotten after this (Dovecot: 150 s).
    pub request_timeout: Duration,
    /// The client must finish `VERSION` and `CPID` within this.
    pub handshake_timeout: Duration,
}

impl Default for DovecotOptions {
    fn default() -> Self {
        DovecotOptions {
            split_realm: true,
            temp_fail: false,
            max_requests: 4096,
            request_timeout: Duration::from_secs(150),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// A client that does not read its answers for this long is dropped, not waited for.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often requests abandoned in the middle of an exchange are looked for.
const SWEEP: Duration = Duration::from_secs(5);

/// What the listener knows of one connection, to pick the one idle longest when it is full,
/// and to tell it to close.
#[derive(Debug, Default)]
struct Activity {
    /// When the client last sent a line (the coarse monotonic clock, in microseconds).
    last: AtomicU64,
    /// Requests in flight: such a connection is never the one closed.
    busy: AtomicBool,
    /// Set when the connection is to finish: evicted, or the daemon is stopping.
    closing: AtomicBool,
    /// The connection's task, woken when `closing` is set.
    waker: AtomicWaker,
}

impl Activity {
    /// Tells the connection to finish.
    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once the connection is to finish. Polled on every pass of the connection's
    /// loop, so it takes no lock (a `CancellationToken` takes two).
    async fn closed(&self) {
        std::future::poll_fn(|cx| {
            if self.closing.load(Ordering::Acquire) {
                return std::task::Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.closing.load(Ordering::Acquire) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }
}

/// The open connections of one listener.
#[derive(Debug)]
struct Registry {
    open: Mutex<HashMap<u32, Arc<Activity>>>,
}

impl Registry {
    /// Read on every request, from the kernel's coarse clock (a few milliseconds' grain,
    /// enough to tell which connection went quiet first, and a quarter of the price of the
    /// fine one); ties go to the older connection.
    fn now(&self) -> u64 {
        use nix::time::{clock_gettime, ClockId};
        match clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE) {
            Ok(t) => u64::try_from(Duration::from(t).as_micros()).unwrap_or(u64::MAX),
            Err(_) => 0,
        }
    }

    /// Closes the connection idle longest with nothing in flight, if there is one (Postfix's
    /// smtpd processes each hold one connection for their whole life, so a full listener is
    /// most likely full of processes that have gone quiet, or of someone holding it).
    fn evict(&self) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let idle = open
            .iter()
            .filter(|(_, a)| !a.busy.load(Ordering::Acquire))
            // The older connection first when two went quiet at the same moment.
            .min_by_key(|(cuid, a)| (a.last.load(Ordering::Acquire), **cuid))
            .map(|(cuid, _)| *cuid);
        match idle.and_then(|cuid| open.remove(&cuid)) {
            Some(activity) => {
                activity.close();
                true
            }
            None => false,
        }
    }

    /// Tells every open connection to finish (the daemon is stopping).
    fn close_all(&self) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        for activity in open.values() {
            activity.close();
        }
    }
}

/// A connection's entry in the registry, removed when the connection ends.
struct Registered {
    registry: Arc<Registry>,
    cuid: u32,
    activity: Arc<Activity>,
    /// The connection's place in the listener's budget.
    _slot: super::Slot,
}

impl Registered {
    /// The client sent something; `busy`: requests are in flight.
    fn touch(&self, busy: bool) {
        self.activity
            .last
            .store(self.registry.now(), Ordering::Release);
        self.activity.busy.store(busy, Ordering::Release);
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut open = self.registry.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&self.cuid);
    }
}

/// Serves Dovecot's auth-client protocol on `listener` until `shutdown` completes.
pub async fn serve_dovecot<L: super::Listen>(
    listener: L,
    auth: Arc<Live>,
    limits: Limits,
    options: DovecotOptions,
    shutdown: impl Future<Output = ()>,
) {
    let cuid = AtomicU32::new(0);
    let settings = Settings {
        split_realm: options.split_realm,
        temp_fail: options.temp_fail,
        max_requests: options.max_requests,
        request_timeout: options.request_timeout,
    };
    let registry = Arc::new(Registry {
        open: Mutex::new(HashMap::new()),
    });
    let evict = {
        let registry = Arc::clone(&registry);
        move || registry.evict()
    };
    let counts = auth
        .current()
        .metrics()
        .listener("dovecot", listener.name());
    // Stopping tells every connection through its own flag (the accept loop takes no new
    // one after this), not through the shared token, which costs two locks a poll.
    let shutdown = {
        let registry = Arc::clone(&registry);
        async move {
            shutdown.await;
            registry.close_all();
        }
    };
    serve(
        listener,
        counts,
        limits,
        shutdown,
        evict,
        move |stream, _token, slot| {
            let n = cuid.fetch_add(1, Ordering::Relaxed) + 1;
            let handler = Handler::new(Arc::clone(&auth), settings);
            let activity = Arc::new(Activity::default());
            activity.last.store(registry.now(), Ordering::Release);
            registry
                .open
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(n, Arc::clone(&activity));
            let registered = Registered {
                registry: Arc::clone(&registry),
                cuid: n,
                activity,
                _slot: slot,
            };
            handle_connection(stream, handler, options.handshake_timeout, n, registered)
        },
    )
    .await
}

/// The handshake advertising what `handler`'s driver offers, with a fresh cookie; `cuid`
/// numbers the connection.
fn handshake(auth: &Authenticator, cuid: u32) -> Vec<u8> {
    let cookie: [u8; 16] = crate::secret::random_bytes();
    let mechs = auth.offered().iter().map(|m| (m.name, m.flags));
    dovecot::handshake(mechs, std::process::id(), cuid, &cookie)
}

/// Serves one connection until the client leaves, breaks the protocol, or shutdown (which
/// answers every request in flight first, a delayed failure at once).
async fn handle_connection<S: super::Connection>(
    mut stream: S,
    mut handler: Handler,
    handshake_timeout: Duration,
    cuid: u32,
    registered: Registered,
) {
    if stream
        .write_all(&handshake(handler.auth(), cuid))
        .await
        .is_err()
    {
        return;
    }
    let mut session = Session::new();
    // Both buffers hold memory only while there is something in them: most connections sit
    // idle most of their life (a Postfix smtpd process between sessions, or a client
    // holding the socket), and thousands of them must cost little.
    let mut buf: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let handshake_deadline = Instant::now() + handshake_timeout;
    // Armed when a request has to wait, and kept until it fires (then armed again only if
    // requests still wait): most connections spend their life with none (a PLAIN login a
    // passdb answers at once), and keep no timer; a busy one keeps one, not one a request
    // (each timer set and dropped costs the timer wheel's lock and, when it is the earliest,
    // a wakeup of the runtime).
    let mut sweep: Option<Pin<Box<Sleep>>> = None;
    let closed = registered.activity.closed();
    tokio::pin!(closed);
    // Shutdown: no more requests are read; those in flight are answered, then it closes.
    let mut draining = false;
    loop {
        for answer in handler.answers() {
            dovecot::encode(&answer, &mut out);
        }
        if !out.is_empty() {
            if send(&mut stream, &out).await.is_err() {
                return;
            }
            out.clear();
            if out.capacity() > KEPT_OUT {
                out = Vec::new();
            }
        }
        if draining && !handler.has_requests() {
            return;
        }
        if sweep.is_none() && handler.has_requests() {
            sweep = Some(Box::pin(tokio::time::sleep(SWEEP)));
        }
        tokio::select! {
            biased;
            _ = &mut closed, if !draining => {
                draining = true;
                handler.drain();
            },
            done = handler.completed() => {
                let finished = handler.finish(done);
                registered.activity.busy.store(handler.has_requests(), Ordering::Release);
                if finished.is_err() {
                    tracing::warn!(
                        "dovecot: passdb failure; closing the connection (the client will \
                         report a temporary error)"
                    );
                    return;
                }
            },
            ready = stream.readable(), if !draining => {
                if ready.is_err() {
                    return;
                }
                let taken = match receive(&stream, &mut buf, &mut session, &mut handler) {
                    Ok(Some(taken)) => taken,
                    Ok(None) => continue,
                    Err(()) => return,
                };
                registered.touch(handler.has_requests());
                if let Err(why) = taken {
                    tracing::info!("dovecot: disconnecting a client: {why}");
                    for answer in handler.answers() {
                        dovecot::encode(&answer, &mut out);
                    }
                    let _ = send(&mut stream, &out).await;
                    return;
                }
            },
            _ = tokio::time::sleep_until(handshake_deadline), if !session.handshaken() => {
                tracing::info!("dovecot: no VERSION and CPID within {handshake_timeout:?}; closing");
                return;
            },
            _ = async { match sweep.as_mut() {
                Some(sleep) => sleep.await,
                None => std::future::pending().await,
            } } => {
                handler.expire();
                sweep = None;
            },
        }
    }
}

/// The answers buffer keeps its room up to this between writes (a few answers' worth);
/// more, as after a burst of pipelined requests, is given back.
const KEPT_OUT: usize = 1024;

/// Writes `out` whole: at once when the socket takes it (the usual case: one short answer),
/// else waiting, for [`WRITE_TIMEOUT`] at most, for a client that reads.
async fn send<S: super::Connection>(stream: &mut S, out: &[u8]) -> Result<(), ()> {
    let sent = match stream.try_write(out) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(_) => return Err(()),
    };
    if sent == out.len() {
        return Ok(());
    }
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&out[sent..])).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Reads what has arrived and hands its whole lines to the session and the handler: `None`
/// when nothing had (readiness without data), `Err` when the client has gone.
///
/// The bytes land in a buffer of the thread's, not the connection's: most reads are
/// one whole line, taken from there, so an idle connection holds no buffer and a busy one
/// allocates none per request. Only the start of a line that has not all arrived is kept in
/// `buf`. What was read is wiped from it before returning (it holds passwords).
fn receive<S: super::Connection>(
    stream: &S,
    buf: &mut Vec<u8>,
    session: &mut Session,
    handler: &mut Handler,
) -> Result<Option<Result<(), Disconnect>>, ()> {
    CHUNK.with_borrow_mut(|chunk| receive_into(chunk, stream, buf, session, handler))
}

thread_local! {
    /// Where [`receive`] reads: one per thread, zeroed once (not on every read).
    static CHUNK: std::cell::RefCell<[u8; 4096]> = const { std::cell::RefCell::new([0; 4096]) };
}

fn receive_into<S: super::Connection>(
    chunk: &mut [u8; 4096],
    stream: &S,
    buf: &mut Vec<u8>,
    session: &mut Session,
    handler: &mut Handler,
) -> Result<Option<Result<(), Disconnect>>, ()> {
    let n = match stream.try_read(chunk) {
        Ok(0) => return Err(()),
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
        Err(_) => return Err(()),
    };
    let taken = if buf.is_empty() {
        let (taken, rest) = take_lines(&chunk[..n], session, handler);
        if taken.is_ok() && !rest.is_empty() {
            buf.extend_from_slice(rest);
        }
        taken
    } else {
        buf.extend_from_slice(&chunk[..n]);
        let (taken, used) = {
            let (taken, rest) = take_lines(buf, session, handler);
            (taken, buf.len() - rest.len())
        };
        buf.drain(..used);
        if buf.is_empty() {
            *buf = Vec::new();
        }
        taken
    };
    zeroize::Zeroize::zeroize(&mut chunk[..n]);
    let taken = match taken {
        Ok(()) if buf.len() >= MAX_LINE => Err(Disconnect::LineTooLong),
        taken => taken,
    };
    Ok(Some(taken))
}

/// Why a client is disconnected.
#[derive(Debug, thiserror::Error)]
enum Disconnect {
    #[error("a line over {MAX_LINE} bytes")]
    LineTooLong,
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Violation(#[from] Violation),
}

/// Hands every whole line in `data` to the session and the handler; returns what follows
/// the last one (the start of a line yet to come).
fn take_lines<'a>(
    data: &'a [u8],
    session: &mut Session,
    handler: &mut Handler,
) -> (Result<(), Disconnect>, &'a [u8]) {
    let mut start = 0;
    while let Some(len) = memchr::memchr(b'\n', &data[start..]) {
        if len + 1 > MAX_LINE {
            return (Err(Disconnect::LineTooLong), &data[start..]);
        }
        let line = &data[start..start + len];
        start += len + 1;
        let taken = match session.read(line) {
            Err(e) => Err(Disconnect::from(e)),
            Ok(None) => Ok(()),
            Ok(Some(Request::Auth(begin))) => handler.begin(begin).map_err(Disconnect::from),
            Ok(Some(Request::Cont(id, input))) => {
                handler.cont(id, input);
                Ok(())
            }
            Ok(Some(Request::Cancel(id))) => {
                handler.cancel(id);
                Ok(())
            }
        };
        if let Err(e) = taken {
            return (Err(e), &data[start..]);
        }
    }
    (Ok(()), &data[start..])
}
