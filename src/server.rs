//! Listeners and connections: the `mux` socket, the connection bound, read deadlines and
//! graceful shutdown.
//!
//! Cyrus's saslauthd reads with no timeout and serves at most `-n` connections at once, so
//! `-n` idle clients stop it. Here every connection is a task with a deadline for its whole
//! request, so idle clients cost a little memory and nothing else; past `max_connections`
//! new connections are closed at once rather than queued behind idle ones.
//!
//! Shutdown order: the accept loop stops; connections still waiting for their request are
//! closed (the token is cancelled); those whose request is being answered finish; then the
//! caller removes the socket.

use std::fs;
use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::protocol::saslauthd::{self, DecodeError, MAX_REQUEST_LEN};

/// The longest socket path `sun_path` holds (108 bytes with the NUL). Cyrus truncates longer
/// `-m` paths silently; we refuse them.
pub const MAX_SOCKET_PATH: usize = 107;

/// Bounds on what clients may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time from accept to a whole request.
    pub read_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// How long shutdown waits for requests being answered.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_timeout: Duration::from_secs(10),
            max_connections: 16384,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Creates the run directory if it is missing, mode 0710 exactly (Debian's `root:sasl 0710`:
/// the socket itself is group-writable, the directory decides who reaches it).
pub fn create_run_dir(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o710)
            .create(dir)?;
        // The umask may have narrowed it.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o710))?;
    }
    Ok(())
}

/// Binds `<dir>/mux` with `mode`, non-blocking, ready for [`UnixListener::from_std`].
pub fn bind_mux(dir: &Path, mode: u32) -> io::Result<std::os::unix::net::UnixListener> {
    bind_socket(&dir.join("mux"), mode, None)
}

/// Binds a Unix socket at `path` with `mode` (and `owner`, uid and gid, when given),
/// non-blocking. A stale socket from an earlier run is replaced (the caller holds the pid
/// lock, so no running daemon owns it); any other file at that path is an error, and so is a
/// path too long for `sun_path`.
pub fn bind_socket(
    path: &Path,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<std::os::unix::net::UnixListener> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "socket path {} is {len} bytes long; a Unix socket path holds at most \
                 {MAX_SOCKET_PATH}",
                path.display()
            ),
        ));
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; not replacing it",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Resolves `user[:group]` to a uid and gid (the user's primary group when no group is
/// named). Runs at start-up, before any thread.
pub fn resolve_owner(spec: &str) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let c = |s: &str| std::ffi::CString::new(s).map_err(|_| format!("bad name {s:?}"));
    let user_c = c(user)?;
    // SAFETY: getpwnam/getgrnam return pointers to static storage, read at once; the daemon
    // is still single-threaded here.
    let (uid, primary) = unsafe {
        let pw = libc::getpwnam(user_c.as_ptr());
        if pw.is_null() {
            return Err(format!("no such user {user:?}"));
        }
        ((*pw).pw_uid, (*pw).pw_gid)
    };
    let gid = match group {
        None | Some("") => primary,
        Some(group) => {
            let group_c = c(group)?;
            // SAFETY: as above.
            unsafe {
                let gr = libc::getgrnam(group_c.as_ptr());
                if gr.is_null() {
                    return Err(format!("no such group {group:?}"));
                }
                (*gr).gr_gid
            }
        }
    };
    Ok((uid, gid))
}

/// Serves the saslauthd protocol on `listener` until `shutdown` completes.
pub async fn serve_saslauthd(
    listener: UnixListener,
    auth: Arc<Authenticator>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let read_timeout = limits.read_timeout;
    serve(listener, limits, shutdown, move |stream, token| {
        let auth = Arc::clone(&auth);
        async move { handle_connection(stream, &auth, read_timeout, &token).await }
    })
    .await
}

/// The accept loop both protocols share: a task per connection, at most
/// `limits.max_connections` at once (more are closed at accept), accept errors backed off;
/// on `shutdown` the loop stops, `token` tells connections to finish, and requests being
/// answered get `limits.shutdown_grace`.
pub async fn serve<F, Fut>(
    listener: UnixListener,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    handle: F,
) where
    F: Fn(UnixStream, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refused = AtomicU64::new(0);
    let mut backoff = Duration::from_millis(1);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS: wait and try again; the other tasks keep going.
                    tracing::warn!("accept failed: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(1);
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            let n = refused.fetch_add(1, Ordering::Relaxed);
            if (n + 1).is_power_of_two() {
                tracing::warn!(
                    "{} connections open (the limit); closed {} new ones so far",
                    limits.max_connections,
                    n + 1
                );
            }
            drop(stream);
            continue;
        };
        let connection = handle(stream, token.clone());
        tracker.spawn(async move {
            connection.await;
            drop(permit);
        });
    }
    token.cancel();
    tracker.close();
    if tokio::time::timeout(limits.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "shutdown: requests still running after {:?}",
            limits.shutdown_grace
        );
    }
}

/// One connection: read one request within the deadline, answer it, close.
async fn handle_connection(
    mut stream: UnixStream,
    auth: &Authenticator,
    read_timeout: Duration,
    token: &CancellationToken,
) {
    let deadline = Instant::now() + read_timeout;
    let mut buf = [0u8; MAX_REQUEST_LEN];
    let mut filled = 0;
    let decoded = loop {
        match saslauthd::decode_request(&buf[..filled]) {
            Ok(Some(decoded)) => break decoded,
            Ok(None) => {}
            Err(e @ DecodeError::FieldTooLong { .. }) => {
                tracing::warn!("{e}");
                let _ = write_reply(&mut stream, saslauthd::FIELD_TOO_LONG_REPLY, deadline).await;
                return;
            }
        }
        // decode_request needs at most MAX_REQUEST_LEN bytes to decide, so `filled` is
        // below the buffer's length here.
        let read = tokio::select! {
            biased;
            _ = token.cancelled() => return,
            read = tokio::time::timeout_at(deadline, stream.read(&mut buf[filled..])) => read,
        };
        match read {
            Ok(Ok(0)) => return, // EOF before a whole request: Cyrus closes without a reply.
            Ok(Ok(n)) => filled += n,
            Ok(Err(e)) => {
                tracing::debug!("read failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!("no whole request within {read_timeout:?}; closing");
                return;
            }
        }
    };
    let (request, password) = decoded;
    // The request buffer held the password; wipe it before answering.
    zeroize::Zeroize::zeroize(&mut buf[..]);
    let outcome = auth.verify_plain(&request, password).await;
    let reply = saslauthd::reply_for(&outcome, auth.passdb().kind()).encode();
    if let Err(e) = write_reply(&mut stream, &reply, deadline).await {
        tracing::debug!("reply not sent: {e}");
    }
}

async fn write_reply(stream: &mut UnixStream, reply: &[u8], deadline: Instant) -> io::Result<()> {
    // A reply is a few bytes and always fits the socket buffer; the deadline only guards
    // against a peer whose buffer is full.
    let write_deadline = deadline.max(Instant::now() + Duration::from_secs(1));
    tokio::time::timeout_at(write_deadline, stream.write_all(reply))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))?
}
