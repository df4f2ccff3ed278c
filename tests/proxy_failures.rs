//! Bad paths: unreachable and slow upstreams, oversize bodies, upstreams dying mid-stream and
//! clients going away — each answered in the provider's own error shape and counted once.

// Test helpers panic on failure by design; clippy.toml's test exemption covers #[test] fns only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
const MESSAGES: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;

/// A loopback port with nothing listening on it.
async fn dead_port() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

#[tokio::test]
async fn unreachable_upstream_is_a_provider_shaped_502() {
    let dead = dead_port().await;
    let p = TestProxy::start(&format!(
        "routes:\n  - name: anth502\n    path_prefix: /anthropic\n    strip_prefix: true\n    upstream: http://{dead}\n  - name: oai502\n    path_prefix: /\n    upstream: http://{dead}\n"
    ))
    .await;
    let (resp, body) = post(&p.url("/v1/chat/completions"), &[], CHAT).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(
        resp.headers()["x-tokenwarden-error"],
        "upstream_unreachable"
    );
    let v = json(&body);
    assert_eq!(v["error"]["code"], "upstream_unreachable");
    assert_eq!(v["error"]["type"], "upstream_error");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("oai502"), "{msg}");
    assert!(
        !msg.contains(&dead.port().to_string()),
        "internal address leaked: {msg}"
    );

    let (resp, body) = post(&p.url("/anthropic/v1/messages"), &[], MESSAGES).await;
    assert_eq!(resp.status(), 502);
    let v = json(&body);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "api_error");

    let text = p.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "tokenwarden_upstream_errors_total",
            &[("route", "oai502"), ("kind", "connect")]
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &text,
            "tokenwarden_requests_total",
            &[("route", "oai502"), ("status", "5xx")]
        ),
        1.0
    );
}

#[tokio::test]
async fn slow_first_byte_is_a_provider_shaped_504() {
    let m = mock().await;
    let p = TestProxy::start(&format!(
        "routes:\n  - name: anth504\n    path_prefix: /anthropic\n    strip_prefix: true\n    upstream: http://{a}\n  - name: oai504\n    path_prefix: /\n    upstream: http://{a}\nupstream:\n  first_byte_timeout: 300ms\n",
        a = m.addr()
    ))
    .await;
    let slow = [("x-mock-first-byte-delay-ms", "5000")];
    let (resp, body) = post(&p.url("/v1/chat/completions"), &slow, CHAT).await;
    assert_eq!(resp.status(), 504);
    let v = json(&body);
    assert_eq!(v["error"]["code"], "upstream_timeout");
    let (resp, body) = post(&p.url("/anthropic/v1/messages"), &slow, MESSAGES).await;
    assert_eq!(resp.status(), 504);
    assert_eq!(json(&body)["error"]["type"], "timeout_error");
    let text = p.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "tokenwarden_upstream_errors_total",
            &[("route", "oai504"), ("kind", "timeout")]
        ),
        1.0
    );
}

#[tokio::test]
async fn silent_stream_is_cut_at_the_idle_timeout() {
    let (up, mut streams) = scripted_upstream().await;
    let p = TestProxy::to("idle", up, "upstream:\n  idle_timeout: 300ms\n").await;
    let req = Request::post(p.url("/v1/chat/completions"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let fut = tokio::spawn(client().request(req));
    let tx = streams.recv().await.unwrap();
    tx.send(Bytes::from_static(b"data: one\n\n")).await.unwrap();
    let mut body = fut.await.unwrap().unwrap().into_body();
    assert!(body.frame().await.unwrap().is_ok());
    // The upstream now says nothing while keeping the connection open.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match body.frame().await {
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "stream not ended by the idle timeout");
    drop(tx);
    let ok = eventually(Duration::from_secs(5), || async {
        metric_value(
            &p.metrics().await,
            "tokenwarden_upstream_errors_total",
            &[("route", "idle"), ("kind", "timeout")],
        ) == 1.0
    })
    .await;
    assert!(ok, "idle timeout not counted");
}

#[tokio::test]
async fn oversize_request_body_is_413_and_never_reaches_the_upstream() {
    let m = mock().await;
    let p = TestProxy::start(&format!(
        "routes:\n  - name: anth413\n    path_prefix: /anthropic\n    strip_prefix: true\n    upstream: http://{a}\n  - name: big\n    path_prefix: /\n    upstream: http://{a}\nserver:\n  max_request_body_bytes: 1024\n",
        a = m.addr()
    ))
    .await;
    let big = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(4096)
    );
    let (resp, body) = post(&p.url("/v1/chat/completions"), &[], &big).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(json(&body)["error"]["code"], "request_too_large");
    let (resp, body) = post(&p.url("/anthropic/v1/messages"), &[], &big).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(json(&body)["error"]["type"], "request_too_large");

    // Chunked, with no Content-Length to reject up front: counted while reading.
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    for _ in 0..4 {
        s.write_all(format!("400\r\n{}\r\n", "y".repeat(1024)).as_bytes())
            .await
            .unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("request_too_large"), "{out}");

    // Exactly at the limit is fine.
    let exact = "z".repeat(1024);
    let (resp, _) = post(&p.url("/v1/chat/completions"), &[], &exact).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        m.stats().requests,
        1,
        "only the in-limit request reached the upstream"
    );
}

#[tokio::test]
async fn upstream_errors_pass_through_verbatim_and_are_counted() {
    let m = mock().await;
    let p = TestProxy::to("up5xx", m.addr(), "").await;
    for (fault, status, kind) in [("500", 500, "status_5xx"), ("429", 429, "status_429")] {
        let h = [("x-mock-fault", fault)];
        let direct = post(
            &format!("http://{}/v1/chat/completions", m.addr()),
            &h,
            CHAT,
        )
        .await;
        let proxied = post(&p.url("/v1/chat/completions"), &h, CHAT).await;
        assert_eq!(proxied.0.status(), status);
        assert_eq!(proxied.1, direct.1, "provider error body passes verbatim");
        assert!(proxied.0.headers().get("x-tokenwarden-error").is_none());
        let text = p.metrics().await;
        assert_eq!(
            metric_value(
                &text,
                "tokenwarden_upstream_errors_total",
                &[("route", "up5xx"), ("kind", kind)]
            ),
            1.0,
            "{kind}"
        );
    }
    if let Some(ra) = post(
        &p.url("/v1/chat/completions"),
        &[("x-mock-fault", "429")],
        CHAT,
    )
    .await
    .0
    .headers()
    .get("retry-after")
    {
        assert_eq!(ra, "1");
    }
}

#[tokio::test]
async fn garbage_upstream_body_is_forwarded_untouched() {
    let m = mock().await;
    let p = TestProxy::to("garbage", m.addr(), "").await;
    let h = [("x-mock-fault", "garbage")];
    let direct = post(
        &format!("http://{}/v1/chat/completions", m.addr()),
        &h,
        CHAT_STREAM,
    )
    .await;
    let proxied = post(&p.url("/v1/chat/completions"), &h, CHAT_STREAM).await;
    assert_eq!(proxied.0.status(), direct.0.status());
    assert_eq!(proxied.1, direct.1);
}

#[tokio::test]
async fn upstream_dying_mid_stream_ends_the_client_stream_with_an_error() {
    let m = mock().await;
    let p = TestProxy::to("midstream", m.addr(), "").await;
    let req = Request::post(p.url("/v1/chat/completions"))
        .header("x-mock-fault", "drop-mid-stream")
        .body(Full::new(Bytes::from_static(CHAT_STREAM.as_bytes())))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match body.frame().await {
                Some(Ok(f)) => got.extend_from_slice(f.data_ref().map(|b| &b[..]).unwrap_or(&[])),
                Some(Err(_)) => return "error",
                None => return "clean-end",
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        outcome, "error",
        "a truncated upstream stream must not look complete to the client"
    );
    assert!(!got.is_empty(), "the events before the drop were forwarded");
    assert!(!String::from_utf8_lossy(&got).contains("[DONE]"));
    let ok = eventually(Duration::from_secs(5), || async {
        let t = p.metrics().await;
        metric_value(
            &t,
            "tokenwarden_upstream_errors_total",
            &[("route", "midstream"), ("kind", "reset")],
        ) == 1.0
            && metric_value(
                &t,
                "tokenwarden_requests_total",
                &[("route", "midstream"), ("status", "error")],
            ) == 1.0
    })
    .await;
    assert!(ok, "mid-stream failure not counted:\n{}", p.metrics().await);
}

#[tokio::test]
async fn client_disconnect_mid_stream_cancels_upstream_and_finishes_once() {
    let m = mock().await;
    let p = TestProxy::to("disconnect", m.addr(), "").await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nx-mock-output-chunks: 200\r\nx-mock-chunk-delay-ms: 50\r\nContent-Length: {}\r\n\r\n{}",
        CHAT_STREAM.len(),
        CHAT_STREAM
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert_eq!(m.stats().in_flight, 1);
    drop(s); // the agent goes away mid-stream

    let cancelled = eventually(Duration::from_secs(5), || async {
        m.stats().streams_cancelled == 1
    })
    .await;
    assert!(
        cancelled,
        "upstream request not cancelled: {:?}",
        m.stats().streams_cancelled
    );
    let counted = eventually(Duration::from_secs(5), || async {
        let t = p.metrics().await;
        metric_value(
            &t,
            "tokenwarden_client_disconnects_total",
            &[("route", "disconnect")],
        ) == 1.0
    })
    .await;
    assert!(counted);
    // Exactly once: give any duplicate finish a chance to show up, then check the totals.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = p.metrics().await;
    assert_eq!(
        metric_value(
            &t,
            "tokenwarden_client_disconnects_total",
            &[("route", "disconnect")]
        ),
        1.0
    );
    let total: f64 = ["2xx", "4xx", "5xx", "error"]
        .iter()
        .map(|s| {
            metric_value(
                &t,
                "tokenwarden_requests_total",
                &[("route", "disconnect"), ("status", s)],
            )
        })
        .sum();
    assert_eq!(total, 1.0, "finish step ran {total} times");
}

#[tokio::test]
async fn unmatched_path_is_404_in_openai_shape() {
    let m = mock().await;
    let p = TestProxy::start(&format!(
        "routes:\n  - name: only\n    path_prefix: /only\n    upstream: http://{}\n",
        m.addr()
    ))
    .await;
    let (resp, body) = post(&p.url("/v1/chat/completions"), &[], CHAT).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(json(&body)["error"]["code"], "unknown_route");
    assert_eq!(m.stats().requests, 0);
    // The admin endpoints are not reachable through the proxy port.
    let (resp, body) = get(&p.url("/metrics")).await;
    assert_eq!(resp.status(), 404);
    assert!(!String::from_utf8_lossy(&body).contains("tokenwarden_build_info"));
}

/// The session's tokens, as the admin API reports them.
async fn session_tokens(p: &TestProxy, id: &str) -> serde_json::Value {
    let (r, body) = get(&format!("http://{}/v1/sessions/{id}", p.admin)).await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice::<serde_json::Value>(&body).unwrap()["tokens"].clone()
}

#[tokio::test]
async fn a_json_body_cut_short_is_charged_an_estimate_like_a_cut_stream() {
    let m = mock().await;
    let p = TestProxy::to(
        "cutjson",
        m.addr(),
        "budgets:\n  store:\n    snapshot_path: ''\n  limits:\n    - scope: session\n      tokens: 1000000\n",
    )
    .await;
    let url = p.url("/v1/chat/completions");
    for (session, body) in [("cut-json", CHAT), ("cut-sse", CHAT_STREAM)] {
        let req = Request::post(&url)
            .header("x-session-id", session)
            .header("x-mock-fault", "drop-mid-stream")
            .header("x-mock-output-chunks", "200")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let resp = client().request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        // The body breaks off: the client sees an incomplete body, not a complete one.
        assert!(resp.into_body().collect().await.is_err(), "{session}");
    }
    let text = p.metrics().await;
    for session in ["cut-json", "cut-sse"] {
        let t = session_tokens(&p, session).await;
        assert!(
            t["input"].as_u64().unwrap() > 0 && t["output"].as_u64().unwrap() > 0,
            "{session}: charged {t}"
        );
    }
    // Both are estimates, counted as such.
    assert!(
        metric_value(
            &text,
            "tokenwarden_tokens_total",
            &[
                ("agent", "default"),
                ("model", "gpt-4o-mini"),
                ("type", "output"),
                ("source", "estimated")
            ]
        ) > 0.0,
        "{text}"
    );
}

#[tokio::test]
async fn a_first_byte_timeout_charges_the_tokenized_input_counts_it_and_says_so_in_the_log() {
    let m = mock().await;
    let cfg = config_file(&format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nroutes:\n  - name: fbt\n    path_prefix: /\n    upstream: http://{}\nupstream:\n  first_byte_timeout: 300ms\nbudgets:\n  store:\n    snapshot_path: ''\n  limits:\n    - scope: session\n      tokens: 1000000\n",
        m.addr()
    ));
    let p = ProxyProcess::spawn(cfg.path()).await;
    let (r, _) = post(
        &format!("http://{}/v1/chat/completions", p.addr),
        &[("x-session-id", "fbt-1"), ("x-mock-fault", "hang")],
        CHAT,
    )
    .await;
    assert_eq!(r.status(), 504);
    let expected = tokenwarden::providers::estimate_input(
        tokenwarden::providers::Format::OpenAiChat,
        CHAT.as_bytes(),
    );
    let (_, body) = get(&format!("http://{}/v1/sessions/fbt-1", p.admin)).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["tokens"]["input"].as_u64(),
        Some(expected),
        "charged the tokenizer's count, not the byte bound: {v}"
    );
    let (_, metrics) = get(&format!("http://{}/metrics", p.admin)).await;
    let metrics = String::from_utf8_lossy(&metrics).to_string();
    assert_eq!(
        metric_value(
            &metrics,
            "tokenwarden_tokens_total",
            &[
                ("model", "gpt-4o-mini"),
                ("type", "input"),
                ("source", "estimated")
            ]
        ),
        expected as f64
    );
    let logs = p.stop_and_collect_logs().await;
    let line = logs
        .lines()
        .find(|l| l.contains("\"status\":504"))
        .unwrap_or_else(|| panic!("no access line:\n{logs}"));
    assert!(line.contains("\"outcome\":\"upstream_timeout\""), "{line}");
}

/// A stream broken off after its start stated usage (Anthropic's `message_start`: the input, and
/// a placeholder output of 1) is charged the output it carried, estimated, not the placeholder.
#[tokio::test]
async fn a_stream_broken_off_before_its_final_usage_is_charged_the_output_it_carried() {
    let m = mock().await;
    let p = TestProxy::to(
        "cutmsg",
        m.addr(),
        "budgets:\n  store:\n    snapshot_path: ''\n  limits:\n    - scope: session\n      tokens: 1000000\n",
    )
    .await;
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":1000,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let req = Request::post(p.url("/v1/messages"))
        .header("x-session-id", "cut-msg")
        .header("x-mock-fault", "drop-mid-stream")
        .header("x-mock-input-tokens", "37")
        .header("x-mock-output-chunks", "200")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.into_body().collect().await;
    assert!(got.is_err(), "the body breaks off");
    let t = session_tokens(&p, "cut-msg").await;
    assert_eq!(t["input"].as_u64(), Some(37), "the stated input kept: {t}");
    assert!(
        t["output"].as_u64().unwrap() > 50,
        "charged the output it carried, not the placeholder: {t}"
    );
    let text = p.metrics().await;
    assert!(
        metric_value(
            &text,
            "tokenwarden_tokens_total",
            &[
                ("agent", "default"),
                ("model", "claude-sonnet-4-5"),
                ("type", "output"),
                ("source", "estimated")
            ]
        ) > 50.0,
        "{text}"
    );
}

/// A loopback address whose connects hang: a listener with a backlog of 0 that never accepts,
/// its one queue slot taken by a connection kept open (the kernel then drops further SYNs, so
/// a connect neither succeeds nor fails). The listener and the filler are returned to keep.
async fn hanging_port() -> (
    std::net::SocketAddr,
    tokio::net::TcpListener,
    Vec<tokio::net::TcpStream>,
) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fill = Vec::new();
    loop {
        let connect = tokio::net::TcpStream::connect(addr);
        match tokio::time::timeout(Duration::from_millis(500), connect).await {
            Ok(Ok(s)) => fill.push(s),
            Ok(Err(e)) => panic!("connect to the full listener failed instead of hanging: {e}"),
            Err(_) => break,
        }
        assert!(fill.len() < 16, "the listener's queue never filled");
    }
    (addr, listener, fill)
}

#[tokio::test]
async fn a_connect_timeout_is_a_connect_failure_and_costs_nothing() {
    let (hang, _listener, _fill) = hanging_port().await;
    // One route per client: `http://` upstreams are driven by the request's task, `https://`
    // ones go through the pooled client; both time out in the TCP connect.
    let p = TestProxy::start(&format!(
        "routes:\n  - name: hang-tls\n    path_prefix: /tls\n    strip_prefix: true\n    upstream: https://{hang}\n  - name: hang\n    path_prefix: /\n    upstream: http://{hang}\nupstream:\n  connect_timeout: 1s\n  first_byte_timeout: 30s\nbudgets:\n  store:\n    snapshot_path: ''\n  limits:\n    - scope: session\n      tokens: 1000000\n"
    ))
    .await;
    for (path, session) in [
        ("/v1/chat/completions", "hang-plain"),
        ("/tls/v1/chat/completions", "hang-tls"),
    ] {
        let (resp, body) = tokio::time::timeout(
            Duration::from_secs(15),
            post(&p.url(path), &[("x-session-id", session)], CHAT),
        )
        .await
        .expect("answered at the connect timeout");
        assert_eq!(resp.status(), 504, "{session}: {body:?}");
        assert_eq!(
            json(&body)["error"]["code"],
            "upstream_timeout",
            "{session}"
        );
        // The request never left: nothing spent, nothing still reserved.
        let (r, body) = get(&format!("http://{}/v1/sessions/{session}", p.admin)).await;
        let v = json(&body);
        assert_eq!(r.status(), 200, "{session}: {v}");
        assert_eq!(v["tokens"]["total"], 0, "{session} was charged: {v}");
        assert_eq!(v["cost_usd"].as_f64().unwrap_or(0.0), 0.0, "{session}: {v}");
        for limit in v["limits"].as_array().unwrap() {
            assert_eq!(limit["used"], 0, "{session}: {v}");
        }
    }
    let text = p.metrics().await;
    for route in ["hang", "hang-tls"] {
        assert_eq!(
            metric_value(
                &text,
                "tokenwarden_upstream_errors_total",
                &[("route", route), ("kind", "connect")]
            ),
            1.0,
            "{route}: {text}"
        );
    }
}
