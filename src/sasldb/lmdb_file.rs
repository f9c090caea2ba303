//! Reading an LMDB sasldb2 file from its bytes, without mapping it.
//!
//! The daemon must survive whatever happens to the file under it: a map of a file that is
//! truncated (`truncate -s 0`, `cp other sasldb2`) kills the process with SIGBUS at the next
//! touch, which no check can prevent. So the daemon and the listing tool read the file like
//! the other formats — whole, with `read(2)`, checked page by page — and hold its records in
//! memory; only writers (`saslpasswd2-rs`) open it with liblmdb, one write transaction per
//! change, as Cyrus does.
//!
//! The layout read is LMDB 0.9's data file (`MDB_NOSUBDIR`, 64-bit little-endian, the unnamed
//! main database, no duplicates — what Cyrus's `db_lmdb.c` writes): two meta pages, of which
//! the one with the higher transaction id is current; a B+tree of branch and leaf pages from
//! its main database's root; values too big for a leaf on overflow pages. Every page number,
//! offset and size is checked against the file, every page may be reached once only, and the
//! number of records must be the one the meta page states, so a damaged or torn file is named,
//! never followed.

use std::collections::HashSet;

use super::bdb::Problem;
use super::gdbm::Records;

macro_rules! damaged {
    ($($arg:tt)*) => { Problem::Damaged(format!($($arg)*)) };
}

/// The page header: page number (8), pad (2), flags (2), lower and upper bounds (2 + 2), or
/// the count of overflow pages (4).
const PAGE_HEADER: usize = 16;
/// A node's header: data size or child page (4), flags (2), key size (2).
const NODE_HEADER: usize = 8;
const MAGIC: u32 = 0xBEEF_C0DE;
const VERSION: u32 = 1;
const P_BRANCH: u16 = 0x01;
const P_LEAF: u16 = 0x02;
const P_OVERFLOW: u16 = 0x04;
const P_LEAF2: u16 = 0x20;
const F_BIGDATA: u16 = 0x01;
const F_SUBDATA: u16 = 0x02;
const F_DUPDATA: u16 = 0x04;
/// `MDB_DUPSORT`, `MDB_DUPFIXED`: a database with duplicates (never a sasldb).
const DB_DUPS: u16 = 0x04 | 0x10;
/// An empty tree's root.
const NO_PAGE: u64 = u64::MAX;
/// Deeper than any tree LMDB can build in a file this reader would take.
const MAX_DEPTH: u16 = 32;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// One meta page's view of the main database.
#[derive(Debug, Clone, Copy)]
struct Meta {
    txnid: u64,
    last_page: u64,
    flags: u16,
    depth: u16,
    entries: u64,
    root: u64,
}

/// The meta page at `page` (0 or 1) of a file with `page_size`-byte pages, if it is one.
fn meta(file: &[u8], page: usize, page_size: usize) -> Option<Meta> {
    let m = page * page_size + PAGE_HEADER;
    if u32_at(file, m)? != MAGIC || u32_at(file, m + 4)? != VERSION {
        return None;
    }
    // magic, version, address, mapsize, then the free and the main database (48 bytes each:
    // pad 4, flags 2, depth 2, branch, leaf and overflow page counts, entries, root).
    let main = m + 24 + 48;
    Some(Meta {
        flags: u16_at(file, main + 4)?,
        depth: u16_at(file, main + 6)?,
        entries: u64_at(file, main + 32)?,
        root: u64_at(file, main + 40)?,
        last_page: u64_at(file, m + 120)?,
        txnid: u64_at(file, m + 128)?,
    })
}

/// Every record of the file, in key order.
pub(super) fn read(file: &[u8]) -> Result<Records, Problem> {
    if file.len() < PAGE_HEADER + 48 {
        return Err(damaged!(
            "{} bytes is too short for an LMDB file",
            file.len()
        ));
    }
    if u32_at(file, PAGE_HEADER) != Some(MAGIC) {
        return Err(match u32_at(file, PAGE_HEADER).map(u32::swap_bytes) {
            Some(MAGIC) => Problem::Unsupported("a big-endian LMDB file".into()),
            _ => damaged!("no LMDB meta page"),
        });
    }
    if u32_at(file, PAGE_HEADER + 4) != Some(VERSION) {
        return Err(Problem::Unsupported(format!(
            "LMDB data version {}",
            u32_at(file, PAGE_HEADER + 4).unwrap_or(0)
        )));
    }
    // The page size is the free database's pad field.
    let page_size = u32_at(file, PAGE_HEADER + 24).unwrap_or(0) as usize;
    if !page_size.is_power_of_two() || !(512..=65536).contains(&page_size) {
        return Err(damaged!("page size {page_size}"));
    }
    if file.len() < 2 * page_size {
        return Err(damaged!("{} bytes hold no second meta page", file.len()));
    }
    let current = match (meta(file, 0, page_size), meta(file, 1, page_size)) {
        (Some(a), Some(b)) => {
            if b.txnid > a.txnid {
                b
            } else {
                a
            }
        }
        (Some(m), None) | (None, Some(m)) => m,
        (None, None) => return Err(damaged!("both meta pages are damaged")),
    };
    if current.flags & DB_DUPS != 0 {
        return Err(Problem::Unsupported(
            "an LMDB database with duplicate keys".into(),
        ));
    }
    let mut walk = Walk {
        file,
        page_size,
        pages: (file.len() / page_size) as u64,
        last_page: current.last_page,
        seen: HashSet::new(),
        records: Vec::new(),
    };
    if current.root != NO_PAGE {
        if current.depth == 0 || current.depth > MAX_DEPTH {
            return Err(damaged!("tree depth {}", current.depth));
        }
        walk.page(current.root, current.depth)?;
    }
    if walk.records.len() as u64 != current.entries {
        return Err(damaged!(
            "{} records found where the meta page says {}",
            walk.records.len(),
            current.entries
        ));
    }
    Ok(walk.records)
}

struct Walk<'a> {
    file: &'a [u8],
    page_size: usize,
    /// Whole pages in the file.
    pages: u64,
    last_page: u64,
    /// Every page reached so far: one reached twice is a damaged tree.
    seen: HashSet<u64>,
    records: Records,
}

impl<'a> Walk<'a> {
    /// The bytes of page `number`, checked to be in the file, reached once, and numbered as
    /// itself; with its flags.
    fn fetch(&mut self, number: u64, count: u64) -> Result<(&'a [u8], u16), Problem> {
        let end = number
            .checked_add(count)
            .filter(|&end| number >= 2 && end <= self.pages && end - 1 <= self.last_page);
        let Some(end) = end else {
            return Err(damaged!("page {number} is outside the file"));
        };
        for n in number..end {
            if !self.seen.insert(n) {
                return Err(damaged!("page {n} is reached twice"));
            }
        }
        let start = number as usize * self.page_size;
        let bytes = &self.file[start..end as usize * self.page_size];
        if u64_at(bytes, 0) != Some(number) {
            return Err(damaged!("page {number} is numbered {:?}", u64_at(bytes, 0)));
        }
        Ok((bytes, u16_at(bytes, 10).unwrap_or(0)))
    }

    /// The node offsets of a branch or leaf page.
    fn nodes(&self, number: u64, page: &[u8]) -> Result<Vec<usize>, Problem> {
        let (lower, upper) = (
            usize::from(u16_at(page, 12).unwrap_or(0)),
            usize::from(u16_at(page, 14).unwrap_or(0)),
        );
        if lower < PAGE_HEADER || lower > upper || upper > self.page_size || lower % 2 != 0 {
            return Err(damaged!("page {number} has bounds {lower}..{upper}"));
        }
        (PAGE_HEADER..lower)
            .step_by(2)
            .map(|at| {
                let offset = usize::from(u16_at(page, at).unwrap_or(0));
                if offset < upper || offset + NODE_HEADER > self.page_size {
                    Err(damaged!("page {number} has a node at {offset}"))
                } else {
                    Ok(offset)
                }
            })
            .collect()
    }

    /// Walks the subtree at page `number`, `depth` levels deep (1: a leaf).
    fn page(&mut self, number: u64, depth: u16) -> Result<(), Problem> {
        let (page, flags) = self.fetch(number, 1)?;
        let nodes = self.nodes(number, page)?;
        match (flags & (P_BRANCH | P_LEAF | P_OVERFLOW | P_LEAF2), depth) {
            (P_BRANCH, 2..) => {
                if nodes.is_empty() {
                    return Err(damaged!("branch page {number} is empty"));
                }
                for node in nodes {
                    let child = u64::from(u16_at(page, node).unwrap_or(0))
                        | u64::from(u16_at(page, node + 2).unwrap_or(0)) << 16
                        | u64::from(u16_at(page, node + 4).unwrap_or(0)) << 32;
                    self.page(child, depth - 1)?;
                }
                Ok(())
            }
            (P_LEAF, 1) => {
                for node in nodes {
                    self.leaf_node(number, page, node)?;
                }
                Ok(())
            }
            (P_LEAF2, _) => Err(Problem::Unsupported(
                "an LMDB database with fixed-size duplicates".into(),
            )),
            (flags, depth) => Err(damaged!(
                "page {number} (flags {flags:#x}) where a page of depth {depth} belongs"
            )),
        }
    }

    fn leaf_node(&mut self, number: u64, page: &'a [u8], node: usize) -> Result<(), Problem> {
        let size = usize::from(u16_at(page, node).unwrap_or(0))
            | usize::from(u16_at(page, node + 2).unwrap_or(0)) << 16;
        let flags = u16_at(page, node + 4).unwrap_or(0);
        let key_size = usize::from(u16_at(page, node + 6).unwrap_or(0));
        if flags & (F_SUBDATA | F_DUPDATA) != 0 {
            return Err(Problem::Unsupported(
                "an LMDB file with sub-databases or duplicates".into(),
            ));
        }
        let key_start = node + NODE_HEADER;
        let key = page
            .get(key_start..key_start + key_size)
            .ok_or_else(|| damaged!("a key runs off page {number}"))?;
        let data_start = key_start + key_size;
        let value = if flags & F_BIGDATA != 0 {
            let overflow = u64_at(page, data_start)
                .filter(|_| data_start + 8 <= self.page_size)
                .ok_or_else(|| damaged!("an overflow pointer runs off page {number}"))?;
            let count = (PAGE_HEADER + size).div_ceil(self.page_size) as u64;
            let (pages, ov_flags) = self.fetch(overflow, count.max(1))?;
            if ov_flags & P_OVERFLOW == 0 || u64::from(u32_at(pages, 12).unwrap_or(0)) < count {
                return Err(damaged!(
                    "page {overflow} is not the overflow its value needs"
                ));
            }
            &pages[PAGE_HEADER..PAGE_HEADER + size]
        } else {
            page.get(data_start..data_start + size)
                .ok_or_else(|| damaged!("a value runs off page {number}"))?
        };
        if let Some((last, _)) = self.records.last() {
            if last.as_slice() >= key {
                return Err(damaged!("keys out of order on page {number}"));
            }
        }
        self.records.push((key.to_vec(), value.to_vec()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sasldb::fixture;

    #[test]
    fn reads_the_fixtures_as_liblmdb_does() {
        for name in ["sasldb2-lmdb", "sasldb2-lmdb-2007users"] {
            let bytes = fixture(name);
            let records = read(&bytes).unwrap();
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/sasldb")
                .join(name);
            // liblmdb's own reading, through its map.
            let lmdb = super::super::lmdb::Lmdb::open(&path, crate::sasldb::OpenMode::ReadOnly)
                .unwrap()
                .records()
                .unwrap();
            let lmdb: Vec<(Vec<u8>, Vec<u8>)> =
                lmdb.into_iter().map(|(k, v)| (k, v.to_vec())).collect();
            assert_eq!(records, lmdb, "{name}");
            assert!(records.len() >= 5, "{name}: {}", records.len());
        }
    }

    #[test]
    fn deep_trees_and_overflow_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasldb2");
        let mut records: Vec<crate::sasldb::Record> = (0..20_000u32)
            .map(|i| {
                let key = format!("user{i:05}\0bulk.example\0userPassword").into_bytes();
                (key, zeroize::Zeroizing::new(format!("pw-{i}").into_bytes()))
            })
            .collect();
        // Values of 3 KiB and 40 KiB go on overflow pages.
        for (i, size) in [(1u32, 3000usize), (2, 40_000)] {
            let key = format!("big{i}\0bulk.example\0authPassword").into_bytes();
            records.push((key, zeroize::Zeroizing::new(vec![b'x' + i as u8; size])));
        }
        records.sort_by(|a, b| a.0.cmp(&b.0));
        crate::sasldb::Store::create(&path, crate::sasldb::Kind::Lmdb, &records, false).unwrap();
        let read_back = read(&std::fs::read(&path).unwrap()).unwrap();
        let want: Vec<(Vec<u8>, Vec<u8>)> =
            records.into_iter().map(|(k, v)| (k, v.to_vec())).collect();
        assert_eq!(read_back.len(), want.len());
        assert!(read_back == want);
    }

    #[test]
    fn damage_is_named_not_followed() {
        let good = fixture("sasldb2-lmdb-2007users");
        // Truncations, and every 4-byte word of the first pages set to garbage.
        let all = read(&good).unwrap();
        for len in [0, 10, 100, 4096, 8192, 8193, good.len() / 2, good.len() - 1] {
            // A cut page may be a free one: then every record is still there.
            match read(&good[..len]) {
                Ok(records) => assert_eq!(records, all, "truncated to {len}"),
                Err(Problem::Damaged(_)) => {}
                Err(other) => panic!("truncated to {len}: {other:?}"),
            }
        }
        assert!(read(&good[..good.len() / 2]).is_err());
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..3000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let mut bad = good.clone();
            let at = (rng as usize) % bad.len().min(64 * 1024);
            bad[at] ^= (rng >> 32) as u8 | 1;
            // Anything but a panic or a hang: an error, or records.
            let _ = read(&bad);
        }
    }
}
