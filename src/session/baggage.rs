//! W3C Baggage (`baggage` header): one of the places an agent's session id can come from.
//!
//! Only the lookup of one key is needed, so this is a scanner, not a full baggage model:
//! `key1=value1;prop,key2=value2`, whitespace around members, values percent-encoded.

/// The percent-decoded value of `key` in a `baggage` header value, if present and non-empty.
pub fn get(header: &str, key: &str) -> Option<String> {
    for member in header.split(',') {
        // Properties after `;` belong to the member, not its value.
        let kv = member.split(';').next().unwrap_or_default();
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        if k.trim() != key {
            continue;
        }
        // Whitespace decoded from `%20` is as empty as none: such a value names nothing.
        let v = percent_decode(v.trim())?;
        let v = v.trim();
        return (!v.is_empty()).then(|| v.to_string());
    }
    None
}

/// Decode `%XX` escapes; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::get;

    #[test]
    fn finds_the_key_among_members_and_properties() {
        let h = "userId=alice, session.id = s%2042 ;ttl=3,other=x";
        assert_eq!(get(h, "session.id").as_deref(), Some("s 42"));
        assert_eq!(get(h, "userId").as_deref(), Some("alice"));
        assert_eq!(get(h, "missing"), None);
        assert_eq!(get("session.id=", "session.id"), None);
        assert_eq!(
            get("task.id=%20", "task.id"),
            None,
            "whitespace names nothing"
        );
        assert_eq!(get("task.id=%20t%20", "task.id").as_deref(), Some("t"));
        assert_eq!(get("session.id=%zz", "session.id"), None);
        assert_eq!(get("garbage,,;=", "session.id"), None);
    }
}
