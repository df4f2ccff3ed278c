//! Secrets never leave the proxy: a distinctive secret in every credential header, in a
//! Gemini `?key=` query and in message content (capture on, a redaction pattern configured)
//! appears in none of the exported span bytes, the logs (the real binary, debug level, access
//! log on) or `/metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod otlp_receiver;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use otlp_receiver::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const CONTENT_SECRET: &str = "tw-content-secret-90210";
/// One distinct secret per credential header; all share a marker no other text has.
const HEADERS: [(&str, &str); 6] = [
    ("authorization", "Bearer sk-twleak-authorization-7c1e"),
    ("x-api-key", "sk-twleak-xapikey-91ab"),
    ("api-key", "sk-twleak-azure-3f00"),
    ("x-goog-api-key", "sk-twleak-goog-5d2c"),
    ("cookie", "sid=sk-twleak-cookie-77aa"),
    ("set-cookie", "sid=sk-twleak-setcookie-12ef"),
];
const QUERY_KEY: &str = "sk-twleak-query-0b0b";
/// What must appear nowhere.
const NEEDLES: [&str; 3] = ["twleak", "90210", "tw-content-secret"];

#[tokio::test]
async fn secrets_reach_no_span_log_or_metric() {
    let rx = Receiver::grpc().await;
    let mock = mock().await;
    let cfg = config_file(&format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nlogging:\n  access_log: true\n\
         routes:\n  - name: llm\n    path_prefix: /\n    upstream: http://{}\n\
         telemetry:\n  otlp:\n    endpoint: {}\n    protocol: grpc\n  capture_content: true\n  \
         redact_patterns: ['tw-content-secret-[0-9]+']\n",
        mock.addr(),
        rx.endpoint()
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
        .arg("--config")
        .arg(cfg.path())
        .arg("--log-format")
        .arg("json")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tokenwarden binary");
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    for out in [
        Box::new(child.stderr.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(child.stdout.take().unwrap()),
    ] {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut l = BufReader::new(out).lines();
            while let Ok(Some(line)) = l.next_line().await {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let mut log = Vec::new();
    let (addr, admin) = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.recv().await {
            log.push(line.clone());
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "tokenwarden listening" {
                return (
                    v["proxy"].as_str().unwrap().to_string(),
                    v["admin"].as_str().unwrap().to_string(),
                );
            }
        }
        panic!("binary exited before listening: {log:#?}");
    })
    .await
    .expect("binary listening within 20 s");

    let headers: Vec<(&str, &str)> = HEADERS.iter().map(|(k, v)| (*k, *v)).collect();
    // Content carrying the pattern secret and every header secret, in each provider shape.
    let all_header_secrets = HEADERS
        .iter()
        .map(|(_, v)| *v)
        .collect::<Vec<_>>()
        .join(" ");
    // The bare cookie values too (without their `sid=` names).
    let text = format!(
        "my key is {CONTENT_SECRET}; also {all_header_secrets} sk-twleak-cookie-77aa sk-twleak-setcookie-12ef"
    );
    let chat = serde_json::json!({"model": "gpt-4o-mini", "stream": true,
        "messages": [{"role": "system", "content": text}, {"role": "user", "content": text}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]})
    .to_string();
    let anth = serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 32, "system": text,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]})
    .to_string();
    let gem = serde_json::json!({"contents": [{"role": "user", "parts": [{"text": text}]}],
        "systemInstruction": {"parts": [{"text": text}]}})
    .to_string();
    let calls = [
        ("/v1/chat/completions".to_string(), chat),
        ("/v1/messages".to_string(), anth),
        (
            format!("/v1beta/models/gemini-2.0-flash:generateContent?key={QUERY_KEY}"),
            gem,
        ),
    ];
    for (i, (path, body)) in calls.iter().enumerate() {
        let session = format!("secret-session-{i}");
        let mut h = headers.clone();
        h.push(("x-session-id", &session));
        let (resp, _) = post(&format!("http://{addr}{path}"), &h, body).await;
        assert_eq!(resp.status(), 200, "{path}");
    }
    for i in 0..calls.len() {
        let session = format!("secret-session-{i}");
        let r = rx
            .wait_for("for each call", |r| {
                attrs(&r.span).get("session.id") == Some(&s(&session))
            })
            .await;
        // Capture really ran: the input is there, with the secrets replaced.
        let Some(V::S(input)) = attrs(&r.span).get("gen_ai.input.messages").cloned() else {
            panic!("no captured input on {:?}", r.span.name);
        };
        assert!(input.contains("[REDACTED]"), "{input}");
        assert!(input.contains("my key is"), "{input}");
    }
    let metrics = get(&format!("http://{admin}/metrics")).await.1;
    let metrics = String::from_utf8_lossy(&metrics).to_string();
    assert!(
        metrics.contains("tokenwarden_requests_total"),
        "scrape worked"
    );

    // Stop the binary, then read every log line it wrote.
    let pid = child.id().unwrap();
    let ok = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(5), lines.recv()).await {
        log.push(line);
    }
    let log = log.join("\n");
    assert!(
        log.contains("tokenwarden::access"),
        "access log was on: {log}"
    );

    let raw = String::from_utf8_lossy(&rx.raw()).to_string();
    assert!(
        raw.contains("gen_ai.input.messages"),
        "span bytes were captured"
    );
    for needle in NEEDLES {
        assert!(!raw.contains(needle), "{needle} in exported span bytes");
        assert!(!log.contains(needle), "{needle} in logs:\n{log}");
        assert!(
            !metrics.contains(needle),
            "{needle} in /metrics:\n{metrics}"
        );
    }
}
