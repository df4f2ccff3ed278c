//! Request fields several formats share: declared tools and the output-token cap.

use serde_json::Value;

use super::doc::{Doc, Node};

/// A tool the request offered the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredTool {
    /// Tool name.
    pub name: String,
    /// JSON Schema of its arguments (null when none was given).
    pub schema: ToolSchema,
    /// Its calls carry free text or an action, not JSON arguments (a `custom` tool, a client-run
    /// tool such as `shell`): they are checked by name only.
    pub free_form: bool,
}

/// A declared tool's JSON Schema, kept as JSON text: an agent declares its tools on every call,
/// and a schema is read into a `Value` only when a tool call is checked against it (compiled
/// once per distinct text). The text is the schema's own in the body where the document placed
/// it (a copy, nothing re-written), else the compact JSON of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolSchema(Option<Box<str>>);

impl ToolSchema {
    /// The schema at `node` of a request's document (`null`: none).
    pub fn of_node(node: Node<'_>) -> Self {
        if node.is_null() {
            return Self::default();
        }
        match node.raw_json() {
            Some(text) => Self(Some(text.into())),
            None => Self(
                serde_json::to_string(&node)
                    .ok()
                    .map(String::into_boxed_str),
            ),
        }
    }

    /// Whether none was given (or `null`).
    pub fn is_null(&self) -> bool {
        self.0.is_none()
    }

    /// The JSON text (`null` when none was given).
    pub fn text(&self) -> &str {
        self.0.as_deref().unwrap_or("null")
    }

    /// The schema as a `Value`.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.text()).unwrap_or(Value::Null)
    }
}

impl From<Value> for ToolSchema {
    fn from(v: Value) -> Self {
        match v {
            Value::Null => Self::default(),
            v => Self(serde_json::to_string(&v).ok().map(String::into_boxed_str)),
        }
    }
}

/// A request body as inspection has it: its bytes, or the document the proxy parsed already.
#[derive(Debug, Clone, Copy)]
pub enum RequestBody<'a> {
    /// The raw bytes (a JSON object).
    Bytes(&'a [u8]),
    /// The document read from them (a JSON object).
    Doc(super::doc::Node<'a>),
}

/// The output cap and declared tools of a format that keeps them where the shared reading does
/// not look (Bedrock Converse's `inferenceConfig.maxTokens` and `toolConfig.tools`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnFields {
    /// Output-token cap the request set.
    pub max_tokens: Option<u64>,
    /// Tools the request declared.
    pub tools: Vec<DeclaredTool>,
}

/// What the `max_tokens` cap did to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capped {
    /// At or under the cap: unchanged.
    Within,
    /// Over the cap: rewritten to it.
    Clamped,
    /// No value set: the cap was added.
    Added,
}

/// The output-token fields [`clamp`] reads at a request's root, and those it reads one object
/// down.
const CAP_FIELDS: [&str; 3] = ["max_tokens", "max_completion_tokens", "max_output_tokens"];
const NESTED_CAP_FIELDS: [(&str, &str); 2] = [
    ("generationConfig", "maxOutputTokens"),
    ("options", "num_predict"),
];

/// What [`clamp`] makes of a request that sets no output-token field, as text: `doc` (a JSON
/// object) with `"key":limit` as its first member, for a format whose `field` lies at the root.
/// The rest of the body stays byte for byte as it was read, and no `Value` of the conversation
/// is built and written out again. `None` where `clamp` would do more (a field is set, even to
/// something not a number) or the field is nested: rewrite through [`clamp`].
pub(super) fn cap_added_text(
    doc: &Doc,
    limit: u64,
    field: (Option<&'static str>, &'static str),
) -> Option<Vec<u8>> {
    let (None, key) = field else {
        return None;
    };
    // One walk of the root's members (a lookup per field walked them five times).
    let mut empty = true;
    for (k, v) in doc.root().entries()? {
        empty = false;
        if CAP_FIELDS.contains(&k) {
            return None;
        }
        if let Some((_, inner)) = NESTED_CAP_FIELDS.iter().find(|(outer, _)| *outer == k) {
            if v.get(inner).is_some() {
                return None;
            }
        }
    }
    // The document's text is one JSON object: its first byte past whitespace opens it.
    let text = doc.bytes();
    let open = text.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = text.get(open..)?.strip_prefix(b"{")?;
    let limit = limit.to_string();
    let mut out = Vec::with_capacity(rest.len() + key.len() + limit.len() + 6);
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(limit.as_bytes());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Some(out)
}

/// Rewrite every output-token field of the request above `limit` to `limit` (whichever format
/// names it, the fields request inspection reads); with none set, add `field`, the format's
/// `(enclosing object, key)`. `requested` is what inspection read.
pub(super) fn clamp(
    doc: &mut Value,
    requested: Option<u64>,
    limit: u64,
    field: (Option<&'static str>, &'static str),
) -> Capped {
    let Some(obj) = doc.as_object_mut() else {
        return Capped::Within;
    };
    if requested.is_some_and(|r| r <= limit) {
        return Capped::Within;
    }
    let over = |v: &Value| v.as_u64().is_none_or(|n| n > limit);
    let mut changed = false;
    for key in CAP_FIELDS {
        if let Some(v) = obj.get_mut(key).filter(|v| over(v)) {
            *v = Value::from(limit);
            changed = true;
        }
    }
    for (outer, inner) in NESTED_CAP_FIELDS {
        if let Some(v) = obj
            .get_mut(outer)
            .and_then(|o| o.get_mut(inner))
            .filter(|v| over(v))
        {
            *v = Value::from(limit);
            changed = true;
        }
    }
    if changed {
        return Capped::Clamped;
    }
    let (outer, key) = field;
    let target = match outer {
        None => Some(obj),
        Some(o) => obj
            .entry(o)
            .or_insert_with(|| Value::Object(serde_json::Map::new()))
            .as_object_mut(),
    };
    match target {
        Some(t) => {
            t.insert(key.into(), Value::from(limit));
            Capped::Added
        }
        None => Capped::Within,
    }
}
