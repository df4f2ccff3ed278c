//! Bedrock (Converse, ConverseStream, InvokeModel for Anthropic) and Vertex AI (Gemini,
//! Anthropic) through the proxy over real sockets: exact tokens from the fixtures, byte-identical
//! pass-through, event streams split at every byte, a bad CRC, mid-stream exceptions, and the
//! official clients (boto3 and the Anthropic SDK's `AnthropicVertex`) driving them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod otlp_receiver;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Request, Response};
use serde_json::Value;

use common::*;
use tokenwarden::providers::bedrock::eventstream::encode;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const CONVERSE_MODEL: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const CONVERSE: &str = "/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse";
const CONVERSE_STREAM: &str = "/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse-stream";
const INVOKE: &str = "/model/anthropic.claude-haiku-4-5-20251001-v1:0/invoke";
const INVOKE_STREAM: &str =
    "/model/anthropic.claude-haiku-4-5-20251001-v1:0/invoke-with-response-stream";
const VERTEX: &str = "/v1/projects/p1/locations/us-east5/publishers";
const CONVERSE_BODY: &str = r#"{"messages":[{"role":"user","content":[{"text":"What is the weather in Paris?"}]}],"inferenceConfig":{"maxTokens":512}}"#;
const INVOKE_BODY: &str = r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
const VERTEX_ANTHROPIC_BODY: &str = r#"{"anthropic_version":"vertex-2023-10-16","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
const GEMINI_BODY: &str = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;
const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// An event stream built from a `[headers, payload]` fixture.
fn events(path: &str) -> Vec<u8> {
    let list: Vec<(serde_json::Map<String, Value>, Value)> =
        serde_json::from_slice(&fixture(path)).unwrap();
    let mut out = Vec::new();
    for (headers, payload) in list {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
            .collect();
        out.extend(encode(&h, payload.to_string().as_bytes()));
    }
    out
}

/// A recorded Anthropic SSE stream as Bedrock's InvokeModelWithResponseStream sends it: each
/// event's data base64 in a `chunk` message, the invocation metrics added to `message_stop`.
fn invoke_stream() -> Vec<u8> {
    let sse = String::from_utf8(fixture("corpus/anthropic/sse_text.response.sse")).unwrap();
    let metrics: Value =
        serde_json::from_slice(&fixture("bedrock/invoke_stream.metrics.json")).unwrap();
    let mut out = Vec::new();
    for data in sse.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let mut ev: Value = serde_json::from_str(data).unwrap();
        let data = if ev["type"] == "message_stop" {
            ev["amazon-bedrock-invocationMetrics"] = metrics.clone();
            ev.to_string()
        } else {
            data.to_string()
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        let payload = serde_json::json!({"bytes": b64, "p": "abcdefghijklmnopqrstuvwxyzABCDEF"});
        out.extend(encode(
            &[
                (":event-type", "chunk"),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.to_string().as_bytes(),
        ));
    }
    out
}

/// What the upstream answers: status, content type, body.
#[derive(Clone)]
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

fn reply(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
    Reply {
        status,
        content_type,
        body,
    }
}

/// The answer to a request on `path`, by the operation it names.
fn answer(path: &str) -> Reply {
    let json = "application/json";
    if path.ends_with("/converse") {
        reply(200, json, fixture("bedrock/converse.response.json"))
    } else if path.ends_with("/converse-stream") {
        reply(
            200,
            EVENT_STREAM,
            events("bedrock/converse_stream.events.json"),
        )
    } else if path.ends_with("/invoke") {
        reply(
            200,
            json,
            fixture("corpus/anthropic/json_text.response.json"),
        )
    } else if path.ends_with("/invoke-with-response-stream") {
        reply(200, EVENT_STREAM, invoke_stream())
    } else if path.ends_with(":rawPredict") {
        reply(
            200,
            json,
            fixture("corpus/anthropic/json_text.response.json"),
        )
    } else if path.ends_with(":streamRawPredict") {
        reply(
            200,
            "text/event-stream; charset=utf-8",
            fixture("corpus/anthropic/sse_text.response.sse"),
        )
    } else if path.ends_with("/chat/completions") {
        // Vertex's OpenAI-compatible endpoint answers in OpenAI Chat's shape.
        reply(
            200,
            json,
            fixture("corpus/openai-chat/json_text.response.json"),
        )
    } else if path.contains(":streamGenerateContent") {
        reply(
            200,
            "text/event-stream",
            fixture("corpus/gemini/sse_text.response.sse"),
        )
    } else {
        reply(
            200,
            json,
            fixture("corpus/gemini/json_cached_content.response.json"),
        )
    }
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// An upstream answering every request with `answer(path)`, unless the request names another
/// reply (`x-test-reply`: a key of `overrides`); the body is sent in two frames split at
/// `x-test-split` (a pause between them, so the proxy reads them apart) when given.
async fn upstream(overrides: Vec<(&'static str, Reply)>) -> (SocketAddr, Log) {
    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::default();
    let overrides = Arc::new(overrides);
    let seen = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (seen, overrides) = (seen.clone(), overrides.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (seen, overrides) = (seen.clone(), overrides.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let path = parts.uri.path().to_string();
                        let named = parts
                            .headers
                            .get("x-test-reply")
                            .map(|v| v.to_str().unwrap().to_string());
                        let split = parts
                            .headers
                            .get("x-test-split")
                            .map(|v| v.to_str().unwrap().parse::<usize>().unwrap());
                        seen.lock().unwrap().push(Seen {
                            path: parts.uri.path_and_query().unwrap().to_string(),
                            headers: parts.headers,
                            body,
                        });
                        let r = match named {
                            Some(n) => overrides.iter().find(|(k, _)| *k == n).unwrap().1.clone(),
                            None => answer(&path),
                        };
                        let (tx, rx) = tokio::sync::mpsc::channel(4);
                        let body = Bytes::from(r.body);
                        tokio::spawn(async move {
                            let at = split.unwrap_or(body.len()).min(body.len());
                            if at > 0 {
                                let _ = tx.send(body.slice(..at)).await;
                            }
                            if at < body.len() {
                                tokio::time::sleep(Duration::from_millis(2)).await;
                                let _ = tx.send(body.slice(at..)).await;
                            }
                        });
                        let resp = Response::builder()
                            .status(r.status)
                            .header("content-type", r.content_type)
                            .body(ChanBody(rx))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, log)
}

/// A proxy with one catch-all route of `protocol` to `up`.
async fn proxy(route: &str, protocol: &str, up: SocketAddr) -> TestProxy {
    TestProxy::start(&format!(
        "routes:\n  - name: {route}\n    path_prefix: /\n    protocol: {protocol}\n    upstream: http://{up}\n"
    ))
    .await
}

/// Input, output and cached-input tokens counted for `agent`.
fn tokens(text: &str, agent: &str) -> (f64, f64, f64) {
    let t = |kind: &str| {
        metric_sum(
            text,
            "tokenwarden_tokens_total",
            &[("agent", agent), ("type", kind)],
        )
    };
    (t("input"), t("output"), t("cached_input"))
}

/// Calls for `agent` labelled with `label`=`value` (inference duration count).
fn calls_with(text: &str, agent: &str, label: &str, value: &str) -> f64 {
    metric_sum(
        text,
        "gen_ai_client_inference_duration_seconds_count",
        &[("agent", agent), (label, value)],
    )
}

#[tokio::test]
async fn bedrock_converse_json_stream_and_error_are_counted_exactly_and_pass_untouched() {
    let (up, log) = upstream(vec![(
        "error",
        reply(
            400,
            "application/json",
            fixture("bedrock/converse.error_400.json"),
        ),
    )])
    .await;
    let p = proxy("bedrock", "bedrock", up).await;

    let (resp, body) = post(
        &p.url(CONVERSE),
        &[("x-agent-name", "bd-json")],
        CONVERSE_BODY,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(body.as_ref(), fixture("bedrock/converse.response.json"));

    let (resp, body) = post(
        &p.url(CONVERSE_STREAM),
        &[("x-agent-name", "bd-stream")],
        CONVERSE_BODY,
    )
    .await;
    assert_eq!(resp.headers()["content-type"], EVENT_STREAM);
    assert_eq!(body.as_ref(), events("bedrock/converse_stream.events.json"));

    let (resp, body) = post(
        &p.url(CONVERSE),
        &[("x-agent-name", "bd-error"), ("x-test-reply", "error")],
        CONVERSE_BODY,
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(body.as_ref(), fixture("bedrock/converse.error_400.json"));

    // The path and body the client sent (and signed) reach the upstream as sent.
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen[0].path, CONVERSE);
    assert_eq!(seen[0].body.as_ref(), CONVERSE_BODY.as_bytes());

    let text = p.metrics().await;
    // inputTokens 375 + cacheReadInputTokens 2401 (totalTokens 2842 = that + 66 output).
    assert_eq!(tokens(&text, "bd-json"), (2776.0, 66.0, 2401.0), "{text}");
    assert_eq!(tokens(&text, "bd-stream"), (412.0, 38.0, 0.0));
    for agent in ["bd-json", "bd-stream"] {
        let calls = metric_sum(&text, "tokenwarden_tool_calls_total", &[("agent", agent)]);
        assert_eq!(calls, 1.0, "{agent} tool calls");
        assert_eq!(
            calls_with(&text, agent, "gen_ai_provider_name", "aws.bedrock"),
            1.0
        );
        assert_eq!(
            calls_with(&text, agent, "gen_ai_request_model", CONVERSE_MODEL),
            1.0
        );
    }
    assert_eq!(
        metric_sum(
            &text,
            "gen_ai_client_inference_time_to_first_chunk_seconds_count",
            &[("agent", "bd-stream")]
        ),
        1.0
    );
    assert_eq!(
        calls_with(&text, "bd-error", "error_type", "error"),
        1.0,
        "{text}"
    );
    assert_eq!(tokens(&text, "bd-error").1, 0.0);
}

#[tokio::test]
async fn a_converse_stream_split_at_every_byte_is_counted_the_same() {
    let (up, _) = upstream(Vec::new()).await;
    let p = proxy("bedrock-split", "auto", up).await;
    let whole = events("bedrock/converse_stream.events.json");
    let n = whole.len();
    // Sixteen at a time: every split point is one call over its own connection.
    let url = p.url(CONVERSE_STREAM);
    let bodies: Vec<(usize, Bytes)> = futures_util::stream::iter(1..n)
        .map(|at| {
            let url = url.clone();
            async move {
                let split = at.to_string();
                let h = [
                    ("x-agent-name", "bd-split"),
                    ("x-test-split", split.as_str()),
                ];
                (at, post(&url, &h, CONVERSE_BODY).await.1)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (at, body) in bodies {
        assert_eq!(body.as_ref(), whole.as_slice(), "split at {at}");
    }
    let text = p.metrics().await;
    let calls = (n - 1) as f64;
    assert_eq!(
        tokens(&text, "bd-split"),
        (412.0 * calls, 38.0 * calls, 0.0)
    );
    assert_eq!(
        metric_sum(
            &text,
            "tokenwarden_tool_calls_total",
            &[("agent", "bd-split")]
        ),
        calls
    );
    assert_eq!(
        metric_sum(
            &text,
            "tokenwarden_unparsed_bodies_total",
            &[("route", "bedrock-split")]
        ),
        0.0
    );
}

#[tokio::test]
async fn a_bad_crc_is_counted_unparsed_and_forwarded_untouched() {
    let mut bad = events("bedrock/converse_stream.events.json");
    // A byte of the last message's (metadata's) payload: its message CRC no longer holds.
    let at = bad.len() - 20;
    bad[at] ^= 0x20;
    let (up, _) = upstream(vec![("bad", reply(200, EVENT_STREAM, bad.clone()))]).await;
    let p = proxy("bedrock-crc", "bedrock", up).await;
    let (_, body) = post(
        &p.url(CONVERSE_STREAM),
        &[("x-agent-name", "bd-crc"), ("x-test-reply", "bad")],
        CONVERSE_BODY,
    )
    .await;
    assert_eq!(body.as_ref(), bad.as_slice(), "forwarded as it came");
    let text = p.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "tokenwarden_unparsed_bodies_total",
            &[("route", "bedrock-crc"), ("reason", "bad_checksum")]
        ),
        1.0,
        "{text}"
    );
    // The usage was in the corrupt message: not taken from it.
    assert_ne!(tokens(&text, "bd-crc").0, 412.0);
}

#[tokio::test]
async fn bedrock_invoke_model_for_anthropic_json_stream_and_exception() {
    let (up, _) = upstream(vec![(
        "exception",
        reply(
            200,
            EVENT_STREAM,
            events("bedrock/converse_stream_exception.events.json"),
        ),
    )])
    .await;
    let p = proxy("bedrock-invoke", "auto", up).await;
    let (_, body) = post(&p.url(INVOKE), &[("x-agent-name", "bi-json")], INVOKE_BODY).await;
    assert_eq!(
        body.as_ref(),
        fixture("corpus/anthropic/json_text.response.json")
    );
    let (_, body) = post(
        &p.url(INVOKE_STREAM),
        &[("x-agent-name", "bi-stream")],
        INVOKE_BODY,
    )
    .await;
    assert_eq!(body.as_ref(), invoke_stream());
    let (_, body) = post(
        &p.url(CONVERSE_STREAM),
        &[
            ("x-agent-name", "bd-exception"),
            ("x-test-reply", "exception"),
        ],
        CONVERSE_BODY,
    )
    .await;
    assert_eq!(
        body.as_ref(),
        events("bedrock/converse_stream_exception.events.json")
    );
    let text = p.metrics().await;
    // The recorded Anthropic bodies' own counts (corpus manifest).
    assert_eq!(tokens(&text, "bi-json"), (20.0, 10.0, 0.0), "{text}");
    assert_eq!(tokens(&text, "bi-stream"), (10.0, 4.0, 0.0));
    assert_eq!(
        calls_with(
            &text,
            "bi-stream",
            "gen_ai_response_model",
            "claude-haiku-4-5-20251001"
        ),
        1.0
    );
    assert_eq!(
        calls_with(&text, "bi-json", "gen_ai_provider_name", "aws.bedrock"),
        1.0
    );
    assert_eq!(
        calls_with(&text, "bd-exception", "error_type", "throttlingException"),
        1.0,
        "{text}"
    );
}

/// One call: agent, path, request body, the response body expected back, the reply it names.
type Case<'a> = (&'a str, &'a str, &'a str, &'a [u8], Option<&'a str>);

#[tokio::test]
async fn vertex_gemini_and_anthropic_json_stream_and_error() {
    let json = "application/json";
    let (up, log) = upstream(vec![
        (
            "gemini-404",
            reply(
                404,
                json,
                fixture("corpus/gemini/json_error_404.response.json"),
            ),
        ),
        (
            "anthropic-400",
            reply(
                400,
                json,
                fixture("corpus/anthropic/json_error_400.response.json"),
            ),
        ),
    ])
    .await;
    let p = proxy("vertex", "vertex", up).await;
    let gem = format!("{VERTEX}/google/models/gemini-2.5-flash:generateContent");
    let gem_stream =
        format!("{VERTEX}/google/models/gemini-2.0-flash-exp:streamGenerateContent?alt=sse");
    let anth = format!("{VERTEX}/anthropic/models/claude-3-opus@20240229:rawPredict");
    let anth_stream =
        format!("{VERTEX}/anthropic/models/claude-haiku-4-5@20251001:streamRawPredict");
    let cases: [Case<'_>; 6] = [
        (
            "vx-gem-json",
            &gem,
            GEMINI_BODY,
            &fixture("corpus/gemini/json_cached_content.response.json"),
            None,
        ),
        (
            "vx-gem-stream",
            &gem_stream,
            GEMINI_BODY,
            &fixture("corpus/gemini/sse_text.response.sse"),
            None,
        ),
        (
            "vx-gem-error",
            &gem,
            GEMINI_BODY,
            &fixture("corpus/gemini/json_error_404.response.json"),
            Some("gemini-404"),
        ),
        (
            "vx-anth-json",
            &anth,
            VERTEX_ANTHROPIC_BODY,
            &fixture("corpus/anthropic/json_text.response.json"),
            None,
        ),
        (
            "vx-anth-stream",
            &anth_stream,
            &VERTEX_ANTHROPIC_BODY.replace("\"max_tokens\"", "\"stream\":true,\"max_tokens\""),
            &fixture("corpus/anthropic/sse_text.response.sse"),
            None,
        ),
        (
            "vx-anth-error",
            &anth,
            VERTEX_ANTHROPIC_BODY,
            &fixture("corpus/anthropic/json_error_400.response.json"),
            Some("anthropic-400"),
        ),
    ];
    for (agent, path, body, want, named) in &cases {
        let mut h = vec![("x-agent-name", *agent)];
        if let Some(n) = named {
            h.push(("x-test-reply", n));
        }
        let (_, got) = post(&p.url(path), &h, body).await;
        assert_eq!(got.as_ref(), *want, "{agent}: byte-identical");
    }
    assert_eq!(log.lock().unwrap()[1].path, gem_stream);
    let text = p.metrics().await;
    // The recorded bodies' own counts (corpus manifest).
    assert_eq!(
        tokens(&text, "vx-gem-json"),
        (3520.0, 44.0, 3512.0),
        "{text}"
    );
    assert_eq!(tokens(&text, "vx-gem-stream"), (13.0, 8.0, 0.0));
    assert_eq!(tokens(&text, "vx-anth-json"), (20.0, 10.0, 0.0));
    assert_eq!(tokens(&text, "vx-anth-stream"), (10.0, 4.0, 0.0));
    for (agent, ..) in &cases {
        assert_eq!(
            calls_with(&text, agent, "gen_ai_provider_name", "gcp.vertex_ai"),
            1.0,
            "{agent}"
        );
    }
    assert_eq!(
        calls_with(
            &text,
            "vx-anth-json",
            "gen_ai_request_model",
            "claude-3-opus@20240229"
        ),
        1.0
    );
    assert_eq!(
        calls_with(&text, "vx-gem-error", "error_type", "NOT_FOUND"),
        1.0,
        "{text}"
    );
    assert_eq!(
        calls_with(
            &text,
            "vx-anth-error",
            "error_type",
            "invalid_request_error"
        ),
        1.0
    );
}

#[tokio::test]
async fn auto_routes_recognise_vertex_paths_before_gemini() {
    let (up, _) = upstream(Vec::new()).await;
    let p = proxy("vertex-auto", "auto", up).await;
    let anth = format!("{VERTEX}/anthropic/models/claude-3-opus@20240229:rawPredict");
    let gem = format!("{VERTEX}/google/models/gemini-2.5-flash:generateContent");
    post(
        &p.url(&anth),
        &[("x-agent-name", "vx-auto-anth")],
        VERTEX_ANTHROPIC_BODY,
    )
    .await;
    post(
        &p.url(&gem),
        &[("x-agent-name", "vx-auto-gem")],
        GEMINI_BODY,
    )
    .await;
    let text = p.metrics().await;
    assert_eq!(tokens(&text, "vx-auto-anth"), (20.0, 10.0, 0.0), "{text}");
    assert_eq!(tokens(&text, "vx-auto-gem").0, 3520.0);
    assert_eq!(
        calls_with(
            &text,
            "vx-auto-gem",
            "gen_ai_provider_name",
            "gcp.vertex_ai"
        ),
        1.0
    );
}

#[tokio::test]
async fn vertex_openai_compatible_endpoint_is_read_as_openai_chat() {
    // `…/endpoints/openapi/chat/completions` names no publisher: neither Vertex format's own
    // path, but OpenAI Chat bodies, read as such and labelled Vertex's.
    let (up, _) = upstream(Vec::new()).await;
    let path = "/v1/projects/p1/locations/us-central1/endpoints/openapi/chat/completions";
    let body =
        r#"{"model":"google/gemini-2.0-flash-001","messages":[{"role":"user","content":"hi"}]}"#;
    for protocol in ["vertex", "auto"] {
        let p = proxy("vertex-openapi", protocol, up).await;
        let agent = format!("vx-openapi-{protocol}");
        let (resp, _) = post(&p.url(path), &[("x-agent-name", &agent)], body).await;
        assert_eq!(resp.status(), 200);
        let text = p.metrics().await;
        assert_eq!(
            tokens(&text, &agent),
            (12.0, 5.0, 0.0),
            "{protocol}\n{text}"
        );
        assert_eq!(
            calls_with(&text, &agent, "gen_ai_provider_name", "gcp.vertex_ai"),
            1.0,
            "{protocol}"
        );
    }
}

/// boto3's `bedrock-runtime` client, with `endpoint_url` at the proxy and dummy credentials:
/// Converse, ConverseStream, InvokeModel, InvokeModelWithResponseStream, an error and a
/// mid-stream exception. botocore's decoder checks every CRC of the streams; the signed parts of
/// each request (path, `Host`, `Authorization`, body) reach the upstream exactly as signed.
#[tokio::test]
async fn boto3_bedrock_runtime_client_through_the_proxy() {
    let (up, log) = upstream(vec![
        (
            "error",
            reply(
                400,
                "application/json",
                fixture("bedrock/converse.error_400.json"),
            ),
        ),
        (
            "exception",
            reply(
                200,
                EVENT_STREAM,
                events("bedrock/converse_stream_exception.events.json"),
            ),
        ),
    ])
    .await;
    let p = proxy("sdk-bedrock", "bedrock", up).await;
    let v = run_sdk_script_with(
        "bedrock_vertex.py",
        &["boto3", &format!("http://{}", p.addr), &up.to_string()],
    )
    .await;
    assert_eq!(v["converse_usage"]["inputTokens"], 375);
    assert_eq!(v["converse_tool"], "top_song");
    assert_eq!(v["stream_text"], "Let me check the weather.");
    assert_eq!(v["stream_usage"]["outputTokens"], 38);
    assert_eq!(v["invoke_usage"]["input_tokens"], 20);
    assert_eq!(v["invoke_stream_metrics"]["outputTokenCount"], 4);
    let types = v["invoke_stream_types"].as_array().unwrap();
    assert_eq!(
        (types[0].as_str(), types.last().unwrap().as_str()),
        (Some("message_start"), Some("message_stop"))
    );
    assert_eq!(v["error"]["status"], 400);
    assert_eq!(v["exception"], "throttlingException");

    let seen = log.lock().unwrap().clone();
    let sent = v["sent"].as_array().unwrap();
    assert_eq!(seen.len(), sent.len());
    for (s, got) in sent.iter().zip(&seen) {
        assert_eq!(got.path, s["path"].as_str().unwrap());
        // Every header the signature covers arrives as signed (Host included).
        let auth = s["headers"]["authorization"].as_str().unwrap();
        assert_eq!(got.headers["authorization"], auth);
        let signed = auth.split("SignedHeaders=").nth(1).unwrap();
        let signed = signed.split(',').next().unwrap();
        assert!(signed.split(';').any(|h| h == "host"), "{signed}");
        for name in signed.split(';') {
            let want = s["headers"][name].as_str().unwrap();
            assert_eq!(got.headers[name], want, "{name} as signed");
        }
        let body = base64::engine::general_purpose::STANDARD
            .decode(s["body"].as_str().unwrap())
            .unwrap();
        assert_eq!(got.body.as_ref(), body.as_slice(), "{}", got.path);
    }
    assert!(seen[0]
        .path
        .starts_with("/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse"));

    let text = p.metrics().await;
    assert_eq!(
        tokens(&text, "sdk-bd-json"),
        (2776.0, 66.0, 2401.0),
        "{text}"
    );
    assert_eq!(tokens(&text, "sdk-bd-stream"), (412.0, 38.0, 0.0));
    assert_eq!(tokens(&text, "sdk-bi-json"), (20.0, 10.0, 0.0));
    assert_eq!(tokens(&text, "sdk-bi-stream"), (10.0, 4.0, 0.0));
    assert_eq!(
        calls_with(
            &text,
            "sdk-bd-exception",
            "error_type",
            "throttlingException"
        ),
        1.0
    );
}

/// The Anthropic SDK's `AnthropicVertex` client (an access token in place of Google auth) with
/// its base URL at the proxy: `rawPredict` and `streamRawPredict`, counted exactly.
#[tokio::test]
async fn anthropic_vertex_client_through_the_proxy() {
    let (up, log) = upstream(Vec::new()).await;
    let p = proxy("sdk-vertex", "auto", up).await;
    let v = run_sdk_script_with(
        "bedrock_vertex.py",
        &["vertex", &format!("http://{}", p.addr), &up.to_string()],
    )
    .await;
    assert_eq!(v["json_usage"]["input"], 20);
    assert_eq!(v["stream_usage"]["output"], 4);
    let seen = log.lock().unwrap().clone();
    assert_eq!(
        seen[0].path,
        "/v1/projects/p1/locations/us-east5/publishers/anthropic/models/claude-3-opus@20240229:rawPredict"
    );
    assert!(seen[1].path.ends_with(":streamRawPredict"));
    assert_eq!(seen[0].headers["authorization"], "Bearer ya29.dummy-token");
    let text = p.metrics().await;
    assert_eq!(tokens(&text, "sdk-vx-json"), (20.0, 10.0, 0.0), "{text}");
    assert_eq!(tokens(&text, "sdk-vx-stream"), (10.0, 4.0, 0.0));
    assert_eq!(
        calls_with(
            &text,
            "sdk-vx-stream",
            "gen_ai_provider_name",
            "gcp.vertex_ai"
        ),
        1.0
    );
}

/// A ConverseStream's span carries the provider, model, tokens, finish reason and tool call,
/// and an agent budget counts its tokens: the next call is refused in Bedrock's error shape,
/// never reaching the upstream.
#[tokio::test]
async fn bedrock_spans_and_budgets_get_model_and_tokens() {
    let rx = otlp_receiver::Receiver::speaking("grpc").await;
    let (up, log) = upstream(Vec::new()).await;
    let p = TestProxy::start(&format!(
        "routes:\n  - name: bedrock-obs\n    path_prefix: /model/\n    protocol: bedrock\n    upstream: http://{up}\n\
         telemetry:\n  otlp:\n    endpoint: {}\n    protocol: grpc\n\
         budgets:\n  store:\n    snapshot_path: ''\n  limits:\n    - scope: agent\n      tokens: 400\n      action: reject\n",
        rx.endpoint()
    ))
    .await;
    let (resp, _) = post(
        &p.url(CONVERSE_STREAM),
        &[("x-agent-name", "bd-obs")],
        CONVERSE_BODY,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let r = rx
        .wait_for("for the stream", |r| {
            otlp_receiver::attrs(&r.span).get("agent.name") == Some(&otlp_receiver::s("bd-obs"))
        })
        .await;
    let a = otlp_receiver::attrs(&r.span);
    use otlp_receiver::{s, V};
    let expect = [
        ("gen_ai.provider.name", s("aws.bedrock")),
        ("gen_ai.operation.name", s("chat")),
        ("gen_ai.request.model", s(CONVERSE_MODEL)),
        ("gen_ai.request.stream", V::B(true)),
        // `inferenceConfig.maxTokens`, where Converse keeps the cap.
        ("gen_ai.request.max_tokens", V::I(512)),
        ("gen_ai.usage.input_tokens", V::I(412)),
        ("gen_ai.usage.output_tokens", V::I(38)),
        ("gen_ai.response.finish_reasons", V::A(vec![s("tool_use")])),
        ("tokenwarden.tool_calls", V::A(vec![s("get_weather")])),
        ("tokenwarden.usage.source", s("provider")),
    ];
    for (k, v) in expect {
        assert_eq!(a.get(k), Some(&v), "attribute {k}: {a:#?}");
    }
    assert_eq!(r.span.name, format!("chat {CONVERSE_MODEL}"));

    // 450 tokens spent of 400: the next call is refused before it goes upstream.
    let (resp, body) = post(
        &p.url(CONVERSE),
        &[("x-agent-name", "bd-obs")],
        CONVERSE_BODY,
    )
    .await;
    assert!(
        resp.status() == 402 || resp.status() == 429,
        "{}",
        resp.status()
    );
    let err: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{err}"
    );
    assert!(err["__type"].as_str().is_some(), "{err}");
    assert_eq!(
        log.lock().unwrap().len(),
        1,
        "the refused call never reached the upstream"
    );
    let text = p.metrics().await;
    assert_eq!(tokens(&text, "bd-obs"), (412.0, 38.0, 0.0));
}

#[tokio::test]
async fn a_converse_request_is_held_to_its_declared_tools_and_cap_without_a_rewrite() {
    // A Converse body keeps its tools in `toolConfig.tools[].toolSpec` and its cap in
    // `inferenceConfig.maxTokens`: the policies see them there, and a policy that would edit
    // the (SigV4-signed) body refuses the call instead.
    let (up, log) = upstream(Vec::new()).await;
    let p = TestProxy::start(&format!(
        "routes:\n  - name: bedrock-policy\n    path_prefix: /model/\n    protocol: bedrock\n    upstream: http://{up}\n\
         agents:\n  bd-deny:\n    denied_tools: [delete_everything]\n\
         \x20 bd-strip:\n    denied_tools: [delete_everything]\n    denied_tool_action: strip\n\
         \x20 bd-allowed:\n    allowed_tools: [get_weather]\n\
         \x20 bd-cap:\n    max_tokens_cap: {{ limit: 100, action: reject }}\n\
         \x20 bd-clamp:\n    max_tokens_cap: {{ limit: 100 }}\n\
         \x20 bd-fine:\n    denied_tools: [rm_rf]\n"
    ))
    .await;
    let body = fixture("bedrock/converse_tools.request.json");
    let body = std::str::from_utf8(&body).unwrap();
    for (agent, why) in [
        ("bd-deny", "delete_everything"),
        ("bd-strip", "delete_everything"),
        ("bd-allowed", "delete_everything"),
        ("bd-cap", "512"),
    ] {
        let (resp, bytes) = post(&p.url(CONVERSE), &[("x-agent-name", agent)], body).await;
        assert_eq!(resp.status(), 403, "{agent}");
        let err: Value = serde_json::from_slice(&bytes).unwrap();
        let msg = err["message"].as_str().unwrap();
        assert!(msg.contains(why), "{agent}: {err}");
        assert!(err["__type"].as_str().is_some(), "{agent}: {err}");
    }
    assert!(
        log.lock().unwrap().is_empty(),
        "no refused call reached the upstream"
    );

    // Allowed calls (a cap that would clamp included) go up byte for byte: never re-serialized.
    for agent in ["bd-fine", "bd-clamp"] {
        let (resp, _) = post(&p.url(CONVERSE), &[("x-agent-name", agent)], body).await;
        assert_eq!(resp.status(), 200, "{agent}");
    }
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.body.as_ref(), body.as_bytes());
    }
    let text = p.metrics().await;
    let refused = |reason: &str| {
        metric_sum(
            &text,
            "tokenwarden_policy_violations_total",
            &[("policy", reason)],
        )
    };
    assert_eq!(refused("denied_tool"), 3.0, "{text}");
    // The reject and the clamp that could not rewrite the signed body: both over the cap.
    assert_eq!(refused("max_tokens"), 2.0, "{text}");
}

#[tokio::test]
async fn a_blocking_tool_policy_leaves_a_bedrock_streams_signed_headers_alone() {
    // Bedrock's event streams cannot be gated on their tool calls, so nothing asks them for an
    // uncompressed body: the `Accept-Encoding` the agent sent (and may have signed) goes up as
    // sent, and the stream is still read.
    let (up, log) = upstream(Vec::new()).await;
    let p = TestProxy::start(&format!(
        "routes:\n  - name: bedrock-gate\n    path_prefix: /model/\n    protocol: bedrock\n    upstream: http://{up}\n\
         agents:\n  bd-block:\n    tool_call_action: block\n  bd-held:\n    tool_call_action: block\n"
    ))
    .await;
    let (resp, body) = post(
        &p.url(CONVERSE_STREAM),
        &[("x-agent-name", "bd-block"), ("accept-encoding", "gzip")],
        CONVERSE_BODY,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(body.as_ref(), events("bedrock/converse_stream.events.json"));
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen[0].headers["accept-encoding"], "gzip");
    assert_eq!(seen[0].body.as_ref(), CONVERSE_BODY.as_bytes());
    let text = p.metrics().await;
    assert_eq!(tokens(&text, "bd-block"), (412.0, 38.0, 0.0));

    // A Converse JSON response is held and checked: its `top_song` call is one the request
    // declared in `toolConfig`, so it goes to the client; the same call to a request that
    // declared no tools is a hallucinated call, refused.
    let declared = fixture("bedrock/converse_top_song.request.json");
    let (resp, body) = post(
        &p.url(CONVERSE),
        &[("x-agent-name", "bd-held")],
        std::str::from_utf8(&declared).unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body.as_ref(), fixture("bedrock/converse.response.json"));
    let (resp, body) = post(
        &p.url(CONVERSE),
        &[("x-agent-name", "bd-held")],
        CONVERSE_BODY,
    )
    .await;
    assert_eq!(resp.status(), 403, "{}", String::from_utf8_lossy(&body));
    let text = p.metrics().await;
    let undeclared = metric_sum(
        &text,
        "tokenwarden_policy_violations_total",
        &[("agent", "bd-held"), ("policy", "undeclared_tool")],
    );
    assert_eq!(undeclared, 1.0, "{text}");
}

/// A USD limit holds on Bedrock: the call's model id (`us.anthropic.claude-sonnet-4-20250514-v1:0`,
/// an inference profile) is priced at the operator's `claude-sonnet-4` entry. Unpriced, it cost
/// 0 and the limit never refused anything.
#[tokio::test]
async fn a_bedrock_model_id_is_priced_at_its_models_entry() {
    let (up, log) = upstream(Vec::new()).await;
    let p = TestProxy::start(&format!(
        "routes:\n  - name: bedrock-usd\n    path_prefix: /model/\n    protocol: bedrock\n    upstream: http://{up}\n\
         pricing:\n  claude-sonnet-4: {{ input: 3.0, output: 15.0 }}\n  gpt-4o: {{ input: 2.5, output: 10.0 }}\n\
         budgets:\n  store:\n    snapshot_path: ''\n  limits:\n    - scope: agent\n      usd: 0.001\n      action: reject\n"
    ))
    .await;
    let (resp, _) = post(
        &p.url(CONVERSE_STREAM),
        &[("x-agent-name", "bd-usd")],
        CONVERSE_BODY,
    )
    .await;
    assert_eq!(resp.status(), 200);
    // 412 input × $3 + 38 output × $15 per million: $0.001806 of $0.001.
    let (resp, _) = post(
        &p.url(CONVERSE),
        &[("x-agent-name", "bd-usd")],
        CONVERSE_BODY,
    )
    .await;
    assert!(
        resp.status() == 402 || resp.status() == 429,
        "{}",
        resp.status()
    );
    assert_eq!(
        log.lock().unwrap().len(),
        1,
        "the refused call never went upstream"
    );
    let text = p.metrics().await;
    assert!(
        !text.contains("tokenwarden_unpriced_tokens_total{"),
        "the model id counted as unpriced"
    );
}
