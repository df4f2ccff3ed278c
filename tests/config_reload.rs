//! Config hot reload: agent policies change under load without a failed request; an invalid file
//! is refused (log line and metric) while the running config keeps serving; SIGHUP reloads the
//! built binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokenwarden::server::Server;

fn config_text(upstream: std::net::SocketAddr, agent_rules: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nlogging:\n  access_log: false\nroutes:\n  - name: reload\n    path_prefix: /\n    upstream: http://{upstream}\nagents:\n  reloaded:\n{agent_rules}"
    )
}

const BODY: &str =
    r#"{"model":"gpt-4o-mini","max_tokens":500,"messages":[{"role":"user","content":"hi"}]}"#;

fn forwarded_max_tokens(m: &tokenwarden_mock::MockServer) -> Option<u64> {
    let req = m.last_request()?;
    let v: Value = serde_json::from_slice(&req.body).ok()?;
    v["max_tokens"].as_u64()
}

/// Replace the file's contents in one step (a rename), so the watcher never reads half a file.
/// The runtime mode the file was started with stays (`config_file` adds `$TW_TEST_RUNTIME`): a
/// reload that changed it would be refused as needing a restart.
fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("next");
    std::fs::write(&tmp, with_runtime_from_env(text)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn reloads(text: &str, result: &str) -> f64 {
    metric_value(
        text,
        "tokenwarden_config_reload_total",
        &[("result", result)],
    )
}

#[tokio::test]
async fn policies_reload_under_load_and_invalid_files_keep_the_old_config() {
    let m = mock().await;
    let file = config_file(&config_text(
        m.addr(),
        "    max_tokens_cap: { limit: 1000 }\n",
    ));
    let config = tokenwarden::config::load(Some(file.path())).unwrap();
    let mut server = Server::bind(config).await.unwrap();
    server.watch_config(file.path().to_path_buf(), Duration::from_millis(50));
    let url = format!("http://{}/v1/chat/completions", server.proxy_addr());
    let metrics_url = format!("http://{}/metrics", server.admin_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));
    let scrape = || async {
        let (_, b) = get(&metrics_url).await;
        String::from_utf8(b.to_vec()).unwrap()
    };
    let before = scrape().await;

    // Load: four clients sending back to back for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, url) = (stop.clone(), url.clone());
        clients.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let (resp, body) = post(&url, &[("x-agent-name", "reloaded")], BODY).await;
                if resp.status() == 200 {
                    ok += 1;
                } else {
                    failed.push((resp.status(), body));
                }
            }
            (ok, failed)
        }));
    }

    assert!(
        eventually(Duration::from_secs(10), || async {
            forwarded_max_tokens(&m) == Some(500)
        })
        .await
    );

    // A tighter cap: later requests are clamped to it.
    replace_file(
        file.path(),
        &config_text(m.addr(), "    max_tokens_cap: { limit: 200 }\n"),
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            forwarded_max_tokens(&m) == Some(200)
        })
        .await,
        "the new cap never applied"
    );

    // Invalid files: a bad regex, then broken YAML. Both are refused; the cap of 200 stays.
    let bad_regex = "    max_tokens_cap: { limit: 10 }\n    forbidden_input:\n      - { id: broken, regex: \"(\" }\n";
    replace_file(file.path(), &config_text(m.addr(), bad_regex));
    assert!(
        eventually(Duration::from_secs(10), || async {
            reloads(&scrape().await, "error") >= reloads(&before, "error") + 1.0
        })
        .await,
        "invalid config was not reported"
    );
    replace_file(file.path(), "agents: [this is not: valid\n");
    assert!(
        eventually(Duration::from_secs(10), || async {
            reloads(&scrape().await, "error") >= reloads(&before, "error") + 2.0
        })
        .await
    );
    // A route protocol the provider registry does not know is refused too (it is no longer a
    // serde enum: the registry decides).
    let bad_protocol = config_text(m.addr(), "    max_tokens_cap: { limit: 10 }\n")
        .replace("    upstream:", "    protocol: bedrok\n    upstream:");
    assert!(bad_protocol.contains("protocol: bedrok"), "{bad_protocol}");
    replace_file(file.path(), &bad_protocol);
    assert!(
        eventually(Duration::from_secs(10), || async {
            reloads(&scrape().await, "error") >= reloads(&before, "error") + 3.0
        })
        .await,
        "an unknown protocol was accepted on reload"
    );
    m.reset();
    assert!(
        eventually(Duration::from_secs(10), || async {
            m.stats().requests >= 8
        })
        .await
    );
    assert_eq!(
        forwarded_max_tokens(&m),
        Some(200),
        "the running config kept serving"
    );

    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let (ok, failed) = c.await.unwrap();
        assert!(
            failed.is_empty(),
            "requests failed during reloads: {failed:?}"
        );
        total += ok;
    }
    assert!(total >= 8, "the load ran ({total} requests)");
    let after = scrape().await;
    assert_eq!(
        reloads(&after, "ok"),
        reloads(&before, "ok") + 1.0,
        "{after}"
    );
    let _ = stop_tx.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn sighup_reloads_the_binary_and_a_bad_file_is_refused_with_a_log_line() {
    let m = mock().await;
    let text = config_text(m.addr(), "    denied_tools: [rm_rf]\n");
    let file = config_file(&text);
    let mut proc = ProxyProcess::spawn(file.path()).await;
    let metrics_url = format!("http://{}/metrics", proc.admin);
    let scrape = || async {
        let (_, b) = get(&metrics_url).await;
        String::from_utf8(b.to_vec()).unwrap()
    };
    assert_eq!(reloads(&scrape().await, "ok"), 0.0);
    // The file is unchanged: only the signal can cause this reload.
    proc.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || async {
            reloads(&scrape().await, "ok") == 1.0
        })
        .await,
        "SIGHUP did not reload"
    );
    // A secret two lines above the bad key: the error used to quote the lines around it.
    replace_file(
        file.path(),
        &text.replace(
            "denied_tools",
            "# api_key: sk-planted-secret-1\n    denied_toolz",
        ),
    );
    proc.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || async {
            reloads(&scrape().await, "error") >= 1.0
        })
        .await
    );
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = proc.stderr_lines.recv().await {
            if line.contains("config reload refused") {
                return line;
            }
        }
        String::new()
    })
    .await
    .expect("log line within 10 s");
    assert!(refused.contains("denied_toolz"), "{refused}");
    assert!(!refused.contains("sk-planted-secret"), "{refused}");
    // Still serving, with the old rules: the denied tool is still refused.
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"rm_rf","parameters":{}}}]}"#;
    let (resp, _) = post(
        &format!("http://{}/v1/chat/completions", proc.addr),
        &[("x-agent-name", "reloaded")],
        body,
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(m.stats().requests, 0);
    proc.signal("TERM");
    let status = tokio::time::timeout(Duration::from_secs(20), proc.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

/// A call declaring the tool `rm_rf` as the agent `reloaded`: its status.
async fn declares_rm_rf(url: &str) -> http::StatusCode {
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"rm_rf","parameters":{}}}]}"#;
    post(url, &[("x-agent-name", "reloaded")], body)
        .await
        .0
        .status()
}

#[tokio::test]
async fn a_file_caught_mid_write_is_refused_and_the_policies_stay() {
    let m = mock().await;
    let text = config_text(m.addr(), "    denied_tools: [rm_rf]\n");
    let file = config_file(&text);
    // As written (with the runtime the test run names, if any).
    let text = std::fs::read_to_string(file.path()).unwrap();
    // The binary: its reload counter is its own (this process's is shared by the tests here).
    let proc = ProxyProcess::spawn(file.path()).await;
    let url = format!("http://{}/v1/chat/completions", proc.addr);
    let metrics_url = format!("http://{}/metrics", proc.admin);
    let scrape = || async {
        let (_, b) = get(&metrics_url).await;
        String::from_utf8(b.to_vec()).unwrap()
    };
    assert_eq!(declares_rm_rf(&url).await, 403);

    // Written in place, not renamed: what a `>` redirect or an editor leaves for a moment —
    // the file truncated to nothing, then its first lines only (valid YAML: the default route,
    // no agents). Each is refused; the denied tool stays denied.
    let (listen_lines, _) = text.split_at(text.find("logging:").unwrap());
    for (n, partial) in ["", listen_lines].into_iter().enumerate() {
        std::fs::write(file.path(), partial).unwrap();
        assert!(
            eventually(Duration::from_secs(10), || async {
                reloads(&scrape().await, "error") == n as f64 + 1.0
            })
            .await,
            "{partial:?} was not refused"
        );
        assert_eq!(declares_rm_rf(&url).await, 403, "after {partial:?}");
    }
    assert_eq!(reloads(&scrape().await, "ok"), 0.0);
    assert_eq!(m.stats().requests, 0);

    // The whole file again, its agent's rules changed: applied.
    replace_file(
        file.path(),
        &text.replace("denied_tools: [rm_rf]", "denied_tools: [other_tool]"),
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            reloads(&scrape().await, "ok") == 1.0
        })
        .await,
        "the valid file was not applied"
    );
    assert_eq!(declares_rm_rf(&url).await, 200);
    let logs = proc.stop_and_collect_logs().await;
    assert!(
        logs.contains("config reload refused") && logs.contains("routes"),
        "the refusal names what differs:\n{logs}"
    );
}
