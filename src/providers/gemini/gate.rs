//! Gating a Gemini stream on its tool calls: a `functionCall` part arrives whole in one chunk,
//! so the chunk carrying it is withheld only while its calls are checked, then released or
//! refused. (Partial arguments streamed over several chunks, Vertex AI's
//! `streamFunctionCallArguments`, are not read: such a call is checked as its first chunk
//! states it.)

use bytes::Bytes;
use serde_json::Value;

use crate::providers::adapter::{sse_event, ErrorText, Gated, ToolGate};
use crate::providers::shape::{has_unicode_escape, json_key};
use crate::providers::usage::ToolCall;

/// A Gemini stream holds no call open between chunks.
#[derive(Default)]
pub struct GeminiGate;

json_key!(FUNCTION_CALL, "functionCall");

impl ToolGate for GeminiGate {
    fn event(&mut self, _event: &[u8], data: &[u8], done: &mut Vec<ToolCall>) -> Gated {
        // A `\u` escape may spell the key otherwise: such a chunk is parsed.
        if FUNCTION_CALL.find(data).is_none() && !has_unicode_escape(data) {
            return Gated::Pass;
        }
        let Ok(chunk) = serde_json::from_slice::<Value>(data) else {
            return Gated::Unreadable;
        };
        let before = done.len();
        let candidates = chunk["candidates"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, c) in candidates.iter().enumerate() {
            let choice = c["index"].as_u64().unwrap_or(i as u64) as u32;
            for part in c["content"]["parts"].as_array().into_iter().flatten() {
                let f = &part["functionCall"];
                if !f.is_object() {
                    continue;
                }
                done.push(ToolCall {
                    choice,
                    id: f["id"].as_str().map(str::to_string),
                    name: f["name"].as_str().unwrap_or_default().to_string(),
                    arguments: match &f["args"] {
                        Value::Null => String::new(),
                        args => args.to_string(),
                    },
                });
            }
        }
        if done.len() > before {
            Gated::Hold
        } else {
            Gated::Pass
        }
    }

    fn open(&self) -> bool {
        false
    }

    fn finish(&mut self, _done: &mut Vec<ToolCall>) {}

    fn refusal(&self, e: &ErrorText<'_>) -> Bytes {
        // Google's error object, as its APIs send it mid-stream.
        sse_event(None, &super::error::body(e))
    }
}
