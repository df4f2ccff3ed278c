//! The approvals page in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven over WebDriver with fantoccini): a person enters the admin token once, sees the held
//! calls (agent, session, server, tool, arguments), approves one and denies the other by
//! clicking; the agent's identical calls then run once and are refused, respectively. The token
//! lives in the tab's sessionStorage and never in a URL.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (scripts/test.sh installs them with
//! apt) and the SDK Python (`.venv-sdk`) for the MCP server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::mcp::*;
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

const TOKEN: &str = "page-token-7f3a";

/// chromedriver on a free loopback port, until dropped.
struct Driver {
    _child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Driver {
    async fn start() -> Driver {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} missing: scripts/test.sh installs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
            );
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let up = eventually(Duration::from_secs(20), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        assert!(up, "chromedriver answers within 20 s");
        Driver {
            _child: child,
            url,
            _profile: tempfile::tempdir().unwrap(),
        }
    }

    /// A headless Chromium session (flags: rust.md's known-to-work set for this closed network).
    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", self._profile.path().display())],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

async fn agent_call(url: &str, sid: &str, id: u32, table: &str) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "delete_all", "arguments": {"table": table}}})
    .to_string();
    let (_, b) = mcp_post_as(url, "held-agent", Some("page-session"), Some(sid), &body).await;
    serde_json::from_slice(&b).unwrap()
}

fn pending_id(v: &Value) -> String {
    v["result"]["_meta"]["tokenwarden/approval"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("pending: {v}"))
        .to_string()
}

/// Wait for `css` to appear on the page (the page refreshes every 2 s and after each click).
async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} within 15 s: {e}"))
}

#[tokio::test]
async fn a_person_approves_one_call_and_denies_another_by_clicking() {
    let server = ToolServer::start("json", &[]).await;
    let p = TestProxy::start(&format!(
        "{}agents:\n  held-agent:\n    require_approval: [delete_all]\n    approval_action: hold\nadmin_token: {TOKEN}\n",
        route(&server.addr(), "")
    ))
    .await;
    let url = p.url("/tools/mcp");
    let sid = handshake(&url).await;
    let users = pending_id(&agent_call(&url, &sid, 1, "users").await);
    let orders = pending_id(&agent_call(&url, &sid, 2, "orders").await);

    let driver = Driver::start().await;
    let c = driver.browser().await;
    // Opened as the webhook's link is: the page, the request's id as the fragment.
    let link = format!("http://{}/approvals#{users}", p.admin);
    c.goto(&link).await.unwrap();

    // No token yet: the page asks for it.
    let token = wait_for(&c, "#login:not([hidden]) #token").await;
    token.send_keys(TOKEN).await.unwrap();
    c.find(Locator::Css("#save-token"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // Both held calls are listed with who asked and what for.
    let row = wait_for(&c, &format!("#pending tr[data-id='{users}']")).await;
    let text = row.text().await.unwrap();
    for part in ["held-agent", "page-session", "tools", "delete_all", "users"] {
        assert!(text.contains(part), "{part} in the row: {text}");
    }
    wait_for(&c, &format!("#pending tr[data-id='{orders}']")).await;
    wait_for(&c, &format!("#pending tr.linked[data-id='{users}']")).await;

    // Approve one, deny the other, by clicking.
    row.find(Locator::Css("button.approve"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(
        &c,
        &format!("#decided tr[data-id='{users}'][data-decision='approved']"),
    )
    .await;
    c.find(Locator::Css(&format!(
        "#pending tr[data-id='{orders}'] button.deny"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    wait_for(
        &c,
        &format!("#decided tr[data-id='{orders}'][data-decision='denied']"),
    )
    .await;
    wait_for(&c, "#none-pending:not([hidden])").await;

    // The token is kept in the tab, never in the address.
    let kept = c
        .execute(
            "return sessionStorage.getItem('tokenwarden-admin-token')",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(kept, json!(TOKEN));
    assert!(!c.current_url().await.unwrap().as_str().contains(TOKEN));
    c.close().await.unwrap();

    // The approved call runs once; the denied one is refused; the server saw exactly one.
    let ran = agent_call(&url, &sid, 3, "users").await;
    assert_eq!(
        ran["result"]["content"][0]["text"], "deleted users",
        "{ran}"
    );
    let denied = agent_call(&url, &sid, 4, "orders").await;
    assert_eq!(
        denied["error"]["data"]["tokenwarden"], "approval_denied",
        "{denied}"
    );
    assert_eq!(
        server.executed().await,
        vec![json!({"tool": "delete_all", "args": {"table": "users"}})]
    );
}
