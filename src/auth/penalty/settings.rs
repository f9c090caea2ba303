//! The shared store's settings and errors (what the configuration and the admin socket
//! know of it, in every build), and `throttle_store`'s value: where the shared throttle
//! state lives.
//!
//! - `redis://[user[:password]@]host[:port][/db]`, `rediss://` (TLS), `valkey://`, `valkeys://`,
//!   `redis+unix:///path[?db=N]`, `unix:///path`: one server (the `redis` crate reads these).
//! - `redis+sentinel://[user[:password]@]host:port,host:port/MASTER[/db]` (`rediss+sentinel`:
//!   TLS to the master): Redis Sentinel, which names the master; the credentials are the
//!   master's.
//! - `redis+cluster://[user[:password]@]host:port,host:port` (`rediss+cluster`): Redis
//!   Cluster, from any of its nodes.
//!
//! A password is never shown: [`StoreUrl`]'s `Display` writes `***` instead.

use std::fmt;

use percent_encoding::percent_decode_str;

/// Where the shared state lives, as `throttle_store` says.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl {
    /// As given (the password too: it is never shown, see `Display`).
    given: String,
    pub(super) target: Target,
}

/// The kinds of deployment.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// One server: the URL as the `redis` crate reads it.
    Single { url: String },
    Sentinel {
        tls: bool,
        sentinels: Vec<(String, u16)>,
        master: String,
        db: i64,
        login: Login,
    },
    Cluster {
        tls: bool,
        nodes: Vec<(String, u16)>,
        login: Login,
    },
}

/// A user and password from a URL, decoded.
#[derive(Clone, PartialEq, Eq, Default)]
pub(super) struct Login {
    pub(super) user: Option<String>,
    pub(super) password: Option<String>,
}

/// Why `throttle_store` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreUrlError {
    #[error(
        "{0:?} is not a store this daemon knows: use redis://, rediss://, valkey://, \
         valkeys://, redis+unix://, unix://, redis+sentinel://, rediss+sentinel://, \
         redis+cluster:// or rediss+cluster://"
    )]
    /// A scheme this daemon does not know.
    Scheme(String),
    /// No `scheme://` at all.
    #[error("{0:?} has no \"scheme://\"")]
    NoScheme(String),
    /// The rest does not read.
    #[error("{url}: {why}")]
    Bad {
        /// The URL, its password hidden.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// This build has no store (built without the `throttle-store` feature).
    #[error(
        "this build of saslauthd-rs has no throttle store (its throttle-store feature is off)"
    )]
    NotBuilt,
}

/// How `throttle_store` is used: where, under which prefix, with which deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Where (`throttle_store`).
    pub url: StoreUrl,
    /// The keys' prefix (`throttle_store_prefix`), without the braces.
    pub prefix: String,
    /// Each call's deadline (`throttle_store_timeout`).
    pub timeout: std::time::Duration,
    /// CA certificates (PEM) for `rediss://` (`throttle_store_ca`); the system's otherwise.
    pub ca: Option<std::path::PathBuf>,
}

/// The default `throttle_store_prefix`.
pub const DEFAULT_PREFIX: &str = "saslauthd-rs";

/// Why the store gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Not connected now (its URL, password hidden).
    #[error("the throttle store {0} is down; throttling locally until it is back")]
    Down(String),
    /// No answer within the deadline.
    #[error("no answer from the throttle store within {0:?}")]
    Timeout(std::time::Duration),
    /// The connection or the server failed.
    #[cfg(feature = "throttle-store")]
    #[error("the throttle store: {0}")]
    Redis(#[from] redis::RedisError),
    /// A key under the prefix holds another application's value.
    #[error(
        "the throttle store's {key} holds a value saslauthd-rs did not write: another \
         application uses the prefix; set throttle_store_prefix"
    )]
    NotOurs {
        /// The key.
        key: String,
    },
    /// An answer of the wrong shape.
    #[error("the throttle store answered {0}")]
    Shape(String),
    /// `throttle_store_ca` cannot be read.
    #[error("throttle_store_ca {path}: {why}")]
    Ca {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// This build has no store.
    #[error(transparent)]
    NotBuilt(#[from] StoreUrlError),
}

const SCHEMES: [&str; 6] = ["redis", "rediss", "valkey", "valkeys", "redis+unix", "unix"];

impl std::str::FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(text: &str) -> Result<StoreUrl, StoreUrlError> {
        if cfg!(not(feature = "throttle-store")) {
            return Err(StoreUrlError::NotBuilt);
        }
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| StoreUrlError::NoScheme(redacted(text)))?;
        let bad = |why: &str| StoreUrlError::Bad {
            url: redacted(text),
            why: why.to_owned(),
        };
        let target = match scheme {
            s if SCHEMES.contains(&s) => {
                // The crate's own reading, so that what is accepted here connects.
                #[cfg(feature = "throttle-store")]
                redis::IntoConnectionInfo::into_connection_info(text)
                    .map_err(|e| bad(&e.to_string()))?;
                Target::Single {
                    url: text.to_owned(),
                }
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let (login, hosts, path) =
                    split_authority(rest).map_err(|w| bad(&w.to_string()))?;
                let mut parts = path.split('/').filter(|p| !p.is_empty());
                let master = parts
                    .next()
                    .ok_or_else(|| bad("no master name (redis+sentinel://HOST:PORT,.../MASTER)"))?;
                let db = match parts.next() {
                    None => 0,
                    Some(db) => db
                        .parse()
                        .map_err(|_| bad(&format!("{db:?} is not a database number")))?,
                };
                if parts.next().is_some() {
                    return Err(bad("more than /MASTER/DB after the hosts"));
                }
                Target::Sentinel {
                    tls: scheme.starts_with("rediss"),
                    sentinels: hosts_of(hosts, 26379).map_err(|w| bad(&w.to_string()))?,
                    master: decode(master).map_err(|w| bad(&w.to_string()))?,
                    db,
                    login,
                }
            }
            "redis+cluster" | "rediss+cluster" => {
                let (login, hosts, path) =
                    split_authority(rest).map_err(|w| bad(&w.to_string()))?;
                if !path.trim_matches('/').is_empty() {
                    return Err(bad(
                        "a cluster has no database: nothing may follow the hosts",
                    ));
                }
                Target::Cluster {
                    tls: scheme.starts_with("rediss"),
                    nodes: hosts_of(hosts, 6379).map_err(|w| bad(&w.to_string()))?,
                    login,
                }
            }
            other => return Err(StoreUrlError::Scheme(other.to_owned())),
        };
        Ok(StoreUrl {
            given: text.to_owned(),
            target,
        })
    }
}

/// What is wrong in the part of a Sentinel or Cluster URL after its scheme.
#[derive(Debug, thiserror::Error)]
enum AuthorityError {
    #[error("{0:?} is not UTF-8 once %-decoded")]
    NotUtf8(String),
    #[error("{0:?}: no closing ]")]
    NoBracket(String),
    #[error("{0:?}: no host")]
    NoHost(String),
    #[error("{host:?}: {port:?} is not a port")]
    Port { host: String, port: String },
}

/// `[user[:password]@]hosts[/path]` → the login, the hosts' text, the path.
fn split_authority(rest: &str) -> Result<(Login, &str, &str), AuthorityError> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (login, hosts) = match authority.rsplit_once('@') {
        None => (Login::default(), authority),
        Some((userinfo, hosts)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            let login = Login {
                user: (!user.is_empty()).then(|| decode(user)).transpose()?,
                password: password.map(decode).transpose()?,
            };
            (login, hosts)
        }
    };
    Ok((login, hosts, path))
}

/// `host[:port],[v6]:port,...`
fn hosts_of(text: &str, default_port: u16) -> Result<Vec<(String, u16)>, AuthorityError> {
    let hosts =
        text.split(',')
            .map(|one| {
                let (host, port) = if let Some(v6) = one.strip_prefix('[') {
                    let (host, after) = v6
                        .split_once(']')
                        .ok_or_else(|| AuthorityError::NoBracket(one.to_owned()))?;
                    (host, after.strip_prefix(':'))
                } else {
                    match one.rsplit_once(':') {
                        Some((host, port)) => (host, Some(port)),
                        None => (one, None),
                    }
                };
                if host.is_empty() {
                    return Err(AuthorityError::NoHost(one.to_owned()));
                }
                let port = match port {
                    None => default_port,
                    Some(port) => port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
                        AuthorityError::Port {
                            host: one.to_owned(),
                            port: port.to_owned(),
                        }
                    })?,
                };
                Ok((host.to_owned(), port))
            })
            .collect::<Result<Vec<_>, _>>()?;
    Ok(hosts)
}

fn decode(text: &str) -> Result<String, AuthorityError> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| AuthorityError::NotUtf8(text.to_owned()))
}

/// `text` with the password of its `user:password@` (if any) written `***`.
fn redacted(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{hosts}{path}"),
            None => text.to_owned(),
        },
        None => text.to_owned(),
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redacted(&self.given))
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StoreUrl, StoreUrlError> {
        text.parse()
    }

    #[test]
    fn kinds() {
        assert!(matches!(
            parse("redis://127.0.0.1:6379/0").unwrap().target,
            Target::Single { .. }
        ));
        for ok in [
            "rediss://u:p@localhost:6380/2",
            "valkey://127.0.0.1",
            "unix:///run/redis.sock",
            "redis+unix:///run/redis.sock?db=3",
        ] {
            parse(ok).unwrap();
        }
        let Target::Sentinel {
            tls,
            sentinels,
            master,
            db,
            login,
        } = parse("rediss+sentinel://me:p%40ss@127.0.0.1:26379,[::1]/mymaster/3")
            .unwrap()
            .target
        else {
            panic!()
        };
        assert!(tls);
        assert_eq!(
            sentinels,
            [("127.0.0.1".into(), 26379), ("::1".into(), 26379)]
        );
        assert_eq!((master.as_str(), db), ("mymaster", 3));
        assert_eq!(login.user.as_deref(), Some("me"));
        assert_eq!(login.password.as_deref(), Some("p@ss"));
        let Target::Cluster { nodes, tls, .. } =
            parse("redis+cluster://a:7000,b:7001").unwrap().target
        else {
            panic!()
        };
        assert!(!tls);
        assert_eq!(nodes, [("a".into(), 7000), ("b".into(), 7001)]);
    }

    #[test]
    fn errors_are_clear_and_hide_the_password() {
        let e = parse("http://127.0.0.1:6379").unwrap_err();
        assert!(e.to_string().starts_with("\"http\" is not a store"), "{e}");
        let e = parse("127.0.0.1:6379").unwrap_err();
        assert_eq!(e, StoreUrlError::NoScheme("127.0.0.1:6379".into()));
        let e = parse("redis+sentinel://u:secret@h:1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no master name") && !e.contains("secret"), "{e}");
        let e = parse("redis+cluster://h:0").unwrap_err().to_string();
        assert!(e.contains("is not a port"), "{e}");
        let e = parse("redis://u:secret@h:notaport")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
        let shown = parse("redis://u:secret@h:6379/1").unwrap().to_string();
        assert_eq!(shown, "redis://u:***@h:6379/1");
    }
}
