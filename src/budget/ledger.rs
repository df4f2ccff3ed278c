//! What both stores keep and answer: counters, reservations, leases and the admission rule
//! (`decide`), with the types the store operations take and return.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::record::Totals;

/// One counter a call wants to reserve on.
#[derive(Debug, Clone)]
pub struct Want {
    /// Counter name (`tokens:3600`, `usd:life`).
    pub counter: Arc<str>,
    /// Window length in seconds; `None` for lifetime.
    pub window: Option<u64>,
    /// The limit.
    pub limit: u64,
    /// Refuse when less than this remains (the call's estimated input).
    pub min: u64,
    /// Reserve this much (estimated input + maximum output).
    pub want: u64,
    /// Refuse at all (false for `observe` limits).
    pub enforce: bool,
    /// `min` and `want` come from an upper bound of the input, not the estimate: reserve only
    /// when the whole `want` fits, else answer [`Reserved::NeedEstimate`] and reserve nothing.
    pub optimistic: bool,
    /// Once admitted, reserve at least this much even where less remains: a call's own `want`,
    /// so the ledger holds all the call may spend (capped, slack another call frees later would
    /// admit a second call whose output also lands past the limit). A slice asks for more and
    /// takes what remains of it, never less than the call it opens for; an observed limit, 0.
    pub floor: u64,
}

/// A reservation made on one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Start of the window it was made in.
    pub start: u64,
    /// Amount reserved.
    pub granted: u64,
    /// Spent plus reserved before this reservation.
    pub used: u64,
}

/// Outcome of a check-and-reserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    /// Every counter admitted the call, in the order asked.
    Granted(Vec<Grant>),
    /// Counter `index` refused; nothing was reserved. `used` is its spent plus reserved.
    Refused {
        /// Which want refused.
        index: usize,
        /// Spent plus reserved on it.
        used: u64,
    },
    /// An optimistic want did not fit whole: ask again with the real estimate.
    NeedEstimate,
}

/// A reservation's lease in a shared store: it stays reserved while its proxy renews the lease;
/// once the lease runs out (the proxy died), the next check-and-reserve on the scope releases it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Unique per reservation.
    pub id: u64,
    /// Expiry, milliseconds since the Unix epoch.
    pub until_ms: u64,
}

/// A reservation replaced by actual spend.
#[derive(Debug, Clone)]
pub struct Charge {
    /// Counter name.
    pub counter: Arc<str>,
    /// Window length in seconds; `None` for lifetime.
    pub window: Option<u64>,
    /// Window start the reservation was made in.
    pub start: u64,
    /// Amount that was reserved.
    pub granted: u64,
    /// Amount actually spent.
    pub actual: u64,
}

/// One counter's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Window start (0 for lifetime).
    pub start: u64,
    /// Spent in the window.
    pub spent: u64,
    /// Reserved by calls in flight.
    pub reserved: u64,
}

/// Everything a store holds for one scope instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Lifetime totals since the last reset.
    pub totals: Totals,
    /// Counters by name.
    pub counters: BTreeMap<String, Counter>,
    /// Unix seconds of the last reservation or settlement (0: not known, e.g. an old snapshot).
    #[serde(default)]
    pub last: u64,
}

/// The store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis failed, timed out or is unreachable.
    #[error("budget store: {0}")]
    Redis(String),
}

/// Start of the window of length `window` containing `now` (0 for lifetime).
pub fn window_start(window: Option<u64>, now: u64) -> u64 {
    match window {
        Some(w) if w > 0 => now - now % w,
        _ => 0,
    }
}

/// The one admission rule, shared by the memory store and mirrored by the Redis script:
/// refuse when what remains is below the call's estimated input (or nothing remains); else
/// reserve the wanted amount, capped at what remains but never below `floor` (a call's own
/// want: spend plus reservations then pass the limit by at most one call's maximum output). An
/// optimistic want (from an upper bound of the input) is only reserved when it fits whole,
/// which needs no estimate to decide.
pub fn decide(c: &Counter, w: &Want) -> Result<u64, Short> {
    let used = c.spent.saturating_add(c.reserved);
    let remaining = w.limit.saturating_sub(used);
    if w.optimistic && remaining < w.want {
        return Err(Short::NeedEstimate);
    }
    if w.enforce && remaining < w.min.max(1) {
        return Err(Short::Refused(used));
    }
    Ok(w.want.min(remaining).max(w.floor))
}

/// Why [`decide`] reserved nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Short {
    /// Refused; spent plus reserved.
    Refused(u64),
    /// An optimistic want did not fit whole.
    NeedEstimate,
}
