//! The admin listener: `/healthz`, `/readyz`, `/metrics`, the sessions and tasks API, and the
//! approvals API with its page.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use metrics_exporter_prometheus::PrometheusHandle;

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
        Ok(self.handle(req.method(), req.uri().path()))
    }

    fn handle(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
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
                let mut r = Response::new(Full::new(Bytes::from(self.metrics.render())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
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
