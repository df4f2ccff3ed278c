//! Tool results an OpenAI chat request reports: `tool` messages after the last assistant
//! message, named by the assistant's `tool_calls`; failed when the text holds an error marker.

use std::collections::HashMap;

use serde_json::Value;

use crate::providers::tools::{failed_by_markers, name_or_unknown, str_of, ToolResult};

/// The new tool results in a request body.
pub(in crate::providers) fn tool_results(doc: &Value, markers: &[String]) -> Vec<ToolResult> {
    let Some(msgs) = doc.get("messages").and_then(Value::as_array) else {
        return Vec::new();
    };
    // The tool messages after the last assistant message are the new results; most calls have
    // none (the conversation ends with a user turn), and then the names are not needed: the
    // history is not walked.
    let start = msgs
        .iter()
        .rposition(|m| str_of(m, "role") == Some("assistant"))
        .map_or(0, |i| i + 1);
    let new = &msgs[start.min(msgs.len())..];
    if !new.iter().any(|m| str_of(m, "role") == Some("tool")) {
        return Vec::new();
    }
    let mut names = HashMap::new();
    for m in msgs
        .iter()
        .filter(|m| str_of(m, "role") == Some("assistant"))
    {
        for tc in m
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(id), Some(name)) = (
                str_of(tc, "id"),
                tc.get("function").and_then(|f| str_of(f, "name")),
            ) {
                names.insert(id, name);
            }
        }
    }
    new.iter()
        .filter(|m| str_of(m, "role") == Some("tool"))
        .map(|m| ToolResult {
            tool: name_or_unknown(&names, str_of(m, "tool_call_id")),
            failed: m
                .get("content")
                .is_some_and(|c| failed_by_markers(c, markers)),
        })
        .collect()
}
