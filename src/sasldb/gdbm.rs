//! GNU dbm files, the sasldb2 format of Fedora, RHEL, Alpine and Arch, through the pure-Rust
//! `gdbm-native` crate (file-compatible with C GDBM; it read every fixture written by C GDBM
//! 1.23, and C GDBM 1.23 reads what it writes, which the tests check with `gdbmtool`).
//!
//! Reads take a shared `flock`, as C GDBM's readers do, so a C GDBM writer (Cyrus's
//! `saslpasswd2`, which changes the file in place under an exclusive lock) is never read
//! half-way. Writes build a whole new file (see `replace`), in the old file's variant: byte
//! order, offset size, block size, `char` signedness of the key hash, and the numsync header,
//! which only GDBM 1.21 and later read, so a new file has none.

use std::path::Path;
use std::time::Duration;

use gdbm_native::{BlockSize, CharSign, OpenOptions};

/// The variant of a GDBM file, kept by a rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    pub(super) endian: gdbm_native::Endian,
    pub(super) layout: gdbm_native::Layout,
    pub(super) block_size: u32,
    pub(super) numsync: bool,
    pub(super) char_sign: Option<CharSign>,
}

impl Default for Shape {
    /// What C GDBM gives a new file on x86-64 Linux (without the numsync header).
    fn default() -> Self {
        Shape {
            endian: if cfg!(target_endian = "big") {
                gdbm_native::Endian::Big
            } else {
                gdbm_native::Endian::Little
            },
            layout: gdbm_native::Layout::default(),
            block_size: 4096,
            numsync: false,
            char_sign: None,
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {}, {}-byte blocks{}",
            match self.endian {
                gdbm_native::Endian::Little => "little-endian",
                gdbm_native::Endian::Big => "big-endian",
            },
            match self.layout {
                gdbm_native::Layout::Off32 => "32-bit offsets",
                _ => "64-bit offsets",
            },
            self.block_size,
            if self.numsync { ", numsync" } else { "" }
        )
    }
}

/// Why a GDBM file could not be read or written.
pub(super) enum Failure {
    /// A C GDBM writer holds the lock.
    Locked,
    /// The file is damaged, or not GDBM.
    Bad(String),
    /// The system refused (permissions, disk).
    Io(std::io::Error),
}

fn failure(e: gdbm_native::Error) -> Failure {
    match e {
        gdbm_native::Error::Locked => Failure::Locked,
        // A short or garbled file comes back as an I/O error: it is damage, not the system
        // (a garbled offset makes a seek fail with EINVAL).
        gdbm_native::Error::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::InvalidInput
            ) =>
        {
            Failure::Bad(e.to_string())
        }
        gdbm_native::Error::Io(e) => Failure::Io(e),
        other => Failure::Bad(other.to_string()),
    }
}

/// The bucket cache of a rewrite (gdbm-native's default is 4 MiB).
const WRITE_CACHE: usize = 64 << 20;

/// Records, key and value, in the file's order.
pub(super) type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Every record of the GDBM file at `path`, waiting up to `wait` for a writer's lock.
pub(super) fn read(path: &Path, wait: Duration) -> Result<(Shape, Records), Failure> {
    let db = OpenOptions::new()
        .lock_wait(wait)
        .open(path)
        .map_err(failure)?;
    let shape = Shape {
        endian: db.endian(),
        layout: db.layout(),
        block_size: db.block_size(),
        numsync: db.is_numsync(),
        char_sign: db.char_sign(),
    };
    let mut records = Vec::new();
    for record in db.iter::<Vec<u8>, Vec<u8>>() {
        records.push(record.map_err(failure)?);
    }
    Ok((shape, records))
}

/// Writes `records` as a new GDBM file at `path` (an empty file, created by the caller).
pub(super) fn write(path: &Path, records: &[(&[u8], &[u8])], shape: Shape) -> Result<(), Failure> {
    let mut options = OpenOptions::new();
    options
        .write(true)
        .create(true)
        .numsync(shape.numsync)
        .endian(shape.endian)
        .layout(shape.layout)
        .block_size(BlockSize::Exactly(shape.block_size))
        // The whole file is written at once: a cache that holds it saves re-reading buckets.
        .cachesize(WRITE_CACHE);
    if let Some(sign) = shape.char_sign {
        options.char_sign(sign);
    }
    let mut db = options.open(path).map_err(failure)?;
    for (key, value) in records {
        db.insert(*key, *value).map_err(failure)?;
    }
    db.sync().map_err(failure)?;
    db.close().map_err(failure)
}
