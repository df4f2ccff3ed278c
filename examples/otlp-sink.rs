//! A lean OTLP trace collector for benchmarks: accepts OTLP/gRPC and OTLP/HTTP protobuf
//! exports, counts their spans, prints the count every second (`spans N`).
//! `otlp-sink [ADDR]` (default 127.0.0.1:14317).
//!
//! In `bench/telemetry.sh` the sink shares a core with the load generator and the mock, while
//! a real collector runs on its own CPU. So it counts spans by walking the protobuf framing
//! (`resource_spans` → `scope_spans` → `spans`) without building messages: fully decoding
//! 30,000 spans a second with prost took ~7 % of that shared core and showed up as proxy
//! throughput. A request whose framing does not parse is answered with an error, as a
//! collector would. The telemetry tests decode every span (`tests/otlp_receiver`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Spans in an `ExportTraceServiceRequest`, from its framing alone; `None` if it is malformed.
fn count_spans(request: &[u8]) -> Option<u64> {
    let mut n = 0;
    for (field, resource_spans) in fields(request) {
        if field? != 1 {
            continue;
        }
        for (field, scope_spans) in fields(resource_spans) {
            if field? != 2 {
                continue;
            }
            for (field, _) in fields(scope_spans) {
                if field? == 2 {
                    n += 1;
                }
            }
        }
    }
    Some(n)
}

/// The fields of a message: `(Some(number), content)` for length-delimited ones,
/// `(Some(number), [])` for others, `(None, [])` once the framing breaks.
fn fields(mut buf: &[u8]) -> impl Iterator<Item = (Option<u64>, &[u8])> {
    let mut broken = false;
    std::iter::from_fn(move || {
        if buf.is_empty() || broken {
            return None;
        }
        let mut next = || -> Option<(u64, &[u8])> {
            let key = varint(&mut buf)?;
            let skip = match key & 7 {
                0 => {
                    varint(&mut buf)?;
                    0
                }
                1 => 8,
                2 => usize::try_from(varint(&mut buf)?).ok()?,
                5 => 4,
                _ => return None,
            };
            let (content, rest) = buf.split_at_checked(skip)?;
            buf = rest;
            Some((key >> 3, if key & 7 == 2 { content } else { &[] }))
        };
        match next() {
            Some((field, content)) => Some((Some(field), content)),
            None => {
                broken = true;
                Some((None, &[][..]))
            }
        }
    })
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The messages of a gRPC request body (uncompressed; each after its 5-byte prefix).
fn grpc_messages(mut body: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let (prefix, rest) = body.split_at_checked(5)?;
        if prefix[0] != 0 {
            return None; // compressed: not sent by tokenwarden
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        let (message, rest) = rest.split_at_checked(len)?;
        out.push(message);
        body = rest;
    }
    Some(out)
}

fn grpc_response(status: u32) -> Response<Body> {
    // One empty ExportTraceServiceResponse, then the status in the trailers.
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(status));
    let frames = [
        Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
        frames,
    ))));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    r
}

fn http_response(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(BodyExt::boxed(Full::new(Bytes::new())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    r
}

async fn handle(req: Request<Incoming>, count: Arc<AtomicU64>) -> Response<Body> {
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let path_ok = if grpc {
        req.uri().path() == "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    } else {
        req.uri().path() == "/v1/traces"
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return http_response(StatusCode::BAD_REQUEST),
    };
    if !path_ok {
        return if grpc {
            grpc_response(12) // UNIMPLEMENTED
        } else {
            http_response(StatusCode::NOT_FOUND)
        };
    }
    let spans = if grpc {
        grpc_messages(&body).and_then(|ms| ms.into_iter().map(count_spans).sum())
    } else {
        count_spans(&body)
    };
    match (spans, grpc) {
        (Some(n), true) => {
            count.fetch_add(n, Ordering::Relaxed);
            grpc_response(0)
        }
        (Some(n), false) => {
            count.fetch_add(n, Ordering::Relaxed);
            http_response(StatusCode::OK)
        }
        (None, true) => grpc_response(3), // INVALID_ARGUMENT
        (None, false) => http_response(StatusCode::BAD_REQUEST),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:14317".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("otlp-sink listening on {}", listener.local_addr()?);
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            println!("spans {}", c.load(Ordering::Relaxed));
        }
    });
    loop {
        let (stream, _) = listener.accept().await?;
        // Real collectors (Go gRPC) set TCP_NODELAY; without it Nagle on the sink's small
        // writes meets the exporter's delayed ACKs and each export stalls ~40 ms.
        stream.set_nodelay(true)?;
        let count = count.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let count = count.clone();
                async move { Ok::<_, Infallible>(handle(req, count).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    #[test]
    fn counts_spans_across_resources_and_scopes_and_rejects_broken_framing() {
        let span = |name: &str| Span {
            name: name.into(),
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            start_time_unix_nano: 7,
            kind: 3,
            ..Span::default()
        };
        let scope = |n: usize| ScopeSpans {
            spans: (0..n).map(|i| span(&format!("s{i}"))).collect(),
            ..ScopeSpans::default()
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    scope_spans: vec![scope(3), scope(200)],
                    ..ResourceSpans::default()
                },
                ResourceSpans {
                    scope_spans: vec![scope(1)],
                    ..ResourceSpans::default()
                },
            ],
        };
        let bytes = req.encode_to_vec();
        assert_eq!(count_spans(&bytes), Some(204));
        assert_eq!(count_spans(&[]), Some(0));
        assert_eq!(count_spans(&bytes[..bytes.len() - 1]), None);
        let mut framed = vec![0u8];
        framed.extend((bytes.len() as u32).to_be_bytes());
        framed.extend(&bytes);
        let messages = grpc_messages(&framed).expect("framed");
        assert_eq!(messages, [&bytes[..]]);
        assert!(grpc_messages(&framed[..framed.len() - 1]).is_none());
    }
}
