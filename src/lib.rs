//! tokenwarden: a transparent sidecar proxy that makes LLM traffic observable and bounded.
//!
//! Module map (see ARCHITECTURE.md for the life of one request):
//! - [`config`] — the YAML file, strict and defaulted.
//! - [`server`] — proxy and admin listeners, connection hardening, graceful shutdown.
//! - [`proxy`] — the per-request pipeline: route, read body, forward, respond, errors.
//! - [`session`] — session id (headers, baggage, body), step counter, idle expiry.
//! - [`budget`] — token and cost budgets: admission, settlement, stores, alerts, cut.
//! - [`body`] — the observing pass-through response body.
//! - [`sse`] — incremental SSE and NDJSON decoders.
//! - [`providers`] — provider adapters: response bodies → usage, tool calls, finish reasons.
//! - [`telemetry`] — logging, Prometheus metrics, bounded labels.
//! - [`tokens`] — token estimates (o200k tokenizer) where no provider count exists.

pub mod body;
pub mod budget;
pub mod cli;
pub mod config;
pub mod http_client;
pub mod policy;
pub mod providers;
pub mod proxy;
pub mod record;
pub mod server;
pub mod session;
pub mod sse;
pub mod telemetry;
pub mod tokens;
