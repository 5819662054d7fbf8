//! A map with a hard cap on its entries, for per-source and per-account counters that an
//! attacker can make arbitrarily many of.
//!
//! Two generations: entries are written to the young one; when it holds half the cap it
//! becomes the old one and the previous old generation is handed back to the caller
//! (which may still have to account for what it held). Reads look in both, so an entry
//! touched within the last half-cap of writes is never lost, and eviction is O(1)
//! amortised instead of a scan for the oldest entry.

use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug)]
pub(crate) struct BoundedMap<K, V> {
    half: usize,
    young: HashMap<K, V>,
    old: HashMap<K, V>,
}

impl<K: Eq + Hash, V> BoundedMap<K, V> {
    /// At most `cap` entries (at least 2).
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            half: (cap / 2).max(1),
            young: HashMap::new(),
            old: HashMap::new(),
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.young.get(key).or_else(|| self.old.get(key))
    }

    /// Takes the entry out (to be put back with [`BoundedMap::insert`]).
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        self.young.remove(key).or_else(|| self.old.remove(key))
    }

    /// Inserts (as the most recent entry); returns the entries evicted to make room.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Vec<(K, V)> {
        self.old.remove(&key);
        self.young.insert(key, value);
        if self.young.len() < self.half {
            return Vec::new();
        }
        let young = std::mem::take(&mut self.young);
        std::mem::replace(&mut self.old, young)
            .into_iter()
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Removes and returns every entry for which `take` holds.
    pub(crate) fn extract_if(&mut self, mut take: impl FnMut(&K, &mut V) -> bool) -> Vec<(K, V)>
    where
        K: Clone,
    {
        let mut out = Vec::new();
        for map in [&mut self.young, &mut self.old] {
            let keys: Vec<K> = map
                .iter_mut()
                .filter_map(|(k, v)| take(k, v).then(|| k.clone()))
                .collect();
            for k in keys {
                if let Some(v) = map.remove(&k) {
                    out.push((k, v));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_holds_more_than_the_cap_and_keeps_recent_entries() {
        let mut m = BoundedMap::new(100);
        let mut evicted = 0;
        for i in 0..10_000u32 {
            evicted += m.insert(i, i).len();
            assert!(m.len() <= 100);
            assert_eq!(m.get(&i), Some(&i));
        }
        assert_eq!(
            evicted + m.len(),
            10_000,
            "every dropped entry is handed back"
        );
        assert_eq!(m.get(&9_999), Some(&9_999));
        assert_eq!(m.get(&0), None);
    }
}
