//! Reading a Message Batch's results file, line by line.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::providers::usage::ResponseRecord;

/// The usage of the result lines read so far.
#[derive(Default)]
pub struct Results {
    pub(crate) record: ResponseRecord,
}

/// One line: `{"custom_id","result"}`.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(default, borrow)]
    result: Option<Outcome<'a>>,
}

/// `result`: `{"type":"succeeded","message":{…}}`, or `errored` (with `error`), `canceled`,
/// `expired`.
#[derive(Deserialize)]
struct Outcome<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    message: Option<&'a RawValue>,
}

// === impl Results ===

impl Results {
    /// One line of the file: `Some(false)` (usage is no output to time), `None` when it is not
    /// a batch result line.
    pub(crate) fn event(&mut self, line: &[u8]) -> Option<bool> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Some(false);
        }
        let line: Line<'_> = serde_json::from_slice(line).ok()?;
        let outcome = line.result?;
        // Only a succeeded request ran and is billed: an errored one, a canceled one (the batch
        // was canceled first) and an expired one (not reached in 24 hours) are not.
        if outcome.kind != "succeeded" {
            return Some(false);
        }
        // The message is a Messages API response: read as one (cache reads, writes by
        // lifetime, advisor sub-calls per model).
        let mut one = ResponseRecord::default();
        let message = outcome.message?.get().as_bytes();
        if !super::response::parse_json(message, &mut one) || !one.usage.is_present() {
            return Some(false);
        }
        self.record.add_request(one);
        Some(false)
    }

    /// The file ended: every succeeded request's usage, billed at the batch rate.
    pub(crate) fn finish(mut self) -> ResponseRecord {
        self.record.batch = true;
        self.record
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Format, ResponseParser};

    const FILE: &str = include_str!("../../../tests/fixtures/batch/anthropic_results.jsonl");

    /// The file through the proxy's reader of line-read bodies, in frames of `frame` bytes.
    fn read(file: &[u8], frame: usize, max_line: usize) -> ResponseRecord {
        let mut p = ResponseParser::new_ndjson(Format::AnthropicBatch, max_line);
        for chunk in file.chunks(frame) {
            p.feed(chunk);
        }
        p.finish()
    }

    fn line(custom_id: &str, result: &str) -> String {
        format!(r#"{{"custom_id":"{custom_id}","result":{result}}}"#)
    }

    fn succeeded(model: &str, input: u64, output: u64) -> String {
        format!(
            r#"{{"type":"succeeded","message":{{"id":"msg_1","type":"message","role":"assistant","model":"{model}","content":[],"stop_reason":"end_turn","usage":{{"input_tokens":{input},"output_tokens":{output}}}}}}}"#
        )
    }

    #[test]
    fn succeeded_lines_are_summed_per_model_with_their_cache_fields() {
        let r = read(FILE.as_bytes(), usize::MAX, 1 << 20);
        assert!(r.batch);
        assert_eq!(r.unparsed, None);
        assert_eq!(r.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
        // request-1 and request-2 (errored, canceled and expired lines bill nothing), and
        // request-6 on another model.
        assert_eq!(r.usage.input, Some(12 + (8 + 1000 + 600) + 30));
        assert_eq!(r.usage.output, Some(40 + 25 + 15));
        assert_eq!(r.usage.cached_input, Some(1000));
        assert_eq!(r.usage.cache_creation_input, Some(600));
        assert_eq!(r.usage.cache_creation_1h, Some(400));
        assert_eq!(r.other_models.len(), 1);
        assert_eq!(r.other_models[0].model, "claude-haiku-4-5-20251001");
        assert_eq!(r.other_models[0].usage.input, Some(30));
        assert_eq!(r.other_models[0].usage.output, Some(15));
        let own = r.own_usage();
        assert_eq!((own.input, own.output), (Some(1620), Some(65)));
        assert_eq!(own.cache_creation_1h, Some(400));
    }

    #[test]
    fn errored_canceled_and_expired_results_bill_nothing() {
        let file = [
            line(
                "a",
                r#"{"type":"errored","error":{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}}"#,
            ),
            line("b", r#"{"type":"canceled"}"#),
            line("c", r#"{"type":"expired"}"#),
            // A message beside a result that did not succeed is not billed either.
            line(
                "d",
                &succeeded("claude-haiku-4-5", 5, 5).replace("succeeded", "canceled"),
            ),
        ]
        .join("\n");
        let r = read(file.as_bytes(), usize::MAX, 1 << 20);
        assert!(!r.usage.is_present(), "{:?}", r.usage);
        assert_eq!(r.model, None);
    }

    #[test]
    fn lines_split_anywhere_across_frames_read_the_same() {
        let whole = read(FILE.as_bytes(), usize::MAX, 1 << 20);
        for frame in [1, 2, 7, 64, 333] {
            assert_eq!(
                read(FILE.as_bytes(), frame, 1 << 20),
                whole,
                "frame {frame}"
            );
        }
        // CRLF line ends and no final line end.
        let crlf = FILE.trim_end().replace('\n', "\r\n");
        assert_eq!(read(crlf.as_bytes(), 5, 1 << 20), whole);
    }

    #[test]
    fn an_over_long_line_is_skipped_and_the_rest_counted() {
        let long = succeeded("claude-opus-4-6", 1_000_000, 1_000_000).replace(
            r#""content":[]"#,
            &format!(
                r#""content":[{{"type":"text","text":"{}"}}]"#,
                "a".repeat(4096)
            ),
        );
        let file = [
            line("a", &succeeded("claude-sonnet-4-5", 10, 1)),
            line("b", &long),
            line("c", &succeeded("claude-sonnet-4-5", 20, 2)),
        ]
        .join("\n");
        // Frames smaller than the long line, so it is collected (and dropped past the bound).
        let r = read(file.as_bytes(), 100, 1024);
        assert_eq!(r.unparsed, Some("event_too_large"));
        assert_eq!((r.usage.input, r.usage.output), (Some(30), Some(3)));
        assert!(r.other_models.is_empty());
    }

    #[test]
    fn a_line_naming_no_result_is_not_read() {
        let mut results = Results::default();
        assert_eq!(results.event(br#"{"custom_id":"x"}"#), None);
        assert_eq!(results.event(b"not json"), None);
        assert_eq!(results.event(b"  "), Some(false));
    }
}
