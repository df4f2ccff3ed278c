//! Tools in requests, shared by every format: declarations in any provider's shape (read and
//! stripped item by item, whatever format the call is) and the pieces each format's reading of
//! reported tool results is built from.

use std::collections::HashMap;

use serde_json::Value;

use super::doc::{Items, Node};
use super::fields::{DeclaredTool, ToolSchema};

/// One tool result a request reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    /// Tool name (from the matching call), or `unknown`.
    pub tool: String,
    /// The agent reported the tool as failed.
    pub failed: bool,
}

/// Tool declarations in any provider's shape: OpenAI chat / Ollama `{"type":"function",
/// "function":{name, parameters}}`, chat custom tools `{"type":"custom","custom":{name}}`,
/// Responses `{"type":"function", name, parameters}` (and `{"type":"custom", name}`), Anthropic
/// `{name, input_schema}`, Gemini `{"functionDeclarations":[{name, parameters}]}`.
/// Gemini's JSON accepts proto field names too (`function_declarations`), and a JSON Schema in
/// `parametersJsonSchema` / `parameters_json_schema` instead of its OpenAPI `parameters`.
/// A tool without a name that the client runs (Responses `shell`, `local_shell`,
/// `computer_use_preview`, `apply_patch`) is declared under its `type` ([`client_run_type`]).
pub(super) fn declared(tools: Items<'_>) -> Vec<DeclaredTool> {
    let mut out = Vec::new();
    for t in tools {
        let kind = str_of(t, "type");
        if let Some(f) = t.get("function") {
            out.extend(named_tool(f, &["parameters"], false));
        } else if let (Some("custom"), Some(c)) = (kind, t.get("custom")) {
            // Its calls carry free text, not JSON arguments.
            out.extend(named_tool(c, &[], true));
        } else if let Some(decls) = gemini_declarations(t) {
            out.extend(decls.filter_map(|d| named_tool(d, &GEMINI_SCHEMA_KEYS, false)));
        } else if t.get("input_schema").is_some() {
            out.extend(named_tool(t, &["input_schema"], false));
        } else if let (Some("namespace"), Some(inner)) =
            (kind, t.get("tools").and_then(Node::items))
        {
            // Responses `{"type":"namespace", name, tools:[…]}`: the model calls the functions
            // inside by their own names (the call states the namespace beside).
            out.extend(declared(inner));
        } else if t.get("name").is_some() {
            out.extend(named_tool(t, &["parameters"], kind == Some("custom")));
        } else if let Some(kind) = kind.filter(|k| client_run_type(k)) {
            out.push(DeclaredTool {
                name: kind.to_string(),
                schema: ToolSchema::default(),
                free_form: true,
            });
        }
    }
    out
}

/// The tool `t` declares by its `name`, its schema under the first of `schema_keys` present.
fn named_tool(t: Node<'_>, schema_keys: &[&str], free_form: bool) -> Option<DeclaredTool> {
    let name = t.get("name").and_then(Node::as_str)?;
    Some(DeclaredTool {
        name: name.to_string(),
        schema: schema_keys
            .iter()
            .find_map(|k| t.get(k))
            .map(ToolSchema::of_node)
            .unwrap_or_default(),
        free_form,
    })
}

/// Types of the tools a provider runs itself (web and file search, code interpreter, image
/// generation, remote MCP): their calls never reach the agent, so the lists do not name them.
const PROVIDER_RUN: [&str; 4] = ["file_search", "code_interpreter", "image_generation", "mcp"];

/// Whether a tool declared without a name, by its `type` only, is one the client runs: then it
/// is named by that type for the allow and deny lists (an agent that may not use `shell` must
/// not get a `shell` tool the OpenAI Agents SDK runs). Every type but the provider's own
/// (`web_search*` and [`PROVIDER_RUN`]) counts: a type not known here is checked, not passed.
pub(crate) fn client_run_type(kind: &str) -> bool {
    !kind.starts_with("web_search") && !PROVIDER_RUN.contains(&kind)
}

/// Where a Gemini function declaration keeps its argument schema, in the order read.
const GEMINI_SCHEMA_KEYS: [&str; 3] = [
    "parametersJsonSchema",
    "parameters_json_schema",
    "parameters",
];

/// A Gemini tool's function declarations, under either JSON name.
fn gemini_declarations(t: Node<'_>) -> Option<Items<'_>> {
    t.get("functionDeclarations")
        .or_else(|| t.get("function_declarations"))
        .and_then(Node::items)
}

/// Remove every declared tool `keep` refuses from the request's `tools` (any provider's shape);
/// with none left, `tools` and `tool_choice` go too (providers reject a choice without tools).
pub(super) fn strip_declared(doc: &mut Value, keep: &dyn Fn(&str) -> bool) {
    let Some(obj) = doc.as_object_mut() else {
        return;
    };
    // Chat Completions' legacy `functions` (with `function_call`, its choice).
    for (list, choice) in [("tools", "tool_choice"), ("functions", "function_call")] {
        let Some(Value::Array(tools)) = obj.get_mut(list) else {
            continue;
        };
        tools.retain_mut(|t| kept(t, keep));
        if tools.is_empty() {
            obj.remove(list);
            obj.remove(choice);
        }
    }
}

/// Whether the declaration `t` stays: every name it declares that `keep` refuses is removed
/// (inside a Gemini tool or a Responses namespace, which go when nothing is left in them).
fn kept(t: &mut Value, keep: &dyn Fn(&str) -> bool) -> bool {
    let named = |v: &Value| v.get("name").and_then(Value::as_str).is_none_or(keep);
    if let Some(f) = t.get("function") {
        return named(f);
    }
    let kind = t.get("type").and_then(Value::as_str).map(str::to_string);
    if let (Some("custom"), Some(c)) = (kind.as_deref(), t.get("custom")) {
        return named(c);
    }
    for key in ["functionDeclarations", "function_declarations"] {
        if let Some(Value::Array(decls)) = t.get_mut(key) {
            decls.retain(named);
            return !decls.is_empty();
        }
    }
    if t.get("input_schema").is_none() && kind.as_deref() == Some("namespace") {
        if let Some(Value::Array(inner)) = t.get_mut("tools") {
            inner.retain_mut(|i| kept(i, keep));
            return !inner.is_empty();
        }
    }
    match (t.get("name"), kind.as_deref()) {
        // Named by its type, as [`declared`] reads it.
        (None, Some(k)) if client_run_type(k) && t.get("input_schema").is_none() => keep(k),
        _ => named(t),
    }
}

/// The string at `key` of `v`.
pub(super) fn str_of<'a>(v: Node<'a>, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Node::as_str)
}

/// Whether a free-text tool result contains one of the agent's error markers.
pub(super) fn failed_by_markers(content: Node<'_>, markers: &[String]) -> bool {
    if markers.is_empty() {
        return false;
    }
    let hit = |s: &str| markers.iter().any(|m| s.contains(m.as_str()));
    match (content.as_str(), content.items()) {
        (Some(s), _) => hit(s),
        (_, Some(mut parts)) => parts.any(|p| str_of(p, "text").is_some_and(hit)),
        _ => false,
    }
}

/// Every item, and the index just past the last one `turn` picks (0 when none does): where a
/// request's new items begin. Callers read the new items (and, when they must, the earlier
/// ones) from the list rather than stepping over the conversation again.
pub(super) fn after_last<'a>(
    items: Items<'a>,
    turn: impl Fn(Node<'a>) -> bool,
) -> (Vec<Node<'a>>, usize) {
    // Asked from the end: the last turn is usually a few items back, and a long conversation's
    // earlier messages are then never read (collecting the items only steps over them).
    let all: Vec<Node<'a>> = items.collect();
    let start = all.iter().rposition(|m| turn(*m)).map_or(0, |i| i + 1);
    (all, start)
}

/// The tool name a call id was given earlier in the conversation, or `unknown`.
pub(super) fn name_or_unknown(names: &HashMap<&str, &str>, id: Option<&str>) -> String {
    id.and_then(|id| names.get(id))
        .copied()
        .unwrap_or("unknown")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Format;
    use serde_json::json;

    fn r(tool: &str, failed: bool) -> ToolResult {
        ToolResult {
            tool: tool.into(),
            failed,
        }
    }

    fn reported(doc: &Value, format: Format, markers: &[String]) -> Vec<ToolResult> {
        format
            .adapter()
            .tool_results(crate::providers::Doc::of(doc).root(), markers)
    }

    #[test]
    fn strips_every_provider_shape() {
        let keep = |n: &str| n != "bad";
        let mut chat = json!({"tools":[{"type":"function","function":{"name":"bad"}},{"type":"function","function":{"name":"ok"}}],"tool_choice":"auto"});
        strip_declared(&mut chat, &keep);
        assert_eq!(chat["tools"].as_array().unwrap().len(), 1);
        assert_eq!(chat["tool_choice"], "auto");
        let mut anth =
            json!({"tools":[{"name":"bad","input_schema":{}}],"tool_choice":{"type":"auto"}});
        strip_declared(&mut anth, &keep);
        assert!(anth.get("tools").is_none() && anth.get("tool_choice").is_none());
        let mut gem = json!({"tools":[{"functionDeclarations":[{"name":"bad"},{"name":"ok"}]},{"functionDeclarations":[{"name":"bad"}]}]});
        strip_declared(&mut gem, &keep);
        assert_eq!(
            gem["tools"],
            json!([{"functionDeclarations":[{"name":"ok"}]}])
        );
        let mut resp = json!({"tools":[{"type":"function","name":"bad"},{"type":"web_search"}]});
        strip_declared(&mut resp, &keep);
        assert_eq!(resp["tools"], json!([{"type":"web_search"}]));
        let mut legacy =
            json!({"functions":[{"name":"bad","parameters":{}}],"function_call":{"name":"bad"}});
        strip_declared(&mut legacy, &keep);
        assert_eq!(legacy, json!({}));
        let mut snake = json!({"tools":[{"function_declarations":[{"name":"bad"},{"name":"ok"}]}]});
        strip_declared(&mut snake, &keep);
        assert_eq!(
            snake["tools"],
            json!([{"function_declarations":[{"name":"ok"}]}])
        );
    }

    /// A Responses namespace declares the functions inside it (by their own names, as the
    /// model calls them), and is stripped function by function, gone when none is left.
    #[test]
    fn namespaces_declare_and_strip_their_functions() {
        let tools = json!([
            {"type":"namespace","name":"crm","tools":[
                {"type":"function","name":"delete_customer_data","parameters":{"type":"object"}},
                {"type":"function","name":"lookup"}
            ]}
        ]);
        let doc = crate::providers::Doc::of(&tools);
        let names: Vec<String> = declared(doc.root().items().unwrap())
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["delete_customer_data", "lookup"]);
        let keep = |n: &str| n != "delete_customer_data";
        let mut req = json!({"tools": tools.clone()});
        strip_declared(&mut req, &keep);
        assert_eq!(
            req["tools"],
            json!([{"type":"namespace","name":"crm","tools":[{"type":"function","name":"lookup"}]}])
        );
        let mut req = json!({"tools": tools, "tool_choice": "auto"});
        strip_declared(&mut req, &|n: &str| n == "other");
        assert!(req.get("tools").is_none() && req.get("tool_choice").is_none());
    }

    #[test]
    fn nameless_client_run_tools_are_named_by_type_and_custom_tools_by_their_name() {
        let tools = json!([
            {"type":"function","name":"search"},
            {"type":"shell"},
            {"type":"computer_use_preview","display_width":1024},
            {"type":"web_search"},
            {"type":"file_search"},
            {"type":"custom","custom":{"name":"code_exec"}},
            {"type":"custom","name":"patcher"},
        ]);
        let doc = crate::providers::Doc::of(&tools);
        let d = declared(doc.root().items().unwrap());
        let got: Vec<_> = d.iter().map(|t| (t.name.as_str(), t.free_form)).collect();
        assert_eq!(
            got,
            [
                ("search", false),
                ("shell", true),
                ("computer_use_preview", true),
                ("code_exec", true),
                ("patcher", true)
            ]
        );
        // Stripped under the same names.
        let mut v = json!({ "tools": tools });
        strip_declared(&mut v, &|n: &str| n == "search" || n == "code_exec");
        assert_eq!(
            v["tools"],
            json!([
                {"type":"function","name":"search"},
                {"type":"web_search"},
                {"type":"file_search"},
                {"type":"custom","custom":{"name":"code_exec"}},
            ])
        );
    }

    #[test]
    fn gemini_declarations_are_read_under_proto_names_and_json_schema_keys() {
        let schema = json!({"type":"object","required":["q"]});
        let tools = json!([
            {"function_declarations":[{"name":"a","parameters_json_schema":schema}]},
            {"functionDeclarations":[{"name":"b","parametersJsonSchema":schema},{"name":"c","parameters":schema}]},
        ]);
        let doc = crate::providers::Doc::of(&tools);
        let d = declared(doc.root().items().unwrap());
        let got: Vec<_> = d
            .iter()
            .map(|t| (t.name.as_str(), t.schema.to_value()))
            .collect();
        assert_eq!(
            got,
            [("a", schema.clone()), ("b", schema.clone()), ("c", schema)]
        );
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

    /// The Agents SDK's other client-run tools report results too, named as their calls are
    /// checked: a custom tool by its name, the built-ins by their type.
    #[test]
    fn responses_results_of_every_client_run_tool() {
        let resp = json!({"input":[
            {"type":"shell_call","call_id":"s","action":{"commands":["ls"]}},
            {"type":"custom_tool_call","call_id":"c","name":"grep_code","input":"x"},
            {"type":"apply_patch_call","call_id":"p","operation":{}},
            {"type":"shell_call_output","call_id":"s","output":"Traceback: boom"},
            {"type":"custom_tool_call_output","call_id":"c","output":"ok"},
            {"type":"apply_patch_call_output","call_id":"p","output":"done"},
            {"type":"computer_call_output","call_id":"gone","output":{"type":"input_image"}},
            {"type":"web_search_call_output","call_id":"w","output":"not the client's"}
        ]});
        assert_eq!(
            reported(&resp, Format::OpenAiResponses, &["Traceback".to_string()]),
            vec![
                r("shell", true),
                r("grep_code", false),
                r("apply_patch", false),
                r("computer_use_preview", false)
            ]
        );
        // A shell call is the model's turn: results before it are answered already.
        let resp = json!({"input":[
            {"type":"function_call","call_id":"a","name":"lookup"},
            {"type":"function_call_output","call_id":"a","output":"x"},
            {"type":"shell_call","call_id":"s","action":{}}
        ]});
        assert!(reported(&resp, Format::OpenAiResponses, &[]).is_empty());
    }

    #[test]
    fn results_before_the_last_model_turn_are_not_new() {
        // Tool results answered already (a model turn since): nothing new to report.
        let chat = json!({"messages":[
            {"role":"assistant","tool_calls":[{"id":"c1","function":{"name":"f"}}]},
            {"role":"tool","tool_call_id":"c1","content":"ok"},
            {"role":"assistant","content":"done"},
            {"role":"user","content":"thanks"}
        ]});
        assert!(reported(&chat, Format::OpenAiChat, &[]).is_empty());
        let resp = json!({"input":[
            {"type":"function_call","call_id":"a","name":"lookup"},
            {"type":"function_call_output","call_id":"a","output":"x"},
            {"role":"assistant","content":"done"},
            {"role":"user","content":"and now?"}
        ]});
        assert!(reported(&resp, Format::OpenAiResponses, &[]).is_empty());
        let resp = json!({"input":[
            {"type":"function_call_output","call_id":"a","output":"x"},
            {"type":"function_call","call_id":"a","name":"lookup"}
        ]});
        assert!(reported(&resp, Format::OpenAiResponses, &[]).is_empty());
        let anth = json!({"messages":[
            {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{}}]},
            {"role":"user","content":[{"type":"text","text":"no result here"}]}
        ]});
        assert!(reported(&anth, Format::Anthropic, &[]).is_empty());
    }
}
