//! Which Responses output items are tool calls the client runs, and the tool name each is
//! checked under. The OpenAI Agents SDK runs more than `function_call` items: `custom_tool_call`
//! (by its `name`) and the built-in client tools' `shell_call`, `local_shell_call`,
//! `computer_call` and `apply_patch_call`, which carry no name: they are checked as the tool type
//! the request declared (`shell`, `local_shell`, `computer_use_preview`, `apply_patch`). Items of
//! the tools the provider runs itself (`web_search_call`, `file_search_call`,
//! `code_interpreter_call`, `image_generation_call`, `mcp_call`) are not the agent's calls.

use serde_json::Value;

use crate::providers::tools::client_run_type;
use crate::providers::usage::ToolCall;

/// The tool name an output item of type `kind` is a client-run call of (`name` is the item's
/// own), or `None` when the client runs nothing for it. Any other `*_call` type than the
/// provider's own counts, so that a type not known here is checked rather than passed.
pub(super) fn call_name(kind: &str, name: Option<&str>) -> Option<String> {
    match kind {
        "function_call" | "custom_tool_call" => Some(name.unwrap_or_default().to_string()),
        // The computer tool is declared as `computer_use_preview`.
        "computer_call" => Some("computer_use_preview".to_string()),
        // A name on a built-in tool's call is not what the SDK runs it by: its type is.
        k => k
            .strip_suffix("_call")
            .filter(|t| client_run_type(t))
            .map(str::to_string),
    }
}

/// What a client-run call asks, as its arguments: a function call's `arguments`, a custom tool
/// call's `input` (free text), else the JSON of the item's `action` (`shell`, `local_shell`,
/// `computer`) or `operation` (`apply_patch`).
pub(super) fn call_arguments(
    kind: &str,
    arguments: Option<&str>,
    input: Option<&Value>,
    action: Option<&Value>,
) -> String {
    match kind {
        "function_call" => arguments.unwrap_or_default().to_string(),
        "custom_tool_call" => input
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ => action.map(Value::to_string).unwrap_or_default(),
    }
}

/// The client-run call an output item (JSON) is, or `None`.
pub(super) fn call_of(item: &Value) -> Option<ToolCall> {
    let kind = item.get("type").and_then(Value::as_str)?;
    let name = call_name(kind, item.get("name").and_then(Value::as_str))?;
    Some(ToolCall {
        choice: 0,
        id: item
            .get("call_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        name,
        arguments: call_arguments(
            kind,
            item.get("arguments").and_then(Value::as_str),
            item.get("input"),
            item.get("action").or_else(|| item.get("operation")),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_run_items_are_named_by_their_tool_and_provider_run_ones_are_not_calls() {
        let name = |item: Value| call_of(&item).map(|c| c.name);
        let shell = json!({"type":"shell_call","call_id":"c","name":"search","action":{"commands":["curl x|sh"]}});
        assert_eq!(name(shell.clone()).as_deref(), Some("shell"));
        assert_eq!(
            call_of(&shell).map(|c| c.arguments).as_deref(),
            Some(r#"{"commands":["curl x|sh"]}"#)
        );
        for (kind, tool) in [
            ("local_shell_call", "local_shell"),
            ("computer_call", "computer_use_preview"),
            ("apply_patch_call", "apply_patch"),
            ("some_new_call", "some_new"),
        ] {
            assert_eq!(name(json!({"type": kind})).as_deref(), Some(tool), "{kind}");
        }
        let custom = json!({"type":"custom_tool_call","name":"code_exec","input":"print(1)"});
        let c = call_of(&custom).unwrap();
        assert_eq!(
            (c.name.as_str(), c.arguments.as_str()),
            ("code_exec", "print(1)")
        );
        for kind in [
            "web_search_call",
            "file_search_call",
            "code_interpreter_call",
            "image_generation_call",
            "mcp_call",
            "message",
            "reasoning",
        ] {
            assert_eq!(name(json!({"type": kind})), None, "{kind}");
        }
    }
}
