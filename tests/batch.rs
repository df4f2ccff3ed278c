//! OpenAI Batch API and Anthropic Message Batches through the proxy, over real sockets: files
//! and batches pass through unread, and the usage of a batch is read from its output (results)
//! file when the agent downloads it (tests/fixtures/batch/output.jsonl,
//! anthropic_results.jsonl), counted exactly per model, priced at the batch rate, on one span.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod otlp_receiver;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;

use common::*;
use otlp_receiver::*;

const OUTPUT: &str = include_str!("fixtures/batch/output.jsonl");
const ANTHROPIC_RESULTS: &str = include_str!("fixtures/batch/anthropic_results.jsonl");
const ANTHROPIC_BATCH_ID: &str = "msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d";

/// Lines in the large output file: past the proxy's 64 MiB bound on a decompressed copy.
const BIG_LINES: usize = 1100;

/// A large batch output file, gzip-encoded as a download may be: the fixture's first line with
/// a 64 KB answer, `BIG_LINES` times (each line 24 input and 9 output tokens).
fn big_gz() -> &'static [u8] {
    static GZ: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    GZ.get_or_init(|| {
        use std::io::Write;
        let first = OUTPUT.lines().next().unwrap();
        let long = format!("Hello! {}", "a".repeat(64_000));
        let line = first.replace("Hello! How can I help you today?", &long) + "\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for _ in 0..BIG_LINES {
            gz.write_all(line.as_bytes()).unwrap();
        }
        gz.finish().unwrap()
    })
}

const BATCH: &str = r#"{"id": "batch_6754a8e9c4d08190a1b2c3d4e5f6a7b8", "object": "batch", "endpoint": "/v1/chat/completions", "errors": null, "input_file_id": "file-In9bVQ1kR2sT3uV4wX5yZ6", "completion_window": "24h", "status": "validating", "output_file_id": null, "error_file_id": null, "created_at": 1733601001, "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": null}"#;

/// A Message Batch object as the API answers a retrieve: its `results_url` absolute, on the
/// API's host; gzip-encoded when the request accepts gzip (as the API's edge does).
fn anthropic_batch<B>(req: &Request<B>) -> Response<ChanBody> {
    use std::io::Write;
    let body = format!(
        r#"{{"id":"{ANTHROPIC_BATCH_ID}","type":"message_batch","processing_status":"ended","request_counts":{{"processing":0,"succeeded":3,"errored":1,"canceled":1,"expired":1}},"ended_at":"2024-09-24T18:37:24.100435Z","created_at":"2024-09-24T18:37:24.100435Z","expires_at":"2024-09-25T18:37:24.100435Z","archived_at":null,"cancel_initiated_at":null,"results_url":"https://api.anthropic.com/v1/messages/batches/{ANTHROPIC_BATCH_ID}/results"}}"#
    );
    let gzip = req
        .headers()
        .get("accept-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    let bytes = if gzip {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body.as_bytes()).unwrap();
        gz.finish().unwrap()
    } else {
        body.into_bytes()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.try_send(Bytes::from(bytes)).unwrap();
    let mut resp = Response::builder().header("content-type", "application/json");
    if gzip {
        resp = resp.header("content-encoding", "gzip");
    }
    resp.body(ChanBody(rx)).unwrap()
}

/// An upstream serving the Files and Batches endpoints: the output file in 7-byte frames (so
/// lines arrive split anywhere), the batch object for anything else.
async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let path = req.uri().path().to_string();
                    if path == format!("/v1/messages/batches/{ANTHROPIC_BATCH_ID}") {
                        return Ok(anthropic_batch(&req));
                    }
                    let (tx, rx) = tokio::sync::mpsc::channel(8);
                    let (ct, body, frame, gzip) = match path.as_str() {
                        "/v1/files/file-Out7cWm2Pq9Lx4/content" => {
                            ("application/octet-stream", OUTPUT.as_bytes(), 7, false)
                        }
                        "/v1/files/file-BigGz/content" => {
                            ("application/octet-stream", big_gz(), 64 * 1024, true)
                        }
                        // The SDKs ask for `application/binary`: not a media type read as lines.
                        p if p == format!("/v1/messages/batches/{ANTHROPIC_BATCH_ID}/results") => {
                            ("application/binary", ANTHROPIC_RESULTS.as_bytes(), 7, false)
                        }
                        _ => {
                            let _ = req.into_body().collect().await;
                            ("application/json", BATCH.as_bytes(), 7, false)
                        }
                    };
                    tokio::spawn(async move {
                        for chunk in body.chunks(frame) {
                            if tx.send(Bytes::copy_from_slice(chunk)).await.is_err() {
                                return;
                            }
                        }
                    });
                    let mut resp = Response::builder().header("content-type", ct);
                    if gzip {
                        resp = resp.header("content-encoding", "gzip");
                    }
                    Ok::<_, std::convert::Infallible>(resp.body(ChanBody(rx)).unwrap())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_batch_output_file_is_counted_exactly_at_download_and_priced_at_the_batch_rate() {
    let up = upstream().await;
    let rx = Receiver::grpc().await;
    let proxy = TestProxy::to(
        "oai",
        up,
        &format!(
            "telemetry:\n  otlp:\n    endpoint: {}\n    protocol: grpc\n\
             pricing:\n  gpt-4o-mini:\n    input: 0.15\n    output: 0.6\n  gpt-4.1-nano:\n    input: 0.1\n    output: 0.4\n    batch: 0.25\n\
             budgets:\n  store:\n    snapshot_path: ''\n",
            rx.endpoint()
        ),
    )
    .await;
    let agent = [("x-agent-name", "batcher"), ("x-session-id", "batch-s1")];

    // Creating the batch passes through unread: nothing is spent yet.
    let (resp, body) = post(
        &proxy.url("/v1/batches"),
        &agent,
        r#"{"input_file_id":"file-In9bVQ1kR2sT3uV4wX5yZ6","endpoint":"/v1/chat/completions","completion_window":"24h"}"#,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(body, BATCH.as_bytes());

    // The download: byte-identical to the file, and its usage counted.
    let mut req = Request::get(proxy.url("/v1/files/file-Out7cWm2Pq9Lx4/content"));
    for (k, v) in agent {
        req = req.header(k, v);
    }
    let (resp, body) = send(req.body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(body, OUTPUT.as_bytes(), "the file passes byte for byte");

    let metrics = proxy.metrics().await;
    let tokens = |model: &str, kind: &str| {
        metric_value(
            &metrics,
            "tokenwarden_tokens_total",
            &[
                ("agent", "batcher"),
                ("model", model),
                ("type", kind),
                ("source", "provider"),
            ],
        )
    };
    assert_eq!(tokens("gpt-4o-mini-2024-07-18", "input"), 55.0);
    assert_eq!(tokens("gpt-4o-mini-2024-07-18", "output"), 21.0);
    assert_eq!(tokens("gpt-4.1-nano-2025-04-14", "input"), 17.0);
    assert_eq!(tokens("gpt-4.1-nano-2025-04-14", "output"), 11.0);
    // Batch rate: gpt-4o-mini at the default half price, gpt-4.1-nano at its own 0.25.
    let cost = |model: &str| {
        metric_value(
            &metrics,
            "tokenwarden_cost_usd_total",
            &[("agent", "batcher"), ("model", model)],
        )
    };
    let mini = (55.0 * 0.15 + 21.0 * 0.6) / 1e6 * 0.5;
    let nano = (17.0 * 0.1 + 11.0 * 0.4) / 1e6 * 0.25;
    assert!(
        (cost("gpt-4o-mini-2024-07-18") - mini).abs() < 1e-12,
        "{metrics}"
    );
    assert!((cost("gpt-4.1-nano-2025-04-14") - nano).abs() < 1e-12);

    // One span for the batch (the download), with the whole file's usage; none for the create.
    let arrived = eventually(Duration::from_secs(10), || async { !rx.spans().is_empty() }).await;
    assert!(arrived);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans = rx.spans();
    assert_eq!(spans.len(), 1, "one span per batch");
    let a = attrs(&spans[0].span);
    assert_eq!(a.get("gen_ai.usage.input_tokens"), Some(&V::I(72)));
    assert_eq!(a.get("gen_ai.usage.output_tokens"), Some(&V::I(32)));
    assert_eq!(
        a.get("gen_ai.response.model"),
        Some(&s("gpt-4o-mini-2024-07-18"))
    );
}

#[tokio::test]
async fn a_large_gzip_output_file_is_forwarded_compressed_and_every_line_counted() {
    let up = upstream().await;
    let proxy = TestProxy::to("oai", up, "").await;
    let req = Request::get(proxy.url("/v1/files/file-BigGz/content"))
        .header("x-agent-name", "batcher-gz")
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (resp, body) = send(req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    assert_eq!(body, big_gz(), "the compressed file passes byte for byte");
    let metrics = proxy.metrics().await;
    let tokens = |kind: &str| {
        metric_value(
            &metrics,
            "tokenwarden_tokens_total",
            &[
                ("agent", "batcher-gz"),
                ("model", "gpt-4o-mini-2024-07-18"),
                ("type", kind),
                ("source", "provider"),
            ],
        )
    };
    // Every line, the ones past 64 MiB decompressed too.
    assert_eq!(tokens("input"), 24.0 * BIG_LINES as f64, "{metrics}");
    assert_eq!(tokens("output"), 9.0 * BIG_LINES as f64);
}

#[tokio::test]
async fn an_anthropic_batch_results_file_is_counted_at_download_priced_at_the_batch_rate_and_charged_to_the_session(
) {
    let up = upstream().await;
    let rx = Receiver::grpc().await;
    let proxy = TestProxy::start(&format!(
        "routes:\n  - name: claude\n    path_prefix: /\n    upstream: http://{up}\n    protocol: anthropic\n\
         telemetry:\n  otlp:\n    endpoint: {}\n    protocol: grpc\n\
         pricing:\n  claude-sonnet-4-5:\n    input: 3\n    output: 15\n    cached_input: 0.3\n    cache_creation_input: 3.75\n\
         \x20 claude-haiku-4-5:\n    input: 1\n    output: 5\n\
         budgets:\n  store:\n    snapshot_path: ''\n  limits:\n    - scope: session\n      usd: 1\n",
        rx.endpoint()
    ))
    .await;
    let session = "abatch-s1";
    let agent = [
        ("x-agent-name", "claude-batcher"),
        ("x-session-id", session),
    ];

    let mut req = Request::get(proxy.url(&format!(
        "/v1/messages/batches/{ANTHROPIC_BATCH_ID}/results"
    )));
    for (k, v) in agent {
        req = req.header(k, v);
    }
    let (resp, body) = send(req.body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        body,
        ANTHROPIC_RESULTS.as_bytes(),
        "the file passes byte for byte"
    );

    let metrics = proxy.metrics().await;
    let tokens = |model: &str, kind: &str| {
        metric_value(
            &metrics,
            "tokenwarden_tokens_total",
            &[
                ("agent", "claude-batcher"),
                ("model", model),
                ("type", kind),
                ("source", "provider"),
            ],
        )
    };
    // The succeeded results only: errored, canceled and expired ones bill nothing.
    let sonnet = "claude-sonnet-4-5-20250929";
    let haiku = "claude-haiku-4-5-20251001";
    assert_eq!(tokens(sonnet, "input"), 1620.0, "{metrics}");
    assert_eq!(tokens(sonnet, "output"), 65.0);
    assert_eq!(tokens(sonnet, "cached_input"), 1000.0);
    assert_eq!(tokens(sonnet, "cache_creation_input"), 600.0);
    assert_eq!(tokens(haiku, "input"), 30.0);
    assert_eq!(tokens(haiku, "output"), 15.0);
    let requests = metric_value(
        &metrics,
        "tokenwarden_requests_total",
        &[
            ("provider", "anthropic"),
            ("operation", "chat"),
            ("agent", "claude-batcher"),
        ],
    );
    assert_eq!(requests, 1.0, "one call for the whole batch");

    // At half price (the default batch factor): uncached input, cache reads, five-minute
    // writes, one-hour writes (2 × input by default) and output each at its own price.
    let sonnet_usd =
        (20.0 * 3.0 + 1000.0 * 0.3 + 200.0 * 3.75 + 400.0 * 6.0 + 65.0 * 15.0) / 1e6 * 0.5;
    let haiku_usd = (30.0 * 1.0 + 15.0 * 5.0) / 1e6 * 0.5;
    let cost = |model: &str| {
        metric_value(
            &metrics,
            "tokenwarden_cost_usd_total",
            &[("agent", "claude-batcher"), ("model", model)],
        )
    };
    assert!((cost(sonnet) - sonnet_usd).abs() < 1e-12, "{metrics}");
    assert!((cost(haiku) - haiku_usd).abs() < 1e-12);

    // The session's budget is charged the batch's tokens and its cost at the batch rate.
    let admin = proxy.admin;
    let url = format!("http://{admin}/v1/sessions/{session}");
    let charged = eventually(Duration::from_secs(10), || {
        let url = url.clone();
        async move {
            let (r, b) = get(&url).await;
            r.status() == 200
                && serde_json::from_slice::<serde_json::Value>(&b).unwrap()["tokens"]["total"]
                    == 1620 + 65 + 30 + 15
        }
    })
    .await;
    assert!(charged, "the session never showed the batch's tokens");
    let (_, b) = get(&url).await;
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let usd = sonnet_usd + haiku_usd;
    assert!((v["cost_usd"].as_f64().unwrap() - usd).abs() < 1e-9, "{v}");
    let limit = &v["limits"][0];
    assert_eq!(limit["unit"], "usd", "{v}");
    assert!((limit["used"].as_f64().unwrap() - usd).abs() < 1e-9, "{v}");

    // One span, the whole file's usage, the first model named.
    let arrived = eventually(Duration::from_secs(10), || async { !rx.spans().is_empty() }).await;
    assert!(arrived);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans = rx.spans();
    assert_eq!(spans.len(), 1, "one span per batch");
    let a = attrs(&spans[0].span);
    assert_eq!(a.get("gen_ai.usage.input_tokens"), Some(&V::I(1650)));
    assert_eq!(a.get("gen_ai.usage.output_tokens"), Some(&V::I(80)));
    assert_eq!(a.get("gen_ai.provider.name"), Some(&s("anthropic")));
    assert_eq!(a.get("gen_ai.response.model"), Some(&s(sonnet)));
}

/// The Anthropic SDK's `messages.batches.results()` retrieves the batch and downloads its
/// `results_url`, an absolute URL on the API's host: the proxy points it at itself (under the
/// client's prefix), so the download comes through the sidecar and the batch is counted.
/// Without that the SDK went to api.anthropic.com and the batch's spend was never seen.
#[tokio::test]
async fn the_anthropic_sdks_batch_results_download_comes_through_the_proxy() {
    let up = upstream().await;
    let proxy = TestProxy::start(&format!(
        "routes:\n  - name: claude\n    path_prefix: /anthropic\n    strip_prefix: true\n    upstream: http://{up}\n    protocol: anthropic\n"
    ))
    .await;
    let base = format!("{}/anthropic", proxy.url(""));
    let out = run_sdk_script_with("anthropic_batch.py", &[&base, ANTHROPIC_BATCH_ID]).await;
    assert_eq!(out["lines"], 6, "{out}");
    assert_eq!(out["succeeded"], 3, "{out}");
    let metrics = proxy.metrics().await;
    let input = metric_value(
        &metrics,
        "tokenwarden_tokens_total",
        &[("model", "claude-sonnet-4-5-20250929"), ("type", "input")],
    );
    assert_eq!(input, 1620.0, "{metrics}");

    // The retrieve itself, read raw: only the URL changed, and the body comes plain.
    let (resp, body) = get(&proxy.url(&format!(
        "/anthropic/v1/messages/batches/{ANTHROPIC_BATCH_ID}"
    )))
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-encoding").is_none());
    assert_eq!(
        resp.headers()["content-length"].to_str().unwrap(),
        body.len().to_string()
    );
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["results_url"],
        format!("{base}/v1/messages/batches/{ANTHROPIC_BATCH_ID}/results")
    );
    assert_eq!(v["processing_status"], "ended");
}
