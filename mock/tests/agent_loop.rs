//! `x-mock-script: agent-loop` over real sockets: each format plays a tool call, then (once the
//! request carries its result) the final answer, as an agent framework would drive it.

// clippy.toml's allow-*-in-tests covers #[test] functions only, not this file's helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokenwarden_mock::{MockOptions, MockServer};

const SCRIPT: (&str, &str) = ("x-mock-script", "agent-loop");

/// The tools every conversation declares (JSON Schema; Gemini gets the same schemas).
fn tools() -> Vec<(&'static str, Value)> {
    vec![
        (
            "lookup_weather",
            json!({"type": "object", "properties": {
                "city": {"type": "string"}, "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "detailed": {"type": "boolean"}
            }, "required": ["city", "days", "unit", "detailed"]}),
        ),
        (
            "search_notes",
            json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}),
        ),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fmt {
    Chat,
    Responses,
    Anthropic,
    Gemini,
}

#[derive(Debug, Clone, PartialEq)]
struct Call {
    id: String,
    name: String,
    args: Value,
}

/// What one answer says, read the same way from JSON and from SSE.
#[derive(Debug, Default)]
struct Facts {
    text: String,
    /// Text-carrying parts (messages, blocks, deltas), even empty ones.
    text_parts: usize,
    calls: Vec<Call>,
    finish: String,
    input_tokens: u64,
}

/// A conversation in one format: the request body grows turn by turn.
struct Conversation {
    fmt: Fmt,
    stream: bool,
    body: Value,
}

impl Conversation {
    fn new(fmt: Fmt, stream: bool, prompt: &str) -> Self {
        let decls = tools();
        let body = match fmt {
            Fmt::Chat => json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}],
                "tools": decls.iter().map(|(n, s)| json!({"type": "function", "function": {"name": n, "parameters": s}})).collect::<Vec<_>>(),
                "stream": stream,
                "stream_options": {"include_usage": true},
            }),
            Fmt::Responses => json!({
                "model": "gpt-5",
                "input": [{"role": "user", "content": prompt}],
                "tools": std::iter::once(json!({"type": "web_search"})).chain(decls.iter().map(|(n, s)| json!({"type": "function", "name": n, "parameters": s}))).collect::<Vec<_>>(),
                "stream": stream,
            }),
            Fmt::Anthropic => json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 256,
                "system": "Be brief.",
                "messages": [{"role": "user", "content": prompt}],
                "tools": decls.iter().map(|(n, s)| json!({"name": n, "description": "a tool", "input_schema": s})).collect::<Vec<_>>(),
                "stream": stream,
            }),
            Fmt::Gemini => json!({
                "contents": [{"role": "user", "parts": [{"text": prompt}]}],
                "tools": [{"functionDeclarations": decls.iter().map(|(n, s)| json!({"name": n, "parameters": s})).collect::<Vec<_>>()}],
            }),
        };
        Self { fmt, stream, body }
    }

    fn path(&self) -> &'static str {
        match (self.fmt, self.stream) {
            (Fmt::Chat, _) => "/v1/chat/completions",
            (Fmt::Responses, _) => "/v1/responses",
            (Fmt::Anthropic, _) => "/v1/messages",
            (Fmt::Gemini, false) => "/v1beta/models/gemini-2.5-flash:generateContent",
            (Fmt::Gemini, true) => "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        }
    }

    /// Appends the model's tool calls and their results, as a framework would.
    fn answer_calls(&mut self, calls: &[Call]) {
        let b = &mut self.body;
        match self.fmt {
            Fmt::Chat => {
                let m = b["messages"].as_array_mut().unwrap();
                m.push(json!({"role": "assistant", "content": null, "tool_calls": calls.iter().map(|c| json!({
                    "id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": c.args.to_string()}})).collect::<Vec<_>>()}));
                for c in calls {
                    m.push(json!({"role": "tool", "tool_call_id": c.id, "content": "sunny, 21 degrees"}));
                }
            }
            Fmt::Responses => {
                let items = b["input"].as_array_mut().unwrap();
                for c in calls {
                    items.push(json!({"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.args.to_string()}));
                }
                for c in calls {
                    items.push(json!({"type": "function_call_output", "call_id": c.id, "output": "sunny, 21 degrees"}));
                }
            }
            Fmt::Anthropic => {
                let m = b["messages"].as_array_mut().unwrap();
                m.push(json!({"role": "assistant", "content": calls.iter().map(|c| json!({
                    "type": "tool_use", "id": c.id, "name": c.name, "input": c.args})).collect::<Vec<_>>()}));
                m.push(json!({"role": "user", "content": calls.iter().map(|c| json!({
                    "type": "tool_result", "tool_use_id": c.id, "content": "sunny, 21 degrees"})).collect::<Vec<_>>()}));
            }
            Fmt::Gemini => {
                let cs = b["contents"].as_array_mut().unwrap();
                cs.push(
                    json!({"role": "model", "parts": calls.iter().map(|c| json!({
                    "functionCall": {"name": c.name, "args": c.args}})).collect::<Vec<_>>()}),
                );
                cs.push(json!({"role": "user", "parts": calls.iter().map(|c| json!({
                    "functionResponse": {"name": c.name, "response": {"result": "sunny, 21 degrees"}}})).collect::<Vec<_>>()}));
            }
        }
    }

    /// Appends the final answer and a new user message (the next task of the same session).
    fn follow_up(&mut self, text: &str, prompt: &str) {
        let b = &mut self.body;
        match self.fmt {
            Fmt::Chat => {
                let m = b["messages"].as_array_mut().unwrap();
                m.push(json!({"role": "assistant", "content": text}));
                m.push(json!({"role": "user", "content": prompt}));
            }
            Fmt::Responses => {
                let items = b["input"].as_array_mut().unwrap();
                items.push(json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}));
                items.push(json!({"role": "user", "content": prompt}));
            }
            Fmt::Anthropic => {
                let m = b["messages"].as_array_mut().unwrap();
                m.push(json!({"role": "assistant", "content": text}));
                m.push(json!({"role": "user", "content": prompt}));
            }
            Fmt::Gemini => {
                let cs = b["contents"].as_array_mut().unwrap();
                cs.push(json!({"role": "model", "parts": [{"text": text}]}));
                cs.push(json!({"role": "user", "parts": [{"text": prompt}]}));
            }
        }
    }

    async fn send(&self, m: &MockServer, extra: &[(&str, &str)]) -> Facts {
        let headers: Vec<(&str, &str)> = std::iter::once(SCRIPT)
            .chain(extra.iter().copied())
            .collect();
        let (status, ctype, body) = post(m, self.path(), &headers, &self.body).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert_eq!(
            ctype.starts_with("text/event-stream"),
            self.stream,
            "{ctype}"
        );
        if self.stream {
            sse_facts(self.fmt, &body)
        } else {
            json_facts(self.fmt, &serde_json::from_slice(&body).unwrap())
        }
    }
}

async fn start() -> MockServer {
    MockServer::start("127.0.0.1:0".parse().unwrap(), MockOptions::default())
        .await
        .unwrap()
}

async fn post(
    m: &MockServer,
    path: &str,
    extra: &[(&str, &str)],
    body: &Value,
) -> (StatusCode, String, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req =
        Request::post(format!("{}{path}", m.url())).header("content-type", "application/json");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("answer in time")
        .expect("answer");
    let status = resp.status();
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, body)
}

fn args_of(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(s)
            .unwrap_or_else(|e| panic!("tool arguments are not JSON ({e}): {s:?}")),
        other => other.clone(),
    }
}

fn json_facts(fmt: Fmt, v: &Value) -> Facts {
    let mut f = Facts::default();
    match fmt {
        Fmt::Chat => {
            let choice = &v["choices"][0];
            if let Some(t) = choice["message"]["content"].as_str() {
                f.text_parts += 1;
                f.text += t;
            }
            for c in choice["message"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                f.calls.push(Call {
                    id: c["id"].as_str().unwrap().to_owned(),
                    name: c["function"]["name"].as_str().unwrap().to_owned(),
                    args: args_of(&c["function"]["arguments"]),
                });
            }
            f.finish = choice["finish_reason"].as_str().unwrap().to_owned();
            f.input_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
        }
        Fmt::Responses => {
            for item in v["output"].as_array().unwrap() {
                match item["type"].as_str().unwrap() {
                    "message" => {
                        for part in item["content"].as_array().unwrap() {
                            f.text_parts += 1;
                            f.text += part["text"].as_str().unwrap();
                        }
                    }
                    "function_call" => {
                        assert_eq!(item["status"], "completed");
                        f.calls.push(Call {
                            id: item["call_id"].as_str().unwrap().to_owned(),
                            name: item["name"].as_str().unwrap().to_owned(),
                            args: args_of(&item["arguments"]),
                        });
                    }
                    other => panic!("unexpected output item {other}"),
                }
            }
            assert_eq!(v["status"], "completed");
            f.finish = if f.calls.is_empty() {
                "completed"
            } else {
                "function_call"
            }
            .to_owned();
            f.input_tokens = v["usage"]["input_tokens"].as_u64().unwrap();
        }
        Fmt::Anthropic => {
            for block in v["content"].as_array().unwrap() {
                match block["type"].as_str().unwrap() {
                    "text" => {
                        f.text_parts += 1;
                        f.text += block["text"].as_str().unwrap();
                    }
                    "tool_use" => f.calls.push(Call {
                        id: block["id"].as_str().unwrap().to_owned(),
                        name: block["name"].as_str().unwrap().to_owned(),
                        args: block["input"].clone(),
                    }),
                    other => panic!("unexpected block {other}"),
                }
            }
            f.finish = v["stop_reason"].as_str().unwrap().to_owned();
            f.input_tokens = v["usage"]["input_tokens"].as_u64().unwrap()
                + v["usage"]["cache_read_input_tokens"].as_u64().unwrap();
        }
        Fmt::Gemini => gemini_chunk(&mut f, v),
    }
    f
}

fn gemini_chunk(f: &mut Facts, v: &Value) {
    let cand = &v["candidates"][0];
    for part in cand["content"]["parts"].as_array().unwrap() {
        if let Some(t) = part["text"].as_str() {
            f.text_parts += 1;
            f.text += t;
        }
        if let Some(call) = part.get("functionCall") {
            f.calls.push(Call {
                id: String::new(),
                name: call["name"].as_str().unwrap().to_owned(),
                args: call["args"].clone(),
            });
        }
    }
    if let Some(r) = cand["finishReason"].as_str() {
        f.finish = r.to_owned();
    }
    f.input_tokens = v["usageMetadata"]["promptTokenCount"].as_u64().unwrap();
}

fn sse_data(body: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(body).unwrap().replace("\r\n", "\n");
    text.split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn sse_facts(fmt: Fmt, body: &[u8]) -> Facts {
    let events = sse_data(body);
    let mut f = Facts::default();
    // Arguments as streamed, by call position; parsed once complete.
    let mut args: Vec<String> = Vec::new();
    match fmt {
        Fmt::Chat => {
            for c in &events {
                if let Some(u) = c.get("usage").filter(|u| !u.is_null()) {
                    f.input_tokens = u["prompt_tokens"].as_u64().unwrap();
                }
                let Some(choice) = c["choices"].get(0) else {
                    continue;
                };
                if let Some(t) = choice["delta"]["content"].as_str() {
                    f.text_parts += 1;
                    f.text += t;
                }
                for tc in choice["delta"]["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let i = tc["index"].as_u64().unwrap() as usize;
                    if let Some(id) = tc["id"].as_str() {
                        assert_eq!(i, f.calls.len());
                        f.calls.push(Call {
                            id: id.to_owned(),
                            name: tc["function"]["name"].as_str().unwrap().to_owned(),
                            args: Value::Null,
                        });
                        args.push(String::new());
                    }
                    args[i] += tc["function"]["arguments"].as_str().unwrap_or_default();
                }
                if let Some(r) = choice["finish_reason"].as_str() {
                    f.finish = r.to_owned();
                }
            }
        }
        Fmt::Responses => {
            let mut deltas = String::new();
            for e in &events {
                match e["type"].as_str().unwrap() {
                    "response.output_text.delta" => deltas += e["delta"].as_str().unwrap(),
                    "response.completed" => f = json_facts(Fmt::Responses, &e["response"]),
                    _ => {}
                }
            }
            assert_eq!(deltas, f.text);
            return f;
        }
        Fmt::Anthropic => {
            let mut at_index: Vec<Option<usize>> = Vec::new();
            for e in &events {
                match e["type"].as_str().unwrap() {
                    "message_start" => {
                        let u = &e["message"]["usage"];
                        f.input_tokens = u["input_tokens"].as_u64().unwrap()
                            + u["cache_read_input_tokens"].as_u64().unwrap();
                    }
                    "content_block_start" => {
                        let b = &e["content_block"];
                        if b["type"] == "tool_use" {
                            at_index.push(Some(f.calls.len()));
                            f.calls.push(Call {
                                id: b["id"].as_str().unwrap().to_owned(),
                                name: b["name"].as_str().unwrap().to_owned(),
                                args: Value::Null,
                            });
                            args.push(String::new());
                        } else {
                            at_index.push(None);
                            f.text_parts += 1;
                        }
                    }
                    "content_block_delta" => {
                        let i = e["index"].as_u64().unwrap() as usize;
                        match e["delta"]["type"].as_str().unwrap() {
                            "text_delta" => f.text += e["delta"]["text"].as_str().unwrap(),
                            "input_json_delta" => {
                                args[at_index[i].unwrap()] +=
                                    e["delta"]["partial_json"].as_str().unwrap()
                            }
                            other => panic!("unexpected delta {other}"),
                        }
                    }
                    "message_delta" => {
                        f.finish = e["delta"]["stop_reason"].as_str().unwrap().to_owned()
                    }
                    _ => {}
                }
            }
        }
        Fmt::Gemini => {
            for c in &events {
                gemini_chunk(&mut f, c);
            }
            return f;
        }
    }
    for (call, a) in f.calls.iter_mut().zip(&args) {
        call.args = args_of(&Value::String(a.clone()));
    }
    f
}

fn tool_finish(fmt: Fmt) -> &'static str {
    match fmt {
        Fmt::Chat => "tool_calls",
        Fmt::Responses => "function_call",
        Fmt::Anthropic => "tool_use",
        Fmt::Gemini => "STOP",
    }
}

fn text_finish(fmt: Fmt) -> &'static str {
    match fmt {
        Fmt::Chat => "stop",
        Fmt::Responses => "completed",
        Fmt::Anthropic => "end_turn",
        Fmt::Gemini => "STOP",
    }
}

/// A tool-call turn: calls to the declared tools in order, arguments fitting their schemas,
/// no text at all.
fn assert_tool_turn(fmt: Fmt, f: &Facts, n: usize) {
    assert_eq!(f.calls.len(), n, "{fmt:?}: {f:?}");
    assert_eq!(
        (f.text_parts, f.text.as_str()),
        (0, ""),
        "{fmt:?}: stray text {f:?}"
    );
    assert_eq!(f.finish, tool_finish(fmt), "{fmt:?}");
    let declared = tools();
    for (i, call) in f.calls.iter().enumerate() {
        let (name, schema) = &declared[i % declared.len()];
        assert_eq!(call.name, *name, "{fmt:?}");
        let args = call.args.as_object().expect("arguments are an object");
        for key in schema["required"].as_array().unwrap() {
            let (key, prop) = (
                key.as_str().unwrap(),
                &schema["properties"][key.as_str().unwrap()],
            );
            let v = &args[key];
            let ok = match prop["type"].as_str().unwrap() {
                "string" => v.is_string(),
                "integer" => v.is_i64(),
                "boolean" => v.is_boolean(),
                _ => false,
            };
            assert!(ok, "{fmt:?}: {key} = {v} does not fit {prop}");
            if let Some(e) = prop["enum"].as_array() {
                assert!(e.contains(v), "{fmt:?}: {v} not in {e:?}");
            }
        }
    }
    let mut ids: Vec<&str> = f.calls.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    if fmt != Fmt::Gemini {
        assert_eq!(ids.len(), n, "{fmt:?}: ids distinct within a turn: {f:?}");
    }
}

fn assert_text_turn(fmt: Fmt, f: &Facts) {
    assert!(f.calls.is_empty(), "{fmt:?}: {f:?}");
    assert!(f.text.starts_with("Mock reply from"), "{fmt:?}: {f:?}");
    assert_eq!(f.finish, text_finish(fmt), "{fmt:?}");
}

/// Two tasks of one session: tool call → result → final answer → new prompt → tool call → ...
async fn play(fmt: Fmt, stream: bool) {
    let m = start().await;
    let mut conv = Conversation::new(fmt, stream, "What is the weather in Paris?");

    let first = conv.send(&m, &[]).await;
    assert_tool_turn(fmt, &first, 1);
    conv.answer_calls(&first.calls);
    let answer = conv.send(&m, &[("x-mock-output-chunks", "5")]).await;
    assert_text_turn(fmt, &answer);
    assert!(
        answer.input_tokens > first.input_tokens,
        "{fmt:?}: the result adds tokens"
    );

    conv.follow_up(&answer.text, "And in Lyon, tomorrow?");
    let second = conv.send(&m, &[]).await;
    assert_tool_turn(fmt, &second, 1);
    if fmt != Fmt::Gemini {
        assert_ne!(
            first.calls[0].id, second.calls[0].id,
            "{fmt:?}: ids repeat across turns"
        );
    }
    conv.answer_calls(&second.calls);
    assert_text_turn(fmt, &conv.send(&m, &[]).await);
    assert_eq!(m.stats().requests, 4);
}

#[tokio::test]
async fn chat_plays_an_agent_loop_json_and_sse() {
    play(Fmt::Chat, false).await;
    play(Fmt::Chat, true).await;
}

#[tokio::test]
async fn responses_plays_an_agent_loop_json_and_sse() {
    play(Fmt::Responses, false).await;
    play(Fmt::Responses, true).await;
}

#[tokio::test]
async fn anthropic_plays_an_agent_loop_json_and_sse() {
    play(Fmt::Anthropic, false).await;
    play(Fmt::Anthropic, true).await;
}

#[tokio::test]
async fn gemini_plays_an_agent_loop_json_and_sse() {
    play(Fmt::Gemini, false).await;
    play(Fmt::Gemini, true).await;
}

#[tokio::test]
async fn parallel_tool_calls_on_request_have_distinct_ids() {
    let m = start().await;
    for fmt in [Fmt::Chat, Fmt::Responses, Fmt::Anthropic, Fmt::Gemini] {
        for stream in [false, true] {
            let conv = Conversation::new(fmt, stream, "Weather and notes, please.");
            let f = conv.send(&m, &[("x-mock-tool-calls", "3")]).await;
            // Two declared tools, three calls: the declared ones in order, then again.
            assert_tool_turn(fmt, &f, 3);
        }
    }
}

#[tokio::test]
async fn input_tokens_follow_the_prompt_unless_set_by_header() {
    let m = start().await;
    let long = "Please compare the weather of every capital city in Europe this week. ".repeat(20);
    for fmt in [Fmt::Chat, Fmt::Responses, Fmt::Anthropic, Fmt::Gemini] {
        for stream in [false, true] {
            let short = Conversation::new(fmt, stream, "Weather?")
                .send(&m, &[])
                .await;
            let longer = Conversation::new(fmt, stream, &long).send(&m, &[]).await;
            assert!(short.input_tokens > 0, "{fmt:?}");
            // About 14 o200k tokens per repetition: the count follows the text.
            assert!(
                longer.input_tokens >= short.input_tokens + 200,
                "{fmt:?}: {} vs {}",
                longer.input_tokens,
                short.input_tokens
            );
            let set = Conversation::new(fmt, stream, &long)
                .send(&m, &[("x-mock-input-tokens", "7")])
                .await;
            assert_eq!(set.input_tokens, 7, "{fmt:?}: the header wins");
        }
    }
}

#[tokio::test]
async fn without_declared_tools_the_canned_ones_are_called() {
    let m = start().await;
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, bytes) = post(&m, "/v1/chat/completions", &[SCRIPT], &body).await;
    assert_eq!(status, StatusCode::OK);
    let f = json_facts(Fmt::Chat, &serde_json::from_slice(&bytes).unwrap());
    assert_eq!(f.calls.len(), 1);
    assert_eq!(f.calls[0].name, "get_weather");
    assert_eq!(f.calls[0].id, "call_mock_t1_0001");
    assert_eq!(f.text_parts, 0);
}

#[tokio::test]
async fn an_unknown_script_is_a_bad_request() {
    let m = start().await;
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, bytes) = post(&m, "/v1/messages", &[("x-mock-script", "chaos")], &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("x-mock-script"));
}
