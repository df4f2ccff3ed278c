//! [`Recurring`]: a stream event's verdict kept for the events after it that differ from it only
//! in what their string values say.
//!
//! Most of a chat stream is one chunk sent again and again with another piece of text (and,
//! from OpenAI, another `obfuscation` padding): `{"id":"…","object":"chat.completion.chunk",
//! …,"choices":[{"index":0,"delta":{"content":"…"},…}],"obfuscation":"…"}`. Deciding that such
//! a chunk carries only text took nine key searches of it (~1,500 instructions, two thirds of an
//! event's accounting). So the event a verdict was made on is kept as a template — its bytes
//! with each value string's contents cut out — and an event that has the same bytes outside its
//! value strings, each string empty where the template's was, gets the same verdict after a few
//! comparisons.
//!
//! Sound for verdicts that read an event the way [`any_value`](super::shape::any_value) does:
//! find `"key"` followed by `:` anywhere, then look at most at the value's first two bytes
//! (which byte it starts with; for a string, whether it is empty). A `"key"` match has quotes
//! only at its ends, the closing one after a letter. So no match ends at a value string's
//! opening quote (a `:` or whitespace precedes it, kept bytes), none starts at its closing
//! quote (whitespace, `,`, `}` or `]` follows it: the template requires it), and none ends
//! inside its contents (every quote there is escaped: a backslash precedes it). A match that
//! touches the contents therefore ends at the closing quote — the whole string, or from an
//! escaped quote inside, as in `"a\"usage"` — and is followed by no `:`, so it never counts
//! (nor does it hide another: no match overlaps it). Every other match lies in bytes the two
//! events share, and reads past it only shared bytes but for a value string's emptiness, which
//! must agree. Keys and strings inside arrays are kept as bytes.

use memchr::{memchr, memchr2};

/// Largest event kept as a template: chunks are a few hundred bytes; the bound keeps what a
/// stream holds flat whatever it sends.
const MAX_TEMPLATE: usize = 4096;

/// Templates in a row that the next event did not fit (or events that made none), after which a
/// stream keeps none: a server whose numbers change every event would otherwise pay for a
/// template per event.
const MAX_MISSES: u8 = 4;

/// The verdict of the last event kept as a template, for the events that fit it.
#[derive(Debug)]
pub(crate) struct Recurring<T> {
    kept: Option<(Template, T)>,
    misses: u8,
}

impl<T> Default for Recurring<T> {
    fn default() -> Self {
        Self {
            kept: None,
            misses: 0,
        }
    }
}

impl<T: Copy> Recurring<T> {
    /// The verdict kept, when `data` fits its template.
    pub(crate) fn get(&mut self, data: &[u8]) -> Option<T> {
        let (template, verdict) = self.kept.as_ref()?;
        let fits = template.fits(data);
        if fits {
            self.misses = 0;
        }
        fits.then_some(*verdict)
    }

    /// Keep `verdict`, made on `data` (which did not fit the template kept, if any), for the
    /// events that fit it.
    pub(crate) fn keep(&mut self, data: &[u8], verdict: T) {
        if self.misses >= MAX_MISSES {
            self.kept = None;
            return;
        }
        // A template the event did not fit, or an event with none, is a miss.
        let missed = self.kept.is_some();
        self.kept = Template::of(data).map(|t| (t, verdict));
        if missed || self.kept.is_none() {
            self.misses += 1;
        }
    }
}

/// An event's bytes with each value string's contents cut out.
#[derive(Debug)]
struct Template {
    /// The bytes, each value string's quotes kept.
    fixed: Vec<u8>,
    /// Per value string: where its contents were in `fixed` (just past its opening quote), and
    /// whether they were empty.
    holes: Vec<(u32, bool)>,
}

impl Template {
    /// The template of `data`; `None` for an event too large, with a string left open, or with
    /// a value string not followed by `,`, `}` or `]`.
    fn of(data: &[u8]) -> Option<Self> {
        if data.len() > MAX_TEMPLATE {
            return None;
        }
        let mut fixed = Vec::with_capacity(data.len());
        let mut holes = Vec::new();
        // Outside any string from `pos`; `data[copied..]` not yet in `fixed`.
        let (mut pos, mut copied) = (0, 0);
        while let Some(off) = memchr(b'"', &data[pos..]) {
            let open = pos + off;
            let close = string_end(data, open + 1)?;
            let before = data[..open].iter().rev().find(|b| !is_space(**b));
            if before == Some(&b':') {
                let after = data[close + 1..].iter().find(|b| !is_space(**b));
                if !matches!(after, Some(b',' | b'}' | b']')) {
                    return None;
                }
                fixed.extend_from_slice(&data[copied..=open]);
                holes.push((u32::try_from(fixed.len()).ok()?, close == open + 1));
                // The closing quote begins the next run of kept bytes.
                copied = close;
            }
            pos = close + 1;
        }
        fixed.extend_from_slice(&data[copied..]);
        Some(Self { fixed, holes })
    }

    /// Whether `data` is this template's bytes with value strings of the same emptiness.
    fn fits(&self, data: &[u8]) -> bool {
        let (mut at, mut from) = (0, 0);
        for &(hole, empty) in &self.holes {
            let Some(run) = self.fixed.get(from..hole as usize) else {
                return false;
            };
            if data.get(at..at + run.len()) != Some(run) {
                return false;
            }
            at += run.len();
            let Some(close) = string_end(data, at) else {
                return false;
            };
            if (close == at) != empty {
                return false;
            }
            (at, from) = (close, hole as usize);
        }
        data.get(at..) == self.fixed.get(from..)
    }
}

/// The index of the quote closing the string whose contents start at `i` (a backslash escapes
/// the byte after it).
fn string_end(data: &[u8], mut i: usize) -> Option<usize> {
    // (A byte loop over the first bytes cost twice the vector search in callgrind.)
    loop {
        let at = i + memchr2(b'"', b'\\', data.get(i..)?)?;
        if data[at] == b'"' {
            return Some(at);
        }
        i = at + 2;
    }
}

/// The whitespace [`any_value`](super::shape::any_value) skips (form feed included).
fn is_space(b: u8) -> bool {
    b.is_ascii_whitespace()
}

#[cfg(test)]
pub(crate) mod testing {
    //! Events for property tests of verdicts kept by [`Recurring`](super::Recurring).
    use super::Template;
    use proptest::prelude::*;

    /// Strings as JSON writes them, with escapes and key-like text inside.
    pub(crate) fn contents() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("\\\"".to_string()),
                Just("\\\\".to_string()),
                Just("usage".to_string()),
                Just("\\\"usage\\\":{".to_string()),
                Just("\\\"content\\\":\\\"x".to_string()),
                Just("\\u0022".to_string()),
                "[a-z :,{}\\[\\]]{0,4}",
            ],
            0..6,
        )
        .prop_map(|parts| parts.concat())
    }

    /// A value: a string (its contents drawn later), null, a number, or an object of keys the
    /// text-only test looks for.
    pub(crate) fn value(depth: u32) -> BoxedStrategy<String> {
        let leaf = prop_oneof![
            contents().prop_map(|c| format!("\"{c}\"")),
            Just("null".to_string()),
            Just("0".to_string()),
            Just("[\"a\",1]".to_string()),
        ];
        if depth == 0 {
            return leaf.boxed();
        }
        prop_oneof![
            leaf,
            (
                prop::collection::vec((key(), value(depth - 1)), 0..4),
                space(),
                space()
            )
                .prop_map(|(m, a, b)| object(&m, &a, &b)),
            prop::collection::vec(value(depth - 1), 0..3)
                .prop_map(|items| format!("[{}]", items.join(","))),
        ]
        .boxed()
    }

    /// The keys the text-only test looks for.
    pub(crate) const SEARCHED: [&str; 9] = [
        "usage",
        "finish_reason",
        "tool_calls",
        "error",
        "choices",
        "content",
        "reasoning_content",
        "refusal",
        "text",
    ];

    /// A key: one the test looks for, or another.
    pub(crate) fn key() -> impl Strategy<Value = &'static str> {
        let mut keys = SEARCHED.to_vec();
        keys.extend(["id", "delta"]);
        prop::sample::select(keys)
    }

    /// `data` with its value strings' contents replaced by `fill`'s, each kept empty or not
    /// as it was.
    pub(crate) fn refill(data: &str, fill: &[String]) -> String {
        let t = Template::of(data.as_bytes()).expect("a template");
        let fixed = String::from_utf8(t.fixed.clone()).expect("utf-8");
        let mut out = String::new();
        let mut from = 0;
        for (i, &(hole, empty)) in t.holes.iter().enumerate() {
            out.push_str(&fixed[from..hole as usize]);
            let f = &fill[i % fill.len().max(1)];
            match (empty, f.is_empty()) {
                (true, _) => {}
                (false, true) => out.push('x'),
                (false, false) => out.push_str(f),
            }
            from = hole as usize;
        }
        out.push_str(&fixed[from..]);
        out
    }

    /// Whitespace JSON allows between tokens (form feed is not JSON's, but searches skip it).
    pub(crate) fn space() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["", "", " ", "\n  ", "\t", "\u{c}"]).prop_map(str::to_string)
    }

    /// An object of `members`, `a` around its colons, `b` after its commas.
    pub(crate) fn object(members: &[(&str, String)], a: &str, b: &str) -> String {
        let m: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("\"{k}\"{a}:{a}{v}"))
            .collect();
        format!("{{{}}}", m.join(&format!(",{b}")))
    }

    /// A chunk-like event: an object of keys the text-only test looks for, any values.
    pub(crate) fn event() -> impl Strategy<Value = String> {
        (
            prop::collection::vec((key(), value(3)), 1..5),
            space(),
            space(),
        )
            .prop_map(|(m, a, b)| object(&m, &a, &b))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{contents, event, refill, SEARCHED};
    use super::*;
    use proptest::prelude::*;

    fn template(data: &str) -> Template {
        Template::of(data.as_bytes()).expect("a template")
    }

    #[test]
    fn events_differing_in_value_strings_fit_and_in_anything_else_do_not() {
        let t = template(
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"obfuscation":"x9"}"#,
        );
        assert_eq!(t.holes.len(), 3);
        for fits in [
            r#"{"id":"c2","choices":[{"index":0,"delta":{"content":"lo, \"world\"\\"},"finish_reason":null}],"obfuscation":"abcdef"}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"usage"},"finish_reason":null}],"obfuscation":"\"tool_calls\":["}"#,
        ] {
            assert!(t.fits(fits.as_bytes()), "{fits}");
        }
        for other in [
            // An empty string where the template's was not.
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":""},"finish_reason":null}],"obfuscation":"x9"}"#,
            // A number, a key, a value's kind, the end.
            r#"{"id":"c1","choices":[{"index":1,"delta":{"content":"Hel"},"finish_reason":null}],"obfuscation":"x9"}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"refusal":"Hel"},"finish_reason":null}],"obfuscation":"x9"}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":"stop"}],"obfuscation":"x9"}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"obfuscation":"x9"} "#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"obfuscation":"x9"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hel\"},"finish_reason":null}],"obfuscation":"x9"}"#,
        ] {
            assert!(!t.fits(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn keys_and_array_strings_are_kept_as_bytes() {
        let t = template(r#"{"a":["x","y"],"b":"z"}"#);
        assert_eq!(t.holes.len(), 1, "only b's value");
        assert!(t.fits(br#"{"a":["x","y"],"b":"other"}"#));
        assert!(!t.fits(br#"{"a":["x","w"],"b":"z"}"#));
        assert!(!t.fits(br#"{"c":["x","y"],"b":"z"}"#));
    }

    #[test]
    fn events_no_template_can_stand_for() {
        for data in [
            r#"{"a":"open"#,
            // A value string followed by what could make a key of it.
            r#"{"a":"usage":1}"#,
            r#"{"a":"b" "c"}"#,
        ] {
            assert!(Template::of(data.as_bytes()).is_none(), "{data}");
        }
        assert!(Template::of(&vec![b' '; MAX_TEMPLATE + 1]).is_none());
    }

    #[test]
    fn a_stream_whose_events_never_recur_stops_keeping_templates() {
        let mut r = Recurring::default();
        for n in 0..10 {
            let data = format!(r#"{{"n":{n},"s":"x"}}"#);
            assert_eq!(r.get(data.as_bytes()), None);
            r.keep(data.as_bytes(), n);
        }
        assert!(r.kept.is_none(), "given up after {MAX_MISSES} misses");
        let mut r = Recurring::default();
        r.keep(br#"{"s":"a"}"#, 1);
        for n in 0..10 {
            let other = format!(r#"{{"n":{n}}}"#);
            assert_eq!(r.get(other.as_bytes()), None);
            r.keep(other.as_bytes(), 2);
            assert_eq!(r.get(other.as_bytes()), Some(2), "a fit resets the misses");
        }
    }

    /// What a verdict of the kind this module serves may read: for each of `keys`, whether some
    /// occurrence has a value not starting with `n` (set, not null), and whether some occurrence
    /// is a non-empty string.
    fn verdict_of(data: &[u8], keys: &[&str]) -> Vec<(bool, bool)> {
        use crate::providers::shape::{any_value, any_value_where};
        keys.iter()
            .map(|k| {
                let f = memchr::memmem::Finder::new(format!("\"{k}\"").as_bytes()).into_owned();
                (
                    any_value(data, &f, |b| b != b'n'),
                    any_value_where(data, &f, |v| v.len() > 1 && v[0] == b'"' && v[1] != b'"'),
                )
            })
            .collect()
    }

    /// [`verdict_of`] the keys the text-only test looks for.
    fn verdict(data: &[u8]) -> Vec<(bool, bool)> {
        verdict_of(data, &SEARCHED)
    }

    proptest! {
        /// Whatever the strings say, an event that fits reads as the event the template was
        /// made of to every key search.
        #[test]
        fn a_fitting_event_gets_the_verdict_it_would_get(
            data in event(),
            fill in prop::collection::vec(contents(), 1..4),
        ) {
            let Some(t) = Template::of(data.as_bytes()) else {
                return Err(TestCaseError::reject("no template"));
            };
            prop_assert!(t.fits(data.as_bytes()));
            let other = refill(&data, &fill);
            prop_assert!(t.fits(other.as_bytes()), "{other}");
            prop_assert_eq!(verdict(data.as_bytes()), verdict(other.as_bytes()), "{} / {}", data, other);
        }
    }

    proptest! {
        /// Not only JSON: any text that makes a template reads, once refilled, as it did (keys
        /// one or two letters long).
        #[test]
        fn any_text_that_makes_a_template_reads_alike_refilled(
            data in "[\"\\\\:,{}\\[\\] atn\u{c}]{0,24}",
            fill in prop::collection::vec("([atn:,{} ]|\\\\\\\\|\\\\\"){0,5}", 1..4),
        ) {
            let Some(t) = Template::of(data.as_bytes()) else {
                return Err(TestCaseError::reject("no template"));
            };
            let other = refill(&data, &fill);
            prop_assert!(t.fits(other.as_bytes()), "{:?}", other);
            let keys = ["a", "t", "at", "n"];
            prop_assert_eq!(
                verdict_of(data.as_bytes(), &keys),
                verdict_of(other.as_bytes(), &keys),
                "{:?} / {:?}", data, other
            );
        }
    }
}
