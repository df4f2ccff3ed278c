//! Tool results a Responses request reports: `function_call_output` items after the model's
//! last turn, named by their `function_call`; failed when the output holds an error marker.

use std::collections::HashMap;

use crate::providers::doc::Node;
use crate::providers::tools::{after_last, failed_by_markers, name_or_unknown, str_of, ToolResult};

/// The new tool results in a request body.
pub(super) fn tool_results(doc: Node<'_>, markers: &[String]) -> Vec<ToolResult> {
    let Some(items) = doc.get("input").and_then(Node::items) else {
        return Vec::new();
    };
    // Items after the model's last turn (a function call or an assistant message) are the new
    // results; without a function call output among them the history is not walked.
    let (all, start) = after_last(items, |it| {
        str_of(it, "type") == Some("function_call") || str_of(it, "role") == Some("assistant")
    });
    let new = || {
        all[start..]
            .iter()
            .copied()
            .filter(|it| str_of(*it, "type") == Some("function_call_output"))
    };
    if new().next().is_none() {
        return Vec::new();
    }
    let mut names = HashMap::new();
    for &it in &all {
        if str_of(it, "type") == Some("function_call") {
            if let (Some(id), Some(name)) = (str_of(it, "call_id"), str_of(it, "name")) {
                names.insert(id, name);
            }
        }
    }
    new()
        .map(|it| ToolResult {
            tool: name_or_unknown(&names, str_of(it, "call_id")),
            failed: it
                .get("output")
                .is_some_and(|c| failed_by_markers(c, markers)),
        })
        .collect()
}
