//! The admin API over sessions and tasks: `GET /v1/sessions/{id}`, `GET /v1/sessions?top=N`,
//! `POST /v1/sessions/{id}/reset`, and the same for `/v1/tasks` (bearer token required for a
//! reset when `admin_token` is set).
//!
//! Tokens and cost come from the budget store when it tracks the session or task (limits of its
//! scope configured: shared by replicas — with Redis, a task's spend through every sidecar —
//! and kept across restarts), else from the live table of this sidecar, which counts every
//! session and task whatever the limits until it ends on idle. Steps and the other per-call
//! numbers are always this sidecar's: each sidecar sees only its own calls of a task.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, Uri};
use http_body_util::Full;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::budget::limits::{
    group_key, scope_str, Unit, NANO_PER_USD, SESSION_PREFIX, TASK_PREFIX,
};
use crate::budget::store::{window_start, Group, Totals};
use crate::budget::Budgets;
use crate::config::LimitScope;
use crate::session::{SessionSnapshot, Sessions};
use crate::task::{TaskSnapshot, Tasks};

use super::auth::{reply, AdminToken};

/// Default and largest `top`.
const TOP_DEFAULT: usize = 10;
const TOP_MAX: usize = 1000;

/// Session and task views and resets.
pub struct ScopesApi {
    budgets: Option<Arc<Budgets>>,
    sessions: Arc<Sessions>,
    tasks: Arc<Tasks>,
    token: AdminToken,
}

/// Which records a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Session,
    Task,
}

/// What this sidecar's live table knows of one session or task.
enum Live {
    Session(SessionSnapshot),
    Task(TaskSnapshot),
}

// === impl Kind ===

impl Kind {
    fn of(path: &str) -> Option<(Kind, &str)> {
        for (kind, base) in [(Kind::Session, "/v1/sessions"), (Kind::Task, "/v1/tasks")] {
            if let Some(rest) = path.strip_prefix(base) {
                if rest.is_empty() || rest.starts_with('/') {
                    return Some((kind, rest));
                }
            }
        }
        None
    }

    fn scope(self) -> LimitScope {
        match self {
            Kind::Session => LimitScope::Session,
            Kind::Task => LimitScope::Task,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Kind::Session => SESSION_PREFIX,
            Kind::Task => TASK_PREFIX,
        }
    }

    /// The list's key in `GET ?top=N` answers.
    fn plural(self) -> &'static str {
        match self {
            Kind::Session => "sessions",
            Kind::Task => "tasks",
        }
    }
}

// === impl Live ===

impl Live {
    fn spent(&self) -> Totals {
        match self {
            Live::Session(s) => s.spent,
            Live::Task(t) => t.numbers.spent,
        }
    }
}

// === impl ScopesApi ===

impl ScopesApi {
    /// Serve from the budget store (when budgets are on) and the live session and task tables.
    pub fn new(
        budgets: Option<Arc<Budgets>>,
        sessions: Arc<Sessions>,
        tasks: Arc<Tasks>,
        token: AdminToken,
    ) -> Self {
        Self {
            budgets,
            sessions,
            tasks,
            token,
        }
    }

    /// Whether the budget store answers (true without budgets).
    pub fn store_ready(&self) -> bool {
        self.budgets.as_ref().is_none_or(|b| b.store_up())
    }

    /// Whether `path` is one of ours.
    pub fn owns(path: &str) -> bool {
        Kind::of(path).is_some()
    }

    /// Answer one request.
    pub async fn handle(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Response<Full<Bytes>> {
        let Some((kind, rest)) = Kind::of(uri.path()) else {
            return reply(StatusCode::NOT_FOUND, json!({"error": "not found"}));
        };
        if rest.is_empty() {
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
            return self.top(kind, n).await;
        }
        let rest = rest.trim_start_matches('/');
        if let Some(id) = rest.strip_suffix("/reset") {
            if method != Method::POST {
                return reply(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "use POST"}));
            }
            if !self.token.authorized(headers) {
                return AdminToken::unauthorized();
            }
            return self.reset(kind, &percent_decode(id)).await;
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
        self.one(kind, &id).await
    }

    fn live(&self, kind: Kind, id: &str, now: Instant) -> Option<Live> {
        match kind {
            Kind::Session => self.sessions.get(id, now).map(Live::Session),
            Kind::Task => self.tasks.get(id, now).map(Live::Task),
        }
    }

    fn live_top(&self, kind: Kind, n: usize, now: Instant) -> Vec<(Arc<str>, Live)> {
        match kind {
            Kind::Session => self
                .sessions
                .top(n, now)
                .into_iter()
                .map(|(id, s)| (id, Live::Session(s)))
                .collect(),
            Kind::Task => self
                .tasks
                .top(n, now)
                .into_iter()
                .map(|(id, t)| (id, Live::Task(t)))
                .collect(),
        }
    }

    async fn one(&self, kind: Kind, id: &str) -> Response<Full<Bytes>> {
        let group = match &self.budgets {
            Some(b) => match b.store().get(&group_key(kind.scope(), id)).await {
                Ok(g) => g,
                Err(e) => return unavailable(&e),
            },
            None => None,
        };
        let live = self.live(kind, id, Instant::now());
        if group.is_none() && live.is_none() {
            let what = match kind {
                Kind::Session => "unknown session",
                Kind::Task => "unknown task",
            };
            return reply(StatusCode::NOT_FOUND, json!({ "error": what }));
        }
        reply(
            StatusCode::OK,
            self.view(kind, id, group.as_ref(), live.as_ref()),
        )
    }

    async fn top(&self, kind: Kind, n: usize) -> Response<Full<Bytes>> {
        let list = match &self.budgets {
            Some(b) => match b.store().top(kind.prefix(), n).await {
                Ok(l) => l,
                Err(e) => return unavailable(&e),
            },
            None => Vec::new(),
        };
        let now = Instant::now();
        let mut rows: Vec<(String, Option<Group>, Option<Live>)> = list
            .into_iter()
            .map(|(id, g)| {
                let live = self.live(kind, &id, now);
                (id, Some(g), live)
            })
            .collect();
        // Live records the store does not track (no limit of their scope) rank by their own.
        for (id, live) in self.live_top(kind, n, now) {
            if !rows.iter().any(|(r, ..)| **r == *id) {
                rows.push((id.to_string(), None, Some(live)));
            }
        }
        let tokens = |g: &Option<Group>, l: &Option<Live>| {
            let t = totals(g.as_ref(), l.as_ref());
            t.input.saturating_add(t.output)
        };
        rows.sort_by_key(|(_, g, l)| std::cmp::Reverse(tokens(g, l)));
        rows.truncate(n);
        let views: Vec<Value> = rows
            .iter()
            .map(|(id, g, l)| self.view(kind, id, g.as_ref(), l.as_ref()))
            .collect();
        reply(StatusCode::OK, json!({ kind.plural(): views }))
    }

    async fn reset(&self, kind: Kind, id: &str) -> Response<Full<Bytes>> {
        let had_spend = match &self.budgets {
            Some(b) => match b.reset(kind.scope(), id).await {
                Ok(had) => had,
                Err(e) => return unavailable(&e),
            },
            None => false,
        };
        let was_live = match kind {
            Kind::Session => self.sessions.reset(id),
            Kind::Task => self.tasks.reset(id),
        };
        let name = match kind {
            Kind::Session => "session",
            Kind::Task => "task",
        };
        reply(
            StatusCode::OK,
            json!({name: id, "reset": true, "had_spend": had_spend || was_live}),
        )
    }

    /// The CONTRACT.md view of one session or task.
    fn view(&self, kind: Kind, id: &str, group: Option<&Group>, live: Option<&Live>) -> Value {
        let t = totals(group, live);
        let mut v = json!({
            "tokens": tokens_json(t),
            "cost_usd": t.cost as f64 / NANO_PER_USD,
            "limits": self.limits(kind.scope(), group),
        });
        match (kind, live) {
            (Kind::Session, live) => {
                v["session"] = json!(id);
                v["steps"] = json!(match live {
                    Some(Live::Session(s)) => s.steps,
                    _ => 0,
                });
            }
            (Kind::Task, live) => {
                v["task"] = json!(id);
                // Whose numbers the tokens and cost are: the store's (every sidecar drawing on
                // the task's budget, with Redis) or this sidecar's own calls.
                v["spend_from"] = json!(if group.is_some() { "store" } else { "sidecar" });
                let (n, here) = match live {
                    Some(Live::Task(t)) => (t.numbers, Some(t)),
                    _ => (Default::default(), None),
                };
                v["steps"] = json!(n.steps);
                v["llm_calls"] = json!(n.llm_calls);
                v["tool_calls"] = json!(n.tool_calls);
                v["tool_failures"] = json!(n.tool_failures);
                v["escalations"] = json!(n.escalations);
                v["sidecar"] = json!({
                    "live": here.is_some(),
                    "agent": here.map(|t| &*t.agent),
                    "tokens": tokens_json(n.spent),
                    "cost_usd": n.spent.cost as f64 / NANO_PER_USD,
                    "duration_seconds": here.map_or(0.0, |t| t.age.as_secs_f64()),
                    "idle_seconds": here.map_or(0.0, |t| t.idle.as_secs_f64()),
                    "in_flight": here.map_or(0, |t| t.in_flight),
                });
            }
        }
        v
    }

    /// The limits of `scope` and what the record has used of each in its current window.
    fn limits(&self, scope: LimitScope, group: Option<&Group>) -> Vec<Value> {
        let empty = Group::default();
        let g = group.unwrap_or(&empty);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.budgets
            .iter()
            .flat_map(|b| b.limits().iter())
            .filter(|l| l.scope == scope)
            .map(|l| {
                let used = g
                    .counters
                    .get(l.counter.as_ref())
                    .filter(|c| c.start == window_start(l.window, now))
                    .map_or(0, |c| c.spent.saturating_add(c.reserved));
                json!({
                    "scope": scope_str(scope),
                    "unit": match l.unit { Unit::Tokens => "tokens", Unit::Usd => "usd" },
                    "window": &*l.window_name,
                    "action": format!("{:?}", l.action).to_lowercase(),
                    "limit": l.display(l.amount),
                    "used": l.display(used),
                    "remaining": l.display(l.amount.saturating_sub(used)),
                })
            })
            .collect()
    }
}

fn tokens_json(t: Totals) -> Value {
    json!({
        "input": t.input,
        "output": t.output,
        "total": t.input.saturating_add(t.output),
    })
}

/// A record's totals: the store's when it tracks the record, else the live table's.
fn totals(group: Option<&Group>, live: Option<&Live>) -> Totals {
    match (group, live) {
        (Some(g), _) => g.totals,
        (None, Some(l)) => l.spent(),
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

    #[test]
    fn paths_name_their_kind() {
        assert_eq!(Kind::of("/v1/tasks"), Some((Kind::Task, "")));
        assert_eq!(Kind::of("/v1/tasks/t1"), Some((Kind::Task, "/t1")));
        assert_eq!(Kind::of("/v1/sessions/s"), Some((Kind::Session, "/s")));
        assert_eq!(Kind::of("/v1/tasksx"), None);
        assert_eq!(Kind::of("/v1/other"), None);
    }
}
