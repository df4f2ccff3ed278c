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
