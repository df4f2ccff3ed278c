//! OpenAI Realtime API (`/v1/realtime`, a WebSocket session): JSON events in text messages.
//!
//! The proxy forwards every message as it comes and reads a copy through [`RealtimeEvents`]:
//! a client's `response.create` asks for a response (the budgets admit it there), a server's
//! `response.created` starts one (also those the server starts itself, with voice activity
//! detection), text and transcript deltas are its output, and `response.done` ends it with its
//! usage (`response.usage`: input and output tokens, text and audio together, cached input in
//! `input_token_details.cached_tokens`). A finished input audio transcription
//! (`conversation.item.input_audio_transcription.completed`) states its own usage, billed apart
//! (a transcription-only session states no other) at the prices of the transcription model the
//! session last named (`audio.input.transcription.model`, beta `input_audio_transcription`):
//! read when it counts tokens, not when it counts seconds (`type: duration`, whisper-1). Both the GA event names and the beta ones
//! (`response.text.delta`, `response.audio_transcript.delta`) are read. The model is the URL's
//! `model` query parameter, else the one `session.created` / `session.updated` name.

mod events;

use serde_json::{Map, Value};

use crate::providers::adapter::{Adapter, Operation, RealtimeEvents, Routed, StreamReader};
use crate::providers::tools::ToolResult;
use crate::providers::usage::ResponseRecord;

/// The OpenAI Realtime format.
pub struct OpenAiRealtime;

impl Adapter for OpenAiRealtime {
    fn protocol(&self) -> &'static str {
        "openai"
    }

    fn detects(&self, _path: &str) -> bool {
        false // the protocol is detected once, by Chat Completions (the fallback)
    }

    fn route(&self, path: &str) -> Option<Routed> {
        // `/v1/realtime` itself; `/v1/realtime/sessions`, `/client_secrets` and `/calls` are
        // plain HTTP calls that spend nothing.
        path.ends_with("/realtime").then_some(Routed {
            provider: "openai",
            operation: Operation::Chat,
            reads: true,
        })
    }

    fn realtime(&self) -> Option<&'static dyn RealtimeEvents> {
        Some(&events::Events)
    }

    fn stream(&self) -> Box<dyn StreamReader> {
        // A session's responses are read event by event by the proxy's WebSocket relay; each
        // response's `response.done` is parsed whole (`parse_json`). An SSE body is never
        // this format's.
        Box::new(events::NoStream::default())
    }

    fn parse_json(&self, body: &[u8], r: &mut ResponseRecord) -> bool {
        events::response_done(body, r)
    }

    fn max_tokens_field(&self) -> (Option<&'static str>, &'static str) {
        (Some("response"), "max_output_tokens")
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

crate::providers::adapter::stream_reader!(events::NoStream, event);
