//! What SREs see, end to end: a real Prometheus (Debian package `prometheus`) scrapes a real
//! proxy in front of the mock provider and loads the shipped alert rules; mixed traffic goes
//! through (streams, tool calls, upstream errors, a client that leaves, a budget breach, policy
//! violations, loops, failed tool results); then every query of every shipped dashboard runs
//! against Prometheus — each must parse and return data — and the budget-breach and task
//! budget-warning alerts fire. Prometheus scrapes OpenMetrics with exemplar storage on: the
//! exemplars of the latency and token histograms name traces the proxy exported (decoded by an
//! in-process OTLP receiver).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod otlp_receiver;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use otlp_receiver::{hex, Receiver};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A Prometheus server on a free loopback port, killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prometheus_bin() -> PathBuf {
    let bin = std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
    match Command::new(&bin).arg("--version").output() {
        Ok(o) if o.status.success() => PathBuf::from(bin),
        _ => panic!(
            "`{bin}` not found: this test needs a real Prometheus server (Debian: apt-get \
             install prometheus) or PROMETHEUS set to its path"
        ),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_prometheus(scrape: std::net::SocketAddr) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let rules = Path::new(ROOT).join("deploy/prometheus/tokenwarden.rules.yaml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: tokenwarden\n    static_configs:\n      - targets: ['{scrape}']\n",
        rules.display()
    );
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, config).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new(prometheus_bin())
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        // Exemplars (OpenMetrics scrape, /api/v1/query_exemplars).
        .arg("--enable-feature=exemplar-storage")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    let prom = Prometheus {
        child,
        addr,
        _dir: dir,
    };
    let ready = eventually(Duration::from_secs(30), || async {
        let url = format!("http://{}/-/ready", prom.addr);
        matches!(
            tokio::time::timeout(Duration::from_secs(2), client().get(url.parse().unwrap())).await,
            Ok(Ok(r)) if r.status() == 200
        )
    })
    .await;
    assert!(ready, "prometheus did not become ready on {}", prom.addr);
    prom
}

/// Percent-encode a query-string value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn query(prom: &Prometheus, expr: &str) -> Value {
    let (_, body) = get(&format!(
        "http://{}/api/v1/query?query={}",
        prom.addr,
        encode(expr)
    ))
    .await;
    serde_json::from_slice(&body).unwrap()
}

/// Every query of a dashboard, with Grafana's variables as "All" and a one-minute window.
fn dashboard_queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(Path::new(ROOT).join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "three dashboards at least");
    for f in files {
        let d: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "1m")
                    .replace("$__range", "5m")
                    .replace("$agent", ".*")
                    .replace("$model", ".*")
                    .replace("$route", ".*");
                out.push((name.clone(), p["title"].as_str().unwrap().to_string(), expr));
            }
        }
    }
    out
}

const CONFIG: &str = r#"
identity:
  session_idle_timeout: 1s
  task_idle_timeout: 1s
budgets:
  store: { kind: memory, snapshot_path: '' }
  limits:
    - scope: session
      tokens: 400
      action: reject
    - scope: agent
      usd: 1000.0
      window: 1h
      warn_at: 0.000001
    - scope: global
      tokens: 100000000
      warn_at: 0.0000001
    - scope: task
      tokens: 100000000
      warn_at: 0.0000001
pricing:
  gpt-4o-mini: { input: 0.15, output: 0.60, cached_input: 0.075 }
  claude-sonnet-4-5: { input: 3.00, output: 15.00, cached_input: 0.30 }
agents:
  support:
    denied_tools: [delete_customer_data]
    require_approval: [send_email]
models:
  gpt-4o-mini: { context_window: 128000 }
  claude-sonnet-4-5: { context_window: 200000 }
"#;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const TOOLS: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"go"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}},{"type":"function","function":{"name":"search_docs","parameters":{"type":"object"}}},{"type":"function","function":{"name":"get_time","parameters":{"type":"object"}}},{"type":"function","function":{"name":"lookup_order","parameters":{"type":"object"}}},{"type":"function","function":{"name":"send_email","parameters":{"type":"object"}}}]}"#;
const DENIED: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"wipe"}],"tools":[{"type":"function","function":{"name":"delete_customer_data","parameters":{"type":"object"}}}]}"#;
const MSG: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"get_weather","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","is_error":true,"content":"boom"}]}]}"#;

async fn traffic(p: &TestProxy) {
    let chat = p.url("/v1/chat/completions");
    let support = ("x-agent-name", "support");
    // Sessions of a few steps each (they end 1 s after their last call), two per task (tasks end
    // 1 s after their last call too).
    for s in 0..4 {
        let sid = format!("sre-{s}");
        let task = ("x-task-id", if s < 2 { "sre-task-a" } else { "sre-task-b" });
        for _ in 0..3 {
            post(&chat, &[support, ("x-session-id", &sid), task], CHAT).await;
            post(
                &chat,
                &[
                    support,
                    ("x-session-id", &sid),
                    ("x-mock-output-chunks", "20"),
                    task,
                ],
                CHAT_STREAM,
            )
            .await;
        }
    }
    // Tool calls, approval-required among them.
    let (r, b) = post(
        &chat,
        &[
            support,
            ("x-session-id", "sre-tools"),
            ("x-mock-tool-calls", "5"),
        ],
        TOOLS,
    )
    .await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(&b));
    // A denied tool.
    let (r, _) = post(&chat, &[support, ("x-session-id", "sre-deny")], DENIED).await;
    assert_eq!(r.status(), 403, "denied tool refused");
    // A loop: the same request again and again.
    for _ in 0..6 {
        post(&chat, &[support, ("x-session-id", "sre-loop")], CHAT).await;
    }
    // Anthropic stream reporting a failed tool result.
    post(
        &p.url("/anthropic/v1/messages"),
        &[support, ("x-session-id", "sre-anth")],
        MSG,
    )
    .await;
    // Upstream errors: 500s and 429s.
    for fault in ["500", "429", "500"] {
        post(&chat, &[support, ("x-mock-fault", fault)], CHAT).await;
    }
    // A client that leaves mid-stream.
    {
        use futures_util::StreamExt;
        let req = http::Request::post(&chat)
            .header("x-agent-name", "support")
            .header("x-mock-output-chunks", "500")
            .header("x-mock-chunk-delay-ms", "5")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                CHAT_STREAM.as_bytes(),
            )))
            .unwrap();
        let resp = client().request(req).await.unwrap();
        let mut body = http_body_util::BodyStream::new(resp.into_body());
        let _ = body.next().await;
    }
    // A session spending past its 400-token lifetime budget: refused with 402.
    let mut refused = false;
    for _ in 0..10 {
        let (r, _) = post(
            &chat,
            &[
                support,
                ("x-session-id", "sre-budget"),
                ("x-mock-input-tokens", "150"),
            ],
            CHAT,
        )
        .await;
        refused |= r.status() == 402;
    }
    assert!(refused, "the session budget refused a call");
    // Tool calls through an MCP route: executed (one fails) and refused.
    let mcp = p.url("/tools/mcp");
    for (i, tool) in ["search", "search", "fail", "delete_customer_data"]
        .iter()
        .enumerate()
    {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
        );
        let (r, b) = post(
            &mcp,
            &[support, ("accept", "application/json, text/event-stream")],
            &body,
        )
        .await;
        assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(&b));
    }
}

/// A minimal MCP tool server (JSON answers): `tools/call` of `fail` answers `isError: true`,
/// every other call succeeds.
async fn mcp_stub() -> std::net::SocketAddr {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let failed = v["params"]["name"] == "fail";
                        let answer = serde_json::json!({"jsonrpc": "2.0", "id": v["id"],
                        "result": {"content": [{"type": "text", "text": "ok"}], "isError": failed}});
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(bytes::Bytes::from(
                                    answer.to_string(),
                                )))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_query_real_metrics_and_the_breach_alert_fires() {
    let m = mock().await;
    let tools = mcp_stub().await;
    let p = TestProxy::start(&format!(
        "routes:\n  - name: anthropic\n    path_prefix: /anthropic\n    strip_prefix: true\n    upstream: http://{a}\n  - name: tools\n    path_prefix: /tools\n    strip_prefix: true\n    protocol: mcp\n    upstream: http://{tools}\n  - name: openai\n    path_prefix: /\n    upstream: http://{a}\n{CONFIG}",
        a = m.addr()
    ))
    .await;
    let prom = start_prometheus(p.admin).await;
    let up = eventually(Duration::from_secs(20), || async {
        query(&prom, "up{job=\"tokenwarden\"} == 1").await["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    })
    .await;
    assert!(up, "prometheus scrapes the proxy's admin port");

    traffic(&p).await;
    // Sessions end after 1 s idle; then a few more scrapes so every rate has two samples.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let mut failures = Vec::new();
    let queries = dashboard_queries();
    for (board, panel, expr) in &queries {
        let v = query(&prom, expr).await;
        if v["status"] != "success" {
            failures.push(format!("{board} / {panel}: does not run: {v}\n    {expr}"));
        } else if v["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
            failures.push(format!("{board} / {panel}: no data\n    {expr}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries failed:\n{}\n\n/metrics:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n"),
        p.metrics().await
    );

    let fired = eventually(Duration::from_secs(20), || async {
        let (_, body) = get(&format!("http://{}/api/v1/alerts", prom.addr)).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        v["data"]["alerts"].as_array().is_some_and(|a| {
            a.iter().any(|a| {
                a["labels"]["alertname"] == "TokenwardenBudgetBreach"
                    && a["labels"]["scope"] == "session"
                    && a["labels"]["agent"] == "support"
                    && a["state"] == "firing"
            })
        })
    })
    .await;
    assert!(
        fired,
        "TokenwardenBudgetBreach fires for the session breach"
    );
    let task_warned = eventually(Duration::from_secs(20), || async {
        let (_, body) = get(&format!("http://{}/api/v1/alerts", prom.addr)).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        v["data"]["alerts"].as_array().is_some_and(|a| {
            a.iter().any(|a| {
                a["labels"]["alertname"] == "TokenwardenTaskBudgetWarning"
                    && a["labels"]["scope"] == "task"
                    && a["state"] == "firing"
            })
        })
    })
    .await;
    assert!(
        task_warned,
        "TokenwardenTaskBudgetWarning fires for tasks past warn_at"
    );
}

/// The exemplars Prometheus holds for `selector` over the last five minutes: (trace id, span id).
async fn exemplars(prom: &Prometheus, selector: &str) -> Vec<(String, String)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (_, body) = get(&format!(
        "http://{}/api/v1/query_exemplars?query={}&start={}&end={}",
        prom.addr,
        encode(selector),
        now - 300,
        now + 60
    ))
    .await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "success", "{v}");
    v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["exemplars"].as_array().into_iter().flatten())
        .map(|e| {
            let l = &e["labels"];
            let id = |k: &str| l[k].as_str().unwrap_or_default().to_string();
            (id("trace_id"), id("span_id"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exemplars_lead_from_latency_token_and_cost_histograms_to_exported_spans() {
    let rx = Receiver::grpc().await;
    let m = mock().await;
    let p = TestProxy::to(
        "exemplars",
        m.addr(),
        &format!(
            "telemetry:\n  service_name: tw-exemplars\n  otlp:\n    endpoint: {}\n    protocol: grpc\nbudgets:\n  store:\n    snapshot_path: ''\n  limits:\n    - scope: agent\n      usd: 1000\npricing:\n  gpt-4o-mini: {{ input: 10.0, output: 10.0 }}\n",
            rx.endpoint()
        ),
    )
    .await;
    let prom = start_prometheus(p.admin).await;
    for _ in 0..3 {
        let (r, _) = post(
            &p.url("/v1/chat/completions"),
            &[
                ("x-agent-name", "sre-exemplars"),
                ("x-mock-output-chunks", "5"),
            ],
            CHAT_STREAM,
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    assert!(
        eventually(Duration::from_secs(10), || async { rx.spans().len() >= 3 }).await,
        "three spans exported"
    );
    let spans: Vec<(String, String)> = rx
        .spans()
        .iter()
        .map(|r| (hex(&r.span.trace_id), hex(&r.span.span_id)))
        .collect();
    for histogram in [
        "gen_ai_client_inference_duration_seconds_bucket",
        "gen_ai_client_inference_time_to_first_chunk_seconds_bucket",
        "gen_ai_client_inference_operation_output_tokens_bucket",
        // The cost panels' link (a priced call under a budget).
        "tokenwarden_call_cost_usd_bucket",
    ] {
        let selector = format!("{histogram}{{agent=\"sre-exemplars\"}}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let found = loop {
            let found = exemplars(&prom, &selector).await;
            if !found.is_empty() || tokio::time::Instant::now() > deadline {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert!(!found.is_empty(), "no exemplar on {selector}");
        for (trace, span) in &found {
            assert!(
                spans.iter().any(|(t, s)| t == trace && s == span),
                "{histogram}: exemplar {trace}/{span} is no exported span: {spans:?}"
            );
        }
    }
}
