//! The embedded store: a dashmap of scope records, each updated under its shard's lock (never
//! across an `.await`), snapshotted atomically to a JSON file and reloaded on start.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use dashmap::DashMap;

use super::ledger::{
    decide, window_start, Charge, Counter, Grant, Group, Reserved, Short, Totals, Want,
};
use super::limits::{SESSION_PREFIX, TASK_PREFIX};

/// In-process budget store.
pub struct MemoryStore {
    /// Keyed by ids clients choose (sessions, tasks): foldhash with a per-process random seed,
    /// where SipHash was a sixth of a toy call's work in this store.
    groups: DashMap<String, Group, foldhash::fast::RandomState>,
    path: Option<PathBuf>,
    dirty: AtomicBool,
}

/// Snapshot file format.
#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    version: u32,
    groups: BTreeMap<String, Group>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// === impl MemoryStore ===

impl MemoryStore {
    /// A store persisted at `path` (loaded from it when it exists), or not persisted.
    pub fn open(path: Option<PathBuf>) -> Self {
        let groups = DashMap::with_hasher(foldhash::fast::RandomState::default());
        if let Some(p) = &path {
            match load(p) {
                Ok(Some(snap)) => {
                    tracing::info!(path = %p.display(), scopes = snap.groups.len(), "budget snapshot loaded");
                    for (k, mut g) in snap.groups {
                        // Reservations belonged to calls of the previous process.
                        for c in g.counters.values_mut() {
                            c.reserved = 0;
                        }
                        if g.last == 0 {
                            // Snapshots from before retention: their age starts now.
                            g.last = now_secs();
                        }
                        groups.insert(k, g);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "budget snapshot unreadable; starting empty")
                }
            }
        }
        Self {
            groups,
            path,
            dirty: AtomicBool::new(false),
        }
    }

    /// The record of `key`, created when missing (the key is only copied then).
    fn group(&self, key: &str) -> dashmap::mapref::one::RefMut<'_, String, Group> {
        match self.groups.get_mut(key) {
            Some(g) => g,
            None => self.groups.entry(key.to_string()).or_default(),
        }
    }

    pub(super) fn reserve(&self, key: &str, now: u64, wants: &[Want]) -> Reserved {
        let mut g = self.group(key);
        g.last = g.last.max(now);
        let mut grants = Vec::with_capacity(wants.len());
        for (i, w) in wants.iter().enumerate() {
            let c = current(&g, w.counter.as_ref(), w.window, now);
            // Rolled over (or created) whether or not the call is granted.
            put(&mut g, w.counter.as_ref(), c);
            match decide(&c, w) {
                Ok(granted) => grants.push(Grant {
                    start: c.start,
                    granted,
                    used: c.spent.saturating_add(c.reserved),
                }),
                Err(Short::Refused(used)) => return Reserved::Refused { index: i, used },
                Err(Short::NeedEstimate) => return Reserved::NeedEstimate,
            }
        }
        for (w, gr) in wants.iter().zip(&grants) {
            if let Some(c) = g.counters.get_mut(w.counter.as_ref()) {
                c.reserved = c.reserved.saturating_add(gr.granted);
            }
        }
        self.dirty.store(true, Ordering::Relaxed);
        Reserved::Granted(grants)
    }

    pub(super) fn settle(&self, key: &str, now: u64, charges: &[Charge], t: Totals) -> Vec<u64> {
        let mut g = self.group(key);
        g.last = g.last.max(now);
        let mut out = Vec::with_capacity(charges.len());
        for ch in charges {
            let mut c = g
                .counters
                .get(ch.counter.as_ref())
                .copied()
                .unwrap_or_default();
            if c.start == ch.start {
                c.reserved = c.reserved.saturating_sub(ch.granted);
            } else {
                // The window turned (or the scope was reset): the reservation went with it.
                // Windows only move forward: a settle retried with an older `now` adds its
                // spend to the counter's newer window instead of wiping it.
                let cur = window_start(ch.window, now);
                if cur > c.start {
                    c = Counter {
                        start: cur,
                        ..Counter::default()
                    };
                }
            }
            c.spent = c.spent.saturating_add(ch.actual);
            put(&mut g, &ch.counter, c);
            out.push(c.spent.saturating_add(c.reserved));
        }
        g.totals.input = g.totals.input.saturating_add(t.input);
        g.totals.output = g.totals.output.saturating_add(t.output);
        g.totals.cost = g.totals.cost.saturating_add(t.cost);
        self.dirty.store(true, Ordering::Relaxed);
        out
    }

    pub(super) fn get(&self, key: &str) -> Option<Group> {
        self.groups.get(key).map(|g| g.clone())
    }

    /// Records whose key starts with `prefix` (sessions, tasks), by id, most tokens first.
    pub(super) fn top(&self, prefix: &str, n: usize) -> Vec<(String, Group)> {
        let mut all: Vec<(String, Group)> = self
            .groups
            .iter()
            .filter_map(|e| {
                e.key()
                    .strip_prefix(prefix)
                    .map(|id| (id.to_string(), e.value().clone()))
            })
            .collect();
        all.sort_by(|a, b| {
            let ta = a.1.totals.input + a.1.totals.output;
            let tb = b.1.totals.input + b.1.totals.output;
            tb.cmp(&ta).then_with(|| a.0.cmp(&b.0))
        });
        all.truncate(n);
        all
    }

    /// Forget scope records whose counters are all windowed and past their window, with nothing
    /// reserved: they would start from zero anyway; and session (task) records with nothing
    /// reserved whose last call is `retention.0` (`retention.1`) old. Agent and global lifetime
    /// counters are kept forever.
    pub fn prune(&self, now: u64, retention: (u64, u64)) -> usize {
        let before = self.groups.len();
        self.groups.retain(|key, g| {
            let kept_for = if key.starts_with(SESSION_PREFIX) {
                Some(retention.0)
            } else if key.starts_with(TASK_PREFIX) {
                Some(retention.1)
            } else {
                None
            };
            let unreserved = g.counters.values().all(|c| c.reserved == 0);
            if kept_for.is_some_and(|r| unreserved && g.last.saturating_add(r) <= now) {
                return false;
            }
            g.counters.is_empty()
                || g.counters.iter().any(|(name, c)| {
                    let window = name.rsplit(':').next().and_then(|w| w.parse::<u64>().ok());
                    match window {
                        Some(w) => c.reserved > 0 || c.start.saturating_add(w) > now,
                        None => true,
                    }
                })
        });
        let pruned = before - self.groups.len();
        if pruned > 0 {
            self.dirty.store(true, Ordering::Relaxed);
        }
        pruned
    }

    /// Records held whose key starts with `prefix` (sessions, tasks).
    pub fn count(&self, prefix: &str) -> usize {
        self.groups
            .iter()
            .filter(|e| e.key().starts_with(prefix))
            .count()
    }

    pub(super) fn reset(&self, key: &str) -> bool {
        self.dirty.store(true, Ordering::Relaxed);
        // Nothing in flight, nor restarted by an earlier reset whose calls may still be (their
        // grants' starts would match a fresh record's again): the record goes.
        let forgettable = |g: &Group| {
            g.counters
                .iter()
                .all(|(name, c)| c.reserved == 0 && natural_start(name, c.start))
        };
        if self.groups.remove_if(key, |_, g| forgettable(g)).is_some() {
            return true;
        }
        let Some(mut g) = self.groups.get_mut(key) else {
            return false;
        };
        // Calls in flight: each counter starts anew one second into its window, a start no
        // grant made before the reset carries, so such a call settles its spend into the new
        // period without taking back reservations made after the reset (as Redis drops the
        // leases).
        for c in g.counters.values_mut() {
            *c = Counter {
                start: c.start.saturating_add(1),
                ..Counter::default()
            };
        }
        g.totals = Totals::default();
        true
    }

    /// Write the snapshot if anything changed since the last one: temp file, fsync, rename,
    /// fsync of the directory — a crash leaves the old file or the new one, never half of one.
    pub fn snapshot(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let snap = Snapshot {
            version: 1,
            groups: self
                .groups
                .iter()
                .map(|e| (e.key().clone(), e.value().clone()))
                .collect(),
        };
        let res = write_atomically(path, &snap);
        if res.is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
        res
    }
}

/// The counter `name` in its current window: rolled over when the window turned, zero when
/// missing. A counter already in a later window than `now` says (a caller whose clock is
/// behind) stays in it: windows only move forward.
fn current(g: &Group, name: &str, window: Option<u64>, now: u64) -> Counter {
    let start = window_start(window, now);
    match g.counters.get(name) {
        Some(c) if c.start >= start => *c,
        _ => Counter {
            start,
            ..Counter::default()
        },
    }
}

/// Whether `start` is a window start of the counter `name` (`<unit>:<window seconds>` or
/// `<unit>:life`), not one a reset moved into its window.
fn natural_start(name: &str, start: u64) -> bool {
    match name.rsplit(':').next().and_then(|w| w.parse::<u64>().ok()) {
        Some(w) if w > 0 => start.is_multiple_of(w),
        _ => start == 0,
    }
}

/// Keep `c` as the counter `name`; the name is copied only when the counter is new (an entry
/// per call was four allocations of a toy call).
fn put(g: &mut Group, name: &str, c: Counter) {
    match g.counters.get_mut(name) {
        Some(slot) => *slot = c,
        None => {
            g.counters.insert(name.to_string(), c);
        }
    }
}

fn load(path: &Path) -> std::io::Result<Option<Snapshot>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn write_atomically(path: &Path, snap: &Snapshot) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        let json = serde_json::to_vec(snap)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        f.write_all(&json)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(&dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn want(limit: u64, min: u64, want: u64) -> Want {
        Want {
            counter: Arc::from("tokens:life"),
            window: None,
            limit,
            min,
            want,
            enforce: true,
            optimistic: false,
            floor: want,
        }
    }

    fn charge(g: &Grant, actual: u64) -> Charge {
        Charge {
            counter: Arc::from("tokens:life"),
            window: None,
            start: g.start,
            granted: g.granted,
            actual,
        }
    }

    #[test]
    fn fifty_token_limit_admits_three_sixteen_token_calls() {
        let s = MemoryStore::open(None);
        let mut admitted = 0;
        for _ in 0..4 {
            match s.reserve("s:a", 0, &[want(50, 10, 10 + 4096)]) {
                Reserved::Granted(g) => {
                    admitted += 1;
                    s.settle("s:a", 0, &[charge(&g[0], 16)], Totals::default());
                }
                Reserved::Refused { used, .. } => assert_eq!(used, 48),
                Reserved::NeedEstimate => panic!("not optimistic"),
            }
        }
        assert_eq!(admitted, 3);
    }

    /// A reset while a call is in flight: that call's later settlement adds its spend to the
    /// new period and leaves the reservations made after the reset alone.
    #[test]
    fn a_reset_is_not_undone_by_a_call_in_flight_across_it() {
        let s = MemoryStore::open(None);
        let Reserved::Granted(a) = s.reserve("s:a", 0, &[want(1000, 10, 500)]) else {
            panic!("refused")
        };
        assert!(s.reset("s:a"));
        let Reserved::Granted(b) = s.reserve("s:a", 0, &[want(1000, 10, 500)]) else {
            panic!("refused after the reset")
        };
        assert_eq!(b[0].used, 0, "the reset cleared A's reservation");
        s.settle("s:a", 0, &[charge(&a[0], 40)], Totals::default());
        let c = s.groups.get("s:a").unwrap().counters["tokens:life"];
        assert_eq!((c.spent, c.reserved), (40, 500), "B's reservation kept");
        // A third call sees B's reservation and A's spend: 460 left, below its input of 480.
        assert!(matches!(
            s.reserve("s:a", 0, &[want(1000, 480, 500)]),
            Reserved::Refused { used: 540, .. }
        ));
        s.settle("s:a", 0, &[charge(&b[0], 100)], Totals::default());
        let c = s.groups.get("s:a").unwrap().counters["tokens:life"];
        assert_eq!((c.spent, c.reserved), (140, 0));
    }

    /// Two resets while a call from before both is in flight: the second must not forget the
    /// record (a fresh one's start would match that call's grant again).
    #[test]
    fn a_second_reset_keeps_a_call_in_flight_from_matching_again() {
        let s = MemoryStore::open(None);
        let Reserved::Granted(a) = s.reserve("s:a", 0, &[want(1000, 10, 500)]) else {
            panic!("refused")
        };
        assert!(s.reset("s:a"));
        assert!(s.reset("s:a"));
        let Reserved::Granted(_) = s.reserve("s:a", 0, &[want(1000, 10, 300)]) else {
            panic!("refused after the resets")
        };
        s.settle("s:a", 0, &[charge(&a[0], 40)], Totals::default());
        let c = s.groups.get("s:a").unwrap().counters["tokens:life"];
        assert_eq!(
            (c.spent, c.reserved),
            (40, 300),
            "the new call's reservation kept"
        );
    }

    #[test]
    fn a_calls_reservation_is_whole_and_blocks_the_next_call() {
        let s = MemoryStore::open(None);
        let Reserved::Granted(g) = s.reserve("s:a", 0, &[want(100, 10, 500)]) else {
            panic!("first call refused")
        };
        assert_eq!((g[0].granted, g[0].used), (500, 0));
        assert!(matches!(
            s.reserve("s:a", 0, &[want(100, 10, 20)]),
            Reserved::Refused { used: 500, .. }
        ));
        s.settle("s:a", 0, &[charge(&g[0], 30)], Totals::default());
        assert!(matches!(
            s.reserve("s:a", 0, &[want(100, 10, 20)]),
            Reserved::Granted(_)
        ));
    }

    #[test]
    fn a_slice_takes_what_remains_of_its_size_never_less_than_its_call() {
        let s = MemoryStore::open(None);
        let slice = |size, call| Want {
            floor: call,
            ..want(100, 10, size)
        };
        let Reserved::Granted(g) = s.reserve("s:a", 0, &[slice(500, 50)]) else {
            panic!("slice refused")
        };
        assert_eq!(g[0].granted, 100);
        s.settle("s:a", 0, &[charge(&g[0], 70)], Totals::default());
        let Reserved::Granted(g) = s.reserve("s:a", 0, &[slice(500, 50)]) else {
            panic!("slice refused")
        };
        assert_eq!((g[0].granted, g[0].used), (50, 70));
    }

    /// Found by CI: with reservations capped at what remained, a call settling below its
    /// reservation freed room for a second capped call while the first still ran, and both
    /// outputs landed past the limit (12 calls of 27 tokens admitted under a 280 limit).
    #[test]
    fn slack_freed_while_a_call_runs_past_the_limit_admits_no_second_one() {
        let s = MemoryStore::open(None);
        let (limit, input, out) = (100, 10, 40);
        let reserve = |w: Want| match s.reserve("s:a", 0, &[w]) {
            Reserved::Granted(g) => Some(g[0]),
            _ => None,
        };
        // An optimistic reservation from the input's upper bound, spending less.
        let x = reserve(Want {
            optimistic: true,
            ..want(limit, 40, 80)
        })
        .unwrap();
        // Admitted with 20 left: it may spend 50.
        let a = reserve(want(limit, input, input + out)).unwrap();
        s.settle("s:a", 0, &[charge(&x, 45)], Totals::default());
        // 45 spent and 50 held by the call in flight: nothing for another.
        assert_eq!(reserve(want(limit, input, input + out)), None);
        s.settle("s:a", 0, &[charge(&a, input + out)], Totals::default());
        let spent = s.get("s:a").unwrap().counters["tokens:life"].spent;
        assert!(spent <= limit + out, "spent {spent}");
    }

    #[test]
    fn optimistic_wants_reserve_only_when_they_fit_whole() {
        let s = MemoryStore::open(None);
        let opt = Want {
            optimistic: true,
            ..want(100, 60, 90)
        };
        assert!(matches!(
            s.reserve("s:a", 0, std::slice::from_ref(&opt)),
            Reserved::Granted(_)
        ));
        assert_eq!(
            s.reserve("s:a", 0, std::slice::from_ref(&opt)),
            Reserved::NeedEstimate
        );
        assert_eq!(s.get("s:a").unwrap().counters["tokens:life"].reserved, 90);
    }

    #[test]
    fn windows_roll_over() {
        let s = MemoryStore::open(None);
        let w = Want {
            window: Some(60),
            ..want(10, 5, 10)
        };
        let Reserved::Granted(g) = s.reserve("s:a", 61, std::slice::from_ref(&w)) else {
            panic!()
        };
        assert_eq!(g[0].start, 60);
        s.settle(
            "s:a",
            61,
            &[Charge {
                window: Some(60),
                ..charge(&g[0], 10)
            }],
            Totals::default(),
        );
        assert!(matches!(
            s.reserve("s:a", 119, std::slice::from_ref(&w)),
            Reserved::Refused { .. }
        ));
        assert!(matches!(s.reserve("s:a", 120, &[w]), Reserved::Granted(_)));
    }

    #[test]
    fn stale_windowed_records_are_pruned_lifetime_ones_kept() {
        let s = MemoryStore::open(None);
        let w = Want {
            counter: Arc::from("tokens:60"),
            window: Some(60),
            ..want(10, 1, 5)
        };
        let Reserved::Granted(g) = s.reserve("s:w", 0, std::slice::from_ref(&w)) else {
            panic!()
        };
        s.reserve("s:life", 0, &[want(10, 1, 5)]);
        assert_eq!(
            s.prune(120, (u64::MAX, u64::MAX)),
            0,
            "a reservation keeps the record"
        );
        s.settle(
            "s:w",
            0,
            &[Charge {
                counter: Arc::from("tokens:60"),
                window: Some(60),
                ..charge(&g[0], 3)
            }],
            Totals::default(),
        );
        assert_eq!(s.prune(59, (u64::MAX, u64::MAX)), 0);
        assert_eq!(s.prune(60, (u64::MAX, u64::MAX)), 1);
        assert!(s.get("s:w").is_none());
        assert!(s.get("s:life").is_some());
    }

    #[test]
    fn idle_sessions_and_tasks_are_forgotten_after_their_retention_agents_are_not() {
        let s = MemoryStore::open(None);
        let Reserved::Granted(g) = s.reserve("s:old", 100, &[want(10, 1, 5)]) else {
            panic!()
        };
        s.reserve("a:agent", 100, &[want(10, 1, 5)]);
        let Reserved::Granted(t) = s.reserve("t:task", 100, &[want(10, 1, 5)]) else {
            panic!()
        };
        assert_eq!(
            s.prune(10_000, (60, 30)),
            0,
            "a reservation keeps the record"
        );
        s.settle("s:old", 100, &[charge(&g[0], 3)], Totals::default());
        s.settle("t:task", 100, &[charge(&t[0], 3)], Totals::default());
        assert_eq!((s.count(SESSION_PREFIX), s.count(TASK_PREFIX)), (1, 1));
        assert_eq!(s.prune(129, (60, 30)), 0, "within both retentions");
        assert_eq!(s.prune(130, (60, 30)), 1, "the task's retention is over");
        assert_eq!(s.count(TASK_PREFIX), 0);
        assert_eq!(s.prune(160, (60, 30)), 1);
        assert_eq!(s.count(SESSION_PREFIX), 0);
        assert!(s.get("a:agent").is_some());
    }

    #[test]
    fn snapshot_round_trips_without_reservations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/budgets.json");
        let s = MemoryStore::open(Some(path.clone()));
        let Reserved::Granted(g) = s.reserve("s:a", 0, &[want(100, 1, 50)]) else {
            panic!()
        };
        s.settle(
            "s:a",
            0,
            &[charge(&g[0], 7)],
            Totals {
                input: 3,
                output: 4,
                cost: 9,
            },
        );
        s.reserve("s:a", 0, &[want(100, 1, 50)]);
        s.snapshot().unwrap();
        let back = MemoryStore::open(Some(path.clone())).get("s:a").unwrap();
        assert_eq!(back.totals.output, 4);
        assert_eq!(back.counters["tokens:life"].spent, 7);
        assert_eq!(back.counters["tokens:life"].reserved, 0);
        assert!(!path.with_extension("json.tmp").exists());
    }

    /// One call of [`spend_stays_within_one_maximum_output_of_the_limit`]: its true input, its
    /// output cap, and how far its input's upper bound is above the input.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        /// A call arrives: input, output cap, bound above the input.
        Arrive(u64, u64, u64),
        /// The `n`th call in flight (modulo) ends, having produced `out` (at most its cap).
        End(usize, u64),
    }

    fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
        use proptest::prelude::*;
        let step = prop_oneof![
            (1u64..30, 0u64..=40, 0u64..60).prop_map(|(i, m, b)| Step::Arrive(i, m, b)),
            (0usize..64, 0u64..=40).prop_map(|(n, o)| Step::End(n, o)),
        ];
        proptest::collection::vec(step, 1..80)
    }

    proptest::proptest! {
        /// The README's bound, with the provider counting input as estimated: whatever the
        /// interleaving, spend ends within the limit plus one call's maximum output.
        #[test]
        fn spend_stays_within_one_maximum_output_of_the_limit(
            limit in 20u64..300,
            steps in steps(),
        ) {
            let s = MemoryStore::open(None);
            let mut flying: Vec<(Grant, u64, u64)> = Vec::new();
            let settle = |s: &MemoryStore, (g, input, cap): (Grant, u64, u64), out: u64| {
                s.settle("s:p", 0, &[charge(&g, input + out.min(cap))], Totals::default());
            };
            for step in steps {
                match step {
                    Step::Arrive(input, cap, above) => {
                        let bound = input + above;
                        let opt = Want { optimistic: true, ..want(limit, bound, bound + cap) };
                        let got = match s.reserve("s:p", 0, &[opt]) {
                            Reserved::NeedEstimate => {
                                s.reserve("s:p", 0, &[want(limit, input, input + cap)])
                            }
                            other => other,
                        };
                        if let Reserved::Granted(g) = got {
                            flying.push((g[0], input, cap));
                        }
                    }
                    Step::End(n, out) if !flying.is_empty() => {
                        let call = flying.swap_remove(n % flying.len());
                        settle(&s, call, out);
                    }
                    Step::End(..) => {}
                }
            }
            for call in flying.drain(..) {
                settle(&s, call, u64::MAX);
            }
            let c = s.get("s:p").map(|g| g.counters["tokens:life"]).unwrap_or_default();
            proptest::prop_assert_eq!(c.reserved, 0);
            proptest::prop_assert!(c.spent <= limit + 40, "spent {} limit {}", c.spent, limit);
        }
    }
}
