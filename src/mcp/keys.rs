//! Member names as Go MCP servers read them. mark3labs/mcp-go decodes messages with Go's
//! `encoding/json`, which matches a member to a field case-insensitively (Unicode simple case
//! folding: `Method`, `ID`, `paramſ` all match) and lets the last of several matching members
//! win; the proxy reads members by their exact names. A message such a server could read
//! otherwise than the proxy does — `"method":"ping","Method":"tools/call"` runs as a tool call
//! there — is refused as an invalid request instead: one whose members fold to a name the proxy
//! reads (`jsonrpc`, `method`, `id`, `params`; in a `tools/call`'s params `name` and `arguments`)
//! without being it, or give one such name twice.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Names the proxy reads of every message.
const MESSAGE: [&str; 4] = ["jsonrpc", "method", "id", "params"];

/// Names the proxy reads of a `tools/call`'s params.
const CALL_PARAMS: [&str; 2] = ["name", "arguments"];

/// Longest member name that can fold to one of ours (`arguments`, each character spelled in its
/// longest UTF-8 form): longer names are not compared.
const MAX_FOLDED_NAME: usize = 9 * 4;

/// Check every message of a body (one message or a batch) that parsed as JSON already;
/// `tools_call` is the method whose params' names are checked too (the message reader's name
/// for it, passed in: this module is the reader's helper and imports nothing of it).
pub(super) fn check(bytes: &[u8], tools_call: &str) -> Result<(), &'static str> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match de.deserialize_any(Body(tools_call)) {
        Ok(verdict) => verdict,
        // The body parsed once already; a second reading that fails is not one to pass.
        Err(_) => Err("the body could not be read"),
    }
}

/// The names among `keys` that fold to one of `names`: each must be that name exactly, once.
fn check_names(keys: &[String], names: &[&str]) -> Result<(), &'static str> {
    let mut found = [0usize; 4];
    for key in keys.iter().filter(|k| k.len() <= MAX_FOLDED_NAME) {
        let folded = fold(key);
        if let Some(i) = names.iter().position(|n| *n == folded) {
            if key != names[i] {
                return Err("a member's name differs from a JSON-RPC or MCP member's only in case");
            }
            found[i] += 1;
            if found[i] > 1 {
                return Err("a JSON-RPC or MCP member is given twice");
            }
        }
    }
    Ok(())
}

/// `s` case-folded at least as far as Go's `strings.EqualFold` folds: upper then lower case
/// (`ſ` → `S` → `s`, the Kelvin sign → `k`). Folding further only refuses more.
fn fold(s: &str) -> String {
    s.chars()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

/// A body: one message or an array of them; anything else is left to the message reader.
struct Body<'m>(&'m str);

impl<'de> Visitor<'de> for Body<'_> {
    type Value = Result<(), &'static str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-RPC message or batch")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Message(self.0).visit_map(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut verdict = Ok(());
        while let Some(v) = seq.next_element_seed(Element(self.0))? {
            if verdict.is_ok() {
                verdict = v;
            }
        }
        Ok(verdict)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
}

/// One element of a batch: a message when it is an object.
struct Element<'m>(&'m str);

impl<'de> DeserializeSeed<'de> for Element<'_> {
    type Value = Result<(), &'static str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(Body(self.0))
    }
}

/// One message's members: the names checked, `method` and the names of `params` kept.
struct Message<'m>(&'m str);

impl<'de> Visitor<'de> for Message<'_> {
    type Value = Result<(), &'static str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-RPC message")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = Vec::new();
        let mut method = None;
        let mut params = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "method" => {
                    method = map
                        .next_value::<serde_json::Value>()?
                        .as_str()
                        .map(str::to_string)
                }
                "params" => params = map.next_value::<Names>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            keys.push(key);
        }
        let verdict = check_names(&keys, &MESSAGE).and_then(|()| match (method, params) {
            (Some(m), Some(p)) if m == self.0 => check_names(&p, &CALL_PARAMS),
            _ => Ok(()),
        });
        Ok(verdict)
    }
}

/// The member names of an object (`None` for any other value).
struct Names(Option<Vec<String>>);

impl<'de> serde::Deserialize<'de> for Names {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NamesVisitor)
    }
}

struct NamesVisitor;

impl<'de> Visitor<'de> for NamesVisitor {
    type Value = Names;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Names, A::Error> {
        let mut keys = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<IgnoredAny>()?;
            keys.push(key);
        }
        Ok(Names(Some(keys)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Names, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Names(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Names, E> {
        Ok(Names(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Names, E> {
        Ok(Names(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Names, E> {
        Ok(Names(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Names, E> {
        Ok(Names(None))
    }
    fn visit_str<E>(self, _: &str) -> Result<Names, E> {
        Ok(Names(None))
    }
    fn visit_unit<E>(self) -> Result<Names, E> {
        Ok(Names(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_go_server_reads_otherwise_are_refused() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","Method":"tools/call","params":{"name":"delete_customer_data","arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_knowledge_base","Name":"delete_customer_data"}}"#,
            r#"{"jsonrpc":"2.0","ID":1,"method":"tools/call","params":{"name":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","paramſ":{"name":"x"},"params":{"name":"y"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","Arguments":{}}}"#,
            r#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":1,"METHOD":"tools/call"}]"#,
        ] {
            assert!(check(body.as_bytes(), "tools/call").is_err(), "{body}");
        }
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"Name":1,"name":2},"_meta":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"Name":"x"}}"#,
            r#"[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","method":"x","params":[1]}]"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"ID":2}}"#,
        ] {
            assert_eq!(check(body.as_bytes(), "tools/call"), Ok(()), "{body}");
        }
    }
}
