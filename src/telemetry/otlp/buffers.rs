//! Span buffers handed back and forth between the calls that encode spans and the export task
//! that sends them, so a steady stream of spans allocates nothing.
//!
//! Without it every span was one ~1 KB allocation made on a request's thread and freed on the
//! export task's: glibc's slow path for that size (no tcache, bin consolidation) showed in
//! profiles of a saturated proxy.

use std::sync::Mutex;

/// Most buffers kept; with the default queue this is the queue's worth.
const DEFAULT_KEEP: usize = 2048;
/// Buffers that grew past this (captured content) are freed, not kept.
const MAX_KEPT_CAPACITY: usize = 8 * 1024;
/// Capacity of a new buffer: a streamed chat call with a tool call encodes to about 1 KB
/// (benches/spans.rs).
pub const SPAN_CAPACITY: usize = 1280;

/// A bounded free list of span buffers.
#[derive(Debug)]
pub struct SpanBuffers {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl Default for SpanBuffers {
    fn default() -> Self {
        Self::new(DEFAULT_KEEP)
    }
}

impl SpanBuffers {
    /// A free list keeping at most `keep` buffers.
    pub fn new(keep: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// An empty buffer: a returned one when there is one, else a new one.
    pub fn take(&self) -> Vec<u8> {
        // A poisoned lock only means another thread panicked mid-push; the list is still sound.
        let reused = match self.free.lock() {
            Ok(mut free) => free.pop(),
            Err(poisoned) => poisoned.into_inner().pop(),
        };
        reused.unwrap_or_else(|| Vec::with_capacity(SPAN_CAPACITY))
    }

    /// Return sent buffers; those over the limit or grown large are freed.
    pub fn give_back(&self, buffers: impl IntoIterator<Item = Vec<u8>>) {
        let mut free = match self.free.lock() {
            Ok(free) => free,
            Err(poisoned) => poisoned.into_inner(),
        };
        for mut b in buffers {
            if free.len() >= self.keep {
                break;
            }
            if b.capacity() <= MAX_KEPT_CAPACITY {
                b.clear();
                free.push(b);
            }
        }
    }

    /// Buffers waiting for reuse.
    pub fn len(&self) -> usize {
        self.free.lock().map_or(0, |f| f.len())
    }

    /// Whether no buffer waits for reuse.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_bounded_and_small() {
        let pool = SpanBuffers::new(2);
        let mut a = pool.take();
        assert!(a.capacity() >= SPAN_CAPACITY);
        a.extend_from_slice(b"span");
        let big = Vec::with_capacity(MAX_KEPT_CAPACITY + 1);
        pool.give_back([a, big, Vec::new(), Vec::new()]);
        assert_eq!(pool.len(), 2, "the big one freed, then at most 2 kept");
        let again = pool.take();
        assert!(again.is_empty(), "cleared before reuse");
        assert_eq!(pool.len(), 1);
    }
}
