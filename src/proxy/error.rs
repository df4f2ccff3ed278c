//! Every error the proxy itself answers with, and the one place that turns them into
//! provider-shaped HTTP responses.
//!
//! Provider errors (a 429 or 500 from the upstream) are not here: they pass through verbatim.
//! Messages name the route, never an internal address; the `x-tokenwarden-error` header lets an
//! agent tell our errors from the provider's.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::budget::BudgetError;
use crate::policy::PolicyError;
use crate::providers::adapter::ErrorText;
use crate::providers::protocol::ErrorShape;
use crate::record::UpstreamError;

/// JSON-RPC error code of a tool call an agent policy refused on an MCP route (in the range
/// JSON-RPC leaves to servers; `error.data.tokenwarden` names the policy).
pub const POLICY_REFUSED: i64 = -32001;

/// Header on every response the proxy generates itself, carrying the error code.
pub const PROXY_ERROR_HEADER: &str = "x-tokenwarden-error";

/// An error the proxy answers on its own.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route's prefix matches the path.
    #[error("tokenwarden: no route matches this path")]
    NoRoute,
    /// The request body is over `server.max_request_body_bytes`.
    #[error("tokenwarden: request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured cap.
        limit: usize,
    },
    /// Request bodies in flight already hold `server.max_buffered_request_bytes`.
    #[error("tokenwarden: too many request bytes in flight; retry shortly")]
    Overloaded,
    /// The client's request body could not be read (the client went away or sent bad framing).
    #[error("tokenwarden: the request body could not be read")]
    BadRequestBody,
    /// The client stopped sending its request body for longer than `server.body_read_timeout`.
    #[error("tokenwarden: the request body stalled for {after:?}")]
    RequestBodyTimeout {
        /// The timeout that expired.
        after: std::time::Duration,
    },
    /// Connecting (TCP or TLS) to the upstream failed.
    #[error("tokenwarden: the upstream of route '{route}' could not be reached")]
    UpstreamUnreachable {
        /// Route name.
        route: String,
    },
    /// Connecting (TCP and TLS together) took longer than the connect timeout: the request
    /// never reached the upstream.
    #[error(
        "tokenwarden: the upstream of route '{route}' did not accept a connection within {after:?}"
    )]
    UpstreamConnectTimeout {
        /// Route name.
        route: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The upstream did not answer in time.
    #[error("tokenwarden: the upstream of route '{route}' did not respond within {after:?}")]
    UpstreamTimeout {
        /// Route name.
        route: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The upstream connection failed after it was made (reset, bad response framing).
    #[error(
        "tokenwarden: the upstream of route '{route}' closed the connection before responding"
    )]
    UpstreamReset {
        /// Route name.
        route: String,
    },
    /// The upstream answered `101 Switching Protocols` to a request that asked for no upgrade.
    #[error("tokenwarden: the upstream of route '{route}' switched protocols on a request that asked for no upgrade")]
    UpstreamUnexpectedUpgrade {
        /// Route name.
        route: String,
    },
    /// Budgets refused the call (it never went upstream).
    #[error(transparent)]
    Budget(#[from] BudgetError),
    /// An agent policy refused the request or withheld the response.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A held MCP tool call a person denied, that expired, or found the pending cap reached.
    #[error(transparent)]
    Approval(#[from] crate::approval::ApprovalError),
    /// An MCP POST that is no JSON-RPC message (it cannot be governed, so it is not forwarded).
    #[error("tokenwarden: {0}")]
    McpMessage(#[from] crate::mcp::MessageError),
    /// A response held for a policy check was larger than the parse cap.
    #[error("tokenwarden: the response from route '{route}' is too large to check against the agent's policies")]
    ResponseTooLarge {
        /// Route name.
        route: String,
    },
}

// === impl ProxyError ===

impl ProxyError {
    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRequestBody | ProxyError::McpMessage(_) => StatusCode::BAD_REQUEST,
            ProxyError::RequestBodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::UpstreamUnreachable { .. }
            | ProxyError::UpstreamReset { .. }
            | ProxyError::UpstreamUnexpectedUpgrade { .. }
            | ProxyError::ResponseTooLarge { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } | ProxyError::UpstreamConnectTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::Budget(BudgetError::Exceeded(b)) if b.retry_after.is_none() => {
                b.lifetime_status
            }
            ProxyError::Budget(BudgetError::Exceeded(_)) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Budget(BudgetError::StoreUnavailable) | ProxyError::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Policy(PolicyError::Refused { .. }) | ProxyError::Approval(_) => {
                StatusCode::FORBIDDEN
            }
            ProxyError::Policy(PolicyError::ForbiddenInput { .. }) => StatusCode::BAD_REQUEST,
        }
    }

    /// Stable machine-readable code (OpenAI `code`, and the proxy-error header).
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "unknown_route",
            ProxyError::BodyTooLarge { .. } => "request_too_large",
            ProxyError::BadRequestBody => "bad_request_body",
            ProxyError::RequestBodyTimeout { .. } => "request_body_timeout",
            ProxyError::McpMessage(_) => "invalid_jsonrpc",
            ProxyError::UpstreamUnreachable { .. } => "upstream_unreachable",
            ProxyError::UpstreamTimeout { .. } | ProxyError::UpstreamConnectTimeout { .. } => {
                "upstream_timeout"
            }
            ProxyError::UpstreamReset { .. } => "upstream_reset",
            ProxyError::UpstreamUnexpectedUpgrade { .. } => "upstream_unexpected_upgrade",
            ProxyError::Budget(BudgetError::Exceeded(b)) => b.code,
            ProxyError::Budget(BudgetError::StoreUnavailable) => "budget_store_unavailable",
            ProxyError::Overloaded => "proxy_overloaded",
            ProxyError::ResponseTooLarge { .. } => "response_too_large",
            ProxyError::Policy(p) => p.policy().as_str(),
            ProxyError::Approval(a) => a.code(),
        }
    }

    /// The `tokenwarden_upstream_errors_total` kind, for upstream failures.
    pub fn upstream_kind(&self) -> Option<UpstreamError> {
        match self {
            // A connect timeout is a connect failure: the request never left (not charged).
            ProxyError::UpstreamUnreachable { .. } | ProxyError::UpstreamConnectTimeout { .. } => {
                Some(UpstreamError::Connect)
            }
            ProxyError::UpstreamTimeout { .. } => Some(UpstreamError::Timeout),
            // Broken framing: the connection no longer speaks HTTP as the request asked.
            ProxyError::UpstreamReset { .. } | ProxyError::UpstreamUnexpectedUpgrade { .. } => {
                Some(UpstreamError::Reset)
            }
            _ => None,
        }
    }

    /// What this error says, in every provider's vocabulary, handed to `f` (the message is
    /// made for the call).
    pub fn with_text<R>(&self, f: impl FnOnce(&ErrorText<'_>) -> R) -> R {
        let message = self.to_string();
        f(&ErrorText {
            status: self.status().as_u16(),
            message: &message,
            code: self.code(),
            openai_type: self.openai_type(),
            anthropic_type: self.anthropic_type(),
            google_status: self.google_status(),
        })
    }

    /// Build the response in the error shape of the route's provider.
    pub fn to_response(&self, shape: ErrorShape) -> Response<Full<Bytes>> {
        let status = self.status();
        let body = self.with_text(|t| shape.error_body(t));
        let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(PROXY_ERROR_HEADER, HeaderValue::from_static(self.code()));
        if matches!(self, ProxyError::Overloaded) {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(
            self,
            ProxyError::BodyTooLarge { .. }
                | ProxyError::BadRequestBody
                | ProxyError::RequestBodyTimeout { .. }
                | ProxyError::Overloaded
        ) {
            // The rest of the body is unread: the connection cannot be reused safely.
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ProxyError::Budget(BudgetError::Exceeded(b)) = self {
            match b.retry_after {
                Some(s) => {
                    h.insert(header::RETRY_AFTER, HeaderValue::from(s));
                }
                // Official SDKs honour this and do not retry a refusal that cannot pass (the
                // 402 default is not retried by any client measured; see the README).
                None => {
                    h.insert("x-should-retry", HeaderValue::from_static("false"));
                }
            }
        }
        resp
    }

    /// The JSON-RPC error code of this error on an MCP route: the request's own codes (`-32700`
    /// parse error, `-32600` invalid request, `-32602` invalid params for arguments that break
    /// the tool's schema), [`POLICY_REFUSED`] for other policy refusals, `-32603` otherwise.
    pub fn jsonrpc_code(&self) -> i64 {
        match self {
            ProxyError::McpMessage(e) => e.code(),
            ProxyError::BodyTooLarge { .. }
            | ProxyError::BadRequestBody
            | ProxyError::RequestBodyTimeout { .. } => -32600,
            ProxyError::Policy(p)
                if p.policy() == crate::record::PolicyViolation::InvalidToolArgs =>
            {
                -32602
            }
            ProxyError::Policy(_) | ProxyError::Approval(_) => POLICY_REFUSED,
            _ => -32603,
        }
    }

    /// The answer on an MCP route: a JSON-RPC error for each request `ids` names (one object,
    /// or an array when the POST was a `batch`; `id: null` when no request could be read). A
    /// policy refusal is a JSON-RPC answer (HTTP 200, as a server's own errors are); transport
    /// failures keep their HTTP status, so clients see them as such.
    pub fn to_jsonrpc(&self, ids: &[crate::mcp::RequestId], batch: bool) -> Response<Full<Bytes>> {
        let error = serde_json::json!({
            "code": self.jsonrpc_code(),
            "message": self.to_string(),
            "data": { "tokenwarden": self.code() },
        });
        let one = |id: serde_json::Value| serde_json::json!({"jsonrpc": "2.0", "id": id, "error": error.clone()});
        let body = match (ids, batch) {
            ([], _) => one(serde_json::Value::Null),
            ([id], false) => one(id.to_value()),
            (ids, _) => serde_json::Value::Array(ids.iter().map(|i| one(i.to_value())).collect()),
        };
        let mut resp = self.to_response(ErrorShape::DEFAULT);
        if matches!(self, ProxyError::Policy(_) | ProxyError::Approval(_)) {
            *resp.status_mut() = StatusCode::OK;
        }
        *resp.body_mut() = Full::new(Bytes::from(body.to_string()));
        resp
    }

    fn openai_type(&self) -> &'static str {
        match self {
            ProxyError::Policy(_) | ProxyError::Approval(_) => self.code(),
            ProxyError::NoRoute
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::BadRequestBody
            | ProxyError::McpMessage(_) => "invalid_request_error",
            ProxyError::Budget(BudgetError::Exceeded(_)) => "budget_exceeded",
            ProxyError::Budget(BudgetError::StoreUnavailable) => "budget_store_unavailable",
            ProxyError::Overloaded => "overloaded",
            _ => "upstream_error",
        }
    }

    fn anthropic_type(&self) -> &'static str {
        let status = self.status();
        match self {
            // `type` names the policy; SDKs pick their exception from the status.
            ProxyError::Policy(_) | ProxyError::Approval(_) => self.code(),
            ProxyError::NoRoute => "not_found_error",
            ProxyError::BodyTooLarge { .. } => "request_too_large",
            ProxyError::BadRequestBody | ProxyError::McpMessage(_) => "invalid_request_error",
            ProxyError::UpstreamTimeout { .. } | ProxyError::UpstreamConnectTimeout { .. } => {
                "timeout_error"
            }
            // Anthropic documents 402 as `billing_error`.
            ProxyError::Budget(BudgetError::Exceeded(_))
                if status == StatusCode::PAYMENT_REQUIRED =>
            {
                "billing_error"
            }
            ProxyError::Budget(BudgetError::Exceeded(_)) => "rate_limit_error",
            ProxyError::Overloaded => "overloaded_error",
            _ => "api_error",
        }
    }

    fn google_status(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "NOT_FOUND",
            ProxyError::BodyTooLarge { .. }
            | ProxyError::BadRequestBody
            | ProxyError::McpMessage(_)
            | ProxyError::Policy(PolicyError::ForbiddenInput { .. }) => "INVALID_ARGUMENT",
            ProxyError::Policy(PolicyError::Refused { .. }) | ProxyError::Approval(_) => {
                "PERMISSION_DENIED"
            }
            ProxyError::UpstreamTimeout { .. } | ProxyError::UpstreamConnectTimeout { .. } => {
                "DEADLINE_EXCEEDED"
            }
            ProxyError::Budget(BudgetError::Exceeded(_)) => "RESOURCE_EXHAUSTED",
            _ => "UNAVAILABLE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::limits::Amount;
    use crate::budget::BudgetRefusal;
    use crate::providers::Format;
    use crate::record::PolicyViolation;
    use http_body_util::BodyExt;

    async fn body_json(r: Response<Full<Bytes>>) -> serde_json::Value {
        let b = r.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn openai_shape() {
        let e = ProxyError::UpstreamUnreachable {
            route: "openai".into(),
        };
        let r = e.to_response(ErrorShape::DEFAULT);
        assert_eq!(r.status(), 502);
        assert_eq!(r.headers()[PROXY_ERROR_HEADER], "upstream_unreachable");
        let v = body_json(r).await;
        assert_eq!(v["error"]["code"], "upstream_unreachable");
        assert_eq!(v["error"]["type"], "upstream_error");
        assert!(v["error"]["param"].is_null());
        assert!(v["error"]["message"].as_str().unwrap().contains("'openai'"));
    }

    #[tokio::test]
    async fn anthropic_shape() {
        let e = ProxyError::UpstreamTimeout {
            route: "anthropic".into(),
            after: Duration::from_secs(3),
        };
        let r = e.to_response(ErrorShape::of(Format::Anthropic));
        assert_eq!(r.status(), 504);
        let v = body_json(r).await;
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "timeout_error");
    }

    fn budget(retry_after: Option<u64>, lifetime_status: StatusCode) -> ProxyError {
        ProxyError::Budget(BudgetError::Exceeded(Box::new(BudgetRefusal {
            scope: "session",
            unit: "token",
            code: "session_token_budget_exceeded",
            window: std::sync::Arc::from("lifetime"),
            limit: Amount::Tokens(250),
            remaining: Amount::Tokens(72),
            need: Amount::Tokens(120),
            retry_after,
            lifetime_status,
        })))
    }

    #[tokio::test]
    async fn lifetime_refusals_are_402_by_default_and_429_by_switch_windowed_ones_429() {
        let r = budget(None, StatusCode::PAYMENT_REQUIRED)
            .to_response(ErrorShape::of(Format::Anthropic));
        assert_eq!(r.status(), 402);
        assert_eq!(r.headers()["x-should-retry"], "false");
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
        let v = body_json(r).await;
        assert_eq!(v["error"]["type"], "billing_error");
        let r = budget(None, StatusCode::PAYMENT_REQUIRED).to_response(ErrorShape::DEFAULT);
        let v = body_json(r).await;
        assert_eq!(v["error"]["type"], "budget_exceeded");
        assert_eq!(v["error"]["code"], "session_token_budget_exceeded");
        let r =
            budget(None, StatusCode::PAYMENT_REQUIRED).to_response(ErrorShape::of(Format::Gemini));
        let v = body_json(r).await;
        assert_eq!(
            (v["error"]["code"].as_u64(), v["error"]["status"].as_str()),
            (Some(402), Some("RESOURCE_EXHAUSTED"))
        );

        let r = budget(None, StatusCode::TOO_MANY_REQUESTS)
            .to_response(ErrorShape::of(Format::Anthropic));
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["x-should-retry"], "false");
        assert_eq!(body_json(r).await["error"]["type"], "rate_limit_error");

        let r = budget(Some(17), StatusCode::PAYMENT_REQUIRED)
            .to_response(ErrorShape::of(Format::Anthropic));
        assert_eq!(
            r.status(),
            429,
            "a windowed refusal may be retried after the window"
        );
        assert_eq!(r.headers()[header::RETRY_AFTER], "17");
        assert!(r.headers().get("x-should-retry").is_none());
        let v = body_json(r).await;
        assert_eq!(v["error"]["type"], "rate_limit_error");
    }

    #[test]
    fn refusal_text_says_what_this_call_needs_and_what_is_left() {
        let e = budget(None, StatusCode::PAYMENT_REQUIRED).to_string();
        assert_eq!(
            e,
            "tokenwarden: session token budget exceeded: this call needs ~120 tokens but only 72 of 250 tokens remain (window: lifetime)"
        );
        let usd = ProxyError::Budget(BudgetError::Exceeded(Box::new(BudgetRefusal {
            scope: "agent",
            unit: "usd",
            code: "agent_usd_budget_exceeded",
            window: std::sync::Arc::from("1d"),
            limit: Amount::Usd(10.0),
            remaining: Amount::Usd(0.0012),
            need: Amount::Usd(0.0031),
            retry_after: Some(5),
            lifetime_status: StatusCode::PAYMENT_REQUIRED,
        })));
        assert_eq!(
            usd.to_string(),
            "tokenwarden: agent usd budget exceeded: this call needs ~$0.0031 but only $0.0012 of $10 remain (window: 1d)"
        );
    }

    #[tokio::test]
    async fn policy_refusals_name_the_policy_in_every_shape() {
        let e = ProxyError::Policy(PolicyError::Refused {
            policy: PolicyViolation::DeniedTool,
            message: "agent 'a' may not use tool 'rm'".into(),
        });
        let r = e.to_response(ErrorShape::DEFAULT);
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()[PROXY_ERROR_HEADER], "denied_tool");
        let v = body_json(r).await;
        assert_eq!(v["error"]["type"], "denied_tool");
        assert!(v["error"]["message"].as_str().unwrap().contains("'rm'"));
        let v = body_json(e.to_response(ErrorShape::of(Format::Anthropic))).await;
        assert_eq!(v["error"]["type"], "denied_tool");
        let v = body_json(e.to_response(ErrorShape::of(Format::Gemini))).await;
        assert_eq!(v["error"]["status"], "PERMISSION_DENIED");
        let f = ProxyError::Policy(PolicyError::ForbiddenInput {
            id: "aws_key".into(),
        });
        let r = f.to_response(ErrorShape::of(Format::Anthropic));
        assert_eq!(r.status(), 400);
        let v = body_json(r).await;
        assert_eq!(v["error"]["type"], "forbidden_input");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'aws_key'"));
    }

    #[tokio::test]
    async fn gemini_shape() {
        let r = ProxyError::BodyTooLarge { limit: 10 }.to_response(ErrorShape::of(Format::Gemini));
        assert_eq!(r.status(), 413);
        assert_eq!(r.headers()[header::CONNECTION], "close");
        let v = body_json(r).await;
        assert_eq!(v["error"]["code"], 413);
        assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    }
}
