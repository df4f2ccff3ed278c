//! Anthropic Messages (`/v1/messages`): JSON message bodies and event streams.
//!
//! Usage: input = `input_tokens + cache_read_input_tokens + cache_creation_input_tokens` (the
//! GenAI conventions count cached input as input). Streams start from `message_start` usage;
//! every field a `message_delta` states replaces the earlier value (they are cumulative, and
//! with server tools the final input is larger than the first). Tool-use input arrives as
//! `input_json_delta` fragments, joined exactly as sent (an empty string means the input is the
//! `{}` from `content_block_start`; it is kept as sent, empty).
//!
//! Cache writes by lifetime: `usage.cache_creation.ephemeral_1h_input_tokens` is kept apart
//! (one-hour writes are billed 2× input, five-minute writes 1.25×).
//!
//! `usage.iterations` (present when a compaction pass or an advisor sub-call ran inside the
//! request) lists every sampling step. Anthropic's documentation: the top-level counts leave out
//! compaction passes and advisor sub-calls, and "to calculate total tokens consumed and billed
//! for a request, sum across all entries in `usage.iterations`"; `advisor_message` iterations
//! are billed at the advisor model's rates. So when iterations are stated, usage is their sum,
//! and the part spent on another model is kept in [`ResponseRecord::other_models`]. Streams
//! repeat the whole list in each `message_delta`: the last one stated is the list.
//!
//! Message Batches ([`AnthropicBatch`]): creating a batch (`POST /v1/messages/batches`) and
//! polling it pass through unread, as nothing is spent until it runs; what it spent is stated
//! line by line in its results (`GET /v1/messages/batches/{id}/results`), JSONL, one
//! `{"custom_id","result"}` per request, a `succeeded` result carrying the whole `message`.
//! The download is one call (one span): the file is read line by line as it passes (any
//! length, each line bounded), each message's usage read as a Messages response and summed
//! per model, and the record marked [`ResponseRecord::batch`] so that the budgets price it at
//! the model's batch rate (`pricing.<model>.batch`, Anthropic's 50 % by default). `errored`,
//! `canceled` and `expired` results were not billed and count nothing. The SDKs download the
//! results from the batch's `results_url`, an absolute URL on the API's host: batch objects
//! have it pointed at the proxy (`batch_links.rs`), so that download comes through the sidecar.

mod batch_links;
mod batch_results;
mod content;
mod ending;
mod error;
mod gate;
mod response;
mod tools;

pub use batch_results::Results;
pub use response::Stream;

use serde_json::{Map, Value};

use crate::providers::adapter::{
    stream_reader, Adapter, ErrorText, Operation, Routed, StreamEnding, StreamReader,
};
use crate::providers::tools::ToolResult;
use crate::providers::usage::ResponseRecord;

/// The Anthropic Messages format.
pub struct Anthropic;

impl Adapter for Anthropic {
    fn protocol(&self) -> &'static str {
        "anthropic"
    }

    fn detects(&self, path: &str) -> bool {
        path.ends_with("/v1/messages") || path.ends_with("/v1/messages/count_tokens")
    }

    /// Anthropic's OpenAI SDK compatibility layer (`/v1/chat/completions`): OpenAI Chat's
    /// bodies, streams and usage on an Anthropic route.
    fn speaks(&self, path: &str) -> Option<&'static str> {
        path.ends_with("/chat/completions").then_some("openai")
    }

    fn route(&self, path: &str) -> Option<Routed> {
        let (operation, reads) = if path.ends_with("/messages") {
            (Operation::Chat, true)
        } else if path.ends_with("/messages/count_tokens") {
            // A count, not a generation: labelled, never billed or counted as a step.
            (Operation::CountTokens, false)
        } else {
            (Operation::Other, false)
        };
        Some(Routed {
            provider: "anthropic",
            operation,
            reads,
        })
    }

    /// `{"type":"error","error":{"type","message"}}`.
    fn error_body(&self, e: &ErrorText<'_>) -> Value {
        error::body(e)
    }

    fn tool_gate(&self) -> Option<Box<dyn crate::providers::adapter::ToolGate>> {
        Some(Box::<gate::MessagesGate>::default())
    }

    fn names_links(&self, path: &str) -> Option<usize> {
        batch_links::names_links(path)
    }

    fn point_links(&self, body: &[u8], base: &str) -> Option<Vec<u8>> {
        batch_links::point_results_urls(body, base)
    }

    fn stream(&self) -> Box<dyn StreamReader> {
        Box::new(Stream::default())
    }

    fn parse_json(&self, body: &[u8], r: &mut ResponseRecord) -> bool {
        response::parse_json(body, r)
    }

    fn stream_ending(&self) -> Option<Box<dyn StreamEnding>> {
        Some(Box::<ending::MessageEnding>::default())
    }

    fn max_tokens_field(&self) -> (Option<&'static str>, &'static str) {
        (None, "max_tokens")
    }

    fn tool_results(
        &self,
        doc: crate::providers::Node<'_>,
        _markers: &[String],
    ) -> Vec<ToolResult> {
        tools::tool_results(doc)
    }

    fn input_messages(&self, body: &Map<String, Value>) -> (Option<Value>, Option<Value>) {
        content::input_messages(body)
    }

    fn output_text(&self, v: &Value, add: &mut dyn FnMut(usize, &str)) {
        content::output_text(v, add)
    }
}

stream_reader!(Stream, event);

/// Anthropic Message Batches' results files (`/v1/messages/batches/{id}/results`).
pub struct AnthropicBatch;

/// Whether `path` downloads a Message Batch's results.
fn batch_results(path: &str) -> bool {
    path.strip_suffix("/results")
        .and_then(|p| p.rsplit_once("/messages/batches/"))
        .is_some_and(|(_, id)| !id.is_empty() && !id.contains('/'))
}

impl Adapter for AnthropicBatch {
    fn protocol(&self) -> &'static str {
        "anthropic"
    }

    /// The results path is Anthropic's alone: under `auto` it names the protocol, as
    /// `/v1/messages` does.
    fn detects(&self, path: &str) -> bool {
        batch_results(path)
    }

    fn route(&self, path: &str) -> Option<Routed> {
        batch_results(path).then_some(Routed {
            provider: "anthropic",
            // As OpenAI's batch output: the messages the batch generated.
            operation: Operation::Chat,
            reads: true,
        })
    }

    fn error_body(&self, e: &ErrorText<'_>) -> Value {
        error::body(e)
    }

    /// Served as a `.jsonl` file (its media type not `application/x-ndjson`).
    fn reads_lines(&self) -> bool {
        true
    }

    fn stream(&self) -> Box<dyn StreamReader> {
        Box::new(Results::default())
    }

    fn parse_json(&self, body: &[u8], r: &mut ResponseRecord) -> bool {
        // A file collected whole: its lines read in turn.
        let mut results = Results::default();
        for line in body.split(|b| *b == b'\n') {
            results.event(line);
        }
        *r = results.finish();
        true
    }

    fn max_tokens_field(&self) -> (Option<&'static str>, &'static str) {
        (None, "max_tokens")
    }

    fn tool_results(
        &self,
        _doc: crate::providers::Node<'_>,
        _markers: &[String],
    ) -> Vec<ToolResult> {
        Vec::new()
    }

    fn input_messages(&self, _body: &Map<String, Value>) -> (Option<Value>, Option<Value>) {
        (None, None)
    }

    fn output_text(&self, _v: &Value, _add: &mut dyn FnMut(usize, &str)) {}
}

stream_reader!(Results, event);
