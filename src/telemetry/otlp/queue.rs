//! The span queue: each finished span is encoded straight into the batch that will carry it,
//! already framed as a `ScopeSpans.spans` field, so the export task sends a batch's bytes as
//! they are.
//!
//! Before this, each span was its own buffer passed through a channel and copied into the
//! request at export: per span a channel slot, a buffer to hand back and forth, and a cold
//! 1 KB write. Now a span costs one short lock, and the export task is woken once per batch,
//! not once per span.
//!
//! An ordinary span is encoded under the lock, into the batch itself: the batch's memory is
//! cold (it was last touched when the previous batch went out), and writes interleaved with
//! encoding hide that, where a copy from a scratch buffer stalled on it (perf: 0.8 % of the
//! proxy's CPU for the copy, against 0.2 % encoding in place). A span with captured content,
//! whose encoding can take long, is encoded in a thread-local scratch buffer outside the lock
//! and then copied in.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use super::wire::{len_field, put_len_prefix, put_message_in};

/// `ScopeSpans.spans`.
const SPANS_FIELD: u32 = 2;
/// Capacity of a span's scratch buffer: a streamed chat call with a tool call encodes to about
/// 1 KB (benches/spans.rs).
pub const SPAN_CAPACITY: usize = 1280;
/// A batch closes at this size whatever its span count: collectors refuse larger requests
/// (gRPC's default limit, which the OpenTelemetry Collector keeps, is 4 MiB), and spans with
/// captured content can be tens of kilobytes each.
pub const MAX_BATCH_BYTES: usize = 3 << 20;
/// Most a new batch buffer reserves up front.
const MAX_FIRST_RESERVE: usize = 4 << 20;
/// A scratch buffer that grew past this (captured content) is freed after its span.
const MAX_SCRATCH: usize = 64 * 1024;

thread_local! {
    /// Where a span with captured content is encoded before it is copied into the queue:
    /// outside the queue's lock, in memory the thread just used.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(SPAN_CAPACITY));
}

/// Encoded spans, each framed as a `ScopeSpans.spans` field: the spans of one export.
#[derive(Debug, Default)]
pub struct SpanBatch {
    /// The framed spans, back to back.
    pub bytes: Vec<u8>,
    /// How many.
    pub count: usize,
}

/// A bounded queue of encoded spans, grouped into batches as they arrive.
#[derive(Debug)]
pub struct SpanQueue {
    state: Mutex<State>,
    /// Spans queued (open and full batches). Written under the lock; read without it to skip
    /// building a span that would be dropped.
    queued: AtomicUsize,
    /// Most spans queued; more are dropped (`OTEL_BSP_MAX_QUEUE_SIZE`).
    capacity: usize,
    /// Spans per batch (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    batch_size: usize,
    /// Wakes the export task: a batch is full, or a span arrived in an empty queue.
    ready: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// The batch spans are being added to.
    open: SpanBatch,
    /// Batches that reached `batch_size`, oldest first.
    full: VecDeque<SpanBatch>,
    /// Sent batches' buffers, for the next open batch.
    spare: Vec<Vec<u8>>,
}

impl SpanQueue {
    /// A queue holding at most `capacity` spans, in batches of `batch_size`.
    pub fn new(capacity: usize, batch_size: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            state: Mutex::default(),
            queued: AtomicUsize::new(0),
            capacity,
            batch_size: batch_size.clamp(1, capacity),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a thread panicked holding it, at worst while encoding a span in
        // place, and `Rollback` cut that span off again: the state is sound.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Encode a span with `encode` outside the lock (it may take long) and queue it; `false`
    /// when the queue is full and it was dropped.
    pub fn push_with(&self, encode: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut encode = Some(encode);
        let queued = SCRATCH.try_with(|scratch| {
            // Busy only if `encode` itself pushed a span; never the case, but not worth a panic.
            let mut buf = scratch.try_borrow_mut().ok()?;
            buf.clear();
            (encode.take()?)(&mut buf);
            let queued = self.push(&buf);
            if buf.capacity() > MAX_SCRATCH {
                *buf = Vec::with_capacity(SPAN_CAPACITY);
            }
            Some(queued)
        });
        match (queued, encode) {
            (Ok(Some(queued)), _) => queued,
            // No scratch buffer (busy, or the thread's locals are being torn down): a fresh one.
            (_, Some(encode)) => {
                let mut buf = Vec::with_capacity(SPAN_CAPACITY);
                encode(&mut buf);
                self.push(&buf)
            }
            (_, None) => false,
        }
    }

    /// Encode a span with `encode` straight into the open batch, under the lock (so `encode`
    /// must be quick, only append, and never queue a span itself: the lock is not reentrant);
    /// `false`, without calling it, when the queue is full.
    pub fn push_in_place(&self, encode: impl FnOnce(&mut Vec<u8>)) -> bool {
        self.add(|batch| put_message_in(batch, SPANS_FIELD, SPAN_LENGTH_ROOM, encode))
    }

    /// Queue one encoded span (a `Span` message's content); `false` when the queue is full.
    pub fn push(&self, span: &[u8]) -> bool {
        self.add(|batch| {
            put_len_prefix(batch, SPANS_FIELD, span.len());
            batch.extend_from_slice(span);
        })
    }

    /// Append one framed span with `frame` to the open batch, unless the queue is full.
    fn add(&self, frame: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut state = self.lock();
        let queued = self.queued.load(Ordering::Relaxed);
        if queued >= self.capacity {
            return false;
        }
        let mut open = Rollback::new(&mut state.open, self.batch_size);
        frame(open.bytes());
        open.keep();
        self.queued.store(queued + 1, Ordering::Relaxed);
        let wake = self.close_if_full(&mut state) || queued == 0;
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        true
    }

    /// Move the open batch to the full ones if it reached the batch size or the byte limit;
    /// whether it did.
    fn close_if_full(&self, state: &mut State) -> bool {
        let open = &state.open;
        if open.count < self.batch_size && open.bytes.len() < MAX_BATCH_BYTES {
            return false;
        }
        let next = SpanBatch {
            bytes: state.spare.pop().unwrap_or_default(),
            count: 0,
        };
        let full = std::mem::replace(&mut state.open, next);
        state.full.push_back(full);
        true
    }

    /// Whether a span queued now would be dropped.
    pub fn is_full(&self) -> bool {
        self.queued.load(Ordering::Relaxed) >= self.capacity
    }

    /// Whether no span is queued.
    pub fn is_empty(&self) -> bool {
        self.queued.load(Ordering::Relaxed) == 0
    }

    /// Spans queued.
    pub fn len(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The oldest full batch; with `partial`, the open batch when none is full.
    pub fn take(&self, partial: bool) -> Option<SpanBatch> {
        let mut state = self.lock();
        let batch = match state.full.pop_front() {
            Some(b) => b,
            None if partial && state.open.count > 0 => {
                let next = SpanBatch {
                    bytes: state.spare.pop().unwrap_or_default(),
                    count: 0,
                };
                std::mem::replace(&mut state.open, next)
            }
            None => return None,
        };
        let queued = self.queued.load(Ordering::Relaxed);
        self.queued
            .store(queued.saturating_sub(batch.count), Ordering::Relaxed);
        Some(batch)
    }

    /// Wait until a batch fills or a span arrives in an empty queue (or did since the last
    /// wait).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Hand back a sent batch's buffer for reuse. Keeps enough for a full queue; a buffer
    /// grown far past a batch of ordinary spans (captured content) is freed.
    pub fn recycle(&self, mut bytes: Vec<u8>) {
        if bytes.capacity() > MAX_BATCH_BYTES.max(self.batch_size.saturating_mul(SPAN_CAPACITY)) {
            return;
        }
        bytes.clear();
        let keep = self.capacity / self.batch_size + 1;
        let mut state = self.lock();
        if state.spare.len() < keep {
            state.spare.push(bytes);
        }
    }
}

/// Bytes reserved for a span's length in the batch: enough below 16 KiB, which ordinary spans
/// are; others move.
const SPAN_LENGTH_ROOM: usize = 2;

/// The open batch while a span is added to it: unless [`keep`](Self::keep) is called (the
/// encoder panicked), the span's partial bytes are cut off again, so the batch stays a valid
/// run of spans.
struct Rollback<'a> {
    batch: &'a mut SpanBatch,
    len: usize,
    kept: bool,
}

impl<'a> Rollback<'a> {
    fn new(batch: &'a mut SpanBatch, batch_size: usize) -> Self {
        if batch.bytes.capacity() == 0 {
            // Room for the whole batch at once rather than doubling through it (within
            // reason, for batch sizes set very high).
            let room = batch_size.saturating_mul(len_field(SPAN_CAPACITY));
            batch.bytes.reserve(room.min(MAX_FIRST_RESERVE));
        }
        let len = batch.bytes.len();
        Self {
            batch,
            len,
            kept: false,
        }
    }

    fn bytes(&mut self) -> &mut Vec<u8> {
        &mut self.batch.bytes
    }

    /// The span is complete: count it.
    fn keep(mut self) {
        self.batch.count += 1;
        self.kept = true;
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.batch.bytes.truncate(self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spans of a batch, unframed.
    fn spans(batch: &SpanBatch) -> Vec<Vec<u8>> {
        use bytes::Buf;
        let mut rest = &batch.bytes[..];
        let mut out = Vec::new();
        while rest.has_remaining() {
            assert_eq!(
                rest.get_u8(),
                (SPANS_FIELD << 3 | 2) as u8,
                "spans field tag"
            );
            let len = prost::encoding::decode_varint(&mut rest).expect("length") as usize;
            out.push(rest[..len].to_vec());
            rest.advance(len);
        }
        assert_eq!(out.len(), batch.count);
        out
    }

    #[test]
    fn spans_are_framed_in_order_and_batches_close_at_the_batch_size() {
        let q = SpanQueue::new(10, 3);
        for i in 0..7u8 {
            // One span long enough to need a two-byte length.
            let span = vec![i; if i == 1 { 300 } else { 5 }];
            assert!(q.push(&span));
        }
        assert_eq!(q.len(), 7);
        assert!(q
            .take(false)
            .is_some_and(|b| spans(&b) == vec![vec![0; 5], vec![1; 300], vec![2; 5]]));
        assert!(q.take(false).is_some_and(|b| b.count == 3));
        assert!(q.take(false).is_none(), "the open batch needs `partial`");
        let last = q.take(true).expect("the open batch");
        assert_eq!(spans(&last), vec![vec![6; 5]]);
        assert!(q.is_empty());
        assert!(q.take(true).is_none());
    }

    #[test]
    fn a_batch_also_closes_at_the_byte_limit() {
        let q = SpanQueue::new(100, 50);
        let big = vec![7u8; 1 << 20];
        for _ in 0..4 {
            assert!(q.push(&big));
        }
        let first = q.take(false).expect("closed by its size");
        assert_eq!(first.count, 3);
        assert!(first.bytes.len() >= MAX_BATCH_BYTES);
        assert!(q.take(false).is_none());
        assert_eq!(q.take(true).expect("the open batch").count, 1);
    }

    #[test]
    fn a_span_pushed_while_the_scratch_buffer_is_busy_gets_a_fresh_one() {
        let q = SpanQueue::new(10, 10);
        assert!(q.push_with(|outer| {
            outer.extend_from_slice(b"outer");
            assert!(q.push_with(|inner| inner.extend_from_slice(b"inner")));
        }));
        let batch = q.take(true).expect("both");
        assert_eq!(spans(&batch), vec![b"inner".to_vec(), b"outer".to_vec()]);
    }

    #[test]
    fn a_full_queue_drops_until_a_batch_is_taken() {
        let q = SpanQueue::new(4, 2);
        for _ in 0..4 {
            assert!(q.push(b"s"));
        }
        assert!(q.is_full());
        assert!(!q.push(b"dropped"));
        assert!(!q.push_with(|b| b.extend_from_slice(b"dropped too")));
        assert_eq!(q.len(), 4);
        let batch = q.take(false).expect("a full batch");
        assert_eq!(batch.count, 2);
        assert!(!q.is_full());
        assert!(q.push_with(|b| b.extend_from_slice(b"fits")));
        let mut rest = Vec::new();
        while let Some(b) = q.take(true) {
            rest.extend(spans(&b));
        }
        assert_eq!(rest, vec![b"s".to_vec(), b"s".to_vec(), b"fits".to_vec()]);
    }

    #[tokio::test]
    async fn the_export_task_is_woken_by_a_first_span_and_by_a_full_batch_only() {
        let q = SpanQueue::new(100, 3);
        q.push(b"first");
        tokio::time::timeout(std::time::Duration::from_secs(5), q.ready())
            .await
            .expect("a span in an empty queue wakes");
        q.push(b"second");
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(50), q.ready()).await;
        assert!(quiet.is_err(), "a span joining a queued one does not wake");
        q.push(b"third");
        tokio::time::timeout(std::time::Duration::from_secs(5), q.ready())
            .await
            .expect("a full batch wakes");
    }

    #[test]
    fn sent_buffers_are_reused_and_huge_ones_freed() {
        let q = SpanQueue::new(4, 2);
        q.push(b"a");
        q.push(b"b");
        let sent = q.take(false).expect("full");
        let ptr = sent.bytes.as_ptr();
        q.recycle(sent.bytes);
        q.push(b"c");
        q.push(b"d");
        // The open batch that took over from `sent` got the spare only after it was recycled;
        // the next one takes it.
        let _ = q.take(false).expect("full");
        q.push(b"e");
        let open = q.take(true).expect("open");
        assert_eq!(
            open.bytes.as_ptr(),
            ptr,
            "the recycled buffer carries the next batch"
        );
        q.recycle(Vec::with_capacity(MAX_BATCH_BYTES + 1));
        assert!(q.lock().spare.is_empty(), "an oversized buffer is not kept");
    }

    #[test]
    fn spans_encoded_in_place_are_framed_whatever_their_length() {
        let q = SpanQueue::new(10, 5);
        // Lengths taking one, two and three varint bytes, none, and a copied-in span between.
        let lengths = [5usize, 300, 20_000, 0];
        // Filled with non-zero bytes, unlike the reserved length bytes, so a span whose content
        // was not moved into place cannot pass.
        for (i, &len) in lengths.iter().enumerate() {
            assert!(q.push_in_place(|b| b.resize(b.len() + len, i as u8 + 1)));
        }
        assert!(q.push(b"copied"));
        assert!(q.push_in_place(|b| b.extend_from_slice(b"after")));
        let first = q.take(false).expect("five spans close a batch");
        let mut expect: Vec<Vec<u8>> = lengths
            .iter()
            .enumerate()
            .map(|(i, &len)| vec![i as u8 + 1; len])
            .collect();
        expect.push(b"copied".to_vec());
        assert_eq!(spans(&first), expect);
        assert_eq!(spans(&q.take(true).expect("open")), vec![b"after".to_vec()]);
    }

    #[test]
    fn a_full_queue_does_not_even_encode() {
        let q = SpanQueue::new(1, 1);
        assert!(q.push_in_place(|b| b.push(1)));
        let mut called = false;
        assert!(!q.push_in_place(|_| called = true));
        assert!(!called, "a span that would be dropped is not encoded");
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn an_encoder_that_panics_leaves_the_batch_as_it_was() {
        let q = SpanQueue::new(10, 10);
        assert!(q.push_in_place(|b| b.extend_from_slice(b"whole")));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            q.push_in_place(|b| {
                b.extend_from_slice(b"half a span");
                panic!("encoder bug");
            })
        }));
        assert!(panicked.is_err());
        assert_eq!(q.len(), 1, "the broken span is not counted");
        assert!(q.push_in_place(|b| b.extend_from_slice(b"next")));
        let batch = q.take(true).expect("open");
        assert_eq!(spans(&batch), vec![b"whole".to_vec(), b"next".to_vec()]);
    }

    #[test]
    fn a_batch_encoded_in_place_also_closes_at_the_byte_limit() {
        let q = SpanQueue::new(100, 50);
        for _ in 0..4 {
            assert!(q.push_in_place(|b| b.resize(b.len() + (1 << 20), 7)));
        }
        let first = q.take(false).expect("closed by its size");
        assert_eq!(spans(&first), vec![vec![7u8; 1 << 20]; 3]);
        assert_eq!(q.take(true).expect("the open batch").count, 1);
    }
}
