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

/// An MCP server of an official SDK (Python: tests/sdk/mcp_server.py; TypeScript:
/// tests/sdk/mcp_ts_server.mjs), running until dropped.
pub struct ToolServer {
    pub child: Child,
    pub port: u16,
}

impl ToolServer {
    /// The Python SDK's server answering in `mode` (json | sse).
    pub async fn start(mode: &str, extra: &[&str]) -> ToolServer {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/mcp_server.py");
        let mut cmd = Command::new(sdk_python());
        cmd.arg(script).arg(mode).args(extra);
        Self::spawn(cmd).await
    }

    /// The TypeScript SDK's server answering in `mode` (json | sse).
    pub async fn typescript(mode: &str) -> ToolServer {
        let mut cmd = Command::new("node");
        cmd.arg(sdk_dir("tests/sdk/mcp_ts_server.mjs"))
            .arg(mode)
            .env("MCP_SDK_DIR", mcp_sdk_dir());
        Self::spawn(cmd).await
    }

    async fn spawn(mut cmd: Command) -> ToolServer {
        let mut child = cmd
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
        ToolServer { child, port }
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

/// `path` under the crate root.
fn sdk_dir(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The pinned MCP TypeScript SDK (`$MCP_SDK_DIR`, else `.tools/mcp-sdk`); missing → the test
/// fails and says how to get it.
pub fn mcp_sdk_dir() -> std::path::PathBuf {
    let dir = std::env::var("MCP_SDK_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| sdk_dir(".tools/mcp-sdk"));
    assert!(
        dir.join("node_modules/@modelcontextprotocol/sdk").exists(),
        "no MCP TypeScript SDK in {}: run `scripts/test.sh` (it installs @modelcontextprotocol/sdk \
         from npm into .tools/mcp-sdk) or set MCP_SDK_DIR",
        dir.display()
    );
    dir
}

/// Run `tests/sdk/<script> args…` with node and the MCP TypeScript SDK; its stdout is JSON.
pub async fn run_mcp_ts_script(script: &str, args: &[&str]) -> Value {
    let out = Command::new("node")
        .arg(sdk_dir("tests/sdk").join(script))
        .args(args)
        .env("MCP_SDK_DIR", mcp_sdk_dir())
        .output()
        .await
        .expect("run node");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(out.stdout.trim_ascii()).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
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
