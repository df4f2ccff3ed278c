//! The tool leg with real agents and servers over real sockets:
//!
//! - the OpenAI Agents SDK running a tool loop through the proxy on both legs — the model over
//!   the OpenAI route (the mock's `agent-loop` script), the tools over the MCP route
//!   (`MCPServerStreamableHttp` to the Python SDK's server) — in one trace, one session whose
//!   steps count the model calls and the executed tool call alike;
//! - a held call (`approval_action: hold`) as each official client sees it — the Agents SDK, the
//!   Python SDK's client and the TypeScript SDK's client: a pending tool result at once (no
//!   exception, no client timeout), and the identical call running once a person approved;
//! - the TypeScript SDK's *server* behind the proxy (filtered list, a call, a refusal).
//!
//! Needs `.venv-sdk` (openai-agents, mcp; scripts/test.sh) and `.tools/mcp-sdk` (npm).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod otlp_receiver;

use common::mcp::*;
use common::*;
use otlp_receiver::*;
use serde_json::{json, Value};

const TRACE: &str = "5af7651916cd43dd8448eb211c80319c";

fn traceparent() -> String {
    format!("00-{TRACE}-b7ad6b7169203331-01")
}

/// Both routes: `/tools` (MCP) to `tools`, everything else (OpenAI) to `llm`.
fn config(tools: &str, llm: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "routes:\n  - name: tools\n    path_prefix: /tools\n    strip_prefix: true\n    protocol: mcp\n    upstream: http://{tools}\n  - name: llm\n    path_prefix: /\n    upstream: http://{llm}\n{extra}"
    )
}

async fn agents_sdk(p: &TestProxy, agent: &str, session: &str) -> Value {
    let base = format!("http://{}", p.addr);
    let mcp = p.url("/tools/mcp");
    run_sdk_script_with(
        "frameworks/mcp_agent_loop.py",
        &[&base, &mcp, agent, session, &traceparent()],
    )
    .await
}

async fn session_view(p: &TestProxy, id: &str) -> Value {
    let (r, body) = get(&format!("http://{}/v1/sessions/{id}", p.admin)).await;
    assert_eq!(r.status(), 200);
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn agents_sdk_tool_loop_on_both_legs_in_one_trace() {
    let m = mock().await;
    let server = ToolServer::start("sse", &[]).await;
    let rx = Receiver::grpc().await;
    let p = TestProxy::start(&config(
        &server.addr(),
        m.addr(),
        &format!(
            "agents:\n  loop-agent:\n    allowed_tools: [add]\ntelemetry:\n  otlp:\n    endpoint: {}\n    protocol: grpc\n",
            rx.endpoint()
        ),
    ))
    .await;
    let v = agents_sdk(&p, "loop-agent", "loop-session").await;
    assert_eq!(v["error"], Value::Null, "{v}");
    assert_eq!(
        v["final"].as_str().map(str::trim),
        Some(tokenwarden_mock::output_text(20).trim()),
        "{v}"
    );
    // The mock called the one tool the filtered list declared, with schema-built arguments.
    assert_eq!(v["usage"]["requests"], 2, "{v}");
    assert!(v["tool_outputs"][0].as_str().unwrap().contains('2'), "{v}");
    assert_eq!(
        server.executed().await,
        vec![json!({"tool": "add", "args": {"a": 1, "b": 1}})]
    );

    // One session: two model calls and one executed tool call.
    assert_eq!(session_view(&p, "loop-session").await["steps"], 3);

    // One trace: both legs' spans carry the agent's trace id; the tool call is step 2.
    let tool = rx
        .wait_for("the tools/call span", |r| {
            r.span.name == "tools/call add" && hex(&r.span.trace_id) == TRACE
        })
        .await;
    let a = attrs(&tool.span);
    assert_eq!(a.get("session.id"), Some(&s("loop-session")));
    assert_eq!(a.get("agent.name"), Some(&s("loop-agent")));
    assert_eq!(a.get("agent_step"), Some(&V::I(2)), "{a:?}");
    let llm_steps = |r: &Received| {
        hex(&r.span.trace_id) == TRACE
            && attrs(&r.span).get("gen_ai.operation.name") != Some(&s("execute_tool"))
            && attrs(&r.span).contains_key("gen_ai.request.model")
    };
    rx.wait_for("both model calls in the trace", |_| {
        rx.spans().iter().filter(|r| llm_steps(r)).count() >= 2
    })
    .await;
    let mut steps: Vec<V> = rx
        .spans()
        .iter()
        .filter(|r| llm_steps(r))
        .filter_map(|r| attrs(&r.span).get("agent_step").cloned())
        .collect();
    steps.sort_by_key(|v| format!("{v:?}"));
    assert_eq!(
        steps,
        vec![V::I(1), V::I(3)],
        "model calls are steps 1 and 3"
    );
}

/// A held call as the three official clients see it: at once a tool result saying approval is
/// pending (nothing raised, well inside every client's timeout); approved, the same call runs.
#[tokio::test]
async fn a_held_call_as_each_official_client_sees_it() {
    let m = mock().await;
    let server = ToolServer::start("json", &[]).await;
    let p = TestProxy::start(&config(
        &server.addr(),
        m.addr(),
        "agents:\n  held:\n    allowed_tools: [delete_all]\n    require_approval: [delete_all]\n    approval_action: hold\nadmin_token: loop-token\n",
    ))
    .await;
    let url = p.url("/tools/mcp");
    let approve_all = |p: &TestProxy| {
        let admin = p.admin;
        async move {
            let (_, body) = send(
                http::Request::get(format!("http://{admin}/v1/approvals"))
                    .header("authorization", "Bearer loop-token")
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap(),
            )
            .await;
            let list: Value = serde_json::from_slice(&body).unwrap();
            let pending = list["approvals"].as_array().unwrap().clone();
            for a in &pending {
                let (r, b) = post(
                    &format!("http://{admin}/v1/approvals/{}", a["id"].as_str().unwrap()),
                    &[
                        ("content-type", "application/json"),
                        ("authorization", "Bearer loop-token"),
                    ],
                    r#"{"decision":"approve"}"#,
                )
                .await;
                assert_eq!(r.status(), 200, "{b:?}");
            }
            pending
        }
    };
    let calls = |table: &str| json!([["delete_all", {"table": table}]]).to_string();

    // The Agents SDK: the model reads the pending result and answers; nothing raised.
    let first = agents_sdk(&p, "held", "held-agents").await;
    assert_eq!(first["error"], Value::Null, "{first}");
    let out = first["tool_outputs"][0].as_str().unwrap();
    assert!(out.contains("needs a person's approval"), "{first}");
    assert!(first["seconds"].as_f64().unwrap() < 5.0, "{first}");
    // The Python and TypeScript clients likewise get a result, not an error.
    let py = run_sdk_script_with("mcp_call.py", &[&url, "held", "held-py", &calls("py")]).await;
    let ts = run_mcp_ts_script("mcp_ts_call.mjs", &[&url, "held", "held-ts", &calls("ts")]).await;
    for (who, v) in [("python", &py), ("typescript", &ts)] {
        assert_eq!(v["tools"], json!(["delete_all"]), "{who}: {v}");
        let c = &v["calls"][0];
        assert_eq!(c["is_error"], true, "{who}: {v}");
        assert!(
            c["text"].as_str().unwrap().contains("approval"),
            "{who}: {v}"
        );
        assert!(c["seconds"].as_f64().unwrap() < 2.0, "{who}: {v}");
    }
    assert!(server.executed().await.is_empty());
    let approved = approve_all(&p).await;
    assert_eq!(approved.len(), 3, "{approved:?}");

    // Approved: the identical calls run, once each.
    let second = agents_sdk(&p, "held", "held-agents").await;
    assert_eq!(second["error"], Value::Null, "{second}");
    assert!(
        second["tool_outputs"][0]
            .as_str()
            .unwrap()
            .contains("deleted mock"),
        "{second}"
    );
    let py = run_sdk_script_with("mcp_call.py", &[&url, "held", "held-py", &calls("py")]).await;
    assert_eq!(py["calls"][0]["text"], "deleted py", "{py}");
    let ts = run_mcp_ts_script("mcp_ts_call.mjs", &[&url, "held", "held-ts", &calls("ts")]).await;
    assert_eq!(ts["calls"][0]["text"], "deleted ts", "{ts}");
    let mut ran: Vec<String> = server
        .executed()
        .await
        .iter()
        .map(|c| c["args"]["table"].as_str().unwrap().to_string())
        .collect();
    ran.sort();
    assert_eq!(ran, ["mock", "py", "ts"]);
}

/// The TypeScript SDK's server behind the proxy (JSON and SSE answers), the Python SDK's client
/// as the agent: the denied tool is absent from the list and refused; the allowed one runs.
#[tokio::test]
async fn typescript_sdk_server_behind_the_proxy() {
    for mode in ["json", "sse"] {
        let server = ToolServer::typescript(mode).await;
        let p = TestProxy::start(&route(
            &server.addr(),
            "agents:\n  ts-agent:\n    denied_tools: [delete_all]\n",
        ))
        .await;
        let url = p.url("/tools/mcp");
        let calls = json!([["add", {"a": 20, "b": 22}], ["delete_all", {"table": "users"}]]);
        let v = run_sdk_script_with(
            "mcp_call.py",
            &[&url, "ts-agent", "ts-server", &calls.to_string()],
        )
        .await;
        assert_eq!(v["tools"], json!(["add"]), "{mode}: {v}");
        assert_eq!(v["calls"][0]["text"], "42", "{mode}: {v}");
        assert_eq!(v["calls"][0]["is_error"], false, "{mode}: {v}");
        assert_eq!(v["calls"][1]["code"], -32001, "{mode}: {v}");
        assert_eq!(
            server.executed().await,
            vec![json!({"tool": "add", "args": {"a": 20, "b": 22}})],
            "{mode}: the refused call never reached the server"
        );
    }
}
