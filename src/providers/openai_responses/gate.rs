//! Gating a Responses stream on its tool calls: a call is one client-run output item
//! (`function_call`, `custom_tool_call`, `shell_call` and the other built-in client tools'; see
//! [`items`](super::items)), from `response.output_item.added` through its
//! `response.function_call_arguments.*` / `response.custom_tool_call_input.*` events to its
//! `response.output_item.done`, which completes it with the item's final state. A terminal
//! event (`response.completed`, `.incomplete`, `.failed`) repeats every output item: a call there
//! that no item event showed is checked before it goes out, and calls left open complete. Other
//! output items (messages, reasoning, server tools such as web search) pass.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

use bytes::Bytes;
use serde_json::Value;

use crate::providers::adapter::{openai_stream_refusal, sse_event, ErrorText, Gated, ToolGate};
use crate::providers::shape::{event_kind, has_unicode_escape, json_key, value_at};
use crate::providers::usage::ToolCall;

use super::items::call_of;

/// Open client-run call items of one stream, and the calls already checked.
#[derive(Default)]
pub struct ResponsesGate {
    /// (output_index, item id, call).
    open: Vec<(u64, Option<String>, ToolCall)>,
    /// The calls completed so far, by a keyed hash of item id, call id, name and arguments
    /// ([`ResponsesGate::key_of`]): a set, not a list searched per terminal call, and bounded
    /// ([`MAX_CALLS`]).
    checked: HashSet<u64>,
    /// The secret keys of those hashes (random per stream: a collision cannot be crafted).
    keys: RandomState,
    /// The last `sequence_number` seen, for the refusal event's.
    sequence: Option<u64>,
}

json_key!(SEQUENCE_NUMBER, "sequence_number");

/// Most calls one stream may complete: past it the stream is unreadable (refused), as no model
/// makes that many calls in one response, and each is remembered to the stream's end.
pub(super) const MAX_CALLS: usize = 4096;

/// The end of every call item's type (`"function_call"`, `"shell_call"`, ...).
static CALL_TYPE_END: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new("_call\""));

impl ToolGate for ResponsesGate {
    fn event(&mut self, event: &[u8], data: &[u8], done: &mut Vec<ToolCall>) -> Gated {
        let gated = self.read(event, data, done);
        if self.checked.len() > MAX_CALLS {
            return Gated::Unreadable;
        }
        gated
    }

    fn open(&self) -> bool {
        !self.open.is_empty()
    }

    fn finish(&mut self, done: &mut Vec<ToolCall>) {
        for (_, id, call) in std::mem::take(&mut self.open) {
            self.complete(id, call, done);
        }
    }

    fn refusal(&self, e: &ErrorText<'_>) -> Bytes {
        // The Responses `error` event, plus an `error` object: the openai SDKs raise an APIError
        // on any event whose data has one.
        let body = serde_json::json!({
            "type": "error",
            "code": e.code,
            "message": e.message,
            "param": null,
            "sequence_number": self.sequence.map_or(0, |n| n + 1),
            "error": openai_stream_refusal(e),
        });
        sse_event(Some("error"), &body)
    }
}

impl ResponsesGate {
    /// [`ToolGate::event`] before the bound on calls.
    fn read(&mut self, event: &[u8], data: &[u8], done: &mut Vec<ToolCall>) -> Gated {
        if let Some(n) = value_at(data, &SEQUENCE_NUMBER).and_then(leading_number) {
            self.sequence = Some(n);
        }
        let Ok(kind) = event_kind(event, data) else {
            return Gated::Unreadable;
        };
        let kind = kind.as_deref().unwrap_or_default();
        match kind {
            // The bulk of a stream, and events of other items.
            "response.output_text.delta" | "response.reasoning_summary_text.delta" => Gated::Pass,
            "response.output_item.added" | "response.output_item.done" => {
                if !may_name_call(data) {
                    return Gated::Pass;
                }
                let Ok(v) = serde_json::from_slice::<Value>(data) else {
                    return Gated::Unreadable;
                };
                let item = &v["item"];
                let Some(call) = call_of(item) else {
                    return Gated::Pass;
                };
                let index = v["output_index"].as_u64().unwrap_or(0);
                let id = item["id"].as_str().map(str::to_string);
                if kind == "response.output_item.added" {
                    self.open.push((index, id, call));
                } else {
                    let pos = self.open.iter().position(|(i, _, _)| *i == index);
                    if let Some(p) = pos {
                        self.open.remove(p);
                    }
                    self.complete(id, call, done);
                }
                Gated::Hold
            }
            "response.function_call_arguments.delta"
            | "response.function_call_arguments.done"
            | "response.custom_tool_call_input.delta"
            | "response.custom_tool_call_input.done" => {
                let Ok(v) = serde_json::from_slice::<Value>(data) else {
                    return Gated::Unreadable;
                };
                let index = v["output_index"].as_u64();
                let id = v["item_id"].as_str();
                let Some(open) = self.open.iter_mut().find(|(i, item, _)| {
                    index == Some(*i) || (id.is_some() && item.as_deref() == id)
                }) else {
                    // Arguments of an item never announced: not a call we can pass unread.
                    return Gated::Unreadable;
                };
                if let Some(d) = v["delta"].as_str() {
                    open.2.arguments.push_str(d);
                } else if let Some(a) = v["arguments"].as_str().or(v["input"].as_str()) {
                    open.2.arguments = a.to_string();
                }
                Gated::Hold
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.finish(done);
                if !may_name_call(data) {
                    return Gated::Pass;
                }
                let Ok(v) = serde_json::from_slice::<Value>(data) else {
                    return Gated::Unreadable;
                };
                let mut unseen = false;
                for item in v["response"]["output"].as_array().into_iter().flatten() {
                    let Some(call) = call_of(item) else {
                        continue;
                    };
                    let key = self.key_of(item["id"].as_str(), &call);
                    if !self.checked.contains(&key) {
                        unseen = true;
                        self.complete(item["id"].as_str().map(str::to_string), call, done);
                    }
                }
                // Carrying calls no item event showed, it is withheld until they pass.
                if unseen {
                    Gated::Hold
                } else {
                    Gated::Pass
                }
            }
            _ => Gated::Pass,
        }
    }

    fn complete(&mut self, item_id: Option<String>, call: ToolCall, done: &mut Vec<ToolCall>) {
        let key = self.key_of(item_id.as_deref(), &call);
        self.checked.insert(key);
        done.push(call);
    }

    /// What identifies a call checked already: its ids and what it says. A terminal event's
    /// call passes as checked only if it says what was checked: an item id shown with another
    /// name or other arguments earlier is the agent's call as the terminal event states it,
    /// checked anew.
    fn key_of(&self, item_id: Option<&str>, call: &ToolCall) -> u64 {
        self.keys.hash_one((
            item_id.unwrap_or_default(),
            call.id.as_deref().unwrap_or_default(),
            &call.name,
            &call.arguments,
        ))
    }
}

/// Whether `data` may carry a call item: a string ends `_call` (every call item's type does),
/// or a `\u` escape may spell one otherwise (then it is parsed).
fn may_name_call(data: &[u8]) -> bool {
    CALL_TYPE_END.find(data).is_some() || has_unicode_escape(data)
}

/// The number at the start of a raw JSON value.
fn leading_number(v: &[u8]) -> Option<u64> {
    let n = v.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&v[..n]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done_item(i: usize) -> String {
        format!(
            r#"{{"type":"response.output_item.done","output_index":{i},"item":{{"type":"function_call","id":"fc_{i}","call_id":"c{i}","name":"ok","arguments":"{{}}"}}}}"#
        )
    }

    #[test]
    fn a_stream_of_more_calls_than_the_bound_is_unreadable() {
        let mut g = ResponsesGate::default();
        let mut done = Vec::new();
        for i in 0..MAX_CALLS {
            let gated = g.event(b"message", done_item(i).as_bytes(), &mut done);
            assert_eq!(gated, Gated::Hold, "call {i}");
            done.clear();
        }
        let over = g.event(b"message", done_item(MAX_CALLS).as_bytes(), &mut done);
        assert_eq!(over, Gated::Unreadable);
    }

    #[test]
    fn a_terminal_call_checked_already_passes_and_a_changed_one_is_checked() {
        let mut g = ResponsesGate::default();
        let mut done = Vec::new();
        g.event(b"message", done_item(0).as_bytes(), &mut done);
        assert_eq!(done.len(), 1);
        done.clear();
        let terminal = |args: &str| {
            format!(
                r#"{{"type":"response.completed","response":{{"output":[{{"type":"function_call","id":"fc_0","call_id":"c0","name":"ok","arguments":"{args}"}}]}}}}"#
            )
        };
        assert_eq!(
            g.event(b"message", terminal("{}").as_bytes(), &mut done),
            Gated::Pass
        );
        assert!(done.is_empty());
        assert_eq!(
            g.event(b"message", terminal("{\\\"a\\\":1}").as_bytes(), &mut done),
            Gated::Hold
        );
        assert_eq!(done.len(), 1);
    }
}
