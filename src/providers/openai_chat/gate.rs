//! Gating a Chat Completions stream on its tool calls: a call is the fragments of one
//! (choice, `tool_calls[].index`), complete when its choice states a finish reason (or at
//! `[DONE]` or the stream's end). Parallel calls of a choice complete together: OpenAI streams
//! them one after another and finishes the choice right after the last.

use bytes::Bytes;

use crate::providers::adapter::{openai_stream_refusal, sse_event, ErrorText, Gated, ToolGate};
use crate::providers::shape::{any_value, has_unicode_escape, json_key};
use crate::providers::usage::ToolCall;

use super::response::{add_delta, read_chunk, renames};

/// Open calls of one stream, by (choice, index).
#[derive(Default)]
pub struct ChatGate {
    calls: Vec<(u32, u32, ToolCall)>,
    /// Choices whose calls completed at their finish: a call fragment for one of them after that
    /// is unreadable (the SDKs add it to a call already checked and released).
    closed: Vec<u32>,
}

json_key!(TOOL_CALLS, "tool_calls");
json_key!(FINISH_REASON, "finish_reason");

impl ToolGate for ChatGate {
    fn event(&mut self, _event: &[u8], data: &[u8], done: &mut Vec<ToolCall>) -> Gated {
        if crate::sse::is_done(data) {
            self.finish(done);
            return Gated::Pass;
        }
        // Text chunks carry neither key (or nulls): no parse. Every occurrence counts: with
        // several choices one may say `null` and another carry calls. A chunk with a `\u`
        // escape may spell either key escaped: it is parsed.
        let escaped = has_unicode_escape(data);
        let carries = any_value(data, &TOOL_CALLS, |b| b == b'[');
        let finishes = !self.calls.is_empty() && any_value(data, &FINISH_REASON, |b| b != b'n');
        if !carries && !finishes && !escaped {
            return Gated::Pass;
        }
        // Read with the parser's own typed chunk (borrowed strings, no map per object).
        let Some(chunk) = read_chunk(data) else {
            return if carries || (escaped && may_carry(data)) {
                Gated::Unreadable
            } else {
                Gated::Pass
            };
        };
        let carries = carries
            || chunk
                .choices
                .iter()
                .any(|c| c.delta.as_ref().is_some_and(|d| d.tool_calls.is_some()));
        let mut finished = Vec::new();
        for c in chunk.choices {
            if c.finish_reason.is_some() {
                finished.push(c.index);
            }
            let fragments = c.delta.and_then(|d| d.tool_calls).unwrap_or_default();
            if !fragments.is_empty() && self.closed.contains(&c.index) {
                return Gated::Unreadable;
            }
            for tc in fragments {
                if tc.ambiguous() || renames(&self.calls, c.index, &tc) {
                    return Gated::Unreadable;
                }
                add_delta(&mut self.calls, c.index, tc);
            }
        }
        for choice in finished {
            let before = done.len();
            self.complete(|ch| ch == choice, done);
            if done.len() > before && !self.closed.contains(&choice) {
                self.closed.push(choice);
            }
        }
        if carries {
            Gated::Hold
        } else {
            Gated::Pass
        }
    }

    fn open(&self) -> bool {
        !self.calls.is_empty()
    }

    fn finish(&mut self, done: &mut Vec<ToolCall>) {
        self.complete(|_| true, done);
    }

    fn refusal(&self, e: &ErrorText<'_>) -> Bytes {
        // `data: {"error": …}`: the shape the openai SDKs raise mid-stream (APIError).
        sse_event(
            None,
            &serde_json::json!({ "error": openai_stream_refusal(e) }),
        )
    }
}

impl ChatGate {
    fn complete(&mut self, of: impl Fn(u32) -> bool, done: &mut Vec<ToolCall>) {
        let mut i = 0;
        while i < self.calls.len() {
            if of(self.calls[i].0) {
                done.push(self.calls.remove(i).2);
            } else {
                i += 1;
            }
        }
    }
}

/// Whether a chunk the typed read refused may carry a call: not JSON at all, or a choice's
/// `delta.tool_calls` is there (under whatever spelling of the key).
fn may_carry(data: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return true;
    };
    let choices = v["choices"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    choices.iter().any(|c| !c["delta"]["tool_calls"].is_null())
}
