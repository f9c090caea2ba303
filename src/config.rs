//! The daemon's settings: defaults, then the TOML file (`--config`), then the flags.
//!
//! Every key is declared once, in `keys!`'s list below: its field, default, how the file
//! (and its long flag, when it has one) gives it and what checks it, how `--check-config`
//! shows it, what the manual says, and whether a reload can change it. The struct, the
//! defaults, the file's parser, the manual's list ([`KEYS`]), `--check-config`'s output and
//! the reload's list of what only a restart changes are all written from it.
//!
//! ```toml
//! passdb = "sasldb"            # -a
//! run_dir = "/run/saslauthd"   # -m; the socket is run_dir/mux
//! sasldb = "/etc/sasldb2"      # --sasldb
//! realm = "example.org"        # --realm; default: the host name
//! workers = 5                  # -n
//! failure_delay = 2.0          # --failure-delay, seconds; 0 turns throttling off
//! dovecot_socket = "/var/spool/postfix/private/auth"   # --dovecot-socket
//! user = "saslauthd"           # --user: drop to this user once the sockets are bound
//!
//! [ldap]                       # the table named after the passdb: its own keys
//! ldap_servers = "ldap://127.0.0.1/"
//! ```

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{MapAccess, Visitor};
use serde::Deserialize;

use crate::protocol::saslauthd::{self, DEFAULT_RUN_DIR};
use crate::verdict::PassdbKind;

/// Whether a reload (SIGHUP) can change a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The reload applies the new value.
    Applies,
    /// Only a restart does: a reload that finds it changed keeps the old value and says so.
    Restart,
}

/// One key of the configuration file, as the manual describes it.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// Its name in the file.
    pub name: &'static str,
    /// What its value is.
    pub value: &'static str,
    /// What it does.
    pub about: &'static str,
    /// The flag that sets it too, if any.
    pub flag: Option<&'static str>,
    /// Whether a reload changes it.
    pub reload: Reload,
}

/// A value as `--check-config` shows it: set (TOML text), or left to a default that depends
/// on the host, said in words (printed as a comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    /// `key = value`.
    Set(String),
    /// `# key: words`.
    Unset(&'static str),
}

/// How `--check-config` writes values.
mod show {
    use super::Shown;
    use std::path::Path;
    use std::time::Duration;

    pub(super) fn text(text: &str) -> String {
        toml::Value::String(text.to_owned()).to_string()
    }
    pub(super) fn path(path: &Path) -> String {
        text(&path.to_string_lossy())
    }
    pub(super) fn set(value: impl std::fmt::Display) -> Shown {
        Shown::Set(value.to_string())
    }
    pub(super) fn mode(mode: u32) -> Shown {
        Shown::Set(format!("\"{mode:04o}\""))
    }
    pub(super) fn secs(d: &Duration) -> Shown {
        Shown::Set(d.as_secs().to_string())
    }
    pub(super) fn or(value: Option<String>, unset: &'static str) -> Shown {
        value.map_or(Shown::Unset(unset), Shown::Set)
    }
}

/// A flag's text as a key's file type: what `--timeout 5` gives where `read_timeout = 5`
/// would.
trait FromFlag: Sized {
    fn from_flag(flag: &'static str, value: &OsStr) -> Result<Self, ConfigError>;
}

/// A flag's value as text.
fn flag_text<'a>(flag: &'static str, value: &'a OsStr) -> Result<&'a str, ConfigError> {
    value.to_str().ok_or(ConfigError::NotText(flag))
}

impl FromFlag for String {
    fn from_flag(flag: &'static str, value: &OsStr) -> Result<Self, ConfigError> {
        flag_text(flag, value).map(str::to_owned)
    }
}

/// A path is taken as it is: it need not be text.
impl FromFlag for PathBuf {
    fn from_flag(_: &'static str, value: &OsStr) -> Result<Self, ConfigError> {
        Ok(PathBuf::from(value))
    }
}

macro_rules! from_flag_number {
    ($($t:ty),*) => {$(
        impl FromFlag for $t {
            fn from_flag(flag: &'static str, value: &OsStr) -> Result<Self, ConfigError> {
                let text = flag_text(flag, value)?;
                text.trim().parse().map_err(|_| ConfigError::NotANumber {
                    setting: flag.to_owned(),
                    text: text.to_owned(),
                })
            }
        }
    )*};
}
from_flag_number!(i64, u32, usize, f64, bool);

/// A list given by a flag is one item (a repeated flag adds its own by hand, as `-O`).
impl FromFlag for Vec<String> {
    fn from_flag(flag: &'static str, value: &OsStr) -> Result<Self, ConfigError> {
        String::from_flag(flag, value).map(|item| vec![item])
    }
}

/// Declares the keys: for each, its doc comment and
/// `field: Type = default, file RawType => parse, show shown, flag, reload, "value", "about";`
/// where `parse: fn(RawType, name) -> Result<Type, ConfigError>` (name: the key, or the flag
/// when the value came from one) and `shown: fn(&Type) -> Shown`. Then the fields that are no
/// plain key (`others`), and the manual's rows for the keys that are tables (`tables`).
macro_rules! keys {
    (
        plain {$(
            $(#[doc = $doc:literal])*
            $key:ident: $ty:ty = $default:expr,
                file $raw:ty => $parse:expr,
                show $show:expr,
                $flag:expr, $reload:ident,
                $value:literal, $about:literal;
        )*}
        others {
            $( $(#[doc = $odoc:literal])* $other:ident: $oty:ty = $odefault:expr; )*
        }
        tables [ $($table_key:expr),* $(,)? ]
    ) => {
        /// Everything the daemon needs to start.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $key: $ty, )*
            $( $(#[doc = $odoc])* pub $other: $oty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config {
                    $( $key: $default, )*
                    $( $other: $odefault, )*
                }
            }
        }

        /// The keys of the configuration file, for its manual page (`saslauthd-rs.toml(5)`)
        /// and the parser's message for an unknown key.
        pub const KEYS: &[Key] = &[
            $( Key {
                name: stringify!($key),
                value: $value,
                about: $about,
                flag: $flag,
                reload: Reload::$reload,
            }, )*
            $( $table_key, )*
        ];

        /// The plain keys as the file gives them.
        #[derive(Debug, Default)]
        struct FileKeys {
            $( $key: Option<$raw>, )*
        }

        impl FileKeys {
            /// Takes `key`'s value from `map` if it is one of the plain keys.
            fn take<'de, A: MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                match key {
                    $( stringify!($key) => self.$key = Some(map.next_value()?), )*
                    _ => return Ok(false),
                }
                Ok(true)
            }
        }

        impl Config {
            /// Applies the file's plain keys; a bad value names its key and line.
            fn apply_keys(&mut self, file: FileKeys, text: &str) -> Result<(), ConfigError> {
                $(
                    if let Some(raw) = file.$key {
                        let parse: fn($raw, &'static str) -> Result<$ty, ConfigError> = $parse;
                        self.$key = parse(raw, stringify!($key)).map_err(|e| ConfigError::At {
                            key: stringify!($key),
                            line: key_line(text, stringify!($key)),
                            source: Box::new(e),
                        })?;
                    }
                )*
                Ok(())
            }

            /// Sets the key whose flag is `flag` (`--timeout`) from the flag's `value`;
            /// `None` when no key has that flag.
            pub fn set_flag(&mut self, flag: &str, value: &OsStr) -> Option<Result<(), ConfigError>> {
                $(
                    if let Some(name) = $flag {
                        if name == flag {
                            let parse: fn($raw, &'static str) -> Result<$ty, ConfigError> = $parse;
                            return Some(
                                <$raw as FromFlag>::from_flag(name, value)
                                    .and_then(|raw| parse(raw, name))
                                    .map(|value| self.$key = value),
                            );
                        }
                    }
                )*
                None
            }

            /// Each plain key and its value, in the declared order.
            fn shown(&self) -> Vec<(&'static str, Shown)> {
                vec![$(
                    (stringify!($key), {
                        let show: fn(&$ty) -> Shown = $show;
                        show(&self.$key)
                    }),
                )*]
            }

            /// The keys that differ between `self` and `next` and that only a restart
            /// changes, each named as the admin gave it (its flag, or its key).
            fn restart_keys(&self, next: &Config) -> Vec<&'static str> {
                let mut changed = Vec::new();
                $(
                    if Reload::$reload == Reload::Restart && self.$key != next.$key {
                        changed.push($flag.unwrap_or(stringify!($key)));
                    }
                )*
                changed
            }
        }
    };
}

keys! {
    plain {
    /// The passdb (`-a`).
    passdb: Option<PassdbKind> = None,
        file String => |name, _| parse_passdb(&name).map(Some),
        show |v| show::or(v.map(|p| show::text(p.name())), "none given (-a)"),
        Some("-a"), Applies,
        "name", "The passdb (-a): one of those saslauthd-rs -v lists.";
    /// The run directory (`-m`); the socket is `<run_dir>/mux`.
    run_dir: PathBuf = PathBuf::from(DEFAULT_RUN_DIR),
        file PathBuf => |dir, _| check_run_dir(dir),
        show |v| show::set(show::path(v)),
        Some("-m"), Restart,
        "path", "The run directory (-m); the socket is run_dir/mux. Default /run/saslauthd.";
    /// The sasldb2 file (`--sasldb`).
    sasldb: PathBuf = PathBuf::from(crate::passdb::sasldb::DEFAULT_PATH),
        file PathBuf => |path, _| Ok(path),
        show |v| show::set(show::path(v)),
        Some("--sasldb"), Applies,
        "path", "The sasldb2 file (--sasldb). Default /etc/sasldb2.";
    /// `sasldb_format`: the format `saslpasswd2-rs --config` gives a new sasldb2 (the daemon
    /// only reads files, whatever their format; it checks the value so that a typo is seen).
    sasldb_format: Option<crate::passdb::sasldb::Format> = None,
        file String => |text, _| text
            .parse()
            .map(Some)
            .map_err(|e: crate::passdb::sasldb::UnknownFormat| ConfigError::SasldbFormat(e.to_string())),
        show |v| show::or(v.map(|f| show::text(f.name())), "the format this host's libsasl2 reads"),
        None, Applies,
        "\"lmdb\" | \"bdb\" | \"gdbm\"", "The format saslpasswd2-rs --config gives a new sasldb2 (the daemon reads every format).";
    /// The default realm (`--realm`); `None` means the host name, as Cyrus.
    realm: Option<String> = None,
        file String => |realm, _| Ok(Some(realm)),
        show |v| show::or(v.as_deref().map(show::text), "the host name"),
        Some("--realm"), Applies,
        "string", "The default realm (--realm). Default: the host name.";
    /// `-r`: pass `login@realm` to the passdb.
    combine_realm: bool = false,
        file bool => |v, _| Ok(v),
        show |v| show::set(v),
        None, Applies,
        "bool", "Pass login@realm to the passdb (-r).";
    /// `-n`: how many blocking backend calls may run at once (Cyrus: worker processes).
    workers: usize = 5,
        file i64 => |n, _| usize::try_from(n).map_err(|_| ConfigError::Workers),
        show |v| show::set(v),
        Some("-n"), Applies,
        "integer", "Concurrent shadow/PAM checks and key derivations (-n). Default 5; 0: 64.";
    /// `--threads`: the threads that serve the sockets (default 1; 0: one per core).
    threads: usize = 1,
        file i64 => |n, _| usize::try_from(n).ok().filter(|&n| n <= 1024).ok_or(ConfigError::Threads),
        show |v| show::set(v),
        Some("--threads"), Restart,
        "integer", "Threads that serve the sockets (--threads); the costly checks -n bounds run beside them. Default 1, which answered the most on a 2-core host (BENCHMARKS.md); 0: one per core.";
    /// `-c`: the credential cache (used by the passdbs it helps; sasldb needs none).
    cache: bool = false,
        file bool => |v, _| Ok(v),
        show |v| show::set(v),
        None, Applies,
        "bool", "The credential cache for the passdbs it helps (-c).";
    /// `-t`: cache entry lifetime.
    cache_timeout: Duration = Duration::from_secs(60),
        file i64 => |secs, _| u64::try_from(secs)
            .ok()
            .filter(|&s| s > 0)
            .map(Duration::from_secs)
            .ok_or(ConfigError::NotPositive("cache timeout")),
        show show::secs,
        Some("-t"), Applies,
        "seconds", "A cache entry's lifetime (-t). Default 60.";
    /// `-s`: cache size in KiB.
    cache_size_kb: u64 = 1024,
        file i64 => |kb, _| u64::try_from(kb)
            .ok()
            .filter(|&kb| kb > 0)
            .ok_or(ConfigError::NotPositiveNonZero("cache size")),
        show |v| show::set(v),
        Some("-s"), Applies,
        "integer", "The cache's size in KiB (-s). Default 1024.";
    /// `-V` / `-d`: log successes and details too.
    verbose: bool = false,
        file bool => |v, _| Ok(v),
        show |v| show::set(v),
        None, Restart,
        "bool", "Log successes and details too (-V).";
    /// `log_level`: one of `crate::process::LOG_LEVELS`; `-V`/`-d` (or `verbose`) make it
    /// `debug`.
    log_level: &'static str = "info",
        file String => |level, _| parse_log_level(&level),
        show |v| show::set(show::text(v)),
        None, Restart,
        "\"error\" | \"warning\" | \"info\" | \"debug\"", "The log level (-V and -d make it debug). Default info.";
    /// How long a client may take to send its request.
    read_timeout: Duration = Duration::from_secs(10),
        file i64 => |secs, name| positive_secs(name, u64::try_from(secs).unwrap_or(0)),
        show show::secs,
        Some("--timeout"), Restart,
        "seconds", "Time a client has to send its request (--timeout). Default 10.";
    /// How many connections the mux socket may have open at once; more are closed at accept.
    max_connections: usize = 4096,
        file i64 => |n, name| positive_count(name, usize::try_from(n).unwrap_or(0)),
        show |v| show::set(v),
        Some("--max-connections"), Restart,
        "integer", "Open connections on the mux socket at most (--max-connections). Default 4096.";
    /// The mode of the `mux` socket.
    socket_mode: u32 = 0o660,
        file String => |text, _| parse_mode(&text),
        show |v| show::mode(*v),
        Some("--socket-mode"), Restart,
        "\"octal\"", "The mux socket's mode (--socket-mode). Default \"0660\".";
    /// `-O` options, kept for passdbs that take them.
    mech_options: Vec<String> = Vec::new(),
        file Vec<String> => |v, _| Ok(v),
        show |v| show::set(toml::Value::from(v.clone())),
        None, Applies,
        "[strings]", "-O options, for the passdbs that take them (a configuration file's path).";
    /// `--shadow-file`: read shadow(5) entries from this file instead of NSS.
    shadow_file: Option<PathBuf> = None,
        file PathBuf => |path, _| Ok(Some(path)),
        show |v| show::or(v.as_deref().map(show::path), "NSS (getspnam_r)"),
        Some("--shadow-file"), Applies,
        "path", "Read shadow(5) entries from this file instead of NSS (--shadow-file).";
    /// `--pam-service`: the PAM service for every request (default: the request's).
    pam_service: Option<String> = None,
        file String => |service, _| Ok(Some(service)),
        show |v| show::or(v.as_deref().map(show::text), "the request's service"),
        Some("--pam-service"), Applies,
        "string", "The PAM service for every request (--pam-service). Default: the request's.";
    /// `--rimap-tls`: how `-a rimap` protects its connections.
    rimap_tls: crate::passdb::RimapTls = crate::passdb::RimapTls::Off,
        file String => |text, _| text
            .parse()
            .map_err(|e: crate::passdb::UnknownRimapTls| ConfigError::RimapTls(e.to_string())),
        show |v| show::set(show::text(v.name())),
        Some("--rimap-tls"), Applies,
        "\"starttls\" | \"imaps\" | \"off\"", "How -a rimap protects its connection to the IMAP server (--rimap-tls): STARTTLS, TLS from the first byte (port 993 by default), or none, as Cyrus. Default \"off\".";
    /// `--rimap-ca`: the CA certificates `-a rimap` checks the IMAP server with.
    rimap_ca: Option<PathBuf> = None,
        file PathBuf => |path, _| Ok(Some(path)),
        show |v| show::or(v.as_deref().map(show::path), "the system's (/etc/ssl/certs/ca-certificates.crt)"),
        Some("--rimap-ca"), Applies,
        "path", "The CA certificates (PEM) -a rimap checks the IMAP server's with, under --rimap-tls (--rimap-ca). Default: the system's.";
    /// `--failure-delay`: the base delay before a failure is answered (0 = none).
    failure_delay: Duration = Duration::from_secs(2),
        file f64 => |secs, name| delay_secs(name, secs),
        show |v| show::set(format!("{:?}", v.as_secs_f64())),
        Some("--failure-delay"), Applies,
        "seconds", "The base delay before a failure is answered, doubling per client address up to 4.5 s (--failure-delay). Default 2.0; 0 turns throttling off.";
    /// `throttle_store`: the throttle's state in Redis or Valkey, shared by several daemons.
    throttle_store: Option<crate::auth::StoreUrl> = None,
        file String => |text, _| text
            .parse()
            .map(Some)
            .map_err(|e: crate::auth::StoreUrlError| ConfigError::ThrottleStore(e.to_string())),
        show |v| show::or(v.as_ref().map(|u| show::text(&u.to_string())), "none: each daemon throttles from its own memory"),
        None, Applies,
        "\"redis://host:6379/0\"", "Share the throttle's counts with other daemons in Redis or Valkey: redis://[user:password@]host:port/db, rediss:// (TLS), unix:///path, redis+sentinel://host:port,.../MASTER[/db], redis+cluster://host:port,... Default: none.";
    /// `throttle_store_prefix`: the store's keys begin `{PREFIX}:`.
    throttle_store_prefix: String = crate::auth::DEFAULT_STORE_PREFIX.to_owned(),
        file String => |prefix, _| store_prefix(prefix),
        show |v| show::set(show::text(v)),
        None, Applies,
        "string", "The store's keys begin {PREFIX}: (another application's keys must not). Default \"saslauthd-rs\".";
    /// `throttle_store_timeout`: each call's deadline, in milliseconds.
    throttle_store_timeout: Duration = Duration::from_millis(50),
        file i64 => |ms, name| store_timeout(name, ms),
        show |v| show::set(i64::try_from(v.as_millis()).unwrap_or(i64::MAX)),
        None, Applies,
        "milliseconds", "Each call to the store has this deadline; past it (or on an error) the daemon throttles locally and reconnects in the background. 1 to 1000, default 50.";
    /// `throttle_store_ca`: CA certificates for `rediss://`.
    throttle_store_ca: Option<PathBuf> = None,
        file PathBuf => |path, _| Ok(Some(path)),
        show |v| show::or(v.as_deref().map(show::path), "the system's"),
        None, Applies,
        "path", "The CA certificates (PEM) a rediss:// store is checked with. Default: the system's.";
    /// `user_guard_threshold`: distinct wrong passwords per user before their failures are
    /// delayed too (0 = no user guard).
    user_guard_threshold: u32 = crate::auth::DEFAULT_USER_THRESHOLD,
        file u32 => |n, _| Ok(n),
        show |v| show::set(v),
        None, Applies,
        "integer", "Distinct wrong passwords for one user, from any address, within user_guard_window, past which that user's failures get the growing delay too (never a lock-out). Default 10; 0 turns the user guard off.";
    /// `user_guard_window`: the user guard's window, in seconds.
    user_guard_window: Duration = crate::auth::DEFAULT_USER_WINDOW,
        file i64 => |secs, name| window_secs(name, secs),
        show |v| show::set(i64::try_from(v.as_secs()).unwrap_or(i64::MAX)),
        None, Applies,
        "seconds", "How long the user guard remembers a wrong password. 60 to 604800, default 3600.";
    /// `--dovecot-socket`: also serve Dovecot's auth-client protocol here.
    dovecot_socket: Option<PathBuf> = None,
        file PathBuf => |path, _| Ok(Some(path)),
        show |v| show::or(v.as_deref().map(show::path), "none"),
        Some("--dovecot-socket"), Restart,
        "path", "Also serve Dovecot's auth-client protocol here (--dovecot-socket).";
    /// `--dovecot-socket-owner USER[:GROUP]`.
    dovecot_socket_owner: Option<String> = None,
        file String => |owner, _| Ok(Some(owner)),
        show |v| show::or(v.as_deref().map(show::text), "the daemon's user"),
        Some("--dovecot-socket-owner"), Restart,
        "\"user[:group]\"", "Its owner (--dovecot-socket-owner).";
    /// `--dovecot-socket-mode`.
    dovecot_socket_mode: u32 = 0o660,
        file String => |text, _| parse_mode(&text),
        show |v| show::mode(*v),
        Some("--dovecot-socket-mode"), Restart,
        "\"octal\"", "Its mode (--dovecot-socket-mode). Default \"0660\".";
    /// How many connections the Dovecot socket may have; when full, its longest-idle
    /// connection is closed to make room.
    dovecot_max_connections: usize = 4096,
        file i64 => |n, name| positive_count(name, usize::try_from(n).unwrap_or(0)),
        show |v| show::set(v),
        Some("--dovecot-max-connections"), Restart,
        "integer", "Open connections on the Dovecot socket at most (--dovecot-max-connections). Default 4096.";
    /// `--dovecot-no-realm-split`: keep `user@realm` whole as the authid.
    dovecot_split_realm: bool = true,
        file bool => |v, _| Ok(v),
        show |v| show::set(v),
        None, Restart,
        "bool", "Split user@realm at the last @ (false: --dovecot-no-realm-split). Default true.";
    /// `--dovecot-temp-fail`: on a backend failure answer `FAIL code=temp_fail` instead of
    /// closing the connection.
    dovecot_temp_fail: bool = false,
        file bool => |v, _| Ok(v),
        show |v| show::set(v),
        None, Restart,
        "bool", "On a backend failure answer FAIL code=temp_fail instead of closing (--dovecot-temp-fail).";
    /// `--dovecot-mechanisms`: the mechanisms the Dovecot socket offers (canonical names);
    /// `None`: every one the passdb can serve but DIGEST-MD5.
    dovecot_mechanisms: Option<Vec<&'static str>> = None,
        file String => |list, _| crate::mech::parse_names(&list).map(Some).map_err(ConfigError::from),
        show |v| show::or(v.as_ref().map(|m| show::text(&m.join(" "))), "every one the passdb can serve but DIGEST-MD5"),
        Some("--dovecot-mechanisms"), Applies,
        "string", "The mechanisms the Dovecot socket offers (--dovecot-mechanisms). Default: every one the passdb can serve but DIGEST-MD5.";
    /// `--scram-iterations`: SCRAM's PBKDF2 iteration count (at least 4096).
    scram_iterations: u32 = crate::auth::DEFAULT_SCRAM_ITERATIONS,
        file u32 => |n, _| scram_iterations(n),
        show |v| show::set(v),
        Some("--scram-iterations"), Applies,
        "integer", "SCRAM's PBKDF2 iteration count, 4096 to 10000000 (--scram-iterations). Default 4096.";
    /// `metrics_address`: serve `GET /metrics` (OpenMetrics) on this TCP address.
    metrics_address: Option<std::net::SocketAddr> = None,
        file String => |text, _| parse_metrics_address(&text).map(Some),
        show |v| show::or(v.map(|a| show::text(&a.to_string())), "none"),
        None, Restart,
        "\"[host:]port\"", "Serve the metrics (OpenMetrics, GET /metrics) over HTTP on this TCP address; a bare port is 127.0.0.1's. Default: only the admin socket.";
    /// `metrics`: whether requests are counted (false: every series stays at zero).
    metrics: bool = true,
        file bool => |v, _| Ok(v),
        show |v| show::set(v),
        None, Restart,
        "bool", "Count requests, connections and backend calls for the metrics, stats and top. Default true; false leaves every series at zero (to measure what counting costs).";
    /// `--user`: the user the daemon becomes once its sockets are bound.
    user: Option<String> = None,
        file String => |user, _| Ok(Some(user)),
        show |v| show::or(v.as_deref().map(show::text), "stay root"),
        Some("--user"), Restart,
        "string", "Become this user once the sockets are bound (--user).";
    /// `--group`: its primary group (default: the user's own).
    group: Option<String> = None,
        file String => |group, _| Ok(Some(group)),
        show |v| show::or(v.as_deref().map(show::text), "the user's own"),
        Some("--group"), Restart,
        "string", "And this primary group (--group). Default: the user's own.";
    }
    others {
        /// `-d` / `-f`: stay in the foreground.
        foreground: bool = false;
        /// `[[listener]]` tables: sockets beyond the mux socket and `dovecot_socket`.
        listeners: Vec<Listener> = Vec::new();
        /// The tables named after a passdb (`[ldap]`): each one's keys and values as text,
        /// in the file's order; the passdb `-a` chose is given its own.
        tables: Vec<(String, Vec<(String, String)>)> = Vec::new();
    }
    tables [
        Key {
            name: "listener",
            value: "[[listener]] tables",
            about: "More sockets: protocol (\"saslauthd\" or \"dovecot\"), then path (a Unix socket, with mode, owner, group) or address (TCP, the Dovecot protocol only, with allow, the client networks it lets in, required), and max_connections.",
            flag: None,
            reload: Reload::Restart,
        },
    ]
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
    pub allow: Vec<crate::request::Network>,
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

/// The TOML file: the plain keys, the `[[listener]]`s, the passdbs' tables, and what is none
/// of these (refused, naming the key and its line: a typo must not be silently ignored).
#[derive(Debug, Default)]
struct FileConfig {
    keys: FileKeys,
    listener: Option<Vec<FileListener>>,
    tables: Vec<(String, toml::Table)>,
    unknown: Vec<String>,
}

impl<'de> Deserialize<'de> for FileConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct File;
        impl<'de> Visitor<'de> for File {
            type Value = FileConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table of settings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FileConfig, A::Error> {
                let mut file = FileConfig::default();
                while let Some(key) = map.next_key::<String>()? {
                    if file.keys.take(&key, &mut map)? {
                        continue;
                    }
                    if key == "listener" {
                        file.listener = Some(map.next_value()?);
                    } else if crate::passdb::table(&key).is_some() {
                        file.tables.push((key, map.next_value()?));
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        file.unknown.push(key);
                    }
                }
                Ok(file)
            }
        }
        deserializer.deserialize_map(File)
    }
}

/// Every name the file takes at its top level: the keys, `listener`, and the passdbs' tables.
fn known_names() -> Vec<&'static str> {
    KEYS.iter()
        .map(|k| k.name)
        .chain(crate::passdb::table_names())
        .collect()
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
    /// A flag's value that must be text and is not.
    #[error("{0}: the value is not valid UTF-8")]
    NotText(&'static str),
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
    /// `rimap_tls` names no mode.
    #[error("rimap_tls {0}")]
    RimapTls(String),
    /// `throttle_store` does not read.
    #[error("throttle_store: {0}")]
    ThrottleStore(String),
    /// `throttle_store_prefix` is empty or has a brace.
    #[error("throttle_store_prefix {0:?}: must be 1 to 64 characters, none of them a brace, a space or a control character")]
    StorePrefix(String),
    /// A number out of its range.
    #[error("{name} {value}: must be {range}")]
    OutOfRange {
        /// The key.
        name: &'static str,
        /// The value given.
        value: i64,
        /// What it may be.
        range: &'static str,
    },
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

/// The line (1-based) where top-level `key` is set in `text`, or where its table `[key]`
/// starts, or 0 when it cannot be found (TOML does not allow a key twice, so the first is the
/// one).
fn key_line(text: &str, key: &str) -> usize {
    let mut top = true;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if let Some(header) = line.strip_prefix('[') {
            let name = header.split(']').next().unwrap_or_default().trim();
            if name == key {
                return i + 1;
            }
            top = false;
            continue;
        }
        if let Some(rest) = line.strip_prefix(key).filter(|_| top) {
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
                        .map_err(|e: crate::request::NotANetwork| bad(format!("allow: {e}")))?,
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
    /// left to a default that depends on the host, commented), then the `[[listener]]`s and
    /// the passdbs' tables (a value whose key names a password or secret is not printed):
    /// what `--check-config` prints.
    pub fn effective(&self) -> String {
        let q = show::text;
        let path = show::path;
        let opt = |key: &str, value: Option<String>, default: &str| match value {
            Some(v) => format!("{key} = {v}\n"),
            None => format!("# {key}: {default}\n"),
        };
        let mut out = String::new();
        for (key, shown) in self.shown() {
            out += &match shown {
                Shown::Set(value) => format!("{key} = {value}\n"),
                Shown::Unset(words) => format!("# {key}: {words}\n"),
            };
        }
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
        for (name, table) in &self.tables {
            out += &format!("\n[{name}]\n");
            for (key, value) in table {
                let lower = key.to_ascii_lowercase();
                if ["password", "_pw", "secret"]
                    .iter()
                    .any(|s| lower.contains(s))
                {
                    out += &format!("# {key}: set, not shown\n");
                } else {
                    out += &format!("{key} = {}\n", q(value));
                }
            }
        }
        out
    }

    /// What differs between the running settings and `next` that only a restart changes,
    /// each named as the admin gives it (its flag, or its key): what a reload keeps.
    pub fn restart_only(&self, next: &Config) -> Vec<&'static str> {
        let mut changed = self.restart_keys(next);
        let unplaced = |c: &Config| -> Vec<Listener> {
            let mut listeners = c.listeners.clone();
            listeners.iter_mut().for_each(|l| l.line = 0);
            listeners
        };
        if unplaced(self) != unplaced(next) {
            changed.push("[[listener]]");
        }
        changed
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
        if let Some(key) = file.unknown.first() {
            let expected: Vec<String> = known_names().iter().map(|k| format!("`{k}`")).collect();
            return Err(ConfigError::Toml {
                line: key_line(text, key),
                message: format!(
                    "unknown field `{key}`, expected one of {}",
                    expected.join(", ")
                ),
            });
        }
        self.apply_keys(file.keys, text)?;
        for (name, table) in file.tables {
            let check = crate::passdb::table(&name)
                .expect("only a known table is kept")
                .check;
            let at = |message: String| ConfigError::Toml {
                line: key_line(text, &name),
                message: format!("[{name}] {message}"),
            };
            let mut entries = Vec::new();
            for (key, value) in table {
                let value = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::Boolean(b) => if b { "yes" } else { "no" }.to_string(),
                    other => {
                        return Err(at(format!(
                            "{key}: {other} is not a string, number or boolean"
                        )))
                    }
                };
                // The value is checked with the rest of the passdb's settings when it opens;
                // the key's name here, so that a typo stops the start at once.
                check(&key, &value).map_err(|e| at(e.to_string()))?;
                entries.push((key, value));
            }
            match self.tables.iter_mut().find(|(n, _)| *n == name) {
                Some((_, old)) => old.extend(entries),
                None => self.tables.push((name, entries)),
            }
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

    /// The throttle these settings describe.
    pub fn throttle(&self) -> crate::auth::Throttle {
        crate::auth::Throttle {
            failure_delay: self.failure_delay,
            user_threshold: self.user_guard_threshold,
            user_window: self.user_guard_window,
            store: self
                .throttle_store
                .clone()
                .map(|url| crate::auth::StoreSettings {
                    url,
                    prefix: self.throttle_store_prefix.clone(),
                    timeout: self.throttle_store_timeout,
                    ca: self.throttle_store_ca.clone(),
                }),
        }
    }

    /// What the passdbs are told: the flags that concern them, and the configuration file's
    /// table named after the passdb `-a` chose (`[ldap]`).
    pub fn passdb_settings(&self) -> crate::passdb::Settings {
        let name = self.passdb.map(|k| k.name);
        crate::passdb::Settings {
            sasldb: self.sasldb.clone(),
            shadow_file: self.shadow_file.clone(),
            pam_service: self.pam_service.clone(),
            options: self.mech_options.clone(),
            rimap_tls: self.rimap_tls,
            rimap_ca: self.rimap_ca.clone(),
            table: self
                .tables
                .iter()
                .find(|(table, _)| Some(table.as_str()) == name)
                .map(|(_, entries)| entries.clone())
                .unwrap_or_default(),
        }
    }

    /// The configuration file's table `name` (`[oauth2]`), its keys and values in the file's
    /// order; `None` when the file has none.
    pub fn table(&self, name: &str) -> Option<&[(String, String)]> {
        self.tables
            .iter()
            .find(|(table, _)| table == name)
            .map(|(_, entries)| &entries[..])
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

/// `throttle_store_prefix`: no braces (they pick a Redis Cluster slot), nothing invisible.
fn store_prefix(prefix: String) -> Result<String, ConfigError> {
    let bad = |c: char| c == '{' || c == '}' || c.is_whitespace() || c.is_control();
    if prefix.is_empty() || prefix.len() > 64 || prefix.chars().any(bad) {
        return Err(ConfigError::StorePrefix(prefix));
    }
    Ok(prefix)
}

fn store_timeout(name: &'static str, ms: i64) -> Result<Duration, ConfigError> {
    match u64::try_from(ms) {
        Ok(ms @ 1..=1000) => Ok(Duration::from_millis(ms)),
        _ => Err(ConfigError::OutOfRange {
            name,
            value: ms,
            range: "1 to 1000 (milliseconds)",
        }),
    }
}

fn window_secs(name: &'static str, secs: i64) -> Result<Duration, ConfigError> {
    match u64::try_from(secs) {
        Ok(secs @ 60..=604_800) => Ok(Duration::from_secs(secs)),
        _ => Err(ConfigError::OutOfRange {
            name,
            value: secs,
            range: "60 to 604800 (seconds)",
        }),
    }
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

    /// KEYS (the manual's list) is the parser's list: every key in it is taken (a value of
    /// the wrong type is refused as that, not as an unknown key), and the message for an
    /// unknown key names them and the passdbs' tables.
    #[test]
    fn the_manual_lists_every_key() {
        for key in KEYS {
            let text = if key.name == "listener" {
                "[[listener]]\nprotocol = 1\n".to_string()
            } else {
                format!("{} = {{}}\n", key.name)
            };
            let err = Config::default().apply_toml(&text).unwrap_err().to_string();
            assert!(!err.contains("unknown field"), "{}: {err}", key.name);
        }
        let err = Config::default()
            .apply_toml("no_such_key = 1")
            .unwrap_err()
            .to_string();
        let expected = err.split("expected one of ").nth(1).unwrap();
        let parsed: Vec<&str> = expected
            .split(", ")
            .map(|k| k.trim().trim_matches('`'))
            .collect();
        let mut listed: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        listed.extend(crate::passdb::table_names());
        assert_eq!(parsed, listed);
    }

    /// What a reload cannot change is said by the declaration, each named as it is given.
    #[test]
    fn a_reload_names_what_takes_a_restart() {
        let now = Config::default();
        let mut next = now.clone();
        next.threads = 4;
        next.read_timeout = Duration::from_secs(3);
        next.workers = 9;
        next.realm = Some("example.org".into());
        assert_eq!(now.restart_only(&next), ["--threads", "--timeout"]);
        next.metrics = false;
        next.apply_toml("[[listener]]\nprotocol = \"dovecot\"\npath = \"/tmp/a\"\n")
            .unwrap();
        assert_eq!(
            now.restart_only(&next),
            ["--threads", "--timeout", "metrics", "[[listener]]"]
        );
    }

    /// A flag and its key go through the same check; a path need not be text.
    #[test]
    fn flags_set_keys_through_their_declaration() {
        use std::os::unix::ffi::OsStrExt;
        let mut c = Config::default();
        c.set_flag("--socket-mode", OsStr::new("0600"))
            .unwrap()
            .unwrap();
        assert_eq!(c.socket_mode, 0o600);
        let err = c
            .set_flag("--socket-mode", OsStr::new("0999"))
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, ConfigError::BadMode(_)), "{err}");
        let err = c
            .set_flag("--threads", OsStr::new("-1"))
            .unwrap()
            .unwrap_err();
        assert_eq!(err.to_string(), "--threads takes 0 (one per core) to 1024");
        let err = c
            .set_flag("--timeout", OsStr::new("x"))
            .unwrap()
            .unwrap_err();
        assert_eq!(err.to_string(), "--timeout: \"x\" is not a valid number");
        c.set_flag("--sasldb", OsStr::from_bytes(b"/tmp/\xff"))
            .unwrap()
            .unwrap();
        assert_eq!(c.sasldb.as_os_str().as_bytes(), b"/tmp/\xff");
        assert!(c
            .set_flag("--realm", OsStr::from_bytes(b"\xff"))
            .unwrap()
            .is_err());
        assert!(c.set_flag("--no-such-flag", OsStr::new("1")).is_none());
    }

    /// `--check-config`'s output reads back as the same settings, tables too, without the
    /// values of keys that name a password.
    #[test]
    fn the_effective_settings_read_back() {
        let mut c = Config::default();
        c.apply_toml(
            "realm = \"example.org\"\nthreads = 2\nfailure_delay = 0.5\nsocket_mode = \"0600\"\n\
             mech_options = [\"/etc/saslauthd.conf\"]\n\
             [ldap]\nldap_servers = \"ldap://127.0.0.1/\"\nldap_bind_pw = \"hunter2\"\n",
        )
        .unwrap();
        let text = c.effective();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("# ldap_bind_pw: set, not shown"), "{text}");
        let mut again = Config::default();
        again.apply_toml(&text).unwrap();
        c.tables[0].1.retain(|(k, _)| k != "ldap_bind_pw");
        assert_eq!(again, c);
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
            .apply_toml("# a comment\n\npassdb = \"httpform\"")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "passdb at line 3: unknown authentication mechanism: httpform"
        );
        let err = c.apply_toml("workers = \"five\"").unwrap_err().to_string();
        assert!(err.starts_with("line 1: invalid type"), "{err}");
        assert!(c.apply_toml("socket_mode = \"999\"").is_err());
        assert!(c.apply_toml("read_timeout = 0").is_err());
    }
}
