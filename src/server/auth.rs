//! The admin token (`admin_token`): which admin calls carry it, and the answers the admin API
//! shares.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

/// The bearer token admin calls must carry, when configured.
#[derive(Clone)]
pub struct AdminToken(Option<String>);

// === impl AdminToken ===

impl AdminToken {
    /// `None`: every call is allowed.
    pub fn new(token: Option<String>) -> Self {
        Self(token)
    }

    /// Whether `headers` carry the token (always, when none is configured).
    pub fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.0 else {
            return true;
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq(given.as_bytes(), token.as_bytes())
    }

    /// The 401 a call without the token gets.
    pub fn unauthorized() -> Response<Full<Bytes>> {
        let mut r = reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": "admin token required"}),
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    }
}

/// A JSON answer.
pub fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Compare without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compared_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        let t = AdminToken::new(Some("s3cret".into()));
        let mut h = HeaderMap::new();
        assert!(!t.authorized(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(t.authorized(&h));
        assert!(AdminToken::new(None).authorized(&HeaderMap::new()));
    }
}
