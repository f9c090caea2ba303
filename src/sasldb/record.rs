//! What a sasldb2 file holds and how it is opened, whatever its format: the words the store
//! and each format's code share (so that neither needs the other's module for them).

use zeroize::Zeroizing;

/// How to open a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only (the daemon, `sasldblistusers2-rs`); the file must exist.
    ReadOnly,
    /// Read and write (`saslpasswd2-rs`); the file is created when missing.
    ReadWrite,
}

/// One record's key, as listed by `sasldblistusers2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The raw key bytes.
    pub key: Vec<u8>,
}

/// One record, key and value, as a conversion copies it.
pub type Record = (Vec<u8>, Zeroizing<Vec<u8>>);

/// One change to a file.
pub(crate) enum Change<'a> {
    /// Set a key's value.
    Put(Vec<u8>, &'a [u8]),
    /// Remove a key (not there: nothing to do).
    Delete(Vec<u8>),
}
