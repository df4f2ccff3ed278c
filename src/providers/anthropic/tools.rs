//! Tool results an Anthropic request reports: `tool_result` blocks in the last (user) message,
//! named by the `tool_use` blocks before; failed when `is_error` is true.

use std::collections::HashMap;

use crate::providers::doc::Node;
use crate::providers::tools::{name_or_unknown, str_of, ToolResult};

/// The new tool results in a request body.
pub(super) fn tool_results(doc: Node<'_>) -> Vec<ToolResult> {
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
    let results = || {
        last.get("content")
            .and_then(Node::items)
            .into_iter()
            .flatten()
            .filter(|b| str_of(*b, "type") == Some("tool_result"))
    };
    // Most user turns carry no tool result: then the history is not walked for names.
    if results().next().is_none() {
        return Vec::new();
    }
    let mut names = HashMap::new();
    for m in msgs.filter(|m| str_of(*m, "role") == Some("assistant")) {
        for b in m.get("content").and_then(Node::items).into_iter().flatten() {
            if str_of(b, "type") == Some("tool_use") {
                if let (Some(id), Some(name)) = (str_of(b, "id"), str_of(b, "name")) {
                    names.insert(id, name);
                }
            }
        }
    }
    results()
        .map(|b| ToolResult {
            tool: name_or_unknown(&names, str_of(b, "tool_use_id")),
            failed: b.get("is_error").and_then(Node::as_bool).unwrap_or(false),
        })
        .collect()
}
