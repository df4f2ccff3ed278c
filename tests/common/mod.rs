//! Shared integration-test harness: start the proxy (in process or as the built binary) on
//! 127.0.0.1:0 in front of the project's mock provider, send requests over real sockets, and
//! scrape metrics.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod mcp;
pub mod redis;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use tokenwarden::config::load_from_str;
use tokenwarden::server::Server;
use tokenwarden_mock::{MockOptions, MockServer};

/// A proxy running in this process.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<tokenwarden::server::Drained>,
}

impl TestProxy {
    /// Start a proxy from YAML; `listen` and `admin_listen` are forced to 127.0.0.1:0.
    pub async fn start(yaml: &str) -> TestProxy {
        let yaml = format!(
            "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nlogging:\n  access_log: false\n{yaml}"
        );
        let mut config =
            load_from_str(&yaml, "test").unwrap_or_else(|e| panic!("test config: {e}"));
        // A test that names its runtime keeps it.
        if !yaml.contains("runtime:") {
            runtime_from_env(&mut config.server);
        }
        // The memory store's default snapshot (`data/budgets.json` under the working
        // directory) would carry spend between tests and from local runs of the proxy: a test
        // that wants one names it.
        if !yaml.contains("snapshot_path") {
            config.budgets.store.snapshot_path = std::path::PathBuf::new();
        }
        let server = Server::bind(config).await.expect("bind proxy");
        let addr = server.proxy_addr();
        let admin = server.admin_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        TestProxy {
            addr,
            admin,
            stop: Some(tx),
            task,
        }
    }

    /// Start a proxy with one catch-all route named `route` to `upstream`.
    pub async fn to(route: &str, upstream: SocketAddr, extra: &str) -> TestProxy {
        Self::start(&format!(
            "routes:\n  - name: {route}\n    path_prefix: /\n    upstream: http://{upstream}\n{extra}"
        ))
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Scrape `/metrics` from the admin listener.
    pub async fn metrics(&self) -> String {
        let (_, body) = get(&format!("http://{}/metrics", self.admin)).await;
        String::from_utf8(body.to_vec()).expect("metrics are UTF-8")
    }

    pub async fn stop(mut self) -> tokenwarden::server::Drained {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.expect("server task")
    }
}

/// `TW_TEST_RUNTIME` (`per_core` or `shared`) and `TW_TEST_WORKERS` override the runtime
/// layout of every proxy a test starts, so one test binary runs in each mode (scripts/test.sh).
pub fn runtime_from_env(server: &mut tokenwarden::config::ServerConfig) {
    use tokenwarden::config::RuntimeMode;
    match std::env::var("TW_TEST_RUNTIME").as_deref() {
        Ok("shared") => server.runtime = RuntimeMode::Shared,
        Ok("per_core") => server.runtime = RuntimeMode::PerCore,
        Ok(other) => panic!("TW_TEST_RUNTIME={other:?}: per_core or shared"),
        Err(_) => {}
    }
    if let Ok(n) = std::env::var("TW_TEST_WORKERS") {
        server.workers = Some(n.parse().expect("TW_TEST_WORKERS is a number"));
    }
}

/// Start the mock provider on a free port.
pub async fn mock() -> MockServer {
    mock_with(MockOptions::default()).await
}

pub async fn mock_with(opts: MockOptions) -> MockServer {
    MockServer::start("127.0.0.1:0".parse().unwrap(), opts)
        .await
        .expect("start mock")
}

/// An HTTP/1.1 client with no connection reuse surprises.
pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// POST `body` with `headers`; return the response head and the whole body.
pub async fn post(url: &str, headers: &[(&str, &str)], body: &str) -> (Response<()>, Bytes) {
    send(json_post(url, headers, body)).await
}

/// A JSON POST of `body` with `headers`.
fn json_post(url: &str, headers: &[(&str, &str)], body: &str) -> Request<Full<Bytes>> {
    let mut req = Request::post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Like [`post`], `None` when the request or its body fails (a proxy killed on purpose).
pub async fn try_post(
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(Response<()>, Bytes)> {
    let req = json_post(url, headers, body);
    let resp = tokio::time::timeout(Duration::from_secs(30), client().request(req))
        .await
        .ok()?
        .ok()?;
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(30), body.collect())
        .await
        .ok()?
        .ok()?
        .to_bytes();
    Some((Response::from_parts(parts, ()), body))
}

pub async fn get(url: &str) -> (Response<()>, Bytes) {
    send(Request::get(url).body(Full::new(Bytes::new())).unwrap()).await
}

pub async fn send(req: Request<Full<Bytes>>) -> (Response<()>, Bytes) {
    let resp = tokio::time::timeout(Duration::from_secs(30), client().request(req))
        .await
        .expect("response within 30 s")
        .expect("request");
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(30), body.collect())
        .await
        .expect("body within 30 s")
        .expect("body")
        .to_bytes();
    (Response::from_parts(parts, ()), body)
}

/// The value of one series in Prometheus text, e.g. `name{a="b",c="d"}`; 0 when absent.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (lbls, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        if labels
            .iter()
            .all(|(k, v)| lbls.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
        {
            return value.trim().parse().unwrap_or(f64::NAN);
        }
    }
    0.0
}

/// The sum over every series of `name` whose labels include `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .map(|l| metric_value(l, name, labels))
        .sum()
}

/// Poll `f` until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The built `tokenwarden` binary running as a child process.
pub struct ProxyProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Lines logged before "tokenwarden listening" (that line included).
    pub startup_lines: Vec<String>,
    pub stderr_lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl ProxyProcess {
    /// Run the binary with `config_path`; wait for its "listening" line (JSON logs).
    pub async fn spawn(config_path: &std::path::Path) -> ProxyProcess {
        Self::spawn_with_env(config_path, &[]).await
    }

    /// Like [`ProxyProcess::spawn`], with `env` added to the child's environment.
    pub async fn spawn_with_env(
        config_path: &std::path::Path,
        env: &[(&str, &str)],
    ) -> ProxyProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
            .envs(env.iter().copied())
            .arg("--config")
            .arg(config_path)
            .arg("--log-format")
            .arg("json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tokenwarden binary");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut startup_lines = Vec::new();
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = rx.recv().await {
                startup_lines.push(line.clone());
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["message"] == "tokenwarden listening" {
                    let p = v["proxy"].as_str().unwrap().parse().unwrap();
                    let a = v["admin"].as_str().unwrap().parse().unwrap();
                    return Some((p, a));
                }
            }
            None
        })
        .await
        .expect("proxy binary reports its addresses within 20 s")
        .expect("proxy binary exited before listening");
        ProxyProcess {
            child,
            addr: found.0,
            admin: found.1,
            startup_lines,
            stderr_lines: rx,
        }
    }

    /// Wait (up to 60 s) until the child logged "tokenizer loaded": a debug build on a loaded
    /// machine takes seconds to load it, and near-limit admissions waiting for it meanwhile let
    /// other calls' store operations time out — the tests on store timeouts start after it.
    pub async fn tokenizer_loaded(&mut self) {
        let seen = |l: &str| l.contains("tokenizer loaded");
        if self.startup_lines.iter().any(|l| seen(l)) {
            return;
        }
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = self.stderr_lines.recv().await {
                let hit = seen(&line);
                self.startup_lines.push(line);
                if hit {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(found, Ok(true)),
            "the proxy never logged \"tokenizer loaded\""
        );
    }

    /// Stop the child (SIGTERM) and return everything it logged, start to exit.
    pub async fn stop_and_collect_logs(mut self) -> String {
        self.signal("TERM");
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let mut logs = self.startup_lines.join("\n");
        // The reader task ends at EOF, which closes the channel.
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(5), self.stderr_lines.recv()).await
        {
            logs.push('\n');
            logs.push_str(&line);
        }
        logs
    }

    /// Send a signal to the child.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("child pid");
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} {pid} failed");
    }
}

/// Write `text` to a fresh temporary config file.
pub fn config_file(text: &str) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut f = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("tempfile");
    f.write_all(with_runtime_from_env(text).as_bytes())
        .expect("write config");
    f
}

/// `text` with `server.runtime: $TW_TEST_RUNTIME` added (when set and the text names no
/// runtime), so tests of the binary and of config files run in each runtime mode too.
pub fn with_runtime_from_env(text: &str) -> String {
    let Ok(mode) = std::env::var("TW_TEST_RUNTIME") else {
        return text.to_string();
    };
    if text.contains("runtime:") {
        return text.to_string();
    }
    let line = format!("server:\n  runtime: {mode}\n");
    if let Some(rest) = text.strip_prefix("server:\n") {
        format!("{line}{rest}")
    } else if let Some(at) = text.find("\nserver:\n") {
        let (head, rest) = text.split_at(at + 1);
        format!("{head}{line}{}", &rest["server:\n".len()..])
    } else {
        let sep = if text.is_empty() || text.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        format!("{text}{sep}{line}")
    }
}

/// A response body fed frame by frame from a channel.
pub struct ChanBody(pub tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChanBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// A hand-driven upstream: each request gets an SSE response whose frames the test sends
/// through the returned channel. The response also carries a hop-by-hop header pair
/// (`Connection: x-up-hop`, `x-up-hop: 1`) that must not reach the client.
pub async fn scripted_upstream() -> (
    SocketAddr,
    tokio::sync::mpsc::Receiver<tokio::sync::mpsc::Sender<Bytes>>,
) {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (senders_tx, senders_rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let senders_tx = senders_tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let senders_tx = senders_tx.clone();
                    async move {
                        let (tx, rx) = tokio::sync::mpsc::channel(16);
                        let _ = senders_tx.send(tx).await;
                        let resp = Response::builder()
                            .header("content-type", "text/event-stream")
                            .header("connection", "x-up-hop")
                            .header("x-up-hop", "1")
                            .header("x-up-kept", "1")
                            .body(ChanBody(rx))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, senders_rx)
}

/// The Python that has the official SDKs: `$TOKENWARDEN_TEST_PYTHON`, else `.venv-sdk/bin/python`
/// (scripts/test.sh creates it). Missing → the test fails and says how to get one.
pub fn sdk_python() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("TOKENWARDEN_TEST_PYTHON") {
        return p.into();
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-sdk/bin/python");
    assert!(
        venv.exists(),
        "no Python with the SDKs: run `scripts/test.sh` (it creates .venv-sdk with openai, \
         anthropic and google-genai from PyPI) or set TOKENWARDEN_TEST_PYTHON to a python that has them"
    );
    venv
}

/// Run `tests/sdk/<script>` with the SDK Python as `script which base`; its stdout is JSON.
pub async fn run_sdk_script(script: &str, which: &str, base: &str) -> serde_json::Value {
    run_sdk_script_with(script, &[which, base]).await
}

/// Run `tests/sdk/<script> args…` with the SDK Python; its stdout is JSON.
pub async fn run_sdk_script_with(script: &str, args: &[&str]) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let out = Command::new(sdk_python())
        .arg(&path)
        .args(args)
        .output()
        .await
        .expect("run python");
    script_json(script, args, out)
}

/// Run `tests/sdk/<script> args…` with node and the pinned Vercel AI SDK packages (`$AI_SDK_DIR`,
/// else `.tools/ai-sdk`, which scripts/test.sh installs; the script reads `AI_SDK_DIR`); its
/// stdout is JSON. Missing packages → the test fails and says how to get them.
pub async fn run_ai_sdk_script(script: &str, args: &[&str]) -> serde_json::Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var("AI_SDK_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join(".tools/ai-sdk"));
    assert!(
        dir.join("node_modules/ai").exists(),
        "no Vercel AI SDK in {}: run `scripts/test.sh` (it installs ai, @ai-sdk/openai and \
         @ai-sdk/anthropic from npm into .tools/ai-sdk) or set AI_SDK_DIR",
        dir.display()
    );
    let out = Command::new("node")
        .arg(root.join("tests/sdk").join(script))
        .args(args)
        .env("AI_SDK_DIR", &dir)
        .output()
        .await
        .expect("run node");
    script_json(script, args, out)
}

/// The JSON a client script printed; its failure (with everything it printed) otherwise.
fn script_json(script: &str, args: &[&str], out: std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(out.stdout.trim_ascii())
        .unwrap_or_else(|e| panic!("{script} {args:?} prints JSON ({e})"))
}

/// A test CA and a `localhost` certificate it signed, for real rustls servers in tests.
pub struct TestPki {
    /// The CA certificate (what a client must trust).
    pub ca_pem: String,
    /// The server certificate.
    pub cert_pem: String,
    /// The server's private key.
    pub key_pem: String,
}

impl TestPki {
    /// A fresh CA and `localhost` leaf.
    pub fn new() -> TestPki {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tokenwarden test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        TestPki {
            ca_pem: ca.pem(),
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
        }
    }

    /// A rustls server configuration with the leaf certificate, offering `alpn`.
    pub fn server_config(&self, alpn: &[&[u8]]) -> rustls::ServerConfig {
        let certs = rustls_pemfile::certs(&mut self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut self.key_pem.as_bytes())
            .unwrap()
            .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

/// What an overspend run saw: calls admitted and refused.
pub struct Overspend {
    pub admitted: u64,
    pub refused: u64,
}

/// `calls` concurrent chat calls of one session spread over `urls` (proxies sharing a store),
/// arriving spread out over ~`spread_ms`, each using `input` input tokens (as the mock counts
/// them) and `output` output tokens. Refusals are 402 (lifetime) or 429.
pub async fn overspend_load(
    urls: &[String],
    session: &str,
    body: &str,
    input: u64,
    output: u64,
    calls: usize,
    spread_ms: u64,
) -> Overspend {
    let mut tasks = Vec::new();
    for i in 0..calls {
        let url = format!("{}/v1/chat/completions", urls[i % urls.len()]);
        let (session, body) = (session.to_string(), body.to_string());
        let (input, output) = (input.to_string(), output.to_string());
        // Deterministic spread: arrivals interleave with settlements instead of landing at once.
        let delay = Duration::from_millis((i as u64 * 7919) % spread_ms.max(1));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let (r, _) = post(
                &url,
                &[
                    ("x-session-id", &session),
                    ("x-mock-input-tokens", &input),
                    ("x-mock-output-chunks", &output),
                    ("x-mock-chunk-delay-ms", "3"),
                ],
                &body,
            )
            .await;
            r.status().as_u16()
        }));
    }
    let mut o = Overspend {
        admitted: 0,
        refused: 0,
    };
    for t in tasks {
        match t.await.expect("call task") {
            200 => o.admitted += 1,
            402 | 429 => o.refused += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    o
}

/// A tiny webhook receiver: every JSON body POSTed to it.
pub async fn webhook_receiver() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) {
    webhook_receiver_failing_first(0).await
}

/// A webhook receiver that answers 500 to its first `failures` requests (still reporting them).
pub async fn webhook_receiver_failing_first(
    failures: usize,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) {
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async move {
                        let b = req.into_body().collect().await.unwrap().to_bytes();
                        let mut v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                        v["_attempt"] = serde_json::json!(n);
                        let _ = tx.send(v);
                        let mut r =
                            http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                        if n < failures {
                            *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, rx)
}

/// tests/fixtures.
pub const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// An upstream that answers every request with the file under tests/fixtures its `x-fixture`
/// header names, in a few frames (SSE for `.sse`, JSON otherwise).
pub async fn fixture_upstream() -> SocketAddr {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let name = req.headers()["x-fixture"].to_str().unwrap().to_string();
                    let body = std::fs::read(format!("{FIXTURE_DIR}/{name}")).unwrap();
                    let ct = if name.ends_with(".sse") {
                        "text/event-stream"
                    } else {
                        "application/json"
                    };
                    let (tx, rx) = tokio::sync::mpsc::channel(8);
                    tokio::spawn(async move {
                        // Frames cut anywhere, as a network would.
                        for part in body.chunks(body.len().div_ceil(3).max(1)) {
                            if tx.send(Bytes::copy_from_slice(part)).await.is_err() {
                                return;
                            }
                        }
                    });
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("content-type", ct)
                            .body(ChanBody(rx))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}
