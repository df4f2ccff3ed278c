//! Gemini `generateContent` / `streamGenerateContent` (SSE with `alt=sse`, else a JSON array).
//!
//! Usage: input = `promptTokenCount + toolUsePromptTokenCount`; output = `candidatesTokenCount +
//! thoughtsTokenCount` (thoughts are not inside candidates). Stream chunks carry cumulative
//! `usageMetadata`: the last one stated wins (summing over-counts). Cached input is
//! `cachedContentTokenCount` (a part of `promptTokenCount`). An empty `modelVersion` or
//! `responseId` is no value.

mod response;

pub use response::Stream;

use crate::providers::adapter::{Adapter, StreamReader};
use crate::providers::usage::ResponseRecord;

/// The Gemini format.
pub struct Gemini;

impl Adapter for Gemini {
    fn stream(&self) -> Box<dyn StreamReader> {
        Box::new(Stream::default())
    }

    fn parse_json(&self, body: &[u8], r: &mut ResponseRecord) -> bool {
        response::parse_json(body, r)
    }
}

impl StreamReader for Stream {
    fn event(&mut self, data: &[u8]) -> Option<bool> {
        Stream::event(self, data)
    }

    fn record_mut(&mut self) -> &mut ResponseRecord {
        &mut self.record
    }

    fn finish(self: Box<Self>) -> ResponseRecord {
        Stream::finish(*self)
    }
}
