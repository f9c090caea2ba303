//! sasldb2 files held in memory: Berkeley DB and GDBM files always, LMDB files for readers.
//!
//! Neither Berkeley DB nor GDBM can be read safely while another process changes it in place
//! without a lock (Cyrus's Berkeley DB backend takes none), and neither is worth walking on
//! every request; an LMDB file mapped into memory kills its reader when it is truncated. So a
//! file is read whole, checked, and kept as a hash table; lookups never touch the file. Whoever holds a `Table` learns from [`Stamp`] whether the file at the path is
//! still the one it read (the daemon's sasldb passdb asks before every request it has been
//! told of a change). Writes build a whole new file (`replace`), so the table and the
//! file stay one.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use indexmap::IndexMap;
use zeroize::Zeroizing;

use super::bdb::{self, Problem};
use super::gdbm::{self, Records, Shape};
use super::replace::{self, WriteLock};
use super::{Kind, SasldbError};

/// What identifies one version of a file: a rewrite by rename changes the inode, a change in
/// place the size or the times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// The stamp of a file's metadata.
    pub fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether both name the same inode (whatever its contents).
    pub fn same_inode(&self, other: &Stamp) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

/// The on-disk variant of a table's file, kept when it is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Variant {
    BerkeleyDb(bdb::Layout),
    Gdbm(Shape),
    /// Read only: an LMDB file is changed in place by liblmdb (`super::lmdb`).
    Lmdb,
}

impl Variant {
    pub(super) fn kind(&self) -> Kind {
        match self {
            Variant::BerkeleyDb(_) => Kind::BerkeleyDb,
            Variant::Gdbm(_) => Kind::Gdbm,
            Variant::Lmdb => Kind::Lmdb,
        }
    }

    /// A new file's variant.
    pub(super) fn new_file(kind: Kind) -> Option<Variant> {
        match kind {
            Kind::BerkeleyDb => Some(Variant::BerkeleyDb(bdb::Layout::default())),
            Kind::Gdbm => Some(Variant::Gdbm(Shape::default())),
            Kind::Lmdb => None,
        }
    }

    /// The mode a new file gets before the umask, as Cyrus's backends create theirs.
    fn create_mode(&self) -> u32 {
        match self {
            Variant::BerkeleyDb(_) => 0o660,
            Variant::Gdbm(_) => 0o600,
            Variant::Lmdb => 0o660,
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Variant::BerkeleyDb(layout) => write!(
                f,
                "Berkeley DB hash, version 9, {}, {}-byte pages",
                layout.endian, layout.page_size
            ),
            Variant::Gdbm(shape) => write!(f, "GDBM ({shape})"),
            Variant::Lmdb => f.write_str("LMDB (one data file, with its lock file beside it)"),
        }
    }
}

/// The records of one version of a file.
pub(super) struct Table {
    pub(super) variant: Variant,
    /// In the file's own order (Berkeley DB's cursor order; GDBM's `nextkey` order).
    pub(super) records: IndexMap<Box<[u8]>, Zeroizing<Box<[u8]>>>,
    pub(super) stamp: Option<Stamp>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("variant", &self.variant)
            .field("records", &self.records.len())
            .field("stamp", &self.stamp)
            .finish()
    }
}

/// How often a file that changes while it is read is read again before giving up.
const READ_ATTEMPTS: usize = 3;

impl Table {
    /// An empty table for a file not yet written.
    pub(super) fn empty(variant: Variant) -> Table {
        Table {
            variant,
            records: IndexMap::new(),
            stamp: None,
        }
    }

    /// Reads the whole file at `path`, known to hold `kind`. A file that changes while it is
    /// read (another process writing in place) is read again; `wait` is how long a GDBM
    /// writer's lock is waited for.
    pub(super) fn load(path: &Path, kind: Kind, wait: Duration) -> Result<Table, SasldbError> {
        for _ in 0..READ_ATTEMPTS {
            let before = stamp(path)?;
            let (variant, records) = match kind {
                Kind::BerkeleyDb => read_bdb(path)?,
                Kind::Gdbm => read_gdbm(path, wait)?,
                Kind::Lmdb => read_lmdb(path)?,
            };
            if stamp(path)? != before {
                continue;
            }
            let mut table = Table::empty(variant);
            table.stamp = Some(before);
            for (key, value) in records {
                let value = Zeroizing::new(value.into_boxed_slice());
                if table
                    .records
                    .insert(key.into_boxed_slice(), value)
                    .is_some()
                {
                    return Err(SasldbError::Damaged {
                        path: path.to_owned(),
                        format: kind,
                        problem: "a key appears twice".into(),
                    });
                }
            }
            return Ok(table);
        }
        Err(SasldbError::Busy {
            path: path.to_owned(),
            why: "it kept changing while it was read (another program is writing it)",
        })
    }

    /// Writes `records` as a new file over the locked path, in `variant`; returns the new
    /// file's stamp.
    pub(super) fn save(
        lock: &WriteLock,
        variant: Variant,
        records: &IndexMap<Box<[u8]>, Zeroizing<Box<[u8]>>>,
    ) -> Result<Stamp, SasldbError> {
        let path = lock.target();
        let pairs: Vec<(&[u8], &[u8])> = records.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        replace::replace(lock, variant.create_mode(), |scratch, file| match variant {
            Variant::BerkeleyDb(layout) => {
                let mut uid = [0u8; 20];
                getrandom::fill(&mut uid).map_err(|e| SasldbError::Io {
                    path: path.to_owned(),
                    source: std::io::Error::other(e),
                })?;
                let bytes = bdb::write(&pairs, layout, uid)
                    .map_err(|problem| problem_error(path, Kind::BerkeleyDb, problem))?;
                replace::write_all(scratch, file, &Zeroizing::new(bytes))
            }
            Variant::Gdbm(shape) => {
                gdbm::write(scratch, &pairs, shape).map_err(|f| gdbm_error(path, f))
            }
            Variant::Lmdb => Err(SasldbError::Unsupported {
                path: path.to_owned(),
                what: "rewriting an LMDB file whole (it is changed in place)".into(),
            }),
        })?;
        stamp(path)
    }
}

fn stamp(path: &Path) -> Result<Stamp, SasldbError> {
    std::fs::metadata(path)
        .map(|m| Stamp::of(&m))
        .map_err(|source| SasldbError::Io {
            path: path.to_owned(),
            source,
        })
}

/// The whole file, in a buffer wiped when dropped (the raw pages hold every password).
fn read_whole(path: &Path) -> Result<Zeroizing<Vec<u8>>, SasldbError> {
    let io = |source| SasldbError::Io {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Zeroizing::new(Vec::new());
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(io)?;
    Ok(bytes)
}

fn read_bdb(path: &Path) -> Result<(Variant, Records), SasldbError> {
    let bytes = read_whole(path)?;
    let contents = bdb::read(&bytes).map_err(|p| problem_error(path, Kind::BerkeleyDb, p))?;
    Ok((Variant::BerkeleyDb(contents.layout), contents.records))
}

fn read_lmdb(path: &Path) -> Result<(Variant, Records), SasldbError> {
    let bytes = read_whole(path)?;
    let records = super::lmdb_file::read(&bytes).map_err(|p| problem_error(path, Kind::Lmdb, p))?;
    Ok((Variant::Lmdb, records))
}

fn read_gdbm(path: &Path, wait: Duration) -> Result<(Variant, Records), SasldbError> {
    let (shape, records) = gdbm::read(path, wait).map_err(|f| gdbm_error(path, f))?;
    Ok((Variant::Gdbm(shape), records))
}

fn problem_error(path: &Path, format: Kind, problem: Problem) -> SasldbError {
    match problem {
        Problem::Unsupported(what) => SasldbError::Unsupported {
            path: path.to_owned(),
            what,
        },
        Problem::Damaged(problem) => SasldbError::Damaged {
            path: path.to_owned(),
            format,
            problem,
        },
    }
}

fn gdbm_error(path: &Path, failure: gdbm::Failure) -> SasldbError {
    match failure {
        gdbm::Failure::Locked => SasldbError::Busy {
            path: path.to_owned(),
            why: "a GDBM writer holds its lock",
        },
        gdbm::Failure::Bad(problem) => SasldbError::Damaged {
            path: path.to_owned(),
            format: Kind::Gdbm,
            problem,
        },
        gdbm::Failure::Io(source) => SasldbError::Io {
            path: path.to_owned(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded xorshift: the mutations are reproducible from the seed a failure prints.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Flips bits, overwrites bytes and words with random or boundary values, and sometimes
    /// truncates or extends.
    fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
        let mut bytes = base.to_vec();
        for _ in 0..1 + rng.next() % 6 {
            let at = (rng.next() as usize) % bytes.len().max(1);
            match rng.next() % 6 {
                0 => bytes[at] ^= 1 << (rng.next() % 8),
                1 => bytes[at] = rng.next() as u8,
                2 | 3 => {
                    let at = at & !3;
                    let word: u32 = match rng.next() % 4 {
                        0 => 0,
                        1 => u32::MAX,
                        2 => (rng.next() % 64) as u32,
                        _ => rng.next() as u32,
                    };
                    if at + 4 <= bytes.len() {
                        bytes[at..at + 4].copy_from_slice(&word.to_le_bytes());
                    }
                }
                4 => bytes.truncate(at),
                _ => bytes.extend(std::iter::repeat_n(rng.next() as u8, at % 5000)),
            }
            if bytes.is_empty() {
                bytes.push(0);
            }
        }
        bytes
    }

    /// Random damage to every fixture of every format: the reader returns the
    /// records or an error naming the file, never panics, loops or allocates without bound
    /// (each read is timed).
    #[test]
    fn readers_survive_random_damage() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sasldb");
        // SASLDB_DAMAGE_SEED replays a failure's seed.
        let seed = std::env::var("SASLDB_DAMAGE_SEED")
            .ok()
            .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
            .unwrap_or_else(|| {
                0x5eed_0000_0000_0001
                    ^ std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs()
            });
        eprintln!("damage seed {seed:#x}");
        let mut rng = Rng(seed);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasldb2");
        for (name, kind, rounds) in [
            ("sasldb2-bdb-hash", Kind::BerkeleyDb, 3000),
            ("sasldb2-bdb-hash-2007users", Kind::BerkeleyDb, 1500),
            ("sasldb2-gdbm", Kind::Gdbm, 1500),
            ("sasldb2-gdbm-2007users", Kind::Gdbm, 500),
            ("sasldb2-lmdb", Kind::Lmdb, 3000),
            ("sasldb2-lmdb-2007users", Kind::Lmdb, 500),
        ] {
            let base = std::fs::read(fixtures.join(name)).unwrap();
            let (mut read, mut refused) = (0, 0);
            for round in 0..rounds {
                let bytes = mutate(&mut rng, &base);
                std::fs::write(&path, &bytes).unwrap();
                let start = std::time::Instant::now();
                match Table::load(&path, kind, Duration::ZERO) {
                    Ok(table) => {
                        read += 1;
                        assert!(table.records.len() <= bytes.len());
                    }
                    Err(e) => {
                        refused += 1;
                        let text = e.to_string();
                        assert!(
                            text.starts_with(&format!("{}: ", path.display()))
                                && matches!(
                                    e,
                                    SasldbError::Damaged { .. } | SasldbError::Unsupported { .. }
                                ),
                            "{name} {round}: {e:?}"
                        );
                    }
                }
                assert!(
                    start.elapsed() < Duration::from_secs(2),
                    "{name} round {round}: {:?}",
                    start.elapsed()
                );
            }
            eprintln!("{name}: {read} read, {refused} refused");
        }
    }
}
