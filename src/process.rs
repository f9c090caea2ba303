//! The daemon as a Unix process: the pid lock, detaching from the terminal, signals, logging
//! to stderr or syslog, and the file-descriptor limit. System calls go through `nix`.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::syslog::{Facility, LogFlags, Severity};
use tracing_subscriber::fmt::MakeWriter;

use crate::log_writer::{self, Line};

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
            // A symlink planted here would have us lock (and later remove) its target.
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| LockError::Io(path.display().to_string(), e))?;
        // A write lock on the whole file (l_len 0: to the end, however it grows).
        let lock = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        match fcntl(&file, FcntlArg::F_OFD_SETLK(&lock)) {
            Ok(_) => Ok(PidLock { _file: file, path }),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => {
                Err(LockError::Held(run_dir.display().to_string()))
            }
            Err(e) => Err(LockError::Io(path.display().to_string(), e.into())),
        }
    }

    /// Removes the lock file (at exit).
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Forks into the background as Cyrus does without `-d` (`daemon(3)`): the parent exits 0,
/// the child starts a new session, points stdin, stdout and stderr at `/dev/null` and writes
/// `<run_dir>/saslauthd.pid`. It stays in its working directory. Must be called before any
/// thread is started.
pub fn detach(run_dir: &Path) -> io::Result<PathBuf> {
    nix::unistd::daemon(true, false)?;
    let pidfile = run_dir.join("saslauthd.pid");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&pidfile)?;
    writeln!(file, "{}", std::process::id())?;
    Ok(pidfile)
}

/// Why the process could not be set up as asked.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A call failed (`setgid(108)`, `getrlimit(NOFILE)`, `--user alice`'s lookup).
    #[error("{call}: {source}")]
    Call {
        /// The call, with what it was given.
        call: String,
        /// What it said.
        source: nix::Error,
    },
    /// `--user` or `--group` names no one.
    #[error("--{option} {name}: no such {option}")]
    NoSuch {
        /// `user` or `group`.
        option: &'static str,
        /// The name given.
        name: String,
    },
    /// The descriptors the connection limits need cannot be had.
    #[error(
        "the connection limits need {needed} open files, and the hard limit is {hard} \
         (raising it: {source}); lower --max-connections / --dovecot-max-connections or raise \
         LimitNOFILE"
    )]
    FdLimit {
        /// The descriptors needed.
        needed: u64,
        /// The hard limit.
        hard: u64,
        /// Why it could not be raised.
        source: nix::Error,
    },
    /// Root could be regained after dropping privileges.
    #[error("still able to become root after dropping privileges")]
    RootRegained,
}

/// The error of a failed `call`.
fn failed(call: impl Into<String>) -> impl FnOnce(nix::Error) -> ProcessError {
    let call = call.into();
    move |source| ProcessError::Call { call, source }
}

/// Makes the open-file limit fit `needed` descriptors: the soft limit is raised to the hard
/// one, and the hard one (which root may raise) beyond it when it is too low. Returns the
/// limit in force, or an error naming both figures when `needed` cannot be had, so that idle
/// clients of one socket can never exhaust the descriptors the other needs to accept.
pub fn fit_fd_limit(needed: u64) -> Result<u64, ProcessError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(failed("getrlimit(NOFILE)"))?;
    if soft >= needed {
        return Ok(soft);
    }
    if hard >= needed {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .map_err(failed(format!("setrlimit(NOFILE, {hard})")))?;
        return Ok(hard);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, needed, needed) {
        Ok(()) => Ok(needed),
        Err(source) => Err(ProcessError::FdLimit {
            needed,
            hard,
            source,
        }),
    }
}

/// Who the daemon becomes once its sockets are bound (`--user`, `--group`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user's name, for messages.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// The primary group: `--group`, else the user's own.
    pub gid: u32,
    /// Supplementary groups kept for the passdb (the shadow group, the sasldb file's group).
    pub groups: Vec<u32>,
}

/// Looks up `user` (and `group`, else the user's primary group) and the supplementary groups
/// named in `keep` that exist.
pub fn resolve_identity(
    user: &str,
    group: Option<&str>,
    keep: &[KeepGroup],
) -> Result<Identity, ProcessError> {
    use nix::unistd::{Group, User};
    let no_such = |option, name: &str| ProcessError::NoSuch {
        option,
        name: name.to_owned(),
    };
    let found = User::from_name(user)
        .map_err(failed(format!("--user {user}")))?
        .ok_or_else(|| no_such("user", user))?;
    let gid = match group {
        None => found.gid.as_raw(),
        Some(name) => Group::from_name(name)
            .map_err(failed(format!("--group {name}")))?
            .ok_or_else(|| no_such("group", name))?
            .gid
            .as_raw(),
    };
    let mut groups = vec![gid];
    for wanted in keep {
        let id = match wanted {
            KeepGroup::Named(name) => Group::from_name(name)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw()),
            KeepGroup::Id(id) => Some(*id),
        };
        if let Some(id) = id.filter(|id| !groups.contains(id)) {
            groups.push(id);
        }
    }
    Ok(Identity {
        name: user.to_owned(),
        uid: found.uid.as_raw(),
        gid,
        groups,
    })
}

/// A supplementary group the passdb needs: by name (`shadow`, when it exists) or by id (the
/// group of the sasldb file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepGroup {
    /// A group name; skipped when the system has none of that name.
    Named(&'static str),
    /// A group id.
    Id(u32),
}

/// Runs `f` with `identity`'s effective ids (root's are restored after), so that what the
/// daemon will be able to do as that user is known before it detaches.
pub fn as_identity<R>(identity: &Identity, f: impl FnOnce() -> R) -> Result<R, ProcessError> {
    use nix::unistd::{getgroups, setegid, seteuid, setgroups, Gid, Uid};
    let saved = getgroups().map_err(failed("getgroups"))?;
    let groups: Vec<Gid> = identity.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    setgroups(&groups).map_err(failed("setgroups"))?;
    setegid(Gid::from_raw(identity.gid)).map_err(failed("setegid"))?;
    seteuid(Uid::from_raw(identity.uid)).map_err(failed("seteuid"))?;
    let result = f();
    seteuid(Uid::from_raw(0)).map_err(failed("seteuid(0)"))?;
    setegid(Gid::from_raw(0)).map_err(failed("setegid(0)"))?;
    setgroups(&saved).map_err(failed("setgroups"))?;
    Ok(result)
}

/// Becomes `identity` for good: supplementary groups, then group, then user; then checks that
/// root cannot be regained. Must be called before any thread is started (the pool, the
/// runtime), so that every thread runs as the new user.
pub fn drop_privileges(identity: &Identity) -> Result<(), ProcessError> {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    let groups: Vec<Gid> = identity.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    setgroups(&groups).map_err(failed("setgroups"))?;
    setgid(Gid::from_raw(identity.gid)).map_err(failed(format!("setgid({})", identity.gid)))?;
    setuid(Uid::from_raw(identity.uid)).map_err(failed(format!("setuid({})", identity.uid)))?;
    if identity.uid != 0 && setuid(Uid::from_raw(0)).is_ok() {
        return Err(ProcessError::RootRegained);
    }
    Ok(())
}

/// Returns the heap's free pages to the system (glibc's `malloc_trim`), after thousands of
/// connections have come and gone.
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: malloc_trim takes a size and only walks glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// While secrets are in memory, the process leaves no core dump and cannot be attached to
/// by its own user (`PR_SET_DUMPABLE` 0; also `RLIMIT_CORE` 0).
pub fn forbid_core_dumps() {
    use nix::sys::resource::{setrlimit, Resource};
    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
    let _ = nix::sys::prctl::set_dumpable(false);
}

/// Blocks (`true`) or unblocks (`false`) SIGTERM, SIGINT and SIGHUP for the calling thread
/// (and the threads it starts afterwards). The daemon blocks them first thing and unblocks
/// them once its handlers are installed ([`shutdown_signal`]), so a SIGTERM that arrives
/// while it starts is held and then handled as a clean stop, never the default kill, and a
/// SIGHUP is held and then ignored.
pub fn block_termination_signals(block: bool) {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(signal);
    }
    let how = if block {
        SigmaskHow::SIG_BLOCK
    } else {
        SigmaskHow::SIG_UNBLOCK
    };
    // Fails only for an invalid `how`, which this is not.
    let _ = nix::sys::signal::pthread_sigmask(how, Some(&set), None);
}

/// Installs the signal handlers now and returns a future that completes on the first SIGTERM
/// or SIGINT. Call inside the runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing requests in flight"),
            _ = int.recv() => tracing::info!("SIGINT: finishing requests in flight"),
        }
    }
}

/// Installs the SIGHUP handler now (a reload; a closing terminal never stops the daemon) and
/// returns its stream; `None` (logged) when it cannot be installed. Call inside the runtime.
pub fn reload_signal() -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::error!("cannot install the SIGHUP handler ({e}); SIGHUP is ignored");
            None
        }
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// stderr (foreground, not under systemd).
    Stderr,
    /// syslog, facility `auth`, as Cyrus (detached).
    Syslog,
    /// The systemd journal, natively, each event's fields as journal fields (in the
    /// foreground with stderr connected to the journal, as `JOURNAL_STREAM` says).
    Journal,
}

impl LogTarget {
    /// Where a daemon in the foreground (or not) logs: the journal when stderr is the
    /// journal's stream (`JOURNAL_STREAM=dev:inode` names stderr), else stderr; syslog when
    /// detached.
    pub fn for_daemon(foreground: bool) -> LogTarget {
        use std::os::unix::fs::MetadataExt;
        if !foreground {
            return LogTarget::Syslog;
        }
        let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
            return LogTarget::Stderr;
        };
        let named = stream
            .to_str()
            .and_then(|s| s.split_once(':'))
            .and_then(|(dev, ino)| Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?)));
        // fstat(2) of stderr, through /proc's link (no unsafe).
        let stderr = std::fs::metadata("/proc/self/fd/2").ok();
        match (named, stderr) {
            (Some((dev, ino)), Some(meta)) if meta.dev() == dev && meta.ino() == ino => {
                LogTarget::Journal
            }
            _ => LogTarget::Stderr,
        }
    }
}

/// The level names `log_level` takes.
pub const LOG_LEVELS: &[&str] = &["error", "warning", "info", "debug"];

/// An event's fields as Cyrus writes them, after its message: `auth failure: [user=alice]
/// [service=smtp] ...`. `verdict` is for the journal only (the message says it).
fn text_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| match field.name() {
        "message" => write!(w, "{value:?}"),
        "verdict" => Ok(()),
        name => write!(w, " [{name}={value:?}]"),
    })
}

/// Sets up logging at `level` (one of [`LOG_LEVELS`]; `debug` adds successes and details,
/// Cyrus's `-V`). The environment variable `SASLAUTHD_LOG` (an `EnvFilter` directive)
/// overrides the level.
pub fn init_logging(target: LogTarget, level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = match level {
        "warning" => "warn",
        other => other,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SASLAUTHD_LOG")
        // sqlx logs each statement it runs at debug, and reqwest and hyper (the [oauth2]
        // provider's calls) each connection: not what -V is for.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!(
                "{default},sqlx=warn,reqwest=warn,hyper=warn,hyper_util=warn"
            ))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter.clone())
        .fmt_fields(text_fields())
        .with_target(false)
        .without_time();
    let _ = match target {
        LogTarget::Stderr => {
            use std::io::IsTerminal;
            builder
                .with_ansi(io::stderr().is_terminal())
                .with_writer(|| StderrLine(Vec::new()))
                .try_init()
        }
        LogTarget::Syslog => {
            const IDENT: &CStr = c"saslauthd-rs";
            let flags = LogFlags::LOG_PID | LogFlags::LOG_NDELAY;
            // Cannot fail for a C string constant.
            let _ = nix::syslog::openlog(Some(IDENT), flags, Facility::LOG_AUTH);
            builder
                .with_ansi(false)
                .with_level(false)
                .with_writer(Syslog)
                .try_init()
        }
        LogTarget::Journal => tracing_subscriber::registry()
            .with(filter)
            .with(Journal::connect())
            .try_init()
            .map_err(Into::into),
    };
}

/// Makes a panic one line in the daemon's log (`error`: where, and its message cut and
/// escaped) instead of a report on stderr, which is not the log under syslog and is several
/// lines in the journal; with `RUST_BACKTRACE` set, the usual report follows too. A panic
/// the LDAP passdb catches itself (ldap3 on a reply it cannot read) is logged there, with
/// the server's name, and not here. Call after [`init_logging`].
pub fn log_panics() {
    use crate::passdb::ldap::guard;
    let report = std::env::var_os("RUST_BACKTRACE").map(|_| std::panic::take_hook());
    std::panic::set_hook(Box::new(move |info| {
        if guard::caught_here() {
            return;
        }
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(
            "internal error: a thread panicked{place}: {}",
            guard::message(info.payload())
        );
        log_writer::flush();
        if let Some(report) = &report {
            report(info);
        }
    }));
}

/// The journal's native protocol (`systemd.journal-fields(7)`, `sd_journal_send`): one
/// datagram per event to `/run/systemd/journal/socket`, `NAME=value` lines. MESSAGE is the
/// same line the other targets write (so a journal-backed fail2ban reads what a file-backed
/// one does), PRIORITY the level, SYSLOG_IDENTIFIER and SYSLOG_FACILITY (auth) as syslog
/// would give them, and each of the event's fields in capitals: USER, SERVICE, REALM, PASSDB,
/// REMOTE, PROTOCOL, SASL_MECHANISM, VERDICT, DURATION_US, REASON, ERROR. Never a password:
/// no event has one. When the journal cannot be reached, the line goes to stderr (which
/// systemd also connects to the journal).
pub struct Journal {
    socket: Option<std::sync::Arc<std::os::unix::net::UnixDatagram>>,
}

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

impl Journal {
    fn connect() -> Journal {
        let socket = std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.connect(JOURNAL_SOCKET).map(|()| s))
            .ok()
            .map(std::sync::Arc::new);
        Journal { socket }
    }
}

/// One field of a datagram; a value with a newline in the binary form (name, newline, 64-bit
/// little-endian length, value, newline).
fn journal_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// The journal's name for an event's field.
fn journal_name(field: &str) -> String {
    match field {
        "mech" => "PASSDB".to_string(),
        "sasl" => "SASL_MECHANISM".to_string(),
        other => other
            .chars()
            .map(|c| match c {
                'a'..='z' => c.to_ascii_uppercase(),
                'A'..='Z' | '0'..='9' => c,
                _ => '_',
            })
            .collect(),
    }
}

#[derive(Default)]
struct JournalVisitor {
    message: String,
    fields: Vec<(String, String)>,
}

impl tracing::field::Visit for JournalVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.record(field, value.to_owned());
    }
}

impl JournalVisitor {
    fn record(&mut self, field: &tracing::field::Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            name => self.fields.push((name.to_owned(), value)),
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Journal {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut visitor = JournalVisitor::default();
        event.record(&mut visitor);
        let mut line = visitor.message.clone();
        for (name, value) in &visitor.fields {
            if name != "verdict" {
                line += &format!(" [{name}={value}]");
            }
        }
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => "3",
            tracing::Level::WARN => "4",
            tracing::Level::INFO => "6",
            _ => "7",
        };
        let mut datagram = Vec::with_capacity(256);
        journal_field(&mut datagram, "MESSAGE", line.as_bytes());
        journal_field(&mut datagram, "PRIORITY", priority.as_bytes());
        journal_field(&mut datagram, "SYSLOG_IDENTIFIER", b"saslauthd-rs");
        // LOG_AUTH, 4.
        journal_field(&mut datagram, "SYSLOG_FACILITY", b"4");
        for (name, value) in &visitor.fields {
            journal_field(&mut datagram, &journal_name(name), value.as_bytes());
        }
        line.push('\n');
        log_writer::send(match &self.socket {
            Some(socket) => Line::Journal {
                socket: std::sync::Arc::clone(socket),
                datagram,
                text: line.into_bytes(),
            },
            None => Line::Stderr(line.into_bytes()),
        });
    }
}

/// A tracing writer that hands each formatted line to the log writer, for stderr.
struct StderrLine(Vec<u8>);

impl Write for StderrLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for StderrLine {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            log_writer::send(Line::Stderr(std::mem::take(&mut self.0)));
        }
    }
}

/// A tracing writer that sends each formatted line to syslog at the event's level.
struct Syslog;

struct SyslogLine {
    severity: Severity,
    line: Vec<u8>,
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> SyslogLine {
        SyslogLine {
            severity: Severity::LOG_INFO,
            line: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SyslogLine {
        let severity = match *meta.level() {
            tracing::Level::ERROR => Severity::LOG_ERR,
            tracing::Level::WARN => Severity::LOG_WARNING,
            tracing::Level::INFO => Severity::LOG_INFO,
            _ => Severity::LOG_DEBUG,
        };
        SyslogLine {
            severity,
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
        let priority = nix::syslog::Priority::new(self.severity, Facility::LOG_AUTH);
        log_writer::send(Line::Syslog(priority, std::mem::take(&mut self.line)));
    }
}
