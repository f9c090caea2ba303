//! Listeners: the sockets, the connection bound, accept back-off and graceful shutdown, shared
//! by both protocols; each protocol's connection loop (framing, deadlines, and nothing of the
//! verdict) is in its own file:
//!
//! - [`saslauthd`]: one request per connection on `<run_dir>/mux`.
//! - [`dovecot`]: Dovecot's auth-client protocol, long-lived connections.
//!
//! Cyrus's saslauthd reads with no timeout and serves at most `-n` connections at once, so
//! `-n` idle clients stop it. Here every connection is a task with a deadline, so idle clients
//! cost a little memory and nothing else; past `max_connections` new connections are closed
//! at once rather than queued behind idle ones.
//!
//! Shutdown order: the accept loop stops; connections still waiting for their request are
//! closed (the token is cancelled); those whose request is being answered finish; then the
//! caller removes the socket.

pub mod admin;
pub mod dovecot;
pub mod saslauthd;
mod serving;

pub use crate::request::Network;
use std::fs;
use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use tokio::io::{AsyncWrite, Interest};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::ListenerCounts;

pub use serving::{bind, budget, run, Owner, Place, Plan, Serves, Serving, ServingError, Sockets};

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
            max_connections: 4096,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Why a directory cannot hold a socket (or be made to).
#[derive(Debug, thiserror::Error)]
pub enum SocketDirError {
    /// It, or a directory above it, cannot be looked at.
    #[error("{}: {source}", path.display())]
    Unreadable {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// It could not be made.
    #[error("cannot create {}: {source}", path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// Its mode could not be set.
    #[error("cannot set the mode of {}: {source}", path.display())]
    Mode {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// It is a symlink.
    #[error(
        "{} is a symlink; a socket directory must be a real directory (give its own path)",
        path.display()
    )]
    Symlink {
        /// The path.
        path: PathBuf,
    },
    /// It is not a directory.
    #[error("{} is not a directory", path.display())]
    NotDirectory {
        /// The path.
        path: PathBuf,
    },
    /// Another user owns it (or a directory above it).
    #[error(
        "{} is owned by uid {uid}, not root or the daemon's user; another user could replace \
         the socket in it",
        path.display()
    )]
    Owner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Other users may write in it (or in a directory above it that is not sticky).
    #[error(
        "{} is writable by other users (mode {mode:04o}); another user could replace the \
         socket in it",
        path.display()
    )]
    Writable {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Creates the run directory if it is missing, mode 0710 exactly (Debian's `root:sasl 0710`:
/// the socket itself is group-writable, the directory decides who reaches it), and refuses one
/// that another user could tamper with (see [`check_socket_dir`]).
pub fn create_run_dir(dir: &Path) -> Result<(), SocketDirError> {
    let create = |path: &Path| {
        let path = path.to_owned();
        move |source| SocketDirError::Create { path, source }
    };
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(create(parent))?;
            }
            // mkdir(2) never follows a symlink planted meanwhile: it fails with EEXIST.
            fs::DirBuilder::new()
                .mode(0o710)
                .create(dir)
                .map_err(create(dir))?;
            // The umask may have narrowed it.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o710)).map_err(|source| {
                SocketDirError::Mode {
                    path: dir.to_owned(),
                    source,
                }
            })?;
        }
        Err(source) => {
            return Err(SocketDirError::Unreadable {
                path: dir.to_owned(),
                source,
            })
        }
        Ok(_) => {}
    }
    check_socket_dir(dir, None)
}

/// Whether a directory owned by `uid` is ours to trust: root's, the daemon's user's, or
/// `also`'s.
fn trusted(uid: u32, also: Option<u32>) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw() || Some(uid) == also
}

/// Refuses a directory a socket is to be bound in when another local user could rename the
/// socket and bind their own in its place (and so receive the clients' passwords), as
/// OpenSSH's StrictModes does: the directory must be a directory (not a symlink), owned by
/// root, the daemon's user or `also` (the socket's owner), and writable by no one else; each
/// directory above it must be owned by root, the daemon's user or `also`, and be writable by
/// no one else unless it is sticky (`/tmp`).
pub fn check_socket_dir(dir: &Path, also: Option<u32>) -> Result<(), SocketDirError> {
    use std::os::unix::fs::MetadataExt;
    let unreadable = |path: &Path| {
        let path = path.to_owned();
        move |source| SocketDirError::Unreadable { path, source }
    };
    let meta = fs::symlink_metadata(dir).map_err(unreadable(dir))?;
    if meta.file_type().is_symlink() {
        return Err(SocketDirError::Symlink {
            path: dir.to_owned(),
        });
    }
    if !meta.is_dir() {
        return Err(SocketDirError::NotDirectory {
            path: dir.to_owned(),
        });
    }
    let unsafe_dir = |path: &Path, meta: &fs::Metadata, own: bool| -> Option<SocketDirError> {
        if !trusted(meta.uid(), also) {
            return Some(SocketDirError::Owner {
                path: path.to_owned(),
                uid: meta.uid(),
            });
        }
        let writable = meta.mode() & 0o022 != 0;
        let sticky = meta.mode() & 0o1000 != 0;
        (writable && (own || !sticky)).then(|| SocketDirError::Writable {
            path: path.to_owned(),
            mode: meta.mode() & 0o7777,
        })
    };
    if let Some(problem) = unsafe_dir(dir, &meta, true) {
        return Err(problem);
    }
    // Every directory above, both as written (a symlink on the way lives in the directory
    // before it) and as resolved.
    let absolute = std::path::absolute(dir).map_err(unreadable(dir))?;
    let resolved = fs::canonicalize(dir).map_err(unreadable(dir))?;
    for chain in [&absolute, &resolved] {
        for ancestor in chain.ancestors().skip(1) {
            let meta = fs::metadata(ancestor).map_err(unreadable(ancestor))?;
            if let Some(problem) = unsafe_dir(ancestor, &meta, false) {
                return Err(problem);
            }
        }
    }
    Ok(())
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
    // The socket is created with its mode (the umask, for this one call, is what the mode
    // leaves out) and its owner set without following a symlink: nothing is done to the path
    // after bind that a symlink planted there could redirect. (Start-up is single-threaded.)
    let umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(!mode & 0o777));
    let bound = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(umask);
    let listener = bound?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    }
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Why a socket owner cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// No such user.
    #[error("no such user {0:?}")]
    NoUser(String),
    /// No such group.
    #[error("no such group {0:?}")]
    NoGroup(String),
    /// The lookup itself failed.
    #[error("cannot look up {name:?}: {source}")]
    Lookup {
        /// The user or group.
        name: String,
        /// Why.
        source: nix::Error,
    },
}

/// Resolves `user[:group]` to a uid and gid (the user's primary group when no group is
/// named), with the reentrant `getpwnam_r` and `getgrnam_r`.
pub fn resolve_owner(spec: &str) -> Result<(u32, u32), OwnerError> {
    use nix::unistd::{Group, User};
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let failed = |name: &str| {
        let name = name.to_owned();
        move |source| OwnerError::Lookup { name, source }
    };
    let found = User::from_name(user)
        .map_err(failed(user))?
        .ok_or_else(|| OwnerError::NoUser(user.to_owned()))?;
    let gid = match group {
        None | Some("") => found.gid,
        Some(group) => {
            Group::from_name(group)
                .map_err(failed(group))?
                .ok_or_else(|| OwnerError::NoGroup(group.to_owned()))?
                .gid
        }
    };
    Ok((found.uid.as_raw(), gid.as_raw()))
}

/// A connected client, on a Unix or a TCP socket: what the connection loops use of it.
pub trait Connection: AsyncWrite + Unpin + Send + Sync + 'static {
    /// Waits until there may be something to read.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Reads what has arrived, without waiting (`WouldBlock` when nothing has).
    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize>;
    /// Reads what has arrived into `buf`, without waiting.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes without waiting, as much as fits.
    fn try_write(&self, data: &[u8]) -> io::Result<usize>;
}

macro_rules! connection {
    ($stream:ty) => {
        impl Connection for $stream {
            fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
                <$stream>::readable(self)
            }
            fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
                <$stream>::try_read_buf(self, buf)
            }
            fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
                // A read that did not fill `buf` took all there was: the readiness is
                // cleared with it (as tokio's own `poll_read` does), so the next wait sleeps
                // instead of trying a read that finds nothing. Inside `try_io`, whose
                // snapshot was taken before the read: a wakeup that comes after it is kept.
                let len = buf.len();
                let mut short = None;
                let read = self.try_io(Interest::READABLE, || {
                    let n = <$stream>::try_read(self, buf)?;
                    if n > 0 && n < len {
                        short = Some(n);
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    Ok(n)
                });
                match (read, short) {
                    (Err(_), Some(n)) => Ok(n),
                    (read, _) => read,
                }
            }
            fn try_write(&self, data: &[u8]) -> io::Result<usize> {
                <$stream>::try_write(self, data)
            }
        }
    };
}
connection!(UnixStream);
connection!(TcpStream);

/// A listening socket: a Unix socket, or a TCP one that lets in only its allowed networks.
pub trait Listen: Send {
    /// Its connections.
    type Stream: Connection;
    /// The next connection let in; one refused on the way is counted in `counts`.
    fn next(
        &self,
        counts: &ListenerCounts,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Its path or address, as the metrics label it.
    fn name(&self) -> String;
}

impl Listen for UnixListener {
    type Stream = UnixStream;
    async fn next(&self, _: &ListenerCounts) -> io::Result<UnixStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
    fn name(&self) -> String {
        unix_name(
            self.local_addr()
                .ok()
                .as_ref()
                .and_then(|a| a.as_pathname()),
        )
    }
}

/// A Unix listener's name in the metrics: its path.
fn unix_name(path: Option<&Path>) -> String {
    path.map_or_else(|| "unnamed".into(), |p| p.display().to_string())
}

/// A TCP listener (Postfix's `smtpd_sasl_path = inet:host:port`) that closes, at once, a
/// connection from outside its allowed networks: a password must not be asked for from
/// anywhere but the mail hosts.
#[derive(Debug)]
pub struct TcpListen {
    listener: TcpListener,
    allow: Vec<Network>,
    refused: AtomicU64,
}

/// Binds a TCP socket at `addr` (before the daemon drops its privileges; it is served by a
/// [`TcpListen`] once the runtime runs).
pub fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

impl TcpListen {
    /// Serves `listener` (from [`bind_tcp`]), letting in `allow`, which must not be empty:
    /// say who may connect. Call inside the runtime.
    pub fn new(listener: std::net::TcpListener, allow: Vec<Network>) -> io::Result<TcpListen> {
        if allow.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a TCP listener needs the networks it lets in",
            ));
        }
        Ok(TcpListen {
            listener: TcpListener::from_std(listener)?,
            allow,
            refused: AtomicU64::new(0),
        })
    }
}

impl Listen for TcpListen {
    type Stream = TcpStream;
    async fn next(&self, counts: &ListenerCounts) -> io::Result<TcpStream> {
        loop {
            let (stream, peer) = self.listener.accept().await?;
            if self.allow.iter().any(|net| net.contains(peer.ip())) {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            counts.refused_not_allowed();
            let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    "refused a connection from {} (not in the listener's allow list); {n} so far",
                    peer.ip()
                );
            }
        }
    }
    fn name(&self) -> String {
        self.listener
            .local_addr()
            .map_or_else(|_| "unnamed".into(), |a| a.to_string())
    }
}

/// Connections open on a listener: a counter that is only ever tried, never waited on (a full
/// listener closes new connections), so an atomic does what a semaphore would, without the
/// semaphore's lock on every release.
struct Slots {
    open: AtomicUsize,
    max: usize,
    /// The most open since memory was last released.
    high: AtomicUsize,
    /// The listener's series in the metrics.
    counts: ListenerCounts,
}

/// One open connection's place in its listener's budget, given back when it drops: the
/// connection's future holds it, so that the task is that future alone (an `async` wrapper
/// that awaited it would hold the future twice over, as rustc lays such blocks out).
pub struct Slot(Arc<Slots>);

impl Slot {
    /// The listener's series in the metrics.
    pub fn counts(&self) -> &ListenerCounts {
        &self.0.counts
    }
}

impl Slots {
    /// A slot beyond the budget, for a connection that replaces one being closed.
    fn take_over(self: &Arc<Self>) -> Slot {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.counts.opened();
        Slot(Arc::clone(self))
    }

    fn take(self: &Arc<Self>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| {
                self.counts.opened();
                Slot(Arc::clone(self))
            })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.counts.closed();
        let open = self.0.open.fetch_sub(1, Ordering::AcqRel) - 1;
        // When most of many connections have gone, give their memory back to the system
        // (glibc keeps freed memory in its arenas for good otherwise).
        let high = self
            .0
            .high
            .fetch_max(open + 1, Ordering::AcqRel)
            .max(open + 1);
        if high >= TRIM_AFTER && open * 4 < high {
            self.0.high.store(open, Ordering::Release);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn_blocking(crate::process::release_free_memory);
            }
        }
    }
}

/// How many connections must have been open before their closing is worth a trim.
const TRIM_AFTER: usize = 512;

/// The accept loop both protocols share, counting in `counts`: a task per connection, at most
/// `limits.max_connections` at once (more are closed at accept, unless `evict` closes an
/// idle connection to make room and says so), accept errors backed off;
/// on `shutdown` the loop stops, the token each connection holds tells it to finish, and
/// requests being answered get `limits.shutdown_grace`.
///
/// Every connection gets the same token behind an `Arc`: cloning a token itself takes a lock
/// its clones share, and a connection per request would take it twice each. A long-lived
/// connection that polls the token often takes a child token of its own.
pub async fn serve<L, F, Fut>(
    listener: L,
    counts: ListenerCounts,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    evict: impl Fn() -> bool,
    handle: F,
) where
    L: Listen,
    F: Fn(L::Stream, Arc<CancellationToken>, Slot) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let token = Arc::new(CancellationToken::new());
    let tracker = TaskTracker::new();
    let slots = Arc::new(Slots {
        open: AtomicUsize::new(0),
        max: limits.max_connections,
        high: AtomicUsize::new(0),
        counts,
    });
    let refused = AtomicU64::new(0);
    let mut backoff = Duration::from_millis(1);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.next(&slots.counts) => match accepted {
                Ok(stream) => stream,
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
        let Some(slot) = slots.take().or_else(|| evict().then(|| slots.take_over())) else {
            slots.counts.refused_at_limit();
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
        tracker.spawn(handle(stream, Arc::clone(&token), slot));
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
