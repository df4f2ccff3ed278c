//! The project's own mock LLM provider.
//!
//! It speaks just enough of the OpenAI (Chat Completions, Responses, Embeddings, models list),
//! Anthropic (Messages) and Google Gemini (`generateContent` / `streamGenerateContent`) wire
//! formats for integration tests, benchmarks and demos of the proxy. Responses are shaped like
//! the real providers' (see `wire-formats.md` B.1–B.5 and the recorded corpus) and are
//! **deterministic**: the same request with the same knobs always yields the same body bytes
//! (fixed ids such as `chatcmpl-mock-0001`, fixed timestamps, a fixed word sequence).
//!
//! # Knobs
//!
//! Every knob has a mock-wide default ([`MockOptions`], CLI flag or environment variable of the
//! `tokenwarden-mock` binary) that a request can override with a header:
//!
//! | header | meaning |
//! |---|---|
//! | `x-mock-input-tokens: N` | input (prompt) tokens reported in usage |
//! | `x-mock-output-chunks: N` | streamed text chunks; one output token each (JSON bodies too) |
//! | `x-mock-chunk-delay-ms: N` | delay between streamed events |
//! | `x-mock-events-per-write: N` | streamed events handed to the connection together, as one write (a fast upstream) |
//! | `x-mock-first-byte-delay-ms: N` | delay before the response head is sent |
//! | `x-mock-tool-calls: N` | N parallel tool calls (`get_weather`, `search_docs`, ...) |
//! | `x-mock-cached-tokens: N` | part of the input reported as served from cache |
//! | `x-mock-reasoning-tokens: N` | extra output tokens reported as reasoning/thinking |
//! | `x-mock-gzip: 1` | gzip the body (`content-encoding: gzip`; SSE is sync-flushed per event) |
//! | `x-mock-fault: F` | `500`, `429`, `drop-mid-stream`, `garbage`, `one-byte-writes`, `hang`, `none` |
//! | `x-mock-truncate-tool-args: 1` | tool arguments lose their last byte (OpenAI chat, Anthropic streams) |
//! | `x-mock-script: agent-loop` | play an agent loop from the request's conversation (below); `none` for no script |
//!
//! Reported output tokens are [`output_tokens`]`(chunks, tool_calls, reasoning)`: one token per
//! streamed text chunk, one per streamed tool-argument fragment, plus the reasoning tokens.
//!
//! Invalid knob values are answered with a 400. The request body itself is read leniently: only
//! `model`, `stream` and `stream_options.include_usage` (embeddings: `input`, `dimensions`,
//! `encoding_format`) are looked at, and a body that is not JSON is treated like `{}`.
//!
//! # Scripts
//!
//! `x-mock-script: agent-loop` (chat completions, responses, messages and Gemini, JSON and SSE)
//! reads the conversation too, so an agent framework runs a whole tool loop through the mock:
//! unless the conversation ends with tool results (`tool` messages, `function_call_output` items,
//! `tool_result` blocks in the last user message, `functionResponse` parts in the last user
//! content), the answer is a tool-call turn — one call, or `x-mock-tool-calls` parallel ones, to
//! the tools the request declares (in order, cycling; the canned ones when none are declared),
//! arguments built from their JSON Schemas (required properties: the first `enum` value,
//! strings `"mock"`, numbers 1, booleans true), no text, the provider's tool-call finish
//! (`tool_calls`, `tool_use`, completed `function_call` items, Gemini `STOP`). When it does, the
//! answer is the usual text. Tool-call ids carry the turn (`call_mock_t2_0001`,
//! `toolu_mock_t2_0001`, `fc_mock_t2_0001`; the turn is 1 + the assistant turns in the request),
//! so they never repeat within a conversation. Input tokens are an o200k count of every string
//! in the body (unless `x-mock-input-tokens` is sent), so they grow with the prompt.
//!
//! # Endpoints
//!
//! `POST` `/v1/chat/completions` (any path ending in `/chat/completions`, e.g. Azure),
//! `/v1/responses`, `/v1/embeddings`, `/v1/messages`, `.../models/{model}:generateContent` and
//! `...:streamGenerateContent` (SSE with `?alt=sse`, else a JSON array); `GET /v1/models`.
//! Anything else is an OpenAI-shaped 404. HTTP/1.1 and cleartext HTTP/2 are both served.
//!
//! # Counters
//!
//! [`MockStats::streams_cancelled`] counts requests whose response was dropped before the mock
//! handed out its last byte (the client went away or reset the stream, also while the mock was
//! still in a first-byte delay or a `hang`). Completion is counted before the last bytes are
//! written, so a client that has read a whole response always sees it counted.
//!
//! # Control endpoints
//!
//! Requests under `/_mock/` are neither counted nor recorded: `GET /_mock/stats`,
//! `GET /_mock/last_request`, `GET /_mock/requests` and `POST /_mock/reset`.

mod anthropic;
mod body;
mod content;
mod frames;
mod gemini;
mod knobs;
mod openai;
mod reply;
mod script;
mod server;
mod stats;

use std::fmt;
use std::str::FromStr;

pub use body::MockAbort;
pub use knobs::{KnobError, Knobs, MAX_OUTPUT_CHUNKS, MAX_TOOL_CALLS};
pub use script::{Script, UnknownScript};
pub use server::MockServer;
pub use stats::{MockStats, RecordedRequest};

/// Bodies larger than this are not kept by the request recorder (only their length is).
pub const MAX_RECORDED_BODY: usize = 1024 * 1024;

/// Requests with a body larger than this get a 413.
pub const MAX_REQUEST_BODY: usize = 64 * 1024 * 1024;

/// Mock-wide defaults for every knob (each can be overridden per request by an `x-mock-*` header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockOptions {
    /// Input tokens reported in usage (`x-mock-input-tokens`).
    pub input_tokens: u64,
    /// Streamed text chunks, one output token each (`x-mock-output-chunks`).
    pub output_chunks: u32,
    /// Delay between streamed events in milliseconds (`x-mock-chunk-delay-ms`).
    pub chunk_delay_ms: u64,
    /// Streamed events per write (`x-mock-events-per-write`; the delay is then per write).
    pub events_per_write: u32,
    /// Delay before the response head in milliseconds (`x-mock-first-byte-delay-ms`).
    pub first_byte_delay_ms: u64,
    /// Number of parallel tool calls in each answer (`x-mock-tool-calls`).
    pub tool_calls: u32,
    /// Input tokens reported as cached (`x-mock-cached-tokens`; clamped to `input_tokens`).
    pub cached_tokens: u64,
    /// Reasoning tokens, added to the output tokens (`x-mock-reasoning-tokens`).
    pub reasoning_tokens: u64,
    /// Gzip every response body (`x-mock-gzip`).
    pub gzip: bool,
    /// Fault injected into every response (`x-mock-fault`).
    pub fault: Option<Fault>,
    /// Keep a copy of received requests for [`MockServer::requests`].
    pub record_requests: bool,
    /// How many recorded requests are kept (oldest dropped first).
    pub max_recorded: usize,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            input_tokens: 12,
            output_chunks: 20,
            chunk_delay_ms: 0,
            events_per_write: 1,
            first_byte_delay_ms: 0,
            tool_calls: 0,
            cached_tokens: 0,
            reasoning_tokens: 0,
            gzip: false,
            fault: None,
            record_requests: true,
            max_recorded: 1000,
        }
    }
}

/// A fault the mock can inject (`x-mock-fault` header, `--fault` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// `500`: a provider-shaped internal server error.
    ServerError,
    /// `429`: a provider-shaped rate-limit error with `retry-after: 1`.
    RateLimited,
    /// `drop-mid-stream`: send the head and about half of the body, then abort the connection
    /// (HTTP/1.1: no terminating chunk; HTTP/2: `RST_STREAM`).
    DropMidStream,
    /// `garbage`: status 200 with the usual content type but a body that is neither JSON nor SSE.
    Garbage,
    /// `one-byte-writes`: the normal body, but every byte is its own frame, flushed separately.
    OneByteWrites,
    /// `hang`: read the request and never answer until the client goes away.
    Hang,
}

impl Fault {
    /// Every fault, in documentation order.
    pub const ALL: [Fault; 6] = [
        Fault::ServerError,
        Fault::RateLimited,
        Fault::DropMidStream,
        Fault::Garbage,
        Fault::OneByteWrites,
        Fault::Hang,
    ];

    /// The header / CLI spelling of this fault.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::ServerError => "500",
            Fault::RateLimited => "429",
            Fault::DropMidStream => "drop-mid-stream",
            Fault::Garbage => "garbage",
            Fault::OneByteWrites => "one-byte-writes",
            Fault::Hang => "hang",
        }
    }

    /// Parses a header value; `none` (or an empty value) means "no fault".
    pub fn parse_setting(s: &str) -> Result<Option<Fault>, UnknownFault> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        s.parse().map(Some)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown fault name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mock fault {0:?} (expected one of: 500, 429, drop-mid-stream, garbage, one-byte-writes, hang, none)")]
pub struct UnknownFault(pub String);

impl FromStr for Fault {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Fault::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownFault(s.to_owned()))
    }
}

/// Output tokens the mock reports for a response with these knobs: one token per streamed
/// text chunk, one per streamed tool-call argument fragment, plus `reasoning_tokens`.
/// Identical for every protocol and for JSON and streamed answers.
pub fn output_tokens(output_chunks: u32, tool_calls: u32, reasoning_tokens: u64) -> u64 {
    u64::from(output_chunks)
        .saturating_add(content::tool_fragment_total(tool_calls))
        .saturating_add(reasoning_tokens)
}

/// The text the mock answers with when asked for `output_chunks` chunks (the concatenation of
/// the streamed deltas), e.g. for comparing captured content.
pub fn output_text(output_chunks: u32) -> String {
    content::full_text(output_chunks)
}

/// Name and JSON arguments of the `i`-th (0-based) tool call the mock emits.
pub fn tool_call(i: u32) -> (&'static str, &'static str) {
    content::tool(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_round_trip() {
        for f in Fault::ALL {
            assert_eq!(f.as_str().parse::<Fault>(), Ok(f));
            assert_eq!(Fault::parse_setting(f.as_str()), Ok(Some(f)));
        }
        assert_eq!(Fault::parse_setting("none"), Ok(None));
        assert_eq!(Fault::parse_setting(" HANG "), Ok(Some(Fault::Hang)));
        assert!(Fault::parse_setting("boom").is_err());
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let o = MockOptions::default();
        assert_eq!(o.output_chunks, 20);
        assert_eq!(o.input_tokens, 12);
        assert_eq!(o.chunk_delay_ms, 0);
        assert_eq!(o.first_byte_delay_ms, 0);
        assert_eq!(o.tool_calls, 0);
        assert_eq!(o.fault, None);
    }

    #[test]
    fn output_tokens_counts_chunks_fragments_and_reasoning() {
        assert_eq!(output_tokens(20, 0, 0), 20);
        assert_eq!(output_tokens(0, 0, 7), 7);
        let one = content::fragments(tool_call(0).1).count() as u64;
        assert!(one > 1);
        assert_eq!(output_tokens(3, 1, 0), 3 + one);
    }
}
