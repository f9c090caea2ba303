//! One small bounded map with a time to live, for everything the driver remembers: recent
//! successes (the credential cache), clients' failures (the penalty) and derived SCRAM keys.
//! An entry lives `ttl` from its last insert; when the map is full the oldest entries make room,
//! one at a time — never all of them, so a flood of new keys cannot wipe what the map knew.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A map of at most `capacity` live entries, oldest evicted first.
pub(crate) struct BoundedMap<K, V> {
    capacity: usize,
    ttl: Duration,
    entries: HashMap<K, Slot<V>>,
    /// Insertion order: sequence number → key, oldest first.
    order: BTreeMap<u64, K>,
    next: u64,
}

struct Slot<V> {
    value: V,
    stamp: Instant,
    seq: u64,
}

impl<K: Hash + Eq + Clone, V> BoundedMap<K, V> {
    /// An empty map (`capacity` is at least 1).
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        BoundedMap {
            capacity: capacity.max(1),
            ttl,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
        }
    }

    fn live(&self, slot: &Slot<V>, now: Instant) -> bool {
        now.saturating_duration_since(slot.stamp) < self.ttl
    }

    /// The value of `key`, unless it has expired.
    pub(crate) fn get(&self, key: &K, now: Instant) -> Option<&V> {
        self.entries
            .get(key)
            .filter(|slot| self.live(slot, now))
            .map(|slot| &slot.value)
    }

    /// Inserts or replaces `key`, which becomes the newest entry. Expired entries go first;
    /// then, while the map is full, the oldest.
    pub(crate) fn insert(&mut self, key: K, value: V, now: Instant) {
        if let Some(old) = self.entries.remove(&key) {
            self.order.remove(&old.seq);
        }
        while let Some((&seq, oldest)) = self.order.first_key_value() {
            let expired = self.entries.get(oldest).is_none_or(|s| !self.live(s, now));
            if !expired && self.entries.len() < self.capacity {
                break;
            }
            if let Some(key) = self.order.remove(&seq) {
                self.entries.remove(&key);
            }
        }
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, key.clone());
        self.entries.insert(
            key,
            Slot {
                value,
                stamp: now,
                seq,
            },
        );
    }

    /// Removes `key`.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let slot = self.entries.remove(key)?;
        self.order.remove(&slot.seq);
        Some(slot.value)
    }

    /// How many entries are held (expired ones included until they are evicted).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Removes the entries `drop` says, returning how many (for an administrator's flush).
    pub(crate) fn remove_where(&mut self, mut drop: impl FnMut(&K, &V) -> bool) -> usize {
        let gone: Vec<(K, u64)> = self
            .entries
            .iter()
            .filter(|(k, slot)| drop(k, &slot.value))
            .map(|(k, slot)| (k.clone(), slot.seq))
            .collect();
        for (key, seq) in &gone {
            self.entries.remove(key);
            self.order.remove(seq);
        }
        gone.len()
    }

    /// The entries that have not expired, with how long ago each was last written.
    pub(crate) fn live_entries(&self, now: Instant) -> Vec<(&K, &V, Duration)> {
        self.entries
            .iter()
            .filter(|(_, slot)| self.live(slot, now))
            .map(|(k, slot)| (k, &slot.value, now.saturating_duration_since(slot.stamp)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn full_maps_drop_the_oldest_one_at_a_time() {
        let t0 = Instant::now();
        let mut map = BoundedMap::new(3, MINUTE);
        for i in 0..3 {
            map.insert(i, i * 10, t0);
        }
        map.insert(3, 30, t0);
        assert_eq!(map.len(), 3);
        assert_eq!(map.get(&0, t0), None, "the oldest made room");
        assert_eq!(map.get(&1, t0), Some(&10));
        // Replacing refreshes: 1 becomes the newest, so 2 goes next.
        map.insert(1, 11, t0);
        map.insert(4, 40, t0);
        assert_eq!(map.get(&2, t0), None);
        assert_eq!(map.get(&1, t0), Some(&11));
        assert_eq!(map.get(&3, t0), Some(&30));
        assert_eq!(map.remove(&3), Some(30));
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn entries_expire() {
        let t0 = Instant::now();
        let mut map = BoundedMap::new(10, MINUTE);
        map.insert("a", 1, t0);
        map.insert("b", 2, t0 + Duration::from_secs(30));
        assert_eq!(map.get(&"a", t0 + Duration::from_secs(59)), Some(&1));
        assert_eq!(map.get(&"a", t0 + MINUTE), None);
        // An insert sweeps the expired entries at the old end.
        map.insert("c", 3, t0 + MINUTE);
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(&"b", t0 + MINUTE), Some(&2));
    }

    #[test]
    fn a_flood_of_new_keys_never_empties_the_map() {
        let t0 = Instant::now();
        let mut map = BoundedMap::new(1000, MINUTE);
        for i in 0..100_000u32 {
            map.insert(i, (), t0);
            assert!(map.len() <= 1000);
        }
        assert_eq!(map.len(), 1000);
        assert!(map.get(&99_999, t0).is_some() && map.get(&99_000, t0).is_some());
    }
}
