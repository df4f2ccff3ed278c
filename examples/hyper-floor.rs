//! The floor of tokenwarden's stack: a reverse proxy made of nothing but the pieces tokenwarden
//! forwards with (Tokio's `current_thread` runtime, hyper's HTTP/1 server and client connections,
//! mimalloc), reading nothing of the traffic. `bench/floor.sh` runs it in the peer kit's place of
//! tokenwarden, beside nginx, to show how much of tokenwarden's cost per request is the stack's
//! and how much is its own. Not a product: one upstream, no pool limits, no timeouts.
//!
//! Usage: `hyper-floor [--config IGNORED]` (any other first argument, such as the bench
//! harness's `check-config` or `--version`, prints the name and exits); env `FLOOR_LISTEN` (default 127.0.0.1:18090) and
//! `FLOOR_UPSTREAM` (default 127.0.0.1:18000).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the proxy answers with: the upstream's body, or its own error text.
type Body = Either<Returning, Full<Bytes>>;

/// An upstream HTTP/1 connection's future: the state machine that reads and writes it.
type Conn = hyper::client::conn::http1::Connection<TokioIo<TcpStream>, Incoming>;

/// An idle upstream connection: its request handle and, when the request's task drives it
/// (`FLOOR_DRIVE=request`), its connection future (else a spawned task polls that).
struct Idle {
    sender: SendRequest<Incoming>,
    conn: Option<Conn>,
}

/// Idle upstream connections (one thread uses it: the lock is never contended).
type Pool = Arc<Mutex<Vec<Idle>>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(arg) = std::env::args().nth(1) {
        if arg != "--config" {
            println!("hyper-floor (tokenwarden's stack, reading nothing)");
            return Ok(());
        }
    }
    let listen: SocketAddr = std::env::var("FLOOR_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:18090".into())
        .parse()?;
    let upstream: SocketAddr = std::env::var("FLOOR_UPSTREAM")
        .unwrap_or_else(|_| "127.0.0.1:18000".into())
        .parse()?;
    let driven = std::env::var("FLOOR_DRIVE").is_ok_and(|v| v == "request");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(listen, upstream, driven))
}

async fn serve(
    listen: SocketAddr,
    upstream: SocketAddr,
    driven: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(listen).await?;
    let pool: Pool = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| forward(req, upstream, pool.clone(), driven));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    req: Request<Incoming>,
    upstream: SocketAddr,
    pool: Pool,
    driven: bool,
) -> Result<Response<Body>, Infallible> {
    // A pooled connection is ready again once its previous response has been read; one that
    // closed meanwhile is dropped for a new one.
    let mut idle = None;
    loop {
        let popped = pool.lock().ok().and_then(|mut p| p.pop());
        let Some(mut i) = popped else { break };
        if ready(&mut i).await {
            idle = Some(i);
            break;
        }
    }
    let mut idle = match idle {
        Some(i) => i,
        None => match connect(upstream, driven).await {
            Ok(i) => i,
            Err(e) => return Ok(bad_gateway(e.to_string())),
        },
    };
    let sent = idle.sender.send_request(req);
    let resp = match idle.conn.as_mut() {
        None => sent.await,
        Some(conn) => {
            let mut sent = std::pin::pin!(sent);
            let mut conn_done = false;
            std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = sent.as_mut().poll(cx) {
                    return Poll::Ready(r);
                }
                if !conn_done && std::pin::Pin::new(&mut *conn).poll(cx).is_ready() {
                    conn_done = true;
                    return sent.as_mut().poll(cx);
                }
                Poll::Pending
            })
            .await
        }
    };
    match resp {
        Ok(resp) => {
            // The connection goes back when the response body is dropped having ended (hyper
            // stops polling a body at its stated length, so its end is not always seen).
            let (parts, body) = resp.into_parts();
            let body = Returning {
                inner: body,
                idle: Some(idle),
                ended: false,
                pool,
            };
            Ok(Response::from_parts(parts, Either::Left(body)))
        }
        Err(e) => Ok(bad_gateway(e.to_string())),
    }
}

/// Wait until a pooled connection takes a request; false when it closed meanwhile.
async fn ready(i: &mut Idle) -> bool {
    std::future::poll_fn(|cx| {
        if let Some(conn) = i.conn.as_mut() {
            if std::pin::Pin::new(conn).poll(cx).is_ready() {
                return Poll::Ready(false);
            }
        }
        i.sender.poll_ready(cx).map(|r| r.is_ok())
    })
    .await
}

async fn connect(upstream: SocketAddr, driven: bool) -> std::io::Result<Idle> {
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    if driven {
        return Ok(Idle {
            sender,
            conn: Some(conn),
        });
    }
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Idle { sender, conn: None })
}

fn bad_gateway(msg: String) -> Response<Body> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(msg))));
    *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
    r
}

/// The upstream body, driving its connection when the request's task does, and handing the
/// connection back to the pool when dropped having ended.
struct Returning {
    inner: Incoming,
    idle: Option<Idle>,
    ended: bool,
    pool: Pool,
}

impl hyper::body::Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        loop {
            let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
            if polled.is_ready() {
                this.ended = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
                    _ => false,
                };
                return polled;
            }
            // Nothing buffered: let the connection read (same task, no wake-up across tasks).
            let Some(conn) = this.idle.as_mut().and_then(|i| i.conn.as_mut()) else {
                return Poll::Pending;
            };
            if std::pin::Pin::new(conn).poll(cx).is_ready() {
                if let Some(i) = this.idle.as_mut() {
                    i.conn = None;
                }
                this.idle = None;
                continue;
            }
            let again = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
            if again.is_ready() {
                this.ended = match &again {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
                    _ => false,
                };
            }
            return again;
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        let Some(idle) = self.idle.take() else { return };
        // A body dropped before its end leaves the connection mid-response: close it.
        if self.ended || idle.conn.is_none() {
            if let Ok(mut p) = self.pool.lock() {
                p.push(idle);
            }
        }
    }
}
