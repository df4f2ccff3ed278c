//! Tool results a Gemini request reports: `functionResponse` parts after the model's last turn;
//! failed when the `response` has an `error` key.

use serde_json::Value;

use crate::providers::tools::{str_of, ToolResult};

/// The new tool results in a request body.
pub(super) fn tool_results(doc: &Value) -> Vec<ToolResult> {
    let Some(contents) = doc.get("contents").and_then(Value::as_array) else {
        return Vec::new();
    };
    let start = contents
        .iter()
        .rposition(|c| str_of(c, "role") == Some("model"))
        .map_or(0, |i| i + 1);
    contents[start..]
        .iter()
        .flat_map(|c| {
            c.get("parts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|p| p.get("functionResponse"))
        .map(|fr| ToolResult {
            tool: str_of(fr, "name").unwrap_or("unknown").to_string(),
            failed: fr.get("response").is_some_and(|r| r.get("error").is_some()),
        })
        .collect()
}
