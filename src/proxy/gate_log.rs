//! [`GateLog`]: what a stream's tool-call gate found — the policies calls broke, the one that
//! refused the stream — and the finish of the call waiting for it.
//!
//! The call's observer sees the upstream's last frame before the gate does (the gate sits
//! downstream of it), so a call whose body ended waits here until the gate is done with those
//! frames too: the span and the access log then say what the gate decided.

use std::sync::Mutex;

use crate::record::PolicyViolation;

/// Policies broken, and the refusing one.
pub type Found = (Vec<PolicyViolation>, Option<PolicyViolation>);

/// The finish of a call, waiting for what the gate found.
pub type Parked = Box<dyn FnOnce(Found) + Send>;

/// Shared by the gate's policy check (which writes it) and the call (which waits in it).
#[derive(Default)]
pub struct GateLog {
    // Locked briefly by the body and the call, never across an await.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    found: Found,
    parked: Option<Parked>,
    closed: bool,
}

// === impl GateLog ===

impl GateLog {
    /// Note the policies calls broke and the one that refused, if one did.
    pub fn note(&self, violations: &[PolicyViolation], blocked: Option<PolicyViolation>) {
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

    /// The call's body ended: `finish` runs once the gate is done (now, if it is).
    pub fn park(&self, finish: Parked) {
        let mut finish = Some(finish);
        let found = match self.state.lock() {
            Ok(mut s) if !s.closed => {
                s.parked = finish.take();
                None
            }
            Ok(mut s) => Some(std::mem::take(&mut s.found)),
            Err(_) => Some(Found::default()),
        };
        if let (Some(finish), Some(found)) = (finish, found) {
            finish(found);
        }
    }

    /// The gate is done: the waiting call finishes (outside the lock).
    pub fn close(&self) {
        let parked = self.state.lock().ok().and_then(|mut s| {
            s.closed = true;
            let found = std::mem::take(&mut s.found);
            s.parked.take().map(|p| (p, found))
        });
        if let Some((finish, found)) = parked {
            finish(found);
        }
    }
}
