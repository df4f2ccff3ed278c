//! Ollama's native API (`/api/chat`, `/api/generate`): NDJSON streams (the default) and single
//! JSON objects. The last line (`"done": true`) carries `prompt_eval_count` (input) and
//! `eval_count` (output); tool calls arrive whole with `arguments` as an object. A missing
//! `prompt_eval_count` stays unknown, never zero.

mod content;
mod response;

pub use response::Stream;

use serde_json::{Map, Value};

use crate::providers::adapter::{stream_reader, Adapter, Operation, Routed, StreamReader};
use crate::providers::openai_chat::{self, OpenAiChat};
use crate::providers::tools::ToolResult;
use crate::providers::usage::ResponseRecord;

/// The Ollama format.
pub struct Ollama;

impl Adapter for Ollama {
    fn protocol(&self) -> &'static str {
        "ollama"
    }

    fn detects(&self, path: &str) -> bool {
        path.starts_with("/api/")
    }

    fn route(&self, path: &str) -> Option<Routed> {
        let (operation, reads) = if path.ends_with("/api/chat") {
            (Operation::Chat, true)
        } else if path.ends_with("/api/generate") {
            (Operation::TextCompletion, true)
        } else if path.ends_with("/api/embed") || path.ends_with("/api/embeddings") {
            (Operation::Embeddings, false)
        } else {
            (Operation::Other, false)
        };
        Some(Routed {
            provider: "ollama",
            operation,
            reads,
        })
    }

    fn stream(&self) -> Box<dyn StreamReader> {
        Box::new(Stream::default())
    }

    fn parse_json(&self, body: &[u8], r: &mut ResponseRecord) -> bool {
        response::parse_json(body, r)
    }

    fn requested_stream(
        &self,
        _path: &str,
        _query: Option<&str>,
        body_stream: Option<bool>,
    ) -> bool {
        // Ollama streams unless told not to.
        body_stream.unwrap_or(true)
    }

    fn max_tokens_field(&self) -> (Option<&'static str>, &'static str) {
        (Some("options"), "num_predict")
    }

    fn tool_results(&self, doc: crate::providers::Node<'_>, markers: &[String]) -> Vec<ToolResult> {
        // Chat messages in OpenAI's shape.
        openai_chat::tools::tool_results(doc, markers)
    }

    fn input_messages(&self, body: &Map<String, Value>) -> (Option<Value>, Option<Value>) {
        OpenAiChat.input_messages(body)
    }

    fn output_text(&self, v: &Value, add: &mut dyn FnMut(usize, &str)) {
        content::output_text(v, add)
    }
}

stream_reader!(Stream, line);
