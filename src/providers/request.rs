//! What the request says about the call before it goes upstream: which response format to
//! expect, the requested model and whether a stream was asked for — the generic reading, which
//! asks the format's [`Adapter`](super::Adapter) where formats differ (model and stream from the
//! path, the stream default, tool shapes, the cap field, the stream usage rewrite).
//!
//! The body is parsed once, into the union of the fields the formats name (output caps, the
//! end-user field, `stream_options`); each is read whatever the format, as compatible servers
//! and gateways mix them.

use std::borrow::Cow;

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::doc::{Doc, Items, Node};
use super::fields::RequestBody;
pub use super::fields::{Capped, DeclaredTool, ToolSchema};
use super::latest::Latest;
use super::protocol::Classified;
use super::registry::Format;
use std::cell::RefCell;

/// Facts read from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    /// Response format to parse, when the call is one we understand.
    pub format: Format,
    /// Model named by the request (body `model`, Gemini path, Azure deployment).
    pub model: Option<String>,
    /// The request asked for a stream.
    pub stream: bool,
    /// The request asked for usage in the stream (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The body names `stream_options` at its root, whatever its value (`null` included), its
    /// key read as serde_json reads keys (escapes too).
    pub stream_options: bool,
    /// Output cap the request set (`max_tokens`, `max_completion_tokens`, `max_output_tokens`,
    /// Gemini `generationConfig.maxOutputTokens`, Ollama `options.num_predict`).
    pub max_tokens: Option<u64>,
    /// Output choices the request asks for, each up to `max_tokens` (`n`, `best_of`, Gemini
    /// `generationConfig.candidateCount`; 1 when none is set).
    pub choices: u64,
    /// Tools the request declared, with their JSON Schemas.
    pub tools: Vec<DeclaredTool>,
    /// End-user / session field of the body (OpenAI `user`, Anthropic `metadata.user_id`).
    pub user: Option<String>,
}

/// The fields read; `tools` items are unread (`IgnoredAny`, only the field's shape checked):
/// the document holds them.
#[derive(Deserialize)]
struct Body<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    /// Outer `Some`: the key is there (`null` reads as `Some(None)`).
    #[serde(default, deserialize_with = "super::shape::present")]
    stream_options: Option<Option<StreamOptions>>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    best_of: Option<u64>,
    #[serde(default, rename = "generationConfig")]
    generation_config: Option<GenerationConfig>,
    #[serde(default)]
    options: Option<OllamaOptions>,
    #[serde(default)]
    tools: Option<Vec<IgnoredAny>>,
    /// Chat Completions' legacy function calling (`functions: [{name, parameters}]`).
    #[serde(default)]
    functions: Option<Vec<IgnoredAny>>,
    #[serde(default, borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    metadata: Option<Metadata<'a>>,
}

#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(default, borrow)]
    user_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct GenerationConfig {
    #[serde(default, rename = "maxOutputTokens", alias = "max_output_tokens")]
    max_output_tokens: Option<u64>,
    #[serde(default, rename = "candidateCount", alias = "candidate_count")]
    candidate_count: Option<u64>,
}

#[derive(Deserialize)]
struct OllamaOptions {
    /// Negative: no cap (-1 unlimited, -2 the context's fill), read as none set.
    #[serde(default)]
    num_predict: Option<i64>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Inspect a request on an upstream `path` (prefix already stripped) with `query`.
pub fn inspect(
    class: &Classified,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Option<RequestFacts> {
    let format = class.format?;
    // Only JSON objects are read; anything else is forwarded and simply not inspected.
    let object = is_object(body);
    let parsed = if object {
        serde_json::from_slice::<Body<'_>>(body).ok()
    } else {
        None
    };
    // Declared tools are read from a document of the body (built only when there are some).
    let doc = parsed
        .as_ref()
        .filter(|b| b.tools.is_some() || b.functions.is_some())
        .and_then(|_| Doc::parse(Bytes::copy_from_slice(body)).ok());
    let tools = doc.as_ref().and_then(|d| d.root().get("tools"));
    let functions = doc.as_ref().and_then(|d| d.root().get("functions"));
    let own = object.then_some(RequestBody::Bytes(body));
    Some(facts(
        format,
        path,
        query,
        parsed.as_ref(),
        (tools, functions),
        own,
    ))
}

/// `tools` arrays read lately: their format and JSON text, what they declare.
type Declared = Latest<(Format, Box<str>), Vec<DeclaredTool>>;

/// `tools` arrays remembered per thread.
const DECLARED_KEPT: usize = 4;

thread_local! {
    /// `tools` arrays read on this thread lately.
    static DECLARED: RefCell<Declared> = const { RefCell::new(Latest::new(DECLARED_KEPT)) };
}

/// Longer `tools` texts are read every time (not kept).
const DECLARED_TEXT_MAX: usize = 256 * 1024;

/// The tools `tools` (an array of a request's document) declares, as `read` (the format's
/// reading) says: remembered per thread by format and JSON text, as an agent declares the same
/// tools on every call (reading 20 declarations — names, schemas' texts — cost ~15 k
/// instructions; a comparison of their text and a copy of the list, a fraction of it).
fn declared_once(
    format: Format,
    tools: Node<'_>,
    read: impl FnOnce(Items<'_>) -> Vec<DeclaredTool>,
) -> Vec<DeclaredTool> {
    let Some(items) = tools.items() else {
        return Vec::new();
    };
    let Some(text) = tools.raw_json().filter(|t| t.len() <= DECLARED_TEXT_MAX) else {
        return read(items);
    };
    let known = DECLARED.with(|d| {
        d.borrow_mut()
            .get(|(f, t)| *f == format && **t == *text)
            .cloned()
    });
    if let Some(tools) = known {
        return tools;
    }
    let declared = read(items);
    DECLARED.with(|d| d.borrow_mut().put((format, text.into()), declared.clone()));
    declared
}

/// Whether a body is a JSON object by its first byte (only objects are read).
pub fn is_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// [`inspect`] of a body the proxy read already into `doc` (a JSON object): the same facts,
/// read from the document instead of the bytes (the policies then use the same document).
pub fn inspect_doc(
    class: &Classified,
    path: &str,
    query: Option<&str>,
    doc: &Doc,
) -> Option<RequestFacts> {
    let format = class.format?;
    let root = doc.root();
    let parsed = Body::deserialize(root).ok();
    // The field's shape was checked by the typed read; its items are the document's own.
    let tools = parsed
        .as_ref()
        .and_then(|b| b.tools.as_ref())
        .and_then(|_| root.get("tools"));
    let functions = parsed
        .as_ref()
        .and_then(|b| b.functions.as_ref())
        .and_then(|_| root.get("functions"));
    let own = root.is_object().then_some(RequestBody::Doc(root));
    Some(facts(
        format,
        path,
        query,
        parsed.as_ref(),
        (tools, functions),
        own,
    ))
}

/// The facts of a request in `format`, from its typed read (`None`: not a JSON object, or not
/// one of the expected shape), its `tools` array and the body itself (`own`: for a format that
/// keeps the cap and tools under its own names).
fn facts(
    format: Format,
    path: &str,
    query: Option<&str>,
    parsed: Option<&Body<'_>>,
    (tools, functions): (Option<Node<'_>>, Option<Node<'_>>),
    own: Option<RequestBody<'_>>,
) -> RequestFacts {
    let adapter = format.adapter();
    let model = adapter.requested_model(path, parsed.and_then(|b| b.model.as_deref()));
    let stream = adapter.requested_stream(path, query, parsed.and_then(|b| b.stream));
    let stream_options = parsed.is_some_and(|b| b.stream_options.is_some());
    let include_usage = parsed
        .and_then(|b| b.stream_options.as_ref())
        .and_then(|o| o.as_ref()?.include_usage)
        .unwrap_or(false);
    // Every cap field the body sets, the largest: a server obeys its own one (SGLang takes
    // `max_completion_tokens` before `max_tokens`, Ollama only `options.num_predict`), so a
    // small decoy in another field must not make the call look capped lower than it is.
    let max_tokens = parsed.and_then(|b| {
        [
            b.max_tokens,
            b.max_completion_tokens,
            b.max_output_tokens,
            b.generation_config
                .as_ref()
                .and_then(|g| g.max_output_tokens),
            b.options
                .as_ref()
                .and_then(|o| o.num_predict)
                .and_then(|n| u64::try_from(n).ok()),
        ]
        .into_iter()
        .flatten()
        .max()
    });
    let choices = parsed.map_or(1, |b| {
        [
            b.n,
            b.best_of,
            b.generation_config.as_ref().and_then(|g| g.candidate_count),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(1)
        .max(1)
    });
    let mut tools = tools
        .map(|t| declared_once(format, t, |items| adapter.declared_tools(items)))
        .unwrap_or_default();
    if let Some(items) = functions.and_then(Node::items) {
        // Legacy function calling's declarations, `{name, parameters}`: held to the same lists.
        tools.extend(super::tools::declared(items));
    }
    let mut max_tokens = max_tokens;
    if let Some(own) = own.and_then(|b| adapter.own_request_fields(b)) {
        max_tokens = own.max_tokens.or(max_tokens);
        tools.extend(own.tools);
    }
    let user = parsed.and_then(|b| {
        b.user
            .as_deref()
            .or(b.metadata.as_ref().and_then(|m| m.user_id.as_deref()))
            .map(str::to_string)
    });
    RequestFacts {
        format,
        model,
        stream,
        include_usage,
        stream_options,
        max_tokens,
        choices,
        tools,
        user,
    }
}

/// The request rewritten to ask for usage in its stream, when it is a stream that states none
/// unless asked (an OpenAI chat stream without `stream_options.include_usage`).
pub fn ask_stream_usage(facts: &RequestFacts, body: &[u8]) -> Option<Vec<u8>> {
    let stream_options = facts.stream_options.then_some(facts.include_usage);
    facts
        .format
        .adapter()
        .ask_stream_usage(facts.stream, stream_options, body)
}

/// Estimated input tokens of a request body in `format`: its text (messages, system prompt,
/// tool definitions, tool calls and results), framing per message, and a fixed count per media
/// part. A body that is not JSON counts as text.
pub fn estimate_input(format: Format, body: &[u8]) -> u64 {
    crate::tokens::estimate(&format.adapter().request_text(body))
}

/// [`estimate_input`] of a body already parsed into `doc` (a JSON object): the same count,
/// without a second parse.
pub fn estimate_input_doc(format: Format, doc: super::Node<'_>) -> u64 {
    crate::tokens::estimate(&format.adapter().request_text_doc(doc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::protocol::{classify, RouteProtocol};
    use proptest::strategy::Strategy as _;
    use serde_json::json;
    use serde_json::Value;

    fn facts(path: &str, query: Option<&str>, body: &str) -> Option<RequestFacts> {
        inspect(
            &classify(RouteProtocol::Auto, path),
            path,
            query,
            body.as_bytes(),
        )
    }

    #[test]
    fn declared_tools_are_read_once_per_text_and_format() {
        use crate::providers::Doc;
        fn tools(d: &Doc) -> Node<'_> {
            d.root().get("tools").unwrap()
        }
        let body = |name: &str| {
            Doc::of(
                &json!({"tools": [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}]}),
            )
        };
        let reads = std::cell::Cell::new(0);
        let read = |items: Items<'_>| {
            reads.set(reads.get() + 1);
            super::super::tools::declared(items)
        };
        let a = body("lookup");

        let first = declared_once(Format::OpenAiChat, tools(&a), read);
        assert_eq!(first[0].name, "lookup");
        assert_eq!(first[0].schema.text(), r#"{"type":"object"}"#);
        // The same text again, in another document: remembered.
        let again = body("lookup");
        assert_eq!(
            declared_once(Format::OpenAiChat, tools(&again), read),
            first
        );
        assert_eq!(reads.get(), 1);
        // Another format, or another text: read.
        declared_once(Format::OpenAiResponses, tools(&again), read);
        assert_eq!(reads.get(), 2);
        let other = declared_once(Format::OpenAiChat, tools(&body("other")), read);
        assert_eq!((other[0].name.as_str(), reads.get()), ("other", 3));
        // At most DECLARED_KEPT texts are kept: the oldest goes first.
        for n in 0..DECLARED_KEPT {
            declared_once(Format::OpenAiChat, tools(&body(&format!("t{n}"))), read);
        }
        assert_eq!(DECLARED.with(|d| d.borrow().len()), DECLARED_KEPT);
        let before = reads.get();
        declared_once(Format::OpenAiChat, tools(&a), read);
        assert_eq!(reads.get(), before + 1, "lookup was forgotten");
    }

    #[test]
    fn reads_model_and_stream() {
        let f = facts(
            "/v1/chat/completions",
            None,
            r#"{"model":"gpt-4o","stream":true,"messages":[]}"#,
        )
        .unwrap();
        assert_eq!(
            (f.format, f.model.as_deref(), f.stream),
            (Format::OpenAiChat, Some("gpt-4o"), true)
        );
        let f = facts("/v1/responses", None, r#"{"model":"gpt-4.1","input":"x"}"#).unwrap();
        assert_eq!((f.format, f.stream), (Format::OpenAiResponses, false));
        let f = facts("/v1/messages", None, r#"{"model":"claude","stream":true}"#).unwrap();
        assert_eq!(f.format, Format::Anthropic);
        assert!(facts("/v1/models", None, "").is_none());
    }

    /// The largest cap field is the call's cap (a server obeys its own one, not the first the
    /// proxy reads), and every choice the request asks for may run to it.
    #[test]
    fn the_largest_cap_and_every_choice_count() {
        let chat = "/v1/chat/completions";
        let f = facts(
            chat,
            None,
            r#"{"model":"m","max_tokens":16,"max_completion_tokens":100000,"n":8}"#,
        )
        .unwrap();
        assert_eq!((f.max_tokens, f.choices), (Some(100_000), 8));
        let f = facts(chat, None, r#"{"model":"m","max_tokens":16}"#).unwrap();
        assert_eq!((f.max_tokens, f.choices), (Some(16), 1));
        let f = facts(
            "/v1/completions",
            None,
            r#"{"model":"m","max_tokens":10,"n":2,"best_of":5}"#,
        )
        .unwrap();
        assert_eq!(f.choices, 5);
        let g = "/v1beta/models/gemini-2.5-flash:generateContent";
        let f = facts(
            g,
            None,
            r#"{"generationConfig":{"maxOutputTokens":64,"candidateCount":4}}"#,
        )
        .unwrap();
        assert_eq!((f.max_tokens, f.choices), (Some(64), 4));
        let f = facts(g, None, r#"{"generation_config":{"max_output_tokens":64}}"#).unwrap();
        assert_eq!(f.max_tokens, None, "snake case at the root is not Gemini's");
        let f = facts(
            g,
            None,
            r#"{"generationConfig":{"max_output_tokens":64,"candidate_count":2}}"#,
        )
        .unwrap();
        assert_eq!((f.max_tokens, f.choices), (Some(64), 2));
        // Ollama obeys `options.num_predict` only; -1 (no cap) no longer voids the whole read.
        let f = facts(
            "/api/chat",
            None,
            r#"{"model":"llama3","max_tokens":16,"options":{"num_predict":100000}}"#,
        )
        .unwrap();
        assert_eq!(f.max_tokens, Some(100_000));
        let f = facts(
            "/api/chat",
            None,
            r#"{"model":"llama3","options":{"num_predict":-1}}"#,
        )
        .unwrap();
        assert_eq!((f.model.as_deref(), f.max_tokens), (Some("llama3"), None));
    }

    #[test]
    fn gemini_model_and_stream_come_from_the_path() {
        let p = "/v1beta/models/gemini-2.5-flash:streamGenerateContent";
        let f = facts(p, Some("alt=sse"), "{}").unwrap();
        assert_eq!(
            (f.model.as_deref(), f.stream),
            (Some("gemini-2.5-flash"), true)
        );
        let f = facts(p, None, "{}").unwrap();
        assert!(!f.stream, "without alt=sse the stream is a JSON array");
    }

    #[test]
    fn azure_deployment_names_the_model() {
        let f = facts(
            "/openai/deployments/prod-gpt4/chat/completions",
            Some("api-version=1"),
            r#"{"messages":[]}"#,
        )
        .unwrap();
        assert_eq!(f.model.as_deref(), Some("prod-gpt4"));
    }

    /// What asking a stream for usage gave when it parsed every body into a `Value`: the
    /// field inserted as text unless the root names `stream_options`, else set in the parsed
    /// body.
    fn parsing_every_body(body: &[u8]) -> Option<Vec<u8>> {
        let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
        if let Some(so) = v.as_object_mut()?.get_mut("stream_options") {
            if !so.is_object() {
                *so = serde_json::json!({});
            }
            so.as_object_mut()?
                .insert("include_usage".into(), serde_json::Value::Bool(true));
            return serde_json::to_vec(&v).ok();
        }
        let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
        let sep: &[u8] = if v.as_object()?.is_empty() { b"" } else { b"," };
        let field = br#""stream_options":{"include_usage":true}"#;
        Some([&body[..=start], field, sep, &body[start + 1..]].concat())
    }

    #[test]
    fn a_stream_is_asked_for_usage_as_when_every_body_was_parsed() {
        for body in [
            r#"{"stream":true}"#,
            r#" {"stream":true, "messages":[]} "#,
            // Named deeper (a tool's schema), or in text: not at the root.
            r#"{"stream":true,"tools":[{"type":"function","function":{"name":"f","parameters":{"properties":{"stream_options":{"type":"object"}}}}}]}"#,
            r#"{"messages":[{"role":"user","content":"set \"stream_options\": {} please"}],"stream":true}"#,
            // At the root: null, empty, asking for no usage, its key escaped.
            r#"{"stream":true, "stream_options" : null}"#,
            r#"{"stream":true,"stream_options":{}}"#,
            r#"{"a":{"stream_options":1},"stream_options":{"include_usage":false}}"#,
            r#"{"stream":true,"stream\u005foptions":{"include_usage":false}}"#,
        ] {
            let path = "/v1/chat/completions";
            let f = facts(path, None, body).unwrap();
            let doc = Doc::parse(Bytes::from(body)).unwrap();
            let class = classify(RouteProtocol::Auto, path);
            assert_eq!(
                inspect_doc(&class, path, None, &doc).as_ref(),
                Some(&f),
                "{body}"
            );
            if !f.stream {
                continue;
            }
            let got = ask_stream_usage(&f, body.as_bytes());
            assert_eq!(got, parsing_every_body(body.as_bytes()), "{body}");
            let v: serde_json::Value = serde_json::from_slice(&got.unwrap_or_default()).unwrap();
            assert_eq!(v["stream_options"]["include_usage"], true, "{body}");
        }
    }

    proptest::proptest! {
        /// Bodies of any shape whose keys spell `stream_options` (plain or escaped) at any
        /// depth, written compact or spaced: asked for usage as when every body was parsed.
        #[test]
        fn any_stream_is_asked_for_usage_as_when_every_body_was_parsed(
            members in proptest::collection::vec(
                (
                    "(stream_options|stream|messages|a)",
                    proptest::prop_oneof![
                        proptest::strategy::Just(json!(null)),
                        proptest::strategy::Just(json!({})),
                        proptest::strategy::Just(json!({"include_usage": false, "x": 1})),
                        proptest::strategy::Just(json!([{"stream_options": {}}])),
                        "[a-z\"\\ :]{0,12}".prop_map(Value::from),
                    ],
                ),
                0..5,
            ),
            escaped in proptest::bool::ANY,
            spaced in proptest::bool::ANY,
        ) {
            let mut obj = serde_json::Map::new();
            for (k, v) in members {
                obj.insert(k, v);
            }
            obj.insert("stream".into(), json!(true));
            let mut body = if spaced {
                serde_json::to_string_pretty(&Value::Object(obj)).unwrap_or_default()
            } else {
                serde_json::to_string(&Value::Object(obj)).unwrap_or_default()
            };
            if escaped {
                body = body.replacen("\"stream_options\"", "\"stream\\u005foptions\"", 1);
            }
            let f = facts("/v1/chat/completions", None, &body).unwrap();
            // A `stream_options` that is not an object (or `null`) fails the typed read: no
            // stream is seen, and nothing asked, as before.
            if !f.stream {
                return Ok(());
            }
            let got = ask_stream_usage(&f, body.as_bytes());
            proptest::prop_assert_eq!(&got, &parsing_every_body(body.as_bytes()), "{}", body);
            if !f.include_usage {
                let out: Value = serde_json::from_slice(&got.unwrap_or_default()).unwrap_or_default();
                proptest::prop_assert_eq!(&out["stream_options"]["include_usage"], &json!(true));
            }
        }
    }

    #[test]
    fn include_usage_is_read() {
        let f = facts(
            "/v1/chat/completions",
            None,
            r#"{"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert!(f.include_usage);
    }

    #[test]
    fn max_tokens_and_declared_tools_in_every_shape() {
        let f = facts(
            "/v1/chat/completions",
            None,
            r#"{"model":"m","max_completion_tokens":99,"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}"#,
        )
        .unwrap();
        assert_eq!(f.max_tokens, Some(99));
        assert_eq!(f.tools[0].name, "get_weather");
        assert_eq!(
            f.tools[0].schema.to_value(),
            serde_json::json!({"type": "object"})
        );
        let f = facts("/v1/responses", None, r#"{"max_output_tokens":7,"tools":[{"type":"function","name":"a","parameters":{}},{"type":"web_search"}]}"#).unwrap();
        assert_eq!((f.max_tokens, f.tools.len()), (Some(7), 1));
        let f = facts("/v1/messages", None, r#"{"max_tokens":64,"tools":[{"name":"b","input_schema":{"type":"object","required":["x"]}}]}"#).unwrap();
        assert_eq!(f.max_tokens, Some(64));
        assert_eq!(f.tools[0].schema.to_value()["required"][0], "x");
        let f = facts(
            "/v1beta/models/g:generateContent",
            None,
            r#"{"generationConfig":{"maxOutputTokens":128},"tools":[{"functionDeclarations":[{"name":"c","parameters":{}},{"name":"d"}]}]}"#,
        )
        .unwrap();
        assert_eq!(f.max_tokens, Some(128));
        assert_eq!(
            f.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["c", "d"]
        );
        let f = facts(
            "/api/chat",
            None,
            r#"{"model":"llama3.2","options":{"num_predict":256}}"#,
        )
        .unwrap();
        assert_eq!((f.max_tokens, f.stream), (Some(256), true));
    }

    #[test]
    fn body_user_fields() {
        let f = facts("/v1/chat/completions", None, r#"{"user":"u-7"}"#).unwrap();
        assert_eq!(f.user.as_deref(), Some("u-7"));
        let f = facts("/v1/messages", None, r#"{"metadata":{"user_id":"a-1"}}"#).unwrap();
        assert_eq!(f.user.as_deref(), Some("a-1"));
    }

    #[test]
    fn the_parsed_document_gives_the_same_facts_and_estimate_as_the_bytes() {
        let bodies = [
            (
                "/v1/chat/completions",
                r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":9,"user":"u","tools":[{"type":"function","function":{"name":"a","parameters":{"type":"object"}}}],"messages":[{"role":"user","content":"hi there"}]}"#,
            ),
            (
                "/v1/messages",
                r#"{"model":"claude","max_tokens":64,"metadata":{"user_id":"x"},"tools":[{"name":"b","input_schema":{}}],"system":"be brief","messages":[{"role":"user","content":[{"type":"text","text":"hello"},{"type":"image","source":{"type":"base64","data":"AAAA"}}]}]}"#,
            ),
            (
                "/v1beta/models/g:generateContent",
                r#"{"generationConfig":{"maxOutputTokens":128},"contents":[{"role":"user","parts":[{"text":"q"}]}]}"#,
            ),
            (
                "/api/chat",
                r#"{"model":"llama3.2","options":{"num_predict":256},"messages":[]}"#,
            ),
            // A field of the wrong shape: neither reading takes any field.
            (
                "/v1/chat/completions",
                r#"{"model":"m","stream":"yes","tools":{"x":1}}"#,
            ),
            ("/v1/chat/completions", r#"{"model":"m","tools":null}"#),
        ];
        for (path, body) in bodies {
            let class = classify(RouteProtocol::Auto, path);
            let doc = Doc::parse(Bytes::from(body)).unwrap();
            let from_doc = inspect_doc(&class, path, None, &doc).unwrap();
            assert_eq!(from_doc, facts(path, None, body).unwrap(), "{body}");
            let format = from_doc.format;
            assert_eq!(
                estimate_input_doc(format, doc.root()),
                estimate_input(format, body.as_bytes()),
                "{body}"
            );
        }
    }

    #[test]
    fn cached_chunk_counts_equal_the_plain_count_over_the_corpus_requests() {
        // Every recorded request's text, then all of them joined (many chunk cuts between
        // real messages): the cached count is the tokenizer's count of the whole text.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/corpus");
        let mut all = Vec::new();
        for format in std::fs::read_dir(dir).unwrap() {
            let format = format.unwrap().path();
            if !format.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(format).unwrap() {
                let path = file.unwrap().path();
                if path.to_string_lossy().ends_with(".request.json") {
                    let body = std::fs::read(&path).unwrap();
                    all.push(super::super::text::request_text(&body).text);
                }
            }
        }
        assert!(all.len() > 20, "{} corpus requests", all.len());
        all.push(all.join("\n"));
        for t in &all {
            assert_eq!(crate::tokens::count_request(t), crate::tokens::count(t));
        }
    }

    #[test]
    fn non_json_bodies_are_not_an_error() {
        let f = facts("/v1/chat/completions", None, "not json").unwrap();
        assert_eq!(f.model, None);
    }

    fn clamp_in(d: &mut Value, format: Format, requested: Option<u64>, limit: u64) -> Capped {
        format.adapter().clamp_max_tokens(d, requested, limit)
    }

    #[test]
    fn clamps_adds_or_leaves() {
        let mut d = json!({"max_tokens": 9000});
        assert_eq!(
            clamp_in(&mut d, Format::Anthropic, Some(9000), 1000),
            Capped::Clamped
        );
        assert_eq!(d["max_tokens"], 1000);
        let mut d = json!({"max_tokens": 10});
        assert_eq!(
            clamp_in(&mut d, Format::Anthropic, Some(10), 1000),
            Capped::Within
        );
        let mut d = json!({"messages": []});
        assert_eq!(
            clamp_in(&mut d, Format::OpenAiChat, None, 1000),
            Capped::Added
        );
        assert_eq!(d["max_completion_tokens"], 1000);
        let mut d = json!({"contents": []});
        assert_eq!(clamp_in(&mut d, Format::Gemini, None, 5), Capped::Added);
        assert_eq!(d["generationConfig"]["maxOutputTokens"], 5);
        let mut d = json!({"options": {"num_predict": -1}});
        assert_eq!(clamp_in(&mut d, Format::Ollama, None, 5), Capped::Clamped);
        assert_eq!(d["options"]["num_predict"], 5);
    }

    #[test]
    fn a_cap_added_as_text_reads_as_the_rewritten_request() {
        // Bodies with no output-token field, of several shapes, then the corpus requests (with
        // any field they set: the text path must decline those).
        let mut bodies: Vec<Vec<u8>> = [
            "{}",
            " { } ",
            r#"{"model":"m","messages":[{"role":"user","content":"hi \"there\" \u00e9"}]}"#,
            // Escaped strings last: the parse cannot place the root's closing bracket.
            r#"{"model":"m","n":1.5e3,"stop":"\n"}"#,
            "{\n  \"model\": \"m\",\n  \"stream\": true\n}\n",
            r#"{"model":"m","max_tokens":null}"#,
            r#"{"model":"m","max_completion_tokens":"lots"}"#,
            r#"{"model":"m","max_output_tokens":5000}"#,
            r#"{"generationConfig":{"temperature":0.1},"contents":[]}"#,
            r#"{"generationConfig":{"maxOutputTokens":9},"contents":[]}"#,
            r#"{"options":{"num_predict":-1},"messages":[]}"#,
            r#"{"options":[],"messages":[]}"#,
            r#"{"a":1,"a":2}"#,
        ]
        .iter()
        .map(|b| b.as_bytes().to_vec())
        .collect();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/corpus");
        for format in std::fs::read_dir(dir).unwrap() {
            let format = format.unwrap().path();
            for file in std::fs::read_dir(&format).into_iter().flatten() {
                let path = file.unwrap().path();
                if path.to_string_lossy().ends_with(".request.json") {
                    bodies.push(std::fs::read(&path).unwrap());
                }
            }
        }
        let mut added = 0;
        for body in &bodies {
            let Ok(doc) = Doc::parse(Bytes::from(body.clone())) else {
                continue;
            };
            let before = doc.root().to_value();
            for format in Format::ALL {
                let adapter = format.adapter();
                let Some(text) = adapter.cap_added_text(&doc, 777) else {
                    continue;
                };
                added += 1;
                let mut clamped = before.clone();
                assert_eq!(
                    adapter.clamp_max_tokens(&mut clamped, None, 777),
                    Capped::Added,
                    "{format:?} {}",
                    String::from_utf8_lossy(body)
                );
                let read: Value = serde_json::from_slice(&text).unwrap();
                assert_eq!(
                    read,
                    clamped,
                    "{format:?} {}",
                    String::from_utf8_lossy(body)
                );
                // The rest of the body is its own text, as read (normalized only where an
                // object repeated a key).
                let read = doc.bytes();
                let open = read.iter().position(|b| *b == b'{').unwrap();
                assert!(text.ends_with(&read[open + 1..]), "{format:?}");
            }
        }
        assert!(added > 20, "{added} bodies took the text path");
    }
}
