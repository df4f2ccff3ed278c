//! Tool results a Gemini request reports: `functionResponse` parts after the model's last turn;
//! failed when the `response` has an `error` key.

use crate::providers::doc::Node;
use crate::providers::tools::{after_last, str_of, ToolResult};

/// The new tool results in a request body.
pub(super) fn tool_results(doc: Node<'_>) -> Vec<ToolResult> {
    let Some(contents) = doc.get("contents").and_then(Node::items) else {
        return Vec::new();
    };
    let (all, start) = after_last(contents, |c| str_of(c, "role") == Some("model"));
    all[start..]
        .iter()
        .flat_map(|c| c.get("parts").and_then(Node::items).into_iter().flatten())
        .filter_map(|p| p.get("functionResponse"))
        .map(|fr| ToolResult {
            tool: str_of(fr, "name").unwrap_or("unknown").to_string(),
            failed: fr.get("response").is_some_and(|r| r.get("error").is_some()),
        })
        .collect()
}
