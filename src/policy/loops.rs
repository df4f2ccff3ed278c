//! Loop detection: the same request — a normalised hash of model, messages and tools — repeated
//! within a session and a time window.
//!
//! State is per session id, outside the reloadable policy set, so a config reload does not
//! forget what a session already did. Each session keeps at most [`MAX_PER_SESSION`] recent
//! hashes; sessions with nothing inside the longest window are swept every [`SWEEP_EVERY`] calls.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde_json::Value;
use tokio::time::Instant;

use crate::providers::Node;

/// Request hashes remembered per session.
pub const MAX_PER_SESSION: usize = 64;
/// Calls between two sweeps of stale sessions.
const SWEEP_EVERY: u64 = 1024;
/// Sessions tracked at most (session ids come from traffic); past it the eighth least recently
/// active go, as the live-session table's bound forgets sessions too.
pub const MAX_SESSIONS: usize = 100_000;

/// Recent request hashes per session.
#[derive(Debug, Default)]
pub struct LoopTracker {
    /// By session id (client-chosen): foldhash seeded at random per process.
    sessions: DashMap<Arc<str>, VecDeque<(u64, Instant)>, foldhash::fast::RandomState>,
    calls: AtomicU64,
}

// === impl LoopTracker ===

impl LoopTracker {
    /// How many identical requests `session` would have made within `window` if this one
    /// (`hash`, at `now`) is admitted — itself included. Nothing is recorded: a refused call
    /// (and a client's retries of it) must not feed the history; [`LoopTracker::record`] does.
    pub fn peek(&self, session: &str, hash: u64, now: Instant, window: Duration) -> u32 {
        // Instants compare cheaply; a duration per entry was most of a peek.
        let since = now.checked_sub(window);
        let earlier = self.sessions.get(session).map_or(0, |seen| {
            seen.iter()
                .filter(|(h, at)| *h == hash && since.is_none_or(|s| *at >= s))
                .count()
        });
        earlier as u32 + 1
    }

    /// Record `hash` for `session` at `now` (an admitted call). `window` is the agent's loop
    /// window; `longest` is the longest window any agent uses: sessions idle for longer are
    /// dropped by the periodic sweep.
    pub fn record(
        &self,
        session: &Arc<str>,
        hash: u64,
        now: Instant,
        window: Duration,
        longest: Duration,
    ) {
        if self.calls.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep(now, longest.max(window));
        }
        if self.sessions.len() >= MAX_SESSIONS && !self.sessions.contains_key(session) {
            self.make_room(now, longest.max(window));
        }
        let mut seen = self.sessions.entry(session.clone()).or_default();
        while seen
            .front()
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) > window)
        {
            seen.pop_front();
        }
        if seen.len() == MAX_PER_SESSION {
            seen.pop_front();
        }
        seen.push_back((hash, now));
    }

    /// Sessions tracked.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// At the bound: stale sessions go, and if that is not enough, the eighth least recently
    /// active (one pass, so a flood of new ids pays it once per eighth of the bound).
    fn make_room(&self, now: Instant, window: Duration) {
        self.sweep(now, window);
        if self.sessions.len() < MAX_SESSIONS {
            return;
        }
        let mut last: Vec<Instant> = self
            .sessions
            .iter()
            .filter_map(|e| e.value().back().map(|(_, at)| *at))
            .collect();
        let cut = last.len() / 8;
        if cut == 0 {
            return;
        }
        let (_, &mut oldest_kept, _) = last.select_nth_unstable(cut);
        self.sessions
            .retain(|_, seen| seen.back().is_some_and(|(_, at)| *at >= oldest_kept));
    }

    fn sweep(&self, now: Instant, window: Duration) {
        self.sessions.retain(|_, seen| {
            seen.back()
                .is_some_and(|(_, at)| now.duration_since(*at) <= window)
        });
    }
}

/// Hash of what makes two requests "the same": model, conversation (`messages`, Responses
/// `input`, Gemini `contents`, `system`, `prompt`) and tools. Object entries are hashed one by
/// one and summed, so key order and whitespace do not matter; sampling settings and ids do not
/// count. Each part is its node's [`Node::content_hash`] (read at parse when the document was
/// parsed hashing, as the proxy does where loop detection watches a session).
pub fn request_hash(doc: Node<'_>) -> u64 {
    const PARTS: [&str; 9] = [
        "model",
        "system",
        "messages",
        "input",
        "instructions",
        "contents",
        "systemInstruction",
        "prompt",
        "tools",
    ];
    // One walk of the root's entries rather than a lookup (a walk) per part; a parsed document
    // holds each key once.
    let mut found = [None; PARTS.len()];
    for (key, value) in doc.entries().into_iter().flatten() {
        if let Some(i) = PARTS.iter().position(|p| *p == key) {
            found[i] = Some(value);
        }
    }
    let mut h = hasher();
    for (key, value) in PARTS.iter().zip(found) {
        if let Some(v) = value {
            key.hash(&mut h);
            v.content_hash().hash(&mut h);
        }
    }
    h.finish()
}

/// The hasher of request and tool-call hashes: foldhash with a fixed seed (compared only within
/// a process, like SipHash's fixed keys before it, at a third of the cost on a call's few parts).
fn hasher() -> foldhash::quality::FoldHasher<'static> {
    const SEED: foldhash::quality::FixedState =
        foldhash::quality::FixedState::with_seed(0x100b_5eed);
    SEED.build_hasher()
}

/// Hash of one executed tool call: the tool and its arguments (key order does not matter).
/// Tool calls and LLM requests share a session's history; their hashes differ by construction.
pub fn tool_call_hash(tool: &str, arguments: Option<&Value>) -> u64 {
    let mut h = hasher();
    "tools/call".hash(&mut h);
    tool.hash(&mut h);
    hash_value(arguments.unwrap_or(&Value::Null), &mut h);
    h.finish()
}

fn hash_value(v: &Value, h: &mut impl Hasher) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        Value::Number(n) => {
            2u8.hash(h);
            match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), ..) => u.hash(h),
                (None, Some(i), _) => i.hash(h),
                (.., f) => f.map(f64::to_bits).hash(h),
            }
        }
        Value::String(s) => (3u8, s).hash(h),
        Value::Array(a) => {
            (4u8, a.len()).hash(h);
            a.iter().for_each(|x| hash_value(x, h));
        }
        Value::Object(o) => {
            // Entries hashed one by one and summed: key order does not matter, no sorting.
            let sum = o.iter().fold(0u64, |acc, (k, x)| {
                let mut eh = hasher();
                k.hash(&mut eh);
                hash_value(x, &mut eh);
                acc.wrapping_add(eh.finish())
            });
            (5u8, o.len(), sum).hash(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Doc;
    use serde_json::json;

    /// Peek, then record: what an admitted call does.
    fn observe(t: &LoopTracker, s: &Arc<str>, hash: u64, now: Instant, w: Duration) -> u32 {
        let n = t.peek(s, hash, now, w);
        t.record(s, hash, now, w, w);
        n
    }

    #[test]
    fn hash_ignores_key_order_and_sampling_but_not_content() {
        let a = json!({"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.1});
        let b = json!({"temperature":0.9,"messages":[{"content":"hi","role":"user"}],"model":"m"});
        let c = json!({"model":"m","messages":[{"role":"user","content":"hi!"}]});
        let hash = |v: &Value| request_hash(Doc::of(v).root());
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(hash(&a), hash(&c));
        // Read at parse or walked: the same hash.
        let hashed = |v: &Value| {
            let d = Doc::parse_hashing(serde_json::to_vec(v).unwrap().into()).unwrap();
            request_hash(d.root())
        };
        assert_eq!(hashed(&a), hash(&a));
        assert_eq!(hashed(&b), hash(&a));
        assert_ne!(hashed(&c), hash(&a));
    }

    #[test]
    fn counts_repeats_within_the_window_per_session() {
        let t = LoopTracker::default();
        let s1: Arc<str> = Arc::from("s1");
        let s2: Arc<str> = Arc::from("s2");
        let w = Duration::from_secs(60);
        let t0 = Instant::now();
        assert_eq!(observe(&t, &s1, 7, t0, w), 1);
        assert_eq!(observe(&t, &s1, 7, t0 + Duration::from_secs(1), w), 2);
        assert_eq!(observe(&t, &s2, 7, t0, w), 1, "sessions are separate");
        assert_eq!(observe(&t, &s1, 8, t0, w), 1);
        // The first two fall out of the window.
        assert_eq!(observe(&t, &s1, 7, t0 + Duration::from_secs(62), w), 1);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn peeking_records_nothing() {
        let t = LoopTracker::default();
        let s: Arc<str> = Arc::from("s");
        let w = Duration::from_secs(60);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(t.peek(&s, 7, t0, w), 1);
        }
        assert!(t.is_empty());
        t.record(&s, 7, t0, w, w);
        assert_eq!(t.peek(&s, 7, t0, w), 2);
        assert_eq!(t.peek(&s, 7, t0 + Duration::from_secs(61), w), 1);
    }

    /// Ids from traffic inside the window cannot grow the table past its bound; the most
    /// recently active sessions are the ones kept.
    #[test]
    fn sessions_tracked_are_bounded() {
        let t = LoopTracker::default();
        let w = Duration::from_secs(600);
        let t0 = Instant::now();
        for i in 0..MAX_SESSIONS + 20_000 {
            let s: Arc<str> = Arc::from(format!("s{i}"));
            t.record(&s, 1, t0 + Duration::from_micros(i as u64), w, w);
        }
        assert!(t.len() <= MAX_SESSIONS, "{}", t.len());
        let newest = format!("s{}", MAX_SESSIONS + 20_000 - 1);
        assert_eq!(t.peek(&newest, 1, t0 + Duration::from_secs(1), w), 2);
    }

    #[test]
    fn memory_per_session_is_bounded() {
        let t = LoopTracker::default();
        let s: Arc<str> = Arc::from("s");
        let now = Instant::now();
        for i in 0..1000 {
            observe(&t, &s, i, now, Duration::from_secs(60));
        }
        assert_eq!(t.sessions.get(&s).unwrap().len(), MAX_PER_SESSION);
        t.sweep(now + Duration::from_secs(120), Duration::from_secs(60));
        assert!(t.is_empty());
    }
}
