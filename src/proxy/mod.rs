//! The request pipeline: `Proxy::handle` runs one short function per phase over one
//! `Flight` (the request's context), in the order a request meets them.
//!
//! 1. `route` — first route whose prefix matches; none → 404 in OpenAI shape (`unmatched`).
//! 2. `identify` — protocol, provider and operation (`providers::protocol::classify`), agent
//!    label, the [`Call`] (from here it finishes exactly once) and its span.
//! 3. `read` — the request body, up to `server.max_request_body_bytes` (else 413); what it says
//!    (`providers::request::inspect`); the session and the step the call would take; the task.
//! 4. `admit` — policies (may refuse or rewrite), the call's accounting (`account`), budgets
//!    (may refuse), then `commit`: the session step is taken and the policies' side effects apply.
//! 5. `forward` — same method, headers minus hop-by-hop, `Host` rewritten, our `traceparent`, the
//!    same bytes (or the rewritten ones); pooled client under the first-byte timeout; failures
//!    become provider-shaped 502/504.
//! 6. `respond` — status and headers (minus hop-by-hop) at once; the body wrapped in
//!    [`ObservedBody`] (each frame goes to the client as it arrives), in `Cut` when a `cut` limit
//!    applies and in `StripUsage` when usage was asked for on the client's behalf; held whole
//!    (`held`) when a blocking policy must check its tool calls first.
//!
//! Routes with `protocol: mcp` take their own path after phase 1 (`mcp.rs`): the MCP transport
//! forwarded untouched, its JSON-RPC messages governed and observed one by one.

pub mod accounting;
mod answer;
mod call;
pub mod error;
mod gate_log;
pub mod headers;
mod held;
mod links;
mod mcp;
mod realtime;
pub mod route;
mod tool_gate;

pub use answer::ProxyBody;
pub use call::{Call, CallInfo};
pub use error::ProxyError;
pub use mcp::McpState;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Version};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::approval::Approvals;
use crate::body::cut::{Cut, CutSignal};
use crate::body::{CallCheck, Gate, McpBody, ObservedBody, StripUsage};
use crate::budget::webhook::Webhook;
use crate::budget::{Budgets, BudgetsError, CallFacts};
use crate::config::Config;
use crate::http_client::{driven, UpstreamBody, UpstreamClient};
use crate::policy::{Policies, PolicySet};
use crate::providers::{StreamEnding, ToolGate};
use crate::session::{SessionSource, Sessions};
use crate::task::{TaskSource, Tasks};
use crate::telemetry::labels::Labels;
use crate::telemetry::spans::Spans;
use crate::telemetry::trace_context::TRACEPARENT_HEADER;

use crate::policy::{Pending, ResponseCheck};
use crate::providers::protocol::{self, Classified, ErrorShape, RouteProtocol};
use crate::providers::request::{self as inspect, RequestFacts};
use crate::record::{BudgetDecision, Operation, PolicyViolation};
use answer::{jsonrpc_answer, jsonrpc_error, local_error};
use mcp::{Admitted, Exchange};
use route::{Route, RouteError, Router};

/// Response header with the tokens left under the session's token limit.
pub const SESSION_TOKENS_REMAINING: HeaderName =
    HeaderName::from_static("x-tokenwarden-session-tokens-remaining");

/// The proxy service shared by every connection.
pub struct Proxy {
    router: Router,
    max_body: usize,
    /// Longest pause while a request body is read (`server.body_read_timeout`).
    body_idle: std::time::Duration,
    /// Set when a shutdown's grace ran out (one flag per proxy, for the life of the process).
    aborting: &'static std::sync::atomic::AtomicBool,
    /// Request body bytes (in KiB permits) all calls in flight may hold together.
    body_bytes: Arc<tokio::sync::Semaphore>,
    agent_header: HeaderName,
    labels: Arc<Labels>,
    access_log: bool,
    inject_stream_usage: bool,
    session_source: SessionSource,
    sessions: Arc<Sessions>,
    task_source: TaskSource,
    tasks: Arc<Tasks>,
    spans: Option<Arc<Spans>>,
    budgets: Option<Arc<Budgets>>,
    policies: Arc<Policies>,
    /// MCP requests awaiting their answer on a resumed stream.
    mcp: Arc<McpState>,
    /// Held MCP tool calls and their decisions.
    approvals: Arc<Approvals>,
    /// WebSocket sessions being relayed.
    upgrades: realtime::Upgrades,
}

/// The proxy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProxyBuildError {
    /// A route could not be built.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The budget service could not be built.
    #[error(transparent)]
    Budgets(#[from] BudgetsError),
    /// The alert webhook (for approval requests) could not be built.
    #[error("alerts.webhook: {0}")]
    Webhook(String),
}

/// One request on its way through the phases: what each phase read, for the next.
struct Flight {
    call: Call,
    route: Arc<Route>,
    class: Classified,
    shape: ErrorShape,
    /// The upstream path, when the route rewrote it (else it is a slice of `parts`' path).
    upath: Option<String>,
    parts: http::request::Parts,
    body: Bytes,
    /// What the request says, until the admit phase hands it to the call's accounting.
    facts: Option<RequestFacts>,
    /// The body read once for every reader on the request path (inspection, then the
    /// policies, which drop it before anything awaits): a document over the body's bytes.
    doc: Option<crate::providers::Doc>,
    /// The policies' side effects, applied once budgets admitted the call too.
    pending: Option<Pending>,
    /// The proxy's URL the client used, when the response names URLs to point at it.
    links: Option<String>,
    /// The request as the client sent it, when the proxy asked for stream usage on its behalf:
    /// sent again as it was if the upstream refuses the field (a strict OpenAI-compatible
    /// server: Mistral, Azure api-versions before `stream_options`).
    uninjected: Option<(http::request::Parts, Bytes)>,
}

/// What budget admission needs of a request.
struct BudgetAsk {
    format: crate::providers::Format,
    body: Bytes,
    model: Option<String>,
    max_output: Option<u64>,
    choices: u64,
}

// === impl Flight ===

impl Flight {
    /// Answer with a proxy error and finish the call.
    fn fail(self, e: ProxyError) -> Response<ProxyBody> {
        local_error(self.call, e, self.shape)
    }

    /// Answer a refused LLM call: it takes no session step (its span shows none either).
    fn refuse(mut self, e: ProxyError) -> Response<ProxyBody> {
        if let Some(session) = self.call.session().cloned() {
            self.call.set_session(session, None);
        }
        self.fail(e)
    }
}

// === impl Proxy ===

impl Proxy {
    /// Build the proxy (routes and their pooled clients) from a validated config.
    pub fn new(config: &Config) -> Result<Self, ProxyBuildError> {
        let labels = Arc::new(Labels::new(config.telemetry.max_label_values));
        // Config validation already compiled these; an error here cannot happen for a loaded
        // config, and would only leave the built-in defaults in force.
        let set = PolicySet::from_config(config).unwrap_or_else(|(key, msg)| {
            tracing::error!(key, msg, "agent policies unusable; using the defaults");
            PolicySet::empty()
        });
        Ok(Self {
            router: Router::from_config(config)?,
            max_body: config.server.max_request_body_bytes,
            body_idle: config.server.body_read_timeout,
            aborting: Box::leak(Box::new(std::sync::atomic::AtomicBool::new(false))),
            body_bytes: Arc::new(tokio::sync::Semaphore::new(kib(config
                .server
                .max_buffered_request_bytes)
                as usize)),
            agent_header: HeaderName::from_bytes(config.identity.agent_header.as_bytes())
                .unwrap_or_else(|_| HeaderName::from_static("x-agent-name")),
            policies: Arc::new(Policies::new(set, labels.clone())),
            labels,
            access_log: config.logging.access_log,
            inject_stream_usage: config.telemetry.inject_stream_usage,
            session_source: SessionSource::new(&config.identity.session_headers),
            sessions: Arc::new(Sessions::new(
                config.identity.session_idle_timeout,
                config.identity.max_live_sessions,
            )),
            task_source: TaskSource::new(
                &config.identity.task_headers,
                config.identity.task_from_trace,
            ),
            tasks: Arc::new(Tasks::new(
                config.identity.task_idle_timeout,
                config.identity.max_live_tasks,
            )),
            spans: None,
            budgets: Budgets::from_config(config)?,
            mcp: Arc::new(McpState::default()),
            approvals: Arc::new(Approvals::from_config(
                config,
                Webhook::from_config(config).map_err(ProxyBuildError::Webhook)?,
            )),
            upgrades: realtime::Upgrades::new(),
        })
    }

    /// Held MCP tool calls awaiting a person's decision.
    pub fn approvals(&self) -> &Arc<Approvals> {
        &self.approvals
    }

    /// Export a span per LLM call through `spans` (`None`: no span work at all).
    pub fn with_spans(mut self, spans: Option<Arc<Spans>>) -> Self {
        self.spans = spans;
        self
    }

    /// Shutdown: end every WebSocket session cleanly (their open responses cancelled and
    /// settled); whether all ended within `within`.
    pub async fn end_upgrades(&self, within: Duration) -> bool {
        self.upgrades.end(within).await
    }

    /// The shutdown grace ran out: calls dropped from now on were ended by the proxy.
    pub fn mark_aborting(&self) {
        self.aborting
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Span export, when configured.
    pub fn spans(&self) -> Option<&Arc<Spans>> {
        self.spans.as_ref()
    }

    /// The budget service, when limits or prices are configured.
    pub fn budgets(&self) -> Option<&Arc<Budgets>> {
        self.budgets.as_ref()
    }

    /// Live sessions and their step counters.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// Live tasks (this sidecar's share of their calls).
    pub fn tasks(&self) -> &Arc<Tasks> {
        &self.tasks
    }

    /// The live agent policies (a config reload swaps their rules).
    pub fn policies(&self) -> &Arc<Policies> {
        &self.policies
    }

    /// hyper entry point: never fails, every error becomes a response.
    pub async fn serve(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        Ok(self.handle(req).await)
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let Some(route) = self.router.find(parts.uri.path()).cloned() else {
            return self.unmatched(&parts, started);
        };
        // Boxed, as the held response below: each would make every request's future as large
        // as its own (12 KB for an upgrade), and hyper moves that future before polling it.
        if route.protocol == RouteProtocol::Mcp {
            return Box::pin(self.handle_mcp(route, parts, body, started)).await;
        }
        if realtime::is_upgrade(&parts) {
            return Box::pin(self.handle_upgrade(route, parts, started)).await;
        }
        let mut flight = self.identify(route, parts, started);
        if let Err(e) = self.read(&mut flight, body).await {
            return flight.fail(e);
        }
        if let Err(e) = self.admit(&mut flight).await {
            return flight.refuse(e);
        }
        let resp = match self.forward(&mut flight).await {
            Ok(resp) => resp,
            Err(e) => return flight.fail(e),
        };
        let resp = match flight.uninjected.take() {
            Some(plain) if matches!(resp.status().as_u16(), 400 | 422) => {
                match self
                    .unless_injection_refused(&mut flight, resp, plain)
                    .await
                {
                    Ok(resp) => resp,
                    Err(e) => return flight.fail(e),
                }
            }
            _ => resp,
        };
        self.respond(flight, resp).await
    }

    /// An injected request answered 400 or 422: when the error names `stream_options` (a
    /// server that refuses the field, or this api-version of it), the request goes again as the
    /// client sent it (nothing was generated) and the stream's usage is estimated; any other
    /// error is given on as it came.
    async fn unless_injection_refused(
        &self,
        f: &mut Flight,
        resp: Response<UpstreamBody>,
        (parts, plain): (http::request::Parts, Bytes),
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        const ERROR_READ: usize = 64 * 1024;
        let (head, body) = resp.into_parts();
        let read = http_body_util::Limited::new(body, ERROR_READ).collect();
        let bytes = match tokio::time::timeout(f.route.timeouts.idle_timeout, read).await {
            Ok(Ok(b)) => b.to_bytes(),
            _ => {
                return Err(ProxyError::UpstreamReset {
                    route: f.route.name.to_string(),
                })
            }
        };
        let plain_head = head.headers.get(http::header::CONTENT_ENCODING).is_none();
        if !(plain_head && memchr::memmem::find(&bytes, b"stream_options").is_some()) {
            return Ok(Response::from_parts(head, UpstreamBody::Read(Some(bytes))));
        }
        tracing::debug!(route = %f.route.name, "upstream refused stream_options: sent again as the client sent it");
        f.parts = parts;
        f.body = plain.clone();
        if let Some(llm) = f.call.llm_mut() {
            llm.clear_injected();
            llm.set_request_body(plain);
        }
        self.forward(f).await
    }

    /// A WebSocket upgrade (see `realtime.rs`): forwarded; on the upstream's 101 the session is
    /// relayed (read when the path's format has session events), else the upstream's answer
    /// is the client's.
    async fn handle_upgrade(
        &self,
        route: Arc<Route>,
        mut parts: http::request::Parts,
        started: Instant,
    ) -> Response<ProxyBody> {
        let client_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let mut f = self.identify(route, parts, started);
        let session = f.class.format.and_then(|format| {
            let events = format.adapter().realtime()?;
            let h = &f.parts.headers;
            Some(realtime::Session {
                events,
                format,
                provider: f.class.provider,
                route: f.route.clone(),
                agent: f.call.labels().agent.clone(),
                path: f.parts.uri.path().to_string(),
                access_log: self.access_log,
                aborting: self.aborting,
                session: self.session_source.identify(h, None),
                task: self.task_source.identify(h),
                trace: realtime::trace_headers(h),
                spans: self.spans.clone(),
                budgets: self.budgets.clone(),
                labels: self.labels.clone(),
                model: events.model(f.parts.uri.query()),
            })
        });
        let resp = match self.forward_upgrade(&mut f).await {
            Ok(resp) => resp,
            Err(e) => return f.fail(e),
        };
        match (client_upgrade, resp.status()) {
            (Some(client), http::StatusCode::SWITCHING_PROTOCOLS) => {
                realtime::switch(f.call, session, client, resp, &self.upgrades)
            }
            // A switch the client's connection cannot follow (no upgrade handle to take it).
            (None, http::StatusCode::SWITCHING_PROTOCOLS) => {
                let route = f.route.name.to_string();
                f.fail(ProxyError::UpstreamUnexpectedUpgrade { route })
            }
            // Refused upstream (401, 404, ...): its answer, forwarded as any other.
            _ => self.respond(f, resp.map(UpstreamBody::Pooled)).await,
        }
    }

    /// The upgrade request upstream: same path and query, the upgrade headers kept, over an
    /// HTTP/1.1 connection, under the first-byte timeout.
    async fn forward_upgrade(&self, f: &mut Flight) -> Result<Response<Incoming>, ProxyError> {
        let uri = f
            .route
            .upstream_uri(f.parts.uri.path(), f.parts.uri.query())
            .map_err(|_| ProxyError::BadRequestBody)?;
        let mut parts = std::mem::replace(&mut f.parts, Request::new(()).into_parts().0);
        realtime::upstream_headers(&mut parts.headers);
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let req = Request::from_parts(parts, Full::new(Bytes::new()));
        f.call.upstream_sent = Some(Instant::now());
        send_pooled(&f.route, f.route.upgrade_client.get(), req).await
    }

    /// A request on an MCP route (see `mcp.rs`): identified like any call, its POST body read and
    /// admitted message by message, forwarded, its answer read message by message.
    async fn handle_mcp(
        &self,
        route: Arc<Route>,
        parts: http::request::Parts,
        body: Incoming,
        started: Instant,
    ) -> Response<ProxyBody> {
        let mut f = self.identify(route, parts, started);
        let session = self.session_source.identify(&f.parts.headers, None);
        let agent = f.call.labels().agent.clone();
        let deps = (&self.mcp, &self.policies, &self.labels);
        let mut ex = Exchange::new(&f.route, agent, &f.parts.headers, session, deps);
        if let Some(s) = ex.session() {
            f.call.set_session(s.clone(), None);
        }
        if f.parts.method == http::Method::POST {
            match self.read_mcp(&mut f, &mut ex, body).await {
                Ok(Admitted::Forward) => {}
                Ok(Admitted::Held(answer)) => return jsonrpc_answer(f.call, answer),
                Err(e) => {
                    let (ids, batch) = ex.refuse(&e, &mut f.call);
                    return jsonrpc_error(f.call, &e, &ids, batch);
                }
            }
        }
        match self.forward(&mut f).await {
            Ok(resp) => self.respond_mcp(f, resp, ex),
            Err(e) => {
                ex.unreachable(&e, &self.approvals);
                jsonrpc_error(f.call, &e, &[], false)
            }
        }
    }

    /// An MCP POST: the body (bounded by the MCP message cap too), its messages, the policies
    /// on its tool calls.
    async fn read_mcp(
        &self,
        f: &mut Flight,
        ex: &mut Exchange,
        body: Incoming,
    ) -> Result<Admitted, ProxyError> {
        let cap = self.max_body.min(crate::mcp::MAX_MESSAGE_BYTES);
        let (bytes, permit) = read_body(
            body,
            &f.parts.headers,
            (cap, self.body_idle),
            &self.body_bytes,
        )
        .await?;
        f.call.hold_body_permit(permit);
        f.call.bytes_in = bytes.len();
        let started = f.call.started();
        if let Some(tp) = ex.read(&bytes, &f.parts.headers, self.spans.as_ref(), started)? {
            f.parts.headers.insert(TRACEPARENT_HEADER, tp);
        }
        f.body = bytes;
        ex.admit(&self.policies, &self.sessions, &self.approvals, &mut f.call)
    }

    /// The MCP server's answer: status and headers at once, the body read message by message
    /// (armed to filter `tools/list` results when the agent's lists restrict).
    fn respond_mcp(
        &self,
        f: Flight,
        resp: Response<UpstreamBody>,
        mut ex: Exchange,
    ) -> Response<ProxyBody> {
        let Flight {
            mut call, route, ..
        } = f;
        call.upstream_headers = Some(Instant::now());
        call.upstream_status(resp.status());
        let (mut rparts, rbody) = resp.into_parts();
        headers::strip_hop_by_hop(&mut rparts.headers);
        rparts.version = Version::HTTP_11;
        let (framing, armed) = ex.on_head(rparts.status, &rparts.headers);
        if armed {
            // A filtered answer is shorter than the server's.
            rparts.headers.remove(CONTENT_LENGTH);
        }
        call.returned = Some(Instant::now());
        let body = ObservedBody::new(rbody, call, route.timeouts.idle_timeout);
        let body = McpBody::new(body, ex, framing, armed);
        Response::from_parts(rparts, Either::Right(Either::Right(Either::Left(body))))
    }

    /// Phase 1, no route: a 404 in OpenAI shape.
    fn unmatched(&self, parts: &http::request::Parts, started: Instant) -> Response<ProxyBody> {
        let info = self.call_info(parts, Arc::from("unmatched"), "unknown", Operation::Other);
        let call = Call::new(info(Arc::from("default")), started);
        local_error(call, ProxyError::NoRoute, ErrorShape::DEFAULT)
    }

    /// The call's fixed facts, but for its agent.
    fn call_info<'a>(
        &'a self,
        parts: &'a http::request::Parts,
        route: Arc<str>,
        provider: &'static str,
        operation: Operation,
    ) -> impl FnOnce(Arc<str>) -> CallInfo + 'a {
        move |agent| CallInfo {
            route,
            provider,
            operation,
            agent,
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            access_log: self.access_log,
            aborting: self.aborting,
        }
    }

    /// Phase 2: the protocol and labels of a routed request; from here the call finishes
    /// exactly once.
    fn identify(&self, route: Arc<Route>, parts: http::request::Parts, started: Instant) -> Flight {
        let upath = route::as_served(route.upstream_path(parts.uri.path()));
        let class = protocol::classify_remembered(route.protocol, &upath);
        // A path the route rewrote (base path) is kept for `read`; a borrowed one is a slice of
        // the request's own path and costs nothing to take again.
        let upath = match upath {
            std::borrow::Cow::Owned(p) => Some(p),
            std::borrow::Cow::Borrowed(_) => None,
        };
        let agent = self.agent_label(&parts.headers, &route);
        let info = self.call_info(&parts, route.name.clone(), class.provider, class.operation);
        let mut call = Call::new(info(agent), started);
        if let Some(spans) = &self.spans {
            call.set_span(spans.start(&parts.headers, route.host.clone(), route.port(), started));
        }
        Flight {
            shape: class.error_shape(),
            call,
            route,
            class,
            upath,
            parts,
            body: Bytes::new(),
            facts: None,
            doc: None,
            pending: None,
            links: None,
            uninjected: None,
        }
    }

    /// Phase 3: the request body (bounded), what it says, and the session it belongs to.
    async fn read(&self, f: &mut Flight, body: Incoming) -> Result<(), ProxyError> {
        let (bytes, permit) = read_body(
            body,
            &f.parts.headers,
            (self.max_body, self.body_idle),
            &self.body_bytes,
        )
        .await?;
        // Held until the call finishes: the body lives that long (estimates, retries).
        f.call.hold_body_permit(permit);
        f.call.bytes_in = bytes.len();
        let upath = match f.upath.as_deref() {
            Some(p) => std::borrow::Cow::Borrowed(p),
            None => route::as_served(f.route.upstream_path(f.parts.uri.path())),
        };
        // An LLM call's JSON body is read once here, for inspection and the policies (which
        // read the conversation), into a document sharing the body's bytes; embeddings are only
        // inspected (their input is not read).
        let query = f.parts.uri.query();
        // A session named by a header is known before the body is read: where loop detection
        // watches it, the parse hashes the conversation too (a session named only by the
        // body's `user` is hashed by a walk later).
        let named = self.session_source.identify(&f.parts.headers, None);
        let hashing = named.is_some() && self.policies.hashes_requests(&f.call.labels().agent);
        f.doc = (f.class.format.is_some()
            && f.class.operation != Operation::Embeddings
            && inspect::is_object(&bytes))
        .then(|| {
            let parse = match hashing {
                true => crate::providers::Doc::parse_hashing,
                false => crate::providers::Doc::parse,
            };
            parse(bytes.clone()).ok()
        })
        .flatten();
        f.facts = match &f.doc {
            Some(doc) => inspect::inspect_doc(&f.class, &upath, query, doc),
            None => inspect::inspect(&f.class, &upath, query, &bytes),
        };
        f.body = bytes;
        let user = f.facts.as_ref().and_then(|x| x.user.as_deref());
        let session = named.or_else(|| self.session_source.identify(&f.parts.headers, user));
        if let Some(session) = session {
            // Steps count LLM calls only; other paths (model lists, files) are not agent steps.
            // The policies see the step the call would take; it is taken once the call is
            // admitted, so refused calls and their retries do not advance the session.
            let step = f.facts.is_some().then(|| self.sessions.next_step(&session));
            f.call.set_session(session, step);
        }
        if f.facts.is_some() {
            // LLM calls only, as for steps; from here the call ends in the task table once.
            if let Some(task) = self.task_source.identify(&f.parts.headers) {
                let began = self
                    .tasks
                    .begin(&task, &f.call.labels().agent, f.call.started());
                f.call.set_task(task, began.then(|| self.tasks.clone()));
            }
        }
        Ok(())
    }

    /// Phase 4: policies, then budgets, then the commit (the session step and the policies'
    /// side effects). Nothing is sent upstream before this has admitted the call.
    async fn admit(&self, f: &mut Flight) -> Result<(), ProxyError> {
        let Some(mut facts) = f.facts.take() else {
            return Ok(()); // not an LLM call: nothing to admit
        };
        // Media keys for the budget's input bound, counted on the document while it is at
        // hand (the policies take it); a rewrite after this only removes or adds other members.
        // A document normalized at parse (a repeated key) is not the body forwarded: the text
        // is searched then.
        let media_keys = match (&self.budgets, &f.doc) {
            (Some(_), Some(doc))
                if doc.bytes().as_ptr() == f.body.as_ptr() && doc.bytes().len() == f.body.len() =>
            {
                Some(crate::budget::media_keys_in(doc))
            }
            _ => None,
        };
        let labels = f.call.labels();
        let admitted = self.policies.admit(
            labels,
            f.call.session(),
            f.call.step(),
            &mut facts,
            &mut f.body,
            f.doc.take(),
        );
        let check = match admitted {
            Ok((check, pending)) => {
                pending
                    .violations()
                    .iter()
                    .for_each(|v| f.call.add_policy_violation(*v));
                f.pending = Some(pending);
                check
            }
            Err(r) => {
                r.violations
                    .iter()
                    .for_each(|v| f.call.add_policy_violation(*v));
                // Still an LLM call: its span and GenAI metrics record the refusal.
                f.call
                    .set_llm(accounting::LlmCall::new(facts, self.labels.clone()));
                return Err((*r.error).into());
            }
        };
        // The body as the client sent it (policies applied), for the input estimate.
        let budget_facts = self.budgets.as_ref().map(|_| BudgetAsk {
            format: facts.format,
            body: f.body.clone(),
            model: facts.model.clone(),
            max_output: facts.max_tokens,
            choices: facts.choices,
        });
        self.account(f, facts, check);
        if let (Some(budgets), Some(ask)) = (&self.budgets, budget_facts) {
            let call_facts = CallFacts {
                session: f.call.session().cloned(),
                task: f.call.task().cloned(),
                agent: f.call.labels().agent.clone(),
                model: ask.model,
                input_bound: match media_keys {
                    Some(n) => crate::budget::input_bound_of(&ask.body, n),
                    None => crate::budget::input_bound(&ask.body),
                },
                max_output: ask.max_output,
                choices: ask.choices,
            };
            // The context guard may have counted this body already: one tokenizer pass.
            let known = f.pending.as_ref().and_then(Pending::input_tokens);
            let estimate =
                || known.unwrap_or_else(|| crate::budget::estimate_input(ask.format, &ask.body));
            match budgets.admit(call_facts, &estimate).await {
                Ok(adm) => f.call.set_budget(adm),
                Err(e) => {
                    f.call.set_budget_decision(BudgetDecision::Rejected);
                    return Err(e.into());
                }
            }
        }
        self.commit(f)
    }

    /// The call's LLM accounting: parser, timings, the response check; and, for an OpenAI chat
    /// stream without usage, the request rewritten to ask for it.
    fn account(&self, f: &mut Flight, facts: RequestFacts, check: ResponseCheck) {
        let mut llm = accounting::LlmCall::new(facts, self.labels.clone());
        llm.set_policy(check);
        if self.inject_stream_usage && f.class.operation == Operation::Chat {
            if let Some(rewritten) = inspect::ask_stream_usage(llm.facts(), &f.body) {
                let plain = std::mem::replace(&mut f.body, Bytes::from(rewritten));
                f.uninjected = Some((f.parts.clone(), plain));
                llm.set_injected();
            }
        }
        llm.set_request_body(f.body.clone());
        f.call.set_llm(llm);
        if let Some(span) = f.call.span_mut() {
            span.capture_request(&f.body, &f.parts.headers);
        }
    }

    /// Admitted: the call takes its session step and its policy side effects apply.
    fn commit(&self, f: &mut Flight) -> Result<(), ProxyError> {
        let Some(p) = f.pending.take() else {
            return Ok(());
        };
        if let (Some(session), Some(_)) = (f.call.session().cloned(), f.call.step()) {
            let Some(step) = self
                .sessions
                .take_step(&session, f.call.started(), p.max_steps())
            else {
                // A concurrent call of the session took the last step meanwhile; the budget
                // reservation is given back when the call finishes unsent.
                f.call.add_policy_violation(PolicyViolation::MaxSteps);
                return Err(self.policies.steps_used(&p).into());
            };
            f.call.set_session(session, Some(step));
            f.call.set_ledger(self.sessions.clone());
        }
        f.call.task_admitted(p.tool_result_failures());
        self.policies.commit(p, f.call.session());
        Ok(())
    }

    /// Phase 5: the upstream request (same method, path under the route, headers minus
    /// hop-by-hop, the same bytes), sent under the first-byte timeout.
    async fn forward(&self, f: &mut Flight) -> Result<Response<UpstreamBody>, ProxyError> {
        let uri = f
            .route
            .upstream_uri(f.parts.uri.path(), f.parts.uri.query())
            .map_err(|_| ProxyError::BadRequestBody)?;
        let mut parts = std::mem::replace(&mut f.parts, Request::new(()).into_parts().0);
        // A body framed either way (an empty chunked one too: Google's front end answers a POST
        // without a length 411) goes on framed by its length.
        let had_length = parts.headers.contains_key(CONTENT_LENGTH)
            || parts.headers.contains_key(http::header::TRANSFER_ENCODING);
        headers::strip_hop_by_hop(&mut parts.headers);
        let names_links = (parts.method != http::Method::HEAD)
            .then(|| f.class.names_links(parts.uri.path()))
            .flatten();
        if let Some(n) = names_links {
            f.links = links::base(&parts, n);
            if f.links.is_some() {
                // The body is read and rewritten whole: asked for plain.
                parts
                    .headers
                    .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
            }
        }
        // The client sets Host from the upstream URI (HTTP/1) or sends :authority (HTTP/2).
        parts.headers.remove(HOST);
        if let Some(llm) = f.call.llm_mut() {
            // Only formats whose clients sign requests (Bedrock's SigV4) keep a signed header;
            // elsewhere it is the proxy's to set.
            let signed = llm.facts().format.adapter().signed_requests()
                && headers::signs_accept_encoding(&parts.headers);
            if llm.asks_plain_body() && !signed {
                // A compressed body cannot be gated event by event, held and checked, or have
                // the usage asked for on the client's behalf hidden: it is asked for plain.
                parts
                    .headers
                    .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
            }
            // The upstream call is our span's child; the agent's tracestate goes on as sent.
            if let Some(span) = f.call.span_mut() {
                parts.headers.insert(TRACEPARENT_HEADER, span.traceparent());
            }
        }
        let body = std::mem::take(&mut f.body);
        if had_length || !body.is_empty() {
            // The body is re-framed by length: a chunked request body was collected whole.
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        parts.uri = uri;
        // The pooled client picks HTTP/1.1 or HTTP/2 per connection (ALPN); an HTTP/2 request
        // from the agent must not force HTTP/2 on an HTTP/1.1-only upstream.
        parts.version = Version::HTTP_11;
        let upstream_req = Request::from_parts(parts, Full::new(body));

        f.call.upstream_sent = Some(Instant::now());
        let resp = send(&f.route, upstream_req).await?;
        // A 101 answers only a request that asked to upgrade (those take `forward_upgrade`);
        // forwarded, it would tell the client its connection now speaks a protocol nobody relays.
        if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            return Err(ProxyError::UpstreamUnexpectedUpgrade {
                route: f.route.name.to_string(),
            });
        }
        Ok(resp)
    }

    /// Phase 6: status and headers at once, the body observed frame by frame (held when a
    /// blocking policy must see it whole; cut at a `cut` limit; usage hidden when injected).
    async fn respond(&self, f: Flight, resp: Response<UpstreamBody>) -> Response<ProxyBody> {
        let Flight {
            mut call,
            route,
            shape,
            class,
            links,
            ..
        } = f;
        call.upstream_headers = Some(Instant::now());
        call.upstream_status(resp.status());
        let (mut rparts, rbody) = resp.into_parts();
        call.on_response_headers(&rparts.headers);
        headers::strip_hop_by_hop(&mut rparts.headers);
        rparts.version = Version::HTTP_11;
        // Before a held response too: it carries the session budget header as well.
        let cut = self.arm_cut(&mut call, &mut rparts.headers);
        if let Some(base) = links.filter(|_| links::rewrites(&rparts)) {
            let parts = (rparts, rbody);
            return Box::pin(links::respond(call, parts, (class, shape), &route, &base)).await;
        }
        if held::should_hold(&call, &rparts) {
            return Box::pin(held::respond(call, rparts, rbody, shape, &route)).await;
        }
        let gate = tool_gate::arm(&mut call, &mut rparts.headers);
        if gate.is_none() {
            if let Some(e) = held::refuse_unchecked(&mut call, &rparts) {
                return local_error(call, e.into(), shape);
            }
        }
        call.returned = Some(Instant::now());
        let hide = call.usage_hider();
        let body = ObservedBody::new(rbody, call, route.timeouts.idle_timeout);
        // The cut point is an offset in the upstream's bytes: cut first; the gate releases
        // calls byte-identical, before usage is hidden.
        let body = gated(wrap(body, cut), gate);
        if let Some(rewrite) = hide {
            // The rewritten stream is shorter than what the upstream framed.
            rparts.headers.remove(CONTENT_LENGTH);
            return Response::from_parts(
                rparts,
                Either::Right(Either::Left(StripUsage::new(body, rewrite))),
            );
        }
        Response::from_parts(rparts, Either::Left(body))
    }

    /// Budget response header, and the cut signal for a stream a `cut` limit may end.
    fn arm_cut(
        &self,
        call: &mut Call,
        headers: &mut HeaderMap,
    ) -> Option<(Arc<CutSignal>, Box<dyn StreamEnding>)> {
        let adm = call.budget()?;
        if let Some(n) = adm.session_tokens_remaining {
            headers.insert(SESSION_TOKENS_REMAINING, HeaderValue::from(n));
        }
        let after = adm.cut_after_output?;
        let llm = call.llm_mut()?;
        if !llm.cuttable() {
            return None;
        }
        // Formats that cannot be ended cleanly are not cut (the limit refuses the next call).
        let ending = llm.facts().format.adapter().stream_ending()?;
        // Content-Length no longer holds once the stream may end early.
        headers.remove(CONTENT_LENGTH);
        let signal = CutSignal::new(after);
        call.set_cut(signal.clone());
        Some((signal, ending))
    }

    fn agent_label(&self, headers: &HeaderMap, route: &Route) -> Arc<str> {
        let from_header = headers
            .get(&self.agent_header)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty());
        match (from_header, &route.agent) {
            (Some(a), _) => self.labels.agents.get(a),
            (None, Some(a)) => a.clone(),
            (None, None) => Arc::from("default"),
        }
    }
}

/// The response body, armed to be cut when a `cut` limit applies.
fn wrap<B>(body: B, cut: Option<(Arc<CutSignal>, Box<dyn StreamEnding>)>) -> Cut<B> {
    match cut {
        Some((signal, ending)) => Cut::armed(body, signal, ending),
        None => Cut::pass(body),
    }
}

/// The response body, gated on its tool calls when a blocking tool policy applies.
fn gated<B>(body: B, gate: Option<(Box<dyn ToolGate>, Box<dyn CallCheck>)>) -> Gate<B> {
    match gate {
        Some((gate, check)) => Gate::armed(body, gate, check),
        None => Gate::pass(body),
    }
}

/// Bytes of an oversize request body read and discarded before answering 413, so the client has
/// finished sending and reads the answer instead of a connection reset.
const DRAIN_LIMIT: u64 = 1024 * 1024;
/// Longest time spent discarding an oversize body.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// KiB permits for `bytes` (rounded up).
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// Collect the request body, refusing more than `max` bytes, and more than what `in_flight`
/// (the bytes all bodies in flight may hold together) has left.
async fn read_body(
    mut body: Incoming,
    headers: &HeaderMap,
    (max, idle): (usize, std::time::Duration),
    in_flight: &Arc<tokio::sync::Semaphore>,
) -> Result<(Bytes, Option<tokio::sync::OwnedSemaphorePermit>), ProxyError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = ProxyError::BodyTooLarge { limit: max };
    let mut permit: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let reserve = |permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
                   len: usize|
     -> Result<(), ProxyError> {
        let need = kib(len).saturating_sub(permit.as_ref().map_or(0, |p| p.num_permits() as u32));
        if need == 0 {
            return Ok(());
        }
        // Never waits: a flood of large bodies is refused at once rather than queued.
        let more = in_flight
            .clone()
            .try_acquire_many_owned(need)
            .map_err(|_| ProxyError::Overloaded)?;
        match permit {
            Some(p) => p.merge(more),
            None => *permit = Some(more),
        }
        Ok(())
    };
    if let Some(n) = declared {
        if n > max as u64 {
            if n <= max as u64 + DRAIN_LIMIT {
                drain(body, n).await;
            }
            return Err(too_large);
        }
        reserve(&mut permit, n as usize)?;
    }
    // One frame is the common case (a JSON body in one read): keep it without copying.
    let mut first: Option<Bytes> = None;
    let mut buf = bytes::BytesMut::new();
    let mut len = 0usize;
    // A stalled upload (or a client gone without a FIN) must not keep its share of the body
    // buffer, declared up front, from every other call.
    loop {
        // A body that already arrived (nearly every request's) is read without a timer.
        let next = match futures_util::FutureExt::now_or_never(body.frame()) {
            Some(next) => next,
            None => tokio::time::timeout(idle, body.frame())
                .await
                .map_err(|_| ProxyError::RequestBodyTimeout { after: idle })?,
        };
        let Some(frame) = next else {
            break;
        };
        let Ok(frame) = frame else {
            return Err(ProxyError::BadRequestBody);
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing the upstream needs from a buffered body
        };
        len += data.len();
        if len > max {
            drain(body, DRAIN_LIMIT).await;
            return Err(too_large);
        }
        reserve(&mut permit, len)?;
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            Some(f) => {
                // Sized once for the whole body when its length was declared (checked against
                // `max` above), so a large body is not copied again at every doubling.
                let whole = declared.map_or(len, |n| (n as usize).max(len));
                buf.reserve(whole);
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&data);
            }
            None => buf.extend_from_slice(&data),
        }
    }
    Ok((first.unwrap_or_else(|| buf.freeze()), permit))
}

/// Read and discard up to `limit` more bytes of `body`, for at most [`DRAIN_TIME`].
async fn drain(mut body: Incoming, limit: u64) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen >= limit {
                break;
            }
        }
    })
    .await;
}

/// Send `req` upstream (on a driven connection for an `http://` upstream, else with the route's
/// pooled client), waiting at most the route's first-byte timeout for the head.
async fn send(
    route: &Route,
    req: Request<Full<Bytes>>,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let Some(driven) = route.driven.as_ref() else {
        let resp = send_pooled(route, route.client.get(), req).await?;
        return Ok(resp.map(UpstreamBody::Pooled));
    };
    match tokio::time::timeout(route.timeouts.first_byte_timeout, driven.get().send(req)).await {
        Ok(Ok(resp)) => Ok(resp.map(UpstreamBody::Driven)),
        Ok(Err(e)) => Err(driven_error(route, &e)),
        Err(_) => Err(ProxyError::UpstreamTimeout {
            route: route.name.to_string(),
            after: route.timeouts.first_byte_timeout,
        }),
    }
}

/// Map a driven connection's failure to the error the client sees.
fn driven_error(route: &Route, e: &driven::SendError) -> ProxyError {
    let route_name = route.name.to_string();
    match e {
        driven::SendError::ConnectTimeout => ProxyError::UpstreamConnectTimeout {
            route: route_name,
            after: route.timeouts.connect_timeout,
        },
        // The system's own connect timeout, as the pooled client's mapping reads it.
        driven::SendError::Connect(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            ProxyError::UpstreamConnectTimeout {
                route: route_name,
                after: route.timeouts.connect_timeout,
            }
        }
        driven::SendError::Connect(_) => ProxyError::UpstreamUnreachable { route: route_name },
        driven::SendError::Http(_) => ProxyError::UpstreamReset { route: route_name },
    }
}

/// Send `req` with the pooled `client`, waiting at most the route's first-byte timeout for the
/// head.
async fn send_pooled(
    route: &Route,
    client: &UpstreamClient,
    req: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, ProxyError> {
    match tokio::time::timeout(route.timeouts.first_byte_timeout, client.request(req)).await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => Err(client_error(route, &e)),
        Err(_) => Err(ProxyError::UpstreamTimeout {
            route: route.name.to_string(),
            after: route.timeouts.first_byte_timeout,
        }),
    }
}

/// Map a pooled-client failure to the error the client sees.
fn client_error(route: &Route, e: &hyper_util::client::legacy::Error) -> ProxyError {
    let timed_out = {
        let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        let mut found = false;
        while let Some(s) = src {
            if s.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                found = true;
                break;
            }
            src = s.source();
        }
        found
    };
    let name = route.name.to_string();
    // A connect that timed out (TCP or the TLS handshake, see `http_client::Connector`) is a
    // connect failure first: the request never reached the upstream, so it is not charged.
    if e.is_connect() && timed_out {
        ProxyError::UpstreamConnectTimeout {
            route: name,
            after: route.timeouts.connect_timeout,
        }
    } else if e.is_connect() {
        ProxyError::UpstreamUnreachable { route: name }
    } else if timed_out {
        ProxyError::UpstreamTimeout {
            route: name,
            after: route.timeouts.connect_timeout,
        }
    } else {
        ProxyError::UpstreamReset { route: name }
    }
}

#[cfg(test)]
mod size_tests {
    use std::mem::size_of;

    /// The size of what `f` returns (a future, unnamed).
    fn returned<A, R>(_f: impl Fn(A) -> R) -> usize {
        size_of::<R>()
    }

    /// hyper moves each request's future (into its dispatcher's slot) and the response with
    /// its body (several times on the way out): a `perf` profile of toy requests found those
    /// copies (`memcpy`) the largest user-space cost when the future was 15 KB and the body
    /// 1.9 KB. Rare paths (upgrades, MCP, held responses, Redis commands, leases) are boxed.
    #[test]
    fn the_request_future_and_response_body_stay_small() {
        assert_eq!(size_of::<super::call::Call>(), size_of::<usize>());
        let body = size_of::<super::answer::ProxyBody>();
        assert!(body <= 1024, "the response body type is {body} bytes");
        let serve = returned(
            |(p, r): (
                std::sync::Arc<super::Proxy>,
                http::Request<hyper::body::Incoming>,
            )| p.serve(r),
        );
        assert!(serve <= 6 * 1024, "a request's future is {serve} bytes");
    }
}
