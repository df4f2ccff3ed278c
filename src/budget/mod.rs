//! Budgets: per-session, per-task, per-agent and global limits in tokens and USD, enforced by admission
//! with reservation and settled to the provider's usage however the call ends.
//!
//! - `admit` (before the request goes upstream): for each scope that applies, one atomic
//!   check-and-reserve in the store. A limit refuses only when what remains is below the call's
//!   estimated input; otherwise it reserves estimated input + maximum output, capped at what
//!   remains. A refusal releases what earlier scopes reserved and never reaches the upstream.
//! - [`Admission::settle`] (from `Call::finish`): replaces each reservation with actual usage,
//!   in a spawned task so the finish step never waits for the store.
//! - Leased scopes (`budgets.leases`, agent and global on a shared store) admit and settle calls
//!   against a slice this sidecar took from the store (`slices`), given back in the background.
//! - Metrics, `warn_at` and breach alerts, and the cut threshold for `action: cut`.

mod ledger;
pub mod limits;
pub mod memory;
mod near;
pub mod price;
pub mod redis;
mod refusal;
pub mod slices;
pub mod store;
pub mod webhook;

pub use price::Billing;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use metrics::{counter, gauge, Key, Label};

use crate::config::{
    Config, LifetimeRefusal, LimitAction, LimitScope, OnStoreUnreachable, StoreKind,
};
use crate::providers::{Format, ModelUsage, Usage};
use crate::telemetry::handles::Handles;
use crate::telemetry::metrics as m;

use limits::{group_key, Limit, Unit, SCOPES, SESSION_PREFIX, TASK_PREFIX};
use price::Prices;
pub use refusal::{BudgetError, BudgetRefusal};

use crate::record::BudgetDecision;
pub use store::Totals;
use store::{Charge, Grant, Lease, Reserved, Store, StoreError, Want};
use webhook::{Alert, Webhook};

/// Ranked ids checked per upkeep for records that expired (Redis).
const PRUNE_BATCH: usize = 200;

/// Alerts remembered for de-duplication before the memory is cleared.
const MAX_ALERT_MEMORY: usize = 100_000;

/// Unpriced models a warning was logged for; past this many, further ones are only counted
/// (`tokenwarden_unpriced_tokens_total`), so a client naming models cannot grow the set.
const MAX_UNPRICED_WARNED: usize = 256;

/// The budget service, shared by every request.
pub struct Budgets {
    limits: Vec<Limit>,
    /// The indices into `limits` of each scope's limits, in [`SCOPES`] order: shared by every
    /// call's grants instead of collected per call.
    by_scope: [Arc<[usize]>; 4],
    store: Store,
    prices: Prices,
    fail_closed: bool,
    default_max_output: u64,
    /// Status of a lifetime limit's refusal.
    lifetime_status: http::StatusCode,
    snapshot_interval: Duration,
    webhook: Option<Webhook>,
    store_up: AtomicBool,
    /// (scope key, counter, decision) → window start an alert was last sent for.
    alerted: DashMap<(String, Arc<str>, BudgetDecision), u64>,
    /// Settlements spawned towards a remote store and not yet answered (awaited at shutdown).
    in_flight_settles: AtomicUsize,
    /// Woken when the last in-flight settlement ends.
    settling: tokio::sync::Notify,
    /// Live reservation leases in a shared store (id → scope key), renewed by the upkeep task.
    leases: DashMap<u64, String>,
    /// How long a reservation in a shared store outlives its proxy's last renewal.
    lease_ttl: Duration,
    /// How long a session's record outlives its last call.
    session_retention: Duration,
    /// How long a task's record outlives its last call.
    task_retention: Duration,
    /// Slices of leased scopes (shared stores with `budgets.leases.scopes`).
    slices: Option<slices::Slices>,
    /// The scopes drawn on through slices.
    leased_scopes: Vec<LimitScope>,
    /// `tokenwarden_budget_used_ratio` by agent (`None`: the global scope's series).
    ratio_gauges: Handles<Option<Arc<str>>, metrics::Gauge>,
    /// `tokenwarden_cost_usd_total` by (agent, model).
    cost_gauges: Handles<(Arc<str>, Arc<str>), metrics::Gauge>,
    /// Model labels whose missing price was logged once (at most [`MAX_UNPRICED_WARNED`]).
    unpriced_warned: Mutex<std::collections::HashSet<Arc<str>>>,
    /// Scope instances a shared store last showed near a limit (their calls skip the
    /// optimistic round trip); none for the memory store, where a try costs no round trip.
    near: Option<near::Near>,
}

/// The budget service could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BudgetsError {
    /// `budgets.store.kind: redis` without a usable `url`.
    #[error("budgets.store.url: {0}")]
    Redis(String),
    /// The webhook client could not be built.
    #[error("alerts.webhook: {0}")]
    Webhook(String),
}

/// What admission needs to know about one call.
pub struct CallFacts {
    /// Session id, when the call has one.
    pub session: Option<Arc<str>>,
    /// Task id, when the call has one.
    pub task: Option<Arc<str>>,
    /// Agent label.
    pub agent: Arc<str>,
    /// Requested model.
    pub model: Option<String>,
    /// A cheap upper bound of the input tokens ([`input_bound`]).
    pub input_bound: u64,
    /// The request's output cap, when it set one.
    pub max_output: Option<u64>,
    /// Output choices the request asks for (`n`, `candidateCount`), each up to `max_output`.
    pub choices: u64,
}

impl CallFacts {
    /// The most output the call may produce: every choice at its cap (`default` without one).
    fn max_out(&self, default: u64) -> u64 {
        self.max_output
            .unwrap_or(default)
            .saturating_mul(self.choices.max(1))
    }
}

/// Reservations one call holds; settled (or released) exactly once.
pub struct Admission {
    budgets: Arc<Budgets>,
    /// Behind a lock only while the scopes reserve concurrently (never contended after).
    held: Mutex<Vec<Held>>,
    facts: CallFacts,
    /// The input estimate (or its upper bound, when the estimate was not needed).
    est_input: u64,
    /// Tokens left under the tightest session token limit after this call's reservation.
    pub session_tokens_remaining: Option<u64>,
    /// Output tokens this call may stream before a `cut` limit ends it.
    pub cut_after_output: Option<u64>,
    /// The strongest decision taken for this call (`allowed`, `warned`, `observed`).
    pub decision: BudgetDecision,
    settled: bool,
}

struct Held {
    scope: LimitScope,
    key: String,
    limits: Arc<[usize]>,
    grants: Vec<Grant>,
    /// The reservation's lease in a shared store.
    lease: Option<u64>,
    /// The slice (its lease id) the call drew on, for a leased scope.
    slice: Option<u64>,
}

/// What every scope's check-and-reserve of one call shares.
struct ScopeCall<'a> {
    facts: &'a CallFacts,
    /// Where grants go as they are made (the admission's, released if it is dropped).
    held: &'a Mutex<Vec<Held>>,
    /// The call's input estimate, computed once on first use.
    exact: &'a (dyn Fn() -> u64 + Sync),
    now: u64,
}

impl ScopeCall<'_> {
    /// The call's input: the cheap upper bound when `optimistic`, else the estimate.
    fn input(&self, optimistic: bool) -> u64 {
        if optimistic {
            self.facts.input_bound
        } else {
            (self.exact)()
        }
    }
}

/// What became of one scope in an admission.
enum Outcome {
    /// No limit of the scope applies to the call.
    Skipped,
    /// Reserved (the grants are held); the call's wants on the scope's limits.
    Granted(Vec<Want>),
    /// Limit `limit` refused: `used` of it is spent or reserved, the call needs `need`.
    Refused {
        key: String,
        limit: usize,
        used: u64,
        need: u64,
    },
    /// An unexpected reply (the estimate asked for after it was given, a refusal naming no
    /// scope asked).
    NeedEstimate,
    /// The store failed.
    Failed(StoreError),
}

impl Outcome {
    fn wants(&self) -> Option<&[Want]> {
        match self {
            Outcome::Granted(w) => Some(w),
            _ => None,
        }
    }
}

/// Whether optimistic `wants` could be reserved whole on an unused limit: one past its whole
/// limit is answered [`Reserved::NeedEstimate`] whatever the store holds, so the call tokenizes
/// first and saves that round trip (a short conversation's upper bound under a small limit).
fn fits_whole(wants: &[Want]) -> bool {
    wants.iter().all(|w| w.want <= w.limit)
}

/// How a call ended, for settlement.
#[derive(Debug, Clone, Default)]
pub struct Spent {
    /// The provider's usage (fields it did not state are `None`).
    pub usage: Usage,
    /// Model that served the call (else the requested one is priced).
    pub model: Option<String>,
    /// The same model as a capped metric label.
    pub model_label: Option<Arc<str>>,
    /// Parts of `usage` spent on other models (Anthropic advisor sub-calls): priced as their
    /// own model.
    pub other_models: Vec<ModelUsage>,
    /// Capped metric labels of `other_models`, in the same order.
    pub other_labels: Vec<Arc<str>>,
    /// Output events seen in the stream (the estimate when the provider stated no usage).
    pub output_events: u64,
    /// The request reached the upstream but no response came back: the provider may have
    /// billed its input, so the estimate is charged.
    pub sent: bool,
    /// How the usage was billed beyond its counts (the batch rate, the audio part).
    pub billing: price::Billing,
}

/// Input tokens estimated from a request body (the o200k tokenizer count of its text plus
/// per-message framing; see [`crate::tokens`]).
pub fn estimate_input(format: Format, body: &[u8]) -> u64 {
    crate::providers::estimate_input(format, body)
}

/// An upper bound of [`estimate_input`] that needs no parsing: a token is at least one byte of
/// text, the JSON around the text is longer than the per-message framing, and every key that may
/// hold a media part counts as one (1,000 tokens each in the estimate). An eighth more covers
/// text that re-serializes longer than it was written.
pub fn input_bound(body: &[u8]) -> u64 {
    input_bound_of(body, media_keys(body))
}

/// The media keys among a document's strings, for [`input_bound_of`]: one pass over its
/// tape, escapes already resolved, rather than a search of the text. An agent's declared
/// tools hold a hundred strings that start as keys may (`"id"`, `"integer"`, `"function"`,
/// `"string"`), each a candidate for the text's searches; in `cargo bench --bench policy
/// input_bound` the tape is cheaper at every size. Every key a media part is under is a string
/// of the document, so the bound stays one (the text's search also counts a key's spelling
/// inside another string's text). Values the estimate counts as JSON text (declared tools:
/// [`crate::providers::counted_as_json`]) hold no media part it counts, so the pass jumps over
/// such members of the root object: the tools an agent sends on every call cost nothing here.
pub fn media_keys_in(doc: &crate::providers::Doc) -> u64 {
    doc.count_strings(
        MEDIA_KEY_LENS,
        is_media_key,
        crate::providers::counted_as_json,
    )
}

/// The lengths of the [`MEDIA_KEYS`] (unquoted).
const MEDIA_KEY_LENS: std::ops::RangeInclusive<usize> = 4..=11;

/// [`input_bound`] with the body's media keys already counted ([`media_keys_in`] of the
/// document it was read from, before a rewrite that only removed or added other members).
pub fn input_bound_of(body: &[u8], media_keys: u64) -> u64 {
    let n = body.len() as u64;
    n + n / 8
        + crate::tokens::REPLY_PRIMING_TOKENS
        + 1
        + media_keys * crate::tokens::MEDIA_PART_TOKENS
}

/// Whether `b` is one of the [`MEDIA_KEYS`] (unquoted).
#[inline(always)]
fn is_media_key(b: &[u8]) -> bool {
    // Every key is 4 to 11 bytes and starts `i`, `f` or `s`: nearly every string is out at
    // once, inlined into the pass over a document (a `match` on the strings compared every one
    // of the same length; a call per short string was a tenth of a long conversation's cost).
    MEDIA_KEY_LENS.contains(&b.len()) && matches!(b[0], b'i' | b'f' | b's') && spells_media_key(b)
}

/// The comparisons [`is_media_key`] leaves to the few strings its first tests let through.
#[inline(never)]
fn spells_media_key(b: &[u8]) -> bool {
    MEDIA_KEYS.iter().any(|k| k.get(1..k.len() - 1) == Some(b))
}

/// Keys that may hold a media part, quoted as they appear in a body.
const MEDIA_KEYS: [&[u8]; 9] = [
    b"\"image_url\"",
    b"\"inline_data\"",
    b"\"inlineData\"",
    b"\"input_audio\"",
    b"\"file_data\"",
    b"\"fileData\"",
    b"\"image\"",
    b"\"source\"",
    b"\"file\"",
];

/// Occurrences of the [`MEDIA_KEYS`] in `body`, each key's counted without overlap (as one
/// search per key counts), plus the strings that spell one with `\u` escapes.
fn media_keys(body: &[u8]) -> u64 {
    plain_media_keys(body) + escaped_media_keys(body)
}

/// Searchers for the first two bytes of every [`MEDIA_KEYS`] key, built once (building one
/// cost more than a search of a small body).
static KEY_STARTS: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 3]> =
    std::sync::LazyLock::new(|| [b"\"i", b"\"f", b"\"s"].map(memchr::memmem::Finder::new));

/// A searcher for a `\u` escape, built once.
static ESCAPE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\\u"));

/// [`MEDIA_KEYS`] written plainly, counted as one search per key counts (a key's occurrence
/// that overlaps its previous one is not). Every key starts with `"i`, `"f` or `"s` and none is
/// a prefix of another: three SIMD searches for those pairs find every candidate, and far
/// fewer of them than a body has quotes. On an agent's 268 KB request: ~15 µs, against ~60 µs
/// for nine searches and ~80 µs for a pass over the quotes (wall clock; callgrind counts SIMD
/// searches as few instructions and had favoured the quote pass).
fn plain_media_keys(body: &[u8]) -> u64 {
    // Per key, where its last counted occurrence ended.
    let mut free_from = [0usize; MEDIA_KEYS.len()];
    let mut found = 0;
    for start in KEY_STARTS.iter() {
        for at in start.find_iter(body) {
            let rest = body.get(at..).unwrap_or_default();
            if let Some(k) = MEDIA_KEYS.iter().position(|key| rest.starts_with(key)) {
                if at >= free_from[k] {
                    found += 1;
                    free_from[k] = at + MEDIA_KEYS[k].len();
                }
            }
        }
    }
    found
}

/// Strings that spell one of the [`MEDIA_KEYS`] with `\u` escapes (`"\u0069mage_url"`): the
/// parse reads them as the key itself, so the estimate counts their part while the searches
/// would not see them — a client could pass a large image under a small bound. Bodies without
/// `\u` (nearly all) cost one search; others one pass over their strings' quotes.
fn escaped_media_keys(body: &[u8]) -> u64 {
    // The longest key, every character escaped (`\uXXXX`), between its quotes.
    const LONGEST: usize = 2 + 11 * 6;
    let Some(first) = ESCAPE.find(body) else {
        return 0;
    };
    let mut found = 0;
    let mut quotes = memchr::memchr_iter(b'"', body);
    // Strings are paired quote by quote from the start (a quote outside a string opens one in
    // valid JSON); a quote preceded by an odd run of backslashes is inside its string.
    while let Some(open) = quotes.next() {
        let Some(close) = quotes.find(|&q| {
            let run = body[..q].iter().rev().take_while(|&&b| b == b'\\').count();
            run % 2 == 0
        }) else {
            break;
        };
        let raw = &body[open..=close];
        if close < first || raw.len() > LONGEST || ESCAPE.find(raw).is_none() {
            continue;
        }
        if let Ok(text) = serde_json::from_slice::<String>(raw) {
            let quoted = format!("\"{text}\"");
            found += u64::from(MEDIA_KEYS.contains(&quoted.as_bytes()));
        }
    }
    found
}

// === impl Budgets ===

impl Budgets {
    /// Build from the config; `None` when no limits and no prices are configured (budgets off).
    /// Needs a Tokio runtime when a webhook is configured.
    pub fn from_config(config: &Config) -> Result<Option<Arc<Self>>, BudgetsError> {
        let b = &config.budgets;
        if b.limits.is_empty() && config.pricing.is_empty() {
            return Ok(None);
        }
        let store = match b.store.kind {
            StoreKind::Memory => Store::Memory(memory::MemoryStore::open(
                (!b.store.snapshot_path.as_os_str().is_empty())
                    .then(|| b.store.snapshot_path.clone()),
            )),
            StoreKind::Redis | StoreKind::RedisCluster => {
                let target = if b.store.kind == StoreKind::Redis {
                    redis::Target::Single(b.store.url.as_deref().ok_or_else(|| {
                        BudgetsError::Redis("`url` is required for the redis store".into())
                    })?)
                } else if b.store.nodes.is_empty() {
                    return Err(BudgetsError::Redis(
                        "`nodes` (seed nodes) are required for the redis_cluster store".into(),
                    ));
                } else {
                    redis::Target::Cluster(&b.store.nodes)
                };
                Store::Redis(Box::new(
                    redis::RedisStore::new(
                        target,
                        b.store.timeout,
                        (b.session_retention, b.task_retention),
                        b.store.reservation_lease,
                        b.store.settle_replicas,
                        // One connection per `per_core` worker (see `RedisStore::conns`).
                        match config.server.runtime {
                            crate::config::RuntimeMode::PerCore => config.server.worker_count(),
                            crate::config::RuntimeMode::Shared => 0,
                        },
                    )
                    .map_err(|e| BudgetsError::Redis(e.to_string()))?,
                ))
            }
        };
        let webhook = Webhook::from_config(config).map_err(BudgetsError::Webhook)?;
        let limits: Vec<Limit> = b.limits.iter().flat_map(Limit::from_config).collect();
        let by_scope = SCOPES.map(|scope| {
            (0..limits.len())
                .filter(|&i| limits[i].scope == scope)
                .collect()
        });
        Ok(Some(Arc::new(Self {
            limits,
            by_scope,
            near: matches!(store, Store::Redis(_)).then(near::Near::new),
            store,
            prices: Prices::new(&config.pricing),
            fail_closed: b.on_store_unreachable == OnStoreUnreachable::FailClosed,
            default_max_output: b.default_max_output_tokens,
            lifetime_status: match b.lifetime_refusal {
                LifetimeRefusal::PaymentRequired => http::StatusCode::PAYMENT_REQUIRED,
                LifetimeRefusal::RateLimited => http::StatusCode::TOO_MANY_REQUESTS,
            },
            snapshot_interval: b.store.snapshot_interval,
            webhook,
            store_up: AtomicBool::new(true),
            alerted: DashMap::new(),
            in_flight_settles: AtomicUsize::new(0),
            settling: tokio::sync::Notify::new(),
            leases: DashMap::new(),
            ratio_gauges: Handles::default(),
            cost_gauges: Handles::default(),
            unpriced_warned: Mutex::default(),
            lease_ttl: b.store.reservation_lease,
            session_retention: b.session_retention,
            task_retention: b.task_retention,
            slices: (!b.leases.scopes.is_empty()).then(|| {
                slices::Slices::new(slices::SliceConfig {
                    min: b.leases.min,
                    max: b.leases.max,
                    lasts: b.leases.lasts,
                })
            }),
            leased_scopes: b.leases.scopes.clone(),
        })))
    }

    /// Tokens a model without a price spent while `pricing` prices others: they cost 0, so
    /// no USD limit sees them. Counted by (capped) model label, and logged once per model.
    fn unpriced(&self, label: &Arc<str>, tokens: u64) {
        counter!(m::UNPRICED_TOKENS_TOTAL, "model" => label.to_string()).increment(tokens);
        let mut warned = self
            .unpriced_warned
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if warned.len() < MAX_UNPRICED_WARNED && warned.insert(label.clone()) {
            tracing::warn!(
                model = %label,
                "model has no price in `pricing`: its calls cost 0 and USD limits do not count them"
            );
        }
    }

    /// Whether any limit is configured (else only cost is recorded and admission is free).
    pub fn has_limits(&self) -> bool {
        !self.limits.is_empty()
    }

    /// The configured limits.
    pub fn limits(&self) -> &[Limit] {
        &self.limits
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether the store answered its last operation.
    pub fn store_up(&self) -> bool {
        self.store_up.load(Ordering::Relaxed)
    }

    /// Admit a call or refuse it ([`BudgetError::Exceeded`], or
    /// [`BudgetError::StoreUnavailable`] when the store is down and `fail_closed` is set).
    /// `estimate` gives the call's estimated input tokens; it is only called when the call is
    /// near a limit (the upper bound `facts.input_bound` decides the rest).
    pub async fn admit(
        self: &Arc<Self>,
        facts: CallFacts,
        estimate: &(dyn Fn() -> u64 + Sync),
    ) -> Result<Admission, BudgetError> {
        static TOOK: OnceLock<metrics::Histogram> = OnceLock::new();
        let started = std::time::Instant::now();
        let res = self.admit_timed(facts, estimate).await;
        TOOK.get_or_init(|| metrics::histogram!(m::BUDGET_ADMISSION_SECONDS))
            .record(started.elapsed().as_secs_f64());
        res
    }

    async fn admit_timed(
        self: &Arc<Self>,
        facts: CallFacts,
        estimate: &(dyn Fn() -> u64 + Sync),
    ) -> Result<Admission, BudgetError> {
        let now = unix_now();
        let mut adm = self.admission(facts, Vec::new());
        // The tokenizer runs at most once, whichever scope needs it first.
        let exact = OnceLock::new();
        let exact_input = || *exact.get_or_init(estimate);
        // Every scope at once: the call waits for the slowest store round trip, not their sum.
        // A scope's grant goes into `adm.held` as soon as it is made, so a call dropped while
        // other scopes are still in the store gives it back.
        let outcomes = {
            let call = ScopeCall {
                facts: &adm.facts,
                held: &adm.held,
                exact: &exact_input,
                now,
            };
            let one_node = matches!(&self.store, Store::Redis(r) if r.one_node());
            if one_node && self.slices.is_none() {
                self.reserve_together(&call).await
            } else if matches!(self.store, Store::Memory(_)) {
                // In process every scope answers at once: nothing to overlap, and polling four
                // futures together cost more than the memory store's work.
                let mut out: [Outcome; 4] = std::array::from_fn(|_| Outcome::Skipped);
                for (o, scope) in out.iter_mut().zip(SCOPES) {
                    *o = self.reserve_scope(scope, &call).await;
                }
                out
            } else {
                let [s, t, a, g] = SCOPES;
                let (s, t, a, g) = tokio::join!(
                    self.reserve_scope(s, &call),
                    self.reserve_scope(t, &call),
                    self.reserve_scope(a, &call),
                    self.reserve_scope(g, &call),
                );
                [s, t, a, g]
            }
        };
        // In scope order, as one scope after another would have ended: the first refusal (or
        // failure, failing closed) refuses the call; what other scopes granted is given back
        // (`give_back_now`, else by dropping `adm`) without being counted as admitted.
        let refusal = outcomes
            .iter()
            .zip(SCOPES)
            .find_map(|(outcome, scope)| match outcome {
                Outcome::Skipped => None,
                Outcome::Granted(_) => {
                    self.mark_store(true);
                    None
                }
                Outcome::NeedEstimate => Some(BudgetError::StoreUnavailable),
                Outcome::Refused {
                    key,
                    limit,
                    used,
                    need,
                } => {
                    self.mark_store(true);
                    let l = &self.limits[*limit];
                    self.refused(key, &adm.facts, l, *used, now);
                    Some(BudgetError::Exceeded(Box::new(BudgetRefusal {
                        scope: l.scope_str(),
                        unit: l.unit_str(),
                        code: code(l),
                        window: l.window_name.clone(),
                        limit: l.display(l.amount),
                        remaining: l.display(l.amount.saturating_sub(*used)),
                        need: l.display(*need),
                        retry_after: l.retry_after(now),
                        lifetime_status: self.lifetime_status,
                    })))
                }
                Outcome::Failed(e) => {
                    self.store_failed("reserve", e);
                    self.fail_closed.then(|| {
                        count_decision(scope, BudgetDecision::Rejected);
                        BudgetError::StoreUnavailable
                    })
                }
            });
        if let Some(e) = refusal {
            self.give_back_now(&mut adm).await;
            return Err(e);
        }
        let model = adm.facts.model.as_deref().unwrap_or("");
        let held = adm.held.get_mut().unwrap_or_else(PoisonError::into_inner);
        // Grants arrived in completion order; metrics and alerts go in scope order.
        held.sort_by_key(|h| SCOPES.iter().position(|s| *s == h.scope));
        let (mut remaining_tokens, mut cut_after) = (None, None);
        let mut decision = BudgetDecision::Allowed;
        for (h, wants) in held.iter().zip(outcomes.iter().filter_map(Outcome::wants)) {
            for ((&i, g), w) in h.limits.iter().zip(&h.grants).zip(wants) {
                let d = self.admitted(&h.key, &adm.facts, i, g, w, now);
                decision = stronger(decision, d);
                let l = &self.limits[i];
                let remaining = l.amount.saturating_sub(g.used.saturating_add(g.granted));
                if l.scope == LimitScope::Session && l.unit == Unit::Tokens {
                    remaining_tokens =
                        Some(remaining_tokens.map_or(remaining, |r: u64| r.min(remaining)));
                }
                if l.action == LimitAction::Cut {
                    // The reservation is whole; the stream is cut where the limit is reached.
                    let room = g.granted.min(l.amount.saturating_sub(g.used));
                    let allowed =
                        self.output_allowance(l, model, room, w.min, adm.facts.input_bound);
                    cut_after = Some(cut_after.map_or(allowed, |a: u64| a.min(allowed)));
                }
            }
        }
        adm.session_tokens_remaining = remaining_tokens;
        adm.cut_after_output = cut_after;
        adm.decision = decision;
        adm.est_input = exact.get().copied().unwrap_or(adm.facts.input_bound);
        Ok(adm)
    }

    /// An admission that reserves nothing and refuses nothing, for spend the provider incurs
    /// whatever a limit says (a Realtime response the server started itself past a limit, the
    /// transcription of audio already sent): settling it charges each of the call's scopes what
    /// the call spent, as a reservation of zero replaced by the spend.
    pub fn unreserved(self: &Arc<Self>, facts: CallFacts) -> Admission {
        let now = unix_now();
        let held = SCOPES
            .iter()
            .filter_map(|&scope| {
                let (key, limits) = self.scope_limits(scope, &facts)?;
                let grants = limits
                    .iter()
                    .map(|&i| Grant {
                        start: self.limits[i].window_start(now),
                        granted: 0,
                        used: 0,
                    })
                    .collect();
                Some(Held {
                    scope,
                    key,
                    limits,
                    grants,
                    lease: None,
                    slice: None,
                })
            })
            .collect();
        self.admission(facts, held)
    }

    /// An admission of the call `facts` holding `held`, allowed until a scope says otherwise.
    fn admission(self: &Arc<Self>, facts: CallFacts, held: Vec<Held>) -> Admission {
        Admission {
            budgets: self.clone(),
            held: Mutex::new(held),
            est_input: facts.input_bound,
            facts,
            session_tokens_remaining: None,
            cut_after_output: None,
            decision: BudgetDecision::Allowed,
            settled: false,
        }
    }

    /// Give back a refused call's grants in a shared store before the refusal is answered (the
    /// scopes reserved at once, so others may have granted): a client retrying at once, or the
    /// next call on those scopes, must not find them still held. Each settle counts once per
    /// lease id, so the release by dropping `adm` afterwards (or instead, if this future is
    /// dropped) cannot give back twice.
    async fn give_back_now(&self, adm: &mut Admission) {
        if !matches!(self.store, Store::Redis(_)) {
            return;
        }
        let held = adm.held.get_mut().unwrap_or_else(PoisonError::into_inner);
        let now = unix_now();
        let remote: Vec<(&Held, Vec<Charge>)> = held
            .iter()
            .filter(|h| h.slice.is_none() && h.lease.is_some())
            .map(|h| (h, self.charges(h, 0, 0)))
            .collect();
        let settles = remote.iter().map(|(h, c)| {
            self.store
                .settle(&h.key, now, c, Totals::default(), h.lease)
        });
        let done = futures_util::future::join_all(settles).await;
        let mut settled = Vec::new();
        for ((h, _), res) in remote.iter().zip(done) {
            match res {
                Ok(_) => settled.extend(h.lease),
                Err(e) => self.store_failed("settle", &e),
            }
        }
        for id in &settled {
            self.leases.remove(id);
        }
        held.retain(|h| h.lease.is_none_or(|id| !settled.contains(&id)));
    }

    /// Keep a grant in the admission (its lease renewed meanwhile): the scope was granted.
    fn hold(&self, to: &Mutex<Vec<Held>>, h: Held, wants: Vec<Want>) -> Outcome {
        if let Some(id) = h.lease {
            self.leases.insert(id, h.key.clone());
        }
        to.lock().unwrap_or_else(PoisonError::into_inner).push(h);
        Outcome::Granted(wants)
    }

    /// What `held` comes to when it spent `tokens` and `cost` (nano-USD), per limit.
    fn charges(&self, held: &Held, tokens: u64, cost: u64) -> Vec<Charge> {
        held.limits
            .iter()
            .zip(&held.grants)
            .map(|(&i, g)| {
                let l = &self.limits[i];
                Charge {
                    counter: l.counter.clone(),
                    window: l.window,
                    start: g.start,
                    granted: g.granted,
                    actual: match l.unit {
                        Unit::Tokens => tokens,
                        Unit::Usd => cost,
                    },
                }
            })
            .collect()
    }

    /// Whether the store last showed the scope instance `key` near a limit.
    fn is_near(&self, key: &str) -> bool {
        self.near.as_ref().is_some_and(|n| n.is_near(key))
    }

    fn set_near(&self, key: &str, near: bool) {
        if let Some(n) = &self.near {
            n.set(key, near);
        }
    }

    /// After a settlement left `used` on `held`'s limits: whether a call like it (optimistic
    /// wants `opt`) would no longer fit its upper bound there.
    fn note_settled(&self, held: &Held, used: &[u64], opt: &[u64]) {
        if opt.is_empty() {
            return;
        }
        let near = held
            .limits
            .iter()
            .zip(used)
            .zip(opt)
            .any(|((&i, &u), &w)| self.limits[i].amount.saturating_sub(u) < w);
        self.set_near(&held.key, near);
    }

    /// The store key of `scope` for a call and the indices of its limits; `None` when none
    /// applies (no limit of the scope, or a session or task scope for a call without one).
    fn scope_limits(&self, scope: LimitScope, f: &CallFacts) -> Option<(String, Arc<[usize]>)> {
        let idx = &self.by_scope[SCOPES.iter().position(|s| *s == scope)?];
        if idx.is_empty() {
            return None;
        }
        let id = match scope {
            LimitScope::Session => f.session.as_deref()?,
            LimitScope::Task => f.task.as_deref()?,
            LimitScope::Agent => f.agent.as_ref(),
            LimitScope::Global => "",
        };
        Some((group_key(scope, id), idx.clone()))
    }

    /// Every scope of a call in one script (one Redis node, no leased scope): one round trip
    /// and one command per call, all scopes granted or none. The outcomes in scope order; a
    /// refusal or failure is told on one scope, the others (nothing reserved) are skipped.
    async fn reserve_together(self: &Arc<Self>, call: &ScopeCall<'_>) -> [Outcome; 4] {
        let mut out: [Outcome; 4] = std::array::from_fn(|_| Outcome::Skipped);
        let f = call.facts;
        let (now, model) = (call.now, f.model.as_deref().unwrap_or(""));
        let max_out = f.max_out(self.default_max_output);
        // (position in SCOPES, scope, key, limits, lease)
        let mut parts = Vec::with_capacity(SCOPES.len());
        for (pos, &scope) in SCOPES.iter().enumerate() {
            if let Some((key, idx)) = self.scope_limits(scope, f) {
                parts.push((pos, scope, key, idx, self.new_lease()));
            }
        }
        let Some(first) = parts.first().map(|p| p.0) else {
            return out;
        };
        // First with the cheap upper bound of the input, as per scope (unless a scope is near
        // a limit, where that bound would not fit).
        let mut optimistic = !parts.iter().any(|p| self.is_near(&p.2));
        loop {
            let input = call.input(optimistic);
            let asks: Vec<(String, Vec<Want>, Option<Lease>)> = parts
                .iter()
                .map(|(_, _, key, idx, lease)| {
                    let wants = self.wants(idx, model, input, max_out, optimistic);
                    (key.clone(), wants, *lease)
                })
                .collect();
            if optimistic && !asks.iter().all(|(_, wants, _)| fits_whole(wants)) {
                optimistic = false;
                continue;
            }
            match self.reserve_remote(now, asks.clone()).await {
                Ok(redis::ReservedAll::NeedEstimate) if optimistic => {
                    optimistic = false;
                    // Which scope did not fit is not told: their settlements will say.
                    for p in &parts {
                        self.set_near(&p.2, true);
                    }
                }
                Ok(redis::ReservedAll::Granted(grants)) => {
                    for ((pos, scope, key, limits, lease), (grants, (_, wants, _))) in
                        parts.into_iter().zip(grants.into_iter().zip(asks))
                    {
                        let lease = lease.map(|l| l.id);
                        let h = Held {
                            scope,
                            key,
                            limits,
                            grants,
                            lease,
                            slice: None,
                        };
                        out[pos] = self.hold(call.held, h, wants);
                    }
                    return out;
                }
                Ok(redis::ReservedAll::Refused { scope, index, used }) => {
                    let (Some((pos, _, key, idx, _)), Some((_, wants, _))) =
                        (parts.get(scope), asks.get(scope))
                    else {
                        out[first] = Outcome::NeedEstimate;
                        return out;
                    };
                    out[*pos] = Outcome::Refused {
                        key: key.clone(),
                        limit: idx.get(index).copied().unwrap_or(idx[0]),
                        used,
                        need: wants.get(index).map_or(0, |w| w.min),
                    };
                    return out;
                }
                Ok(redis::ReservedAll::NeedEstimate) => {
                    out[first] = Outcome::NeedEstimate;
                    return out;
                }
                Err(e) => {
                    out[first] = Outcome::Failed(e);
                    return out;
                }
            }
        }
    }

    /// Check-and-reserve on one scope's limits for a call (the session and task scopes only
    /// when the call has one). A grant goes into `call.held` at once; the outcome says what
    /// became of the scope.
    async fn reserve_scope(self: &Arc<Self>, scope: LimitScope, call: &ScopeCall<'_>) -> Outcome {
        let f = call.facts;
        let Some((key, idx)) = self.scope_limits(scope, f) else {
            return Outcome::Skipped;
        };
        let (now, model) = (call.now, f.model.as_deref().unwrap_or(""));
        let max_out = f.max_out(self.default_max_output);
        let mut lease = None;
        let leased = match self.slices_for(scope, &idx) {
            Some(sl) => {
                let c = (&idx[..], model, f.input_bound, max_out, now);
                // Boxed: inline, a lease's store round trips would grow every scope's share of
                // every call's future (four scopes are polled at once).
                Box::pin(self.reserve_leased(sl, &key, c, call.exact)).await
            }
            None => None,
        };
        let (reserved, wants, slice) = match leased {
            Some(l) => l,
            None => {
                lease = self.new_lease();
                // First with the cheap upper bound of the input: when the whole reservation
                // fits, the tokenizer is not needed. Near a limit, again with the real estimate
                // (or at once, where the store showed this scope near a limit before).
                let mut optimistic = !self.is_near(&key);
                loop {
                    let input = call.input(optimistic);
                    let wants = self.wants(&idx, model, input, max_out, optimistic);
                    if optimistic && !fits_whole(&wants) {
                        optimistic = false;
                        continue;
                    }
                    match self.reserve(&key, now, &wants, lease).await {
                        Ok(Reserved::NeedEstimate) if optimistic => {
                            optimistic = false;
                            self.set_near(&key, true);
                        }
                        other => break (other, wants, None),
                    }
                }
            }
        };
        match reserved {
            Ok(Reserved::Granted(grants)) => {
                let lease = lease.map(|l| l.id);
                let limits = idx;
                let h = Held {
                    scope,
                    key,
                    limits,
                    grants,
                    lease,
                    slice,
                };
                self.hold(call.held, h, wants)
            }
            // A refusal comes from the real estimate (an optimistic want is never refused), so
            // `min` is what this call needs.
            Ok(Reserved::Refused { index, used }) => Outcome::Refused {
                key,
                limit: idx.get(index).copied().unwrap_or(idx[0]),
                used,
                need: wants.get(index).map_or(0, |w| w.min),
            },
            Ok(Reserved::NeedEstimate) => Outcome::NeedEstimate,
            Err(e) => Outcome::Failed(e),
        }
    }

    /// Check-and-reserve on one scope.
    async fn reserve(
        self: &Arc<Self>,
        key: &str,
        now: u64,
        wants: &[Want],
        lease: Option<Lease>,
    ) -> Result<Reserved, StoreError> {
        if let Store::Memory(m) = &self.store {
            return Ok(m.reserve(key, now, wants));
        }
        let ask = vec![(key.to_string(), wants.to_vec(), lease)];
        Ok(self.reserve_remote(now, ask).await?.into_one())
    }

    /// Check-and-reserve on Redis, every scope of `asks` (key, wants, lease) in one script, in
    /// a task of its own: when the client goes away while the script runs (hyper drops this
    /// future), the task gives the reservations back instead of leaking them.
    async fn reserve_remote(
        self: &Arc<Self>,
        now: u64,
        asks: Vec<(String, Vec<Want>, Option<Lease>)>,
    ) -> Result<redis::ReservedAll, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let b = self.clone();
        // Counted as a settlement: a shutdown waits for the give-back below.
        b.in_flight_settles.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            b.reserve_or_give_back(now, asks, tx).await;
            if b.in_flight_settles.fetch_sub(1, Ordering::AcqRel) == 1 {
                b.settling.notify_waiters();
            }
        });
        rx.await
            .unwrap_or_else(|_| Err(StoreError::Redis("reserve task ended".into())))
    }

    /// Run the reserve script of `asks` and answer `tx`; when nobody waits for the answer any
    /// more (the call's future was dropped), give what was granted back.
    async fn reserve_or_give_back(
        &self,
        now: u64,
        asks: Vec<(String, Vec<Want>, Option<Lease>)>,
        tx: tokio::sync::oneshot::Sender<Result<redis::ReservedAll, StoreError>>,
    ) {
        let Store::Redis(r) = &self.store else {
            return;
        };
        let parts: Vec<(&str, &[Want], Option<Lease>)> = asks
            .iter()
            .map(|(k, w, l)| (k.as_str(), &w[..], *l))
            .collect();
        let res = r.reserve(now, &parts).await;
        let failed = res.is_err();
        let unheard = tx.send(res);
        if failed {
            // No answer (a timeout): the script may have run all the same. Its reservations
            // are taken back now (the call already has its error) rather than held until
            // their leases run out.
            let leased: Vec<(&str, u64)> = asks
                .iter()
                .filter_map(|(k, _, l)| l.map(|l| (k.as_str(), l.id)))
                .collect();
            if !leased.is_empty() {
                if let Err(e) = r.release(&leased).await {
                    self.store_failed("release", &e);
                }
            }
        }
        let Err(Ok(redis::ReservedAll::Granted(grants))) = unheard else {
            return;
        };
        let charges: Vec<Vec<Charge>> = asks
            .iter()
            .zip(&grants)
            .map(|((_, wants, _), grants)| {
                wants
                    .iter()
                    .zip(grants)
                    .map(|(w, g)| Charge {
                        counter: w.counter.clone(),
                        window: w.window,
                        start: g.start,
                        granted: g.granted,
                        actual: 0,
                    })
                    .collect()
            })
            .collect();
        let back: Vec<(&str, &[Charge], Option<u64>)> = asks
            .iter()
            .zip(&charges)
            .map(|((k, _, l), c)| (k.as_str(), &c[..], l.map(|l| l.id)))
            .collect();
        if let Err(e) = r.settle(unix_now(), &back, Totals::default()).await {
            self.store_failed("settle", &e);
        }
    }

    /// The slices a call's limits `idx` of `scope` draw on, when that scope is leased (and every
    /// one of them enforced: an observed limit never refuses, so it reserves per call).
    fn slices_for(&self, scope: LimitScope, idx: &[usize]) -> Option<&slices::Slices> {
        self.slices.as_ref().filter(|_| {
            self.leased_scopes.contains(&scope)
                && idx
                    .iter()
                    .all(|&i| self.limits[i].action != LimitAction::Observe)
        })
    }

    /// Admit a call of a leased scope from one of this sidecar's slices, or take a new slice
    /// from the store (sized by [`slices::Slices::size`]) and draw on it; (the store's answer or
    /// the local grants, the call's wants, the slice). `None`: no room for another slice here,
    /// the call reserves in the store by itself. `call`: (limits, model, input bound, output
    /// cap, now).
    async fn reserve_leased(
        self: &Arc<Self>,
        sl: &slices::Slices,
        key: &str,
        (idx, model, bound, max_out, now): (&[usize], &str, u64, u64, u64),
        exact: &(dyn Fn() -> u64 + Sync),
    ) -> Option<(Result<Reserved, StoreError>, Vec<Want>, Option<u64>)> {
        let starts: Vec<u64> = idx
            .iter()
            .map(|&i| self.limits[i].window_start(now))
            .collect();
        let call = self.wants(idx, model, bound, max_out, false);
        if let Some((id, grants)) = sl.take(key, &call, &starts) {
            return Some((Ok(Reserved::Granted(grants)), call, Some(id)));
        }
        // Held across the store round trip: concurrent calls count against the bound.
        let room = sl.room(key)?;
        let lease = self.new_lease()?;
        let call = self.wants(idx, model, exact(), max_out, false);
        let amounts: Vec<u64> = idx.iter().map(|&i| self.limits[i].amount).collect();
        // A call larger than the largest slice (a big output cap) reserves by itself: a slice
        // sized to it would break the stated bound of `max` × limit per slice.
        if !sl.fits(&amounts, &call) {
            return None;
        }
        let mut ask = call.clone();
        for (w, size) in ask.iter_mut().zip(sl.size(key, &amounts, &call)) {
            // A slice takes what remains of its size, never less than the call opening it.
            w.want = size;
        }
        Some(match self.reserve(key, now, &ask, Some(lease)).await {
            Ok(Reserved::Granted(grants)) => {
                self.leases.insert(lease.id, key.to_string());
                let g = sl.open(room, (lease.id, idx), &grants, &call);
                counter!(m::BUDGET_SLICES_TOTAL, "scope" => limits::scope_str(self.limits[idx[0]].scope), "op" => "taken").increment(1);
                (Ok(Reserved::Granted(g)), call, Some(lease.id))
            }
            other => (other, call, None),
        })
    }

    /// Give a slice back to the store: its spend replaces its reservation (retried as any
    /// settlement; counted in the settlements awaited at shutdown).
    fn give_back(self: &Arc<Self>, r: slices::Returned) {
        self.leases.remove(&r.id);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let Some(&i) = r.limits.first() {
            counter!(m::BUDGET_SLICES_TOTAL, "scope" => limits::scope_str(self.limits[i].scope), "op" => "returned").increment(1);
        }
        self.in_flight_settles.fetch_add(1, Ordering::AcqRel);
        let b = self.clone();
        rt.spawn(async move {
            let charges: Vec<Charge> = r
                .limits
                .iter()
                .enumerate()
                .filter_map(|(k, &i)| {
                    let l = b.limits.get(i)?;
                    Some(Charge {
                        counter: l.counter.clone(),
                        window: l.window,
                        start: r.starts.get(k).copied().unwrap_or(0),
                        granted: r.granted.get(k).copied().unwrap_or(0),
                        actual: r.spent.get(k).copied().unwrap_or(0),
                    })
                })
                .collect();
            let res = b
                .settle_retrying(unix_now(), &[(&r.key, &charges, Some(r.id))], r.totals)
                .await;
            if let Err(e) = res {
                b.store_failed("settle", &e);
            }
            if b.in_flight_settles.fetch_sub(1, Ordering::AcqRel) == 1 {
                b.settling.notify_waiters();
            }
        });
    }

    /// What a call wants from each of the limits `idx`, its input taken as `input` tokens.
    fn wants(
        &self,
        idx: &[usize],
        model: &str,
        input: u64,
        max_out: u64,
        optimistic: bool,
    ) -> Vec<Want> {
        idx.iter()
            .map(|&i| {
                let l = &self.limits[i];
                let (min, want) = match l.unit {
                    Unit::Tokens => (input, input.saturating_add(max_out)),
                    // Refused below what its input is expected to cost; reserved for the
                    // most it may cost (cache writes, audio).
                    Unit::Usd => (
                        self.prices.estimate_plain(model, input, 0),
                        self.prices.estimate(model, input, max_out),
                    ),
                };
                Want {
                    counter: l.counter.clone(),
                    window: l.window,
                    limit: l.amount,
                    min,
                    want,
                    enforce: l.action != LimitAction::Observe,
                    optimistic,
                    // An observed limit never refuses: its reservation only shows what remains.
                    // A want past the whole limit (a client's `max_tokens` may be any number)
                    // reserves the limit: that already holds off every other call while this
                    // one runs, and keeps every reservation within what a limit can hold.
                    floor: match l.action {
                        LimitAction::Observe => 0,
                        _ => want.min(l.amount),
                    },
                }
            })
            .collect()
    }

    /// Output tokens a call granted `granted` (of which `min` is its input; `input` tokens of
    /// it) may produce. An output token's price is the one the call's input length bills it at
    /// (long-context rates past their threshold).
    fn output_allowance(&self, l: &Limit, model: &str, granted: u64, min: u64, input: u64) -> u64 {
        let left = granted.saturating_sub(min);
        match l.unit {
            Unit::Tokens => left,
            Unit::Usd => {
                let per_token = self
                    .prices
                    .estimate_plain(model, input, 1)
                    .saturating_sub(self.prices.estimate_plain(model, input, 0));
                match per_token {
                    0 => u64::MAX,
                    per_token => left / per_token,
                }
            }
        }
    }

    /// Metrics and alerts for an admitted call on limit `i`; the decision it counts as.
    fn admitted(
        &self,
        key: &str,
        f: &CallFacts,
        i: usize,
        g: &Grant,
        w: &Want,
        now: u64,
    ) -> BudgetDecision {
        let l = &self.limits[i];
        let decision = if l.action == LimitAction::Observe && g.granted < w.min.max(1) {
            counter!(m::BUDGET_EXCEEDED_TOTAL, "scope" => l.scope_str(), "agent" => f.agent.clone())
                .increment(1);
            self.alert(key, f, l, g.used, BudgetDecision::Observed, now);
            BudgetDecision::Observed
        } else if l
            .warn_at
            .is_some_and(|r| g.used as f64 >= r * l.amount as f64)
        {
            // Admitted while spend (plus other calls' reservations) is past the threshold.
            self.alert(key, f, l, g.used, BudgetDecision::Warned, now);
            BudgetDecision::Warned
        } else {
            BudgetDecision::Allowed
        };
        count_decision(l.scope, decision);
        decision
    }

    fn refused(&self, key: &str, f: &CallFacts, l: &Limit, used: u64, now: u64) {
        count_decision(l.scope, BudgetDecision::Rejected);
        counter!(m::BUDGET_EXCEEDED_TOTAL, "scope" => l.scope_str(), "agent" => f.agent.clone())
            .increment(1);
        self.ratio(l, &f.agent, used);
        self.alert(key, f, l, used, BudgetDecision::Rejected, now);
    }

    /// Record a cut (called when a stream is ended at its limit).
    pub fn cut(&self, f: &CallFacts) {
        for l in self.limits.iter().filter(|l| l.action == LimitAction::Cut) {
            count_decision(l.scope, BudgetDecision::Cut);
            counter!(m::BUDGET_EXCEEDED_TOTAL, "scope" => l.scope_str(), "agent" => f.agent.clone())
                .increment(1);
            if let Some(w) = &self.webhook {
                w.send(Alert {
                    session: f.session.as_ref().map(|s| s.to_string()),
                    task: f.task.as_ref().map(|t| t.to_string()),
                    agent: f.agent.to_string(),
                    scope: l.scope_str(),
                    unit: unit_name(l),
                    window: l.window_name.to_string(),
                    limit: l.display(l.amount),
                    used: l.display(l.amount),
                    decision: BudgetDecision::Cut.as_str(),
                    time: webhook::now_rfc3339(),
                });
            }
        }
    }

    /// `tokenwarden_budget_used_ratio` for agent and global scopes.
    fn ratio(&self, l: &Limit, agent: &Arc<str>, used: u64) {
        let ratio = used as f64 / l.amount.max(1) as f64;
        let key = |scope: &'static str, agent: Arc<str>| {
            Key::from_parts(
                m::BUDGET_USED_RATIO,
                vec![Label::new("scope", scope), Label::new("agent", agent)],
            )
        };
        match l.scope {
            LimitScope::Agent => self
                .ratio_gauges
                .gauge(&Some(agent.clone()), || key("agent", agent.clone()))
                .set(ratio),
            LimitScope::Global => self
                .ratio_gauges
                .gauge(&None, || key("global", Arc::from("all")))
                .set(ratio),
            // Per-instance scopes: an id is never a label.
            LimitScope::Session | LimitScope::Task => {}
        }
    }

    /// Post an alert once per scope instance, counter, decision and window.
    fn alert(
        &self,
        key: &str,
        f: &CallFacts,
        l: &Limit,
        used: u64,
        decision: BudgetDecision,
        now: u64,
    ) {
        let Some(w) = &self.webhook else {
            return;
        };
        let start = l.window_start(now);
        if self.alerted.len() > MAX_ALERT_MEMORY {
            // Bounded: past this many scope instances, an alert may repeat once more.
            self.alerted.clear();
        }
        let k = (key.to_string(), l.counter.clone(), decision);
        if self.alerted.insert(k, start) == Some(start) {
            return;
        }
        w.send(Alert {
            session: f.session.as_ref().map(|s| s.to_string()),
            task: f.task.as_ref().map(|t| t.to_string()),
            agent: f.agent.to_string(),
            scope: l.scope_str(),
            unit: unit_name(l),
            window: l.window_name.to_string(),
            limit: l.display(l.amount),
            used: l.display(used),
            decision: decision.as_str(),
            time: webhook::now_rfc3339(),
        });
    }

    fn mark_store(&self, up: bool) {
        if self.store_up.swap(up, Ordering::Relaxed) != up {
            gauge!(m::BUDGET_STORE_UP).set(if up { 1.0 } else { 0.0 });
        }
    }

    fn store_failed(&self, op: &'static str, e: &StoreError) {
        counter!(m::BUDGET_STORE_ERRORS_TOTAL, "op" => op).increment(1);
        if self.store_up() {
            tracing::warn!(error = %e, fail_closed = self.fail_closed, "budget store unreachable");
        }
        self.mark_store(false);
    }

    /// Clear a session's (or task's) spend and its alert memory; whether it had any.
    pub async fn reset(&self, scope: LimitScope, id: &str) -> Result<bool, StoreError> {
        let key = group_key(scope, id);
        self.alerted.retain(|k, _| k.0 != key);
        self.store.reset(&key).await
    }

    /// Background upkeep: memory snapshots every `snapshot_interval`, store health every second.
    pub async fn run_upkeep(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_snapshot = tokio::time::Instant::now();
        let mut last_renewal = tokio::time::Instant::now();
        // Where the pruning of the sessions and tasks rankings goes on from.
        let mut cursors = [0u64; 2];
        loop {
            tick.tick().await;
            // Set every tick: the recorder may not have existed when the store last changed.
            gauge!(m::BUDGET_STORE_UP).set(if self.store_up() { 1.0 } else { 0.0 });
            match &self.store {
                Store::Memory(mem) => {
                    if last_snapshot.elapsed() >= self.snapshot_interval {
                        last_snapshot = tokio::time::Instant::now();
                        let retention = (
                            self.session_retention.as_secs(),
                            self.task_retention.as_secs(),
                        );
                        mem.prune(unix_now(), retention);
                        gauge!(m::BUDGET_SESSIONS_TRACKED).set(mem.count(SESSION_PREFIX) as f64);
                        gauge!(m::BUDGET_TASKS_TRACKED).set(mem.count(TASK_PREFIX) as f64);
                        self.snapshot(mem);
                    }
                }
                Store::Redis(r) => {
                    if let Some(sl) = &self.slices {
                        for back in sl.close(false) {
                            self.give_back(back);
                        }
                        gauge!(m::BUDGET_SLICES_OPEN).set(sl.outstanding() as f64);
                    }
                    let up = self.store.ping().await;
                    if !up {
                        counter!(m::BUDGET_STORE_ERRORS_TOTAL, "op" => "ping").increment(1);
                    }
                    self.mark_store(up);
                    if last_renewal.elapsed() >= self.lease_ttl / 3 {
                        last_renewal = tokio::time::Instant::now();
                        self.renew_leases(r).await;
                        // Expired records leave the rankings a batch at a time, so the counts
                        // below (and `top`) say what the store holds.
                        for (i, prefix) in [SESSION_PREFIX, TASK_PREFIX].into_iter().enumerate() {
                            let every = self.lease_ttl / 3;
                            if let Ok(next) = r.prune(prefix, cursors[i], PRUNE_BATCH, every).await
                            {
                                cursors[i] = next;
                            }
                        }
                        if let Ok(n) = r.count(SESSION_PREFIX).await {
                            gauge!(m::BUDGET_SESSIONS_TRACKED).set(n as f64);
                        }
                        if let Ok(n) = r.count(TASK_PREFIX).await {
                            gauge!(m::BUDGET_TASKS_TRACKED).set(n as f64);
                        }
                    }
                }
            }
        }
    }

    /// A lease for a new reservation (shared stores only).
    fn new_lease(&self) -> Option<Lease> {
        match self.store {
            Store::Memory(_) => None,
            Store::Redis(_) => Some(Lease {
                id: rand::random(),
                until_ms: redis::unix_ms().saturating_add(redis::duration_ms(self.lease_ttl)),
            }),
        }
    }

    /// Push every live reservation's lease forward, one script per scope.
    async fn renew_leases(&self, store: &redis::RedisStore) {
        let mut by_key: std::collections::HashMap<String, Vec<u64>> =
            std::collections::HashMap::new();
        for e in self.leases.iter() {
            by_key.entry(e.value().clone()).or_default().push(*e.key());
        }
        let until = redis::unix_ms().saturating_add(redis::duration_ms(self.lease_ttl));
        for (key, ids) in by_key {
            if let Err(e) = store.renew(&key, &ids, until).await {
                self.store_failed("renew", &e);
            }
        }
    }

    /// Settle on a shared store, retried with backoff for up to `reservation_lease` while the
    /// store fails (a primary that died, until its replica takes over): the settle script counts
    /// a lease id once, so a retry after a lost reply does not count twice.
    async fn settle_retrying(
        &self,
        now: u64,
        parts: &[(&str, &[Charge], Option<u64>)],
        totals: Totals,
    ) -> Result<Vec<Vec<u64>>, StoreError> {
        let Store::Redis(r) = &self.store else {
            return Ok(Vec::new());
        };
        let deadline = tokio::time::Instant::now() + self.lease_ttl;
        let mut pause = Duration::from_millis(50);
        loop {
            let res = r.settle(now, parts, totals).await;
            // Without a lease id a retry could count twice: never retried.
            let last = parts.iter().any(|p| p.2.is_none())
                || tokio::time::Instant::now() + pause > deadline;
            match res {
                Err(e) if !last => self.store_failed("settle", &e),
                res => return res,
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Settle `remote` (reservations with their charges) in a spawned task, one script for
    /// them all (retried as [`Budgets::settle_retrying`] says), then their gauges and alerts.
    fn settle_remote(
        self: &Arc<Self>,
        remote: Vec<(Held, Vec<Charge>, Vec<u64>)>,
        facts: &Arc<CallFacts>,
        now: u64,
        totals: Totals,
    ) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (b, facts) = (self.clone(), facts.clone());
        b.in_flight_settles.fetch_add(1, Ordering::AcqRel);
        rt.spawn(async move {
            let parts: Vec<(&str, &[Charge], Option<u64>)> = remote
                .iter()
                .map(|(h, c, _)| (h.key.as_str(), &c[..], h.lease))
                .collect();
            let spent = (totals.input.saturating_add(totals.output), totals.cost);
            match b.settle_retrying(now, &parts, totals).await {
                Ok(used) => {
                    for ((held, _, opt), used) in remote.iter().zip(used) {
                        b.note_settled(held, &used, opt);
                        b.settled(held, Ok(used), &facts, now, spent);
                    }
                }
                Err(e) => b.store_failed("settle", &e),
            }
            if b.in_flight_settles.fetch_sub(1, Ordering::AcqRel) == 1 {
                b.settling.notify_waiters();
            }
        });
    }

    /// At shutdown, after every call finished: give slices back, wait up to `within` for
    /// settlements still on their way to a remote store, then write the final snapshot (memory
    /// store).
    pub async fn shutdown(self: &Arc<Self>, within: Duration) {
        // Slices go back (each a settlement, awaited below): their spend and unused budget.
        if let Some(sl) = &self.slices {
            for back in sl.close(true) {
                self.give_back(back);
            }
        }
        let pending = async {
            loop {
                let idle = self.settling.notified();
                if self.in_flight_settles.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        if tokio::time::timeout(within, pending).await.is_err() {
            tracing::warn!(
                left = self.in_flight_settles.load(Ordering::Relaxed),
                "shutdown: budget settlements still pending"
            );
        }
        if let Store::Memory(mem) = &self.store {
            self.snapshot(mem);
        }
    }

    fn snapshot(&self, mem: &memory::MemoryStore) {
        if let Err(e) = mem.snapshot() {
            counter!(m::BUDGET_STORE_ERRORS_TOTAL, "op" => "snapshot").increment(1);
            tracing::warn!(error = %e, "budget snapshot failed");
        }
    }

    /// After a settle: gauges, and warn / observe alerts on the counters' new totals.
    /// `spent` is what the call came to, in tokens and nano-USD.
    fn settled(
        &self,
        held: &Held,
        res: Result<Vec<u64>, StoreError>,
        facts: &CallFacts,
        now: u64,
        spent: (u64, u64),
    ) {
        match res {
            Ok(used) => {
                self.mark_store(true);
                for (&i, u) in held.limits.iter().zip(used) {
                    let l = &self.limits[i];
                    self.ratio(l, &facts.agent, u);
                    if let Some(r) = l.warn_at {
                        let at = r * l.amount as f64;
                        if u as f64 >= at {
                            self.alert(&held.key, facts, l, u, BudgetDecision::Warned, now);
                        }
                        let actual = match l.unit {
                            Unit::Tokens => spent.0,
                            Unit::Usd => spent.1,
                        };
                        // This call's spend took the counter over the threshold: the moment
                        // the warn alert is about, whether or not another call is admitted.
                        if (u.saturating_sub(actual) as f64) < at && u as f64 >= at {
                            counter!(m::BUDGET_WARN_CROSSED_TOTAL, "scope" => l.scope_str())
                                .increment(1);
                        }
                    }
                    if l.action == LimitAction::Observe && u > l.amount {
                        self.alert(&held.key, facts, l, u, BudgetDecision::Observed, now);
                    }
                }
            }
            Err(e) => self.store_failed("settle", &e),
        }
    }
}

// === impl Admission ===

impl Admission {
    /// Replace the reservations with what the call spent and record its cost. Usage is the
    /// provider's, or the accounting estimate for a successful response that stated none; a
    /// request that got no response at all is charged its estimated input; an error response
    /// or an unsent request costs nothing. Returns what was charged.
    pub fn settle(mut self, spent: Spent) -> Totals {
        self.settled = true;
        let b = self.budgets.clone();
        let u = &spent.usage;
        let input = u
            .input
            .unwrap_or(if spent.sent { self.est_input } else { 0 });
        let output = u.output.unwrap_or(spent.output_events);
        let usage = Usage {
            input: Some(input),
            output: Some(output),
            ..*u
        };
        let model = spent
            .model
            .as_deref()
            .or(self.facts.model.as_deref())
            .unwrap_or("");
        let parts = b
            .prices
            .cost_parts(model, &usage, &spent.other_models, spent.billing);
        let served = spent
            .model_label
            .clone()
            .unwrap_or_else(|| Arc::from("unknown"));
        let labels = std::iter::once(served).chain(spent.other_labels.iter().cloned());
        // Each part's model and tokens, to tell the parts no price covers (a sub-call on a
        // model without a price is priced as the serving model, so it is unpriced only when
        // that one is too).
        let own = spent
            .other_models
            .iter()
            .fold(usage, |u, o| u.minus(&o.usage));
        let served_unpriced = b.prices.unpriced(model);
        let unpriced = std::iter::once((served_unpriced, own)).chain(
            spent
                .other_models
                .iter()
                .map(|o| (served_unpriced && b.prices.unpriced(&o.model), o.usage)),
        );
        let mut cost = 0u64;
        for ((part, label), (unpriced, u)) in parts.into_iter().zip(labels).zip(unpriced) {
            cost = cost.saturating_add(part);
            let tokens = u.input.unwrap_or(0).saturating_add(u.output.unwrap_or(0));
            if unpriced && tokens > 0 {
                b.unpriced(&label, tokens);
            }
            if part > 0 {
                // The metrics facade's counters are integers: a float gauge that only ever grows
                // carries USD exactly enough and behaves as a counter for rate() and increase().
                let agent = &self.facts.agent;
                b.cost_gauges
                    .gauge(&(agent.clone(), label.clone()), || {
                        Key::from_parts(
                            m::COST_USD_TOTAL,
                            vec![
                                Label::new("agent", agent.clone()),
                                Label::new("model", label),
                            ],
                        )
                    })
                    .increment(part as f64 / limits::NANO_PER_USD);
            }
        }
        let totals = Totals {
            input,
            output,
            cost,
        };
        self.release(input.saturating_add(output), cost, totals);
        totals
    }

    fn release(&mut self, tokens: u64, cost: u64, totals: Totals) {
        let held = std::mem::take(self.held.get_mut().unwrap_or_else(PoisonError::into_inner));
        if held.is_empty() {
            return;
        }
        let facts = Arc::new(CallFacts {
            session: self.facts.session.clone(),
            task: self.facts.task.clone(),
            agent: self.facts.agent.clone(),
            model: None,
            input_bound: self.est_input,
            max_output: None,
            choices: 1,
        });
        let now = unix_now();
        let mut remote = Vec::new();
        let model = self.facts.model.as_deref().unwrap_or("");
        let max_out = self.facts.max_out(self.budgets.default_max_output);
        for held in held {
            let charges = self.budgets.charges(&held, tokens, cost);
            let b = self.budgets.clone();
            if let (Some(id), Some(sl)) = (held.slice, &b.slices) {
                // Drawn from a slice: settled here; the slice goes back when it is done.
                let granted: Vec<u64> = held.grants.iter().map(|g| g.granted).collect();
                let actual: Vec<u64> = charges.iter().map(|c| c.actual).collect();
                let (used, back) = sl.settle(&held.key, id, &granted, &actual, totals);
                if !used.is_empty() {
                    b.settled(&held, Ok(used), &facts, now, (tokens, cost));
                }
                if let Some(r) = back {
                    b.give_back(r);
                }
                continue;
            }
            match &b.store {
                // No I/O: settle in place, so the next call of the session sees it.
                Store::Memory(m) => {
                    let res = Ok(m.settle(&held.key, now, &charges, totals));
                    b.settled(&held, res, &facts, now, (tokens, cost));
                }
                Store::Redis(r) => {
                    if let Some(id) = held.lease {
                        b.leases.remove(&id);
                    }
                    // What a call like this one reserves optimistically, to tell from the
                    // settlement whether the next one should tokenize first.
                    let opt: Vec<u64> = b
                        .wants(&held.limits, model, self.facts.input_bound, max_out, true)
                        .into_iter()
                        .map(|w| w.want)
                        .collect();
                    remote.push((held, charges, opt));
                    // A cluster: each scope on its own shard, one script each.
                    if !r.one_node() {
                        b.settle_remote(std::mem::take(&mut remote), &facts, now, totals);
                    }
                }
            }
        }
        // One node: every scope of the call in one script.
        if !remote.is_empty() {
            self.budgets.settle_remote(remote, &facts, now, totals);
        }
    }

    /// What the call was admitted as (session, task, agent).
    pub fn facts(&self) -> &CallFacts {
        &self.facts
    }

    /// The service this admission belongs to.
    pub fn budgets(&self) -> &Arc<Budgets> {
        &self.budgets
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.settled {
            // Refused by a later scope, or dropped before the call went anywhere: give back.
            self.release(0, 0, Totals::default());
        }
    }
}

/// `tokenwarden_budget_decisions_total{scope,decision}` += 1, through handles registered once
/// (every admitted call counts one per limit: a registry lookup each time would show).
fn count_decision(scope: LimitScope, decision: BudgetDecision) {
    static HANDLES: OnceLock<[[metrics::Counter; 5]; 4]> = OnceLock::new();
    let handles = HANDLES.get_or_init(|| {
        SCOPES.map(|s| {
            BudgetDecision::ALL.map(|d| counter!(m::BUDGET_DECISIONS_TOTAL, "scope" => limits::scope_str(s), "decision" => d.as_str()))
        })
    });
    let si = SCOPES.iter().position(|s| *s == scope);
    let di = BudgetDecision::ALL.iter().position(|d| *d == decision);
    if let (Some(si), Some(di)) = (si, di) {
        handles[si][di].increment(1);
    }
}

/// `{scope}_{unit}_budget_exceeded`.
fn code(l: &Limit) -> &'static str {
    match (l.scope, l.unit) {
        (LimitScope::Session, Unit::Tokens) => "session_token_budget_exceeded",
        (LimitScope::Session, Unit::Usd) => "session_usd_budget_exceeded",
        (LimitScope::Task, Unit::Tokens) => "task_token_budget_exceeded",
        (LimitScope::Task, Unit::Usd) => "task_usd_budget_exceeded",
        (LimitScope::Agent, Unit::Tokens) => "agent_token_budget_exceeded",
        (LimitScope::Agent, Unit::Usd) => "agent_usd_budget_exceeded",
        (LimitScope::Global, Unit::Tokens) => "global_token_budget_exceeded",
        (LimitScope::Global, Unit::Usd) => "global_usd_budget_exceeded",
    }
}

fn unit_name(l: &Limit) -> &'static str {
    match l.unit {
        Unit::Tokens => "tokens",
        Unit::Usd => "usd",
    }
}

/// The more notable of two decisions.
fn stronger(a: BudgetDecision, b: BudgetDecision) -> BudgetDecision {
    let rank = |d: BudgetDecision| match d {
        BudgetDecision::Observed => 2,
        BudgetDecision::Warned => 1,
        _ => 0,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_bound_counts_each_media_key_once() {
        let body = b"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\"}},{\"inline_data\":{},\"inlineData\":{},\"input_audio\":{},\"file_data\":{},\"fileData\":{},\"image\":{},\"source\":{},\"file\":{}},\"\\\"file\\\" and \\\"image\\\"\"]}]}";
        let n = body.len() as u64;
        // Ten keys (image_url twice), the escaped quotes inside a string are no keys.
        let media = 10 * crate::tokens::MEDIA_PART_TOKENS;
        assert_eq!(
            input_bound(body),
            n + n / 8 + crate::tokens::REPLY_PRIMING_TOKENS + 1 + media
        );
    }

    #[test]
    fn the_documents_bound_counts_the_media_keys_among_its_strings() {
        let doc =
            |b: &[u8]| crate::providers::Doc::parse(bytes::Bytes::copy_from_slice(b)).unwrap();
        for key in MEDIA_KEYS {
            assert!(is_media_key(&key[1..key.len() - 1]));
        }
        // Where each key's spelling is a string of its own, the document's count is the
        // text's, escaped spellings included.
        let bodies: [&[u8]; 4] = [
            br#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"hi"}]}]}"#,
            br#"{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","data":"AAAA"}}]}],"functions":[{"name":"file","parameters":{"type":"object"}}]}"#,
            br#"{"contents":[{"parts":[{"inline_data":{"mime_type":"image/png"}},{"fileData":{}},{"\u0069nlineData":{}}]}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"no media, \"images\" only"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"id":{"type":"string"}}}}}]}"#,
        ];
        for b in bodies {
            assert_eq!(
                input_bound_of(b, media_keys_in(&doc(b))),
                input_bound(b),
                "{}",
                String::from_utf8_lossy(b)
            );
        }
        // Under declared tools, which the estimate counts as JSON text, nothing is counted:
        // not `"file"` as a tool's name, nor `"image"` as a parameter's.
        let b = br#"{"messages":[{"role":"user","content":[{"type":"image","source":{}}]}],"tools":[{"name":"file","input_schema":{"type":"object","properties":{"image":{"type":"string"}}}}],"tool_choice":{"type":"tool","name":"file"}}"#;
        assert_eq!((media_keys_in(&doc(b)), media_keys(b)), (3, 5));
        // A key's spelling inside another string is no key of the document: counted by the
        // text's search only (both stay bounds).
        let b = br#"{"a":"x\"image","image":{}}"#;
        assert_eq!((media_keys_in(&doc(b)), media_keys(b)), (1, 2));
        let n = b.len() as u64;
        assert_eq!(
            input_bound_of(b, media_keys_in(&doc(b))),
            n + n / 8 + crate::tokens::REPLY_PRIMING_TOKENS + 1 + crate::tokens::MEDIA_PART_TOKENS
        );
    }

    #[test]
    fn media_keys_spelled_with_escapes_count_as_the_keys_they_spell() {
        let body = br#"{"a":"\"\u0069mage\"","\u0069mage_url":{},"x\\":"i\u006dage","fil\u0065":1,"inline\u0044ata":[],"\u0069mages":0,"image":1}"#;
        // `\u0069mage_url`, `i\u006dage`, `fil\u0065`, `inline\u0044ata`, plus the plain `"image"`;
        // not `"\u0069mage"` inside a longer string, nor `\u0069mages`.
        assert_eq!(escaped_media_keys(body), 4);
        assert_eq!(media_keys(body), 5);
        assert_eq!(escaped_media_keys(br#"{"image_url":"caf\u00e9"}"#), 0);
        assert_eq!(escaped_media_keys(br#"{"unterminated \u0069mage"#), 0);
        let long = [&br#"{"t":"caf\u00e9 \"quoted\"","\u0066ile":1},"#[..]; 3000].concat();
        assert_eq!(media_keys(&long), 3000);
    }

    #[test]
    fn media_keys_counts_as_one_search_per_key_counts() {
        let long = [&b"{\"image\":{\"source\":\"file\"},\"text\":\"image_url\"}"[..]; 600].concat();
        let bodies: &[&[u8]] = &[
            b"{\"file\"file\"file\"}",
            b"\"image\"image_url\"\"image\"",
            b"{\"source\":\"sourced\",\"inline_data\":{\"inlineData\":1},\"fileData\"}",
            b"\"file\"\"file\"\"",
            b"",
            b"\"",
            b"no keys \"images\" \"files\" \"sources\"",
            &long,
        ];
        // One search per key, each counting without overlap: what the one pass must equal.
        let searched = |b: &[u8]| -> u64 {
            MEDIA_KEYS
                .iter()
                .map(|k| memchr::memmem::find_iter(b, k).count() as u64)
                .sum()
        };
        for b in bodies {
            assert_eq!(
                plain_media_keys(b),
                searched(b),
                "{}",
                String::from_utf8_lossy(b)
            );
        }
        assert_eq!(
            media_keys(&long),
            600 * 4,
            "image, source, file and image_url"
        );
    }

    #[test]
    fn the_input_bound_is_never_below_the_estimate() {
        let bodies: &[&str] = &[
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"What is in this image?"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"\u00e9\u00e9\u00e9 caf\u00e9 1e2"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"n":{"type":"number","default":1e2}}}}}]}"#,
            r#"{"model":"claude","max_tokens":10,"system":"s","messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}}]}]}"#,
            r#"{"contents":[{"parts":[{"text":"hi"},{"inlineData":{"mimeType":"image/png","data":"AAAA"}}]}]}"#,
            // Media keys spelled with escapes, beside escaped text and an escaped quote.
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","\u0069mage_url":{"url":"data:image/png;base64,AAAA"}},{"type":"text","text":"\"caf\u00e9\""}]}]}"#,
            r#"{"model":"claude","max_tokens":10,"messages":[{"role":"user","content":[{"type":"image","\u0073\u006f\u0075\u0072\u0063\u0065":{"type":"base64","data":"AAAA"}},{"type":"document","fil\u0065":{"file_id":"f"}}]}]}"#,
            r#"{"contents":[{"parts":[{"\u0069nline\u0044ata":{"mimeType":"image/png","data":"AAAA"}},{"file\u005fdata":{"file_uri":"gs://x"}}]}]}"#,
            // Media-named keys in declared tools (not counted by the document's bound) and in
            // legacy `functions` (counted by the bound; the estimate does not read them).
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"file","parameters":{"type":"object","properties":{"image":{"type":"object"},"source":{"type":"array"},"image_url":"u"}}}}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"functions":[{"name":"file","parameters":{"type":"object","properties":{"image":{"type":"object"},"file":{"type":"array"}}}}]}"#,
            r#"{"model":"claude","max_tokens":9,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"image","input_schema":{"type":"object","properties":{"source":{"type":"object"},"inlineData":{}}}}]}"#,
            r#"{"contents":[{"parts":[{"text":"x"},{"functionCall":{"name":"f","args":{"image":{"x":1}}}},{"functionResponse":{"name":"f","response":{"file":{}}}}]}],"tools":[{"functionDeclarations":[{"name":"f","parameters":{"type":"object","properties":{"fileData":{"type":"object"}}}}]}]}"#,
            "not json at all, just some words",
            "",
        ];
        for b in bodies {
            let doc = crate::providers::Doc::parse(bytes::Bytes::copy_from_slice(b.as_bytes()));
            for f in [Format::OpenAiChat, Format::Anthropic, Format::Gemini] {
                let (e, ub) = (estimate_input(f, b.as_bytes()), input_bound(b.as_bytes()));
                assert!(ub >= e, "{f:?} {b}: bound {ub} < estimate {e}");
                if let Ok(doc) = &doc {
                    let ub = input_bound_of(b.as_bytes(), media_keys_in(doc));
                    assert!(ub >= e, "{f:?} {b}: document's bound {ub} < estimate {e}");
                }
            }
        }
    }
}
