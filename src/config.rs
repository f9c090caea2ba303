//! The daemon's settings: defaults, then the TOML file (`--config`), then the flags.
//!
//! ```toml
//! passdb = "sasldb"            # -a
//! run_dir = "/run/saslauthd"   # -m; the socket is run_dir/mux
//! sasldb = "/etc/sasldb2"      # --sasldb
//! sasldb_format = "bdb"        # for saslpasswd2-rs --config: the format of a new file
//! realm = "example.org"        # --realm; default: the host name
//! combine_realm = false        # -r
//! workers = 5                  # -n
//! threads = 1                  # --threads; 0: one per core
//! read_timeout = 10            # --timeout, seconds
//! max_connections = 4096       # --max-connections (the mux socket)
//! dovecot_max_connections = 4096    # --dovecot-max-connections (the Dovecot socket)
//! socket_mode = "0660"         # --socket-mode
//! shadow_file = "/etc/shadow"  # --shadow-file; default: getspnam_r (NSS)
//! pam_service = "smtp"         # --pam-service; default: the request's service
//! failure_delay = 2.0          # --failure-delay, seconds; 0 turns throttling off
//! dovecot_socket = "/var/spool/postfix/private/auth"   # --dovecot-socket
//! dovecot_socket_owner = "postfix:postfix"             # --dovecot-socket-owner
//! dovecot_socket_mode = "0660"                         # --dovecot-socket-mode
//! dovecot_split_realm = true   # false: --dovecot-no-realm-split
//! dovecot_temp_fail = false    # --dovecot-temp-fail
//! dovecot_mechanisms = "plain login cram-md5 digest-md5"   # --dovecot-mechanisms
//! scram_iterations = 4096      # --scram-iterations
//! log_level = "info"           # error, warning, info, debug (-V, -d: debug)
//! user = "saslauthd"           # --user: drop to this user once the sockets are bound
//! group = "sasl"               # --group: and this primary group (default: the user's)
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::protocol::saslauthd::{self, DEFAULT_RUN_DIR};
use crate::verdict::PassdbKind;

/// Everything the daemon needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The passdb (`-a`).
    pub passdb: Option<PassdbKind>,
    /// The run directory (`-m`); the socket is `<run_dir>/mux`.
    pub run_dir: PathBuf,
    /// The sasldb2 file (`--sasldb`).
    pub sasldb: PathBuf,
    /// `sasldb_format`: the format `saslpasswd2-rs --config` gives a new sasldb2 (the daemon
    /// only reads files, whatever their format; it checks the value so that a typo is seen).
    pub sasldb_format: Option<crate::passdb::sasldb::Format>,
    /// The default realm (`--realm`); `None` means the host name, as Cyrus.
    pub realm: Option<String>,
    /// `-r`: pass `login@realm` to the passdb.
    pub combine_realm: bool,
    /// `-n`: how many blocking backend calls may run at once (Cyrus: worker processes).
    pub workers: usize,
    /// `--threads`: the threads that serve the sockets (default 1; 0: one per core). Read at
    /// start.
    pub threads: usize,
    /// `-c`: the credential cache (used by the PAM and shadow passdbs; sasldb needs none).
    pub cache: bool,
    /// `-t`: cache entry lifetime.
    pub cache_timeout: Duration,
    /// `-s`: cache size in KiB.
    pub cache_size_kb: u64,
    /// `-d` / `-f`: stay in the foreground.
    pub foreground: bool,
    /// `-V` / `-d`: log successes and details too.
    pub verbose: bool,
    /// How long a client may take to send its request.
    pub read_timeout: Duration,
    /// How many connections the mux socket may have open at once; more are closed at accept.
    pub max_connections: usize,
    /// How many the Dovecot socket may have; when full, its longest-idle connection is closed
    /// to make room.
    pub dovecot_max_connections: usize,
    /// The mode of the `mux` socket.
    pub socket_mode: u32,
    /// `-O` options, kept for passdbs that take them.
    pub mech_options: Vec<String>,
    /// `--shadow-file`: read shadow(5) entries from this file instead of NSS.
    pub shadow_file: Option<PathBuf>,
    /// `--pam-service`: the PAM service for every request (default: the request's).
    pub pam_service: Option<String>,
    /// `metrics_address`: serve `GET /metrics` (OpenMetrics) on this TCP address.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// `metrics`: whether requests are counted (false: every series stays at zero).
    pub metrics: bool,
    /// `--failure-delay`: the base delay before a failure is answered (0 = none).
    pub failure_delay: Duration,
    /// `--dovecot-socket`: also serve Dovecot's auth-client protocol here.
    pub dovecot_socket: Option<PathBuf>,
    /// `--dovecot-socket-owner USER[:GROUP]`.
    pub dovecot_socket_owner: Option<String>,
    /// `--dovecot-socket-mode`.
    pub dovecot_socket_mode: u32,
    /// `--dovecot-no-realm-split`: keep `user@realm` whole as the authid.
    pub dovecot_split_realm: bool,
    /// `--dovecot-temp-fail`: on a backend failure answer `FAIL code=temp_fail` instead of
    /// closing the connection.
    pub dovecot_temp_fail: bool,
    /// `--user`: the user the daemon becomes once its sockets are bound.
    pub user: Option<String>,
    /// `--group`: its primary group (default: the user's own).
    pub group: Option<String>,
    /// `--dovecot-mechanisms`: the mechanisms the Dovecot socket offers (canonical names);
    /// `None`: every one the passdb can serve but DIGEST-MD5.
    pub dovecot_mechanisms: Option<Vec<&'static str>>,
    /// `--scram-iterations`: SCRAM's PBKDF2 iteration count (at least 4096).
    pub scram_iterations: u32,
    /// `[[listener]]` tables: sockets beyond the mux socket and `dovecot_socket`.
    pub listeners: Vec<Listener>,
    /// `log_level`: one of `crate::process::LOG_LEVELS`; `-V`/`-d` (or `verbose`) make it
    /// `debug`.
    pub log_level: &'static str,
    /// The `[ldap]` table: `saslauthd.conf` keys, over the file `-O` names.
    pub ldap: Vec<(String, String)>,
}

/// The protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Cyrus's saslauthd protocol (libsasl2's `pwcheck_method: saslauthd`).
    Saslauthd,
    /// Dovecot's auth-client protocol (Postfix's `smtpd_sasl_type = dovecot`).
    Dovecot,
}

impl Protocol {
    /// Its name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Saslauthd => "saslauthd",
            Protocol::Dovecot => "dovecot",
        }
    }
}

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket.
    Path(PathBuf),
    /// A TCP address (the Dovecot protocol only), for `smtpd_sasl_path = inet:host:port`.
    Tcp(std::net::SocketAddr),
}

/// A `[[listener]]` of the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// What it speaks.
    pub protocol: Protocol,
    /// Where.
    pub endpoint: Endpoint,
    /// A Unix socket's mode.
    pub mode: u32,
    /// A Unix socket's owner (default: the daemon's user).
    pub owner: Option<String>,
    /// And group (default: the owner's primary group, or the daemon's).
    pub group: Option<String>,
    /// Connections open at once.
    pub max_connections: usize,
    /// A TCP listener's client networks (required there).
    pub allow: Vec<crate::server::Network>,
    /// Its line in the file, for messages.
    pub line: usize,
}

impl Listener {
    /// `owner` and `group` as `--dovecot-socket-owner` takes them (`user[:group]`); `None`
    /// when neither is set.
    pub fn owner_spec(&self) -> Option<String> {
        match (&self.owner, &self.group) {
            (None, None) => None,
            (owner, group) => {
                let user = owner.clone().unwrap_or_else(|| {
                    nix::unistd::User::from_uid(nix::unistd::geteuid())
                        .ok()
                        .flatten()
                        .map_or_else(|| "root".to_string(), |u| u.name)
                });
                Some(match group {
                    Some(group) => format!("{user}:{group}"),
                    None => user,
                })
            }
        }
    }

    /// Where it listens, for messages.
    pub fn describe(&self) -> String {
        match &self.endpoint {
            Endpoint::Path(path) => format!("{} ({})", path.display(), self.protocol.name()),
            Endpoint::Tcp(addr) => format!("{addr} ({}, TCP)", self.protocol.name()),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            passdb: None,
            run_dir: PathBuf::from(DEFAULT_RUN_DIR),
            sasldb: PathBuf::from(crate::passdb::sasldb::DEFAULT_PATH),
            sasldb_format: None,
            realm: None,
            combine_realm: false,
            workers: 5,
            threads: 1,
            cache: false,
            cache_timeout: Duration::from_secs(60),
            cache_size_kb: 1024,
            foreground: false,
            verbose: false,
            read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            dovecot_max_connections: 4096,
            socket_mode: 0o660,
            mech_options: Vec::new(),
            shadow_file: None,
            pam_service: None,
            failure_delay: Duration::from_secs(2),
            dovecot_socket: None,
            dovecot_socket_owner: None,
            dovecot_socket_mode: 0o660,
            dovecot_split_realm: true,
            dovecot_temp_fail: false,
            dovecot_mechanisms: None,
            user: None,
            group: None,
            scram_iterations: crate::auth::DEFAULT_SCRAM_ITERATIONS,
            listeners: Vec::new(),
            log_level: "info",
            ldap: Vec::new(),
            metrics_address: None,
            metrics: true,
        }
    }
}

/// The keys of the configuration file, for its manual page (`saslauthd-rs.toml(5)`): the
/// name, what its value is, and what it does. A test holds this list to the parser's.
pub const KEYS: &[(&str, &str, &str)] = &[
    ("passdb", "\"sasldb\" | \"shadow\" | \"pam\" | \"ldap\"", "The passdb (-a)."),
    ("run_dir", "path", "The run directory (-m); the socket is run_dir/mux. Default /run/saslauthd."),
    ("sasldb", "path", "The sasldb2 file (--sasldb). Default /etc/sasldb2."),
    ("sasldb_format", "\"lmdb\" | \"bdb\" | \"gdbm\"", "The format saslpasswd2-rs --config gives a new sasldb2 (the daemon reads every format)."),
    ("realm", "string", "The default realm (--realm). Default: the host name."),
    ("combine_realm", "bool", "Pass login@realm to the passdb (-r)."),
    ("workers", "integer", "Concurrent shadow/PAM checks and key derivations (-n). Default 5."),
    ("threads", "integer", "Threads that serve the sockets (--threads); the costly checks -n bounds run beside them. Default 1, which answered the most on a 2-core host (BENCHMARKS.md); 0: one per core. A restart, not a reload, changes it."),
    ("cache", "bool", "The credential cache for shadow and PAM (-c)."),
    ("cache_timeout", "seconds", "A cache entry's lifetime (-t). Default 60."),
    ("cache_size_kb", "integer", "The cache's size in KiB (-s). Default 1024."),
    ("verbose", "bool", "Log successes and details too (-V)."),
    ("log_level", "\"error\" | \"warning\" | \"info\" | \"debug\"", "The log level (-V and -d make it debug). Default info."),
    ("read_timeout", "seconds", "Time a client has to send its request (--timeout). Default 10."),
    ("max_connections", "integer", "Open connections on the mux socket at most (--max-connections). Default 4096."),
    ("dovecot_max_connections", "integer", "Open connections on the Dovecot socket at most. Default 4096."),
    ("metrics_address", "\"[host:]port\"", "Serve the metrics (OpenMetrics, GET /metrics) over HTTP on this TCP address; a bare port is 127.0.0.1's. Default: only the admin socket."),
    ("metrics", "bool", "Count requests, connections and backend calls for the metrics, stats and top. Default true; false leaves every series at zero (to measure what counting costs). A restart, not a reload, changes it."),
    ("socket_mode", "\"octal\"", "The mux socket's mode (--socket-mode). Default \"0660\"."),
    ("mech_options", "[strings]", "-O options, kept for passdbs that take them."),
    ("shadow_file", "path", "Read shadow(5) entries from this file instead of NSS (--shadow-file)."),
    ("pam_service", "string", "The PAM service for every request (--pam-service). Default: the request's."),
    ("failure_delay", "seconds", "The base delay before a failure is answered, doubling per client address up to 4.5 s (--failure-delay). Default 2.0; 0 turns throttling off."),
    ("dovecot_socket", "path", "Also serve Dovecot's auth-client protocol here (--dovecot-socket)."),
    ("dovecot_socket_owner", "\"user[:group]\"", "Its owner (--dovecot-socket-owner)."),
    ("dovecot_socket_mode", "\"octal\"", "Its mode (--dovecot-socket-mode). Default \"0660\"."),
    ("dovecot_split_realm", "bool", "Split user@realm at the last @ (false: --dovecot-no-realm-split). Default true."),
    ("dovecot_temp_fail", "bool", "On a backend failure answer FAIL code=temp_fail instead of closing (--dovecot-temp-fail)."),
    ("dovecot_mechanisms", "string", "The mechanisms the Dovecot socket offers (--dovecot-mechanisms). Default: every one the passdb can serve but DIGEST-MD5."),
    ("scram_iterations", "integer", "SCRAM's PBKDF2 iteration count, 4096 to 10000000 (--scram-iterations). Default 4096."),
    ("user", "string", "Become this user once the sockets are bound (--user)."),
    ("group", "string", "And this primary group (--group). Default: the user's own."),
    ("ldap", "table", "For -a ldap: saslauthd.conf's keys (ldap_servers = \"ldap://ldap1/\", ...), over the file -O names."),
    ("listener", "[[listener]] tables", "More sockets: protocol (\"saslauthd\" or \"dovecot\"), then path (a Unix socket, with mode, owner, group) or address (TCP, the Dovecot protocol only, with allow, the client networks it lets in, required), and max_connections."),
];

/// The TOML file; every key is optional, unknown keys are an error (a typo must not be
/// silently ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    passdb: Option<String>,
    run_dir: Option<PathBuf>,
    sasldb: Option<PathBuf>,
    sasldb_format: Option<String>,
    realm: Option<String>,
    combine_realm: Option<bool>,
    workers: Option<usize>,
    threads: Option<usize>,
    cache: Option<bool>,
    cache_timeout: Option<u64>,
    cache_size_kb: Option<u64>,
    verbose: Option<bool>,
    read_timeout: Option<u64>,
    max_connections: Option<usize>,
    dovecot_max_connections: Option<usize>,
    metrics_address: Option<String>,
    metrics: Option<bool>,
    socket_mode: Option<String>,
    mech_options: Option<Vec<String>>,
    shadow_file: Option<PathBuf>,
    pam_service: Option<String>,
    failure_delay: Option<f64>,
    dovecot_socket: Option<PathBuf>,
    dovecot_socket_owner: Option<String>,
    dovecot_socket_mode: Option<String>,
    dovecot_split_realm: Option<bool>,
    dovecot_temp_fail: Option<bool>,
    dovecot_mechanisms: Option<String>,
    user: Option<String>,
    group: Option<String>,
    scram_iterations: Option<u32>,
    listener: Option<Vec<FileListener>>,
    log_level: Option<String>,
    ldap: Option<toml::Table>,
}

/// A `[[listener]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileListener {
    protocol: String,
    path: Option<PathBuf>,
    address: Option<String>,
    mode: Option<String>,
    owner: Option<String>,
    group: Option<String>,
    max_connections: Option<usize>,
    allow: Option<Vec<String>>,
}

/// A setting that cannot be used; each names the setting (and the file) and the problem, in
/// Cyrus's words where Cyrus has them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A problem in the configuration file.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// The problem.
        source: Box<ConfigError>,
    },
    /// TOML that does not parse, an unknown key or a value of the wrong type: toml's message
    /// (which names the key) and the line, on one line.
    #[error("line {line}: {message}")]
    Toml {
        /// Where (1-based; 0 when toml gave no position).
        line: usize,
        /// What.
        message: String,
    },
    /// `-a` / `passdb` names no passdb.
    #[error("unknown authentication mechanism: {0}")]
    UnknownPassdb(String),
    /// `-m` / `run_dir` is relative.
    #[error("-m requires an absolute pathname")]
    RelativeRunDir,
    /// A socket mode that is not octal, or beyond 0777.
    #[error("invalid socket mode {0:?}: expected octal, e.g. 0660")]
    BadMode(String),
    /// A TCP address that is none.
    #[error("invalid address {0:?}: expected a port, or host:port (127.0.0.1:9466, [::1]:9466)")]
    BadAddress(String),
    /// A number that is not one.
    #[error("{setting}: {text:?} is not a valid number")]
    NotANumber {
        /// The flag.
        setting: String,
        /// What was given.
        text: String,
    },
    /// `-n` below zero.
    #[error("invalid number of worker processes defined")]
    Workers,
    /// `--threads` below zero or above 1024.
    #[error("--threads takes 0 (one per core) to 1024")]
    Threads,
    /// A duration or count that must be positive.
    #[error("{0} must be positive")]
    NotPositive(&'static str),
    /// A size that must be positive.
    #[error("{0} must be positive and non zero")]
    NotPositiveNonZero(&'static str),
    /// A delay beyond what Postfix waits.
    #[error("{0} must be between 0 and 10 seconds")]
    DelayRange(&'static str),
    /// `sasldb_format` names no format.
    #[error("sasldb_format: {0}")]
    SasldbFormat(String),
    /// `--dovecot-mechanisms` / `dovecot_mechanisms` names no mechanism of ours.
    #[error("dovecot_mechanisms: {0}")]
    Mechanisms(#[from] crate::mech::MechListError),
    /// A SCRAM iteration count out of range.
    #[error("scram iterations {0}: must be 4096 to 10000000")]
    ScramIterations(u32),
    /// A bad value in the file, with its key and line.
    #[error("{key} at line {line}: {source}")]
    At {
        /// The key.
        key: &'static str,
        /// Its line (1-based).
        line: usize,
        /// The problem.
        source: Box<ConfigError>,
    },
    /// `log_level` names no level.
    #[error("unknown log level {0:?}: expected error, warning, info or debug")]
    LogLevel(String),
    /// Settings that contradict each other.
    #[error("{0}")]
    Conflict(String),
    /// A `[[listener]]` that cannot be used.
    #[error("the [[listener]] at line {line}: {message}")]
    Listener {
        /// Its line.
        line: usize,
        /// The problem.
        message: String,
    },
}

/// The line (1-based) where top-level `key` is set in `text`, or 0 when it cannot be found
/// (TOML does not allow a key twice, so the first is the one).
fn key_line(text: &str, key: &str) -> usize {
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.starts_with('[') {
            break;
        }
        if let Some(rest) = line.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return i + 1;
            }
        }
    }
    0
}

/// The lines of the `[[listener]]` headers in `text`, in order.
fn listener_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let line = line.trim();
            line.starts_with("[[")
                && line
                    .trim_start_matches('[')
                    .trim_end_matches(|c: char| c == ']' || c.is_whitespace())
                    .split('#')
                    .next()
                    .is_some_and(|name| name.trim() == "listener")
        })
        .map(|(i, _)| i + 1)
        .collect()
}

/// Checks one `[[listener]]`.
fn listener(file: FileListener, line: usize) -> Result<Listener, ConfigError> {
    let bad = |message: String| ConfigError::Listener { line, message };
    let protocol = match file.protocol.as_str() {
        "saslauthd" => Protocol::Saslauthd,
        "dovecot" => Protocol::Dovecot,
        other => {
            return Err(bad(format!(
                "protocol {other:?}: expected \"saslauthd\" or \"dovecot\""
            )))
        }
    };
    let endpoint = match (file.path, file.address) {
        (Some(_), Some(_)) => return Err(bad("path and address: give one of them".into())),
        (None, None) => {
            return Err(bad(
                "no path (a Unix socket) or address (TCP, the dovecot protocol)".into(),
            ))
        }
        (Some(path), None) => {
            let text = path.to_string_lossy();
            let looks_like_address = text.starts_with("inet:")
                || text.parse::<std::net::SocketAddr>().is_ok()
                || (!text.contains('/') && text.contains(':'));
            if looks_like_address {
                return Err(bad(format!(
                    "path {text:?} is an address; a TCP listener takes address = \"{}\" \
                     and allow = [...]",
                    text.trim_start_matches("inet:")
                )));
            }
            if !path.is_absolute() {
                return Err(bad(format!("path {text:?} must be absolute")));
            }
            Endpoint::Path(path)
        }
        (None, Some(address)) => {
            if address.starts_with('/') {
                return Err(bad(format!(
                    "address {address:?} is a path; a Unix socket takes path = \"{address}\""
                )));
            }
            let trimmed = address.trim_start_matches("inet:");
            let addr: std::net::SocketAddr = trimmed.parse().map_err(|_| {
                bad(format!(
                    "address {address:?} is not an IP address and port, e.g. \"127.0.0.1:12345\""
                ))
            })?;
            if protocol == Protocol::Saslauthd {
                return Err(bad(
                    "the saslauthd protocol is served on Unix sockets only (libsasl2 knows no \
                     other); use path"
                        .into(),
                ));
            }
            Endpoint::Tcp(addr)
        }
    };
    let tcp = matches!(endpoint, Endpoint::Tcp(_));
    let mut allow = Vec::new();
    match (&file.allow, tcp) {
        (Some(_), false) => {
            return Err(bad(
                "allow applies to TCP listeners; a Unix socket's mode, owner and group say \
                 who may connect"
                    .into(),
            ))
        }
        (None, true) => {
            return Err(bad(
                "a TCP listener needs allow = [...], the client networks it lets in (e.g. \
                 [\"127.0.0.1\", \"192.0.2.0/24\"])"
                    .into(),
            ))
        }
        (Some(list), true) if list.is_empty() => {
            return Err(bad(
                "allow = [] lets nobody in; name the client networks".into()
            ))
        }
        (Some(list), true) => {
            for net in list {
                allow.push(
                    net.parse()
                        .map_err(|e: String| bad(format!("allow: {e}")))?,
                );
            }
        }
        (None, false) => {}
    }
    if tcp && (file.mode.is_some() || file.owner.is_some() || file.group.is_some()) {
        return Err(bad(
            "mode, owner and group apply to Unix sockets; a TCP listener has allow".into(),
        ));
    }
    let mode = match &file.mode {
        Some(mode) => parse_mode(mode).map_err(|e| bad(e.to_string()))?,
        None => 0o660,
    };
    let max_connections = match file.max_connections {
        Some(n) => positive_count("max_connections", n).map_err(|e| bad(e.to_string()))?,
        None => 4096,
    };
    Ok(Listener {
        protocol,
        endpoint,
        mode,
        owner: file.owner,
        group: file.group,
        max_connections,
        allow,
        line,
    })
}

impl Config {
    /// The effective settings as a configuration file would give them, every key (those
    /// left to a default that depends on the host, commented): what `--check-config` prints.
    pub fn effective(&self) -> String {
        let q = |text: &str| toml::Value::String(text.to_owned()).to_string();
        let path = |p: &Path| q(&p.to_string_lossy());
        let opt = |key: &str, value: Option<String>, default: &str| match value {
            Some(v) => format!("{key} = {v}\n"),
            None => format!("# {key}: {default}\n"),
        };
        let mut out = String::new();
        out += &opt(
            "passdb",
            self.passdb.map(|p| q(p.name())),
            "none given (-a)",
        );
        out += &format!("run_dir = {}\n", path(&self.run_dir));
        out += &format!("sasldb = {}\n", path(&self.sasldb));
        out += &opt(
            "sasldb_format",
            self.sasldb_format.map(|f| q(f.name())),
            "the format this host's libsasl2 reads",
        );
        out += &opt("realm", self.realm.as_deref().map(q), "the host name");
        out += &format!("combine_realm = {}\n", self.combine_realm);
        out += &format!("workers = {}\n", self.workers);
        out += &format!("threads = {}\n", self.threads);
        out += &format!("cache = {}\n", self.cache);
        out += &format!("cache_timeout = {}\n", self.cache_timeout.as_secs());
        out += &format!("cache_size_kb = {}\n", self.cache_size_kb);
        out += &format!("verbose = {}\n", self.verbose);
        out += &format!("log_level = {}\n", q(self.log_level));
        out += &format!("read_timeout = {}\n", self.read_timeout.as_secs());
        out += &format!("max_connections = {}\n", self.max_connections);
        out += &format!("socket_mode = \"{:04o}\"\n", self.socket_mode);
        let options: Vec<String> = self.mech_options.iter().map(|o| q(o)).collect();
        out += &format!("mech_options = [{}]\n", options.join(", "));
        out += &opt(
            "shadow_file",
            self.shadow_file.as_deref().map(path),
            "NSS (getspnam_r)",
        );
        out += &opt(
            "pam_service",
            self.pam_service.as_deref().map(q),
            "the request's service",
        );
        out += &format!("failure_delay = {:?}\n", self.failure_delay.as_secs_f64());
        out += &opt(
            "dovecot_socket",
            self.dovecot_socket.as_deref().map(path),
            "none",
        );
        out += &opt(
            "dovecot_socket_owner",
            self.dovecot_socket_owner.as_deref().map(q),
            "the daemon's user",
        );
        out += &format!(
            "dovecot_socket_mode = \"{:04o}\"\n",
            self.dovecot_socket_mode
        );
        out += &format!(
            "dovecot_max_connections = {}\n",
            self.dovecot_max_connections
        );
        out += &opt(
            "metrics_address",
            self.metrics_address.map(|a| q(&a.to_string())),
            "none",
        );
        out += &format!("metrics = {}\n", self.metrics);
        out += &format!("dovecot_split_realm = {}\n", self.dovecot_split_realm);
        out += &format!("dovecot_temp_fail = {}\n", self.dovecot_temp_fail);
        out += &opt(
            "dovecot_mechanisms",
            self.dovecot_mechanisms.as_ref().map(|m| q(&m.join(" "))),
            "every one the passdb can serve but DIGEST-MD5",
        );
        out += &format!("scram_iterations = {}\n", self.scram_iterations);
        out += &opt("user", self.user.as_deref().map(q), "stay root");
        out += &opt("group", self.group.as_deref().map(q), "the user's own");
        for l in &self.listeners {
            out += &format!("\n[[listener]]\nprotocol = {}\n", q(l.protocol.name()));
            match &l.endpoint {
                Endpoint::Path(p) => {
                    out += &format!("path = {}\nmode = \"{:04o}\"\n", path(p), l.mode);
                    out += &opt("owner", l.owner.as_deref().map(q), "the daemon's user");
                    out += &opt("group", l.group.as_deref().map(q), "the owner's group");
                }
                Endpoint::Tcp(addr) => {
                    let allow: Vec<String> = l.allow.iter().map(|n| q(&n.to_string())).collect();
                    out += &format!(
                        "address = {}\nallow = [{}]\n",
                        q(&addr.to_string()),
                        allow.join(", ")
                    );
                }
            }
            out += &format!("max_connections = {}\n", l.max_connections);
        }
        out
    }

    /// Applies a TOML file over `self`.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.apply_toml(&text).map_err(|e| ConfigError::InFile {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    /// Applies TOML text over `self`.
    pub(crate) fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Toml {
            line: e.span().map_or(0, |span| {
                text[..span.start.min(text.len())].matches('\n').count() + 1
            }),
            message: e.message().trim().replace('\n', " "),
        })?;
        // A bad value names its key and line (toml's own errors, unknown keys and wrong
        // types, already do).
        let at = |key: &'static str| {
            move |e: ConfigError| ConfigError::At {
                key,
                line: key_line(text, key),
                source: Box::new(e),
            }
        };
        if let Some(name) = file.passdb {
            self.passdb = Some(parse_passdb(&name).map_err(at("passdb"))?);
        }
        if let Some(dir) = file.run_dir {
            self.run_dir = check_run_dir(dir).map_err(at("run_dir"))?;
        }
        if let Some(path) = file.sasldb {
            self.sasldb = path;
        }
        if let Some(format) = file.sasldb_format {
            self.sasldb_format = Some(format.parse().map_err(
                |e: crate::passdb::sasldb::UnknownFormat| {
                    at("sasldb_format")(ConfigError::SasldbFormat(e.to_string()))
                },
            )?);
        }
        if let Some(realm) = file.realm {
            self.realm = Some(realm);
        }
        if let Some(v) = file.combine_realm {
            self.combine_realm = v;
        }
        if let Some(n) = file.workers {
            self.workers = n;
        }
        if let Some(n) = file.threads {
            if n > 1024 {
                return Err(at("threads")(ConfigError::Threads));
            }
            self.threads = n;
        }
        if let Some(v) = file.cache {
            self.cache = v;
        }
        if let Some(t) = file.cache_timeout {
            self.cache_timeout = positive_secs("cache_timeout", t).map_err(at("cache_timeout"))?;
        }
        if let Some(kb) = file.cache_size_kb {
            if kb == 0 {
                return Err(at("cache_size_kb")(ConfigError::NotPositiveNonZero(
                    "cache_size_kb",
                )));
            }
            self.cache_size_kb = kb;
        }
        if let Some(v) = file.verbose {
            self.verbose = v;
        }
        if let Some(t) = file.read_timeout {
            self.read_timeout = positive_secs("read_timeout", t).map_err(at("read_timeout"))?;
        }
        if let Some(n) = file.max_connections {
            self.max_connections =
                positive_count("max_connections", n).map_err(at("max_connections"))?;
        }
        if let Some(n) = file.dovecot_max_connections {
            self.dovecot_max_connections = positive_count("dovecot_max_connections", n)
                .map_err(at("dovecot_max_connections"))?;
        }
        if let Some(text) = file.metrics_address {
            self.metrics_address =
                Some(parse_metrics_address(&text).map_err(at("metrics_address"))?);
        }
        if let Some(on) = file.metrics {
            self.metrics = on;
        }
        if let Some(mode) = file.socket_mode {
            self.socket_mode = parse_mode(&mode).map_err(at("socket_mode"))?;
        }
        if let Some(opts) = file.mech_options {
            self.mech_options = opts;
        }
        if let Some(path) = file.shadow_file {
            self.shadow_file = Some(path);
        }
        if let Some(service) = file.pam_service {
            self.pam_service = Some(service);
        }
        if let Some(secs) = file.failure_delay {
            self.failure_delay = delay_secs("failure_delay", secs).map_err(at("failure_delay"))?;
        }
        if let Some(path) = file.dovecot_socket {
            self.dovecot_socket = Some(path);
        }
        if let Some(owner) = file.dovecot_socket_owner {
            self.dovecot_socket_owner = Some(owner);
        }
        if let Some(mode) = file.dovecot_socket_mode {
            self.dovecot_socket_mode = parse_mode(&mode).map_err(at("dovecot_socket_mode"))?;
        }
        if let Some(v) = file.dovecot_split_realm {
            self.dovecot_split_realm = v;
        }
        if let Some(v) = file.dovecot_temp_fail {
            self.dovecot_temp_fail = v;
        }
        if let Some(user) = file.user {
            self.user = Some(user);
        }
        if let Some(group) = file.group {
            self.group = Some(group);
        }
        if let Some(list) = file.dovecot_mechanisms {
            self.dovecot_mechanisms = Some(
                crate::mech::parse_names(&list).map_err(|e| at("dovecot_mechanisms")(e.into()))?,
            );
        }
        if let Some(n) = file.scram_iterations {
            self.scram_iterations = scram_iterations(n).map_err(at("scram_iterations"))?;
        }
        if let Some(table) = file.ldap {
            for (key, value) in table {
                let text = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::Boolean(b) => if b { "yes" } else { "no" }.to_string(),
                    other => {
                        return Err(at("ldap")(ConfigError::Conflict(format!(
                            "ldap.{key}: {other} is not a string, number or boolean"
                        ))))
                    }
                };
                // Checked with the rest of the LDAP settings when the passdb opens, and here
                // for the key's name.
                let mut probe = crate::passdb::ldap::conf::LdapConf::default();
                if let Err(message) = probe.set(&key, &text) {
                    if message.starts_with("unknown key") || message.contains("not supported") {
                        return Err(at("ldap")(ConfigError::Conflict(format!(
                            "[ldap] {message}"
                        ))));
                    }
                }
                self.ldap.push((key, text));
            }
        }
        if let Some(level) = file.log_level {
            self.log_level = parse_log_level(&level).map_err(at("log_level"))?;
        }
        if let Some(listeners) = file.listener {
            let lines = listener_lines(text);
            for (i, file) in listeners.into_iter().enumerate() {
                let line = lines
                    .get(i)
                    .copied()
                    .unwrap_or_else(|| key_line(text, "listener"));
                self.listeners.push(listener(file, line)?);
            }
        }
        Ok(())
    }

    /// Checks what only the settings together can tell: an address given for the Dovecot
    /// socket's path, two listeners on one socket.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(path) = &self.dovecot_socket {
            let text = path.to_string_lossy();
            if text.starts_with("inet:") || text.parse::<std::net::SocketAddr>().is_ok() {
                return Err(ConfigError::Conflict(format!(
                    "--dovecot-socket {text:?}: an address where a path belongs; for TCP, add \
                     a [[listener]] with protocol = \"dovecot\", address and allow to the \
                     configuration file"
                )));
            }
        }
        let mut seen: Vec<(Endpoint, String)> = vec![(
            Endpoint::Path(self.socket_path()),
            "the mux socket (-m)".to_string(),
        )];
        if let Some(path) = &self.dovecot_socket {
            seen.push((Endpoint::Path(path.clone()), "dovecot_socket".to_string()));
        }
        for l in &self.listeners {
            if let Some((_, first)) = seen.iter().find(|(e, _)| *e == l.endpoint) {
                return Err(ConfigError::Listener {
                    line: l.line,
                    message: format!("{} is already {first}", l.describe()),
                });
            }
            seen.push((
                l.endpoint.clone(),
                format!("the [[listener]] at line {}", l.line),
            ));
        }
        Ok(())
    }

    /// What the passdbs are told: the flags that concern them, and the configuration file's
    /// table named after the passdb `-a` chose (`[ldap]`).
    pub fn passdb_settings(&self) -> crate::passdb::Settings {
        crate::passdb::Settings {
            sasldb: self.sasldb.clone(),
            shadow_file: self.shadow_file.clone(),
            pam_service: self.pam_service.clone(),
            options: self.mech_options.clone(),
            table: match self.passdb.map(|k| k.name) {
                Some("ldap") => self.ldap.clone(),
                _ => Vec::new(),
            },
        }
    }

    /// The socket path, `<run_dir>/mux`.
    pub fn socket_path(&self) -> PathBuf {
        saslauthd::socket_path(&self.run_dir)
    }
}

/// Parses a `log_level`.
pub fn parse_log_level(text: &str) -> Result<&'static str, ConfigError> {
    let text = if text == "warn" { "warning" } else { text };
    crate::process::LOG_LEVELS
        .iter()
        .find(|l| **l == text)
        .copied()
        .ok_or_else(|| ConfigError::LogLevel(text.to_owned()))
}

/// Parses an `-a` / `passdb` name.
pub fn parse_passdb(name: &str) -> Result<PassdbKind, ConfigError> {
    crate::passdb::module(name)
        .map(|m| m.kind)
        .ok_or_else(|| ConfigError::UnknownPassdb(name.to_owned()))
}

/// Checks `-m`: Cyrus requires an absolute path.
pub fn check_run_dir(dir: PathBuf) -> Result<PathBuf, ConfigError> {
    if !dir.is_absolute() {
        return Err(ConfigError::RelativeRunDir);
    }
    Ok(dir)
}

/// `metrics_address`: a port (on 127.0.0.1) or `host:port`.
pub fn parse_metrics_address(text: &str) -> Result<std::net::SocketAddr, ConfigError> {
    let bad = || ConfigError::BadAddress(text.to_owned());
    match text.parse::<u16>() {
        Ok(0) => Err(bad()),
        Ok(port) => Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
        Err(_) => text.parse().map_err(|_| bad()),
    }
}

/// Parses an octal mode such as `0660` or `660`.
pub fn parse_mode(text: &str) -> Result<u32, ConfigError> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(ConfigError::BadMode(text.to_owned())),
    }
}

/// A whole number of seconds, at least 1.
pub fn positive_secs(name: &'static str, secs: u64) -> Result<Duration, ConfigError> {
    if secs == 0 {
        return Err(ConfigError::NotPositive(name));
    }
    Ok(Duration::from_secs(secs))
}

/// A delay in seconds (fractions allowed), from 0 to 10.
pub fn delay_secs(name: &'static str, secs: f64) -> Result<Duration, ConfigError> {
    if !(0.0..=10.0).contains(&secs) {
        return Err(ConfigError::DelayRange(name));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// SCRAM's iteration count: at least 4096 (RFC 7677), at most 10,000,000.
pub fn scram_iterations(n: u32) -> Result<u32, ConfigError> {
    if !(4096..=10_000_000).contains(&n) {
        return Err(ConfigError::ScramIterations(n));
    }
    Ok(n)
}

/// A count, at least 1.
pub fn positive_count(name: &'static str, n: usize) -> Result<usize, ConfigError> {
    if n == 0 {
        return Err(ConfigError::NotPositive(name));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults() {
        let mut c = Config::default();
        c.apply_toml(
            "passdb = \"sasldb\"\nrun_dir = \"/tmp/x\"\nrealm = \"example.org\"\n\
             socket_mode = \"0600\"\nread_timeout = 3\n",
        )
        .unwrap();
        assert_eq!(c.passdb.map(|k| k.name), Some("sasldb"));
        assert_eq!(c.socket_path(), PathBuf::from("/tmp/x/mux"));
        assert_eq!(c.realm.as_deref(), Some("example.org"));
        assert_eq!(c.socket_mode, 0o600);
        assert_eq!(c.read_timeout, Duration::from_secs(3));
        c.apply_toml(
            "dovecot_socket = \"/var/spool/postfix/private/auth\"\n\
             dovecot_socket_owner = \"postfix:postfix\"\ndovecot_socket_mode = \"0600\"\n\
             dovecot_split_realm = false\ndovecot_temp_fail = true\nscram_iterations = 8192\n",
        )
        .unwrap();
        assert_eq!(
            c.dovecot_socket.as_deref(),
            Some(Path::new("/var/spool/postfix/private/auth"))
        );
        assert_eq!(c.dovecot_socket_owner.as_deref(), Some("postfix:postfix"));
        assert_eq!(c.dovecot_socket_mode, 0o600);
        assert!(!c.dovecot_split_realm && c.dovecot_temp_fail);
        assert_eq!(c.scram_iterations, 8192);
        assert!(c.apply_toml("scram_iterations = 1000").is_err());
        c.apply_toml("dovecot_mechanisms = \"plain, Login digest-md5\"")
            .unwrap();
        assert_eq!(
            c.dovecot_mechanisms.as_deref(),
            Some(&["PLAIN", "LOGIN", "DIGEST-MD5"][..])
        );
        let err = c
            .apply_toml("dovecot_mechanisms = \"plain ntlm\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown mechanism \"ntlm\""), "{err}");
    }

    /// KEYS (the manual's list) is the parser's list: toml names every accepted key when it
    /// refuses an unknown one.
    #[test]
    fn the_manual_lists_every_key() {
        let err = Config::default()
            .apply_toml("no_such_key = 1")
            .unwrap_err()
            .to_string();
        let expected = err.split("expected one of ").nth(1).unwrap();
        let mut parsed: Vec<&str> = expected
            .split(", ")
            .map(|k| k.trim().trim_matches('`'))
            .collect();
        let mut listed: Vec<&str> = KEYS.iter().map(|(k, _, _)| *k).collect();
        parsed.sort_unstable();
        listed.sort_unstable();
        assert_eq!(parsed, listed);
    }

    /// The example's commented [[listener]] tables mean what they say once uncommented.
    #[test]
    fn the_example_listeners_parse() {
        let example = include_str!("../etc/saslauthd-rs.toml");
        let start = example.find("# [[listener]]").unwrap();
        let uncommented: String = example[start..]
            .lines()
            .map(|line| line.strip_prefix("# ").unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let mut c = Config::default();
        c.apply_toml(&uncommented).unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(
            c.listeners[0].owner_spec().as_deref(),
            Some("postfix:postfix")
        );
        assert_eq!(c.listeners[1].allow.len(), 3);
        c.validate().unwrap();
        let mut again = Config::default();
        again.apply_toml(&c.effective()).unwrap();
        assert_eq!(again.listeners.len(), 2);
        assert_eq!(again.listeners[1].endpoint, c.listeners[1].endpoint);
    }

    #[test]
    fn bad_settings_are_named() {
        let mut c = Config::default();
        let err = c
            .apply_toml("realm = \"x\"\nreaml = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 2: unknown field `reaml`"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        let err = c
            .apply_toml("run_dir = \"relative\"")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "run_dir at line 1: -m requires an absolute pathname");
        let err = c
            .apply_toml("# a comment\n\npassdb = \"kerberos5\"")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "passdb at line 3: unknown authentication mechanism: kerberos5"
        );
        let err = c.apply_toml("workers = \"five\"").unwrap_err().to_string();
        assert!(err.starts_with("line 1: invalid type"), "{err}");
        assert!(c.apply_toml("socket_mode = \"999\"").is_err());
        assert!(c.apply_toml("read_timeout = 0").is_err());
    }
}
