//! Agent frameworks running real tool loops through the proxy to the mock provider (its
//! `agent-loop` script): the OpenAI Agents SDK (`Runner.run`, `Runner.run_streamed`), LangGraph's
//! `create_react_agent` with `ChatOpenAI` and `ChatAnthropic`, pydantic-ai (OpenAI and Anthropic
//! models, `run` and `run_stream`) — `tests/sdk/frameworks/agent_loops.py` — and the Vercel AI
//! SDK (`streamText` / `generateText` with `@ai-sdk/openai` and `@ai-sdk/anthropic`) —
//! `tests/sdk/frameworks/vercel_ai_loops.mjs`. Every case is its own agent and session (its tag).
//!
//! Nothing violated → each loop runs to the end as without the proxy: the tool really runs with
//! the mock's arguments, the final answer arrives, and the proxy counted exactly the tokens the
//! framework itself summed from the provider's reports, the tool call and two steps. A call the
//! policies block (a tool needing approval, arguments that are not JSON) → the framework never
//! runs the tool, surfaces an error naming the tool and the policy, and sends nothing more.
//!
//! Needs the frameworks: `.venv-sdk` (or `$TOKENWARDEN_TEST_PYTHON`) with openai-agents,
//! langgraph, langchain-openai, langchain-anthropic and pydantic-ai-slim, and `.tools/ai-sdk` (or
//! `$AI_SDK_DIR`) — scripts/test.sh installs them, pinned. Missing → the test fails naming them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;

const PYTHON_FRAMEWORKS: [&str; 3] = ["openai-agents", "langgraph", "pydantic-ai"];

/// Gated streams: a call to `send_email` needs approval, and approval and the other tool-call
/// policies (here: arguments that break the schema) block.
const GATED: &str = "agents:\n  \"*\":\n    require_approval: [send_email]\n    approval_action: block\n    tool_call_action: block\n";

/// A proxy in front of `upstream`: `/anthropic` (prefix stripped) and everything else (OpenAI).
async fn proxy(upstream: std::net::SocketAddr, extra: &str) -> TestProxy {
    TestProxy::start(&format!(
        "routes:\n  - name: fw-anthropic\n    path_prefix: /anthropic\n    strip_prefix: true\n    upstream: http://{upstream}\n  - name: fw-openai\n    path_prefix: /\n    upstream: http://{upstream}\n{extra}"
    ))
    .await
}

/// Every framework's cases in `mode` (pass | approval | invalid), run at once; tag → outcome.
/// Tags end in `run`: the tests of this binary share one metrics registry.
async fn run_all(mode: &str, run: &str, p: &TestProxy) -> Vec<(String, Value)> {
    let base = format!("http://{}", p.addr);
    let python = |fw: &'static str| {
        let base = base.clone();
        async move { run_sdk_script_with("frameworks/agent_loops.py", &[fw, mode, run, &base]).await }
    };
    let [agents, langgraph, pydantic_ai] = PYTHON_FRAMEWORKS;
    let vercel_args = [mode, run, base.as_str()];
    let outs = tokio::join!(
        python(agents),
        python(langgraph),
        python(pydantic_ai),
        run_ai_sdk_script("frameworks/vercel_ai_loops.mjs", &vercel_args),
    );
    let mut cases = Vec::new();
    for out in [outs.0, outs.1, outs.2, outs.3] {
        let Value::Object(map) = out else {
            panic!("a framework script printed {out}")
        };
        assert!(!map.is_empty(), "a framework script ran no case");
        cases.extend(map);
    }
    cases
}

/// Requests the mock received from the case `tag` (its `x-agent-name`).
fn requests_of(m: &tokenwarden_mock::MockServer, tag: &str) -> usize {
    m.requests()
        .iter()
        .filter(|r| r.header("x-agent-name") == Some(tag))
        .count()
}

/// The proxy's admin view of session `id`.
async fn session(p: &TestProxy, id: &str) -> Value {
    let (r, body) = get(&format!("http://{}/v1/sessions/{id}", p.admin)).await;
    assert_eq!(
        r.status(),
        200,
        "session {id}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap()
}

/// Each case of `mode` ran its loop to the end, exactly as without the proxy, and the proxy saw
/// exactly what happened.
async fn loops_run_unchanged(run: &str, policies: &str) {
    let m = mock().await;
    let p = proxy(m.addr(), policies).await;
    let cases = run_all("pass", run, &p).await;
    // 2 + 4 + 4 Python cases and 5 Vercel AI SDK ones.
    assert_eq!(cases.len(), 15, "{cases:?}");
    let text = p.metrics().await;
    let answer = tokenwarden_mock::output_text(20);
    for (tag, c) in &cases {
        assert_eq!(c["error"], Value::Null, "{tag} failed: {c}");
        assert_eq!(
            c["tool_runs"],
            serde_json::json!([{"city": "mock"}]),
            "{tag}: the tool ran once with the mock's arguments: {c}"
        );
        assert_eq!(
            c["final"].as_str().map(str::trim),
            Some(answer.trim()),
            "{tag}: {c}"
        );
        assert_eq!(
            c["usage"]["requests"], 2,
            "{tag}: a tool turn and the answer: {c}"
        );
        for (kind, key) in [("input", "input"), ("output", "output")] {
            let counted = metric_sum(
                &text,
                "tokenwarden_tokens_total",
                &[("agent", tag), ("type", kind), ("source", "provider")],
            );
            let reported = c["usage"][key].as_f64().unwrap();
            assert!(
                reported > 0.0,
                "{tag}: the framework saw no {kind} usage: {c}"
            );
            assert_eq!(
                counted, reported,
                "{tag}: {kind} tokens counted vs reported\n{text}"
            );
        }
        let tool = metric_value(
            &text,
            "tokenwarden_tool_calls_total",
            &[("agent", tag), ("tool", "get_weather")],
        );
        assert_eq!(tool, 1.0, "{tag}: tool calls counted");
        let s = session(&p, tag).await;
        assert_eq!(s["steps"], 2, "{tag}: steps of the session: {s}");
        assert_eq!(requests_of(&m, tag), 2, "{tag}: requests upstream");
        let violations = metric_sum(
            &text,
            "tokenwarden_policy_violations_total",
            &[("agent", tag)],
        );
        assert_eq!(violations, 0.0, "{tag}: policy violations");
    }
}

#[tokio::test]
async fn frameworks_run_their_tool_loops_unchanged_through_the_proxy() {
    loops_run_unchanged("pass", "").await;
}

/// The same loops with streams gated (`approval_action` and `tool_call_action: block`): calls
/// that break no policy are released as they came, so nothing changes for the agent.
#[tokio::test]
async fn frameworks_run_unchanged_when_gated_calls_pass() {
    loops_run_unchanged("pass-gated", GATED).await;
}

/// Blocked calls: every case surfaced an error naming `tool` and `policy`, never ran the tool
/// and sent one request only (`sent`: requests per tag); with `metrics`, the violation is counted.
fn assert_blocked(
    cases: &[(String, Value)],
    tool: &str,
    policy: &str,
    sent: impl Fn(&str) -> usize,
    metrics: Option<&str>,
) {
    let mut failures = Vec::new();
    for (tag, c) in cases {
        let message = c["error"]["message"].as_str().unwrap_or_default();
        let mut wrong = Vec::new();
        if c["tool_runs"].as_array().is_some_and(|r| !r.is_empty()) {
            wrong.push(format!("the tool ran: {}", c["tool_runs"]));
        }
        if !(message.contains(&format!("'{tool}'")) && message.contains(policy)) {
            wrong.push(format!(
                "no error naming '{tool}' and {policy}: {}",
                c["error"]
            ));
        }
        let n = sent(tag);
        if n != 1 {
            wrong.push(format!("{n} requests upstream, not 1"));
        }
        if let Some(text) = metrics {
            let labels = [("agent", tag.as_str()), ("policy", policy)];
            if metric_value(text, "tokenwarden_policy_violations_total", &labels) < 1.0 {
                wrong.push("violation not counted".to_string());
            }
        }
        if !wrong.is_empty() {
            failures.push(format!("{tag}: {}", wrong.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The gate's verdict on every case of `mode`, through a gating proxy to the mock.
async fn blocked(mode: &str, tool: &str, policy: &str, expected_cases: usize) {
    let m = mock().await;
    let p = proxy(m.addr(), GATED).await;
    let cases = run_all(mode, mode, &p).await;
    assert_eq!(cases.len(), expected_cases, "{cases:?}");
    let text = p.metrics().await;
    assert_blocked(
        &cases,
        tool,
        policy,
        |tag| requests_of(&m, tag),
        Some(&text),
    );
}

/// The model calls `send_email`, which needs approval, with `approval_action: block`: streamed
/// and JSON, every framework stops before the tool and raises the proxy's error.
#[tokio::test]
async fn frameworks_never_run_a_tool_call_withheld_for_approval() {
    blocked("approval", "send_email", "approval_required", 15).await;
}

/// The model's arguments are not JSON (`x-mock-truncate-tool-args`, OpenAI chat and Anthropic
/// streams) with `tool_call_action: block`: without the gate LangGraph runs the tool on arguments
/// it repaired itself, the others retry the model; gated, each raises `invalid_tool_args`.
#[tokio::test]
async fn frameworks_never_run_a_streamed_call_with_invalid_arguments() {
    blocked("invalid", "get_weather", "invalid_tool_args", 7).await;
}

/// An upstream that answers every call with a gate error in the planned shape
/// (`tests/fixtures/stream_errors/`): streamed calls get the first event of a turn and then the
/// error event, others the 403 JSON. Returns its address and the `x-agent-name` of each request.
async fn gate_shapes_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stream_errors");
    let fixture = move |name: &str| Bytes::from(std::fs::read(dir.join(name)).unwrap());
    let bodies = std::sync::Arc::new(
        [
            "chat.sse",
            "responses.sse",
            "anthropic.sse",
            "openai.json",
            "anthropic.json",
        ]
        .map(fixture),
    );
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (bodies, log) = (bodies.clone(), log.clone());
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let (bodies, log) = (bodies.clone(), log.clone());
                async move {
                    let agent = req
                        .headers()
                        .get("x-agent-name")
                        .map(|v| v.to_str().unwrap().to_string());
                    log.lock().unwrap().push(agent.unwrap_or_default());
                    let path = req.uri().path().to_string();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let streamed =
                        serde_json::from_slice::<Value>(&body).unwrap()["stream"] == true;
                    let anthropic = path.ends_with("/messages");
                    let (status, kind, body) =
                        match (streamed, anthropic, path.ends_with("/responses")) {
                            (true, true, _) => (200, "text/event-stream", &bodies[2]),
                            (true, false, true) => (200, "text/event-stream", &bodies[1]),
                            (true, false, false) => (200, "text/event-stream", &bodies[0]),
                            (false, true, _) => (403, "application/json", &bodies[4]),
                            (false, false, _) => (403, "application/json", &bodies[3]),
                        };
                    let resp = http::Response::builder()
                        .status(status)
                        .header("content-type", kind)
                        .body(Full::new(body.clone()))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
            );
        }
    });
    (addr, seen)
}

/// The error shapes the stream gate is planned to send (tests/fixtures/stream_errors/), served
/// as the model's turn through the proxy: every framework raises them as errors naming the tool
/// and the policy, runs nothing and sends nothing more — what the gated tests above expect.
#[tokio::test]
async fn frameworks_raise_the_planned_gate_error_shapes() {
    let (upstream, seen) = gate_shapes_upstream().await;
    let p = proxy(upstream, "").await;
    let cases = run_all("approval", "shapes", &p).await;
    assert_eq!(cases.len(), 15, "{cases:?}");
    let sent = |tag: &str| seen.lock().unwrap().iter().filter(|a| *a == tag).count();
    assert_blocked(&cases, "send_email", "approval_required", sent, None);
}

/// A supervisor handing off to a worker (OpenAI Agents SDK `handoffs`), each agent its own
/// session and client, with OpenTelemetry propagation on (`tests/sdk/frameworks/task_handoff.py`):
/// every call carries the one trace's `traceparent`, and the proxy counts them as one task.
#[tokio::test]
async fn an_agents_sdk_handoff_under_one_otel_trace_is_one_task() {
    let m = mock().await;
    let p = proxy(m.addr(), "").await;
    let base = format!("http://{}", p.addr);
    let out = run_sdk_script_with("frameworks/task_handoff.py", &["handoff", &base]).await;
    assert_eq!(out["error"], Value::Null, "{out}");
    assert_eq!(
        out["last_agent"], "worker_handoff",
        "the worker answered: {out}"
    );
    assert_eq!(out["usage"]["requests"], 2, "{out}");
    let trace = out["trace_id"].as_str().unwrap();
    assert_eq!(trace.len(), 32);
    // Both calls went upstream with the agent's trace (spans are off: forwarded as sent).
    let requests = m.requests();
    let traced: Vec<_> = requests
        .iter()
        .filter_map(|r| r.header("traceparent"))
        .collect();
    assert_eq!(traced.len(), 2, "{traced:?}");
    assert!(traced.iter().all(|tp| tp.split('-').nth(1) == Some(trace)));
    // Two agents, two sessions, one task.
    let (r, body) = get(&format!("http://{}/v1/tasks/{trace}", p.admin)).await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(&body));
    let t: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(t["llm_calls"], 2, "{t}");
    assert_eq!(t["steps"], 2, "{t}");
    assert_eq!(
        t["tool_calls"], 1,
        "the handoff is the supervisor's tool call: {t}"
    );
    assert_eq!(t["sidecar"]["agent"], "supervisor-handoff", "{t}");
    let reported =
        out["usage"]["input"].as_u64().unwrap() + out["usage"]["output"].as_u64().unwrap();
    assert_eq!(t["tokens"]["total"].as_u64(), Some(reported), "{t}");
    for agent in ["supervisor-handoff", "worker-handoff"] {
        assert_eq!(session(&p, agent).await["steps"], 1, "{agent}");
    }
    let (_, body) = get(&format!("http://{}/v1/tasks?top=10", p.admin)).await;
    let top: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(top["tasks"].as_array().unwrap().len(), 1, "{top}");
}
