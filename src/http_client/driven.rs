//! Plain-HTTP upstream connections driven by the request's own task.
//!
//! hyper's pooled client runs every connection in a task of its own, and a response body reaches
//! the request's task through a channel that holds one frame: each frame of a streamed answer
//! costs a wake-up, a task switch and, since the request's task then finds nothing more to
//! send, a write to the client of its own. Here the request's task polls the connection itself
//! (while it waits for the response head, and whenever the body has nothing buffered): frames
//! that arrived together are decoded and written out together, with no other task involved.
//! `examples/hyper-floor.rs` measures both shapes with nothing else in the way (BENCHMARKS.md).
//!
//! Only `http://` upstreams come here (in-cluster model servers, other gateways in a mesh):
//! they speak HTTP/1.1 by construction. TLS upstreams negotiate HTTP/2 by ALPN and keep the
//! pooled client. A connection idle in the pool is polled by nobody: one the upstream closed
//! meanwhile is found closed (and dropped) when next taken, and idle ones past
//! `upstream.pool_idle_timeout` are dropped when the pool is next used. A body dropped before
//! its end closes its connection, so an upstream sees a client that went away at once.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::UpstreamConfig;

/// The state machine of one upstream HTTP/1 connection (reads and writes it when polled).
type Conn = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// A connection: its request handle, its state machine, when it last went idle. Boxed once per
/// connection (the state machine is large) and moved as a box from request to request.
struct Idle {
    sender: http1::SendRequest<Full<Bytes>>,
    /// `None` once the connection ended (dropped: see [`exchange`]).
    conn: Option<Conn>,
    since: Instant,
}

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection within `upstream.connect_timeout`.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The upstream's address did not resolve or refused the connection.
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    /// The connection failed before the response head.
    #[error("upstream connection failed: {0}")]
    Http(hyper::Error),
}

/// One upstream's idle connections for one worker.
pub struct Pool {
    // Boxed: each connection moves between the pool and its requests without being copied.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<Idle>>>,
    host: Box<str>,
    port: u16,
    host_header: HeaderValue,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    keepalive: Duration,
}

/// One [`Pool`] per worker, as [`super::Pools`] keeps the pooled clients.
pub struct Driven {
    pools: Box<[Arc<Pool>]>,
}

impl Driven {
    /// `n` (at least one) pools for the `http://` upstream at `authority`.
    pub fn new(authority: &Authority, t: &UpstreamConfig, n: usize) -> Self {
        let port = authority.port_u16().unwrap_or(80);
        // As hyper's pooled client sets it: the URL's host, with the port unless it is 80.
        let host_header = if port == 80 {
            HeaderValue::from_str(authority.host())
        } else {
            HeaderValue::from_str(authority.as_str())
        }
        .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let pools = (0..n.max(1))
            .map(|_| {
                Arc::new(Pool {
                    idle: Mutex::new(Vec::new()),
                    host: host.into(),
                    port,
                    host_header: host_header.clone(),
                    max_idle: t.pool_max_idle_per_host,
                    idle_timeout: t.pool_idle_timeout,
                    connect_timeout: t.connect_timeout,
                    keepalive: Duration::from_secs(60),
                })
            })
            .collect();
        Self { pools }
    }

    /// The calling thread's pool (worker index modulo the pools, so any thread gets one).
    pub fn get(&self) -> &Arc<Pool> {
        let i = super::worker::worker().unwrap_or(0) % self.pools.len();
        &self.pools[i]
    }
}

impl Pool {
    /// Send `req` (its URI absolute or origin-form; `Host` set here) on an idle connection, or
    /// on a new one when none is idle or the idle one closed before taking the request.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<DrivenBody>, SendError> {
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
        req.headers_mut().insert(HOST, self.host_header.clone());
        if let Some(idle) = self.checkout().await {
            match exchange(self, idle, req).await {
                Ok(resp) => return Ok(resp),
                // Closed before it took the request (an upstream's idle close racing ours): the
                // request was not sent, so it goes on a new connection.
                Err((_, Some(back))) => req = back,
                Err((e, None)) => return Err(SendError::Http(e)),
            }
        }
        let idle = self.connect().await?;
        exchange(self, idle, req)
            .await
            .map_err(|(e, _)| SendError::Http(e))
    }

    /// The most recently idle connection that is still open and ready, dropping stale ones.
    async fn checkout(&self) -> Option<Box<Idle>> {
        loop {
            let popped = {
                let mut idle = self.idle.lock().ok()?;
                // Pushed as they went idle, so the stale ones are a prefix.
                let now = Instant::now();
                let stale = idle
                    .iter()
                    .take_while(|i| now.duration_since(i.since) >= self.idle_timeout)
                    .count();
                idle.drain(..stale);
                idle.pop()
            };
            let mut idle = popped?;
            // One poll: a connection whose last response was read to its end is ready at once;
            // one the upstream closed resolves. Anything else is not worth waiting for.
            let usable = poll_fn(|cx| {
                let Some(conn) = idle.conn.as_mut() else {
                    return Poll::Ready(false);
                };
                if Pin::new(conn).poll(cx).is_ready() {
                    return Poll::Ready(false);
                }
                Poll::Ready(matches!(idle.sender.poll_ready(cx), Poll::Ready(Ok(()))))
            })
            .await;
            if usable {
                return Some(idle);
            }
        }
    }

    /// A new connection, within the connect timeout.
    async fn connect(&self) -> Result<Box<Idle>, SendError> {
        let stream = tokio::time::timeout(self.connect_timeout, self.tcp())
            .await
            .map_err(|_| SendError::ConnectTimeout)??;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Http)?;
        Ok(Box::new(Idle {
            sender,
            conn: Some(conn),
            since: Instant::now(),
        }))
    }

    async fn tcp(&self) -> Result<TcpStream, SendError> {
        let mut last = None;
        let addrs = tokio::net::lookup_host((&*self.host, self.port))
            .await
            .map_err(SendError::Connect)?;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    s.set_nodelay(true).map_err(SendError::Connect)?;
                    let ka = socket2::TcpKeepalive::new().with_time(self.keepalive);
                    // Keepalive probes only find dead peers sooner: not worth failing over.
                    let _ = socket2::SockRef::from(&s).set_tcp_keepalive(&ka);
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(SendError::Connect(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address")
        })))
    }

    /// Keep `idle` for the next request, unless the pool is full.
    fn put(&self, mut idle: Box<Idle>) {
        idle.since = Instant::now();
        if let Ok(mut pool) = self.idle.lock() {
            if pool.len() < self.max_idle {
                pool.push(idle);
            }
        }
    }
}

/// Send `req` on `idle`, driving the connection until the response head; on failure the
/// request comes back when it was not sent.
async fn exchange(
    pool: &Arc<Pool>,
    mut idle: Box<Idle>,
    req: Request<Full<Bytes>>,
) -> Result<Response<DrivenBody>, (hyper::Error, Option<Request<Full<Bytes>>>)> {
    let head = {
        let Idle { sender, conn, .. } = &mut *idle;
        let mut sent = std::pin::pin!(sender.try_send_request(req));
        poll_fn(|cx| {
            if let Poll::Ready(r) = sent.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            let Some(c) = conn.as_mut() else {
                return Poll::Pending; // never: `sent` resolved when it was dropped
            };
            if Pin::new(c).poll(cx).is_ready() {
                // The connection ended (an upstream's close of an idle connection can end it
                // cleanly before it took the request, which then stays queued inside it).
                // Dropping it hands a request it never took back, and answers one it did.
                *conn = None;
                return sent.as_mut().poll(cx);
            }
            Poll::Pending
        })
        .await
    };
    match head {
        Ok(resp) => {
            let (parts, inner) = resp.into_parts();
            let body = DrivenBody {
                inner,
                conn: idle.conn.is_some().then_some(idle),
                ended: false,
                pool: pool.clone(),
            };
            Ok(Response::from_parts(parts, body))
        }
        Err(mut e) => {
            let back = e.take_message();
            Err((e.into_error(), back))
        }
    }
}

/// A response body whose connection the reading task drives; the connection goes back to its
/// pool when the body is dropped having ended, and is closed when dropped before.
pub struct DrivenBody {
    inner: Incoming,
    conn: Option<Box<Idle>>,
    ended: bool,
    pool: Arc<Pool>,
}

impl DrivenBody {
    /// Note whether `polled` ended the body (hyper stops polling a body once it says it ended,
    /// so the end is seen here, not only as a final `None`).
    fn note(&mut self, polled: &Poll<Option<Result<Frame<Bytes>, hyper::Error>>>) {
        self.ended = match polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            Poll::Ready(Some(Err(_))) | Poll::Pending => false,
        };
    }
}

impl Body for DrivenBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        loop {
            let polled = Pin::new(&mut this.inner).poll_frame(cx);
            if polled.is_ready() {
                this.note(&polled);
                return polled;
            }
            // Nothing buffered: let the connection read and decode (this task, no hand-off).
            let Some(conn) = this.conn.as_mut().and_then(|i| i.conn.as_mut()) else {
                return Poll::Pending;
            };
            if Pin::new(conn).poll(cx).is_ready() {
                // The connection ended; the body now ends too (or fails) on the next poll.
                this.conn = None;
                continue;
            }
            let again = Pin::new(&mut this.inner).poll_frame(cx);
            this.note(&again);
            return again;
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for DrivenBody {
    fn drop(&mut self) {
        if !(self.ended || self.inner.is_end_stream()) {
            return; // dropping the connection closes it
        }
        if let Some(idle) = self.conn.take() {
            self.pool.put(idle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What the test upstream saw: connections accepted, request heads read.
    #[derive(Default)]
    struct Seen {
        accepted: AtomicUsize,
        heads: Mutex<Vec<String>>,
        closed_by_client: AtomicUsize,
    }

    /// How the test upstream answers each request.
    #[derive(Clone, Copy)]
    enum Answer {
        /// `200 ok` with a length, the connection kept.
        KeepAlive,
        /// `200 ok` with a length, then the connection closed 50 ms later.
        CloseAfter,
        /// A chunked answer's first chunk, then nothing until the client closes.
        Stall,
    }

    async fn read_head(s: &mut TcpStream) -> Option<String> {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            buf.push(byte[0]);
        }
        String::from_utf8(buf).ok()
    }

    /// A raw HTTP/1.1 upstream on a loopback port of its own.
    async fn upstream(answer: Answer) -> (Authority, Arc<Seen>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Seen::default());
        let s2 = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                s2.accepted.fetch_add(1, Ordering::SeqCst);
                let seen = s2.clone();
                tokio::spawn(async move {
                    while let Some(head) = read_head(&mut s).await {
                        seen.heads.lock().unwrap().push(head);
                        match answer {
                            Answer::KeepAlive | Answer::CloseAfter => {
                                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                                s.write_all(ok).await.unwrap();
                                if matches!(answer, Answer::CloseAfter) {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    return;
                                }
                            }
                            Answer::Stall => {
                                let first = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n";
                                s.write_all(first).await.unwrap();
                                let mut b = [0u8; 64];
                                while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
                                seen.closed_by_client.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                });
            }
        });
        (format!("127.0.0.1:{port}").parse().unwrap(), seen)
    }

    fn pool(authority: &Authority, t: UpstreamConfig) -> Arc<Pool> {
        Driven::new(authority, &t, 1).get().clone()
    }

    fn get(path: &str) -> Request<Full<Bytes>> {
        Request::get(format!("http://ignored.example{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    async fn read_all(resp: Response<DrivenBody>) -> Bytes {
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_gives_its_connection_to_the_next_request() {
        let (authority, seen) = upstream(Answer::KeepAlive).await;
        let p = pool(&authority, UpstreamConfig::default());
        for i in 0..3 {
            let resp = p.send(get(&format!("/v1/x?n={i}"))).await.unwrap();
            assert_eq!(read_all(resp).await, "ok");
        }
        assert_eq!(seen.accepted.load(Ordering::SeqCst), 1);
        // Origin-form target and the upstream's Host, as hyper's pooled client sends them.
        let heads = seen.heads.lock().unwrap();
        assert!(
            heads[2].starts_with("GET /v1/x?n=2 HTTP/1.1\r\n"),
            "{}",
            heads[2]
        );
        assert!(heads[2]
            .to_ascii_lowercase()
            .contains(&format!("host: {authority}\r\n")));
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_its_connection() {
        let (authority, seen) = upstream(Answer::Stall).await;
        let p = pool(&authority, UpstreamConfig::default());
        let mut body = p.send(get("/stream")).await.unwrap().into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "first");
        drop(body);
        // The upstream sees the close at once (a client gone stops the generation it pays for).
        for _ in 0..100 {
            if seen.closed_by_client.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(seen.closed_by_client.load(Ordering::SeqCst), 1);
        assert!(p.idle.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_replaced_without_an_error() {
        let (authority, seen) = upstream(Answer::CloseAfter).await;
        let p = pool(&authority, UpstreamConfig::default());
        assert_eq!(read_all(p.send(get("/a")).await.unwrap()).await, "ok");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(read_all(p.send(get("/b")).await.unwrap()).await, "ok");
        assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connections_idle_past_the_pool_timeout_are_not_reused() {
        let (authority, seen) = upstream(Answer::KeepAlive).await;
        let t = UpstreamConfig {
            pool_idle_timeout: Duration::from_millis(50),
            ..UpstreamConfig::default()
        };
        let p = pool(&authority, t);
        assert_eq!(read_all(p.send(get("/a")).await.unwrap()).await, "ok");
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(read_all(p.send(get("/b")).await.unwrap()).await, "ok");
        assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_pool_keeps_at_most_its_limit_of_idle_connections() {
        let (authority, seen) = upstream(Answer::KeepAlive).await;
        let t = UpstreamConfig {
            pool_max_idle_per_host: 1,
            ..UpstreamConfig::default()
        };
        let p = pool(&authority, t);
        // Two at once need two connections; only one is kept.
        let (a, b) = tokio::join!(p.send(get("/a")), p.send(get("/b")));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(read_all(a).await, "ok");
        assert_eq!(read_all(b).await, "ok");
        assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
        assert_eq!(p.idle.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_request_an_idle_connection_closed_before_taking_comes_back_unsent() {
        // An idle connection, taken (ready), then closed by the upstream before the request
        // reaches it: hyper ends such a connection cleanly with the request still queued.
        let (authority, _) = upstream(Answer::CloseAfter).await;
        let p = pool(&authority, UpstreamConfig::default());
        assert_eq!(read_all(p.send(get("/a")).await.unwrap()).await, "ok");
        let idle = p
            .checkout()
            .await
            .expect("the connection is idle and ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = tokio::time::timeout(Duration::from_secs(5), exchange(&p, idle, get("/b")));
        match sent.await.expect("the request must not hang") {
            Err((_, Some(back))) => assert_eq!(back.uri().path(), "/b"),
            Err((e, None)) => panic!("the request should come back unsent: {e}"),
            Ok(_) => panic!("a closed connection answered"),
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = l.local_addr().unwrap().to_string().parse().unwrap();
        drop(l);
        let p = pool(&authority, UpstreamConfig::default());
        match p.send(get("/")).await {
            Err(SendError::Connect(_)) => {}
            Err(e) => panic!("expected a connect error, got {e:?}"),
            Ok(_) => panic!("a closed port answered"),
        }
    }
}
