//! Tool calls the model emitted, checked against the request: denied, undeclared, arguments that
//! are not JSON or break the declared JSON Schema, and calls that need approval.
//!
//! Schemas are compiled lazily, only for tools the model called (a request declaring twenty
//! tools whose answer calls one compiles one schema), and kept across requests (agents resend
//! the same declarations every turn).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, LazyLock, Mutex};

use jsonschema::Validator;
use serde_json::Value;

use crate::providers::request::{DeclaredTool, ToolSchema};
use crate::providers::ToolCall;

use super::tools::ToolRules;
use crate::record::PolicyViolation;

/// One policy a tool call broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The policy label (`denied_tool`, `undeclared_tool`, `invalid_tool_args`, `approval_required`).
    pub policy: PolicyViolation,
    /// The tool the model called.
    pub tool: String,
}

/// Check every tool call against the agent's lists and the tools the request declared.
pub fn check_calls(
    rules: &ToolRules,
    declared: &[DeclaredTool],
    calls: &[ToolCall],
) -> Vec<Finding> {
    let mut findings = Vec::new();
    if calls.is_empty() {
        return findings;
    }
    // Compiled schema per declared tool name; `None` once a schema turned out uncompilable.
    let mut compiled: HashMap<&str, Option<Arc<Validator>>> = HashMap::new();
    for call in calls {
        let name = call.name.as_str();
        let mut push = |policy| {
            findings.push(Finding {
                policy,
                tool: call.name.clone(),
            })
        };
        let permitted = rules.permits(name);
        if !permitted {
            push(PolicyViolation::DeniedTool);
        }
        // A call to a tool the request never declared is a hallucination whether or not the
        // lists also deny it: both signals are counted, neither hides the other.
        match declared.iter().find(|t| t.name == name) {
            None => push(PolicyViolation::UndeclaredTool),
            Some(tool) if permitted && !args_valid(tool, &call.arguments, &mut compiled) => {
                push(PolicyViolation::InvalidToolArgs)
            }
            Some(_) => {}
        }
        if rules.needs_approval(name) {
            push(PolicyViolation::ApprovalRequired);
        }
    }
    findings
}

/// Compiled schemas shared by every request: agents send the same tool declarations every turn,
/// and compiling one costs about a tenth of a millisecond — on a gated stream's release path.
/// Keyed by a keyed hash of the schema's JSON text (random keys: a collision cannot be crafted);
/// `None` for a schema that does not compile. Bounded: emptied when full.
struct SchemaCache {
    keys: std::hash::RandomState,
    compiled: Mutex<HashMap<u64, Option<Arc<Validator>>>>,
}

/// Most distinct schemas kept.
const MAX_CACHED_SCHEMAS: usize = 1024;

static SCHEMAS: LazyLock<SchemaCache> = LazyLock::new(|| SchemaCache {
    keys: std::hash::RandomState::new(),
    compiled: Mutex::new(HashMap::new()),
});

impl SchemaCache {
    /// The compiled `schema`, compiled now if no request compiled it before.
    fn get(&self, schema: &ToolSchema) -> Option<Arc<Validator>> {
        let key = self.keys.hash_one(schema.text().as_bytes());
        if let Some(hit) = self.compiled.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return hit;
        }
        // Compiled outside the lock; two requests racing on a new schema both compile it.
        let v = compile(&schema.to_value()).map(Arc::new);
        if let Ok(mut c) = self.compiled.lock() {
            if c.len() >= MAX_CACHED_SCHEMAS {
                c.clear();
            }
            c.insert(key, v.clone());
        }
        v
    }
}

/// A validator for `schema`; `None` when it does not compile, or when checking a value against
/// it could take work far beyond its size: `$ref`s to shared definitions each checked again
/// wherever they are reached (40 levels of a definition naming the next one twice are 2^40
/// checks of `{}`, a worker frozen by a 2 KB schema from a client or a tool server).
pub(super) fn compile(schema: &Value) -> Option<Validator> {
    let mut budget = MAX_EXPANDED_NODES;
    if !expands_within(schema, schema, &mut Vec::new(), &mut budget) {
        return None;
    }
    jsonschema::validator_for(schema).ok()
}

/// Schema nodes a validation may visit, `$ref`s expanded, before it is not attempted.
const MAX_EXPANDED_NODES: usize = 100_000;

/// Whether `node`, local `$ref`s expanded (a reference already being expanded on the way down
/// counts once: the validator remembers those), has at most `budget` nodes.
fn expands_within<'a>(
    root: &'a Value,
    node: &'a Value,
    refs: &mut Vec<&'a str>,
    budget: &mut usize,
) -> bool {
    if *budget == 0 {
        return false;
    }
    *budget -= 1;
    match node {
        Value::Array(items) => items.iter().all(|v| expands_within(root, v, refs, budget)),
        Value::Object(map) => {
            if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                if !refs.contains(&r) {
                    if let Some(target) = r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                        refs.push(r);
                        let ok = expands_within(root, target, refs, budget);
                        refs.pop();
                        if !ok {
                            return false;
                        }
                    }
                }
            }
            map.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "$defs" | "definitions"))
                .all(|(_, v)| expands_within(root, v, refs, budget))
        }
        _ => true,
    }
}

fn args_valid<'a>(
    tool: &'a DeclaredTool,
    arguments: &str,
    compiled: &mut HashMap<&'a str, Option<Arc<Validator>>>,
) -> bool {
    // Free text (a custom tool's input) or an action (a shell command) has no JSON Schema to
    // break: such a call is held to its name only.
    if tool.free_form {
        return true;
    }
    // Anthropic streams a tool with no input as no fragments at all: that is `{}`.
    let text = if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    };
    let Ok(args) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    if tool.schema.is_null() {
        return true;
    }
    let validator = compiled
        .entry(tool.name.as_str())
        // A schema that does not compile (or needs a remote `$ref`, which is never fetched)
        // cannot be checked: the call is not blamed for it.
        .or_insert_with(|| SCHEMAS.get(&tool.schema));
    validator.as_ref().is_none_or(|v| v.is_valid(&args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentPolicy;
    use serde_json::json;

    fn call(name: &str, args: &str) -> ToolCall {
        ToolCall {
            choice: 0,
            id: None,
            name: name.into(),
            arguments: args.into(),
        }
    }

    fn weather() -> DeclaredTool {
        DeclaredTool {
            name: "get_weather".into(),
            schema: json!({"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false}).into(),
            free_form: false,
        }
    }

    /// Definitions naming the next one twice, 40 deep: checking `{}` would take 2^40 steps, so
    /// the schema is not used (the call is not blamed for it); a recursive schema (a tree)
    /// still is.
    #[test]
    fn a_schema_that_expands_exponentially_is_not_compiled() {
        let mut defs = serde_json::Map::new();
        for i in 0..40 {
            let next = format!("#/$defs/d{}", i + 1);
            defs.insert(
                format!("d{i}"),
                serde_json::json!({"anyOf":[{"$ref": next}, {"$ref": next}]}),
            );
        }
        defs.insert("d40".into(), serde_json::json!({"required":["__never"]}));
        let bomb = serde_json::json!({"type":"object","$ref":"#/$defs/d0","$defs": defs});
        assert!(compile(&bomb).is_none());
        let tree = serde_json::json!({"$ref":"#/$defs/node","$defs":{"node":{"type":"object",
            "properties":{"children":{"type":"array","items":{"$ref":"#/$defs/node"}}}}}});
        let v = compile(&tree).expect("a recursive schema compiles");
        assert!(v.is_valid(&serde_json::json!({"children":[{"children":[]}]})));
        assert!(!v.is_valid(&serde_json::json!({"children":[1]})));
    }

    #[test]
    fn valid_invalid_undeclared_denied_and_approval() {
        let rules = ToolRules::new(&AgentPolicy {
            denied_tools: vec!["rm_rf".into()],
            require_approval: vec!["get_weather".into()],
            ..AgentPolicy::default()
        });
        let declared = [weather()];
        let f = check_calls(
            &rules,
            &declared,
            &[
                call("get_weather", r#"{"city":"Paris"}"#),
                call("get_weather", r#"{"town":"Paris"}"#),
                call("get_weather", r#"{"city":"#),
                call("search", "{}"),
                call("rm_rf", "{}"),
            ],
        );
        let got: Vec<(PolicyViolation, &str)> =
            f.iter().map(|f| (f.policy, f.tool.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (PolicyViolation::ApprovalRequired, "get_weather"),
                (PolicyViolation::InvalidToolArgs, "get_weather"),
                (PolicyViolation::ApprovalRequired, "get_weather"),
                (PolicyViolation::InvalidToolArgs, "get_weather"),
                (PolicyViolation::ApprovalRequired, "get_weather"),
                (PolicyViolation::UndeclaredTool, "search"),
                (PolicyViolation::DeniedTool, "rm_rf"),
                (PolicyViolation::UndeclaredTool, "rm_rf"),
            ]
        );
    }

    #[test]
    fn a_denied_tool_that_was_declared_is_only_denied() {
        let rules = ToolRules::new(&AgentPolicy {
            allowed_tools: Some(vec!["search".into()]),
            ..AgentPolicy::default()
        });
        let declared = [weather()];
        let f = check_calls(
            &rules,
            &declared,
            &[call("get_weather", r#"{"town":1}"#), call("rm_rf", "{}")],
        );
        let got: Vec<(PolicyViolation, &str)> =
            f.iter().map(|f| (f.policy, f.tool.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (PolicyViolation::DeniedTool, "get_weather"),
                (PolicyViolation::DeniedTool, "rm_rf"),
                (PolicyViolation::UndeclaredTool, "rm_rf"),
            ]
        );
    }

    #[test]
    fn missing_or_broken_schemas_only_need_json() {
        let rules = ToolRules::default();
        let declared = [
            DeclaredTool {
                name: "free".into(),
                schema: Value::Null.into(),
                free_form: false,
            },
            DeclaredTool {
                name: "broken".into(),
                schema: json!({"type": 17}).into(),
                free_form: false,
            },
        ];
        let f = check_calls(
            &rules,
            &declared,
            &[
                call("free", ""),
                call("broken", r#"{"a":1}"#),
                call("free", "not json"),
            ],
        );
        assert_eq!(
            f,
            vec![Finding {
                policy: PolicyViolation::InvalidToolArgs,
                tool: "free".into()
            }]
        );
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compiled_schemas_are_shared_by_content_and_the_cache_is_bounded() {
        let a: ToolSchema = json!({"type":"object","required":["zz_cache_a"]}).into();
        let first = SCHEMAS.get(&a).expect("compiles");
        let again = SCHEMAS.get(&a.clone()).expect("compiles");
        assert!(Arc::ptr_eq(&first, &again), "the same schema compiles once");
        let b: ToolSchema = json!({"type":"object","required":["zz_cache_b"]}).into();
        assert!(!SCHEMAS.get(&b).unwrap().is_valid(&json!({})));
        assert!(
            SCHEMAS.get(&json!({"type": 7}).into()).is_none(),
            "uncompilable"
        );
        for i in 0..(MAX_CACHED_SCHEMAS + 10) {
            SCHEMAS.get(&json!({"type":"object","required":[format!("zz_{i}")]}).into());
        }
        assert!(SCHEMAS.compiled.lock().unwrap().len() <= MAX_CACHED_SCHEMAS);
    }
}
