//! The credential cache (`-c`): remembers recent successful checks so that an expensive
//! backend (a yescrypt hash, a PAM stack) is not asked again for the same password. The driver
//! owns it and hands it to the passdb as a [`SuccessCache`].
//!
//! Better than Cyrus's in three ways:
//! - nothing stored is a password or an unsalted digest: a slot is HMAC-SHA-256 of what
//!   identifies the check, and its verifier is HMAC-SHA-256 of the password, both under a
//!   random key made when the process starts, so a memory dump reveals nothing reusable;
//! - passdbs put what would make an old password invalid into the slot itself (the shadow
//!   passdb puts the current hash string there), so a password change misses at once;
//! - entries live `ttl` (default 60 s), not 8 hours, and only successes are stored.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::bounded::BoundedMap;
use crate::verdict::SuccessCache;

type Digest = [u8; 32];

/// A bounded map of recent successes.
pub struct Cache {
    key: Zeroizing<[u8; 32]>,
    ttl: Duration,
    /// Slot → (verifier, the user's tag), the tag for [`Cache::flush`].
    entries: Mutex<BoundedMap<Digest, (Digest, Digest)>>,
}

/// The cache as one user's check sees it: what it inserts carries the user's tag.
pub struct UserCache {
    cache: Arc<Cache>,
    tag: Digest,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// About what one entry costs (two digests, an instant, the maps' overhead).
const ENTRY_BYTES: u64 = 128;

impl Cache {
    /// A cache whose entries live `ttl`, holding about `size_kb` KiB (Cyrus's `-s`).
    pub fn new(ttl: Duration, size_kb: u64) -> Cache {
        let max_entries =
            usize::try_from((size_kb * 1024 / ENTRY_BYTES).max(16)).unwrap_or(usize::MAX);
        Cache {
            key: Zeroizing::new(crate::secret::random_bytes()),
            ttl,
            entries: Mutex::new(BoundedMap::new(max_entries, ttl)),
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> Digest {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key[..])
            .expect("HMAC takes any key length");
        for part in parts {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BoundedMap<Digest, (Digest, Digest)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tag of a user: the login without its `@realm`, so that a flush of `alice` reaches
    /// her entries in every realm.
    fn tag(&self, login: &[u8]) -> Digest {
        let local = login.split(|&b| b == b'@').next().unwrap_or_default();
        self.mac(&[b"user", local])
    }

    /// The cache for checks of `login`'s password.
    pub fn for_user(self: &Arc<Self>, login: &[u8]) -> UserCache {
        UserCache {
            cache: Arc::clone(self),
            tag: self.tag(login),
        }
    }

    /// Drops every entry, or `login`'s only (any realm); returns how many went.
    pub fn flush(&self, login: Option<&[u8]>) -> usize {
        let tag = login.map(|l| self.tag(l));
        self.entries()
            .remove_where(|_, (_, t)| tag.is_none_or(|tag| bool::from(t.ct_eq(&tag))))
    }

    /// How many entries are held (expired ones until they are evicted).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SuccessCache for UserCache {
    fn hit(&self, slot: &[&[u8]], password: &[u8], now: Instant) -> bool {
        let slot = self.cache.mac(slot);
        let verifier = self.cache.mac(&[&slot, password]);
        match self.cache.entries().get(&slot, now) {
            Some((stored, _)) => bool::from(stored.ct_eq(&verifier)),
            None => false,
        }
    }

    fn insert(&self, slot: &[&[u8]], password: &[u8], now: Instant) {
        let slot = self.cache.mac(slot);
        let verifier = self.cache.mac(&[&slot, password]);
        self.cache.entries().insert(slot, (verifier, self.tag), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_only_the_same_password_within_the_ttl() {
        let whole = Arc::new(Cache::new(Duration::from_secs(60), 64));
        let cache = whole.for_user(b"alice");
        let t0 = Instant::now();
        let slot: &[&[u8]] = &[b"pam", b"smtp", b"alice"];
        assert!(!cache.hit(slot, b"secret", t0));
        cache.insert(slot, b"secret", t0);
        assert!(cache.hit(slot, b"secret", t0 + Duration::from_secs(59)));
        assert!(!cache.hit(slot, b"Secret", t0));
        assert!(
            !cache.hit(&[b"pam", b"imap", b"alice"], b"secret", t0),
            "another service"
        );
        assert!(
            !cache.hit(slot, b"secret", t0 + Duration::from_secs(60)),
            "expired"
        );
        // A new password replaces the old one.
        cache.insert(slot, b"changed", t0);
        assert!(!cache.hit(slot, b"secret", t0));
        assert!(cache.hit(slot, b"changed", t0));
    }

    #[test]
    fn a_flush_drops_one_user_in_every_realm_or_everyone() {
        let whole = Arc::new(Cache::new(Duration::from_secs(60), 64));
        let t0 = Instant::now();
        whole.for_user(b"alice").insert(&[b"a", b"1"], b"pw", t0);
        whole
            .for_user(b"alice@example.org")
            .insert(&[b"a", b"2"], b"pw", t0);
        whole.for_user(b"bob").insert(&[b"b"], b"pw", t0);
        assert_eq!(whole.flush(Some(b"carol")), 0);
        assert_eq!(whole.flush(Some(b"alice")), 2);
        assert!(!whole.for_user(b"alice").hit(&[b"a", b"1"], b"pw", t0));
        assert!(whole.for_user(b"bob").hit(&[b"b"], b"pw", t0));
        assert_eq!(whole.flush(None), 1);
        assert!(whole.is_empty());
    }

    #[test]
    fn parts_are_length_prefixed() {
        let whole = Arc::new(Cache::new(Duration::from_secs(60), 64));
        let cache = whole.for_user(b"alice");
        let t0 = Instant::now();
        cache.insert(&[b"ab", b"c"], b"pw", t0);
        assert!(!cache.hit(&[b"a", b"bc"], b"pw", t0));
    }

    #[test]
    fn size_is_bounded() {
        let whole = Arc::new(Cache::new(Duration::from_secs(60), 1));
        let cache = whole.for_user(b"alice");
        let t0 = Instant::now();
        for i in 0..100u32 {
            cache.insert(
                &[&i.to_be_bytes()],
                b"pw",
                t0 + Duration::from_millis(u64::from(i)),
            );
        }
        assert!(whole.len() <= 16);
        assert!(
            cache.hit(&[&99u32.to_be_bytes()], b"pw", t0 + Duration::from_secs(1)),
            "newest kept"
        );
    }

    #[test]
    fn nothing_stored_is_the_password() {
        let cache = Arc::new(Cache::new(Duration::from_secs(60), 64));
        let t0 = Instant::now();
        cache
            .for_user(b"alice")
            .insert(&[b"alice"], b"hunter2hunter2", t0);
        let slot = cache.mac(&[b"alice"]);
        let entries = cache.entries();
        let (verifier, tag) = entries.get(&slot, t0).unwrap();
        for bytes in [&slot[..], &verifier[..], &tag[..]] {
            assert!(!bytes.windows(7).any(|w| w == b"hunter2"));
        }
    }
}
