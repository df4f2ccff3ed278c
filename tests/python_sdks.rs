//! The official OpenAI and Anthropic Python SDKs — what users run — talking through the proxy.
//!
//! Needs a Python with `openai` and `anthropic` installed: `$TOKENWARDEN_TEST_PYTHON`, else
//! `.venv-sdk/bin/python` in the repo (scripts/test.sh creates it). Missing → the test fails and
//! says how to get one; it never skips.

// Test helpers panic on failure by design; clippy.toml's test exemption covers #[test] fns only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

async fn run_sdk(which: &str, base: &str) -> serde_json::Value {
    run_sdk_script("sdk_clients.py", which, base).await
}

#[tokio::test]
async fn openai_python_sdk_works_through_the_proxy() {
    let m = mock().await;
    let p = TestProxy::to("sdk-openai", m.addr(), "").await;
    let v = run_sdk("openai", &format!("http://{}", p.addr)).await;
    assert_eq!(v["chat"], 16);
    assert_eq!(v["tool_calls"].as_array().unwrap().len(), 2);
    assert_eq!(v["rate_limit_status"], 429);
    let got = m.requests();
    assert!(got.iter().all(|r| r
        .headers
        .iter()
        .any(|(n, v)| n == "authorization" && v == "Bearer sk-sdk-test")));
    let text = p.metrics().await;
    let ok = metric_sum(
        &text,
        "tokenwarden_requests_total",
        &[("route", "sdk-openai"), ("status", "2xx")],
    );
    assert!(ok >= 5.0, "{ok} successful requests counted:\n{text}");
}

/// Exact token counts in /metrics for what the official SDKs send: chat (JSON; stream with and
/// without include_usage), responses (JSON, stream), embeddings, Anthropic (JSON, stream, tool
/// use) and Gemini (JSON, stream). The script itself checks that the client which did not ask
/// for usage saw none.
#[tokio::test]
async fn sdk_calls_are_counted_exactly() {
    let m = mock().await;
    let p = TestProxy::start(&format!(
        "routes:\n  - name: sdk-anth\n    path_prefix: /anthropic\n    strip_prefix: true\n    upstream: http://{a}\n  - name: sdk-gem\n    path_prefix: /gemini\n    strip_prefix: true\n    upstream: http://{a}\n  - name: sdk-oai\n    path_prefix: /\n    upstream: http://{a}\n",
        a = m.addr()
    ))
    .await;
    run_sdk("accounting", &format!("http://{}", p.addr)).await;
    let text = p.metrics().await;
    let out = tokenwarden_mock::output_tokens(7, 0, 0) as f64;
    let cases: &[(&str, Option<f64>)] = &[
        ("sdk-chat-json", Some(out)),
        ("sdk-chat-stream-usage", Some(out)),
        ("sdk-chat-stream-nousage", Some(out)),
        ("sdk-resp-json", Some(out)),
        ("sdk-resp-stream", Some(out)),
        ("sdk-embeddings", None),
        ("sdk-anth-json", Some(out)),
        ("sdk-anth-stream", Some(out)),
        (
            "sdk-anth-tools",
            Some(tokenwarden_mock::output_tokens(7, 1, 0) as f64),
        ),
        ("sdk-gemini-json", Some(out)),
        ("sdk-gemini-stream", Some(out)),
    ];
    for (agent, output) in cases {
        let tokens = |kind: &str| {
            metric_sum(
                &text,
                "tokenwarden_tokens_total",
                &[("agent", agent), ("type", kind)],
            )
        };
        assert_eq!(tokens("input"), 23.0, "{agent} input tokens\n{text}");
        if let Some(o) = output {
            assert_eq!(tokens("output"), *o, "{agent} output tokens");
        }
    }
    assert_eq!(
        metric_sum(
            &text,
            "tokenwarden_tool_calls_total",
            &[("agent", "sdk-anth-tools")]
        ),
        1.0
    );
}

#[tokio::test]
async fn anthropic_python_sdk_works_through_the_proxy() {
    let m = mock().await;
    let p = TestProxy::start(&format!(
        "routes:\n  - name: sdk-anthropic\n    path_prefix: /anthropic\n    strip_prefix: true\n    upstream: http://{}\n",
        m.addr()
    ))
    .await;
    let v = run_sdk("anthropic", &format!("http://{}", p.addr)).await;
    assert_eq!(v["messages"], 6);
    assert_eq!(v["stream_tool_uses"], 2);
    assert_eq!(v["server_error_status"], 500);
    let got = m.requests();
    assert!(got.iter().all(|r| r.path.starts_with("/v1/messages")));
    for r in &got {
        assert!(
            // Depending on the SDK version the key travels as x-api-key or as a bearer token;
            // either way it must arrive exactly as the SDK sent it.
            r.headers.iter().any(|(n, v)| {
                (n == "x-api-key" && v == "sk-ant-sdk-test")
                    || (n == "authorization" && v == "Bearer sk-ant-sdk-test")
            }),
            "{:?}",
            r.headers
        );
    }
}
