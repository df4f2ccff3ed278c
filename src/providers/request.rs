//! What the request says about the call before it goes upstream: which response format to
//! expect, the requested model and whether a stream was asked for.

use std::borrow::Cow;

use serde::Deserialize;

use super::format::Format;
use crate::config::Protocol;

use super::protocol::Classified;

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
    /// Output cap the request set (`max_tokens`, `max_completion_tokens`, `max_output_tokens`,
    /// Gemini `generationConfig.maxOutputTokens`, Ollama `options.num_predict`).
    pub max_tokens: Option<u64>,
    /// Tools the request declared, with their JSON Schemas.
    pub tools: Vec<DeclaredTool>,
    /// End-user / session field of the body (OpenAI `user`, Anthropic `metadata.user_id`).
    pub user: Option<String>,
}

/// A tool the request offered the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredTool {
    /// Tool name.
    pub name: String,
    /// JSON Schema of its arguments (`null` when none was given).
    pub schema: serde_json::Value,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default, rename = "generationConfig")]
    generation_config: Option<GenerationConfig>,
    #[serde(default)]
    options: Option<OllamaOptions>,
    #[serde(default)]
    tools: Option<Vec<serde_json::Value>>,
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
    #[serde(default, rename = "maxOutputTokens")]
    max_output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct OllamaOptions {
    #[serde(default)]
    num_predict: Option<u64>,
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
    let format = format_for(class, path)?;
    // Only JSON objects are read; anything else is forwarded and simply not inspected.
    let parsed = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => serde_json::from_slice::<Body<'_>>(body).ok(),
        _ => None,
    };
    let mut model = parsed
        .as_ref()
        .and_then(|b| b.model.as_deref())
        .map(str::to_string);
    let mut stream = parsed.as_ref().and_then(|b| b.stream).unwrap_or(false);
    let include_usage = parsed
        .as_ref()
        .and_then(|b| b.stream_options.as_ref())
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    if format == Format::Gemini {
        model = gemini_model(path).map(str::to_string);
        stream = path.contains(":streamGenerateContent")
            && query.is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"));
    }
    if format == Format::Ollama {
        // Ollama streams unless told not to.
        stream = parsed.as_ref().and_then(|b| b.stream).unwrap_or(true);
    }
    if model.is_none() {
        model = azure_deployment(path).map(str::to_string);
    }
    let max_tokens = parsed.as_ref().and_then(|b| {
        b.max_tokens
            .or(b.max_completion_tokens)
            .or(b.max_output_tokens)
            .or(b
                .generation_config
                .as_ref()
                .and_then(|g| g.max_output_tokens))
            .or(b.options.as_ref().and_then(|o| o.num_predict))
    });
    let tools = parsed
        .as_ref()
        .and_then(|b| b.tools.as_deref())
        .map(declared_tools)
        .unwrap_or_default();
    let user = parsed.as_ref().and_then(|b| {
        b.user
            .as_deref()
            .or(b.metadata.as_ref().and_then(|m| m.user_id.as_deref()))
            .map(str::to_string)
    });
    Some(RequestFacts {
        format,
        model,
        stream,
        include_usage,
        max_tokens,
        tools,
        user,
    })
}

/// The response format of a classified call, when tokenwarden reads it.
fn format_for(class: &Classified, path: &str) -> Option<Format> {
    match (class.protocol, class.operation) {
        (_, "other" | "count_tokens") => None,
        (Protocol::Anthropic, "chat") => Some(Format::Anthropic),
        (Protocol::Gemini, "generate_content") => Some(Format::Gemini),
        (Protocol::Ollama, "chat" | "text_completion") => Some(Format::Ollama),
        (Protocol::Openai | Protocol::Auto, _) if path.ends_with("/responses") => {
            Some(Format::OpenAiResponses)
        }
        // Chat, legacy completions and embeddings share the usage object.
        (Protocol::Openai | Protocol::Auto, _) => Some(Format::OpenAiChat),
        _ => None,
    }
}

/// Tool declarations in any provider's shape: OpenAI chat / Ollama `{"type":"function",
/// "function":{name, parameters}}`, Responses `{"type":"function", name, parameters}`,
/// Anthropic `{name, input_schema}`, Gemini `{"functionDeclarations":[{name, parameters}]}`.
fn declared_tools(tools: &[serde_json::Value]) -> Vec<DeclaredTool> {
    let mut out = Vec::new();
    let mut push = |t: &serde_json::Value, schema_key: &str| {
        if let Some(name) = t.get("name").and_then(|n| n.as_str()) {
            out.push(DeclaredTool {
                name: name.to_string(),
                schema: t
                    .get(schema_key)
                    .cloned()
                    .unwrap_or(serde_json::Value::Null),
            });
        }
    };
    for t in tools {
        if let Some(f) = t.get("function") {
            push(f, "parameters");
        } else if let Some(decls) = t.get("functionDeclarations").and_then(|d| d.as_array()) {
            for d in decls {
                push(d, "parameters");
            }
        } else if t.get("input_schema").is_some() {
            push(t, "input_schema");
        } else {
            push(t, "parameters");
        }
    }
    out
}

/// The request rewritten to ask for usage in its stream, when it is a stream that states none
/// unless asked (an OpenAI chat stream without `stream_options.include_usage`).
pub fn ask_stream_usage(facts: &RequestFacts, body: &[u8]) -> Option<Vec<u8>> {
    if facts.format == Format::OpenAiChat && facts.stream && !facts.include_usage {
        with_include_usage(body)
    } else {
        None
    }
}

/// The request body with `stream_options.include_usage` set to true, for an OpenAI chat stream
/// whose client did not ask for usage. The common case (no `stream_options`) inserts the field
/// after the opening brace and leaves every other byte as sent.
pub fn with_include_usage(body: &[u8]) -> Option<Vec<u8>> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object()?;
    if !obj.contains_key("stream_options") {
        let sep = if obj.is_empty() { "" } else { "," };
        let mut out = Vec::with_capacity(body.len() + 40);
        out.extend_from_slice(&body[..=start]);
        out.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
        out.extend_from_slice(sep.as_bytes());
        out.extend_from_slice(&body[start + 1..]);
        return Some(out);
    }
    let mut v = v;
    let so = v.as_object_mut()?.get_mut("stream_options")?;
    if !so.is_object() {
        *so = serde_json::Value::Object(serde_json::Map::new());
    }
    so.as_object_mut()?
        .insert("include_usage".into(), serde_json::Value::Bool(true));
    serde_json::to_vec(&v).ok()
}

fn gemini_model(path: &str) -> Option<&str> {
    let after = &path[path.find("/models/")? + "/models/".len()..];
    Some(after.split(':').next().unwrap_or(after)).filter(|m| !m.is_empty())
}

fn azure_deployment(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/openai/deployments/")?;
    rest.split('/').next().filter(|d| !d.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::protocol::classify;

    fn facts(path: &str, query: Option<&str>, body: &str) -> Option<RequestFacts> {
        inspect(
            &classify(Protocol::Auto, path),
            path,
            query,
            body.as_bytes(),
        )
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
        assert_eq!(f.tools[0].schema, serde_json::json!({"type": "object"}));
        let f = facts("/v1/responses", None, r#"{"max_output_tokens":7,"tools":[{"type":"function","name":"a","parameters":{}},{"type":"web_search"}]}"#).unwrap();
        assert_eq!((f.max_tokens, f.tools.len()), (Some(7), 1));
        let f = facts("/v1/messages", None, r#"{"max_tokens":64,"tools":[{"name":"b","input_schema":{"type":"object","required":["x"]}}]}"#).unwrap();
        assert_eq!(f.max_tokens, Some(64));
        assert_eq!(f.tools[0].schema["required"][0], "x");
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
    fn non_json_bodies_are_not_an_error() {
        let f = facts("/v1/chat/completions", None, "not json").unwrap();
        assert_eq!(f.model, None);
    }
}
