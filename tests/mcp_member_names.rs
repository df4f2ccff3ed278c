//! JSON-RPC member names a Go MCP server (mark3labs/mcp-go, Go's `encoding/json`) reads
//! case-insensitively, last one winning, while the proxy reads them exact-case: a message the two
//! could read differently — and a `tools/call` without an id — is refused as an invalid request
//! and never reaches the server. The upstream here only counts what reaches it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::mcp::*;
use common::*;
use serde_json::Value;

const POLICY: &str = "agents:\n  mcp-agent:\n    allowed_tools: [search_knowledge_base]\n    denied_tools: [delete_customer_data]\n    tool_call_action: block\n";

/// An upstream answering every request with an empty JSON-RPC result, counting them.
async fn counting_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use hyper::service::service_fn;
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let hits = counted.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    async move {
                        http::Response::builder()
                            .header("content-type", "application/json")
                            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                br#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
                            )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn messages_a_go_server_reads_otherwise_and_id_less_tool_calls_never_reach_it() {
    let (up, hits) = counting_upstream().await;
    let p = TestProxy::start(&format!("{}{POLICY}", route(&up.to_string(), ""))).await;
    let url = p.url("/tools/mcp");
    for body in [
        // A ping to the proxy, a tool call to a Go server (the last `method` wins).
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","Method":"tools/call","params":{"name":"delete_customer_data","arguments":{}}}"#,
        // Admitted as search_knowledge_base, run as delete_customer_data.
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_knowledge_base","Name":"delete_customer_data"}}"#,
        // A notification to the proxy, a request to a Go server.
        r#"{"jsonrpc":"2.0","ID":1,"method":"tools/call","params":{"name":"delete_customer_data","arguments":{}}}"#,
        // A tool call without an id: no request to govern, yet a server may run it.
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_customer_data","arguments":{}}}"#,
        // A name given twice.
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_knowledge_base","name":"delete_customer_data"}}"#,
    ] {
        let (r, b) = mcp_post(&url, None, body).await;
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["code"], -32600, "{body}: {v}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing reached the server");
    // The same call spelled as the specification does is governed and forwarded as before.
    let ok = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_knowledge_base","arguments":{}}}"#;
    let (r, _) = mcp_post(&url, None, ok).await;
    assert_eq!(r.status(), 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
