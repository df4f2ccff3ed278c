//! Exemplars: the trace (and span) of a recent observation in each bucket of the GenAI duration,
//! time-to-first-chunk and token histograms, and the OpenMetrics exposition that carries them.
//!
//! The Prometheus exporter behind the `metrics` facade renders no exemplars (its text format
//! 0.0.4 has none), and replacing the facade would touch every recording site; so exemplars are
//! kept here beside it, keyed like the exporter's series, and spliced into its output when the
//! scraper asks for OpenMetrics (`Accept: application/openmetrics-text`, as Prometheus does).
//! Only calls with a span record one (there is no trace to link to otherwise). Memory is bounded:
//! one slot per bucket of at most [`max_series`](super::series::max_series) series per metric.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use hashbrown::hash_table::{Entry, HashTable};
use metrics::Key;
use opentelemetry::trace::{SpanId, TraceId};

use super::series::same_key;

/// The exemplar label carrying the trace id (Grafana's `exemplarTraceIdDestinations` name).
pub const TRACE_ID_LABEL: &str = "trace_id";

/// The OpenMetrics content type `/metrics` answers with when asked for it.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One observation's trace link.
#[derive(Debug, Clone, Copy)]
struct Exemplar {
    trace_id: TraceId,
    span_id: SpanId,
    value: f64,
    /// Seconds since the Unix epoch.
    at: f64,
}

/// A series' exemplars: one slot per bucket bound, then `+Inf`.
#[derive(Clone)]
struct Slots {
    bounds: &'static [f64],
    slots: Vec<Option<Exemplar>>,
}

/// The exemplars of one histogram series, shared by the store and whoever records into the
/// series often ([`CallSeries`](super::call_series::CallSeries) keeps it with the histogram's
/// handle): a recording then locks only its series, with no lookup in the store.
pub struct Series(Mutex<Slots>);

impl Series {
    /// Keep `(trace_id, span_id)` as the exemplar of the bucket `value` falls in.
    pub fn record(&self, value: f64, ids: (TraceId, SpanId)) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = s
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(s.bounds.len());
        if let Some(cell) = s.slots.get_mut(slot) {
            *cell = Some(Exemplar {
                trace_id: ids.0,
                span_id: ids.1,
                value,
                at,
            });
        }
    }

    fn slots(&self) -> Slots {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The histogram's key (as recorded: name and labels) with its slots, per metric the count of
/// series. Found by the hash the `metrics` key computed when it was built, and the text form of
/// the key is made only when a scrape or an export reads the store ([`Index`]).
#[derive(Default)]
struct Store {
    series: HashTable<(Key, Arc<Series>)>,
    per_metric: HashMap<String, usize>,
}

static STORE: OnceLock<Mutex<Store>> = OnceLock::new();

fn store() -> &'static Mutex<Store> {
    STORE.get_or_init(Mutex::default)
}

/// Keep `(trace_id, span_id)` as the exemplar of the bucket `value` falls in, in the series of
/// histogram `key` (its name and the labels it was recorded with).
pub fn record(key: &Key, value: f64, ids: (TraceId, SpanId)) {
    if let Some(s) = series(key) {
        s.record(value, ids);
    }
}

/// Whether exemplars of histogram `key`'s series are kept.
#[cfg(test)]
pub(crate) fn holds(key: &Key) -> bool {
    store().lock().is_ok_and(|s| {
        s.series
            .find(key.get_hash(), |(k, _)| same_key(k, key))
            .is_some()
    })
}

/// The exemplars of histogram `key`'s series, kept from now on if new; `None` for a histogram
/// without exemplars, or past the metric's series bound (the exporter folds those labels into
/// `other`: no exemplar would match).
pub fn series(key: &Key) -> Option<Arc<Series>> {
    let bounds = super::metrics::buckets_of(key.name())?;
    let mut store = store().lock().ok()?;
    let store = &mut *store;
    let hash = key.get_hash();
    let vacant = match store
        .series
        .entry(hash, |(k, _)| same_key(k, key), |(k, _)| k.get_hash())
    {
        Entry::Occupied(o) => return Some(o.get().1.clone()),
        Entry::Vacant(v) => v,
    };
    let n = match store.per_metric.get_mut(key.name()) {
        Some(n) => n,
        None => store.per_metric.entry(key.name().to_string()).or_insert(0),
    };
    if *n >= super::series::max_series() {
        return None;
    }
    *n += 1;
    let series = Arc::new(Series(Mutex::new(Slots {
        bounds,
        slots: vec![None; bounds.len() + 1],
    })));
    vacant.insert((key.clone(), series.clone()));
    Some(series)
}

/// The exemplars kept when it was taken, by series key as the text format writes it
/// (`name{k="v",…}`, values escaped, labels sorted): what a scrape or an export looks up.
pub struct Index(HashMap<String, Slots>);

/// A copy of the exemplars kept, so that calls recording exemplars never wait while a scrape
/// or an export reads them.
pub fn index() -> Index {
    let Ok(store) = store().lock() else {
        return Index(HashMap::new());
    };
    let series = store
        .series
        .iter()
        .map(|(key, slots)| {
            let escaped: Vec<(&str, String)> =
                key.labels().map(|l| (l.key(), escape(l.value()))).collect();
            let mut sorted: Vec<(&str, &str)> =
                escaped.iter().map(|(k, v)| (*k, v.as_str())).collect();
            sorted.sort_unstable();
            (series_key(key.name(), sorted.into_iter()), slots.slots())
        })
        .collect();
    Index(series)
}

/// A label value escaped as the text formats escape it.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `name{k="v",…}` from escaped values.
fn series_key<'a>(name: &str, labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut key = String::with_capacity(128);
    key.push_str(name);
    key.push('{');
    for (i, (k, v)) in labels.enumerate() {
        if i > 0 {
            key.push(',');
        }
        key.push_str(k);
        key.push_str("=\"");
        key.push_str(v);
        key.push('"');
    }
    key.push('}');
    key
}

/// The exporter's text (format 0.0.4) as OpenMetrics 1.0, with the exemplars of every bucket
/// that has one.
pub fn openmetrics(text: &str) -> String {
    let index = index();
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut help: Option<&str> = None;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // Written with its TYPE line, which may rename the family.
            if let Some(h) = help.replace(rest) {
                push_line(&mut out, &["# HELP ", h]);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.rsplit_once(' ').unwrap_or((rest, "unknown"));
            // OpenMetrics names a counter family without the `_total` its samples carry; a
            // counter whose samples lack it is not one OpenMetrics can express.
            let (family, kind) = match (kind, family.strip_suffix("_total")) {
                ("counter", Some(base)) => (base, "counter"),
                ("counter", None) => (family, "unknown"),
                _ => (family, kind),
            };
            if let Some(h) = help.take() {
                let text = h.split_once(' ').map_or("", |(_, t)| t);
                push_line(&mut out, &["# HELP ", family, " ", text]);
            }
            push_line(&mut out, &["# TYPE ", family, " ", kind]);
            continue;
        }
        if let Some(h) = help.take() {
            push_line(&mut out, &["# HELP ", h]);
        }
        out.push_str(line);
        if let Some(e) = exemplar_for(&index.0, line) {
            let _ = write!(
                out,
                " # {{{TRACE_ID_LABEL}=\"{}\",span_id=\"{}\"}} {} {:.3}",
                e.trace_id, e.span_id, e.value, e.at
            );
        }
        out.push('\n');
    }
    out.push_str("# EOF\n");
    out
}

fn push_line(out: &mut String, parts: &[&str]) {
    for p in parts {
        out.push_str(p);
    }
    out.push('\n');
}

/// The exemplar of a `_bucket` sample line, when one was kept.
fn exemplar_for(series: &HashMap<String, Slots>, line: &str) -> Option<Exemplar> {
    if series.is_empty() {
        return None;
    }
    let (name, rest) = line.split_once("_bucket{")?;
    let (labels, _) = rest.rsplit_once("} ")?;
    let mut pairs = parse_labels(labels)?;
    let le_at = pairs.iter().position(|(k, _)| *k == "le")?;
    let (_, le) = pairs.remove(le_at);
    pairs.sort_unstable();
    let key = series_key(name, pairs.into_iter());
    let s = series.get(&key)?;
    let slot = if le == "+Inf" {
        s.bounds.len()
    } else {
        let le: f64 = le.parse().ok()?;
        s.bounds.iter().position(|b| *b == le)?
    };
    s.slots.get(slot).copied().flatten()
}

/// An exemplar as OTLP carries it.
#[derive(Debug, Clone, Copy)]
pub struct Linked {
    /// Trace id bytes.
    pub trace_id: [u8; 16],
    /// Span id bytes.
    pub span_id: [u8; 8],
    /// The observed value.
    pub value: f64,
    /// When it was observed, nanoseconds since the Unix epoch.
    pub time_unix_nano: u64,
}

impl Index {
    /// The exemplars kept for the series of histogram `name` with `labels` (`le` excluded,
    /// values escaped as the text format writes them), in bucket order.
    pub fn of_series(&self, name: &str, labels: &[(&str, &str)]) -> Vec<Linked> {
        let mut sorted = labels.to_vec();
        sorted.sort_unstable();
        let key = series_key(name, sorted.into_iter());
        let Some(s) = self.0.get(&key) else {
            return Vec::new();
        };
        s.slots
            .iter()
            .flatten()
            .map(|e| Linked {
                trace_id: e.trace_id.to_bytes(),
                span_id: e.span_id.to_bytes(),
                value: e.value,
                time_unix_nano: (e.at * 1e9) as u64,
            })
            .collect()
    }
}

/// A label value of the text format with its escapes undone.
pub fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

/// `k="v",k2="v2"` into pairs, values left escaped (as `series_key` writes them).
pub fn parse_labels(s: &str) -> Option<Vec<(&str, &str)>> {
    let mut pairs = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"")?;
        let bytes = after.as_bytes();
        let mut i = 0;
        while i < bytes.len() && bytes[i] != b'"' {
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        let v = after.get(..i)?;
        pairs.push((k.trim_start_matches(','), v));
        rest = after.get(i + 1..)?;
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::Label;

    #[test]
    fn exemplars_land_in_their_bucket_and_the_text_becomes_openmetrics() {
        let name = super::super::metrics::GEN_AI_INFERENCE_DURATION;
        let labels = vec![
            Label::new("gen_ai_request_model", "m\"x"),
            Label::new("agent", "exemplar-unit"),
        ];
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        record(&Key::from_parts(name, labels), 0.3, (trace, span));
        let text = format!(
            "# HELP tokenwarden_x_total Things.\n# TYPE tokenwarden_x_total counter\ntokenwarden_x_total 3\n\n\
             # TYPE {name} histogram\n\
             {name}_bucket{{agent=\"exemplar-unit\",gen_ai_request_model=\"m\\\"x\",le=\"0.16\"}} 0\n\
             {name}_bucket{{agent=\"exemplar-unit\",gen_ai_request_model=\"m\\\"x\",le=\"0.32\"}} 1\n\
             {name}_bucket{{agent=\"exemplar-unit\",gen_ai_request_model=\"m\\\"x\",le=\"+Inf\"}} 1\n\
             {name}_sum{{agent=\"exemplar-unit\",gen_ai_request_model=\"m\\\"x\"}} 0.3\n"
        );
        let om = openmetrics(&text);
        let lines: Vec<&str> = om.lines().collect();
        assert_eq!(lines[0], "# HELP tokenwarden_x Things.");
        assert_eq!(lines[1], "# TYPE tokenwarden_x counter");
        assert_eq!(lines[2], "tokenwarden_x_total 3");
        assert!(!om.contains("\n\n"));
        assert!(lines[4].ends_with("} 0"), "{om}");
        assert!(
            lines[5].contains(
                "le=\"0.32\"} 1 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\"} 0.3 "
            ),
            "{om}"
        );
        assert!(!lines[6].contains('#'), "{om}");
        assert_eq!(*lines.last().unwrap(), "# EOF");
    }

    #[test]
    fn exports_find_a_series_whatever_order_its_labels_were_recorded_in() {
        let name = super::super::metrics::CALL_COST_USD;
        let trace = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
        let span = SpanId::from_hex("b7ad6b7169203331").unwrap();
        let labels = vec![
            Label::new("model", "gpt\\4o\nmini"),
            Label::new("agent", "exemplar-order"),
        ];
        record(&Key::from_parts(name, labels), 0.002, (trace, span));
        // A second observation in the same bucket replaces the first; another bucket adds one.
        record(
            &Key::from_parts(
                name,
                vec![
                    Label::new("model", "gpt\\4o\nmini"),
                    Label::new("agent", "exemplar-order"),
                ],
            ),
            0.0021,
            (trace, span),
        );
        let kept = index();
        // As the text format writes the labels: sorted, values escaped.
        let found = kept.of_series(
            name,
            &[("model", "gpt\\\\4o\\nmini"), ("agent", "exemplar-order")],
        );
        assert_eq!(found.len(), 1, "one bucket holds an exemplar");
        assert_eq!(found[0].value, 0.0021);
        assert_eq!(found[0].trace_id, trace.to_bytes());
        assert!(kept
            .of_series(name, &[("agent", "exemplar-order")])
            .is_empty());
    }
}
