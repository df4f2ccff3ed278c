//! Sessions: which session a call belongs to, and the per-session step counter.
//!
//! The session id comes from the first configured header present, then W3C `baggage`
//! `session.id`, then the request body (`user`, Anthropic `metadata.user_id`). Calls without one
//! belong to no session: only agent and global budgets apply and they have no step number.
//! Session ids are never metric labels; they appear on spans and in the admin API.

pub mod baggage;
mod tracker;

pub use tracker::{expire_every, SessionSnapshot, Sessions};

use std::sync::Arc;

use http::{HeaderMap, HeaderName};

/// Longest session id accepted; longer values are cut (ids are keys in stores and on spans).
pub const MAX_SESSION_ID_LEN: usize = 256;

/// Where session ids are looked for, built once from `identity:`.
#[derive(Debug, Clone)]
pub struct SessionSource {
    headers: Vec<HeaderName>,
}

impl SessionSource {
    /// Look in `headers` (in order; names that are not valid header names are skipped).
    pub fn new(headers: &[String]) -> Self {
        Self {
            headers: headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.trim().as_bytes()).ok())
                .collect(),
        }
    }

    /// The session id of a request: headers, then baggage, then the body's user field.
    pub fn identify(&self, headers: &HeaderMap, body_user: Option<&str>) -> Option<Arc<str>> {
        let id = explicit_id(headers, &self.headers, "session.id").or_else(|| {
            body_user
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string)
        })?;
        Some(Arc::from(truncate(&id, MAX_SESSION_ID_LEN)))
    }
}

/// W3C `baggage`, named once: a `&str` name is parsed and checked again at every lookup.
static BAGGAGE: HeaderName = HeaderName::from_static("baggage");

/// The first of `names` present and not blank in `headers` (trimmed), else the W3C `baggage`
/// member `key`: how sessions and tasks name themselves.
pub fn explicit_id(headers: &HeaderMap, names: &[HeaderName], key: &str) -> Option<String> {
    names
        .iter()
        .find_map(|name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        })
        .or_else(|| {
            headers
                .get_all(&BAGGAGE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|v| baggage::get(v, key))
        })
}

pub use crate::record::truncate;

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> SessionSource {
        SessionSource::new(&["x-session-id".into(), "helicone-session-id".into()])
    }

    #[test]
    fn headers_then_baggage_then_body() {
        let s = source();
        let mut h = HeaderMap::new();
        assert_eq!(s.identify(&h, None), None);
        assert_eq!(s.identify(&h, Some("u-1")).as_deref(), Some("u-1"));
        h.insert("baggage", "a=b,session.id=from-baggage".parse().unwrap());
        assert_eq!(s.identify(&h, Some("u-1")).as_deref(), Some("from-baggage"));
        h.insert("helicone-session-id", "h".parse().unwrap());
        assert_eq!(s.identify(&h, None).as_deref(), Some("h"));
        h.insert("x-session-id", " first ".parse().unwrap());
        assert_eq!(s.identify(&h, None).as_deref(), Some("first"));
    }

    #[test]
    fn long_ids_are_cut_on_a_char_boundary() {
        let long = "é".repeat(200);
        let id = source().identify(&HeaderMap::new(), Some(&long)).unwrap();
        assert!(id.len() <= MAX_SESSION_ID_LEN);
        assert!(id.chars().all(|c| c == 'é'));
    }
}
