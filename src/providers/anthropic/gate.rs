//! Gating a Messages stream on its tool calls: a call is one `tool_use` content block, from its
//! `content_block_start` through its `input_json_delta` fragments to its `content_block_stop`,
//! which completes it (so does `message_delta`, `message_stop` or the stream's end for a block
//! left open). Server tools (`server_tool_use`, run by Anthropic) are not the agent's to run and
//! pass like text.

use bytes::Bytes;
use serde_json::Value;

use crate::providers::adapter::{sse_event, ErrorText, Gated, ToolGate};
use crate::providers::shape::{event_kind, has_unicode_escape, json_key};
use crate::providers::usage::ToolCall;

/// Open `tool_use` blocks of one stream.
#[derive(Default)]
pub struct MessagesGate {
    /// (block index, call, whether input fragments came, the start's own input).
    blocks: Vec<Open>,
    /// Indexes of `tool_use` blocks completed: a fragment for one of them after that is
    /// unreadable (the SDKs add it to the input of a call already checked and released).
    closed: Vec<u64>,
}

struct Open {
    index: u64,
    call: ToolCall,
    fragments: bool,
    start_input: Option<String>,
}

json_key!(TOOL_USE, "tool_use");

impl ToolGate for MessagesGate {
    fn event(&mut self, event: &[u8], data: &[u8], done: &mut Vec<ToolCall>) -> Gated {
        let Ok(kind) = event_kind(event, data) else {
            return Gated::Unreadable;
        };
        match kind.as_deref().unwrap_or_default() {
            "content_block_start" => {
                // `"tool_use"` as a value: a quoted string cannot hold it unescaped (a `\u`
                // escape may spell it otherwise: such a start is parsed).
                if TOOL_USE.find(data).is_none() && !has_unicode_escape(data) {
                    return Gated::Pass;
                }
                let Ok(v) = serde_json::from_slice::<Value>(data) else {
                    return Gated::Unreadable;
                };
                let block = &v["content_block"];
                if block["type"] != "tool_use" {
                    return Gated::Pass;
                }
                let input = &block["input"];
                let start_input = match input.as_object() {
                    Some(o) if !o.is_empty() => Some(input.to_string()),
                    _ => None,
                };
                self.blocks.push(Open {
                    index: v["index"].as_u64().unwrap_or(0),
                    call: ToolCall {
                        choice: 0,
                        id: block["id"].as_str().map(str::to_string),
                        name: block["name"].as_str().unwrap_or_default().to_string(),
                        arguments: String::new(),
                    },
                    fragments: false,
                    start_input,
                });
                Gated::Hold
            }
            k @ ("content_block_delta" | "content_block_stop")
                if !self.blocks.is_empty() || !self.closed.is_empty() =>
            {
                let Ok(v) = serde_json::from_slice::<Value>(data) else {
                    return Gated::Unreadable;
                };
                let index = v["index"].as_u64().unwrap_or(0);
                let Some(pos) = self.blocks.iter().position(|b| b.index == index) else {
                    let late = k == "content_block_delta" && self.closed.contains(&index);
                    return if late { Gated::Unreadable } else { Gated::Pass };
                };
                if k == "content_block_stop" {
                    let block = self.blocks.remove(pos);
                    self.closed.push(block.index);
                    done.push(block.into_call());
                } else if let Some(part) = v["delta"]["partial_json"].as_str() {
                    let b = &mut self.blocks[pos];
                    b.fragments = true;
                    b.call.arguments.push_str(part);
                }
                Gated::Hold
            }
            "message_delta" | "message_stop" => {
                self.finish(done);
                Gated::Pass
            }
            _ => Gated::Pass,
        }
    }

    fn open(&self) -> bool {
        !self.blocks.is_empty()
    }

    fn finish(&mut self, done: &mut Vec<ToolCall>) {
        for block in self.blocks.drain(..) {
            self.closed.push(block.index);
            done.push(block.into_call());
        }
    }

    fn refusal(&self, e: &ErrorText<'_>) -> Bytes {
        // Anthropic's own mid-stream error event: its SDKs raise it as an API error.
        sse_event(Some("error"), &super::error::body(e))
    }
}

impl Open {
    fn into_call(mut self) -> ToolCall {
        if !self.fragments {
            if let Some(input) = self.start_input.take() {
                self.call.arguments = input;
            }
        }
        self.call
    }
}
