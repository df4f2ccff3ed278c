//! Every metric name CONTRACT.md fixes is defined in `telemetry::metrics` (a rename breaks the
//! build, not the dashboards), matches CONTRACT.md when the design docs are checked out next to
//! the repository, and — for the metrics this branch records — is really exported after traffic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use tokenwarden::telemetry::metrics as m;

/// The names in CONTRACT.md's "Prometheus metrics" section, copied here on purpose.
const CONTRACT: &[&str] = &[
    "gen_ai_client_token_usage",
    "gen_ai_client_operation_duration_seconds",
    "gen_ai_client_operation_time_to_first_chunk_seconds",
    "gen_ai_client_operation_time_per_output_chunk_seconds",
    "tokenwarden_requests_total",
    "tokenwarden_tokens_total",
    "tokenwarden_cost_usd_total",
    "tokenwarden_budget_decisions_total",
    "tokenwarden_budget_exceeded_total",
    "tokenwarden_budget_used_ratio",
    "tokenwarden_policy_violations_total",
    "tokenwarden_tool_calls_total",
    "tokenwarden_tool_results_total",
    "tokenwarden_context_utilization_ratio",
    "tokenwarden_upstream_errors_total",
    "tokenwarden_client_disconnects_total",
    "tokenwarden_unparsed_bodies_total",
    "tokenwarden_sessions_active",
    "tokenwarden_session_steps",
    "tokenwarden_session_duration_seconds",
    "tokenwarden_overhead_seconds",
    "tokenwarden_spans_dropped_total",
    "tokenwarden_build_info",
];

/// Recorded by policies and context estimation (not written yet): checked as constants only
/// until their recorders exist; then move them out of this list.
#[test]
fn the_constants_are_the_contract_names() {
    assert_eq!(m::CONTRACT_NAMES, CONTRACT);
}

/// Backticked metric names in CONTRACT.md's metrics section.
fn names_in_contract(text: &str) -> BTreeSet<String> {
    let start = text
        .find("## Prometheus metrics")
        .expect("CONTRACT.md has a Prometheus metrics section");
    let section = &text[start + 3..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|code| {
            let name: String = code
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            (name.starts_with("tokenwarden_") || name.starts_with("gen_ai_client_")).then_some(name)
        })
        .collect()
}

#[test]
fn the_list_matches_contract_md_when_it_is_checked_out() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/design/CONTRACT.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (shared/ is checked out beside the repository, as in CI)",
            path.display()
        )
    });
    let ours: BTreeSet<String> = CONTRACT.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        names_in_contract(&text),
        ours,
        "CONTRACT.md and this list differ"
    );
}

fn exported(metrics: &str, name: &str) -> bool {
    metrics.lines().any(|l| {
        l.strip_prefix(name).is_some_and(|rest| {
            rest.starts_with(' ') || rest.starts_with('{') || rest.starts_with("_bucket")
        })
    })
}

#[tokio::test]
async fn every_contract_metric_recorded_here_is_exported_after_traffic() {
    let mock = mock().await;
    let proxy = TestProxy::to(
        "llm",
        mock.addr(),
        "identity:\n  session_idle_timeout: 300ms\n\
         budgets:\n  store: {kind: memory, snapshot_path: ''}\n  limits:\n    \
         - {scope: agent, tokens: 10, action: observe}\n\
         pricing:\n  gpt-4o-mini: {input: 0.15, output: 0.60}\n\
         agents:\n  default:\n    denied_tools: [rm_rf]\n",
    )
    .await;
    let url = proxy.url("/v1/chat/completions");
    let stream = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let (r, _) = post(
        &url,
        &[("x-session-id", "names-1"), ("x-mock-tool-calls", "1")],
        stream,
    )
    .await;
    assert_eq!(r.status(), 200);
    let (r, _) = post(&url, &[("x-mock-fault", "500")], stream).await;
    assert_eq!(r.status(), 500);
    let chat = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    // A policy violation (a denied tool) and a tool result the agent reports back.
    let denied = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"go"}],"tools":[{"type":"function","function":{"name":"rm_rf","parameters":{"type":"object"}}}]}"#;
    let (r, _) = post(&url, &[], denied).await;
    assert_eq!(r.status(), 403);
    let result = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"go"},{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"sunny"}]}"#;
    let (r, _) = post(&url, &[], result).await;
    assert_eq!(r.status(), 200);
    let (r, _) = post(&url, &[("x-mock-fault", "garbage")], chat).await;
    assert_eq!(r.status(), 200);
    // A client that leaves mid-stream.
    let req = http::Request::post(&url)
        .header("content-type", "application/json")
        .header("x-mock-output-chunks", "100")
        .header("x-mock-chunk-delay-ms", "50")
        .body(Full::new(Bytes::from(stream)))
        .unwrap();
    let mut body = client().request(req).await.unwrap().into_body();
    let _ = body.frame().await;
    drop(body);

    // The GenAI names of the list are the earlier ones (`gen_ai_previous`); by default the
    // newest conventions' names stand in for them (tests/semconv_previous.rs checks the switch).
    let expected: Vec<&str> = CONTRACT
        .iter()
        .filter(|n| !m::GEN_AI_PREVIOUS_NAMES.contains(n))
        .chain(&[
            m::GEN_AI_INFERENCE_DURATION,
            m::GEN_AI_INFERENCE_TIME_TO_FIRST_CHUNK,
            m::GEN_AI_INFERENCE_TIME_PER_OUTPUT_CHUNK,
            m::GEN_AI_USAGE_INPUT_TOKENS,
            m::GEN_AI_USAGE_OUTPUT_TOKENS,
            m::GEN_AI_OPERATION_INPUT_TOKENS,
            m::GEN_AI_OPERATION_OUTPUT_TOKENS,
        ])
        .copied()
        .collect();
    let ok = eventually(Duration::from_secs(20), || async {
        let text = proxy.metrics().await;
        expected.iter().all(|n| exported(&text, n))
    })
    .await;
    let text = proxy.metrics().await;
    let missing: Vec<_> = expected.iter().filter(|n| !exported(&text, n)).collect();
    assert!(ok, "not exported: {missing:?}\n{text}");
    proxy.stop().await;
}
