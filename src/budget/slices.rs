//! Leased limits: for the agent and global scopes on a shared store, a sidecar takes a slice of
//! what remains (one reservation in the store, under a lease it renews), admits calls against it
//! locally, and gives it back — its spend replacing the reservation — when it is used up, when it
//! has lasted `lasts`, when its window ends, or at shutdown. The hot key sees two scripts per
//! slice instead of two per call. A slice is sized to last `lasts` at this sidecar's recent rate,
//! within `min`..`max` of the limit. What other sidecars cannot use meanwhile is at most the
//! slices outstanding; what a sidecar that dies spent from its slices is never reported (its
//! reservations expire with their lease), so the overspend bound of a leased scope grows by the
//! sum of the slices outstanding.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ledger::{Grant, Totals, Want};

/// Scope instances (agents, and global) holding slices in one sidecar; past it, new ones reserve
/// per call (agent names come from traffic).
const MAX_KEYS: usize = 10_000;
/// Open slices per scope instance; past it, calls reserve per call.
const MAX_OPEN: usize = 8;

/// Slice sizing.
#[derive(Debug, Clone, Copy)]
pub struct SliceConfig {
    /// Smallest slice, as a fraction of each limit.
    pub min: f64,
    /// Largest slice, as a fraction of each limit.
    pub max: f64,
    /// A slice is sized to last this long at the recent rate, and is given back after it.
    pub lasts: Duration,
}

/// Slices of every leased scope instance in this sidecar.
pub struct Slices {
    cfg: SliceConfig,
    keys: Mutex<HashMap<String, KeySlices>>,
}

#[derive(Default)]
struct KeySlices {
    open: Vec<Slice>,
    /// Slices being asked of the store (a [`Room`] each): counted against `MAX_OPEN` while the
    /// store answers, so concurrent calls cannot all pass the bound before any slice opens.
    opening: usize,
    /// What calls drew per second, per counter (an average over the last slices).
    rate: Vec<f64>,
}

struct Slice {
    /// The store reservation's lease id.
    id: u64,
    /// The budget service's limits (indices) the counters belong to.
    limits: Vec<usize>,
    /// Window start per counter.
    starts: Vec<u64>,
    /// Reserved in the store, per counter.
    granted: Vec<u64>,
    /// Held by calls in flight plus spent, per counter.
    taken: Vec<u64>,
    /// Spent by settled calls, per counter.
    spent: Vec<u64>,
    /// Everything calls drew from it (for the rate).
    drawn: Vec<u64>,
    /// Spent plus reserved in the store when the slice was granted (other sidecars' share).
    base: Vec<u64>,
    totals: Totals,
    inflight: u32,
    opened: Instant,
    /// Takes no more calls; given back when its last call settles.
    closed: bool,
}

/// A slice to give back: its spend replaces its reservation in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Returned {
    /// Scope key.
    pub key: String,
    /// The reservation's lease id.
    pub id: u64,
    /// The limits (indices) of the counters below.
    pub limits: Vec<usize>,
    /// Window start per counter.
    pub starts: Vec<u64>,
    /// Reserved, per counter.
    pub granted: Vec<u64>,
    /// Spent, per counter.
    pub spent: Vec<u64>,
    /// Tokens and cost spent.
    pub totals: Totals,
}

// === impl Slices ===

impl Slices {
    /// No slices yet.
    pub fn new(cfg: SliceConfig) -> Self {
        Self {
            cfg,
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, KeySlices>> {
        // A panic while holding the lock leaves counters that are still consistent enough.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take `wants` (their `want`) for one call from an open slice of `key` in the windows
    /// `starts`; the slice's id and the grants, or `None` when no slice has room.
    pub fn take(&self, key: &str, wants: &[Want], starts: &[u64]) -> Option<(u64, Vec<Grant>)> {
        let mut keys = self.keys();
        let ks = keys.get_mut(key)?;
        for s in ks.open.iter_mut().filter(|s| !s.closed) {
            if s.starts != starts {
                // Its window ended.
                s.closed = true;
                continue;
            }
            let fits = wants
                .iter()
                .zip(s.granted.iter().zip(&s.taken))
                .all(|(w, (g, t))| g.saturating_sub(*t) >= w.want);
            if !fits {
                // Used up for calls of this size: give it back once its calls end.
                s.closed = true;
                continue;
            }
            return Some((s.id, s.draw(wants)));
        }
        None
    }

    /// Room for one more slice of `key` (bounded per key and in keys), held until the slice
    /// opens or the returned [`Room`] is dropped; `None` when there is none.
    pub fn room(&self, key: &str) -> Option<Room<'_>> {
        let mut keys = self.keys();
        if !keys.contains_key(key) && keys.len() >= MAX_KEYS {
            return None;
        }
        let ks = keys.entry(key.to_string()).or_default();
        if ks.open.len() + ks.opening >= MAX_OPEN {
            return None;
        }
        ks.opening += 1;
        Some(Room {
            slices: self,
            key: key.to_string(),
        })
    }

    /// Whether a call's `wants` fit in the largest slice (`max` of each limit in `amounts`).
    pub fn fits(&self, amounts: &[u64], wants: &[Want]) -> bool {
        amounts
            .iter()
            .zip(wants)
            .all(|(&amount, w)| w.want as f64 <= self.largest(amount))
    }

    /// The largest slice of a limit of `amount`: `max` of it, and never below the smallest.
    fn largest(&self, amount: u64) -> f64 {
        let lo = (self.cfg.min * amount as f64).max(1.0);
        (self.cfg.max * amount as f64).max(lo)
    }

    /// The slice to ask the store for, per counter of `key`: what lasts `lasts` at the recent
    /// rate, within `min`..`max` of each limit in `amounts`, and never less than the call's want.
    pub fn size(&self, key: &str, amounts: &[u64], wants: &[Want]) -> Vec<u64> {
        let keys = self.keys();
        let rate = keys.get(key).map(|k| k.rate.as_slice()).unwrap_or(&[]);
        amounts
            .iter()
            .zip(wants)
            .enumerate()
            .map(|(i, (&amount, w))| {
                let lo = (self.cfg.min * amount as f64).max(1.0);
                let hi = self.largest(amount);
                let r = rate.get(i).copied().unwrap_or(0.0) * self.cfg.lasts.as_secs_f64();
                (r.clamp(lo, hi) as u64).max(w.want)
            })
            .collect()
    }

    /// A slice of `limits` granted by the store (`grants`, under lease `id`) opened in `room`,
    /// and the call's `wants` taken from it (capped at what was granted); the call's grants.
    pub fn open(
        &self,
        room: Room<'_>,
        (id, limits): (u64, &[usize]),
        grants: &[Grant],
        wants: &[Want],
    ) -> Vec<Grant> {
        let mut s = Slice {
            id,
            limits: limits.to_vec(),
            starts: grants.iter().map(|g| g.start).collect(),
            granted: grants.iter().map(|g| g.granted).collect(),
            taken: vec![0; grants.len()],
            spent: vec![0; grants.len()],
            drawn: vec![0; grants.len()],
            base: grants.iter().map(|g| g.used).collect(),
            totals: Totals::default(),
            inflight: 0,
            opened: Instant::now(),
            closed: false,
        };
        let capped: Vec<Want> = wants
            .iter()
            .zip(grants)
            .map(|(w, g)| Want {
                want: w.want.min(g.granted),
                ..w.clone()
            })
            .collect();
        let out = s.draw(&capped);
        self.keys()
            .entry(room.key.clone())
            .or_default()
            .open
            .push(s);
        // `room` ends here: the slice now counts as open.
        out
    }

    /// A call on slice `id` of `key` ended: its grants `granted` become `actual`; the new spent
    /// plus reserved per counter as this sidecar sees it, and the slice when it is to go back.
    pub fn settle(
        &self,
        key: &str,
        id: u64,
        granted: &[u64],
        actual: &[u64],
        totals: Totals,
    ) -> (Vec<u64>, Option<Returned>) {
        let mut keys = self.keys();
        let Some(ks) = keys.get_mut(key) else {
            return (Vec::new(), None);
        };
        let Some(at) = ks.open.iter().position(|s| s.id == id) else {
            return (Vec::new(), None);
        };
        let s = &mut ks.open[at];
        for i in 0..s.taken.len() {
            let (g, a) = (
                granted.get(i).copied().unwrap_or(0),
                actual.get(i).copied().unwrap_or(0),
            );
            s.taken[i] = s.taken[i].saturating_sub(g).saturating_add(a);
            s.spent[i] = s.spent[i].saturating_add(a);
        }
        s.totals = add(s.totals, totals);
        s.inflight = s.inflight.saturating_sub(1);
        let used = s.base.iter().zip(&s.taken).map(|(b, t)| b + t).collect();
        let back = (s.closed && s.inflight == 0).then(|| ks.give_back(at, key));
        // A key with nothing open keeps its rate until `close` finds it idle.
        (used, back)
    }

    /// Close slices that have lasted `lasts` (so spend reaches the store and unused budget goes
    /// back), or every slice when `all` (shutdown); the ones to give back now. Keys with
    /// nothing open and an idle rate are forgotten.
    pub fn close(&self, all: bool) -> Vec<Returned> {
        let mut keys = self.keys();
        let mut out = Vec::new();
        keys.retain(|key, ks| {
            for s in &mut ks.open {
                if all || s.opened.elapsed() >= self.cfg.lasts {
                    s.closed = true;
                }
            }
            while let Some(at) = ks.open.iter().position(|s| s.closed && s.inflight == 0) {
                out.push(ks.give_back(at, key));
            }
            if ks.open.is_empty() {
                // Decays while idle, so a key that stopped is forgotten.
                ks.rate.iter_mut().for_each(|r| *r /= 2.0);
            }
            !ks.open.is_empty() || ks.opening > 0 || ks.rate.iter().any(|r| *r >= 1.0)
        });
        out
    }

    /// Slices open, and what they reserve in the store per key (for the tests and metrics).
    pub fn outstanding(&self) -> usize {
        self.keys().values().map(|k| k.open.len()).sum()
    }
}

/// A slice of one key being asked of the store: counts against that key's open slices until it
/// is opened ([`Slices::open`]) or dropped (refused, store error, call gone mid-request).
pub struct Room<'a> {
    slices: &'a Slices,
    key: String,
}

impl Drop for Room<'_> {
    fn drop(&mut self) {
        if let Some(ks) = self.slices.keys().get_mut(&self.key) {
            ks.opening = ks.opening.saturating_sub(1);
        }
    }
}

impl KeySlices {
    /// Remove slice `at`, fold its draw into the rate, and describe it for the store.
    fn give_back(&mut self, at: usize, key: &str) -> Returned {
        let s = self.open.swap_remove(at);
        let secs = s.opened.elapsed().as_secs_f64().max(0.05);
        self.rate.resize(s.drawn.len(), 0.0);
        for (r, d) in self.rate.iter_mut().zip(&s.drawn) {
            // Half the last slice, half the history: follows a change within a few slices.
            *r = (*r + *d as f64 / secs) / 2.0;
        }
        Returned {
            key: key.to_string(),
            id: s.id,
            limits: s.limits,
            starts: s.starts,
            granted: s.granted,
            spent: s.spent,
            totals: s.totals,
        }
    }
}

impl Slice {
    /// Take each want's `want` for one call; each grant's `used` is what was used before it,
    /// as the store's grants say (a `cut` limit's allowance is what remains past `used`).
    fn draw(&mut self, wants: &[Want]) -> Vec<Grant> {
        self.inflight += 1;
        wants
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let used = self.base[i].saturating_add(self.taken[i]);
                self.taken[i] = self.taken[i].saturating_add(w.want);
                self.drawn[i] = self.drawn[i].saturating_add(w.want);
                Grant {
                    start: self.starts[i],
                    granted: w.want,
                    used,
                }
            })
            .collect()
    }
}

fn add(a: Totals, b: Totals) -> Totals {
    Totals {
        input: a.input.saturating_add(b.input),
        output: a.output.saturating_add(b.output),
        cost: a.cost.saturating_add(b.cost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(n: u64) -> Want {
        Want {
            counter: "tokens:life".into(),
            window: None,
            limit: 1_000,
            min: n / 2,
            want: n,
            enforce: true,
            optimistic: false,
            floor: n,
        }
    }

    fn slices() -> Slices {
        Slices::new(SliceConfig {
            min: 0.01,
            max: 0.1,
            lasts: Duration::from_secs(60),
        })
    }

    #[test]
    fn calls_draw_locally_until_the_slice_is_used_up_then_it_goes_back_with_its_spend() {
        let s = slices();
        assert!(s.take("a:x", &[want(10)], &[0]).is_none());
        let g = s.open(
            s.room("a:x").unwrap(),
            (7, &[0]),
            &[Grant {
                start: 0,
                granted: 25,
                used: 100,
            }],
            &[want(10)],
        );
        assert_eq!(g[0].granted, 10);
        // Used before each call's own draw, as the store's grants say.
        assert_eq!(g[0].used, 100);
        let (id, g2) = s.take("a:x", &[want(10)], &[0]).unwrap();
        assert_eq!((id, g2[0].granted, g2[0].used), (7, 10, 110));
        // 5 left: a third call does not fit, and the slice closes.
        assert!(s.take("a:x", &[want(10)], &[0]).is_none());
        let t = Totals {
            input: 2,
            output: 2,
            cost: 0,
        };
        let (used, back) = s.settle("a:x", 7, &[10], &[4], t);
        assert_eq!((used, back), (vec![114], None));
        let (_, back) = s.settle("a:x", 7, &[10], &[4], t);
        let back = back.unwrap();
        assert_eq!((back.id, back.granted, back.spent), (7, vec![25], vec![8]));
        assert_eq!(back.totals.input, 4);
        assert_eq!(s.outstanding(), 0);
    }

    #[test]
    fn a_slice_of_another_window_takes_no_call() {
        let s = slices();
        let g = Grant {
            start: 60,
            granted: 100,
            used: 0,
        };
        s.open(s.room("g").unwrap(), (1, &[0]), &[g], &[want(10)]);
        assert!(s.take("g", &[want(10)], &[120]).is_none());
        s.settle("g", 1, &[10], &[10], Totals::default());
        assert_eq!(s.close(false).len(), 0, "given back at its settle already");
    }

    #[test]
    fn slices_follow_the_rate_within_their_bounds() {
        let s = slices();
        // No history: the smallest slice (1 % of 10,000), or the call's want if larger.
        assert_eq!(s.size("a:y", &[10_000], &[want(10)]), vec![100]);
        assert_eq!(s.size("a:y", &[10_000], &[want(500)]), vec![500]);
        let g = Grant {
            start: 0,
            granted: 1_000,
            used: 0,
        };
        s.open(s.room("a:y").unwrap(), (1, &[0]), &[g], &[want(900)]);
        s.settle("a:y", 1, &[900], &[900], Totals::default());
        let back = s.close(true);
        assert_eq!(back.len(), 1);
        // 900 drawn within moments: a minute at that rate is far past the largest slice.
        assert_eq!(s.size("a:y", &[10_000], &[want(10)]), vec![1_000]);
    }

    #[test]
    fn keys_and_open_slices_are_bounded() {
        let s = slices();
        let g = Grant {
            start: 0,
            granted: 10,
            used: 0,
        };
        for id in 0..MAX_OPEN as u64 {
            let room = s.room("a:z").unwrap();
            s.open(room, (id, &[0]), &[g], &[want(10)]);
        }
        assert!(s.room("a:z").is_none());
    }

    #[test]
    fn slices_being_asked_for_count_against_the_bound_until_dropped() {
        let s = slices();
        let rooms: Vec<Room<'_>> = (0..MAX_OPEN).map(|_| s.room("a:w").unwrap()).collect();
        assert!(
            s.room("a:w").is_none(),
            "asked-for slices fill the key's room"
        );
        drop(rooms);
        assert!(
            s.room("a:w").is_some(),
            "a refused or abandoned ask frees its room"
        );
    }
}
