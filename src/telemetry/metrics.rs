//! Every metric the proxy exports: names, help text, buckets, and the Prometheus recorder.
//!
//! Names are fixed by CONTRACT.md; dashboards and alert rules depend on them. Recording happens
//! in a few named places in `proxy`, never from provider modules.

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use super::series::SeriesCap;

/// Requests by route, provider, operation, agent and status class.
pub const REQUESTS_TOTAL: &str = "tokenwarden_requests_total";
/// Upstream failures by route and kind.
pub const UPSTREAM_ERRORS_TOTAL: &str = "tokenwarden_upstream_errors_total";
/// Clients that went away before their response ended.
pub const CLIENT_DISCONNECTS_TOTAL: &str = "tokenwarden_client_disconnects_total";
/// Time spent in the sidecar itself, upstream time excluded.
pub const OVERHEAD_SECONDS: &str = "tokenwarden_overhead_seconds";
/// Whole request duration as the client sees it, to the last body byte.
pub const REQUEST_DURATION_SECONDS: &str = "tokenwarden_request_duration_seconds";
/// Tokens by agent, model and type (input counts every input token; the others are subsets).
pub const TOKENS_TOTAL: &str = "tokenwarden_tokens_total";
/// Tool calls the model made, by agent and tool.
pub const TOOL_CALLS_TOTAL: &str = "tokenwarden_tool_calls_total";
/// Tool calls agents executed through MCP routes, by agent, server (route), tool and outcome
/// (ok | error | refused).
pub const TOOL_EXECUTIONS_TOTAL: &str = "tokenwarden_tool_executions_total";
/// Held MCP tool calls awaiting a person's decision.
pub const APPROVALS_PENDING: &str = "tokenwarden_approvals_pending";
/// Approval requests decided, by decision (approved | denied | expired).
pub const APPROVAL_DECISIONS_TOTAL: &str = "tokenwarden_approval_decisions_total";
/// Time from an approval request to its decision (or expiry).
pub const APPROVAL_WAIT_SECONDS: &str = "tokenwarden_approval_wait_seconds";
/// MCP `mcp.client.operation.duration`: each MCP request from the agent's send to its answer,
/// by method, server (route) and error type.
pub const MCP_OPERATION_DURATION: &str = "mcp_client_operation_duration_seconds";
/// Response bodies (or events) that could not be read, by route and reason.
pub const UNPARSED_BODIES_TOTAL: &str = "tokenwarden_unparsed_bodies_total";
/// GenAI `gen_ai.client.inference.duration`: inference calls (chat, text completion, generate
/// content) to the last byte.
pub const GEN_AI_INFERENCE_DURATION: &str = "gen_ai_client_inference_duration_seconds";
/// GenAI `gen_ai.client.inference.time_to_first_chunk` (streams).
pub const GEN_AI_INFERENCE_TIME_TO_FIRST_CHUNK: &str =
    "gen_ai_client_inference_time_to_first_chunk_seconds";
/// GenAI `gen_ai.client.inference.time_per_output_chunk` (streams).
pub const GEN_AI_INFERENCE_TIME_PER_OUTPUT_CHUNK: &str =
    "gen_ai_client_inference_time_per_output_chunk_seconds";
/// GenAI `gen_ai.client.inference.usage.input_tokens` (counter; cached input included).
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai_client_inference_usage_input_tokens_total";
/// GenAI `gen_ai.client.inference.usage.output_tokens` (counter; reasoning included).
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai_client_inference_usage_output_tokens_total";
/// GenAI `gen_ai.client.inference.usage.cache_read.input_tokens` (counter).
pub const GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: &str =
    "gen_ai_client_inference_usage_cache_read_input_tokens_total";
/// GenAI `gen_ai.client.inference.usage.cache_write.input_tokens` (counter).
pub const GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: &str =
    "gen_ai_client_inference_usage_cache_write_input_tokens_total";
/// GenAI `gen_ai.client.inference.usage.reasoning.output_tokens` (counter).
pub const GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: &str =
    "gen_ai_client_inference_usage_reasoning_output_tokens_total";
/// GenAI `gen_ai.client.inference.operation.input_tokens`: input tokens per call (histogram).
pub const GEN_AI_OPERATION_INPUT_TOKENS: &str = "gen_ai_client_inference_operation_input_tokens";
/// GenAI `gen_ai.client.inference.operation.output_tokens`: output tokens per call (histogram).
pub const GEN_AI_OPERATION_OUTPUT_TOKENS: &str = "gen_ai_client_inference_operation_output_tokens";
/// GenAI `gen_ai.client.operation.duration`: calls that are no inference (embeddings, token
/// counts, other paths); with `gen_ai_previous`, every call (the earlier name).
pub const GEN_AI_OPERATION_DURATION: &str = "gen_ai_client_operation_duration_seconds";
/// Earlier name (`gen_ai_previous`): `gen_ai.client.token.usage`, tokens per call by
/// `gen_ai_token_type`.
pub const GEN_AI_TOKEN_USAGE: &str = "gen_ai_client_token_usage";
/// Earlier name (`gen_ai_previous`): `gen_ai.client.operation.time_to_first_chunk`.
pub const GEN_AI_TIME_TO_FIRST_CHUNK: &str = "gen_ai_client_operation_time_to_first_chunk_seconds";
/// Earlier name (`gen_ai_previous`): `gen_ai.client.operation.time_per_output_chunk`.
pub const GEN_AI_TIME_PER_OUTPUT_CHUNK: &str =
    "gen_ai_client_operation_time_per_output_chunk_seconds";
/// Sessions seen within the idle timeout.
pub const SESSIONS_ACTIVE: &str = "tokenwarden_sessions_active";
/// LLM calls per session, recorded when the session ends (idle expiry).
pub const SESSION_STEPS: &str = "tokenwarden_session_steps";
/// Session length from first to last call, recorded when the session ends.
pub const SESSION_DURATION_SECONDS: &str = "tokenwarden_session_duration_seconds";
/// Budget decisions by scope and decision (allowed|warned|rejected|cut|observed).
pub const BUDGET_DECISIONS_TOTAL: &str = "tokenwarden_budget_decisions_total";
/// Settlements that took a scope's spend from below its `warn_at` to at or over it, by scope.
pub const BUDGET_WARN_CROSSED_TOTAL: &str = "tokenwarden_budget_warn_crossed_total";
/// Budget breaches (rejected, cut, observed over the limit) by scope and agent.
pub const BUDGET_EXCEEDED_TOTAL: &str = "tokenwarden_budget_exceeded_total";
/// Spend in USD by agent and model (a gauge that only grows: the facade's counters are integers).
pub const COST_USD_TOTAL: &str = "tokenwarden_cost_usd_total";
/// Tokens of models `pricing` has no price for (while it prices others), by model: spend that
/// costs 0 and that no USD limit sees.
pub const UNPRICED_TOKENS_TOTAL: &str = "tokenwarden_unpriced_tokens_total";
/// Spend in USD per priced call, by agent and model: the cost panels' link to traces (exemplars).
pub const CALL_COST_USD: &str = "tokenwarden_call_cost_usd";
/// Used fraction of agent and global limits.
pub const BUDGET_USED_RATIO: &str = "tokenwarden_budget_used_ratio";
/// Live sessions ended early because `identity.max_live_sessions` were live.
pub const SESSIONS_EVICTED_TOTAL: &str = "tokenwarden_sessions_evicted_total";
/// Tasks with a call through this sidecar within the task idle timeout.
pub const TASKS_ACTIVE: &str = "tokenwarden_tasks_active";
/// New tasks not tracked because `identity.max_live_tasks` were live.
pub const TASKS_UNTRACKED_TOTAL: &str = "tokenwarden_tasks_untracked_total";
/// Admitted LLM calls (steps) per task, recorded when the task ends (idle expiry).
pub const TASK_STEPS: &str = "tokenwarden_task_steps";
/// LLM calls per task, refused ones included, recorded when the task ends.
pub const TASK_LLM_CALLS: &str = "tokenwarden_task_llm_calls";
/// Tool calls the model made per task, recorded when the task ends.
pub const TASK_TOOL_CALLS: &str = "tokenwarden_task_tool_calls";
/// Tool results reported failed per task, recorded when the task ends.
pub const TASK_TOOL_FAILURES: &str = "tokenwarden_task_tool_failures";
/// Calls with a tool call needing approval per task, recorded when the task ends.
pub const TASK_ESCALATIONS: &str = "tokenwarden_task_escalations";
/// Tokens (input + output) per task, recorded when the task ends.
pub const TASK_TOKENS: &str = "tokenwarden_task_tokens";
/// Spend in USD per task, recorded when the task ends.
pub const TASK_COST_USD: &str = "tokenwarden_task_cost_usd";
/// Task length from its first call's start to its last call's end, recorded when it ends.
pub const TASK_DURATION_SECONDS: &str = "tokenwarden_task_duration_seconds";
/// Task budget records the store holds (bounded by `budgets.task_retention`).
pub const BUDGET_TASKS_TRACKED: &str = "tokenwarden_budget_tasks_tracked";
/// Budget store failures by operation.
pub const BUDGET_STORE_ERRORS_TOTAL: &str = "tokenwarden_budget_store_errors_total";
/// 1 while the budget store answers, 0 when it does not.
pub const BUDGET_STORE_UP: &str = "tokenwarden_budget_store_up";
/// Time a call's budget admission took (check-and-reserve in the store, or from a slice): what
/// the ledger adds to the call before it goes upstream.
pub const BUDGET_ADMISSION_SECONDS: &str = "tokenwarden_budget_admission_seconds";
/// Slices of leased limits taken from and returned to the store, by scope.
pub const BUDGET_SLICES_TOTAL: &str = "tokenwarden_budget_slices_total";
/// Slices of leased limits this sidecar holds.
pub const BUDGET_SLICES_OPEN: &str = "tokenwarden_budget_slices_open";
/// Budget alerts dropped because the webhook queue was full.
pub const BUDGET_ALERTS_DROPPED_TOTAL: &str = "tokenwarden_budget_alerts_dropped_total";
/// Budget alerts the webhook did not accept after every retry.
pub const BUDGET_ALERTS_FAILED_TOTAL: &str = "tokenwarden_budget_alerts_failed_total";
/// Policy violations by agent and policy.
pub const POLICY_VIOLATIONS_TOTAL: &str = "tokenwarden_policy_violations_total";
/// What gating a streamed tool call adds: from the frame that completed the call reaching the
/// gate to the call's release, by agent.
pub const TOOL_GATE_DELAY_SECONDS: &str = "tokenwarden_tool_gate_delay_seconds";
/// Tool results agents reported back, by agent, tool and outcome (ok | error).
pub const TOOL_RESULTS_TOTAL: &str = "tokenwarden_tool_results_total";
/// Estimated input tokens over the model's context window, per request.
pub const CONTEXT_UTILIZATION_RATIO: &str = "tokenwarden_context_utilization_ratio";
/// Config reloads by result (ok | error).
pub const CONFIG_RELOAD_TOTAL: &str = "tokenwarden_config_reload_total";
/// Tasks alive on the Tokio runtimes, workers' included (connections, streams, background work).
pub const RUNTIME_ALIVE_TASKS: &str = "tokenwarden_runtime_alive_tasks";
/// Session budget records the store holds (bounded by `budgets.session_retention`).
pub const BUDGET_SESSIONS_TRACKED: &str = "tokenwarden_budget_sessions_tracked";
/// Label values reported as `other` past `telemetry.max_label_values`, by label.
pub const LABEL_VALUES_FOLDED_TOTAL: &str = "tokenwarden_label_values_folded_total";
/// Constant 1, labelled with the version.
pub const BUILD_INFO: &str = "tokenwarden_build_info";

/// Spans dropped because the export queue was full or the collector failed.
pub const SPANS_DROPPED_TOTAL: &str = "tokenwarden_spans_dropped_total";

/// The GenAI metrics of the newest conventions (the default vocabulary).
pub const GEN_AI_LATEST_NAMES: &[&str] = &[
    GEN_AI_INFERENCE_DURATION,
    GEN_AI_INFERENCE_TIME_TO_FIRST_CHUNK,
    GEN_AI_INFERENCE_TIME_PER_OUTPUT_CHUNK,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
    GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    GEN_AI_OPERATION_INPUT_TOKENS,
    GEN_AI_OPERATION_OUTPUT_TOKENS,
    GEN_AI_OPERATION_DURATION,
];

/// The GenAI metrics exported before (`telemetry.semconv_opt_in: gen_ai_previous`), as
/// CONTRACT.md's "Prometheus metrics" list names them.
pub const GEN_AI_PREVIOUS_NAMES: &[&str] = &[
    GEN_AI_TOKEN_USAGE,
    GEN_AI_OPERATION_DURATION,
    GEN_AI_TIME_TO_FIRST_CHUNK,
    GEN_AI_TIME_PER_OUTPUT_CHUNK,
];

/// Every metric name CONTRACT.md's "Prometheus metrics" list fixes, in its order (its GenAI
/// names are [`GEN_AI_PREVIOUS_NAMES`], exported with `gen_ai_previous`; the default GenAI names
/// are [`GEN_AI_LATEST_NAMES`], in its later section).
pub const CONTRACT_NAMES: &[&str] = &[
    GEN_AI_TOKEN_USAGE,
    GEN_AI_OPERATION_DURATION,
    GEN_AI_TIME_TO_FIRST_CHUNK,
    GEN_AI_TIME_PER_OUTPUT_CHUNK,
    REQUESTS_TOTAL,
    TOKENS_TOTAL,
    COST_USD_TOTAL,
    BUDGET_DECISIONS_TOTAL,
    BUDGET_EXCEEDED_TOTAL,
    BUDGET_USED_RATIO,
    POLICY_VIOLATIONS_TOTAL,
    TOOL_CALLS_TOTAL,
    TOOL_RESULTS_TOTAL,
    CONTEXT_UTILIZATION_RATIO,
    UPSTREAM_ERRORS_TOTAL,
    CLIENT_DISCONNECTS_TOTAL,
    UNPARSED_BODIES_TOTAL,
    SESSIONS_ACTIVE,
    SESSION_STEPS,
    SESSION_DURATION_SECONDS,
    OVERHEAD_SECONDS,
    SPANS_DROPPED_TOTAL,
    BUILD_INFO,
];

/// The per-task metrics (CONTRACT.md fixes `tokenwarden_task_steps`,
/// `tokenwarden_task_duration_seconds` and `tokenwarden_task_cost_usd`; the others are ours).
pub const TASK_NAMES: &[&str] = &[
    TASKS_ACTIVE,
    TASKS_UNTRACKED_TOTAL,
    TASK_STEPS,
    TASK_LLM_CALLS,
    TASK_TOOL_CALLS,
    TASK_TOOL_FAILURES,
    TASK_ESCALATIONS,
    TASK_TOKENS,
    TASK_COST_USD,
    TASK_DURATION_SECONDS,
    BUDGET_TASKS_TRACKED,
];

/// Exported names outside CONTRACT.md's "Prometheus metrics" list: the tool leg's (its "Added for
/// the tool leg" section) and the MCP conventions' duration histogram (dashboards use them).
pub const TOOL_LEG_NAMES: &[&str] = &[
    TOOL_EXECUTIONS_TOTAL,
    MCP_OPERATION_DURATION,
    APPROVALS_PENDING,
    APPROVAL_DECISIONS_TOTAL,
    APPROVAL_WAIT_SECONDS,
];

/// Exported names outside CONTRACT.md that the dashboards use to link cost to traces.
pub const EXEMPLAR_NAMES: &[&str] = &[CALL_COST_USD];

/// Buckets for the sidecar's own overhead: tens of microseconds to tens of milliseconds.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05,
];
/// Budget admission: as the overhead, with 0.75, 1.5 and 100–500 ms added, so a p99 against the
/// 1 ms target (issue 21) reads off a bucket bound, and a store timeout is not lumped into 50 ms+.
const ADMISSION_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.000_75, 0.001, 0.001_5, 0.002_5,
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
];
/// Gating delays: a microsecond to ten milliseconds (the target is under one).
const GATE_BUCKETS: &[f64] = &[
    0.000_001, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001,
    0.002_5, 0.005, 0.01,
];
/// GenAI token-usage buckets (semantic conventions v1.41 advisory boundaries).
const TOKEN_BUCKETS: &[f64] = &[
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];
/// Buckets for LLM call durations (the GenAI conventions' operation-duration boundaries).
const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// MCP operation durations (the MCP conventions' advisory boundaries).
const MCP_DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// A person's decision: seconds to an hour (the default expiry is ten minutes).
const APPROVAL_WAIT_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

/// Calls per session.
const STEP_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
/// Session lengths: seconds to hours.
const SESSION_DURATION_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0,
];

/// Task lengths: seconds to a day.
const TASK_DURATION_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 86400.0,
];
/// Counts per task (tool calls, failures, escalations): none to hundreds.
const TASK_COUNT_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
/// Spend per call in USD: a thousandth of a cent to tens of dollars.
const CALL_COST_BUCKETS: &[f64] = &[
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 5.0, 25.0,
];
/// Spend per task in USD: a hundredth of a cent to hundreds of dollars.
const TASK_COST_BUCKETS: &[f64] = &[
    0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 100.0, 500.0,
];

/// Context-window utilisation: a tenth of the window up to overflow.
const RATIO_BUCKETS: &[f64] = &[0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.5];

/// The GenAI conventions' name and unit of a GenAI metric, as OTLP export names it (the
/// Prometheus names are their translation); `None` for the proxy's own metrics, which keep their
/// names.
pub fn otel_name(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        GEN_AI_INFERENCE_DURATION => ("gen_ai.client.inference.duration", "s"),
        GEN_AI_INFERENCE_TIME_TO_FIRST_CHUNK => {
            ("gen_ai.client.inference.time_to_first_chunk", "s")
        }
        GEN_AI_INFERENCE_TIME_PER_OUTPUT_CHUNK => {
            ("gen_ai.client.inference.time_per_output_chunk", "s")
        }
        GEN_AI_USAGE_INPUT_TOKENS => ("gen_ai.client.inference.usage.input_tokens", "{token}"),
        GEN_AI_USAGE_OUTPUT_TOKENS => ("gen_ai.client.inference.usage.output_tokens", "{token}"),
        GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS => (
            "gen_ai.client.inference.usage.cache_read.input_tokens",
            "{token}",
        ),
        GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS => (
            "gen_ai.client.inference.usage.cache_write.input_tokens",
            "{token}",
        ),
        GEN_AI_USAGE_REASONING_OUTPUT_TOKENS => (
            "gen_ai.client.inference.usage.reasoning.output_tokens",
            "{token}",
        ),
        GEN_AI_OPERATION_INPUT_TOKENS => {
            ("gen_ai.client.inference.operation.input_tokens", "{token}")
        }
        GEN_AI_OPERATION_OUTPUT_TOKENS => {
            ("gen_ai.client.inference.operation.output_tokens", "{token}")
        }
        GEN_AI_OPERATION_DURATION => ("gen_ai.client.operation.duration", "s"),
        GEN_AI_TOKEN_USAGE => ("gen_ai.client.token.usage", "{token}"),
        GEN_AI_TIME_TO_FIRST_CHUNK => ("gen_ai.client.operation.time_to_first_chunk", "s"),
        GEN_AI_TIME_PER_OUTPUT_CHUNK => ("gen_ai.client.operation.time_per_output_chunk", "s"),
        MCP_OPERATION_DURATION => ("mcp.client.operation.duration", "s"),
        _ => return None,
    })
}

/// The bucket bounds of a histogram that carries exemplars (the GenAI duration, time to first
/// chunk and token histograms, the cost per call), `None` for every other metric.
pub fn buckets_of(name: &str) -> Option<&'static [f64]> {
    match name {
        GEN_AI_INFERENCE_DURATION
        | GEN_AI_OPERATION_DURATION
        | GEN_AI_INFERENCE_TIME_TO_FIRST_CHUNK
        | GEN_AI_TIME_TO_FIRST_CHUNK => Some(DURATION_BUCKETS),
        GEN_AI_OPERATION_INPUT_TOKENS | GEN_AI_OPERATION_OUTPUT_TOKENS | GEN_AI_TOKEN_USAGE => {
            Some(TOKEN_BUCKETS)
        }
        CALL_COST_USD => Some(CALL_COST_BUCKETS),
        _ => None,
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The recorder [`install`] made the global one.
pub type Recorder = SeriesCap<PrometheusRecorder>;

static RECORDER: OnceLock<&'static Recorder> = OnceLock::new();

/// The process's recorder, once [`install`] made it the global one (`None` before, or when
/// another recorder was installed first).
pub fn recorder() -> Option<&'static Recorder> {
    RECORDER.get().copied()
}

/// Install the process-wide Prometheus recorder once and return its handle.
///
/// Later calls (tests starting several servers in one process) get the same handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets: [(&str, &[f64]); 27] = [
                (BUDGET_ADMISSION_SECONDS, ADMISSION_BUCKETS),
                (CALL_COST_USD, CALL_COST_BUCKETS),
                (TOOL_GATE_DELAY_SECONDS, GATE_BUCKETS),
                (MCP_OPERATION_DURATION, MCP_DURATION_BUCKETS),
                (APPROVAL_WAIT_SECONDS, APPROVAL_WAIT_BUCKETS),
                (CONTEXT_UTILIZATION_RATIO, RATIO_BUCKETS),
                (SESSION_STEPS, STEP_BUCKETS),
                (TASK_STEPS, STEP_BUCKETS),
                (TASK_LLM_CALLS, STEP_BUCKETS),
                (TASK_TOOL_CALLS, TASK_COUNT_BUCKETS),
                (TASK_TOOL_FAILURES, TASK_COUNT_BUCKETS),
                (TASK_ESCALATIONS, TASK_COUNT_BUCKETS),
                (TASK_TOKENS, TOKEN_BUCKETS),
                (TASK_COST_USD, TASK_COST_BUCKETS),
                (TASK_DURATION_SECONDS, TASK_DURATION_BUCKETS),
                (SESSION_DURATION_SECONDS, SESSION_DURATION_BUCKETS),
                (OVERHEAD_SECONDS, OVERHEAD_BUCKETS),
                (REQUEST_DURATION_SECONDS, DURATION_BUCKETS),
                (GEN_AI_TOKEN_USAGE, TOKEN_BUCKETS),
                (GEN_AI_OPERATION_DURATION, DURATION_BUCKETS),
                (GEN_AI_TIME_TO_FIRST_CHUNK, DURATION_BUCKETS),
                (GEN_AI_TIME_PER_OUTPUT_CHUNK, DURATION_BUCKETS),
                (GEN_AI_INFERENCE_DURATION, DURATION_BUCKETS),
                (GEN_AI_INFERENCE_TIME_TO_FIRST_CHUNK, DURATION_BUCKETS),
                (GEN_AI_INFERENCE_TIME_PER_OUTPUT_CHUNK, DURATION_BUCKETS),
                (GEN_AI_OPERATION_INPUT_TOKENS, TOKEN_BUCKETS),
                (GEN_AI_OPERATION_OUTPUT_TOKENS, TOKEN_BUCKETS),
            ];
            let builder = buckets
                .into_iter()
                .try_fold(PrometheusBuilder::new(), |b, (name, bounds)| {
                    b.set_buckets_for_metric(Matcher::Full(name.into()), bounds)
                });
            // No idle timeout: `SeriesCap` keeps resolved handles, which must never outlive
            // their series in the exporter.
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                // Only fails on empty bucket lists, which are constants here.
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            // Leaked once per process: the global recorder lives as long anyway, and a static
            // reference lets `call_series` ask it whether a handle may be kept.
            let cap: &'static Recorder = Box::leak(Box::new(SeriesCap::new(recorder)));
            // Another recorder may already be installed (an embedding application); then our
            // handle renders nothing, which /metrics makes visible rather than hiding.
            if metrics::set_global_recorder(cap).is_ok() {
                let _ = RECORDER.set(cap);
            }
            describe();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            // Present from the start, so an alert on its rate has a series to read.
            metrics::counter!(SPANS_DROPPED_TOTAL).absolute(0);
            metrics::gauge!(APPROVALS_PENDING).set(0.0);
            handle
        })
        .clone()
}

/// The proxy's other runtimes (`server.runtime: per_core` workers), whose tasks the upkeep counts
/// too; each worker adds its handle when it starts.
pub type Runtimes = std::sync::Arc<std::sync::Mutex<Vec<tokio::runtime::Handle>>>;

/// Spawn the recorder's periodic upkeep (histogram maintenance, the task count of the current
/// runtime and of `others`) on the current runtime.
pub fn spawn_upkeep(handle: PrometheusHandle, others: Runtimes) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        let runtime = tokio::runtime::Handle::current().metrics();
        loop {
            tick.tick().await;
            handle.run_upkeep();
            let workers: usize = others
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .map(|h| h.metrics().num_alive_tasks())
                .sum();
            // A task leak shows as a count that grows under steady load (bench/soak.sh).
            metrics::gauge!(RUNTIME_ALIVE_TASKS).set((runtime.num_alive_tasks() + workers) as f64);
        }
    })
}

fn describe() {
    describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "Requests by route, provider, operation, agent and status class (2xx/4xx/5xx/error)."
    );
    describe_counter!(
        UPSTREAM_ERRORS_TOTAL,
        Unit::Count,
        "Upstream failures by route and kind (connect, timeout, reset, status_5xx, status_429)."
    );
    describe_counter!(
        CLIENT_DISCONNECTS_TOTAL,
        Unit::Count,
        "Clients that went away before their response ended."
    );
    describe_histogram!(
        OVERHEAD_SECONDS,
        Unit::Seconds,
        "Time spent in the sidecar itself per request, upstream time excluded."
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Request duration from first byte in to last byte out."
    );
    describe_counter!(
        TOKENS_TOTAL,
        Unit::Count,
        "Tokens by agent, model and type (input|output|cached_input|cache_creation_input|reasoning)."
    );
    describe_counter!(
        TOOL_CALLS_TOTAL,
        Unit::Count,
        "Tool calls the model made, by agent and tool."
    );
    describe_counter!(
        TOOL_EXECUTIONS_TOTAL,
        Unit::Count,
        "Tool calls agents executed through MCP routes, by agent, server, tool and outcome (ok|error|refused)."
    );
    describe_gauge!(
        APPROVALS_PENDING,
        "Held MCP tool calls awaiting a person's decision."
    );
    describe_counter!(
        APPROVAL_DECISIONS_TOTAL,
        Unit::Count,
        "Approval requests decided, by decision (approved|denied|expired)."
    );
    describe_histogram!(
        APPROVAL_WAIT_SECONDS,
        Unit::Seconds,
        "Time from an approval request to its decision or expiry."
    );
    describe_histogram!(
        MCP_OPERATION_DURATION,
        Unit::Seconds,
        "MCP requests from the agent's send to the server's answer, by mcp_method_name, server and error_type (MCP conventions)."
    );
    describe_counter!(
        UNPARSED_BODIES_TOTAL,
        Unit::Count,
        "Response bodies or events forwarded but not understood, by route and reason."
    );
    describe_histogram!(
        GEN_AI_TOKEN_USAGE,
        "Tokens per LLM call by gen_ai_token_type (earlier GenAI name, gen_ai_previous)."
    );
    describe_histogram!(
        GEN_AI_OPERATION_DURATION,
        Unit::Seconds,
        "GenAI calls that are no inference (embeddings, token counts) to the last byte; every call with gen_ai_previous."
    );
    describe_histogram!(
        GEN_AI_TIME_TO_FIRST_CHUNK,
        Unit::Seconds,
        "Streamed calls: time from the request to the first output chunk (earlier GenAI name, gen_ai_previous)."
    );
    describe_histogram!(
        GEN_AI_TIME_PER_OUTPUT_CHUNK,
        Unit::Seconds,
        "Streamed calls: time between consecutive output chunks (earlier GenAI name, gen_ai_previous)."
    );
    describe_histogram!(
        GEN_AI_INFERENCE_DURATION,
        Unit::Seconds,
        "Inference calls (chat, text completion, generate content) to the last byte (GenAI conventions)."
    );
    describe_histogram!(
        GEN_AI_INFERENCE_TIME_TO_FIRST_CHUNK,
        Unit::Seconds,
        "Streamed inference calls: time from the request to the first output chunk (GenAI conventions)."
    );
    describe_histogram!(
        GEN_AI_INFERENCE_TIME_PER_OUTPUT_CHUNK,
        Unit::Seconds,
        "Streamed inference calls: time between consecutive output chunks (GenAI conventions)."
    );
    for (name, help) in [
        (GEN_AI_USAGE_INPUT_TOKENS, "Input tokens of inference calls, cached ones included, by gen_ai_token_modality (GenAI conventions)."),
        (GEN_AI_USAGE_OUTPUT_TOKENS, "Output tokens of inference calls, reasoning included, by gen_ai_token_modality (GenAI conventions)."),
        (GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, "Input tokens served from the provider's cache (GenAI conventions)."),
        (GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS, "Input tokens written to the provider's cache (GenAI conventions)."),
        (GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, "Output tokens spent on reasoning (GenAI conventions)."),
    ] {
        describe_counter!(name, help);
    }
    describe_histogram!(
        GEN_AI_OPERATION_INPUT_TOKENS,
        "Input tokens per inference call (GenAI conventions)."
    );
    describe_histogram!(
        GEN_AI_OPERATION_OUTPUT_TOKENS,
        "Output tokens per inference call (GenAI conventions)."
    );
    describe_gauge!(
        SESSIONS_ACTIVE,
        "Sessions with a call within the idle timeout."
    );
    describe_counter!(
        SESSIONS_EVICTED_TOTAL,
        Unit::Count,
        "Live sessions ended early (the one longest unseen since it was queued) because identity.max_live_sessions were live; a later call starts it again at step 1."
    );
    describe_histogram!(
        SESSION_STEPS,
        Unit::Count,
        "LLM calls per session, recorded when a session ends (idle timeout)."
    );
    describe_histogram!(
        SESSION_DURATION_SECONDS,
        Unit::Seconds,
        "Session length from first to last call, recorded when a session ends."
    );
    describe_gauge!(
        TASKS_ACTIVE,
        "Tasks with a call through this sidecar within the task idle timeout."
    );
    describe_counter!(
        TASKS_UNTRACKED_TOTAL,
        Unit::Count,
        "New tasks not tracked for metrics and the admin API because identity.max_live_tasks were live (their budgets still apply)."
    );
    for (name, help) in [
        (TASK_STEPS, "Admitted LLM calls (steps) per task through this sidecar, recorded when the task ends (idle timeout), by the agent of its first call."),
        (TASK_LLM_CALLS, "LLM calls per task through this sidecar, refused ones included, recorded when the task ends."),
        (TASK_TOOL_CALLS, "Tool calls the model made per task through this sidecar, recorded when the task ends."),
        (TASK_TOOL_FAILURES, "Tool results reported failed per task through this sidecar, recorded when the task ends."),
        (TASK_ESCALATIONS, "Calls calling a tool that needs approval (approval_required) per task through this sidecar, recorded when the task ends."),
        (TASK_TOKENS, "Tokens (input + output) per task through this sidecar, recorded when the task ends."),
    ] {
        describe_histogram!(name, Unit::Count, help);
    }
    describe_histogram!(
        CALL_COST_USD,
        "Spend in USD per priced call (from the pricing table), by agent and model; exemplars link to the call's trace."
    );
    describe_histogram!(
        TASK_COST_USD,
        "Spend in USD per task through this sidecar (from the pricing table), recorded when the task ends."
    );
    describe_histogram!(
        TASK_DURATION_SECONDS,
        Unit::Seconds,
        "Task length through this sidecar, first call's start to last call's end, recorded when the task ends."
    );
    describe_gauge!(
        BUDGET_TASKS_TRACKED,
        "Task budget records the store holds; each is forgotten budgets.task_retention after its last call."
    );
    describe_counter!(
        BUDGET_DECISIONS_TOTAL,
        Unit::Count,
        "Budget decisions per limit by scope and decision (allowed|warned|rejected|cut|observed)."
    );
    describe_counter!(
        super::series::SERIES_FOLDED_TOTAL,
        Unit::Count,
        "Recordings whose traffic-derived labels were reported as `other` because their metric had telemetry.max_series_per_metric label sets already, by metric."
    );
    describe_gauge!(
        RUNTIME_ALIVE_TASKS,
        "Tasks alive on the Tokio runtimes (connections, streams, background work), every 5 s."
    );
    describe_gauge!(
        BUDGET_SESSIONS_TRACKED,
        "Session budget records the store holds; each is forgotten budgets.session_retention after its last call."
    );
    describe_counter!(
        LABEL_VALUES_FOLDED_TOTAL,
        Unit::Count,
        "Label values reported as `other` because their label had telemetry.max_label_values values already (or was over 128 bytes), by label."
    );
    describe_counter!(
        BUDGET_EXCEEDED_TOTAL,
        Unit::Count,
        "Budget breaches (rejected, cut or observed over the limit) by scope and agent."
    );
    describe_gauge!(
        COST_USD_TOTAL,
        "Spend in USD by agent and model, from the pricing table (only grows)."
    );
    describe_counter!(
        UNPRICED_TOKENS_TOTAL,
        Unit::Count,
        "Tokens (input and output) of models pricing has no price for while it prices others: recorded at cost 0, unseen by USD limits, by model."
    );
    describe_gauge!(
        BUDGET_USED_RATIO,
        "Used fraction (spent plus reserved) of agent and global budget limits."
    );
    describe_counter!(
        BUDGET_STORE_ERRORS_TOTAL,
        Unit::Count,
        "Budget store failures by operation (reserve, settle, renew, ping, snapshot, replicate)."
    );
    describe_gauge!(BUDGET_STORE_UP, "1 while the budget store answers, else 0.");
    describe_histogram!(
        BUDGET_ADMISSION_SECONDS,
        Unit::Seconds,
        "Time a call's budget admission took (store round trips, or a slice): the latency budgets add before forwarding."
    );
    describe_counter!(
        BUDGET_SLICES_TOTAL,
        Unit::Count,
        "Slices of leased agent and global limits taken from (op=taken) and given back to (op=returned) the store."
    );
    describe_gauge!(
        BUDGET_SLICES_OPEN,
        "Slices of leased limits this sidecar holds."
    );
    describe_counter!(
        BUDGET_ALERTS_DROPPED_TOTAL,
        Unit::Count,
        "Alerts (budget, approval requests) dropped because the webhook queue was full."
    );
    describe_counter!(
        BUDGET_ALERTS_FAILED_TOTAL,
        Unit::Count,
        "Alerts (budget, approval requests) the webhook did not accept after every retry."
    );
    describe_histogram!(
        TOOL_GATE_DELAY_SECONDS,
        Unit::Seconds,
        "Delay gating adds to a streamed tool call that passes: its completing frame in to its release, by agent."
    );
    describe_counter!(
        BUDGET_WARN_CROSSED_TOTAL,
        Unit::Count,
        "Settlements that took a scope's spend over its warn_at threshold, by scope."
    );
    describe_counter!(
        POLICY_VIOLATIONS_TOTAL,
        Unit::Count,
        "Agent policy violations by agent and policy (flagged or blocked)."
    );
    describe_counter!(
        TOOL_RESULTS_TOTAL,
        Unit::Count,
        "Tool results agents sent back, by agent, tool and outcome (ok|error)."
    );
    describe_histogram!(
        CONTEXT_UTILIZATION_RATIO,
        "Estimated input tokens over the model's context window, per request."
    );
    describe_counter!(
        CONFIG_RELOAD_TOTAL,
        Unit::Count,
        "Config reloads by result (ok|error); a failed reload keeps the running config."
    );
    describe_gauge!(BUILD_INFO, "Constant 1, labelled with the running version.");
    describe_counter!(
        SPANS_DROPPED_TOTAL,
        Unit::Count,
        "Spans not exported: the export queue was full or the collector failed."
    );
}
