//! The admin listener: `/healthz`, `/readyz`, `/metrics`, the sessions and tasks API, and the
//! approvals API with its page.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::telemetry::exemplars;

use super::approvals_api::ApprovalsApi;
use super::health::Health;
use super::scopes_api::ScopesApi;

/// Admin request handler.
pub struct Admin {
    health: Arc<Health>,
    metrics: PrometheusHandle,
    sessions: ScopesApi,
    approvals: ApprovalsApi,
}

// === impl Admin ===

impl Admin {
    /// Serve health from `health`, metrics from `metrics`, and the two APIs.
    pub fn new(
        health: Arc<Health>,
        metrics: PrometheusHandle,
        sessions: ScopesApi,
        approvals: ApprovalsApi,
    ) -> Self {
        Self {
            health,
            metrics,
            sessions,
            approvals,
        }
    }

    /// hyper entry point.
    pub async fn serve<B>(
        self: Arc<Self>,
        req: Request<B>,
    ) -> Result<Response<Full<Bytes>>, Infallible>
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if ApprovalsApi::owns(req.uri().path()) {
            let (parts, body) = req.into_parts();
            return Ok(self
                .approvals
                .handle(&parts.method, parts.uri.path(), &parts.headers, body)
                .await);
        }
        if ScopesApi::owns(req.uri().path()) {
            return Ok(self
                .sessions
                .handle(req.method(), req.uri(), req.headers())
                .await);
        }
        Ok(self.handle(req.method(), req.uri().path(), req.headers()))
    }

    fn handle(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return json(
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"method not allowed"}"#.into(),
            );
        }
        match path {
            "/healthz" => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
            "/readyz" if !self.sessions.store_ready() => json(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"status":"budget store unreachable"}"#.into(),
            ),
            "/readyz" if self.health.is_ready() => {
                json(StatusCode::OK, r#"{"status":"ready"}"#.into())
            }
            "/readyz" => json(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"status":"draining"}"#.into(),
            ),
            "/metrics" => {
                // Exemplars need OpenMetrics; Prometheus asks for it first in its Accept.
                let openmetrics = headers.get_all(header::ACCEPT).iter().any(|v| {
                    v.to_str()
                        .is_ok_and(|s| s.contains("application/openmetrics-text"))
                });
                let text = self.metrics.render();
                let (body, content_type) = if openmetrics {
                    (
                        exemplars::openmetrics(&text),
                        exemplars::OPENMETRICS_CONTENT_TYPE,
                    )
                } else {
                    (text, "text/plain; version=0.0.4; charset=utf-8")
                };
                let mut r = Response::new(Full::new(Bytes::from(body)));
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                r
            }
            _ => json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.into()),
        }
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
