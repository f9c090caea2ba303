//! Telling sasldb2 files apart. Cyrus stores no format tag, and distributions build different
//! backends (Debian: Berkeley DB hash; Fedora, Alpine, Arch: GDBM; upstream master: LMDB), so
//! the magic numbers decide.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// LMDB 0.9 (`0xBEEFC0DE` at offset 16).
    Lmdb,
    /// Berkeley DB, with its access method (`hash` for Debian's sasldb2).
    BerkeleyDb(&'static str),
    /// GNU dbm (`0x13579ac?` at offset 0).
    Gdbm,
    /// An empty file (a new database may be written into it).
    Empty,
    /// Something else.
    Unknown,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Lmdb => f.write_str("LMDB"),
            Format::BerkeleyDb(method) => write!(f, "Berkeley DB ({method})"),
            Format::Gdbm => f.write_str("GDBM"),
            Format::Empty => f.write_str("empty"),
            Format::Unknown => f.write_str("unrecognised (not a database)"),
        }
    }
}

impl Format {
    /// Why a file of this format is not a sasldb2 database, for messages.
    pub fn explain(&self) -> String {
        match self {
            Format::BerkeleyDb(method) => format!(
                "a Berkeley DB {method} database (libsasl2's sasldb2 files are hash databases)"
            ),
            Format::Empty => "it is empty".into(),
            _ => "its first bytes match no database format (Berkeley DB hash, GDBM, LMDB)".into(),
        }
    }
}

const LMDB_MAGIC: u32 = 0xBEEF_C0DE;
const BDB_MAGICS: [(u32, &str); 4] = [
    (0x0006_1561, "hash"),
    (0x0005_3162, "btree"),
    (0x0004_2253, "queue"),
    (0x0007_4582, "heap"),
];
const GDBM_MAGICS: [u32; 5] = [
    0x1357_9ace,
    0x1357_9acd,
    0x1357_9acf,
    0x1357_9ad0,
    0x1357_9ad1,
];

/// Classifies the first bytes of a file.
pub(super) fn classify(head: &[u8]) -> Format {
    if head.is_empty() {
        return Format::Empty;
    }
    let word = |at: usize| -> Option<[u8; 4]> { head.get(at..at + 4)?.try_into().ok() };
    if let Some(w) = word(16) {
        if u32::from_le_bytes(w) == LMDB_MAGIC || u32::from_be_bytes(w) == LMDB_MAGIC {
            return Format::Lmdb;
        }
    }
    if let Some(w) = word(12) {
        for (magic, method) in BDB_MAGICS {
            if u32::from_le_bytes(w) == magic || u32::from_be_bytes(w) == magic {
                return Format::BerkeleyDb(method);
            }
        }
    }
    if let Some(w) = word(0) {
        let (le, be) = (u32::from_le_bytes(w), u32::from_be_bytes(w));
        if GDBM_MAGICS.contains(&le) || GDBM_MAGICS.contains(&be) {
            return Format::Gdbm;
        }
    }
    Format::Unknown
}

/// Reads the head of `path` and classifies it. A missing file is an `Err` of kind `NotFound`.
pub(super) fn sniff(path: &Path) -> io::Result<Format> {
    let mut head = [0u8; 32];
    let mut file = File::open(path)?;
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(classify(&head[..filled]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers() {
        let mut lmdb = [0u8; 32];
        lmdb[16..20].copy_from_slice(&LMDB_MAGIC.to_le_bytes());
        assert_eq!(classify(&lmdb), Format::Lmdb);

        let mut bdb = [0u8; 32];
        bdb[12..16].copy_from_slice(&0x0006_1561u32.to_le_bytes());
        assert_eq!(classify(&bdb), Format::BerkeleyDb("hash"));

        let mut gdbm = [0u8; 32];
        gdbm[..4].copy_from_slice(&0x1357_9acfu32.to_le_bytes());
        assert_eq!(classify(&gdbm), Format::Gdbm);

        assert_eq!(classify(b""), Format::Empty);
        assert_eq!(classify(b"alice:secret\n"), Format::Unknown);
    }
}
