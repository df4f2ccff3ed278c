//! The listener, routing and the [`MockServer`] handle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::body::MockBody;
use super::frames::gzip_frames;
use super::gemini::{self, GeminiCall};
use super::reply::{error, ErrorKind, Flavor, Reply};
use super::script::Dialect;
use super::stats::{Counters, Recorder, RequestGuard};
use super::{anthropic, openai};
use super::{Fault, Knobs, MockOptions, MockStats, RecordedRequest, MAX_REQUEST_BODY};

/// How long [`MockServer::shutdown`] lets open connections finish before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// State shared by the accept loop and every request.
#[derive(Debug)]
struct Shared {
    opts: MockOptions,
    counters: Arc<Counters>,
    recorder: Recorder,
    shutdown: watch::Receiver<bool>,
}

/// A running mock provider. Dropping the handle also stops it (like [`MockServer::shutdown`],
/// without waiting).
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl MockServer {
    /// Binds `addr` (use `127.0.0.1:0` in tests) and serves HTTP/1.1 and cleartext HTTP/2
    /// in a background task.
    pub async fn start(addr: SocketAddr, opts: MockOptions) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind(addr).await?;
        Self::from_listener(listener, opts)
    }

    /// Serves on an already bound listener.
    pub fn from_listener(listener: TcpListener, opts: MockOptions) -> std::io::Result<MockServer> {
        let addr = listener.local_addr()?;
        let (tx, rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            recorder: Recorder::new(opts.record_requests, opts.max_recorded),
            opts,
            counters: Arc::new(Counters::default()),
            shutdown: rx,
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(MockServer {
            addr,
            shared,
            shutdown: tx,
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, handy as an upstream base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The defaults this server was started with.
    pub fn options(&self) -> &MockOptions {
        &self.shared.opts
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MockStats {
        self.shared.counters.snapshot()
    }

    /// The most recent request (not counting `/_mock/*`).
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.recorder.last()
    }

    /// Every recorded request, oldest first (bounded by [`MockOptions::max_recorded`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.recorder.all()
    }

    /// Forgets recorded requests and zeroes the counters (except `in_flight`).
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops accepting, lets open connections finish for a moment, then closes them.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

impl Shared {
    fn reset(&self) {
        self.recorder.clear();
        self.counters.reset();
    }
}

/// Waits until the server is told to stop (or its handle is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .half_close(false);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024);
    b
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let builder = Arc::new(builder());
    let mut shutdown = shared.shutdown.clone();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve_connection(stream, Arc::clone(&builder), Arc::clone(&shared)));
                }
                // Out of file descriptors and the like: back off a little.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, drain).await;
    conns.shutdown().await;
}

async fn serve_connection(
    stream: TcpStream,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shared: Arc<Shared>,
) {
    let _ = stream.set_nodelay(true);
    let mut shutdown = shared.shutdown.clone();
    let svc = service_fn(move |req| handle(req, Arc::clone(&shared)));
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Why a request got no response at all (the connection is then closed / the stream reset).
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error("reading the request body failed: {0}")]
    BodyRead(String),
    #[error("the mock server is shutting down")]
    ShuttingDown,
}

/// Where a request goes.
#[derive(Debug)]
enum Route<'a> {
    Chat,
    Responses,
    Embeddings,
    Messages,
    CountTokens,
    Gemini(GeminiCall<'a>),
    Models,
    NotFound,
}

impl Route<'_> {
    fn flavor(&self) -> Flavor {
        match self {
            Route::Messages | Route::CountTokens => Flavor::Anthropic,
            Route::Gemini(_) => Flavor::Gemini,
            _ => Flavor::OpenAi,
        }
    }

    /// How a script reads this route's conversation (routes without one are never scripted).
    fn dialect(&self) -> Option<Dialect> {
        match self {
            Route::Chat => Some(Dialect::Chat),
            Route::Responses => Some(Dialect::Responses),
            Route::Messages | Route::CountTokens => Some(Dialect::Anthropic),
            Route::Gemini(_) => Some(Dialect::Gemini),
            Route::Embeddings | Route::Models | Route::NotFound => None,
        }
    }
}

fn route<'a>(method: &Method, path: &'a str, query: Option<&str>) -> Route<'a> {
    if method == Method::POST {
        if path.ends_with("/chat/completions") {
            return Route::Chat;
        }
        if path.ends_with("/responses") {
            return Route::Responses;
        }
        if path.ends_with("/embeddings") {
            return Route::Embeddings;
        }
        if path.ends_with("/v1/messages") {
            return Route::Messages;
        }
        if path.ends_with("/v1/messages/count_tokens") {
            return Route::CountTokens;
        }
        if let Some(call) = gemini::parse_path(path, query) {
            return Route::Gemini(call);
        }
    } else if method == Method::GET && path.ends_with("/models") {
        return Route::Models;
    }
    Route::NotFound
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<MockBody>, ServeError> {
    if req.uri().path().starts_with("/_mock/") {
        return Ok(control(&req, &shared));
    }
    let guard = shared.counters.begin();
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            let reply = error(
                Flavor::OpenAi,
                ErrorKind::TooLarge,
                "Request body too large for tokenwarden-mock.",
            );
            return Ok(respond(reply, None, Some(guard)));
        }
        // Most likely the client went away; dropping the guard counts a cancellation.
        Err(e) => return Err(ServeError::BodyRead(e.to_string())),
    };
    shared.recorder.record(&parts, &body);

    let route = route(&parts.method, parts.uri.path(), parts.uri.query());
    let mut knobs = match Knobs::from_headers(&parts.headers, &shared.opts) {
        Ok(k) => k,
        Err(e) => {
            let reply = error(route.flavor(), ErrorKind::BadRequest, &e.to_string());
            return Ok(respond(reply, None, Some(guard)));
        }
    };
    if let Some(dialect) = route.dialect() {
        knobs.apply_script(dialect, &body);
    }
    if let Route::NotFound = route {
        let message = format!("Invalid URL ({} {})", parts.method, parts.uri.path());
        let reply = error(Flavor::OpenAi, ErrorKind::NotFound, &message);
        return Ok(respond(reply, None, Some(guard)));
    }

    if knobs.fault == Some(Fault::Hang) {
        // Never answer; the guard counts a cancellation when the client goes away.
        let mut shutdown = shared.shutdown.clone();
        stopped(&mut shutdown).await;
        return Err(ServeError::ShuttingDown);
    }
    if !knobs.first_byte_delay.is_zero() {
        tokio::time::sleep(knobs.first_byte_delay).await;
    }

    let reply = match &route {
        Route::Chat => openai::chat(&body, &knobs),
        Route::Responses => openai::responses(&body, &knobs),
        Route::Embeddings => openai::embeddings(&body, &knobs),
        Route::Models => openai::models(&knobs),
        Route::Messages => anthropic::messages(&body, &knobs),
        Route::CountTokens => anthropic::count_tokens(&knobs),
        Route::Gemini(call) => gemini::generate(call, &knobs),
        Route::NotFound => error(Flavor::OpenAi, ErrorKind::NotFound, "not found"),
    };
    Ok(respond(reply, Some(&knobs), Some(guard)))
}

/// Turns a reply into a response, applying the transport knobs (gzip, chunk delay and the
/// body faults) when `knobs` is given.
fn respond(reply: Reply, knobs: Option<&Knobs>, guard: Option<RequestGuard>) -> Response<MockBody> {
    let Reply {
        status,
        content_type,
        headers,
        extra_headers,
        mut frames,
        stream,
    } = reply;
    let mut gzipped = false;
    if knobs.is_some_and(|k| k.gzip) {
        // Compressing into a Vec cannot fail; if it somehow did, send the body uncompressed.
        if let Ok(z) = gzip_frames(&frames) {
            frames = z;
            gzipped = true;
        }
    }
    if let Some(k) = knobs.filter(|k| stream && k.events_per_write > 1) {
        frames = frames
            .chunks(k.events_per_write as usize)
            .map(|group| Bytes::from(group.concat()))
            .collect();
    }
    let mut body = MockBody::new(frames, !stream);
    if let Some(k) = knobs {
        if stream {
            body = body.with_delay(k.chunk_delay);
        }
        match k.fault {
            Some(Fault::OneByteWrites) => body = body.one_byte_writes(),
            Some(Fault::DropMidStream) => body = body.drop_mid_stream(),
            _ => {}
        }
    }
    if let Some(g) = guard {
        body = body.with_guard(g);
    }
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in headers.iter().chain(extra_headers) {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    if gzipped {
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    resp
}

/// `/_mock/*`: stats and recordings (not counted, not recorded).
fn control(req: &Request<Incoming>, shared: &Shared) -> Response<MockBody> {
    let json = match (req.method(), req.uri().path()) {
        (&Method::GET, "/_mock/stats") => serde_json::to_vec(&shared.counters.snapshot()).ok(),
        (&Method::GET, "/_mock/last_request") => {
            serde_json::to_vec(&shared.recorder.last().map(|r| r.to_json())).ok()
        }
        (&Method::GET, "/_mock/requests") => {
            let all: Vec<serde_json::Value> = shared
                .recorder
                .all()
                .iter()
                .map(RecordedRequest::to_json)
                .collect();
            serde_json::to_vec(&all).ok()
        }
        (&Method::POST, "/_mock/reset") => {
            shared.reset();
            Some(br#"{"reset":true}"#.to_vec())
        }
        _ => None,
    };
    let reply = match json {
        Some(body) => Reply::json(Flavor::OpenAi, StatusCode::OK, vec![Bytes::from(body)]),
        None => error(
            Flavor::OpenAi,
            ErrorKind::NotFound,
            "Unknown mock control endpoint (try GET /_mock/stats, GET /_mock/last_request, GET /_mock/requests, POST /_mock/reset).",
        ),
    };
    respond(reply, None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing() {
        let post = Method::POST;
        assert!(matches!(
            route(&post, "/v1/chat/completions", None),
            Route::Chat
        ));
        assert!(matches!(
            route(
                &post,
                "/openai/deployments/gpt4/chat/completions",
                Some("api-version=1")
            ),
            Route::Chat
        ));
        assert!(matches!(
            route(&post, "/v1/responses", None),
            Route::Responses
        ));
        assert!(matches!(
            route(&post, "/v1/embeddings", None),
            Route::Embeddings
        ));
        assert!(matches!(
            route(&post, "/v1/messages", None),
            Route::Messages
        ));
        assert!(matches!(
            route(
                &post,
                "/v1beta/models/gemini-2.5-flash:generateContent",
                None
            ),
            Route::Gemini(_)
        ));
        assert!(matches!(
            route(&Method::GET, "/v1/models", None),
            Route::Models
        ));
        assert!(matches!(
            route(&Method::GET, "/v1/chat/completions", None),
            Route::NotFound
        ));
        assert!(matches!(route(&post, "/v1/nope", None), Route::NotFound));
        assert_eq!(
            route(&post, "/v1/messages", None).flavor(),
            Flavor::Anthropic
        );
    }
}
