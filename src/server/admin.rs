//! The admin socket, `<run_dir>/admin` (mode 0600): one command line in, one answer out,
//! then the connection closes. Only root and the daemon's own user may use it: the socket's
//! mode, and the peer's credentials (`SO_PEERCRED`) checked on every connection.
//!
//! Commands (`saslauthd-rs-ctl` sends them):
//! - `metrics`: the OpenMetrics text of the driver's metrics, `# EOF` last;
//! - `reload`: the same as SIGHUP;
//! - `cache flush [USER]`: empties the credential cache, or drops one user's entries;
//! - `penalty list`, `penalty reset ADDR`, `penalty reset-user USER`: the throttled peers
//!   and users (from the shared store when there is one), and lifting one's delay;
//! - `test USER PASSWORD [--service S] [--realm R]`: a password check through the driver,
//!   as a request would make it (counted as protocol `admin`).
//!
//! A command's words are separated by tabs (a password may hold spaces).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{serve, Limits};
use crate::auth::Live;

/// The longest command line.
const MAX_COMMAND: usize = 1024;

/// `<run_dir>/admin`.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("admin")
}

/// Serves the admin socket until `shutdown` completes.
pub async fn serve_admin<L: super::Listen<Stream = UnixStream>>(
    listener: L,
    live: Arc<Live>,
    shutdown: impl Future<Output = ()>,
) {
    serve_each(listener, live, shutdown, 16, "admin", handle).await
}

/// Serves `listener` with `limits`-bounded connections, each given to `handle` with the
/// driver and a 5 s deadline; `what` names the connection in the debug log.
async fn serve_each<L, H, Fut>(
    listener: L,
    live: Arc<Live>,
    shutdown: impl Future<Output = ()>,
    max_connections: usize,
    what: &'static str,
    handle: H,
) where
    L: super::Listen,
    H: Fn(L::Stream, Arc<Live>, Duration, super::Slot) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    let limits = Limits {
        read_timeout: Duration::from_secs(5),
        max_connections,
        ..Limits::default()
    };
    let counts = live.current().metrics().listener(what, listener.name());
    serve(
        listener,
        counts,
        limits,
        shutdown,
        || false,
        move |stream, _token, slot| {
            let live = Arc::clone(&live);
            async move {
                if let Err(e) = handle(stream, live, limits.read_timeout, slot).await {
                    tracing::debug!("{what} connection: {e}");
                }
            }
        },
    )
    .await
}

/// Reads until `done` says the bytes are whole or more than `max` came, within `timeout`:
/// `None` when the peer went quiet, closed early, or broke.
async fn read_until<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
    max: usize,
    done: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(timeout, async {
        let mut buf = [0u8; 1024];
        while !done(&bytes) && bytes.len() <= max {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        io::Result::Ok(())
    })
    .await;
    matches!(read, Ok(Ok(()))).then_some(bytes)
}

async fn handle(
    mut stream: UnixStream,
    live: Arc<Live>,
    timeout: Duration,
    slot: super::Slot,
) -> io::Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    let peer = stream.peer_cred()?.uid();
    let Some(line) = read_until(&mut stream, timeout, MAX_COMMAND, |b| b.contains(&b'\n')).await
    else {
        return Ok(());
    };
    if line.len() > MAX_COMMAND {
        return Ok(());
    }
    // Checked once the command is read, so that the client hears the refusal.
    if peer != 0 && peer != me {
        tracing::warn!("admin socket: refused a connection from uid {peer}");
        slot.counts().refused_for("peer_uid");
        return stream
            .write_all(b"error: only root and the daemon's user may use the admin socket\n")
            .await;
    }
    let text = String::from_utf8_lossy(&line);
    let words: Vec<&str> = text.trim_end_matches(['\r', '\n']).split('\t').collect();
    let answer = command(&words, &live).await;
    // Only the command's name: `test` carries a password.
    tracing::debug!(command = words[0], "admin command");
    stream.write_all(answer.as_bytes()).await
}

/// The answer to one command (its words were tab-separated): `ok: ...`, `fail: ...` or
/// `error: ...` on the first line, or the metrics' text.
async fn command(words: &[&str], live: &Live) -> String {
    let auth = live.current();
    match words {
        ["metrics"] => auth.encode_metrics(),
        ["reload"] => {
            // The SIGHUP handler does the work, as for `systemctl reload`.
            match nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGHUP) {
                Ok(()) => "ok: reloading (the log says how it went)\n".to_string(),
                Err(e) => format!("error: {e}\n"),
            }
        }
        ["cache", "flush", rest @ ..] if rest.len() <= 1 => {
            match auth.flush_cache(rest.first().map(|u| u.as_bytes())) {
                None => "error: the credential cache is off (-c turns it on)\n".into(),
                Some(n) => match rest.first() {
                    Some(user) => format!("ok: {n} cache entries of {user} dropped\n"),
                    None => format!("ok: {n} cache entries dropped\n"),
                },
            }
        }
        ["penalty", "list"] => {
            let list = auth.penalty_list().await;
            let mut out = format!(
                "ok: peers delayed (address, step, last failure), from {}\n",
                list.source
            );
            for (peer, step, ago) in &list.peers {
                out += &format!("{}\t{step}\t{}s ago\n", peer, ago.as_secs());
            }
            out += &format!(
                "users guessing (user, distinct wrong passwords in the last {}s, last failure; \
                 delayed past {}):\n",
                list.user_window.as_secs(),
                list.user_threshold
            );
            for (user, guesses, ago) in &list.users {
                let delayed = if list.user_threshold > 0 && *guesses > list.user_threshold {
                    "\tdelayed"
                } else {
                    ""
                };
                out += &format!(
                    "{}\t{guesses}\t{}s ago{delayed}\n",
                    crate::request::Printable(user.as_bytes()),
                    ago.as_secs()
                );
            }
            out
        }
        ["penalty", "reset", addr] => match addr.parse::<std::net::IpAddr>() {
            Ok(ip) => match auth.penalty_reset(Ok(ip)).await {
                Ok(true) => format!("ok: {ip} is no longer delayed\n"),
                Ok(false) => format!("ok: {ip} had no delay\n"),
                Err(e) => format!("error: {e}\n"),
            },
            Err(_) => format!(
                "error: {addr:?} is not an IP address (penalty reset-user USER forgets a \
                 user's guesses)\n"
            ),
        },
        ["penalty", "reset-user", user] => match auth.penalty_reset(Err(user.as_bytes())).await {
            Ok(true) => format!("ok: {user}'s wrong guesses are forgotten\n"),
            Ok(false) => format!("ok: {user} had no wrong guesses\n"),
            Err(e) => format!("error: {e}\n"),
        },
        ["test", user, password, options @ ..] => {
            let (mut service, mut realm) = ("smtp", "");
            let mut rest = options.iter();
            while let Some(option) = rest.next() {
                match (*option, rest.next()) {
                    ("--service", Some(s)) => service = s,
                    ("--realm", Some(r)) => realm = r,
                    _ => {
                        return format!(
                            "error: unknown option {option:?} (--service S, --realm R)\n"
                        )
                    }
                }
            }
            let request = crate::request::AuthRequest {
                login: user.as_bytes().to_vec(),
                service: service.as_bytes().to_vec(),
                realm: realm.as_bytes().to_vec(),
                peer: crate::request::Peer::new(None),
            };
            let password = crate::secret::Password::new(password.as_bytes().to_vec());
            let _in_flight = auth.metrics().in_flight(crate::metrics::Protocol::Admin);
            let decision = auth
                .verify_plain(&request, password, crate::auth::Via::ADMIN)
                .await;
            match decision.outcome {
                crate::verdict::Outcome::Verdict(crate::verdict::PassdbResult::Ok) => {
                    format!("ok: {user} authenticated (service {service})\n")
                }
                crate::verdict::Outcome::Verdict(verdict) => {
                    format!("fail: {user}: {verdict}\n")
                }
                crate::verdict::Outcome::Refused(refusal) => {
                    format!("fail: {user}: refused ({refusal:?})\n")
                }
                crate::verdict::Outcome::Error => {
                    "error: the passdb failed (the log says why)\n".into()
                }
            }
        }
        _ => format!(
            "error: unknown command {:?} (metrics, reload, cache flush [USER], penalty list, \
             penalty reset ADDR, penalty reset-user USER, test USER PASSWORD [--service S] [--realm R])\n",
            words.join(" ")
        ),
    }
}

/// The longest HTTP request head the metrics endpoint reads.
const MAX_HTTP_HEAD: usize = 8192;

/// Serves `GET /metrics` (the OpenMetrics text) on `listener` until `shutdown` completes:
/// one request per connection, within 5 s and 8 KiB; anything else is a 404 or a 400.
pub async fn serve_metrics_http(
    listener: super::TcpListen,
    live: Arc<Live>,
    shutdown: impl Future<Output = ()>,
) {
    serve_each(listener, live, shutdown, 64, "metrics", http).await
}

async fn http(
    mut stream: tokio::net::TcpStream,
    live: Arc<Live>,
    timeout: Duration,
    _slot: super::Slot,
) -> io::Result<()> {
    let Some(head) = read_until(&mut stream, timeout, MAX_HTTP_HEAD, |b| {
        b.windows(4).any(|w| w == b"\r\n\r\n")
    })
    .await
    else {
        return Ok(());
    };
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (status, kind, body) = match (words.next(), words.next()) {
        _ if head.len() > MAX_HTTP_HEAD => (
            "431 Request Header Fields Too Large",
            "text/plain",
            String::new(),
        ),
        (Some("GET" | "HEAD"), Some("/metrics")) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            live.current().encode_metrics(),
        ),
        (Some(_), Some(_)) => ("404 Not Found", "text/plain", "only /metrics here\n".into()),
        _ => ("400 Bad Request", "text/plain", String::new()),
    };
    let body = if line.starts_with("HEAD ") {
        String::new()
    } else {
        body
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}
