//! Berkeley DB hash files (`DB_HASH`, on-disk hash version 9: Berkeley DB 4.2 to 5.3), the
//! sasldb2 format of Debian's and Ubuntu's libsasl2, read and written in Rust.
//!
//! The layout, with every integer in the file's byte order (the magic number tells which):
//!
//! * page 0 is the meta page: page size, the last page number, the bucket masks, and the
//!   `spares` table that maps buckets to pages;
//! * bucket `b` starts on page `b + spares[ceil_log2(b + 1)]`; more pages for the same bucket
//!   are chained by `next_pgno`;
//! * a hash page is a 26-byte header, an index of 16-bit item offsets growing up, and items
//!   growing down from the end of the page, key and data alternating; an item's length is the
//!   distance to the previous item's offset (the page end for the first); its first byte is
//!   its type: on-page bytes, or a reference (page number, length) to a chain of overflow
//!   pages for an item longer than a quarter page;
//! * a key lives in bucket `fnv(key) & high_mask` (or `& low_mask` when that is past
//!   `max_bucket`), where `fnv` is Berkeley DB's `__ham_func5`.
//!
//! The reader trusts nothing: every page number, offset, length and chain is checked, a page
//! reached twice (a loop, or two chains sharing a page) is an error, and nothing is allocated
//! beyond what the file's size can hold. The writer builds a whole new file laid out as
//! Berkeley DB lays out a table it has grown itself, so `db_verify` passes and libsasl2 (and
//! Cyrus's tools, which change files in place) read and change it as their own.

use std::cmp::Ordering;
use std::fmt;

/// What is wrong with a file, for [`SasldbError`](super::SasldbError).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Problem {
    /// A valid file of a kind this reader does not handle (named).
    Unsupported(String),
    /// A damaged or truncated file.
    Damaged(String),
}

macro_rules! damaged {
    ($($arg:tt)*) => { Problem::Damaged(format!($($arg)*)) };
}

/// The byte order of a file's integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    /// Little-endian (x86, arm64: every Debian machine the files come from).
    Little,
    /// Big-endian (s390x, older PowerPC and SPARC).
    Big,
}

impl fmt::Display for Endian {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Endian::Little => "little-endian",
            Endian::Big => "big-endian",
        })
    }
}

/// The shape of a file, kept so that a rewrite keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    /// The byte order.
    pub(super) endian: Endian,
    /// The page size in bytes.
    pub(super) page_size: u32,
}

impl Default for Layout {
    /// What Berkeley DB gives a new file on Debian: native order, 4096-byte pages.
    fn default() -> Self {
        Layout {
            endian: if cfg!(target_endian = "big") {
                Endian::Big
            } else {
                Endian::Little
            },
            page_size: 4096,
        }
    }
}

const HASH_MAGIC: u32 = 0x0006_1561;
const HASH_VERSION: u32 = 9;
/// Smallest page size; also the size of the meta page's fields.
const MIN_PAGE: usize = 512;
const MAX_PAGE: usize = 65536;
const PAGE_HEADER: usize = 26;
const P_HASH_UNSORTED: u8 = 2;
const P_OVERFLOW: u8 = 7;
const P_HASHMETA: u8 = 8;
const P_HASH: u8 = 13;
const H_KEYDATA: u8 = 1;
const H_DUPLICATE: u8 = 2;
const H_OFFPAGE: u8 = 3;
const H_OFFDUP: u8 = 4;
/// An off-page reference: type, 3 bytes of padding, page number, total length.
const OFFPAGE_ITEM: usize = 12;
const NCACHED: usize = 32;
const _: () = assert!(
    M_SPARES + 4 * NCACHED <= MIN_PAGE,
    "the spares fit the meta page"
);
const META_CHECKSUM: u8 = 0x01;
const FLAG_SUBDB: u32 = 0x02;
/// The key Berkeley DB hashes to record which hash function a file uses (with its NUL).
const CHARKEY: &[u8] = b"%$sniglet^&\0";
/// "Not logged": the LSN of every page of a file written without a log, as Cyrus's are.
const LSN_NOT_LOGGED: [u8; 8] = [0, 0, 0, 0, 1, 0, 0, 0];

// Meta page offsets.
const M_PGNO: usize = 8;
const M_MAGIC: usize = 12;
const M_VERSION: usize = 16;
const M_PAGESIZE: usize = 20;
const M_ENCRYPT: usize = 24;
const M_TYPE: usize = 25;
const M_METAFLAGS: usize = 26;
const M_LAST_PGNO: usize = 32;
const M_FLAGS: usize = 48;
const M_UID: usize = 52;
const M_MAX_BUCKET: usize = 72;
const M_HIGH_MASK: usize = 76;
const M_LOW_MASK: usize = 80;
const M_NELEM: usize = 88;
const M_CHARKEY: usize = 92;
const M_SPARES: usize = 96;

// Page header offsets.
const P_PGNO: usize = 8;
const P_PREV: usize = 12;
const P_NEXT: usize = 16;
const P_ENTRIES: usize = 20;
const P_HF_OFFSET: usize = 22;
const P_TYPE: usize = 25;

/// Berkeley DB's default hash (`__ham_func5`, FNV-1 from a zero basis).
pub(super) fn hash(key: &[u8]) -> u32 {
    key.iter()
        .fold(0u32, |h, &b| h.wrapping_mul(16_777_619) ^ u32::from(b))
}

/// `ceil(log2(n))`, Berkeley DB's `__db_log2`.
fn log2_ceil(n: u32) -> usize {
    let mut limit = 1u64;
    let mut i = 0;
    while limit < u64::from(n) {
        limit <<= 1;
        i += 1;
    }
    i
}

/// The order of keys on a hash page: bytes compared up to the shorter length; when one is a
/// prefix of the other, the longer one comes first (`__ham_getindex_sorted`).
fn page_order(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len().min(b.len());
    a[..n].cmp(&b[..n]).then(b.len().cmp(&a.len()))
}

#[derive(Clone, Copy)]
struct Order(Endian);

impl Order {
    fn u16(self, bytes: &[u8], at: usize) -> u16 {
        let b = [bytes[at], bytes[at + 1]];
        match self.0 {
            Endian::Little => u16::from_le_bytes(b),
            Endian::Big => u16::from_be_bytes(b),
        }
    }

    fn u32(self, bytes: &[u8], at: usize) -> u32 {
        let b = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        match self.0 {
            Endian::Little => u32::from_le_bytes(b),
            Endian::Big => u32::from_be_bytes(b),
        }
    }

    fn put_u16(self, bytes: &mut [u8], at: usize, v: u16) {
        bytes[at..at + 2].copy_from_slice(&match self.0 {
            Endian::Little => v.to_le_bytes(),
            Endian::Big => v.to_be_bytes(),
        });
    }

    fn put_u32(self, bytes: &mut [u8], at: usize, v: u32) {
        bytes[at..at + 4].copy_from_slice(&match self.0 {
            Endian::Little => v.to_le_bytes(),
            Endian::Big => v.to_be_bytes(),
        });
    }
}

/// A file's contents: its layout and its records in Berkeley DB's cursor order (bucket by
/// bucket, page by page), the order in which Cyrus's `sasldblistusers2` lists them.
pub(super) struct Contents {
    pub layout: Layout,
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Reader<'a> {
    file: &'a [u8],
    order: Order,
    page_size: usize,
    pages: u32,
    /// Pages already reached, for loop and cross-link detection.
    seen: Vec<bool>,
}

/// Reads every record of a Berkeley DB hash file held in `file`.
pub(super) fn read(file: &[u8]) -> Result<Contents, Problem> {
    if file.len() < MIN_PAGE {
        return Err(damaged!(
            "truncated: {} bytes, less than a Berkeley DB meta page ({MIN_PAGE} bytes)",
            file.len()
        ));
    }
    let raw_magic = [
        file[M_MAGIC],
        file[M_MAGIC + 1],
        file[M_MAGIC + 2],
        file[M_MAGIC + 3],
    ];
    let endian = if u32::from_le_bytes(raw_magic) == HASH_MAGIC {
        Endian::Little
    } else if u32::from_be_bytes(raw_magic) == HASH_MAGIC {
        Endian::Big
    } else {
        return Err(Problem::Unsupported(
            "not a Berkeley DB hash file (sasldb2 files use DB_HASH)".into(),
        ));
    };
    let order = Order(endian);
    let version = order.u32(file, M_VERSION);
    if version != HASH_VERSION {
        return Err(Problem::Unsupported(format!(
            "Berkeley DB hash version {version}; only version {HASH_VERSION} (Berkeley DB 4.2 \
             to 5.3) is read: upgrade it with db_upgrade first"
        )));
    }
    if file[M_TYPE] != P_HASHMETA {
        return Err(damaged!(
            "page 0 is of type {}, not a hash meta page",
            file[M_TYPE]
        ));
    }
    if file[M_ENCRYPT] != 0 {
        return Err(Problem::Unsupported(
            "an encrypted Berkeley DB file (libsasl2 never encrypts sasldb2)".into(),
        ));
    }
    if file[M_METAFLAGS] & META_CHECKSUM != 0 {
        return Err(Problem::Unsupported(
            "a Berkeley DB file with page checksums (libsasl2 never writes them)".into(),
        ));
    }
    let flags = order.u32(file, M_FLAGS);
    if flags & FLAG_SUBDB != 0 {
        return Err(Problem::Unsupported(
            "a Berkeley DB file of several databases (a sasldb2 file holds one)".into(),
        ));
    }
    let page_size = order.u32(file, M_PAGESIZE) as usize;
    if !(MIN_PAGE..=MAX_PAGE).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(damaged!(
            "page size {page_size} is not a power of two from {MIN_PAGE} to {MAX_PAGE}"
        ));
    }
    if !file.len().is_multiple_of(page_size) {
        return Err(damaged!(
            "truncated: {} bytes is not a whole number of {page_size}-byte pages",
            file.len()
        ));
    }
    let pages = u32::try_from(file.len() / page_size)
        .map_err(|_| damaged!("{} bytes is too large for a hash file", file.len()))?;
    let last_pgno = order.u32(file, M_LAST_PGNO);
    if last_pgno >= pages {
        return Err(damaged!(
            "truncated: the meta page counts {} pages, the file holds {pages}",
            u64::from(last_pgno) + 1
        ));
    }
    if order.u32(file, M_PGNO) != 0 {
        return Err(damaged!("the meta page is not page 0"));
    }
    if order.u32(file, M_CHARKEY) != hash(CHARKEY) {
        return Err(Problem::Unsupported(
            "a Berkeley DB hash file with a custom hash function (libsasl2 uses the default)"
                .into(),
        ));
    }
    let max_bucket = order.u32(file, M_MAX_BUCKET);
    let high_mask = order.u32(file, M_HIGH_MASK);
    let low_mask = order.u32(file, M_LOW_MASK);
    let want_high = if max_bucket == 0 {
        0
    } else {
        ((1u64 << log2_ceil(max_bucket.saturating_add(1))) - 1) as u32
    };
    if max_bucket >= pages
        || high_mask != want_high
        || (max_bucket != 0 && low_mask != high_mask >> 1)
    {
        return Err(damaged!(
            "the meta page's bucket count ({}) and masks ({high_mask:#x}, {low_mask:#x}) \
             do not agree",
            u64::from(max_bucket) + 1
        ));
    }
    let mut reader = Reader {
        file,
        order,
        page_size,
        pages,
        seen: vec![false; pages as usize],
    };
    reader.seen[0] = true;
    let mut records = Vec::new();
    for bucket in 0..=max_bucket {
        let doubling = log2_ceil(bucket + 1);
        let spare = order.u32(file, M_SPARES + 4 * doubling);
        let first = bucket
            .checked_add(spare)
            .filter(|_| spare != 0)
            .ok_or_else(|| {
                damaged!("bucket {bucket} has no page (spares entry {doubling} is {spare})")
            })?;
        reader.bucket(bucket, first, max_bucket, high_mask, low_mask, &mut records)?;
    }
    Ok(Contents {
        layout: Layout {
            endian,
            page_size: page_size as u32,
        },
        records,
    })
}

impl<'a> Reader<'a> {
    /// Page `pgno`, once: reaching a page a second time is a loop or a cross-link.
    fn page(&mut self, pgno: u32, what: fmt::Arguments<'_>) -> Result<&'a [u8], Problem> {
        if pgno == 0 || pgno >= self.pages {
            return Err(damaged!(
                "{what} points to page {pgno}, past the end of the file ({} pages)",
                self.pages
            ));
        }
        if std::mem::replace(&mut self.seen[pgno as usize], true) {
            return Err(damaged!(
                "{what} leads to page {pgno} a second time (a loop or a cross-linked page)"
            ));
        }
        let start = pgno as usize * self.page_size;
        let file: &'a [u8] = self.file;
        let page = &file[start..start + self.page_size];
        let says = self.order.u32(page, P_PGNO);
        if says != pgno {
            return Err(damaged!("page {pgno} says it is page {says}"));
        }
        Ok(page)
    }

    /// Whether page `pgno` is in the file and was never written: zeros from end to end.
    fn unwritten(&self, pgno: u32) -> bool {
        if pgno == 0 || pgno >= self.pages || self.seen[pgno as usize] {
            return false;
        }
        let start = pgno as usize * self.page_size;
        self.file[start..start + self.page_size]
            .iter()
            .all(|&b| b == 0)
    }

    fn bucket(
        &mut self,
        bucket: u32,
        first: u32,
        max_bucket: u32,
        high_mask: u32,
        low_mask: u32,
        records: &mut Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), Problem> {
        if self.unwritten(first) {
            // A bucket's page that Berkeley DB allocated with the table but never wrote (a
            // one-user file whose key hashed to the other bucket): all zeros, which Berkeley
            // DB reads as an empty bucket, and so do we.
            self.seen[first as usize] = true;
            return Ok(());
        }
        let mut pgno = first;
        while pgno != 0 {
            let page = self.page(pgno, format_args!("bucket {bucket}"))?;
            let (kind, next) = (page[P_TYPE], self.order.u32(page, P_NEXT));
            if kind != P_HASH && kind != P_HASH_UNSORTED {
                return Err(damaged!(
                    "page {pgno} of bucket {bucket} is of type {kind}, not a hash page"
                ));
            }
            let items = self.items(pgno, page)?;
            for pair in items.chunks_exact(2) {
                let key = self.item(pgno, pair[0], "key")?;
                let value = self.item(pgno, pair[1], "value")?;
                let mut home = hash(&key) & high_mask;
                if home > max_bucket {
                    home &= low_mask;
                }
                if home != bucket {
                    return Err(damaged!(
                        "page {pgno}: a key of bucket {bucket} belongs in bucket {home} \
                         (the hash table is damaged)"
                    ));
                }
                records.push((key, value));
            }
            pgno = next;
        }
        Ok(())
    }

    /// The items of a hash page, as (start, end) offsets, all checked.
    fn items(&self, pgno: u32, page: &[u8]) -> Result<Vec<(usize, usize)>, Problem> {
        let entries = self.order.u16(page, P_ENTRIES) as usize;
        let index_end = PAGE_HEADER + 2 * entries;
        if !entries.is_multiple_of(2) || index_end > self.page_size {
            return Err(damaged!(
                "page {pgno}: {entries} entries do not make key/value pairs on a page"
            ));
        }
        let mut items = Vec::with_capacity(entries);
        let mut end = self.page_size;
        for i in 0..entries {
            let start = self.order.u16(page, PAGE_HEADER + 2 * i) as usize;
            if start < index_end || start >= end {
                return Err(damaged!(
                    "page {pgno}: item {i} at offset {start} is outside the page's data"
                ));
            }
            items.push((start, end));
            end = start;
        }
        let mut free_from = self.order.u16(page, P_HF_OFFSET) as usize;
        if free_from == 0 && self.page_size == MAX_PAGE {
            free_from = MAX_PAGE; // an empty 64 KiB page: the offset does not fit 16 bits
        }
        if free_from < index_end || free_from > end {
            return Err(damaged!(
                "page {pgno}: the free space offset {free_from} overlaps the items"
            ));
        }
        Ok(items)
    }

    /// One item's bytes, on the page or from its overflow chain.
    fn item(
        &mut self,
        pgno: u32,
        (start, end): (usize, usize),
        what: &str,
    ) -> Result<Vec<u8>, Problem> {
        let at = pgno as usize * self.page_size;
        let file: &'a [u8] = self.file;
        let item = &file[at + start..at + end];
        match item[0] {
            H_KEYDATA => Ok(item[1..].to_vec()),
            H_OFFPAGE if item.len() == OFFPAGE_ITEM => {
                let first = self.order.u32(item, 4);
                let total = self.order.u32(item, 8);
                self.overflow(pgno, first, total)
            }
            H_OFFPAGE => Err(damaged!(
                "page {pgno}: an off-page {what} reference of {} bytes",
                item.len()
            )),
            H_DUPLICATE | H_OFFDUP => Err(Problem::Unsupported(format!(
                "page {pgno}: duplicate values under one key (a sasldb2 file has one value \
                 per key)"
            ))),
            other => Err(damaged!(
                "page {pgno}: a {what} item of unknown type {other}"
            )),
        }
    }

    fn overflow(&mut self, from: u32, first: u32, total: u32) -> Result<Vec<u8>, Problem> {
        let room = self.page_size - PAGE_HEADER;
        // Never allocate more than the file can hold.
        if u64::from(total) > u64::from(self.pages) * room as u64 {
            return Err(damaged!(
                "page {from}: an item of {total} bytes, more than the file holds"
            ));
        }
        let mut bytes = Vec::with_capacity(total as usize);
        let mut pgno = first;
        loop {
            let page = self.page(pgno, format_args!("the overflow chain from page {from}"))?;
            let len = self.order.u16(page, P_HF_OFFSET) as usize;
            if page[P_TYPE] != P_OVERFLOW {
                return Err(damaged!(
                    "page {pgno}, in the overflow chain from page {from}, is of type {}",
                    page[P_TYPE]
                ));
            }
            if len > room || bytes.len() + len > total as usize {
                return Err(damaged!(
                    "overflow page {pgno} holds {len} bytes, more than its item has left"
                ));
            }
            let next = self.order.u32(page, P_NEXT);
            bytes.extend_from_slice(&page[PAGE_HEADER..PAGE_HEADER + len]);
            if next == 0 {
                break;
            }
            pgno = next;
        }
        if bytes.len() != total as usize {
            return Err(damaged!(
                "page {from}: an item of {total} bytes whose overflow chain holds {}",
                bytes.len()
            ));
        }
        Ok(bytes)
    }
}

/// Lays out `records` as a new Berkeley DB hash file. `uid` is the file's unique id (random:
/// Berkeley DB only needs it unique among the files one process has open).
///
/// Buckets are sized for the records (a power of two, pages about half full, as a table that
/// Berkeley DB grew itself), each bucket's pairs are sorted in Berkeley DB's page order, and a
/// value longer than a quarter page goes to overflow pages, as Berkeley DB does.
pub(super) fn write(
    records: &[(&[u8], &[u8])],
    layout: Layout,
    uid: [u8; 20],
) -> Result<Vec<u8>, Problem> {
    let page_size = layout.page_size as usize;
    if !(MIN_PAGE..=MAX_PAGE).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(Problem::Unsupported(format!("page size {page_size}")));
    }
    let order = Order(layout.endian);
    let big = page_size / 4;
    let room = page_size - PAGE_HEADER;
    let mut on_page = 0usize;
    for (key, value) in records {
        if key.len() > big {
            return Err(Problem::Unsupported(format!(
                "a key of {} bytes; keys longer than {big} bytes are not written",
                key.len()
            )));
        }
        on_page += pair_size(key, value, big);
    }
    // Pages about half full on average, so that hardly any bucket needs a second page.
    let wanted = (on_page / (room / 2) + 1).max(2);
    let buckets = wanted
        .checked_next_power_of_two()
        .filter(|&n| n <= 1 << 30)
        .ok_or_else(|| Problem::Unsupported(format!("{} records", records.len())))?;
    let mask = (buckets - 1) as u32;
    let mut by_bucket: Vec<Vec<(&[u8], &[u8])>> = vec![Vec::new(); buckets];
    for &(key, value) in records {
        by_bucket[(hash(key) & mask) as usize].push((key, value));
    }

    let mut pages = Pages {
        bytes: vec![0u8; (buckets + 1) * page_size],
        page_size,
        order,
    };
    for (bucket, mut pairs) in by_bucket.into_iter().enumerate() {
        pairs.sort_by(|a, b| page_order(a.0, b.0));
        let mut pgno = bucket as u32 + 1;
        pages.init(pgno, 0, P_HASH);
        for (key, value) in pairs {
            if pages.free(pgno) < pair_size(key, value, big) {
                let next = pages.add(pgno, P_HASH);
                order.put_u32(pages.page_mut(pgno), P_NEXT, next);
                pgno = next;
            }
            let data = if value.len() > big {
                let first = pages.overflow(value);
                let mut item = [0u8; OFFPAGE_ITEM];
                item[0] = H_OFFPAGE;
                order.put_u32(&mut item, 4, first);
                order.put_u32(&mut item, 8, value.len() as u32);
                Item::Reference(item)
            } else {
                Item::Bytes(value)
            };
            pages.push_item(pgno, Item::Bytes(key));
            pages.push_item(pgno, data);
        }
    }

    let last_pgno = (pages.bytes.len() / page_size - 1) as u32;
    let meta = &mut pages.bytes[..page_size];
    meta[..8].copy_from_slice(&LSN_NOT_LOGGED);
    order.put_u32(meta, M_MAGIC, HASH_MAGIC);
    order.put_u32(meta, M_VERSION, HASH_VERSION);
    order.put_u32(meta, M_PAGESIZE, layout.page_size);
    meta[M_TYPE] = P_HASHMETA;
    order.put_u32(meta, M_LAST_PGNO, last_pgno);
    meta[M_UID..M_UID + 20].copy_from_slice(&uid);
    order.put_u32(meta, M_MAX_BUCKET, mask);
    order.put_u32(meta, M_HIGH_MASK, mask);
    order.put_u32(meta, M_LOW_MASK, mask >> 1);
    order.put_u32(meta, M_NELEM, records.len() as u32);
    order.put_u32(meta, M_CHARKEY, hash(CHARKEY));
    // Every doubling up to the table's size starts right after the meta page.
    for doubling in 0..=log2_ceil(buckets as u32) {
        order.put_u32(meta, M_SPARES + 4 * doubling, 1);
    }
    Ok(pages.bytes)
}

/// The room a pair takes on a hash page: each item, its type byte and its index slot.
fn pair_size(key: &[u8], value: &[u8], big: usize) -> usize {
    let value_size = if value.len() > big {
        OFFPAGE_ITEM
    } else {
        value.len() + 1
    };
    key.len() + 1 + value_size + 4
}

enum Item<'a> {
    Bytes(&'a [u8]),
    Reference([u8; OFFPAGE_ITEM]),
}

struct Pages {
    bytes: Vec<u8>,
    page_size: usize,
    order: Order,
}

impl Pages {
    fn page_mut(&mut self, pgno: u32) -> &mut [u8] {
        let start = pgno as usize * self.page_size;
        &mut self.bytes[start..start + self.page_size]
    }

    fn init(&mut self, pgno: u32, prev: u32, kind: u8) {
        let (order, page_size) = (self.order, self.page_size as u16);
        let page = self.page_mut(pgno);
        page[..8].copy_from_slice(&LSN_NOT_LOGGED);
        order.put_u32(page, P_PGNO, pgno);
        order.put_u32(page, P_PREV, prev);
        // A 65536-byte page stores its empty free-space offset as 0, as Berkeley DB does.
        order.put_u16(page, P_HF_OFFSET, page_size);
        page[P_TYPE] = kind;
    }

    /// A new page at the end of the file.
    fn add(&mut self, prev: u32, kind: u8) -> u32 {
        let pgno = (self.bytes.len() / self.page_size) as u32;
        self.bytes.resize(self.bytes.len() + self.page_size, 0);
        self.init(pgno, prev, kind);
        pgno
    }

    fn entries(&self, pgno: u32) -> usize {
        let start = pgno as usize * self.page_size;
        self.order.u16(&self.bytes[start..], P_ENTRIES) as usize
    }

    /// Where the lowest item starts (the page end when there is none).
    fn low(&self, pgno: u32) -> usize {
        let entries = self.entries(pgno);
        if entries == 0 {
            return self.page_size;
        }
        let start = pgno as usize * self.page_size;
        self.order
            .u16(&self.bytes[start..], PAGE_HEADER + 2 * (entries - 1)) as usize
    }

    fn free(&self, pgno: u32) -> usize {
        self.low(pgno) - PAGE_HEADER - 2 * self.entries(pgno)
    }

    fn push_item(&mut self, pgno: u32, item: Item<'_>) {
        let (entries, low, order) = (self.entries(pgno), self.low(pgno), self.order);
        let len = match &item {
            Item::Bytes(bytes) => bytes.len() + 1,
            Item::Reference(r) => r.len(),
        };
        let at = low - len;
        let page = self.page_mut(pgno);
        match item {
            Item::Bytes(bytes) => {
                page[at] = H_KEYDATA;
                page[at + 1..low].copy_from_slice(bytes);
            }
            Item::Reference(r) => page[at..low].copy_from_slice(&r),
        }
        order.put_u16(page, PAGE_HEADER + 2 * entries, at as u16);
        order.put_u16(page, P_ENTRIES, entries as u16 + 1);
        order.put_u16(page, P_HF_OFFSET, at as u16);
    }

    /// Writes `value` to a new chain of overflow pages; returns the first page.
    fn overflow(&mut self, value: &[u8]) -> u32 {
        let room = self.page_size - PAGE_HEADER;
        let order = self.order;
        let mut first = 0;
        let mut prev = 0;
        for chunk in value.chunks(room) {
            let pgno = self.add(prev, P_OVERFLOW);
            if prev == 0 {
                first = pgno;
            } else {
                order.put_u32(self.page_mut(prev), P_NEXT, pgno);
            }
            let page = self.page_mut(pgno);
            order.put_u16(page, P_ENTRIES, 1); // the reference count
            order.put_u16(page, P_HF_OFFSET, chunk.len() as u16);
            page[PAGE_HEADER..PAGE_HEADER + chunk.len()].copy_from_slice(chunk);
            prev = pgno;
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sasldb::fixture;

    #[test]
    fn the_hash_is_berkeley_dbs() {
        // The value every Berkeley DB 4.2+ hash file records in its meta page.
        assert_eq!(hash(CHARKEY), 0x5e68_8dd1);
        let file = fixture("sasldb2-bdb-hash");
        assert_eq!(Order(Endian::Little).u32(&file, M_CHARKEY), hash(CHARKEY));
    }

    #[test]
    fn reads_the_cyrus_fixture_in_cursor_order() {
        let contents = read(&fixture("sasldb2-bdb-hash")).unwrap();
        assert_eq!(
            contents.layout,
            Layout {
                endian: Endian::Little,
                page_size: 4096
            }
        );
        let users: Vec<String> = contents
            .records
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k.split(|&b| b == 0).next().unwrap()).into())
            .collect();
        // Cyrus's sasldblistusers2 lists them in this order.
        assert_eq!(
            users,
            [
                "alice",
                "alice",
                "dave.o-brien",
                "eve",
                "bob",
                "carol",
                "longpw"
            ]
        );
        let longpw = &contents.records[6];
        assert_eq!(longpw.0, b"longpw\0example.org\0userPassword");
        assert_eq!(longpw.1, vec![b'L'; 1500], "the off-page value");
        let big = read(&fixture("sasldb2-bdb-hash-2007users")).unwrap();
        assert_eq!(big.records.len(), 2007);
        assert!(big
            .records
            .iter()
            .any(|(k, v)| k == b"user1999\0bulk.example\0userPassword" && v == b"pw-1999"));
    }

    fn sample(n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut records: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
            .map(|i| {
                (
                    format!("user{i}\0bulk.example\0userPassword").into_bytes(),
                    format!("pw-{i}").into_bytes(),
                )
            })
            .collect();
        records.push((b"big\0r\0userPassword".to_vec(), vec![7u8; 9000]));
        records.push((b"edge\0r\0userPassword".to_vec(), vec![1u8; 1024]));
        records.push((b"edge\0r\0userPasswordX".to_vec(), vec![2u8; 1025]));
        records
    }

    #[test]
    fn what_it_writes_it_reads_back_in_both_byte_orders() {
        for endian in [Endian::Little, Endian::Big] {
            for n in [0, 1, 7, 300, 5000] {
                let records = sample(n);
                let borrowed: Vec<(&[u8], &[u8])> =
                    records.iter().map(|(k, v)| (&k[..], &v[..])).collect();
                let layout = Layout {
                    endian,
                    page_size: 4096,
                };
                let file = write(&borrowed, layout, [9; 20]).unwrap();
                let back = read(&file).unwrap();
                assert_eq!(back.layout, layout);
                let mut want = records.clone();
                let mut got = back.records;
                want.sort();
                got.sort();
                assert_eq!(got, want, "{endian} {n}");
            }
        }
    }

    /// Berkeley DB's own tools accept what we write in either byte order (skipped where
    /// db5.3-util is not installed; the test suite installs it).
    #[test]
    fn berkeley_dbs_tools_verify_and_dump_what_it_writes() {
        let (verify, dump) = ("/usr/bin/db5.3_verify", "/usr/bin/db5.3_dump");
        if !std::path::Path::new(verify).exists() {
            eprintln!("SKIPPED: db5.3-util is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for endian in [Endian::Little, Endian::Big] {
            let records = sample(3000);
            let borrowed: Vec<(&[u8], &[u8])> =
                records.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            let layout = Layout {
                endian,
                page_size: 4096,
            };
            let path = dir.path().join(format!("{endian}"));
            std::fs::write(&path, write(&borrowed, layout, [3; 20]).unwrap()).unwrap();
            let out = std::process::Command::new(verify)
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{endian}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let out = std::process::Command::new(dump)
                .arg(&path)
                .output()
                .unwrap();
            assert!(out.status.success());
            let text = String::from_utf8(out.stdout).unwrap();
            let data_lines = text
                .lines()
                .skip_while(|l| *l != "HEADER=END")
                .skip(1)
                .take_while(|l| *l != "DATA=END")
                .count();
            assert_eq!(data_lines, 2 * records.len(), "{endian}");
        }
    }

    #[test]
    fn pages_are_sorted_longer_key_first_on_a_tie() {
        assert_eq!(page_order(b"ab", b"abc"), Ordering::Greater);
        assert_eq!(page_order(b"abc", b"abd"), Ordering::Less);
        assert_eq!(page_order(b"abc", b"abc"), Ordering::Equal);
    }

    #[test]
    fn damage_is_named_not_panicked_on() {
        let good = fixture("sasldb2-bdb-hash");
        let problem = |bytes: &[u8]| read(bytes).err().unwrap();
        assert!(matches!(problem(&good[..100]), Problem::Damaged(m) if m.contains("truncated")));
        assert!(
            matches!(problem(&good[..4096 * 3]), Problem::Damaged(m) if m.contains("truncated"))
        );

        // An overflow chain that points at itself.
        let mut looped = good.clone();
        Order(Endian::Little).put_u32(&mut looped[3 * 4096..], P_NEXT, 3);
        assert!(
            matches!(problem(&looped), Problem::Damaged(m) if m.contains("second time")),
            "{:?}",
            problem(&looped)
        );
        // A bucket chained to a page past the end.
        let mut past = good.clone();
        Order(Endian::Little).put_u32(&mut past[4096..], P_NEXT, 99);
        assert!(matches!(problem(&past), Problem::Damaged(m) if m.contains("past the end")));
        // An item offset inside the index.
        let mut offset = good.clone();
        Order(Endian::Little).put_u16(&mut offset[4096..], PAGE_HEADER, 3);
        assert!(matches!(problem(&offset), Problem::Damaged(m) if m.contains("outside")));
        // A btree file is named.
        let mut btree = good.clone();
        Order(Endian::Little).put_u32(&mut btree, M_MAGIC, 0x0005_3162);
        assert!(matches!(problem(&btree), Problem::Unsupported(_)));
    }
}
