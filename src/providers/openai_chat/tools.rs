//! Tool results an OpenAI chat request reports: `tool` messages after the last assistant
//! message, named by the assistant's `tool_calls`; failed when the text holds an error marker.

use std::collections::HashMap;

use crate::providers::doc::Node;
use crate::providers::tools::{after_last, failed_by_markers, name_or_unknown, str_of, ToolResult};

/// The new tool results in a request body.
pub(in crate::providers) fn tool_results(doc: Node<'_>, markers: &[String]) -> Vec<ToolResult> {
    let Some(msgs) = doc.get("messages").and_then(Node::items) else {
        return Vec::new();
    };
    let role = |m: Node<'_>, r: &str| str_of(m, "role") == Some(r);
    // The tool messages after the last assistant message are the new results; most calls have
    // none (the conversation ends with a user turn), and then the names are not needed: the
    // history is not walked.
    let (all, start) = after_last(msgs, |m| role(m, "assistant"));
    let new = || all[start..].iter().copied().filter(|m| role(*m, "tool"));
    if new().next().is_none() {
        return Vec::new();
    }
    let mut names = HashMap::new();
    for &m in all.iter().filter(|m| role(**m, "assistant")) {
        for tc in m
            .get("tool_calls")
            .and_then(Node::items)
            .into_iter()
            .flatten()
        {
            if let (Some(id), Some(name)) = (
                str_of(tc, "id"),
                // A custom tool's call names it under `custom`.
                tc.get("function")
                    .or_else(|| tc.get("custom"))
                    .and_then(|f| str_of(f, "name")),
            ) {
                names.insert(id, name);
            }
        }
    }
    new()
        .map(|m| ToolResult {
            tool: name_or_unknown(&names, str_of(m, "tool_call_id")),
            failed: m
                .get("content")
                .is_some_and(|c| failed_by_markers(c, markers)),
        })
        .collect()
}
