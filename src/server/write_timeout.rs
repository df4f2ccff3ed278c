//! [`WriteTimeout`]: a client connection whose writes must make progress within a time.
//!
//! A client that stops reading fills its socket's buffers; hyper then stops polling the response
//! body, so nothing on the response path runs again — the upstream stream stays open and its
//! call never finishes. This wrapper times each stalled write: when a write has been pending for
//! `timeout` without a byte accepted, it fails with `TimedOut`, hyper closes the connection, the
//! response body is dropped (cancelling the upstream request) and the call finishes as
//! `client_gone`.
//!
//! The same timer bounds the wait for a connection's first byte: hyper's header-read timeout
//! starts only once the server knows the protocol, and the auto builder learns it from the
//! client's first bytes, so a client that connects and sends nothing would hold its socket for
//! good. Nothing is written before the first byte, so the one timer serves both.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use tokio::time::{Instant, Sleep};

/// An I/O object whose pending writes time out.
pub struct WriteTimeout<T> {
    inner: T,
    timeout: Duration,
    /// Boxed so the wrapper stays `Unpin` (hyper's owned connections need it); one per
    /// connection, reset in place.
    stalled: Pin<Box<Sleep>>,
    armed: bool,
    /// No byte read yet: a pending read fails once `stalled` (set to the first-byte deadline)
    /// fires.
    awaiting_first: bool,
}

impl<T> WriteTimeout<T> {
    /// Wrap `inner`: a write pending for `timeout` fails, and so does waiting longer than
    /// `first_byte` for the client's first byte.
    pub fn new(inner: T, timeout: Duration, first_byte: Duration) -> Self {
        Self {
            inner,
            timeout,
            stalled: Box::pin(tokio::time::sleep(first_byte)),
            armed: false,
            awaiting_first: true,
        }
    }
}

impl<T: Write + Unpin> WriteTimeout<T> {
    /// Run one write-side poll under the stall timer.
    fn timed<R>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match op(Pin::new(&mut self.inner), cx) {
            Poll::Pending => {
                if !self.armed {
                    self.armed = true;
                    let deadline = Instant::now() + self.timeout;
                    self.stalled.as_mut().reset(deadline);
                }
                match self.stalled.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client did not read the response in time",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl<T: Read + Unpin> Read for WriteTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.awaiting_first {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            // Bytes, or the end (which ends the connection anyway): the wait is over.
            Poll::Ready(r) => {
                self.awaiting_first = false;
                Poll::Ready(r)
            }
            Poll::Pending => match self.stalled.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client sent nothing in time",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: Write + Unpin> Write for WriteTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.timed(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.timed(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.timed(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
