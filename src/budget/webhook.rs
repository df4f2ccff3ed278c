//! Budget alerts as a JSON POST to `alerts.webhook`: queued without waiting (a full queue drops
//! the alert and counts it), sent by one background task, retried with exponential backoff.

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

/// Queue side of the webhook sender.
pub struct Webhook {
    tx: mpsc::Sender<Alert>,
}

// === impl Webhook ===

impl Webhook {
    /// Start the sender task posting to `url` with `client`. Needs a Tokio runtime.
    pub fn start(url: http::Uri, client: UpstreamClient) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(deliver(url, client, rx));
        Self { tx }
    }

    /// Queue `alert`; never waits.
    pub fn send(&self, alert: Alert) {
        if self.tx.try_send(alert).is_err() {
            counter!(m::BUDGET_ALERTS_DROPPED_TOTAL).increment(1);
        }
    }
}

/// The current time in RFC 3339.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

async fn deliver(url: http::Uri, client: UpstreamClient, mut rx: mpsc::Receiver<Alert>) {
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
                tracing::warn!(
                    decision = alert.decision,
                    scope = alert.scope,
                    "budget webhook failed after retries"
                );
                break;
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
}
