//! The OpenAI chat stream usage rewrite: a chat stream states usage only when the request asks
//! for it (`stream_options.include_usage`), so the proxy asks, and strips what the client did
//! not ask for (event by event, on the response side).

/// The request body with `stream_options.include_usage` set to true, for an OpenAI chat stream
/// whose client did not ask for usage. A body that does not name `stream_options` at its root
/// (`named`, from the request's facts, read from this body: a JSON object) gets the field after
/// its opening brace, every other byte as sent and the body not parsed again (a whole
/// conversation, on every such streamed call); one that names it is parsed and the field set.
pub fn with_include_usage(body: &[u8], named: bool) -> Option<Vec<u8>> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    let after_brace = body.get(start..)?.strip_prefix(b"{")?;
    if !named {
        let empty = after_brace.trim_ascii_start().starts_with(b"}");
        let mut out = Vec::with_capacity(body.len() + 40);
        out.extend_from_slice(&body[..=start]);
        out.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
        out.extend_from_slice(if empty { b"" } else { b"," });
        out.extend_from_slice(&body[start + 1..]);
        return Some(out);
    }
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
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
        let out = with_include_usage(body, false).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#" {"stream_options":{"include_usage":true},"model":"m", "stream":true,"messages":[]}"#
        );
        assert_eq!(
            with_include_usage(b" { } ", false).as_deref(),
            Some(&br#" {"stream_options":{"include_usage":true} } "#[..])
        );
        let out = with_include_usage(
            br#"{"stream":true,"stream_options":{"include_usage":false,"x":1}}"#,
            true,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["stream_options"],
            serde_json::json!({"include_usage": true, "x": 1})
        );
        assert!(with_include_usage(b"[1]", false).is_none());
    }
}
