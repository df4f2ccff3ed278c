//! [`Adapter`]: everything one provider format means, behind one trait. The rest of the proxy
//! asks a call's [`Format`](super::Format) for its adapter ([`Format::adapter`](super::Format::adapter))
//! and never matches on the format itself.
//!
//! Methods with a default body are the rules every format shares today (the request fields and
//! tool shapes read whatever format names them, as compatible servers mix them); a format
//! overrides one where it differs.

use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};

use super::doc::{Doc, Items, Node};
use super::fields::{self, Capped, DeclaredTool, OwnFields, RequestBody};
use super::shape;
use super::text;
use super::tools::{self, ToolResult};
use super::usage::{ResponseRecord, ToolCall};
use crate::tokens::RequestText;

/// One provider format's reading of requests and responses.
pub trait Adapter: Sync {
    // --- routing ---

    /// The `protocol:` name of this format's provider on a route (formats of one provider share
    /// it: `openai` for Chat Completions and Responses).
    fn protocol(&self) -> &'static str;

    /// Under `protocol: auto`, whether a request on `path` is this provider's. Formats are asked
    /// in registry order; the first that claims the path names the protocol.
    fn detects(&self, path: &str) -> bool;

    /// A request on `path` under this format's protocol: `None` when another format of the same
    /// protocol serves it, else its labels and whether this format reads it.
    fn route(&self, path: &str) -> Option<Routed>;

    /// The protocol whose formats read a request on `path` when this provider serves another
    /// provider's protocol there (Gemini's and Anthropic's OpenAI-compatible endpoints, whose
    /// bodies, streams and usage are OpenAI Chat's); the call keeps this provider's label.
    /// `None` (the default): this protocol's own formats read it.
    fn speaks(&self, path: &str) -> Option<&'static str> {
        let _ = path;
        None
    }

    /// The JSON body of an error the proxy answers on this provider's routes. By default the
    /// OpenAI shape every compatible client reads.
    fn error_body(&self, e: &ErrorText<'_>) -> Value {
        openai_error_body(e)
    }

    // --- response side ---

    /// A fresh reader for one streamed response (SSE events, or NDJSON lines for formats that
    /// stream NDJSON).
    fn stream(&self) -> Box<dyn StreamReader>;

    /// Whether every response body of this format is read line by line as it passes (a JSONL
    /// file of any length, each line bounded), whatever its media type says.
    fn reads_lines(&self) -> bool {
        false
    }

    /// A reader for a stream in a binary framing of `media_type` (the response's
    /// `Content-Type`), when this format's streams use one (Bedrock's
    /// `application/vnd.amazon.eventstream`); `None` (the default) reads SSE or NDJSON.
    fn framed_stream(&self, media_type: &[u8], max_bytes: usize) -> Option<Box<dyn FramedStream>> {
        let _ = (media_type, max_bytes);
        None
    }

    /// Read a whole JSON response body into `r`; false when it is not this format's JSON.
    fn parse_json(&self, body: &[u8], r: &mut ResponseRecord) -> bool;

    /// Whether clients sign this format's requests with SigV4 (Bedrock): headers the signature
    /// covers must go up as sent.
    fn signed_requests(&self) -> bool {
        false
    }

    /// The top-level key of this format's JSON bodies whose object states usage, read from the
    /// tail of a body too large to parse whole (an embeddings answer of 1,000 inputs, a
    /// Responses answer carrying its images): [`Adapter::parse_json`] reads `{key: object}`.
    fn usage_key(&self) -> &'static str {
        "usage"
    }

    // stream rewrites

    /// How a stream of this format is ended early at a budget (`action: cut`), when it can be
    /// ended cleanly; `None` when it cannot (the limit then rejects the next call instead).
    fn stream_ending(&self) -> Option<Box<dyn StreamEnding>> {
        None
    }

    /// The rewrite that hides, event by event, the usage the proxy asked for on the client's
    /// behalf (the response body wrapper applies it); `None` when the format needs none.
    fn usage_hider(&self) -> Option<EventRewrite> {
        None
    }

    /// Where the API's own path starts in a client's `path` whose response names URLs on the
    /// provider's host that the client then fetches directly (Anthropic's batch `results_url`),
    /// so the URL prefix the client used is `path[..n]`; `None` for every other path.
    fn names_links(&self, path: &str) -> Option<usize> {
        let _ = path;
        None
    }

    /// A response body of a path [`Adapter::names_links`] chose, those URLs pointed at `base`
    /// (the proxy's URL and the client's prefix); `None` when nothing changed.
    fn point_links(&self, body: &[u8], base: &str) -> Option<Vec<u8>> {
        let _ = (body, base);
        None
    }

    /// What gating an SSE stream on its tool calls needs (which events carry a call, when each
    /// is complete, how a refused stream ends); `None` when this format's streams cannot be
    /// gated, and a blocking tool policy then only flags them.
    fn tool_gate(&self) -> Option<Box<dyn ToolGate>> {
        None
    }

    /// The events of this format's WebSocket sessions, when it speaks over a WebSocket
    /// (OpenAI Realtime); `None` for formats of plain HTTP calls.
    fn realtime(&self) -> Option<&'static dyn RealtimeEvents> {
        None
    }

    // --- request side ---

    /// The model a request on `path` names; `body_model` is its body's `model`. By default the
    /// body's, else an Azure deployment's name in the path.
    fn requested_model(&self, path: &str, body_model: Option<&str>) -> Option<String> {
        body_model
            .or_else(|| shape::azure_deployment(path))
            .map(str::to_string)
    }

    /// Whether a request on `path` with `query` asked for a stream; `body_stream` is its body's
    /// `stream`. By default only when the body says so.
    fn requested_stream(&self, path: &str, query: Option<&str>, body_stream: Option<bool>) -> bool {
        let _ = (path, query);
        body_stream.unwrap_or(false)
    }

    /// Where this format's output-token cap goes in a request that sets none:
    /// `(enclosing object, key)`.
    fn max_tokens_field(&self) -> (Option<&'static str>, &'static str);

    /// Rewrite every output-token field of a request above `limit` to `limit`; with none set, add
    /// this format's field ([`Adapter::max_tokens_field`]). `requested` is what inspection read.
    fn clamp_max_tokens(&self, doc: &mut Value, requested: Option<u64>, limit: u64) -> Capped {
        fields::clamp(doc, requested, limit, self.max_tokens_field())
    }

    /// What [`Adapter::clamp_max_tokens`] makes of a request that sets no output-token field,
    /// as the body's own text with this format's field added in front, when that field lies at
    /// the root; `None`: rewrite through [`Adapter::clamp_max_tokens`].
    fn cap_added_text(&self, doc: &Doc, limit: u64) -> Option<Vec<u8>> {
        fields::cap_added_text(doc, limit, self.max_tokens_field())
    }

    /// The output cap and declared tools of a request body (a JSON object), when this format
    /// keeps them under its own names; `None` (the default): the shared fields (`max_tokens`,
    /// `tools`, ...) are the request's.
    fn own_request_fields(&self, body: RequestBody<'_>) -> Option<OwnFields> {
        let _ = body;
        None
    }

    /// The request body rewritten to ask for usage in its stream, when this format's streams
    /// state none unless asked. What the request said, read from `body` (a JSON object): it
    /// asked for a stream (`stream`), and its root's `stream_options` (`None`: not there;
    /// `Some(include_usage)`). None by default.
    fn ask_stream_usage(
        &self,
        stream: bool,
        stream_options: Option<bool>,
        body: &[u8],
    ) -> Option<Vec<u8>> {
        let _ = (stream, stream_options, body);
        None
    }

    // --- tools ---

    /// The tools a request's `tools` array declares, with their JSON Schemas (any provider's
    /// declaration shape, item by item).
    fn declared_tools(&self, tools: Items<'_>) -> Vec<DeclaredTool> {
        tools::declared(tools)
    }

    /// Remove every declared tool `keep` refuses from a request; with none left, `tools` and
    /// `tool_choice` go too (providers reject a choice without tools). False when this format's
    /// bodies are never rewritten (signed over their bytes): the call is then refused instead.
    fn strip_tools(&self, doc: &mut Value, keep: &dyn Fn(&str) -> bool) -> bool {
        tools::strip_declared(doc, keep);
        true
    }

    /// The tool results a request reports new in this turn; `markers` mark a free-text result
    /// as failed.
    fn tool_results(&self, doc: Node<'_>, markers: &[String]) -> Vec<ToolResult>;

    // --- content capture ---

    /// A request body's `(system instructions, input messages)` in the GenAI conventions'
    /// shapes.
    fn input_messages(&self, body: &Map<String, Value>) -> (Option<Value>, Option<Value>);

    /// The output text in one JSON response body or stream event, by choice index.
    fn output_text(&self, v: &Value, add: &mut dyn FnMut(usize, &str));

    // --- token text ---

    /// The text of a request body as a tokenizer should see it (any JSON body; non-JSON bodies
    /// are text).
    fn request_text(&self, body: &[u8]) -> RequestText {
        text::request_text(body)
    }

    /// [`Adapter::request_text`] of a body already read into `doc` (a JSON object), so the
    /// request's one parse serves the context guard too.
    fn request_text_doc(&self, doc: Node<'_>) -> RequestText {
        text::request_text_doc(doc)
    }
}

/// Copy one SSE event's raw bytes (`span`; its decoded data is `data`) to `out`, rewritten;
/// true when the event was dropped.
pub type EventRewrite = fn(span: &[u8], data: &[u8], out: &mut BytesMut) -> bool;

/// The final events of a stream cut short, well-formed for the client's SDK.
pub trait StreamEnding: Send {
    /// Note one event handed on to the client (what the ending needs: ids, open blocks).
    fn note(&mut self, data: &[u8]);

    /// The final events; `output_tokens` is the output the client got.
    fn tail(&self, output_tokens: u64) -> Bytes;
}

/// One stream's tool calls as they come, for a stream gated on them: which events carry a call,
/// when each call is complete, and the event that ends a refused stream.
pub trait ToolGate: Send {
    /// Read one event (`event` is its `event:` field, `data` its data): whether it carries a
    /// tool call. Calls it completes, arguments assembled, are appended to `done`.
    fn event(&mut self, event: &[u8], data: &[u8], done: &mut Vec<ToolCall>) -> Gated;

    /// Whether a call is still open (its events are withheld until it completes).
    fn open(&self) -> bool;

    /// The stream ended: every call still open, as far as it came, to `done`.
    fn finish(&mut self, done: &mut Vec<ToolCall>);

    /// The event that ends a refused stream: an error the official SDKs of this format raise
    /// mid-stream, carrying `e`.
    fn refusal(&self, e: &ErrorText<'_>) -> Bytes;
}

/// What the proxy reads from a copy of one WebSocket session's text messages.
pub trait RealtimeEvents: Sync {
    /// The model a session is opened for, from the upgrade request's query.
    fn model(&self, query: Option<&str>) -> Option<String>;

    /// What one client message is.
    fn client(&self, text: &[u8]) -> ClientEvent;

    /// What one server message is.
    fn server(&self, text: &[u8]) -> ServerEvent;

    /// The client event that cancels the response in progress (sent upstream when the session
    /// is ended mid-response, so that its final event states what was generated).
    fn cancel(&self) -> &'static str;

    /// The error event that refuses a client's request for a response (`client_event_id` is
    /// that request's own id), or tells why the session is being closed.
    fn refusal(&self, e: &ErrorText<'_>, client_event_id: Option<&str>) -> String;
}

/// A client message of a WebSocket session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A request for a response: admitted (or refused) before it is forwarded.
    Respond {
        /// The client's id of the request, echoed in a refusal.
        event_id: Option<String>,
        /// The response's output cap, when it sets one.
        max_output: Option<u64>,
    },
    /// Anything else: forwarded as it is.
    Other,
}

/// A server message of a WebSocket session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// The session's configuration, naming its model.
    Session {
        /// The model, when named.
        model: Option<String>,
        /// The model transcribing the client's input audio, when named (transcriptions are
        /// billed at its prices, not the session model's).
        transcription_model: Option<String>,
    },
    /// A response started (asked for by the client, or by the server's turn detection).
    Created {
        /// The response's id, which its output and end name.
        id: Option<String>,
    },
    /// Output of the response in progress; `text` is its text (empty for audio).
    Output {
        /// Text, transcript or tool-call argument fragment.
        text: String,
        /// The id of the response it belongs to.
        response_id: Option<String>,
    },
    /// The response ended; the message itself is its record ([`Adapter::parse_json`]).
    Done {
        /// The response's id.
        id: Option<String>,
    },
    /// The transcription of the client's input audio finished, stating its usage in tokens:
    /// billed apart from any response (a transcription-only session has no other). The message
    /// itself is its record ([`Adapter::parse_json`]).
    Transcribed,
    /// The server refused a client event (e.g. a request for a response while one is in
    /// progress); `event_id` is the client's id of it, when the client gave one.
    Error {
        /// The refused client event's id.
        event_id: Option<String>,
        /// Whether it refuses a request for a response (one is already in progress), so that
        /// a request without an id can still be matched.
        refuses_response: bool,
    },
    /// Anything else.
    Other,
}

/// What one event is to a gated stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gated {
    /// No tool call in it: forwarded at once.
    Pass,
    /// Part of a tool call: withheld until the call is complete and checked.
    Hold,
    /// Looks like a tool call but cannot be read: the stream is refused rather than the call
    /// passed unchecked.
    Unreadable,
}

/// What a call does (`gen_ai.operation.name`), as the path says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A chat or messages call (Chat Completions, Responses, Messages, Ollama chat).
    Chat,
    /// A legacy completion (`/v1/completions`, Ollama `/api/generate`).
    TextCompletion,
    /// Embeddings.
    Embeddings,
    /// Gemini `generateContent` / `streamGenerateContent`.
    GenerateContent,
    /// A token count (Anthropic `count_tokens`): labelled, never billed or a step.
    CountTokens,
    /// Anything else on the route (model lists, files): forwarded and counted, not read.
    Other,
}

// === impl Operation ===

impl Operation {
    /// Label and attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::TextCompletion => "text_completion",
            Operation::Embeddings => "embeddings",
            Operation::GenerateContent => "generate_content",
            Operation::CountTokens => "count_tokens",
            Operation::Other => "other",
        }
    }
}

/// What a format says of a request on a path of its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    /// `gen_ai.provider.name` value.
    pub provider: &'static str,
    /// What the call does (`other` for paths that are no LLM call).
    pub operation: Operation,
    /// Whether this format reads the call (request facts, response parsing, budgets, policies).
    pub reads: bool,
}

/// What an error the proxy answers itself says, in every provider's vocabulary: each format's
/// [`Adapter::error_body`] takes the fields its clients read.
#[derive(Debug, Clone, Copy)]
pub struct ErrorText<'a> {
    /// HTTP status.
    pub status: u16,
    /// Human-readable message.
    pub message: &'a str,
    /// Stable machine-readable code.
    pub code: &'a str,
    /// OpenAI `error.type`.
    pub openai_type: &'a str,
    /// Anthropic `error.type`.
    pub anthropic_type: &'a str,
    /// Google `error.status`.
    pub google_status: &'a str,
}

/// `{"error":{"message","type","param","code"}}`: OpenAI and every compatible server.
pub fn openai_error_body(e: &ErrorText<'_>) -> Value {
    serde_json::json!({
        "error": {
            "message": e.message,
            "type": e.openai_type,
            "param": null,
            "code": e.code,
        }
    })
}

/// The state of one streamed response while it is read, event by event.
pub trait StreamReader: Send {
    /// Handle one event's data (or one NDJSON line): `Some(true)` when it carried output
    /// (text, reasoning or tool-call arguments), `None` when it could not be read.
    fn event(&mut self, data: &[u8]) -> Option<bool>;

    /// What the stream said so far.
    fn record_mut(&mut self) -> &mut ResponseRecord;

    /// The stream ended: everything it said.
    fn finish(self: Box<Self>) -> ResponseRecord;
}

/// One streamed response in a binary framing, read frame by frame (frames split anywhere).
pub trait FramedStream: Send {
    /// Read the next frame; `on_event(end, output)` is told, message by message, where in
    /// `chunk` it ended and, when it carried output, its payload. Returns the output messages.
    fn feed(&mut self, chunk: &[u8], on_event: &mut dyn FnMut(usize, Option<&[u8]>)) -> u32;

    /// The stream ended: everything it said.
    fn finish(self: Box<Self>) -> ResponseRecord;
}

/// Implements [`StreamReader`] for a format's stream state `$ty`: a struct with a `record` field,
/// a `$event(&mut self, &[u8]) -> Option<bool>` method and `finish(self) -> ResponseRecord`.
macro_rules! stream_reader {
    ($ty:ty, $event:ident) => {
        impl $crate::providers::adapter::StreamReader for $ty {
            fn event(&mut self, data: &[u8]) -> Option<bool> {
                <$ty>::$event(self, data)
            }

            fn record_mut(&mut self) -> &mut $crate::providers::usage::ResponseRecord {
                &mut self.record
            }

            fn finish(self: Box<Self>) -> $crate::providers::usage::ResponseRecord {
                <$ty>::finish(*self)
            }
        }
    };
}
pub(crate) use stream_reader;

/// The OpenAI error of a stream refused by a tool policy: `code` names the policy, `type` is
/// `permission_error` — clients that guess a status from the type (the Vercel AI SDK's OpenAI
/// provider) then read a 403 and do not retry, where a policy name reads as a retryable 500.
pub fn openai_stream_refusal(e: &ErrorText<'_>) -> Value {
    serde_json::json!({
        "message": e.message,
        "type": "permission_error",
        "param": null,
        "code": e.code,
    })
}

/// One SSE event carrying `body` as its data (and `event` as its name, when given): how a gated
/// stream's refusal is framed.
pub fn sse_event(event: Option<&str>, body: &Value) -> Bytes {
    let mut b = BytesMut::new();
    if let Some(name) = event {
        b.extend_from_slice(b"event: ");
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(b"\n");
    }
    b.extend_from_slice(b"data: ");
    // A `Value` always serializes, and compactly: one `data:` line.
    b.extend_from_slice(body.to_string().as_bytes());
    b.extend_from_slice(b"\n\n");
    b.freeze()
}
