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

use super::protocol::ErrorShape;

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
    /// The client's request body could not be read (the client went away or sent bad framing).
    #[error("tokenwarden: the request body could not be read")]
    BadRequestBody,
    /// Connecting (TCP or TLS) to the upstream failed.
    #[error("tokenwarden: the upstream of route '{route}' could not be reached")]
    UpstreamUnreachable {
        /// Route name.
        route: String,
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
    /// A budget limit refused the call (it never went upstream).
    #[error(
        "tokenwarden: {scope} {unit} budget exceeded: {used} of {limit} used (window: {window})"
    )]
    BudgetExceeded {
        /// session | agent | global.
        scope: &'static str,
        /// token | usd.
        unit: &'static str,
        /// `{scope}_{unit}_budget_exceeded`.
        code: &'static str,
        /// `lifetime` or the window as configured.
        window: String,
        /// The limit (tokens or USD).
        limit: f64,
        /// Spent plus reserved (tokens or USD).
        used: f64,
        /// Seconds until the window resets; `None` for lifetime limits (retrying is futile).
        retry_after: Option<u64>,
    },
    /// The budget store is unreachable and `on_store_unreachable` is `fail_closed`.
    #[error("tokenwarden: the budget store is unreachable")]
    BudgetStoreUnavailable,
}

/// The upstream-error metric label for an error, when it is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// TCP or TLS connect failed.
    Connect,
    /// Connect, first byte or idle timeout.
    Timeout,
    /// Connection reset or broken framing.
    Reset,
}

// === impl ProxyError ===

impl ProxyError {
    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRequestBody => StatusCode::BAD_REQUEST,
            ProxyError::UpstreamUnreachable { .. } | ProxyError::UpstreamReset { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BudgetExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::BudgetStoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Stable machine-readable code (OpenAI `code`, and the proxy-error header).
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "unknown_route",
            ProxyError::BodyTooLarge { .. } => "request_too_large",
            ProxyError::BadRequestBody => "bad_request_body",
            ProxyError::UpstreamUnreachable { .. } => "upstream_unreachable",
            ProxyError::UpstreamTimeout { .. } => "upstream_timeout",
            ProxyError::UpstreamReset { .. } => "upstream_reset",
            ProxyError::BudgetExceeded { code, .. } => code,
            ProxyError::BudgetStoreUnavailable => "budget_store_unavailable",
        }
    }

    /// The `tokenwarden_upstream_errors_total` kind, for upstream failures.
    pub fn upstream_kind(&self) -> Option<UpstreamErrorKind> {
        match self {
            ProxyError::UpstreamUnreachable { .. } => Some(UpstreamErrorKind::Connect),
            ProxyError::UpstreamTimeout { .. } => Some(UpstreamErrorKind::Timeout),
            ProxyError::UpstreamReset { .. } => Some(UpstreamErrorKind::Reset),
            _ => None,
        }
    }

    /// Build the response in the error shape of the route's provider.
    pub fn to_response(&self, shape: ErrorShape) -> Response<Full<Bytes>> {
        let status = self.status();
        let message = self.to_string();
        let body = match shape {
            ErrorShape::OpenAi => serde_json::json!({
                "error": {
                    "message": message,
                    "type": self.openai_type(),
                    "param": null,
                    "code": self.code(),
                }
            }),
            ErrorShape::Anthropic => serde_json::json!({
                "type": "error",
                "error": { "type": self.anthropic_type(), "message": message }
            }),
            ErrorShape::Gemini => serde_json::json!({
                "error": {
                    "code": status.as_u16(),
                    "message": message,
                    "status": self.google_status(),
                }
            }),
        };
        let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(PROXY_ERROR_HEADER, HeaderValue::from_static(self.code()));
        if matches!(
            self,
            ProxyError::BodyTooLarge { .. } | ProxyError::BadRequestBody
        ) {
            // The rest of the body is unread: the connection cannot be reused safely.
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ProxyError::BudgetExceeded { retry_after, .. } = self {
            match retry_after {
                Some(s) => {
                    h.insert(header::RETRY_AFTER, HeaderValue::from(*s));
                }
                // Official SDKs honour this and do not retry a refusal that cannot pass.
                None => {
                    h.insert("x-should-retry", HeaderValue::from_static("false"));
                }
            }
        }
        resp
    }

    fn openai_type(&self) -> &'static str {
        match self {
            ProxyError::NoRoute | ProxyError::BodyTooLarge { .. } | ProxyError::BadRequestBody => {
                "invalid_request_error"
            }
            ProxyError::BudgetExceeded { .. } => "budget_exceeded",
            ProxyError::BudgetStoreUnavailable => "budget_store_unavailable",
            _ => "upstream_error",
        }
    }

    fn anthropic_type(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "not_found_error",
            ProxyError::BodyTooLarge { .. } => "request_too_large",
            ProxyError::BadRequestBody => "invalid_request_error",
            ProxyError::UpstreamTimeout { .. } => "timeout_error",
            ProxyError::BudgetExceeded { .. } => "rate_limit_error",
            _ => "api_error",
        }
    }

    fn google_status(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "NOT_FOUND",
            ProxyError::BodyTooLarge { .. } | ProxyError::BadRequestBody => "INVALID_ARGUMENT",
            ProxyError::UpstreamTimeout { .. } => "DEADLINE_EXCEEDED",
            ProxyError::BudgetExceeded { .. } => "RESOURCE_EXHAUSTED",
            _ => "UNAVAILABLE",
        }
    }
}

// === impl UpstreamErrorKind ===

impl UpstreamErrorKind {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Reset => "reset",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let r = e.to_response(ErrorShape::OpenAi);
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
        let r = e.to_response(ErrorShape::Anthropic);
        assert_eq!(r.status(), 504);
        let v = body_json(r).await;
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "timeout_error");
    }

    #[tokio::test]
    async fn budget_refusals_are_429_with_retry_hints() {
        let e = |retry_after| ProxyError::BudgetExceeded {
            scope: "session",
            unit: "token",
            code: "session_token_budget_exceeded",
            window: "lifetime".into(),
            limit: 50.0,
            used: 48.0,
            retry_after,
        };
        let r = e(None).to_response(ErrorShape::OpenAi);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["x-should-retry"], "false");
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
        let v = body_json(r).await;
        assert_eq!(v["error"]["type"], "budget_exceeded");
        assert_eq!(v["error"]["code"], "session_token_budget_exceeded");
        let r = e(Some(17)).to_response(ErrorShape::Anthropic);
        assert_eq!(r.headers()[header::RETRY_AFTER], "17");
        assert!(r.headers().get("x-should-retry").is_none());
        let v = body_json(r).await;
        assert_eq!(v["error"]["type"], "rate_limit_error");
    }

    #[tokio::test]
    async fn gemini_shape() {
        let r = ProxyError::BodyTooLarge { limit: 10 }.to_response(ErrorShape::Gemini);
        assert_eq!(r.status(), 413);
        assert_eq!(r.headers()[header::CONNECTION], "close");
        let v = body_json(r).await;
        assert_eq!(v["error"]["code"], 413);
        assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    }
}
