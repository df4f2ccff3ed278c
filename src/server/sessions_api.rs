//! The admin API over sessions: `GET /v1/sessions/{id}`, `GET /v1/sessions?top=N`,
//! `POST /v1/sessions/{id}/reset` (bearer token required when `admin_token` is set).
//!
//! Tokens and cost come from the budget store when it tracks the session (session limits
//! configured: shared by replicas, kept across restarts), else from the live session table,
//! which counts every session whatever the limits until it ends on idle.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, Uri};
use http_body_util::Full;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::budget::limits::{group_key, NANO_PER_USD};
use crate::budget::store::{window_start, Group, Totals};
use crate::budget::Budgets;
use crate::config::LimitScope;
use crate::session::{SessionSnapshot, Sessions};

use super::auth::{reply, AdminToken};

/// Default and largest `top`.
const TOP_DEFAULT: usize = 10;
const TOP_MAX: usize = 1000;

/// Session views and resets.
pub struct SessionsApi {
    budgets: Option<Arc<Budgets>>,
    sessions: Arc<Sessions>,
    token: AdminToken,
}

// === impl SessionsApi ===

impl SessionsApi {
    /// Serve from the budget store (when budgets are on) and the live session table.
    pub fn new(budgets: Option<Arc<Budgets>>, sessions: Arc<Sessions>, token: AdminToken) -> Self {
        Self {
            budgets,
            sessions,
            token,
        }
    }

    /// Whether the budget store answers (true without budgets).
    pub fn store_ready(&self) -> bool {
        self.budgets.as_ref().is_none_or(|b| b.store_up())
    }

    /// Whether `path` is one of ours.
    pub fn owns(path: &str) -> bool {
        path == "/v1/sessions" || path.starts_with("/v1/sessions/")
    }

    /// Answer one request.
    pub async fn handle(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Response<Full<Bytes>> {
        let path = uri.path();
        if path == "/v1/sessions" {
            if method != Method::GET {
                return reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    json!({"error": "method not allowed"}),
                );
            }
            let n = uri
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("top=")))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(TOP_DEFAULT)
                .min(TOP_MAX);
            return self.top(n).await;
        }
        let rest = path.trim_start_matches("/v1/sessions/");
        if let Some(id) = rest.strip_suffix("/reset") {
            if method != Method::POST {
                return reply(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "use POST"}));
            }
            if !self.token.authorized(headers) {
                return AdminToken::unauthorized();
            }
            return self.reset(&percent_decode(id)).await;
        }
        if method != Method::GET {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method not allowed"}),
            );
        }
        let id = percent_decode(rest);
        if id.is_empty() || id.contains('/') {
            return reply(StatusCode::NOT_FOUND, json!({"error": "not found"}));
        }
        self.one(&id).await
    }

    async fn one(&self, id: &str) -> Response<Full<Bytes>> {
        let group = match &self.budgets {
            Some(b) => match b.store().get(&group_key(LimitScope::Session, id)).await {
                Ok(g) => g,
                Err(e) => return unavailable(&e),
            },
            None => None,
        };
        let live = self.sessions.get(id, Instant::now());
        if group.is_none() && live.is_none() {
            return reply(StatusCode::NOT_FOUND, json!({"error": "unknown session"}));
        }
        reply(StatusCode::OK, self.view(id, group.as_ref(), live.as_ref()))
    }

    async fn top(&self, n: usize) -> Response<Full<Bytes>> {
        let list = match &self.budgets {
            Some(b) => match b.store().top_sessions(n).await {
                Ok(l) => l,
                Err(e) => return unavailable(&e),
            },
            None => Vec::new(),
        };
        let now = Instant::now();
        let mut rows: Vec<(String, Option<Group>, Option<SessionSnapshot>)> = list
            .into_iter()
            .map(|(id, g)| {
                let live = self.sessions.get(&id, now);
                (id, Some(g), live)
            })
            .collect();
        // Live sessions the store does not track (no session limit) rank by their own totals.
        for (id, live) in self.sessions.top(n, now) {
            if !rows.iter().any(|(r, ..)| **r == *id) {
                rows.push((id.to_string(), None, Some(live)));
            }
        }
        let tokens = |g: &Option<Group>, l: &Option<SessionSnapshot>| {
            let t = totals(g.as_ref(), l.as_ref());
            t.input.saturating_add(t.output)
        };
        rows.sort_by_key(|(_, g, l)| std::cmp::Reverse(tokens(g, l)));
        rows.truncate(n);
        let sessions: Vec<Value> = rows
            .iter()
            .map(|(id, g, l)| self.view(id, g.as_ref(), l.as_ref()))
            .collect();
        reply(StatusCode::OK, json!({ "sessions": sessions }))
    }

    async fn reset(&self, id: &str) -> Response<Full<Bytes>> {
        let had_spend = match &self.budgets {
            Some(b) => match b.reset_session(id).await {
                Ok(had) => had,
                Err(e) => return unavailable(&e),
            },
            None => false,
        };
        let was_live = self.sessions.reset(id);
        reply(
            StatusCode::OK,
            json!({"session": id, "reset": true, "had_spend": had_spend || was_live}),
        )
    }

    /// The CONTRACT.md view of one session.
    fn view(&self, id: &str, group: Option<&Group>, live: Option<&SessionSnapshot>) -> Value {
        let t = totals(group, live);
        let empty = Group::default();
        let g = group.unwrap_or(&empty);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let limits: Vec<Value> = self
            .budgets
            .iter()
            .flat_map(|b| b.limits().iter())
            .filter(|l| l.scope == LimitScope::Session)
            .map(|l| {
                let used = g
                    .counters
                    .get(l.counter.as_ref())
                    .filter(|c| c.start == window_start(l.window, now))
                    .map_or(0, |c| c.spent.saturating_add(c.reserved));
                json!({
                    "scope": "session",
                    "unit": match l.unit { crate::budget::limits::Unit::Tokens => "tokens", crate::budget::limits::Unit::Usd => "usd" },
                    "window": &*l.window_name,
                    "action": format!("{:?}", l.action).to_lowercase(),
                    "limit": l.display(l.amount),
                    "used": l.display(used),
                    "remaining": l.display(l.amount.saturating_sub(used)),
                })
            })
            .collect();
        json!({
            "session": id,
            "tokens": {
                "input": t.input,
                "output": t.output,
                "total": t.input.saturating_add(t.output),
            },
            "cost_usd": t.cost as f64 / NANO_PER_USD,
            "steps": live.map_or(0, |s| s.steps),
            "limits": limits,
        })
    }
}

/// A session's totals: the store's when it tracks the session, else the live table's.
fn totals(group: Option<&Group>, live: Option<&SessionSnapshot>) -> Totals {
    match (group, live) {
        (Some(g), _) => g.totals,
        (None, Some(l)) => l.spent,
        (None, None) => Totals::default(),
    }
}

fn unavailable(e: &crate::budget::store::StoreError) -> Response<Full<Bytes>> {
    reply(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": e.to_string()}),
    )
}

/// `%XX` decoding of a path segment (invalid escapes are kept as written).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("bad%zz%4"), "bad%zz%4");
    }
}
