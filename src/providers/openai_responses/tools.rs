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
    let mut names = HashMap::new();
    let mut last_model_turn = None;
    for (i, it) in items.iter().enumerate() {
        let kind = str_of(it, "type");
        if kind == Some("function_call") {
            last_model_turn = Some(i);
            if let (Some(id), Some(name)) = (str_of(it, "call_id"), str_of(it, "name")) {
                names.insert(id, name);
            }
        } else if str_of(it, "role") == Some("assistant") {
            last_model_turn = Some(i);
        }
    }
    let start = last_model_turn.map_or(0, |i| i + 1);
    items[start.min(items.len())..]
        .iter()
        .filter(|it| str_of(it, "type") == Some("function_call_output"))
        .map(|it| ToolResult {
            tool: name_or_unknown(&names, str_of(it, "call_id")),
            failed: it
                .get("output")
                .is_some_and(|c| failed_by_markers(c, markers)),
        })
        .collect()
}
