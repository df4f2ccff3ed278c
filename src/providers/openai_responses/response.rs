//! Reading OpenAI Responses response bodies and streams.

use std::borrow::Cow;

use serde::Deserialize;

use crate::providers::shape::ErrorObj;
use crate::providers::usage::{ResponseRecord, ServerToolUse, ToolCall, Usage};

use super::items;

/// Stream state.
#[derive(Default)]
pub struct Stream {
    pub(crate) record: ResponseRecord,
    /// (item id, call) in the order the items were added.
    calls: Vec<(String, ToolCall)>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    response: Option<ResponseObj>,
    #[serde(default)]
    item: Option<Item>,
    #[serde(default, borrow)]
    item_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    delta: Option<Cow<'a, str>>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ResponseObj {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    output: Vec<Item>,
    #[serde(default)]
    usage: Option<ResponsesUsage>,
    #[serde(default)]
    error: Option<ErrorObj>,
    #[serde(default)]
    incomplete_details: Option<Incomplete>,
}

#[derive(Deserialize)]
struct Incomplete {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
    /// A custom tool call's input.
    #[serde(default)]
    input: Option<serde_json::Value>,
    /// What a built-in client tool's call asks (`shell`, `local_shell`, `computer`).
    #[serde(default)]
    action: Option<serde_json::Value>,
    /// What an `apply_patch` call asks.
    #[serde(default)]
    operation: Option<serde_json::Value>,
}

impl Item {
    /// The client-run call this item is, or `None` ([`super::items`]).
    fn call(&self) -> Option<ToolCall> {
        let name = items::call_name(&self.kind, self.name.as_deref())?;
        Some(ToolCall {
            choice: 0,
            id: self.call_id.clone(),
            name,
            arguments: items::call_arguments(
                &self.kind,
                self.arguments.as_deref(),
                self.input.as_ref(),
                self.action.as_ref().or(self.operation.as_ref()),
            ),
        })
    }
}

#[derive(Deserialize)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Deserialize)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct OutputDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<ErrorObj>,
}

/// Output items that are neither messages, reasoning nor calls the client runs are tools the
/// provider ran itself.
fn is_server_tool(kind: &str) -> bool {
    !matches!(kind, "message" | "reasoning" | "") && items::call_name(kind, None).is_none()
}

/// Count an output item of type `kind` if it is a provider-run tool call billed per call.
fn count_billed(kind: &str, t: &mut ServerToolUse) {
    match kind {
        "web_search_call" => t.web_search = t.web_search.saturating_add(1),
        "file_search_call" => t.file_search = t.file_search.saturating_add(1),
        _ => {}
    }
}

/// The billed provider-run tool calls among `output`.
fn billed(output: &[Item]) -> ServerToolUse {
    let mut t = ServerToolUse::default();
    for item in output {
        count_billed(&item.kind, &mut t);
    }
    t
}

// === impl ResponsesUsage ===

impl ResponsesUsage {
    fn to_usage(&self) -> Usage {
        let reasoning = self
            .output_tokens_details
            .as_ref()
            .and_then(|d| d.reasoning_tokens);
        let outside = crate::providers::shape::reasoning_outside(
            self.input_tokens,
            self.output_tokens,
            reasoning,
            self.total_tokens,
        );
        Usage {
            input: self.input_tokens,
            output: match (self.output_tokens, outside) {
                (Some(o), true) => Some(o.saturating_add(reasoning.unwrap_or(0))),
                (o, _) => o,
            },
            cached_input: self
                .input_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens),
            cache_creation_input: None,
            cache_creation_1h: None,
            reasoning,
            total: self.total_tokens,
        }
    }
}

// === impl ResponseObj ===

impl ResponseObj {
    /// Terminal facts: model, id, status, usage, error.
    fn apply(&self, r: &mut ResponseRecord) {
        if let Some(id) = self.id.as_ref().filter(|v| !v.is_empty()) {
            r.id = Some(id.clone());
        }
        if let Some(model) = self.model.as_ref().filter(|v| !v.is_empty()) {
            r.model = Some(model.clone());
        }
        if let Some(u) = &self.usage {
            r.usage = u.to_usage();
        }
        if let Some(e) = &self.error {
            r.error_type = Some(e.error_type());
        }
        if let Some(s) = &self.status {
            let reason = self
                .incomplete_details
                .as_ref()
                .and_then(|d| d.reason.as_deref());
            r.finish_reasons = vec![match reason {
                Some(reason) => format!("{s}:{reason}"),
                None => s.clone(),
            }];
        }
    }
}

// === impl Stream ===

impl Stream {
    /// One `data:` payload; `None` when it is not an event, else whether it carried output.
    pub(super) fn event(&mut self, data: &[u8]) -> Option<bool> {
        if data.starts_with(br#"{"type":"response.output_text.delta""#) && data.ends_with(b"}") {
            return Some(true); // the bulk of a text stream: output, nothing to account
        }
        let ev: Event<'_> = serde_json::from_slice(data).ok()?;
        match ev.kind.as_ref() {
            "response.created" | "response.in_progress" => {
                if let Some(resp) = &ev.response {
                    crate::providers::shape::set_once(&mut self.record.id, resp.id.as_deref());
                    crate::providers::shape::set_once(
                        &mut self.record.model,
                        resp.model.as_deref(),
                    );
                }
                Some(false)
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                if let Some(resp) = &ev.response {
                    resp.apply(&mut self.record);
                    // The final output lists every item; a stream cut before it keeps the
                    // items counted as they were added.
                    if !resp.output.is_empty() {
                        self.record.server_tools = billed(&resp.output);
                    }
                }
                Some(false)
            }
            "response.output_item.added" => {
                if let Some(item) = ev.item {
                    self.item_added(item);
                }
                Some(false)
            }
            "response.function_call_arguments.delta" | "response.custom_tool_call_input.delta" => {
                if let (Some(id), Some(d)) = (ev.item_id, ev.delta) {
                    if let Some((_, call)) = self.calls.iter_mut().find(|(i, _)| *i == id) {
                        call.arguments.push_str(&d);
                    }
                }
                Some(true)
            }
            "error" => {
                self.record.error_type = Some(match ev.code {
                    Some(serde_json::Value::String(s)) => s,
                    _ => "error".to_string(),
                });
                Some(false)
            }
            k => Some(k.ends_with(".delta")),
        }
    }

    fn item_added(&mut self, item: Item) {
        if let Some(mut call) = item.call() {
            // A function's arguments and a custom tool's input come as deltas.
            if matches!(item.kind.as_str(), "function_call" | "custom_tool_call") {
                call.arguments.clear();
            }
            self.calls.push((item.id.unwrap_or_default(), call));
        } else if is_server_tool(&item.kind) {
            count_billed(&item.kind, &mut self.record.server_tools);
            self.record.server_tool_calls.push(item.kind);
        }
    }

    /// The stream ended.
    pub(super) fn finish(mut self) -> ResponseRecord {
        self.record.tool_calls = self.calls.into_iter().map(|(_, c)| c).collect();
        self.record
    }
}

/// A whole JSON body; false when it is not JSON of this shape.
pub(super) fn parse_json(body: &[u8], r: &mut ResponseRecord) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    if v.get("object").is_none() && v.get("error").is_some_and(|e| !e.is_null()) {
        if let Ok(e) = serde_json::from_value::<ErrorBody>(v) {
            r.error_type = e.error.as_ref().map(ErrorObj::error_type);
        }
        return true;
    }
    let Ok(resp) = serde_json::from_value::<ResponseObj>(v) else {
        return false;
    };
    resp.apply(r);
    r.server_tools = billed(&resp.output);
    for item in resp.output {
        if let Some(call) = item.call() {
            r.tool_calls.push(call);
        } else if is_server_tool(&item.kind) {
            r.server_tool_calls.push(item.kind);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use crate::providers::{Format, ResponseParser, ServerToolUse};

    fn json(body: &str) -> crate::providers::ResponseRecord {
        let mut p = ResponseParser::new(Format::OpenAiResponses, false, 1 << 20);
        p.feed(body.as_bytes());
        p.finish()
    }

    #[test]
    fn reasoning_beside_output_tokens_is_added_and_inside_is_kept() {
        let r = json(
            r#"{"id":"resp_1","object":"response","model":"grok-4","status":"completed","output":[],"usage":{"input_tokens":20,"output_tokens":10,"total_tokens":130,"output_tokens_details":{"reasoning_tokens":100}}}"#,
        );
        assert_eq!((r.usage.output, r.usage.reasoning), (Some(110), Some(100)));
        let r = json(
            r#"{"id":"resp_1","object":"response","model":"o3","status":"completed","output":[],"usage":{"input_tokens":20,"output_tokens":110,"total_tokens":130,"output_tokens_details":{"reasoning_tokens":100}}}"#,
        );
        assert_eq!((r.usage.output, r.usage.reasoning), (Some(110), Some(100)));
    }

    #[test]
    fn an_empty_model_in_a_stream_is_replaced_by_a_later_one() {
        let mut p = ResponseParser::new(Format::OpenAiResponses, true, 1 << 20);
        p.feed(b"data: {\"type\":\"response.created\",\"response\":{\"id\":\"\",\"model\":\"\",\"status\":\"in_progress\"}}\n\n");
        p.feed(b"data: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_2\",\"model\":\"gpt-4.1\",\"status\":\"completed\",\"usage\":{\"input_tokens\":3,\"output_tokens\":4,\"total_tokens\":7}}}\n\n");
        let r = p.finish();
        assert_eq!(r.model.as_deref(), Some("gpt-4.1"));
        assert_eq!(r.id.as_deref(), Some("resp_2"));
    }

    /// Each `web_search_call` and `file_search_call` output item is one billed call (recorded:
    /// six searches by gpt-5).
    #[test]
    fn web_and_file_search_items_are_counted() {
        let r = json(include_str!(
            "../../../tests/fixtures/corpus/openai-responses/json_web_search_cached_reasoning.response.json"
        ));
        assert_eq!(r.usage.input, Some(115886));
        assert_eq!(
            r.server_tools,
            ServerToolUse {
                web_search: 6,
                file_search: 0
            }
        );
        let r = json(
            r#"{"id":"resp_1","object":"response","model":"gpt-4.1","status":"completed","output":[{"type":"file_search_call","id":"fs_1","status":"completed","queries":["q"]},{"type":"file_search_call","id":"fs_2","status":"completed"},{"type":"code_interpreter_call","id":"ci_1"},{"type":"message","content":[]}],"usage":{"input_tokens":3,"output_tokens":4,"total_tokens":7}}"#,
        );
        assert_eq!(
            r.server_tools,
            ServerToolUse {
                web_search: 0,
                file_search: 2
            }
        );
    }

    /// A stream's `response.completed` lists the output items; one cut before it keeps the
    /// searches whose items were added.
    #[test]
    fn a_stream_counts_the_searches_of_its_final_response() {
        let body: &[u8] = include_bytes!(
            "../../../tests/fixtures/corpus/openai-responses/sse_web_search_cached_reasoning.response.sse"
        );
        for size in [5, 4096] {
            let mut p = ResponseParser::new(Format::OpenAiResponses, true, 1 << 20);
            for chunk in body.chunks(size) {
                p.feed(chunk);
            }
            let r = p.finish();
            assert_eq!(r.usage.input, Some(9463));
            assert_eq!(r.server_tools.web_search, 1, "chunks of {size}");
        }
        let mut p = ResponseParser::new(Format::OpenAiResponses, true, 1 << 20);
        for id in ["ws_1", "ws_2"] {
            p.feed(format!("data: {{\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{{\"type\":\"web_search_call\",\"id\":\"{id}\",\"status\":\"in_progress\"}}}}\n\n").as_bytes());
        }
        assert_eq!(p.finish().server_tools.web_search, 2, "cut short");
    }
}
