//! `server.runtime`: `per_core` serves the proxy listener on worker threads of its own (one
//! single-threaded runtime and one `SO_REUSEPORT` socket each, on the same address), and
//! `shared` on the calling runtime. One test function starts servers: it counts the process's
//! threads, which another test running beside it would disturb (the other only binds).

// Test helpers panic on failure by design; clippy.toml's test exemption covers #[test] fns only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

/// Threads of this process named like the proxy's workers.
fn worker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("tw-worker-"))
        .count()
}

/// `n` chat calls for `agent`, each on a connection of its own (the kernel spreads new
/// connections over the workers' sockets); every one answered with its usage counted.
async fn calls(proxy: &TestProxy, agent: &str, n: usize) {
    for _ in 0..n {
        let (resp, body) = post(
            &proxy.url("/v1/chat/completions"),
            &[("x-agent-name", agent)],
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
        assert_eq!(resp.status(), 200, "{body:?}");
    }
    let metrics = proxy.metrics().await;
    let input = metric_value(
        &metrics,
        "tokenwarden_tokens_total",
        &[("agent", agent), ("type", "input"), ("source", "provider")],
    );
    assert!(input > 0.0, "usage of {agent} counted: {input}");
    let requests = metric_value(
        &metrics,
        "tokenwarden_requests_total",
        &[("agent", agent), ("status", "2xx")],
    );
    assert_eq!(requests, n as f64);
}

#[tokio::test]
async fn per_core_serves_on_its_own_workers_and_joins_them_at_shutdown_shared_uses_none() {
    let m = mock().await;
    assert_eq!(worker_threads(), 0);

    // per_core with three workers, whatever the machine's cores.
    let proxy = TestProxy::to(
        "openai",
        m.addr(),
        "server:\n  runtime: per_core\n  workers: 3\n",
    )
    .await;
    // The workers start once the server's task runs.
    for _ in 0..100 {
        if worker_threads() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(worker_threads(), 3, "one thread per configured worker");
    calls(&proxy, "layout-per-core", 24).await;

    // The workers' tasks count in tokenwarden_runtime_alive_tasks (updated every 5 s): eight
    // idle client connections are eight connection tasks on the workers.
    let alive = |text: String| metric_value(&text, "tokenwarden_runtime_alive_tasks", &[]);
    let before = alive(proxy.metrics().await);
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(tokio::net::TcpStream::connect(proxy.addr).await.unwrap());
    }
    let counted = eventually(Duration::from_secs(8), || async {
        alive(proxy.metrics().await) >= before + 8.0
    })
    .await;
    assert!(
        counted,
        "alive tasks {} after 8 connections, {before} before",
        alive(proxy.metrics().await)
    );
    drop(idle);
    assert_eq!(proxy.stop().await, tokenwarden::server::Drained::Clean);
    // Stopping waits for the workers' threads: none is left behind.
    assert_eq!(worker_threads(), 0, "workers joined at shutdown");

    // shared: the test's own runtime serves the listener; no worker thread starts.
    let proxy = TestProxy::to("openai", m.addr(), "server:\n  runtime: shared\n").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(worker_threads(), 0, "shared mode starts no worker thread");
    calls(&proxy, "layout-shared", 8).await;
    assert_eq!(proxy.stop().await, tokenwarden::server::Drained::Clean);
}

/// A config on `listen` with `workers` per-core workers (bound only: no worker thread starts,
/// so this does not disturb the thread count of the test above).
fn per_core_on(listen: &str, workers: usize) -> tokenwarden::config::Config {
    let yaml = format!(
        "listen: {listen}\nadmin_listen: 127.0.0.1:0\nserver:\n  runtime: per_core\n  workers: {workers}\nroutes:\n  - name: r\n    path_prefix: /\n    upstream: http://127.0.0.1:9\n"
    );
    tokenwarden::config::load_from_str(&yaml, "test").unwrap()
}

#[tokio::test]
async fn a_second_per_core_sidecar_on_a_taken_port_fails_to_bind_instead_of_sharing_it() {
    // The workers' sockets use SO_REUSEPORT among themselves; a second process on the same
    // address used to join them silently and take part of the traffic, each enforcing its own
    // budgets. It must fail as a plain bind does.
    let first = tokenwarden::server::Server::bind(per_core_on("127.0.0.1:0", 2))
        .await
        .unwrap();
    let addr = first.proxy_addr();
    let second = tokenwarden::server::Server::bind(per_core_on(&addr.to_string(), 2)).await;
    match second {
        Err(tokenwarden::server::StartError::Bind { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse, "{source}");
        }
        Err(e) => panic!("not a bind error: {e}"),
        Ok(s) => panic!("bound {} beside {addr}", s.proxy_addr()),
    }
    // Once the first is gone the address is free again.
    drop(first);
    let again = tokenwarden::server::Server::bind(per_core_on(&addr.to_string(), 2)).await;
    assert!(again.is_ok(), "{:?}", again.err().map(|e| e.to_string()));
}
