//! MCP pass-through benchmark parts (bench/mcp.sh): a fast MCP tool server and a load driver.
//!
//! `mcp-bench server ADDR json|sse` — answers every POST as a streamable HTTP MCP server's
//! `tools/call` answer would (the request's id echoed, a small text result; `application/json`,
//! or one `text/event-stream` event), in microseconds, so what is measured is the path, not the
//! tool.
//!
//! `mcp-bench drive URL CONC SECONDS` — `CONC` connections each sending `tools/call` requests
//! back to back for `SECONDS` (after a one-second warm-up), every answer read to its end; prints
//! one JSON line: requests, requests/s, latency p50/p90/p99 in microseconds.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: a failure should stop it loudly

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// A `tools/call` as agents send it: a tool name and a few arguments.
const CALL: &str = r#"{"jsonrpc":"2.0","id":"ID","method":"tools/call","params":{"name":"lookup_order","arguments":{"order_id":"A-10023","include_items":true,"fields":["status","total","eta"]},"_meta":{"progressToken":7}}}"#;

fn answer(id: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":"{id}","result":{{"content":[{{"type":"text","text":"order A-10023: shipped, 3 items, total 84.20 EUR, arriving Thursday"}}],"isError":false}}}}"#
    )
}

async fn serve(addr: String, sse: bool) {
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    println!("listening {}", listener.local_addr().unwrap());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| async move {
                let body = req.into_body().collect().await.map(|b| b.to_bytes());
                let body = body.unwrap_or_default();
                // The id sits between `"id":"` and the next quote in the driver's requests.
                let text = String::from_utf8_lossy(&body);
                let id = text
                    .split_once(r#""id":""#)
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map_or("0", |(id, _)| id)
                    .to_string();
                let (ct, out) = if sse {
                    (
                        "text/event-stream",
                        format!("event: message\ndata: {}\n\n", answer(&id)),
                    )
                } else {
                    ("application/json", answer(&id))
                };
                let mut r = Response::new(Full::new(Bytes::from(out)));
                r.headers_mut()
                    .insert("content-type", http::HeaderValue::from_static(ct));
                Ok::<_, Infallible>(r)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn connection(
    url: http::Uri,
    until: Instant,
    warm_until: Instant,
    worker: usize,
) -> Vec<u32> {
    let host = url.authority().unwrap().as_str().to_string();
    let stream = tokio::net::TcpStream::connect(&host).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut lat = Vec::new();
    let mut n = 0u64;
    loop {
        let now = Instant::now();
        if now >= until {
            return lat;
        }
        n += 1;
        let body = CALL.replace("ID", &format!("{worker}-{n}"));
        let req = Request::post(url.clone())
            .header("host", &host)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", "bench-session")
            .header("mcp-protocol-version", "2025-11-25")
            .header("x-agent-name", "bench")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        tx.ready().await.unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(b.windows(7).any(|w| w == b"shipped"), "{b:?}");
        if now >= warm_until {
            lat.push(now.elapsed().as_micros() as u32);
        }
    }
}

async fn drive(url: String, conc: usize, secs: u64) {
    let url: http::Uri = url.parse().unwrap();
    let warm_until = Instant::now() + Duration::from_secs(1);
    let until = warm_until + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..conc)
        .map(|w| tokio::spawn(connection(url.clone(), until, warm_until, w)))
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    let q = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        r#"{{"conc":{conc},"requests":{},"rps":{:.0},"p50_us":{},"p90_us":{},"p99_us":{}}}"#,
        all.len(),
        all.len() as f64 / secs as f64,
        q(0.5),
        q(0.9),
        q(0.99)
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("server") => serve(args[2].clone(), args.get(3).is_some_and(|m| m == "sse")).await,
        Some("drive") => {
            drive(
                args[2].clone(),
                args[3].parse().unwrap(),
                args[4].parse().unwrap(),
            )
            .await
        }
        _ => eprintln!("usage: mcp-bench server ADDR json|sse | mcp-bench drive URL CONC SECONDS"),
    }
}
