//! Tool results the agent reports back in a request: which tool, and whether it failed.
//!
//! Every request carries the whole conversation, so only the results that are new in this turn
//! count: those after the model's last turn (OpenAI chat, Responses, Gemini) or in the last
//! message (Anthropic). The tool's name comes from the call with the same id earlier in the
//! conversation (`unknown` when absent).
//!
//! Failed means: Anthropic `tool_result` with `is_error: true`; Gemini `functionResponse` whose
//! `response` has an `error` key; OpenAI tool messages and Responses `function_call_output`
//! whose text contains one of the agent's `tool_error_markers`.

use std::collections::HashMap;

use serde_json::Value;

use crate::providers::Format;

/// One reported tool result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    /// Tool name (from the matching call), or `unknown`.
    pub tool: String,
    /// The agent reported the tool as failed.
    pub failed: bool,
}

/// The new tool results in a request body.
pub fn reported(doc: &Value, format: Format, markers: &[String]) -> Vec<ToolResult> {
    match format {
        Format::OpenAiChat | Format::Ollama => openai_chat(doc, markers),
        Format::OpenAiResponses => responses(doc, markers),
        Format::Anthropic => anthropic(doc),
        Format::Gemini => gemini(doc),
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn failed_by_markers(content: &Value, markers: &[String]) -> bool {
    if markers.is_empty() {
        return false;
    }
    let hit = |s: &str| markers.iter().any(|m| s.contains(m.as_str()));
    match content {
        Value::String(s) => hit(s),
        Value::Array(parts) => parts.iter().filter_map(|p| str_of(p, "text")).any(hit),
        _ => false,
    }
}

fn name_or_unknown(names: &HashMap<&str, &str>, id: Option<&str>) -> String {
    id.and_then(|id| names.get(id))
        .copied()
        .unwrap_or("unknown")
        .to_string()
}

fn openai_chat(doc: &Value, markers: &[String]) -> Vec<ToolResult> {
    let Some(msgs) = doc.get("messages").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut names = HashMap::new();
    let mut last_assistant = None;
    for (i, m) in msgs.iter().enumerate() {
        if str_of(m, "role") == Some("assistant") {
            last_assistant = Some(i);
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
    }
    let start = last_assistant.map_or(0, |i| i + 1);
    msgs[start.min(msgs.len())..]
        .iter()
        .filter(|m| str_of(m, "role") == Some("tool"))
        .map(|m| ToolResult {
            tool: name_or_unknown(&names, str_of(m, "tool_call_id")),
            failed: m
                .get("content")
                .is_some_and(|c| failed_by_markers(c, markers)),
        })
        .collect()
}

fn responses(doc: &Value, markers: &[String]) -> Vec<ToolResult> {
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

fn anthropic(doc: &Value) -> Vec<ToolResult> {
    let Some(msgs) = doc.get("messages").and_then(Value::as_array) else {
        return Vec::new();
    };
    let Some(last) = msgs.last().filter(|m| str_of(m, "role") == Some("user")) else {
        return Vec::new();
    };
    let mut names = HashMap::new();
    for m in msgs
        .iter()
        .filter(|m| str_of(m, "role") == Some("assistant"))
    {
        for b in m
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if str_of(b, "type") == Some("tool_use") {
                if let (Some(id), Some(name)) = (str_of(b, "id"), str_of(b, "name")) {
                    names.insert(id, name);
                }
            }
        }
    }
    last.get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|b| str_of(b, "type") == Some("tool_result"))
        .map(|b| ToolResult {
            tool: name_or_unknown(&names, str_of(b, "tool_use_id")),
            failed: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
        })
        .collect()
}

fn gemini(doc: &Value) -> Vec<ToolResult> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(tool: &str, failed: bool) -> ToolResult {
        ToolResult {
            tool: tool.into(),
            failed,
        }
    }

    #[test]
    fn openai_chat_counts_only_this_turn_with_markers() {
        let doc = json!({"messages":[
            {"role":"assistant","tool_calls":[{"id":"c0","function":{"name":"old"}}]},
            {"role":"tool","tool_call_id":"c0","content":"ERROR: stale"},
            {"role":"assistant","tool_calls":[{"id":"c1","function":{"name":"get_weather"}},{"id":"c2","function":{"name":"search"}}]},
            {"role":"tool","tool_call_id":"c1","content":"sunny"},
            {"role":"tool","tool_call_id":"c2","content":[{"type":"text","text":"ERROR: timeout"}]},
            {"role":"tool","tool_call_id":"zz","content":"x"}
        ]});
        let markers = vec!["ERROR:".to_string()];
        assert_eq!(
            reported(&doc, Format::OpenAiChat, &markers),
            vec![
                r("get_weather", false),
                r("search", true),
                r("unknown", false)
            ]
        );
        assert_eq!(
            reported(&doc, Format::OpenAiChat, &[])[1],
            r("search", false)
        );
    }

    #[test]
    fn anthropic_is_error_in_the_last_user_message() {
        let doc = json!({"messages":[
            {"role":"user","content":"hi"},
            {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"get_weather","input":{}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","is_error":true,"content":"boom"},{"type":"text","text":"go on"}]}
        ]});
        assert_eq!(
            reported(&doc, Format::Anthropic, &[]),
            vec![r("get_weather", true)]
        );
    }

    #[test]
    fn responses_and_gemini() {
        let resp = json!({"input":[
            {"type":"function_call","call_id":"a","name":"lookup"},
            {"type":"function_call_output","call_id":"a","output":"failed: 404"}
        ]});
        assert_eq!(
            reported(&resp, Format::OpenAiResponses, &["failed".to_string()]),
            vec![r("lookup", true)]
        );
        let gem = json!({"contents":[
            {"role":"model","parts":[{"functionCall":{"name":"f","args":{}}}]},
            {"role":"user","parts":[{"functionResponse":{"name":"f","response":{"error":"nope"}}},{"functionResponse":{"name":"g","response":{"ok":1}}}]}
        ]});
        assert_eq!(
            reported(&gem, Format::Gemini, &[]),
            vec![r("f", true), r("g", false)]
        );
        assert!(reported(&json!("x"), Format::Gemini, &[]).is_empty());
    }
}
