//! The proxy is invisible: bytes, headers and streaming timing as if the agent talked to the
//! provider directly.

// Test helpers panic on failure by design; clippy.toml's test exemption covers #[test] fns only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};

/// (path, body) pairs covering each provider and mode the mock speaks.
const CASES: &[(&str, &str)] = &[
    (
        "/v1/chat/completions",
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
    ),
    (
        "/v1/chat/completions",
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#,
    ),
    ("/v1/responses", r#"{"model":"gpt-4.1","input":"hi"}"#),
    (
        "/v1/responses",
        r#"{"model":"gpt-4.1","input":"hi","stream":true}"#,
    ),
    (
        "/v1/embeddings",
        r#"{"model":"text-embedding-3-small","input":"hi"}"#,
    ),
    (
        "/v1/messages",
        r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#,
    ),
    (
        "/v1/messages",
        r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    ),
    (
        "/v1beta/models/gemini-2.5-flash:generateContent",
        r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
    ),
    (
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
    ),
];

async fn assert_identical(extra_headers: &[(&str, &str)], route: &str) {
    let m = mock().await;
    let p = TestProxy::to(route, m.addr(), "").await;
    for (path, body) in CASES {
        let direct = post(&format!("http://{}{}", m.addr(), path), extra_headers, body).await;
        let proxied = post(&p.url(path), extra_headers, body).await;
        assert_eq!(direct.0.status(), 200, "{path} direct status");
        assert_eq!(proxied.0.status(), direct.0.status(), "{path}");
        assert!(!direct.1.is_empty(), "{path}: empty body");
        assert_eq!(
            proxied.1, direct.1,
            "{path} {body}: bytes differ through the proxy"
        );
        for h in ["content-type", "content-encoding"] {
            assert_eq!(
                proxied.0.headers().get(h),
                direct.0.headers().get(h),
                "{path}: header {h}"
            );
        }
    }
}

#[tokio::test]
async fn json_and_sse_bodies_pass_byte_identical() {
    assert_identical(&[], "ident").await;
}

#[tokio::test]
async fn byte_identical_when_upstream_writes_one_byte_at_a_time() {
    assert_identical(&[("x-mock-fault", "one-byte-writes")], "onebyte").await;
}

#[tokio::test]
async fn gzip_bodies_pass_through_compressed_and_untouched() {
    assert_identical(&[("x-mock-gzip", "1"), ("accept-encoding", "gzip")], "gzip").await;
    let m = mock().await;
    let p = TestProxy::to("gzip2", m.addr(), "").await;
    let (resp, body) = post(
        &p.url("/v1/chat/completions"),
        &[("x-mock-gzip", "1"), ("accept-encoding", "gzip")],
        CASES[0].1,
    )
    .await;
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    // Still compressed on the wire: the gzip magic number, not JSON.
    assert_eq!(&body[..2], &[0x1f, 0x8b]);
}

#[tokio::test]
async fn credentials_and_ordinary_headers_reach_the_upstream_unchanged() {
    let m = mock().await;
    let p = TestProxy::to("creds", m.addr(), "").await;
    let sent = [
        ("authorization", "Bearer sk-test-CANARY-1234567890"),
        ("x-api-key", "sk-ant-CANARY-abcdef"),
        ("api-key", "azure-CANARY"),
        ("x-goog-api-key", "AIzaCANARY"),
        ("anthropic-version", "2023-06-01"),
        ("openai-organization", "org-123"),
        ("x-custom", "kept"),
    ];
    let (resp, _) = post(&p.url("/v1/chat/completions?trace=1"), &sent, CASES[0].1).await;
    assert_eq!(resp.status(), 200);
    let got = m.last_request().expect("mock saw the request");
    assert_eq!(got.path, "/v1/chat/completions?trace=1");
    for (k, v) in sent {
        let seen: Vec<_> = got
            .headers
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(seen, vec![v], "header {k}");
    }
    let host: Vec<_> = got
        .headers
        .iter()
        .filter(|(n, _)| n == "host")
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(
        host,
        vec![m.addr().to_string()],
        "Host is rewritten to the upstream"
    );
    assert_eq!(got.body, CASES[0].1.as_bytes());
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_in_both_directions() {
    let m = mock().await;
    let p = TestProxy::to("hop", m.addr(), "").await;
    let (resp, _) = post(
        &p.url("/v1/chat/completions"),
        &[
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "must-not-pass"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "trailers"),
            ("x-end-to-end", "passes"),
        ],
        CASES[0].1,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let got = m.last_request().unwrap();
    let names: Vec<&str> = got.headers.iter().map(|(n, _)| n.as_str()).collect();
    for hop in ["x-secret-hop", "keep-alive", "proxy-authorization", "te"] {
        assert!(
            !names.contains(&hop),
            "{hop} reached the upstream: {names:?}"
        );
    }
    assert!(names.contains(&"x-end-to-end"));

    // Upstream → client direction.
    let (up, mut streams) = scripted_upstream().await;
    let p2 = TestProxy::to("hop-resp", up, "").await;
    let task = tokio::spawn(async move { post(&p2.url("/v1/chat/completions"), &[], "{}").await });
    let tx = streams.recv().await.unwrap();
    tx.send(Bytes::from_static(b"data: x\n\n")).await.unwrap();
    drop(tx);
    let (resp, body) = task.await.unwrap();
    assert_eq!(&body[..], b"data: x\n\n");
    assert!(
        resp.headers().get("x-up-hop").is_none(),
        "hop header named by Connection leaked"
    );
    assert_eq!(resp.headers()["x-up-kept"], "1");
}

#[tokio::test]
async fn streamed_chunks_reach_the_client_before_the_upstream_sends_the_next() {
    let (up, mut streams) = scripted_upstream().await;
    let p = TestProxy::to("stream-timing", up, "").await;
    let req = Request::post(p.url("/v1/chat/completions"))
        .body(Full::new(Bytes::from_static(br#"{"stream":true}"#)))
        .unwrap();
    let resp = tokio::spawn(client().request(req));
    let tx = tokio::time::timeout(Duration::from_secs(10), streams.recv())
        .await
        .unwrap()
        .unwrap();
    tx.send(Bytes::from_static(b"data: one\n\n")).await.unwrap();
    let resp = resp.await.unwrap().unwrap();
    let mut body = resp.into_body();
    // The upstream sends its second chunk only after the client has the first: a proxy that
    // buffered would deadlock here and the timeout would fail the test.
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("first chunk arrives while the upstream is still holding the second")
        .unwrap()
        .unwrap();
    assert_eq!(
        first.data_ref().unwrap(),
        &Bytes::from_static(b"data: one\n\n")
    );
    tx.send(Bytes::from_static(b"data: two\n\n")).await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        second.data_ref().unwrap(),
        &Bytes::from_static(b"data: two\n\n")
    );
    drop(tx);
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn http2_cleartext_clients_are_served() {
    let m = mock().await;
    let p = TestProxy::to("h2c", m.addr(), "").await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = Request::post(p.url(CASES[1].0))
        .header("authorization", "Bearer sk-h2")
        .body(Full::new(Bytes::from_static(CASES[1].1.as_bytes())))
        .unwrap();
    let resp = h2.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let via_h2 = resp.into_body().collect().await.unwrap().to_bytes();
    let got = m.last_request().unwrap();
    assert!(got
        .headers
        .iter()
        .any(|(n, v)| n == "authorization" && v == "Bearer sk-h2"));
    assert_eq!(
        got.version, "HTTP/1.1",
        "an h2 agent request goes upstream over the pooled HTTP/1.1 connection"
    );
    let direct = post(
        &format!("http://{}{}", m.addr(), CASES[1].0),
        &[],
        CASES[1].1,
    )
    .await
    .1;
    assert_eq!(via_h2, direct);
}

#[tokio::test]
async fn strip_prefix_routes_to_the_right_upstream() {
    let openai = mock().await;
    let anthropic = mock().await;
    let p = TestProxy::start(&format!(
        "routes:\n  - name: anth\n    path_prefix: /anthropic\n    strip_prefix: true\n    upstream: http://{}\n  - name: oai\n    path_prefix: /\n    upstream: http://{}\n",
        anthropic.addr(),
        openai.addr()
    ))
    .await;
    let (resp, _) = post(
        &p.url("/anthropic/v1/messages"),
        &[("x-api-key", "k")],
        CASES[5].1,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(anthropic.last_request().unwrap().path, "/v1/messages");
    assert!(openai.last_request().is_none());
    let (resp, _) = post(&p.url("/v1/chat/completions"), &[], CASES[0].1).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(openai.last_request().unwrap().path, "/v1/chat/completions");
}
