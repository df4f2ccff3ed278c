//! The response body: pre-built frames handed out one per poll, with optional delays between
//! them, one-byte writes, or a deliberate abort; it settles the request's counters.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::stats::{Outcome, RequestGuard};

/// How long a `drop-mid-stream` body waits after its last frame before aborting, so that the
/// frames already handed out reach the socket (HTTP/2 discards queued frames on reset).
const ABORT_LINGER: Duration = Duration::from_millis(20);

/// The error a `drop-mid-stream` body fails with; the server then aborts the connection
/// (HTTP/1.1) or resets the stream (HTTP/2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("mock fault: response aborted mid-stream")]
pub struct MockAbort;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AbortState {
    Idle,
    Flushing,
    Lingering,
    Done,
}

/// The mock's response body (see the module docs).
pub(crate) struct MockBody {
    frames: std::vec::IntoIter<Bytes>,
    /// Rest of the current frame in one-byte mode.
    partial: Bytes,
    delivered: usize,
    remaining: u64,
    exact: bool,
    delay: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    sleeping: bool,
    delayed_for_next: bool,
    one_byte: bool,
    abort_after: Option<usize>,
    abort_state: AbortState,
    yield_pending: bool,
    guard: Option<RequestGuard>,
}

impl std::fmt::Debug for MockBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockBody")
            .field("frames_left", &self.frames.len())
            .field("delivered", &self.delivered)
            .field("one_byte", &self.one_byte)
            .field("abort_after", &self.abort_after)
            .finish_non_exhaustive()
    }
}

impl MockBody {
    /// A body made of `frames`. `exact` announces the total length up front (JSON bodies get a
    /// `content-length`; streams use chunked encoding / plain DATA frames).
    pub(crate) fn new(frames: Vec<Bytes>, exact: bool) -> Self {
        let frames: Vec<Bytes> = frames.into_iter().filter(|f| !f.is_empty()).collect();
        let remaining = frames.iter().map(|f| f.len() as u64).sum();
        Self {
            frames: frames.into_iter(),
            partial: Bytes::new(),
            delivered: 0,
            remaining,
            exact,
            delay: Duration::ZERO,
            timer: None,
            sleeping: false,
            delayed_for_next: false,
            one_byte: false,
            abort_after: None,
            abort_state: AbortState::Idle,
            yield_pending: false,
            guard: None,
        }
    }

    /// A single-frame body of known length.
    #[cfg(test)]
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self::new(vec![bytes.into()], true)
    }

    /// Sleep this long before every frame except the first.
    pub(crate) fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Hand out every byte as its own frame and yield to the runtime in between, so the server
    /// flushes each byte separately.
    pub(crate) fn one_byte_writes(mut self) -> Self {
        self.one_byte = true;
        self
    }

    /// Hand out about half of the body, then fail (the server aborts the connection/stream).
    /// A single-frame body is split in two so that a part of it still goes out.
    pub(crate) fn drop_mid_stream(mut self) -> Self {
        let mut frames: Vec<Bytes> = std::mem::take(&mut self.frames).collect();
        if frames.len() == 1 && frames[0].len() > 1 {
            let mut first = frames.remove(0);
            let second = first.split_off(first.len() / 2);
            frames = vec![first, second];
        }
        self.abort_after = Some((frames.len() / 2).max(1).min(frames.len()));
        self.frames = frames.into_iter();
        self
    }

    /// Attach the request's guard: settled when the body is fully handed out (or deliberately
    /// aborted); dropped unsettled — a cancelled stream — when the connection goes away first.
    pub(crate) fn with_guard(mut self, guard: RequestGuard) -> Self {
        self.guard = Some(guard);
        if self.is_done() {
            self.settle(Outcome::Completed);
        }
        self
    }

    fn settle(&mut self, outcome: Outcome) {
        if let Some(g) = self.guard.as_mut() {
            g.settle(outcome);
        }
    }

    /// Everything handed out and nothing else (like an abort) pending.
    fn is_done(&self) -> bool {
        self.partial.is_empty() && self.frames.len() == 0 && self.abort_after.is_none()
    }

    fn data(&mut self, chunk: Bytes) -> Poll<Option<Result<Frame<Bytes>, MockAbort>>> {
        self.remaining = self.remaining.saturating_sub(chunk.len() as u64);
        if self.is_done() {
            self.settle(Outcome::Completed);
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn start_sleep(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        match self.timer.as_mut() {
            Some(t) => t.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.sleeping = true;
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = MockAbort;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, MockAbort>>> {
        let this = self.get_mut();
        loop {
            if this.yield_pending {
                // Returning Pending makes the connection flush what it has buffered.
                this.yield_pending = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if this.sleeping {
                if let Some(t) = this.timer.as_mut() {
                    if t.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                this.sleeping = false;
            }
            if !this.partial.is_empty() {
                let byte = this.partial.split_to(1);
                this.yield_pending = true;
                return this.data(byte);
            }
            if let Some(limit) = this.abort_after {
                if this.delivered >= limit {
                    match this.abort_state {
                        AbortState::Idle => {
                            this.abort_state = AbortState::Flushing;
                            this.yield_pending = true;
                        }
                        AbortState::Flushing => {
                            this.abort_state = AbortState::Lingering;
                            this.start_sleep(ABORT_LINGER);
                        }
                        AbortState::Lingering => {
                            this.abort_state = AbortState::Done;
                            this.settle(Outcome::Aborted);
                            return Poll::Ready(Some(Err(MockAbort)));
                        }
                        AbortState::Done => return Poll::Ready(None),
                    }
                    continue;
                }
            }
            if this.frames.len() == 0 {
                this.settle(Outcome::Completed);
                return Poll::Ready(None);
            }
            if this.delivered > 0 && !this.delay.is_zero() && !this.delayed_for_next {
                this.delayed_for_next = true;
                this.start_sleep(this.delay);
                continue;
            }
            this.delayed_for_next = false;
            let Some(mut frame) = this.frames.next() else {
                continue;
            };
            this.delivered += 1;
            if this.one_byte {
                this.yield_pending = true;
                if frame.len() > 1 {
                    this.partial = frame.split_off(1);
                }
            }
            return this.data(frame);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.remaining)
        } else {
            let mut h = SizeHint::new();
            h.set_lower(self.remaining);
            h
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Counters;
    use std::sync::Arc;

    /// Polls the body to the end like a server would; returns data chunks and whether it failed.
    async fn drain(mut body: MockBody) -> (Vec<Bytes>, bool) {
        let mut out = Vec::new();
        loop {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                Some(Ok(f)) => out.push(f.into_data().unwrap()),
                Some(Err(MockAbort)) => return (out, true),
                None => return (out, false),
            }
        }
    }

    fn frames(n: usize) -> Vec<Bytes> {
        (0..n).map(|i| Bytes::from(format!("f{i};"))).collect()
    }

    #[tokio::test]
    async fn plain_body_completes_and_settles() {
        let c = Arc::new(Counters::default());
        let body = MockBody::new(frames(3), true).with_guard(c.begin());
        assert_eq!(body.size_hint().exact(), Some(9));
        assert!(!body.is_end_stream());
        let (out, failed) = drain(body).await;
        assert!(!failed);
        assert_eq!(out.concat(), b"f0;f1;f2;");
        let s = c.snapshot();
        assert_eq!(
            (s.responses_completed, s.streams_cancelled, s.in_flight),
            (1, 0, 0)
        );
    }

    #[tokio::test]
    async fn dropping_early_counts_a_cancel() {
        let c = Arc::new(Counters::default());
        let mut body = MockBody::new(frames(3), false).with_guard(c.begin());
        let first = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(first.is_some());
        drop(body);
        let s = c.snapshot();
        assert_eq!(
            (s.responses_completed, s.streams_cancelled, s.in_flight),
            (0, 1, 0)
        );
    }

    #[tokio::test]
    async fn one_byte_writes_split_every_byte() {
        let (out, failed) = drain(MockBody::new(frames(2), false).one_byte_writes()).await;
        assert!(!failed);
        assert_eq!(out.len(), 6);
        assert!(out.iter().all(|b| b.len() == 1));
        assert_eq!(out.concat(), b"f0;f1;");
    }

    #[tokio::test]
    async fn drop_mid_stream_sends_half_then_fails() {
        let c = Arc::new(Counters::default());
        let body = MockBody::new(frames(10), false)
            .drop_mid_stream()
            .with_guard(c.begin());
        let (out, failed) = drain(body).await;
        assert!(failed);
        assert_eq!(out.len(), 5);
        let s = c.snapshot();
        assert_eq!(
            (s.responses_completed, s.streams_cancelled, s.in_flight),
            (0, 0, 0)
        );

        let (out, failed) =
            drain(MockBody::full(Bytes::from_static(b"{\"a\":1}")).drop_mid_stream()).await;
        assert!(failed);
        assert_eq!(out.concat(), b"{\"a");
    }

    #[tokio::test(start_paused = true)]
    async fn delay_between_frames_only() {
        let start = Instant::now();
        let (out, _) =
            drain(MockBody::new(frames(4), false).with_delay(Duration::from_millis(10))).await;
        assert_eq!(out.len(), 4);
        assert_eq!(start.elapsed(), Duration::from_millis(30));
    }
}
