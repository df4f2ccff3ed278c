//! [`Tasks`]: the live tasks this sidecar has seen calls of, their numbers, and their end.
//!
//! A task is live from its first call here until it has no call in flight and none for
//! `identity.task_idle_timeout`; then it ends and its numbers go to the `tokenwarden_task_*`
//! histograms, labelled by the agent of its first call here (a bounded label: agents are capped).
//! A task's calls on other sidecars are counted there: these numbers are this sidecar's share.
//! Memory is bounded: at most `identity.max_live_tasks` entries; past that, new tasks are not
//! tracked (`tokenwarden_tasks_untracked_total`) while their budgets still apply.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use metrics::{counter, gauge, histogram};
use tokio::time::Instant;

use crate::record::{Totals, NANO_PER_USD};
use crate::session::expire_every;
use crate::telemetry::metrics as m;

/// Live tasks by id.
#[derive(Debug)]
pub struct Tasks {
    /// Keyed by ids clients choose: foldhash seeded at random per process (SipHash cost
    /// more than the rest of a lookup).
    live: DashMap<Arc<str>, Entry, foldhash::fast::RandomState>,
    idle: Duration,
    max: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Agent of the task's first call here.
    agent: Arc<str>,
    started: Instant,
    /// When the last call began or ended.
    last_seen: Instant,
    /// Calls begun and not yet ended: a task is not idle while one is in flight.
    in_flight: u32,
    numbers: TaskNumbers,
}

/// What a task's calls through this sidecar came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskNumbers {
    /// LLM calls admitted (each agent step).
    pub steps: u64,
    /// LLM calls, refused ones included.
    pub llm_calls: u64,
    /// Tool calls the model made.
    pub tool_calls: u64,
    /// Tool results the agents reported as failed.
    pub tool_failures: u64,
    /// Calls with a tool call that needs a person's approval (`approval_required`).
    pub escalations: u64,
    /// Tokens and cost (nano-USD).
    pub spent: Totals,
}

/// One finished call of a task.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallDone {
    /// Budgets and policies let it through.
    pub admitted: bool,
    /// Tool calls in its response.
    pub tool_calls: u64,
    /// Failed tool results its request reported.
    pub tool_failures: u64,
    /// Its response called a tool that needs approval.
    pub escalated: bool,
    /// What it came to.
    pub spent: Totals,
}

/// What is known about one live task here.
#[derive(Debug, Clone)]
pub struct TaskSnapshot {
    /// Agent of its first call here.
    pub agent: Arc<str>,
    /// Its numbers so far.
    pub numbers: TaskNumbers,
    /// How long ago its first call here arrived.
    pub age: Duration,
    /// How long ago a call last began or ended.
    pub idle: Duration,
    /// Calls in flight.
    pub in_flight: u32,
}

impl Tasks {
    /// Tasks that end after `idle` without a call; at most `max` tracked at once.
    pub fn new(idle: Duration, max: usize) -> Self {
        Self {
            live: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            idle,
            max,
        }
    }

    /// An LLM call of task `id` by `agent` begins. Returns whether the task is tracked (false:
    /// the table is full and the task is new); only then must [`Tasks::end`] follow.
    pub fn begin(&self, id: &Arc<str>, agent: &Arc<str>, now: Instant) -> bool {
        if let Some(mut e) = self.live.get_mut(id.as_ref()) {
            e.in_flight = e.in_flight.saturating_add(1);
            e.numbers.llm_calls = e.numbers.llm_calls.saturating_add(1);
            e.last_seen = now;
            return true;
        }
        // Checked before inserting, so concurrent first calls may pass it together: the bound is
        // `max` plus the calls in flight.
        if self.live.len() >= self.max {
            counter!(m::TASKS_UNTRACKED_TOTAL).increment(1);
            return false;
        }
        let mut e = self.live.entry(id.clone()).or_insert_with(|| Entry {
            agent: agent.clone(),
            started: now,
            last_seen: now,
            in_flight: 0,
            numbers: TaskNumbers::default(),
        });
        e.in_flight = e.in_flight.saturating_add(1);
        e.numbers.llm_calls = e.numbers.llm_calls.saturating_add(1);
        e.last_seen = now;
        let first = e.numbers.llm_calls == 1;
        drop(e);
        if first {
            gauge!(m::TASKS_ACTIVE).set(self.live.len() as f64);
        }
        true
    }

    /// A call [`Tasks::begin`] tracked has finished with `done`.
    pub fn end(&self, id: &str, done: CallDone, now: Instant) {
        let Some(mut e) = self.live.get_mut(id) else {
            return;
        };
        e.in_flight = e.in_flight.saturating_sub(1);
        e.last_seen = now;
        let n = &mut e.numbers;
        n.steps = n.steps.saturating_add(u64::from(done.admitted));
        n.tool_calls = n.tool_calls.saturating_add(done.tool_calls);
        n.tool_failures = n.tool_failures.saturating_add(done.tool_failures);
        n.escalations = n.escalations.saturating_add(u64::from(done.escalated));
        n.spent.input = n.spent.input.saturating_add(done.spent.input);
        n.spent.output = n.spent.output.saturating_add(done.spent.output);
        n.spent.cost = n.spent.cost.saturating_add(done.spent.cost);
    }

    /// The live task `id`, if any.
    pub fn get(&self, id: &str, now: Instant) -> Option<TaskSnapshot> {
        self.live.get(id).map(|e| snapshot(&e, now))
    }

    /// Up to `n` live tasks with the most tokens, most first (the admin API; a scan).
    pub fn top(&self, n: usize, now: Instant) -> Vec<(Arc<str>, TaskSnapshot)> {
        let mut all: Vec<(Arc<str>, TaskSnapshot)> = self
            .live
            .iter()
            .map(|e| (e.key().clone(), snapshot(e.value(), now)))
            .collect();
        all.sort_by_key(|(_, s)| {
            let t = s.numbers.spent;
            std::cmp::Reverse(t.input.saturating_add(t.output))
        });
        all.truncate(n);
        all
    }

    /// Forget task `id` here (admin reset): its next call starts it again.
    pub fn reset(&self, id: &str) -> bool {
        // A task with calls in flight keeps its entry, numbers cleared: their ends must find
        // it (and keep it from expiring under them), not a newer entry of the same id.
        let found = match self.live.remove_if(id, |_, e| e.in_flight == 0) {
            Some(_) => true,
            None => self
                .live
                .get_mut(id)
                .map(|mut e| {
                    let calls = e.in_flight;
                    e.numbers = TaskNumbers::default();
                    e.numbers.llm_calls = u64::from(calls);
                })
                .is_some(),
        };
        gauge!(m::TASKS_ACTIVE).set(self.live.len() as f64);
        found
    }

    /// Number of live tasks.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no task is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// End every task with no call in flight and none for longer than the idle time, recording
    /// its numbers. Returns how many ended.
    pub fn expire(&self, now: Instant) -> usize {
        let mut ended = 0;
        self.live.retain(|_, e| {
            if e.in_flight > 0 || now.saturating_duration_since(e.last_seen) < self.idle {
                return true;
            }
            record(e);
            ended += 1;
            false
        });
        gauge!(m::TASKS_ACTIVE).set(self.live.len() as f64);
        ended
    }

    /// Expire idle tasks forever, checking a few times per idle period.
    pub async fn run_expiry(self: Arc<Self>) {
        expire_every(self.idle, || {
            self.expire(Instant::now());
        })
        .await
    }
}

/// The histograms of one ended task.
fn record(e: &Entry) {
    let n = &e.numbers;
    let agent = e.agent.clone();
    let tokens = n.spent.input.saturating_add(n.spent.output);
    for (name, v) in [
        (m::TASK_STEPS, n.steps as f64),
        (m::TASK_LLM_CALLS, n.llm_calls as f64),
        (m::TASK_TOOL_CALLS, n.tool_calls as f64),
        (m::TASK_TOOL_FAILURES, n.tool_failures as f64),
        (m::TASK_ESCALATIONS, n.escalations as f64),
        (m::TASK_TOKENS, tokens as f64),
        (m::TASK_COST_USD, n.spent.cost as f64 / NANO_PER_USD),
        (
            m::TASK_DURATION_SECONDS,
            e.last_seen.duration_since(e.started).as_secs_f64(),
        ),
    ] {
        histogram!(name, "agent" => agent.clone()).record(v);
    }
}

fn snapshot(e: &Entry, now: Instant) -> TaskSnapshot {
    TaskSnapshot {
        agent: e.agent.clone(),
        numbers: e.numbers,
        age: now.saturating_duration_since(e.started),
        idle: now.saturating_duration_since(e.last_seen),
        in_flight: e.in_flight,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(admitted: bool, tokens: u64) -> CallDone {
        CallDone {
            admitted,
            tool_calls: 1,
            tool_failures: 0,
            escalated: false,
            spent: Totals {
                input: tokens,
                output: 0,
                cost: 0,
            },
        }
    }

    #[test]
    fn calls_add_up_and_a_task_with_a_call_in_flight_does_not_end() {
        let t = Tasks::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        let (a, sup) = (Arc::<str>::from("a"), Arc::<str>::from("supervisor"));
        assert!(t.begin(&a, &sup, t0));
        assert!(t.begin(&a, &Arc::from("worker"), t0));
        t.end("a", done(true, 10), t0 + Duration::from_secs(1));
        // One call still in flight: long idle does not end it.
        assert_eq!(t.expire(t0 + Duration::from_secs(600)), 0);
        t.end("a", done(false, 5), t0 + Duration::from_secs(2));
        let s = t.get("a", t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(&*s.agent, "supervisor", "the first call's agent");
        assert_eq!(
            (s.numbers.steps, s.numbers.llm_calls, s.numbers.tool_calls),
            (1, 2, 2)
        );
        assert_eq!(s.numbers.spent.input, 15);
        assert_eq!(s.age, Duration::from_secs(2));
        assert_eq!(t.expire(t0 + Duration::from_secs(61)), 0, "ended 59 s ago");
        assert_eq!(t.expire(t0 + Duration::from_secs(62)), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn past_the_cap_new_tasks_are_not_tracked() {
        let t = Tasks::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        let agent = Arc::<str>::from("x");
        assert!(t.begin(&Arc::from("1"), &agent, t0));
        assert!(t.begin(&Arc::from("2"), &agent, t0));
        assert!(!t.begin(&Arc::from("3"), &agent, t0));
        assert!(t.begin(&Arc::from("1"), &agent, t0), "known tasks go on");
        assert_eq!(t.len(), 2);
        t.end("3", done(true, 1), t0);
        assert!(t.get("3", t0).is_none());
        for id in ["1", "2"] {
            let a = Arc::<str>::from(id);
            assert!(t.begin(&a, &agent, t0));
        }
        t.end("1", done(true, 100), t0);
        let top: Vec<_> = t.top(5, t0).into_iter().map(|(id, _)| id).collect();
        assert_eq!(&*top[0], "1");
        // Every call of "1" (three) and "2" (two) ended: nothing in flight.
        t.end("1", done(true, 1), t0);
        t.end("1", done(true, 1), t0);
        t.end("2", done(true, 1), t0);
        t.end("2", done(true, 1), t0);
        assert!(t.reset("1"));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_reset_under_a_call_in_flight_keeps_the_entry_that_call_ends_in() {
        let t = Tasks::new(Duration::from_secs(1), 10);
        let t0 = Instant::now();
        let (id, agent) = (Arc::<str>::from("t"), Arc::<str>::from("a"));
        assert!(t.begin(&id, &agent, t0)); // call A, streaming
        t.end("t", done(true, 40), t0);
        assert!(t.begin(&id, &agent, t0)); // call B
        assert!(t.reset("t"), "admin reset while B streams");
        let s = t.get("t", t0).unwrap();
        assert_eq!(
            (s.in_flight, s.numbers.spent.input),
            (1, 0),
            "numbers cleared"
        );
        // B outlives the idle time: the task is not ended under it.
        assert_eq!(t.expire(t0 + Duration::from_secs(5)), 0);
        t.end("t", done(true, 7), t0 + Duration::from_secs(5));
        let s = t.get("t", t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(s.numbers.spent.input, 7, "B's numbers kept");
        assert!(t.reset("t"));
        assert!(t.is_empty(), "idle: removed");
    }
}
