//! OpenAI Batch API: the output file of a batch, read when the agent downloads it
//! (`GET /v1/files/{id}/content`).
//!
//! Creating the input file (`POST /v1/files`) and the batch (`/v1/batches`) passes through
//! unread: nothing is spent until the batch runs, and what it spent is stated line by line in its
//! output file — JSONL, one `{"id","custom_id","response":{"status_code","request_id","body"},
//! "error"}` per request, `body` being the endpoint's own response (a chat completion, a
//! Responses object, an embeddings list). The download is one call (one span): the file is read
//! line by line as it passes (any length, each line bounded), each body's usage read by the
//! format it is in and summed, per model, and the record marked [`ResponseRecord::batch`] so
//! that the budgets price it at the model's batch rate (`pricing.<model>.batch`). Any other
//! file's content (an input file, an error file) states no usage and counts nothing.

mod output;

use serde_json::{Map, Value};

use crate::providers::adapter::{stream_reader, Adapter, Operation, Routed, StreamReader};
use crate::providers::tools::ToolResult;
use crate::providers::usage::ResponseRecord;

pub use output::Output;

/// The OpenAI Batch API's output files.
pub struct OpenAiBatch;

impl Adapter for OpenAiBatch {
    fn protocol(&self) -> &'static str {
        "openai"
    }

    fn detects(&self, _path: &str) -> bool {
        false // the protocol is detected once, by Chat Completions (the fallback)
    }

    fn route(&self, path: &str) -> Option<Routed> {
        let id = path.strip_suffix("/content")?.rsplit_once("/files/")?.1;
        (!id.is_empty() && !id.contains('/')).then(|| Routed {
            provider: super::openai_chat::provider_label(path),
            operation: Operation::Chat,
            reads: true,
        })
    }

    fn reads_lines(&self) -> bool {
        true
    }

    fn stream(&self) -> Box<dyn StreamReader> {
        Box::new(Output::default())
    }

    fn parse_json(&self, body: &[u8], r: &mut ResponseRecord) -> bool {
        // A file of one line, collected whole.
        let mut out = Output::default();
        for line in body.split(|b| *b == b'\n') {
            out.event(line);
        }
        *r = out.finish();
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

stream_reader!(Output, event);
