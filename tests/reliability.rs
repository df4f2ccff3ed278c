//! The reliability suite: the essentials of the attack battery, kept as tests. Each scenario
//! here is one the battery found or checked; the rest of the battery lives beside the code it
//! exercises and is listed here so the whole can be found in one place:
//!
//! - cardinality: `tests/metrics_cardinality.rs` (thousands of model × agent pairs);
//! - disconnects at every point: below (body upload, waiting for headers, mid-stream), and
//!   `tests/budget_redis.rs::a_client_gone_during_admission_leaks_no_reservation`;
//! - secrets in every output: `tests/telemetry_secrets.rs` (spans, logs, metrics),
//!   `tests/binary_lifecycle.rs::check_config_names_key_and_line_but_never_a_secret`,
//!   `tests/config_reload.rs` (a refused reload's log line), `src/config/validate.rs` (URLs);
//! - Redis faults: `tests/budget_redis.rs` (Redis killed and back, a SIGKILLed proxy's
//!   reservations expiring with their lease, sessions expiring);
//! - shutdown: `tests/binary_lifecycle.rs` (drain, grace, settle before the snapshot, `/readyz`);
//! - slow clients: `tests/proxy_hardening.rs` (slowloris, a client that stops reading), and
//!   request bodies bounded together;
//! - HTTP/2 abuse: below (rapid reset), and the h2/hyper floors in `tests/proxy_hardening.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BUDGET: &str = "budgets:\n  store:\n    snapshot_path: ''\n  limits:\n    - scope: session\n      tokens: 1000000\n";

/// A session's spend and what its limit counts as used (spend plus reservations).
async fn spent_and_used(p: &TestProxy, session: &str) -> Option<(u64, u64)> {
    let (r, body) = get(&format!("http://{}/v1/sessions/{session}", p.admin)).await;
    if r.status() != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    Some((
        v["tokens"]["total"].as_u64()?,
        v["limits"][0]["used"].as_u64()?,
    ))
}

/// Send a raw HTTP/1.1 request head (and `body`), without reading anything.
async fn raw(
    addr: std::net::SocketAddr,
    headers: &str,
    body: &str,
    length: usize,
) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {length}\r\n\r\n{body}"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

#[tokio::test]
async fn a_client_gone_at_every_point_is_recorded_once_and_leaks_nothing() {
    let m = mock().await;
    let p = TestProxy::to("gone", m.addr(), BUDGET).await;
    let chat =
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#;

    // 1. During the request body: nothing goes upstream, nothing is reserved.
    let s = raw(
        p.addr,
        "x-session-id: gone-body\r\n",
        &chat[..20],
        chat.len(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);

    // 2. While the upstream has not answered: the upstream request is cancelled.
    let s = raw(
        p.addr,
        "x-session-id: gone-wait\r\nx-mock-first-byte-delay-ms: 3000\r\n",
        chat,
        chat.len(),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            m.stats().in_flight == 1
        })
        .await
    );
    drop(s);

    // 3. Mid-stream, after the first bytes.
    let mut s = raw(
        p.addr,
        "x-session-id: gone-stream\r\nx-mock-output-chunks: 200\r\nx-mock-chunk-delay-ms: 50\r\n",
        chat,
        chat.len(),
    )
    .await;
    let mut first = [0u8; 512];
    let n = s.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);

    // Every upstream request the proxy made was cancelled, none is left running.
    assert!(
        eventually(Duration::from_secs(5), || async {
            m.stats().in_flight == 0
        })
        .await,
        "an upstream request outlived its client"
    );
    assert_eq!(
        m.stats().requests,
        2,
        "the unfinished upload never went upstream"
    );
    assert!(m.stats().streams_cancelled >= 2, "{:?}", m.stats());
    let text = p.metrics().await;
    assert_eq!(
        metric_sum(&text, "tokenwarden_requests_total", &[("route", "gone")]),
        3.0,
        "each call recorded exactly once"
    );
    assert_eq!(
        metric_value(
            &text,
            "tokenwarden_client_disconnects_total",
            &[("route", "gone")]
        ),
        2.0
    );
    // Nothing stays reserved: what the limit counts is what was spent.
    assert_eq!(
        spent_and_used(&p, "gone-body").await,
        None,
        "no spend, no record"
    );
    for session in ["gone-wait", "gone-stream"] {
        let (spent, used) = spent_and_used(&p, session).await.unwrap();
        assert_eq!(spent, used, "{session}: a reservation leaked");
        assert!(
            spent > 0,
            "{session}: the call reached the provider and is charged"
        );
    }
}

#[tokio::test]
async fn an_http2_rapid_reset_flood_is_closed_and_the_proxy_keeps_serving() {
    let m = mock().await;
    let p = TestProxy::to("h2reset", m.addr(), "").await;
    let tcp = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut sent = 0;
    for _ in 0..5_000 {
        let req = http::Request::post(format!("http://{}/v1/chat/completions", p.addr))
            .header("x-mock-first-byte-delay-ms", "1000")
            .body(())
            .unwrap();
        let Ok(ready) = tokio::time::timeout(Duration::from_secs(2), client.clone().ready()).await
        else {
            break;
        };
        let Ok(mut ready) = ready else { break };
        let Ok((_, mut stream)) = ready.send_request(req, false) else {
            break;
        };
        // Open and at once reset: the CVE-2023-44487 pattern.
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    // The server closes the flooding connection (GOAWAY, ENHANCE_YOUR_CALM) instead of serving
    // thousands of cancelled requests.
    let closed = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the flooding connection was never closed")
        .unwrap();
    let err = closed.expect_err("the connection ended cleanly, as if nothing happened");
    // Either the GOAWAY was read, or the socket was already shut while the flood was written.
    assert!(
        err.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) || err.is_io(),
        "{err:?} after {sent} resets"
    );
    // Few of the reset requests reached the upstream, and the proxy still serves.
    assert!(
        m.stats().requests < 200,
        "{} upstream requests",
        m.stats().requests
    );
    let (r, _) = post(
        &p.url("/v1/chat/completions"),
        &[],
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"still there?"}]}"#,
    )
    .await;
    assert_eq!(r.status(), 200);
}
