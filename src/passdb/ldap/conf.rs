//! Cyrus's `saslauthd.conf` for `-a ldap` (`-O FILE`, default `/etc/saslauthd.conf`):
//! `key: value` lines, `#` comments, keys case-insensitive, with Cyrus's meanings and defaults
//! (`lak.c`). Unlike Cyrus, which ignores what it does not know, a key saslauthd-rs does not
//! implement, a value it cannot use, or a line that is no `key: value` is an error naming it
//! and its line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::passdb::PassdbError;

/// Where Debian's saslauthd reads it.
pub const DEFAULT_PATH: &str = "/etc/saslauthd.conf";

/// How a password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// Search for the user's DN (as `ldap_bind_dn`), then bind as it with the password.
    Bind,
    /// Bind at once as the DN `ldap_filter` makes (no search).
    Fastbind,
    /// Search, read `ldap_password_attr` and compare it here.
    Custom,
}

/// The search scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `sub` (default).
    Subtree,
    /// `one`.
    OneLevel,
    /// `base`.
    Base,
}

/// Alias dereferencing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deref {
    /// `never` (default).
    Never,
    /// `search`.
    Searching,
    /// `find`.
    Finding,
    /// `always`.
    Always,
}

/// How group membership is checked (when `ldap_group_dn` or `ldap_group_filter` is set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupMatch {
    /// Compare `ldap_group_attr` of `ldap_group_dn` with the user's DN (default).
    Attr,
    /// Search `ldap_group_search_base` with `ldap_group_filter`: a match is membership.
    Filter,
}

/// The settings, Cyrus's defaults where none is given.
#[derive(Clone, PartialEq, Eq)]
pub struct LdapConf {
    /// `ldap_servers`: tried in order.
    pub servers: Vec<String>,
    /// `ldap_bind_dn` (empty: anonymous searches).
    pub bind_dn: String,
    /// `ldap_password` / `ldap_bind_pw`.
    pub bind_pw: String,
    /// `ldap_version` (3; 2 is refused: StartTLS and everything here need 3).
    pub version: u8,
    /// `ldap_search_base` (tokens allowed).
    pub search_base: String,
    /// `ldap_filter` (default `(uid=%u)`); for fastbind, the DN pattern.
    pub filter: String,
    /// `ldap_password_attr` (default `userPassword`), for custom.
    pub password_attr: String,
    /// `ldap_auth_method`.
    pub auth_method: AuthMethod,
    /// `ldap_scope`.
    pub scope: Scope,
    /// `ldap_deref`.
    pub deref: Deref,
    /// `ldap_referrals` (followed: no; saslauthd-rs never chases referrals, see below).
    pub referrals: bool,
    /// `ldap_timeout`: connect and operation timeout (default 5 s).
    pub timeout: Duration,
    /// `ldap_time_limit`: the server-side search time limit (default 5 s).
    pub time_limit: u32,
    /// `ldap_size_limit` (default 1; Cyrus's meaning: more entries than this is no user).
    pub size_limit: u32,
    /// `ldap_start_tls`.
    pub start_tls: bool,
    /// `ldap_tls_check_peer`.
    pub tls_check_peer: bool,
    /// `ldap_tls_cacert_file`.
    pub tls_cacert_file: Option<PathBuf>,
    /// `ldap_tls_cacert_dir`.
    pub tls_cacert_dir: Option<PathBuf>,
    /// `ldap_tls_cert`, `ldap_tls_key`: a client certificate.
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's key.
    pub tls_key: Option<PathBuf>,
    /// `ldap_group_dn`.
    pub group_dn: String,
    /// `ldap_group_attr` (default `uniqueMember`).
    pub group_attr: String,
    /// `ldap_group_filter`.
    pub group_filter: String,
    /// `ldap_group_search_base` (default: `ldap_search_base`).
    pub group_search_base: String,
    /// `ldap_group_scope`.
    pub group_scope: Scope,
    /// `ldap_group_match_method`.
    pub group_match: GroupMatch,
    /// `ldap_default_realm` / `ldap_default_domain`: the realm of requests that name none.
    pub default_realm: String,
    /// `ldap_follow_changes` (saslauthd-rs; Cyrus ignores it): follow the directory's
    /// changes (RFC 4533) where it offers them, so that what a search found is remembered
    /// until something under the search base changes.
    pub follow_changes: bool,
    /// The file it came from, for messages.
    pub path: PathBuf,
}

impl std::fmt::Debug for LdapConf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the bind password.
        f.debug_struct("LdapConf")
            .field("servers", &self.servers)
            .field("bind_dn", &self.bind_dn)
            .field("auth_method", &self.auth_method)
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl Default for LdapConf {
    fn default() -> Self {
        LdapConf {
            servers: vec!["ldap://localhost/".into()],
            bind_dn: String::new(),
            bind_pw: String::new(),
            version: 3,
            search_base: String::new(),
            filter: "(uid=%u)".into(),
            password_attr: "userPassword".into(),
            auth_method: AuthMethod::Bind,
            scope: Scope::Subtree,
            deref: Deref::Never,
            referrals: false,
            timeout: Duration::from_secs(5),
            time_limit: 5,
            size_limit: 1,
            start_tls: false,
            tls_check_peer: false,
            tls_cacert_file: None,
            tls_cacert_dir: None,
            tls_cert: None,
            tls_key: None,
            group_dn: String::new(),
            group_attr: "uniqueMember".into(),
            group_filter: String::new(),
            group_search_base: String::new(),
            group_scope: Scope::Subtree,
            group_match: GroupMatch::Attr,
            default_realm: String::new(),
            follow_changes: true,
            path: PathBuf::from(DEFAULT_PATH),
        }
    }
}

/// A `saslauthd.conf` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    /// It cannot be read.
    #[error("cannot read the LDAP configuration {}: {source} (-O names it)", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line or value that cannot be used.
    #[error("{}: line {line}: {error}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line (1-based; 0: the settings together).
        line: usize,
        /// What is wrong.
        error: SettingError,
    },
}

/// A setting that cannot be used, by itself or with the others.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// A line that is not `key: value`.
    #[error("{0:?} is not \"key: value\"")]
    NotKeyValue(String),
    /// A key with nothing after its colon.
    #[error("{0} has no value")]
    NoValue(String),
    /// A key saslauthd-rs does not know.
    #[error("unknown key {0}")]
    Unknown(String),
    /// A key Cyrus knows that saslauthd-rs does not implement, and why.
    #[error("{key} is not supported by saslauthd-rs: {why}")]
    Unsupported {
        /// The key.
        key: String,
        /// Why not, and what to do instead.
        why: &'static str,
    },
    /// A switch that is neither yes nor no.
    #[error("{0:?} is not yes or no")]
    NotYesNo(String),
    /// A number that is not one.
    #[error("{0:?} is not a number")]
    NotANumber(String),
    /// A value outside a key's words (`key`: the words it takes).
    #[error("{key} {value:?}: expected {expected}")]
    NotOneOf {
        /// The key.
        key: &'static str,
        /// The value given.
        value: String,
        /// The words it takes.
        expected: &'static str,
    },
    /// A server that is not an LDAP URL.
    #[error("ldap_servers: {0:?} is not an ldap://, ldaps:// or ldapi:// URL")]
    NotAnLdapUrl(String),
    /// An LDAP version other than 3.
    #[error("ldap_version {0}: only 3 is supported")]
    Version(u32),
    /// `ldap_referrals: yes`.
    #[error(
        "ldap_referrals: yes is not supported (a referral could send the user's password to \
         another server); list every server in ldap_servers"
    )]
    Referrals,
    /// A client certificate without its key, or the other way round.
    #[error("ldap_tls_cert and ldap_tls_key go together")]
    CertWithoutKey,
    /// StartTLS with a server that is not `ldap://`.
    #[error("ldap_start_tls: yes applies to ldap:// servers only")]
    StartTlsNotLdap,
}

/// Cyrus's switch values: `yes`/`on`/`true`/`1` and `no`/`off`/`false`/`0`.
fn switch(value: &str) -> Result<bool, SettingError> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "on" | "true" | "1" | "y" => Ok(true),
        "no" | "off" | "false" | "0" | "n" => Ok(false),
        other => Err(SettingError::NotYesNo(other.to_owned())),
    }
}

/// Checks a key of the configuration file's `[ldap]` table: an unknown key, or one saslauthd-rs
/// does not support, is an error; what its value means is checked with the others when the
/// passdb opens.
pub fn check_key(key: &str, value: &str) -> Result<(), SettingError> {
    match LdapConf::default().set(key, value) {
        Err(e @ (SettingError::Unknown(_) | SettingError::Unsupported { .. })) => Err(e),
        _ => Ok(()),
    }
}

fn number(value: &str) -> Result<u32, SettingError> {
    value
        .parse()
        .map_err(|_| SettingError::NotANumber(value.to_owned()))
}

/// The error of a value of `key` that is none of the words it takes (`expected`).
fn one_of(key: &'static str, value: &str, expected: &'static str) -> SettingError {
    SettingError::NotOneOf {
        key,
        value: value.to_owned(),
        expected,
    }
}

fn scope(key: &'static str, value: &str) -> Result<Scope, SettingError> {
    match value.to_ascii_lowercase().as_str() {
        "sub" | "subtree" => Ok(Scope::Subtree),
        "one" | "onelevel" => Ok(Scope::OneLevel),
        "base" => Ok(Scope::Base),
        other => Err(one_of(key, other, "sub, one or base")),
    }
}

/// Keys Cyrus knows that saslauthd-rs does not implement: refused by name.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "ldap_use_sasl",
        "SASL binds to the directory are not supported; use simple binds",
    ),
    ("ldap_id", "SASL binds are not supported"),
    ("ldap_sasl_authc_id", "SASL binds are not supported"),
    ("ldap_authz_id", "SASL binds are not supported"),
    ("ldap_sasl_authz_id", "SASL binds are not supported"),
    ("ldap_realm", "SASL binds are not supported"),
    ("ldap_sasl_realm", "SASL binds are not supported"),
    ("ldap_mech", "SASL binds are not supported"),
    ("ldap_sasl_mech", "SASL binds are not supported"),
    ("ldap_sasl_secprops", "SASL binds are not supported"),
    (
        "ldap_tls_ciphers",
        "cipher lists are not supported (rustls chooses among safe suites)",
    ),
    ("ldap_debug", "use SASLAUTHD_LOG=debug"),
    (
        "ldap_cache_ttl",
        "libldap's cache is gone from OpenLDAP; use -c",
    ),
    (
        "ldap_cache_mem",
        "libldap's cache is gone from OpenLDAP; use -c",
    ),
];

impl LdapConf {
    /// The settings `-a ldap` runs with: Cyrus's `saslauthd.conf` that `-O` names (or
    /// [`DEFAULT_PATH`], unless the configuration file has an `[ldap]` table and no `-O` is
    /// given), then the `[ldap]` table's keys over it.
    pub fn from_settings(settings: &crate::passdb::Settings) -> Result<LdapConf, PassdbError> {
        let named = settings.options.first().map(PathBuf::from);
        let read =
            |path: &Path| LdapConf::read(path).map_err(|e| PassdbError::Settings(e.to_string()));
        let mut conf = match (&named, settings.table.is_empty()) {
            (Some(path), _) => read(path)?,
            (None, true) => read(Path::new(DEFAULT_PATH))?,
            (None, false) => LdapConf::default(),
        };
        for (key, value) in &settings.table {
            conf.set(key, value).map_err(|e| {
                PassdbError::Settings(format!("[ldap] in the configuration file: {e}"))
            })?;
        }
        Ok(conf)
    }

    /// Reads `path`.
    pub fn read(path: &Path) -> Result<LdapConf, ConfError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses a file's text.
    pub fn parse(text: &str, path: &Path) -> Result<LdapConf, ConfError> {
        let mut conf = LdapConf {
            path: path.to_owned(),
            ..LdapConf::default()
        };
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |error: SettingError| ConfError::Line {
                path: path.to_owned(),
                line: i + 1,
                error,
            };
            let key_like = |k: &str| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            };
            let Some((key, value)) = line.split_once(':').filter(|(k, _)| key_like(k)) else {
                return Err(at(SettingError::NotKeyValue(line.to_owned())));
            };
            let key = key.to_ascii_lowercase();
            let value = value.trim();
            if value.is_empty() {
                return Err(at(SettingError::NoValue(key)));
            }
            conf.set(&key, value).map_err(at)?;
        }
        conf.finish().map_err(|error| ConfError::Line {
            path: path.to_owned(),
            line: 0,
            error,
        })?;
        Ok(conf)
    }

    /// One setting (also from the TOML file's `[ldap]` table).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SettingError> {
        let path = || Some(PathBuf::from(value));
        match key {
            "ldap_servers" => {
                self.servers = value.split_whitespace().map(str::to_owned).collect();
                for url in &self.servers {
                    let scheme = url.split("://").next().unwrap_or_default();
                    if !matches!(scheme, "ldap" | "ldaps" | "ldapi") || !url.contains("://") {
                        return Err(SettingError::NotAnLdapUrl(url.clone()));
                    }
                }
            }
            "ldap_bind_dn" => self.bind_dn = value.into(),
            "ldap_password" | "ldap_bind_pw" => self.bind_pw = value.into(),
            "ldap_version" => {
                self.version = match number(value)? {
                    3 => 3,
                    other => return Err(SettingError::Version(other)),
                }
            }
            "ldap_search_base" => self.search_base = value.into(),
            "ldap_filter" => self.filter = value.into(),
            "ldap_password_attr" => self.password_attr = value.into(),
            "ldap_auth_method" => {
                self.auth_method = match value.to_ascii_lowercase().as_str() {
                    "bind" => AuthMethod::Bind,
                    "fastbind" => AuthMethod::Fastbind,
                    "custom" => AuthMethod::Custom,
                    other => {
                        return Err(one_of(
                            "ldap_auth_method",
                            other,
                            "bind, fastbind or custom",
                        ))
                    }
                }
            }
            "ldap_scope" => self.scope = scope("ldap_scope", value)?,
            "ldap_group_scope" => self.group_scope = scope("ldap_group_scope", value)?,
            "ldap_deref" => {
                self.deref = match value.to_ascii_lowercase().as_str() {
                    "never" => Deref::Never,
                    "search" => Deref::Searching,
                    "find" => Deref::Finding,
                    "always" => Deref::Always,
                    other => {
                        return Err(one_of("ldap_deref", other, "never, search, find or always"))
                    }
                }
            }
            "ldap_referrals" => self.referrals = switch(value)?,
            "ldap_restart" => {
                switch(value)?;
            }
            "ldap_timeout" => {
                self.timeout = Duration::from_secs(u64::from(number(value)?.max(1)));
            }
            "ldap_time_limit" => self.time_limit = number(value)?,
            "ldap_size_limit" => self.size_limit = number(value)?,
            "ldap_start_tls" => self.start_tls = switch(value)?,
            "ldap_tls_check_peer" => self.tls_check_peer = switch(value)?,
            "ldap_tls_cacert_file" => self.tls_cacert_file = path(),
            "ldap_tls_cacert_dir" => self.tls_cacert_dir = path(),
            "ldap_tls_cert" => self.tls_cert = path(),
            "ldap_tls_key" => self.tls_key = path(),
            "ldap_group_dn" => self.group_dn = value.into(),
            "ldap_group_attr" => self.group_attr = value.into(),
            "ldap_group_filter" => self.group_filter = value.into(),
            "ldap_group_search_base" => self.group_search_base = value.into(),
            "ldap_group_match_method" => {
                self.group_match = match value.to_ascii_lowercase().as_str() {
                    "attr" => GroupMatch::Attr,
                    "filter" => GroupMatch::Filter,
                    other => {
                        return Err(one_of("ldap_group_match_method", other, "attr or filter"))
                    }
                }
            }
            "ldap_default_realm" | "ldap_default_domain" => self.default_realm = value.into(),
            "ldap_follow_changes" => self.follow_changes = switch(value)?,
            other => {
                return Err(match UNSUPPORTED.iter().find(|(k, _)| *k == other) {
                    Some((_, why)) => SettingError::Unsupported {
                        key: other.to_owned(),
                        why,
                    },
                    None => SettingError::Unknown(other.to_owned()),
                })
            }
        }
        Ok(())
    }

    /// What only the settings together can tell, and Cyrus's implied defaults.
    fn finish(&mut self) -> Result<(), SettingError> {
        if self.group_search_base.is_empty() {
            self.group_search_base = self.search_base.clone();
        }
        if self.referrals {
            return Err(SettingError::Referrals);
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(SettingError::CertWithoutKey);
        }
        if self.start_tls && self.servers.iter().any(|s| !s.starts_with("ldap://")) {
            return Err(SettingError::StartTlsNotLdap);
        }
        Ok(())
    }

    /// Whether TLS settings are needed (an ldaps:// server or StartTLS).
    pub fn uses_tls(&self) -> bool {
        self.start_tls || self.servers.iter().any(|s| s.starts_with("ldaps://"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LdapConf, ConfError> {
        LdapConf::parse(text, Path::new("/etc/saslauthd.conf"))
    }

    #[test]
    fn cyrus_keys_and_defaults() {
        let c = parse(
            "# a comment\n\
             LDAP_SERVERS: ldap://ldap1.example.org/ ldapi://%2Frun%2Fldapi\n\
             ldap_search_base: ou=people,dc=example,dc=org\n\
             ldap_bind_dn: cn=saslauthd,dc=example,dc=org\n\
             ldap_password: s3cret: with a colon\n\
             ldap_auth_method: fastbind\n\
             ldap_scope: one\n\
             ldap_timeout: 3\n",
        )
        .unwrap();
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.bind_pw, "s3cret: with a colon");
        assert_eq!(c.auth_method, AuthMethod::Fastbind);
        assert_eq!(c.scope, Scope::OneLevel);
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.filter, "(uid=%u)");
        assert_eq!(c.group_search_base, "ou=people,dc=example,dc=org");
        assert!(!format!("{c:?}").contains("s3cret"), "no password in Debug");
        assert_eq!(parse("").unwrap().servers, vec!["ldap://localhost/"]);
    }

    #[test]
    fn what_cannot_be_used_is_named() {
        for (text, wanted) in [
            (
                "ldap_servers: ldap://a/\nldap_serevrs: x\n",
                "line 2: unknown key ldap_serevrs",
            ),
            (
                "ldap_use_sasl: yes\n",
                "line 1: ldap_use_sasl is not supported",
            ),
            ("ldap_servers http://x/\n", "is not \"key: value\""),
            (
                "ldap_auth_method: magic\n",
                "expected bind, fastbind or custom",
            ),
            ("ldap_servers: http://x/\n", "not an ldap://"),
            ("ldap_start_tls: maybe\n", "is not yes or no"),
            ("ldap_version: 2\n", "only 3 is supported"),
            ("ldap_filter:\n", "ldap_filter has no value"),
            ("ldap_referrals: yes\n", "not supported"),
            (
                "ldap_servers: ldaps://x/\nldap_start_tls: yes\n",
                "ldap:// servers only",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(wanted), "{text:?}: {err}");
        }
    }
}
