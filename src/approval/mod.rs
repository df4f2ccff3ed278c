//! Human approval of held MCP tool calls (`approval_action: hold`).
//!
//! A `tools/call` of a `require_approval` tool is bound to exactly that call: the agent, its
//! session, the server (route), the tool and a SHA-256 digest of the arguments (keys sorted, so
//! the same arguments in another order are the same call). The first such call opens a pending
//! request (announced on the alert webhook with a link to the approvals page) and is answered at
//! once with a tool error result telling the model it awaits approval; the server never sees it.
//! A person approves or denies it on the admin API (`POST /v1/approvals/{id}`); the agent's
//! identical call then goes through once (the approval is single use), or gets a JSON-RPC error
//! saying it was denied or expired. Calls with other arguments match nothing and ask afresh.
//!
//! Why answer at once rather than hold the HTTP request: the clients' own request timeouts are
//! shorter than a person takes (the OpenAI Agents SDK's `MCPServerStreamableHttp` waits 5 s by
//! default, the TypeScript SDK 60 s; keep-alive bytes reset neither), so a held request would
//! fail in the client while the person decides. README "Approving tool calls" has the details.
//!
//! Memory is bounded: at most `approvals.max_pending` requests pending (a held call beyond it is
//! refused), decided entries kept until the agent learns the outcome or `approvals.expiry`
//! passes (at most [`KEPT_PER_PENDING`] × the cap), the last hour's decisions for the page (at most
//! [`MAX_HISTORY`]), each call's shown arguments at most [`MAX_SHOWN_BYTES`].

pub mod page;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use metrics::{counter, gauge, histogram};
use serde_json::{json, Map, Value};

use crate::budget::webhook::{ApprovalAlert, Webhook};
use crate::config::Config;
use crate::telemetry::content::ContentPolicy;
use crate::telemetry::metrics as m;

/// Decided entries kept per pending slot (so their agents learn the outcome).
pub const KEPT_PER_PENDING: usize = 4;
/// Decisions listed for the page (the last hour's, newest first).
pub const MAX_HISTORY: usize = 500;
/// How long decisions stay listed.
pub const HISTORY: Duration = Duration::from_secs(3600);
/// Largest serialised arguments shown (longer ones are cut, as a string).
pub const MAX_SHOWN_BYTES: usize = 16 * 1024;

/// Pending approvals and recent decisions, shared by the proxy and the admin API.
pub struct Approvals {
    inner: Mutex<Inner>,
    expiry: Duration,
    max_pending: usize,
    page_url: OnceLock<String>,
    redact: Option<ContentPolicy>,
    webhook: Option<Webhook>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<Arc<str>, Entry>,
    by_call: HashMap<Binding, Arc<str>>,
    pending: usize,
    history: VecDeque<Decided>,
}

/// What an approval is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Binding {
    agent: Arc<str>,
    session: Option<Arc<str>>,
    server: Arc<str>,
    tool: Arc<str>,
    digest: Arc<str>,
}

struct Entry {
    binding: Binding,
    arguments: Arc<Value>,
    requested: SystemTime,
    requested_at: Instant,
    /// Pending: the expiry; decided: until when the agent can learn the outcome.
    deadline: Instant,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Approved,
    Denied,
    Expired,
}

/// One decision, as the page lists it.
struct Decided {
    id: Arc<str>,
    binding: Binding,
    arguments: Arc<Value>,
    decision: State,
    decided: SystemTime,
    waited: Duration,
    used: bool,
}

/// A held tool call, as the proxy sees it.
pub struct HeldCall<'a> {
    /// Agent name.
    pub agent: &'a Arc<str>,
    /// The agent's session.
    pub session: Option<&'a Arc<str>>,
    /// The MCP route.
    pub server: &'a Arc<str>,
    /// The tool.
    pub tool: &'a str,
    /// The call's arguments.
    pub arguments: Option<&'a Value>,
}

/// What becomes of a held call.
pub enum Gate {
    /// A person approved exactly this call: forward it (its approval is used up; put back with
    /// [`Approvals::restore`] if the call is not forwarded).
    Approved(Ticket),
    /// It waits for a person (the request was opened now, or before).
    Pending {
        /// The approval's id.
        id: Arc<str>,
        /// Time left until it expires.
        expires_in: Duration,
    },
    /// Not forwarded, for good.
    Refused(ApprovalError),
}

/// An approval a call claimed (taken from the table at once, so two identical calls racing
/// cannot both use it): dropped, it is spent; [`Approvals::restore`] puts it back when the call
/// was not forwarded after all.
pub struct Ticket {
    id: Arc<str>,
    entry: Entry,
}

/// A held call the approvals refuse.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApprovalError {
    /// A person denied it.
    #[error("tokenwarden: approval {id} of this call to tool '{tool}' was denied by a person; tokenwarden did not forward the call")]
    Denied {
        /// The approval.
        id: Arc<str>,
        /// The tool.
        tool: String,
    },
    /// Nobody decided (or the approval was not used) in time.
    #[error("tokenwarden: approval {id} of this call to tool '{tool}' expired after {after}s without a decision; tokenwarden did not forward the call (calling again asks a person anew)")]
    Expired {
        /// The approval.
        id: Arc<str>,
        /// The tool.
        tool: String,
        /// The configured expiry, in seconds.
        after: u64,
    },
    /// The pending cap is reached.
    #[error("tokenwarden: {max} tool calls already await approval; this call to tool '{tool}' was not forwarded")]
    Full {
        /// `approvals.max_pending`.
        max: usize,
        /// The tool.
        tool: String,
    },
}

/// Why a decision on the admin API was not taken.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DecideError {
    /// No such approval (never, or long gone).
    #[error("no pending approval {0}")]
    NotFound(String),
    /// It was decided before.
    #[error("approval {id} was already {decision}")]
    AlreadyDecided {
        /// The approval.
        id: String,
        /// approved | denied | expired.
        decision: &'static str,
    },
    /// It expired before the decision.
    #[error("approval {0} expired before the decision")]
    Expired(String),
    /// The decision names other arguments than the pending call's.
    #[error(
        "approval {0} is for a call with other arguments (digest mismatch); nothing was decided"
    )]
    DigestMismatch(String),
}

// === impl ApprovalError ===

impl ApprovalError {
    /// Stable code (`error.data.tokenwarden` on the JSON-RPC error).
    pub fn code(&self) -> &'static str {
        match self {
            ApprovalError::Denied { .. } => "approval_denied",
            ApprovalError::Expired { .. } => "approval_expired",
            ApprovalError::Full { .. } => "approvals_full",
        }
    }
}

// === impl DecideError ===

impl DecideError {
    /// HTTP status on the admin API.
    pub fn status(&self) -> http::StatusCode {
        match self {
            DecideError::NotFound(_) => http::StatusCode::NOT_FOUND,
            DecideError::AlreadyDecided { .. } | DecideError::DigestMismatch(_) => {
                http::StatusCode::CONFLICT
            }
            DecideError::Expired(_) => http::StatusCode::GONE,
        }
    }
}

// === impl State ===

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
        }
    }
}

// === impl Approvals ===

impl Approvals {
    /// From `approvals` (expiry, cap, page URL), `telemetry.redact_patterns` and
    /// `alerts.webhook` (needs a Tokio runtime when a webhook is configured).
    pub fn from_config(config: &Config, webhook: Option<Webhook>) -> Self {
        let page_url = OnceLock::new();
        if let Some(u) = &config.approvals.page_url {
            let _ = page_url.set(u.clone());
        }
        Self {
            inner: Mutex::new(Inner::default()),
            expiry: config.approvals.expiry,
            max_pending: config.approvals.max_pending.max(1),
            page_url,
            // Validated at load; an invalid pattern cannot reach here.
            redact: (!config.telemetry.redact_patterns.is_empty())
                .then(|| ContentPolicy::new(&config.telemetry.redact_patterns, MAX_SHOWN_BYTES))
                .and_then(Result::ok),
            webhook,
        }
    }

    /// The page's address for webhook links, when the config gave none (the admin listener's).
    pub fn default_page_url(&self, url: String) {
        let _ = self.page_url.set(url);
    }

    /// The approvals page's address.
    pub fn page_url(&self) -> &str {
        self.page_url.get().map_or("/approvals", String::as_str)
    }

    /// The fate of one held call: approved (forward it), pending (opened now when new), or
    /// refused (denied, expired, or too many pending).
    pub fn check(&self, call: &HeldCall<'_>) -> Gate {
        let now = Instant::now();
        let binding = Binding {
            agent: call.agent.clone(),
            session: call.session.cloned(),
            server: call.server.clone(),
            tool: Arc::from(call.tool),
            digest: Arc::from(digest(call.server, call.tool, call.arguments)),
        };
        let mut inner = self.lock();
        inner.sweep(now, self.expiry);
        if let Some(id) = inner.by_call.get(&binding).cloned() {
            if let Some(e) = inner.by_id.get(&id) {
                match e.state {
                    State::Pending => {
                        return Gate::Pending {
                            expires_in: e.deadline.saturating_duration_since(now),
                            id,
                        }
                    }
                    State::Approved => {
                        let entry = inner.claim(&id);
                        if let Some(entry) = entry {
                            return Gate::Approved(Ticket { id, entry });
                        }
                    }
                    State::Denied | State::Expired => {
                        let state = e.state;
                        inner.forget(&id);
                        let tool = call.tool.to_string();
                        return Gate::Refused(if state == State::Denied {
                            ApprovalError::Denied { id, tool }
                        } else {
                            ApprovalError::Expired {
                                id,
                                tool,
                                after: self.expiry.as_secs(),
                            }
                        });
                    }
                }
            }
        }
        if inner.pending >= self.max_pending {
            return Gate::Refused(ApprovalError::Full {
                max: self.max_pending,
                tool: call.tool.to_string(),
            });
        }
        inner.make_room(self.max_pending * KEPT_PER_PENDING);
        let id: Arc<str> = Arc::from(format!("ap_{:032x}", rand::random::<u128>()));
        let requested = SystemTime::now();
        let entry = Entry {
            arguments: Arc::new(self.shown(call.arguments)),
            binding: binding.clone(),
            requested,
            requested_at: now,
            deadline: now + self.expiry,
            state: State::Pending,
        };
        if let Some(w) = &self.webhook {
            w.send(ApprovalAlert {
                event: "approval_requested",
                id: id.to_string(),
                agent: binding.agent.to_string(),
                session: binding.session.as_deref().map(String::from),
                server: binding.server.to_string(),
                tool: binding.tool.to_string(),
                digest: binding.digest.to_string(),
                expires: rfc3339(requested + self.expiry),
                link: format!("{}#{id}", self.page_url()),
                time: rfc3339(requested),
            });
        }
        inner.by_call.insert(binding, id.clone());
        inner.by_id.insert(id.clone(), entry);
        inner.pending += 1;
        gauge!(m::APPROVALS_PENDING).increment(1.0);
        Gate::Pending {
            id,
            expires_in: self.expiry,
        }
    }

    /// Put back an approval whose call was not forwarded (another call of its POST was held or
    /// refused), unless the same call was approved again meanwhile.
    pub fn restore(&self, ticket: Ticket) {
        let mut inner = self.lock();
        if inner.by_call.contains_key(&ticket.entry.binding) {
            return;
        }
        inner.mark_used(&ticket.id, false);
        inner
            .by_call
            .insert(ticket.entry.binding.clone(), ticket.id.clone());
        inner.by_id.insert(ticket.id, ticket.entry);
    }

    /// A person's decision on approval `id`; with `digest`, only if the pending call's arguments
    /// are the ones the person saw.
    pub fn decide(
        &self,
        id: &str,
        approve: bool,
        digest: Option<&str>,
    ) -> Result<&'static str, DecideError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sweep(now, self.expiry);
        let Some((key, e)) = inner.by_id.get_key_value(id) else {
            return Err(match inner.history.iter().find(|d| &*d.id == id) {
                Some(d) if d.decision == State::Expired => DecideError::Expired(id.into()),
                Some(d) => DecideError::AlreadyDecided {
                    id: id.into(),
                    decision: d.decision.as_str(),
                },
                None => DecideError::NotFound(id.into()),
            });
        };
        match e.state {
            State::Pending => {}
            State::Expired => return Err(DecideError::Expired(id.into())),
            s => {
                return Err(DecideError::AlreadyDecided {
                    id: id.into(),
                    decision: s.as_str(),
                })
            }
        }
        if digest.is_some_and(|d| d != &*e.binding.digest) {
            return Err(DecideError::DigestMismatch(id.into()));
        }
        let key = key.clone();
        let state = if approve {
            State::Approved
        } else {
            State::Denied
        };
        inner.settle(&key, state, now, self.expiry);
        Ok(state.as_str())
    }

    /// The pending approvals and the last hour's decisions, as the admin API lists them.
    pub fn list(&self) -> Value {
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut inner = self.lock();
        inner.sweep(now, self.expiry);
        let mut pending: Vec<(&Arc<str>, &Entry)> = inner
            .by_id
            .iter()
            .filter(|(_, e)| e.state == State::Pending)
            .collect();
        pending.sort_by_key(|(_, e)| e.requested_at);
        let pending: Vec<Value> = pending
            .into_iter()
            .map(|(id, e)| {
                let mut v = e.binding.view(id, &e.arguments);
                v["requested"] = json!(rfc3339(e.requested));
                v["expires"] = json!(rfc3339(e.requested + self.expiry));
                v["age_seconds"] = json!(now.saturating_duration_since(e.requested_at).as_secs());
                v["expires_in_seconds"] =
                    json!(e.deadline.saturating_duration_since(now).as_secs());
                v
            })
            .collect();
        let decided: Vec<Value> = inner
            .history
            .iter()
            .filter(|d| wall.duration_since(d.decided).unwrap_or_default() < HISTORY)
            .map(|d| {
                let mut v = d.binding.view(&d.id, &d.arguments);
                v["decision"] = json!(d.decision.as_str());
                v["decided"] = json!(rfc3339(d.decided));
                v["waited_seconds"] = json!(d.waited.as_secs_f64());
                v["used"] = json!(d.used);
                v
            })
            .collect();
        json!({
            "approvals": pending,
            "decided": decided,
            "expiry_seconds": self.expiry.as_secs(),
            "max_pending": self.max_pending,
        })
    }

    /// Expire what is due (the pending gauge and the expired count stay current without
    /// traffic). Call every few seconds.
    pub fn sweep(&self) {
        self.lock().sweep(Instant::now(), self.expiry);
    }

    /// Expire due requests every second, forever.
    pub async fn run_expiry(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            self.sweep();
        }
    }

    /// The arguments as shown to people: redacted by `telemetry.redact_patterns`, cut to
    /// [`MAX_SHOWN_BYTES`].
    fn shown(&self, args: Option<&Value>) -> Value {
        let mut v = args.cloned().unwrap_or(Value::Object(Map::new()));
        if let Some(p) = &self.redact {
            p.redact_json(&mut v);
        }
        let text = v.to_string();
        if text.len() <= MAX_SHOWN_BYTES {
            return v;
        }
        let mut cut = MAX_SHOWN_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        Value::String(format!("{}… (cut)", &text[..cut]))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent maps (every change is one insert or
        // remove): keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// === impl Inner ===

impl Inner {
    /// Pending requests past their expiry expire; decided entries past their deadline go.
    fn sweep(&mut self, now: Instant, expiry: Duration) {
        let due: Vec<(Arc<str>, State)> = self
            .by_id
            .iter()
            .filter(|(_, e)| e.deadline <= now)
            .map(|(id, e)| (id.clone(), e.state))
            .collect();
        for (id, state) in due {
            if state == State::Pending {
                self.settle(&id, State::Expired, now, expiry);
            } else {
                self.forget(&id);
            }
        }
        let wall = SystemTime::now();
        while self
            .history
            .back()
            .is_some_and(|d| wall.duration_since(d.decided).unwrap_or_default() >= HISTORY)
        {
            self.history.pop_back();
        }
    }

    /// A pending request is decided (or expires): counted, listed, kept for the agent to learn.
    fn settle(&mut self, id: &Arc<str>, state: State, now: Instant, expiry: Duration) {
        let Some(e) = self.by_id.get_mut(id) else {
            return;
        };
        if e.state != State::Pending {
            return;
        }
        e.state = state;
        e.deadline = now + expiry;
        let waited = now.saturating_duration_since(e.requested_at);
        let decided = Decided {
            id: id.clone(),
            binding: e.binding.clone(),
            arguments: e.arguments.clone(),
            decision: state,
            decided: SystemTime::now(),
            waited,
            used: false,
        };
        self.pending = self.pending.saturating_sub(1);
        gauge!(m::APPROVALS_PENDING).decrement(1.0);
        counter!(m::APPROVAL_DECISIONS_TOTAL, "decision" => state.as_str()).increment(1);
        histogram!(m::APPROVAL_WAIT_SECONDS).record(waited.as_secs_f64());
        tracing::info!(approval = %id, decision = state.as_str(), tool = %e.binding.tool,
            agent = %e.binding.agent, waited_s = waited.as_secs_f64(), "tool call approval decided");
        self.history.push_front(decided);
        self.history.truncate(MAX_HISTORY);
    }

    /// Take an approved entry out for the call that uses it.
    fn claim(&mut self, id: &Arc<str>) -> Option<Entry> {
        let e = self.by_id.remove(id)?;
        if self.by_call.get(&e.binding) == Some(id) {
            self.by_call.remove(&e.binding);
        }
        self.mark_used(id, true);
        Some(e)
    }

    fn mark_used(&mut self, id: &Arc<str>, used: bool) {
        if let Some(d) = self.history.iter_mut().find(|d| &d.id == id) {
            d.used = used;
        }
    }

    /// Drop an entry (its outcome was delivered, or is no longer kept).
    fn forget(&mut self, id: &Arc<str>) {
        if let Some(e) = self.by_id.remove(id) {
            if e.state == State::Pending {
                self.pending = self.pending.saturating_sub(1);
                gauge!(m::APPROVALS_PENDING).decrement(1.0);
            }
            if self.by_call.get(&e.binding) == Some(id) {
                self.by_call.remove(&e.binding);
            }
        }
    }

    /// Below `cap` entries: the decided entry due first goes.
    fn make_room(&mut self, cap: usize) {
        while self.by_id.len() >= cap {
            let oldest = self
                .by_id
                .iter()
                .filter(|(_, e)| e.state != State::Pending)
                .min_by_key(|(_, e)| e.deadline)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => self.forget(&id),
                None => return,
            }
        }
    }
}

// === impl Binding ===

impl Binding {
    fn view(&self, id: &str, arguments: &Value) -> Value {
        json!({
            "id": id,
            "agent": &*self.agent,
            "session": self.session.as_deref(),
            "server": &*self.server,
            "tool": &*self.tool,
            "arguments": arguments,
            "digest": &*self.digest,
        })
    }
}

/// SHA-256 (hex) of server, tool and the arguments with object keys sorted.
pub fn digest(server: &str, tool: &str, args: Option<&Value>) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(server.as_bytes());
    ctx.update(&[0]);
    ctx.update(tool.as_bytes());
    ctx.update(&[0]);
    let empty = Value::Object(Map::new());
    ctx.update(canonical(args.unwrap_or(&empty)).to_string().as_bytes());
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `v` with every object's keys in sorted order.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&o[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_from_str;

    fn approvals(extra: &str) -> Approvals {
        let c = load_from_str(extra, "t").unwrap();
        Approvals::from_config(&c, None)
    }

    fn call<'a>(
        agent: &'a Arc<str>,
        server: &'a Arc<str>,
        tool: &'a str,
        args: &'a Value,
    ) -> HeldCall<'a> {
        HeldCall {
            agent,
            session: None,
            server,
            tool,
            arguments: Some(args),
        }
    }

    fn pending_id(g: Gate) -> Arc<str> {
        match g {
            Gate::Pending { id, .. } => id,
            _ => panic!("not pending"),
        }
    }

    #[test]
    fn digest_ignores_key_order_and_binds_server_tool_and_arguments() {
        let a = json!({"to": "x", "n": {"b": 1, "a": 2}});
        let b = json!({"n": {"a": 2, "b": 1}, "to": "x"});
        assert_eq!(digest("s", "t", Some(&a)), digest("s", "t", Some(&b)));
        assert_ne!(digest("s", "t", Some(&a)), digest("s", "u", Some(&a)));
        assert_ne!(digest("s", "t", Some(&a)), digest("r", "t", Some(&a)));
        assert_ne!(
            digest("s", "t", Some(&a)),
            digest("s", "t", Some(&json!({"to": "y"})))
        );
        assert_eq!(digest("s", "t", None), digest("s", "t", Some(&json!({}))));
    }

    #[test]
    fn approve_once_deny_expire_and_the_cap() {
        let ap = approvals("approvals: { expiry: 1h, max_pending: 2 }\ntelemetry: { redact_patterns: ['\\d{3}-\\d{2}-\\d{4}'] }\n");
        let (agent, server): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("tools"));
        let args = json!({"to": "ssn 123-45-6789"});
        let id = pending_id(ap.check(&call(&agent, &server, "send", &args)));
        assert_eq!(
            &*pending_id(ap.check(&call(&agent, &server, "send", &args))),
            &*id,
            "the same call waits on the same request"
        );
        let listed = ap.list();
        assert_eq!(listed["approvals"][0]["arguments"]["to"], "ssn [REDACTED]");
        assert!(matches!(
            ap.decide(&id, true, Some("wrong")),
            Err(DecideError::DigestMismatch(_))
        ));
        assert_eq!(ap.decide(&id, true, None).unwrap(), "approved");
        assert!(matches!(
            ap.decide(&id, false, None),
            Err(DecideError::AlreadyDecided {
                decision: "approved",
                ..
            })
        ));
        let other = json!({"to": "someone else"});
        let other_id = pending_id(ap.check(&call(&agent, &server, "send", &other)));
        let Gate::Approved(t) = ap.check(&call(&agent, &server, "send", &args)) else {
            panic!("approved")
        };
        // Claimed: an identical call racing it cannot use it too (it asks anew; denied here).
        let racing = pending_id(ap.check(&call(&agent, &server, "send", &args)));
        assert_ne!(&*racing, &*id);
        ap.decide(&racing, false, None).unwrap();
        assert!(matches!(
            ap.check(&call(&agent, &server, "send", &args)),
            Gate::Refused(ApprovalError::Denied { .. })
        ));
        // Not forwarded after all: the approval goes back, and the next call uses it.
        ap.restore(t);
        let Gate::Approved(t) = ap.check(&call(&agent, &server, "send", &args)) else {
            panic!("restored")
        };
        drop(t);
        let again = pending_id(ap.check(&call(&agent, &server, "send", &args)));
        assert_ne!(&*again, &*id, "single use: a new request");
        assert!(matches!(
            ap.check(&call(&agent, &server, "third", &args)),
            Gate::Refused(ApprovalError::Full { max: 2, .. })
        ));
        assert_eq!(ap.decide(&other_id, false, None).unwrap(), "denied");
        assert!(matches!(
            ap.check(&call(&agent, &server, "send", &other)),
            Gate::Refused(ApprovalError::Denied { .. })
        ));
        assert!(matches!(
            ap.decide("ap_nope", true, None),
            Err(DecideError::NotFound(_))
        ));
        // Expiry, with the clock moved by the deadline.
        ap.lock()
            .by_id
            .values_mut()
            .for_each(|e| e.deadline = Instant::now());
        ap.sweep();
        assert!(matches!(
            ap.decide(&again, true, None),
            Err(DecideError::Expired(_))
        ));
        assert!(matches!(
            ap.check(&call(&agent, &server, "send", &args)),
            Gate::Refused(ApprovalError::Expired { .. })
        ));
        assert_eq!(ap.lock().pending, 0);
        let decided = ap.list()["decided"].as_array().unwrap().len();
        assert_eq!(decided, 4, "approved, denied twice, expired");
    }
}
