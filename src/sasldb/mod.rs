//! The sasldb2 format, as Cyrus SASL writes it (`sasldb/allockey.c`, `sasldb/db_lmdb.c`).
//!
//! Every record is one key/value pair. The key is `authid NUL realm NUL property` with no
//! trailing NUL; the value is the property's raw bytes (for `userPassword`, the cleartext
//! password). The same records live in one of three on-disk formats, whichever the host's
//! libsasl2 was built with: Berkeley DB hash (Debian, Ubuntu), GDBM (Fedora, RHEL, Alpine,
//! Arch) or LMDB (upstream master). Cyrus keeps no format tag in the file, so `format::sniff`
//! tells them apart by their magic numbers, and [`Store`] serves the rest of the code whatever
//! the format: LMDB in place (`lmdb`), the others held in memory (`table`) and rewritten whole
//! and crash-safe (`replace`) by the Berkeley DB reader and writer (`bdb`) or the GDBM one
//! (`gdbm`). [`host`] tells which format the host's libsasl2 reads, for new files.

mod bdb;
mod format;
mod gdbm;
pub mod host;
mod lmdb;
mod lmdb_file;
mod record;
mod replace;
mod store;
mod table;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use bdb::Endian;
pub use format::Format;
pub use record::{Entry, OpenMode, Record};
pub use store::Store;
pub use table::Stamp;

/// A format this crate reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// LMDB 0.9, one data file plus `<file>-lock` (Cyrus built `--with-dblib=lmdb`).
    Lmdb,
    /// Berkeley DB hash, version 9 (Debian's and Ubuntu's libsasl2).
    BerkeleyDb,
    /// GNU dbm (Fedora's, RHEL's, Alpine's and Arch's libsasl2).
    Gdbm,
}

impl Kind {
    /// Every format, in the order the usage texts list them.
    pub const ALL: [Kind; 3] = [Kind::Lmdb, Kind::BerkeleyDb, Kind::Gdbm];

    /// The name `--format` takes.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Lmdb => "lmdb",
            Kind::BerkeleyDb => "bdb",
            Kind::Gdbm => "gdbm",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Lmdb => "LMDB",
            Kind::BerkeleyDb => "Berkeley DB (hash)",
            Kind::Gdbm => "GDBM",
        })
    }
}

/// A `--format` value that names no format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sasldb format {0:?}: use lmdb, bdb or gdbm")]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Kind, UnknownKind> {
        match s.to_ascii_lowercase().as_str() {
            "lmdb" => Ok(Kind::Lmdb),
            "bdb" | "berkeley" | "berkeleydb" | "db" => Ok(Kind::BerkeleyDb),
            "gdbm" => Ok(Kind::Gdbm),
            _ => Err(UnknownKind(s.to_owned())),
        }
    }
}

/// The property that holds the cleartext password (libsasl `SASL_AUX_PASSWORD_PROP`).
pub const USER_PASSWORD: &[u8] = b"userPassword";

/// The property that holds SCRAM secrets (Cyrus's `authPassword`, RFC 3112 syntax).
pub const AUTH_PASSWORD: &[u8] = b"authPassword";

/// Legacy per-mechanism secrets that Cyrus's `saslpasswd2` deletes on every change.
pub const STALE_SECRETS: [&[u8]; 3] = [
    b"cmusaslsecretCRAM-MD5",
    b"cmusaslsecretDIGEST-MD5",
    b"cmusaslsecretPLAIN",
];

/// The default database path of Debian's and upstream's builds (`SASL_DB_PATH`).
pub const DEFAULT_PATH: &str = "/etc/sasldb2";

/// The longest value Cyrus's `auth_sasldb` can read (`buf[1024]`, NUL included); the daemon
/// has no such limit, but the tools warn about it.
pub const CYRUS_SASLAUTHD_MAX_VALUE: usize = 1023;

/// Builds a key: `authid NUL realm NUL property`.
///
/// A NUL inside a part would make the key ambiguous; callers check with [`check_part`].
pub fn encode_key(authid: &[u8], realm: &[u8], property: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(authid.len() + realm.len() + property.len() + 2);
    key.extend_from_slice(authid);
    key.push(0);
    key.extend_from_slice(realm);
    key.push(0);
    key.extend_from_slice(property);
    key
}

/// Builds a key as [`encode_key`] does, on the stack when it is short (as every key Cyrus's
/// clients can send is), and hands it to `f`.
pub(crate) fn with_key<R>(
    authid: &[u8],
    realm: &[u8],
    property: &[u8],
    f: impl FnOnce(&[u8]) -> R,
) -> R {
    let len = authid.len() + realm.len() + property.len() + 2;
    let mut stack = [0u8; 600];
    let Some(key) = stack.get_mut(..len) else {
        return f(&encode_key(authid, realm, property));
    };
    let (a, rest) = key.split_at_mut(authid.len());
    a.copy_from_slice(authid);
    let (r, rest) = rest[1..].split_at_mut(realm.len());
    r.copy_from_slice(realm);
    rest[1..].copy_from_slice(property);
    rest[0] = 0;
    key[authid.len()] = 0;
    f(key)
}

/// The `authid NUL realm NUL` prefix shared by all of a user's properties.
pub fn user_prefix(authid: &[u8], realm: &[u8]) -> Vec<u8> {
    let mut prefix = encode_key(authid, realm, b"");
    prefix.shrink_to_fit();
    prefix
}

/// A key split into its three parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key<'a> {
    /// The user name, without realm.
    pub authid: &'a [u8],
    /// The realm (domain).
    pub realm: &'a [u8],
    /// The property name, e.g. `userPassword`.
    pub property: &'a [u8],
}

impl<'a> Key<'a> {
    /// Splits a key; `None` unless it holds exactly two NULs (`_sasldb_parse_key`).
    pub fn parse(key: &'a [u8]) -> Option<Key<'a>> {
        let mut parts = key.splitn(3, |&b| b == 0);
        let authid = parts.next()?;
        let realm = parts.next()?;
        let property = parts.next()?;
        if property.contains(&0) {
            return None;
        }
        Some(Key {
            authid,
            realm,
            property,
        })
    }
}

impl fmt::Display for Key<'_> {
    /// The `authid@realm: property` line of `sasldblistusers2` (`allockey.c`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}: {}",
            String::from_utf8_lossy(self.authid),
            String::from_utf8_lossy(self.realm),
            String::from_utf8_lossy(self.property)
        )
    }
}

/// Which part of a key a value was meant for, in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The user name.
    Authid,
    /// The realm.
    Realm,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Authid => "user name",
            Part::Realm => "realm",
        })
    }
}

/// Checks that a key part can be stored: not empty, no NUL byte.
pub fn check_part(part: Part, value: &[u8]) -> Result<(), SasldbError> {
    if value.is_empty() {
        return Err(SasldbError::EmptyPart(part));
    }
    if value.contains(&0) {
        return Err(SasldbError::NulInPart(part));
    }
    Ok(())
}

/// Why a sasldb operation failed. Each text names the file and the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SasldbError {
    /// The file does not exist (and was not to be created).
    #[error("{}: no such sasldb file", .0.display())]
    Missing(PathBuf),
    /// The file holds something that is not a sasldb2 database.
    #[error("{}: not a sasldb2 file: {}", .path.display(), .format.explain())]
    ForeignFormat {
        /// The file.
        path: PathBuf,
        /// What it holds.
        format: Format,
    },
    /// A database of a kind or variant that is not read (named).
    #[error("{}: {}", .path.display(), .what)]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What it is.
        what: String,
    },
    /// A damaged or truncated file.
    #[error("{}: a damaged {} file: {}", .path.display(), .format, .problem)]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Its format.
        format: Kind,
        /// What is wrong, and where.
        problem: String,
    },
    /// Another program is changing the file.
    #[error("{}: busy: {}", .path.display(), .why)]
    Busy {
        /// The file.
        path: PathBuf,
        /// Who.
        why: &'static str,
    },
    /// A rewrite could not give the new file the old one's owner, mode or label.
    #[error(
        "{}: cannot keep {} on the new copy ({}); nothing was changed: run this as root \
         or as the file's owner",
        .path.display(),
        .what,
        .source
    )]
    KeepAccess {
        /// The file.
        path: PathBuf,
        /// What could not be kept.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A version of the file that could not be read before, not read again until it
    /// changes (the text is the first error's).
    #[error("{0}")]
    Unreadable(String),
    /// A change was asked of a store opened read-only.
    #[error("{}: opened read-only", .0.display())]
    ReadOnly(PathBuf),
    /// A new file was to be created where one exists.
    #[error("{}: already exists (give --replace to replace it)", .0.display())]
    Exists(PathBuf),
    /// A symlink that is not followed: owned by someone else (or in someone else's
    /// directory), pointing nowhere, or where a lock file belongs.
    #[error("{}: {why}", .path.display())]
    Symlink {
        /// The symlink.
        path: PathBuf,
        /// Why it is not followed.
        why: &'static str,
    },
    /// The file's directory could not be opened or locked.
    #[error("{}: its directory: {}", .path.display(), .source)]
    Directory {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file could not be read or written.
    #[error("{}: {}", .path.display(), .source)]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// LMDB refused an operation.
    #[error("{}: LMDB: {}", .path.display(), .source)]
    Lmdb {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: ::lmdb::Error,
    },
    /// An empty user name or realm.
    #[error("the {0} is empty")]
    EmptyPart(Part),
    /// A NUL byte in a user name or realm.
    #[error("the {0} contains a NUL byte")]
    NulInPart(Part),
}

/// A Cyrus-written fixture of `tests/fixtures/sasldb`, for the readers' unit tests.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sasldb")
            .join(name),
    )
    .unwrap()
}

/// For the fuzz targets: reads `bytes` as a file of `kind`; a Berkeley DB file that reads is
/// written back and must read as the same records.
pub(crate) fn fuzz_read(kind: Kind, bytes: &[u8]) {
    match kind {
        Kind::BerkeleyDb => {
            if let Ok(contents) = bdb::read(bytes) {
                let mut pairs: Vec<(&[u8], &[u8])> = contents
                    .records
                    .iter()
                    .map(|(k, v)| (&k[..], &v[..]))
                    .collect();
                // Keys over Cyrus's limit, or duplicated, are refused by the writer.
                if let Ok(again) = bdb::write(&pairs, contents.layout, [1; 20]) {
                    let mut reread = bdb::read(&again).expect("what we wrote reads");
                    reread.records.sort();
                    pairs.sort();
                    let reread: Vec<(&[u8], &[u8])> = reread
                        .records
                        .iter()
                        .map(|(k, v)| (&k[..], &v[..]))
                        .collect();
                    assert_eq!(reread, pairs, "a Berkeley DB round trip");
                }
            }
        }
        Kind::Lmdb => {
            let _ = lmdb_file::read(bytes);
        }
        Kind::Gdbm => {
            let path =
                std::env::temp_dir().join(format!("saslauthd-rs-fuzz-{}.gdbm", std::process::id()));
            if std::fs::write(&path, bytes).is_ok() {
                let _ = gdbm::read(&path, std::time::Duration::ZERO);
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let key = encode_key(b"alice", b"example.org", USER_PASSWORD);
        assert_eq!(key, b"alice\0example.org\0userPassword");
        let parsed = Key::parse(&key).unwrap();
        assert_eq!(parsed.authid, b"alice");
        assert_eq!(parsed.realm, b"example.org");
        assert_eq!(parsed.property, USER_PASSWORD);
        assert_eq!(parsed.to_string(), "alice@example.org: userPassword");
    }

    #[test]
    fn keys_on_the_stack_are_the_same_keys() {
        for (a, r) in [
            (&b"alice"[..], &b"example.org"[..]),
            (b"", b""),
            (&[b'x'; 300][..], &[b'y'; 300][..]),
        ] {
            with_key(a, r, USER_PASSWORD, |key| {
                assert_eq!(key, encode_key(a, r, USER_PASSWORD))
            });
        }
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert_eq!(Key::parse(b"alice"), None);
        assert_eq!(Key::parse(b"alice\0realm"), None);
        assert_eq!(Key::parse(b"a\0b\0c\0d"), None);
        assert!(Key::parse(b"\0\0").is_some());
    }

    #[test]
    fn parts_are_checked() {
        assert!(check_part(Part::Authid, b"alice").is_ok());
        assert_eq!(
            check_part(Part::Realm, b"").unwrap_err().to_string(),
            "the realm is empty"
        );
        assert_eq!(
            check_part(Part::Authid, b"a\0b").unwrap_err().to_string(),
            "the user name contains a NUL byte"
        );
    }
}
