//! [`Handles`]: one metric's handles kept by the values of its traffic-derived labels, for the
//! recording sites that record on every call outside [`CallSeries`](super::call_series).
//!
//! A `counter!` / `gauge!` / `histogram!` with a label builds its [`Key`] (a label vector, a
//! clone of each value, a hash) and asks the recorder for the handle: ~600–700 instructions,
//! where a toy request makes four such recordings (policy violations, the context-utilization
//! sample, the budget ratio, the cost). Here the handle is found by the label values themselves
//! (a shared string's hash and comparison). A handle the series cap folded into `other` is not
//! kept, so every folded recording is still counted; at most [`HANDLE_CACHE_CAP`] are kept,
//! past that labels resolve per recording as before.

use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use metrics::{Counter, Gauge, Histogram, Key, Level, Metadata};

use super::metrics::recorder;
use super::series::HANDLE_CACHE_CAP;

static META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// One metric's handles by label values `K` (seeded foldhash: the values come from traffic).
pub struct Handles<K, H> {
    kept: DashMap<K, H, foldhash::fast::RandomState>,
    /// Handles kept: `DashMap::len` locks every shard, and folded label sets miss every time.
    len: AtomicUsize,
}

impl<K: Hash + Eq + Clone, H: Clone> Default for Handles<K, H> {
    fn default() -> Self {
        Self {
            kept: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            len: AtomicUsize::new(0),
        }
    }
}

impl<K: Hash + Eq + Clone, H: Clone> Handles<K, H> {
    /// The handle kept for `values`, or `resolve`'s (the handle, and whether it may be kept),
    /// kept when it may and there is room.
    fn get(&self, values: &K, resolve: impl FnOnce() -> (H, bool)) -> H {
        if let Some(h) = self.kept.get(values) {
            return h.clone();
        }
        let (h, keep) = resolve();
        // Racing first uses may pass the cap by the number racing: a bound all the same.
        if keep
            && self.len.load(Ordering::Relaxed) < HANDLE_CACHE_CAP
            && self.kept.insert(values.clone(), h.clone()).is_none()
        {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        h
    }

    /// Handles kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.len()
    }
}

impl<K: Hash + Eq + Clone> Handles<K, Counter> {
    /// The counter of `values`; `key` builds its key when it is not kept.
    pub fn counter(&self, values: &K, key: impl FnOnce() -> Key) -> Counter {
        self.get(values, || {
            let key = key();
            match recorder() {
                Some(r) => r.counter(&key, &META),
                None => (
                    metrics::with_recorder(|r| r.register_counter(&key, &META)),
                    false,
                ),
            }
        })
    }
}

impl<K: Hash + Eq + Clone> Handles<K, Gauge> {
    /// The gauge of `values`; `key` builds its key when it is not kept.
    pub fn gauge(&self, values: &K, key: impl FnOnce() -> Key) -> Gauge {
        self.get(values, || {
            let key = key();
            match recorder() {
                Some(r) => r.gauge(&key, &META),
                None => (
                    metrics::with_recorder(|r| r.register_gauge(&key, &META)),
                    false,
                ),
            }
        })
    }
}

impl<K: Hash + Eq + Clone> Handles<K, Histogram> {
    /// The histogram of `values`; `key` builds its key when it is not kept.
    pub fn histogram(&self, values: &K, key: impl FnOnce() -> Key) -> Histogram {
        self.get(values, || {
            let key = key();
            match recorder() {
                Some(r) => r.histogram(&key, &META),
                None => (
                    metrics::with_recorder(|r| r.register_histogram(&key, &META)),
                    false,
                ),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use metrics::Label;

    use super::*;
    use crate::telemetry::metrics as m;

    fn key(agent: &Arc<str>) -> Key {
        Key::from_parts(
            "tokenwarden_handles_test_total",
            vec![Label::new("agent", agent.clone())],
        )
    }

    #[test]
    fn a_kept_handle_records_into_the_series_its_labels_name() {
        let handle = m::install();
        let handles: Handles<Arc<str>, Counter> = Handles::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("handles-a"), Arc::from("handles-b"));
        for _ in 0..3 {
            handles.counter(&a, || key(&a)).increment(1);
        }
        handles.counter(&b, || key(&b)).increment(5);
        assert_eq!(handles.len(), 2, "one handle per label value");
        let text = handle.render();
        for want in [
            "tokenwarden_handles_test_total{agent=\"handles-a\"} 3",
            "tokenwarden_handles_test_total{agent=\"handles-b\"} 5",
        ] {
            assert!(text.contains(want), "{want}");
        }
    }

    #[test]
    fn folded_label_sets_are_not_kept() {
        let handles: Handles<u32, Counter> = Handles::default();
        let mut resolved = 0;
        for _ in 0..3 {
            handles
                .get(&1, || {
                    resolved += 1;
                    (Counter::noop(), false)
                })
                .increment(1);
        }
        assert_eq!((resolved, handles.len()), (3, 0), "resolved per recording");
        handles.get(&2, || (Counter::noop(), true)).increment(1);
        handles.get(&2, || panic!("kept")).increment(1);
        assert_eq!(handles.len(), 1);
    }
}
