//! Tool allow and deny lists: which tools an agent may declare or call, and which need approval
//! (removing the others from a request is the adapter's `strip_tools`).

use std::collections::HashSet;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
