//! The mock provider over real sockets: every endpoint, every knob and every fault.

// clippy.toml's allow-*-in-tests covers #[test] functions only, not this file's helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::io::Read as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokenwarden_mock::{self as mock, Fault, MockOptions, MockServer, MockStats};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
const CHAT_STREAM_USAGE: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#;
const MESSAGES: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
const MESSAGES_STREAM: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const GEMINI: &str = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn start() -> MockServer {
    start_with(MockOptions::default()).await
}

async fn start_with(opts: MockOptions) -> MockServer {
    MockServer::start("127.0.0.1:0".parse().unwrap(), opts)
        .await
        .expect("start mock")
}

fn h1() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    /// SSE events as (event name, data) — tolerant of `\r\n` line ends.
    fn events(&self) -> Vec<(Option<String>, String)> {
        sse_events(&self.body)
    }
}

fn sse_events(body: &[u8]) -> Vec<(Option<String>, String)> {
    let text = std::str::from_utf8(body)
        .expect("SSE is UTF-8")
        .replace("\r\n", "\n");
    assert!(
        text.ends_with("\n\n"),
        "SSE ends with a blank line: {text:?}"
    );
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = String::new();
            for line in e.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            (name, data)
        })
        .collect()
}

async fn request(
    client: &HttpClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("response head in time")
        .expect("response");
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(20), body.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn post(m: &MockServer, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    request(&h1(), "POST", &format!("{}{path}", m.url()), headers, body).await
}

async fn get(m: &MockServer, path: &str) -> Resp {
    request(&h1(), "GET", &format!("{}{path}", m.url()), &[], "").await
}

async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a raw HTTP/1.1 request; returns everything read until EOF / reset / `limit`.
async fn raw(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut headers = headers.to_vec();
    headers.push(("connection", "close"));
    s.write_all(raw_request(path, &headers, body).as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

fn raw_request(path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut req =
        format!("POST {path} HTTP/1.1\r\nHost: mock\r\nContent-Type: application/json\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    req
}

/// Splits a raw HTTP/1.1 response into its head and chunked body: (head, chunks, terminated).
fn parse_chunked(raw: &[u8]) -> (String, Vec<Vec<u8>>, bool) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let mut rest = &raw[split + 4..];
    let mut chunks = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (head, chunks, false);
        };
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap(), 16).unwrap();
        rest = &rest[eol + 2..];
        if size == 0 {
            return (head, chunks, rest.starts_with(b"\r\n"));
        }
        if rest.len() < size + 2 {
            return (head, chunks, false);
        }
        chunks.push(rest[..size].to_vec());
        rest = &rest[size + 2..];
    }
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

// ---------------------------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn chat_json_is_openai_shaped_and_deterministic() {
    let m = start().await;
    let a = post(&m, "/v1/chat/completions", &[], CHAT).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), "application/json");
    assert_eq!(a.header("content-length"), a.body.len().to_string());
    let v = a.json();
    assert_eq!(v["id"], "chatcmpl-mock-0001");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["created"], 1_730_000_000);
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], mock::output_text(20));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"]["prompt_tokens"].as_u64(),
        Some(12),
        "default input tokens"
    );
    assert_eq!(v["usage"]["completion_tokens"], 20);
    assert_eq!(v["usage"]["total_tokens"], 32);

    let b = post(&m, "/v1/chat/completions", &[], CHAT).await;
    assert_eq!(a.body, b.body, "same request, same bytes");
    // Completion is counted before the client can see the end of the body.
    assert_eq!(
        m.stats(),
        MockStats {
            requests: 2,
            responses_completed: 2,
            streams_cancelled: 0,
            in_flight: 0
        }
    );

    // Azure-style deployment path.
    let az = post(
        &m,
        "/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21",
        &[],
        CHAT,
    )
    .await;
    assert_eq!(az.status, 200);
    assert_eq!(az.body, a.body);
}

#[tokio::test]
async fn chat_stream_with_and_without_usage() {
    let m = start().await;
    let r = post(
        &m,
        "/v1/chat/completions",
        &[("x-mock-output-chunks", "5")],
        CHAT_STREAM_USAGE,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "text/event-stream; charset=utf-8");
    assert!(r.headers.get("content-length").is_none());
    let ev = r.events();
    // role + 5 content + finish + usage + [DONE]
    assert_eq!(ev.len(), 9);
    assert_eq!(ev[8].1, "[DONE]");
    let chunks: Vec<Value> = ev[..8]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, mock::output_text(5));
    for c in &chunks[..7] {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert!(c.as_object().unwrap().contains_key("usage"));
        assert_eq!(c["usage"], Value::Null);
    }
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[7]["choices"], json!([]));
    assert_eq!(chunks[7]["usage"]["prompt_tokens"], 12);
    assert_eq!(chunks[7]["usage"]["completion_tokens"], 5);
    assert_eq!(chunks[7]["usage"]["total_tokens"], 17);

    let r = post(&m, "/v1/chat/completions", &[], CHAT_STREAM).await;
    let ev = r.events();
    assert_eq!(
        ev.len(),
        1 + 20 + 1 + 1,
        "no usage chunk without include_usage"
    );
    assert!(ev.iter().all(|(_, d)| !d.contains("usage")));
    assert_eq!(ev.last().unwrap().1, "[DONE]");
}

#[tokio::test]
async fn chat_stream_parallel_tool_calls_arrive_in_fragments() {
    let m = start().await;
    let r = post(
        &m,
        "/v1/chat/completions",
        &[("x-mock-tool-calls", "3"), ("x-mock-output-chunks", "0")],
        CHAT_STREAM_USAGE,
    )
    .await;
    let mut calls: Vec<(String, String, String, usize)> = Vec::new();
    let mut finish = None;
    let mut usage = None;
    for (_, d) in r.events() {
        if d == "[DONE]" {
            continue;
        }
        let c: Value = serde_json::from_str(&d).unwrap();
        if !c["usage"].is_null() {
            usage = Some(c["usage"].clone());
        }
        let Some(choice) = c["choices"].get(0) else {
            continue;
        };
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_owned());
        }
        for tc in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = tc["index"].as_u64().unwrap() as usize;
            if let Some(id) = tc["id"].as_str() {
                assert_eq!(i, calls.len());
                calls.push((
                    id.to_owned(),
                    tc["function"]["name"].as_str().unwrap().to_owned(),
                    String::new(),
                    0,
                ));
            }
            let frag = tc["function"]["arguments"].as_str().unwrap();
            if !frag.is_empty() {
                calls[i].2 += frag;
                calls[i].3 += 1;
            }
        }
    }
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert_eq!(calls.len(), 3);
    let ids: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(ids, ["call_mock_0001", "call_mock_0002", "call_mock_0003"]);
    let names: Vec<&str> = calls.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(names[..2], ["get_weather", "search_docs"]);
    for (i, (_, name, args, frags)) in calls.iter().enumerate() {
        assert!(*frags > 1, "arguments streamed in several fragments");
        serde_json::from_str::<Value>(args).expect("fragments reassemble into JSON");
        assert_eq!((name.as_str(), args.as_str()), mock::tool_call(i as u32));
    }
    let usage = usage.expect("usage chunk");
    assert_eq!(usage["completion_tokens"], mock::output_tokens(0, 3, 0));
}

#[tokio::test]
async fn responses_json_and_stream() {
    let m = start().await;
    let knobs = [
        ("x-mock-output-chunks", "4"),
        ("x-mock-input-tokens", "50"),
        ("x-mock-cached-tokens", "32"),
        ("x-mock-reasoning-tokens", "6"),
        ("x-mock-tool-calls", "1"),
    ];
    let j = post(
        &m,
        "/v1/responses",
        &knobs,
        r#"{"model":"gpt-5","input":"hi"}"#,
    )
    .await;
    assert_eq!(j.status, 200);
    let v = j.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["id"], "resp_mock_0001");
    assert_eq!(v["model"], "gpt-5");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["content"][0]["text"], mock::output_text(4));
    assert_eq!(v["output"][1]["type"], "function_call");
    assert_eq!(v["output"][1]["name"], "get_weather");
    let out = mock::output_tokens(4, 1, 6);
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 50, "input_tokens_details": {"cached_tokens": 32},
               "output_tokens": out, "output_tokens_details": {"reasoning_tokens": 6},
               "total_tokens": 50 + out})
    );

    let s = post(
        &m,
        "/v1/responses",
        &knobs,
        r#"{"model":"gpt-5","input":"hi","stream":true}"#,
    )
    .await;
    assert_eq!(s.header("content-type"), "text/event-stream; charset=utf-8");
    let ev = s.events();
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(names[0], "response.created");
    assert_eq!(names[1], "response.in_progress");
    assert_eq!(*names.last().unwrap(), "response.completed");
    assert_eq!(
        names
            .iter()
            .filter(|n| **n == "response.output_text.delta")
            .count(),
        4
    );
    assert!(names.contains(&"response.function_call_arguments.delta"));
    assert!(!s.body.windows(6).any(|w| w == b"[DONE]"));
    let created: Value = serde_json::from_str(&ev[0].1).unwrap();
    assert_eq!(created["response"]["usage"], Value::Null);
    let done: Value = serde_json::from_str(&ev.last().unwrap().1).unwrap();
    assert_eq!(
        done["response"], v,
        "the completed event carries the JSON answer"
    );
}

#[tokio::test]
async fn embeddings_and_models() {
    let m = start().await;
    let r = post(
        &m,
        "/v1/embeddings",
        &[("x-mock-input-tokens", "8")],
        r#"{"model":"text-embedding-3-small","input":["a","b"]}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "text-embedding-3-small");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["object"], "embedding");
    assert!(v["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .all(Value::is_f64));
    assert_eq!(v["usage"], json!({"prompt_tokens": 8, "total_tokens": 8}));

    let r = get(&m, "/v1/models").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert!(!v["data"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn anthropic_json_and_stream() {
    let m = start().await;
    let r = post(
        &m,
        "/v1/messages",
        &[("x-mock-output-chunks", "3"), ("x-mock-input-tokens", "40")],
        MESSAGES,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("request-id"), "req_mock_0001");
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["id"], "msg_mock_0001");
    assert_eq!(v["model"], "claude-sonnet-4-5");
    assert_eq!(v["content"][0]["text"], mock::output_text(3));
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], 40);
    assert_eq!(v["usage"]["output_tokens"], 3);

    let r = post(
        &m,
        "/v1/messages?beta=true",
        &[("x-mock-output-chunks", "3"), ("x-mock-tool-calls", "2")],
        MESSAGES_STREAM,
    )
    .await;
    assert_eq!(r.header("content-type"), "text/event-stream; charset=utf-8");
    let ev = r.events();
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(names[0], "message_start");
    assert!(names.contains(&"ping"));
    assert_eq!(names[names.len() - 2..], ["message_delta", "message_stop"]);
    let mut text = String::new();
    let mut inputs: Vec<(String, String)> = Vec::new();
    for (n, d) in &ev {
        let v: Value = serde_json::from_str(d).unwrap();
        assert_eq!(v["type"], n.as_deref().unwrap());
        match n.as_deref().unwrap() {
            "message_start" => {
                assert_eq!(v["message"]["usage"]["input_tokens"], 12);
                assert_eq!(v["message"]["model"], "claude-sonnet-4-5");
            }
            "content_block_start" if v["content_block"]["type"] == "tool_use" => {
                assert_eq!(v["content_block"]["input"], json!({}));
                inputs.push((
                    v["content_block"]["id"].as_str().unwrap().to_owned(),
                    String::new(),
                ));
            }
            "content_block_delta" => match v["delta"]["type"].as_str().unwrap() {
                "text_delta" => text += v["delta"]["text"].as_str().unwrap(),
                "input_json_delta" => {
                    inputs.last_mut().unwrap().1 += v["delta"]["partial_json"].as_str().unwrap()
                }
                t => panic!("delta type {t}"),
            },
            "message_delta" => {
                assert_eq!(v["delta"]["stop_reason"], "tool_use");
                assert_eq!(v["usage"]["output_tokens"], mock::output_tokens(3, 2, 0));
            }
            _ => {}
        }
    }
    assert_eq!(text, mock::output_text(3));
    assert_eq!(inputs.len(), 2);
    assert_eq!(inputs[0].0, "toolu_mock_0001");
    assert_eq!(inputs[1].0, "toolu_mock_0002");
    for (i, (_, args)) in inputs.iter().enumerate() {
        assert_eq!(args, mock::tool_call(i as u32).1);
    }
}

#[tokio::test]
async fn gemini_json_sse_and_array_stream() {
    let m = start().await;
    let r = post(
        &m,
        "/v1beta/models/gemini-2.5-flash:generateContent",
        &[("x-mock-output-chunks", "3"), ("x-mock-tool-calls", "1")],
        GEMINI,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/json; charset=UTF-8");
    let v = r.json();
    assert_eq!(v["modelVersion"], "gemini-2.5-flash");
    let parts = &v["candidates"][0]["content"]["parts"];
    assert_eq!(parts[0]["text"], mock::output_text(3));
    assert_eq!(parts[1]["functionCall"]["name"], "get_weather");
    assert_eq!(parts[1]["functionCall"]["args"]["city"], "Paris");
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    assert_eq!(v["usageMetadata"]["promptTokenCount"], 12);
    assert_eq!(
        v["usageMetadata"]["candidatesTokenCount"],
        mock::output_tokens(3, 1, 0)
    );

    let r = post(
        &m,
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        &[("x-mock-output-chunks", "4")],
        GEMINI,
    )
    .await;
    assert_eq!(r.header("content-type"), "text/event-stream");
    assert!(
        r.body.windows(4).any(|w| w == b"\r\n\r\n"),
        "Gemini uses CRLF"
    );
    let chunks: Vec<Value> = r
        .events()
        .iter()
        .map(|(n, d)| {
            assert!(n.is_none());
            serde_json::from_str(d).unwrap()
        })
        .collect();
    assert_eq!(chunks.len(), 4);
    assert!(chunks
        .iter()
        .all(|c| c["modelVersion"] == "gemini-2.0-flash"));
    assert_eq!(chunks[3]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(chunks[3]["usageMetadata"]["candidatesTokenCount"], 4);
    assert_eq!(chunks[3]["usageMetadata"]["totalTokenCount"], 16);

    let r = post(
        &m,
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
        &[("x-mock-output-chunks", "4")],
        GEMINI,
    )
    .await;
    assert!(r.header("content-type").starts_with("application/json"));
    let arr = r.json();
    assert_eq!(arr.as_array().unwrap().len(), 4);
    assert_eq!(arr[3], chunks[3]);
}

#[tokio::test]
async fn unknown_paths_are_openai_shaped_404s() {
    let m = start().await;
    let r = post(&m, "/v1/nope", &[], "{}").await;
    assert_eq!(r.status, 404);
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("/v1/nope"));
    let r = get(&m, "/v1/chat/completions").await;
    assert_eq!(r.status, 404);
    let r = get(&m, "/_mock/nope").await;
    assert_eq!(r.status, 404);
    assert_eq!(m.stats().requests, 2, "/_mock/* is not counted");
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let m = start().await;
    let r = request(
        &h2(),
        "POST",
        &format!("{}/v1/chat/completions", m.url()),
        &[("x-mock-output-chunks", "3")],
        CHAT_STREAM_USAGE,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.events().len(), 1 + 3 + 1 + 1 + 1);
    assert_eq!(m.last_request().unwrap().version, "HTTP/2.0");
    let direct = post(
        &m,
        "/v1/chat/completions",
        &[("x-mock-output-chunks", "3")],
        CHAT_STREAM_USAGE,
    )
    .await;
    assert_eq!(direct.body, r.body, "same bytes over h1 and h2");
}

// ---------------------------------------------------------------------------------------------
// Knobs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn knob_defaults_come_from_options_and_headers_override_them() {
    let m = start_with(MockOptions {
        input_tokens: 100,
        output_chunks: 2,
        ..MockOptions::default()
    })
    .await;
    let v = post(&m, "/v1/chat/completions", &[], CHAT).await.json();
    assert_eq!(v["usage"]["prompt_tokens"], 100);
    assert_eq!(v["usage"]["completion_tokens"], 2);
    let v = post(
        &m,
        "/v1/chat/completions",
        &[("x-mock-input-tokens", "7"), ("x-mock-output-chunks", "9")],
        CHAT,
    )
    .await
    .json();
    assert_eq!(v["usage"]["prompt_tokens"], 7);
    assert_eq!(v["usage"]["completion_tokens"], 9);

    let r = post(
        &m,
        "/v1/chat/completions",
        &[("x-mock-output-chunks", "lots")],
        CHAT,
    )
    .await;
    assert_eq!(r.status, 400, "invalid knob values are refused");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("x-mock-output-chunks"));
}

#[tokio::test]
async fn first_byte_and_chunk_delays() {
    let m = start().await;
    let t = Instant::now();
    let r = post(
        &m,
        "/v1/chat/completions",
        &[("x-mock-first-byte-delay-ms", "200")],
        CHAT,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );

    // 1 + 5 + 1 + 1 events: 7 gaps of 30 ms.
    let t = Instant::now();
    let r = post(
        &m,
        "/v1/chat/completions",
        &[
            ("x-mock-chunk-delay-ms", "30"),
            ("x-mock-output-chunks", "5"),
        ],
        CHAT_STREAM,
    )
    .await;
    assert_eq!(r.events().len(), 8);
    assert!(
        t.elapsed() >= Duration::from_millis(210),
        "{:?}",
        t.elapsed()
    );

    // Events really arrive spread out: the head and first event come long before the end.
    let req = Request::post(format!("{}/v1/chat/completions", m.url()))
        .header("x-mock-chunk-delay-ms", "100")
        .header("x-mock-output-chunks", "3")
        .body(Full::new(Bytes::from_static(CHAT_STREAM.as_bytes())))
        .unwrap();
    let t = Instant::now();
    let mut body = h1().request(req).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"data: "));
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn gzip_knob_compresses_json_and_sse_deterministically() {
    let m = start().await;
    for (path, body) in [
        ("/v1/chat/completions", CHAT),
        ("/v1/chat/completions", CHAT_STREAM_USAGE),
        ("/v1/messages", MESSAGES_STREAM),
        ("/v1beta/models/g:streamGenerateContent?alt=sse", GEMINI),
    ] {
        let plain = post(&m, path, &[], body).await;
        let z1 = post(&m, path, &[("x-mock-gzip", "1")], body).await;
        let z2 = post(&m, path, &[("x-mock-gzip", "1")], body).await;
        assert_eq!(z1.header("content-encoding"), "gzip");
        assert!(plain.headers.get("content-encoding").is_none());
        assert_eq!(z1.header("content-type"), plain.header("content-type"));
        assert_eq!(&z1.body[..2], &[0x1f, 0x8b]);
        assert_eq!(z1.body, z2.body, "{path}: gzip bytes are deterministic");
        assert_eq!(gunzip(&z1.body), plain.body, "{path}");
    }
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn fault_500_and_429_are_provider_shaped() {
    let m = start().await;
    let r = post(&m, "/v1/chat/completions", &[("x-mock-fault", "500")], CHAT).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"]["type"], "server_error");
    let r = post(
        &m,
        "/v1/messages",
        &[("x-mock-fault", "500")],
        MESSAGES_STREAM,
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.header("content-type"), "application/json");
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "api_error");
    let r = post(
        &m,
        "/v1beta/models/g:generateContent",
        &[("x-mock-fault", "500")],
        GEMINI,
    )
    .await;
    assert_eq!(r.json()["error"]["status"], "INTERNAL");

    let r = post(
        &m,
        "/v1/chat/completions",
        &[("x-mock-fault", "429")],
        CHAT_STREAM,
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), "1");
    let v = r.json();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    let r = post(&m, "/v1/messages", &[("x-mock-fault", "429")], MESSAGES).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), "1");
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");

    // A server-wide default fault, switched off per request.
    let m = start_with(MockOptions {
        fault: Some(Fault::ServerError),
        ..MockOptions::default()
    })
    .await;
    assert_eq!(
        post(&m, "/v1/chat/completions", &[], CHAT).await.status,
        500
    );
    let r = post(
        &m,
        "/v1/chat/completions",
        &[("x-mock-fault", "none")],
        CHAT,
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn fault_drop_mid_stream_cuts_the_h1_chunked_body() {
    let m = start().await;
    let out = raw(
        m.addr(),
        "/v1/chat/completions",
        &[
            ("x-mock-fault", "drop-mid-stream"),
            ("x-mock-output-chunks", "10"),
        ],
        CHAT_STREAM_USAGE,
    )
    .await;
    let (head, chunks, terminated) = parse_chunked(&out);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!terminated, "no terminating chunk");
    let body: Vec<u8> = chunks.concat();
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("data: "), "some events went out: {text:?}");
    assert!(!text.contains("[DONE]"));
    assert_eq!(sse_events(&body).len(), 7, "half of the 14 events");
    assert!(eventually(|| async { m.stats().in_flight == 0 }).await);
    let s = m.stats();
    assert_eq!(
        (s.responses_completed, s.streams_cancelled),
        (0, 0),
        "a deliberate drop is neither completed nor a client cancel"
    );

    // JSON answers are cut in the middle, short of their content-length.
    let out = raw(
        m.addr(),
        "/v1/chat/completions",
        &[("x-mock-fault", "drop-mid-stream")],
        CHAT,
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        !body.is_empty() && body.len() < len,
        "{} of {len}",
        body.len()
    );
}

#[tokio::test]
async fn fault_drop_mid_stream_fails_the_body_for_clients_h1_and_h2() {
    let m = start().await;
    for client in [h1(), h2()] {
        let req = Request::post(format!("{}/v1/messages", m.url()))
            .header("x-mock-fault", "drop-mid-stream")
            .body(Full::new(Bytes::from_static(MESSAGES_STREAM.as_bytes())))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut got = Vec::new();
        let failed = loop {
            match body.frame().await {
                Some(Ok(f)) => got.extend_from_slice(f.data_ref().unwrap()),
                Some(Err(_)) => break true,
                None => break false,
            }
        };
        assert!(failed, "a dropped stream must not end cleanly");
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("message_start"), "{text}");
        assert!(!text.contains("message_stop"));
    }
}

#[tokio::test]
async fn fault_garbage_keeps_the_content_type() {
    let m = start().await;
    let r = post(
        &m,
        "/v1/chat/completions",
        &[("x-mock-fault", "garbage")],
        CHAT_STREAM,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "text/event-stream; charset=utf-8");
    assert!(!r.body.is_empty());
    assert!(!r.body.starts_with(b"data:") && !r.body.starts_with(b"event:"));
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());

    let r = post(&m, "/v1/messages", &[("x-mock-fault", "garbage")], MESSAGES).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/json");
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
}

#[tokio::test]
async fn fault_one_byte_writes_sends_every_byte_as_its_own_chunk() {
    let m = start().await;
    let headers = [("x-mock-output-chunks", "3")];
    let normal = post(&m, "/v1/chat/completions", &headers, CHAT_STREAM_USAGE).await;
    let out = raw(
        m.addr(),
        "/v1/chat/completions",
        &[
            ("x-mock-output-chunks", "3"),
            ("x-mock-fault", "one-byte-writes"),
        ],
        CHAT_STREAM_USAGE,
    )
    .await;
    let (head, chunks, terminated) = parse_chunked(&out);
    assert!(head.starts_with("HTTP/1.1 200"));
    assert!(terminated);
    assert!(chunks.len() > 100);
    assert!(
        chunks.iter().all(|c| c.len() == 1),
        "every chunk is one byte"
    );
    assert_eq!(chunks.concat(), normal.body.to_vec());

    // Through clients (HTTP/1.1 and HTTP/2), JSON too, the bytes are the normal answer's.
    for (path, body) in [
        ("/v1/chat/completions", CHAT),
        ("/v1/messages", MESSAGES_STREAM),
    ] {
        let url = format!("{}{path}", m.url());
        let a = post(&m, path, &[], body).await;
        for client in [h1(), h2()] {
            let one = [("x-mock-fault", "one-byte-writes")];
            let b = request(&client, "POST", &url, &one, body).await;
            assert_eq!(a.body, b.body);
        }
    }
    let s = m.stats();
    assert_eq!(s.responses_completed, s.requests);
}

#[tokio::test]
async fn fault_hang_never_answers_and_counts_a_cancel_when_the_client_leaves() {
    let m = start().await;
    let mut s = TcpStream::connect(m.addr()).await.unwrap();
    s.write_all(raw_request("/v1/chat/completions", &[("x-mock-fault", "hang")], CHAT).as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
    assert!(read.is_err(), "hang must not answer");
    assert_eq!(m.stats().in_flight, 1);
    drop(s);
    assert!(
        eventually(|| async { m.stats().streams_cancelled == 1 && m.stats().in_flight == 0 }).await,
        "{:?}",
        m.stats()
    );
    assert_eq!(m.stats().responses_completed, 0);
}

// ---------------------------------------------------------------------------------------------
// Cancellation, recording, control endpoints, lifecycle
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_disconnect_mid_stream_is_counted_as_cancelled_h1() {
    let m = start().await;
    let mut s = TcpStream::connect(m.addr()).await.unwrap();
    let req = raw_request(
        "/v1/chat/completions",
        &[
            ("x-mock-output-chunks", "200"),
            ("x-mock-chunk-delay-ms", "20"),
        ],
        CHAT_STREAM,
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert_eq!(m.stats().in_flight, 1);
    drop(s);
    assert!(
        eventually(|| async { m.stats().streams_cancelled == 1 && m.stats().in_flight == 0 }).await,
        "{:?}",
        m.stats()
    );
    assert_eq!(m.stats().responses_completed, 0);
}

#[tokio::test]
async fn client_disconnect_mid_stream_is_counted_as_cancelled_h2() {
    let m = start().await;
    let client = h2();
    let req = Request::post(format!("{}/v1/chat/completions", m.url()))
        .header("x-mock-output-chunks", "200")
        .header("x-mock-chunk-delay-ms", "20")
        .body(Full::new(Bytes::from_static(CHAT_STREAM.as_bytes())))
        .unwrap();
    let mut body = client.request(req).await.unwrap().into_body();
    assert!(body.frame().await.unwrap().is_ok());
    drop(body); // resets the stream; the connection stays up
    assert!(
        eventually(|| async { m.stats().streams_cancelled == 1 && m.stats().in_flight == 0 }).await,
        "{:?}",
        m.stats()
    );
    // The connection is still usable.
    let r = request(
        &client,
        "POST",
        &format!("{}/v1/chat/completions", m.url()),
        &[],
        CHAT,
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn cancel_during_first_byte_delay_is_counted() {
    let m = start().await;
    let mut s = TcpStream::connect(m.addr()).await.unwrap();
    s.write_all(
        raw_request(
            "/v1/chat/completions",
            &[("x-mock-first-byte-delay-ms", "5000")],
            CHAT,
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert!(eventually(|| async { m.stats().in_flight == 1 }).await);
    drop(s);
    assert!(
        eventually(|| async { m.stats().streams_cancelled == 1 && m.stats().in_flight == 0 }).await
    );
}

#[tokio::test]
async fn requests_are_recorded_and_served_at_control_endpoints() {
    let m = start().await;
    assert!(m.last_request().is_none());
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"héllo"}]}"#;
    let r = post(
        &m,
        "/v1/chat/completions?trace=1",
        &[
            ("authorization", "Bearer sk-test"),
            ("x-dup", "a"),
            ("x-dup", "b"),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await;
    assert_eq!(r.status, 200);
    let got = m.last_request().unwrap();
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/v1/chat/completions?trace=1");
    assert_eq!(got.version, "HTTP/1.1");
    assert_eq!(got.body, body.as_bytes());
    assert_eq!(got.body_len, body.len());
    assert_eq!(got.header("authorization"), Some("Bearer sk-test"));
    let dups: Vec<&str> = got.header_all("x-dup").collect();
    assert_eq!(dups, ["a", "b"]);
    assert!(got
        .headers
        .iter()
        .any(|(k, v)| k == "host" && *v == m.addr().to_string()));

    let v = get(&m, "/_mock/last_request").await.json();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/v1/chat/completions?trace=1");
    assert_eq!(v["body"], body);
    assert!(v["headers"]
        .as_array()
        .unwrap()
        .contains(&json!(["authorization", "Bearer sk-test"])));

    let stats = get(&m, "/_mock/stats").await.json();
    assert_eq!(
        stats,
        json!({"requests": 1, "responses_completed": 1, "streams_cancelled": 0, "in_flight": 0})
    );
    post(&m, "/v1/messages", &[], MESSAGES).await;
    let all = get(&m, "/_mock/requests").await.json();
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert_eq!(m.requests().len(), 2);
    assert_eq!(m.requests()[1].path, "/v1/messages");
    assert_eq!(m.stats().requests, 2, "control endpoints are not counted");

    let r = request(&h1(), "POST", &format!("{}/_mock/reset", m.url()), &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(m.stats(), MockStats::default());
    assert!(m.last_request().is_none());
    assert_eq!(get(&m, "/_mock/last_request").await.json(), Value::Null);
}

#[tokio::test]
async fn big_bodies_are_counted_but_not_kept() {
    let m = start().await;
    let big = format!(
        r#"{{"model":"m","input":"{}"}}"#,
        "x".repeat(mock::MAX_RECORDED_BODY + 10)
    );
    let r = post(&m, "/v1/embeddings", &[], &big).await;
    assert_eq!(r.status, 200);
    let got = m.last_request().unwrap();
    assert!(got.body.is_empty());
    assert_eq!(got.body_len, big.len());
}

#[tokio::test]
async fn recording_can_be_switched_off_and_is_bounded() {
    let m = start_with(MockOptions {
        record_requests: false,
        ..MockOptions::default()
    })
    .await;
    post(&m, "/v1/chat/completions", &[], CHAT).await;
    assert!(m.last_request().is_none());
    assert_eq!(m.stats().requests, 1);

    let m = start_with(MockOptions {
        max_recorded: 3,
        ..MockOptions::default()
    })
    .await;
    for i in 0..5 {
        post(&m, &format!("/v1/chat/completions?i={i}"), &[], CHAT).await;
    }
    let paths: Vec<String> = m.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/v1/chat/completions?i=2",
            "/v1/chat/completions?i=3",
            "/v1/chat/completions?i=4"
        ]
    );
}

#[tokio::test]
async fn concurrent_requests_are_all_counted() {
    let m = start().await;
    let url = format!("{}/v1/chat/completions", m.url());
    let client = h1();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            request(
                &client,
                "POST",
                &url,
                &[("x-mock-output-chunks", "5")],
                CHAT_STREAM_USAGE,
            )
            .await
            .body
        }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        bodies.push(t.await.unwrap());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        m.stats(),
        MockStats {
            requests: 50,
            responses_completed: 50,
            streams_cancelled: 0,
            in_flight: 0
        }
    );
}

#[tokio::test]
async fn shutdown_stops_the_listener_even_with_a_hanging_request() {
    let m = start().await;
    let addr = m.addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw_request("/v1/chat/completions", &[("x-mock-fault", "hang")], CHAT).as_bytes())
        .await
        .unwrap();
    let stats_before = {
        assert!(eventually(|| async { m.stats().in_flight == 1 }).await);
        m.stats()
    };
    assert_eq!(stats_before.requests, 1);
    tokio::time::timeout(Duration::from_secs(5), m.shutdown())
        .await
        .expect("shutdown is prompt");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}

#[tokio::test]
async fn the_binary_prints_its_address_serves_and_exits_on_sigterm() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden-mock"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--output-chunks",
            "4",
            "--input-tokens",
            "21",
        ])
        .env("TOKENWARDEN_MOCK_TOOL_CALLS", "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr: SocketAddr = line
        .strip_prefix("tokenwarden-mock listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    let url = format!("http://{addr}");
    let r = request(
        &h1(),
        "POST",
        &format!("{url}/v1/chat/completions"),
        &[],
        CHAT,
    )
    .await;
    let v = r.json();
    assert_eq!(v["usage"]["prompt_tokens"], 21);
    assert_eq!(
        v["usage"]["completion_tokens"],
        mock::output_tokens(4, 1, 0)
    );
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    let stats = request(&h1(), "GET", &format!("{url}/_mock/stats"), &[], "")
        .await
        .json();
    assert_eq!(stats["requests"], 1);
    assert_eq!(stats["responses_completed"], 1);
    let last = request(&h1(), "GET", &format!("{url}/_mock/last_request"), &[], "")
        .await
        .json();
    assert_eq!(last["body"], CHAT);

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        lines.next_line().await.unwrap().is_none(),
        "exactly one line on stdout"
    );
}

#[tokio::test]
async fn the_binary_refuses_bad_flags() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden-mock"))
        .args(["--listen", "127.0.0.1:0", "--fault", "explode"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("explode"));
}
