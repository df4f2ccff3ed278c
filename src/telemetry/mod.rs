//! Logs, metrics and spans: the subscriber, the Prometheus recorder, bounded label values and
//! series, exemplars and the OpenMetrics exposition, which GenAI metric names are exported, the
//! per-call OTLP span (trace context, GenAI / OpenInference attributes, content capture), and the
//! span of each MCP request.

pub mod call_series;
pub mod content;
pub mod exemplars;
pub mod handles;
pub mod labels;
pub mod logging;
pub mod mcp;
pub mod metrics;
pub mod openinference;
pub mod otlp;
pub mod semconv;
pub mod series;
pub mod spans;
pub mod trace_context;
