//! tokenwarden: a transparent sidecar proxy that makes LLM traffic observable and bounded.
//!
//! Module map, in layer order (lower layers never import higher ones; `tests/module_graph.rs`
//! checks it; ARCHITECTURE.md has the life of one request):
//! - [`config`] — the YAML file, strict and defaulted; imports nothing of ours.
//! - [`sse`] — incremental SSE and NDJSON decoders (bytes only).
//! - [`tokens`] — token counts of text (o200k tokenizer).
//! - [`http_client`] — the pooled hyper + rustls client every outbound call uses.
//! - [`mcp`] — the Model Context Protocol's JSON-RPC messages and `tools/list` results (no HTTP).
//! - [`providers`] — one folder per provider format behind the `Adapter` trait and its registry:
//!   request facts, response and stream parsing, usage, tools, content, stream rewrites.
//! - [`record`] — the call record the consumers read: labels, facts, usage and its source, the
//!   finished call, typed states.
//! - [`body`] — response body wrappers: observing pass-through, cut at a budget, hidden usage,
//!   MCP answers read message by message.
//! - [`session`] — session id, step counter, idle expiry, per-session totals.
//! - [`task`] — task id (header, baggage, trace id), per-task numbers of this sidecar, idle expiry.
//! - [`telemetry`] — logging, metric names and recorder, bounded labels, spans and their export.
//! - [`budget`] — token and cost budgets: admission, settlement, stores, alerts.
//! - [`policy`] — per-agent tool, step, input and loop rules.
//! - [`proxy`] — the per-request pipeline that orchestrates all of the above.
//! - [`server`] — proxy and admin listeners, connection hardening, reload, graceful shutdown.

pub mod approval;
pub mod body;
pub mod budget;
pub mod cli;
pub mod config;
pub mod http_client;
pub mod mcp;
pub mod policy;
pub mod providers;
pub mod proxy;
pub mod record;
pub mod server;
pub mod session;
pub mod sse;
pub mod task;
pub mod telemetry;
pub mod tokens;
