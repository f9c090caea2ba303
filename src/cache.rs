//! The credential cache (`-c`): remembers recent successful checks so that an expensive
//! backend (a yescrypt hash, a PAM stack) is not asked again for the same password.
//!
//! Better than Cyrus's in three ways:
//! - nothing stored is a password or an unsalted digest: a slot is HMAC-SHA-256 of what
//!   identifies the check, and its verifier is HMAC-SHA-256 of the password, both under a
//!   random key made when the process starts, so a memory dump reveals nothing reusable;
//! - callers put what would make an old password invalid into the slot itself (the shadow
//!   passdb puts the current hash string there), so a password change misses at once;
//! - entries live `ttl` (default 60 s), not 8 hours, and only successes are stored.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

type Digest = [u8; 32];

/// A bounded map of recent successes.
pub struct Cache {
    key: Zeroizing<[u8; 32]>,
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<Digest, Entry>>,
}

struct Entry {
    verifier: Digest,
    created: Instant,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("ttl", &self.ttl)
            .field("max_entries", &self.max_entries)
            .finish()
    }
}

/// About what one entry costs (two digests, an instant, the map's overhead).
const ENTRY_BYTES: u64 = 128;

impl Cache {
    /// A cache whose entries live `ttl`, holding about `size_kb` KiB (Cyrus's `-s`).
    pub fn new(ttl: Duration, size_kb: u64) -> Cache {
        let mut key = Zeroizing::new([0u8; 32]);
        crate::random::fill(&mut key[..]);
        let max_entries =
            usize::try_from((size_kb * 1024 / ENTRY_BYTES).max(16)).unwrap_or(usize::MAX);
        Cache {
            key,
            ttl,
            max_entries,
            entries: Mutex::new(HashMap::new()),
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

    /// Whether `password` succeeded for the check named by `slot` within the TTL.
    pub fn hit(&self, slot: &[&[u8]], password: &[u8], now: Instant) -> bool {
        let slot = self.mac(slot);
        let verifier = self.mac(&[&slot, password]);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&slot) {
            Some(entry) if now.saturating_duration_since(entry.created) < self.ttl => {
                bool::from(entry.verifier.ct_eq(&verifier))
            }
            _ => false,
        }
    }

    /// Records a success; replaces what the slot held (an older password).
    pub fn insert(&self, slot: &[&[u8]], password: &[u8], now: Instant) {
        let slot = self.mac(slot);
        let verifier = self.mac(&[&slot, password]);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.max_entries && !entries.contains_key(&slot) {
            let ttl = self.ttl;
            entries.retain(|_, e| now.saturating_duration_since(e.created) < ttl);
            if entries.len() >= self.max_entries {
                // Still full of live entries: drop the oldest.
                if let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.created)
                    .map(|(k, _)| *k)
                {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(
            slot,
            Entry {
                verifier,
                created: now,
            },
        );
    }

    /// Forgets a slot (its backend said no).
    pub fn forget(&self, slot: &[&[u8]]) {
        let slot = self.mac(slot);
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&slot);
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_only_the_same_password_within_the_ttl() {
        let cache = Cache::new(Duration::from_secs(60), 64);
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
        cache.forget(slot);
        assert!(!cache.hit(slot, b"changed", t0));
    }

    #[test]
    fn parts_are_length_prefixed() {
        let cache = Cache::new(Duration::from_secs(60), 64);
        let t0 = Instant::now();
        cache.insert(&[b"ab", b"c"], b"pw", t0);
        assert!(!cache.hit(&[b"a", b"bc"], b"pw", t0));
    }

    #[test]
    fn size_is_bounded() {
        let cache = Cache::new(Duration::from_secs(60), 1);
        let t0 = Instant::now();
        for i in 0..100u32 {
            cache.insert(
                &[&i.to_be_bytes()],
                b"pw",
                t0 + Duration::from_millis(u64::from(i)),
            );
        }
        assert!(cache.len() <= 16);
        assert!(
            cache.hit(&[&99u32.to_be_bytes()], b"pw", t0 + Duration::from_secs(1)),
            "newest kept"
        );
    }

    #[test]
    fn nothing_stored_is_the_password() {
        let cache = Cache::new(Duration::from_secs(60), 64);
        cache.insert(&[b"alice"], b"hunter2hunter2", Instant::now());
        let entries = cache.entries.lock().unwrap();
        for (slot, entry) in entries.iter() {
            for bytes in [&slot[..], &entry.verifier[..]] {
                assert!(!bytes.windows(7).any(|w| w == b"hunter2"));
            }
        }
    }
}
