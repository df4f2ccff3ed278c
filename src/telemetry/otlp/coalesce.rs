//! One socket write per burst of HTTP/2 frames on the OTLP/gRPC connection.
//!
//! h2 hands its connection one frame at a time, and writes and flushes each before taking the
//! next. Collectors cap frames at 16 KiB (HTTP/2's default `SETTINGS_MAX_FRAME_SIZE`, which
//! grpc-go keeps), so a batch of 512 spans went out as ~21 writes, each its own TCP segment
//! (`TCP_NODELAY`): per batch 21 system calls, 21 trips through the receive path, and as many
//! wake-ups of the collector. Measured side by side, that made OTLP/gRPC export cost the proxy
//! 2 % more throughput than OTLP/HTTP, which sends a batch in one write.
//!
//! [`Coalesce`] gathers the frames in a buffer instead. A flush that follows new writes is
//! put off once: the connection task is woken and yields, and on its next poll h2 either
//! writes more frames (the flush is put off again) or, with nothing left to send, flushes
//! again with nothing new, and everything gathered goes out in one write. h2 flushes on every
//! poll of the connection, so nothing is left waiting. The cost is one copy of the bytes, in
//! memory the connection reuses.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};

/// Most bytes gathered before they are written regardless: a batch of 512 ordinary spans is
/// ~350 KB, so it goes in one or two writes, and the buffer stays small.
const MAX_GATHERED: usize = 256 * 1024;

/// A connector whose connections are [`Coalesce`]d.
#[derive(Debug, Clone)]
pub struct Coalescing<C>(pub C);

impl<C> tower_service::Service<Uri> for Coalescing<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Send + 'static,
    C::Response: 'static,
    C::Error: 'static,
{
    type Response = Coalesce<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { connecting.await.map(Coalesce::new) })
    }
}

/// A connection whose writes are gathered until the writer is done for now (see the module
/// docs).
#[derive(Debug)]
pub struct Coalesce<S> {
    inner: S,
    /// Bytes taken from the writer and not yet written; `buf[sent..]` is still to go.
    buf: Vec<u8>,
    sent: usize,
    /// A flush was put off, and nothing was written since.
    deferred: bool,
}

impl<S> Coalesce<S> {
    /// `inner`, with its writes gathered.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            sent: 0,
            deferred: false,
        }
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Take `data` to write later; a flush after it is put off again.
    fn gather(&mut self, data: &[u8]) {
        if self.buf.capacity() == 0 {
            // Once, at the full size: it never grows or moves after.
            self.buf.reserve_exact(MAX_GATHERED);
        }
        self.buf.extend_from_slice(data);
        self.deferred = false;
    }
}

impl<S: Write + Unpin> Coalesce<S> {
    /// Write out everything gathered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Make room for `len` more bytes: write out what is gathered if they would not fit.
    /// `Ready(true)` when `len` bytes are better written straight through (too many to gather,
    /// and nothing is gathered before them).
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        // The whole buffer, sent part included: it is only emptied once all of it is written.
        if self.buf.len() + len > MAX_GATHERED {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(len > MAX_GATHERED))
    }
}

impl<S: Write + Unpin> Write for Coalesce<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if ready!(this.poll_room(cx, data.len()))? {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        this.gather(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum();
        if ready!(this.poll_room(cx, len))? {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.gather(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        // Vectored writes are gathered without a separate call per slice.
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending() > 0 {
            if !this.deferred {
                // The writer may have more to write: let it, on its next poll.
                this.deferred = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            ready!(this.poll_drain(cx))?;
        }
        this.deferred = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: Read + Unpin> Read for Coalesce<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: Connection> Connection for Coalesce<S> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    /// Records each write the connection gets.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        flushes: usize,
        shut: bool,
        /// Most bytes one write takes (0: any).
        max: usize,
        /// Every other write is refused (the socket is full), waking the writer.
        stall: bool,
        stalled: bool,
    }

    impl Recorder {
        fn bytes(&self) -> Vec<u8> {
            self.writes.concat()
        }
    }

    impl Write for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if this.stall {
                this.stalled = !this.stalled;
                if this.stalled {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
            let n = if this.max == 0 {
                data.len()
            } else {
                data.len().min(this.max)
            };
            this.writes.push(data[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().shut = true;
            Poll::Ready(Ok(()))
        }
    }

    /// Counts wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Harness {
        conn: Coalesce<Recorder>,
        wakes: Arc<Wakes>,
    }

    impl Harness {
        fn new(inner: Recorder) -> Self {
            Self {
                conn: Coalesce::new(inner),
                wakes: Arc::default(),
            }
        }

        fn with<T>(
            &mut self,
            f: impl FnOnce(Pin<&mut Coalesce<Recorder>>, &mut Context<'_>) -> Poll<T>,
        ) -> Poll<T> {
            let waker = self.wakes.clone().into();
            let mut cx = Context::from_waker(&waker);
            f(Pin::new(&mut self.conn), &mut cx)
        }

        fn write(&mut self, data: &[u8]) {
            let n = self.with(|c, cx| c.poll_write(cx, data));
            assert!(matches!(n, Poll::Ready(Ok(n)) if n == data.len()), "{n:?}");
        }

        fn write_vectored(&mut self, bufs: &[&[u8]]) {
            let slices: Vec<_> = bufs.iter().map(|b| io::IoSlice::new(b)).collect();
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            let n = self.with(|c, cx| c.poll_write_vectored(cx, &slices));
            assert!(matches!(n, Poll::Ready(Ok(n)) if n == total), "{n:?}");
        }

        fn flush(&mut self) -> Poll<io::Result<()>> {
            self.with(|c, cx| c.poll_flush(cx))
        }

        fn wakes(&self) -> usize {
            self.wakes.0.load(Ordering::SeqCst)
        }

        fn inner(&self) -> &Recorder {
            &self.conn.inner
        }
    }

    /// A frame as h2 hands it over: a 9-byte header, then the payload.
    fn frame(n: u8, len: usize) -> (Vec<u8>, Vec<u8>) {
        (vec![n; 9], vec![n; len])
    }

    #[test]
    fn frames_flushed_one_by_one_go_out_in_one_write_once_the_writer_is_done() {
        let mut h = Harness::new(Recorder::default());
        let mut expected = Vec::new();
        for n in 1..=3 {
            let (head, payload) = frame(n, 16_384);
            h.write_vectored(&[&head, &payload]);
            expected.extend_from_slice(&head);
            expected.extend_from_slice(&payload);
            // h2 flushes after each frame: put off, and the writer woken to go on.
            assert!(h.flush().is_pending());
            assert_eq!(h.wakes(), usize::from(n));
            assert!(h.inner().writes.is_empty(), "nothing written yet");
        }
        // Polled again with nothing new to write, h2 flushes again: everything goes.
        assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
        assert_eq!(h.inner().writes.len(), 1, "one write for three frames");
        assert_eq!(h.inner().bytes(), expected);
        assert_eq!(h.inner().flushes, 1);
        assert_eq!(h.wakes(), 3, "no wake-up once written");
        // Nothing gathered: a flush goes straight through.
        assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
        assert_eq!(h.inner().flushes, 2);
        assert_eq!(h.inner().writes.len(), 1);
    }

    #[test]
    fn plain_writes_are_gathered_like_vectored_ones() {
        let mut h = Harness::new(Recorder::default());
        h.write(b"settings");
        h.write(b"headers");
        assert!(h.flush().is_pending());
        h.write(b"data");
        assert!(
            h.flush().is_pending(),
            "a new write puts the flush off again"
        );
        assert!(h.flush().is_ready());
        assert_eq!(h.inner().writes, [b"settingsheadersdata".to_vec()]);
    }

    #[test]
    fn gathering_stops_at_the_limit_and_large_writes_go_straight_through() {
        let mut h = Harness::new(Recorder::default());
        let first = vec![1; MAX_GATHERED - 100];
        h.write(&first);
        assert!(h.inner().writes.is_empty());
        // Past the limit: what was gathered goes first, the new bytes are gathered.
        h.write(&[2; 200]);
        assert_eq!(h.inner().writes, std::slice::from_ref(&first));
        // More than the limit at once: what is gathered goes, then the new bytes unbuffered
        // (here the socket takes the first slice only, as it may).
        let big = vec![3; MAX_GATHERED + 1];
        let slices = [io::IoSlice::new(&big[..10]), io::IoSlice::new(&big[10..])];
        let n = h.with(|c, cx| c.poll_write_vectored(cx, &slices));
        assert!(matches!(n, Poll::Ready(Ok(10))), "{n:?}");
        assert_eq!(h.inner().writes.len(), 3);
        assert_eq!(h.inner().writes[1], vec![2; 200]);
        assert_eq!(h.inner().writes[2].len(), 10);
        // The writer writes the rest, which fits and is gathered.
        h.write(&big[10..]);
        assert!(h.flush().is_pending());
        assert!(h.flush().is_ready());
        let mut expected = first;
        expected.extend_from_slice(&[2; 200]);
        expected.extend_from_slice(&big);
        assert_eq!(h.inner().bytes(), expected);
        assert_eq!(
            h.conn.buf.capacity(),
            MAX_GATHERED,
            "reserved once, never grown"
        );
    }

    #[test]
    fn partial_and_refused_socket_writes_resume_where_they_stopped() {
        let mut h = Harness::new(Recorder {
            max: 1000,
            stall: true,
            ..Recorder::default()
        });
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        h.write(&data[..4000]);
        h.write_vectored(&[&data[4000..4005], &data[4005..]]);
        let mut pending = 0;
        loop {
            match h.flush() {
                Poll::Ready(r) => break r.unwrap(),
                Poll::Pending => pending += 1,
            }
            assert!(pending < 100, "the flush never finished");
        }
        // Once put off, then refused on every other write of 1000 bytes.
        assert_eq!(pending, 11);
        assert_eq!(h.inner().writes.len(), 10);
        assert_eq!(h.inner().bytes(), data);
        assert_eq!(h.conn.pending(), 0);
    }

    #[test]
    fn shutdown_writes_what_is_gathered_first() {
        let mut h = Harness::new(Recorder::default());
        h.write(b"goaway");
        assert!(h.flush().is_pending());
        let shut = h.with(|c, cx| c.poll_shutdown(cx));
        assert!(matches!(shut, Poll::Ready(Ok(()))));
        assert_eq!(h.inner().writes, [b"goaway".to_vec()]);
        assert!(h.inner().shut);
    }

    #[test]
    fn a_socket_that_takes_nothing_is_an_error_not_a_loop() {
        struct Closed;
        impl Write for Closed {
            fn poll_write(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &[u8],
            ) -> Poll<io::Result<usize>> {
                Poll::Ready(Ok(0))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        let mut conn = Coalesce::new(Closed);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(Pin::new(&mut conn).poll_write(&mut cx, b"x").is_ready());
        assert!(Pin::new(&mut conn).poll_flush(&mut cx).is_pending());
        let flushed = Pin::new(&mut conn).poll_flush(&mut cx);
        assert!(
            matches!(&flushed, Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::WriteZero),
            "{flushed:?}"
        );
    }
}
