//! The daemon as a Unix process: the pid lock, detaching from the terminal, logging to stderr
//! or syslog, and the file-descriptor limit.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tracing_subscriber::fmt::MakeWriter;

/// The lock that keeps two daemons off one run directory. Cyrus's saslauthd takes an fcntl
/// write lock on `saslauthd.pid.lock`; we take an open-file-description lock on the same file,
/// which conflicts with Cyrus's (so neither can start over the other) and, unlike a classic
/// fcntl lock, stays held by the child after [`detach`] forks.
#[derive(Debug)]
pub struct PidLock {
    _file: File,
    path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another daemon holds it.
    #[error("another saslauthd is running on {0} (it holds {0}/saslauthd.pid.lock)")]
    Held(String),
    /// The lock file could not be opened.
    #[error("cannot open {0}: {1}")]
    Io(String, io::Error),
}

impl PidLock {
    /// Takes the lock in `run_dir`.
    pub fn acquire(run_dir: &Path) -> Result<PidLock, LockError> {
        let path = run_dir.join("saslauthd.pid.lock");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| LockError::Io(path.display().to_string(), e))?;
        // SAFETY: an all-zero flock is a valid value; the fields we need are set below.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = libc::F_WRLCK as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: fcntl with F_OFD_SETLK reads the flock struct we pass and nothing else.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EACCES) => {
                    LockError::Held(run_dir.display().to_string())
                }
                _ => LockError::Io(path.display().to_string(), err),
            });
        }
        Ok(PidLock { _file: file, path })
    }

    /// Removes the lock file (at exit).
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Forks into the background as Cyrus does without `-d`: the parent exits 0, the child starts
/// a new session, points stdin, stdout and stderr at `/dev/null` and writes
/// `<run_dir>/saslauthd.pid`. Must be called before any thread is started.
pub fn detach(run_dir: &Path) -> io::Result<PathBuf> {
    // SAFETY: the process is single-threaded here (no runtime yet), so fork is sound.
    match unsafe { libc::fork() } {
        -1 => return Err(io::Error::last_os_error()),
        0 => {}
        // SAFETY: _exit ends the parent without running the child's destructors twice.
        _ => unsafe { libc::_exit(0) },
    }
    // SAFETY: plain system calls on the child's own process state.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        let null = File::options().read(true).write(true).open("/dev/null")?;
        for fd in 0..3 {
            if libc::dup2(null.as_raw_fd(), fd) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    let pidfile = run_dir.join("saslauthd.pid");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&pidfile)?;
    writeln!(file, "{}", std::process::id())?;
    Ok(pidfile)
}

/// Raises the soft limit on open files to the hard limit and returns the new soft limit, so
/// that many idle clients cannot exhaust descriptors before the connection bound does.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    }
}

/// Blocks (`true`) or unblocks (`false`) SIGTERM and SIGINT for the calling thread (and the
/// threads it starts afterwards). The daemon blocks them before it binds its sockets and
/// unblocks them once its handlers are installed, so a SIGTERM that arrives while it starts
/// is held and then handled as a clean stop, never the default kill.
pub fn block_termination_signals(block: bool) {
    // SAFETY: sigset operations on a local set; pthread_sigmask changes only this thread's
    // mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let how = if block {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Ignores SIGHUP, as Cyrus does (there is nothing to reload; a closing terminal must not
/// stop the daemon).
pub fn ignore_sighup() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// stderr (foreground; systemd's journal picks it up).
    Stderr,
    /// syslog, facility `auth`, as Cyrus (detached).
    Syslog,
}

/// Sets up logging. `verbose` adds successes and details (Cyrus's `-V`). The environment
/// variable `SASLAUTHD_LOG` (an `EnvFilter` directive) overrides the level.
pub fn init_logging(target: LogTarget, verbose: bool) {
    let default = if verbose { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SASLAUTHD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .without_time();
    let _ = match target {
        LogTarget::Stderr => {
            use std::io::IsTerminal;
            builder
                .with_ansi(io::stderr().is_terminal())
                .with_writer(io::stderr)
                .try_init()
        }
        LogTarget::Syslog => {
            const IDENT: &CStr = c"saslauthd-rs";
            // SAFETY: IDENT is a 'static C string, as openlog requires.
            unsafe {
                libc::openlog(
                    IDENT.as_ptr(),
                    libc::LOG_PID | libc::LOG_NDELAY,
                    libc::LOG_AUTH,
                )
            };
            builder
                .with_ansi(false)
                .with_level(false)
                .with_writer(Syslog)
                .try_init()
        }
    };
}

/// A tracing writer that sends each formatted line to syslog at the event's level.
struct Syslog;

struct SyslogLine {
    priority: libc::c_int,
    line: Vec<u8>,
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> SyslogLine {
        SyslogLine {
            priority: libc::LOG_INFO,
            line: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SyslogLine {
        let priority = match *meta.level() {
            tracing::Level::ERROR => libc::LOG_ERR,
            tracing::Level::WARN => libc::LOG_WARNING,
            tracing::Level::INFO => libc::LOG_INFO,
            _ => libc::LOG_DEBUG,
        };
        SyslogLine {
            priority,
            line: Vec::new(),
        }
    }
}

impl Write for SyslogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        while self.line.last() == Some(&b'\n') {
            self.line.pop();
        }
        if self.line.is_empty() {
            return;
        }
        self.line.retain(|&b| b != 0);
        self.line.push(0);
        // SAFETY: the line is NUL-terminated with no interior NUL, and "%s" takes one string.
        unsafe { libc::syslog(self.priority, c"%s".as_ptr(), self.line.as_ptr()) };
    }
}
