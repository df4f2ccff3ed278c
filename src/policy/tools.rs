//! Tool allow and deny lists: which tools an agent may declare or call, which need approval, and
//! removing the others from a request.

use std::collections::HashSet;

use serde_json::Value;

use crate::config::AgentPolicy;

/// An agent's tool lists, ready for lookups.
#[derive(Debug, Default)]
pub struct ToolRules {
    allowed: Option<HashSet<String>>,
    denied: HashSet<String>,
    approval: HashSet<String>,
}

// === impl ToolRules ===

impl ToolRules {
    /// The lists of one agent's config.
    pub fn new(p: &AgentPolicy) -> Self {
        Self {
            allowed: p
                .allowed_tools
                .as_ref()
                .map(|a| a.iter().cloned().collect()),
            denied: p.denied_tools.iter().cloned().collect(),
            approval: p.require_approval.iter().cloned().collect(),
        }
    }

    /// Whether the agent may use `name` (not denied, and allowlisted when there is a list).
    pub fn permits(&self, name: &str) -> bool {
        !self.denied.contains(name) && self.allowed.as_ref().is_none_or(|a| a.contains(name))
    }

    /// Whether a call to `name` needs human approval.
    pub fn needs_approval(&self, name: &str) -> bool {
        self.approval.contains(name)
    }

    /// Whether any list is set (so declared tools need checking at all).
    pub fn restricts(&self) -> bool {
        self.allowed.is_some() || !self.denied.is_empty()
    }
}

/// Remove every declared tool `keep` refuses from the request's `tools` (any provider's shape);
/// with none left, `tools` and `tool_choice` go too (providers reject a choice without tools).
pub fn strip_declared(doc: &mut Value, keep: impl Fn(&str) -> bool) {
    let Some(obj) = doc.as_object_mut() else {
        return;
    };
    let Some(Value::Array(tools)) = obj.get_mut("tools") else {
        return;
    };
    let named = |v: &Value| v.get("name").and_then(Value::as_str).is_none_or(&keep);
    tools.retain_mut(|t| {
        if let Some(f) = t.get("function") {
            return named(f);
        }
        if let Some(Value::Array(decls)) = t.get_mut("functionDeclarations") {
            decls.retain(named);
            return !decls.is_empty();
        }
        named(t)
    });
    if tools.is_empty() {
        obj.remove("tools");
        obj.remove("tool_choice");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(allowed: Option<&[&str]>, denied: &[&str]) -> ToolRules {
        ToolRules::new(&AgentPolicy {
            allowed_tools: allowed.map(|a| a.iter().map(|s| s.to_string()).collect()),
            denied_tools: denied.iter().map(|s| s.to_string()).collect(),
            require_approval: vec!["send_email".into()],
            ..AgentPolicy::default()
        })
    }

    #[test]
    fn deny_wins_over_allow_and_the_allowlist_is_exclusive() {
        let r = rules(Some(&["a", "b"]), &["b"]);
        assert!(r.permits("a"));
        assert!(!r.permits("b"));
        assert!(!r.permits("c"));
        let open = rules(None, &["x"]);
        assert!(open.permits("anything") && !open.permits("x"));
        assert!(open.needs_approval("send_email") && !open.needs_approval("x"));
        assert!(!ToolRules::default().restricts());
    }

    #[test]
    fn strips_every_provider_shape() {
        let keep = |n: &str| n != "bad";
        let mut chat = json!({"tools":[{"type":"function","function":{"name":"bad"}},{"type":"function","function":{"name":"ok"}}],"tool_choice":"auto"});
        strip_declared(&mut chat, keep);
        assert_eq!(chat["tools"].as_array().unwrap().len(), 1);
        assert_eq!(chat["tool_choice"], "auto");
        let mut anth =
            json!({"tools":[{"name":"bad","input_schema":{}}],"tool_choice":{"type":"auto"}});
        strip_declared(&mut anth, keep);
        assert!(anth.get("tools").is_none() && anth.get("tool_choice").is_none());
        let mut gem = json!({"tools":[{"functionDeclarations":[{"name":"bad"},{"name":"ok"}]},{"functionDeclarations":[{"name":"bad"}]}]});
        strip_declared(&mut gem, keep);
        assert_eq!(
            gem["tools"],
            json!([{"functionDeclarations":[{"name":"ok"}]}])
        );
        let mut resp = json!({"tools":[{"type":"function","name":"bad"},{"type":"web_search"}]});
        strip_declared(&mut resp, keep);
        assert_eq!(resp["tools"], json!([{"type":"web_search"}]));
    }
}
