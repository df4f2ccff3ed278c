//! Ollama's native API (`/api/chat`, `/api/generate`): NDJSON streams (the default) and single
//! JSON objects. The last line (`"done": true`) carries `prompt_eval_count` (input) and
//! `eval_count` (output); tool calls arrive whole with `arguments` as an object. A missing
//! `prompt_eval_count` stays unknown, never zero.

mod response;

pub use response::Stream;

use crate::providers::adapter::{Adapter, StreamReader};
use crate::providers::usage::ResponseRecord;

/// The Ollama format.
pub struct Ollama;

impl Adapter for Ollama {
    fn stream(&self) -> Box<dyn StreamReader> {
        Box::new(Stream::default())
    }

    fn parse_json(&self, body: &[u8], r: &mut ResponseRecord) -> bool {
        response::parse_json(body, r)
    }
}

impl StreamReader for Stream {
    fn event(&mut self, data: &[u8]) -> Option<bool> {
        Stream::line(self, data)
    }

    fn record_mut(&mut self) -> &mut ResponseRecord {
        &mut self.record
    }

    fn finish(self: Box<Self>) -> ResponseRecord {
        Stream::finish(*self)
    }
}
