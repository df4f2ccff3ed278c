//! [`SeriesCap`]: a bound on the series of every metric, not only on each label's values.
//!
//! [`LabelCap`](super::labels::LabelCap) keeps each traffic-derived label to a number of values,
//! but their combinations still multiply: 200 models × 200 agents × token types × histogram
//! buckets made millions of series from forty thousand requests. This recorder layer admits at
//! most [`max_series`] label sets per metric among those carrying a traffic-derived label; a new
//! label set past that is recorded with every traffic-derived label as `other`, so no count is
//! lost, and `tokenwarden_metric_series_folded_total{metric}` counts the recordings folded.
//! Metrics whose labels all come from config (route, status, scope…) pass untouched.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
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

static MAX_SERIES: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_SERIES);

/// Set the label sets admitted per metric (from `telemetry.max_series_per_metric`).
pub fn set_max_series(n: usize) {
    MAX_SERIES.store(n.max(1), Ordering::Relaxed);
}

/// The label sets admitted per metric.
pub fn max_series() -> usize {
    MAX_SERIES.load(Ordering::Relaxed)
}

/// A recorder that bounds the series of each metric, then hands on to `inner`.
pub struct SeriesCap<R> {
    inner: R,
    /// Label sets admitted so far (traffic-labelled metrics only).
    seen: DashMap<Key, ()>,
    /// Label sets admitted per metric name.
    per_metric: DashMap<KeyName, usize>,
}

// === impl SeriesCap ===

impl<R: Recorder> SeriesCap<R> {
    /// Bound `inner`'s series.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            seen: DashMap::new(),
            per_metric: DashMap::new(),
        }
    }

    /// The key to record under: `key` itself, or its folded form past the bound.
    fn admit<'k>(&self, key: &'k Key) -> Cow<'k, Key> {
        if !key.labels().any(|l| TRAFFIC_LABELS.contains(&l.key())) || self.seen.contains_key(key) {
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
                self.seen.insert(key.clone(), ());
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
        self.inner.register_counter(&self.admit(key), metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(&self.admit(key), metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.inner.register_histogram(&self.admit(key), metadata)
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
}
