//! [`SeriesCap`]: a bound on the series of every metric, not only on each label's values.
//!
//! [`LabelCap`](super::labels::LabelCap) keeps each traffic-derived label to a number of values,
//! but their combinations still multiply: 200 models × 200 agents × token types × histogram
//! buckets made millions of series from forty thousand requests. This recorder layer admits at
//! most [`max_series`] label sets per metric among those carrying a traffic-derived label; a new
//! label set past that is recorded with every traffic-derived label as `other`, so no count is
//! lost, and `tokenwarden_metric_series_folded_total{metric}` counts the recordings folded.
//! Metrics whose labels all come from config (route, status, scope…) pass untouched.
//!
//! It also keeps the handles it resolved, keyed by label set: every `counter!` / `histogram!`
//! asks the recorder for its handle on every call, and the exporter's registration (its map
//! lookup and a copy of the labels into a new `Arc`) was a fifth of a toy request's
//! instructions. A repeated label set now costs one lookup here. The cache holds at most
//! [`HANDLE_CACHE_CAP`] handles of each kind; past that, label sets register as before. Folded
//! label sets are never cached, so every folded recording is still counted.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};

use dashmap::DashMap;
use hashbrown::hash_table::{Entry, HashTable};
use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};

/// Recordings whose label set was folded into `other` because its metric had
/// [`max_series`] label sets already.
pub const SERIES_FOLDED_TOTAL: &str = "tokenwarden_metric_series_folded_total";

/// Labels whose values come from traffic (request bodies and headers).
const TRAFFIC_LABELS: &[&str] = &[
    "agent",
    "model",
    "tool",
    "error_type",
    "gen_ai_request_model",
    "gen_ai_response_model",
];

pub use crate::config::DEFAULT_MAX_SERIES;

/// The value reported once a label has seen its maximum of distinct values.
pub const OTHER: &str = "other";

/// Handles kept per kind (counters, gauges, histograms): the label sets a sidecar's config and
/// admitted traffic produce in steady state, with room; a bound so client-chosen values cannot
/// grow it.
pub const HANDLE_CACHE_CAP: usize = 8192;

static MAX_SERIES: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_SERIES);

/// Set the label sets admitted per metric (from `telemetry.max_series_per_metric`).
pub fn set_max_series(n: usize) {
    MAX_SERIES.store(n.max(1), Ordering::Relaxed);
}

/// The label sets admitted per metric.
pub fn max_series() -> usize {
    MAX_SERIES.load(Ordering::Relaxed)
}

/// Whether `a` and `b` name the same series. `Key`'s own equality sorts both label lists (labels
/// may come in any order), which was most of a handle lookup; every recording site writes its
/// labels in one order, so they are compared in order first and sorted only when that differs.
pub(crate) fn same_key(a: &Key, b: &Key) -> bool {
    let same_labels = || {
        let (x, y) = (a.labels(), b.labels());
        x.len() == y.len()
            && x.zip(y)
                .all(|(x, y)| same_str(x.key(), y.key()) && same_str(x.value(), y.value()))
    };
    a.get_hash() == b.get_hash() && ((same_str(a.name(), b.name()) && same_labels()) || a == b)
}

/// String equality, deciding by address first: label names are static and label values shared
/// (`Arc`s the label caps hand out), so most comparisons are of one string with itself.
fn same_str(a: &str, b: &str) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

/// Shards of [`KeyTable`]: recordings on different workers rarely wait on one lock.
const SHARDS: usize = 16;

/// A map keyed by [`Key`], looked up by the hash the key computed when it was built and
/// [`same_key`]: what a recording asks for its handle.
pub(crate) struct KeyTable<V> {
    shards: [RwLock<HashTable<(Key, V)>>; SHARDS],
    len: AtomicUsize,
}

impl<V: Clone> KeyTable<V> {
    fn new() -> Self {
        Self {
            shards: std::array::from_fn(|_| RwLock::new(HashTable::new())),
            len: AtomicUsize::new(0),
        }
    }

    fn shard(&self, hash: u64) -> &RwLock<HashTable<(Key, V)>> {
        // Bits the table itself uses least (it indexes by the low ones, tags by the top seven).
        &self.shards[(hash >> 40) as usize % SHARDS]
    }

    /// The value kept for `key`.
    fn get(&self, key: &Key) -> Option<V> {
        let hash = key.get_hash();
        let shard = self
            .shard(hash)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        shard
            .find(hash, |(k, _)| same_key(k, key))
            .map(|(_, v)| v.clone())
    }

    /// Keep `value` for `key` unless one is kept already or `cap` entries are.
    fn insert(&self, key: &Key, value: V, cap: usize) {
        // The length is read without a lock across shards: racing inserts may pass the cap by
        // the number of racing threads, a bound all the same.
        if self.len.load(Ordering::Relaxed) >= cap {
            return;
        }
        let hash = key.get_hash();
        let mut shard = self
            .shard(hash)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Entry::Vacant(v) =
            shard.entry(hash, |(k, _)| same_key(k, key), |(k, _)| k.get_hash())
        {
            v.insert((key.clone(), value));
            self.len.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Entries kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

/// A recorder that bounds the series of each metric, then hands on to `inner`.
pub struct SeriesCap<R> {
    inner: R,
    /// Label sets admitted so far (traffic-labelled metrics only).
    seen: KeyTable<()>,
    /// Label sets admitted per metric name.
    per_metric: DashMap<KeyName, usize>,
    /// Resolved handles of admitted label sets, at most [`HANDLE_CACHE_CAP`] each.
    counters: KeyTable<Counter>,
    gauges: KeyTable<Gauge>,
    histograms: KeyTable<Histogram>,
}

/// The cached handle of `key`, or `register`'s, kept when `key` was admitted unfolded and the
/// cache has room; and whether it was admitted unfolded (a handle worth keeping elsewhere).
fn cached<H: Clone>(
    cache: &KeyTable<H>,
    key: &Key,
    register: impl FnOnce() -> (H, bool),
) -> (H, bool) {
    if let Some(h) = cache.get(key) {
        return (h, true);
    }
    let (handle, admitted) = register();
    if admitted {
        cache.insert(key, handle.clone(), HANDLE_CACHE_CAP);
    }
    (handle, admitted)
}

// === impl SeriesCap ===

impl<R: Recorder> SeriesCap<R> {
    /// `key`'s counter, and whether it was admitted unfolded: a folded handle must not be kept
    /// by the caller, so that each folded recording is counted.
    pub fn counter(&self, key: &Key, metadata: &Metadata<'_>) -> (Counter, bool) {
        cached(&self.counters, key, || {
            let admitted = self.admit(key);
            let h = self.inner.register_counter(&admitted, metadata);
            (h, matches!(admitted, Cow::Borrowed(_)))
        })
    }

    /// `key`'s gauge, and whether it was admitted unfolded (as [`Self::counter`]).
    pub fn gauge(&self, key: &Key, metadata: &Metadata<'_>) -> (Gauge, bool) {
        cached(&self.gauges, key, || {
            let admitted = self.admit(key);
            let h = self.inner.register_gauge(&admitted, metadata);
            (h, matches!(admitted, Cow::Borrowed(_)))
        })
    }

    /// `key`'s histogram, and whether it was admitted unfolded (as [`Self::counter`]).
    pub fn histogram(&self, key: &Key, metadata: &Metadata<'_>) -> (Histogram, bool) {
        cached(&self.histograms, key, || {
            let admitted = self.admit(key);
            let h = self.inner.register_histogram(&admitted, metadata);
            (h, matches!(admitted, Cow::Borrowed(_)))
        })
    }

    /// Bound `inner`'s series.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            seen: KeyTable::new(),
            per_metric: DashMap::new(),
            counters: KeyTable::new(),
            gauges: KeyTable::new(),
            histograms: KeyTable::new(),
        }
    }

    /// The key to record under: `key` itself, or its folded form past the bound.
    fn admit<'k>(&self, key: &'k Key) -> Cow<'k, Key> {
        if !key.labels().any(|l| TRAFFIC_LABELS.contains(&l.key())) || self.seen.get(key).is_some()
        {
            return Cow::Borrowed(key);
        }
        {
            let mut n = self
                .per_metric
                .entry(KeyName::from(key.name().to_string()))
                .or_insert(0);
            // Racing first registrations of one label set may each count it: the bound errs low.
            if *n < max_series() {
                *n += 1;
                drop(n);
                self.seen.insert(key, (), usize::MAX);
                return Cow::Borrowed(key);
            }
        }
        let labels: Vec<Label> = key
            .labels()
            .map(|l| {
                if TRAFFIC_LABELS.contains(&l.key()) {
                    Label::new(l.key().to_string(), OTHER)
                } else {
                    l.clone()
                }
            })
            .collect();
        let folded = Key::from_parts(key.name().to_string(), labels);
        let meta = Metadata::new(module_path!(), metrics::Level::INFO, None);
        self.inner
            .register_counter(
                &Key::from_parts(
                    SERIES_FOLDED_TOTAL,
                    vec![Label::new("metric", key.name().to_string())],
                ),
                &meta,
            )
            .increment(1);
        Cow::Owned(folded)
    }
}

impl<R: Recorder> Recorder for SeriesCap<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.counter(key, metadata).0
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.gauge(key, metadata).0
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.histogram(key, metadata).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::DebuggingRecorder;

    #[test]
    fn label_sets_past_the_bound_fold_into_other() {
        let debug = DebuggingRecorder::new();
        let snapshotter = debug.snapshotter();
        let cap = SeriesCap::new(debug);
        let meta = Metadata::new("t", metrics::Level::INFO, None);
        let max = max_series();
        for i in 0..max + 10 {
            let key = Key::from_parts(
                "m",
                vec![
                    Label::new("agent", format!("a{i}")),
                    Label::new("route", "r"),
                ],
            );
            cap.register_counter(&key, &meta).increment(1);
        }
        // Untraffic-labelled metrics are never folded.
        for i in 0..max + 10 {
            let key = Key::from_parts("plain", vec![Label::new("route", format!("r{i}"))]);
            cap.register_counter(&key, &meta).increment(1);
        }
        let snap = snapshotter.snapshot().into_vec();
        let series = |name: &str| snap.iter().filter(|(k, ..)| k.key().name() == name).count();
        assert_eq!(series("m"), max + 1, "the admitted sets and one folded set");
        assert_eq!(series("plain"), max + 10);
        let folded = snap
            .iter()
            .find(|(k, ..)| k.key().name() == "m" && k.key().labels().any(|l| l.value() == OTHER))
            .map(|(.., v)| v);
        assert!(
            matches!(
                folded,
                Some(metrics_util::debugging::DebugValue::Counter(10))
            ),
            "{folded:?}"
        );
    }

    /// Counts the registrations reaching it, then hands on to a debugging recorder.
    struct Counting {
        inner: DebuggingRecorder,
        registrations: AtomicUsize,
    }

    impl Recorder for Counting {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, meta: &Metadata<'_>) -> Counter {
            self.registrations.fetch_add(1, Ordering::Relaxed);
            self.inner.register_counter(key, meta)
        }
        fn register_gauge(&self, key: &Key, meta: &Metadata<'_>) -> Gauge {
            self.registrations.fetch_add(1, Ordering::Relaxed);
            self.inner.register_gauge(key, meta)
        }
        fn register_histogram(&self, key: &Key, meta: &Metadata<'_>) -> Histogram {
            self.registrations.fetch_add(1, Ordering::Relaxed);
            self.inner.register_histogram(key, meta)
        }
    }

    fn counting() -> (SeriesCap<Counting>, metrics_util::debugging::Snapshotter) {
        let inner = DebuggingRecorder::new();
        let snapshotter = inner.snapshotter();
        let cap = SeriesCap::new(Counting {
            inner,
            registrations: AtomicUsize::new(0),
        });
        (cap, snapshotter)
    }

    type Snap = Vec<(
        metrics_util::CompositeKey,
        Option<Unit>,
        Option<SharedString>,
        metrics_util::debugging::DebugValue,
    )>;

    /// A counter's value in `snap` (taking a snapshot resets the debugging recorder's values).
    fn counter_of(snap: &Snap, name: &str, label: (&str, &str)) -> Option<u64> {
        snap.iter()
            .find(|(k, ..)| {
                k.kind() == metrics_util::MetricKind::Counter
                    && k.key().name() == name
                    && k.key()
                        .labels()
                        .any(|l| l.key() == label.0 && l.value() == label.1)
            })
            .and_then(|(.., v)| match v {
                metrics_util::debugging::DebugValue::Counter(n) => Some(*n),
                _ => None,
            })
    }

    #[test]
    fn a_key_is_found_whatever_order_its_labels_come_in_and_no_other_is() {
        let labels = |pairs: &[(&'static str, &'static str)]| -> Vec<Label> {
            pairs.iter().map(|(k, v)| Label::new(*k, *v)).collect()
        };
        let key = Key::from_parts(
            "m",
            labels(&[("agent", "a"), ("model", "x"), ("type", "in")]),
        );
        let shuffled = Key::from_parts(
            "m",
            labels(&[("type", "in"), ("agent", "a"), ("model", "x")]),
        );
        let other = Key::from_parts(
            "m",
            labels(&[("agent", "a"), ("model", "y"), ("type", "in")]),
        );
        let swapped = Key::from_parts(
            "m",
            labels(&[("agent", "x"), ("model", "a"), ("type", "in")]),
        );
        let renamed = Key::from_parts(
            "n",
            labels(&[("agent", "a"), ("model", "x"), ("type", "in")]),
        );
        assert!(same_key(&key, &shuffled) && same_key(&shuffled, &key));
        for k in [&other, &swapped, &renamed] {
            assert!(!same_key(&key, k), "{k:?}");
        }
        let table = KeyTable::new();
        table.insert(&key, 1, 10);
        table.insert(&shuffled, 2, 10);
        assert_eq!(table.len(), 1, "the same series, kept once");
        assert_eq!(table.get(&shuffled), Some(1));
        assert_eq!(table.get(&other), None);
        table.insert(&other, 3, 10);
        table.insert(&swapped, 4, 2);
        assert_eq!((table.get(&other), table.get(&swapped)), (Some(3), None));
    }

    #[test]
    fn a_cached_handle_records_into_the_series_of_a_fresh_registration() {
        let (cap, snapshotter) = counting();
        let meta = Metadata::new("t", metrics::Level::INFO, None);
        let key = || {
            Key::from_parts(
                "calls",
                vec![Label::new("agent", "a"), Label::new("route", "r")],
            )
        };
        cap.register_counter(&key(), &meta).increment(1);
        // A key built anew for each call, as the `counter!` macro does.
        cap.register_counter(&key(), &meta).increment(2);
        cap.register_counter(&key(), &meta).increment(3);
        assert_eq!(
            cap.inner.registrations.load(Ordering::Relaxed),
            1,
            "repeated label sets are served from the cache"
        );
        // A registration past the cache, straight at the recorder, reaches the same series.
        cap.inner.register_counter(&key(), &meta).increment(4);
        let snap = snapshotter.snapshot().into_vec();
        assert_eq!(counter_of(&snap, "calls", ("agent", "a")), Some(10));

        let hist = Key::from_parts("lat", vec![Label::new("route", "r")]);
        cap.register_histogram(&hist, &meta).record(0.5);
        cap.register_histogram(&hist, &meta).record(1.5);
        cap.register_gauge(&hist, &meta).set(2.0);
        cap.register_gauge(&hist, &meta).increment(1.0);
        // One registration each for the histogram and the gauge, besides the two above.
        assert_eq!(cap.inner.registrations.load(Ordering::Relaxed), 4);
        let snap = snapshotter.snapshot().into_vec();
        let values: Vec<_> = snap
            .iter()
            .filter(|(k, ..)| k.key().name() == "lat")
            .map(|(.., v)| v)
            .collect();
        assert!(
            values.iter().any(|v| matches!(v,
                metrics_util::debugging::DebugValue::Histogram(h)
                    if h.iter().map(|x| x.into_inner()).collect::<Vec<_>>() == [0.5, 1.5])),
            "{values:?}"
        );
        assert!(
            values
                .iter()
                .any(|v| matches!(v, metrics_util::debugging::DebugValue::Gauge(g) if g.into_inner() == 3.0)),
            "{values:?}"
        );
    }

    #[test]
    fn the_handle_cache_stays_bounded_under_10000_label_values() {
        let (cap, snapshotter) = counting();
        let meta = Metadata::new("t", metrics::Level::INFO, None);
        let max = max_series();
        for i in 0..10_000 {
            // A client-chosen label (folded past the series bound)…
            let traffic = Key::from_parts("by_agent", vec![Label::new("agent", format!("a{i}"))]);
            cap.register_counter(&traffic, &meta).increment(1);
            cap.register_histogram(&traffic, &meta).record(1.0);
            // …and labels the series bound leaves alone, which only the cache's own cap bounds.
            let plain = Key::from_parts("by_route", vec![Label::new("route", format!("r{i}"))]);
            cap.register_counter(&plain, &meta).increment(1);
            cap.register_gauge(&plain, &meta).set(1.0);
        }
        assert!(
            cap.counters.len() <= HANDLE_CACHE_CAP,
            "{}",
            cap.counters.len()
        );
        assert!(cap.gauges.len() <= HANDLE_CACHE_CAP, "{}", cap.gauges.len());
        assert!(cap.histograms.len() <= max, "{}", cap.histograms.len());
        let snap = snapshotter.snapshot().into_vec();
        // Folded label sets are not cached: each recording still counts as folded.
        assert_eq!(
            counter_of(&snap, SERIES_FOLDED_TOTAL, ("metric", "by_agent")),
            Some(2 * (10_000 - max as u64))
        );
        assert_eq!(
            counter_of(&snap, "by_agent", ("agent", OTHER)),
            Some(10_000 - max as u64)
        );
        // Past the cap, label sets register as before and record the same values.
        assert_eq!(counter_of(&snap, "by_route", ("route", "r9999")), Some(1));
        let again = Key::from_parts("by_route", vec![Label::new("route", "r9999")]);
        cap.register_counter(&again, &meta).increment(1);
        let snap = snapshotter.snapshot().into_vec();
        assert_eq!(
            counter_of(&snap, "by_route", ("route", "r9999")),
            Some(1),
            "one more since the last snapshot"
        );
        assert!(cap.counters.len() <= HANDLE_CACHE_CAP);
    }
}
