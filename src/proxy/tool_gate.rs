//! Arming the tool-call gate of a streamed response ([`crate::body::Gate`]) for an agent whose
//! tool policies block: the policy review decides on each complete call, and a refusal is the
//! same error a held JSON response gets, framed as the format's mid-stream error event.
//!
//! What the gate decided reaches the call's span and access log through a [`GateLog`], shared
//! by the body (which writes it as calls complete) and the call (which reads it once, when it
//! finishes).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::HeaderMap;

use crate::body::CallCheck;
use crate::policy::{PolicyError, ResponseCheck};
use crate::providers::request::DeclaredTool;
use crate::providers::{ToolCall, ToolGate};
use crate::record::PolicyViolation;

use super::call::Call;
use super::error::ProxyError;

/// What a gate found: the policies calls broke, and the one that refused the stream.
#[derive(Debug, Default)]
pub struct GateLog {
    // Written by the body and read once by the finishing call, never across an await.
    found: Mutex<(Vec<PolicyViolation>, Option<PolicyViolation>)>,
}

// === impl GateLog ===

impl GateLog {
    fn note(&self, violations: &[PolicyViolation], blocked: Option<PolicyViolation>) {
        let Ok(mut f) = self.found.lock() else {
            return;
        };
        for v in violations {
            if !f.0.contains(v) {
                f.0.push(*v);
            }
        }
        f.1 = f.1.or(blocked);
    }

    /// The policies broken and the refusing one, taken.
    pub fn take(&self) -> (Vec<PolicyViolation>, Option<PolicyViolation>) {
        self.found
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default()
    }
}

/// The policy review as the gate's [`CallCheck`].
struct PolicyCheck {
    check: ResponseCheck,
    declared: Vec<DeclaredTool>,
    log: Arc<GateLog>,
}

impl CallCheck for PolicyCheck {
    fn check(&mut self, calls: &[ToolCall], gate: &dyn ToolGate) -> Option<Bytes> {
        let review = self.check.review(&self.declared, calls);
        let blocked = review.block.as_ref().map(PolicyError::policy);
        self.log.note(&review.violations, blocked);
        review.block.map(|e| refusal(e, gate))
    }

    fn unreadable(&mut self, gate: &dyn ToolGate) -> Bytes {
        let e = self.check.unreadable();
        self.log.note(&[e.policy()], Some(e.policy()));
        refusal(e, gate)
    }
}

fn refusal(e: PolicyError, gate: &dyn ToolGate) -> Bytes {
    ProxyError::Policy(e).with_text(|t| gate.refusal(t))
}

/// The format's gate and the policy check for this call's response, when its stream is to be
/// gated; the response check then moves from the call's end to the gate.
pub(super) fn arm(
    call: &mut Call,
    headers: &mut HeaderMap,
) -> Option<(Box<dyn ToolGate>, Box<dyn CallCheck>)> {
    let llm = call.llm_mut()?;
    if !llm.gates_stream() {
        return None;
    }
    let gate = llm.facts().format.adapter().tool_gate()?;
    let check = llm.take_policy()?;
    let log = Arc::new(GateLog::default());
    let policy = PolicyCheck {
        check,
        declared: llm.facts().tools.clone(),
        log: log.clone(),
    };
    call.set_gate(log);
    // A refused stream is not the length the upstream framed.
    headers.remove(CONTENT_LENGTH);
    Some((gate, Box::new(policy)))
}
