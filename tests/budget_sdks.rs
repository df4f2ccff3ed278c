//! Budgets as the official Python SDKs see them: a lifetime refusal is one `RateLimitError`
//! with nothing more sent upstream (default retries on), in OpenAI and Anthropic shape; a cut
//! stream parses cleanly and ends for length.
//!
//! Needs a Python with `openai` and `anthropic`: `$TOKENWARDEN_TEST_PYTHON`, else
//! `.venv-sdk/bin/python` (scripts/test.sh creates it). Missing → the test fails and says so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

async fn run(which: &str, base: &str) -> serde_json::Value {
    run_sdk_script("budget_clients.py", which, base).await
}

fn routes(mock: std::net::SocketAddr, limits: &str) -> String {
    format!(
        "routes:\n  - name: sdk-b-anth\n    path_prefix: /anthropic\n    strip_prefix: true\n    upstream: http://{mock}\n  - name: sdk-b-oai\n    path_prefix: /\n    upstream: http://{mock}\nbudgets:\n  store:\n    snapshot_path: ''\n  limits:\n{limits}"
    )
}

#[tokio::test]
async fn sdks_get_one_rate_limit_error_and_send_nothing_more_upstream() {
    let m = mock().await;
    // The script's first call per session uses 208 tokens: past the limit whatever the
    // estimate, so the second is refused.
    let p = TestProxy::start(&routes(
        m.addr(),
        "    - scope: session\n      tokens: 100\n      window: lifetime\n",
    ))
    .await;
    let v = run("refusal", &format!("http://{}", p.addr)).await;
    assert_eq!(v["openai_rate_limit_errors"], 1);
    assert_eq!(v["anthropic_rate_limit_errors"], 1);
    assert_eq!(
        m.stats().requests,
        2,
        "refused calls (or SDK retries) reached the upstream"
    );
    let text = p.metrics().await;
    for agent in ["sdk-refusal-oai", "sdk-refusal-anth"] {
        let n = metric_value(
            &text,
            "tokenwarden_budget_exceeded_total",
            &[("scope", "session"), ("agent", agent)],
        );
        assert_eq!(
            n, 1.0,
            "{agent}: the SDK retried a lifetime refusal ({n} refusals)"
        );
    }
}

#[tokio::test]
async fn a_cut_stream_parses_cleanly_in_both_sdks() {
    let m = mock().await;
    let p = TestProxy::start(&routes(
        m.addr(),
        "    - scope: session\n      tokens: 120\n      action: cut\n",
    ))
    .await;
    let v = run("cut", &format!("http://{}", p.addr)).await;
    assert_eq!(v["openai_finish_reason"], "length");
    assert_eq!(v["anthropic_stop_reason"], "max_tokens");
    let full = tokenwarden::mock::output_text(400).len() as u64;
    for k in ["openai_chars", "anthropic_chars"] {
        let n = v[k].as_u64().unwrap();
        assert!(n > 0 && n < full, "{k}: {n} of {full} characters");
    }
}
