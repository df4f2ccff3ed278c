//! Hiding the usage the proxy asked for on the client's behalf in an OpenAI chat stream: the
//! usage-only chunk (top-level `choices` an empty array and `usage` an object) is dropped and the
//! top-level `"usage": null` member is removed from every other chunk, so the client receives the
//! stream the provider would have sent it. Decided on the parsed event, whatever JSON whitespace
//! or key order the server writes (Python's `json.dumps` writes `"choices": []`); the bytes of a
//! kept event are copied as sent, minus that one member — never re-serialised. The compact endings
//! OpenAI and most servers write on every chunk (`…,"usage":null}`, or followed by OpenAI's
//! `"obfuscation"` padding) are read from the end of the event without a parse
//! ([`compact_null_usage`]): a parse of each event was most of what a stream cost.

use std::sync::LazyLock;

use bytes::BytesMut;
use memchr::memmem;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::sse::{self, raw};

/// The top-level members a decision needs, as their exact bytes in the event's data.
#[derive(Deserialize)]
struct Members<'a> {
    #[serde(default, borrow)]
    choices: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "crate::providers::shape::present")]
    usage: Option<&'a RawValue>,
}

/// Copy one event's raw `span` (its decoded data is `data`) to `out`: dropped if it is the
/// usage-only chunk, without its top-level `"usage": null` member otherwise, else unchanged.
/// True when the event was dropped.
pub(super) fn rewrite_event(span: &[u8], data: &[u8], out: &mut BytesMut) -> bool {
    if sse::is_done(data) {
        out.extend_from_slice(span);
        return false;
    }
    if let Some(member) = compact_null_usage(data) {
        remove(span, data, Some(member), out);
        return false;
    }
    rewrite_parsed(span, data, out)
}

/// The `"usage"` key, searched for with one searcher built once.
static USAGE_KEY: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"usage\""));

/// [`rewrite_event`] decided on the parsed event: any spacing, any place of the member.
fn rewrite_parsed(span: &[u8], data: &[u8], out: &mut BytesMut) -> bool {
    // A cheap search first: only events naming `usage` can need a change.
    if USAGE_KEY.find(data).is_none() {
        out.extend_from_slice(span);
        return false;
    }
    let Ok(m) = serde_json::from_slice::<Members<'_>>(data) else {
        out.extend_from_slice(span); // not a JSON object: not ours to change
        return false;
    };
    let Some(usage) = m.usage else {
        out.extend_from_slice(span);
        return false;
    };
    let usage_only = usage.get().starts_with('{')
        && m.choices.is_some_and(|c| {
            serde_json::from_str::<Vec<serde::de::IgnoredAny>>(c.get()).is_ok_and(|v| v.is_empty())
        });
    if usage_only {
        // Comment blocks before the event (keep-alives) and the LF of a preceding CRLF stay.
        out.extend_from_slice(&span[..raw::event_start(span)]);
        return true;
    }
    let member = (usage.get() == "null")
        .then(|| member_span(data, usage))
        .flatten();
    remove(span, data, member, out);
    false
}

/// Copy `span` to `out` without the bytes `member` of its data (a range of `data`), when the
/// data lies in one line of the span (else the event goes as sent).
fn remove(span: &[u8], data: &[u8], member: Option<(usize, usize)>, out: &mut BytesMut) {
    // Servers write each chunk on one `data:` line: one walk of the span places the member.
    let removal = member.and_then(|(a, b)| match raw::single_data_line_of(span, data) {
        Some((start, len)) => (len == data.len()).then_some((start + a, start + b)),
        None if raw::data_len(span) == data.len() => {
            Some((raw::data_pos(span, a)?, raw::data_pos(span, b)?))
        }
        None => None,
    });
    match removal {
        Some((a, b)) => {
            out.extend_from_slice(&span[..a]);
            out.extend_from_slice(&span[b..]);
        }
        None => out.extend_from_slice(span),
    }
}

/// The bytes of a chunk's top-level `,"usage":null` member, read from the end of its data in
/// the compact forms servers write: `{…,"usage":null}` or `{…,"usage":null,"obfuscation":"…"}`
/// (letters and digits of padding). The last brace of a JSON object closes it, so the member
/// before it (or before the padding) is one of its own, and these bytes cannot lie in a string,
/// where every quote is escaped. `None`: decide on the parsed event. Read without a parse, a
/// malformed chunk with this ending, or one repeating its top-level `usage` key, loses the member
/// too, where the parse would have passed it as sent: either is the upstream's malformation.
fn compact_null_usage(data: &[u8]) -> Option<(usize, usize)> {
    const MEMBER: &[u8] = b",\"usage\":null";
    const PADDING: &[u8] = b",\"obfuscation\":\"";
    let first = data.iter().position(|b| !b.is_ascii_whitespace())?;
    let last = data.iter().rposition(|b| !b.is_ascii_whitespace())?;
    if data[first] != b'{' || data[last] != b'}' {
        return None;
    }
    let mut before = &data[..last];
    if let Some(value) = before.strip_suffix(b"\"") {
        let quote = value.iter().rposition(|b| !b.is_ascii_alphanumeric())?;
        before = value[..=quote].strip_suffix(PADDING)?;
    }
    let start = before.len().checked_sub(MEMBER.len())?;
    before.ends_with(MEMBER).then_some((start, before.len()))
}

/// The bytes of `data` to remove to delete the top-level member `"usage": <value>` (`value` is
/// its parsed value, a slice of `data`) with the comma that separates it from its neighbours.
fn member_span(data: &[u8], value: &RawValue) -> Option<(usize, usize)> {
    let v_start = (value.get().as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
    let v_end = v_start + value.get().len();
    if v_end > data.len() {
        return None;
    }
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let skip_back = |mut i: usize| {
        while i > 0 && ws(&data[i - 1]) {
            i -= 1;
        }
        i
    };
    let colon = skip_back(v_start).checked_sub(1)?;
    let key_end = skip_back(colon);
    let key_start = key_end.checked_sub(br#""usage""#.len())?;
    if data[colon] != b':' || &data[key_start..key_end] != br#""usage""# {
        return None; // an escaped key: leave the event as sent
    }
    let before = skip_back(key_start).checked_sub(1)?;
    match data[before] {
        // Not the first member: remove from the comma before it.
        b',' => Some((before, v_end)),
        // The first member: remove up to the next member (or to the closing brace).
        b'{' => {
            let mut i = v_end;
            while data.get(i).is_some_and(ws) {
                i += 1;
            }
            if data.get(i) == Some(&b',') {
                i += 1;
                while data.get(i).is_some_and(ws) {
                    i += 1;
                }
                Some((key_start, i))
            } else {
                Some((key_start, v_end))
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    /// JSON values whose keys and strings often spell `usage`, `null` and the padding's name.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i32>().prop_map(Value::from),
            "(usage|null|obfuscation|\"|\\\\|:|,|\\}|[a-z0-9 ]){0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::vec(("(usage|choices|obfuscation|[a-c])", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// A chunk: members of its own, then perhaps a top-level `usage` of some kind and OpenAI's
    /// padding after it.
    fn chunk() -> impl Strategy<Value = Map<String, Value>> {
        (
            prop::collection::vec(("(choices|[a-d])", value()), 0..4),
            prop_oneof![
                Just(None),
                Just(Some(Value::Null)),
                Just(Some(serde_json::json!({"total_tokens": 4}))),
                Just(Some(Value::from(7))),
            ],
            proptest::option::of("[A-Za-z0-9]{0,12}"),
        )
            .prop_map(|(members, usage, padding)| {
                let mut m: Map<String, Value> = members.into_iter().collect();
                if let Some(u) = usage {
                    m.insert("usage".into(), u);
                }
                if let Some(p) = padding {
                    m.insert("obfuscation".into(), Value::from(p));
                }
                m
            })
    }

    proptest! {
        #[test]
        fn the_compact_ending_decides_as_the_parse_does(m in chunk(), pretty in any::<bool>()) {
            let v = Value::Object(m);
            let data = if pretty {
                serde_json::to_string_pretty(&v).unwrap().replace('\n', " ")
            } else {
                serde_json::to_string(&v).unwrap()
            };
            let span = format!("data: {data}\n\n");
            let (mut fast, mut parsed) = (BytesMut::new(), BytesMut::new());
            let dropped = rewrite_event(span.as_bytes(), data.as_bytes(), &mut fast);
            let want = rewrite_parsed(span.as_bytes(), data.as_bytes(), &mut parsed);
            prop_assert_eq!(dropped, want);
            prop_assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&parsed),
                "{}", data
            );
        }
    }

    #[test]
    fn compact_endings_are_read_without_a_parse_and_others_are_not() {
        let cases: [(&str, Option<&str>); 8] = [
            (
                r#"{"id":"c","choices":[],"usage":null}"#,
                Some(r#"{"id":"c","choices":[]}"#),
            ),
            (
                r#"{"choices":[{"delta":{}}],"usage":null,"obfuscation":"Ab3"}"#,
                Some(r#"{"choices":[{"delta":{}}],"obfuscation":"Ab3"}"#),
            ),
            // Nested, first member, spaced, inside a string, padding that is not letters and
            // digits: for the parse to decide.
            (r#"{"a":{"b":1,"usage":null}}"#, None),
            (r#"{"usage":null}"#, None),
            (r#"{"a":1, "usage": null}"#, None),
            (r#"{"s":"x\",\"usage\":null"}"#, None),
            (r#"{"a":1,"usage":null,"obfuscation":"a-b"}"#, None),
            (r#"[1,"usage":null}"#, None),
        ];
        for (data, want) in cases {
            let got = compact_null_usage(data.as_bytes())
                .map(|(a, b)| format!("{}{}", &data[..a], &data[b..]));
            assert_eq!(got.as_deref(), want, "{data}");
        }
    }
}
