//! [`Near`]: which scope instances a shared store last showed near a limit, so their next call
//! skips the optimistic reservation that would come back asking for the estimate.
//!
//! Admission first reserves from the input's parse-free upper bound; near a limit that bound
//! does not fit and the store answers "need the estimate", so a call there costs two store
//! round trips. A session near its limit stays near it, so after the first such answer (or a
//! settlement that leaves less than the call's optimistic want) its calls tokenize first and
//! reserve once. Only a hint: the store still decides every call; a wrong hint costs one
//! tokenization or one round trip, never a wrong admission. Bounded: a fixed table of key
//! fingerprints, written without locks, where a colliding key only overwrites another's hint.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots in the table (a power of two).
const SLOTS: usize = 4096;

/// Keys last seen near a limit, by fingerprint.
pub struct Near {
    slots: Box<[AtomicU64]>,
    /// Seeded per process: which keys collide cannot be chosen by a client.
    hasher: foldhash::fast::RandomState,
}

// === impl Near ===

impl Near {
    /// An empty table (every key not near).
    pub fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The slot of `key` and its fingerprint there (never 0, which marks an empty slot).
    fn at(&self, key: &str) -> (&AtomicU64, u64) {
        let h = self.hasher.hash_one(key);
        (&self.slots[h as usize & (SLOTS - 1)], h | 1)
    }

    /// Whether `key` was last seen near a limit.
    pub fn is_near(&self, key: &str) -> bool {
        let (slot, fp) = self.at(key);
        slot.load(Ordering::Relaxed) == fp
    }

    /// Note whether `key` is near a limit.
    pub fn set(&self, key: &str, near: bool) {
        let (slot, fp) = self.at(key);
        if near {
            slot.store(fp, Ordering::Relaxed);
        } else {
            // Only its own mark: another key's in the same slot stays.
            let _ = slot.compare_exchange(fp, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

impl Default for Near {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_per_key_and_cleared_only_by_their_own_key() {
        let n = Near::new();
        assert!(!n.is_near("s:a"));
        n.set("s:a", true);
        assert!(n.is_near("s:a"));
        assert!(!n.is_near("s:b"));
        n.set("s:b", false);
        assert!(n.is_near("s:a"), "another key's clear leaves the mark");
        n.set("s:a", false);
        assert!(!n.is_near("s:a"));
    }

    #[test]
    fn many_keys_stay_within_the_table() {
        let n = Near::new();
        for i in 0..100_000 {
            n.set(&format!("s:{i}"), true);
        }
        assert_eq!(n.slots.len(), SLOTS);
        // The last key written to its slot holds it.
        assert!(n.is_near("s:99999"));
    }
}
