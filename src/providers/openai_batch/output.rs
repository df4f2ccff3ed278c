//! Reading a batch output file, line by line.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::providers::adapter::Adapter;
use crate::providers::openai_chat::OpenAiChat;
use crate::providers::openai_responses::OpenAiResponses;
use crate::providers::usage::ResponseRecord;

/// The usage of the lines read so far.
#[derive(Default)]
pub struct Output {
    pub(crate) record: ResponseRecord,
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(default, borrow)]
    response: Option<Answer<'a>>,
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(default)]
    status_code: Option<u16>,
    #[serde(default, borrow)]
    body: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(default, borrow)]
    object: Option<&'a str>,
}

// === impl Output ===

impl Output {
    /// One line of the file: `Some(false)` (usage is no output to time), `None` when it is not
    /// a batch output line.
    pub(crate) fn event(&mut self, line: &[u8]) -> Option<bool> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Some(false);
        }
        let line: Line<'_> = serde_json::from_slice(line).ok()?;
        let answer = line.response?;
        let body = answer.body?.get().as_bytes();
        // A failed request's body is an error object: billed nothing.
        if !answer.status_code.is_some_and(|s| (200..300).contains(&s)) {
            return Some(false);
        }
        // Each body is read as the format it is in (a batch runs one endpoint's requests).
        let format: &dyn Adapter = match serde_json::from_slice::<Kind<'_>>(body).ok()?.object {
            Some("response") => &OpenAiResponses,
            _ => &OpenAiChat,
        };
        let mut one = ResponseRecord::default();
        if !format.parse_json(body, &mut one) || !one.usage.is_present() {
            return Some(false);
        }
        self.record.add_request(one);
        Some(false)
    }

    pub(crate) fn finish(mut self) -> ResponseRecord {
        self.record.batch = true;
        self.record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = include_str!("../../../tests/fixtures/batch/output.jsonl");

    #[test]
    fn sums_every_successful_line_per_model() {
        let mut r = ResponseRecord::default();
        assert!(super::super::OpenAiBatch.parse_json(FILE.as_bytes(), &mut r));
        assert!(r.batch);
        assert_eq!(r.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
        assert_eq!(r.usage.input, Some(24 + 31 + 17));
        assert_eq!(r.usage.output, Some(9 + 12 + 11));
        assert_eq!(r.usage.cached_input, Some(0));
        assert_eq!(r.other_models.len(), 1);
        assert_eq!(r.other_models[0].model, "gpt-4.1-nano-2025-04-14");
        assert_eq!(r.other_models[0].usage.input, Some(17));
    }

    #[test]
    fn route_is_a_file_download_only() {
        let a = super::super::OpenAiBatch;
        assert!(a.route("/v1/files/file-abc123/content").is_some());
        assert!(a.route("/v1/files/file-abc123").is_none());
        assert!(a.route("/v1/files").is_none());
        assert!(a.route("/v1/files//content").is_none());
    }
}
