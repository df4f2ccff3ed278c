//! Tool results a Responses request reports: the outputs of the client-run calls after the
//! model's last turn — `function_call_output`, and those of the calls the Agents SDK runs
//! beside functions (`custom_tool_call_output`, `shell_call_output`, `local_shell_call_output`,
//! `computer_call_output`, `apply_patch_call_output`) — each named by its call (a nameless
//! built-in's by its tool type, as its call is checked); failed when the output holds an error
//! marker.

use std::collections::HashMap;

use super::items::call_name;
use crate::providers::doc::Node;
use crate::providers::tools::{after_last, failed_by_markers, str_of, ToolResult};

/// The call type an output item of type `kind` answers, when it answers a client-run call.
fn answered(kind: &str) -> Option<&str> {
    let call = kind.strip_suffix("_output")?;
    call_name(call, None).map(|_| call)
}

/// Whether an item is a client-run call (a function's, or another tool the client runs).
fn is_call(it: Node<'_>) -> bool {
    str_of(it, "type").is_some_and(|k| call_name(k, None).is_some())
}

/// The new tool results in a request body.
pub(super) fn tool_results(doc: Node<'_>, markers: &[String]) -> Vec<ToolResult> {
    let Some(items) = doc.get("input").and_then(Node::items) else {
        return Vec::new();
    };
    // Items after the model's last turn (a client-run call or an assistant message) are the
    // new results; without a call output among them the history is not walked.
    let (all, start) = after_last(items, |it| {
        is_call(it) || str_of(it, "role") == Some("assistant")
    });
    let new = || {
        all[start..]
            .iter()
            .copied()
            .filter(|it| str_of(*it, "type").and_then(answered).is_some())
    };
    if new().next().is_none() {
        return Vec::new();
    }
    let mut names: HashMap<&str, String> = HashMap::new();
    for &it in &all {
        let (Some(kind), Some(id)) = (str_of(it, "type"), str_of(it, "call_id")) else {
            continue;
        };
        if let Some(name) = call_name(kind, str_of(it, "name")).filter(|n| !n.is_empty()) {
            names.insert(id, name);
        }
    }
    new()
        .map(|it| {
            let call = str_of(it, "type").and_then(answered).unwrap_or_default();
            let tool = str_of(it, "call_id")
                .and_then(|id| names.get(id).cloned())
                // An output whose call is not in the request: a built-in's name is its type.
                .or_else(|| call_name(call, None).filter(|n| !n.is_empty()))
                .unwrap_or_else(|| "unknown".to_string());
            ToolResult {
                tool,
                failed: it
                    .get("output")
                    .is_some_and(|c| failed_by_markers(c, markers)),
            }
        })
        .collect()
}
