//! The service manager's side of the process: sockets passed by socket activation
//! (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`, as `sd_listen_fds_with_names(3)`), and
//! state notifications (`READY=1`, `STOPPING=1`, `WATCHDOG=1`, as `sd_notify(3)`) on
//! `$NOTIFY_SOCKET`. Without systemd neither does anything.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::time::Duration;

/// The first descriptor a service manager passes.
const LISTEN_FDS_START: i32 = 3;

/// The listening sockets the service manager passed, by the name their socket unit gave them
/// (`FileDescriptorName=`): `dovecot` is the Dovecot socket, any other the mux socket.
#[derive(Debug, Default)]
pub struct Passed {
    /// The saslauthd protocol's socket.
    pub mux: Option<UnixListener>,
    /// The Dovecot auth-client protocol's socket.
    pub dovecot: Option<UnixListener>,
}

/// Why the sockets the service manager passed cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PassedError {
    /// `LISTEN_FDS` is not a number.
    #[error("LISTEN_FDS={0:?} is not a number")]
    Count(String),
    /// A passed descriptor is not a listening Unix stream socket.
    #[error("passed socket {fd} ({name}): {problem}")]
    NotAListener {
        /// The descriptor.
        fd: i32,
        /// Its name (`FileDescriptorName=`).
        name: String,
        /// What is wrong with it.
        problem: NotAListener,
    },
    /// Two passed sockets are for the same protocol.
    #[error(
        "two passed sockets for the same protocol (names {0:?}); name the Dovecot one \
         \"dovecot\" with FileDescriptorName="
    )]
    Twice(Vec<String>),
}

/// Takes the sockets passed to this process, if any (and clears the variables, so that
/// nothing this process starts takes them too). Only Unix stream sockets that listen are
/// taken; anything else, or more than one socket per protocol, is an error naming it.
pub fn passed_sockets() -> Result<Passed, PassedError> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let (Some(pid), Some(count)) = (pid, count) else {
        return Ok(Passed::default());
    };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(Passed::default());
    }
    let count: i32 = count
        .parse()
        .map_err(|_| PassedError::Count(count.clone()))?;
    let names: Vec<String> = names
        .map(|n| n.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut passed = Passed::default();
    for i in 0..count {
        let fd = LISTEN_FDS_START + i;
        let name = names.get(i as usize).map_or("", String::as_str);
        let listener = take_listener(fd).map_err(|problem| PassedError::NotAListener {
            fd,
            name: name.to_owned(),
            problem,
        })?;
        let slot = if name.contains("dovecot") {
            &mut passed.dovecot
        } else {
            &mut passed.mux
        };
        if slot.replace(listener).is_some() {
            return Err(PassedError::Twice(names));
        }
    }
    Ok(passed)
}

/// What is wrong with a passed descriptor.
#[derive(Debug, thiserror::Error)]
pub enum NotAListener {
    /// It cannot be looked at.
    #[error("fstat: {0}")]
    Fstat(nix::errno::Errno),
    /// It is not a socket.
    #[error("not a socket")]
    NotASocket,
    /// It is a socket, not a Unix one.
    #[error("not a Unix socket: {0}")]
    NotUnix(std::io::Error),
    /// It cannot be made non-blocking.
    #[error("cannot make it non-blocking: {0}")]
    Blocking(std::io::Error),
}

/// Takes ownership of passed descriptor `fd`, which must be a listening Unix stream socket;
/// what is wrong with it otherwise.
#[allow(unsafe_code)]
fn take_listener(fd: i32) -> Result<UnixListener, NotAListener> {
    use nix::sys::stat::{fstat, SFlag};
    let stat =
        fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }).map_err(NotAListener::Fstat)?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(NotAListener::NotASocket);
    }
    // SAFETY: the service manager passed this descriptor to this process (LISTEN_PID matched),
    // nothing else in the process owns it, and each passed descriptor is taken once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let listener = UnixListener::from(owned);
    listener.local_addr().map_err(NotAListener::NotUnix)?;
    listener
        .set_nonblocking(true)
        .map_err(NotAListener::Blocking)?;
    Ok(listener)
}

/// Sends `state` (`READY=1`, `STOPPING=1`, ...) to the service manager, if one listens.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
        }
        None => socket.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        tracing::warn!("cannot notify the service manager ({state}): {e}");
    }
}

/// How often to send `WATCHDOG=1`: half the `WATCHDOG_USEC` the service manager set for this
/// process, or `None`.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
