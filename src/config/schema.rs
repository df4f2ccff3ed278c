//! The YAML schema: every key, its type and its named default (CONTRACT.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Default of `telemetry.max_series_per_metric`.
pub const DEFAULT_MAX_SERIES: usize = 1000;

/// Longest label value kept (agent names included): longer values are folded.
pub const MAX_LABEL_LEN: usize = 128;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where agents point their base URL.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Admin listener: /metrics, /healthz, /readyz and the admin API.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// Routes, matched on path prefix in order; the first match wins.
    #[serde(default = "default_routes")]
    pub routes: Vec<RouteConfig>,
    /// Limits and timeouts of the listener that agents talk to.
    #[serde(default)]
    pub server: ServerConfig,
    /// Timeouts towards upstreams (a route may override them).
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// Log settings.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Where session and agent identity come from.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Span export and metric settings.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Token and cost budgets.
    #[serde(default)]
    pub budgets: BudgetsConfig,
    /// USD per million tokens, by model.
    #[serde(default)]
    pub pricing: BTreeMap<String, Price>,
    /// Per-agent policies.
    #[serde(default)]
    pub agents: BTreeMap<String, AgentPolicy>,
    /// Model catalog (context windows).
    #[serde(default)]
    pub models: BTreeMap<String, ModelInfo>,
    /// Alert delivery.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Human approval of held MCP tool calls (`approval_action: hold`).
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    /// Bearer token required for mutating admin API calls, when set.
    #[serde(default)]
    pub admin_token: Option<String>,
}

/// One route: a path prefix mapped to an upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Route name, used in metric labels and error messages.
    pub name: String,
    /// Path prefix matched on segment boundaries (`/anthropic` matches `/anthropic/v1/messages`).
    pub path_prefix: String,
    /// Remove the prefix before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Upstream base URL, `https://host[:port][/base/path]` (or `http://` for local servers).
    pub upstream: String,
    /// Which provider protocol the route speaks: `auto` (from each request's path),
    /// `passthrough` (never parsed), or a provider's protocol name (`openai`, `anthropic`,
    /// `gemini`, `ollama`: the names the provider registry knows; checked when the routes are
    /// built and by `check-config`).
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Extra PEM trust roots for a private upstream, added to the webpki roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Agent name for calls on this route that carry no agent header.
    #[serde(default)]
    pub agent: Option<String>,
    /// Per-route timeout overrides.
    #[serde(default)]
    pub timeouts: Option<TimeoutsOverride>,
}

/// Listener limits and timeouts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Largest request body read (LLM requests are JSON that budgets and policies read); over it → 413.
    #[serde(default = "default_max_request_body_bytes")]
    pub max_request_body_bytes: usize,
    /// A client must send its request headers within this time (slowloris defence).
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest pause while a request body is read: a client that stalls mid-upload is answered
    /// 408 and the body buffer it held is released.
    #[serde(default = "default_body_read_timeout", with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Most header lines in one HTTP/1 request.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Largest request head in bytes (HTTP/1 read buffer; HTTP/2 header list size).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// HTTP/2 streams one connection may have open at once.
    #[serde(default = "default_h2_max_concurrent_streams")]
    pub http2_max_concurrent_streams: u32,
    /// How long SIGTERM waits for in-flight requests and streams before exiting.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Request body bytes all requests in flight may hold together; past it → 503 (bodies are
    /// read whole and kept until the call ends).
    #[serde(default = "default_max_buffered_request_bytes")]
    pub max_buffered_request_bytes: usize,
    /// A write to a client that makes no progress for this long ends the connection (a client
    /// that stops reading would otherwise hold its upstream stream open forever).
    #[serde(default = "default_write_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
    /// How requests are spread over threads: one event loop per worker, or one shared pool.
    #[serde(default)]
    pub runtime: RuntimeMode,
    /// Worker threads serving the proxy listener; unset: the cores the process may use.
    #[serde(default)]
    pub workers: Option<usize>,
}

/// How the proxy listener's connections are served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeMode {
    /// One single-threaded runtime per worker thread, each with its own listening socket and
    /// upstream pools, so a request never changes thread; background work has its own thread.
    #[default]
    PerCore,
    /// One multi-threaded runtime (work stealing) for everything.
    Shared,
}

impl ServerConfig {
    /// Worker threads: `workers`, else the cores this process may use (at least one).
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// Upstream pools each route keeps: one per worker in `per_core`, one in `shared`.
    pub fn pools(&self) -> usize {
        match self.runtime {
            RuntimeMode::PerCore => self.worker_count(),
            RuntimeMode::Shared => 1,
        }
    }
}

/// Timeouts towards upstreams.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// TCP (and TLS) connect.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// From sending the request to the response headers (reasoning models can think for minutes).
    #[serde(default = "default_first_byte_timeout", with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// Longest silence between two body chunks.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    #[serde(default = "default_pool_idle_timeout", with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Most idle pooled connections kept per upstream host.
    #[serde(default = "default_pool_max_idle_per_host")]
    pub pool_max_idle_per_host: usize,
}

/// Per-route timeout overrides; unset fields use `upstream:`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsOverride {
    /// TCP (and TLS) connect.
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// From sending the request to the response headers.
    #[serde(default, with = "humantime_serde")]
    pub first_byte_timeout: Option<Duration>,
    /// Longest silence between two body chunks.
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
}

/// Log settings (format is a command-line flag; level is `RUST_LOG`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// One access line per request.
    #[serde(default = "default_true")]
    pub access_log: bool,
}

/// Where session and agent identity come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Headers carrying a session id; the first present wins.
    #[serde(default = "default_session_headers")]
    pub session_headers: Vec<String>,
    /// Header carrying the agent name.
    #[serde(default = "default_agent_header")]
    pub agent_header: String,
    /// A session with no call for this long has ended (steps and duration are recorded).
    #[serde(default = "default_session_idle_timeout", with = "humantime_serde")]
    pub session_idle_timeout: Duration,
    /// Headers carrying an explicit task id; the first present wins, then W3C `baggage`
    /// `task.id`, then the trace id of the agent's `traceparent`.
    #[serde(default = "default_task_headers")]
    pub task_headers: Vec<String>,
    /// A call with no explicit task id belongs to the task of its `traceparent`'s trace id.
    #[serde(default = "default_true")]
    pub task_from_trace: bool,
    /// A task with no call in flight and none for this long has ended (its numbers are recorded).
    #[serde(default = "default_task_idle_timeout", with = "humantime_serde")]
    pub task_idle_timeout: Duration,
    /// Live tasks tracked for metrics and the admin API; past it new tasks are not tracked
    /// (counted), budgets still apply.
    #[serde(default = "default_max_live_tasks")]
    pub max_live_tasks: usize,
    /// Live sessions kept (step counters, totals for the admin API); past it the least recently
    /// seen of a sample ends early (counted). Session ids are the client's to choose.
    #[serde(default = "default_max_live_sessions")]
    pub max_live_sessions: usize,
}

/// Span export and metric settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OpenTelemetry `service.name`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// OTLP export; absent → spans are not exported.
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,
    /// OTLP metric export; absent → none, unless `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` is set.
    #[serde(default)]
    pub otlp_metrics: Option<OtlpMetricsConfig>,
    /// Span vocabulary.
    #[serde(default)]
    pub conventions: Conventions,
    /// Capture prompt and completion content on spans (off by default).
    #[serde(default)]
    pub capture_content: bool,
    /// Regular expressions whose matches are replaced with `[REDACTED]` in captured content.
    #[serde(default)]
    pub redact_patterns: Vec<String>,
    /// Largest captured-content attribute, in bytes (longer content is cut, JSON kept valid).
    #[serde(default = "default_max_content_bytes")]
    pub max_content_bytes: usize,
    /// Distinct values per traffic-derived metric label before new ones report as `other`.
    #[serde(default = "default_max_label_values")]
    pub max_label_values: usize,
    /// Label sets per metric carrying a traffic-derived label before new ones fold into `other`.
    #[serde(default = "default_max_series_per_metric")]
    pub max_series_per_metric: usize,
    /// Ask OpenAI chat streams for usage when the client did not, and hide it from the client.
    #[serde(default = "default_true")]
    pub inject_stream_usage: bool,
    /// GenAI metric names, `OTEL_SEMCONV_STABILITY_OPT_IN`-style: empty for the newest
    /// conventions, `gen_ai_previous` for the earlier names, `gen_ai_previous/dup` for both
    /// (`TOKENWARDEN_SEMCONV_OPT_IN` overrides it).
    #[serde(default)]
    pub semconv_opt_in: String,
}

/// OTLP exporter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Collector endpoint.
    pub endpoint: String,
    /// Wire protocol.
    #[serde(default)]
    pub protocol: OtlpProtocol,
}

/// OTLP metric export (the standard `OTEL_EXPORTER_OTLP_METRICS_*` variables override it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpMetricsConfig {
    /// Collector endpoint.
    pub endpoint: String,
    /// Wire protocol.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Time between exports.
    #[serde(default = "default_metric_export_interval", with = "humantime_serde")]
    pub interval: Duration,
}

fn default_metric_export_interval() -> Duration {
    Duration::from_secs(60)
}

/// OTLP wire protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/gRPC.
    #[default]
    Grpc,
    /// OTLP/HTTP protobuf.
    Http,
}

/// Span attribute vocabulary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Conventions {
    /// OpenTelemetry GenAI semantic conventions.
    #[default]
    Genai,
    /// Arize OpenInference.
    Openinference,
    /// Both on every span.
    Both,
}

/// Token and cost budgets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetsConfig {
    /// Where spend is kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// What to do when the store cannot be reached.
    #[serde(default)]
    pub on_store_unreachable: OnStoreUnreachable,
    /// Limits, each checked on every call.
    #[serde(default)]
    pub limits: Vec<LimitConfig>,
    /// Output tokens reserved for a call that sets no `max_tokens` (and its cut threshold).
    #[serde(default = "default_max_output_tokens")]
    pub default_max_output_tokens: u64,
    /// The status a lifetime limit refuses with.
    #[serde(default)]
    pub lifetime_refusal: LifetimeRefusal,
    /// A session's budget record is kept this long after its last call, then forgotten (its
    /// next call starts from zero): state stays bounded however many session ids traffic sends.
    #[serde(default = "default_session_retention", with = "humantime_serde")]
    pub session_retention: Duration,
    /// A task's budget record is kept this long after its last call, then forgotten.
    #[serde(default = "default_task_retention", with = "humantime_serde")]
    pub task_retention: Duration,
    /// Leased limits: scopes whose limits a sidecar draws on through slices (shared stores).
    #[serde(default)]
    pub leases: LeasesConfig,
}

/// Leased limits: a sidecar takes a slice of what a scope has left and admits calls against it
/// locally (see `budget::slices`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeasesConfig {
    /// agent and/or global; none by default (every call reserves in the store).
    #[serde(default)]
    pub scopes: Vec<LimitScope>,
    /// Smallest slice, as a fraction of each limit.
    #[serde(default = "default_lease_min")]
    pub min: f64,
    /// Largest slice, as a fraction of each limit.
    #[serde(default = "default_lease_max")]
    pub max: f64,
    /// A slice is sized to last this long at the sidecar's recent rate, and given back after it.
    #[serde(default = "default_lease_lasts", with = "humantime_serde")]
    pub lasts: Duration,
}

impl Default for LeasesConfig {
    fn default() -> Self {
        Self {
            scopes: Vec::new(),
            min: default_lease_min(),
            max: default_lease_max(),
            lasts: default_lease_lasts(),
        }
    }
}

fn default_lease_min() -> f64 {
    0.001
}
fn default_lease_max() -> f64 {
    0.05
}
fn default_lease_lasts() -> Duration {
    Duration::from_secs(2)
}

/// How a lifetime limit refuses a call (windowed limits always answer 429 with `Retry-After`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifetimeRefusal {
    /// 402 (Anthropic `billing_error`): no mainstream client retries it.
    #[default]
    PaymentRequired,
    /// 429 with `x-should-retry: false`, as CONTRACT.md first said: the official SDKs do not
    /// retry it, the Vercel AI SDK, google-genai and litellm do.
    RateLimited,
}

/// Budget store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// memory | redis | redis_cluster.
    #[serde(default)]
    pub kind: StoreKind,
    /// Memory store snapshot file.
    #[serde(default = "default_snapshot_path")]
    pub snapshot_path: PathBuf,
    /// Redis URL for the redis store.
    #[serde(default)]
    pub url: Option<String>,
    /// Seed nodes (`redis://host:port`) for the redis_cluster store.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Redis connect and per-operation timeout.
    #[serde(default = "default_store_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How often the memory store is snapshotted (also at shutdown).
    #[serde(default = "default_snapshot_interval", with = "humantime_serde")]
    pub snapshot_interval: Duration,
    /// Redis store: an in-flight call's reservation outlives its proxy's last renewal by this
    /// long (renewed every third of it), so a proxy that dies cannot hold budget forever.
    #[serde(default = "default_reservation_lease", with = "humantime_serde")]
    pub reservation_lease: Duration,
    /// Redis stores: replicas each settle waits for (`WAIT`, off the response path) before it is
    /// done, so a failover loses no settled spend; 0 = asynchronous replication only.
    #[serde(default)]
    pub settle_replicas: u32,
}

/// Budget store kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// Embedded, snapshotted to a file.
    #[default]
    Memory,
    /// Shared by every replica.
    Redis,
    /// Shared by every replica, on a Redis Cluster.
    RedisCluster,
}

/// Behaviour when the budget store is unreachable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreUnreachable {
    /// Let calls through, counted.
    #[default]
    FailOpen,
    /// Refuse calls.
    FailClosed,
}

/// One budget limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// session | task | agent | global.
    pub scope: LimitScope,
    /// Token limit.
    #[serde(default)]
    pub tokens: Option<u64>,
    /// USD limit.
    #[serde(default)]
    pub usd: Option<f64>,
    /// `lifetime` or a duration such as `1m`, `1h`, `1d`.
    #[serde(default = "default_window")]
    pub window: String,
    /// reject | cut | observe.
    #[serde(default)]
    pub action: LimitAction,
    /// Fraction of the limit that raises a warning.
    #[serde(default)]
    pub warn_at: Option<f64>,
}

/// Budget scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitScope {
    /// Per session id.
    Session,
    /// Per task id (a supervisor and its workers, across sidecars with the Redis store).
    Task,
    /// Per agent name.
    Agent,
    /// The whole sidecar.
    Global,
}

/// What a breach does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitAction {
    /// 429 before forwarding.
    #[default]
    Reject,
    /// End an in-flight stream cleanly at the limit.
    Cut,
    /// Count and alert only.
    Observe,
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Uncached input.
    pub input: f64,
    /// Output (reasoning included).
    pub output: f64,
    /// Input read from the provider's cache.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Input written to the provider's cache with the default (five-minute) lifetime; unset →
    /// the input price.
    #[serde(default)]
    pub cache_creation_input: Option<f64>,
    /// Input written to the provider's cache with a one-hour lifetime (Anthropic
    /// `ephemeral_1h_input_tokens`); unset → 2 × `input`, Anthropic's multiplier.
    #[serde(default)]
    pub cache_creation_input_1h: Option<f64>,
    /// Factor applied to every price above for usage billed at the Batch API's rate (a batch
    /// output file, a Message Batch's results); unset → 0.5, OpenAI's and Anthropic's batch
    /// discount.
    #[serde(default)]
    pub batch: Option<f64>,
    /// Audio input (Realtime API, Chat Completions audio models); unset → the input price.
    #[serde(default)]
    pub audio_input: Option<f64>,
    /// Audio input read from the provider's cache; unset → the cached input price.
    #[serde(default)]
    pub cached_audio_input: Option<f64>,
    /// Audio output (Realtime API, Chat Completions audio models); unset → the output price.
    #[serde(default)]
    pub audio_output: Option<f64>,
    /// Dearer prices for the whole call when its input is long (Gemini 2.5 Pro and Claude's 1M
    /// context bill every token of a call over 200k input tokens at higher rates).
    #[serde(default)]
    pub long_context: Option<LongContextPrice>,
    /// USD per 1,000 web searches the provider ran in a call (Anthropic
    /// `server_tool_use.web_search_requests`, OpenAI Responses `web_search_call` items); unset →
    /// not priced. Never scaled by `batch` nor `long_context`.
    #[serde(default)]
    pub web_search: Option<f64>,
    /// USD per 1,000 file searches (OpenAI Responses `file_search_call` items); unset → not
    /// priced.
    #[serde(default)]
    pub file_search: Option<f64>,
}

/// The prices of a call whose input tokens (cached and cache writes included) exceed `above`.
/// Keys left out default as in a plain entry, from this entry's `input`; audio and batch keys are
/// the model's.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongContextPrice {
    /// Input tokens past which these prices apply.
    pub above: u64,
    /// Uncached input.
    pub input: f64,
    /// Output.
    pub output: f64,
    /// Cache reads; unset → this entry's `input`.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Five-minute cache writes; unset → this entry's `input`.
    #[serde(default)]
    pub cache_creation_input: Option<f64>,
    /// One-hour cache writes; unset → 2 × this entry's `input`.
    #[serde(default)]
    pub cache_creation_input_1h: Option<f64>,
}

/// Policies for one agent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPolicy {
    /// Only these tools may be declared or called.
    #[serde(default)]
    pub allowed_tools: Option<Vec<String>>,
    /// These tools may never be declared or called.
    #[serde(default)]
    pub denied_tools: Vec<String>,
    /// Calls per session.
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// Tool calls to these are flagged as needing approval.
    #[serde(default)]
    pub require_approval: Vec<String>,
    /// A request declaring a denied or unlisted tool: `reject` (403) or `strip` (tool removed).
    #[serde(default)]
    pub denied_tool_action: DeclaredToolAction,
    /// Response tool calls that are denied, undeclared or invalid: `flag` or `block`.
    #[serde(default)]
    pub tool_call_action: Enforcement,
    /// Calls to `require_approval` tools: `flag`, `block`, or `hold` (an MCP `tools/call` waits
    /// for a person's decision; a model's tool call on the LLM leg is flagged).
    #[serde(default)]
    pub approval_action: ApprovalAction,
    /// Requests whose estimated input plus `max_tokens` exceed the model's window: `flag` or `block`.
    #[serde(default)]
    pub context_window_action: Enforcement,
    /// The same request repeated within a session.
    #[serde(default)]
    pub loop_detection: LoopDetection,
    /// Patterns request content must not contain (answered 400 naming the pattern id).
    #[serde(default)]
    pub forbidden_input: Vec<ForbiddenPattern>,
    /// Upper bound on the output tokens a request may ask for.
    #[serde(default)]
    pub max_tokens_cap: Option<MaxTokensCap>,
    /// Substrings marking an OpenAI tool message (or Responses tool output) as a failed result.
    #[serde(default)]
    pub tool_error_markers: Vec<String>,
}

/// What happens to a request that declares a tool the agent may not use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeclaredToolAction {
    /// Refuse the request (403 naming the tool).
    #[default]
    Reject,
    /// Remove the tool from the request and forward the rest.
    Strip,
}

/// Flag (count, put on the span) or block a policy violation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Count it and put it on the span; the call goes on.
    #[default]
    Flag,
    /// Count it and refuse the request (or replace a JSON response) with a 403.
    Block,
}

/// What happens to a call of a `require_approval` tool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalAction {
    /// Count it and put it on the span; the call goes on.
    #[default]
    Flag,
    /// Refuse it (a model's response withheld, an MCP call answered with a JSON-RPC error).
    Block,
    /// An MCP `tools/call` is kept from the server until a person approves it on the admin API;
    /// a model's tool call on the LLM leg is flagged (the hold applies when the agent runs it).
    Hold,
}

/// Loop detection: the same normalised request (model, messages, tools) repeated in a session.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopDetection {
    /// On by default (as a flag).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Identical requests within `window` that make a loop (the request reaching it is flagged).
    #[serde(default = "default_loop_threshold")]
    pub threshold: u32,
    /// How far back identical requests count.
    #[serde(default = "default_loop_window", with = "humantime_serde")]
    pub window: Duration,
    /// `flag` or `block` (403).
    #[serde(default)]
    pub action: Enforcement,
}

/// One forbidden input pattern: exactly one of `contains` and `regex`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForbiddenPattern {
    /// Named in the refusal instead of the matched content.
    pub id: String,
    /// A plain substring.
    #[serde(default)]
    pub contains: Option<String>,
    /// A regular expression (Rust `regex` syntax).
    #[serde(default)]
    pub regex: Option<String>,
    /// Match regardless of case.
    #[serde(default)]
    pub case_insensitive: bool,
}

/// A cap on the output tokens a request may ask for.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxTokensCap {
    /// Largest `max_tokens` (or the provider's equivalent) allowed.
    pub limit: u64,
    /// `clamp` (rewrite to the limit) or `reject` (403).
    #[serde(default)]
    pub action: CapAction,
}

/// What a request over the `max_tokens` cap gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CapAction {
    /// Rewrite the request's value to the cap (and add the cap when the request set none).
    #[default]
    Clamp,
    /// Refuse with a 403.
    Reject,
}

/// What the proxy knows about a model.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    /// Context window in tokens.
    pub context_window: u64,
}

/// Alert delivery.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// JSON POST on budget warn and breach, and on each tool call awaiting approval.
    #[serde(default)]
    pub webhook: Option<String>,
}

/// Human approval of held MCP tool calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// How long a request waits for a decision, and an approval for the agent to use it.
    #[serde(default = "default_approval_expiry", with = "humantime_serde")]
    pub expiry: Duration,
    /// Most approvals pending at once; a held call beyond it is refused.
    #[serde(default = "default_max_pending_approvals")]
    pub max_pending: usize,
    /// The approvals page as the deciding person reaches it (the webhook's link); unset →
    /// `http://{admin_listen}/approvals`.
    #[serde(default)]
    pub page_url: Option<String>,
}

fn default_approval_expiry() -> Duration {
    Duration::from_secs(600)
}

fn default_max_pending_approvals() -> usize {
    256
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            expiry: default_approval_expiry(),
            max_pending: default_max_pending_approvals(),
            page_url: None,
        }
    }
}

// === impl Config ===

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            routes: default_routes(),
            server: ServerConfig::default(),
            upstream: UpstreamConfig::default(),
            logging: LoggingConfig::default(),
            identity: IdentityConfig::default(),
            telemetry: TelemetryConfig::default(),
            budgets: BudgetsConfig::default(),
            pricing: BTreeMap::new(),
            agents: BTreeMap::new(),
            models: BTreeMap::new(),
            alerts: AlertsConfig::default(),
            approvals: ApprovalsConfig::default(),
            admin_token: None,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_request_body_bytes: default_max_request_body_bytes(),
            header_read_timeout: default_header_read_timeout(),
            body_read_timeout: default_body_read_timeout(),
            max_headers: default_max_headers(),
            max_header_bytes: default_max_header_bytes(),
            http2_max_concurrent_streams: default_h2_max_concurrent_streams(),
            shutdown_grace: default_shutdown_grace(),
            write_timeout: default_write_timeout(),
            max_buffered_request_bytes: default_max_buffered_request_bytes(),
            runtime: RuntimeMode::default(),
            workers: None,
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            connect_timeout: default_connect_timeout(),
            first_byte_timeout: default_first_byte_timeout(),
            idle_timeout: default_idle_timeout(),
            pool_idle_timeout: default_pool_idle_timeout(),
            pool_max_idle_per_host: default_pool_max_idle_per_host(),
        }
    }
}

impl UpstreamConfig {
    /// These timeouts with a route's overrides applied.
    pub fn with_override(&self, o: Option<&TimeoutsOverride>) -> UpstreamConfig {
        let mut t = *self;
        if let Some(o) = o {
            t.connect_timeout = o.connect_timeout.unwrap_or(t.connect_timeout);
            t.first_byte_timeout = o.first_byte_timeout.unwrap_or(t.first_byte_timeout);
            t.idle_timeout = o.idle_timeout.unwrap_or(t.idle_timeout);
        }
        t
    }
}

impl Default for LoopDetection {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: default_loop_threshold(),
            window: default_loop_window(),
            action: Enforcement::Flag,
        }
    }
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self { access_log: true }
    }
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            session_headers: default_session_headers(),
            agent_header: default_agent_header(),
            session_idle_timeout: default_session_idle_timeout(),
            task_headers: default_task_headers(),
            task_from_trace: true,
            task_idle_timeout: default_task_idle_timeout(),
            max_live_tasks: default_max_live_tasks(),
            max_live_sessions: default_max_live_sessions(),
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            service_name: default_service_name(),
            otlp: None,
            otlp_metrics: None,
            conventions: Conventions::default(),
            capture_content: false,
            redact_patterns: Vec::new(),
            max_content_bytes: default_max_content_bytes(),
            max_label_values: default_max_label_values(),
            max_series_per_metric: default_max_series_per_metric(),
            inject_stream_usage: true,
            semconv_opt_in: String::new(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::default(),
            snapshot_path: default_snapshot_path(),
            url: None,
            nodes: Vec::new(),
            timeout: default_store_timeout(),
            snapshot_interval: default_snapshot_interval(),
            reservation_lease: default_reservation_lease(),
            settle_replicas: 0,
        }
    }
}

impl Default for BudgetsConfig {
    fn default() -> Self {
        Self {
            store: StoreConfig::default(),
            on_store_unreachable: OnStoreUnreachable::default(),
            limits: Vec::new(),
            default_max_output_tokens: default_max_output_tokens(),
            session_retention: default_session_retention(),
            task_retention: default_task_retention(),
            lifetime_refusal: LifetimeRefusal::default(),
            leases: LeasesConfig::default(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
fn default_routes() -> Vec<RouteConfig> {
    vec![RouteConfig {
        name: "openai".into(),
        path_prefix: "/".into(),
        strip_prefix: false,
        upstream: "https://api.openai.com".into(),
        protocol: default_protocol(),
        ca_file: None,
        agent: None,
        timeouts: None,
    }]
}
fn default_max_request_body_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_body_read_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_headers() -> usize {
    100
}
fn default_max_header_bytes() -> usize {
    64 * 1024
}
fn default_h2_max_concurrent_streams() -> u32 {
    256
}
fn default_max_buffered_request_bytes() -> usize {
    128 * 1024 * 1024
}
fn default_write_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(25)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_first_byte_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_pool_idle_timeout() -> Duration {
    Duration::from_secs(90)
}
fn default_pool_max_idle_per_host() -> usize {
    512
}
fn default_true() -> bool {
    true
}
fn default_session_headers() -> Vec<String> {
    [
        "x-session-id",
        "agent-session-id",
        "helicone-session-id",
        "x-litellm-session-id",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}
fn default_agent_header() -> String {
    "x-agent-name".into()
}
fn default_session_idle_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_task_headers() -> Vec<String> {
    vec!["x-task-id".into()]
}
fn default_task_idle_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_max_live_tasks() -> usize {
    100_000
}
fn default_max_live_sessions() -> usize {
    100_000
}
fn default_task_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_protocol() -> String {
    "auto".into()
}
fn default_service_name() -> String {
    "tokenwarden".into()
}
fn default_max_label_values() -> usize {
    200
}
fn default_max_series_per_metric() -> usize {
    DEFAULT_MAX_SERIES
}
fn default_max_content_bytes() -> usize {
    16 * 1024
}
fn default_session_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_reservation_lease() -> Duration {
    Duration::from_secs(30)
}
fn default_snapshot_path() -> PathBuf {
    PathBuf::from("data/budgets.json")
}
fn default_loop_threshold() -> u32 {
    3
}
fn default_loop_window() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_window() -> String {
    "lifetime".into()
}
fn default_store_timeout() -> Duration {
    Duration::from_millis(500)
}
fn default_snapshot_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_max_output_tokens() -> u64 {
    4096
}
