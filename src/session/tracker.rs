//! [`Sessions`]: live sessions, their step counters, and their end after an idle time.
//!
//! A session is live from its first call until `identity.session_idle_timeout` passes without
//! one; then it ends, and its steps and duration go to `tokenwarden_session_steps` and
//! `tokenwarden_session_duration_seconds`. A later call with the same id starts it again.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use metrics::{gauge, histogram};
use tokio::time::Instant;

use crate::telemetry::metrics as m;

/// Live sessions by id.
#[derive(Debug)]
pub struct Sessions {
    live: DashMap<Arc<str>, Entry>,
    idle: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    steps: u64,
    started: Instant,
    last_seen: Instant,
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
}

impl Sessions {
    /// Sessions that end after `idle` without a call.
    pub fn new(idle: Duration) -> Self {
        Self {
            live: DashMap::new(),
            idle,
        }
    }

    /// Count one more LLM call of session `id` and return its step number (1 for the first).
    pub fn step(&self, id: &Arc<str>, now: Instant) -> u64 {
        let step = {
            let mut e = self.live.entry(id.clone()).or_insert(Entry {
                steps: 0,
                started: now,
                last_seen: now,
            });
            e.steps += 1;
            e.last_seen = now;
            e.steps
        };
        if step == 1 {
            gauge!(m::SESSIONS_ACTIVE).set(self.live.len() as f64);
        }
        step
    }

    /// The live session `id`, if any.
    pub fn get(&self, id: &str, now: Instant) -> Option<SessionSnapshot> {
        self.live.get(id).map(|e| SessionSnapshot {
            steps: e.steps,
            age: now.saturating_duration_since(e.started),
            idle: now.saturating_duration_since(e.last_seen),
        })
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
        let every = (self.idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(15));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.expire(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_count_per_session_and_restart_after_idle() {
        let s = Sessions::new(Duration::from_secs(60));
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
}
