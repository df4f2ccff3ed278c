//! The built binary: config errors, check-config, defaults, and SIGTERM draining a live stream.

// Test helpers panic on failure by design; clippy.toml's test exemption covers #[test] fns only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
}

#[test]
fn check_config_accepts_the_shipped_example() {
    let out = bin()
        .args([
            "check-config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/tokenwarden.yaml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_config_is_refused_naming_the_key_and_line() {
    let f = config_file("listen: 127.0.0.1:0\nroutes:\n  - name: a\n    path_prefix: /\n    upstream: http://127.0.0.1:1\n    stirp_prefix: true\n");
    let out = bin().args(["check-config"]).arg(f.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stirp_prefix") && err.contains("line 6"),
        "{err}"
    );

    // Running with it fails the same way, before binding anything.
    let out = bin().arg("--config").arg(f.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stirp_prefix"));

    // TOKENWARDEN_CONFIG is honoured too.
    let out = bin().env("TOKENWARDEN_CONFIG", f.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(64));

    // A bad value names its key path and its line.
    let f = config_file("routes:\n  - name: a\n    path_prefix: /\n    upstream: ftp://x\n");
    let out = bin().args(["check-config"]).arg(f.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("routes[0].upstream (line 4)"), "{err}");
    let f = config_file(
        "# limits\nbudgets:\n  limits:\n    - scope: session\n      tokens: 10\n      warn_at: 2\n",
    );
    let out = bin().args(["check-config"]).arg(f.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("budgets.limits[0].warn_at (line 6)"), "{err}");

    // Valid but unwise: `hold` with no admin token runs, and is warned about.
    let f = config_file("agents:\n  held:\n    require_approval: [x]\n    approval_action: hold\n");
    let out = bin().args(["check-config"]).arg(f.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: agents.held.approval_action") && err.contains("admin_token"),
        "{err}"
    );

    // A protocol the provider registry does not know names its key and the known ones, at
    // check-config and at start-up alike.
    let f = config_file(
        "routes:\n  - name: a\n    path_prefix: /\n    upstream: http://127.0.0.1:1\n    protocol: bedrok\n",
    );
    for args in [vec!["check-config"], vec!["--config"]] {
        let out = bin().args(args).arg(f.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(64));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("routes[0].protocol")
                && err.contains("bedrok")
                && err.contains("anthropic"),
            "{err}"
        );
    }
}

#[test]
fn cluster_seed_nodes_under_the_one_node_redis_store_are_refused() {
    // Issue 21: `nodes` with `kind: redis` used to be ignored, the cluster never used.
    let f = config_file(
        "budgets:\n  store:\n    kind: redis\n    url: redis://127.0.0.1:6379\n    nodes: [redis://127.0.0.1:7000, redis://127.0.0.1:7001]\n  limits:\n    - scope: agent\n      tokens: 100\n",
    );
    for args in [vec!["check-config"], vec!["--config"]] {
        let out = bin().args(args).arg(f.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(64));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("budgets.store.nodes") && err.contains("kind: redis_cluster"),
            "{err}"
        );
    }
}

#[test]
fn check_config_names_key_and_line_but_never_a_secret() {
    let cases = [
        // The snippet of a parse error used to quote this line with the bad key.
        "routes:\n  - name: a\n    path_prefix: /\n    # api_key: sk-planted-secret\n    upstream: http://127.0.0.1:1\n    stirp_prefix: true\n",
        // serde quotes a wrongly typed string value.
        "server:\n  shutdown_grace: sk-planted-secret\n",
        "budgets:\n  store:\n    kind: redis\n    url: redis://:sk-planted-secret@127.0.0.1:notaport\n",
        "routes:\n  - name: a\n    path_prefix: /\n    upstream: https://user:sk-planted-secret@api.example\n",
    ];
    for text in cases {
        let f = config_file(text);
        let out = bin().args(["check-config"]).arg(f.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{text}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains("sk-planted-secret"), "{all}");
        assert!(
            all.contains("line ")
                || all.contains("budgets.store.url")
                || all.contains("routes[0].upstream"),
            "{all}"
        );
    }
}

#[tokio::test]
async fn the_tokenizer_loads_at_start_before_any_request() {
    let cfg = config_file("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n");
    let mut p = ProxyProcess::spawn(cfg.path()).await;
    // No request is sent: the tokenizer must not wait for the first near-limit call to load.
    let early = p
        .startup_lines
        .iter()
        .any(|l| l.contains("tokenizer loaded"));
    let loaded = tokio::time::timeout(Duration::from_secs(30), async {
        if early {
            return true;
        }
        while let Some(line) = p.stderr_lines.recv().await {
            if line.contains("tokenizer loaded") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(loaded, Ok(true), "no `tokenizer loaded` line");
    p.signal("TERM");
    let _ = tokio::time::timeout(Duration::from_secs(20), p.child.wait()).await;
}

#[tokio::test]
async fn sigterm_drains_a_live_stream_to_its_end_and_exits_zero() {
    let m = mock().await;
    let cfg = config_file(&format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nroutes:\n  - name: drain\n    path_prefix: /\n    upstream: http://{}\nserver:\n  shutdown_grace: 20s\n",
        m.addr()
    ));
    let mut p = ProxyProcess::spawn(cfg.path()).await;

    let body =
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-mock-output-chunks: 20\r\nx-mock-chunk-delay-ms: 100\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut first = vec![0u8; 1024];
    let n = s.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));

    p.signal("TERM");
    // Readiness flips and new connections are refused once the listener closes.
    let refused = eventually(Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(p.addr).await.is_err()
    })
    .await;
    assert!(refused, "listener still accepting after SIGTERM");

    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&first[..n]),
        String::from_utf8_lossy(&rest)
    );
    assert!(
        all.contains("data: [DONE]"),
        "stream cut short by shutdown:\n{all}"
    );

    let status = tokio::time::timeout(Duration::from_secs(20), p.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Open a stream through `addr` for `session` that would take ~25 s, and read its first bytes.
async fn open_slow_stream(addr: std::net::SocketAddr, session: &str) -> tokio::net::TcpStream {
    let body =
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-session-id: {session}\r\nx-mock-output-chunks: 50\r\nx-mock-chunk-delay-ms: 500\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut first = vec![0u8; 1024];
    let n = s.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    s
}

#[tokio::test]
async fn streams_cut_by_the_grace_are_settled_before_the_snapshot_and_readyz_says_draining() {
    let m = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("budgets.json");
    let budgets = format!(
        "budgets:\n  store:\n    snapshot_path: {}\n  limits:\n    - scope: session\n      tokens: 1000000\n",
        snap.display()
    );
    let cfg = config_file(&format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nroutes:\n  - name: grace\n    path_prefix: /\n    upstream: http://{}\nserver:\n  shutdown_grace: 2s\n{budgets}",
        m.addr()
    ));
    let mut p = ProxyProcess::spawn(cfg.path()).await;
    let mut streams = Vec::new();
    for i in 0..3 {
        streams.push(open_slow_stream(p.addr, &format!("grace-{i}")).await);
    }
    p.signal("TERM");
    // While draining, the admin port still answers: not ready, and /metrics can be scraped.
    let draining = eventually(Duration::from_secs(2), || async {
        let ready = reqwest_status(&format!("http://{}/readyz", p.admin)).await;
        ready == Some(503)
    })
    .await;
    assert!(draining, "/readyz did not answer 503 while draining");
    assert_eq!(
        reqwest_status(&format!("http://{}/metrics", p.admin)).await,
        Some(200)
    );
    let status = tokio::time::timeout(Duration::from_secs(20), p.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    drop(streams);
    // The proxy ended them, not their clients: the access log says so.
    let mut lines = Vec::new();
    while let Ok(Some(l)) =
        tokio::time::timeout(Duration::from_secs(5), p.stderr_lines.recv()).await
    {
        lines.push(l);
    }
    let ended = lines
        .iter()
        .filter(|l| l.contains("\"outcome\":\"shutdown\""))
        .count();
    assert_eq!(ended, 3, "{}", lines.join("\n"));

    // The snapshot written at exit holds the spend of the three cut streams.
    let p = TestProxy::to("grace", m.addr(), &budgets).await;
    for i in 0..3 {
        let (r, body) = get(&format!("http://{}/v1/sessions/grace-{i}", p.admin)).await;
        assert_eq!(r.status(), 200, "session grace-{i} lost at shutdown");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            v["tokens"]["input"].as_u64().unwrap() > 0
                && v["tokens"]["output"].as_u64().unwrap() > 0,
            "grace-{i}: {v}"
        );
    }
}

/// The status of a GET, or `None` when nothing answers.
async fn reqwest_status(url: &str) -> Option<u16> {
    let uri: http::Uri = url.parse().unwrap();
    let req = http::Request::get(uri)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), client().request(req))
        .await
        .ok()?
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test]
async fn sigterm_with_nothing_in_flight_exits_promptly() {
    let cfg = config_file("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n");
    let mut p = ProxyProcess::spawn(cfg.path()).await;
    let (resp, body) = get(&format!("http://{}/healthz", p.admin)).await;
    assert_eq!(resp.status(), 200, "{body:?}");
    let (resp, _) = get(&format!("http://{}/readyz", p.admin)).await;
    assert_eq!(resp.status(), 200);
    let health = |addr: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
            .args(["health", "--admin", &addr])
            .status()
            .unwrap()
    };
    assert!(
        health(p.admin.to_string()).success(),
        "health subcommand against a live admin port"
    );
    p.signal("TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), p.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        !health(p.admin.to_string()).success(),
        "health fails once the proxy is gone"
    );
}

/// GET /healthz on the defaults' admin port: whether it answered 200.
async fn default_admin_healthy() -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), async {
            let mut s = tokio::net::TcpStream::connect("127.0.0.1:9464")
                .await
                .ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.ok()?;
            Some(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"))
        })
        .await,
        Ok(Some(true))
    )
}

#[tokio::test]
async fn runs_on_embedded_defaults_without_a_config_file_and_survives_sighup() {
    // Defaults bind fixed ports (8080/9464); if something else holds them this machine is not
    // clean, and the test says so rather than passing vacuously.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
        .env_remove("TOKENWARDEN_CONFIG")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let up = eventually(Duration::from_secs(10), default_admin_healthy).await;
    if !up {
        let _ = child.start_kill();
        let out = child.wait_with_output().await.unwrap();
        panic!(
            "default proxy did not come up on 127.0.0.1:9464: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let metrics = get("http://127.0.0.1:9464/metrics").await.1;
    assert!(String::from_utf8_lossy(&metrics).contains("tokenwarden_build_info"));

    // With no file to reload, SIGHUP (its default action ends a process) is caught and logged.
    let pid = child.id().unwrap();
    let sent = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(sent.success());
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stderr.take().unwrap()));
    let logged = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("SIGHUP received") {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(logged, Ok(true)),
        "no SIGHUP log line; exit status: {:?}",
        child.try_wait()
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended the proxy"
    );
    assert!(default_admin_healthy().await, "the proxy stopped answering");
    let _ = child.start_kill();
    let _ = child.wait().await;
}
