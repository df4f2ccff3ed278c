//! MCP test parts: the Python SDK's MCP server (tests/sdk/mcp_server.py) and raw streamable
//! HTTP requests.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{get, sdk_python, send};

/// The Python SDK's MCP server, running until dropped.
pub struct PyServer {
    pub child: Child,
    pub port: u16,
}

impl PyServer {
    pub async fn start(mode: &str, extra: &[&str]) -> PyServer {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/mcp_server.py");
        let mut child = Command::new(sdk_python())
            .arg(script)
            .arg(mode)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the MCP server");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(l) = lines.next_line().await.unwrap() {
                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                    return v["port"].as_u64().unwrap() as u16;
                }
            }
            panic!("the MCP server exited before listening")
        })
        .await
        .expect("the MCP server listens within 30 s");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        PyServer { child, port }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The tool calls the server executed.
    pub async fn executed(&self) -> Vec<Value> {
        let (_, body) = get(&format!("http://{}/calls", self.addr())).await;
        serde_json::from_slice(&body).unwrap()
    }
}

pub fn route(upstream: &str, extra: &str) -> String {
    format!(
        "routes:\n  - name: tools\n    path_prefix: /tools\n    strip_prefix: true\n    protocol: mcp\n    upstream: http://{upstream}\n{extra}"
    )
}

/// POST `body` to an MCP endpoint with the transport's headers.
pub async fn mcp_post(url: &str, session: Option<&str>, body: &str) -> (http::Response<()>, Bytes) {
    mcp_post_as(url, "mcp-agent", None, session, body).await
}

/// POST `body` as `agent` (in agent session `agent_session`, when given) in MCP session
/// `session`.
pub async fn mcp_post_as(
    url: &str,
    agent: &str,
    agent_session: Option<&str>,
    session: Option<&str>,
    body: &str,
) -> (http::Response<()>, Bytes) {
    let mut req = Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("x-agent-name", agent);
    if let Some(s) = agent_session {
        req = req.header("x-session-id", s);
    }
    if let Some(s) = session {
        req = req
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", "2025-11-25");
    }
    send(req.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await
}

pub const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
pub const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// The initialize handshake over raw HTTP; returns the session id.
pub async fn handshake(url: &str) -> String {
    let (r, _) = mcp_post(url, None, INIT).await;
    assert_eq!(r.status(), 200);
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let (r, body) = mcp_post(url, Some(&sid), INITIALIZED).await;
    assert_eq!(r.status(), 202, "a notification is acknowledged: {body:?}");
    assert!(body.is_empty());
    sid
}
