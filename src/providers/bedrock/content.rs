//! A Converse request's messages and tool results, and a response's output text: content blocks
//! are objects keyed by kind (`{"text"}`, `{"toolUse"}`, `{"toolResult"}`), the system prompt a
//! list of `{"text"}` blocks.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::providers::doc::Node;
use crate::providers::genai::{text_of, text_part};
use crate::providers::tools::{name_or_unknown, str_of, ToolResult};

/// `(system instructions, input messages)` in the GenAI conventions' shapes.
pub(super) fn input_messages(b: &Map<String, Value>) -> (Option<Value>, Option<Value>) {
    let msgs: Vec<Value> = b
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
            json!({"role": role, "parts": texts(m.get("content"))})
        })
        .collect();
    let system = b
        .get("system")
        .map(|s| Value::Array(texts(Some(s))))
        .filter(|s| s.as_array().is_some_and(|a| !a.is_empty()));
    (system, (!msgs.is_empty()).then_some(Value::Array(msgs)))
}

/// The text blocks of a content list, as GenAI text parts.
fn texts(content: Option<&Value>) -> Vec<Value> {
    content
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|b| text_of(b.get("text")))
        .map(text_part)
        .collect()
}

/// Output text in one Converse body (`output.message.content`) or stream event
/// (`contentBlockDelta.delta.text`).
pub(super) fn output_text(v: &Value, add: &mut dyn FnMut(usize, &str)) {
    if let Some(content) = v
        .pointer("/output/message/content")
        .and_then(Value::as_array)
    {
        for t in content.iter().filter_map(|b| text_of(b.get("text"))) {
            add(0, t);
        }
    }
    let delta = v.get("contentBlockDelta").unwrap_or(v);
    if let Some(t) = text_of(delta.pointer("/delta/text")) {
        add(0, t);
    }
}

/// The new tool results of a request: `toolResult` blocks in the last (user) message, named by
/// the assistant's `toolUse` blocks before; failed when `status` is `error`.
pub(super) fn tool_results(doc: Node<'_>) -> Vec<ToolResult> {
    fn blocks(m: Node<'_>) -> impl Iterator<Item = Node<'_>> {
        m.get("content").and_then(Node::items).into_iter().flatten()
    }
    let Some(msgs) = doc.get("messages").and_then(Node::items) else {
        return Vec::new();
    };
    let Some(last) = msgs
        .clone()
        .last()
        .filter(|m| str_of(*m, "role") == Some("user"))
    else {
        return Vec::new();
    };
    let mut names = HashMap::new();
    for m in msgs.filter(|m| str_of(*m, "role") == Some("assistant")) {
        for t in blocks(m).filter_map(|b| b.get("toolUse")) {
            if let (Some(id), Some(name)) = (str_of(t, "toolUseId"), str_of(t, "name")) {
                names.insert(id, name);
            }
        }
    }
    blocks(last)
        .filter_map(|b| b.get("toolResult"))
        .map(|r| ToolResult {
            tool: name_or_unknown(&names, str_of(r, "toolUseId")),
            failed: str_of(r, "status") == Some("error"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converse_messages_and_tool_results() {
        let doc = json!({
            "system": [{"text": "Be brief."}],
            "messages": [
                {"role": "user", "content": [{"text": "Weather in Paris?"}]},
                {"role": "assistant", "content": [
                    {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}},
                    {"toolUse": {"toolUseId": "t2", "name": "get_time", "input": {}}}
                ]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "t1", "content": [{"text": "18C"}], "status": "success"}},
                    {"toolResult": {"toolUseId": "t2", "content": [{"text": "no clock"}], "status": "error"}}
                ]}
            ]
        });
        let results = tool_results(crate::providers::Doc::of(&doc).root());
        let got: Vec<(&str, bool)> = results
            .iter()
            .map(|r| (r.tool.as_str(), r.failed))
            .collect();
        assert_eq!(got, [("get_weather", false), ("get_time", true)]);
        let (system, msgs) = input_messages(doc.as_object().unwrap());
        assert_eq!(system, Some(json!([text_part("Be brief.")])));
        let msgs = msgs.unwrap();
        assert_eq!(
            msgs[0],
            json!({"role": "user", "parts": [text_part("Weather in Paris?")]})
        );
        let mut out = Vec::new();
        output_text(
            &json!({"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "Hi"}}}),
            &mut |i, t| out.push((i, t.to_string())),
        );
        output_text(
            &json!({"output": {"message": {"content": [{"text": "Sunny"}]}}}),
            &mut |i, t| out.push((i, t.to_string())),
        );
        assert_eq!(out, [(0, "Hi".to_string()), (0, "Sunny".to_string())]);
    }
}
