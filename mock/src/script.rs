//! Scripted conversations (`x-mock-script`): the mock plays the model's side of an agent loop,
//! reading the conversation the request carries to decide what this turn answers.
//!
//! `agent-loop`: unless the conversation ends with tool results (OpenAI chat: `tool` messages;
//! Responses: `function_call_output` items; Anthropic: `tool_result` blocks in the last user
//! message; Gemini: `functionResponse` parts in the last user content), the turn is a tool call
//! (one, or `x-mock-tool-calls` parallel ones) to the tools the request declares, in order, with
//! arguments built from their schemas and no text; when it does, the turn is the usual final
//! text. A new user message after a final answer starts the loop again. Ids carry the turn number (assistant turns already in the request, plus
//! one), so they never repeat within a conversation. Input tokens are a tokenizer count of the
//! request's strings, so they grow with the prompt.

use serde_json::{Map, Value};

/// A named script (`x-mock-script` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Script {
    /// `agent-loop`: tool call, then (once its result is sent) the final answer.
    AgentLoop,
}

/// Error for an unknown script name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mock script {0:?} (expected one of: agent-loop, none)")]
pub struct UnknownScript(pub String);

impl Script {
    /// The header spelling of this script.
    pub fn as_str(self) -> &'static str {
        match self {
            Script::AgentLoop => "agent-loop",
        }
    }

    /// Parses a header value; `none` (or an empty value) means "no script".
    pub fn parse_setting(s: &str) -> Result<Option<Script>, UnknownScript> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("none") {
            Ok(None)
        } else if s.eq_ignore_ascii_case(Script::AgentLoop.as_str()) {
            Ok(Some(Script::AgentLoop))
        } else {
            Err(UnknownScript(s.to_owned()))
        }
    }
}

/// The wire format a scripted request's conversation is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Chat,
    Responses,
    Anthropic,
    Gemini,
}

/// What the request's conversation says about the turn to play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Turn {
    /// 1 + the assistant turns already in the request.
    pub(crate) number: u32,
    /// The request answers the last tool call with its result.
    pub(crate) answered: bool,
    /// Declared function tools in order: name and JSON arguments fitting the schema.
    pub(crate) tools: Vec<(String, String)>,
    /// Tokenizer count of every string value in the body.
    pub(crate) input_tokens: u64,
}

/// Text tokenized exactly; longer bodies are extrapolated (bounded cost per request).
const EXACT_BYTES: usize = 64 * 1024;
/// How deep schemas are followed (`$ref` cycles, nested objects).
const MAX_SCHEMA_DEPTH: u32 = 8;

/// Reads the conversation of a request body (lenient: not JSON reads as an empty conversation).
pub(crate) fn read(dialect: Dialect, body: &[u8]) -> Turn {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let (assistant_turns, answered) = match dialect {
        Dialect::Chat => chat_state(&v),
        Dialect::Responses => responses_state(&v),
        Dialect::Anthropic => anthropic_state(&v),
        Dialect::Gemini => gemini_state(&v),
    };
    Turn {
        number: u32::try_from(assistant_turns)
            .unwrap_or(u32::MAX - 1)
            .saturating_add(1),
        answered,
        tools: declared_tools(dialect, &v)
            .map(|(name, schema)| (name.to_owned(), arguments(schema)))
            .collect(),
        input_tokens: count_strings(&v),
    }
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn role(m: &Value) -> &str {
    str_field(m, "role")
}

/// Whether the conversation ends with a tool result: its last item (system / developer
/// instructions aside) is one. A new user message after a result starts a new task.
fn ends_with_result(items: &[Value], is_result: impl Fn(&Value) -> bool) -> bool {
    items
        .iter()
        .rfind(|i| !matches!(role(i), "system" | "developer"))
        .is_some_and(is_result)
}

/// Chat: the last message is a `tool` (or legacy `function`) result.
fn chat_state(v: &Value) -> (usize, bool) {
    let msgs = list(v, "messages");
    let assistants = msgs.iter().filter(|m| role(m) == "assistant").count();
    let answered = ends_with_result(msgs, |m| matches!(role(m), "tool" | "function"));
    (assistants, answered)
}

/// Responses: the last item is a `function_call_output`. A request that
/// continues a stored response (`previous_response_id`) carries only outputs: they count as turns.
fn responses_state(v: &Value) -> (usize, bool) {
    let items = list(v, "input");
    let is_call = |i: &Value| str_field(i, "type") == "function_call";
    let is_output = |i: &Value| str_field(i, "type") == "function_call_output";
    let assistants = items
        .iter()
        .filter(|i| is_call(i) || role(i) == "assistant")
        .count();
    let turns = if assistants == 0 {
        items.iter().filter(|i| is_output(i)).count()
    } else {
        assistants
    };
    (turns, ends_with_result(items, is_output))
}

/// Anthropic: a `tool_result` block in the last user message.
fn anthropic_state(v: &Value) -> (usize, bool) {
    let msgs = list(v, "messages");
    let assistants = msgs.iter().filter(|m| role(m) == "assistant").count();
    let answered = msgs.iter().rfind(|m| role(m) == "user").is_some_and(|m| {
        list(m, "content")
            .iter()
            .any(|b| str_field(b, "type") == "tool_result")
    });
    (assistants, answered)
}

/// Gemini: a `functionResponse` part in the last content not from the model.
fn gemini_state(v: &Value) -> (usize, bool) {
    let contents = list(v, "contents");
    let models = contents.iter().filter(|c| role(c) == "model").count();
    let answered = contents
        .iter()
        .rfind(|c| role(c) != "model")
        .is_some_and(|c| {
            list(c, "parts").iter().any(|p| {
                p.get("functionResponse").is_some() || p.get("function_response").is_some()
            })
        });
    (models, answered)
}

/// Declared function tools: name and parameter schema, in the request's order.
fn declared_tools(dialect: Dialect, v: &Value) -> Box<dyn Iterator<Item = (&str, &Value)> + '_> {
    fn name(t: &Value) -> Option<&str> {
        t.get("name").and_then(Value::as_str)
    }
    let tools = list(v, "tools");
    let is_function = |t: &Value| {
        t.get("type")
            .and_then(Value::as_str)
            .is_none_or(|ty| ty == "function")
    };
    match dialect {
        Dialect::Chat => Box::new(
            tools
                .iter()
                .filter(move |t| is_function(t))
                .filter_map(|t| t.get("function"))
                .chain(list(v, "functions"))
                .filter_map(move |f| Some((name(f)?, f.get("parameters").unwrap_or(&Value::Null)))),
        ),
        Dialect::Responses => Box::new(
            tools
                .iter()
                .filter(move |t| is_function(t))
                .filter_map(move |t| Some((name(t)?, t.get("parameters").unwrap_or(&Value::Null)))),
        ),
        // Client tools carry an `input_schema`; server tools (web search, ...) only a type.
        Dialect::Anthropic => Box::new(
            tools
                .iter()
                .filter_map(move |t| Some((name(t)?, t.get("input_schema")?))),
        ),
        Dialect::Gemini => Box::new(
            tools
                .iter()
                .flat_map(|t| {
                    list(t, "functionDeclarations")
                        .iter()
                        .chain(list(t, "function_declarations"))
                })
                .filter_map(move |d| {
                    let schema = [
                        "parameters",
                        "parametersJsonSchema",
                        "parameters_json_schema",
                    ]
                    .iter()
                    .find_map(|k| d.get(*k))
                    .unwrap_or(&Value::Null);
                    Some((name(d)?, schema))
                }),
        ),
    }
}

/// JSON arguments for a tool with this parameter schema: always an object.
pub(crate) fn arguments(schema: &Value) -> String {
    let value = match sample(schema, schema, 0) {
        v @ Value::Object(_) => v,
        _ => Value::Object(Map::new()),
    };
    value.to_string()
}

/// A simple deterministic value fitting `schema`: the first `enum` / `const` / `anyOf` choice,
/// objects with their required properties, strings `"mock"`, numbers 1, booleans true.
fn sample(schema: &Value, root: &Value, depth: u32) -> Value {
    if depth > MAX_SCHEMA_DEPTH {
        return Value::Null;
    }
    if let Some(target) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|pointer| root.pointer(pointer))
    {
        return sample(target, root, depth + 1);
    }
    if let Some(first) = list(schema, "enum").first() {
        return first.clone();
    }
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = list(schema, key)
            .iter()
            .find(|s| schema_type(s).as_deref() != Some("null"))
        {
            return sample(first, root, depth + 1);
        }
    }
    let ty = schema_type(schema).unwrap_or_else(|| {
        if schema.get("properties").is_some() {
            "object".to_owned()
        } else {
            "string".to_owned()
        }
    });
    match ty.as_str() {
        "object" => {
            let props = schema.get("properties");
            let mut out = Map::new();
            for key in list(schema, "required").iter().filter_map(Value::as_str) {
                let prop = props.and_then(|p| p.get(key)).unwrap_or(&Value::Null);
                out.insert(key.to_owned(), sample(prop, root, depth + 1));
            }
            Value::Object(out)
        }
        "array" => {
            let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            let item = schema.get("items").unwrap_or(&Value::Null);
            Value::Array(
                (0..min.min(4))
                    .map(|_| sample(item, root, depth + 1))
                    .collect(),
            )
        }
        "integer" | "number" => Value::from(1),
        "boolean" => Value::Bool(true),
        "null" => Value::Null,
        _ => Value::from("mock"),
    }
}

/// The schema's type in lower case (Gemini writes `STRING`), the first non-null of a list.
fn schema_type(schema: &Value) -> Option<String> {
    let ty = match schema.get("type")? {
        Value::String(s) => s.as_str(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .find(|t| !t.eq_ignore_ascii_case("null"))
            .or_else(|| a.first().and_then(Value::as_str))?,
        _ => return None,
    };
    Some(ty.to_ascii_lowercase())
}

/// o200k tokens of every string value in `v` (newline-separated), exact up to [`EXACT_BYTES`]
/// of text and extrapolated past it.
fn count_strings(v: &Value) -> u64 {
    let mut text = String::new();
    let mut total = 0usize;
    collect_strings(v, &mut text, &mut total);
    let head = tiktoken_rs::o200k_base_singleton()
        .encode_ordinary(&text)
        .len() as u64;
    let rest = total.saturating_sub(text.len()) as u64;
    head + (rest * head).div_ceil(text.len().max(1) as u64)
}

fn collect_strings(v: &Value, text: &mut String, total: &mut usize) {
    match v {
        Value::String(s) => {
            *total += s.len() + 1;
            if text.len() < EXACT_BYTES {
                let mut cut = (EXACT_BYTES - text.len()).min(s.len());
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.push_str(&s[..cut]);
                text.push('\n');
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, text, total)),
        Value::Object(o) => o.values().for_each(|x| collect_strings(x, text, total)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_round_trip() {
        assert_eq!(
            Script::parse_setting(" Agent-Loop "),
            Ok(Some(Script::AgentLoop))
        );
        assert_eq!(Script::parse_setting("none"), Ok(None));
        assert_eq!(Script::parse_setting(""), Ok(None));
        assert!(Script::parse_setting("chaos").is_err());
    }

    #[test]
    fn arguments_fit_simple_schemas() {
        let schema = json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
                "hourly": {"type": ["boolean", "null"]},
                "where": {"$ref": "#/$defs/Place"},
                "note": {"type": "string"}
            },
            "required": ["city", "unit", "days", "hourly", "where"],
            "$defs": {"Place": {"type": "object", "properties": {"lat": {"type": "number"}}, "required": ["lat"]}}
        });
        let args: Value = serde_json::from_str(&arguments(&schema)).unwrap();
        assert_eq!(
            args,
            json!({"city": "mock", "unit": "celsius", "days": 1, "hourly": true, "where": {"lat": 1}})
        );
        let gemini =
            json!({"type": "OBJECT", "properties": {"q": {"type": "STRING"}}, "required": ["q"]});
        assert_eq!(arguments(&gemini), r#"{"q":"mock"}"#);
        assert_eq!(arguments(&Value::Null), "{}");
        let cyclic = json!({"$ref": "#"});
        assert_eq!(arguments(&cyclic), "{}");
    }

    #[test]
    fn turns_are_read_per_format() {
        let chat = json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "a"}]},
            {"role": "tool", "tool_call_id": "a", "content": "ok"}
        ], "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]});
        let t = read(Dialect::Chat, chat.to_string().as_bytes());
        assert_eq!((t.number, t.answered), (2, true));
        assert_eq!(t.tools, vec![("f".to_owned(), "{}".to_owned())]);
        let mut next = chat.clone();
        next["messages"].as_array_mut().unwrap().extend([
            json!({"role": "assistant", "content": "done"}),
            json!({"role": "user", "content": "again"}),
        ]);
        let t = read(Dialect::Chat, next.to_string().as_bytes());
        assert_eq!(
            (t.number, t.answered),
            (3, false),
            "a new task after the answer"
        );

        let responses = json!({"input": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "web_search"}, {"type": "function", "name": "g"}]});
        let t = read(Dialect::Responses, responses.to_string().as_bytes());
        assert_eq!((t.number, t.answered), (1, false));
        assert_eq!(t.tools[0].0, "g");

        let anthropic = json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "x"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x"}]}
        ]});
        let t = read(Dialect::Anthropic, anthropic.to_string().as_bytes());
        assert_eq!((t.number, t.answered), (2, true));

        let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "tools": [{"functionDeclarations": [{"name": "h"}]}]});
        let t = read(Dialect::Gemini, gemini.to_string().as_bytes());
        assert_eq!((t.number, t.answered), (1, false));
        assert_eq!(t.tools[0].0, "h");

        let t = read(Dialect::Chat, b"not json");
        assert_eq!((t.number, t.answered, t.input_tokens), (1, false, 0));
    }

    #[test]
    fn input_tokens_follow_the_text() {
        let short = count_strings(&json!({"m": "hello"}));
        let long = count_strings(&json!({"m": "hello world, this is a longer prompt"}));
        assert!(short >= 1 && long > short);
        let huge = "word ".repeat(40_000);
        let n = count_strings(&json!([huge]));
        assert!((30_000..50_000).contains(&n), "{n}");
    }
}
