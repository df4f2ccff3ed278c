//! The admin API over held MCP tool calls and the page that decides them:
//! `GET /v1/approvals` (pending, and the last hour's decisions), `POST /v1/approvals/{id}` with
//! `{"decision": "approve" | "deny"}` (optionally `"digest"`: decide only if the pending call's
//! arguments are the ones shown), and `GET /approvals` (the page, its script and style). The API
//! needs the bearer token when `admin_token` is set — reads too, since they show tool arguments;
//! the page itself carries nothing secret and asks for the token.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{json, Value};

use crate::approval::{page, Approvals};

use super::auth::{reply, AdminToken};

/// Largest decision body read.
const MAX_DECISION_BYTES: usize = 4096;

/// Approval listing, decisions and the page.
pub struct ApprovalsApi {
    approvals: Arc<Approvals>,
    token: AdminToken,
}

// === impl ApprovalsApi ===

impl ApprovalsApi {
    /// Serve `approvals`, guarded by `token`.
    pub fn new(approvals: Arc<Approvals>, token: AdminToken) -> Self {
        Self { approvals, token }
    }

    /// Whether `path` is one of ours.
    pub fn owns(path: &str) -> bool {
        path == "/v1/approvals" || path.starts_with("/v1/approvals/") || page::asset(path).is_some()
    }

    /// Answer one request.
    pub async fn handle<B>(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: B,
    ) -> Response<Full<Bytes>>
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if let Some((text, content_type)) = page::asset(path) {
            if method != Method::GET && method != Method::HEAD {
                return reply(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "use GET"}));
            }
            return asset(text, content_type);
        }
        if !self.token.authorized(headers) {
            return AdminToken::unauthorized();
        }
        if path == "/v1/approvals" {
            if method != Method::GET {
                return reply(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "use GET"}));
            }
            return reply(StatusCode::OK, self.approvals.list());
        }
        let id = path.trim_start_matches("/v1/approvals/");
        if method != Method::POST {
            return reply(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "use POST"}));
        }
        let bytes = match Limited::new(body, MAX_DECISION_BYTES).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    json!({"error": format!("a decision is at most {MAX_DECISION_BYTES} bytes")}),
                )
            }
        };
        let asked: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let approve = match asked.get("decision").and_then(Value::as_str) {
            Some("approve") => true,
            Some("deny") => false,
            _ => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": r#"the body must be {"decision": "approve" | "deny"} (optionally with "digest")"#}),
                )
            }
        };
        let digest = asked.get("digest").and_then(Value::as_str);
        match self.approvals.decide(id, approve, digest) {
            Ok(decision) => reply(StatusCode::OK, json!({"id": id, "decision": decision})),
            Err(e) => reply(e.status(), json!({"id": id, "error": e.to_string()})),
        }
    }
}

/// One of the page's files, with headers that keep it to its own origin and out of caches.
fn asset(text: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(page::CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}
