//! Usage shapes of the wild, over real sockets: recorded or faithfully reconstructed provider
//! bodies (tests/fixtures/wild, sources in its README) replayed by a loopback upstream through
//! the proxy. Each case checks `tokenwarden_tokens_total` by type and model as the provider
//! bills them, that the client got the upstream's bytes unchanged, and the cost where the
//! price depends on the shape (cache writes by lifetime, sub-calls on another model, searches
//! billed per call).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

const FIXTURES: &str = FIXTURE_DIR;

/// Prices of the models the cases bill (USD per million tokens; Anthropic's list prices).
const PRICING: &str = "pricing:
  claude-sonnet-4-6: { input: 3.00, output: 15.00, cached_input: 0.30, cache_creation_input: 3.75 }
  claude-opus-4-7: { input: 5.00, output: 25.00, cached_input: 0.50, cache_creation_input: 6.25 }
  gpt-4o-audio-preview: { input: 2.50, output: 10.00, audio_input: 40.00, audio_output: 80.00 }
";

const CHAT_PATH: &str = "/v1/chat/completions";
const MSG_PATH: &str = "/v1/messages";

/// One replayed exchange and what it must come to.
struct Case {
    /// Agent label (one per case, so series never mix).
    agent: &'static str,
    path: &'static str,
    /// Response body under tests/fixtures.
    fixture: &'static str,
    /// Request body.
    request: &'static str,
    /// (model, [(type, tokens)]) — every type listed must be exact under that model.
    expect: &'static [(&'static str, &'static [(&'static str, f64)])],
}

const CHAT_STREAM: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#;
const CHAT_JSON: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
const MSG_STREAM: &str = r#"{"model":"claude-sonnet-4-6","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const MSG_JSON: &str = r#"{"model":"claude-sonnet-4-6","max_tokens":1024,"messages":[{"role":"user","content":"hi"}]}"#;

async fn proxy() -> TestProxy {
    TestProxy::to("wild", fixture_upstream().await, PRICING).await
}

/// Replay `case`: the client must get the fixture's bytes, the metrics its exact counts.
async fn replay(p: &TestProxy, case: &Case) -> String {
    let (resp, body) = post(
        &p.url(case.path),
        &[("x-agent-name", case.agent), ("x-fixture", case.fixture)],
        case.request,
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", case.agent);
    let want = std::fs::read(format!("{FIXTURES}/{}", case.fixture)).unwrap();
    assert!(body == want, "{}: the client got other bytes", case.agent);
    let text = p.metrics().await;
    for (model, types) in case.expect {
        for (kind, n) in *types {
            let got = metric_value(
                &text,
                "tokenwarden_tokens_total",
                &[("agent", case.agent), ("model", model), ("type", kind)],
            );
            assert_eq!(got, *n, "{}: {model} {kind}\n{text}", case.agent);
        }
    }
    text
}

fn cost(text: &str, agent: &str, model: &str) -> f64 {
    metric_value(
        text,
        "tokenwarden_cost_usd_total",
        &[("agent", agent), ("model", model)],
    )
}

fn assert_usd(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() < 1e-9, "{what}: {got} USD, want {want}");
}

#[tokio::test]
async fn xai_reasoning_outside_completion_tokens_is_output() {
    let p = proxy().await;
    for case in [
        Case {
            agent: "wild-xai-json",
            path: CHAT_PATH,
            fixture: "wild/xai/chat_reasoning.json",
            request: CHAT_JSON,
            // total 135 = 32 + 9 + 94: output is 9 + 94.
            expect: &[(
                "grok-3-mini",
                &[
                    ("input", 32.0),
                    ("output", 103.0),
                    ("reasoning", 94.0),
                    ("cached_input", 6.0),
                ],
            )],
        },
        Case {
            agent: "wild-xai-stream",
            path: CHAT_PATH,
            fixture: "wild/xai/chat_reasoning_stream.sse",
            request: CHAT_STREAM,
            // total 1645 = 10 + 1328 + 307.
            expect: &[(
                "grok-3-mini",
                &[
                    ("input", 10.0),
                    ("output", 1635.0),
                    ("reasoning", 307.0),
                    ("cached_input", 2.0),
                ],
            )],
        },
        // OpenAI's own shape (reasoning inside completion: 577 + 2320 = 2897) stays as it is.
        Case {
            agent: "wild-openai-reasoning",
            path: CHAT_PATH,
            fixture: "corpus/openai-chat/json_reasoning.response.json",
            request: CHAT_JSON,
            expect: &[(
                "o3-mini-2025-01-31",
                &[("input", 577.0), ("output", 2320.0), ("reasoning", 1792.0)],
            )],
        },
        // DeepSeek's reasoner: reasoning inside (1040 + 215 = 1255); cache hits read from
        // `prompt_cache_hit_tokens`.
        Case {
            agent: "wild-deepseek",
            path: CHAT_PATH,
            fixture: "wild/deepseek/reasoner_cache_hit.json",
            request: CHAT_JSON,
            expect: &[(
                "deepseek-reasoner",
                &[
                    ("input", 1040.0),
                    ("output", 215.0),
                    ("reasoning", 180.0),
                    ("cached_input", 1024.0),
                ],
            )],
        },
        // Perplexity Deep Research bills citation tokens as input and reasoning tokens beside
        // the completion: input 19 + 13979, output 8132 + 150477.
        Case {
            agent: "wild-perplexity",
            path: CHAT_PATH,
            fixture: "wild/perplexity/deep_research.json",
            request: CHAT_JSON,
            expect: &[(
                "sonar-deep-research",
                &[
                    ("input", 13998.0),
                    ("output", 158_609.0),
                    ("reasoning", 150_477.0),
                ],
            )],
        },
    ] {
        replay(&p, &case).await;
    }
}

#[tokio::test]
async fn an_empty_model_or_id_is_no_value_and_a_later_one_wins() {
    let p = proxy().await;
    for (agent, fixture, request) in [
        (
            "wild-azure-stream",
            "wild/azure/chat_stream_prompt_filter.sse",
            CHAT_STREAM,
        ),
        (
            "wild-azure-json",
            "wild/azure/chat_prompt_filter.json",
            CHAT_JSON,
        ),
    ] {
        let text = replay(
            &p,
            &Case {
                agent,
                path: CHAT_PATH,
                fixture,
                request,
                expect: &[("gpt-4o-2024-11-20", &[("input", 14.0), ("output", 10.0)])],
            },
        )
        .await;
        assert_eq!(
            metric_sum(
                &text,
                "tokenwarden_tokens_total",
                &[("agent", agent), ("model", "")]
            ),
            0.0,
            "{agent}: nothing counted under an empty model"
        );
    }
}

#[tokio::test]
async fn groq_usage_only_in_x_groq_is_read() {
    let p = proxy().await;
    for case in [
        Case {
            agent: "wild-groq-stream",
            path: CHAT_PATH,
            fixture: "wild/groq/chat_stream_x_groq.sse",
            request: CHAT_STREAM,
            expect: &[("gemma2-9b-it", &[("input", 18.0), ("output", 439.0)])],
        },
        Case {
            agent: "wild-groq-json",
            path: CHAT_PATH,
            fixture: "wild/groq/chat_x_groq.json",
            request: CHAT_JSON,
            expect: &[("llama-3.1-8b-instant", &[("input", 55.0), ("output", 55.0)])],
        },
    ] {
        let text = replay(&p, &case).await;
        assert_eq!(
            metric_sum(
                &text,
                "tokenwarden_tokens_total",
                &[("agent", case.agent), ("source", "estimated")]
            ),
            0.0,
            "{}: the stated usage, not an estimate",
            case.agent
        );
    }
}

#[tokio::test]
async fn chat_audio_tokens_are_priced_at_the_audio_rates() {
    // gpt-4o-audio-preview states its audio apart in `prompt_tokens_details.audio_tokens` and
    // `completion_tokens_details.audio_tokens`; audio costs 8x text here.
    let p = proxy().await;
    for (agent, fixture, request) in [
        ("wild-chat-audio", "wild/openai/chat_audio.json", CHAT_JSON),
        (
            "wild-chat-audio-stream",
            "wild/openai/chat_audio_stream.sse",
            CHAT_STREAM,
        ),
    ] {
        let text = replay(
            &p,
            &Case {
                agent,
                path: CHAT_PATH,
                fixture,
                request,
                expect: &[(
                    "gpt-4o-audio-preview-2024-10-01",
                    &[("input", 117.0), ("output", 781.0)],
                )],
            },
        )
        .await;
        // 17 text + 100 audio in; 193 text + 588 audio out.
        let usd = (17.0 * 2.5 + 100.0 * 40.0 + 193.0 * 10.0 + 588.0 * 80.0) / 1e6;
        assert_usd(
            cost(&text, agent, "gpt-4o-audio-preview-2024-10-01"),
            usd,
            agent,
        );
    }
}

#[tokio::test]
async fn openrouter_under_an_api_base_path_is_read_as_openai_chat() {
    // OpenRouter's base URL is https://openrouter.ai/api/v1: the upstream path is
    // `/api/v1/chat/completions`, which is not Ollama's, whatever `/api/` suggests.
    let up = fixture_upstream().await;
    let p = TestProxy::start(&format!(
        "routes:\n  - name: openrouter\n    path_prefix: /openrouter\n    strip_prefix: true\n    upstream: http://{up}/api\n"
    ))
    .await;
    let text = replay(
        &p,
        &Case {
            agent: "wild-openrouter-api",
            path: "/openrouter/v1/chat/completions",
            fixture: "wild/openrouter/chat_cache_write.json",
            request: CHAT_JSON,
            expect: &[(
                "anthropic/claude-sonnet-4.5",
                &[("input", 2100.0), ("output", 40.0)],
            )],
        },
    )
    .await;
    let requests = metric_value(
        &text,
        "tokenwarden_requests_total",
        &[
            ("agent", "wild-openrouter-api"),
            ("provider", "openai"),
            ("operation", "chat"),
        ],
    );
    assert_eq!(requests, 1.0, "{text}");
}

#[tokio::test]
async fn cache_writes_of_openai_compatible_servers_are_counted() {
    let p = proxy().await;
    for case in [
        Case {
            agent: "wild-openrouter",
            path: CHAT_PATH,
            fixture: "wild/openrouter/chat_cache_write.json",
            request: CHAT_JSON,
            expect: &[(
                "anthropic/claude-sonnet-4.5",
                &[
                    ("input", 2100.0),
                    ("output", 40.0),
                    ("cache_creation_input", 2048.0),
                    ("cached_input", 0.0),
                ],
            )],
        },
        Case {
            agent: "wild-dashscope",
            path: CHAT_PATH,
            fixture: "wild/dashscope/chat_cache_creation.json",
            request: CHAT_JSON,
            expect: &[(
                "qwen-plus",
                &[
                    ("input", 3019.0),
                    ("output", 104.0),
                    ("cache_creation_input", 3015.0),
                    ("cached_input", 0.0),
                ],
            )],
        },
    ] {
        replay(&p, &case).await;
    }
}

#[tokio::test]
async fn one_hour_cache_writes_are_priced_at_their_own_rate() {
    let p = proxy().await;
    for (agent, path, fixture, request) in [
        (
            "wild-ttl-json",
            MSG_PATH,
            "wild/anthropic/cache_ttl.json",
            MSG_JSON,
        ),
        (
            "wild-ttl-stream",
            MSG_PATH,
            "wild/anthropic/cache_ttl_stream.sse",
            MSG_STREAM,
        ),
    ] {
        let text = replay(
            &p,
            &Case {
                agent,
                path,
                fixture,
                request,
                expect: &[(
                    "claude-sonnet-4-6",
                    &[
                        ("input", 606.0),
                        ("output", 120.0),
                        ("cache_creation_input", 556.0),
                    ],
                )],
            },
        )
        .await;
        // 50 × 3 + 456 × 3.75 (five-minute writes) + 100 × 6 (one-hour: 2 × input, unset)
        // + 120 × 15, per million.
        assert_usd(
            cost(&text, agent, "claude-sonnet-4-6"),
            (150.0 + 1710.0 + 600.0 + 1800.0) / 1e6,
            agent,
        );
    }
}

#[tokio::test]
async fn anthropic_iterations_are_billed_and_sub_calls_priced_as_their_model() {
    let p = proxy().await;
    // Advisor: executor iterations 412 + (1348 + 412 cached), output 89 + 442; the advisor's
    // own 823 / 1612 on claude-opus-4-7.
    for (agent, fixture, request) in [
        (
            "wild-advisor-stream",
            "wild/anthropic/advisor_stream.sse",
            MSG_STREAM,
        ),
        ("wild-advisor-json", "wild/anthropic/advisor.json", MSG_JSON),
    ] {
        let text = replay(
            &p,
            &Case {
                agent,
                path: MSG_PATH,
                fixture,
                request,
                expect: &[
                    (
                        "claude-sonnet-4-6",
                        &[
                            ("input", 2172.0),
                            ("output", 531.0),
                            ("cached_input", 412.0),
                        ],
                    ),
                    ("claude-opus-4-7", &[("input", 823.0), ("output", 1612.0)]),
                ],
            },
        )
        .await;
        assert_usd(
            cost(&text, agent, "claude-sonnet-4-6"),
            (1760.0 * 3.0 + 412.0 * 0.3 + 531.0 * 15.0) / 1e6,
            agent,
        );
        assert_usd(
            cost(&text, agent, "claude-opus-4-7"),
            (823.0 * 5.0 + 1612.0 * 25.0) / 1e6,
            agent,
        );
    }
    // Compaction (recorded): the pass read 100 + 55096 cached and wrote 83; the message 181 / 8.
    replay(
        &p,
        &Case {
            agent: "wild-compaction",
            path: MSG_PATH,
            fixture: "corpus/anthropic/sse_compaction_cache_read.response.sse",
            request: MSG_STREAM,
            expect: &[(
                "claude-sonnet-4-6",
                &[
                    ("input", 55377.0),
                    ("output", 91.0),
                    ("cached_input", 55096.0),
                ],
            )],
        },
    )
    .await;
}

/// Searches the provider ran are billed per call on top of the tokens (recorded calls): the
/// settled cost of an Anthropic call with one web search and of an OpenAI Responses stream with
/// one `web_search_call` includes the $10 per 1,000 searches fee.
#[tokio::test]
async fn web_search_fees_are_priced_on_top_of_the_tokens() {
    let pricing = "pricing:
  claude-sonnet-4: { input: 3.00, output: 15.00, cached_input: 0.30, cache_creation_input: 3.75, web_search: 10.00 }
  gpt-5: { input: 1.25, output: 10.00, cached_input: 0.125, web_search: 10.00, file_search: 2.50 }
";
    let p = TestProxy::to("wild", fixture_upstream().await, pricing).await;
    let text = replay(
        &p,
        &Case {
            agent: "wild-anthropic-search",
            path: MSG_PATH,
            fixture: "corpus/anthropic/json_web_search_server_tool.response.json",
            request: r#"{"model":"claude-sonnet-4-0","max_tokens":1024,"messages":[{"role":"user","content":"news?"}],"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":5}]}"#,
            expect: &[(
                "claude-sonnet-4-20250514",
                &[("input", 8984.0), ("output", 520.0)],
            )],
        },
    )
    .await;
    let tokens = (8984.0 * 3.0 + 520.0 * 15.0) / 1e6;
    let got = cost(&text, "wild-anthropic-search", "claude-sonnet-4-20250514");
    assert_usd(got, tokens + 0.01, "anthropic web search");
    assert!((0.01 / got) > 0.2, "the fee is over a fifth of the call");
    let text = replay(
        &p,
        &Case {
            agent: "wild-responses-search",
            path: "/v1/responses",
            fixture: "corpus/openai-responses/sse_web_search_cached_reasoning.response.sse",
            request: r#"{"model":"gpt-5","input":"news?","stream":true,"tools":[{"type":"web_search"}]}"#,
            expect: &[(
                "gpt-5-2025-08-07",
                &[
                    ("input", 9463.0),
                    ("output", 582.0),
                    ("cached_input", 8320.0),
                ],
            )],
        },
    )
    .await;
    assert_usd(
        cost(&text, "wild-responses-search", "gpt-5-2025-08-07"),
        (1143.0 * 1.25 + 8320.0 * 0.125 + 582.0 * 10.0) / 1e6 + 0.01,
        "responses web search",
    );
}
