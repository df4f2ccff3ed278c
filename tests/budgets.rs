//! Budgets through the proxy against the mock provider (memory store): admission and refusal
//! in each provider's shape, the overspend bound under concurrency, windows, persistence across
//! restarts, the admin API, webhook alerts and clean stream cuts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use tokenwarden::budget::estimate_input;
use tokenwarden::providers::Format;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const MSG: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;

fn est(format: Format, body: &str) -> u64 {
    estimate_input(format, body.as_bytes())
}

/// A chat call of session `session` that uses exactly 8 input + 8 output tokens at the mock.
async fn call16(p: &TestProxy, session: &str) -> (http::Response<()>, bytes::Bytes) {
    post(
        &p.url("/v1/chat/completions"),
        &[
            ("x-session-id", session),
            ("x-mock-input-tokens", "8"),
            ("x-mock-output-chunks", "8"),
        ],
        CHAT,
    )
    .await
}

fn session_limit(tokens: u64, window: &str, extra: &str) -> String {
    format!(
        "budgets:\n  store:\n    snapshot_path: ''\n  limits:\n    - scope: session\n      tokens: {tokens}\n      window: {window}\n{extra}"
    )
}

async fn session_view(p: &TestProxy, id: &str) -> serde_json::Value {
    let (r, body) = get(&format!("http://{}/v1/sessions/{id}", p.admin)).await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn a_session_stops_at_its_limit_and_the_refusal_never_goes_upstream() {
    let e = est(Format::OpenAiChat, CHAT);
    assert!(
        (3..=18).contains(&e),
        "estimate {e} outside what this test assumes"
    );
    let m = mock().await;
    let p = TestProxy::to("b-stop", m.addr(), &session_limit(50, "lifetime", "")).await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let (r, _) = call16(&p, "stop-1").await;
        assert_eq!(r.status(), 200);
        remaining.push(
            r.headers()["x-tokenwarden-session-tokens-remaining"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
    }
    // The reservation (estimate + default max output) is whole, past what remains: nothing is
    // left while the call runs.
    assert_eq!(remaining, [0, 0, 0]);
    let (r, body) = call16(&p, "stop-1").await;
    // A lifetime limit will not pass later: 402, which no mainstream client retries.
    assert_eq!(r.status(), 402);
    assert_eq!(r.headers()["x-should-retry"], "false");
    assert!(r.headers().get("retry-after").is_none());
    assert_eq!(
        r.headers()["x-tokenwarden-error"],
        "session_token_budget_exceeded"
    );
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["type"], "budget_exceeded");
    assert_eq!(v["error"]["code"], "session_token_budget_exceeded");
    assert!(v["error"]["param"].is_null());
    assert_eq!(
        m.stats().requests,
        3,
        "the refused call reached the upstream"
    );

    // Another session is unaffected.
    let (r, _) = call16(&p, "stop-2").await;
    assert_eq!(r.status(), 200);

    let view = session_view(&p, "stop-1").await;
    assert_eq!(view["tokens"]["input"], 24);
    assert_eq!(view["tokens"]["output"], 24);
    assert_eq!(view["tokens"]["total"], 48);
    assert_eq!(view["steps"], 3, "the refused call took no step");
    // Token amounts are integers in JSON (not 50.0).
    assert_eq!(view["limits"][0]["limit"].as_u64(), Some(50));
    assert_eq!(view["limits"][0]["used"].as_u64(), Some(48));
    assert_eq!(view["limits"][0]["remaining"].as_u64(), Some(2));
    assert_eq!(view["limits"][0]["window"], "lifetime");

    let text = p.metrics().await;
    assert!(
        metric_value(
            &text,
            "tokenwarden_budget_decisions_total",
            &[("scope", "session"), ("decision", "rejected")]
        ) >= 1.0
    );
    assert!(
        metric_value(
            &text,
            "tokenwarden_budget_exceeded_total",
            &[("scope", "session"), ("agent", "default")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn anthropic_routes_refuse_in_anthropic_shape() {
    let m = mock().await;
    let p = TestProxy::start(&format!(
        "routes:\n  - name: b-anth\n    path_prefix: /anthropic\n    strip_prefix: true\n    upstream: http://{}\n{}",
        m.addr(),
        session_limit(40, "lifetime", "")
    ))
    .await;
    let url = p.url("/anthropic/v1/messages");
    let hdrs = [("x-session-id", "anth-1"), ("x-mock-input-tokens", "20")];
    let (r, _) = post(&url, &hdrs, MSG).await;
    assert_eq!(r.status(), 200);
    let (r, body) = post(&url, &hdrs, MSG).await;
    assert_eq!(r.status(), 402);
    assert_eq!(r.headers()["x-should-retry"], "false");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["type"], "error");
    // Anthropic's own type for a 402.
    assert_eq!(v["error"]["type"], "billing_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("session token budget exceeded"));
    assert_eq!(m.stats().requests, 1);
}

/// 50 concurrent calls of one session, each reserving its estimate plus `max_tokens` and using
/// exactly that: spend ends within the limit plus one call's maximum output (README bound).
#[tokio::test]
async fn fifty_concurrent_calls_overspend_at_most_one_max_output() {
    const M: u64 = 20;
    let body = format!(
        r#"{{"model":"gpt-4o-mini","max_tokens":{M},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let e = est(Format::OpenAiChat, &body);
    let per_call = e + M;
    let limit = 10 * per_call + e + 3; // room for ten exact reservations and one capped one
    let m = mock().await;
    let p = TestProxy::to("b-conc", m.addr(), &session_limit(limit, "lifetime", "")).await;
    let input = e.to_string();
    let out = M.to_string();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let url = p.url("/v1/chat/completions");
        let (body, input, out) = (body.clone(), input.clone(), out.clone());
        tasks.push(tokio::spawn(async move {
            let (r, _) = post(
                &url,
                &[
                    ("x-session-id", "conc-1"),
                    ("x-mock-input-tokens", &input),
                    ("x-mock-output-chunks", &out),
                    ("x-mock-chunk-delay-ms", "2"),
                ],
                &body,
            )
            .await;
            r.status().as_u16()
        }));
    }
    let mut ok = 0u64;
    let mut refused = 0u64;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            402 => refused += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    assert!(ok >= 1, "{ok} admitted");
    assert!(refused >= 1, "none refused");
    assert_eq!(m.stats().requests, ok);
    let view = session_view(&p, "conc-1").await;
    let spent = view["tokens"]["total"].as_u64().unwrap();
    assert_eq!(spent, ok * per_call);
    assert!(
        spent <= limit + M,
        "spent {spent} > limit {limit} + max output {M}"
    );
}

#[tokio::test]
async fn a_windowed_limit_sets_retry_after_and_reopens() {
    let m = mock().await;
    let p = TestProxy::to("b-window", m.addr(), &session_limit(18, "2s", "")).await;
    // Calls until one is refused (a call may straddle a window boundary and reopen it).
    let mut refusal = None;
    for _ in 0..4 {
        let before = unix_now();
        let (r, body) = call16(&p, "win-1").await;
        let after = unix_now();
        if r.status() == 429 {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], "session_token_budget_exceeded");
            assert!(r.headers().get("x-should-retry").is_none());
            refusal = Some((r, before, after));
            break;
        }
        assert_eq!(r.status(), 200);
    }
    let (r, before, after) = refusal.expect("a second call in one 2 s window is refused");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Fixed windows aligned to the epoch: seconds until the current 2 s window ends.
    let expect = |now: u64| (now - now % 2 + 2) - now;
    assert!(
        retry == expect(before) || retry == expect(after),
        "Retry-After {retry}, expected {} or {}",
        expect(before),
        expect(after)
    );
    tokio::time::sleep(Duration::from_secs(retry) + Duration::from_millis(100)).await;
    let (r, _) = call16(&p, "win-1").await;
    assert_eq!(r.status(), 200, "the next window admits again");
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn memory_store_spend_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("budgets.json");
    let m = mock().await;
    let cfg = format!(
        "budgets:\n  store:\n    snapshot_path: {}\n  limits:\n    - scope: session\n      tokens: 40\n",
        snap.display()
    );
    let p = TestProxy::to("b-persist", m.addr(), &cfg).await;
    let (r, _) = post(
        &p.url("/v1/chat/completions"),
        &[
            ("x-session-id", "persist-1"),
            ("x-mock-input-tokens", "40"),
            ("x-mock-output-chunks", "8"),
        ],
        CHAT,
    )
    .await;
    assert_eq!(r.status(), 200);
    p.stop().await; // shutdown writes the snapshot
    assert!(snap.exists(), "no snapshot at {}", snap.display());
    let p = TestProxy::to("b-persist", m.addr(), &cfg).await;
    let view = session_view(&p, "persist-1").await;
    assert_eq!(view["tokens"]["total"], 48);
    let (r, _) = call16(&p, "persist-1").await;
    assert_eq!(r.status(), 402, "spend from before the restart counts");
}

#[tokio::test]
async fn admin_api_views_ranks_and_resets_sessions() {
    let m = mock().await;
    let cfg = format!(
        "{}admin_token: s3cret\npricing:\n  gpt-4o-mini: {{ input: 1.0, output: 2.0 }}\n",
        session_limit(50, "lifetime", "")
    );
    let p = TestProxy::to("b-admin", m.addr(), &cfg).await;
    assert_eq!(call16(&p, "adm-a").await.0.status(), 200);
    assert_eq!(call16(&p, "adm-a").await.0.status(), 200);
    assert_eq!(call16(&p, "adm-b").await.0.status(), 200);

    let view = session_view(&p, "adm-a").await;
    assert_eq!(view["session"], "adm-a");
    // 16 input at $1/M + 16 output at $2/M
    let cost = view["cost_usd"].as_f64().unwrap();
    assert!((cost - 48e-6).abs() < 1e-12, "{cost}");
    assert_eq!(view["limits"][0]["scope"], "session");

    let (r, body) = get(&format!("http://{}/v1/sessions?top=1", p.admin)).await;
    assert_eq!(r.status(), 200);
    let top: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(top["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(top["sessions"][0]["session"], "adm-a");

    let (r, _) = get(&format!("http://{}/v1/sessions/nobody", p.admin)).await;
    assert_eq!(r.status(), 404);

    let reset_url = format!("http://{}/v1/sessions/adm-a/reset", p.admin);
    let (r, _) = post(&reset_url, &[], "").await;
    assert_eq!(r.status(), 401);
    let (r, _) = post(&reset_url, &[("authorization", "Bearer wrong")], "").await;
    assert_eq!(r.status(), 401);
    let (r, _) = get(&reset_url).await;
    assert_eq!(r.status(), 405);
    let (r, _) = post(&reset_url, &[("authorization", "Bearer s3cret")], "").await;
    assert_eq!(r.status(), 200);
    let (r, _) = get(&format!("http://{}/v1/sessions/adm-a", p.admin)).await;
    assert_eq!(r.status(), 404, "reset forgets the session");
    assert_eq!(call16(&p, "adm-a").await.0.status(), 200);

    let text = p.metrics().await;
    let cost = metric_value(
        &text,
        "tokenwarden_cost_usd_total",
        &[("agent", "default"), ("model", "gpt-4o-mini")],
    );
    assert!(cost >= 4.0 * 24e-6 - 1e-12, "cost metric {cost}");
}

#[tokio::test]
async fn a_failing_webhook_is_retried_with_the_same_alert() {
    let (hook, mut alerts) = webhook_receiver_failing_first(2).await;
    let m = mock().await;
    let cfg = format!(
        "{}alerts:\n  webhook: http://{hook}/budget\n",
        session_limit(15, "lifetime", "")
    );
    let p = TestProxy::to("b-hook-retry", m.addr(), &cfg).await;
    assert_eq!(call16(&p, "retry-1").await.0.status(), 200);
    assert_eq!(call16(&p, "retry-1").await.0.status(), 402);
    let mut got = Vec::new();
    while got.len() < 3 {
        let a = tokio::time::timeout(Duration::from_secs(10), alerts.recv())
            .await
            .expect("alert attempt within 10 s")
            .unwrap();
        got.push(a);
    }
    // Two refused deliveries, then the same alert accepted.
    for (i, a) in got.iter().enumerate() {
        assert_eq!(a["_attempt"], i);
        assert_eq!(a["decision"], "rejected");
        assert_eq!(a["session"], "retry-1");
        assert_eq!(a["time"], got[0]["time"]);
    }
}

#[tokio::test]
async fn the_webhook_receives_warn_and_breach() {
    let (hook, mut alerts) = webhook_receiver().await;
    let m = mock().await;
    let cfg = format!(
        "{}alerts:\n  webhook: http://{hook}/budget\n",
        session_limit(50, "lifetime", "      warn_at: 0.5\n")
    );
    let p = TestProxy::to("b-hook", m.addr(), &cfg).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(call16(&p, "hook-1").await.0.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 402]);
    let mut got = Vec::new();
    while got.len() < 2 {
        let a = tokio::time::timeout(Duration::from_secs(10), alerts.recv())
            .await
            .expect("alert within 10 s")
            .unwrap();
        got.push(a);
    }
    let warn = got
        .iter()
        .find(|a| a["decision"] == "warned")
        .expect("warn alert");
    assert_eq!(warn["session"], "hook-1");
    assert_eq!(warn["agent"], "default");
    assert_eq!(warn["scope"], "session");
    assert_eq!(warn["limit"].as_u64(), Some(50), "{warn}");
    assert!(warn["used"].as_f64().unwrap() >= 25.0);
    assert!(warn["time"].as_str().unwrap().ends_with('Z'));
    let breach = got
        .iter()
        .find(|a| a["decision"] == "rejected")
        .expect("breach alert");
    assert_eq!(breach["used"].as_u64(), Some(48), "{breach}");
    let text = p.metrics().await;
    assert!(
        metric_value(
            &text,
            "tokenwarden_budget_decisions_total",
            &[("scope", "session"), ("decision", "warned")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn a_cut_stream_ends_with_a_length_finish_and_done() {
    let m = mock().await;
    let p = TestProxy::to(
        "b-cut",
        m.addr(),
        &session_limit(60, "lifetime", "      action: cut\n"),
    )
    .await;
    let body =
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let e = est(Format::OpenAiChat, body);
    let (r, bytes) = post(
        &p.url("/v1/chat/completions"),
        &[
            ("x-session-id", "cut-1"),
            ("x-mock-output-chunks", "500"),
            ("x-mock-chunk-delay-ms", "1"),
        ],
        body,
    )
    .await;
    assert_eq!(r.status(), 200);
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .expect("every event is one data line")
        })
        .collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("each chunk is JSON"))
        .collect();
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(last["object"], "chat.completion.chunk");
    let content: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|t| !t.is_empty())
        .collect();
    assert!(
        !content.is_empty() && content.len() < 500,
        "{} content chunks",
        content.len()
    );
    // The allowance is in tokens, each output event counted with the tokenizer: the stream
    // ends at the event that would go over it (the mock's words are at most 3 tokens).
    let streamed: u64 = content
        .iter()
        .map(|t| tokenwarden::tokens::count(t).max(1))
        .sum();
    assert!(
        streamed <= 60 - e && streamed + 3 > 60 - e,
        "cut at {streamed} tokens, allowance {}",
        60 - e
    );
    let text = p.metrics().await;
    assert!(
        metric_value(
            &text,
            "tokenwarden_budget_decisions_total",
            &[("scope", "session"), ("decision", "cut")]
        ) >= 1.0
    );
    // Nothing is left for the next call.
    let (r, _) = call16(&p, "cut-1").await;
    assert_eq!(r.status(), 402);
}

/// Settlement happens however the call ends: after an upstream failure mid-stream and after the
/// client goes away, nothing stays reserved (used == spent) and the next call is admitted.
#[tokio::test]
async fn reservations_are_released_however_the_call_ends() {
    let m = mock().await;
    let p = TestProxy::to("b-ends", m.addr(), &session_limit(100_000, "lifetime", "")).await;
    let stream =
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    // Upstream drops the connection mid-stream (the client sees the body fail).
    {
        use http_body_util::BodyExt;
        let req = http::Request::post(p.url("/v1/chat/completions"))
            .header("x-session-id", "ends-1")
            .header("x-mock-fault", "drop-mid-stream")
            .body(http_body_util::Full::new(bytes::Bytes::from(stream)))
            .unwrap();
        let resp = client().request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.into_body().collect().await.is_err(),
            "the stream was cut short"
        );
    }
    // The client goes away mid-stream.
    {
        use http_body_util::BodyExt;
        let req = http::Request::post(p.url("/v1/chat/completions"))
            .header("x-session-id", "ends-1")
            .header("x-mock-output-chunks", "1000")
            .header("x-mock-chunk-delay-ms", "5")
            .body(http_body_util::Full::new(bytes::Bytes::from(stream)))
            .unwrap();
        let resp = client().request(req).await.unwrap();
        let mut body = resp.into_body();
        let _ = body.frame().await;
        drop(body);
    }
    let settled = eventually(Duration::from_secs(10), || async {
        let v = session_view(&p, "ends-1").await;
        v["limits"][0]["used"].as_f64() == v["tokens"]["total"].as_f64()
            && v["tokens"]["total"].as_u64().unwrap_or(0) > 0
    })
    .await;
    assert!(
        settled,
        "a reservation was left behind: {}",
        session_view(&p, "ends-1").await
    );
}

#[tokio::test]
async fn observe_limits_count_but_never_refuse() {
    let m = mock().await;
    let p = TestProxy::to(
        "b-observe",
        m.addr(),
        "budgets:\n  store:\n    snapshot_path: ''\n  limits:\n    - scope: agent\n      tokens: 20\n      action: observe\n",
    )
    .await;
    for _ in 0..3 {
        let (r, _) = post(
            &p.url("/v1/chat/completions"),
            &[
                ("x-agent-name", "observed-agent"),
                ("x-mock-input-tokens", "8"),
                ("x-mock-output-chunks", "8"),
            ],
            CHAT,
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    let text = p.metrics().await;
    assert!(
        metric_value(
            &text,
            "tokenwarden_budget_exceeded_total",
            &[("scope", "agent"), ("agent", "observed-agent")]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        metric_value(
            &text,
            "tokenwarden_budget_decisions_total",
            &[("scope", "agent"), ("decision", "observed")]
        ) >= 1.0
    );
    let ratio = metric_value(
        &text,
        "tokenwarden_budget_used_ratio",
        &[("scope", "agent"), ("agent", "observed-agent")],
    );
    assert!(ratio >= 1.0, "used ratio {ratio}");
}

#[tokio::test]
async fn an_agent_usd_limit_refuses_with_its_own_code() {
    let m = mock().await;
    let p = TestProxy::to(
        "b-usd",
        m.addr(),
        "budgets:\n  store:\n    snapshot_path: ''\n  limits:\n    - scope: agent\n      usd: 0.001\n      window: 1d\npricing:\n  gpt-4o-mini: { input: 10.0, output: 10.0 }\n",
    )
    .await;
    let hdrs = [
        ("x-agent-name", "usd-agent"),
        ("x-mock-input-tokens", "100"),
        ("x-mock-output-chunks", "8"),
    ];
    // 108 tokens at $10/M = $0.00108: over the limit after one call.
    let (r, _) = post(&p.url("/v1/chat/completions"), &hdrs, CHAT).await;
    assert_eq!(r.status(), 200);
    let (r, body) = post(&p.url("/v1/chat/completions"), &hdrs, CHAT).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "agent_usd_budget_exceeded");
    // Another agent has its own budget.
    let (r, _) = post(
        &p.url("/v1/chat/completions"),
        &[("x-agent-name", "usd-other")],
        CHAT,
    )
    .await;
    assert_eq!(r.status(), 200);
}

/// A chat request of agent-facing size `words` that reports one `get_weather` tool result.
fn with_tool_result(words: usize) -> String {
    let long = "word ".repeat(words);
    serde_json::json!({"model":"gpt-4o-mini","messages":[
        {"role":"user","content": long},
        {"role":"assistant","content":null,"tool_calls":[
            {"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},
        {"role":"tool","tool_call_id":"c1","content":"sunny"}]})
    .to_string()
}

/// Issue 17 item 9: clients that retry a refusal (the Vercel AI SDK, google-genai, litellm) must
/// not advance the session: refused retries take no step, count no tool result and feed no
/// loop history; the next admitted call gets the next step.
#[tokio::test]
async fn refused_retries_leave_the_session_as_it_was() {
    const LIMIT: u64 = 400;
    let big = with_tool_result(120);
    let e_big = est(Format::OpenAiChat, &big);
    let e_small = est(Format::OpenAiChat, CHAT);
    assert!(
        e_big > 100 && e_big < LIMIT && e_small < 20,
        "{e_big} {e_small}"
    );
    // After the first call, one token less than the big call needs is left.
    let remaining = e_big - 1;
    let input = (LIMIT - 8 - remaining).to_string();
    let m = mock().await;
    let cfg = format!(
        "{}agents:\n  retrier:\n    loop_detection: {{ threshold: 3, window: 1m, action: block }}\n",
        session_limit(LIMIT, "lifetime", "")
    );
    let p = TestProxy::to("b-retry", m.addr(), &cfg).await;
    let url = p.url("/v1/chat/completions");
    fn hdrs(input: &str) -> [(&str, &str); 4] {
        [
            ("x-session-id", "retry-s"),
            ("x-agent-name", "retrier"),
            ("x-mock-input-tokens", input),
            ("x-mock-output-chunks", "8"),
        ]
    }
    let (r, _) = post(&url, &hdrs(&input), &big).await;
    assert_eq!(r.status(), 200);
    // Five retries of the same call, as a client that ignores the refusal would send them.
    for i in 0..5 {
        let (r, body) = post(&url, &hdrs("8"), &big).await;
        assert_eq!(
            r.status(),
            402,
            "retry {i}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(m.stats().requests, 1);
    let view = session_view(&p, "retry-s").await;
    assert_eq!(view["steps"], 1, "refused retries took steps: {view}");
    let text = p.metrics().await;
    let results = metric_value(
        &text,
        "tokenwarden_tool_results_total",
        &[
            ("agent", "retrier"),
            ("tool", "get_weather"),
            ("outcome", "ok"),
        ],
    );
    assert_eq!(
        results, 1.0,
        "refused retries counted the tool result again"
    );
    let loops = metric_value(
        &text,
        "tokenwarden_policy_violations_total",
        &[("agent", "retrier"), ("policy", "loop")],
    );
    assert_eq!(loops, 0.0, "refused retries fed the loop history");

    // A call that fits is admitted and gets the next step.
    let (r, _) = post(&url, &hdrs("8"), CHAT).await;
    assert_eq!(r.status(), 200);
    assert_eq!(session_view(&p, "retry-s").await["steps"], 2);
}

/// Policy refusals take no step either: three refused calls, then an admitted one is step 1.
#[tokio::test]
async fn policy_refusals_take_no_step() {
    let m = mock().await;
    let p = TestProxy::to(
        "b-pol-retry",
        m.addr(),
        "agents:\n  capped:\n    max_tokens_cap: { limit: 32, action: reject }\n",
    )
    .await;
    let url = p.url("/v1/chat/completions");
    let hdrs = [("x-session-id", "pol-s"), ("x-agent-name", "capped")];
    let over =
        r#"{"model":"gpt-4o-mini","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..3 {
        assert_eq!(post(&url, &hdrs, over).await.0.status(), 403);
    }
    let (r, _) = get(&format!("http://{}/v1/sessions/pol-s", p.admin)).await;
    assert_eq!(r.status(), 404, "refused calls started a session");
    assert_eq!(post(&url, &hdrs, CHAT).await.0.status(), 200);
    assert_eq!(session_view(&p, "pol-s").await["steps"], 1);
}

/// Issue 17 item 12: the refusal says what this call needs and what is left, in whole tokens.
#[tokio::test]
async fn the_refusal_says_what_this_call_needs_and_what_is_left() {
    let big = with_tool_result(120);
    let e_big = est(Format::OpenAiChat, &big);
    let m = mock().await;
    let p = TestProxy::to("b-text", m.addr(), &session_limit(250, "lifetime", "")).await;
    let url = p.url("/v1/chat/completions");
    // 170 + 8 spent: 72 of 250 left, less than the big call needs.
    let (r, _) = post(
        &url,
        &[
            ("x-session-id", "text-s"),
            ("x-mock-input-tokens", "170"),
            ("x-mock-output-chunks", "8"),
        ],
        CHAT,
    )
    .await;
    assert_eq!(r.status(), 200);
    let (r, body) = post(&url, &[("x-session-id", "text-s")], &big).await;
    assert_eq!(r.status(), 402);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["error"]["message"],
        format!("tokenwarden: session token budget exceeded: this call needs ~{e_big} tokens but only 72 of 250 tokens remain (window: lifetime)")
    );
}

/// `budgets.lifetime_refusal: rate_limited` keeps CONTRACT.md's 429 with `x-should-retry: false`;
/// a windowed limit answers 429 with `Retry-After` either way.
#[tokio::test]
async fn the_old_lifetime_429_is_one_switch_away() {
    let m = mock().await;
    let p = TestProxy::to(
        "b-429",
        m.addr(),
        "budgets:\n  store:\n    snapshot_path: ''\n  lifetime_refusal: rate_limited\n  limits:\n    - { scope: session, tokens: 20 }\n",
    )
    .await;
    assert_eq!(call16(&p, "old-429").await.0.status(), 200);
    let (r, _) = call16(&p, "old-429").await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-should-retry"], "false");
    assert!(r.headers().get("retry-after").is_none());
}

/// Issue 17 item 10: without any budget limit, a session's tokens, cost and steps are still
/// reported (and ranked), from the live session table.
#[tokio::test]
async fn sessions_report_tokens_without_limits() {
    let m = mock().await;
    // No budgets at all, then prices only (cost, still no limit).
    for (name, extra, cost) in [
        ("b-nolimit", "", 0.0),
        (
            "b-priced",
            "pricing:\n  gpt-4o-mini: { input: 1.0, output: 2.0 }\n",
            48e-6,
        ),
    ] {
        let p = TestProxy::to(name, m.addr(), extra).await;
        for _ in 0..2 {
            assert_eq!(call16(&p, "free-a").await.0.status(), 200);
        }
        assert_eq!(call16(&p, "free-b").await.0.status(), 200);
        let v = session_view(&p, "free-a").await;
        assert_eq!(v["tokens"]["input"], 16, "{name}: {v}");
        assert_eq!(v["tokens"]["output"], 16);
        assert_eq!(v["tokens"]["total"], 32);
        assert_eq!(v["steps"], 2);
        let c = v["cost_usd"].as_f64().unwrap();
        assert!((c - cost).abs() < 1e-12, "{name}: cost {c}");
        assert_eq!(v["limits"].as_array().unwrap().len(), 0);
        let (r, body) = get(&format!("http://{}/v1/sessions?top=5", p.admin)).await;
        assert_eq!(r.status(), 200);
        let top: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let ids: Vec<&str> = top["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["session"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["free-a", "free-b"], "{name}: {top}");
    }
}

#[tokio::test]
async fn sessions_are_forgotten_after_their_retention_so_state_stays_bounded() {
    let m = mock().await;
    let cfg = "identity:\n  session_idle_timeout: 1s\nbudgets:\n  session_retention: 1s\n  store:\n    snapshot_path: ''\n    snapshot_interval: 1s\n  limits:\n    - scope: session\n      tokens: 100000\n";
    let p = TestProxy::to("b-retention", m.addr(), cfg).await;
    for i in 0..200 {
        let (r, _) = call16(&p, &format!("ret-{i}")).await;
        assert_eq!(r.status(), 200);
    }
    let status = |id: String| {
        let url = format!("http://{}/v1/sessions/{id}", p.admin);
        async move { get(&url).await.0.status().as_u16() }
    };
    // The last session is the recent one (200 calls can take longer than the retention on a
    // loaded machine, so the first may already be gone).
    assert_eq!(status("ret-199".into()).await, 200, "kept while recent");
    // Unique session ids do not pile up: each record goes a retention after its last call.
    let forgotten = eventually(Duration::from_secs(15), || async {
        status("ret-0".into()).await == 404 && status("ret-199".into()).await == 404
    })
    .await;
    assert!(forgotten, "idle sessions were kept");
    // A forgotten session starts again from zero.
    assert_eq!(call16(&p, "ret-0").await.0.status(), 200);
    assert_eq!(status("ret-0".into()).await, 200);
}

/// The bound README states: spend ≤ limit + one call's maximum output + Σ over the calls in
/// flight of what the provider counts as input beyond the proxy's estimate.
#[tokio::test]
async fn sixty_four_spread_out_calls_stay_within_the_stated_bound() {
    const M: u64 = 40;
    const CALLS: u64 = 64;
    let body = format!(
        r#"{{"model":"gpt-4o-mini","max_tokens":{M},"messages":[{{"role":"user","content":"how far can a budget stretch?"}}]}}"#
    );
    let e = est(Format::OpenAiChat, &body);
    // The provider counts more input than the estimate (another tokenizer): the error per call.
    let err = 6;
    let limit = 20 * (e + M) + 7;
    let m = mock().await;
    let p = TestProxy::to("b-bound", m.addr(), &session_limit(limit, "lifetime", "")).await;
    let o = overspend_load(
        &[format!("http://{}", p.addr)],
        "bound-1",
        &body,
        e + err,
        M,
        CALLS as usize,
        400,
    )
    .await;
    assert!(
        o.admitted >= 10 && o.refused >= 1,
        "{} / {}",
        o.admitted,
        o.refused
    );
    let spent = session_view(&p, "bound-1").await["tokens"]["total"]
        .as_u64()
        .unwrap();
    assert_eq!(
        spent,
        o.admitted * (e + err + M),
        "every admitted call settled"
    );
    let bound = limit + M + CALLS * err;
    assert!(
        spent <= bound,
        "spent {spent} > bound {bound} (limit {limit})"
    );
}

/// A media key spelled with `\u` escapes is the key itself once parsed: its part is counted in
/// the estimate, and the upper bound that lets a call in without the tokenizer must count it
/// too — else a client passes an image's tokens under a small session limit (overspend past
/// the stated bound of one maximum output).
#[tokio::test]
async fn an_image_under_an_escaped_key_is_counted_before_the_call_goes_upstream() {
    let body = r#"{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"\u0069mage_url","\u0069mage_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]}]}"#;
    let e = est(Format::OpenAiChat, body);
    assert!(e > 1_000, "the estimate counts the image part: {e}");
    let m = mock().await;
    let p = TestProxy::to(
        "b-escaped-media",
        m.addr(),
        &session_limit(600, "lifetime", ""),
    )
    .await;
    let (r, text) = post(
        &p.url("/v1/chat/completions"),
        &[
            ("x-session-id", "escaped-1"),
            ("x-mock-input-tokens", "1100"),
            ("x-mock-output-chunks", "4"),
        ],
        body,
    )
    .await;
    assert_eq!(r.status(), 402, "{}", String::from_utf8_lossy(&text));
    assert_eq!(
        r.headers()["x-tokenwarden-error"],
        "session_token_budget_exceeded"
    );
    assert_eq!(m.stats().requests, 0, "the call reached the upstream");
    // The same call with its key written plainly is refused the same way.
    let plain = body.replace(r"\u0069", "i");
    let (r, _) = post(
        &p.url("/v1/chat/completions"),
        &[("x-session-id", "escaped-2")],
        &plain,
    )
    .await;
    assert_eq!(r.status(), 402);
    let view = session_view(&p, "escaped-1").await;
    assert_eq!(view["tokens"]["total"], 0);
}

/// A path the upstream decodes before routing (`/v1/chat/complet%69ons` to uvicorn or gin) is
/// read as the call it is: its budget applies. It went up as an unread "other" call.
#[tokio::test]
async fn an_encoded_path_is_budgeted_as_the_call_the_upstream_serves() {
    let m = mock().await;
    let p = TestProxy::to(
        "encoded",
        m.addr(),
        "budgets:\n  store:\n    snapshot_path: ''\n  limits:\n    - scope: session\n      tokens: 1\n",
    )
    .await;
    let hdrs = [("x-session-id", "enc-1")];
    for path in [
        "/v1/chat/complet%69ons",
        "/v1/x/../chat/completions",
        "/v1/chat/./completions",
    ] {
        let (r, body) = post(&p.url(path), &hdrs, CHAT).await;
        assert_eq!(
            r.status(),
            402,
            "{path}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(m.stats().requests, 0, "nothing went upstream");
}

#[tokio::test]
async fn tokens_of_a_model_without_a_price_are_counted_as_unpriced() {
    // `pricing` prices gpt-4o; the upstream serves gpt-4o-mini-2024-07-18 (12 in, 5 out), which
    // neither it nor a dated fallback prices: cost 0, but the tokens are counted as unpriced.
    let up = fixture_upstream().await;
    let p = TestProxy::to(
        "unpriced",
        up,
        "pricing:\n  gpt-4o: { input: 2.50, output: 10.00 }\n",
    )
    .await;
    let headers = [
        ("x-agent-name", "unpriced"),
        ("x-fixture", "corpus/openai-chat/json_text.response.json"),
    ];
    for _ in 0..2 {
        let (resp, _) = post(&p.url("/v1/chat/completions"), &headers, CHAT).await;
        assert_eq!(resp.status(), 200);
    }
    let text = p.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "tokenwarden_unpriced_tokens_total",
            &[("model", "gpt-4o-mini-2024-07-18")]
        ),
        34.0,
        "{text}"
    );
    // A priced model's calls (gpt-4o-2024-11-20, dated: gpt-4o's price) are not unpriced.
    let headers = [
        ("x-agent-name", "unpriced"),
        ("x-fixture", "wild/azure/chat_prompt_filter.json"),
    ];
    let (resp, _) = post(&p.url("/v1/chat/completions"), &headers, CHAT).await;
    assert_eq!(resp.status(), 200);
    let text = p.metrics().await;
    assert!(
        text.contains("tokenwarden_cost_usd_total{agent=\"unpriced\",model=\"gpt-4o-2024-11-20\"}"),
        "{text}"
    );
    assert!(!text.contains("tokenwarden_unpriced_tokens_total{model=\"gpt-4o-2024-11-20\"}"));
}

/// A call asking for `n` choices may produce `n` × its output cap: the reservation holds all of
/// it, so concurrent calls cannot each pass on one choice's worth and land `n` times past the
/// limit.
#[tokio::test]
async fn every_choice_a_call_asks_for_is_reserved() {
    let m = mock().await;
    let p = TestProxy::to(
        "b-choices",
        m.addr(),
        &session_limit(10_000, "lifetime", ""),
    )
    .await;
    let body = r#"{"model":"gpt-4o-mini","max_tokens":1000,"n":8,"messages":[{"role":"user","content":"hi"}]}"#;
    let (r, _) = post(
        &p.url("/v1/chat/completions"),
        &[
            ("x-session-id", "choices-1"),
            ("x-mock-input-tokens", "8"),
            ("x-mock-output-chunks", "8"),
        ],
        body,
    )
    .await;
    assert_eq!(r.status(), 200);
    let remaining: u64 = r.headers()["x-tokenwarden-session-tokens-remaining"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bound = tokenwarden::budget::input_bound(body.as_bytes());
    assert_eq!(remaining, 10_000 - bound - 8 * 1000);
}
