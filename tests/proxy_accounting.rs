//! Through the proxy, against the mock provider: exact token counts, tool calls, time to first
//! chunk and unparsed bodies in /metrics, for every provider format, JSON and streamed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tokenwarden_mock::output_tokens;

struct Case {
    agent: &'static str,
    path: &'static str,
    body: &'static str,
    model: &'static str,
    streamed: bool,
    tools: u32,
    reasoning: u64,
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM_USAGE: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#;
const RESP: &str = r#"{"model":"gpt-4.1","input":"hi"}"#;
const RESP_STREAM: &str = r#"{"model":"gpt-4.1","input":"hi","stream":true}"#;
const MSG: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
const MSG_STREAM: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const GEM: &str = r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#;

const CASES: &[Case] = &[
    Case {
        agent: "acc-chat-json",
        path: "/v1/chat/completions",
        body: CHAT,
        model: "gpt-4o-mini",
        streamed: false,
        tools: 0,
        reasoning: 0,
    },
    Case {
        agent: "acc-chat-stream",
        path: "/v1/chat/completions",
        body: CHAT_STREAM_USAGE,
        model: "gpt-4o-mini",
        streamed: true,
        tools: 2,
        reasoning: 0,
    },
    Case {
        agent: "acc-resp-json",
        path: "/v1/responses",
        body: RESP,
        model: "gpt-4.1",
        streamed: false,
        tools: 1,
        reasoning: 3,
    },
    Case {
        agent: "acc-resp-stream",
        path: "/v1/responses",
        body: RESP_STREAM,
        model: "gpt-4.1",
        streamed: true,
        tools: 2,
        reasoning: 4,
    },
    Case {
        agent: "acc-anth-json",
        path: "/v1/messages",
        body: MSG,
        model: "claude-sonnet-4-5",
        streamed: false,
        tools: 1,
        reasoning: 0,
    },
    Case {
        agent: "acc-anth-stream",
        path: "/v1/messages",
        body: MSG_STREAM,
        model: "claude-sonnet-4-5",
        streamed: true,
        tools: 2,
        reasoning: 0,
    },
    Case {
        agent: "acc-gem-json",
        path: "/v1beta/models/gemini-2.5-flash:generateContent",
        body: GEM,
        model: "gemini-2.5-flash",
        streamed: false,
        tools: 1,
        reasoning: 5,
    },
    Case {
        agent: "acc-gem-stream",
        path: "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        body: GEM,
        model: "gemini-2.5-flash",
        streamed: true,
        tools: 2,
        reasoning: 0,
    },
];

#[tokio::test]
async fn exact_tokens_tool_calls_and_ttft_for_every_format() {
    let m = mock().await;
    let p = TestProxy::to("accounting", m.addr(), "").await;
    for c in CASES {
        let tools = c.tools.to_string();
        let reasoning = c.reasoning.to_string();
        let (resp, _) = post(
            &p.url(c.path),
            &[
                ("x-agent-name", c.agent),
                ("x-mock-input-tokens", "37"),
                ("x-mock-cached-tokens", "8"),
                ("x-mock-output-chunks", "6"),
                ("x-mock-tool-calls", &tools),
                ("x-mock-reasoning-tokens", &reasoning),
            ],
            c.body,
        )
        .await;
        assert_eq!(resp.status(), 200, "{}", c.agent);
    }
    let text = p.metrics().await;
    for c in CASES {
        let who = c.agent;
        let tokens = |kind: &str| {
            metric_value(
                &text,
                "tokenwarden_tokens_total",
                &[("agent", who), ("model", c.model), ("type", kind)],
            )
        };
        assert_eq!(tokens("input"), 37.0, "{who} input\n{text}");
        let out = output_tokens(6, c.tools, c.reasoning) as f64;
        assert_eq!(tokens("output"), out, "{who} output");
        assert_eq!(tokens("cached_input"), 8.0, "{who} cached input");
        if c.reasoning > 0 {
            assert_eq!(tokens("reasoning"), c.reasoning as f64, "{who} reasoning");
        }
        let calls = metric_sum(&text, "tokenwarden_tool_calls_total", &[("agent", who)]);
        assert_eq!(calls, f64::from(c.tools), "{who} tool calls");
        let usage_count = metric_value(
            &text,
            "gen_ai_client_inference_operation_output_tokens_count",
            &[("agent", who), ("gen_ai_response_model", c.model)],
        );
        assert_eq!(usage_count, 1.0, "{who} output tokens per call");
        let sum = metric_value(
            &text,
            "gen_ai_client_inference_usage_input_tokens_total",
            &[("agent", who), ("gen_ai_token_modality", "unknown")],
        );
        assert_eq!(sum, 37.0, "{who} input token usage");
        let cached = metric_sum(
            &text,
            "gen_ai_client_inference_usage_cache_read_input_tokens_total",
            &[("agent", who)],
        );
        assert_eq!(cached, 8.0, "{who} cache read usage");
        let ttft = metric_value(
            &text,
            "gen_ai_client_inference_time_to_first_chunk_seconds_count",
            &[("agent", who)],
        );
        assert_eq!(
            ttft,
            if c.streamed { 1.0 } else { 0.0 },
            "{who} time to first chunk"
        );
        let duration = metric_value(
            &text,
            "gen_ai_client_inference_duration_seconds_count",
            &[("agent", who)],
        );
        assert_eq!(duration, 1.0, "{who} operation duration");
    }
    // Chunks after the first are timed in streams.
    assert!(
        metric_sum(
            &text,
            "gen_ai_client_inference_time_per_output_chunk_seconds_count",
            &[("agent", "acc-chat-stream")]
        ) >= 5.0
    );
}

#[tokio::test]
async fn unreadable_bodies_are_forwarded_and_counted() {
    let m = mock().await;
    let p = TestProxy::to("unparsed", m.addr(), "").await;
    let direct = post(
        &format!("http://{}/v1/chat/completions", m.addr()),
        &[("x-mock-fault", "garbage")],
        CHAT,
    )
    .await;
    let proxied = post(
        &p.url("/v1/chat/completions"),
        &[("x-mock-fault", "garbage")],
        CHAT,
    )
    .await;
    assert_eq!(
        proxied.1, direct.1,
        "unreadable body still forwarded untouched"
    );
    post(
        &p.url("/v1/chat/completions"),
        &[("x-mock-fault", "garbage")],
        CHAT_STREAM_USAGE,
    )
    .await;
    let text = p.metrics().await;
    let reasons = |r: &str| {
        metric_value(
            &text,
            "tokenwarden_unparsed_bodies_total",
            &[("route", "unparsed"), ("reason", r)],
        )
    };
    assert_eq!(reasons("invalid_json"), 1.0, "{text}");
    assert!(reasons("invalid_event") >= 1.0 || reasons("invalid_json") >= 1.0);
}

#[tokio::test]
async fn gzip_responses_are_forwarded_compressed_and_counted_exactly() {
    let m = mock().await;
    let p = TestProxy::to("gzip-acc", m.addr(), "").await;
    for (agent, body) in [
        ("acc-gzip-json", CHAT),
        ("acc-gzip-sse", CHAT_STREAM_USAGE),
        ("acc-gzip-msg", MSG_STREAM),
    ] {
        let path = if body == MSG_STREAM {
            "/v1/messages"
        } else {
            "/v1/chat/completions"
        };
        let h = [
            ("x-agent-name", agent),
            ("x-mock-gzip", "1"),
            ("accept-encoding", "gzip"),
            ("x-mock-input-tokens", "19"),
            ("x-mock-output-chunks", "4"),
        ];
        let direct = post(&format!("http://{}{path}", m.addr()), &h, body).await;
        let proxied = post(&p.url(path), &h, body).await;
        assert_eq!(proxied.0.headers()["content-encoding"], "gzip");
        assert_eq!(proxied.1, direct.1, "{agent}: compressed bytes untouched");
    }
    let text = p.metrics().await;
    for agent in ["acc-gzip-json", "acc-gzip-sse", "acc-gzip-msg"] {
        let tokens = |kind: &str| {
            metric_sum(
                &text,
                "tokenwarden_tokens_total",
                &[("agent", agent), ("type", kind)],
            )
        };
        assert_eq!(tokens("input"), 19.0, "{agent}\n{text}");
        assert_eq!(tokens("output"), 4.0, "{agent}");
    }
    assert_eq!(
        metric_sum(
            &text,
            "tokenwarden_unparsed_bodies_total",
            &[("route", "gzip-acc")]
        ),
        0.0
    );
}

#[tokio::test]
async fn failed_calls_carry_an_error_type() {
    let m = mock().await;
    let p = TestProxy::to("acc-errors", m.addr(), "").await;
    post(
        &p.url("/v1/chat/completions"),
        &[("x-agent-name", "acc-err"), ("x-mock-fault", "500")],
        CHAT,
    )
    .await;
    let text = p.metrics().await;
    let with_error = metric_sum(
        &text,
        "gen_ai_client_inference_duration_seconds_count",
        &[("agent", "acc-err"), ("error_type", "server_error")],
    ) + metric_sum(
        &text,
        "gen_ai_client_inference_duration_seconds_count",
        &[("agent", "acc-err"), ("error_type", "500")],
    );
    assert_eq!(with_error, 1.0, "{text}");
}

const CHAT_STREAM_NO_USAGE: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#;

#[tokio::test]
async fn stream_usage_is_injected_upstream_and_hidden_from_the_client() {
    let m = mock().await;
    let p = TestProxy::to("inject", m.addr(), "").await;
    let h = [
        ("x-agent-name", "acc-inject"),
        ("x-mock-input-tokens", "21"),
        ("x-mock-output-chunks", "9"),
        ("x-mock-tool-calls", "1"),
    ];
    let direct = post(
        &format!("http://{}/v1/chat/completions", m.addr()),
        &h,
        CHAT_STREAM_NO_USAGE,
    )
    .await;
    let proxied = post(&p.url("/v1/chat/completions"), &h, CHAT_STREAM_NO_USAGE).await;
    let upstream_saw = m.last_request().unwrap().body_json().unwrap();
    assert_eq!(
        upstream_saw["stream_options"]["include_usage"], true,
        "usage asked upstream"
    );
    let body = String::from_utf8(proxied.1.to_vec()).unwrap();
    assert!(
        !body.contains("\"usage\""),
        "client sees no usage field or chunk:\n{body}"
    );
    assert_eq!(
        proxied.1, direct.1,
        "the client receives what the provider sends without include_usage"
    );
    let text = p.metrics().await;
    let tokens = |kind: &str| {
        metric_value(
            &text,
            "tokenwarden_tokens_total",
            &[("agent", "acc-inject"), ("type", kind)],
        )
    };
    assert_eq!(tokens("input"), 21.0, "{text}");
    assert_eq!(tokens("output"), output_tokens(9, 1, 0) as f64);

    // A client that asked for usage gets it, untouched.
    let h = [("x-agent-name", "acc-asked")];
    let direct = post(
        &format!("http://{}/v1/chat/completions", m.addr()),
        &h,
        CHAT_STREAM_USAGE,
    )
    .await;
    let proxied = post(&p.url("/v1/chat/completions"), &h, CHAT_STREAM_USAGE).await;
    assert_eq!(proxied.1, direct.1);
    assert!(String::from_utf8_lossy(&proxied.1).contains("\"usage\":{"));
}

#[tokio::test]
async fn injection_can_be_switched_off() {
    let m = mock().await;
    let p = TestProxy::to(
        "no-inject",
        m.addr(),
        "telemetry:\n  inject_stream_usage: false\n",
    )
    .await;
    let h = [("x-agent-name", "acc-noinject")];
    let direct = post(
        &format!("http://{}/v1/chat/completions", m.addr()),
        &h,
        CHAT_STREAM_NO_USAGE,
    )
    .await;
    let proxied = post(&p.url("/v1/chat/completions"), &h, CHAT_STREAM_NO_USAGE).await;
    assert_eq!(proxied.1, direct.1);
    assert_eq!(
        m.last_request().unwrap().body,
        CHAT_STREAM_NO_USAGE.as_bytes(),
        "request untouched"
    );
    // No usage anywhere in the stream: the proxy counts it with its tokenizer, marked so.
    let text = p.metrics().await;
    let tokens = |kind: &str, source: &str| {
        metric_value(
            &text,
            "tokenwarden_tokens_total",
            &[
                ("agent", "acc-noinject"),
                ("type", kind),
                ("source", source),
            ],
        )
    };
    // "hi" is one token, plus 3 framing tokens for the message and 3 priming the reply.
    assert_eq!(tokens("input", "estimated"), 7.0, "{text}");
    let said: String = String::from_utf8_lossy(&proxied.1)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert!(!said.is_empty());
    assert_eq!(
        tokens("output", "estimated"),
        tokenwarden::tokens::count(&said) as f64,
        "output counted from the streamed text: {said:?}"
    );
    assert_eq!(tokens("input", "provider"), 0.0);
}

#[tokio::test]
async fn client_gone_mid_stream_is_counted_as_estimated() {
    use futures_util::StreamExt;
    let m = mock().await;
    let p = TestProxy::to("gone", m.addr(), "").await;
    let client = reqwest_like_client();
    let req = http::Request::post(p.url("/v1/chat/completions"))
        .header("x-agent-name", "acc-gone")
        .header("x-mock-output-chunks", "400")
        .header("x-mock-chunk-delay-ms", "5")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            CHAT_STREAM_USAGE.as_bytes(),
        )))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let mut body = http_body_util::BodyStream::new(resp.into_body());
    let mut got = 0usize;
    while got < 3 {
        if let Some(Ok(f)) = body.next().await {
            got += usize::from(f.is_data());
        }
    }
    drop(body);
    // The disconnect is counted first in the call's finish step and its tokens after, on the
    // thread that served it: wait for both, or a scrape can fall in between.
    let ok = eventually(std::time::Duration::from_secs(5), || async {
        let text = p.metrics().await;
        metric_value(
            &text,
            "tokenwarden_client_disconnects_total",
            &[("route", "gone")],
        ) >= 1.0
            && metric_value(
                &text,
                "tokenwarden_tokens_total",
                &[
                    ("agent", "acc-gone"),
                    ("type", "output"),
                    ("source", "estimated"),
                ],
            ) > 0.0
    })
    .await;
    assert!(ok, "disconnect and its tokens recorded");
    let text = p.metrics().await;
    let tokens = |kind: &str| {
        metric_value(
            &text,
            "tokenwarden_tokens_total",
            &[
                ("agent", "acc-gone"),
                ("type", kind),
                ("source", "estimated"),
            ],
        )
    };
    assert_eq!(tokens("input"), 7.0, "{text}");
    let out = tokens("output");
    assert!(
        (1.0..400.0).contains(&out),
        "output counted up to where the client left: {out}"
    );
}

fn reqwest_like_client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// An Ollama-like upstream: `/api/chat` answers with the NDJSON stream its docs show.
async fn ollama_upstream() -> std::net::SocketAddr {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(|_req: http::Request<hyper::body::Incoming>| async {
                    let lines = concat!(
                        "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"done\":false}\n",
                        "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}}]},\"done\":false}\n",
                        "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":26,\"eval_count\":282}\n",
                    );
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("content-type", "application/x-ndjson")
                            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                lines.as_bytes(),
                            )))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn ollama_native_ndjson_streams_are_counted() {
    let up = ollama_upstream().await;
    let p = TestProxy::start(&format!(
        "routes:\n  - name: ollama\n    path_prefix: /\n    upstream: http://{up}\n    protocol: ollama\n"
    ))
    .await;
    let (resp, body) = post(
        &p.url("/api/chat"),
        &[("x-agent-name", "acc-ollama")],
        r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(String::from_utf8_lossy(&body).lines().count(), 3);
    let text = p.metrics().await;
    let tokens = |kind: &str| {
        metric_value(
            &text,
            "tokenwarden_tokens_total",
            &[
                ("agent", "acc-ollama"),
                ("model", "llama3.2"),
                ("type", kind),
            ],
        )
    };
    assert_eq!(tokens("input"), 26.0, "{text}");
    assert_eq!(tokens("output"), 282.0);
    assert_eq!(
        metric_value(
            &text,
            "tokenwarden_tool_calls_total",
            &[("agent", "acc-ollama"), ("tool", "get_weather")]
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &text,
            "gen_ai_client_inference_time_to_first_chunk_seconds_count",
            &[("agent", "acc-ollama")]
        ),
        1.0
    );
}

#[tokio::test]
async fn anthropic_count_tokens_is_labelled_and_never_billed() {
    let m = mock().await;
    let p = TestProxy::to("count", m.addr(), "").await;
    let (resp, body) = post(
        &p.url("/v1/messages/count_tokens"),
        &[
            ("x-agent-name", "acc-count"),
            ("x-session-id", "s-count"),
            ("x-mock-input-tokens", "321"),
        ],
        MSG,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(&body[..], br#"{"input_tokens":321}"#);
    let text = p.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "tokenwarden_requests_total",
            &[
                ("agent", "acc-count"),
                ("provider", "anthropic"),
                ("operation", "count_tokens"),
                ("status", "2xx"),
            ],
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric_sum(&text, "tokenwarden_tokens_total", &[("agent", "acc-count")]),
        0.0,
        "a count is not usage"
    );
}

/// A stream whose usage the proxy asks for on the client's behalf is asked for uncompressed
/// (the usage chunk it adds must be read to be hidden): a client that accepts gzip gets the
/// plain stream without the chunk. An upstream that compresses anyway is forwarded as it came.
#[tokio::test]
async fn a_stream_whose_usage_the_proxy_asks_for_is_asked_for_uncompressed() {
    let m = mock().await;
    let p = TestProxy::to("inject-gz", m.addr(), "").await;
    let h = [
        ("x-agent-name", "acc-inject-gz"),
        ("accept-encoding", "gzip"),
        ("x-mock-input-tokens", "21"),
        ("x-mock-output-chunks", "9"),
    ];
    let (resp, bytes) = post(&p.url("/v1/chat/completions"), &h, CHAT_STREAM_NO_USAGE).await;
    assert_eq!(resp.status(), 200);
    let seen = m.last_request().unwrap();
    let accept = seen
        .headers
        .iter()
        .find(|(k, _)| k == "accept-encoding")
        .map(|(_, v)| v.as_str());
    assert_eq!(accept, Some("identity"));
    let body = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(!body.contains("\"usage\""), "usage chunk hidden:\n{body}");
    // The client's own request for usage keeps its header: nothing is hidden there.
    post(&p.url("/v1/chat/completions"), &h, CHAT_STREAM_USAGE).await;
    let seen = m.last_request().unwrap();
    let accept = seen
        .headers
        .iter()
        .find(|(k, _)| k == "accept-encoding")
        .map(|(_, v)| v.as_str());
    assert_eq!(accept, Some("gzip"));
    // Compressed anyway: the upstream's bytes go on untouched and the call is still counted.
    let mut gz = h.to_vec();
    gz.push(("x-mock-gzip", "1"));
    let (resp, bytes) = post(&p.url("/v1/chat/completions"), &gz, CHAT_STREAM_NO_USAGE).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
    let text = p.metrics().await;
    let input = metric_sum(
        &text,
        "tokenwarden_tokens_total",
        &[("agent", "acc-inject-gz"), ("type", "input")],
    );
    assert_eq!(input, 63.0, "{text}");
}

/// Gemini's and Anthropic's OpenAI-compatible endpoints, on the shipped config's routes (a
/// `/gemini` route reading `gemini`, an `/anthropic` one reading `anthropic`): read as OpenAI
/// Chat — a stream without `include_usage` is asked for usage, and its tokens are counted under
/// the provider's label.
#[tokio::test]
async fn openai_compatible_endpoints_of_gemini_and_anthropic_are_counted() {
    let m = mock().await;
    let up = m.addr();
    let p = TestProxy::start(&format!(
        "routes:\n  \
         - name: gemini\n    path_prefix: /gemini\n    strip_prefix: true\n    upstream: http://{up}\n    protocol: gemini\n  \
         - name: anthropic\n    path_prefix: /anthropic\n    strip_prefix: true\n    upstream: http://{up}\n    protocol: anthropic\n"
    ))
    .await;
    for (agent, path, provider) in [
        (
            "acc-gem-compat",
            "/gemini/v1beta/openai/chat/completions",
            "gcp.gemini",
        ),
        (
            "acc-anth-compat",
            "/anthropic/v1/chat/completions",
            "anthropic",
        ),
    ] {
        let h = [
            ("x-agent-name", agent),
            ("x-mock-input-tokens", "23"),
            ("x-mock-output-chunks", "7"),
        ];
        let (resp, body) = post(&p.url(path), &h, CHAT_STREAM_NO_USAGE).await;
        assert_eq!(resp.status(), 200, "{path}");
        let upstream_saw = m.last_request().unwrap().body_json().unwrap();
        assert_eq!(
            upstream_saw["stream_options"]["include_usage"], true,
            "{path}: usage asked upstream"
        );
        assert!(
            !String::from_utf8_lossy(&body).contains("\"usage\""),
            "{path}: the usage asked for is hidden"
        );
        let text = p.metrics().await;
        let tokens = |kind: &str| {
            metric_value(
                &text,
                "tokenwarden_tokens_total",
                &[("agent", agent), ("type", kind)],
            )
        };
        assert_eq!(tokens("input"), 23.0, "{path}\n{text}");
        assert_eq!(tokens("output"), output_tokens(7, 0, 0) as f64, "{path}");
        let requests = metric_value(
            &text,
            "tokenwarden_requests_total",
            &[
                ("agent", agent),
                ("provider", provider),
                ("operation", "chat"),
                ("status", "2xx"),
            ],
        );
        assert_eq!(requests, 1.0, "{path}: labelled as the provider's\n{text}");
    }
}

/// The GenAI chunk timings follow the conventions: time per output chunk is one sample per
/// chunk after the first however the upstream batched its writes, under the GenAI labels
/// (served model included); time to first chunk counts from the request's sending upstream,
/// not from a slow client's upload; and a proxy's estimate is no GenAI usage.
#[tokio::test]
async fn chunk_timings_and_usage_metrics_follow_the_genai_conventions() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let m = mock().await;
    let p = TestProxy::to("chunks", m.addr(), "").await;
    let stream =
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    for (agent, per_write) in [("acc-one-per-write", "1"), ("acc-five-per-write", "5")] {
        let (resp, _) = post(
            &p.url("/v1/chat/completions"),
            &[
                ("x-agent-name", agent),
                ("x-mock-output-chunks", "20"),
                ("x-mock-events-per-write", per_write),
            ],
            stream,
        )
        .await;
        assert_eq!(resp.status(), 200);
    }
    // A stream broken off: its usage is the proxy's estimate.
    let _ = try_post(
        &p.url("/v1/chat/completions"),
        &[
            ("x-agent-name", "acc-estimated"),
            ("x-mock-fault", "drop-mid-stream"),
        ],
        stream,
    )
    .await;
    // A slow upload: the headers, then the body a second later.
    let mut c = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-agent-name: acc-slow-upload\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        stream.len()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    c.write_all(stream.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));

    let text = p.metrics().await;
    let per_chunk = |agent: &str| {
        metric_value(
            &text,
            "gen_ai_client_inference_time_per_output_chunk_seconds_count",
            &[("agent", agent), ("gen_ai_response_model", "gpt-4o-mini")],
        )
    };
    let output_events = metric_value(
        &text,
        "gen_ai_client_inference_time_per_output_chunk_seconds_count",
        &[("agent", "acc-one-per-write")],
    );
    assert!(output_events >= 19.0, "{text}");
    assert_eq!(per_chunk("acc-one-per-write"), output_events, "{text}");
    assert_eq!(
        per_chunk("acc-five-per-write"),
        output_events,
        "five events a write are five chunks\n{text}"
    );
    let estimated = metric_sum(
        &text,
        "tokenwarden_tokens_total",
        &[("agent", "acc-estimated"), ("source", "estimated")],
    );
    assert!(estimated > 0.0, "{text}");
    for name in [
        "gen_ai_client_inference_usage_input_tokens_total",
        "gen_ai_client_inference_usage_output_tokens_total",
        "gen_ai_client_inference_operation_input_tokens_count",
    ] {
        assert_eq!(
            metric_sum(&text, name, &[("agent", "acc-estimated")]),
            0.0,
            "{name}: an estimate is no usage the provider stated\n{text}"
        );
    }
    let ttft = metric_value(
        &text,
        "gen_ai_client_inference_time_to_first_chunk_seconds_sum",
        &[("agent", "acc-slow-upload")],
    );
    assert!(
        ttft < 1.0,
        "time to first chunk counts from the upstream request, not the upload: {ttft}"
    );
}
