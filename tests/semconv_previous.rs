//! The switch back to the GenAI metric names of earlier releases, over real sockets:
//! `telemetry.semconv_opt_in: gen_ai_previous` in the config yields exactly today's names
//! (CONTRACT.md's list) and none of the newest; `TOKENWARDEN_SEMCONV_OPT_IN=gen_ai_previous/dup`
//! on the built binary yields both sets and wins over the config. On spans the switch brings back
//! the cache write count's earlier name (`gen_ai.usage.cache_creation.input_tokens`, decoded from
//! real OTLP) in place of `gen_ai.usage.cache_write.input_tokens`.
//!
//! One test in this binary: the switch is process-wide, like the metrics it names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod otlp_receiver;

use common::*;
use otlp_receiver::*;
use tokenwarden::telemetry::metrics as m;

const STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;

/// One streamed chat as `agent`, then the scrape.
async fn streamed_call(proxy: &str, admin: &str, agent: &str) -> String {
    let (resp, _) = post(
        &format!("http://{proxy}/v1/chat/completions"),
        &[
            ("x-agent-name", agent),
            ("x-mock-input-tokens", "30"),
            ("x-mock-output-chunks", "3"),
        ],
        STREAM,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (_, body) = get(&format!("http://{admin}/metrics")).await;
    String::from_utf8(body.to_vec()).unwrap()
}

fn count(text: &str, name: &str, agent: &str) -> f64 {
    metric_sum(text, &format!("{name}_count"), &[("agent", agent)])
}

#[tokio::test]
async fn gen_ai_previous_yields_todays_names_and_dup_yields_both() {
    let mock = mock().await;

    // The config switch: today's names, and no newest one.
    let proxy = TestProxy::to(
        "previous",
        mock.addr(),
        "telemetry:\n  semconv_opt_in: gen_ai_previous\n",
    )
    .await;
    let text = streamed_call(&proxy.addr.to_string(), &proxy.admin.to_string(), "prev").await;
    let usage = |kind| {
        metric_value(
            &text,
            "gen_ai_client_token_usage_sum",
            &[("agent", "prev"), ("gen_ai_token_type", kind)],
        )
    };
    assert_eq!(usage("input"), 30.0, "{text}");
    assert!(usage("output") > 0.0, "{text}");
    assert_eq!(count(&text, m::GEN_AI_OPERATION_DURATION, "prev"), 1.0);
    assert_eq!(count(&text, m::GEN_AI_TIME_TO_FIRST_CHUNK, "prev"), 1.0);
    assert!(count(&text, m::GEN_AI_TIME_PER_OUTPUT_CHUNK, "prev") >= 1.0);
    for name in m::GEN_AI_PREVIOUS_NAMES {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
    }
    assert!(
        !text.contains("gen_ai_client_inference_"),
        "a newest name under gen_ai_previous:\n{text}"
    );
    proxy.stop().await;

    // Spans under the switch: the cache write count under its earlier name only.
    let rx = Receiver::grpc().await;
    let anthropic = TestProxy::to(
        "previous-spans",
        fixture_upstream().await,
        &format!(
            "telemetry:\n  semconv_opt_in: gen_ai_previous\n  otlp:\n    endpoint: {}\n    protocol: grpc\n",
            rx.endpoint()
        ),
    )
    .await;
    let (resp, _) = post(
        &anthropic.url("/v1/messages"),
        &[
            ("x-agent-name", "prev-spans"),
            ("x-fixture", "wild/anthropic/cache_ttl_stream.sse"),
        ],
        r#"{"model":"claude-sonnet-4-6","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let span = rx
        .wait_for("the Anthropic call's span", |r| {
            attrs(&r.span).contains_key("gen_ai.usage.input_tokens")
        })
        .await;
    let a = attrs(&span.span);
    assert_eq!(
        a.get("gen_ai.usage.cache_creation.input_tokens"),
        Some(&V::I(556)),
        "{a:?}"
    );
    assert!(
        !a.contains_key("gen_ai.usage.cache_write.input_tokens"),
        "{a:?}"
    );
    anthropic.stop().await;

    // The environment variable on the built binary wins over the config: both sets.
    let config = config_file(&format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\ntelemetry:\n  semconv_opt_in: gen_ai_previous\nroutes:\n  - name: dup\n    path_prefix: /\n    upstream: http://{}\n",
        mock.addr()
    ));
    let child = ProxyProcess::spawn_with_env(
        config.path(),
        &[("TOKENWARDEN_SEMCONV_OPT_IN", "gen_ai_previous/dup")],
    )
    .await;
    let text = streamed_call(&child.addr.to_string(), &child.admin.to_string(), "dup").await;
    for (name, n) in [
        (m::GEN_AI_OPERATION_DURATION, 1.0),
        (m::GEN_AI_TIME_TO_FIRST_CHUNK, 1.0),
        (m::GEN_AI_INFERENCE_DURATION, 1.0),
        (m::GEN_AI_INFERENCE_TIME_TO_FIRST_CHUNK, 1.0),
        (m::GEN_AI_OPERATION_INPUT_TOKENS, 1.0),
        // One observation per token type (input, output).
        (m::GEN_AI_TOKEN_USAGE, 2.0),
    ] {
        assert_eq!(count(&text, name, "dup"), n, "{name}:\n{text}");
    }
    assert_eq!(
        metric_sum(&text, m::GEN_AI_USAGE_INPUT_TOKENS, &[("agent", "dup")]),
        30.0
    );
    child.stop_and_collect_logs().await;
}
