//! OpenAI Responses API (`/v1/responses`): JSON response objects and typed event streams.
//!
//! Streams: model and id from `response.created`; usage, status and model from the terminal
//! `response.completed` / `response.incomplete` / `response.failed`; function-call arguments are
//! the `response.function_call_arguments.delta` fragments joined per `item_id`. An empty model or
//! id is no value. Reasoning stated outside `output_tokens` (total = input + output + reasoning,
//! xAI's shape) is added to output; OpenAI's (inside) is taken as it is.

mod content;
mod gate;
mod items;
mod response;
mod tools;

pub use response::Stream;

use serde_json::{Map, Value};

use crate::providers::adapter::{stream_reader, Adapter, Operation, Routed, StreamReader};
use crate::providers::tools::ToolResult;
use crate::providers::usage::ResponseRecord;

/// The OpenAI Responses format.
pub struct OpenAiResponses;

impl Adapter for OpenAiResponses {
    fn protocol(&self) -> &'static str {
        "openai"
    }

    fn detects(&self, _path: &str) -> bool {
        false // the protocol is detected once, by Chat Completions (the fallback)
    }

    fn route(&self, path: &str) -> Option<Routed> {
        path.ends_with("/responses").then(|| Routed {
            provider: super::openai_chat::provider_label(path),
            operation: Operation::Chat,
            reads: true,
        })
    }

    fn tool_gate(&self) -> Option<Box<dyn crate::providers::adapter::ToolGate>> {
        Some(Box::<gate::ResponsesGate>::default())
    }

    fn stream(&self) -> Box<dyn StreamReader> {
        Box::new(Stream::default())
    }

    fn parse_json(&self, body: &[u8], r: &mut ResponseRecord) -> bool {
        response::parse_json(body, r)
    }

    fn max_tokens_field(&self) -> (Option<&'static str>, &'static str) {
        (None, "max_output_tokens")
    }

    fn tool_results(&self, doc: crate::providers::Node<'_>, markers: &[String]) -> Vec<ToolResult> {
        tools::tool_results(doc, markers)
    }

    fn input_messages(&self, body: &Map<String, Value>) -> (Option<Value>, Option<Value>) {
        content::input_messages(body)
    }

    fn output_text(&self, v: &Value, add: &mut dyn FnMut(usize, &str)) {
        content::output_text(v, add)
    }
}

stream_reader!(Stream, event);
