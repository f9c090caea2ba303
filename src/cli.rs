//! saslauthd-compatible flags: Cyrus's `a:cdhO:lm:n:rs:t:vV` (plus master's `-f`, and the
//! `-T` / `-H host` of the man page, accepted and ignored), and our long options. This is the
//! only place where Cyrus's word "mechanism" (`-a pam`) becomes a passdb.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::config::{Config, ConfigError};
use crate::getopt::{ArgKind, GetoptError, OptDef, Spec};

/// The passdbs `-a` offers, from [`crate::passdb::MODULES`].
fn passdbs() -> Vec<&'static str> {
    crate::passdb::offered().collect()
}

/// The daemon's options: what the parser accepts, and what `-h`, the manual page and the
/// completions say.
pub const OPTIONS: &[OptDef] = &[
    OptDef::with(
        Some('a'),
        None,
        "authmech",
        ArgKind::OneOf(passdbs),
        "Selects the authentication mechanism (passdb) to use (-v lists them).",
    ),
    OptDef::flag(Some('c'), None, "Enable credential caching."),
    OptDef::flag(
        Some('d'),
        None,
        "Debugging (don't detach from tty, implies -V).",
    ),
    OptDef::flag(
        Some('f'),
        None,
        "Stay in the foreground without verbose logging.",
    ),
    OptDef::flag(
        Some('r'),
        None,
        "Combine the realm with the login before passing to authentication mechanism: login \
         \"foo\" realm \"bar\" will get passed as login \"foo@bar\". The realm name is \
         passed untouched.",
    ),
    OptDef::with(
        Some('O'),
        None,
        "option",
        ArgKind::Any,
        "Optional argument to pass to the authentication mechanism: for -a ldap, its configuration file (default /etc/saslauthd.conf); for -a sql, Dovecot's dovecot-sql.conf.ext or libsasl2's smtpd.conf with sql_* keys.",
    ),
    OptDef::flag(
        Some('l'),
        None,
        "Disable accept() locking (accepted; saslauthd-rs has no accept lock).",
    ),
    OptDef::with(
        Some('m'),
        None,
        "path",
        ArgKind::Dir,
        "Alternate path for the saslauthd working directory, must be absolute. The socket \
         is <path>/mux (default /run/saslauthd).",
    ),
    OptDef::with(
        Some('n'),
        None,
        "procs",
        ArgKind::Any,
        "Number of concurrent shadow/PAM checks and key derivations (default 5; 0: 64).",
    ),
    OptDef::with(
        Some('s'),
        None,
        "kilobytes",
        ArgKind::Any,
        "Size of the credential cache (in kilobytes).",
    ),
    OptDef::with(
        Some('t'),
        None,
        "seconds",
        ArgKind::Any,
        "Timeout for items in the credential cache (in seconds).",
    ),
    OptDef::flag(
        Some('v'),
        Some("version"),
        "Display version information and available mechs.",
    ),
    OptDef::flag(Some('V'), None, "Enable verbose logging."),
    OptDef::flag(Some('h'), Some("help"), "Display this message."),
    OptDef::flag(Some('T'), None, "Accepted for compatibility, ignored."),
    OptDef::with(
        Some('H'),
        None,
        "host",
        ArgKind::Any,
        "Accepted for compatibility, ignored.",
    ),
    OptDef::with(
        None,
        Some("config"),
        "file",
        ArgKind::File,
        "TOML configuration file (flags override it; see saslauthd-rs.toml(5)).",
    ),
    OptDef::flag(
        None,
        Some("check-config"),
        "Check the configuration and the passdb as a start would, print the effective \
         settings, exit (0: usable).",
    ),
    OptDef::with(
        None,
        Some("sasldb"),
        "path",
        ArgKind::File,
        "sasldb2 file for -a sasldb (default /etc/sasldb2).",
    ),
    OptDef::with(
        None,
        Some("realm"),
        "realm",
        ArgKind::Any,
        "Default realm for requests with an empty realm (default: the host name, as Cyrus).",
    ),
    OptDef::with(
        None,
        Some("socket-mode"),
        "octal",
        ArgKind::Any,
        "Mode of the mux socket (default 0660).",
    ),
    OptDef::with(
        None,
        Some("timeout"),
        "seconds",
        ArgKind::Any,
        "Time a client has to send its request (default 10).",
    ),
    OptDef::with(
        None,
        Some("max-connections"),
        "n",
        ArgKind::Any,
        "Open connections on the mux socket at most (default 4096).",
    ),
    OptDef::with(
        None,
        Some("shadow-file"),
        "path",
        ArgKind::File,
        "shadow(5) file for -a shadow (default: getspnam, i.e. NSS).",
    ),
    OptDef::with(
        None,
        Some("pam-service"),
        "name",
        ArgKind::Any,
        "PAM service for -a pam (default: the request's service).",
    ),
    OptDef::with(
        None,
        Some("rimap-tls"),
        "mode",
        ArgKind::Any,
        "For -a rimap: starttls, imaps or off (default off, as Cyrus): TLS to the IMAP server, \
         its certificate checked.",
    ),
    OptDef::with(
        None,
        Some("rimap-ca"),
        "file",
        ArgKind::File,
        "For -a rimap: the CA certificates (PEM) to check the IMAP server with (default: the \
         system's).",
    ),
    OptDef::with(
        None,
        Some("threads"),
        "n",
        ArgKind::Any,
        "Threads that serve the sockets (default 1; 0: one per core). Costly checks run beside \
         them (-n); one thread answered the most on a 2-core host (BENCHMARKS.md).",
    ),
    OptDef::with(
        None,
        Some("failure-delay"),
        "secs",
        ArgKind::Any,
        "Delay before a failure is answered, doubling per client address up to a 4.5 s cap \
         (default 2; 0 = off).",
    ),
    OptDef::with(
        None,
        Some("dovecot-socket"),
        "path",
        ArgKind::File,
        "Also serve Dovecot's auth protocol there (Postfix smtpd_sasl_type = dovecot): \
         PLAIN, LOGIN, and with sasldb CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256.",
    ),
    OptDef::with(
        None,
        Some("dovecot-mechanisms"),
        "list",
        ArgKind::Any,
        "The mechanisms that socket offers (comma- or space-separated; DIGEST-MD5 only when \
         named here).",
    ),
    OptDef::with(
        None,
        Some("dovecot-socket-owner"),
        "user[:group]",
        ArgKind::User,
        "Owner of that socket.",
    ),
    OptDef::with(
        None,
        Some("dovecot-socket-mode"),
        "octal",
        ArgKind::Any,
        "Its mode (default 0660).",
    ),
    OptDef::with(
        None,
        Some("dovecot-max-connections"),
        "n",
        ArgKind::Any,
        "Its open connections at most (default 4096); when full, the one idle longest is \
         closed to make room.",
    ),
    OptDef::flag(
        None,
        Some("dovecot-no-realm-split"),
        "Keep user@realm whole as the user name.",
    ),
    OptDef::flag(
        None,
        Some("dovecot-temp-fail"),
        "On a backend failure send FAIL code=temp_fail instead of closing the connection.",
    ),
    OptDef::with(
        None,
        Some("scram-iterations"),
        "n",
        ArgKind::Any,
        "SCRAM's PBKDF2 iteration count (default 4096).",
    ),
    OptDef::with(
        None,
        Some("user"),
        "name",
        ArgKind::User,
        "Become this user once the sockets are bound (keeping the shadow group for -a \
         shadow, the sasldb file's group for -a sasldb).",
    ),
    OptDef::with(
        None,
        Some("group"),
        "name",
        ArgKind::Group,
        "Its primary group (default: the user's own).",
    ),
];

/// The flags, as getopt sees them.
pub const SPEC: Spec<'static> = Spec { options: OPTIONS };

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the daemon.
    Run(Box<Config>),
    /// `-h`: usage on stderr, exit 0 (as Cyrus).
    Help,
    /// `-v`: version on stderr, exit 0 (as Cyrus).
    Version,
    /// `--check-config`: validate everything a start would, print the effective settings.
    CheckConfig(Box<Config>),
}

/// A command line that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Not understood by getopt; usage follows.
    #[error(transparent)]
    Getopt(#[from] GetoptError),
    /// A value that cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An operand (the daemon takes none); usage follows.
    #[error("unexpected argument {0:?}")]
    UnexpectedArgument(OsString),
    /// `-a` twice; usage follows.
    #[error("-a may be given only once")]
    PassdbTwice,
}

impl CliError {
    /// Whether the usage text should follow the message.
    pub fn wants_usage(&self) -> bool {
        matches!(
            self,
            CliError::Getopt(_) | CliError::UnexpectedArgument(_) | CliError::PassdbTwice
        )
    }
}

/// The usage text (Cyrus's, with our additions), for stderr: made from [`OPTIONS`].
pub fn usage(program: &str) -> String {
    let mut out = format!("usage: {program} [options]\n\noption information:\n");
    out += &crate::getopt::option_list(OPTIONS.iter().filter(|o| o.short.is_some()));
    out += "\nlong options:\n";
    out += &crate::getopt::option_list(OPTIONS.iter().filter(|o| o.short.is_none()));
    out
}

/// The version text of `-v`.
pub fn version() -> String {
    format!(
        "saslauthd-rs {} (compatible with saslauthd 2.1.28)\nauthentication mechanisms: {}\n",
        env!("CARGO_PKG_VERSION"),
        passdbs().join(" ")
    )
}

/// Parses the daemon's arguments (without the program name).
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Command, CliError> {
    let parsed = SPEC.parse(args)?;
    if let Some(extra) = parsed.operands.first() {
        return Err(CliError::UnexpectedArgument(extra.clone()));
    }
    let mut config = Config::default();
    // The file first, so that flags override it wherever they stand.
    for opt in parsed.opts.iter().filter(|o| o.name == "config") {
        config.apply_file(&PathBuf::from(opt.value.clone().unwrap_or_default()))?;
    }
    let mut seen_a = false;
    for opt in &parsed.opts {
        match opt.name.as_str() {
            "h" | "help" => return Ok(Command::Help),
            "v" | "version" => return Ok(Command::Version),
            "a" if seen_a => return Err(CliError::PassdbTwice),
            "c" => config.cache = true,
            "d" => {
                config.foreground = true;
                config.verbose = true;
            }
            "f" => config.foreground = true,
            "V" => config.verbose = true,
            "r" => config.combine_realm = true,
            "l" | "T" | "H" => {}
            "O" => config.mech_options.push(opt.str_value()?.to_owned()),
            "dovecot-no-realm-split" => config.dovecot_split_realm = false,
            "dovecot-temp-fail" => config.dovecot_temp_fail = true,
            "config" | "check-config" => {}
            // Every other option sets the configuration key that names it as its flag.
            name => {
                seen_a |= name == "a";
                let flag = if name.len() == 1 {
                    format!("-{name}")
                } else {
                    format!("--{name}")
                };
                match config.set_flag(&flag, opt.value.as_deref().unwrap_or_default()) {
                    Some(set) => set?,
                    None => unreachable!("option {flag} is in SPEC but sets no key"),
                }
            }
        }
    }
    config.validate()?;
    if parsed.opts.iter().any(|o| o.name == "check-config") {
        return Ok(Command::CheckConfig(Box::new(config)));
    }
    Ok(Command::Run(Box::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(args: &[&str]) -> Result<Command, CliError> {
        parse(args.iter().map(OsString::from))
    }

    fn run(args: &[&str]) -> Result<Config, CliError> {
        match command(args)? {
            Command::Run(c) => Ok(*c),
            other => panic!("{args:?}: not a daemon to run but {other:?}"),
        }
    }

    #[test]
    fn cyrus_flags() {
        let c = run(&[
            "-a", "sasldb", "-m", "/run/x", "-d", "-n", "2", "-c", "-t", "30", "-r",
        ])
        .unwrap();
        assert_eq!(c.passdb.map(|k| k.name), Some("sasldb"));
        assert_eq!(c.socket_path(), PathBuf::from("/run/x/mux"));
        assert!(c.foreground && c.verbose && c.cache && c.combine_realm);
        assert_eq!(c.workers, 2);
        assert_eq!(c.cache_timeout, std::time::Duration::from_secs(30));
        let c = run(&["-aSASLDB", "-T", "-H", "imap.example.org", "-l", "-O", "x"]).unwrap();
        assert_eq!(c.passdb.map(|k| k.name), Some("sasldb"));
        assert_eq!(c.mech_options, ["x"]);
    }

    #[test]
    fn long_options() {
        let c = run(&[
            "-a",
            "sasldb",
            "--sasldb",
            "/tmp/db",
            "--realm=example.org",
            "--socket-mode",
            "0600",
        ])
        .unwrap();
        assert_eq!(c.sasldb, PathBuf::from("/tmp/db"));
        assert_eq!(c.realm.as_deref(), Some("example.org"));
        assert_eq!(c.socket_mode, 0o600);
    }

    #[test]
    fn cyrus_error_texts() {
        assert_eq!(
            run(&["-m", "relative"]).unwrap_err().to_string(),
            "-m requires an absolute pathname"
        );
        assert_eq!(
            run(&["-n", "-1"]).unwrap_err().to_string(),
            "invalid number of worker processes defined"
        );
        assert_eq!(
            run(&["-s", "0"]).unwrap_err().to_string(),
            "cache size must be positive and non zero"
        );
        assert_eq!(
            run(&["-t", "0"]).unwrap_err().to_string(),
            "cache timeout must be positive"
        );
        assert_eq!(
            run(&["-a", "httpform"]).unwrap_err().to_string(),
            "unknown authentication mechanism: httpform"
        );
        assert_eq!(
            run(&["-x"]).unwrap_err().to_string(),
            "invalid option -- 'x'"
        );
        assert_eq!(
            run(&["-a", "sasldb", "-a", "pam"]).unwrap_err().to_string(),
            "-a may be given only once"
        );
        assert!(matches!(command(&["-h"]), Ok(Command::Help)));
        assert!(matches!(command(&["-v"]), Ok(Command::Version)));
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "passdb = \"sasldb\"\nrealm = \"from.file\"\nworkers = 3\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let c = run(&["--realm", "from.flag", "--config", f]).unwrap();
        assert_eq!(c.realm.as_deref(), Some("from.flag"));
        assert_eq!(c.workers, 3);
        assert_eq!(c.passdb.map(|k| k.name), Some("sasldb"));
    }
}
