//! JSON-RPC 2.0 messages as MCP uses them, read from a copy of the bytes into a small summary:
//! what kind of message, its id, method, the tool or prompt it names, the trace context in its
//! `params._meta`, and for a response its error code or `isError`.
//!
//! Reading is strict where the specification is (a request has a string or integer id, never
//! `null`; `jsonrpc` is `"2.0"`): a POST the proxy cannot read cannot be governed, so it is
//! refused with the JSON-RPC error a server would give (`-32700` parse error, `-32600` invalid
//! request) rather than forwarded unread.

use serde_json::Value;

/// `tools/call`: the method whose executions are governed and counted.
pub const TOOLS_CALL: &str = "tools/call";

/// `tools/list`: the method whose results are filtered per agent.
pub const TOOLS_LIST: &str = "tools/list";

/// Most messages one batch may hold (batches are a 2025-03-26 feature; clients send a few).
pub const MAX_BATCH: usize = 256;

/// Longest error message kept from a server's JSON-RPC error (span status description).
const MAX_ERROR_MESSAGE: usize = 256;

/// `params._meta` key of the protocol revision in per-request envelopes (2026-07-28).
const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A method call expecting a response (has an id).
    Request,
    /// A method call expecting none (no id).
    Notification,
    /// A result or an error answering a request.
    Response,
}

/// A request id as sent: its JSON text, so that `1` and `"1"` stay different ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId {
    json: String,
}

/// One JSON-RPC message, summarised.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Request, notification or response.
    pub kind: Kind,
    /// The id (requests; responses unless answering an unreadable request).
    pub id: Option<RequestId>,
    /// The method (requests and notifications).
    pub method: Option<String>,
    /// The tool a `tools/call` names, or the prompt a `prompts/get` names.
    pub target: Option<String>,
    /// A `tools/call`'s `params.arguments` (absent → `None`).
    pub arguments: Option<Value>,
    /// `params._meta.traceparent`, the caller's trace context (MCP conventions, SEP-414).
    pub traceparent: Option<String>,
    /// `params._meta.tracestate`.
    pub tracestate: Option<String>,
    /// The protocol revision the message states (`initialize` params or result, or the
    /// per-request `_meta` of 2026-07-28).
    pub protocol_version: Option<String>,
    /// A response's JSON-RPC error: code and message (the message cut to 256 bytes).
    pub error: Option<(i64, String)>,
    /// A `tools/call` result with `isError: true`: the tool ran and failed.
    pub is_error: bool,
}

/// The messages of one body: a single message, or a batch (a JSON array).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// Whether the body was a JSON array.
    pub batch: bool,
}

/// A body that is no JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not JSON at all.
    #[error("the body is not valid JSON")]
    NotJson,
    /// JSON, but not a JSON-RPC 2.0 message or batch of them.
    #[error("the body is not a JSON-RPC 2.0 message: {0}")]
    Invalid(&'static str),
    /// A batch with more messages than the proxy reads.
    #[error("the batch holds more than {MAX_BATCH} messages")]
    TooMany,
}

// === impl MessageError ===

impl MessageError {
    /// The JSON-RPC error code for it: `-32700` parse error, `-32600` invalid request.
    pub fn code(&self) -> i64 {
        match self {
            MessageError::NotJson => -32700,
            MessageError::Invalid(_) | MessageError::TooMany => -32600,
        }
    }
}

// === impl RequestId ===

impl RequestId {
    /// The id of `v` when it is a string or a number (JSON-RPC ids MCP allows).
    pub fn of(v: &Value) -> Option<RequestId> {
        match v {
            Value::String(_) | Value::Number(_) => Some(RequestId {
                json: v.to_string(),
            }),
            _ => None,
        }
    }

    /// The id as JSON text (`7`, `"abc"`).
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The id as the conventions' `jsonrpc.request.id` string: a string id without its quotes.
    pub fn display(&self) -> String {
        match serde_json::from_str::<Value>(&self.json) {
            Ok(Value::String(s)) => s,
            _ => self.json.clone(),
        }
    }

    /// The id as a JSON value, for answers the proxy makes.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }
}

// === impl Batch ===

impl Batch {
    /// The requests (messages with an id that expect a response).
    pub fn requests(&self) -> impl Iterator<Item = &Message> {
        self.messages.iter().filter(|m| m.kind == Kind::Request)
    }

    /// Whether any message is a request (so the answer is JSON or a stream, not `202`).
    pub fn has_requests(&self) -> bool {
        self.requests().next().is_some()
    }
}

// === impl Message ===

impl Message {
    /// Whether this is a request or notification calling `method`.
    pub fn calls(&self, method: &str) -> bool {
        self.method.as_deref() == Some(method)
    }
}

/// Read a POST body (or one server message): a single message or a batch. A message a Go
/// server would read otherwise, its member names matched case-insensitively, is invalid
/// (`mcp::keys`).
pub fn parse(bytes: &[u8]) -> Result<Batch, MessageError> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|_| MessageError::NotJson)?;
    let batch = read(&doc)?;
    super::keys::check(bytes, TOOLS_CALL).map_err(MessageError::Invalid)?;
    Ok(batch)
}

/// Read an already parsed body.
pub fn read(doc: &Value) -> Result<Batch, MessageError> {
    match doc {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(MessageError::Invalid("an empty batch"));
            }
            if items.len() > MAX_BATCH {
                return Err(MessageError::TooMany);
            }
            let messages = items
                .iter()
                .map(read_one)
                .collect::<Result<Vec<_>, _>>()
                .map_err(MessageError::Invalid)?;
            Ok(Batch {
                messages,
                batch: true,
            })
        }
        v => Ok(Batch {
            messages: vec![read_one(v).map_err(MessageError::Invalid)?],
            batch: false,
        }),
    }
}

fn read_one(v: &Value) -> Result<Message, &'static str> {
    let Value::Object(o) = v else {
        return Err("a message is not a JSON object");
    };
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err("\"jsonrpc\" is not \"2.0\"");
    }
    let mut m = Message {
        kind: Kind::Notification,
        id: None,
        method: None,
        target: None,
        arguments: None,
        traceparent: None,
        tracestate: None,
        protocol_version: None,
        error: None,
        is_error: false,
    };
    match (o.get("method"), o.get("id")) {
        (Some(Value::String(method)), id) => {
            m.method = Some(method.clone());
            if let Some(id) = id {
                m.id = Some(RequestId::of(id).ok_or("a request id is not a string or integer")?);
                m.kind = Kind::Request;
            } else if method == TOOLS_CALL {
                // A server may run it all the same (Go servers answer nothing but execute it);
                // the policies govern tool calls by request.
                return Err("a tools/call has no id");
            }
            read_params(method, o.get("params"), &mut m)?;
        }
        (Some(_), _) => return Err("\"method\" is not a string"),
        (None, Some(id)) => {
            m.kind = Kind::Response;
            m.id = RequestId::of(id);
            match (o.get("result"), o.get("error")) {
                (Some(result), None) => read_result(result, &mut m),
                (None, Some(Value::Object(e))) => {
                    let code = e
                        .get("code")
                        .and_then(Value::as_i64)
                        .ok_or("an error has no integer code")?;
                    let mut text = e
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    cut(&mut text, MAX_ERROR_MESSAGE);
                    m.error = Some((code, text));
                }
                _ => return Err("a response has neither exactly one of \"result\" and \"error\""),
            }
        }
        (None, None) => return Err("a message has neither \"method\" nor \"id\""),
    }
    Ok(m)
}

fn read_params(method: &str, params: Option<&Value>, m: &mut Message) -> Result<(), &'static str> {
    let params = match params {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(p)) => p,
        // JSON-RPC allows positional params; MCP never uses them.
        Some(Value::Array(_)) => return Ok(()),
        Some(_) => return Err("\"params\" is not an object or array"),
    };
    if let Some(Value::Object(meta)) = params.get("_meta") {
        let text = |k: &str| meta.get(k).and_then(Value::as_str).map(String::from);
        m.traceparent = text("traceparent");
        m.tracestate = text("tracestate");
        m.protocol_version = text(META_PROTOCOL_VERSION);
    }
    match method {
        TOOLS_CALL => {
            let name = params
                .get("name")
                .and_then(Value::as_str)
                .ok_or("a tools/call names no tool")?;
            m.target = Some(name.to_string());
            m.arguments = params.get("arguments").cloned();
        }
        "prompts/get" => m.target = params.get("name").and_then(Value::as_str).map(String::from),
        "initialize" => {
            m.protocol_version = params
                .get("protocolVersion")
                .and_then(Value::as_str)
                .map(String::from)
        }
        _ => {}
    }
    Ok(())
}

fn read_result(result: &Value, m: &mut Message) {
    m.is_error = result.get("isError").and_then(Value::as_bool) == Some(true);
    m.protocol_version = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .map(String::from);
}

/// Cut `s` to at most `max` bytes on a character boundary.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_notifications_and_responses() {
        let b = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{"a":1},"_meta":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}}"#).unwrap();
        let m = &b.messages[0];
        assert!(!b.batch && b.has_requests());
        assert_eq!(
            (m.kind, m.id.as_ref().unwrap().json()),
            (Kind::Request, "7")
        );
        assert_eq!(m.target.as_deref(), Some("add"));
        assert_eq!(m.arguments, Some(serde_json::json!({"a":1})));
        assert!(m.traceparent.is_some());

        let b = parse(br#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"x","result":{"content":[],"isError":true}}]"#).unwrap();
        assert!(b.batch && !b.has_requests());
        assert_eq!(b.messages[0].kind, Kind::Notification);
        let r = &b.messages[1];
        assert_eq!((r.kind, r.is_error), (Kind::Response, true));
        assert_eq!(r.id.as_ref().unwrap().display(), "x");
        assert_eq!(r.id.as_ref().unwrap().json(), "\"x\"");

        let e = parse(
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#,
        )
        .unwrap();
        assert_eq!(e.messages[0].error, Some((-32700, "Parse error".into())));
        assert_eq!(e.messages[0].id, None);
    }

    #[test]
    fn what_is_refused_and_with_which_code() {
        let cases: &[(&[u8], i64)] = &[
            (b"{not json", -32700),
            (b"[]", -32600),
            (b"42", -32600),
            (br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, -32600),
            (br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, -32600),
            (br#"{"jsonrpc":"2.0","id":1,"method":7}"#, -32600),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
                -32600,
            ),
            (br#"{"jsonrpc":"2.0"}"#, -32600),
            // Without an id a tools/call is no request the policies govern.
            (
                br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}"#,
                -32600,
            ),
            // Read otherwise by a server matching member names case-insensitively.
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"ping","Method":"tools/call"}"#,
                -32600,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1}}"#,
                -32600,
            ),
        ];
        for (body, code) in cases {
            let e = parse(body).unwrap_err();
            assert_eq!(e.code(), *code, "{}", String::from_utf8_lossy(body));
        }
        let many = format!(
            "[{}]",
            vec![r#"{"jsonrpc":"2.0","method":"ping"}"#; MAX_BATCH + 1].join(",")
        );
        assert_eq!(parse(many.as_bytes()), Err(MessageError::TooMany));
    }
}
