//! The stream rewriters over real sockets: usage injected on the client's behalf is hidden
//! whatever JSON spacing the server writes, and `action: cut` ends a stream at its allowance
//! event by event, however many events one upstream write holds, with every count agreeing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;

const CHAT_STREAM_NO_USAGE: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/rewriters/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A Python server (`json.dumps`, spaces after `:` and `,`) answering a request for which the
/// proxy asked usage on the client's behalf: the client gets the stream without usage, byte for
/// byte, however the upstream cuts its writes.
#[tokio::test]
async fn usage_asked_for_the_client_is_hidden_from_a_json_dumps_server() {
    let (up, mut streams) = scripted_upstream().await;
    let p = TestProxy::to("rw-dumps", up, "").await;
    let sent = fixture("openai_chat_json_dumps.sse");
    let want = fixture("openai_chat_json_dumps.expected.sse");
    for piece in [sent.len(), 7, 1] {
        let url = p.url("/v1/chat/completions");
        let task = tokio::spawn(async move {
            post(&url, &[("x-agent-name", "rw-dumps")], CHAT_STREAM_NO_USAGE).await
        });
        let tx = tokio::time::timeout(Duration::from_secs(10), streams.recv())
            .await
            .unwrap()
            .unwrap();
        for c in sent.chunks(piece) {
            tx.send(Bytes::copy_from_slice(c)).await.unwrap();
        }
        drop(tx);
        let (r, body) = task.await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(&want),
            "writes of {piece} bytes"
        );
    }
    let text = p.metrics().await;
    let tokens = |kind: &str| {
        metric_value(
            &text,
            "tokenwarden_tokens_total",
            &[
                ("agent", "rw-dumps"),
                ("type", kind),
                ("source", "injected"),
            ],
        )
    };
    assert_eq!((tokens("input"), tokens("output")), (27.0, 6.0), "{text}");
}

/// Most o200k tokens in one of the mock's streamed words (" tokenwarden", " café").
const MAX_WORD_TOKENS: u64 = 3;
/// Events the mock hands to the connection in one write: a fast upstream.
const EVENTS_PER_WRITE: u64 = 25;

fn cut_limit(tokens: u64) -> String {
    format!(
        "budgets:\n  store:\n    snapshot_path: ''\n  limits:\n    - scope: session\n      tokens: {tokens}\n      window: lifetime\n      action: cut\npricing:\n  claude-sonnet-4-5:\n    input: 3\n    output: 15\n"
    )
}

/// The `data:` payloads of an LF-framed stream, with their `event:` names.
fn events(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8(body.to_vec())
        .unwrap()
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut name = String::from("message");
            let mut data = None;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    assert!(data.is_none(), "one data line per event: {e:?}");
                    data = Some(d.to_string());
                } else {
                    panic!("unexpected line {line:?}");
                }
            }
            (name, data.expect("every event has data"))
        })
        .collect()
}

/// Output tokens of streamed text pieces, counted as the proxy counts them (per event, o200k,
/// at least one each).
fn tokens_of<'a>(pieces: impl Iterator<Item = &'a str>) -> u64 {
    pieces.map(|t| tokenwarden::tokens::count(t).max(1)).sum()
}

async fn session_view(p: &TestProxy, id: &str) -> serde_json::Value {
    let (r, body) = get(&format!("http://{}/v1/sessions/{id}", p.admin)).await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Every place a cut call's output is recorded holds the same number: the store and the tokens
/// counter (marked estimated); the GenAI usage metrics, for provider counts only, none.
async fn recorded_output(p: &TestProxy, session: &str, agent: &str) -> u64 {
    let v = session_view(p, session).await;
    let stored = v["tokens"]["output"].as_u64().unwrap();
    let text = p.metrics().await;
    let counted = metric_value(
        &text,
        "tokenwarden_tokens_total",
        &[
            ("agent", agent),
            ("type", "output"),
            ("source", "estimated"),
        ],
    );
    assert_eq!(counted, stored as f64, "tokens_total vs store\n{text}");
    // A cut stream's count is the proxy's own (the provider's final usage never came): the
    // GenAI usage metrics leave estimates out, as the conventions require.
    let genai = metric_sum(
        &text,
        "gen_ai_client_inference_usage_output_tokens_total",
        &[("agent", agent)],
    );
    assert_eq!(genai, 0.0, "an estimate is no GenAI usage\n{text}");
    stored
}

#[tokio::test]
async fn a_fast_openai_stream_is_cut_at_the_event_where_the_allowance_ends() {
    let m = mock().await;
    let limit = 400;
    let p = TestProxy::to("rw-cut-oai", m.addr(), &cut_limit(limit)).await;
    let e = tokenwarden::budget::estimate_input(
        tokenwarden::providers::Format::OpenAiChat,
        CHAT_STREAM_NO_USAGE.as_bytes(),
    );
    let per_write = EVENTS_PER_WRITE.to_string();
    let (r, body) = post(
        &p.url("/v1/chat/completions"),
        &[
            ("x-session-id", "cut-oai"),
            ("x-agent-name", "rw-cut-oai"),
            ("x-mock-output-chunks", "2000"),
            ("x-mock-events-per-write", &per_write),
        ],
        CHAT_STREAM_NO_USAGE,
    )
    .await;
    assert_eq!(r.status(), 200);
    // Well-formed: JSON chunks, one finish reason (length) in the last one, then [DONE].
    let evs = events(&body);
    assert_eq!(evs.last().unwrap().1, "[DONE]");
    let chunks: Vec<serde_json::Value> = evs[..evs.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).expect("each chunk is JSON"))
        .collect();
    let finishes: Vec<&serde_json::Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, ["length"]);
    assert_eq!(chunks.last().unwrap()["id"], chunks[0]["id"]);
    assert!(!String::from_utf8_lossy(&body).contains("usage"));
    // The client got its allowance to the event: not one event more, not one less.
    let allowance = limit - e;
    let streamed = tokens_of(
        chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .filter(|t| !t.is_empty()),
    );
    assert!(
        streamed <= allowance && streamed + MAX_WORD_TOKENS > allowance,
        "streamed {streamed} tokens against an allowance of {allowance}"
    );
    // What is recorded is what the upstream sent: the client's share plus at most the rest of
    // the one write that held the cut point.
    let output = recorded_output(&p, "cut-oai", "rw-cut-oai").await;
    assert!(output >= streamed, "{output} < {streamed}");
    let v = session_view(&p, "cut-oai").await;
    let spent = v["tokens"]["total"].as_u64().unwrap();
    assert_eq!(v["tokens"]["input"], e, "input estimated: no usage came");
    eprintln!(
        "openai: limit {limit}, streamed {streamed}, recorded output {output}, spent {spent}"
    );
    assert!(
        spent <= limit + EVENTS_PER_WRITE * MAX_WORD_TOKENS,
        "spent {spent} against a limit of {limit}"
    );
}

#[tokio::test]
async fn a_fast_anthropic_stream_is_cut_and_every_count_agrees() {
    const MSG: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":4096,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let m = mock().await;
    let limit = 400;
    let p = TestProxy::to("rw-cut-ant", m.addr(), &cut_limit(limit)).await;
    let e = tokenwarden::budget::estimate_input(
        tokenwarden::providers::Format::Anthropic,
        MSG.as_bytes(),
    );
    let (input, per_write) = (e.to_string(), EVENTS_PER_WRITE.to_string());
    let (r, body) = post(
        &p.url("/v1/messages"),
        &[
            ("x-session-id", "cut-ant"),
            ("x-agent-name", "rw-cut-ant"),
            ("x-mock-output-chunks", "2000"),
            ("x-mock-input-tokens", &input),
            ("x-mock-events-per-write", &per_write),
        ],
        MSG,
    )
    .await;
    assert_eq!(r.status(), 200);
    let evs = events(&body);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    let n = names.len();
    assert_eq!(
        names[n - 3..],
        ["content_block_stop", "message_delta", "message_stop"],
        "{names:?}"
    );
    let parsed: Vec<serde_json::Value> = evs
        .iter()
        .map(|(name, d)| {
            let v: serde_json::Value = serde_json::from_str(d).unwrap();
            assert_eq!(v["type"], name.as_str());
            v
        })
        .collect();
    assert_eq!(parsed[n - 2]["delta"]["stop_reason"], "max_tokens");
    let starts = names
        .iter()
        .filter(|n| **n == "content_block_start")
        .count();
    let stops = names.iter().filter(|n| **n == "content_block_stop").count();
    assert_eq!(starts, stops, "every block closed");
    let streamed = tokens_of(
        parsed
            .iter()
            .filter(|v| v["type"] == "content_block_delta")
            .filter_map(|v| v["delta"]["text"].as_str()),
    );
    let allowance = limit - e;
    assert!(
        streamed <= allowance && streamed + MAX_WORD_TOKENS > allowance,
        "streamed {streamed} tokens against an allowance of {allowance}"
    );
    assert_eq!(parsed[n - 2]["usage"]["output_tokens"], streamed);
    // Not the `message_start` placeholder: the store, the metrics and cost agree on the count.
    let output = recorded_output(&p, "cut-ant", "rw-cut-ant").await;
    assert!(output >= streamed && output > 1, "{output} < {streamed}");
    let v = session_view(&p, "cut-ant").await;
    let spent = v["tokens"]["total"].as_u64().unwrap();
    assert!(
        spent <= limit + EVENTS_PER_WRITE * MAX_WORD_TOKENS,
        "spent {spent} against a limit of {limit}"
    );
    eprintln!(
        "anthropic: limit {limit}, streamed {streamed}, recorded output {output}, spent {spent}"
    );
    let cost = v["cost_usd"].as_f64().unwrap();
    let want = (e * 3 + output * 15) as f64 / 1e6;
    assert!((cost - want).abs() < 1e-9, "cost {cost} vs {want}");
}

/// With a slow upstream the cut was already near exact; the count recorded for it was not: the
/// Anthropic `message_start` placeholder (1 output token) went to the metrics while the store
/// charged what streamed.
#[tokio::test]
async fn a_cut_anthropic_stream_records_what_streamed_everywhere() {
    const MSG: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":4096,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let m = mock().await;
    let p = TestProxy::to("rw-cut-slow", m.addr(), &cut_limit(120)).await;
    let (r, body) = post(
        &p.url("/v1/messages"),
        &[
            ("x-session-id", "cut-slow"),
            ("x-agent-name", "rw-cut-slow"),
            ("x-mock-output-chunks", "400"),
            ("x-mock-chunk-delay-ms", "1"),
        ],
        MSG,
    )
    .await;
    assert_eq!(r.status(), 200);
    let evs = events(&body);
    assert_eq!(evs.last().unwrap().0, "message_stop");
    let texts: Vec<String> = evs
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .filter_map(|(_, d)| {
            let v: serde_json::Value = serde_json::from_str(d).ok()?;
            Some(v["delta"]["text"].as_str()?.to_owned())
        })
        .collect();
    let streamed = tokens_of(texts.iter().map(String::as_str));
    let output = recorded_output(&p, "cut-slow", "rw-cut-slow").await;
    assert!(
        output >= streamed && output <= streamed + MAX_WORD_TOKENS,
        "recorded {output}, streamed {streamed}"
    );
}

/// A strict OpenAI-compatible server (Mistral; Azure api-versions before `stream_options`)
/// refuses the usage the proxy asks for on the client's behalf with a 422 naming the field: the
/// request goes again as the client sent it, the client gets its stream, and the usage is
/// estimated. It got the 422 for a field it never sent.
#[tokio::test]
async fn a_server_refusing_stream_options_gets_the_request_as_the_client_sent_it() {
    use http_body_util::{BodyExt, Full};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let text = String::from_utf8_lossy(&body).to_string();
                            log.lock().unwrap().push(text.clone());
                            let resp = if text.contains("oops") {
                                http::Response::builder()
                                .status(400)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(br#"{"error":{"message":"messages must be an array","type":"invalid_request_error"}}"#)))
                            } else if text.contains("stream_options") {
                                http::Response::builder()
                                .status(422)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(br#"{"object":"error","message":{"detail":[{"type":"extra_forbidden","loc":["body","stream_options"],"msg":"Extra inputs are not permitted"}]},"type":"invalid_request_message_error"}"#)))
                            } else {
                                http::Response::builder()
                                .header("content-type", "text/event-stream")
                                .body(Full::new(Bytes::from_static(b"data: {\"id\":\"c1\",\"model\":\"mistral-small-latest\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello there\"},\"finish_reason\":null}]}\n\ndata: {\"id\":\"c1\",\"model\":\"mistral-small-latest\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")))
                            };
                            Ok::<_, std::convert::Infallible>(resp.unwrap())
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let p = TestProxy::to("rw-strict", up, "").await;
    let (r, body) = post(
        &p.url("/v1/chat/completions"),
        &[("x-agent-name", "rw-strict")],
        CHAT_STREAM_NO_USAGE,
    )
    .await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("Hello there"));
    let first = seen.lock().unwrap().clone();
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(
        first[1], CHAT_STREAM_NO_USAGE,
        "sent again as the client sent it"
    );
    let text = p.metrics().await;
    let out = metric_value(
        &text,
        "tokenwarden_tokens_total",
        &[
            ("agent", "rw-strict"),
            ("type", "output"),
            ("source", "estimated"),
        ],
    );
    assert!(out > 0.0, "{text}");

    // Any other error is given on as it came (the request is not sent twice).
    let bad = r#"{"model":"gpt-4o-mini","messages":"oops","stream":true}"#;
    let (r, body) = post(&p.url("/v1/chat/completions"), &[], bad).await;
    assert_eq!(r.status(), 400);
    assert!(String::from_utf8_lossy(&body).contains("must be an array"));
    assert_eq!(seen.lock().unwrap().len(), 3, "sent once");
}
