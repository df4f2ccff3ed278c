//! [`Sessions`]: live sessions, their step counters, and their end after an idle time.
//!
//! A session is live from its first call until `identity.session_idle_timeout` passes without
//! one; then it ends, and its steps and duration go to `tokenwarden_session_steps` and
//! `tokenwarden_session_duration_seconds`. A later call with the same id starts it again.
//!
//! A step is taken only once a call is admitted ([`Sessions::next_step`] peeks for the policies,
//! [`Sessions::take_step`] commits), so refused calls and their retries leave no trace. Each live
//! session also keeps its token and cost totals for the sessions API, whatever the budget limits:
//! memory is one small entry per live session, gone at idle expiry.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use metrics::{counter, gauge, histogram};
use tokio::time::Instant;

use crate::record::Totals;
use crate::telemetry::metrics as m;

/// Live sessions by id.
#[derive(Debug)]
pub struct Sessions {
    /// Keyed by ids clients choose: foldhash seeded at random per process (SipHash cost
    /// more than the rest of a lookup).
    live: DashMap<Arc<str>, Entry, foldhash::fast::RandomState>,
    idle: Duration,
    /// Most live sessions (`identity.max_live_sessions`): ids are the client's to choose.
    max: usize,
    /// Sessions in the order they were queued for eviction (a CLOCK: one seen since it was
    /// queued goes round again, one not seen goes). Touched only when a session starts or one
    /// must end, never on a known session's call; ids that ended otherwise are dropped as met.
    order: Mutex<VecDeque<Arc<str>>>,
}

/// Queue entries looked at for one eviction before the first live one is taken whatever it is.
const EVICTION_TRIES: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Entry {
    steps: u64,
    started: Instant,
    last_seen: Instant,
    /// When it was (last) queued for eviction.
    queued: Instant,
    spent: Totals,
}

/// What is known about one live session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSnapshot {
    /// LLM calls so far.
    pub steps: u64,
    /// How long ago the first call arrived.
    pub age: Duration,
    /// How long ago the last call arrived.
    pub idle: Duration,
    /// What its calls came to so far.
    pub spent: Totals,
}

impl Sessions {
    /// Sessions that end after `idle` without a call, at most `max` live at once.
    pub fn new(idle: Duration, max: usize) -> Self {
        Self {
            live: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            idle,
            max: max.max(1),
            order: Mutex::new(VecDeque::new()),
        }
    }

    /// Count one more LLM call of session `id` and return its step number (1 for the first).
    pub fn step(&self, id: &Arc<str>, now: Instant) -> u64 {
        self.take_step(id, now, None).unwrap_or(u64::MAX)
    }

    /// The step number the next call of session `id` would get (no change is made).
    pub fn next_step(&self, id: &str) -> u64 {
        self.live.get(id).map_or(1, |e| e.steps.saturating_add(1))
    }

    /// Take the next step of session `id` for an admitted call and return its number, unless it
    /// would be past `max` (then nothing changes and `None` is returned): the check and the
    /// increment are one step under the entry's lock, so concurrent calls cannot both pass.
    pub fn take_step(&self, id: &Arc<str>, now: Instant, max: Option<u64>) -> Option<u64> {
        // A known session: one lookup, no key copied.
        if let Some(mut e) = self.live.get_mut(id.as_ref()) {
            let next = e.steps.saturating_add(1);
            if max.is_some_and(|m| next > m) {
                return None;
            }
            e.steps = next;
            e.last_seen = now;
            return Some(next);
        }
        if max.is_some_and(|m| m == 0) {
            return None;
        }
        // A new one: the size (a read of every shard) only here.
        if self.live.len() >= self.max {
            self.evict_one(now);
        }
        let step = {
            let mut e = self.live.entry(id.clone()).or_insert(Entry {
                steps: 0,
                started: now,
                last_seen: now,
                queued: now,
                spent: Totals::default(),
            });
            // A concurrent first call of the same session may have inserted it meanwhile.
            let next = e.steps.saturating_add(1);
            if max.is_some_and(|m| next > m) {
                return None;
            }
            e.steps = next;
            e.last_seen = now;
            next
        };
        if step == 1 {
            // Queued after the entry's lock is let go: eviction takes the queue's lock first.
            let mut order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
            // Ids of sessions that ended otherwise stay queued until met: bounded.
            if order.len() >= self.max.saturating_mul(2) {
                order.pop_front();
            }
            order.push_back(id.clone());
            drop(order);
            gauge!(m::SESSIONS_ACTIVE).set(self.live.len() as f64);
        }
        Some(step)
    }

    /// End one session (the table is full): the first in the queue not seen since it was
    /// queued; its steps and duration are recorded as at idle expiry, and its next call starts
    /// at step 1.
    fn evict_one(&self, now: Instant) {
        let mut order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
        let mut victim = None;
        for _ in 0..EVICTION_TRIES {
            let Some(id) = order.pop_front() else {
                break;
            };
            let Some(mut e) = self.live.get_mut(id.as_ref()) else {
                continue; // ended otherwise (idle, reset)
            };
            if e.last_seen > e.queued {
                // Seen since it was queued: a second chance.
                e.queued = now;
                drop(e);
                order.push_back(id);
                continue;
            }
            drop(e);
            victim = Some(id);
            break;
        }
        drop(order);
        // Every try went round again (all recently seen): the least recently seen of a few.
        let victim = victim.or_else(|| {
            self.live
                .iter()
                .take(16)
                .min_by_key(|e| e.value().last_seen)
                .map(|e| e.key().clone())
        });
        if let Some((_, e)) = victim.and_then(|id| self.live.remove(&id)) {
            histogram!(m::SESSION_STEPS).record(e.steps as f64);
            histogram!(m::SESSION_DURATION_SECONDS)
                .record(e.last_seen.duration_since(e.started).as_secs_f64());
            counter!(m::SESSIONS_EVICTED_TOTAL).increment(1);
        }
    }

    /// Add what one finished call of session `id` came to. A session that already ended (a call
    /// that outlived the idle time) is not brought back.
    pub fn charge(&self, id: &str, spent: Totals) {
        if let Some(mut e) = self.live.get_mut(id) {
            e.spent.input = e.spent.input.saturating_add(spent.input);
            e.spent.output = e.spent.output.saturating_add(spent.output);
            e.spent.cost = e.spent.cost.saturating_add(spent.cost);
        }
    }

    /// Up to `n` live sessions with the most tokens, most first (the admin API; a scan).
    pub fn top(&self, n: usize, now: Instant) -> Vec<(Arc<str>, SessionSnapshot)> {
        let mut all: Vec<(Arc<str>, SessionSnapshot)> = self
            .live
            .iter()
            .map(|e| (e.key().clone(), snapshot(e.value(), now)))
            .collect();
        all.sort_by_key(|(_, s)| std::cmp::Reverse(s.spent.input.saturating_add(s.spent.output)));
        all.truncate(n);
        all
    }

    /// The live session `id`, if any.
    pub fn get(&self, id: &str, now: Instant) -> Option<SessionSnapshot> {
        self.live.get(id).map(|e| snapshot(&e, now))
    }

    /// Forget session `id` (admin reset): its next call is step 1 again.
    pub fn reset(&self, id: &str) -> bool {
        let removed = self.live.remove(id).is_some();
        gauge!(m::SESSIONS_ACTIVE).set(self.live.len() as f64);
        removed
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// End every session idle for longer than the idle time, recording its steps and duration.
    /// Returns how many ended.
    pub fn expire(&self, now: Instant) -> usize {
        let mut ended = 0;
        self.live.retain(|_, e| {
            if now.saturating_duration_since(e.last_seen) < self.idle {
                return true;
            }
            histogram!(m::SESSION_STEPS).record(e.steps as f64);
            histogram!(m::SESSION_DURATION_SECONDS)
                .record(e.last_seen.duration_since(e.started).as_secs_f64());
            ended += 1;
            false
        });
        gauge!(m::SESSIONS_ACTIVE).set(self.live.len() as f64);
        ended
    }

    /// Expire idle sessions forever, checking a few times per idle period.
    pub async fn run_expiry(self: Arc<Self>) {
        expire_every(self.idle, || {
            self.expire(Instant::now());
        })
        .await
    }
}

/// Call `expire` forever, a few times per `idle` period (sessions' and tasks' idle expiry).
pub async fn expire_every(idle: Duration, expire: impl Fn()) {
    let every = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(15));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        expire();
    }
}

fn snapshot(e: &Entry, now: Instant) -> SessionSnapshot {
    SessionSnapshot {
        steps: e.steps,
        age: now.saturating_duration_since(e.started),
        idle: now.saturating_duration_since(e.last_seen),
        spent: e.spent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten thousand ids a client makes up keep at most `max` entries; a session in use stays.
    #[test]
    fn live_sessions_are_bounded_and_the_least_recently_seen_go_first() {
        let s = Sessions::new(Duration::from_secs(1800), 100);
        let t0 = Instant::now();
        let kept: Arc<str> = Arc::from("in-use");
        s.step(&kept, t0);
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_millis(i);
            let id: Arc<str> = Arc::from(format!("junk-{i}"));
            s.step(&id, now);
            if i % 10 == 0 {
                s.step(&kept, now);
            }
            assert!(s.len() <= 100, "{} live", s.len());
        }
        assert!(s.get("in-use", t0).is_some_and(|e| e.steps > 900));
    }

    /// Under a flood of made-up ids, sessions in use are never the ones that end: each is seen
    /// again before the queue comes round to it.
    #[test]
    fn a_flood_of_new_ids_ends_the_unused_ones_first() {
        let s = Sessions::new(Duration::from_secs(1800), 1000);
        let t0 = Instant::now();
        let used: Vec<Arc<str>> = (0..50).map(|i| Arc::from(format!("used-{i}"))).collect();
        for u in &used {
            s.step(u, t0);
        }
        for i in 0..100_000u64 {
            let now = t0 + Duration::from_micros(i * 10);
            s.step(&Arc::from(format!("junk-{i}")), now);
            if i % 200 == 0 {
                for u in &used {
                    s.step(u, now);
                }
            }
        }
        let expected = 1 + 100_000 / 200 + 1;
        for u in &used {
            let steps = s.get(u, t0).map_or(0, |e| e.steps);
            assert!(steps >= expected - 1, "{u} restarted: {steps} steps");
        }
        assert!(s.len() <= 1000);
    }

    #[test]
    fn steps_count_per_session_and_restart_after_idle() {
        let s = Sessions::new(Duration::from_secs(60), 1000);
        let t0 = Instant::now();
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        assert_eq!(s.step(&a, t0), 1);
        assert_eq!(s.step(&a, t0), 2);
        assert_eq!(s.step(&b, t0), 1);
        assert_eq!(s.len(), 2);
        let later = t0 + Duration::from_secs(30);
        assert_eq!(s.step(&a, later), 3);
        let snap = s.get("a", later).unwrap();
        assert_eq!((snap.steps, snap.age), (3, Duration::from_secs(30)));
        // b idle for 61 s ends; a (last seen at 30 s) is still live.
        assert_eq!(s.expire(t0 + Duration::from_secs(61)), 1);
        assert!(s.get("b", later).is_none());
        assert_eq!(
            s.step(&b, later),
            1,
            "an ended session starts again at step 1"
        );
        assert!(s.reset("a"));
        assert_eq!(s.step(&a, later), 1);
    }

    #[test]
    fn peeking_changes_nothing_and_a_step_past_max_is_not_taken() {
        let s = Sessions::new(Duration::from_secs(60), 1000);
        let t0 = Instant::now();
        let a: Arc<str> = Arc::from("a");
        assert_eq!(s.next_step("a"), 1);
        assert_eq!(s.take_step(&a, t0, Some(0)), None);
        assert!(s.is_empty(), "a refused first call leaves no session");
        assert_eq!(s.take_step(&a, t0, Some(2)), Some(1));
        assert_eq!(s.next_step("a"), 2);
        assert_eq!(s.next_step("a"), 2);
        assert_eq!(s.take_step(&a, t0, Some(2)), Some(2));
        assert_eq!(s.take_step(&a, t0, Some(2)), None);
        assert_eq!(s.get("a", t0).unwrap().steps, 2);
        s.charge(
            "a",
            Totals {
                input: 10,
                output: 5,
                cost: 7,
            },
        );
        s.charge(
            "a",
            Totals {
                input: 1,
                output: 1,
                cost: 0,
            },
        );
        s.charge(
            "gone",
            Totals {
                input: 1,
                output: 1,
                cost: 0,
            },
        );
        assert_eq!(
            s.get("a", t0).unwrap().spent,
            Totals {
                input: 11,
                output: 6,
                cost: 7
            }
        );
        assert!(
            s.get("gone", t0).is_none(),
            "charging does not bring a session back"
        );
        let b: Arc<str> = Arc::from("b");
        s.step(&b, t0);
        s.charge(
            "b",
            Totals {
                input: 100,
                output: 0,
                cost: 0,
            },
        );
        let top: Vec<_> = s.top(5, t0).into_iter().map(|(id, _)| id).collect();
        assert_eq!(top, [b, a]);
    }
}
