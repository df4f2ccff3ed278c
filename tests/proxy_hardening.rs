//! Hardening: slowloris, request smuggling, header limits, dependency floors.

// Test helpers panic on failure by design; clippy.toml's test exemption covers #[test] fns only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn slowloris_connection_is_closed_at_the_header_timeout_while_others_are_served() {
    let m = mock().await;
    let p = TestProxy::to(
        "slowloris",
        m.addr(),
        "server:\n  header_read_timeout: 1s\n",
    )
    .await;
    let mut slow = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();

    // Meanwhile, ordinary requests are served.
    let (resp, _) = post(&p.url("/v1/chat/completions"), &[], CHAT).await;
    assert_eq!(resp.status(), 200);

    // The slow client trickles a byte now and then but never finishes its headers.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 256];
        loop {
            if slow.write_all(b"a").await.is_err() {
                return true;
            }
            match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {} // a 408 is fine; keep reading until the close
                Err(_) => {}
            }
        }
    })
    .await;
    assert_eq!(
        closed,
        Ok(true),
        "slowloris connection still open after 10 s"
    );
    assert_eq!(m.stats().requests, 1);
}

/// A client that connects and sends nothing is closed at the header timeout too (before its
/// first byte hyper does not know the protocol, and its own timer has not started).
#[tokio::test]
async fn a_silent_connection_is_closed_at_the_header_timeout() {
    let m = mock().await;
    let p = TestProxy::to("silent", m.addr(), "server:\n  header_read_timeout: 1s\n").await;
    let mut silent = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a silent connection still open after 10 s: {closed:?}"
    );
    // One that speaks after a moment within the timeout is served.
    let mut late = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{CHAT}",
        CHAT.len()
    );
    late.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    late.read_to_end(&mut out).await.unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[tokio::test]
async fn content_length_plus_transfer_encoding_smuggles_nothing() {
    let m = mock().await;
    let p = TestProxy::to("smuggle", m.addr(), "").await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    // A front end honouring Content-Length would see one request whose body hides a second one;
    // one honouring Transfer-Encoding sees an empty chunked body followed by the smuggled request.
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
        5 + smuggled.len()
    );
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(
        r.is_ok(),
        "proxy did not close the connection after a CL+TE request"
    );
    let out = String::from_utf8_lossy(&out);
    assert_eq!(
        out.matches("HTTP/1.1 ").count(),
        1,
        "exactly one response: {out}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen: Vec<String> = m.requests().into_iter().map(|r| r.path).collect();
    assert!(
        !seen.iter().any(|p| p.contains("smuggled")),
        "smuggled request reached upstream: {seen:?}"
    );
    assert!(seen.len() <= 1, "{seen:?}");
    // What did reach the upstream carries no conflicting framing.
    if let Some(r) = m.requests().first() {
        let te = r.headers.iter().any(|(n, _)| n == "transfer-encoding");
        let cl: Vec<_> = r
            .headers
            .iter()
            .filter(|(n, _)| n == "content-length")
            .collect();
        assert!(
            !te || cl.is_empty(),
            "upstream got both CL and TE: {:?}",
            r.headers
        );
    }
}

/// An empty chunked POST (Node fetch with an empty stream body) goes upstream framed by a
/// `Content-Length: 0`, not with no framing at all (Google's front end answers that 411).
#[tokio::test]
async fn an_empty_chunked_body_goes_upstream_with_a_length() {
    let m = mock().await;
    let p = TestProxy::to("emptychunked", m.addr(), "").await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let raw = "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n";
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let reqs = m.requests();
    let r = reqs.first().expect("the request reached the upstream");
    let cl: Vec<_> = r
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(cl, ["0"], "{:?}", r.headers);
}

/// The admin listener (reachable from the pod network) closes a connection that sends nothing,
/// as the proxy's listener does, instead of holding it for good.
#[tokio::test]
async fn an_admin_connection_that_sends_nothing_is_closed() {
    let m = mock().await;
    let p = TestProxy::to("adminidle", m.addr(), "").await;
    let mut s = tokio::net::TcpStream::connect(p.admin).await.unwrap();
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "the idle admin connection was held open");
}

#[tokio::test]
async fn too_many_headers_are_refused() {
    let m = mock().await;
    let p = TestProxy::to("manyheaders", m.addr(), "server:\n  max_headers: 20\n").await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let mut raw = String::from("GET /v1/models HTTP/1.1\r\nHost: x\r\n");
    for i in 0..50 {
        raw.push_str(&format!("x-h{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 431"), "{out}");
    assert_eq!(m.stats().requests, 0);
}

#[tokio::test]
async fn oversized_header_block_is_refused() {
    let m = mock().await;
    let p = TestProxy::to("bighead", m.addr(), "server:\n  max_header_bytes: 8192\n").await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let raw = format!(
        "GET /v1/models HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = s.write_all(raw.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 431"), "{out}");
    assert_eq!(m.stats().requests, 0);
}

/// h2 >= 0.4.18 carries the HTTP/2 rapid-reset and CONTINUATION-flood fixes (as hyper >= 1.5.1
/// does); hyper >= 1.12 is what the driven upstream connections were read and tested against.
#[test]
fn dependency_floors_hold_in_cargo_lock() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    let version_of = |name: &str| -> Vec<(u64, u64, u64)> {
        let mut out = Vec::new();
        let mut lines = lock.lines();
        while let Some(l) = lines.next() {
            if l == format!("name = \"{name}\"") {
                let v = lines
                    .next()
                    .unwrap()
                    .trim_start_matches("version = \"")
                    .trim_end_matches('"');
                let mut it = v.split(['.', '-']).map(|x| x.parse::<u64>().unwrap_or(0));
                out.push((it.next().unwrap(), it.next().unwrap(), it.next().unwrap()));
            }
        }
        out
    };
    let hyper = version_of("hyper");
    assert!(!hyper.is_empty(), "hyper not in Cargo.lock");
    for v in hyper {
        assert!(v >= (1, 12, 0), "hyper {v:?} < 1.12.0");
    }
    let h2 = version_of("h2");
    assert!(!h2.is_empty(), "h2 not in Cargo.lock");
    for v in h2 {
        assert!(v >= (0, 4, 18), "h2 {v:?} < 0.4.18");
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_at_the_write_timeout() {
    let m = mock().await;
    let p = TestProxy::to("stall", m.addr(), "server:\n  write_timeout: 1s\n").await;
    // A tiny receive window, and the response is never read: the proxy's writes stall.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(p.addr).await.unwrap();
    let body =
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-mock-output-chunks: 1000000\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // Without the write timeout the call never ends: no disconnect is ever recorded.
    let gone = eventually(Duration::from_secs(30), || async {
        metric_value(
            &p.metrics().await,
            "tokenwarden_client_disconnects_total",
            &[("route", "stall")],
        ) >= 1.0
    })
    .await;
    assert!(gone, "a stalled client held its stream open");
    drop(s);
}

#[tokio::test]
async fn request_bodies_in_flight_are_bounded_together() {
    let m = mock().await;
    let p = TestProxy::to(
        "bodies",
        m.addr(),
        "server:\n  max_request_body_bytes: 1048576\n  max_buffered_request_bytes: 2097152\n",
    )
    .await;
    let big = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "a".repeat(900 * 1024)
    );
    // Two bodies held by calls whose upstream never answers: the whole budget is in flight.
    let mut held = Vec::new();
    for _ in 0..2 {
        let (url, body) = (p.url("/v1/chat/completions"), big.clone());
        held.push(tokio::spawn(async move {
            post(&url, &[("x-mock-fault", "hang")], &body).await
        }));
    }
    let in_flight = eventually(Duration::from_secs(10), || async {
        m.stats().requests >= 2
    })
    .await;
    assert!(in_flight, "the held calls never reached the upstream");
    let (r, body) = post(&p.url("/v1/chat/completions"), &[], &big).await;
    assert_eq!(r.status(), 503, "{}", String::from_utf8_lossy(&body));
    assert_eq!(r.headers()["x-tokenwarden-error"], "proxy_overloaded");
    assert_eq!(r.headers()["retry-after"], "1");
    // Once the held calls end, their bytes are free again.
    for h in held {
        h.abort();
    }
    let freed = eventually(Duration::from_secs(10), || async {
        post(&p.url("/v1/chat/completions"), &[], &big)
            .await
            .0
            .status()
            == 200
    })
    .await;
    assert!(freed, "bytes of ended calls were not released");
}

/// Uploads that declare their length and then stall hold the body buffer they reserved only
/// until `server.body_read_timeout`: each is answered 408 and the buffer serves others again.
/// They held it for as long as their connections stayed open.
#[tokio::test]
async fn a_stalled_upload_is_answered_408_and_frees_its_share_of_the_body_buffer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let m = mock().await;
    let p = TestProxy::to(
        "stalled",
        m.addr(),
        "server:\n  workers: 1\n  max_request_body_bytes: 1048576\n  max_buffered_request_bytes: 2097152\n  body_read_timeout: 3s\n",
    )
    .await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        s.write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 1048576\r\n\r\n{\"model\":",
        )
        .await
        .unwrap();
        stalled.push(s);
    }
    let small = [("x-mock-input-tokens", "3")];
    // While they stall they hold the whole buffer (their declared lengths; one worker, so one
    // buffer whichever connection lands where).
    let blocked = eventually(Duration::from_secs(2), || async {
        post(&p.url("/v1/chat/completions"), &small, CHAT)
            .await
            .0
            .status()
            == 503
    })
    .await;
    assert!(blocked, "the stalled uploads never held the buffer");
    for mut s in stalled {
        let mut head = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut head))
            .await
            .expect("answered within the timeout")
            .unwrap();
        let head = String::from_utf8_lossy(&head[..n]);
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
        assert!(head.contains("request_body_timeout"), "{head}");
    }
    let (r, body) = post(&p.url("/v1/chat/completions"), &small, CHAT).await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(&body));
}

/// An upstream speaking raw HTTP/1.1: reads each request (head and `Content-Length` body), writes
/// `response` verbatim and closes the connection.
async fn raw_upstream(response: &'static [u8]) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    if seen.len() >= end + 4 + length {
                        break;
                    }
                }
                let _ = s.write_all(response).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_body_framed_by_both_length_and_chunks_reaches_the_client_whole() {
    // RFC 9112 §6.3: the chunked framing wins; the 7 bytes it carries are the body.
    let up = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n7\r\nabcdefg\r\n0\r\n\r\n",
    )
    .await;
    let p = TestProxy::to("clte", up, "").await;
    let (resp, body) = post(&p.url("/v1/chat/completions"), &[], CHAT).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(&body[..], b"abcdefg");
    assert!(
        resp.headers()
            .get("content-length")
            .is_none_or(|v| v == "7"),
        "{:?}",
        resp.headers()
    );
}

#[tokio::test]
async fn a_switch_of_protocols_nobody_asked_for_is_a_provider_shaped_502() {
    let up = raw_upstream(
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await;
    let p = TestProxy::to("switch", up, "").await;
    let (resp, body) = post(&p.url("/v1/chat/completions"), &[], CHAT).await;
    assert_eq!(resp.status(), 502, "{body:?}");
    assert_eq!(
        resp.headers()["x-tokenwarden-error"],
        "upstream_unexpected_upgrade"
    );
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "upstream_unexpected_upgrade");
    assert_eq!(v["error"]["type"], "upstream_error");
    assert_eq!(
        metric_value(
            &p.metrics().await,
            "tokenwarden_upstream_errors_total",
            &[("route", "switch"), ("kind", "reset")]
        ),
        1.0
    );
}

/// A WebSocket upgrade is forwarded without a body, so without the body framing a client gave
/// it (`Content-Length: 5` on the GET): kept, the upstream would wait for five bytes that never
/// come, until the first-byte timeout.
#[tokio::test]
async fn an_upgrade_is_forwarded_without_the_body_framing_it_came_with() {
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    let (head_tx, head_rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        let (mut s, _) = up.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = head_tx.send(String::from_utf8_lossy(&head).to_lowercase());
        let _ = s
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await;
    });
    let p = TestProxy::to("upgrade-body", up_addr, "").await;
    let mut c = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    c.write_all(
        b"GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await
    .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(10), head_rx)
        .await
        .expect("the upgrade reaches the upstream")
        .unwrap();
    assert!(head.starts_with("get /v1/realtime"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
}
