//! Arming the tool-call gate of a streamed response ([`crate::body::Gate`]) for an agent whose
//! tool policies block: the policy review decides on each complete call, and a refusal is the
//! same error a held JSON response gets, framed as the format's mid-stream error event.
//!
//! What the gate decided reaches the call's span and access log through a [`GateLog`], shared
//! by the body (which writes it as calls complete) and the call (which waits there for it).

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::HeaderMap;

use metrics::histogram;

use crate::body::CallCheck;
use crate::policy::{PolicyError, ResponseCheck};
use crate::providers::request::DeclaredTool;
use crate::providers::{ToolCall, ToolGate};
use crate::telemetry::metrics as m;

use super::call::Call;
use super::error::ProxyError;
use super::gate_log::GateLog;

/// The policy review as the gate's [`CallCheck`].
struct PolicyCheck {
    agent: Arc<str>,
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
    fn released(&mut self, after: std::time::Duration) {
        histogram!(m::TOOL_GATE_DELAY_SECONDS, "agent" => self.agent.clone())
            .record(after.as_secs_f64());
    }

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
    let agent = call.labels().agent.clone();
    let llm = call.llm_mut()?;
    if !llm.gates_stream() {
        return None;
    }
    let gate = llm.facts().format.adapter().tool_gate()?;
    let check = llm.take_policy()?;
    let log = Arc::new(GateLog::default());
    let policy = PolicyCheck {
        agent,
        check,
        declared: llm.facts().tools.clone(),
        log: log.clone(),
    };
    call.set_gate(log);
    // A refused stream is not the length the upstream framed.
    headers.remove(CONTENT_LENGTH);
    Some((gate, Box::new(policy)))
}
