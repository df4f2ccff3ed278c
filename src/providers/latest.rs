//! [`Latest`]: the last few results a thread worked out from a request's text, kept for the next
//! call that brings the same text (an agent declares the same tools on every call), the most
//! recently used first.

use std::collections::VecDeque;

/// Up to `cap` keys with their values, the most recently used first.
pub(super) struct Latest<K, V> {
    kept: VecDeque<(K, V)>,
    cap: usize,
}

impl<K, V> Latest<K, V> {
    /// Empty, keeping at most `cap` (at least one).
    pub(super) const fn new(cap: usize) -> Self {
        Self {
            kept: VecDeque::new(),
            cap,
        }
    }

    /// The value of the first key `hit` accepts, moved to the front.
    pub(super) fn get(&mut self, hit: impl Fn(&K) -> bool) -> Option<&V> {
        let i = self.kept.iter().position(|(k, _)| hit(k))?;
        let entry = self.kept.remove(i)?;
        self.kept.push_front(entry);
        self.kept.front().map(|(_, v)| v)
    }

    /// Keep `value` under `key` in front; the least recently used goes past `cap`.
    pub(super) fn put(&mut self, key: K, value: V) {
        self.kept.truncate(self.cap.saturating_sub(1));
        self.kept.push_front((key, value));
    }

    /// How many are kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.kept.len()
    }
}
