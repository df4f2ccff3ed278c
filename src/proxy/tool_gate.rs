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

use crate::body::{BodyEnd, CallCheck};
use crate::policy::{PolicyError, ResponseCheck};
use crate::providers::request::DeclaredTool;
use crate::providers::{ToolCall, ToolGate};
use crate::record::PolicyViolation;

use super::call::Call;
use super::error::ProxyError;

/// What a gate found — the policies calls broke, and the one that refused the stream — and the
/// call it finishes.
///
/// The call's observer sees the upstream's last frame before the gate does (the gate sits
/// downstream of it), so a call whose body ended waits here, parked, until the gate is done
/// with those frames too: the span and the access log then say what the gate decided.
#[derive(Default)]
pub struct GateLog {
    // Locked briefly by the body and the call, never across an await.
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    found: Found,
    parked: Option<(Call, BodyEnd)>,
    closed: bool,
}

/// Policies broken, and the refusing one.
pub type Found = (Vec<PolicyViolation>, Option<PolicyViolation>);

// === impl GateLog ===

impl GateLog {
    pub(super) fn note(&self, violations: &[PolicyViolation], blocked: Option<PolicyViolation>) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        for v in violations {
            if !s.found.0.contains(v) {
                s.found.0.push(*v);
            }
        }
        s.found.1 = s.found.1.or(blocked);
    }

    /// The call's body ended: finish it once the gate is done (now, if it is).
    pub(super) fn park(&self, call: Call, end: BodyEnd) {
        let mut call = Some(call);
        let found = match self.state.lock() {
            Ok(mut s) if !s.closed => {
                s.parked = call.take().map(|c| (c, end));
                None
            }
            Ok(mut s) => Some(std::mem::take(&mut s.found)),
            Err(_) => Some(Found::default()),
        };
        if let (Some(call), Some(found)) = (call, found) {
            call.finish_gated(end, found);
        }
    }

    /// The gate is done: finish the call if it waits.
    fn close(&self) {
        let parked = self.state.lock().ok().and_then(|mut s| {
            s.closed = true;
            let found = std::mem::take(&mut s.found);
            s.parked.take().map(|p| (p, found))
        });
        if let Some(((call, end), found)) = parked {
            call.finish_gated(end, found);
        }
    }
}

/// The policy review as the gate's [`CallCheck`].
struct PolicyCheck {
    check: ResponseCheck,
    declared: Vec<DeclaredTool>,
    log: Arc<GateLog>,
}

impl Drop for PolicyCheck {
    fn drop(&mut self) {
        // However the gated body ends (its end, an error, the client gone), its call finishes.
        self.log.close();
    }
}

impl CallCheck for PolicyCheck {
    fn done(&mut self) {
        self.log.close();
    }

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
