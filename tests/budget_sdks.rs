//! Budgets as the official Python SDKs see them: a lifetime refusal (402) is one error naming
//! the budget with nothing more sent upstream (default retries on; google-genai with retries
//! turned on), in OpenAI, Anthropic and Gemini shape; the 429 switch is retried by google-genai;
//! a cut stream parses cleanly and ends for length. Which clients retry what is measured in
//! `tests/fixtures/refusals/README.md`.
//!
//! Needs a Python with `openai`, `anthropic` and `google-genai`: `$TOKENWARDEN_TEST_PYTHON`, else
//! `.venv-sdk/bin/python` (scripts/test.sh creates it). Missing → the test fails and says so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

async fn run(which: &str, base: &str) -> serde_json::Value {
    run_sdk_script("budget_clients.py", which, base).await
}

fn routes(mock: std::net::SocketAddr, limits: &str) -> String {
    format!(
        "routes:\n  - name: sdk-b-anth\n    path_prefix: /anthropic\n    strip_prefix: true\n    upstream: http://{mock}\n  - name: sdk-b-gem\n    path_prefix: /gemini\n    strip_prefix: true\n    upstream: http://{mock}\n    protocol: gemini\n  - name: sdk-b-oai\n    path_prefix: /\n    upstream: http://{mock}\nbudgets:\n  store:\n    snapshot_path: ''\n  limits:\n{limits}"
    )
}

/// Each SDK's second call of a session is refused once: no SDK retried it (the refusal counts
/// once per session) and nothing more went upstream than the three first calls.
async fn refused_once(m: &tokenwarden_mock::MockServer, p: &TestProxy, tag: &str) {
    assert_eq!(
        m.stats().requests,
        3,
        "refused calls (or SDK retries) reached the upstream"
    );
    let text = p.metrics().await;
    for sdk in ["oai", "anth", "gem"] {
        let agent = format!("sdk-{tag}-{sdk}");
        let n = metric_value(
            &text,
            "tokenwarden_budget_exceeded_total",
            &[("scope", "session"), ("agent", &agent)],
        );
        assert_eq!(
            n, 1.0,
            "{agent}: the SDK retried a lifetime refusal ({n} refusals)"
        );
    }
}

const LIFETIME_100: &str = "    - scope: session\n      tokens: 100\n      window: lifetime\n";

#[tokio::test]
async fn sdks_raise_one_error_naming_the_budget_and_send_nothing_more_upstream() {
    let m = mock().await;
    // The script's first call per session uses 208 tokens: past the limit whatever the
    // estimate, so the second is refused.
    let p = TestProxy::start(&routes(m.addr(), LIFETIME_100)).await;
    let v = run("refusal", &format!("http://{}", p.addr)).await;
    // 402: openai-python has no class of its own for it; anthropic's is PaymentRequiredError.
    assert_eq!(v["openai"], "APIStatusError");
    assert_eq!(v["anthropic"], "PaymentRequiredError");
    assert_eq!(v["gemini"], "ClientError");
    refused_once(&m, &p, "refusal").await;
}

/// With `lifetime_refusal: rate_limited` the official SDKs still raise at once (they honour
/// `x-should-retry: false`), but google-genai with retries on sends the call three times.
#[tokio::test]
async fn the_429_switch_is_retried_by_google_genai() {
    let m = mock().await;
    let cfg = routes(m.addr(), LIFETIME_100)
        .replace("  limits:", "  lifetime_refusal: rate_limited\n  limits:");
    let p = TestProxy::start(&cfg).await;
    let v = run("refusal_429", &format!("http://{}", p.addr)).await;
    assert_eq!(v["openai"], "RateLimitError");
    assert_eq!(v["anthropic"], "RateLimitError");
    let text = p.metrics().await;
    let gem = metric_value(
        &text,
        "tokenwarden_budget_exceeded_total",
        &[("scope", "session"), ("agent", "sdk-refusal429-gem")],
    );
    assert_eq!(
        gem, 3.0,
        "google-genai retries a 429 whatever x-should-retry says"
    );
    for sdk in ["oai", "anth"] {
        let agent = format!("sdk-refusal429-{sdk}");
        let n = metric_value(
            &text,
            "tokenwarden_budget_exceeded_total",
            &[("scope", "session"), ("agent", &agent)],
        );
        assert_eq!(n, 1.0, "{agent}");
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
    let full = tokenwarden_mock::output_text(400).len() as u64;
    for k in ["openai_chars", "anthropic_chars"] {
        let n = v[k].as_u64().unwrap();
        assert!(n > 0 && n < full, "{k}: {n} of {full} characters");
    }
}

/// The Vercel AI SDK retries every 429 (it reads no `x-should-retry`): the old lifetime 429 is
/// sent three times per call, the 402 once. Both errors name the budget.
#[tokio::test]
async fn the_vercel_ai_sdk_sends_a_402_once_and_a_429_three_times() {
    for (tag, extra, status, sent) in [
        ("402", "", 402, 1.0),
        ("429", "  lifetime_refusal: rate_limited\n", 429, 3.0),
    ] {
        let m = mock().await;
        let cfg = routes(m.addr(), LIFETIME_100).replace("  limits:", &format!("{extra}  limits:"));
        let p = TestProxy::start(&cfg).await;
        let v = run_ai_sdk_script("vercel_ai.mjs", &[tag, &format!("http://{}", p.addr)]).await;
        let text = p.metrics().await;
        for provider in ["openai", "anthropic"] {
            assert_eq!(v[provider]["status"], status, "{tag} {provider}: {v}");
            assert_eq!(v[provider]["names_budget"], true, "{tag} {provider}: {v}");
            let agent = format!("ai-{tag}-{provider}");
            let n = metric_value(
                &text,
                "tokenwarden_budget_exceeded_total",
                &[("scope", "session"), ("agent", &agent)],
            );
            assert_eq!(n, sent, "{agent}: refusals that reached the proxy");
        }
        assert_eq!(
            m.stats().requests,
            2,
            "{tag}: refusals reached the upstream"
        );
    }
}
