//! The OpenAI chat stream usage rewrite: a chat stream states usage only when the request asks
//! for it (`stream_options.include_usage`), so the proxy asks, and strips what the client did
//! not ask for (event by event, on the response side).

use crate::providers::shape::{json_key, value_at};

json_key!(STREAM_OPTIONS, "stream_options");

/// The request body with `stream_options.include_usage` set to true, for an OpenAI chat stream
/// whose client did not ask for usage. The common case (no `stream_options`) inserts the field
/// after the opening brace and leaves every other byte as sent.
///
/// `body` is one the request's facts were read from (a stream is a JSON object, checked there).
/// A quoted key followed by `:` can only be a key, so a body where `"stream_options"` is never
/// one has none at its root: the field goes in without parsing the body again (a whole
/// conversation, on every streamed call). Where it is one (at the root or deeper) the body is
/// parsed to tell.
pub fn with_include_usage(body: &[u8]) -> Option<Vec<u8>> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    let after_brace = body.get(start..)?.strip_prefix(b"{")?;
    // The parsed body, when it names `stream_options` at its root.
    let mut named = None;
    if value_at(body, &STREAM_OPTIONS).is_some() {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        if v.as_object()?.contains_key("stream_options") {
            named = Some(v);
        }
    }
    let Some(mut v) = named else {
        let empty = after_brace.trim_ascii_start().starts_with(b"}");
        let mut out = Vec::with_capacity(body.len() + 40);
        out.extend_from_slice(&body[..=start]);
        out.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
        out.extend_from_slice(if empty { b"" } else { b"," });
        out.extend_from_slice(&body[start + 1..]);
        return Some(out);
    };
    let so = v.as_object_mut()?.get_mut("stream_options")?;
    if !so.is_object() {
        *so = serde_json::Value::Object(serde_json::Map::new());
    }
    so.as_object_mut()?
        .insert("include_usage".into(), serde_json::Value::Bool(true));
    serde_json::to_vec(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_usage_is_added_with_the_rest_untouched() {
        let body = br#" {"model":"m", "stream":true,"messages":[]}"#;
        let out = with_include_usage(body).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#" {"stream_options":{"include_usage":true},"model":"m", "stream":true,"messages":[]}"#
        );
        let out = with_include_usage(
            br#"{"stream":true,"stream_options":{"include_usage":false,"x":1}}"#,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["stream_options"],
            serde_json::json!({"include_usage": true, "x": 1})
        );
        assert!(with_include_usage(b"[1]").is_none());
    }

    /// What the rewrite did when it parsed every body: the field inserted as text unless the
    /// root names `stream_options`, else set in the parsed body.
    fn parsing_every_body(body: &[u8]) -> Option<Vec<u8>> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        if v.as_object()?.contains_key("stream_options") {
            return with_include_usage(body);
        }
        let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
        let sep: &[u8] = if v.as_object()?.is_empty() { b"" } else { b"," };
        Some(
            [
                &body[..=start],
                br#""stream_options":{"include_usage":true}"#,
                sep,
                &body[start + 1..],
            ]
            .concat(),
        )
    }

    #[test]
    fn a_body_naming_stream_options_only_deeper_or_in_text_is_not_parsed_differently() {
        for body in [
            r#"{}"#,
            r#" { } "#,
            r#"{"stream":true,"tools":[{"type":"function","function":{"name":"f","parameters":{"properties":{"stream_options":{"type":"object"}}}}}]}"#,
            r#"{"messages":[{"role":"user","content":"set \"stream_options\": {} please"}],"stream":true}"#,
            r#"{"stream":true, "stream_options" : null}"#,
            r#"{"stream":true,"stream_options":{}}"#,
            r#"{"a":{"stream_options":1},"stream_options":{"include_usage":false}}"#,
        ] {
            let got = with_include_usage(body.as_bytes());
            assert_eq!(got, parsing_every_body(body.as_bytes()), "{body}");
            let v: serde_json::Value =
                serde_json::from_slice(&got.unwrap_or_default()).unwrap_or_default();
            assert_eq!(v["stream_options"]["include_usage"], true, "{body}");
        }
    }
}
