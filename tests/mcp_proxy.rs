//! MCP routes (`protocol: mcp`) over real sockets with the official MCP SDKs: the Python SDK's
//! MCPServer (FastMCP) on streamable HTTP in JSON and SSE answer modes, its client as the agent
//! (the initialize handshake, and the SDK's default `auto` mode), and the TypeScript SDK's client.
//! Byte-identical pass-through, resumption with Last-Event-ID, the session id, spans decoded,
//! a denied tool absent from tools/list and refused on tools/call with the server never reached,
//! invalid arguments caught, and bad input (malformed JSON-RPC, oversize bodies, a server that
//! dies mid-stream).
//!
//! Needs the SDK Python (`.venv-sdk`, scripts/test.sh) and `.tools/mcp-sdk` (npm); missing → the
//! test fails and says how to get them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod otlp_receiver;

use std::time::Duration;

use bytes::Bytes;
use common::mcp::*;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use otlp_receiver::*;
use serde_json::{json, Value};

const POLICY: &str =
    "agents:\n  mcp-agent:\n    denied_tools: [delete_all]\n    tool_call_action: block\n";

fn telemetry(rx: &Receiver) -> String {
    format!(
        "telemetry:\n  otlp:\n    endpoint: {}\n    protocol: grpc\n",
        rx.endpoint()
    )
}

async fn run_client(url: &str, mode: &str, session: &str, traceparent: Option<&str>) -> Value {
    let mut args = vec![url, mode, session, "mcp-agent"];
    args.extend(traceparent);
    run_sdk_script_with("mcp_client.py", &args).await
}

fn has(r: &Received, key: &str, v: V) -> bool {
    attrs(&r.span).get(key) == Some(&v)
}

/// What the Python client saw through the proxy, for one server answer mode and client mode.
async fn sdk_round(server_mode: &str, client_mode: &str) {
    let server = ToolServer::start(server_mode, &[]).await;
    let rx = Receiver::grpc().await;
    let p = TestProxy::start(&format!(
        "{}{POLICY}{}",
        route(&server.addr(), ""),
        telemetry(&rx)
    ))
    .await;
    let session = format!("mcp-{server_mode}-{client_mode}");
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let v = run_client(&p.url("/tools/mcp"), client_mode, &session, Some(tp)).await;
    let ctx = format!("{server_mode}/{client_mode}: {v}");

    assert_eq!(
        v["tools"],
        json!(["add", "fail", "slow"]),
        "denied tool listed: {ctx}"
    );
    assert_eq!(v["add"]["is_error"], false, "{ctx}");
    assert_eq!(v["add"]["text"], "5", "{ctx}");
    assert_eq!(v["fail"]["is_error"], true, "{ctx}");
    assert_eq!(v["delete_all"]["code"], -32001, "{ctx}");
    assert!(
        v["delete_all"]["message"]
            .as_str()
            .unwrap()
            .contains("denied_tool"),
        "{ctx}"
    );
    assert_eq!(v["add_invalid"]["code"], -32602, "{ctx}");
    assert!(
        v["add_invalid"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid_tool_args"),
        "{ctx}"
    );
    assert_eq!(v["slow"]["text"], "done", "{ctx}");

    let executed = server.executed().await;
    let tools: Vec<&str> = executed
        .iter()
        .map(|c| c["tool"].as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        ["add", "fail", "slow"],
        "the server never saw the refused calls: {ctx}"
    );

    let text = p.metrics().await;
    let execs = |tool: &str, outcome: &str| {
        metric_value(
            &text,
            "tokenwarden_tool_executions_total",
            &[
                ("agent", "mcp-agent"),
                ("server", "tools"),
                ("tool", tool),
                ("outcome", outcome),
            ],
        )
    };
    assert!(execs("add", "ok") >= 1.0, "{text}");
    assert!(execs("fail", "error") >= 1.0);
    assert!(execs("delete_all", "refused") >= 1.0);
    assert!(
        execs("add", "refused") >= 1.0,
        "invalid arguments are refused"
    );
    assert!(
        metric_sum(
            &text,
            "mcp_client_operation_duration_seconds_count",
            &[("mcp_method_name", "tools/call"), ("server", "tools")]
        ) >= 5.0
    );

    // Spans: the tool call in the trace its _meta named, with the MCP conventions' attributes.
    let add = rx
        .wait_for("for tools/call add", |r| {
            r.span.name == "tools/call add"
                && has(r, "session.id", s(&session))
                && !attrs(&r.span).contains_key("tokenwarden.policy.blocked")
        })
        .await;
    let a = attrs(&add.span);
    assert_eq!(
        hex(&add.span.trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "{a:?}"
    );
    assert_eq!(hex(&add.span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(add.span.kind, 3, "CLIENT");
    assert_eq!(a.get("mcp.method.name"), Some(&s("tools/call")));
    assert_eq!(a.get("gen_ai.operation.name"), Some(&s("execute_tool")));
    assert_eq!(a.get("gen_ai.tool.name"), Some(&s("add")));
    assert_eq!(a.get("agent.name"), Some(&s("mcp-agent")));
    assert_eq!(a.get("tokenwarden.step.kind"), Some(&s("tool")));
    assert!(matches!(a.get("agent_step"), Some(V::I(n)) if *n >= 1));
    assert!(matches!(a.get("jsonrpc.request.id"), Some(V::S(_))));
    assert!(a.contains_key("mcp.protocol.version"), "{a:?}");
    assert!(!a.contains_key("error.type"), "{a:?}");
    if client_mode == "legacy" {
        assert!(
            matches!(a.get("mcp.session.id"), Some(V::S(id)) if id.len() >= 16),
            "{a:?}"
        );
    }
    let fail = rx
        .wait_for("for tools/call fail", |r| {
            r.span.name == "tools/call fail" && has(r, "session.id", s(&session))
        })
        .await;
    assert_eq!(attrs(&fail.span).get("error.type"), Some(&s("tool_error")));
    assert_eq!(fail.span.status.as_ref().map(|st| st.code), Some(2));
    let denied = rx
        .wait_for("for the refused call", |r| {
            r.span.name == "tools/call delete_all" && has(r, "session.id", s(&session))
        })
        .await;
    let d = attrs(&denied.span);
    assert_eq!(d.get("error.type"), Some(&s("-32001")));
    assert_eq!(d.get("tokenwarden.policy.blocked"), Some(&s("denied_tool")));
    rx.wait_for("for tools/list", |r| {
        r.span.name == "tools/list" && has(r, "session.id", s(&session))
    })
    .await;
}

#[tokio::test]
async fn python_sdk_through_the_proxy_json_answers_handshake() {
    sdk_round("json", "legacy").await;
}

#[tokio::test]
async fn python_sdk_through_the_proxy_sse_answers_handshake() {
    sdk_round("sse", "legacy").await;
}

#[tokio::test]
async fn python_sdk_through_the_proxy_sse_answers_default_mode() {
    sdk_round("sse", "auto").await;
}

/// The TypeScript SDK's client through the proxy, against the Python SDK's server (SSE answers):
/// the handshake, the session id, the filtered list, a call, a refusal the SDK raises, and the
/// DELETE that ends the session.
#[tokio::test]
async fn typescript_sdk_client_through_the_proxy() {
    let server = ToolServer::start("sse", &[]).await;
    let p = TestProxy::start(&format!("{}{POLICY}", route(&server.addr(), ""))).await;
    let url = p.url("/tools/mcp");
    let v = run_mcp_ts_script("mcp_ts_client.mjs", &[&url, "ts-session", "mcp-agent"]).await;
    assert_eq!(v["tools"], json!(["add", "fail", "slow"]), "{v}");
    assert!(
        v["session_id"].as_str().is_some_and(|s| s.len() >= 16),
        "{v}"
    );
    assert_eq!(v["add"]["text"], "42", "{v}");
    assert_eq!(v["delete_all"]["raised"], true, "{v}");
    assert_eq!(v["delete_all"]["code"], -32001, "{v}");
    let executed = server.executed().await;
    assert_eq!(
        executed.len(),
        1,
        "only add reached the server: {executed:?}"
    );
    let text = p.metrics().await;
    assert!(
        metric_sum(
            &text,
            "tokenwarden_requests_total",
            &[("route", "tools"), ("provider", "mcp")]
        ) >= 5.0,
        "{text}"
    );
}

/// The same request sent straight to the server and through the proxy (each in its own session)
/// gets the same bytes back, apart from nothing: JSON and SSE alike, for an agent whose lists
/// remove nothing.
#[tokio::test]
async fn answers_pass_byte_identical_json_and_sse() {
    for mode in ["json", "sse"] {
        // Two fresh servers, so that event ids match: one asked directly, one through the proxy.
        let server = ToolServer::start(mode, &[]).await;
        let twin = ToolServer::start(mode, &[]).await;
        let p = TestProxy::start(&format!("{}{POLICY}", route(&twin.addr(), ""))).await;
        let direct = format!("http://{}/mcp", server.addr());
        let proxied = p.url("/tools/mcp");
        let call = r#"{"jsonrpc":"2.0","id":"c-1","method":"tools/call","params":{"name":"add","arguments":{"a":20,"b":22}}}"#;
        let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
        let mut answers = Vec::new();
        for url in [&direct, &proxied] {
            let sid = handshake(url).await;
            let (r, call_body) = mcp_post(url, Some(&sid), call).await;
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            let (_, list_body) = mcp_post(url, Some(&sid), list).await;
            answers.push((ct, call_body, list_body));
        }
        assert_eq!(answers[0].0, answers[1].0, "{mode}: content type");
        assert_eq!(
            answers[0].1, answers[1].1,
            "{mode}: tools/call answer byte-identical"
        );
        let text = String::from_utf8_lossy(&answers[1].1).to_string();
        assert!(text.contains("42"), "{mode}: {text}");
        // An agent without restricting lists sees the whole list, byte-identical.
        let third = ToolServer::start(mode, &[]).await;
        let open = TestProxy::start(&route(&third.addr(), "")).await;
        let sid = handshake(&open.url("/tools/mcp")).await;
        mcp_post(&open.url("/tools/mcp"), Some(&sid), call).await;
        let (_, open_list) = mcp_post(&open.url("/tools/mcp"), Some(&sid), list).await;
        assert_eq!(
            open_list, answers[0].2,
            "{mode}: unfiltered tools/list byte-identical"
        );
        // The restricted agent's list lost exactly the denied tool.
        let filtered = String::from_utf8_lossy(&answers[1].2).to_string();
        assert!(!filtered.contains("delete_all"), "{mode}: {filtered}");
        assert!(String::from_utf8_lossy(&answers[0].2).contains("delete_all"));
        assert!(filtered.contains("\"add\"") && filtered.contains("inputSchema"));
    }
}

/// An SSE answer the client lost mid-way resumes with Last-Event-ID through the proxy: the server
/// replays what followed, and the replayed tools/list result is filtered too.
#[tokio::test]
async fn resumption_with_last_event_id_and_the_replayed_list_is_filtered() {
    let server = ToolServer::start("sse", &[]).await;
    let p = TestProxy::start(&format!("{}{POLICY}", route(&server.addr(), ""))).await;
    let url = p.url("/tools/mcp");
    let sid = handshake(&url).await;
    let (r, body) = mcp_post(
        &url,
        Some(&sid),
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = String::from_utf8_lossy(&body).to_string();
    assert!(!text.contains("delete_all"), "{text}");
    // Resume after the stream's first (priming) event, as a client that lost the answer does:
    // the server replays the answer on the GET stream.
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    assert!(ids.len() >= 2, "a priming event, then the answer: {text}");
    let before = ids[0];
    let req = Request::get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .header("last-event-id", before)
        .header("x-agent-name", "mcp-agent")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("\"id\":9") {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("replay within 10 s");
        let Some(Ok(frame)) = frame else { break };
        if let Ok(d) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&d));
        }
    }
    assert!(
        seen.contains("\"id\":9") && seen.contains("\"add\""),
        "{seen}"
    );
    assert!(
        !seen.contains("delete_all"),
        "the replayed list is filtered: {seen}"
    );
}

/// Bad input: each a clear JSON-RPC error, nothing forwarded.
#[tokio::test]
async fn malformed_oversize_and_batches_are_refused_before_the_server() {
    let server = ToolServer::start("json", &[]).await;
    let p = TestProxy::start(&format!(
        "server:\n  max_request_body_bytes: 65536\n{}{POLICY}",
        route(&server.addr(), "")
    ))
    .await;
    let url = p.url("/tools/mcp");
    let sid = handshake(&url).await;
    let cases: &[(&str, u16, i64)] = &[
        ("{\"jsonrpc\":\"2.0\",\"id\":1,", 400, -32700),
        ("[]", 400, -32600),
        (
            r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"add"}}"#,
            400,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{}}"#,
            400,
            -32600,
        ),
    ];
    for (body, status, code) in cases {
        let (r, b) = mcp_post(&url, Some(&sid), body).await;
        assert_eq!(r.status(), *status, "{body}");
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["code"], *code, "{body}: {v}");
        assert_eq!(v["jsonrpc"], "2.0");
    }
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{{"name":"add","arguments":{{"a":1,"b":2,"pad":"{}"}}}}}}"#,
        "x".repeat(70_000)
    );
    let (r, b) = mcp_post(&url, Some(&sid), &big).await;
    assert_eq!(r.status(), 413);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["error"]["code"], -32600);
    // A batch with one denied call is refused whole: an error per request, nothing forwarded.
    let batch = r#"[{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":1}}},{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"delete_all","arguments":{"table":"t"}}}]"#;
    let (r, b) = mcp_post(&url, Some(&sid), batch).await;
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v[1]["id"], 6);
    assert_eq!(v[1]["error"]["data"]["tokenwarden"], "denied_tool");
    assert!(
        server.executed().await.is_empty(),
        "nothing reached the server"
    );
}

/// A server that dies mid-stream: the request it left unanswered gets a JSON-RPC error and the
/// stream ends cleanly, after what the server had sent.
#[tokio::test]
async fn a_server_that_dies_mid_stream_leaves_a_clear_error() {
    let mut server = ToolServer::start("sse", &[]).await;
    let p = TestProxy::start(&format!("{}{POLICY}", route(&server.addr(), ""))).await;
    let url = p.url("/tools/mcp");
    let sid = handshake(&url).await;
    let call = r#"{"jsonrpc":"2.0","id":"t-1","method":"tools/call","params":{"name":"slow","arguments":{"ms":20000},"_meta":{"progressToken":"p1"}}}"#;
    let req = Request::post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .header("x-agent-name", "mcp-agent")
        .body(Full::new(Bytes::from(call)))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut killed = false;
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("the stream ends within 20 s");
        match frame {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    seen.push_str(&String::from_utf8_lossy(&d));
                }
                if !killed && seen.contains("notifications/progress") {
                    server.child.start_kill().unwrap(); // the server dies mid-answer
                    killed = true;
                }
            }
            Some(Err(e)) => {
                panic!("the client saw a broken stream instead of an error: {e}; {seen}")
            }
            None => break,
        }
    }
    assert!(killed, "{seen}");
    let last = seen
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .next_back()
        .unwrap();
    let v: Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["id"], "t-1", "{seen}");
    assert_eq!(v["error"]["data"]["tokenwarden"], "upstream_reset");
    let text = p.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "tokenwarden_tool_executions_total",
            &[("tool", "slow"), ("outcome", "error")]
        ),
        1.0
    );
}
