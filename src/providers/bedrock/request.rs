//! What a Converse request names under its own fields: the output cap
//! (`inferenceConfig.maxTokens`) and the declared tools (`toolConfig.tools[]`, each a union of
//! `toolSpec {name, inputSchema: {json}}`, `systemTool {name}` and `cachePoint`).

use serde::Deserialize;
use serde_json::Value;

use crate::providers::fields::{DeclaredTool, OwnFields, RequestBody};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Converse {
    #[serde(default)]
    inference_config: Option<Inference>,
    #[serde(default)]
    tool_config: Option<ToolConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Inference {
    #[serde(default)]
    max_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ToolConfig {
    #[serde(default)]
    tools: Vec<Tool>,
}

/// One item of `toolConfig.tools`: only one member is set (a `cachePoint` names no tool).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tool {
    #[serde(default)]
    tool_spec: Option<Spec>,
    #[serde(default)]
    system_tool: Option<Named>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    name: String,
    #[serde(default)]
    input_schema: Option<InputSchema>,
}

#[derive(Deserialize)]
struct InputSchema {
    #[serde(default)]
    json: Value,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

/// The cap and tools of a Converse request body; `None` when it is not a Converse body's shape
/// (the request is then forwarded unread, as any body the proxy cannot read).
pub(super) fn own_fields(body: RequestBody<'_>) -> Option<OwnFields> {
    let c: Converse = match body {
        RequestBody::Bytes(b) => serde_json::from_slice(b).ok()?,
        RequestBody::Doc(d) => Converse::deserialize(d).ok()?,
    };
    let tools = c
        .tool_config
        .map(|t| t.tools)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| match (t.tool_spec, t.system_tool) {
            (Some(s), _) => Some(DeclaredTool {
                name: s.name,
                schema: s.input_schema.map(|i| i.json).unwrap_or(Value::Null).into(),
                free_form: false,
            }),
            (None, Some(n)) => Some(DeclaredTool {
                name: n.name,
                schema: Default::default(),
                free_form: false,
            }),
            (None, None) => None,
        })
        .collect();
    Some(OwnFields {
        max_tokens: c.inference_config.and_then(|i| i.max_tokens),
        tools,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converse_cap_and_tools_are_read_from_bytes_and_documents_alike() {
        let doc = json!({
            "messages": [],
            "inferenceConfig": {"maxTokens": 512, "temperature": 0.5},
            "toolConfig": {"tools": [
                {"toolSpec": {"name": "get_weather", "description": "d",
                              "inputSchema": {"json": {"type": "object", "required": ["city"]}}}},
                {"cachePoint": {"type": "default"}},
                {"systemTool": {"name": "nova_grounding"}}
            ], "toolChoice": {"auto": {}}}
        });
        let bytes = serde_json::to_vec(&doc).unwrap();
        let a = own_fields(RequestBody::Bytes(&bytes)).unwrap();
        let d = crate::providers::Doc::of(&doc);
        assert_eq!(own_fields(RequestBody::Doc(d.root())), Some(a.clone()));
        assert_eq!(a.max_tokens, Some(512));
        let names: Vec<_> = a.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["get_weather", "nova_grounding"]);
        assert_eq!(a.tools[0].schema.to_value()["required"][0], "city");
        assert_eq!(
            own_fields(RequestBody::Bytes(b"{}")),
            Some(OwnFields::default())
        );
    }
}
