//! Agent policies through the proxy, against the mock provider, over real sockets: every policy
//! in OpenAI chat and Anthropic shapes, JSON and streamed. Refused requests never reach the mock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

const AGENTS: &str = r#"
agents:
  guarded:
    allowed_tools: [get_weather, search_docs]
    denied_tools: [delete_everything]
  stripper:
    denied_tools: [delete_everything]
    denied_tool_action: strip
  strip-looper:
    denied_tools: [delete_everything, drop_tables]
    denied_tool_action: strip
    loop_detection: { threshold: 2, window: 1m, action: block }
  guarded-capped:
    denied_tools: [delete_everything]
  stepper:
    max_steps: 2
  blocker:
    tool_call_action: block
  blocker-other:
    tool_call_action: block
  blocker-broken:
    tool_call_action: block
  approver:
    require_approval: [get_weather]
    approval_action: block
  approver-flag:
    require_approval: [get_weather]
  looper:
    loop_detection: { threshold: 3, window: 1m, action: block }
  censor:
    forbidden_input:
      - { id: aws_key, regex: "AKIA[0-9A-Z]{16}" }
      - { id: codename, contains: "project nightingale", case_insensitive: true }
  spelling-censor:
    forbidden_input:
      - { id: aws_key, regex: "AKIA[0-9A-Z]{16}" }
  spelling-looper:
    loop_detection: { threshold: 3, window: 1m, action: block }
  clamp:
    max_tokens_cap: { limit: 32 }
  capped:
    max_tokens_cap: { limit: 32, action: reject }
  ctx-block:
    context_window_action: block
  reporter:
    tool_error_markers: ["ERROR:"]
  hallucinated:
    allowed_tools: [get_weather]
"#;

#[derive(Clone, Copy, Debug)]
enum Shape {
    ChatJson,
    ChatStream,
    AnthJson,
    AnthStream,
}

const SHAPES: [Shape; 4] = [
    Shape::ChatJson,
    Shape::ChatStream,
    Shape::AnthJson,
    Shape::AnthStream,
];

/// A schema the mock's `get_weather` arguments (`{"city":"Paris","unit":"celsius"}`) satisfy.
const WEATHER_OK: &str = r#"{"type":"object","properties":{"city":{"type":"string"},"unit":{"type":"string"}},"required":["city"]}"#;
/// A schema they break.
const WEATHER_BAD: &str =
    r#"{"type":"object","properties":{"unit":{"enum":["fahrenheit"]}},"required":["unit"]}"#;
const ANY: &str = r#"{"type":"object"}"#;

impl Shape {
    fn anthropic(self) -> bool {
        matches!(self, Shape::AnthJson | Shape::AnthStream)
    }
    fn stream(self) -> bool {
        matches!(self, Shape::ChatStream | Shape::AnthStream)
    }
    fn path(self) -> &'static str {
        if self.anthropic() {
            "/v1/messages"
        } else {
            "/v1/chat/completions"
        }
    }
    fn name(self) -> &'static str {
        match self {
            Shape::ChatJson => "chat-json",
            Shape::ChatStream => "chat-stream",
            Shape::AnthJson => "anth-json",
            Shape::AnthStream => "anth-stream",
        }
    }
    /// A request declaring `tools` (name, JSON Schema) with one user message `content`.
    fn body(self, tools: &[(&str, &str)], content: &str) -> Value {
        let decls: Vec<Value> = tools
            .iter()
            .map(|(n, s)| {
                let schema: Value = serde_json::from_str(s).unwrap();
                if self.anthropic() {
                    json!({"name": n, "description": "t", "input_schema": schema})
                } else {
                    json!({"type":"function","function":{"name": n, "parameters": schema}})
                }
            })
            .collect();
        let mut v = if self.anthropic() {
            json!({"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":content}]})
        } else {
            json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":content}]})
        };
        if self.stream() {
            v["stream"] = json!(true);
        }
        if !decls.is_empty() {
            v["tools"] = Value::Array(decls);
        }
        v
    }
}

async fn send_as(
    p: &TestProxy,
    shape: Shape,
    agent: &str,
    extra: &[(&str, &str)],
    body: &Value,
) -> (http::Response<()>, bytes::Bytes) {
    let mut headers = vec![("x-agent-name", agent)];
    headers.extend_from_slice(extra);
    post(&p.url(shape.path()), &headers, &body.to_string()).await
}

/// The response is our refusal with `status`, naming `policy` in the provider's shape.
fn assert_refused(
    shape: Shape,
    resp: &http::Response<()>,
    body: &[u8],
    status: u16,
    policy: &str,
) -> String {
    assert_eq!(
        resp.status(),
        status,
        "{shape:?}: {}",
        String::from_utf8_lossy(body)
    );
    assert_eq!(resp.headers()["x-tokenwarden-error"], policy, "{shape:?}");
    let v: Value = serde_json::from_slice(body).unwrap();
    if shape.anthropic() {
        assert_eq!(v["type"], "error", "{shape:?}");
    }
    assert_eq!(v["error"]["type"], policy, "{shape:?}: {v}");
    v["error"]["message"].as_str().unwrap().to_string()
}

/// A stream refused mid-way by a gated tool call: 200 (it had begun), no tool call delivered,
/// ended by the provider's error event naming `policy`; its message.
fn assert_stream_refused(
    shape: Shape,
    resp: &http::Response<()>,
    body: &[u8],
    policy: &str,
) -> String {
    assert_eq!(resp.status(), 200, "{shape:?}");
    let text = String::from_utf8_lossy(body);
    assert!(
        !text.contains("tool_calls\":[") && !text.contains("\"tool_use\""),
        "{shape:?}: a refused call reached the client: {text}"
    );
    let last = text
        .trim_end()
        .rsplit("\n\n")
        .next()
        .expect("an event at the end");
    let data = last
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data");
    if shape.anthropic() {
        assert!(last.starts_with("event: error"), "{shape:?}: {last}");
    }
    let v: Value = serde_json::from_str(data).unwrap();
    let error = &v["error"];
    let kind = if shape.anthropic() {
        &error["type"]
    } else {
        &error["code"]
    };
    assert_eq!(kind, policy, "{shape:?}: {v}");
    error["message"].as_str().unwrap().to_string()
}

fn violations(text: &str, agent: &str, policy: &str) -> f64 {
    metric_value(
        text,
        "tokenwarden_policy_violations_total",
        &[("agent", agent), ("policy", policy)],
    )
}

#[tokio::test]
async fn denied_and_unlisted_tools_are_refused_before_the_upstream() {
    let m = mock().await;
    let p = TestProxy::to("policy", m.addr(), AGENTS).await;
    for shape in SHAPES {
        for tool in ["delete_everything", "unlisted_tool"] {
            let body = shape.body(&[("get_weather", ANY), (tool, ANY)], "hi");
            let (resp, bytes) = send_as(&p, shape, "guarded", &[], &body).await;
            let msg = assert_refused(shape, &resp, &bytes, 403, "denied_tool");
            assert!(msg.contains(tool), "{msg}");
        }
    }
    assert_eq!(
        m.stats().requests,
        0,
        "a refused request reached the upstream"
    );
    for shape in SHAPES {
        let body = shape.body(&[("get_weather", ANY), ("search_docs", ANY)], "hi");
        let (resp, _) = send_as(&p, shape, "guarded", &[], &body).await;
        assert_eq!(resp.status(), 200, "{shape:?}");
    }
    assert_eq!(m.stats().requests, 4);
    assert_eq!(
        violations(&p.metrics().await, "guarded", "denied_tool"),
        8.0
    );
}

#[tokio::test]
async fn denied_tools_can_be_stripped_instead() {
    let m = mock().await;
    let p = TestProxy::to("policy", m.addr(), AGENTS).await;
    for shape in SHAPES {
        let body = shape.body(&[("delete_everything", ANY), ("get_weather", ANY)], "hi");
        let (resp, _) = send_as(&p, shape, "stripper", &[], &body).await;
        assert_eq!(resp.status(), 200, "{shape:?}");
        let sent: Value = serde_json::from_slice(&m.last_request().unwrap().body).unwrap();
        let tools = sent["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 1, "{shape:?}: {sent}");
        assert!(!sent.to_string().contains("delete_everything"));
        assert_eq!(
            sent["messages"], body["messages"],
            "the rest is forwarded as sent"
        );
    }
    assert_eq!(
        violations(&p.metrics().await, "stripper", "denied_tool"),
        4.0
    );
    // Loop detection reads the request as it goes upstream: two calls differing only in the
    // denied tools stripped from them are the same request repeated.
    let hdr = [("x-session-id", "strip-loop")];
    for (i, denied) in ["delete_everything", "drop_tables"].into_iter().enumerate() {
        let body = Shape::ChatJson.body(&[("get_weather", ANY), (denied, ANY)], "hi");
        let (resp, _) = send_as(&p, Shape::ChatJson, "strip-looper", &hdr, &body).await;
        assert_eq!(resp.status(), if i == 0 { 200 } else { 403 }, "{denied}");
    }
}

#[tokio::test]
async fn max_steps_refuses_calls_past_the_limit_per_session() {
    let m = mock().await;
    let p = TestProxy::to("policy", m.addr(), AGENTS).await;
    for shape in SHAPES {
        let session = format!("steps-{}", shape.name());
        let hdr = [("x-session-id", session.as_str())];
        for step in 1..=2 {
            let body = shape.body(&[], &format!("step {step}"));
            let (resp, _) = send_as(&p, shape, "stepper", &hdr, &body).await;
            assert_eq!(resp.status(), 200, "{shape:?} step {step}");
        }
        let before = m.stats().requests;
        let (resp, bytes) = send_as(&p, shape, "stepper", &hdr, &shape.body(&[], "step 3")).await;
        let msg = assert_refused(shape, &resp, &bytes, 403, "max_steps");
        assert!(msg.contains('2'), "{msg}");
        assert_eq!(
            m.stats().requests,
            before,
            "refused step reached the upstream"
        );
    }
    // Another session of the same agent starts again at step 1.
    let (resp, _) = send_as(
        &p,
        Shape::ChatJson,
        "stepper",
        &[("x-session-id", "fresh")],
        &Shape::ChatJson.body(&[], "hi"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(violations(&p.metrics().await, "stepper", "max_steps"), 4.0);
}

#[tokio::test]
async fn tool_calls_are_validated_against_declared_schemas() {
    let m = mock().await;
    let p = TestProxy::to("policy", m.addr(), AGENTS).await;
    // The mock answers with get_weather, then search_docs.
    let two = [("x-mock-tool-calls", "2")];
    for shape in SHAPES {
        let agent = format!("val-bad-{}", shape.name());
        let body = shape.body(&[("get_weather", WEATHER_BAD)], "weather?");
        let (resp, bytes) = send_as(&p, shape, &agent, &two, &body).await;
        assert_eq!(resp.status(), 200, "flagged, not blocked");
        assert!(String::from_utf8_lossy(&bytes).contains("search_docs"));

        let agent_ok = format!("val-ok-{}", shape.name());
        let body = shape.body(&[("get_weather", WEATHER_OK), ("search_docs", ANY)], "w?");
        let (resp, _) = send_as(&p, shape, &agent_ok, &two, &body).await;
        assert_eq!(resp.status(), 200);
    }
    let text = p.metrics().await;
    for shape in SHAPES {
        let agent = format!("val-bad-{}", shape.name());
        assert_eq!(
            violations(&text, &agent, "invalid_tool_args"),
            1.0,
            "{shape:?}\n{text}"
        );
        assert_eq!(
            violations(&text, &agent, "undeclared_tool"),
            1.0,
            "{shape:?}"
        );
        let ok = format!("val-ok-{}", shape.name());
        let any = metric_sum(
            &text,
            "tokenwarden_policy_violations_total",
            &[("agent", &ok)],
        );
        assert_eq!(any, 0.0, "{shape:?}: valid calls are not violations");
    }
}

#[tokio::test]
async fn a_hallucinated_tool_the_allow_list_omits_counts_as_both_violations() {
    let m = mock().await;
    let p = TestProxy::to("policy", m.addr(), AGENTS).await;
    // The mock answers with get_weather (declared, allowed), then search_docs: declared by no
    // request here and not on the agent's allow list — a hallucination and a denied tool.
    let two = [("x-mock-tool-calls", "2")];
    for shape in SHAPES {
        let body = shape.body(&[("get_weather", WEATHER_OK)], "weather?");
        let (resp, bytes) = send_as(&p, shape, "hallucinated", &two, &body).await;
        assert_eq!(resp.status(), 200, "{shape:?}: flagged, not blocked");
        assert!(String::from_utf8_lossy(&bytes).contains("search_docs"));
    }
    let text = p.metrics().await;
    assert_eq!(
        violations(&text, "hallucinated", "undeclared_tool"),
        4.0,
        "{text}"
    );
    assert_eq!(
        violations(&text, "hallucinated", "denied_tool"),
        4.0,
        "{text}"
    );
    assert_eq!(violations(&text, "hallucinated", "invalid_tool_args"), 0.0);
}

#[tokio::test]
async fn blocking_replaces_json_responses_and_refuses_streamed_calls() {
    let m = mock().await;
    let p = TestProxy::to("policy", m.addr(), AGENTS).await;
    let one = [("x-mock-tool-calls", "1")];
    for shape in SHAPES {
        let bad = shape.body(&[("get_weather", WEATHER_BAD)], "weather?");
        let (resp, bytes) = send_as(&p, shape, "blocker", &one, &bad).await;
        if shape.stream() {
            // The call was withheld until complete, then refused (tests/tool_gate.rs).
            let msg = assert_stream_refused(shape, &resp, &bytes, "invalid_tool_args");
            assert!(msg.contains("get_weather"), "{msg}");
            assert!(
                !String::from_utf8_lossy(&bytes).contains("Paris"),
                "arguments withheld"
            );
        } else {
            let msg = assert_refused(shape, &resp, &bytes, 403, "invalid_tool_args");
            assert!(msg.contains("get_weather"), "{msg}");
            assert!(
                !String::from_utf8_lossy(&bytes).contains("Paris"),
                "arguments withheld"
            );
        }
        let good = shape.body(&[("get_weather", WEATHER_OK)], "weather?");
        let (resp, bytes) = send_as(&p, shape, "blocker", &one, &good).await;
        assert_eq!(resp.status(), 200, "{shape:?}");
        assert!(String::from_utf8_lossy(&bytes).contains("get_weather"));
    }
    let text = p.metrics().await;
    assert_eq!(violations(&text, "blocker", "invalid_tool_args"), 4.0);
    // Tokens of a withheld response were still spent and counted.
    let out = metric_sum(
        &text,
        "tokenwarden_tokens_total",
        &[("agent", "blocker"), ("type", "output")],
    );
    assert!(out > 0.0, "{text}");
}

#[tokio::test]
async fn approval_required_blocks_or_flags() {
    let m = mock().await;
    let p = TestProxy::to("policy", m.addr(), AGENTS).await;
    let one = [("x-mock-tool-calls", "1")];
    for shape in SHAPES {
        let body = shape.body(&[("get_weather", WEATHER_OK)], "weather?");
        let (resp, bytes) = send_as(&p, shape, "approver", &one, &body).await;
        let msg = if shape.stream() {
            assert_stream_refused(shape, &resp, &bytes, "approval_required")
        } else {
            assert_refused(shape, &resp, &bytes, 403, "approval_required")
        };
        assert!(
            msg.contains("approval") && msg.contains("get_weather"),
            "{msg}"
        );
        let (resp, _) = send_as(&p, shape, "approver-flag", &one, &body).await;
        assert_eq!(resp.status(), 200, "{shape:?}");
        // No tool call, nothing to approve.
        let (resp, _) = send_as(&p, shape, "approver", &[], &body).await;
        assert_eq!(resp.status(), 200, "{shape:?}");
    }
    let text = p.metrics().await;
    assert_eq!(violations(&text, "approver", "approval_required"), 4.0);
    assert_eq!(violations(&text, "approver-flag", "approval_required"), 4.0);
}

#[tokio::test]
async fn repeated_requests_are_flagged_by_default_and_refused_by_config() {
    let m = mock().await;
    let p = TestProxy::to("policy", m.addr(), AGENTS).await;
    for shape in SHAPES {
        let session = format!("loop-{}", shape.name());
        let hdr = [("x-session-id", session.as_str())];
        let body = shape.body(&[("get_weather", ANY)], "same again");
        for _ in 0..2 {
            let (resp, _) = send_as(&p, shape, "looper", &hdr, &body).await;
            assert_eq!(resp.status(), 200, "{shape:?}");
        }
        let before = m.stats().requests;
        let (resp, bytes) = send_as(&p, shape, "looper", &hdr, &body).await;
        let msg = assert_refused(shape, &resp, &bytes, 403, "loop");
        assert!(msg.contains('3'), "{msg}");
        assert_eq!(m.stats().requests, before);
        // A different request in the same session goes through.
        let other = shape.body(&[("get_weather", ANY)], "something new");
        let (resp, _) = send_as(&p, shape, "looper", &hdr, &other).await;
        assert_eq!(resp.status(), 200, "{shape:?}");

        // An agent without config: on by default as a flag.
        let flag_session = format!("loop-flag-{}", shape.name());
        let hdr = [("x-session-id", flag_session.as_str())];
        for _ in 0..3 {
            let (resp, _) = send_as(&p, shape, "loop-default", &hdr, &body).await;
            assert_eq!(resp.status(), 200, "{shape:?}");
        }
    }
    let text = p.metrics().await;
    assert_eq!(violations(&text, "looper", "loop"), 4.0);
    assert_eq!(violations(&text, "loop-default", "loop"), 4.0);
}

#[tokio::test]
async fn forbidden_input_is_a_400_naming_the_pattern_not_the_content() {
    let m = mock().await;
    let p = TestProxy::to("policy", m.addr(), AGENTS).await;
    for shape in SHAPES {
        for (content, id) in [
            ("my key is AKIAABCDEFGHIJKLMNOP", "aws_key"),
            ("status of PROJECT Nightingale?", "codename"),
        ] {
            let (resp, bytes) = send_as(&p, shape, "censor", &[], &shape.body(&[], content)).await;
            let msg = assert_refused(shape, &resp, &bytes, 400, "forbidden_input");
            assert!(msg.contains(id), "{msg}");
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains("AKIA") && !text.contains("ightingale"),
                "{text}"
            );
        }
        let (resp, _) = send_as(&p, shape, "censor", &[], &shape.body(&[], "all clean")).await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        m.stats().requests,
        4,
        "only the clean requests went upstream"
    );
    assert_eq!(
        violations(&p.metrics().await, "censor", "forbidden_input"),
        8.0
    );
}

/// The policies read a body as JSON reads it, whatever its spelling: escaped characters and
/// keys, a key written twice (the last value counts, as for `serde_json` and the providers),
/// key order and whitespace (the loop hash).
#[tokio::test]
async fn policies_read_escapes_repeated_keys_and_spelling_as_json_does() {
    let m = mock().await;
    let p = TestProxy::to("policy", m.addr(), AGENTS).await;
    let url = p.url("/v1/chat/completions");
    let censor = [("x-agent-name", "spelling-censor")];
    let key = "AKIAABCDEFGHIJKLMNOP";
    let msgs = |text: &str| format!(r#"[{{"role":"user","content":"{text}"}}]"#);
    for (body, status) in [
        // Escaped characters in the text and in the key.
        (
            format!(
                r#"{{"model":"gpt-4o-mini","messages":{}}}"#,
                msgs(r"key AKIAABCDEFGHIJKLMNOP")
            ),
            400,
        ),
        (
            format!(r#"{{"model":"gpt-4o-mini","messages":{}}}"#, msgs(key)),
            400,
        ),
        // `messages` twice: the last one is the conversation.
        (
            format!(
                r#"{{"model":"gpt-4o-mini","messages":{},"messages":{}}}"#,
                msgs("clean"),
                msgs(key)
            ),
            400,
        ),
        (
            format!(
                r#"{{"model":"gpt-4o-mini","messages":{},"messages":{}}}"#,
                msgs(key),
                msgs("clean")
            ),
            200,
        ),
    ] {
        let (resp, _) = post(&url, &censor, &body).await;
        assert_eq!(resp.status(), status, "{body}");
    }
    assert_eq!(m.stats().requests, 1);

    // One conversation spelled three ways is one request repeated: the third is a loop.
    let hdr = [
        ("x-agent-name", "spelling-looper"),
        ("x-session-id", "spelled-three-ways"),
    ];
    for (i, body) in [
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi there"}]}"#,
        r#"{ "messages" : [ {"content":"hi there", "role":"user"} ], "model":"gpt-4o-mini" }"#,
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"messages":[{"role":"user","content":"hi there"}]}"#,
    ]
    .into_iter()
    .enumerate()
    {
        let (resp, _) = post(&url, &hdr, body).await;
        assert_eq!(resp.status(), if i < 2 { 200 } else { 403 }, "{body}");
    }
    // A session named only by the body's `user` (known after the parse, so the conversation
    // is hashed by a walk, not at parse): the same answer.
    let agent = [("x-agent-name", "spelling-looper")];
    for (i, body) in [
        r#"{"model":"gpt-4o-mini","user":"by-body","messages":[{"role":"user","content":"hi there"}]}"#,
        r#"{ "messages" : [ {"content":"hi there", "role":"user"} ], "user": "by-body", "model":"gpt-4o-mini" }"#,
        r#"{"model":"gpt-4o-mini","user":"by-body","messages":[{"role":"user","content":"x"}],"messages":[{"role":"user","content":"hi there"}]}"#,
    ]
    .into_iter()
    .enumerate()
    {
        let (resp, _) = post(&url, &agent, body).await;
        assert_eq!(resp.status(), if i < 2 { 200 } else { 403 }, "{body}");
    }
}

#[tokio::test]
async fn max_tokens_cap_clamps_or_refuses() {
    let m = mock().await;
    let p = TestProxy::to("policy", m.addr(), AGENTS).await;
    for shape in SHAPES {
        let mut body = shape.body(&[], "long answer please");
        body["max_tokens"] = json!(5000);
        let (resp, _) = send_as(&p, shape, "clamp", &[], &body).await;
        assert_eq!(resp.status(), 200, "{shape:?}");
        let sent: Value = serde_json::from_slice(&m.last_request().unwrap().body).unwrap();
        assert_eq!(sent["max_tokens"], 32, "{shape:?}: {sent}");

        let before = m.stats().requests;
        let (resp, bytes) = send_as(&p, shape, "capped", &[], &body).await;
        let msg = assert_refused(shape, &resp, &bytes, 403, "max_tokens");
        assert!(msg.contains("5000") && msg.contains("32"), "{msg}");
        assert_eq!(m.stats().requests, before);
    }
    // No value at all: the cap is added in the format's own field.
    let (resp, _) = send_as(
        &p,
        Shape::ChatJson,
        "clamp",
        &[],
        &Shape::ChatJson.body(&[], "x"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let sent: Value = serde_json::from_slice(&m.last_request().unwrap().body).unwrap();
    assert_eq!(sent["max_completion_tokens"], 32, "{sent}");
    // Added as the body's own text: the rest goes upstream byte for byte as the agent wrote it
    // (spacing, escapes, key order), not re-serialized.
    let raw = "{ \"model\": \"gpt-4o-mini\",\n  \"messages\": [{\"role\": \"user\", \"content\": \"caf\\u00e9 \\\"x\\\"\"}] }";
    let (resp, _) = post(
        &p.url(Shape::ChatJson.path()),
        &[("x-agent-name", "clamp")],
        raw,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let forwarded = m.last_request().unwrap().body;
    assert_eq!(
        String::from_utf8_lossy(&forwarded),
        format!("{{\"max_completion_tokens\":32,{}", &raw[1..])
    );
    let text = p.metrics().await;
    assert_eq!(violations(&text, "clamp", "max_tokens"), 4.0);
    assert_eq!(violations(&text, "capped", "max_tokens"), 4.0);
}

#[tokio::test]
async fn context_window_guard_measures_and_refuses_what_cannot_fit() {
    let m = mock().await;
    // Model names of this test only: the histogram is process-wide.
    let models = "models:\n  ctx-test-model: { context_window: 1000 }\n";
    let p = TestProxy::to("policy", m.addr(), &format!("{AGENTS}{models}")).await;
    let big = "lorem ipsum ".repeat(1000);
    let body = |shape: Shape, text: &str| {
        let mut b = shape.body(&[], text);
        b["model"] = json!("ctx-test-model-2025-01-01");
        b
    };
    for shape in SHAPES {
        let (resp, _) = send_as(&p, shape, "ctx-small", &[], &body(shape, "hi")).await;
        assert_eq!(resp.status(), 200, "{shape:?}");
        let (resp, _) = send_as(&p, shape, "ctx-flag", &[], &body(shape, &big)).await;
        assert_eq!(resp.status(), 200, "flagged only by default");
        let before = m.stats().requests;
        let (resp, bytes) = send_as(&p, shape, "ctx-block", &[], &body(shape, &big)).await;
        let msg = assert_refused(shape, &resp, &bytes, 403, "context_window");
        assert!(msg.contains("1000-token"), "{msg}");
        assert_eq!(m.stats().requests, before);
    }
    let text = p.metrics().await;
    assert_eq!(violations(&text, "ctx-flag", "context_window"), 4.0);
    assert_eq!(violations(&text, "ctx-block", "context_window"), 4.0);
    assert_eq!(
        metric_sum(
            &text,
            "tokenwarden_policy_violations_total",
            &[("agent", "ctx-small")]
        ),
        0.0
    );
    let model = [("model", "ctx-test-model-2025-01-01")];
    let n = metric_value(&text, "tokenwarden_context_utilization_ratio_count", &model);
    assert_eq!(n, 12.0, "{text}");
    // Only the small requests fit in the window.
    let fit = metric_value(
        &text,
        "tokenwarden_context_utilization_ratio_bucket",
        &[model[0], ("le", "1")],
    );
    assert_eq!(fit, 4.0, "{text}");
}

#[tokio::test]
async fn tool_results_the_agent_reports_are_counted() {
    let m = mock().await;
    let p = TestProxy::to("policy", m.addr(), AGENTS).await;
    for stream in [false, true] {
        let anth = json!({"model":"claude-sonnet-4-5","max_tokens":64,"stream":stream,"messages":[
            {"role":"user","content":"weather and docs"},
            {"role":"assistant","content":[
                {"type":"tool_use","id":"t1","name":"get_weather","input":{"city":"Paris"}},
                {"type":"tool_use","id":"t2","name":"search_docs","input":{"query":"q"}}]},
            {"role":"user","content":[
                {"type":"tool_result","tool_use_id":"t1","content":"sunny"},
                {"type":"tool_result","tool_use_id":"t2","is_error":true,"content":"index offline"}]}]});
        let (resp, _) = send_as(&p, Shape::AnthJson, "reporter", &[], &anth).await;
        assert_eq!(resp.status(), 200);
        let chat = json!({"model":"gpt-4o-mini","stream":stream,"messages":[
            {"role":"user","content":"weather"},
            {"role":"assistant","content":null,"tool_calls":[
                {"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{}"}},
                {"id":"c2","type":"function","function":{"name":"search_docs","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"ERROR: upstream weather API down"},
            {"role":"tool","tool_call_id":"c2","content":"3 documents"}]});
        let (resp, _) = send_as(&p, Shape::ChatJson, "reporter", &[], &chat).await;
        assert_eq!(resp.status(), 200);
    }
    let text = p.metrics().await;
    let results = |tool: &str, outcome: &str| {
        metric_value(
            &text,
            "tokenwarden_tool_results_total",
            &[("agent", "reporter"), ("tool", tool), ("outcome", outcome)],
        )
    };
    assert_eq!(results("get_weather", "ok"), 2.0, "{text}");
    assert_eq!(results("get_weather", "error"), 2.0);
    assert_eq!(results("search_docs", "error"), 2.0);
    assert_eq!(results("search_docs", "ok"), 2.0);
}

/// OpenAI Responses and Gemini, JSON and streamed: the same validation, and blocking of JSON.
#[tokio::test]
async fn responses_and_gemini_tool_calls_are_validated_too() {
    let m = mock().await;
    let p = TestProxy::to("policy", m.addr(), AGENTS).await;
    let bad: Value = serde_json::from_str(WEATHER_BAD).unwrap();
    let responses = |stream: bool| {
        json!({"model":"gpt-4.1","input":"weather?","stream":stream,
            "tools":[{"type":"function","name":"get_weather","parameters":bad}]})
    };
    let gemini = json!({"contents":[{"role":"user","parts":[{"text":"weather?"}]}],
            "tools":[{"functionDeclarations":[{"name":"get_weather","parameters":bad}]}]});
    let cases = [
        ("resp-json", "/v1/responses", responses(false), false),
        ("resp-stream", "/v1/responses", responses(true), true),
        (
            "gem-json",
            "/v1beta/models/gemini-2.5-flash:generateContent",
            gemini.clone(),
            false,
        ),
        (
            "gem-stream",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            gemini,
            true,
        ),
    ];
    for (name, path, body, stream) in &cases {
        let agent = format!("val-{name}");
        let hdrs = [("x-agent-name", agent.as_str()), ("x-mock-tool-calls", "2")];
        let (resp, _) = post(&p.url(path), &hdrs, &body.to_string()).await;
        assert_eq!(resp.status(), 200, "{name}");
        let hdrs = [
            ("x-agent-name", "blocker-other"),
            ("x-mock-tool-calls", "1"),
        ];
        let (resp, bytes) = post(&p.url(path), &hdrs, &body.to_string()).await;
        if *stream {
            assert_eq!(resp.status(), 200, "{name}: streams are flagged only");
        } else {
            assert_eq!(resp.status(), 403, "{name}");
            assert_eq!(resp.headers()["x-tokenwarden-error"], "invalid_tool_args");
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            if name.starts_with("gem") {
                assert_eq!(v["error"]["status"], "PERMISSION_DENIED", "{v}");
            } else {
                assert_eq!(v["error"]["type"], "invalid_tool_args", "{v}");
            }
        }
    }
    let text = p.metrics().await;
    for (name, ..) in &cases {
        let agent = format!("val-{name}");
        assert_eq!(
            violations(&text, &agent, "invalid_tool_args"),
            1.0,
            "{name}\n{text}"
        );
        assert_eq!(violations(&text, &agent, "undeclared_tool"), 1.0, "{name}");
    }
    assert_eq!(violations(&text, "blocker-other", "invalid_tool_args"), 4.0);
}

/// Agent labels are capped; a configured agent keeps its policies however many other agent
/// names traffic invents first.
#[tokio::test]
async fn configured_agents_keep_their_policies_past_the_label_cap() {
    let m = mock().await;
    let extra = format!("telemetry:\n  max_label_values: 2\n{AGENTS}");
    let p = TestProxy::to("policy", m.addr(), &extra).await;
    let shape = Shape::ChatJson;
    for i in 0..5 {
        let (resp, _) = send_as(
            &p,
            shape,
            &format!("noise-{i}"),
            &[],
            &shape.body(&[], "hi"),
        )
        .await;
        assert_eq!(resp.status(), 200);
    }
    let body = shape.body(&[("delete_everything", ANY)], "hi");
    let (resp, bytes) = send_as(&p, shape, "guarded-capped", &[], &body).await;
    assert_refused(shape, &resp, &bytes, 403, "denied_tool");
}

/// Arguments that are not JSON at all (the mock drops their last byte): `invalid_tool_args`,
/// from a JSON body and assembled from stream fragments; blocked JSON answers a 403.
#[tokio::test]
async fn tool_arguments_that_are_not_json_are_invalid() {
    let m = mock().await;
    let p = TestProxy::to("policy", m.addr(), AGENTS).await;
    let knobs = [
        ("x-mock-tool-calls", "1"),
        ("x-mock-truncate-tool-args", "1"),
    ];
    // Anthropic JSON carries arguments as an object, which the mock cannot break.
    let shapes = [Shape::ChatJson, Shape::ChatStream, Shape::AnthStream];
    for shape in shapes {
        let agent = format!("val-broken-{}", shape.name());
        let body = shape.body(&[("get_weather", WEATHER_OK)], "weather?");
        let (resp, _) = send_as(&p, shape, &agent, &knobs, &body).await;
        assert_eq!(resp.status(), 200, "{shape:?}");
    }
    let body = Shape::ChatJson.body(&[("get_weather", WEATHER_OK)], "weather?");
    let (resp, bytes) = send_as(&p, Shape::ChatJson, "blocker-broken", &knobs, &body).await;
    assert_refused(Shape::ChatJson, &resp, &bytes, 403, "invalid_tool_args");
    let text = p.metrics().await;
    for shape in shapes {
        let agent = format!("val-broken-{}", shape.name());
        assert_eq!(
            violations(&text, &agent, "invalid_tool_args"),
            1.0,
            "{shape:?}\n{text}"
        );
    }
}

/// Chat Completions' legacy function calling (`functions`, `function_call`) is held to the same
/// lists as `tools`: a denied or unlisted function is refused, or stripped (with its
/// `function_call` when none is left). It passed unread.
#[tokio::test]
async fn legacy_functions_are_held_to_the_tool_lists() {
    let m = mock().await;
    let p = TestProxy::to("policy", m.addr(), AGENTS).await;
    let body = |name: &str| {
        json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],
               "functions":[{"name":"get_weather","parameters":{"type":"object"}},{"name":name,"parameters":{"type":"object"}}],
               "function_call":{"name":name}})
    };
    for tool in ["delete_everything", "unlisted_tool"] {
        let (resp, bytes) = send_as(&p, Shape::ChatJson, "guarded", &[], &body(tool)).await;
        let msg = assert_refused(Shape::ChatJson, &resp, &bytes, 403, "denied_tool");
        assert!(msg.contains(tool), "{msg}");
    }
    assert_eq!(
        m.stats().requests,
        0,
        "a refused request reached the upstream"
    );
    let only_denied = json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],
        "functions":[{"name":"delete_everything","parameters":{"type":"object"}}],
        "function_call":{"name":"delete_everything"}});
    let (resp, _) = send_as(&p, Shape::ChatJson, "stripper", &[], &only_denied).await;
    assert_eq!(resp.status(), 200);
    let sent: Value = serde_json::from_slice(&m.last_request().unwrap().body).unwrap();
    assert!(
        sent.get("functions").is_none() && sent.get("function_call").is_none(),
        "{sent}"
    );
}
