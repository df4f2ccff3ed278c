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
//! answered at once without writing, so h2 goes on to its next frame in the same poll; a flush
//! with nothing new since the last one means h2 has nothing more to send for now, and
//! everything gathered goes out in one write. h2 ends every poll of its connection with such a
//! flush once its frames are written (or shuts down, which writes everything too). As a safety
//! net, answering a flush without writing also wakes the connection task, so it is polled again
//! even if h2 did not flush again. The cost is one copy of the bytes, in memory the connection
//! reuses, and at most one extra poll per burst.

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
    /// Bytes were gathered since the last flush.
    fresh: bool,
}

impl<S> Coalesce<S> {
    /// `inner`, with its writes gathered.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            sent: 0,
            fresh: false,
        }
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Take `data` to write later; the next flush is answered without writing it.
    fn gather(&mut self, data: &[u8]) {
        if self.buf.capacity() == 0 {
            // Once, at the full size: it never grows or moves after.
            self.buf.reserve_exact(MAX_GATHERED);
        }
        self.buf.extend_from_slice(data);
        self.fresh = true;
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
        if this.fresh {
            // The writer may have more to write in this poll: let it. The wake-up makes sure
            // it is polled again, and flushes again, if it does not now.
            this.fresh = false;
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        if this.pending() > 0 {
            ready!(this.poll_drain(cx))?;
        }
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
            // h2 flushes after each frame: answered at once, nothing written, the writer
            // woken in case it does not flush again.
            assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
            assert_eq!(h.wakes(), usize::from(n));
            assert!(h.inner().writes.is_empty(), "nothing written yet");
            assert_eq!(h.inner().flushes, 0);
        }
        // With nothing left, h2 flushes again with nothing new: everything goes.
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
        assert!(h.flush().is_ready());
        h.write(b"data");
        assert!(h.flush().is_ready());
        assert!(
            h.inner().writes.is_empty(),
            "a new write holds the flush again"
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
        assert!(h.flush().is_ready());
        assert_eq!(h.inner().writes.len(), 3);
        assert!(h.flush().is_ready());
        assert_eq!(h.inner().writes.len(), 4);
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
        // The first flush holds the bytes; the next write them.
        assert!(h.flush().is_ready());
        assert!(h.inner().writes.is_empty());
        let mut pending = 0;
        loop {
            match h.flush() {
                Poll::Ready(r) => break r.unwrap(),
                Poll::Pending => pending += 1,
            }
            assert!(pending < 100, "the flush never finished");
        }
        // Refused on every other write, of 1000 bytes each.
        assert_eq!(pending, 10);
        assert_eq!(h.inner().writes.len(), 10);
        assert_eq!(h.inner().bytes(), data);
        assert_eq!(h.conn.pending(), 0);
    }

    #[test]
    fn shutdown_writes_what_is_gathered_first() {
        let mut h = Harness::new(Recorder::default());
        h.write(b"goaway");
        assert!(h.flush().is_ready());
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
        assert!(Pin::new(&mut conn).poll_flush(&mut cx).is_ready());
        let flushed = Pin::new(&mut conn).poll_flush(&mut cx);
        assert!(
            matches!(&flushed, Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::WriteZero),
            "{flushed:?}"
        );
    }

    /// Counts the writes that reach the socket.
    struct Counting<S> {
        inner: S,
        writes: Arc<AtomicUsize>,
    }

    impl<S: Write + Unpin> Write for Counting<S> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let r = Pin::new(&mut this.inner).poll_write(cx, data);
            if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
                this.writes.fetch_add(1, Ordering::SeqCst);
            }
            r
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
            if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
                this.writes.fetch_add(1, Ordering::SeqCst);
            }
            r
        }

        fn is_write_vectored(&self) -> bool {
            self.inner.is_write_vectored()
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
        }
    }

    impl<S: Read + Unpin> Read for Counting<S> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: ReadBufCursor<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
        }
    }

    /// POST `body` over HTTP/2 on `io` to an echo server; the body echoed back.
    async fn post<T>(io: T, body: bytes::Bytes) -> bytes::Bytes
    where
        T: Read + Write + Unpin + Send + 'static,
    {
        use http_body_util::{BodyExt, Full};
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(conn);
        let request = http::Request::post("http://collector/")
            .body(Full::new(body))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        response.into_body().collect().await.unwrap().to_bytes()
    }

    /// Send `body` to a real HTTP/2 server over loopback TCP, through [`Coalesce`] or not; the
    /// socket writes it took, and what the server got.
    async fn exchange(coalesce: bool, body: bytes::Bytes) -> (usize, bytes::Bytes) {
        use http_body_util::{BodyExt, Full};
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let echo =
                hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async {
                    let got = req.into_body().collect().await?.to_bytes();
                    Ok::<_, hyper::Error>(http::Response::new(Full::new(got)))
                });
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), echo)
                .await
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let writes = Arc::new(AtomicUsize::new(0));
        let io = Counting {
            inner: TokioIo::new(tcp),
            writes: writes.clone(),
        };
        let echoed = if coalesce {
            post(Coalesce::new(io), body).await
        } else {
            post(io, body).await
        };
        (writes.load(Ordering::SeqCst), echoed)
    }

    #[tokio::test]
    async fn a_real_http2_request_of_many_frames_takes_a_few_writes_and_arrives_whole() {
        // ~21 DATA frames of 16 KiB (the server's frame limit), past the gathering limit.
        let body: bytes::Bytes = (0..340_000u32).map(|i| (i % 251) as u8).collect();
        let (plain, echoed) = exchange(false, body.clone()).await;
        assert_eq!(echoed, body);
        assert!(
            plain >= 21,
            "h2 alone writes frame by frame: {plain} writes"
        );
        let (gathered, echoed) = exchange(true, body.clone()).await;
        assert_eq!(echoed, body, "the bytes arrive whole and in order");
        assert!(gathered <= 8, "{gathered} writes (h2 alone: {plain})");
    }
}
