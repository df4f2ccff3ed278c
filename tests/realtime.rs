//! OpenAI Realtime API sessions through the proxy, over real sockets: a WebSocket upstream built
//! here (tokio-tungstenite) that plays the documented server events (tests/fixtures/realtime),
//! and clients that connect through the proxy (tokio-tungstenite, and the official `openai`
//! Python SDK's Realtime client).

#![allow(clippy::unwrap_used, clippy::expect_used)]
// The upstreams' handshake callbacks return tungstenite's error type (an HTTP response).
#![allow(clippy::result_large_err)]

mod common;
mod otlp_receiver;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use common::*;
use otlp_receiver::*;

const SESSION_CREATED: &str = include_str!("fixtures/realtime/session_created.json");
const DONE_AUDIO: &str = include_str!("fixtures/realtime/response_done_audio.json");
const DONE_TEXT: &str = include_str!("fixtures/realtime/response_done_text.json");
const DONE_CANCELLED: &str = include_str!("fixtures/realtime/response_done_cancelled.json");

/// How the upstream answers each `response.create`.
#[derive(Clone, Copy)]
enum Play {
    /// `response.created`, `deltas` text deltas, then `response.done` (the audio fixture first,
    /// the text one next).
    Complete { deltas: usize },
    /// `response.created`, `deltas` deltas 10 ms apart, then nothing until `response.cancel`,
    /// answered with the cancelled `response.done`.
    UntilCancelled { deltas: usize },
    /// The first response (the conversation's) stays in progress; the second (out of band,
    /// `conversation: "none"`) runs and ends first, then the first ends: each `response.done`
    /// (the text fixture for the second, the audio one for the first) names its own response.
    OutOfBand,
    /// `response.created`, then one delta over the proxy's 16 MiB message bound.
    TooBig,
    /// As `UntilCancelled`, but `response.cancel` is never answered (an upstream that stalls):
    /// the proxy waits its bounded cancel wait for the final event.
    IgnoresCancel,
    /// The first response as `Complete` with one delta, the next as `IgnoresCancel`.
    SecondIgnoresCancel,
    /// A transcription-only session (`intent=transcription`): each committed turn is
    /// transcribed (`TRANSCRIBED`, usage in tokens), no response ever starts.
    Transcribes,
}

/// A transcription session's start (GA shape): its input audio is transcribed by
/// gpt-4o-transcribe, which is what its transcriptions cost.
const TRANSCRIPTION_SESSION_CREATED: &str = r#"{"type":"session.created","event_id":"event_s1","session":{"type":"transcription","object":"realtime.transcription_session","id":"sess_T1","audio":{"input":{"format":{"type":"audio/pcm","rate":24000},"transcription":{"model":"gpt-4o-transcribe","language":"en","prompt":""},"noise_reduction":null,"turn_detection":{"type":"server_vad","threshold":0.5,"prefix_padding_ms":300,"silence_duration_ms":500}}},"include":null}}"#;

/// A finished input audio transcription, as gpt-4o-transcribe states it (usage in tokens).
const TRANSCRIBED: &str = r#"{"type":"conversation.item.input_audio_transcription.completed","event_id":"event_t1","item_id":"i","content_index":0,"transcript":"hi","usage":{"type":"tokens","input_tokens":17,"input_token_details":{"text_tokens":0,"audio_tokens":17},"output_tokens":9,"total_tokens":26}}"#;

/// What the upstream saw and sent, message by message.
#[derive(Default)]
struct Seen {
    headers: Vec<(String, String)>,
    query: Option<String>,
    received: Vec<Message>,
    sent: Vec<Message>,
    /// The close frame's code, when the proxy sent one; `None` while the connection is open or
    /// when it ended without one.
    close: Option<u16>,
    ended: bool,
}

/// A Realtime upstream on loopback, one session per connection.
async fn upstream(play: Play) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(session(stream, play, s.clone()));
        }
    });
    (addr, seen)
}

async fn session(stream: TcpStream, play: Play, seen: Arc<Mutex<Seen>>) {
    let s = seen.clone();
    let ws = tokio_tungstenite::accept_hdr_async(stream, move |req: &Request, resp: Response| {
        let mut seen = s.lock().unwrap();
        seen.query = req.uri().query().map(str::to_string);
        seen.headers = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        Ok(resp)
    })
    .await
    .unwrap();
    let (mut tx, mut rx) = ws.split();
    let created = match play {
        Play::Transcribes => TRANSCRIPTION_SESSION_CREATED,
        _ => SESSION_CREATED.trim(),
    };
    send(&mut tx, &seen, created.to_string()).await.unwrap();
    let mut responses = 0;
    while let Some(Ok(msg)) = rx.next().await {
        seen.lock().unwrap().received.push(msg.clone());
        let event = match &msg {
            Message::Text(t) => serde_json::from_str::<serde_json::Value>(t).unwrap_or_default(),
            _ => serde_json::Value::Null,
        };
        let kind = event["type"].as_str().unwrap_or_default();
        let client_id = event["event_id"].as_str().unwrap_or_default();
        match &msg {
            Message::Close(frame) => {
                seen.lock().unwrap().close = frame.as_ref().map(|f| u16::from(f.code));
                break;
            }
            Message::Binary(b) => {
                let echo = Message::Binary(b.clone());
                seen.lock().unwrap().sent.push(echo.clone());
                let _ = tx.send(echo).await;
            }
            Message::Text(_)
                if kind == "response.cancel"
                    && !matches!(play, Play::IgnoresCancel | Play::SecondIgnoresCancel) =>
            {
                let _ = send(&mut tx, &seen, DONE_CANCELLED.trim().to_string()).await;
            }
            // A request while a response is in progress: refused with the documented `error`
            // event naming the client's event, `null` when it had no id (played for ids starting
            // `evt_busy`, and for requests whose metadata says `busy`).
            Message::Text(_)
                if kind == "response.create"
                    && (client_id.starts_with("evt_busy")
                        || event["response"]["metadata"]["busy"].is_string()) =>
            {
                let named = if client_id.is_empty() {
                    "null".to_string()
                } else {
                    format!("\"{client_id}\"")
                };
                let error = format!(
                    r#"{{"type":"error","event_id":"event_e{}","error":{{"type":"invalid_request_error","code":"conversation_already_has_active_response","message":"Conversation already has an active response in progress: resp_1. Wait until the response is finished before creating a new one.","param":null,"event_id":{named}}}}}"#,
                    seen.lock().unwrap().received.len()
                );
                if send(&mut tx, &seen, error).await.is_err() {
                    break;
                }
            }
            Message::Text(_)
                if kind == "input_audio_buffer.commit" && matches!(play, Play::Transcribes) =>
            {
                let sent = send(&mut tx, &seen, TRANSCRIBED.to_string()).await;
                if sent.is_err() {
                    break;
                }
            }
            // A committed turn starts a response with no `response.create`, as the server's
            // turn detection (`create_response: true`) does.
            Message::Text(_)
                if kind == "response.create" || kind == "input_audio_buffer.commit" =>
            {
                responses += 1;
                let id = format!("resp_{responses}");
                let created = format!(
                    r#"{{"type":"response.created","event_id":"event_c{responses}","response":{{"object":"realtime.response","id":"{id}","status":"in_progress","output":[],"usage":null}}}}"#
                );
                if send(&mut tx, &seen, created).await.is_err() {
                    break;
                }
                let (deltas, wait) = match play {
                    // A transcription session's responses, if asked for, as `Complete`.
                    Play::Complete { deltas } => (deltas, false),
                    Play::Transcribes => (1, false),
                    Play::UntilCancelled { deltas } => (deltas, true),
                    Play::IgnoresCancel => (2, true),
                    Play::SecondIgnoresCancel if responses == 1 => (1, false),
                    Play::SecondIgnoresCancel => (2, true),
                    Play::OutOfBand => (1, true),
                    Play::TooBig => {
                        let huge = "a".repeat(17 * 1024 * 1024);
                        let delta = format!(
                            r#"{{"type":"response.output_text.delta","response_id":"{id}","delta":"{huge}"}}"#
                        );
                        let _ = tx.send(Message::text(delta)).await;
                        (0, true)
                    }
                };
                for i in 0..deltas {
                    let delta = format!(
                        r#"{{"type":"response.output_text.delta","event_id":"event_d{responses}_{i}","response_id":"{id}","item_id":"item_1","output_index":0,"content_index":0,"delta":" alpha beta gamma"}}"#
                    );
                    if send(&mut tx, &seen, delta).await.is_err() {
                        break;
                    }
                    if wait {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                if let (Play::OutOfBand, 2) = (play, responses) {
                    let own = DONE_TEXT
                        .trim()
                        .replace("resp_CZxh1kPz5Hq9Lm2Xc7Vb0", "resp_2");
                    let first = DONE_AUDIO
                        .trim()
                        .replace("resp_CZxgY0nX2Wgr7N8a3mJ5h", "resp_1");
                    let _ = send(&mut tx, &seen, own).await;
                    let _ = send(&mut tx, &seen, first).await;
                } else if !wait {
                    let done = if responses % 2 == 1 {
                        DONE_AUDIO
                    } else {
                        DONE_TEXT
                    };
                    let _ = send(&mut tx, &seen, done.trim().to_string()).await;
                }
            }
            _ => {}
        }
    }
    seen.lock().unwrap().ended = true;
}

/// Whether the upstream saw its session end within 5 s.
async fn upstream_ended(seen: &Mutex<Seen>) -> bool {
    eventually(Duration::from_secs(5), || async {
        seen.lock().unwrap().ended
    })
    .await
}

/// Send `text` upstream-side, noting it as sent.
async fn send(
    tx: &mut futures_util::stream::SplitSink<WebSocketStream<TcpStream>, Message>,
    seen: &Mutex<Seen>,
    text: String,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    seen.lock().unwrap().sent.push(Message::text(text.clone()));
    tx.send(Message::text(text)).await
}

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client through the proxy, for session `session` of agent `agent`.
async fn connect(proxy: &TestProxy, agent: &str, session: &str) -> Client {
    let url = format!("ws://{}/v1/realtime?model=gpt-realtime", proxy.addr);
    let mut req = url.into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert("authorization", "Bearer sk-realtime-test".parse().unwrap());
    h.insert("x-agent-name", agent.parse().unwrap());
    h.insert("x-session-id", session.parse().unwrap());
    h.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    // Offered by browsers and the `websockets` library; the proxy takes it out (it reads
    // frames), and the upstream must then answer without it.
    h.insert(
        "sec-websocket-extensions",
        "permessage-deflate; client_max_window_bits"
            .parse()
            .unwrap(),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

/// Text messages until (and with) the first whose `type` is `until`.
async fn read_until(ws: &mut Client, until: &str) -> Vec<Message> {
    let mut got = Vec::new();
    let needle = format!(r#""type":"{until}""#);
    loop {
        let Ok(next) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await else {
            panic!("no {until} within 5 s; got {got:?}");
        };
        let Some(msg) = next else { break };
        let msg = msg.unwrap();
        let stop = matches!(&msg, Message::Text(t) if t.contains(&needle));
        got.push(msg);
        if stop {
            break;
        }
    }
    got
}

/// The next `error` event, read and as sent.
async fn next_error(ws: &mut Client) -> (serde_json::Value, String) {
    let got = read_until(ws, "error").await;
    let Some(Message::Text(t)) = got.last() else {
        panic!("no error event: {got:?}");
    };
    (serde_json::from_str(t).unwrap(), t.to_string())
}

fn create(id: &str) -> Message {
    Message::text(format!(
        r#"{{"type":"response.create","event_id":"{id}","response":{{"output_modalities":["text"]}}}}"#
    ))
}

#[tokio::test]
async fn a_session_with_two_responses_counts_each_exactly_on_its_own_span_frames_untouched() {
    let (up, seen) = upstream(Play::Complete { deltas: 3 }).await;
    let rx = Receiver::grpc().await;
    let proxy = TestProxy::to(
        "rt",
        up,
        &format!(
            "telemetry:\n  otlp:\n    endpoint: {}\n    protocol: grpc\n\
             pricing:\n  gpt-realtime:\n    input: 4\n    cached_input: 0.4\n    output: 16\n    audio_input: 32\n    audio_output: 64\n\
             budgets:\n  store:\n    snapshot_path: ''\n",
            rx.endpoint()
        ),
    )
    .await;
    let mut ws = connect(&proxy, "rt-two", "sess-two").await;
    let mut received = read_until(&mut ws, "session.created").await;
    let sent_by_client = vec![
        Message::text(
            r#"{"type":"session.update","session":{"type":"realtime","instructions":"Be brief."}}"#,
        ),
        Message::text(
            r#"{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"Tallest mountain?"}]}}"#,
        ),
        Message::Binary(vec![0u8, 1, 2, 0xff, 0xfe].into()),
        create("evt_client_1"),
    ];
    for m in &sent_by_client {
        ws.send(m.clone()).await.unwrap();
    }
    received.extend(read_until(&mut ws, "response.done").await);
    ws.send(create("evt_client_2")).await.unwrap();
    received.extend(read_until(&mut ws, "response.done").await);
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
    .await
    .unwrap();
    while let Some(Ok(_)) = ws.next().await {}

    // Byte-identical payloads both ways, in order (the upstream's binary echo included).
    let ended = upstream_ended(&seen).await;
    assert!(ended, "the upstream saw the session end");
    {
        let seen = seen.lock().unwrap();
        let data = |v: &[Message]| -> Vec<Message> {
            v.iter()
                .filter(|m| matches!(m, Message::Text(_) | Message::Binary(_)))
                .cloned()
                .collect()
        };
        let mut expected_up = sent_by_client.clone();
        expected_up.push(create("evt_client_2"));
        assert_eq!(data(&seen.received), expected_up);
        assert_eq!(data(&received), data(&seen.sent));
        assert_eq!(
            seen.close,
            Some(1000),
            "the client's close frame went upstream"
        );
        assert_eq!(seen.query.as_deref(), Some("model=gpt-realtime"));
        let header = |n: &str| {
            seen.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("authorization"), Some("Bearer sk-realtime-test"));
        assert_eq!(header("sec-websocket-extensions"), None);
    }

    // One span per response, each with its own response.done usage.
    let arrived = eventually(Duration::from_secs(10), || async { rx.spans().len() >= 2 }).await;
    assert!(arrived, "{} spans", rx.spans().len());
    let spans = rx.spans();
    assert_eq!(
        spans.len(),
        2,
        "one span per response, none for the upgrade"
    );
    let usage: Vec<_> = spans
        .iter()
        .map(|r| {
            let a = attrs(&r.span);
            (
                a.get("gen_ai.usage.input_tokens").cloned(),
                a.get("gen_ai.usage.output_tokens").cloned(),
                a.get("gen_ai.usage.cache_read.input_tokens").cloned(),
                a.get("gen_ai.response.id").cloned(),
                a.get("session.id").cloned(),
            )
        })
        .collect();
    assert_eq!(
        usage,
        [
            (
                Some(V::I(1261)),
                Some(V::I(371)),
                Some(V::I(1024)),
                Some(s("resp_CZxgY0nX2Wgr7N8a3mJ5h")),
                Some(s("sess-two"))
            ),
            (
                Some(V::I(1398)),
                Some(V::I(13)),
                Some(V::I(1280)),
                Some(s("resp_CZxh1kPz5Hq9Lm2Xc7Vb0")),
                Some(s("sess-two"))
            ),
        ]
    );
    for r in &spans {
        assert_eq!(
            hex(&r.span.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "each response is a child of the agent's trace"
        );
        assert_eq!(
            attrs(&r.span).get("gen_ai.request.model"),
            Some(&s("gpt-realtime"))
        );
    }

    // The audio part of the first response, on its span.
    let a = attrs(&spans[0].span);
    assert_eq!(
        a.get("tokenwarden.usage.audio.input_tokens"),
        Some(&V::I(74))
    );
    assert_eq!(
        a.get("tokenwarden.usage.audio.output_tokens"),
        Some(&V::I(280))
    );

    let metrics = proxy.metrics().await;
    // Audio at the audio prices: response 1 — plain input 237 (74 audio, 163 text), 1024 cached,
    // output 280 audio + 91 text; response 2 — plain 118 (74 audio, 44 text), 1280 cached,
    // 13 text out. The served model is dated: the `gpt-realtime` prices apply to it.
    let usd = (74.0 * 32.0
        + 163.0 * 4.0
        + 1024.0 * 0.4
        + 280.0 * 64.0
        + 91.0 * 16.0
        + 74.0 * 32.0
        + 44.0 * 4.0
        + 1280.0 * 0.4
        + 13.0 * 16.0)
        / 1e6;
    let cost = metric_sum(
        &metrics,
        "tokenwarden_cost_usd_total",
        &[("agent", "rt-two")],
    );
    assert!((cost - usd).abs() < 1e-9, "cost {cost} != {usd}");
    let tokens = |kind: &str| {
        metric_value(
            &metrics,
            "tokenwarden_tokens_total",
            &[("agent", "rt-two"), ("type", kind), ("source", "provider")],
        )
    };
    assert_eq!(tokens("input"), 1261.0 + 1398.0);
    assert_eq!(tokens("output"), 371.0 + 13.0);
    assert_eq!(tokens("cached_input"), 1024.0 + 1280.0);
    assert_eq!(
        metric_value(
            &metrics,
            "tokenwarden_requests_total",
            &[("agent", "rt-two"), ("status", "2xx")],
        ),
        2.0,
        "each response is a call"
    );
}

#[tokio::test]
async fn a_response_create_over_the_session_budget_is_refused_with_an_error_event_not_forwarded() {
    let (up, seen) = upstream(Play::Complete { deltas: 1 }).await;
    let proxy = TestProxy::to(
        "rt",
        up,
        "budgets:\n  store:\n    snapshot_path: ''\n  default_max_output_tokens: 100\n  limits:\n    - scope: session\n      tokens: 2000\n      action: reject\n",
    )
    .await;
    let mut ws = connect(&proxy, "rt-refuse", "sess-refuse").await;
    read_until(&mut ws, "session.created").await;
    ws.send(create("evt_ok")).await.unwrap();
    read_until(&mut ws, "response.done").await; // 1632 tokens spent
    ws.send(create("evt_over")).await.unwrap();
    let (e, _) = next_error(&mut ws).await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["code"], "session_token_budget_exceeded");
    assert_eq!(e["error"]["type"], "budget_exceeded");
    assert_eq!(
        e["error"]["event_id"], "evt_over",
        "names the refused event"
    );
    // The session stays usable: other events still pass.
    ws.send(Message::text(r#"{"type":"input_audio_buffer.clear"}"#))
        .await
        .unwrap();
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    let ended = upstream_ended(&seen).await;
    assert!(ended);
    {
        let seen = seen.lock().unwrap();
        let creates: Vec<_> = seen
            .received
            .iter()
            .filter_map(|m| match m {
                Message::Text(t) if t.contains("response.create") => Some(t.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(creates.len(), 1, "the refused create never went upstream");
        assert!(creates[0].contains("evt_ok"));
        assert!(seen
            .received
            .iter()
            .any(|m| matches!(m, Message::Text(t) if t.contains("input_audio_buffer.clear"))));
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "tokenwarden_tokens_total",
            &[
                ("agent", "rt-refuse"),
                ("type", "input"),
                ("source", "provider")
            ]
        ),
        1261.0
    );
}

#[tokio::test]
async fn a_cut_limit_ends_the_session_with_an_error_event_and_close_frames_both_ways() {
    let (up, seen) = upstream(Play::UntilCancelled { deltas: 60 }).await;
    let proxy = TestProxy::to(
        "rt",
        up,
        "budgets:\n  store:\n    snapshot_path: ''\n  default_max_output_tokens: 100\n  limits:\n    - scope: session\n      tokens: 200\n      action: cut\n",
    )
    .await;
    let mut ws = connect(&proxy, "rt-cut", "sess-cut").await;
    read_until(&mut ws, "session.created").await;
    ws.send(create("evt_cut")).await.unwrap();
    let mut deltas = 0;
    let mut error = None;
    let mut close = None;
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the session ends within 5 s")
    {
        match msg {
            Ok(Message::Text(t)) if t.contains("output_text.delta") => deltas += 1,
            Ok(Message::Text(t)) if t.contains(r#""type":"error""#) => {
                error = Some(serde_json::from_str::<serde_json::Value>(&t).unwrap())
            }
            Ok(Message::Close(f)) => close = f,
            Ok(_) => {}
            Err(e) => panic!("not a clean close: {e}"),
        }
    }
    let error = error.expect("an error event before the close");
    assert_eq!(error["error"]["code"], "budget_exceeded");
    let close = close.expect("a close frame");
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(close.reason.as_str(), "budget_exceeded");
    assert!(
        (1..60).contains(&deltas),
        "the client got the output up to the allowance: {deltas} deltas"
    );
    let ended = upstream_ended(&seen).await;
    assert!(ended, "the upstream connection was closed");
    {
        let seen = seen.lock().unwrap();
        assert!(
            seen.received
                .iter()
                .any(|m| matches!(m, Message::Text(t) if t.contains("response.cancel"))),
            "the response was cancelled upstream"
        );
        assert_eq!(seen.close, Some(1001), "and the upstream got a close frame");
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "tokenwarden_budget_decisions_total",
            &[("scope", "session"), ("decision", "cut")]
        ),
        1.0
    );
    // The cancelled response's own usage: what was generated, counted exactly.
    assert_eq!(
        metric_value(
            &metrics,
            "tokenwarden_tokens_total",
            &[
                ("agent", "rt-cut"),
                ("type", "output"),
                ("source", "provider")
            ]
        ),
        70.0
    );
}

#[tokio::test]
async fn a_client_that_goes_away_mid_response_cancels_it_upstream_and_its_usage_still_counts() {
    let (up, seen) = upstream(Play::UntilCancelled { deltas: 3 }).await;
    let proxy = TestProxy::to("rt", up, "").await;
    let mut ws = connect(&proxy, "rt-gone", "sess-gone").await;
    read_until(&mut ws, "session.created").await;
    ws.send(create("evt_gone")).await.unwrap();
    read_until(&mut ws, "response.output_text.delta").await;
    // Gone without a close frame: the TCP connection just ends.
    drop(ws);
    let ended = upstream_ended(&seen).await;
    assert!(ended, "the upstream connection was closed");
    {
        let seen = seen.lock().unwrap();
        assert!(seen
            .received
            .iter()
            .any(|m| matches!(m, Message::Text(t) if t.contains("response.cancel"))));
        assert_eq!(seen.close, Some(1001), "going away, said to the upstream");
    }
    let counted = eventually(Duration::from_secs(5), || async {
        metric_value(
            &proxy.metrics().await,
            "tokenwarden_tokens_total",
            &[
                ("agent", "rt-gone"),
                ("type", "output"),
                ("source", "provider"),
            ],
        ) == 70.0
    })
    .await;
    assert!(counted, "{}", proxy.metrics().await);
    let metrics = proxy.metrics().await;
    assert!(
        metric_value(
            &metrics,
            "tokenwarden_client_disconnects_total",
            &[("route", "rt")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn the_openai_python_sdk_realtime_client_runs_a_session_through_the_proxy() {
    let (up, _seen) = upstream(Play::Complete { deltas: 2 }).await;
    let proxy = TestProxy::to("rt", up, "").await;
    let out = run_sdk_script_with(
        "realtime.py",
        &[&format!("ws://{}/v1", proxy.addr), "rt-sdk"],
    )
    .await;
    assert_eq!(out["session_model"], "gpt-realtime-2025-08-28");
    assert_eq!(out["usage"][0]["input_tokens"], 1261);
    assert_eq!(out["usage"][1]["output_tokens"], 13);
    assert_eq!(out["deltas"], 4);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "tokenwarden_tokens_total",
            &[
                ("agent", "rt-sdk"),
                ("type", "output"),
                ("source", "provider")
            ]
        ),
        371.0 + 13.0
    );
}

#[tokio::test]
async fn other_websocket_upgrades_are_tunnelled_unread_and_a_refused_upgrade_is_forwarded() {
    // An echo server on a path no format reads.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let refuse = |req: &Request, resp: Response| {
                    if req.headers().contains_key("authorization") {
                        Ok(resp)
                    } else {
                        let mut r =
                            tokio_tungstenite::tungstenite::handshake::server::ErrorResponse::new(
                                Some("no key".into()),
                            );
                        *r.status_mut() = http::StatusCode::UNAUTHORIZED;
                        Err(r)
                    }
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, refuse).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() || m.is_binary() {
                        let _ = ws.send(m).await;
                    }
                }
            });
        }
    });
    let proxy = TestProxy::to("ws", up, "").await;
    let url = format!("ws://{}/socket/echo", proxy.addr);
    let mut req = url.clone().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer k".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    for m in [
        Message::text(r#"{"type":"response.create"}"#),
        Message::Binary(vec![9u8; 70_000].into()),
    ] {
        ws.send(m.clone()).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back, m, "echoed unchanged through the tunnel");
    }
    ws.close(None).await.unwrap();

    // Without the key the upstream answers 401: the client gets that answer, not a 101. Read
    // with a plain socket until the body arrives (tungstenite keeps only the body bytes that
    // came in the same read as the head, and head and body may leave the proxy apart).
    let mut raw = TcpStream::connect(proxy.addr).await.unwrap();
    raw.write_all(
        format!(
            "GET /socket/echo HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            proxy.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&got).contains("no key") {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, raw.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no body in time: {:?}", String::from_utf8_lossy(&got)))
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 401"),
        "not the upstream's 401: {got:?}"
    );
}

#[tokio::test]
async fn a_shutdown_ends_open_sessions_cleanly_and_settles_their_responses() {
    let (up, seen) = upstream(Play::UntilCancelled { deltas: 2 }).await;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("budgets.json");
    let proxy = TestProxy::to(
        "rt",
        up,
        &format!(
            "server:\n  shutdown_grace: 5s\nbudgets:\n  store:\n    snapshot_path: {}\n  limits:\n    - scope: session\n      tokens: 100000\n",
            snapshot.display()
        ),
    )
    .await;
    let mut ws = connect(&proxy, "rt-shutdown", "sess-shutdown").await;
    read_until(&mut ws, "session.created").await;
    ws.send(create("evt_open")).await.unwrap();
    read_until(&mut ws, "response.output_text.delta").await;
    let stopping = tokio::spawn(proxy.stop());
    let mut close = None;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        if let Message::Close(f) = msg {
            close = f;
        }
    }
    let close = close.expect("a close frame at shutdown");
    assert_eq!(close.code, CloseCode::Away);
    let drained = stopping.await.unwrap();
    assert!(
        matches!(drained, tokenwarden::server::Drained::Clean),
        "the session ended within the grace"
    );
    let ended = upstream_ended(&seen).await;
    assert!(ended);
    {
        let seen = seen.lock().unwrap();
        assert!(seen
            .received
            .iter()
            .any(|m| matches!(m, Message::Text(t) if t.contains("response.cancel"))));
        assert_eq!(seen.close, Some(1001));
    }
    // The cancelled response's usage (120 in + 70 out) is in the final snapshot.
    let snap = std::fs::read_to_string(&snapshot).unwrap();
    assert!(snap.contains("sess-shutdown"), "{snap}");
    assert!(snap.contains("190"), "the session's 190 tokens: {snap}");
}

#[tokio::test]
async fn a_session_outlasting_the_grace_holds_a_per_core_shutdown_for_one_grace_not_one_per_worker()
{
    // Every worker ends the sessions at shutdown, each within what is left of the grace. They
    // used to queue for the wait one after another, each for its whole grace: four workers, a
    // session still open (its response's cancel unanswered, waited for 2 s) held the shutdown
    // four graces long (2 s here), past any orchestrator's kill. Past the grace the session is
    // dropped and its calls finish before the final snapshot (they used to be dropped only when
    // the worker's runtime stopped, after it: their reservations still in it, unsettled).
    let (up, _seen) = upstream(Play::IgnoresCancel).await;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("budgets.json");
    let proxy = TestProxy::to(
        "rt",
        up,
        &format!(
            "server:\n  runtime: per_core\n  workers: 4\n  shutdown_grace: 500ms\nbudgets:\n  store:\n    snapshot_path: {}\n  limits:\n    - scope: session\n      tokens: 100000\n",
            snapshot.display()
        ),
    )
    .await;
    let mut ws = connect(&proxy, "rt-stall", "sess-stall").await;
    read_until(&mut ws, "session.created").await;
    ws.send(create("evt_open")).await.unwrap();
    read_until(&mut ws, "response.output_text.delta").await;
    let began = std::time::Instant::now();
    let drained = proxy.stop().await;
    let took = began.elapsed();
    assert!(
        matches!(drained, tokenwarden::server::Drained::DeadlineExceeded),
        "the session outlasted the grace"
    );
    assert!(
        took < Duration::from_millis(1_300),
        "the shutdown took {took:?} with a 500 ms grace"
    );
    let snap: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&snapshot).unwrap()).unwrap();
    let groups = snap["groups"].to_string();
    assert!(groups.contains("sess-stall"), "{snap}");
    // Its response's call finished before the snapshot: no reservation left held in it.
    let held: u64 = snap["groups"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.contains("sess-stall"))
        .flat_map(|(_, g)| g["counters"].as_object().unwrap().values())
        .map(|c| c["reserved"].as_u64().unwrap())
        .sum();
    assert_eq!(held, 0, "the dropped response was settled: {snap}");
}

#[tokio::test]
async fn response_creates_the_upstream_refuses_end_their_calls_and_never_fill_the_session() {
    let (up, _seen) = upstream(Play::Complete { deltas: 1 }).await;
    let proxy = TestProxy::to("rt", up, "budgets:\n  store:\n    snapshot_path: ''\n").await;
    let mut ws = connect(&proxy, "rt-busy", "sess-busy").await;
    read_until(&mut ws, "session.created").await;
    // More refused requests than a session may have responses open at once, half of them
    // without an id (as the SDKs send them).
    for i in 0..20 {
        let request = if i % 2 == 0 {
            create(&format!("evt_busy_{i}"))
        } else {
            Message::text(r#"{"type":"response.create","response":{"metadata":{"busy":"1"}}}"#)
        };
        ws.send(request).await.unwrap();
        let (e, t) = next_error(&mut ws).await;
        assert_eq!(
            e["error"]["code"], "conversation_already_has_active_response",
            "request {i}: the upstream's own refusal, not the proxy's: {t}"
        );
    }
    ws.send(create("evt_ok")).await.unwrap();
    let got = read_until(&mut ws, "response.done").await;
    assert!(
        !got.iter()
            .any(|m| matches!(m, Message::Text(t) if t.contains(r#""type":"error""#))),
        "{got:?}"
    );
    // Each refused request ended at its refusal, as a client error costing nothing; the served
    // one is the one that got the response.
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "tokenwarden_requests_total",
            &[("agent", "rt-busy"), ("status", "4xx")],
        ),
        20.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "tokenwarden_requests_total",
            &[("agent", "rt-busy"), ("status", "2xx")],
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "tokenwarden_tokens_total",
            &[
                ("agent", "rt-busy"),
                ("type", "input"),
                ("source", "provider")
            ]
        ),
        1261.0
    );
}

#[tokio::test]
async fn responses_the_servers_turn_detection_starts_are_admitted_and_charged_to_the_session() {
    let (up, seen) = upstream(Play::Complete { deltas: 1 }).await;
    let proxy = TestProxy::to(
        "rt",
        up,
        "budgets:\n  store:\n    snapshot_path: ''\n  default_max_output_tokens: 100\n  limits:\n    - scope: session\n      tokens: 2000\n      action: reject\n",
    )
    .await;
    let mut ws = connect(&proxy, "rt-vad", "sess-vad").await;
    read_until(&mut ws, "session.created").await;
    let commit = Message::text(r#"{"type":"input_audio_buffer.commit"}"#);
    ws.send(commit.clone()).await.unwrap();
    read_until(&mut ws, "response.done").await; // 1632 tokens, no response.create
                                                // The session's budget was charged: a request for one more is refused.
    ws.send(create("evt_after_turn")).await.unwrap();
    let (e, t) = next_error(&mut ws).await;
    assert_eq!(e["error"]["code"], "session_token_budget_exceeded", "{t}");
    assert_eq!(e["error"]["event_id"], "evt_after_turn");
    // The next turn the server starts itself is refused too: the session ends with the
    // refusal and a close frame, the response cancelled upstream.
    ws.send(commit).await.unwrap();
    let mut error = None;
    let mut close = None;
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the session ends within 5 s")
    {
        match msg {
            Ok(Message::Text(t)) if t.contains(r#""type":"error""#) => {
                error = Some(serde_json::from_str::<serde_json::Value>(&t).unwrap())
            }
            Ok(Message::Close(f)) => close = f,
            Ok(_) => {}
            Err(e) => panic!("not a clean close: {e}"),
        }
    }
    let error = error.expect("an error event before the close");
    assert_eq!(error["error"]["code"], "session_token_budget_exceeded");
    assert_eq!(close.expect("a close frame").code, CloseCode::Policy);
    let ended = upstream_ended(&seen).await;
    assert!(ended, "the upstream connection was closed");
    {
        let seen = seen.lock().unwrap();
        assert!(seen
            .received
            .iter()
            .any(|m| matches!(m, Message::Text(t) if t.contains("response.cancel"))));
        assert!(
            !seen
                .received
                .iter()
                .any(|m| matches!(m, Message::Text(t) if t.contains("response.create"))),
            "the refused request never went upstream"
        );
    }
    // Both responses the server started are counted, the refused one too (it ran).
    let counted = eventually(Duration::from_secs(5), || async {
        metric_value(
            &proxy.metrics().await,
            "tokenwarden_tokens_total",
            &[
                ("agent", "rt-vad"),
                ("type", "input"),
                ("source", "provider"),
            ],
        ) == 1261.0 + 1398.0
    })
    .await;
    assert!(counted, "{}", proxy.metrics().await);
}

#[tokio::test]
async fn a_client_message_past_the_relay_bound_closes_with_1009_and_the_upstream_is_told() {
    let (up, seen) = upstream(Play::UntilCancelled { deltas: 1 }).await;
    let proxy = TestProxy::to("rt", up, "").await;
    let mut ws = connect(&proxy, "rt-big", "sess-big").await;
    read_until(&mut ws, "session.created").await;
    ws.send(create("evt_big")).await.unwrap();
    read_until(&mut ws, "response.output_text.delta").await;
    // One audio append over the proxy's 16 MiB bound.
    let audio = "A".repeat(17 * 1024 * 1024);
    let big = format!(r#"{{"type":"input_audio_buffer.append","audio":"{audio}"}}"#);
    let _ = ws.send(Message::text(big)).await;
    let mut close = None;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        match msg {
            Ok(Message::Close(f)) => close = f,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let close = close.expect("a close frame, not a dropped connection");
    assert_eq!(close.code, CloseCode::Size);
    let ended = upstream_ended(&seen).await;
    assert!(ended, "the upstream connection was closed");
    let seen = seen.lock().unwrap();
    assert!(
        seen.received
            .iter()
            .any(|m| matches!(m, Message::Text(t) if t.contains("response.cancel"))),
        "the open response was cancelled upstream"
    );
    assert!(
        !seen
            .received
            .iter()
            .any(|m| matches!(m, Message::Text(t) if t.len() > 16 * 1024 * 1024)),
        "the message never went upstream"
    );
    assert_eq!(seen.close, Some(1001));
}

#[tokio::test]
async fn responses_that_end_out_of_order_are_each_finished_by_their_own_done() {
    let (up, _seen) = upstream(Play::OutOfBand).await;
    let rx = Receiver::grpc().await;
    let proxy = TestProxy::to(
        "rt",
        up,
        &format!(
            "telemetry:\n  otlp:\n    endpoint: {}\n    protocol: grpc\n",
            rx.endpoint()
        ),
    )
    .await;
    let mut ws = connect(&proxy, "rt-oob", "sess-oob").await;
    read_until(&mut ws, "session.created").await;
    ws.send(Message::text(
        r#"{"type":"response.create","event_id":"evt_conv","response":{"max_output_tokens":64}}"#,
    ))
    .await
    .unwrap();
    read_until(&mut ws, "response.output_text.delta").await;
    ws.send(Message::text(
        r#"{"type":"response.create","event_id":"evt_oob","response":{"conversation":"none","max_output_tokens":32}}"#,
    ))
    .await
    .unwrap();
    read_until(&mut ws, "response.done").await;
    read_until(&mut ws, "response.done").await;
    let arrived = eventually(Duration::from_secs(10), || async { rx.spans().len() >= 2 }).await;
    assert!(arrived, "{} spans", rx.spans().len());
    let mut got: Vec<_> = rx
        .spans()
        .iter()
        .map(|r| {
            let a = attrs(&r.span);
            (
                a.get("gen_ai.response.id").cloned(),
                a.get("gen_ai.request.max_tokens").cloned(),
                a.get("gen_ai.usage.input_tokens").cloned(),
            )
        })
        .collect();
    got.sort_by_key(|g| format!("{:?}", g.0));
    // Each request's call (its cap) carries its own response's usage.
    assert_eq!(
        got,
        [
            (Some(s("resp_1")), Some(V::I(64)), Some(V::I(1261))),
            (Some(s("resp_2")), Some(V::I(32)), Some(V::I(1398))),
        ]
    );
}

#[tokio::test]
async fn an_upstream_message_past_the_relay_bound_closes_both_sides_with_their_codes() {
    let (up, seen) = upstream(Play::TooBig).await;
    let proxy = TestProxy::to("rt", up, "").await;
    let mut ws = connect(&proxy, "rt-upbig", "sess-upbig").await;
    read_until(&mut ws, "session.created").await;
    ws.send(create("evt_upbig")).await.unwrap();
    let mut close = None;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        match msg {
            Ok(Message::Close(f)) => close = f,
            Ok(Message::Text(t)) => assert!(t.len() < 1024 * 1024, "the huge message came through"),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let close = close.expect("a close frame, not a dropped connection");
    assert_eq!(close.code, CloseCode::Error);
    assert!(
        upstream_ended(&seen).await,
        "the upstream connection was closed"
    );
    assert_eq!(
        seen.lock().unwrap().close,
        Some(1009),
        "message too big, said to the upstream"
    );
}

#[tokio::test]
async fn a_request_past_the_open_response_bound_is_refused_with_its_own_error() {
    let (up, seen) = upstream(Play::UntilCancelled { deltas: 0 }).await;
    let proxy = TestProxy::to("rt", up, "").await;
    let mut ws = connect(&proxy, "rt-many", "sess-many").await;
    read_until(&mut ws, "session.created").await;
    for i in 0..16 {
        ws.send(create(&format!("evt_open_{i}"))).await.unwrap();
        read_until(&mut ws, "response.created").await;
    }
    ws.send(create("evt_17")).await.unwrap();
    let (e, t) = next_error(&mut ws).await;
    assert_eq!(e["error"]["code"], "too_many_open_responses", "{t}");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert_eq!(e["error"]["event_id"], "evt_17");
    let creates = seen
        .lock()
        .unwrap()
        .received
        .iter()
        .filter(|m| matches!(m, Message::Text(t) if t.contains("response.create")))
        .count();
    assert_eq!(creates, 16, "the 17th never went upstream");
}

/// A response whose final event never comes (the client left, the upstream ignored the cancel)
/// was still billed for its input and what it generated: it is charged its estimated input (the
/// conversation so far: the previous response's input and output) and the output counted as
/// it passed, not nothing.
#[tokio::test]
async fn a_response_that_never_sends_its_final_event_is_charged_its_input_and_the_output_seen() {
    let (up, seen) = upstream(Play::SecondIgnoresCancel).await;
    let proxy = TestProxy::to(
        "rt",
        up,
        "budgets:\n  store:\n    snapshot_path: ''\n  limits:\n    - scope: session\n      tokens: 100000\n",
    )
    .await;
    let mut ws = connect(&proxy, "rt-unended", "sess-unended").await;
    read_until(&mut ws, "session.created").await;
    ws.send(create("evt_first")).await.unwrap();
    read_until(&mut ws, "response.done").await; // 1,261 in + 371 out: the context is 1,632
    ws.send(create("evt_unended")).await.unwrap();
    // Both deltas (the upstream sends two, then waits), then the client is gone.
    read_until(&mut ws, "response.output_text.delta").await;
    read_until(&mut ws, "response.output_text.delta").await;
    drop(ws);
    // The proxy waits its bounded cancel wait (2 s) for a final event that never comes.
    let ended = upstream_ended(&seen).await;
    assert!(ended, "the upstream connection was closed");
    let output = 2 * tokenwarden::tokens::count(" alpha beta gamma");
    let counted = eventually(Duration::from_secs(5), || async {
        let m = proxy.metrics().await;
        let v = |t| {
            metric_value(
                &m,
                "tokenwarden_tokens_total",
                &[
                    ("agent", "rt-unended"),
                    ("type", t),
                    ("source", "estimated"),
                ],
            )
        };
        v("output") == output as f64 && v("input") == 1632.0
    })
    .await;
    assert!(counted, "{}", proxy.metrics().await);
    let (r, body) = get(&format!("http://{}/v1/sessions/sess-unended", proxy.admin)).await;
    assert_eq!(r.status(), 200);
    let view: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(view["tokens"]["total"], 1632 + 1632 + output, "{view}");
}

async fn session_view(proxy: &TestProxy, id: &str) -> serde_json::Value {
    let (r, body) = get(&format!("http://{}/v1/sessions/{id}", proxy.admin)).await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// A transcription-only session never sends `response.done`: each finished transcription's
/// usage (in tokens) is a call of its own, counted and charged to the session's budget.
#[tokio::test]
async fn a_transcription_sessions_usage_is_counted_and_charged() {
    let (up, _seen) = upstream(Play::Transcribes).await;
    let proxy = TestProxy::to(
        "rt",
        up,
        "budgets:\n  store:\n    snapshot_path: ''\n  limits:\n    - scope: session\n      tokens: 2000\n      action: reject\n\
         pricing:\n  gpt-realtime: { input: 4, output: 16, audio_input: 32 }\n\
         \x20 gpt-4o-transcribe: { input: 2.5, output: 10, audio_input: 6 }\n",
    )
    .await;
    let mut ws = connect(&proxy, "rt-transcribe", "sess-transcribe").await;
    read_until(&mut ws, "session.created").await;
    ws.send(Message::text(r#"{"type":"input_audio_buffer.commit"}"#))
        .await
        .unwrap();
    read_until(
        &mut ws,
        "conversation.item.input_audio_transcription.completed",
    )
    .await;
    let tokens = |text: &str, kind: &str| {
        metric_value(
            text,
            "tokenwarden_tokens_total",
            &[("agent", "rt-transcribe"), ("type", kind)],
        )
    };
    let counted = eventually(Duration::from_secs(5), || async {
        tokens(&proxy.metrics().await, "input") == 17.0
    })
    .await;
    let text = proxy.metrics().await;
    assert!(counted, "{text}");
    assert_eq!(tokens(&text, "output"), 9.0);
    let view = session_view(&proxy, "sess-transcribe").await;
    assert_eq!(view["tokens"]["input"], 17, "{view}");
    assert_eq!(view["tokens"]["output"], 9, "{view}");
    assert_eq!(view["limits"][0]["used"], 26, "{view}");
    // Priced as the session's transcription model (17 audio in at 6.00, 9 text out at 10.00
    // per million), not the URL's gpt-realtime (which would be 32.00 and 16.00).
    let cost = metric_sum(
        &text,
        "tokenwarden_cost_usd_total",
        &[("agent", "rt-transcribe")],
    );
    let usd = (17.0 * 6.0 + 9.0 * 10.0) / 1e6;
    assert!((cost - usd).abs() < 1e-12, "cost {cost} != {usd}");
    assert_eq!(
        metric_value(
            &text,
            "tokenwarden_tokens_total",
            &[
                ("agent", "rt-transcribe"),
                ("type", "input"),
                ("model", "gpt-4o-transcribe")
            ],
        ),
        17.0,
        "{text}"
    );
}

/// A response the server's turn detection starts past the session's limit is refused and
/// cancelled, but it ran: its usage (its `response.done`) is charged to the session's spend.
#[tokio::test]
async fn a_refused_server_started_response_is_charged_to_the_session() {
    let (up, _seen) = upstream(Play::Complete { deltas: 1 }).await;
    let proxy = TestProxy::to(
        "rt",
        up,
        "budgets:\n  store:\n    snapshot_path: ''\n  default_max_output_tokens: 100\n  limits:\n    - scope: session\n      tokens: 2000\n      action: reject\n",
    )
    .await;
    let mut ws = connect(&proxy, "rt-vad-charged", "sess-vad-charged").await;
    read_until(&mut ws, "session.created").await;
    let commit = Message::text(r#"{"type":"input_audio_buffer.commit"}"#);
    ws.send(commit.clone()).await.unwrap();
    read_until(&mut ws, "response.done").await; // the audio fixture: 1632 tokens
    let view = session_view(&proxy, "sess-vad-charged").await;
    assert_eq!(view["limits"][0]["used"], 1632, "{view}");
    // The next turn: refused (past the limit), the session cut; its response still ends with
    // `response.done` (the text fixture: 1398 input, 13 output).
    ws.send(commit).await.unwrap();
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the session ends within 5 s")
    {
        if msg.is_err() {
            break;
        }
    }
    let charged = eventually(Duration::from_secs(5), || async {
        session_view(&proxy, "sess-vad-charged").await["limits"][0]["used"] == 1632 + 1411
    })
    .await;
    let view = session_view(&proxy, "sess-vad-charged").await;
    assert!(
        charged,
        "the refused response's spend reached the ledger: {view}"
    );
    assert_eq!(view["tokens"]["input"], 1261 + 1398, "{view}");
    assert_eq!(view["tokens"]["output"], 371 + 13, "{view}");
}
