//! HTTPS upstreams: real rustls on both sides, trust from a test CA given as `ca_file`, HTTP/2
//! negotiated by ALPN.

// Test helpers panic on failure by design; clippy.toml's test exemption covers #[test] fns only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// A TLS upstream answering every request with the HTTP version it was served over.
async fn tls_upstream(config: rustls::ServerConfig) -> std::net::SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let version = format!("{:?}", req.version());
                    let auth = req
                        .headers()
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_string());
                    let body =
                        serde_json::json!({"version": version, "authorization": auth}).to_string();
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_upstream_with_private_ca_negotiates_http2() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.server_config(&[b"h2", b"http/1.1"])).await;
    let ca = config_file(&pki.ca_pem);
    let p = TestProxy::start(&format!(
        "routes:\n  - name: tls\n    path_prefix: /\n    upstream: https://localhost:{}\n    ca_file: {}\n",
        up.port(),
        ca.path().display()
    ))
    .await;
    let (resp, body) = post(
        &p.url("/v1/chat/completions"),
        &[("authorization", "Bearer sk-tls")],
        "{}",
    )
    .await;
    assert_eq!(resp.status(), 200, "{body:?}");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["version"], "HTTP/2.0", "ALPN should pick h2");
    assert_eq!(v["authorization"], "Bearer sk-tls");
}

#[tokio::test]
async fn https_upstream_with_unknown_ca_is_refused_as_502() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.server_config(&[b"h2", b"http/1.1"])).await;
    let p = TestProxy::start(&format!(
        "routes:\n  - name: tls-untrusted\n    path_prefix: /\n    upstream: https://localhost:{}\n",
        up.port()
    ))
    .await;
    let (resp, body) = post(&p.url("/v1/chat/completions"), &[], "{}").await;
    assert_eq!(resp.status(), 502);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "upstream_unreachable");
}

#[test]
fn a_ca_file_without_certificates_is_a_startup_error() {
    let f = config_file("not a certificate\n");
    let cfg = tokenwarden::config::load_from_str(
        &format!(
            "routes:\n  - name: bad-ca\n    path_prefix: /\n    upstream: https://localhost:1\n    ca_file: {}\n",
            f.path().display()
        ),
        "t",
    )
    .unwrap();
    let err = tokenwarden::proxy::Proxy::new(&cfg)
        .err()
        .expect("bad CA refused");
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
}

/// A TCP listener that accepts every connection and never sends a byte: a TLS handshake with
/// it never completes.
async fn silent_tcp() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    addr
}

#[tokio::test]
async fn a_tls_handshake_that_never_completes_is_bounded_by_the_connect_timeout() {
    let up = silent_tcp().await;
    let p = TestProxy::start(&format!(
        "routes:\n  - name: tls-silent\n    path_prefix: /\n    upstream: https://127.0.0.1:{}\nupstream:\n  connect_timeout: 1s\n  first_byte_timeout: 30s\n",
        up.port()
    ))
    .await;
    // Generous: without the connect timeout on the handshake the answer takes the 30 s
    // first-byte timeout.
    let (resp, body) = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        post(&p.url("/v1/chat/completions"), &[], "{}"),
    )
    .await
    .expect("answered within the connect timeout, not the first-byte timeout");
    assert_eq!(resp.status(), 504, "{body:?}");
    assert_eq!(resp.headers()["x-tokenwarden-error"], "upstream_timeout");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "upstream_timeout");
    // A connect failure: the request never reached the upstream.
    assert_eq!(
        metric_value(
            &p.metrics().await,
            "tokenwarden_upstream_errors_total",
            &[("route", "tls-silent"), ("kind", "connect")]
        ),
        1.0
    );
}
