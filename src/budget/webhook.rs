//! Alerts as a JSON POST to `alerts.webhook` (budget warnings and breaches, tool calls awaiting
//! a person's approval): queued without waiting (a full queue drops the alert and counts it),
//! sent by one background task per queue, retried with exponential backoff.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::Full;
use metrics::counter;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::http_client::UpstreamClient;
use crate::telemetry::metrics as m;

/// Alerts waiting to be sent; beyond this new ones are dropped (and counted).
const QUEUE: usize = 1024;
/// Attempts per alert.
const ATTEMPTS: u32 = 5;
/// First retry delay; doubled per attempt.
const BACKOFF: Duration = Duration::from_millis(200);
/// One attempt's time limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// One alert, as posted.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Session id, when the scope is a session (or the call had one).
    pub session: Option<String>,
    /// Task id, when the scope is a task (or the call had one).
    pub task: Option<String>,
    /// Agent name.
    pub agent: String,
    /// session | task | agent | global.
    pub scope: &'static str,
    /// tokens | usd.
    pub unit: &'static str,
    /// `lifetime` or the window (`1h`).
    pub window: String,
    /// The limit, in tokens (an integer) or USD.
    pub limit: super::limits::Amount,
    /// Used (spent plus reserved), in tokens (an integer) or USD.
    pub used: super::limits::Amount,
    /// warned | rejected | cut | observed.
    pub decision: &'static str,
    /// RFC 3339 UTC.
    pub time: String,
}

/// A tool call held for a person's approval, as posted (`event: approval_requested`).
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalAlert {
    /// Always `approval_requested`.
    pub event: &'static str,
    /// The approval's id (decide with `POST /v1/approvals/{id}`).
    pub id: String,
    /// Agent name.
    pub agent: String,
    /// Session id, when the call had one.
    pub session: Option<String>,
    /// The MCP route (server) the call is for.
    pub server: String,
    /// The tool.
    pub tool: String,
    /// SHA-256 of server, tool and arguments (the approval is bound to it).
    pub digest: String,
    /// When the request expires undecided (RFC 3339 UTC).
    pub expires: String,
    /// The approvals page, where a person decides.
    pub link: String,
    /// RFC 3339 UTC.
    pub time: String,
}

/// What one webhook POST carries.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Notice {
    /// A budget warning or breach.
    Budget(Alert),
    /// A tool call awaiting approval.
    Approval(ApprovalAlert),
}

/// Queue side of the webhook sender.
pub struct Webhook {
    tx: mpsc::Sender<Notice>,
}

// === impl Webhook ===

impl Webhook {
    /// Start the sender task posting to `url` with `client`. Needs a Tokio runtime.
    pub fn start(url: http::Uri, client: UpstreamClient) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(deliver(url, client, rx));
        Self { tx }
    }

    /// The sender for `alerts.webhook`, when configured (needs a Tokio runtime).
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Self>, String> {
        let Some(url) = &config.alerts.webhook else {
            return Ok(None);
        };
        let uri: http::Uri = url.parse().map_err(|_| "not a URL".to_string())?;
        let client =
            crate::http_client::build_client(None, &config.upstream).map_err(|e| e.to_string())?;
        Ok(Some(Self::start(uri, client)))
    }

    /// Queue `alert`; never waits.
    pub fn send(&self, alert: impl Into<Notice>) {
        if self.tx.try_send(alert.into()).is_err() {
            counter!(m::BUDGET_ALERTS_DROPPED_TOTAL).increment(1);
        }
    }
}

/// The current time in RFC 3339.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl From<Alert> for Notice {
    fn from(a: Alert) -> Self {
        Notice::Budget(a)
    }
}

impl From<ApprovalAlert> for Notice {
    fn from(a: ApprovalAlert) -> Self {
        Notice::Approval(a)
    }
}

impl Notice {
    fn describe(&self) -> (&'static str, &'static str) {
        match self {
            Notice::Budget(a) => (a.decision, a.scope),
            Notice::Approval(_) => ("approval_requested", "tool_call"),
        }
    }
}

async fn deliver(url: http::Uri, client: UpstreamClient, mut rx: mpsc::Receiver<Notice>) {
    while let Some(alert) = rx.recv().await {
        let Ok(body) = serde_json::to_vec(&alert) else {
            continue;
        };
        let body = Bytes::from(body);
        let mut delay = BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let req = Request::post(url.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()));
            let Ok(req) = req else { break };
            let ok = matches!(
                tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(req)).await,
                Ok(Ok(resp)) if resp.status().is_success()
            );
            if ok {
                break;
            }
            if attempt == ATTEMPTS {
                counter!(m::BUDGET_ALERTS_FAILED_TOTAL).increment(1);
                let (decision, scope) = alert.describe();
                tracing::warn!(decision, scope, "alert webhook failed after retries");
                break;
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
}
