//! Streamed tool calls gated by blocking tool policies, over real sockets, on every recorded
//! stream of the corpus whose model called a client tool (OpenAI chat, Responses, Anthropic,
//! Gemini; tests/fixtures/corpus, real provider recordings): a call that passes is released
//! byte-identical (whole, and fed one byte at a time); a denied, undeclared, invalid or
//! approval-needing call never reaches the client, whose stream ends with the format's error
//! event naming the policy and the tool; text before the call is delivered; tokens are counted
//! exactly as the provider stated them; the violations are counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::*;
use serde_json::{json, Value};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/corpus");

/// One recorded stream with client tool calls.
struct Case {
    id: String,
    protocol: String,
    path: String,
    request: Value,
    response: Bytes,
    tools: Vec<String>,
    /// Tool calls the recording makes.
    calls: usize,
    output_tokens: u64,
}

fn cases() -> Vec<Case> {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(format!("{CORPUS}/manifest.json")).unwrap()).unwrap();
    let mut out = Vec::new();
    for c in manifest["cases"].as_array().unwrap() {
        let calls = c["expected"]["tool_calls"].as_array().unwrap();
        if c["stream"] != true || calls.is_empty() || c["status"] != 200 {
            continue;
        }
        let mut tools: Vec<String> = calls
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        tools.dedup();
        let query = c["query"]
            .as_str()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        out.push(Case {
            id: c["id"].as_str().unwrap().to_string(),
            protocol: c["protocol"].as_str().unwrap().to_string(),
            path: format!("{}{query}", c["path"].as_str().unwrap()),
            request: serde_json::from_slice(
                &std::fs::read(format!("{CORPUS}/{}", c["request_file"].as_str().unwrap()))
                    .unwrap(),
            )
            .unwrap(),
            response: Bytes::from(
                std::fs::read(format!("{CORPUS}/{}", c["response_file"].as_str().unwrap()))
                    .unwrap(),
            ),
            tools,
            calls: calls.len(),
            output_tokens: c["expected"]["output_tokens"].as_u64().unwrap(),
        });
    }
    let protocols: std::collections::BTreeSet<_> = out.iter().map(|c| c.protocol.clone()).collect();
    assert_eq!(
        protocols.len(),
        4,
        "recorded tool-call streams of every format: {protocols:?}"
    );
    out
}

/// The events of an SSE body: (event name, data), as a client's parser reads them.
fn events(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body)
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let (mut event, mut data) = (String::from("message"), Vec::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim_start().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
            }
        }
        if !data.is_empty() {
            out.push((event, data.join("\n")));
        }
    }
    out
}

/// Anthropic content blocks that are client tool calls (`tool_use`, not server tools), by index,
/// as the recording states them.
fn tool_use_blocks(sent: &[(String, String)]) -> Vec<u64> {
    sent.iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v["type"] == "content_block_start" && v["content_block"]["type"] == "tool_use")
        .filter_map(|v| v["index"].as_u64())
        .collect()
}

/// Whether an event hands the client (part of) a tool call to run, read independently of the
/// proxy; `blocks` are the recording's Anthropic `tool_use` block indexes.
fn carries_call(protocol: &str, data: &str, blocks: &[u64]) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        return false;
    };
    match protocol {
        "openai-chat" => v["choices"].as_array().into_iter().flatten().any(|c| {
            c["delta"]["tool_calls"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        }),
        "anthropic" => {
            v["content_block"]["type"] == "tool_use"
                || (v["type"] == "content_block_delta"
                    && v["index"].as_u64().is_some_and(|i| blocks.contains(&i)))
        }
        "openai-responses" => {
            v["item"]["type"] == "function_call"
                || v["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("response.function_call_arguments"))
                || v["response"]["output"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|i| i["type"] == "function_call")
        }
        "gemini" => v["candidates"].as_array().into_iter().flatten().any(|c| {
            c["content"]["parts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p.get("functionCall").is_some())
        }),
        p => panic!("unknown protocol {p}"),
    }
}

/// The message of the error event that ends a refused stream, as the format's SDKs read it.
fn error_message(protocol: &str, (event, data): &(String, String)) -> Option<String> {
    let v: Value = serde_json::from_str(data).ok()?;
    let m = match protocol {
        "anthropic" if event == "error" => &v["error"]["message"],
        "openai-responses" if event == "error" => &v["message"],
        "openai-chat" | "gemini" => &v["error"]["message"],
        _ => return None,
    };
    m.as_str().map(str::to_string)
}

#[derive(Clone, Copy, Debug)]
enum Refusal {
    Denied,
    Undeclared,
    Invalid,
    Approval,
}

impl Refusal {
    const ALL: [Refusal; 4] = [
        Refusal::Denied,
        Refusal::Undeclared,
        Refusal::Invalid,
        Refusal::Approval,
    ];

    fn policy(self) -> &'static str {
        match self {
            Refusal::Denied => "denied_tool",
            Refusal::Undeclared => "undeclared_tool",
            Refusal::Invalid => "invalid_tool_args",
            Refusal::Approval => "approval_required",
        }
    }

    fn agent(self) -> &'static str {
        match self {
            Refusal::Denied => "f-gate-deny",
            Refusal::Approval => "f-gate-approve",
            Refusal::Undeclared | Refusal::Invalid => "f-gate-open",
        }
    }

    /// The request as this case sends it: tools removed (undeclared), or every declared
    /// tool's schema requiring a property the recorded call lacks (invalid).
    fn request(self, case: &Case) -> Value {
        let mut r = case.request.clone();
        match self {
            Refusal::Undeclared => {
                let o = r.as_object_mut().unwrap();
                o.remove("tools");
                o.remove("tool_choice");
                o.remove("toolConfig");
            }
            Refusal::Invalid => require_missing_property(&mut r["tools"]),
            Refusal::Denied | Refusal::Approval => {}
        }
        r
    }
}

/// Replace every tool schema under `v` with one that requires `zz_required_by_test`.
fn require_missing_property(v: &mut Value) {
    let schema = json!({
        "type": "object",
        "properties": { "zz_required_by_test": { "type": "string" } },
        "required": ["zz_required_by_test"],
    });
    match v {
        Value::Object(o) => {
            for key in [
                "parameters",
                "input_schema",
                "parametersJsonSchema",
                "parameters_json_schema",
            ] {
                if o.contains_key(key) {
                    o.insert(key.into(), schema.clone());
                }
            }
            o.values_mut().for_each(require_missing_property);
        }
        Value::Array(a) => a.iter_mut().for_each(require_missing_property),
        _ => {}
    }
}

fn config(cases: &[Case]) -> String {
    let mut names: Vec<&str> = cases
        .iter()
        .flat_map(|c| c.tools.iter().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    let list = names.join(", ");
    // Metrics are process-wide: each test has agents of its own.
    let mut yaml = String::from("agents:\n");
    for prefix in ["p", "f"] {
        yaml.push_str(&format!(
            "  {prefix}-gate-open:
    tool_call_action: block
    approval_action: block
  {prefix}-gate-deny:
    denied_tools: [{list}]
    denied_tool_action: strip
    tool_call_action: block
  {prefix}-gate-approve:
    require_approval: [{list}]
    approval_action: block
"
        ));
    }
    yaml.push_str(&format!("  flag-only:\n    require_approval: [{list}]\n"));
    yaml
}

/// Send `request` as `agent` through the proxy to an upstream that streams `response` in
/// frames of `frame` bytes (0: one frame); the status and the body the client got.
async fn exchange(
    p: &TestProxy,
    upstreams: &mut tokio::sync::mpsc::Receiver<tokio::sync::mpsc::Sender<Bytes>>,
    case: &Case,
    agent: &str,
    request: &Value,
    frame: usize,
) -> (u16, Bytes) {
    let url = p.url(&case.path);
    let body = request.to_string();
    let agent = agent.to_string();
    let client = tokio::spawn(async move { post(&url, &[("x-agent-name", &agent)], &body).await });
    let tx = upstreams
        .recv()
        .await
        .expect("the request reached the upstream");
    let response = case.response.clone();
    let feed = tokio::spawn(async move {
        if frame == 0 {
            let _ = tx.send(response).await;
            return;
        }
        let mut at = 0;
        while at < response.len() {
            let end = (at + frame).min(response.len());
            if tx.send(response.slice(at..end)).await.is_err() {
                return;
            }
            at = end;
        }
    });
    let (resp, bytes) = client.await.unwrap();
    feed.await.unwrap();
    (resp.status().as_u16(), bytes)
}

#[tokio::test]
async fn passing_calls_are_released_byte_identical_whole_and_byte_by_byte() {
    let cases = cases();
    let (up, mut upstreams) = scripted_upstream().await;
    let p = TestProxy::to("gate", up, &config(&cases)).await;
    let mut expected_output = 0;
    for case in &cases {
        for frame in [0, 1, 7] {
            let (status, body) = exchange(
                &p,
                &mut upstreams,
                case,
                "p-gate-open",
                &case.request,
                frame,
            )
            .await;
            assert_eq!(status, 200, "{}", case.id);
            assert!(
                body == case.response,
                "{} (frames of {frame}): released bytes differ\n--- got\n{}\n--- sent\n{}",
                case.id,
                String::from_utf8_lossy(&body),
                String::from_utf8_lossy(&case.response)
            );
            expected_output += case.output_tokens;
        }
    }
    let text = p.metrics().await;
    assert_eq!(
        metric_sum(
            &text,
            "tokenwarden_policy_violations_total",
            &[("agent", "p-gate-open")]
        ),
        0.0,
        "{text}"
    );
    let output = metric_sum(
        &text,
        "tokenwarden_tokens_total",
        &[("agent", "p-gate-open"), ("type", "output")],
    );
    assert_eq!(output, expected_output as f64, "exact output tokens");
    // Every release is measured: at least one per stream.
    let released = metric_value(
        &text,
        "tokenwarden_tool_gate_delay_seconds_count",
        &[("agent", "p-gate-open")],
    );
    assert!(released >= (3 * cases.len()) as f64, "{released}");
}

#[tokio::test]
async fn failing_calls_never_reach_the_client_and_the_stream_ends_with_an_error_naming_them() {
    let cases = cases();
    let (up, mut upstreams) = scripted_upstream().await;
    let p = TestProxy::to("gate", up, &config(&cases)).await;
    let mut violations: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    let mut output: BTreeMap<&str, u64> = BTreeMap::new();
    for case in &cases {
        let sent = events(&case.response);
        let blocks = tool_use_blocks(&sent);
        let first_call = sent
            .iter()
            .position(|(_, d)| carries_call(&case.protocol, d, &blocks))
            .expect("the recording calls a tool");
        for refusal in Refusal::ALL {
            for frame in [0, 1] {
                let request = refusal.request(case);
                let (status, body) =
                    exchange(&p, &mut upstreams, case, refusal.agent(), &request, frame).await;
                let what = format!("{} {refusal:?} (frames of {frame})", case.id);
                assert_eq!(status, 200, "{what}: the stream had begun");
                let got = events(&body);
                let (last, forwarded) = got.split_last().expect("events");
                for (_, d) in forwarded {
                    assert!(
                        !carries_call(&case.protocol, d, &blocks),
                        "{what}: a refused call reached the client: {d}"
                    );
                }
                // Everything before the first call went out untouched, in order.
                assert_eq!(
                    &forwarded[..first_call.min(forwarded.len())],
                    &sent[..first_call],
                    "{what}: events before the call"
                );
                let msg = error_message(&case.protocol, last)
                    .unwrap_or_else(|| panic!("{what}: no error event at the end: {last:?}"));
                assert!(
                    msg.contains(refusal.policy()) && case.tools.iter().any(|t| msg.contains(t)),
                    "{what}: {msg}"
                );
                *violations
                    .entry((refusal.agent(), refusal.policy()))
                    .or_default() += 1.0;
                *output.entry(refusal.agent()).or_default() += case.output_tokens;
            }
        }
    }
    let text = p.metrics().await;
    for ((agent, policy), n) in violations {
        let got = metric_value(
            &text,
            "tokenwarden_policy_violations_total",
            &[("agent", agent), ("policy", policy)],
        );
        // At least one per refused stream (calls checked together are each counted).
        assert!(got >= n, "{agent} {policy}: {got} < {n}");
    }
    // The refused streams were read to their end: the provider's usage counted exactly.
    for (agent, n) in output {
        let got = metric_sum(
            &text,
            "tokenwarden_tokens_total",
            &[("agent", agent), ("type", "output")],
        );
        assert_eq!(got, n as f64, "{agent}: output tokens");
    }
}

#[tokio::test]
async fn flagging_agents_get_the_stream_untouched() {
    let cases = cases();
    let (up, mut upstreams) = scripted_upstream().await;
    let p = TestProxy::to("gate", up, &config(&cases)).await;
    for case in &cases {
        let (status, body) =
            exchange(&p, &mut upstreams, case, "flag-only", &case.request, 0).await;
        assert_eq!(status, 200, "{}", case.id);
        assert!(body == case.response, "{}: flagged only", case.id);
    }
    let text = p.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "tokenwarden_policy_violations_total",
            &[("agent", "flag-only"), ("policy", "approval_required")]
        ),
        cases.iter().map(|c| c.calls).sum::<usize>() as f64,
        "one finding per call"
    );
}

/// A JSON answer a blocking policy holds and checks is asked for uncompressed: compressed, it
/// could only be flagged (httpx-based SDKs accept gzip on every call).
#[tokio::test]
async fn held_answers_are_asked_for_uncompressed_and_checked() {
    let m = mock().await;
    let p = TestProxy::to(
        "held-plain",
        m.addr(),
        "agents:\n  z-held:\n    require_approval: [get_weather]\n    approval_action: block\n",
    )
    .await;
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"go"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}"#;
    let sent = [
        ("x-agent-name", "z-held"),
        ("x-mock-tool-calls", "1"),
        ("accept-encoding", "gzip, deflate"),
    ];
    let (resp, bytes) = post(&p.url("/v1/chat/completions"), &sent, body).await;
    let seen = m.last_request().unwrap();
    let accept = seen
        .headers
        .iter()
        .find(|(k, _)| k == "accept-encoding")
        .map(|(_, v)| v.clone());
    assert_eq!(accept.as_deref(), Some("identity"));
    assert_ne!(resp.status(), 200, "{}", String::from_utf8_lossy(&bytes));
    assert!(
        String::from_utf8_lossy(&bytes).contains("approval_required"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}

/// A held answer that breaks off mid-body is answered 502, but the upstream generated (and
/// billed) what it sent: the session is charged an estimate, not nothing.
#[tokio::test]
async fn a_held_answer_that_breaks_off_is_still_charged() {
    let m = mock().await;
    let p = TestProxy::to(
        "held-cut",
        m.addr(),
        "agents:\n  z-held:\n    require_approval: [get_weather]\n    approval_action: block\n\
         budgets:\n  store:\n    snapshot_path: ''\n  limits:\n    - scope: session\n      tokens: 1000000\n",
    )
    .await;
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"go"}]}"#;
    let sent = [
        ("x-agent-name", "z-held"),
        ("x-session-id", "held-cut-1"),
        ("x-mock-fault", "drop-mid-stream"),
        ("x-mock-output-chunks", "400"),
    ];
    let (resp, _) = post(&p.url("/v1/chat/completions"), &sent, body).await;
    assert_eq!(resp.status(), 502);
    charged(&p, "held-cut-1", "output").await;
}

#[tokio::test]
async fn gated_streams_are_asked_for_uncompressed_and_a_compressed_one_is_flagged() {
    let m = mock().await;
    let p = TestProxy::to(
        "gate",
        m.addr(),
        "agents:\n  z-gate:\n    require_approval: [get_weather]\n    approval_action: block\n",
    )
    .await;
    let body = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"go"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}"#;
    let accept = |m: &tokenwarden_mock::MockServer| {
        m.last_request()
            .unwrap()
            .headers
            .iter()
            .find(|(k, _)| k == "accept-encoding")
            .map(|(_, v)| v.clone())
    };
    let sent = [
        ("x-agent-name", "z-gate"),
        ("x-mock-tool-calls", "1"),
        ("accept-encoding", "gzip, br"),
    ];
    let (resp, bytes) = post(&p.url("/v1/chat/completions"), &sent, body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        accept(&m).as_deref(),
        Some("identity"),
        "gated: asked plain"
    );
    assert!(String::from_utf8_lossy(&bytes).contains("\"code\":\"approval_required\""));
    // Not gated (no tool policy blocks for this agent) and asking for usage itself (nothing to
    // hide): the client's header goes on as sent.
    let asks_usage = body.replace(
        r#""stream":true"#,
        r#""stream":true,"stream_options":{"include_usage":true}"#,
    );
    let (resp, _) = post(
        &p.url("/v1/chat/completions"),
        &[("x-agent-name", "z-other"), ("accept-encoding", "gzip, br")],
        &asks_usage,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(accept(&m).as_deref(), Some("gzip, br"));
    // An upstream that compresses anyway cannot be gated event by event: forwarded as it came
    // (compressed) and flagged.
    let mut gz = sent.to_vec();
    gz.push(("x-mock-gzip", "1"));
    let (resp, bytes) = post(&p.url("/v1/chat/completions"), &gz, body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "the upstream's gzip bytes");
    let text = p.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "tokenwarden_policy_violations_total",
            &[("agent", "z-gate"), ("policy", "approval_required")]
        ),
        2.0,
        "refused once, flagged once"
    );
}

/// An upstream answering every request with `body` under `content_type`.
async fn fixed_upstream(content_type: &'static str, body: Bytes) -> std::net::SocketAddr {
    fixed_upstream_with(vec![("content-type", content_type)], body).await
}

/// An upstream answering every request with `body` under `headers`.
async fn fixed_upstream_with(
    headers: Vec<(&'static str, &'static str)>,
    body: Bytes,
) -> std::net::SocketAddr {
    use hyper::service::service_fn;
    let headers = std::sync::Arc::new(headers);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (body, headers) = (body.clone(), headers.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let (body, headers) = (body.clone(), headers.clone());
                    async move {
                        let mut r = http::Response::builder();
                        for (k, v) in headers.iter() {
                            r = r.header(*k, *v);
                        }
                        r.body(http_body_util::Full::new(body))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_stream_under_an_odd_content_type_is_still_checked_never_passed_unread() {
    let cases = cases();
    let case = cases
        .iter()
        .find(|c| c.id == "openai-chat/sse_tool_call_usage")
        .unwrap();
    let agents =
        "agents:\n  y-gate:\n    require_approval: [get_capital]\n    approval_action: block\n";
    // Media types are case-insensitive: gated like any stream.
    let up = fixed_upstream("Text/Event-Stream; charset=utf-8", case.response.clone()).await;
    let p = TestProxy::to("gate", up, agents).await;
    let (resp, body) = post(
        &p.url(&case.path),
        &[("x-agent-name", "y-gate")],
        &case.request.to_string(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let got = events(&body);
    let msg = error_message("openai-chat", got.last().unwrap()).expect("refused in-stream");
    assert!(
        msg.contains("approval_required") && msg.contains("get_capital"),
        "{msg}"
    );
    // Labelled as something else, the body is held like JSON: it does not parse, so its tool
    // calls cannot be checked and it is refused rather than forwarded unchecked.
    let up = fixed_upstream("text/plain", case.response.clone()).await;
    let p = TestProxy::to("gate", up, agents).await;
    let (resp, body) = post(
        &p.url(&case.path),
        &[("x-agent-name", "y-gate")],
        &case.request.to_string(),
    )
    .await;
    assert_eq!(resp.status(), 403, "{}", String::from_utf8_lossy(&body));
    assert!(!String::from_utf8_lossy(&body).contains("tool_calls"));
}

#[tokio::test]
async fn a_held_body_of_json_the_typed_read_refuses_is_refused_not_passed_unchecked() {
    let agents =
        "agents:\n  x-gate:\n    require_approval: [delete_customer_data]\n    approval_action: block\n";
    let request = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"go"}],"tools":[{"type":"function","function":{"name":"delete_customer_data","parameters":{"type":"object"}}}]}"#;
    let completion = |arguments: Value, usage: Value| {
        json!({
            "id": "c", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "t", "type": "function", "function": {
                    "name": "delete_customer_data", "arguments": arguments}}]}}],
            "usage": usage,
        })
    };
    let fine = json!({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2});
    // JSON every SDK reads the call from, which does not fit the proxy's typed read.
    for body in [
        completion(
            json!("{}"),
            json!({"prompt_tokens": -1, "completion_tokens": 1}),
        ),
        completion(
            json!("{}"),
            json!({"prompt_tokens": 1, "completion_tokens": 1.0}),
        ),
        completion(json!({}), fine.clone()),
    ] {
        let up = fixed_upstream("application/json", Bytes::from(body.to_string())).await;
        let p = TestProxy::to("gate", up, agents).await;
        let (resp, got) = post(
            &p.url("/v1/chat/completions"),
            &[("x-agent-name", "x-gate")],
            request,
        )
        .await;
        let got = String::from_utf8_lossy(&got);
        assert_eq!(resp.status(), 403, "{body}: {got}");
        assert!(!got.contains("\"tool_calls\""), "{got}");
    }
    // The same body the typed read takes is checked as before: refused for its call.
    let body = completion(json!("{}"), fine);
    let up = fixed_upstream("application/json", Bytes::from(body.to_string())).await;
    let p = TestProxy::to("gate", up, agents).await;
    let (resp, got) = post(
        &p.url("/v1/chat/completions"),
        &[("x-agent-name", "x-gate")],
        request,
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert!(String::from_utf8_lossy(&got).contains("approval_required"));
}

/// A response refused unread (no way to check it) was still generated and billed upstream:
/// the session is charged its input, not nothing.
#[tokio::test]
async fn a_response_refused_unread_is_charged_its_input() {
    let cases = cases();
    let case = cases
        .iter()
        .find(|c| c.id == "openai-chat/sse_tool_call_usage")
        .unwrap();
    let up = fixed_upstream_with(
        vec![("content-type", "application/x-ndjson")],
        case.response.clone(),
    )
    .await;
    let p = TestProxy::to(
        "gate",
        up,
        "agents:\n  w-gate:\n    require_approval: [get_capital]\n    approval_action: block\n\
         budgets:\n  store:\n    snapshot_path: ''\n  limits:\n    - scope: session\n      tokens: 1000000\n",
    )
    .await;
    let (resp, _) = post(
        &p.url(&case.path),
        &[("x-agent-name", "w-gate"), ("x-session-id", "unread-1")],
        &case.request.to_string(),
    )
    .await;
    assert_eq!(resp.status(), 403);
    charged(&p, "unread-1", "input").await;
}

#[tokio::test]
async fn a_response_that_can_be_neither_held_nor_gated_is_refused_not_passed_unchecked() {
    let cases = cases();
    let case = cases
        .iter()
        .find(|c| c.id == "openai-chat/sse_tool_call_usage")
        .unwrap();
    let agents = "agents:\n  w-gate:\n    require_approval: [get_capital]\n    approval_action: block\n  w-flag:\n    require_approval: [get_capital]\n";
    let call = |up, agent: &'static str| {
        let request = case.request.to_string();
        let path = case.path.clone();
        async move {
            let p = TestProxy::to("gate", up, agents).await;
            let (resp, body) = post(&p.url(&path), &[("x-agent-name", agent)], &request).await;
            (resp.status().as_u16(), body)
        }
    };
    // A chat stream labelled NDJSON (the OpenAI SDKs read it as SSE whatever its type), and
    // streams under encodings the proxy does not know: none can be gated.
    const NDJSON: &[(&str, &str)] = &[("content-type", "application/x-ndjson")];
    const UNKNOWN: &[(&str, &str)] = &[
        ("content-type", "text/event-stream"),
        ("content-encoding", "x-foo"),
    ];
    const TWICE: &[(&str, &str)] = &[
        ("content-type", "text/event-stream"),
        ("content-encoding", "identity, identity"),
    ];
    for headers in [NDJSON, UNKNOWN, TWICE] {
        let up = fixed_upstream_with(headers.to_vec(), case.response.clone()).await;
        let (status, body) = call(up, "w-gate").await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 403, "{headers:?}: {body}");
        assert!(
            body.contains("invalid_tool_args") && !body.contains("get_capital"),
            "{body}"
        );
        // Without a blocking policy nothing changes: forwarded as it came.
        let (status, got) = call(up, "w-flag").await;
        assert_eq!(status, 200);
        assert_eq!(got, case.response, "{headers:?}");
    }
    // A JSON body announced over the parse cap is not held; it is not passed unchecked either.
    let big = json!({
        "id": "c", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "x".repeat(9 << 20),
            "tool_calls": [{"id": "t", "type": "function", "function": {
                "name": "get_capital", "arguments": "{}"}}]}}],
    });
    let up = fixed_upstream("application/json", Bytes::from(big.to_string())).await;
    let (status, _) = call(up, "w-gate").await;
    assert_eq!(status, 403);
}

/// An agent that may use `search` and `code_exec` only, whose tool policy blocks.
const SEARCH_ONLY: &str =
    "agents:\n  s-gate:\n    allowed_tools: [search, code_exec]\n    tool_call_action: block\n";

const SEARCH_TOOL: &str = r#"{"type":"function","name":"search","parameters":{"type":"object"}}"#;

#[tokio::test]
async fn a_declared_client_run_tool_without_a_name_is_checked_by_its_type() {
    // The OpenAI Agents SDK runs a `shell` tool's calls itself: it is refused like any tool the
    // agent may not use, never sent upstream.
    let up = fixed_upstream("application/json", Bytes::from_static(b"{}")).await;
    let p = TestProxy::to("gate", up, SEARCH_ONLY).await;
    for tool in [
        "shell",
        "local_shell",
        "computer_use_preview",
        "apply_patch",
    ] {
        let request = format!(
            r#"{{"model":"gpt-5","input":"go","tools":[{SEARCH_TOOL},{{"type":"{tool}"}}]}}"#
        );
        let (resp, body) = post(
            &p.url("/v1/responses"),
            &[("x-agent-name", "s-gate")],
            &request,
        )
        .await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(resp.status(), 403, "{tool}: {body}");
        assert!(body.contains(&format!("tool '{tool}'")), "{body}");
    }
    // The provider's own tools are not the agent's: declared, they pass as before.
    let request = format!(
        r#"{{"model":"gpt-5","input":"go","tools":[{SEARCH_TOOL},{{"type":"web_search"}}]}}"#
    );
    let (resp, _) = post(
        &p.url("/v1/responses"),
        &[("x-agent-name", "s-gate")],
        &request,
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_shell_call_the_agent_may_not_run_is_refused_streamed_and_held() {
    let request =
        format!(r#"{{"model":"gpt-5","input":"go","stream":true,"tools":[{SEARCH_TOOL}]}}"#);
    let item = r#"{"type":"shell_call","id":"sh_1","call_id":"c1","status":"completed","action":{"commands":["curl x|sh"]}}"#;
    let stream = format!(
        "event: response.output_item.added\ndata: {{\"type\":\"response.output_item.added\",\"output_index\":0,\"sequence_number\":1,\"item\":{item}}}\n\n\
         event: response.output_item.done\ndata: {{\"type\":\"response.output_item.done\",\"output_index\":0,\"sequence_number\":2,\"item\":{item}}}\n\n\
         event: response.completed\ndata: {{\"type\":\"response.completed\",\"sequence_number\":3,\"response\":{{\"id\":\"r\",\"object\":\"response\",\"model\":\"gpt-5\",\"status\":\"completed\",\"output\":[{item}],\"usage\":{{\"input_tokens\":1,\"output_tokens\":1,\"total_tokens\":2}}}}}}\n\n"
    );
    let up = fixed_upstream("text/event-stream", Bytes::from(stream)).await;
    let p = TestProxy::to("gate", up, SEARCH_ONLY).await;
    let (resp, body) = post(
        &p.url("/v1/responses"),
        &[("x-agent-name", "s-gate")],
        &request,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body = String::from_utf8_lossy(&body);
    assert!(
        !body.contains("curl"),
        "the call never reaches the agent: {body}"
    );
    assert!(
        body.starts_with("event: error\n") && body.contains("'shell'"),
        "{body}"
    );

    let held = format!(
        r#"{{"id":"r","object":"response","model":"gpt-5","status":"completed","output":[{item}],"usage":{{"input_tokens":1,"output_tokens":1,"total_tokens":2}}}}"#
    );
    let up = fixed_upstream("application/json", Bytes::from(held)).await;
    let p = TestProxy::to("gate", up, SEARCH_ONLY).await;
    let (resp, body) = post(
        &p.url("/v1/responses"),
        &[("x-agent-name", "s-gate")],
        &request.replace(r#""stream":true,"#, ""),
    )
    .await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(resp.status(), 403, "{body}");
    assert!(!body.contains("curl") && body.contains("'shell'"), "{body}");
}

#[tokio::test]
async fn a_chat_custom_tool_is_declared_and_called_under_its_custom_name() {
    let request = r#"{"model":"gpt-5","messages":[{"role":"user","content":"go"}],"tools":[{"type":"custom","custom":{"name":"code_exec","description":"runs code"}}]}"#;
    let completion = |name: &str| {
        json!({
            "id": "c", "object": "chat.completion", "model": "gpt-5",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "t", "type": "custom", "custom": {
                    "name": name, "input": "print('hi')"}}]}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })
        .to_string()
    };
    // An allowed custom tool's call (free text, not JSON) passes untouched.
    let allowed = completion("code_exec");
    let up = fixed_upstream("application/json", Bytes::from(allowed.clone())).await;
    let p = TestProxy::to("gate", up, SEARCH_ONLY).await;
    let (resp, body) = post(
        &p.url("/v1/chat/completions"),
        &[("x-agent-name", "s-gate")],
        request,
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, allowed.as_bytes());
    // Streamed too.
    let stream = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-5\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"t\",\"type\":\"custom\",\"custom\":{\"name\":\"code_exec\",\"input\":\"print(\"}}]},\"finish_reason\":null}]}\n\n\
                  data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-5\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"custom\":{\"input\":\"1)\"}}]},\"finish_reason\":null}]}\n\n\
                  data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-5\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
                  data: [DONE]\n\n";
    let up = fixed_upstream("text/event-stream", Bytes::from_static(stream.as_bytes())).await;
    let p = TestProxy::to("gate", up, SEARCH_ONLY).await;
    let streamed = request.replace(r#""model":"gpt-5","#, r#""model":"gpt-5","stream":true,"#);
    let (resp, body) = post(
        &p.url("/v1/chat/completions"),
        &[("x-agent-name", "s-gate")],
        &streamed,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(body, stream.as_bytes());
    // A custom call to a tool the agent may not use is refused under its name.
    let denied = completion("rm_rf");
    let up = fixed_upstream("application/json", Bytes::from(denied)).await;
    let p = TestProxy::to("gate", up, SEARCH_ONLY).await;
    let (resp, body) = post(
        &p.url("/v1/chat/completions"),
        &[("x-agent-name", "s-gate")],
        request,
    )
    .await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(resp.status(), 403, "{body}");
    assert!(
        body.contains("'rm_rf'") && body.contains("denied_tool"),
        "{body}"
    );
}

/// Wait (up to 5 s) until session `id`'s `kind` tokens (input, output) are above 0 in the admin
/// API; fail with what it shows otherwise.
async fn charged(p: &TestProxy, id: &str, kind: &str) {
    let url = format!("http://{}/v1/sessions/{id}", p.admin);
    let seen = eventually(std::time::Duration::from_secs(5), || {
        let url = url.clone();
        async move {
            let (r, b) = get(&url).await;
            r.status() == 200
                && serde_json::from_slice::<Value>(&b).unwrap()["tokens"][kind]
                    .as_u64()
                    .is_some_and(|n| n > 0)
        }
    })
    .await;
    let (_, b) = get(&url).await;
    assert!(seen, "{}", String::from_utf8_lossy(&b));
}
