//! Tasks over real sockets: a supervisor and its workers, in different sessions and behind
//! different proxies, are one task — by their shared W3C trace id, or by an explicit id
//! (`x-task-id`, then baggage `task.id`) — with one budget (on one real Redis across proxies),
//! one set of numbers recorded when the task goes idle, and the admin API's view of it.
//!
//! Needs `redis-server` on PATH (see tests/common/redis.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::redis::RedisServer;
use common::*;
use serde_json::Value;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

/// A `traceparent` in trace `trace` (32 hex digits), from the agent's span `span`.
fn traceparent(trace: &str, span: u64) -> String {
    format!("00-{trace}-{span:016x}-01")
}

/// One chat call of 16 tokens (8 in, 8 out) of `agent` in `session`, with `extra` headers.
async fn call16(
    addr: SocketAddr,
    agent: &str,
    session: &str,
    extra: &[(&str, &str)],
) -> (http::Response<()>, bytes::Bytes) {
    let mut headers = vec![
        ("x-agent-name", agent),
        ("x-session-id", session),
        ("x-mock-input-tokens", "8"),
        ("x-mock-output-chunks", "8"),
    ];
    headers.extend_from_slice(extra);
    post(
        &format!("http://{addr}/v1/chat/completions"),
        &headers,
        CHAT,
    )
    .await
}

/// The admin API's view of task `id` (200 expected).
async fn task(admin: SocketAddr, id: &str) -> Value {
    let (r, body) = get(&format!("http://{admin}/v1/tasks/{id}")).await;
    assert_eq!(
        r.status(),
        200,
        "task {id}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap()
}

/// Wait until the store shows `used` tokens of the task's first limit (settling is
/// asynchronous with Redis).
async fn task_used(admin: SocketAddr, id: &str, used: u64) {
    let ok = eventually(Duration::from_secs(10), || async move {
        task(admin, id).await["limits"][0]["used"].as_u64() == Some(used)
    })
    .await;
    assert!(ok, "task {id} never showed {used} tokens used");
}

fn refused_by_the_task(r: &http::Response<()>, body: &[u8]) {
    assert_eq!(r.status(), 402, "{}", String::from_utf8_lossy(body));
    let v: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["error"]["code"], "task_token_budget_exceeded", "{v}");
}

#[tokio::test]
async fn a_supervisor_and_two_workers_behind_two_proxies_stop_together_at_the_task_limit() {
    let redis = RedisServer::start();
    let m = mock().await;
    let cfg = format!(
        "routes:\n  - name: tasks\n    path_prefix: /\n    upstream: http://{}\nbudgets:\n  store:\n    kind: redis\n    url: {}\n    timeout: 300ms\n  on_store_unreachable: fail_closed\n  limits:\n    - scope: task\n      tokens: 50\n",
        m.addr(),
        redis.url()
    );
    let (a, b) = (TestProxy::start(&cfg).await, TestProxy::start(&cfg).await);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    // Three agents, three sessions, two proxies: one trace.
    let members = [
        (&a, "supervisor", "sup-1", 1),
        (&b, "worker", "work-1", 2),
        (&a, "worker", "work-2", 3),
    ];
    for (i, (p, agent, session, span)) in members.iter().enumerate() {
        let tp = traceparent(trace, *span);
        let (r, body) = call16(p.addr, agent, session, &[("traceparent", &tp)]).await;
        assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(&body));
        task_used(p.admin, trace, 16 * (i as u64 + 1)).await;
    }
    // 48 of 50 spent: every member is refused, through either proxy; no session limit exists.
    for (p, agent, session, span) in members.iter().chain(&[(&b, "supervisor", "sup-1", 9)]) {
        let tp = traceparent(trace, span + 10);
        let (r, body) = call16(p.addr, agent, session, &[("traceparent", &tp)]).await;
        refused_by_the_task(&r, &body);
    }
    assert_eq!(
        m.stats().requests,
        3,
        "refused calls never reach the upstream"
    );
    // Another trace is another task, with its own budget.
    let other_trace = "0af7651916cd43dd8448eb211c80319c";
    let other = traceparent(other_trace, 1);
    let (r, _) = call16(b.addr, "worker", "work-1", &[("traceparent", &other)]).await;
    assert_eq!(r.status(), 200);
    task_used(b.admin, other_trace, 16).await;

    // Each proxy reports the shared spend from the store and its own share of the calls.
    let (va, vb) = (task(a.admin, trace).await, task(b.admin, trace).await);
    for v in [&va, &vb] {
        assert_eq!(v["task"], trace);
        assert_eq!(v["spend_from"], "store");
        assert_eq!(v["tokens"]["total"], 48, "{v}");
        assert_eq!(v["limits"][0]["scope"], "task");
        assert_eq!(v["limits"][0]["remaining"], 2);
    }
    assert_eq!(
        (va["steps"].as_u64(), va["llm_calls"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(
        (vb["steps"].as_u64(), vb["llm_calls"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(va["sidecar"]["tokens"]["total"], 32);
    assert_eq!(vb["sidecar"]["tokens"]["total"], 16);
    assert_eq!(
        va["sidecar"]["agent"], "supervisor",
        "the first call's agent"
    );
    assert_eq!(vb["sidecar"]["agent"], "worker");
    // The ranking in Redis lists the task, most tokens first.
    let (_, body) = get(&format!("http://{}/v1/tasks?top=5", b.admin)).await;
    let top: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(top["tasks"][0]["task"], trace, "{top}");
    assert_eq!(top["tasks"][1]["tokens"]["total"], 16, "{top}");
}

#[tokio::test]
async fn a_task_without_a_trace_id_uses_the_explicit_id_header_then_baggage() {
    let m = mock().await;
    let p = TestProxy::to(
        "explicit",
        m.addr(),
        "budgets:\n  store: {kind: memory, snapshot_path: ''}\n  limits:\n    - {scope: task, tokens: 50, warn_at: 0.5}\n",
    )
    .await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    // The header wins over baggage and the trace id.
    let tp = traceparent(trace, 1);
    let both = [
        ("x-task-id", "job-7"),
        ("baggage", "task.id=job-8"),
        ("traceparent", tp.as_str()),
    ];
    let (r, _) = call16(p.addr, "planner", "plan-1", &both).await;
    assert_eq!(r.status(), 200);
    let (r, _) = get(&format!("http://{}/v1/tasks/{trace}", p.admin)).await;
    assert_eq!(
        r.status(),
        404,
        "the trace id is not the task when an id is sent"
    );
    // Baggage, from another session of the same task id.
    let (r, _) = call16(
        p.addr,
        "coder",
        "code-1",
        &[("baggage", "userId=u1,task.id=job-7")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let (r, _) = call16(p.addr, "coder", "code-2", &[("x-task-id", "job-7")]).await;
    assert_eq!(r.status(), 200);
    let (r, body) = call16(p.addr, "planner", "plan-1", &[("x-task-id", "job-7")]).await;
    refused_by_the_task(&r, &body);
    let v = task(p.admin, "job-7").await;
    assert_eq!(v["tokens"]["total"], 48, "{v}");
    assert_eq!(
        (v["steps"].as_u64(), v["llm_calls"].as_u64()),
        (Some(3), Some(4))
    );
    // Another id from baggage alone is another task.
    let (r, _) = call16(p.addr, "coder", "code-3", &[("baggage", "task.id=job-8")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(task(p.admin, "job-8").await["tokens"]["total"], 16);
    // A call with no id at all (no header, baggage or traceparent) has no task.
    let (r, _) = call16(p.addr, "coder", "code-4", &[]).await;
    assert_eq!(r.status(), 200);
    let (_, body) = get(&format!("http://{}/v1/tasks?top=10", p.admin)).await;
    let top: Value = serde_json::from_slice(&body).unwrap();
    let ids: Vec<&str> = top["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["job-7", "job-8"]);
    // Past half the limit the third call was admitted with a warning: what the alert reads.
    let text = p.metrics().await;
    let warned = metric_value(
        &text,
        "tokenwarden_budget_decisions_total",
        &[("scope", "task"), ("decision", "warned")],
    );
    assert!(warned >= 1.0, "{text}");
}

#[tokio::test]
async fn task_numbers_become_histograms_when_the_task_goes_idle() {
    let m = mock().await;
    let p = TestProxy::start(&format!(
        "routes:\n  - name: anthropic\n    path_prefix: /anthropic\n    strip_prefix: true\n    upstream: http://{a}\n  - name: openai\n    path_prefix: /\n    upstream: http://{a}\nidentity:\n  task_idle_timeout: 400ms\nbudgets:\n  store: {{kind: memory, snapshot_path: ''}}\npricing:\n  gpt-4o-mini: {{input: 0.15, output: 0.60}}\n  claude-sonnet-4-5: {{input: 3.0, output: 15.0}}\nagents:\n  \"*\":\n    require_approval: [search_docs]\n    denied_tools: [rm_rf]\n",
        a = m.addr()
    ))
    .await;
    let id = "hist-task-1";
    let task_h = ("x-task-id", id);
    // The supervisor: two tool calls, one of which needs approval (flagged, not blocked).
    let (r, _) = post(
        &p.url("/v1/chat/completions"),
        &[
            ("x-agent-name", "hist-sup"),
            ("x-mock-tool-calls", "2"),
            task_h,
        ],
        CHAT,
    )
    .await;
    assert_eq!(r.status(), 200);
    // A worker reports a failed tool result (Anthropic `is_error`).
    let failed = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"get_weather","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","is_error":true,"content":"boom"}]}]}"#;
    let (r, _) = post(
        &p.url("/anthropic/v1/messages"),
        &[("x-agent-name", "hist-worker"), task_h],
        failed,
    )
    .await;
    assert_eq!(r.status(), 200);
    // A worker call the policies refuse: an LLM call of the task, not a step.
    let denied = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"wipe"}],"tools":[{"type":"function","function":{"name":"rm_rf","parameters":{"type":"object"}}}]}"#;
    let (r, _) = post(
        &p.url("/v1/chat/completions"),
        &[("x-agent-name", "hist-worker"), task_h],
        denied,
    )
    .await;
    assert_eq!(r.status(), 403);

    // Live: the admin API shows this sidecar's numbers.
    let v = task(p.admin, id).await;
    assert_eq!(
        v["spend_from"], "sidecar",
        "no task limit: the store does not track it"
    );
    for (k, want) in [
        ("steps", 2),
        ("llm_calls", 3),
        ("tool_calls", 2),
        ("tool_failures", 1),
        ("escalations", 1),
    ] {
        assert_eq!(v[k].as_u64(), Some(want), "{k}: {v}");
    }
    assert_eq!(v["sidecar"]["agent"], "hist-sup");
    assert!(v["sidecar"]["live"].as_bool().unwrap());
    let text = p.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "tokenwarden_task_steps_count",
            &[("agent", "hist-sup")]
        ),
        0.0,
        "nothing is recorded while the task is live"
    );

    // Idle: the task ends; its numbers are recorded once, under the first call's agent.
    let ended = eventually(Duration::from_secs(10), || async {
        let text = p.metrics().await;
        metric_value(
            &text,
            "tokenwarden_task_steps_count",
            &[("agent", "hist-sup")],
        ) == 1.0
    })
    .await;
    assert!(ended, "the task never ended");
    let text = p.metrics().await;
    let sum = |name: &str| metric_value(&text, &format!("{name}_sum"), &[("agent", "hist-sup")]);
    assert_eq!(sum("tokenwarden_task_steps"), 2.0);
    assert_eq!(sum("tokenwarden_task_llm_calls"), 3.0);
    assert_eq!(sum("tokenwarden_task_tool_calls"), 2.0);
    assert_eq!(sum("tokenwarden_task_tool_failures"), 1.0);
    assert_eq!(sum("tokenwarden_task_escalations"), 1.0);
    // Tokens and cost are what the calls' own counters say of both agents.
    let agents = ["hist-sup", "hist-worker"];
    let tokens: f64 = agents
        .iter()
        .flat_map(|a| {
            ["input", "output"].map(|t| {
                metric_sum(
                    &text,
                    "tokenwarden_tokens_total",
                    &[("agent", a), ("type", t)],
                )
            })
        })
        .sum();
    assert!(tokens > 0.0);
    assert_eq!(sum("tokenwarden_task_tokens"), tokens);
    let cost: f64 = agents
        .iter()
        .map(|a| metric_sum(&text, "tokenwarden_cost_usd_total", &[("agent", a)]))
        .sum();
    assert!(cost > 0.0);
    assert!(
        (sum("tokenwarden_task_cost_usd") - cost).abs() < 1e-9,
        "{cost}\n{text}"
    );
    let duration = sum("tokenwarden_task_duration_seconds");
    assert!(duration > 0.0 && duration < 5.0, "{duration}");
    // Labelled by the first call's agent only; the id is never a label.
    assert_eq!(
        metric_sum(
            &text,
            "tokenwarden_task_steps_count",
            &[("agent", "hist-worker")]
        ),
        0.0
    );
    assert!(!text.contains(id), "a task id in /metrics");
    let (r, _) = get(&format!("http://{}/v1/tasks/{id}", p.admin)).await;
    assert_eq!(
        r.status(),
        404,
        "an ended task with no budget record is gone"
    );
}

#[tokio::test]
async fn expired_tasks_leave_the_redis_ranking_and_a_settlement_crossing_warn_at_is_counted() {
    let redis = RedisServer::start();
    let m = mock().await;
    let cfg = format!(
        "routes:\n  - name: tasks\n    path_prefix: /\n    upstream: http://{}\nbudgets:\n  store:\n    kind: redis\n    url: {}\n    timeout: 300ms\n  task_retention: 1s\n  limits:\n    - scope: task\n      tokens: 1000\n      warn_at: 0.02\n",
        m.addr(),
        redis.url()
    );
    let (a, b) = (TestProxy::start(&cfg).await, TestProxy::start(&cfg).await);
    // Task A spends more than task B will, then its record expires.
    // (Redis settles after the response: each call waits for the one before to settle, or its
    // reservation would still hold the rest of the limit.)
    let (r, _) = call16(a.addr, "sup", "s-a", &[("x-task-id", "rank-a")]).await;
    assert_eq!(r.status(), 200);
    task_used(a.admin, "rank-a", 16).await;
    let (r, _) = call16(a.addr, "sup", "s-a", &[("x-task-id", "rank-a")]).await;
    assert_eq!(r.status(), 200);
    task_used(a.admin, "rank-a", 32).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (r, _) = call16(b.addr, "work", "s-b", &[("x-task-id", "rank-b")]).await;
    assert_eq!(r.status(), 200);
    task_used(b.admin, "rank-b", 16).await;
    // From a proxy that never saw either task: the store's ranking alone, A gone from it.
    let c = TestProxy::start(&cfg).await;
    let (_, body) = get(&format!("http://{}/v1/tasks?top=1", c.admin)).await;
    let top: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(top["tasks"][0]["task"], "rank-b", "{top}");
    assert_eq!(top["tasks"].as_array().unwrap().len(), 1, "{top}");
    // 16 of 1000 tokens crossed warn_at 0.02 (20 tokens)? No: 16 < 20. B's second call does.
    let (r, _) = call16(b.addr, "work", "s-b", &[("x-task-id", "rank-b")]).await;
    assert_eq!(r.status(), 200);
    task_used(b.admin, "rank-b", 32).await;
    let text = b.metrics().await;
    assert!(
        metric_value(
            &text,
            "tokenwarden_budget_warn_crossed_total",
            &[("scope", "task")]
        ) >= 1.0,
        "{text}"
    );
}
