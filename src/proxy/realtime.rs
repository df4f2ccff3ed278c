//! WebSocket upgrades, and the sessions of formats that speak over them (the OpenAI Realtime
//! API).
//!
//! The upgrade request goes upstream over an HTTP/1.1 connection (the route's
//! `upgrade_client`) with its `Upgrade`, `Connection` and `Sec-WebSocket-*` headers (less
//! `Sec-WebSocket-Extensions`: compressed frames could not be read); the upstream's 101 goes back
//! to the client, and both connections are then taken over by hyper's upgrade. On a path whose
//! format has [`RealtimeEvents`] the two are relayed message by message (tokio-tungstenite),
//! each forwarded as it comes with its payload unchanged while a copy is read:
//!
//! - a client's request for a response is admitted by the budgets first; refused, it is not
//!   forwarded and the client gets the format's `error` event instead (the input it is
//!   admitted with is the session's last response's input and output: the conversation stays
//!   on the server, and the next response reads at least that);
//! - each response is one [`Call`] (one span, the GenAI metrics, budgets settled from the
//!   `response.done` event's usage);
//! - at shutdown every session is ended the same way ([`Upgrades::end`]): responses in progress
//!   cancelled and their usage awaited, close frames (1001) both ways;
//! - past a `cut` limit's allowance (text and transcript deltas counted with the tokenizer) the
//!   client gets an `error` event and a close frame; the response is cancelled upstream and its
//!   `response.done` (the usage of what was generated) awaited briefly, then the upstream gets a
//!   close frame too. A client that goes away mid-response is handled the same way.
//!
//! Other upgrades are tunnelled byte for byte, unread.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{CONNECTION, HOST, SEC_WEBSOCKET_EXTENSIONS, UPGRADE};
use http::{HeaderMap, HeaderValue, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::body::cut::{CutPoint, CutSignal};
use crate::body::{BodyEnd, Observer};
use crate::budget::CallFacts;
use crate::providers::request::RequestFacts;
use crate::providers::{ClientEvent, Format, RealtimeEvents, ServerEvent};
use crate::record::{BudgetDecision, Operation};
use crate::telemetry::trace_context::TRACEPARENT_HEADER;

use super::accounting::LlmCall;
use super::answer::{full, ProxyBody};
use super::call::{Call, CallInfo};
use super::error::ProxyError;
use super::headers;
use super::route::Route;

/// Largest WebSocket message (and frame) either side may send through a read session: what
/// one message may make the proxy hold. Realtime events carry at most a few MiB of base64 audio.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Responses a session may have open at once (admitted and not yet done); past it a request
/// for one more is refused. The Realtime API runs one per conversation, plus out-of-band ones.
const MAX_OPEN_RESPONSES: usize = 16;

/// How long a cancelled response's final event (its usage) is awaited before the upstream is
/// closed anyway.
const CANCEL_WAIT: Duration = Duration::from_secs(2);

/// How long a shutdown waits for the sessions it dropped past the grace to be gone (their
/// tasks are dropped when their runtime next runs).
const KILL_WAIT: Duration = Duration::from_secs(1);

/// The `error` code and close reason of a session ended at a `cut` limit.
const CUT_CODE: &str = "budget_exceeded";

/// The `error` code of a request for a response past [`MAX_OPEN_RESPONSES`].
const TOO_MANY_OPEN: &str = "too_many_open_responses";

/// The WebSocket sessions being relayed, so that a shutdown can end them cleanly.
pub(super) struct Upgrades {
    stop: tokio::sync::watch::Sender<bool>,
    /// Set past the grace: the sessions still open are dropped (each call finishes on drop),
    /// so that their spend is settled before the final budget snapshot.
    kill: tokio::sync::watch::Sender<bool>,
    /// Each relay holds a clone until it ends; ending drops this one and waits for the rest.
    live: std::sync::Mutex<Option<tokio::sync::mpsc::Sender<()>>>,
    gone: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<()>>,
}

// === impl Upgrades ===

impl Upgrades {
    /// No session yet.
    pub(super) fn new() -> Self {
        let (live, gone) = tokio::sync::mpsc::channel(1);
        Self {
            stop: tokio::sync::watch::Sender::new(false),
            kill: tokio::sync::watch::Sender::new(false),
            live: std::sync::Mutex::new(Some(live)),
            gone: tokio::sync::Mutex::new(gone),
        }
    }

    /// A new session's stop and kill signals and presence token (none once a shutdown began).
    fn join(
        &self,
    ) -> Option<(
        tokio::sync::watch::Receiver<bool>,
        tokio::sync::watch::Receiver<bool>,
        tokio::sync::mpsc::Sender<()>,
    )> {
        let live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()?;
        Some((self.stop.subscribe(), self.kill.subscribe(), live))
    }

    /// Shutdown: every session is ended (responses in progress cancelled and their usage
    /// awaited, close frames both ways); whether all ended within `within`.
    pub(super) async fn end(&self, within: Duration) -> bool {
        self.stop.send_replace(true);
        drop(
            self.live
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        // Each `per_core` worker asks at once: the wait for the lock is inside `within` too,
        // else the workers would wait one after another, each for its whole grace.
        let ended = async {
            let mut gone = self.gone.lock().await;
            // Nothing is ever sent: `recv` returns once every session dropped its token.
            gone.recv().await
        };
        if tokio::time::timeout(within, ended).await.is_ok() {
            return true;
        }
        // Past the grace: what is left is dropped now, on its own runtime, rather than when the
        // runtime stops (after the final snapshot, unsettled).
        self.kill.send_replace(true);
        let gone = async {
            let mut gone = self.gone.lock().await;
            gone.recv().await
        };
        let _ = tokio::time::timeout(KILL_WAIT, gone).await;
        false
    }
}

/// Whether `parts` asks to switch to the WebSocket protocol, on a connection hyper can hand
/// over (HTTP/1.1).
pub(super) fn is_upgrade(parts: &http::request::Parts) -> bool {
    let has = |name, token: &str| {
        parts.headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    parts.method == http::Method::GET
        && has(UPGRADE, "websocket")
        && has(CONNECTION, "upgrade")
        && parts.extensions.get::<OnUpgrade>().is_some()
}

/// What every response call of one session shares, read from the upgrade request.
pub(super) struct Session {
    pub(super) events: &'static dyn RealtimeEvents,
    pub(super) format: Format,
    pub(super) provider: &'static str,
    pub(super) route: Arc<Route>,
    pub(super) agent: Arc<str>,
    pub(super) path: String,
    pub(super) access_log: bool,
    pub(super) aborting: &'static std::sync::atomic::AtomicBool,
    pub(super) session: Option<Arc<str>>,
    pub(super) task: Option<Arc<str>>,
    /// The upgrade request's trace context: every response's span is its child.
    pub(super) trace: HeaderMap,
    pub(super) spans: Option<Arc<crate::telemetry::spans::Spans>>,
    pub(super) budgets: Option<Arc<crate::budget::Budgets>>,
    pub(super) labels: Arc<crate::telemetry::labels::Labels>,
    /// The model the upgrade request names.
    pub(super) model: Option<String>,
}

/// A session being relayed.
struct Ctx {
    s: Session,
    /// The session's model: the URL's, else the one the server names.
    model: std::sync::Mutex<Option<String>>,
    /// The model transcribing the input audio, as the session last named it: what a
    /// transcription is priced at (falling back to the session's model).
    transcription_model: std::sync::Mutex<Option<String>>,
    /// Input plus output tokens of the session's last response: the conversation the next
    /// response reads at least (it stays on the server; the request for a response is a few
    /// bytes), so what admission takes as its input.
    context: std::sync::atomic::AtomicU64,
}

// === impl Ctx ===

impl Ctx {
    fn new(mut s: Session) -> Self {
        Self {
            model: std::sync::Mutex::new(s.model.take()),
            transcription_model: std::sync::Mutex::new(None),
            s,
            context: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// One response of a session, from its admission to its `response.done`.
struct Live {
    call: Call,
    /// Its input tokens as estimated at admission (the session's context, or the request's
    /// text when more): what it is charged if it ends without its final event.
    input: u64,
    /// Output tokens counted so far, against the `cut` allowance.
    tokens: u64,
    cut: Option<Arc<CutSignal>>,
    /// The client's id of the `response.create` that asked for it: an upstream `error` event
    /// naming it refused it.
    event_id: Option<String>,
    /// The response's id, from its `response.created`: its output and end name it (responses
    /// out of the conversation run beside the conversation's).
    id: Option<String>,
}

/// The open responses of a session: admitted and waiting for `response.created`, then started.
#[derive(Default)]
struct Open {
    asked: VecDeque<Live>,
    started: VecDeque<Live>,
}

// === impl Open ===

impl Open {
    /// Where the started response named `id` is: the one with that id, else (no id, or one
    /// never seen) the oldest.
    fn find(&self, id: Option<&str>) -> Option<usize> {
        let named = id.and_then(|id| {
            self.started
                .iter()
                .position(|l| l.id.as_deref() == Some(id))
        });
        named.or((!self.started.is_empty()).then_some(0))
    }

    /// The started response named `id` (as [`Open::find`]), taken out.
    fn take(&mut self, id: Option<&str>) -> Option<Live> {
        let at = self.find(id)?;
        self.started.remove(at)
    }
}

type Sink<T> = futures_util::stream::SplitSink<WebSocketStream<TokioIo<Upgraded>>, T>;
type ClientSink = tokio::sync::Mutex<Sink<Message>>;

/// Hand the client the upstream's 101 and relay the session (read when `session` is given)
/// once both connections are taken over; `call` (the upgrade request) finishes when it ends.
pub(super) fn switch(
    mut call: Call,
    session: Option<Session>,
    client_upgrade: OnUpgrade,
    mut resp: Response<Incoming>,
    upgrades: &Upgrades,
) -> Response<ProxyBody> {
    let (stop, mut kill, token) = match upgrades.join() {
        Some((stop, kill, token)) => (stop, Some(kill), Some(token)),
        // Already shutting down: relayed, and ended with the process.
        None => (
            tokio::sync::watch::Sender::new(false).subscribe(),
            None,
            None,
        ),
    };
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    call.upstream_headers = Some(Instant::now());
    call.upstream_status(resp.status());
    let (mut rparts, _) = resp.into_parts();
    headers::strip_hop_by_hop(&mut rparts.headers);
    rparts
        .headers
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    rparts
        .headers
        .insert(UPGRADE, HeaderValue::from_static("websocket"));
    rparts.version = Version::HTTP_11;
    call.returned = Some(Instant::now());
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                call.on_end(BodyEnd::ClientGone);
                return;
            }
        };
        let session = async {
            match session {
                Some(session) => relay(Arc::new(Ctx::new(session)), client, upstream, stop).await,
                None => tunnel(client, upstream, stop).await,
            }
        };
        let killed = async {
            // No kill signal (or its sender gone): never killed.
            let killed = match kill.as_mut() {
                Some(k) => k.wait_for(|k| *k).await.is_ok(),
                None => false,
            };
            if !killed {
                std::future::pending::<()>().await;
            }
        };
        let end = tokio::select! {
            end = session => Some(end),
            () = killed => None,
        };
        match end {
            Some(end) => call.on_end(end),
            // Killed: the relay (and its responses' calls) was dropped at the end of the
            // select, then the session's call; all settled before the token tells the
            // shutdown they are gone.
            None => drop(call),
        }
        drop(token);
    });
    Response::from_parts(rparts, full(Full::new(Bytes::new())))
}

/// The upgrade request's headers as they go upstream: hop-by-hop headers out but the upgrade
/// itself, no `Host` (the client sets it), no `Sec-WebSocket-Extensions` (compressed frames
/// could not be read).
pub(super) fn upstream_headers(h: &mut HeaderMap) {
    let upgrade = h.get(UPGRADE).cloned();
    headers::strip_hop_by_hop(h);
    h.remove(HOST);
    // The upgrade goes without a body: framing the client gave one would have the upstream wait
    // for bytes that never come.
    h.remove(http::header::CONTENT_LENGTH);
    h.remove(http::header::TRANSFER_ENCODING);
    h.remove(SEC_WEBSOCKET_EXTENSIONS);
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(u) = upgrade {
        h.insert(UPGRADE, u);
    }
}

/// The trace context of the upgrade request, kept for the session's response spans.
pub(super) fn trace_headers(h: &HeaderMap) -> HeaderMap {
    let mut trace = HeaderMap::new();
    for name in [
        TRACEPARENT_HEADER,
        http::HeaderName::from_static("tracestate"),
    ] {
        if let Some(v) = h.get(&name) {
            let v = v.clone();
            trace.insert(name, v);
        }
    }
    trace
}

/// An upgraded connection nobody reads: bytes copied both ways until either side ends.
async fn tunnel(
    client: Upgraded,
    upstream: Upgraded,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> BodyEnd {
    let mut c = TokioIo::new(client);
    let mut u = TokioIo::new(upstream);
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut c, &mut u) => match copied {
            Ok(_) => BodyEnd::Complete,
            Err(_) => BodyEnd::ClientGone,
        },
        // Unread bytes cannot be ended cleanly: the connections are dropped.
        _ = stop.wait_for(|s| *s) => BodyEnd::Complete,
    }
}

/// Relay a read session until either side ends it; how the session ended.
async fn relay(
    ctx: Arc<Ctx>,
    client: Upgraded,
    upstream: Upgraded,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> BodyEnd {
    let cfg = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let client =
        WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, Some(cfg)).await;
    let upstream =
        WebSocketStream::from_raw_socket(TokioIo::new(upstream), Role::Client, Some(cfg)).await;
    let (c_tx, mut c_rx) = client.split();
    let (u_tx, mut u_rx) = upstream.split();
    let c_tx: ClientSink = tokio::sync::Mutex::new(c_tx);
    let u_tx = tokio::sync::Mutex::new(u_tx);
    let open = std::sync::Mutex::new(Open::default());

    // Client → upstream: requests for a response are admitted first.
    let from_client = async {
        while let Some(msg) = c_rx.next().await {
            let msg = match msg {
                Ok(msg) => msg,
                // Past `MAX_MESSAGE_BYTES`: refused with the code RFC 6455 gives it.
                Err(tokio_tungstenite::tungstenite::Error::Capacity(_)) => return Ended::TooBig,
                Err(_) => return Ended::ClientGone,
            };
            let closing = matches!(msg, Message::Close(_));
            if let Message::Text(t) = &msg {
                if let ClientEvent::Respond {
                    event_id,
                    max_output,
                } = ctx.s.events.client(t.as_bytes())
                {
                    let refusal = admit(&ctx, &open, t.as_bytes(), &event_id, max_output).await;
                    if let Some(text) = refusal {
                        let _ = c_tx.lock().await.send(Message::text(text)).await;
                        continue;
                    }
                }
            }
            if u_tx.lock().await.send(msg).await.is_err() {
                return Ended::UpstreamGone;
            }
            if closing {
                // The upstream's close answer comes back through the other half.
                return Ended::Closing;
            }
        }
        Ended::ClientGone
    };

    // Upstream → client: forwarded as it comes; each response's events read from a copy.
    let from_upstream = async {
        while let Some(msg) = u_rx.next().await {
            let msg = match msg {
                Ok(msg) => msg,
                Err(tokio_tungstenite::tungstenite::Error::Capacity(_)) => {
                    return Ended::UpstreamTooBig
                }
                Err(_) => return Ended::UpstreamGone,
            };
            let mut refused = None;
            if let Message::Text(t) = &msg {
                match observe(&ctx, &open, t.as_bytes()) {
                    Next::Go => {}
                    Next::Cut => return Ended::Cut(None),
                    Next::Unasked(id) => refused = admit_unasked(&ctx, &open, id).await,
                }
            }
            if c_tx.lock().await.send(msg).await.is_err() {
                return Ended::ClientGone;
            }
            if refused.is_some() {
                // Past a limit the server's turn detection would only start more: the session
                // ends as at a `cut`, with the refusal.
                return Ended::Cut(refused);
            }
        }
        Ended::UpstreamGone
    };

    let ended = tokio::select! {
        e = from_client => e,
        e = from_upstream => e,
        _ = stop.wait_for(|s| *s) => Ended::Shutdown,
    };
    let mut c_tx = c_tx.into_inner();
    if let Ended::Closing = ended {
        // A clean close from the client: the upstream's last events and close answer still
        // come back (bounded).
        let _ = tokio::time::timeout(CANCEL_WAIT, async {
            while let Some(Ok(msg)) = u_rx.next().await {
                if let Message::Text(t) = &msg {
                    observe(&ctx, &open, t.as_bytes());
                }
                if c_tx.send(msg).await.is_err() {
                    break;
                }
            }
        })
        .await;
    }
    let mut u_tx = u_tx.into_inner();
    // How a response still open when the session ends is recorded.
    let unfinished = match ended {
        Ended::Closing | Ended::ClientGone | Ended::TooBig => BodyEnd::ClientGone,
        Ended::UpstreamGone | Ended::UpstreamTooBig => BodyEnd::UpstreamError,
        Ended::Cut(_) | Ended::Shutdown => BodyEnd::Complete,
    };
    let end = match ended {
        Ended::Closing => BodyEnd::Complete,
        Ended::UpstreamGone => {
            let _ = c_tx.close().await;
            BodyEnd::Complete
        }
        Ended::UpstreamTooBig => {
            // Each side gets the code that is true for it (RFC 6455 7.4.1): the upstream sent
            // too big a message (1009), the client's server failed it (1011).
            let _ = u_tx
                .send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Size,
                    reason: "message too big".into(),
                })))
                .await;
            let _ = c_tx
                .send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Error,
                    reason: "upstream message too big".into(),
                })))
                .await;
            BodyEnd::UpstreamError
        }
        Ended::ClientGone | Ended::TooBig | Ended::Cut(_) | Ended::Shutdown => {
            let cut = matches!(ended, Ended::Cut(_));
            let too_big = matches!(ended, Ended::TooBig);
            let closing = cut || too_big || matches!(ended, Ended::Shutdown);
            if too_big {
                let _ = c_tx
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Size,
                        reason: "message too big".into(),
                    })))
                    .await;
            }
            if matches!(ended, Ended::Shutdown) {
                let _ = c_tx
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Away,
                        reason: "shutting down".into(),
                    })))
                    .await;
            }
            if let Ended::Cut(refusal) = ended {
                // The client is told why, and the session closed cleanly.
                let e = refusal.unwrap_or_else(|| {
                    ctx.s.events.refusal(
                        &crate::providers::adapter::ErrorText {
                            status: 429,
                            message: "the session reached a budget limit (action: cut)",
                            code: CUT_CODE,
                            openai_type: "budget_exceeded",
                            anthropic_type: "rate_limit_error",
                            google_status: "RESOURCE_EXHAUSTED",
                        },
                        None,
                    )
                });
                let _ = c_tx.send(Message::text(e)).await;
                let _ = c_tx
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Policy,
                        reason: CUT_CODE.into(),
                    })))
                    .await;
            }
            let end = if closing && !too_big {
                BodyEnd::Complete
            } else {
                BodyEnd::ClientGone
            };
            cancel_open(&ctx, &open, &mut u_tx, &mut u_rx, end).await;
            let _ = u_tx
                .send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Away,
                    reason: "".into(),
                })))
                .await;
            let _ = u_tx.close().await;
            if closing {
                // Drain the client's close answer (bounded), then the connection ends.
                let _ = tokio::time::timeout(CANCEL_WAIT, async {
                    while let Some(Ok(_)) = c_rx.next().await {}
                })
                .await;
            }
            end
        }
    };
    // Responses still open (no `response.done` came): finished with what they got. One that
    // had started was billed upstream for its input and what it generated: charged its
    // estimated input and the output counted as it passed; one asked for and not started yet,
    // its input, as a request that reached the upstream and got no answer.
    let left = std::mem::take(&mut *lock(&open));
    for mut live in left.asked.into_iter().chain(left.started) {
        if let Some(llm) = live.call.llm_mut() {
            llm.set_cut_short(live.input, live.tokens);
        }
        live.call.on_end(unfinished);
    }
    end
}

/// How one half of a relay ended.
enum Ended {
    /// The client sent a close frame (forwarded).
    Closing,
    /// The client's connection broke or ended without a close frame.
    ClientGone,
    /// The client sent a message larger than [`MAX_MESSAGE_BYTES`] (closed with 1009).
    TooBig,
    /// The upstream's connection ended (after a close frame or not).
    UpstreamGone,
    /// The upstream sent a message larger than [`MAX_MESSAGE_BYTES`].
    UpstreamTooBig,
    /// A response went past its `cut` allowance, or the budgets refused one the server
    /// started itself (the refusal's `error` event, then).
    Cut(Option<String>),
    /// The proxy is shutting down.
    Shutdown,
}

/// What reading one server event decided.
enum Next {
    Go,
    /// The response in progress went past its allowance: the session is to be cut.
    Cut,
    /// The server started a response nobody asked for (turn detection): it is to be admitted;
    /// its id.
    Unasked(Option<String>),
}

fn lock(open: &std::sync::Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    // A panic while the lock was held cannot leave `Open` half-changed (every change is one
    // push or pop): the poisoned state is usable.
    open.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A client's request for a response: a call started and admitted by the budgets (its
/// reservation held until its `response.done`); the `error` event that refuses it, if one does.
async fn admit(
    ctx: &Ctx,
    open: &std::sync::Mutex<Open>,
    event: &[u8],
    event_id: &Option<String>,
    max_output: Option<u64>,
) -> Option<String> {
    let open_now = {
        let o = lock(open);
        o.asked.len() + o.started.len()
    };
    if open_now >= MAX_OPEN_RESPONSES {
        // Not the budgets' refusal, nor the proxy's load: the session's own bound, said so.
        response_call(ctx, max_output, None).finish_local(StatusCode::TOO_MANY_REQUESTS, 0);
        let e = crate::providers::adapter::ErrorText {
            status: 429,
            message: "tokenwarden: the session already has 16 responses in progress; wait for one to finish",
            code: TOO_MANY_OPEN,
            openai_type: "invalid_request_error",
            anthropic_type: "rate_limit_error",
            google_status: "RESOURCE_EXHAUSTED",
        };
        return Some(ctx.s.events.refusal(&e, event_id.as_deref()));
    }
    match admission(ctx, event, max_output).await {
        Ok(mut live) => {
            live.event_id.clone_from(event_id);
            lock(open).asked.push_back(live);
            None
        }
        Err((e, call)) => {
            call.finish_local(e.status(), 0);
            Some(e.with_text(|e| ctx.s.events.refusal(e, event_id.as_deref())))
        }
    }
}

/// A response the server started itself (its turn detection): admitted by the budgets like a
/// client's request, with nothing but the session's context as its input, and started; the
/// refusal's `error` event when the budgets refuse it (the response is then still accounted,
/// for the session is cut).
async fn admit_unasked(
    ctx: &Ctx,
    open: &std::sync::Mutex<Open>,
    id: Option<String>,
) -> Option<String> {
    let (mut live, refused) = match admission(ctx, b"", None).await {
        Ok(live) => (live, None),
        Err((e, mut call)) => {
            let text = e.with_text(|e| ctx.s.events.refusal(e, None));
            // Refused, yet already running upstream: what it spends until the cancel (its whole
            // input, its output so far) is charged like any response's.
            charge_unreserved(ctx, &mut call);
            let live = Live {
                call,
                input: ctx.context.load(std::sync::atomic::Ordering::Relaxed),
                tokens: 0,
                cut: None,
                event_id: None,
                id: None,
            };
            (live, Some(text))
        }
    };
    live.id = id;
    start(open, live);
    refused
}

/// A response's call, admitted by the budgets (its reservation held until its
/// `response.done`), or the error that refuses it with the call (its decision set).
async fn admission(
    ctx: &Ctx,
    event: &[u8],
    max_output: Option<u64>,
) -> Result<Live, (ProxyError, Call)> {
    let mut call = response_call(ctx, max_output, None);
    let mut cut = None;
    let context = ctx.context.load(std::sync::atomic::Ordering::Relaxed);
    // A request for a response is a few bytes (its instructions at most): tokenized once here,
    // for the charge of a response that ends without its final event.
    let input = crate::budget::estimate_input(ctx.s.format, event).max(context);
    if let Some(budgets) = &ctx.s.budgets {
        let facts = call_facts(ctx, &mut call, event, max_output);
        match budgets.admit(facts, &|| input).await {
            Ok(adm) => {
                cut = adm.cut_after_output.map(CutSignal::new);
                call.set_budget(adm);
            }
            Err(e) => {
                call.set_budget_decision(BudgetDecision::Rejected);
                return Err((ProxyError::from(e), call));
            }
        }
    }
    if let Some(signal) = &cut {
        call.set_cut(signal.clone());
    }
    Ok(Live {
        call,
        input,
        tokens: 0,
        cut,
        event_id: None,
        id: None,
    })
}

/// What the budgets know of a response's call: the session's scopes, its model, and the
/// request's input bound (at least the session's context).
fn call_facts(ctx: &Ctx, call: &mut Call, event: &[u8], max_output: Option<u64>) -> CallFacts {
    let context = ctx.context.load(std::sync::atomic::Ordering::Relaxed);
    CallFacts {
        session: ctx.s.session.clone(),
        task: ctx.s.task.clone(),
        agent: ctx.s.agent.clone(),
        model: call.llm_mut().and_then(|l| l.facts().model.clone()),
        input_bound: crate::budget::input_bound(event).max(context),
        max_output,
        choices: 1,
    }
}

/// Charge `call` to the budgets whatever their limits say, when budgets apply: spend the
/// provider incurs without asking (a transcription, a response the server started itself).
fn charge_unreserved(ctx: &Ctx, call: &mut Call) {
    if let Some(budgets) = &ctx.s.budgets {
        let decision = call.budget_decision();
        let facts = call_facts(ctx, call, b"", None);
        call.set_budget(budgets.unreserved(facts));
        if let Some(d) = decision {
            // A refusal stays the call's decision: only its spend is charged.
            call.set_budget_decision(d);
        }
    }
}

/// A response started: the next to read output for (bounded: past the bound its call is
/// dropped, and so finished).
fn start(open: &std::sync::Mutex<Open>, live: Live) {
    let mut o = lock(open);
    if o.started.len() < MAX_OPEN_RESPONSES {
        o.started.push_back(live);
    }
}

/// One response's call, as the upgrade request and the session describe it; `model` names
/// another model than the session's (a transcription's).
fn response_call(ctx: &Ctx, max_output: Option<u64>, model: Option<String>) -> Call {
    let now = Instant::now();
    let mut call = Call::new(
        CallInfo {
            route: ctx.s.route.name.clone(),
            provider: ctx.s.provider,
            operation: Operation::Chat,
            agent: ctx.s.agent.clone(),
            method: http::Method::GET,
            path: ctx.s.path.clone(),
            access_log: ctx.s.access_log,
            aborting: ctx.s.aborting,
        },
        now,
    );
    if let Some(spans) = &ctx.s.spans {
        call.set_span(spans.start(
            &ctx.s.trace,
            ctx.s.route.host.clone(),
            ctx.s.route.port(),
            now,
        ));
    }
    if let Some(s) = &ctx.s.session {
        call.set_session(s.clone(), None);
    }
    let model = model.or_else(|| {
        ctx.model
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    });
    let facts = RequestFacts {
        format: ctx.s.format,
        model,
        stream: false,
        include_usage: false,
        stream_options: false,
        max_tokens: max_output,
        choices: 1,
        tools: Vec::new(),
        user: None,
    };
    call.set_llm(LlmCall::new(facts, ctx.s.labels.clone()));
    call.upstream_sent = Some(now);
    call
}

/// Read a copy of one server event: sessions name the model, `response.created` starts the
/// next admitted response (or one the server started itself), output counts against the cut
/// allowance, `response.done` finishes the oldest open response with its record.
fn observe(ctx: &Ctx, open: &std::sync::Mutex<Open>, text: &[u8]) -> Next {
    match ctx.s.events.server(text) {
        ServerEvent::Session {
            model,
            transcription_model,
        } => {
            if let Some(m) = model {
                let mut model = ctx
                    .model
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if model.is_none() {
                    *model = Some(m);
                }
            }
            // A `session.update` may switch transcription on, off or to another model: the
            // latest the server confirms is what the next transcription is billed at.
            *ctx.transcription_model
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = transcription_model;
        }
        ServerEvent::Created { id } => {
            let asked = lock(open).asked.pop_front();
            match asked {
                Some(mut live) => {
                    live.id = id;
                    start(open, live);
                }
                // Started by the server's turn detection: admitted by the caller.
                None => return Next::Unasked(id),
            }
        }
        ServerEvent::Error {
            event_id,
            refuses_response,
        } => {
            // A request for a response the server refused (one already in progress, a bad
            // parameter): it will never start, so its reservation goes back now. Named by its
            // id; without one, a refusal for a response in progress is the newest request's
            // (every earlier one was answered before it was sent, or is in progress).
            let refused = {
                let mut o = lock(open);
                let at = match &event_id {
                    Some(id) => o
                        .asked
                        .iter()
                        .position(|l| l.event_id.as_deref() == Some(id.as_str())),
                    None if refuses_response => o
                        .asked
                        .back()
                        .filter(|l| l.event_id.is_none())
                        .map(|_| o.asked.len() - 1),
                    None => None,
                };
                at.and_then(|i| o.asked.remove(i))
            };
            if let Some(live) = refused {
                finish(live, text, StatusCode::BAD_REQUEST, BodyEnd::Complete);
            }
        }
        ServerEvent::Output { text, response_id } => {
            let mut o = lock(open);
            let at = o.find(response_id.as_deref());
            if let Some(live) = at.and_then(|i| o.started.get_mut(i)) {
                let now = Instant::now();
                if live.call.upstream_headers.is_none() {
                    live.call.upstream_headers = Some(now);
                    live.call.returned = Some(now);
                }
                live.tokens += crate::tokens::count(&text).max(1);
                if let Some(signal) = &live.cut {
                    if live.tokens > signal.after() {
                        signal.cut_at(CutPoint {
                            at: 0,
                            output_tokens: live.tokens,
                        });
                        return Next::Cut;
                    }
                }
            }
        }
        ServerEvent::Done { id } => {
            let mut r = crate::providers::ResponseRecord::default();
            if ctx.s.format.adapter().parse_json(text, &mut r) {
                let u = r.usage;
                let n = u.input.unwrap_or(0).saturating_add(u.output.unwrap_or(0));
                ctx.context.store(n, std::sync::atomic::Ordering::Relaxed);
            }
            let live = lock(open).take(id.as_deref());
            if let Some(live) = live {
                finish(live, text, StatusCode::OK, BodyEnd::Complete);
            }
        }
        ServerEvent::Transcribed => {
            // Billed on its own, never admitted (the audio was already sent): a call of its
            // own, charged what it states. It is no part of the conversation's context.
            let transcriber = ctx
                .transcription_model
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let mut call = response_call(ctx, None, transcriber);
            charge_unreserved(ctx, &mut call);
            let live = Live {
                call,
                input: 0,
                tokens: 0,
                cut: None,
                event_id: None,
                id: None,
            };
            finish(live, text, StatusCode::OK, BodyEnd::Complete);
        }
        ServerEvent::Other => {}
    }
    Next::Go
}

/// Finish a response's call with its last event (`response.done`, or the `error` that refused
/// it, with a client error's status: it costs nothing).
fn finish(live: Live, done: &[u8], status: StatusCode, end: BodyEnd) {
    let mut call = live.call;
    let now = Instant::now();
    call.upstream_headers.get_or_insert(now);
    call.returned.get_or_insert(now);
    let mut h = HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    call.on_response_headers(&h);
    call.upstream_status(status);
    call.on_data(&Bytes::copy_from_slice(done), now);
    call.on_end(end);
}

/// The session is ending with responses open (a cut, a client gone): each is cancelled
/// upstream and its final event (the usage of what was generated) awaited for a moment.
async fn cancel_open(
    ctx: &Ctx,
    open: &std::sync::Mutex<Open>,
    u_tx: &mut Sink<Message>,
    u_rx: &mut futures_util::stream::SplitStream<WebSocketStream<TokioIo<Upgraded>>>,
    end: BodyEnd,
) {
    if lock(open).started.is_empty() {
        return;
    }
    let cancel = Message::text(ctx.s.events.cancel());
    if u_tx.send(cancel).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CANCEL_WAIT, async {
        while let Some(Ok(msg)) = u_rx.next().await {
            if let Message::Text(t) = &msg {
                if let ServerEvent::Done { id } = ctx.s.events.server(t.as_bytes()) {
                    let live = lock(open).take(id.as_deref());
                    if let Some(live) = live {
                        finish(live, t.as_bytes(), StatusCode::OK, end);
                    }
                    if lock(open).started.is_empty() {
                        return;
                    }
                }
            }
        }
    })
    .await;
}
