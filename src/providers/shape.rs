//! Shape rules and JSON scanning several providers share.

use memchr::memmem::Finder;
use serde::Deserialize;

/// Whether a stated reasoning count lies outside the stated output count. OpenAI's shape counts
/// reasoning inside `completion_tokens` (total = input + output); xAI's counts it beside
/// (total = input + output + reasoning). The stated total decides, so the rule holds whichever
/// gateway (OpenRouter, LiteLLM, ...) relays the body.
pub(super) fn reasoning_outside(
    input: Option<u64>,
    output: Option<u64>,
    reasoning: Option<u64>,
    total: Option<u64>,
) -> bool {
    match (input, output, reasoning, total) {
        (Some(i), Some(o), Some(r), Some(t)) => {
            r > 0 && i.checked_add(o).and_then(|s| s.checked_add(r)) == Some(t)
        }
        _ => false,
    }
}

/// Take `value` into `slot` unless `slot` already holds one or `value` is empty: an empty model
/// or id (Azure's first stream chunk carries `"model":""`) is no value, and a later one wins.
pub(super) fn set_once(slot: &mut Option<String>, value: Option<&str>) {
    if slot.is_none() {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            *slot = Some(v.to_owned());
        }
    }
}

/// The deployment an Azure OpenAI path names (`/openai/deployments/{name}/...`): the model a
/// request names when its body does not (read for every format, as before).
pub(super) fn azure_deployment(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/openai/deployments/")?;
    rest.split('/').next().filter(|d| !d.is_empty())
}

/// A member that is there, whatever its value: with `#[serde(default, deserialize_with =
/// ...)]`, a missing key stays `None` and a present one (`null` too) is `Some` (a plain
/// `Option` reads `null` as absent).
pub(super) fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// `value` unless it is empty.
pub(super) fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// Cache writes by lifetime, as Anthropic (`usage.cache_creation`) and DashScope
/// (`prompt_tokens_details.cache_creation`) state them.
#[cfg_attr(test, derive(PartialEq))]
#[derive(Debug, Deserialize, Default, Clone, Copy)]
pub(super) struct CacheCreation {
    #[serde(default)]
    ephemeral_5m_input_tokens: Option<u64>,
    #[serde(default)]
    pub(super) ephemeral_1h_input_tokens: Option<u64>,
}

impl CacheCreation {
    /// Every write the breakdown states, when it states any.
    pub(super) fn total(&self) -> Option<u64> {
        match (
            self.ephemeral_5m_input_tokens,
            self.ephemeral_1h_input_tokens,
        ) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
        }
    }
}

/// `{"error": {...}}` as OpenAI, Anthropic (inside `{"type":"error"}`) and Gemini send it.
#[cfg_attr(test, derive(PartialEq))]
#[derive(Debug, Deserialize)]
pub(super) struct ErrorObj {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

impl ErrorObj {
    pub(super) fn error_type(&self) -> String {
        if let Some(t) = self.kind.as_ref().or(self.status.as_ref()) {
            return t.clone();
        }
        match &self.code {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => "error".to_string(),
        }
    }
}

/// Compact JSON of a value, keys in the order sent (Anthropic `input`, Gemini `args`).
pub(super) fn compact(v: &serde_json::Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The raw bytes from the start of the value of key `key` (a searcher for the key with its
/// quotes, e.g. `"usage"`) in a JSON object's raw bytes, if the key occurs. Inside JSON strings
/// every quote is escaped, so a quoted key followed by `:` can only be a key; this lets hot paths
/// skip a full parse of events that carry nothing but output text.
pub(super) fn value_at<'a>(data: &'a [u8], key: &Finder<'static>) -> Option<&'a [u8]> {
    let klen = key.needle().len();
    let mut from = 0;
    while let Some(i) = key.find(&data[from..]) {
        let rest = &data[from + i + klen..];
        let rest = trim_start(rest);
        if let Some(value) = rest.strip_prefix(b":") {
            return Some(trim_start(value));
        }
        from += i + klen;
    }
    None
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

/// Whether any occurrence of key `key` (at any depth) has a value starting with a byte `first`
/// accepts: a cheap test before parsing an event whose key may appear in several places.
pub(super) fn any_value(data: &[u8], key: &Finder<'static>, first: impl Fn(u8) -> bool) -> bool {
    any_value_where(data, key, |v| v.first().is_some_and(|b| first(*b)))
}

/// Whether any occurrence of key `key` (at any depth) has a value whose raw bytes (from its
/// first byte to the end of `data`) `test` accepts.
pub(super) fn any_value_where(
    data: &[u8],
    key: &Finder<'static>,
    test: impl Fn(&[u8]) -> bool,
) -> bool {
    let klen = key.needle().len();
    let mut from = 0;
    while let Some(i) = key.find(&data[from..]) {
        let rest = trim_start(&data[from + i + klen..]);
        if let Some(value) = rest.strip_prefix(b":") {
            if test(trim_start(value)) {
                return true;
            }
        }
        from += i + klen;
    }
    false
}

/// Whether `data` holds a `\u` escape. A key or value searched for as raw bytes (`"tool_calls"`,
/// `"tool_use"`) can also be written with its letters escaped (`"tool\u005fcalls"`), which every
/// JSON parser reads back as the same name: an event holding one cannot be judged by search and
/// is parsed. (The other escapes stand for quotes, backslashes, `/` and control characters, which
/// no name searched for holds.)
pub(super) fn has_unicode_escape(data: &[u8]) -> bool {
    memchr::memmem::find(data, b"\\u").is_some()
}

/// An SSE event's type as the SDKs act on it: its data's top-level `type`, else (data without
/// one) its `event:` name (`None` when it has neither). The SDKs dispatch on the data's `type`
/// once they have read an event, so a name that says otherwise would have the event judged as
/// something it is not: `Err` (the event cannot be read safely), as is data that is JSON but
/// whose `type` cannot be read (not a string; stated twice, where parsers differ on which wins).
/// Data that is not a JSON object is named by its `event:` name: no SDK reads a call from it.
pub(super) fn event_kind<'a>(
    event: &'a [u8],
    data: &'a [u8],
) -> Result<Option<std::borrow::Cow<'a, str>>, Conflict> {
    use std::borrow::Cow;
    #[derive(Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Option<Cow<'a, str>>,
    }
    let named = (event != b"message")
        .then(|| std::str::from_utf8(event).ok())
        .flatten();
    let typed = match serde_json::from_slice::<Typed<'_>>(data) {
        Ok(t) => t.kind,
        // An object whose `type` cannot be read; other data no SDK reads a call from.
        Err(e) if e.is_data() && data.trim_ascii_start().starts_with(b"{") => return Err(Conflict),
        Err(_) => return Ok(named.map(Cow::Borrowed)),
    };
    match (named, typed) {
        (Some(n), Some(t)) if n != t => Err(Conflict),
        (_, Some(t)) => Ok(Some(t)),
        (n, None) => Ok(n.map(Cow::Borrowed)),
    }
}

/// An event whose `event:` name and data's `type` disagree, or whose `type` cannot be read.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Conflict;

/// The first byte of the value of `key`, if the key occurs.
#[cfg(test)]
pub(super) fn value_start(data: &[u8], key: &Finder<'static>) -> Option<u8> {
    value_at(data, key).and_then(|v| v.first().copied())
}

/// Whether `key` holds a non-empty string (`"..."` with at least one character).
#[cfg(test)]
pub(super) fn non_empty_string(data: &[u8], key: &Finder<'static>) -> bool {
    value_at(data, key).is_some_and(|v| v.len() > 1 && v[0] == b'"' && v[1] != b'"')
}

/// A quoted JSON key with its searcher built once (building one costs more than a search).
macro_rules! json_key {
    ($name:ident, $key:literal) => {
        static $name: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(concat!("\"", $key, "\"")));
    };
}
pub(crate) use json_key;

#[cfg(test)]
mod scan_tests {
    use super::*;

    json_key!(USAGE, "usage");
    json_key!(CONTENT, "content");

    #[test]
    fn finds_values_not_text_inside_strings() {
        let d = br#"{"choices":[{"delta":{"content":"say \"usage\": 1"}}],"usage" : null}"#;
        assert_eq!(value_start(d, &USAGE), Some(b'n'));
        assert!(non_empty_string(d, &CONTENT));
        assert!(!non_empty_string(br#"{"content":""}"#, &CONTENT));
        assert!(!non_empty_string(br#"{"content":null}"#, &CONTENT));
        assert_eq!(value_start(br#"{"a":1}"#, &USAGE), None);
    }
}
