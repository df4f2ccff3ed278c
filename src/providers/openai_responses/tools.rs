//! Tool results a Responses request reports: `function_call_output` items after the model's
//! last turn, named by their `function_call`; failed when the output holds an error marker.

use std::collections::HashMap;

use serde_json::Value;

use crate::providers::tools::{failed_by_markers, name_or_unknown, str_of, ToolResult};

/// The new tool results in a request body.
pub(super) fn tool_results(doc: &Value, markers: &[String]) -> Vec<ToolResult> {
    let Some(items) = doc.get("input").and_then(Value::as_array) else {
        return Vec::new();
    };
    // Items after the model's last turn (a function call or an assistant message) are the new
    // results; without a function call output among them the history is not walked.
    let start = items
        .iter()
        .rposition(|it| {
            str_of(it, "type") == Some("function_call") || str_of(it, "role") == Some("assistant")
        })
        .map_or(0, |i| i + 1);
    let is_output = |it: &&Value| str_of(it, "type") == Some("function_call_output");
    let new = &items[start.min(items.len())..];
    if !new.iter().any(|it| is_output(&it)) {
        return Vec::new();
    }
    let mut names = HashMap::new();
    for it in items {
        if str_of(it, "type") == Some("function_call") {
            if let (Some(id), Some(name)) = (str_of(it, "call_id"), str_of(it, "name")) {
                names.insert(id, name);
            }
        }
    }
    new.iter()
        .filter(is_output)
        .map(|it| ToolResult {
            tool: name_or_unknown(&names, str_of(it, "call_id")),
            failed: it
                .get("output")
                .is_some_and(|c| failed_by_markers(c, markers)),
        })
        .collect()
}
