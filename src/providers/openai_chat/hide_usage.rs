//! Hiding the usage the proxy asked for on the client's behalf in an OpenAI chat stream: the
//! usage-only chunk (top-level `choices` an empty array and `usage` an object) is dropped and the
//! top-level `"usage": null` member is removed from every other chunk, so the client receives the
//! stream the provider would have sent it. Decided on the parsed event, whatever JSON whitespace
//! or key order the server writes (Python's `json.dumps` writes `"choices": []`); the bytes of a
//! kept event are copied as sent, minus that one member — never re-serialised.

use bytes::BytesMut;
use memchr::memmem;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::sse::{self, raw};

/// The top-level members a decision needs, as their exact bytes in the event's data.
#[derive(Deserialize)]
struct Members<'a> {
    #[serde(default, borrow)]
    choices: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    usage: Option<&'a RawValue>,
}

/// A member that is present, `null` included (a plain `Option` would read `null` as absent).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Copy one event's raw `span` (its decoded data is `data`) to `out`: dropped if it is the
/// usage-only chunk, without its top-level `"usage": null` member otherwise, else unchanged.
/// True when the event was dropped.
pub(super) fn rewrite_event(span: &[u8], data: &[u8], out: &mut BytesMut) -> bool {
    // A cheap search first: only events naming `usage` can need a change (most do, since the
    // provider puts `"usage":null` on every chunk once usage is requested).
    if sse::is_done(data) || memmem::find(data, b"\"usage\"").is_none() {
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
    let removal = (usage.get() == "null")
        .then(|| member_span(data, usage))
        .flatten()
        .filter(|_| raw::data_len(span) == data.len())
        .and_then(|(a, b)| Some((raw::data_pos(span, a)?, raw::data_pos(span, b)?)));
    match removal {
        Some((a, b)) => {
            out.extend_from_slice(&span[..a]);
            out.extend_from_slice(&span[b..]);
        }
        None => out.extend_from_slice(span),
    }
    false
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
