//! Liveness and readiness, shared by the server (which drains) and the admin listener.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the proxy takes traffic.
#[derive(Debug, Default)]
pub struct Health {
    draining: AtomicBool,
}

// === impl Health ===

impl Health {
    /// Ready to take traffic (config loaded, not draining).
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed)
    }

    /// Shutting down: not ready any more.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}
