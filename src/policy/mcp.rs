//! The tool schemas MCP servers declared, for validating the arguments of the agent's
//! `tools/call`s (`Policies::admit_tool_call` in the parent checks the calls).
//!
//! Declared schemas are remembered per MCP session (the server's `Mcp-Session-Id`, else the
//! agent's session, else the agent: the proxy picks the key) from the `tools/list` results that
//! pass through. Memory is bounded: at most [`MAX_SESSIONS`] sessions (the one seen longest ago
//! is forgotten first), [`MAX_TOOLS`] tools per session, schemas of at most
//! [`MAX_SCHEMA_BYTES`] (a larger one is not validated against), and [`MAX_TOTAL_BYTES`] of
//! schemas over all sessions: the session id is the client's choice, so without a total a peer
//! opening sessions could make the proxy keep 4096 × 1024 × 64 KiB. Past it the sessions seen
//! longest ago are forgotten; a session that alone fills it keeps no more. A call to a tool with no
//! remembered schema — the client listed tools before the proxy started, or on another
//! connection — is not validated: there is nothing to validate it against.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use jsonschema::Validator;
use serde_json::Value;
use tokio::time::Instant;

use crate::mcp::tools::Declared;

/// MCP sessions whose declared tools are remembered.
pub const MAX_SESSIONS: usize = 4096;
/// Tools remembered per session.
pub const MAX_TOOLS: usize = 1024;
/// Largest `inputSchema` (serialised) remembered.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Schemas remembered over all sessions, in bytes of their JSON and tool names. What they take
/// in memory (parsed, and compiled once called) is a small multiple of it.
pub const MAX_TOTAL_BYTES: usize = 64 * 1024 * 1024;

/// Declared tool schemas per MCP session.
#[derive(Debug, Default)]
pub struct ToolSchemas {
    sessions: DashMap<Arc<str>, SessionTools>,
    /// The bytes of every session's schemas ([`Known::bytes`]), at most [`MAX_TOTAL_BYTES`].
    bytes: AtomicUsize,
}

#[derive(Debug)]
struct SessionTools {
    tools: HashMap<String, Arc<Known>>,
    last_seen: Instant,
}

/// One declared schema, compiled on the first call that needs it.
#[derive(Debug)]
struct Known {
    schema: Value,
    compiled: OnceLock<Option<Validator>>,
    /// What it counts against [`MAX_TOTAL_BYTES`]: its JSON and its tool's name.
    bytes: usize,
}

// === impl ToolSchemas ===

impl ToolSchemas {
    /// Remember what a `tools/list` result declared in session `key` (pages add up; a tool
    /// listed again replaces its schema).
    pub fn learn(&self, key: &str, declared: &[Declared], now: Instant) {
        if declared.is_empty() {
            return;
        }
        if !self.sessions.contains_key(key) && self.sessions.len() >= MAX_SESSIONS {
            self.forget_oldest(key);
        }
        // Sized once; a schema over the limit is `None` (not kept).
        let sized: Vec<(&Declared, Option<usize>)> = declared
            .iter()
            .map(|d| {
                let len = serde_json::to_vec(&d.input_schema).map_or(usize::MAX, |v| v.len());
                (d, (len <= MAX_SCHEMA_BYTES).then(|| len + d.name.len()))
            })
            .collect();
        // Room for them, made before this session's entry is locked (forgetting walks the map).
        // Schemas listed again give back what they held.
        let held = self.sessions.get(key).map_or(0, |s| {
            sized
                .iter()
                .filter_map(|(d, _)| s.tools.get(&d.name).map(|k| k.bytes))
                .sum::<usize>()
        });
        let needed = sized
            .iter()
            .filter_map(|(_, b)| *b)
            .sum::<usize>()
            .saturating_sub(held);
        while self.bytes.load(Ordering::Relaxed).saturating_add(needed) > MAX_TOTAL_BYTES
            && self.forget_oldest(key)
        {}
        let mut entry = self
            .sessions
            .entry(Arc::from(key))
            .or_insert_with(|| SessionTools {
                tools: HashMap::new(),
                last_seen: now,
            });
        entry.last_seen = now;
        for (d, bytes) in sized {
            if !entry.tools.contains_key(&d.name) && entry.tools.len() >= MAX_TOOLS {
                continue;
            }
            // A schema listed again gives its bytes back before the new one takes its own.
            if let Some(old) = entry.tools.remove(&d.name) {
                self.bytes.fetch_sub(old.bytes, Ordering::Relaxed);
            }
            let Some(bytes) = bytes else {
                continue;
            };
            if !self.reserve(bytes) {
                // The total is spent (by this session alone, or by others meanwhile): the tool
                // is not remembered, and its calls are not validated.
                continue;
            }
            entry.tools.insert(
                d.name.clone(),
                Arc::new(Known {
                    schema: d.input_schema.clone(),
                    compiled: OnceLock::new(),
                    bytes,
                }),
            );
        }
    }

    /// Count `bytes` against the total when they fit.
    fn reserve(&self, bytes: usize) -> bool {
        self.bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                t.checked_add(bytes).filter(|n| *n <= MAX_TOTAL_BYTES)
            })
            .is_ok()
    }

    /// Whether `args` break the schema session `key` remembers for `tool` (`None`: nothing to
    /// check against — unknown tool, no schema, or one that does not compile).
    pub fn invalid(
        &self,
        key: &str,
        tool: &str,
        args: Option<&Value>,
        now: Instant,
    ) -> Option<bool> {
        let known = {
            let mut s = self.sessions.get_mut(key)?;
            s.last_seen = now;
            s.tools.get(tool)?.clone()
        };
        if known.schema.is_null() {
            return None;
        }
        // A schema that does not compile (or needs a remote `$ref`, never fetched) cannot be
        // checked: the call is not blamed for it.
        let v = known
            .compiled
            .get_or_init(|| super::validate::compile(&known.schema))
            .as_ref()?;
        let empty = Value::Object(Default::default());
        Some(!v.is_valid(args.unwrap_or(&empty)))
    }

    /// Sessions remembered.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is remembered.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The bytes of the schemas remembered over all sessions.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Forget the session seen longest ago other than `keep`: whether there was one.
    fn forget_oldest(&self, keep: &str) -> bool {
        let oldest = self
            .sessions
            .iter()
            .filter(|e| &**e.key() != keep)
            .min_by_key(|e| e.last_seen)
            .map(|e| e.key().clone());
        let Some((_, gone)) = oldest.and_then(|k| self.sessions.remove(&k)) else {
            return false;
        };
        let freed = gone.tools.values().map(|k| k.bytes).sum::<usize>();
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_from_str;
    use crate::policy::{Asker, Policies, PolicySet};
    use crate::record::PolicyViolation;
    use crate::telemetry::labels::Labels;
    use serde_json::json;

    fn policies(yaml: &str) -> Policies {
        let c = load_from_str(yaml, "t").unwrap();
        Policies::new(
            PolicySet::from_config(&c).unwrap(),
            Arc::new(Labels::new(50)),
        )
    }

    fn decide(
        p: &Policies,
        tool: &str,
        args: Value,
        step: u64,
    ) -> Result<Vec<PolicyViolation>, PolicyViolation> {
        let agent: Arc<str> = Arc::from("a");
        let session: Arc<str> = Arc::from("s");
        let asker = Asker {
            agent: &agent,
            operation: crate::record::Operation::Other,
            session: Some(&session),
            step: Some(step),
            now: Instant::now(),
        };
        match p.admit_tool_call(&asker, "k", tool, Some(&args)) {
            Ok(pending) => {
                let v = pending.violations().to_vec();
                p.commit(pending, Some(&session));
                Ok(v)
            }
            Err(r) => Err(r.error.policy()),
        }
    }

    #[test]
    fn lists_steps_schemas_and_loops() {
        let p = policies("agents:\n  a:\n    denied_tools: [rm]\n    max_steps: 5\n    tool_call_action: block\n    loop_detection: { threshold: 3, action: block }\n");
        p.tool_schemas().learn(
            "k",
            &[Declared {
                name: "add".into(),
                input_schema: json!({"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}),
            }],
            Instant::now(),
        );
        assert_eq!(
            decide(&p, "rm", json!({}), 1),
            Err(PolicyViolation::DeniedTool)
        );
        assert_eq!(
            decide(&p, "add", json!({"a":"x"}), 1),
            Err(PolicyViolation::InvalidToolArgs)
        );
        assert_eq!(decide(&p, "add", json!({"a":1}), 1), Ok(vec![]));
        assert_eq!(
            decide(&p, "unknown", json!({"z":1}), 2),
            Ok(vec![]),
            "no schema: not validated"
        );
        assert_eq!(decide(&p, "add", json!({"a":1}), 3), Ok(vec![]));
        assert_eq!(
            decide(&p, "add", json!({"a":1}), 4),
            Err(PolicyViolation::Loop)
        );
        assert_eq!(
            decide(&p, "add", json!({"a":2}), 6),
            Err(PolicyViolation::MaxSteps)
        );
        assert!(p
            .tool_filter("a")
            .is_some_and(|f| f.permits("add") && !f.permits("rm")));
        assert!(p.tool_filter("other").is_none());
    }

    #[test]
    fn hold_admits_the_call_marked_held_and_block_refuses() {
        let agent: Arc<str> = Arc::from("a");
        let asker = Asker {
            agent: &agent,
            operation: crate::record::Operation::Other,
            session: None,
            step: None,
            now: Instant::now(),
        };
        for (action, held) in [("hold", true), ("flag", false)] {
            let p = policies(&format!(
                "agents:\n  a:\n    require_approval: [send]\n    approval_action: {action}\nadmin_token: t\n"
            ));
            let pending = p.admit_tool_call(&asker, "k", "send", None).ok().unwrap();
            assert_eq!(pending.held(), held, "{action}");
            assert_eq!(pending.violations(), [PolicyViolation::ApprovalRequired]);
            let other = p.admit_tool_call(&asker, "k", "read", None).ok().unwrap();
            assert!(!other.held(), "only require_approval tools are held");
        }
        let p =
            policies("agents:\n  a:\n    require_approval: [send]\n    approval_action: block\n");
        assert!(p.admit_tool_call(&asker, "k", "send", None).is_err());
    }

    #[test]
    fn flagged_not_refused_by_default_and_memory_is_bounded() {
        let p = policies("agents:\n  a:\n    require_approval: [send]\n");
        p.tool_schemas().learn(
            "k",
            &[Declared {
                name: "send".into(),
                input_schema: json!({"type":"object","required":["to"]}),
            }],
            Instant::now(),
        );
        assert_eq!(
            decide(&p, "send", json!({}), 1),
            Ok(vec![
                PolicyViolation::ApprovalRequired,
                PolicyViolation::InvalidToolArgs
            ])
        );
        let s = ToolSchemas::default();
        let t0 = Instant::now();
        let d = [Declared {
            name: "t".into(),
            input_schema: json!({}),
        }];
        for i in 0..(MAX_SESSIONS + 10) {
            s.learn(
                &format!("s{i}"),
                &d,
                t0 + std::time::Duration::from_millis(i as u64),
            );
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(
            s.invalid("s0", "t", None, t0).is_none(),
            "the oldest were forgotten"
        );
        let big = [Declared {
            name: "big".into(),
            input_schema: json!({"description": "x".repeat(MAX_SCHEMA_BYTES)}),
        }];
        s.learn("b", &big, t0);
        assert!(
            s.invalid("b", "big", None, t0).is_none(),
            "an oversize schema is not kept"
        );
    }

    #[test]
    fn schemas_over_all_sessions_stay_within_the_byte_budget() {
        let s = ToolSchemas::default();
        let t0 = Instant::now();
        // Each session declares 64 tools of nearly 64 KiB: 4 MiB a session.
        let pad = "x".repeat(MAX_SCHEMA_BYTES - 100);
        let tools: Vec<Declared> = (0..64)
            .map(|i| Declared {
                name: format!("t{i}"),
                input_schema: json!({"type":"object","required":["a"],"description": pad}),
            })
            .collect();
        let sessions = 2 * MAX_TOTAL_BYTES / (64 * MAX_SCHEMA_BYTES);
        for i in 0..sessions {
            let at = t0 + std::time::Duration::from_millis(i as u64);
            s.learn(&format!("s{i}"), &tools, at);
            assert!(
                s.bytes() <= MAX_TOTAL_BYTES,
                "after session {i}: {}",
                s.bytes()
            );
        }
        assert!(s.len() * 64 * (MAX_SCHEMA_BYTES - 100) <= MAX_TOTAL_BYTES);
        let last = format!("s{}", sessions - 1);
        assert_eq!(
            s.invalid(&last, "t0", Some(&json!({})), t0),
            Some(true),
            "the newest session is remembered"
        );
        assert!(
            s.invalid("s0", "t0", None, t0).is_none(),
            "the oldest forgotten"
        );
        drop(s);
        // A session that alone would pass the total keeps what fits, no more.
        let one = ToolSchemas::default();
        let many: Vec<Declared> = (0..MAX_TOOLS)
            .map(|i| Declared {
                name: format!("t{i}"),
                input_schema: json!({"description": pad}),
            })
            .collect();
        one.learn("solo", &many, t0);
        assert!(one.bytes() <= MAX_TOTAL_BYTES && one.bytes() > MAX_TOTAL_BYTES / 2);
        // Listed again, the same schemas replace their own bytes.
        let before = one.bytes();
        one.learn("solo", &many[..10], t0);
        assert_eq!(one.bytes(), before);
    }
}
