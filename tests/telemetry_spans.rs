//! Spans over real sockets: the proxy in front of the mock provider exports to an in-process
//! OTLP receiver (gRPC and HTTP/protobuf); the tests decode what arrived and check the trace
//! context, every attribute the mock's answer determines, the first-token event, error spans,
//! and the `traceparent` the upstream received.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod otlp_receiver;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as OtelStatus;
use otlp_receiver::*;
use tokenwarden_mock::{MockOptions, MockServer};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn telemetry(endpoint: &str, protocol: &str, extra: &str) -> String {
    format!(
        "telemetry:\n  service_name: tw-span-test\n  otlp:\n    endpoint: {endpoint}\n    protocol: {protocol}\n{extra}"
    )
}

async fn setup(protocol: &str, extra: &str) -> (Receiver, MockServer, TestProxy) {
    let rx = Receiver::speaking(protocol).await;
    let mock = mock().await;
    let proxy = TestProxy::to(
        "llm",
        mock.addr(),
        &telemetry(&rx.endpoint(), protocol, extra),
    )
    .await;
    (rx, mock, proxy)
}

fn has(r: &Received, key: &str, v: V) -> bool {
    attrs(&r.span).get(key) == Some(&v)
}

/// The traceparent header the mock received on its last request.
fn upstream_traceparent(mock: &MockServer) -> Option<String> {
    mock.last_request()?
        .headers
        .iter()
        .find(|(k, _)| k == "traceparent")
        .map(|(_, v)| v.clone())
}

fn upstream_header(mock: &MockServer, name: &str) -> Option<String> {
    mock.last_request()?
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

#[tokio::test]
async fn grpc_stream_span_is_the_agents_child_with_every_genai_attribute() {
    let (rx, mock, proxy) = setup("grpc", "").await;
    let body = r#"{"model":"gpt-4o-mini","max_completion_tokens":300,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let (resp, _) = post(
        &proxy.url("/v1/chat/completions"),
        &[
            ("traceparent", &format!("00-{TRACE}-{PARENT}-01")),
            ("tracestate", "vendor=abc,other=1"),
            ("x-session-id", "sess-span-1"),
            ("x-agent-name", "span-agent"),
            ("x-mock-tool-calls", "2"),
            ("x-mock-input-tokens", "40"),
            ("x-mock-cached-tokens", "16"),
            ("x-mock-output-chunks", "5"),
        ],
        body,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let r = rx
        .wait_for("for the stream", |r| has(r, "session.id", s("sess-span-1")))
        .await;
    let span = &r.span;
    assert_eq!(span.name, "chat gpt-4o-mini");
    assert_eq!(span.kind, SpanKind::Client as i32);
    assert_eq!(hex(&span.trace_id), TRACE);
    assert_eq!(hex(&span.parent_span_id), PARENT);
    assert_eq!(span.trace_state, "vendor=abc,other=1");
    let a = attrs(span);
    let out = tokenwarden_mock::output_tokens(5, 2, 0) as i64;
    let expect = [
        ("gen_ai.operation.name", s("chat")),
        ("gen_ai.provider.name", s("openai")),
        ("gen_ai.request.model", s("gpt-4o-mini")),
        ("gen_ai.response.model", s("gpt-4o-mini")),
        ("gen_ai.response.id", s("chatcmpl-mock-0001")),
        (
            "gen_ai.response.finish_reasons",
            V::A(vec![s("tool_calls")]),
        ),
        ("gen_ai.usage.input_tokens", V::I(40)),
        ("gen_ai.usage.output_tokens", V::I(out)),
        ("gen_ai.usage.cache_read.input_tokens", V::I(16)),
        ("gen_ai.request.max_tokens", V::I(300)),
        ("gen_ai.request.stream", V::B(true)),
        ("gen_ai.conversation.id", s("sess-span-1")),
        ("session.id", s("sess-span-1")),
        ("agent.name", s("span-agent")),
        ("agent_step", V::I(1)),
        ("server.address", s("127.0.0.1")),
        ("server.port", V::I(i64::from(mock.addr().port()))),
        ("http.response.status_code", V::I(200)),
        ("tokenwarden.usage.source", s("provider")),
        (
            "tokenwarden.tool_calls",
            V::A(vec![
                s(tokenwarden_mock::tool_call(0).0),
                s(tokenwarden_mock::tool_call(1).0),
            ]),
        ),
    ];
    for (k, v) in expect {
        assert_eq!(a.get(k), Some(&v), "attribute {k}: {a:#?}");
    }
    assert!(!a.contains_key("error.type"), "{a:#?}");
    assert!(
        !a.contains_key("gen_ai.input.messages"),
        "content capture is off by default"
    );
    assert!(
        !a.contains_key("openinference.span.kind"),
        "genai only by default"
    );
    let Some(V::F(ttft)) = a.get("gen_ai.response.time_to_first_chunk") else {
        panic!("no time to first chunk: {a:#?}");
    };
    assert!(*ttft >= 0.0);
    let ev = span
        .events
        .iter()
        .find(|e| e.name == "gen_ai.first_token")
        .expect("first-token event");
    assert!(
        ev.time_unix_nano >= span.start_time_unix_nano
            && ev.time_unix_nano <= span.end_time_unix_nano
    );
    assert_eq!(
        kvs(&ev.attributes).get("gen_ai.response.time_to_first_chunk"),
        Some(&V::F(*ttft))
    );
    assert_ne!(
        span.status.as_ref().map(|s| s.code),
        Some(OtelStatus::Error as i32)
    );

    // Resource: service name from the config, version, no surprises.
    let res = kvs(&r.resource);
    assert_eq!(res.get("service.name"), Some(&s("tw-span-test")));
    assert_eq!(
        res.get("service.version"),
        Some(&s(env!("CARGO_PKG_VERSION")))
    );

    // The upstream request names our span as its parent, in the agent's trace.
    assert_eq!(
        upstream_traceparent(&mock).as_deref(),
        Some(format!("00-{TRACE}-{}-01", hex(&span.span_id)).as_str())
    );
    assert_eq!(
        upstream_header(&mock, "tracestate").as_deref(),
        Some("vendor=abc,other=1")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn http_protobuf_json_call_without_parent_starts_a_trace() {
    let (rx, mock, proxy) = setup("http", "").await;
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
    let (resp, _) = post(
        &proxy.url("/v1/messages"),
        &[
            ("x-session-id", "sess-http-1"),
            ("x-mock-input-tokens", "30"),
            ("x-mock-output-chunks", "7"),
        ],
        body,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let r = rx
        .wait_for("for the Anthropic call", |r| {
            has(r, "session.id", s("sess-http-1"))
        })
        .await;
    let span = &r.span;
    assert_eq!(span.name, "chat claude-sonnet-4-5");
    assert!(span.parent_span_id.is_empty(), "a root span: {span:?}");
    let a = attrs(span);
    for (k, v) in [
        ("gen_ai.provider.name", s("anthropic")),
        ("gen_ai.response.id", s("msg_mock_0001")),
        ("gen_ai.response.finish_reasons", V::A(vec![s("end_turn")])),
        ("gen_ai.usage.input_tokens", V::I(30)),
        ("gen_ai.usage.output_tokens", V::I(7)),
        ("gen_ai.request.max_tokens", V::I(64)),
        ("agent.name", s("default")),
    ] {
        assert_eq!(a.get(k), Some(&v), "attribute {k}: {a:#?}");
    }
    assert!(!a.contains_key("gen_ai.request.stream"), "{a:#?}");
    assert!(
        !a.contains_key("gen_ai.response.time_to_first_chunk"),
        "JSON body: {a:#?}"
    );
    assert!(
        span.events.is_empty(),
        "no first-token event for JSON: {:?}",
        span.events
    );
    let tp = upstream_traceparent(&mock).expect("upstream traceparent");
    assert_eq!(
        tp,
        format!("00-{}-{}-01", hex(&span.trace_id), hex(&span.span_id))
    );
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_failures_make_error_spans() {
    let (rx, _mock, proxy) = setup("grpc", "").await;
    let chat = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let stream = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;

    let (resp, _) = post(
        &proxy.url("/v1/chat/completions"),
        &[("x-session-id", "err-500"), ("x-mock-fault", "500")],
        chat,
    )
    .await;
    assert_eq!(resp.status(), 500);
    let r = rx
        .wait_for("for the 500", |r| has(r, "session.id", s("err-500")))
        .await;
    let a = attrs(&r.span);
    assert_eq!(a.get("http.response.status_code"), Some(&V::I(500)));
    assert_eq!(a.get("error.type"), Some(&s("server_error")), "{a:#?}");
    assert_eq!(
        a.get("tokenwarden.usage.source"),
        None,
        "an error answer has no usage: {a:#?}"
    );
    assert_eq!(
        r.span.status.as_ref().unwrap().code,
        OtelStatus::Error as i32
    );

    // The stream breaks off mid-way: the client sees a cut body, the span says why.
    let req = http::Request::post(proxy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-session-id", "err-drop")
        .header("x-mock-fault", "drop-mid-stream")
        .body(Full::new(Bytes::from(stream)))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let _ = resp.into_body().collect().await; // an error: the body was cut
    let r = rx
        .wait_for("for the cut stream", |r| {
            has(r, "session.id", s("err-drop"))
        })
        .await;
    assert_eq!(attrs(&r.span).get("error.type"), Some(&s("upstream_reset")));
    assert_eq!(
        r.span.status.as_ref().unwrap().code,
        OtelStatus::Error as i32
    );
    proxy.stop().await;

    // An upstream nobody listens on: 502 from the proxy, still one error span.
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let proxy = TestProxy::to("down", closed, &telemetry(&rx.endpoint(), "grpc", "")).await;
    let (resp, _) = post(
        &proxy.url("/v1/chat/completions"),
        &[("x-session-id", "err-502")],
        chat,
    )
    .await;
    assert_eq!(resp.status(), 502);
    let r = rx
        .wait_for("for the 502", |r| has(r, "session.id", s("err-502")))
        .await;
    let a = attrs(&r.span);
    assert_eq!(a.get("http.response.status_code"), Some(&V::I(502)));
    assert_eq!(a.get("error.type"), Some(&s("502")));
    assert_eq!(a.get("server.port"), Some(&V::I(i64::from(closed.port()))));
    proxy.stop().await;
}

#[tokio::test]
async fn client_disconnect_makes_an_error_span() {
    let (rx, _mock, proxy) = setup("http", "").await;
    let stream =
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let req = http::Request::post(proxy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-session-id", "gone-1")
        .header("x-mock-output-chunks", "200")
        .header("x-mock-chunk-delay-ms", "50")
        .body(Full::new(Bytes::from(stream)))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .unwrap();
    assert!(first.is_some());
    drop(body); // the agent goes away mid-stream
    let r = rx
        .wait_for("for the abandoned stream", |r| {
            has(r, "session.id", s("gone-1"))
        })
        .await;
    let a = attrs(&r.span);
    assert_eq!(
        a.get("error.type"),
        Some(&s("client_disconnected")),
        "{a:#?}"
    );
    assert_eq!(
        r.span.status.as_ref().unwrap().code,
        OtelStatus::Error as i32
    );
    // Usage was requested on the client's behalf but never arrived: the proxy counted it.
    assert_eq!(
        a.get("tokenwarden.usage.source"),
        Some(&s("estimated")),
        "{a:#?}"
    );
    assert!(
        matches!(a.get("gen_ai.usage.input_tokens"), Some(V::I(n)) if *n > 0),
        "{a:#?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn injected_usage_and_openinference_vocabulary() {
    let (rx, _mock, proxy) = setup("grpc", "  conventions: both\n").await;
    let stream =
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let (resp, _) = post(
        &proxy.url("/v1/chat/completions"),
        &[
            ("x-session-id", "oi-1"),
            ("x-mock-input-tokens", "9"),
            ("x-mock-output-chunks", "4"),
        ],
        stream,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let r = rx
        .wait_for("for the injected-usage stream", |r| {
            has(r, "session.id", s("oi-1"))
        })
        .await;
    let a = attrs(&r.span);
    for (k, v) in [
        ("tokenwarden.usage.source", s("injected")),
        ("gen_ai.usage.input_tokens", V::I(9)),
        ("openinference.span.kind", s("LLM")),
        ("llm.model_name", s("gpt-4o-mini")),
        ("llm.provider", s("openai")),
        ("llm.token_count.prompt", V::I(9)),
        ("llm.token_count.completion", V::I(4)),
        ("llm.token_count.total", V::I(13)),
    ] {
        assert_eq!(a.get(k), Some(&v), "attribute {k}: {a:#?}");
    }
    proxy.stop().await;

    // openinference alone: no gen_ai.* attributes.
    let (rx, _mock, proxy) = setup("grpc", "  conventions: openinference\n").await;
    let chat = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    post(
        &proxy.url("/v1/chat/completions"),
        &[("x-session-id", "oi-2")],
        chat,
    )
    .await;
    let r = rx
        .wait_for("openinference only", |r| has(r, "session.id", s("oi-2")))
        .await;
    let a = attrs(&r.span);
    assert_eq!(a.get("openinference.span.kind"), Some(&s("LLM")));
    assert!(a.keys().all(|k| !k.starts_with("gen_ai.")), "{a:#?}");
    proxy.stop().await;
}

#[tokio::test]
async fn unsampled_parent_is_propagated_not_exported() {
    let (rx, mock, proxy) = setup("grpc", "").await;
    let chat = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    post(
        &proxy.url("/v1/chat/completions"),
        &[
            ("traceparent", &format!("00-{TRACE}-{PARENT}-00")),
            ("x-session-id", "unsampled"),
        ],
        chat,
    )
    .await;
    let tp = upstream_traceparent(&mock).unwrap();
    assert!(
        tp.starts_with(&format!("00-{TRACE}-")) && tp.ends_with("-00"),
        "{tp}"
    );
    assert!(
        !tp.contains(PARENT),
        "the upstream's parent is our span, not the agent's: {tp}"
    );
    // A sampled call afterwards arrives; the unsampled one never does.
    post(
        &proxy.url("/v1/chat/completions"),
        &[("x-session-id", "sampled")],
        chat,
    )
    .await;
    rx.wait_for("for the sampled call", |r| {
        has(r, "session.id", s("sampled"))
    })
    .await;
    proxy.stop().await; // flushes
    assert!(rx
        .spans()
        .iter()
        .all(|r| !has(r, "session.id", s("unsampled"))));
}

#[tokio::test]
async fn non_llm_paths_keep_the_agents_traceparent_and_make_no_span() {
    let (rx, mock, proxy) = setup("grpc", "").await;
    let tp = format!("00-{TRACE}-{PARENT}-01");
    let req = http::Request::get(proxy.url("/v1/models"))
        .header("traceparent", &tp)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (resp, _) = send(req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream_traceparent(&mock).as_deref(), Some(tp.as_str()));
    let chat = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    post(
        &proxy.url("/v1/chat/completions"),
        &[("x-session-id", "after-models")],
        chat,
    )
    .await;
    rx.wait_for("for the chat call", |r| {
        has(r, "session.id", s("after-models"))
    })
    .await;
    proxy.stop().await;
    assert_eq!(rx.spans().len(), 1, "{:?}", rx.spans());
}

#[tokio::test]
async fn collector_down_never_fails_a_request_and_drops_are_counted() {
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let mock =
        tokenwarden_mock::MockServer::start("127.0.0.1:0".parse().unwrap(), MockOptions::default())
            .await
            .unwrap();
    let proxy = TestProxy::to(
        "llm",
        mock.addr(),
        &telemetry(&format!("http://{closed}"), "grpc", ""),
    )
    .await;
    let before = metric_value(
        &proxy.metrics().await,
        "tokenwarden_spans_dropped_total",
        &[],
    );
    let chat = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..20 {
        let (resp, body) = post(&proxy.url("/v1/chat/completions"), &[], chat).await;
        assert_eq!(resp.status(), 200);
        assert!(!body.is_empty());
    }
    let ok = eventually(Duration::from_secs(20), || async {
        metric_value(
            &proxy.metrics().await,
            "tokenwarden_spans_dropped_total",
            &[],
        ) >= before + 20.0
    })
    .await;
    assert!(ok, "drops not counted: {}", proxy.metrics().await);
    proxy.stop().await;
}

#[tokio::test]
async fn content_capture_records_messages_in_the_conventions_shapes() {
    let (rx, _mock, proxy) = setup(
        "http",
        "  capture_content: true\n  max_content_bytes: 4096\n",
    )
    .await;
    let body = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"system","content":"Be terse."},{"role":"user","content":"Weather in Paris?"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}"#;
    let (resp, _) = post(
        &proxy.url("/v1/chat/completions"),
        &[
            ("x-session-id", "capture-1"),
            ("x-mock-output-chunks", "3"),
            ("x-mock-tool-calls", "1"),
        ],
        body,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let r = rx
        .wait_for("with captured content", |r| {
            has(r, "session.id", s("capture-1"))
        })
        .await;
    let a = attrs(&r.span);
    let json = |k: &str| -> serde_json::Value {
        match a.get(k) {
            Some(V::S(t)) => serde_json::from_str(t).unwrap(),
            other => panic!("{k}: {other:?}"),
        }
    };
    assert_eq!(
        json("gen_ai.input.messages"),
        serde_json::json!([
            {"role": "system", "parts": [{"type": "text", "content": "Be terse."}]},
            {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]}
        ])
    );
    assert_eq!(
        json("gen_ai.tool.definitions"),
        serde_json::json!([{"type": "function", "name": "get_weather"}])
    );
    let out = json("gen_ai.output.messages");
    let (tool, args) = tokenwarden_mock::tool_call(0);
    assert_eq!(out[0]["role"], "assistant");
    assert_eq!(out[0]["finish_reason"], "tool_call");
    let parts = out[0]["parts"].as_array().unwrap();
    assert_eq!(
        parts[0],
        serde_json::json!({"type": "text", "content": tokenwarden_mock::output_text(3)})
    );
    assert_eq!(parts[1]["type"], "tool_call");
    assert_eq!(parts[1]["name"], tool);
    assert_eq!(
        parts[1]["arguments"],
        serde_json::from_str::<serde_json::Value>(args).unwrap()
    );
    assert!(
        !a.contains_key("gen_ai.system_instructions"),
        "chat keeps system in the messages"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn budget_decisions_reach_the_span() {
    let (rx, mock, proxy) = setup(
        "grpc",
        "budgets:\n  store: {kind: memory, snapshot_path: ''}\n  limits:\n    - {scope: session, tokens: 5, action: reject}\n",
    )
    .await;
    let chat = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"a question long enough to need more than five tokens of budget"}]}"#;
    let (resp, _) = post(
        &proxy.url("/v1/chat/completions"),
        &[("x-session-id", "budget-1")],
        chat,
    )
    .await;
    assert_eq!(resp.status(), 402);
    let r = rx
        .wait_for("for the refused call", |r| {
            has(r, "session.id", s("budget-1"))
        })
        .await;
    let a = attrs(&r.span);
    assert_eq!(
        a.get("tokenwarden.budget.decision"),
        Some(&s("rejected")),
        "{a:#?}"
    );
    assert_eq!(a.get("http.response.status_code"), Some(&V::I(402)));
    assert_eq!(
        r.span.status.as_ref().unwrap().code,
        OtelStatus::Error as i32
    );
    assert_eq!(mock.stats().requests, 0, "a refusal never goes upstream");

    let (resp, _) = post(
        &proxy.url("/v1/chat/completions"),
        &[("x-session-id", "budget-2")],
        r#"{"model":"gpt-4o-mini","messages":[]}"#,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let r = rx
        .wait_for("for the admitted call", |r| {
            has(r, "session.id", s("budget-2"))
        })
        .await;
    assert_eq!(
        attrs(&r.span).get("tokenwarden.budget.decision"),
        Some(&s("allowed"))
    );
    proxy.stop().await;
}

#[tokio::test]
async fn policy_violations_reach_the_span() {
    let (rx, mock, proxy) = setup(
        "http",
        "agents:\n  pol-agent:\n    denied_tools: [rm_rf]\n    require_approval: [get_weather]\n  pol-gate:\n    require_approval: [get_weather]\n    approval_action: block\n",
    )
    .await;
    // A request declaring a denied tool: refused, never upstream, the violation on its span.
    let denied = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"go"}],"tools":[{"type":"function","function":{"name":"rm_rf","parameters":{"type":"object"}}}]}"#;
    let (resp, _) = post(
        &proxy.url("/v1/chat/completions"),
        &[("x-agent-name", "pol-agent"), ("x-session-id", "pol-1")],
        denied,
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(mock.stats().requests, 0, "a refusal never goes upstream");
    let r = rx
        .wait_for("for the refused call", |r| has(r, "session.id", s("pol-1")))
        .await;
    assert_eq!(
        attrs(&r.span).get("tokenwarden.policy.violations"),
        Some(&V::A(vec![s("denied_tool")]))
    );
    // A streamed answer calling a tool that needs approval: flagged on the span after the stream.
    let tools = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"go"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}"#;
    let (resp, _) = post(
        &proxy.url("/v1/chat/completions"),
        &[
            ("x-agent-name", "pol-agent"),
            ("x-session-id", "pol-2"),
            ("x-mock-tool-calls", "1"),
        ],
        tools,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let r = rx
        .wait_for("for the flagged call", |r| has(r, "session.id", s("pol-2")))
        .await;
    let a = attrs(&r.span);
    assert_eq!(
        a.get("tokenwarden.tool_calls"),
        Some(&V::A(vec![s("get_weather")])),
        "{a:#?}"
    );
    assert_eq!(
        a.get("tokenwarden.policy.violations"),
        Some(&V::A(vec![s("approval_required")])),
        "{a:#?}"
    );
    assert_eq!(a.get("tokenwarden.policy.decision"), None, "flagged only");
    // The same stream for an agent whose approvals block: gated and refused, said on the span.
    let (resp, body) = post(
        &proxy.url("/v1/chat/completions"),
        &[
            ("x-agent-name", "pol-gate"),
            ("x-session-id", "pol-3"),
            ("x-mock-tool-calls", "1"),
        ],
        tools,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(String::from_utf8_lossy(&body).contains("\"code\":\"approval_required\""));
    let r = rx
        .wait_for("for the gated call", |r| has(r, "session.id", s("pol-3")))
        .await;
    let a = attrs(&r.span);
    assert_eq!(
        a.get("tokenwarden.policy.decision"),
        Some(&s("blocked")),
        "{a:#?}"
    );
    assert_eq!(
        a.get("tokenwarden.policy.blocked"),
        Some(&s("approval_required")),
        "{a:#?}"
    );
    assert_eq!(a.get("error.type"), Some(&s("approval_required")), "{a:#?}");
    assert_eq!(
        a.get("tokenwarden.policy.violations"),
        Some(&V::A(vec![s("approval_required")])),
        "{a:#?}"
    );
    assert!(
        matches!(a.get("gen_ai.usage.output_tokens"), Some(V::I(n)) if *n > 0),
        "tokens still counted: {a:#?}"
    );
    proxy.stop().await;
}
