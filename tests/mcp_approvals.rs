//! The approval gate over real sockets (`approval_action: hold`): the Python SDK's MCP server
//! behind an MCP route, raw streamable HTTP as the agent, the admin API as the person.
//!
//! A held `tools/call` is answered at once with a pending tool result and never reaches the
//! server; approved, the identical call (same agent, session, server, tool and arguments) goes
//! through once; denied or expired, it gets a JSON-RPC error; other arguments ask anew. Decisions
//! twice, for an unknown id, with the wrong digest or without the token are refused clearly. The
//! webhook announces each request with a link to the page; the metrics count it all.
//!
//! Needs the SDK Python (`.venv-sdk`, scripts/test.sh).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::mcp::*;
use common::*;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};

const TOKEN: &str = "approver-s3cret";

fn config(server: &ToolServer, hook: std::net::SocketAddr, approvals: &str) -> String {
    format!(
        "{}agents:\n  held-agent:\n    require_approval: [delete_all]\n    approval_action: hold\nadmin_token: {TOKEN}\nalerts:\n  webhook: http://{hook}/hook\napprovals:\n{approvals}telemetry:\n  redact_patterns: ['secret-[a-z]+']\n",
        route(&server.addr(), "")
    )
}

/// The server (answering in `mode`), a webhook receiver, the proxy with `approvals`, and an MCP
/// session: `(server, alerts, proxy, url, session id)`.
async fn setup(
    mode: &str,
    approvals: &str,
) -> (
    ToolServer,
    tokio::sync::mpsc::UnboundedReceiver<Value>,
    TestProxy,
    String,
    String,
) {
    let server = ToolServer::start(mode, &[]).await;
    let (hook, alerts) = webhook_receiver().await;
    let p = TestProxy::start(&config(&server, hook, approvals)).await;
    let url = p.url("/tools/mcp");
    let sid = handshake(&url).await;
    (server, alerts, p, url, sid)
}

fn call(id: u32, table: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "delete_all", "arguments": {"table": table}}})
    .to_string()
}

/// The agent's `tools/call` of `delete_all` on `table`, its JSON-RPC answer.
async fn agent_call(url: &str, sid: &str, id: u32, table: &str) -> Value {
    let (r, body) = mcp_post_as(
        url,
        "held-agent",
        Some("approval-session"),
        Some(sid),
        &call(id, table),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(&body));
    let text = String::from_utf8_lossy(&body);
    // JSON, or an SSE event from the server (json mode answers JSON).
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or(&text);
    serde_json::from_str(json).unwrap()
}

/// Admin API call: `(status, body)`.
async fn admin(
    p: &TestProxy,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", p.admin))
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let (r, b) = send(req.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await;
    (
        r.status().as_u16(),
        serde_json::from_slice(&b).unwrap_or(Value::Null),
    )
}

/// A person's decision on approval `id` through the admin API; its status.
async fn decide(p: &TestProxy, id: &str, decision: &str) -> u16 {
    let body = json!({ "decision": decision }).to_string();
    admin(
        p,
        "POST",
        &format!("/v1/approvals/{id}"),
        Some(TOKEN),
        &body,
    )
    .await
    .0
}

fn pending_id(answer: &Value) -> String {
    let result = &answer["result"];
    assert_eq!(result["isError"], true, "a pending result: {answer}");
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("needs a person's approval") && text.contains("delete_all"),
        "{text}"
    );
    let id = result["_meta"]["tokenwarden/approval"]["id"]
        .as_str()
        .unwrap();
    assert!(text.contains(id), "{text}");
    id.to_string()
}

fn refused(answer: &Value, code: &str) {
    assert_eq!(answer["error"]["code"], -32001, "{answer}");
    assert_eq!(answer["error"]["data"]["tokenwarden"], code, "{answer}");
}

#[tokio::test]
async fn approved_denied_and_expired_through_the_admin_api() {
    let (server, mut alerts, p, url, sid) = setup("json", "  expiry: 3s\n").await;

    // Held: answered at once, the server never sees it; the same call again waits on the same id.
    let first = agent_call(&url, &sid, 10, "users").await;
    let id = pending_id(&first);
    assert_eq!(pending_id(&agent_call(&url, &sid, 11, "users").await), id);
    assert!(server.executed().await.is_empty());

    // The webhook announced it, with a link to the page.
    let alert = tokio::time::timeout(Duration::from_secs(5), alerts.recv())
        .await
        .expect("the approval request reaches the webhook")
        .unwrap();
    assert_eq!(alert["event"], "approval_requested", "{alert}");
    assert_eq!(alert["id"], id.as_str());
    assert_eq!(alert["tool"], "delete_all");
    assert_eq!(alert["agent"], "held-agent");
    assert_eq!(alert["session"], "approval-session");
    assert_eq!(
        alert["link"],
        format!("http://{}/approvals#{id}", p.admin).as_str()
    );

    // Listed, behind the token, arguments redacted.
    assert_eq!(admin(&p, "GET", "/v1/approvals", None, "").await.0, 401);
    let (st, list) = admin(&p, "GET", "/v1/approvals", Some(TOKEN), "").await;
    assert_eq!(st, 200);
    let pending = list["approvals"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{list}");
    let item = &pending[0];
    assert_eq!(item["id"], id.as_str());
    assert_eq!(item["server"], "tools");
    assert_eq!(item["session"], "approval-session");
    assert_eq!(item["arguments"], json!({"table": "users"}));
    let digest = item["digest"].as_str().unwrap().to_string();
    assert_eq!(digest.len(), 64);
    assert!(item["expires_in_seconds"].as_u64().unwrap() <= 3);

    // Bad decisions: no token, bad body, unknown id, wrong digest — nothing decided.
    let approve = json!({"decision": "approve", "digest": digest}).to_string();
    let path = format!("/v1/approvals/{id}");
    assert_eq!(admin(&p, "POST", &path, None, &approve).await.0, 401);
    assert_eq!(
        admin(&p, "POST", &path, Some("wrong"), &approve).await.0,
        401
    );
    let (st, e) = admin(&p, "POST", &path, Some(TOKEN), r#"{"decision":"maybe"}"#).await;
    assert_eq!(st, 400, "{e}");
    let (st, e) = admin(
        &p,
        "POST",
        "/v1/approvals/ap_unknown",
        Some(TOKEN),
        &approve,
    )
    .await;
    assert_eq!(st, 404, "{e}");
    let wrong = json!({"decision": "approve", "digest": "0".repeat(64)}).to_string();
    let (st, e) = admin(&p, "POST", &path, Some(TOKEN), &wrong).await;
    assert_eq!(st, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("digest"), "{e}");
    assert!(server.executed().await.is_empty());

    // Approved: decided once only; a call with other arguments is not covered by it.
    let (st, d) = admin(&p, "POST", &path, Some(TOKEN), &approve).await;
    assert_eq!((st, d["decision"].as_str()), (200, Some("approved")), "{d}");
    let (st, e) = admin(&p, "POST", &path, Some(TOKEN), r#"{"decision":"deny"}"#).await;
    assert_eq!(st, 409, "decided twice: {e}");
    assert!(
        e["error"].as_str().unwrap().contains("already approved"),
        "{e}"
    );
    let other = pending_id(&agent_call(&url, &sid, 12, "orders").await);
    assert_ne!(other, id);
    assert!(server.executed().await.is_empty());

    // The identical call runs, once.
    let ran = agent_call(&url, &sid, 13, "users").await;
    assert_eq!(ran["result"]["isError"], false, "{ran}");
    assert_eq!(ran["result"]["content"][0]["text"], "deleted users");
    assert_eq!(
        server.executed().await,
        vec![json!({"tool": "delete_all", "args": {"table": "users"}})]
    );
    let again = pending_id(&agent_call(&url, &sid, 14, "users").await);
    assert_ne!(again, id, "single use: the next identical call asks anew");
    assert_eq!(server.executed().await.len(), 1);

    // Denied: the agent's identical call gets a JSON-RPC error, once.
    assert_eq!(decide(&p, &again, "deny").await, 200);
    let denied = agent_call(&url, &sid, 15, "users").await;
    refused(&denied, "approval_denied");
    assert!(denied["error"]["message"]
        .as_str()
        .unwrap()
        .contains("denied by a person"));

    // Expired: `orders` waited past the 3 s expiry.
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let (st, e) = admin(
        &p,
        "POST",
        &format!("/v1/approvals/{other}"),
        Some(TOKEN),
        &approve,
    )
    .await;
    assert_eq!(st, 410, "decided after expiry: {e}");
    let expired = agent_call(&url, &sid, 16, "orders").await;
    refused(&expired, "approval_expired");
    assert!(expired["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
    assert_eq!(
        server.executed().await.len(),
        1,
        "nothing else reached the server"
    );

    // The last hour's decisions are listed; the metrics saw every outcome.
    let (_, list) = admin(&p, "GET", "/v1/approvals", Some(TOKEN), "").await;
    let decisions: Vec<&str> = list["decided"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["decision"].as_str().unwrap())
        .collect();
    let pending_now = list["approvals"].as_array().unwrap().len();
    assert_eq!(decisions, ["expired", "denied", "approved"], "{list}");
    assert_eq!(list["decided"][2]["used"], true, "{list}");
    let text = p.metrics().await;
    for d in ["approved", "denied", "expired"] {
        assert!(
            metric_value(
                &text,
                "tokenwarden_approval_decisions_total",
                &[("decision", d)]
            ) >= 1.0,
            "{d}: {text}"
        );
    }
    assert!(metric_sum(&text, "tokenwarden_approval_wait_seconds_count", &[]) >= 3.0);
    assert_eq!(
        pending_now, 0,
        "the refused calls opened no request: {list}"
    );
    let asked = pending_id(&agent_call(&url, &sid, 17, "orders").await);
    assert_ne!(
        asked, other,
        "after the expiry was reported, the call asks anew"
    );
    assert!(
        metric_value(
            &text,
            "tokenwarden_tool_executions_total",
            &[
                ("agent", "held-agent"),
                ("tool", "delete_all"),
                ("outcome", "ok")
            ]
        ) >= 1.0
    );
    assert!(
        metric_value(
            &text,
            "tokenwarden_tool_executions_total",
            &[
                ("agent", "held-agent"),
                ("tool", "delete_all"),
                ("outcome", "refused")
            ]
        ) >= 5.0
    );

    // The page is served, with no external assets allowed.
    let (r, page) = get(&format!("http://{}/approvals", p.admin)).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    assert!(String::from_utf8_lossy(&page).contains("/approvals.js"));
}

/// Past `approvals.max_pending`, a held call is refused at once (not forwarded, not queued);
/// the gauge shows what waits; arguments matching `telemetry.redact_patterns` are listed redacted.
#[tokio::test]
async fn the_pending_cap_refuses_and_arguments_are_redacted() {
    let (server, _alerts, p, url, sid) = setup("sse", "  max_pending: 1\n").await;
    pending_id(&agent_call(&url, &sid, 1, "secret-payroll").await);
    let full = agent_call(&url, &sid, 2, "other").await;
    refused(&full, "approvals_full");
    let (_, list) = admin(&p, "GET", "/v1/approvals", Some(TOKEN), "").await;
    assert_eq!(
        list["approvals"][0]["arguments"],
        json!({"table": "[REDACTED]"}),
        "{list}"
    );
    assert_eq!(list["approvals"].as_array().unwrap().len(), 1);
    assert!(server.executed().await.is_empty());
    let text = p.metrics().await;
    assert!(
        metric_value(&text, "tokenwarden_approvals_pending", &[]) >= 1.0,
        "{text}"
    );
}

/// An approval is single use even when the agent fires the identical call many times at once:
/// exactly one reaches the server; the others ask anew. (A multi-thread runtime, so the proxy
/// admits the calls on several threads at once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_calls_racing_for_one_approval_run_once() {
    let (server, _alerts, p, url, sid) = setup("json", "  expiry: 1m\n").await;
    let id = pending_id(&agent_call(&url, &sid, 1, "users").await);
    assert_eq!(decide(&p, &id, "approve").await, 200);
    let answers = futures_util::future::join_all((0..8).map(|n| {
        let (url, sid) = (url.clone(), sid.clone());
        async move { agent_call(&url, &sid, 100 + n, "users").await }
    }))
    .await;
    let ran = answers
        .iter()
        .filter(|a| a["result"]["content"][0]["text"] == "deleted users")
        .count();
    assert_eq!(ran, 1, "{answers:?}");
    assert_eq!(server.executed().await.len(), 1);
}

/// An approved call whose server cannot be reached never ran: its approval is given back, so
/// the agent's retry runs without asking a person again.
#[tokio::test]
async fn an_approval_is_not_spent_on_a_server_that_cannot_be_reached() {
    let (server, _alerts, p, url, sid) = setup("json", "  expiry: 10m\n").await;
    let id = pending_id(&agent_call(&url, &sid, 10, "users").await);
    assert_eq!(decide(&p, &id, "approve").await, 200);
    let addr = server.addr();
    drop(server);
    // The server's process is gone once its port refuses connections.
    let gone = eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(&addr).await.is_err()
    })
    .await;
    assert!(gone, "the tool server still listens");
    let (_, body) = mcp_post_as(
        &url,
        "held-agent",
        Some("approval-session"),
        Some(&sid),
        &call(11, "users"),
    )
    .await;
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("error"),
        "an unreachable server is an error: {text}"
    );
    let (_, list) = admin(&p, "GET", "/v1/approvals", Some(TOKEN), "").await;
    let decided = list["decided"].as_array().unwrap();
    let d = decided.iter().find(|d| d["id"] == id.as_str()).unwrap();
    assert_eq!(d["decision"], "approved", "{list}");
    assert_eq!(
        d["used"], false,
        "the approval stands for the retry: {list}"
    );
}
