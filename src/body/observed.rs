//! [`ObservedBody`]: forwards every frame of an upstream body the moment it arrives, shows each
//! data frame to an [`Observer`], and tells the observer exactly once how the body ended.
//!
//! "Exactly once" covers every way a response can end: the last frame (or `is_end_stream()`
//! turning true, after which hyper may never poll again), an upstream error, the idle timeout
//! between chunks, and the client going away (hyper drops the body; dropping the inner upstream
//! body also cancels the upstream request). Parsers in later stages hang off `on_data`; they see
//! every upstream frame as a `&Bytes` whose clone is a reference count.
//!
//! Frames that have already arrived back to back are handed on as one: when a frame is in hand and
//! the next is not ready, the task yields (at most [`MAX_YIELDS`] scheduler turns, microseconds)
//! so the upstream connection task can decode what it has already read. A burst then costs one
//! write to the client instead of one per SSE event; a lone event is never held longer than
//! those turns.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

/// How a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// All frames forwarded.
    Complete,
    /// The upstream body failed mid-way (reset, malformed framing).
    UpstreamError,
    /// No frame arrived within the idle timeout.
    IdleTimeout,
    /// The client went away before the end: the body was dropped unfinished.
    ClientGone,
}

/// Sees a body's frames and its end.
pub trait Observer: Send + 'static {
    /// Called for every data frame, before it is handed on; `now` is when it arrived.
    fn on_data(&mut self, data: &Bytes, now: Instant);
    /// Called exactly once, when the body ends however it ends.
    fn on_end(self, end: BodyEnd);
    /// Whether what was seen must be handed on now rather than gathered with frames that
    /// arrived after it (a stream about to be cut must not read further than it has to).
    fn hand_on(&self) -> bool {
        false
    }
}

/// The error a body yields when the upstream fell silent for longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {0:?}")]
pub struct IdleTimeout(pub Duration);

/// Largest batch of already-arrived frames handed on as one.
const MAX_BATCH: usize = 16 * 1024;

/// Scheduler turns a received frame may wait for the next one before it is handed on. The
/// upstream connection task needs two turns to decode and pass on an event it has already read
/// (measured: one turn never batched); more would only delay a lone event.
const MAX_YIELDS: u8 = 2;

/// What comes after a held batch: the inner body's next event, kept until the batch is out.
enum Deferred<E> {
    Trailers(Frame<Bytes>),
    Error(E),
    End,
}

pin_project! {
    /// A pass-through body that reports to an [`Observer`]. See the module docs.
    pub struct ObservedBody<B, O: Observer> {
        #[pin]
        inner: B,
        observer: Option<O>,
        idle: Duration,
        // Reset lazily: a frame only stamps `last_frame`; the timer is re-armed when it fires
        // early, so the per-frame cost is one clock read rather than a timer-wheel update.
        last_frame: Instant,
        timer: Option<Pin<Box<Sleep>>>,
        // Frames that arrived back to back, gathered for one write (see `poll_frame`).
        held: Option<Bytes>,
        batch: BytesMut,
        yields: u8,
        deferred: Option<Deferred<Box<dyn std::error::Error + Send + Sync>>>,
    }

    impl<B, O: Observer> PinnedDrop for ObservedBody<B, O> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(o) = this.observer.take() {
                o.on_end(BodyEnd::ClientGone);
            }
        }
    }
}

// === impl ObservedBody ===

impl<B, O> ObservedBody<B, O>
where
    B: Body<Data = Bytes>,
    O: Observer,
{
    /// Wrap `inner`; `idle` bounds the silence between frames.
    pub fn new(inner: B, observer: O, idle: Duration) -> Self {
        let mut observer = Some(observer);
        // An already-empty body may never be polled: report it now.
        if inner.is_end_stream() {
            if let Some(o) = observer.take() {
                o.on_end(BodyEnd::Complete);
            }
        }
        Self {
            inner,
            observer,
            idle,
            last_frame: Instant::now(),
            timer: None,
            held: None,
            batch: BytesMut::new(),
            yields: 0,
            deferred: None,
        }
    }
}

impl<B, O> Body for ObservedBody<B, O>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    O: Observer,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if this.held.is_none() {
            match this.deferred.take() {
                Some(Deferred::Trailers(t)) => return Poll::Ready(Some(Ok(t))),
                Some(Deferred::Error(e)) => return Poll::Ready(Some(Err(e))),
                Some(Deferred::End) => return Poll::Ready(None),
                None => {}
            }
        }
        loop {
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let now = Instant::now();
                    *this.last_frame = now;
                    let data = match frame.into_data() {
                        Ok(d) => d,
                        Err(trailers) => {
                            if this.inner.is_end_stream() {
                                end(this.observer, BodyEnd::Complete);
                            }
                            if this.held.is_some() {
                                *this.deferred = Some(Deferred::Trailers(trailers));
                                return take_held(this.held, this.batch);
                            }
                            return Poll::Ready(Some(Ok(trailers)));
                        }
                    };
                    if let Some(o) = this.observer.as_mut() {
                        o.on_data(&data, now);
                    }
                    hold(this.held, this.batch, data);
                    *this.yields = 0;
                    if this.inner.is_end_stream() {
                        end(this.observer, BodyEnd::Complete);
                        return take_held(this.held, this.batch);
                    }
                    if this.observer.as_ref().is_some_and(O::hand_on)
                        || this.held.as_ref().map_or(0, Bytes::len) + this.batch.len() >= MAX_BATCH
                    {
                        return take_held(this.held, this.batch);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    end(this.observer, BodyEnd::UpstreamError);
                    if this.held.is_some() {
                        *this.deferred = Some(Deferred::Error(e.into()));
                        return take_held(this.held, this.batch);
                    }
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(None) => {
                    end(this.observer, BodyEnd::Complete);
                    if this.held.is_some() {
                        *this.deferred = Some(Deferred::End);
                        return take_held(this.held, this.batch);
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if this.held.is_some() {
                        if *this.yields < MAX_YIELDS {
                            *this.yields += 1;
                            // tokio's yield defers the wake-up until the other ready tasks (the
                            // upstream connection decoding its next event) and the I/O driver
                            // have run; waking ourselves directly would be polled again first.
                            let mut y = std::pin::pin!(tokio::task::yield_now());
                            let _ = y.as_mut().poll(cx);
                            return Poll::Pending;
                        }
                        *this.yields = 0;
                        return take_held(this.held, this.batch);
                    }
                    if this.observer.is_none() {
                        return Poll::Pending;
                    }
                    return poll_idle(this.timer, *this.last_frame, *this.idle, this.observer, cx);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.deferred.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Poll the idle timer. It is armed once and, when it fires, re-armed to `last_frame + idle` if
/// frames arrived meanwhile — so a busy stream costs one clock read per frame, not a timer update.
fn poll_idle<O: Observer, T>(
    timer: &mut Option<Pin<Box<Sleep>>>,
    last_frame: Instant,
    idle: Duration,
    observer: &mut Option<O>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<T, Box<dyn std::error::Error + Send + Sync>>>> {
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(last_frame + idle)));
    loop {
        match timer.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(()) => {
                let deadline = last_frame + idle;
                if deadline > Instant::now() {
                    timer.as_mut().reset(deadline);
                    continue;
                }
                end(observer, BodyEnd::IdleTimeout);
                return Poll::Ready(Some(Err(Box::new(IdleTimeout(idle)))));
            }
        }
    }
}

/// Room a batch starts with: a few stream events each (one allocation, where growing frame by
/// frame reallocated and copied five times over a toy stream). Held only until the batch is
/// written.
const BATCH_START: usize = 8 * 1024;

/// Add `data` to the held batch; the first frame is kept as is, without a copy.
fn hold(held: &mut Option<Bytes>, batch: &mut BytesMut, data: Bytes) {
    match held {
        None => *held = Some(data),
        Some(first) => {
            if batch.is_empty() {
                batch.reserve((first.len() + data.len()).max(BATCH_START));
                batch.extend_from_slice(first);
            }
            batch.extend_from_slice(&data);
        }
    }
}

/// Hand on the held batch as one data frame.
fn take_held<E>(
    held: &mut Option<Bytes>,
    batch: &mut BytesMut,
) -> Poll<Option<Result<Frame<Bytes>, E>>> {
    let first = held.take().unwrap_or_default();
    // The batch goes whole, its spare room with it: freed once written, not kept by the stream.
    let out = if batch.is_empty() {
        first
    } else {
        std::mem::take(batch).freeze()
    };
    Poll::Ready(Some(Ok(Frame::data(out))))
}

fn end<O: Observer>(observer: &mut Option<O>, how: BodyEnd) {
    if let Some(o) = observer.take() {
        o.on_end(how);
    }
}

// === impl BodyEnd ===

impl BodyEnd {
    /// Access-log value.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyEnd::Complete => "complete",
            BodyEnd::UpstreamError => "upstream_error",
            BodyEnd::IdleTimeout => "idle_timeout",
            BodyEnd::ClientGone => "client_gone",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::sync::{Arc, Mutex};

    #[derive(Default, Clone)]
    struct Log(Arc<Mutex<(Vec<u8>, Vec<BodyEnd>)>>);

    impl Observer for Log {
        fn on_data(&mut self, data: &Bytes, _: Instant) {
            self.0.lock().unwrap().0.extend_from_slice(data);
        }
        fn on_end(self, end: BodyEnd) {
            self.0.lock().unwrap().1.push(end);
        }
    }

    impl Log {
        fn ends(&self) -> Vec<BodyEnd> {
            self.0.lock().unwrap().1.clone()
        }
    }

    /// A body fed by a channel: `Ok(bytes)` is a frame, `Err(())` an upstream error.
    struct ChanBody(tokio::sync::mpsc::Receiver<Result<Bytes, ()>>);

    impl Body for ChanBody {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.0.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(Some(Err(()))) => {
                    Poll::Ready(Some(Err(std::io::Error::other("reset"))))
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        }
    }

    fn chan() -> (tokio::sync::mpsc::Sender<Result<Bytes, ()>>, ChanBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        (tx, ChanBody(rx))
    }

    #[tokio::test]
    async fn complete_body_reports_once_with_all_bytes() {
        let log = Log::default();
        let body = ObservedBody::new(
            Full::new(Bytes::from_static(b"hello")),
            log.clone(),
            Duration::from_secs(5),
        );
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"hello");
        assert_eq!(log.0.lock().unwrap().0, b"hello");
        assert_eq!(log.ends(), vec![BodyEnd::Complete]);
    }

    #[tokio::test]
    async fn empty_body_reports_at_construction_and_never_again() {
        let log = Log::default();
        let body = ObservedBody::new(
            http_body_util::Empty::<Bytes>::new(),
            log.clone(),
            Duration::from_secs(5),
        );
        assert_eq!(log.ends(), vec![BodyEnd::Complete]);
        drop(body);
        assert_eq!(log.ends(), vec![BodyEnd::Complete]);
    }

    #[tokio::test]
    async fn frames_pass_through_one_by_one() {
        let log = Log::default();
        let (tx, inner) = chan();
        let mut body = ObservedBody::new(inner, log.clone(), Duration::from_secs(5));
        tx.send(Ok(Bytes::from_static(b"a"))).await.unwrap();
        let f = body.frame().await.unwrap().unwrap();
        assert_eq!(f.data_ref().unwrap(), &Bytes::from_static(b"a"));
        tx.send(Ok(Bytes::from_static(b"b"))).await.unwrap();
        let f = body.frame().await.unwrap().unwrap();
        assert_eq!(f.data_ref().unwrap(), &Bytes::from_static(b"b"));
        assert!(log.ends().is_empty());
        drop(tx);
        assert!(body.frame().await.is_none());
        assert_eq!(log.ends(), vec![BodyEnd::Complete]);
        drop(body);
        assert_eq!(log.ends(), vec![BodyEnd::Complete]);
    }

    #[tokio::test]
    async fn frames_already_arrived_go_out_together_and_each_is_observed() {
        #[derive(Default, Clone)]
        struct Count(Arc<Mutex<usize>>);
        impl Observer for Count {
            fn on_data(&mut self, _: &Bytes, _: Instant) {
                *self.0.lock().unwrap() += 1;
            }
            fn on_end(self, _: BodyEnd) {}
        }
        let seen = Count::default();
        let (tx, inner) = chan();
        let mut body = ObservedBody::new(inner, seen.clone(), Duration::from_secs(5));
        for part in [&b"data: 1\n\n"[..], b"data: 2\n\n", b"data: 3\n\n"] {
            tx.send(Ok(Bytes::from_static(part))).await.unwrap();
        }
        let f = body.frame().await.unwrap().unwrap();
        assert_eq!(
            f.data_ref().unwrap(),
            &Bytes::from_static(b"data: 1\n\ndata: 2\n\ndata: 3\n\n")
        );
        assert_eq!(
            *seen.0.lock().unwrap(),
            3,
            "the observer sees every original frame"
        );
        drop(tx);
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn data_held_before_an_upstream_error_is_delivered_first() {
        let log = Log::default();
        let (tx, inner) = chan();
        let mut body = ObservedBody::new(inner, log.clone(), Duration::from_secs(5));
        tx.send(Ok(Bytes::from_static(b"partial"))).await.unwrap();
        tx.send(Err(())).await.unwrap();
        let f = body.frame().await.unwrap().unwrap();
        assert_eq!(f.data_ref().unwrap(), &Bytes::from_static(b"partial"));
        assert!(body.frame().await.unwrap().is_err());
        drop(body);
        assert_eq!(log.ends(), vec![BodyEnd::UpstreamError]);
    }

    #[tokio::test]
    async fn upstream_error_reports_once() {
        let log = Log::default();
        let (tx, inner) = chan();
        let mut body = ObservedBody::new(inner, log.clone(), Duration::from_secs(5));
        tx.send(Ok(Bytes::from_static(b"x"))).await.unwrap();
        tx.send(Err(())).await.unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_err());
        drop(body);
        assert_eq!(log.ends(), vec![BodyEnd::UpstreamError]);
    }

    #[tokio::test]
    async fn dropped_mid_stream_reports_client_gone_once() {
        let log = Log::default();
        let (tx, inner) = chan();
        let mut body = ObservedBody::new(inner, log.clone(), Duration::from_secs(5));
        tx.send(Ok(Bytes::from_static(b"x"))).await.unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        drop(body);
        assert_eq!(log.ends(), vec![BodyEnd::ClientGone]);
        // The upstream side sees its receiver gone: the upstream request is cancelled.
        assert!(tx.send(Ok(Bytes::new())).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn silence_longer_than_idle_timeout_ends_the_body() {
        let log = Log::default();
        let (tx, inner) = chan();
        let mut body = ObservedBody::new(inner, log.clone(), Duration::from_secs(2));
        tx.send(Ok(Bytes::from_static(b"x"))).await.unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<IdleTimeout>(), "{err}");
        drop(body);
        assert_eq!(log.ends(), vec![BodyEnd::IdleTimeout]);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn frames_inside_the_idle_window_keep_the_stream_alive() {
        let log = Log::default();
        let (tx, inner) = chan();
        let body = ObservedBody::new(inner, log.clone(), Duration::from_secs(2));
        tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                tx.send(Ok(Bytes::from_static(b"."))).await.unwrap();
            }
        });
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b".....");
        assert_eq!(log.ends(), vec![BodyEnd::Complete]);
    }
}
