//! Which `per_core` worker the current thread is: per-worker pools (upstream clients, driven
//! connections, Redis connections) are picked by it.

thread_local! {
    /// The worker this thread is (`server.runtime: per_core`); `None` on any other thread.
    static WORKER: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Mark the current thread as worker `index`: the pools it uses from now on are its own.
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(Some(index)));
}

/// The `per_core` worker this thread is, if it is one: per-worker connections elsewhere (the
/// Redis budget store) are picked by it too.
pub fn worker() -> Option<usize> {
    WORKER.with(std::cell::Cell::get)
}
