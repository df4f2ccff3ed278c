//! [`ObservedBody`]: forwards every frame of an upstream body the moment it arrives, shows each
//! data frame to an [`Observer`], and tells the observer exactly once how the body ended.
//!
//! "Exactly once" covers every way a response can end: the last frame (or `is_end_stream()`
//! turning true, after which hyper may never poll again), an upstream error, the idle timeout
//! between chunks, and the client going away (hyper drops the body; dropping the inner upstream
//! body also cancels the upstream request). Parsers in later stages hang off `on_data`; they see a
//! `&Bytes` whose clone is a reference count, so observing never copies or delays a chunk.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
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
    /// Called for every data frame, before it is handed on.
    fn on_data(&mut self, data: &Bytes);
    /// Called exactly once, when the body ends however it ends.
    fn on_end(self, end: BodyEnd);
}

/// The error a body yields when the upstream fell silent for longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {0:?}")]
pub struct IdleTimeout(pub Duration);

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
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.last_frame = Instant::now();
                if let Some(o) = this.observer.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        o.on_data(data);
                    }
                }
                if this.inner.is_end_stream() {
                    end(this.observer, BodyEnd::Complete);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                end(this.observer, BodyEnd::UpstreamError);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                end(this.observer, BodyEnd::Complete);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.observer.is_none() {
                    return Poll::Pending;
                }
                poll_idle(this.timer, *this.last_frame, *this.idle, this.observer, cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
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

fn end<O: Observer>(observer: &mut Option<O>, how: BodyEnd) {
    if let Some(o) = observer.take() {
        o.on_end(how);
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
        fn on_data(&mut self, data: &Bytes) {
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
