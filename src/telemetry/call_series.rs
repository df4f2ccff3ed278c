//! [`CallSeries`]: the series one call records when it ends, their handles resolved once per
//! label set.
//!
//! A call's end records up to fifteen series: requests, durations, tokens by type, the GenAI
//! histograms and counters, cost. Through the `metrics` macros each built a [`Key`] (a label
//! vector, a clone of each value, a hash) and looked it up in [`SeriesCap`]'s handle cache:
//! 13–17 k instructions a call, an eighth of a toy request's. Calls repeat a handful of label
//! sets (route, provider, operation, agent, requested and served model), so the handles of a set
//! are kept together: one lookup by the set per call, and each handle resolved the first time
//! the set records it.
//!
//! What is recorded does not change: the keys are the ones the macros built, in the same label
//! order. A handle [`SeriesCap`] folded into `other` is not kept, so each folded recording is
//! still counted. At most [`MAX_SETS`] sets are kept; past that (label values are capped, but
//! their combinations multiply) a call's series are resolved per recording, as before.
//!
//! [`SeriesCap`]: super::series::SeriesCap

use std::fmt;
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use http::StatusCode;
use metrics::{Counter, Histogram, Key, Label, Level, Metadata};
use opentelemetry::trace::{SpanId, TraceId};

use super::exemplars;
use super::metrics as m;
use crate::record::{CallLabels, Operation, UsageSource};

/// Label sets whose handles are kept: a sidecar's routes × agents × models in steady state,
/// with room; a bound so that client-chosen values cannot grow it.
pub const MAX_SETS: usize = 1024;

static META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// What the requested or served model label says when the request named none.
const UNKNOWN_MODEL: &str = "unknown";

/// The labels every series of a call draws on.
#[derive(Clone, PartialEq, Eq, Hash)]
struct CallSet {
    route: Arc<str>,
    provider: &'static str,
    operation: Operation,
    agent: Arc<str>,
    /// `None` for calls that are not LLM calls (they record no GenAI series).
    models: Option<(Arc<str>, Arc<str>)>,
}

/// The status class a call ended with (`status` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 1xx.
    Informational,
    /// 2xx.
    Success,
    /// 3xx.
    Redirect,
    /// 4xx.
    ClientError,
    /// 5xx.
    ServerError,
    /// No status sent, or the body broke off.
    Error,
}

impl Status {
    /// The class of `status`.
    pub fn of(status: StatusCode) -> Self {
        match status.as_u16() {
            100..=199 => Self::Informational,
            200..=299 => Self::Success,
            300..=399 => Self::Redirect,
            400..=499 => Self::ClientError,
            _ => Self::ServerError,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Informational => "1xx",
            Self::Success => "2xx",
            Self::Redirect => "3xx",
            Self::ClientError => "4xx",
            Self::ServerError => "5xx",
            Self::Error => "error",
        }
    }
}

/// A kind of token count: `type` of `tokenwarden_tokens_total`, and which GenAI usage counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens {
    /// Every input token.
    Input,
    /// Every output token.
    Output,
    /// Input tokens read from the provider's cache.
    CachedInput,
    /// Input tokens written to the provider's cache.
    CacheCreationInput,
    /// Output tokens spent on reasoning.
    Reasoning,
}

impl Tokens {
    const ALL: usize = 5;

    /// The `type` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
            Self::CachedInput => "cached_input",
            Self::CacheCreationInput => "cache_creation_input",
            Self::Reasoning => "reasoning",
        }
    }

    /// The GenAI conventions' usage counter of this kind.
    fn usage_metric(self) -> &'static str {
        match self {
            Self::Input => m::GEN_AI_USAGE_INPUT_TOKENS,
            Self::Output => m::GEN_AI_USAGE_OUTPUT_TOKENS,
            Self::CachedInput => m::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
            Self::CacheCreationInput => m::GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
            Self::Reasoning => m::GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
        }
    }
}

/// A counter a call adds to.
#[derive(Debug, Clone, Copy)]
pub enum Counted {
    /// `tokenwarden_requests_total`.
    Requests(Status),
    /// `tokenwarden_tokens_total` of the served model, by where the count came from.
    Tokens(Tokens, UsageSource),
    /// The GenAI usage counters (`gen_ai.client.inference.usage.*`).
    Usage(Tokens),
}

/// A histogram a call records in.
#[derive(Debug, Clone, Copy)]
pub enum Observed<'e> {
    /// `tokenwarden_request_duration_seconds`.
    RequestDuration(Status),
    /// `tokenwarden_overhead_seconds`.
    Overhead,
    /// `gen_ai.client.inference.operation.{input,output}_tokens` (output when `true`).
    OperationTokens(bool),
    /// The earlier `gen_ai.client.token.usage`, input or output (output when `true`).
    TokenUsage(bool),
    /// `gen_ai.client.inference.duration` (inference) or `gen_ai.client.operation.duration`,
    /// with the call's `error.type` when it failed.
    Duration {
        /// The inference name rather than the operation one.
        inference: bool,
        /// `error_type`, when the call failed.
        error: Option<&'e str>,
    },
    /// Time to first chunk: the newest name (`true`) or the earlier one.
    FirstChunk(bool),
    /// Time per output chunk after the first: the newest name (`true`) or the earlier one.
    PerChunk(bool),
    /// `tokenwarden_call_cost_usd`.
    Cost,
}

/// Where each series keeps its handle in [`Slots`].
mod slot {
    pub const REQUESTS: usize = 0;
    pub const REQUEST_DURATION: usize = REQUESTS + 6;
    pub const OVERHEAD: usize = REQUEST_DURATION + 6;
    pub const TOKENS: usize = OVERHEAD + 1;
    pub const USAGE: usize = TOKENS + 4 * super::Tokens::ALL;
    pub const OPERATION_TOKENS: usize = USAGE + super::Tokens::ALL;
    pub const TOKEN_USAGE: usize = OPERATION_TOKENS + 2;
    pub const DURATION: usize = TOKEN_USAGE + 2;
    pub const FIRST_CHUNK: usize = DURATION + 2;
    pub const PER_CHUNK: usize = FIRST_CHUNK + 2;
    pub const COST: usize = PER_CHUNK + 2;
    pub const COUNT: usize = COST + 1;
}

/// A resolved handle, and for histograms where their exemplars are kept (so a recording locks
/// that series only, with no lookup by key), found by the first traced recording: untraced
/// calls keep nothing in the exemplar store.
enum Handle {
    Counter(Counter),
    Histogram(Histogram, OnceLock<Option<Arc<exemplars::Series>>>),
}

/// The handles of one label set, each resolved on first use.
struct Slots([OnceLock<Handle>; slot::COUNT]);

type Sets = DashMap<CallSet, Arc<Slots>, foldhash::fast::RandomState>;

fn sets() -> &'static Sets {
    static SETS: OnceLock<Sets> = OnceLock::new();
    SETS.get_or_init(|| DashMap::with_hasher(foldhash::fast::RandomState::default()))
}

/// The series one call records, by its labels.
pub struct CallSeries {
    set: CallSet,
    /// The set's kept handles; `None` when the recorder is not ours or [`MAX_SETS`] are kept.
    slots: Option<Arc<Slots>>,
}

impl fmt::Debug for CallSeries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallSeries")
            .field("route", &self.set.route)
            .field("agent", &self.set.agent)
            .field("kept", &self.slots.is_some())
            .finish()
    }
}

// === impl CallSeries ===

impl CallSeries {
    /// The series of a call labelled `base`; `models` (requested, served) for an LLM call.
    pub fn new(base: &CallLabels, models: Option<(&Arc<str>, &Arc<str>)>) -> Self {
        let set = CallSet {
            route: base.route.clone(),
            provider: base.provider,
            operation: base.operation,
            agent: base.agent.clone(),
            models: models.map(|(req, resp)| (req.clone(), resp.clone())),
        };
        let slots = m::recorder().and_then(|_| kept(sets(), &set, MAX_SETS));
        Self { set, slots }
    }

    /// Add `n` to counter `what`.
    pub fn increment(&self, what: Counted, n: u64) {
        let index = match what {
            Counted::Requests(status) => Some(slot::REQUESTS + status as usize),
            Counted::Tokens(kind, source) => {
                Some(slot::TOKENS + source_index(source) * Tokens::ALL + kind as usize)
            }
            Counted::Usage(kind) => Some(slot::USAGE + kind as usize),
        };
        let cell = self.cell(index);
        if let Some(Handle::Counter(c)) = cell.and_then(OnceLock::get) {
            return c.increment(n);
        }
        let key = self.counter_key(what);
        match (cell, m::recorder()) {
            (Some(cell), Some(recorder)) => {
                let (c, admitted) = recorder.counter(&key, &META);
                c.increment(n);
                if admitted {
                    // A racing first use keeps the other's handle: both are the same series.
                    let _ = cell.set(Handle::Counter(c));
                }
            }
            _ => metrics::with_recorder(|r| r.register_counter(&key, &META)).increment(n),
        }
    }

    /// Record `value` in histogram `what`, keeping `trace` as its bucket's exemplar.
    pub fn record(&self, what: Observed<'_>, value: f64, trace: Option<(TraceId, SpanId)>) {
        let index = match what {
            Observed::RequestDuration(status) => Some(slot::REQUEST_DURATION + status as usize),
            Observed::Overhead => Some(slot::OVERHEAD),
            Observed::OperationTokens(output) => Some(slot::OPERATION_TOKENS + output as usize),
            Observed::TokenUsage(output) => Some(slot::TOKEN_USAGE + output as usize),
            // A failed call's `error_type` comes from traffic: its series are not kept.
            Observed::Duration {
                inference,
                error: None,
            } => Some(slot::DURATION + inference as usize),
            Observed::Duration { .. } => None,
            Observed::FirstChunk(latest) => Some(slot::FIRST_CHUNK + latest as usize),
            Observed::PerChunk(latest) => Some(slot::PER_CHUNK + latest as usize),
            Observed::Cost => Some(slot::COST),
        };
        let cell = self.cell(index);
        if let Some(Handle::Histogram(h, kept)) = cell.and_then(OnceLock::get) {
            if let Some(ids) = trace {
                let series = kept.get_or_init(|| exemplars::series(&self.histogram_key(what)));
                if let Some(series) = series {
                    series.record(value, ids);
                }
            }
            return h.record(value);
        }
        let key = self.histogram_key(what);
        let kept = OnceLock::new();
        if let Some(ids) = trace {
            if let Some(series) = kept.get_or_init(|| exemplars::series(&key)) {
                series.record(value, ids);
            }
        }
        match (cell, m::recorder()) {
            (Some(cell), Some(recorder)) => {
                let (h, admitted) = recorder.histogram(&key, &META);
                h.record(value);
                if admitted {
                    let _ = cell.set(Handle::Histogram(h, kept));
                }
            }
            _ => metrics::with_recorder(|r| r.register_histogram(&key, &META)).record(value),
        }
    }

    /// Where the handle at `index` is kept, if this call's set is kept and the series has a
    /// place.
    fn cell(&self, index: Option<usize>) -> Option<&OnceLock<Handle>> {
        self.slots.as_ref()?.0.get(index?)
    }

    fn counter_key(&self, what: Counted) -> Key {
        let s = &self.set;
        match what {
            Counted::Requests(status) => Key::from_parts(
                m::REQUESTS_TOTAL,
                vec![
                    Label::new("route", s.route.clone()),
                    Label::new("provider", s.provider),
                    Label::new("operation", s.operation.as_str()),
                    Label::new("agent", s.agent.clone()),
                    Label::new("status", status.as_str()),
                ],
            ),
            Counted::Tokens(kind, source) => Key::from_parts(
                m::TOKENS_TOTAL,
                vec![
                    Label::new("agent", s.agent.clone()),
                    Label::new("model", self.response_model()),
                    Label::new("type", kind.as_str()),
                    Label::new("source", source.as_str()),
                ],
            ),
            Counted::Usage(kind) => {
                let mut labels = self.gen_ai();
                // The conventions' usage counters require `gen_ai.token.modality`; providers
                // report no modality breakdown the proxy reads, which the conventions spell
                // `unknown`.
                labels.push(Label::new("gen_ai_token_modality", "unknown"));
                Key::from_parts(kind.usage_metric(), labels)
            }
        }
    }

    fn histogram_key(&self, what: Observed<'_>) -> Key {
        let route = || vec![Label::new("route", self.set.route.clone())];
        match what {
            Observed::RequestDuration(status) => {
                let mut labels = route();
                labels.push(Label::new("status", status.as_str()));
                Key::from_parts(m::REQUEST_DURATION_SECONDS, labels)
            }
            Observed::Overhead => Key::from_parts(m::OVERHEAD_SECONDS, route()),
            Observed::OperationTokens(output) => {
                let name = if output {
                    m::GEN_AI_OPERATION_OUTPUT_TOKENS
                } else {
                    m::GEN_AI_OPERATION_INPUT_TOKENS
                };
                Key::from_parts(name, self.gen_ai())
            }
            Observed::TokenUsage(output) => {
                let mut labels = self.gen_ai();
                let kind = if output { "output" } else { "input" };
                labels.push(Label::new("gen_ai_token_type", kind));
                Key::from_parts(m::GEN_AI_TOKEN_USAGE, labels)
            }
            Observed::Duration { inference, error } => {
                let mut labels = self.gen_ai();
                if let Some(err) = error {
                    labels.push(Label::new("error_type", err.to_string()));
                }
                let name = if inference {
                    m::GEN_AI_INFERENCE_DURATION
                } else {
                    m::GEN_AI_OPERATION_DURATION
                };
                Key::from_parts(name, labels)
            }
            Observed::FirstChunk(latest) => {
                let name = if latest {
                    m::GEN_AI_INFERENCE_TIME_TO_FIRST_CHUNK
                } else {
                    m::GEN_AI_TIME_TO_FIRST_CHUNK
                };
                Key::from_parts(name, self.gen_ai())
            }
            Observed::PerChunk(latest) => {
                let name = if latest {
                    m::GEN_AI_INFERENCE_TIME_PER_OUTPUT_CHUNK
                } else {
                    m::GEN_AI_TIME_PER_OUTPUT_CHUNK
                };
                Key::from_parts(name, self.gen_ai())
            }
            Observed::Cost => Key::from_parts(
                m::CALL_COST_USD,
                vec![
                    Label::new("agent", self.set.agent.clone()),
                    Label::new("model", self.response_model()),
                ],
            ),
        }
    }

    /// The labels every GenAI series of the call carries.
    fn gen_ai(&self) -> Vec<Label> {
        let s = &self.set;
        let (request, response) = match &s.models {
            Some((req, resp)) => (req.clone(), resp.clone()),
            None => (Arc::from(UNKNOWN_MODEL), Arc::from(UNKNOWN_MODEL)),
        };
        vec![
            Label::new("gen_ai_operation_name", s.operation.as_str()),
            Label::new("gen_ai_provider_name", s.provider),
            Label::new("gen_ai_request_model", request),
            Label::new("gen_ai_response_model", response),
            Label::new("agent", s.agent.clone()),
        ]
    }

    fn response_model(&self) -> Arc<str> {
        match &self.set.models {
            Some((_, resp)) => resp.clone(),
            None => Arc::from(UNKNOWN_MODEL),
        }
    }
}

/// The kept handles of `set` in `sets`, made for it if fewer than `max` sets are kept.
fn kept(sets: &Sets, set: &CallSet, max: usize) -> Option<Arc<Slots>> {
    if let Some(s) = sets.get(set) {
        return Some(s.clone());
    }
    // Racing first calls of new sets may pass the bound by the number of racing threads.
    if sets.len() >= max {
        return None;
    }
    let slots = Arc::new(Slots(std::array::from_fn(|_| OnceLock::new())));
    Some(sets.entry(set.clone()).or_insert(slots).clone())
}

fn source_index(source: UsageSource) -> usize {
    match source {
        UsageSource::Provider => 0,
        UsageSource::Injected => 1,
        UsageSource::Estimated => 2,
        UsageSource::None => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(route: &str) -> CallLabels {
        CallLabels {
            route: Arc::from(route),
            provider: "openai",
            operation: Operation::Chat,
            agent: Arc::from("cs-agent"),
        }
    }

    /// The lines of the exposition `text` that contain `needle`.
    fn lines<'t>(text: &'t str, needle: &str) -> Vec<&'t str> {
        text.lines().filter(|l| l.contains(needle)).collect()
    }

    #[test]
    fn a_kept_set_records_the_series_the_macros_named() {
        let handle = m::install();
        let base = labels("cs-route");
        let (req, resp) = (Arc::from("cs-model"), Arc::from("cs-model-2024"));
        for _ in 0..2 {
            let s = CallSeries::new(&base, Some((&req, &resp)));
            assert!(s.slots.is_some(), "the set is kept");
            s.increment(Counted::Requests(Status::Success), 1);
            s.increment(Counted::Tokens(Tokens::Input, UsageSource::Provider), 12);
            s.increment(Counted::Usage(Tokens::Output), 20);
            s.record(Observed::RequestDuration(Status::Success), 0.5, None);
            s.record(Observed::Overhead, 0.000_02, None);
            s.record(Observed::OperationTokens(false), 12.0, None);
            let error = Some("rate_limit");
            s.record(
                Observed::Duration {
                    inference: true,
                    error,
                },
                0.5,
                None,
            );
            s.record(
                Observed::Duration {
                    inference: true,
                    error: None,
                },
                0.5,
                None,
            );
            s.record(Observed::Cost, 0.001, None);
        }
        let text = handle.render();
        let route = lines(&text, "route=\"cs-route\"");
        for want in [
            "tokenwarden_requests_total{route=\"cs-route\",provider=\"openai\",operation=\"chat\",agent=\"cs-agent\",status=\"2xx\"} 2",
            "tokenwarden_request_duration_seconds_count{route=\"cs-route\",status=\"2xx\"} 2",
            "tokenwarden_overhead_seconds_count{route=\"cs-route\"} 2",
        ] {
            assert!(route.contains(&want), "{want} in {route:#?}");
        }
        let gen_ai = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"cs-model\",gen_ai_response_model=\"cs-model-2024\",agent=\"cs-agent\"";
        let model = lines(&text, "cs-model");
        for want in [
            "tokenwarden_tokens_total{agent=\"cs-agent\",model=\"cs-model-2024\",type=\"input\",source=\"provider\"} 24".to_string(),
            format!("gen_ai_client_inference_usage_output_tokens_total{{{gen_ai},gen_ai_token_modality=\"unknown\"}} 40"),
            format!("gen_ai_client_inference_operation_input_tokens_count{{{gen_ai}}} 2"),
            format!("gen_ai_client_inference_duration_seconds_count{{{gen_ai}}} 2"),
            format!("gen_ai_client_inference_duration_seconds_count{{{gen_ai},error_type=\"rate_limit\"}} 2"),
            "tokenwarden_call_cost_usd_count{agent=\"cs-agent\",model=\"cs-model-2024\"} 2".to_string(),
        ] {
            assert!(model.contains(&want.as_str()), "{want} in {model:#?}");
        }
    }

    #[test]
    fn a_kept_histogram_keeps_each_calls_exemplar_in_its_bucket() {
        let handle = m::install();
        let base = labels("cs-exemplar-route");
        let (req, resp) = (Arc::from("cs-ex-model"), Arc::from("cs-ex-model"));
        let trace = |t: u128, s: u64| Some((TraceId::from(t), SpanId::from(s)));
        let duration = Observed::Duration {
            inference: true,
            error: None,
        };
        // The first call resolves and keeps the handle, the later ones record through it.
        for (t, s, secs) in [(0xa1, 0xb1, 0.5), (0xa2, 0xb2, 0.5), (0xa3, 0xb3, 30.0)] {
            let series = CallSeries::new(&base, Some((&req, &resp)));
            assert!(series.slots.is_some(), "the set is kept");
            series.record(duration, secs, trace(t, s));
            series.record(duration, secs, None);
        }
        let text = exemplars::openmetrics(&handle.render());
        let buckets: Vec<&str> = lines(&text, "cs-ex-model")
            .into_iter()
            .filter(|l| {
                l.starts_with("gen_ai_client_inference_duration_seconds_bucket")
                    && l.contains(" # {")
            })
            .collect();
        let (small, large) = (format!("{:032x}", 0xa2), format!("{:032x}", 0xa3));
        assert!(
            buckets
                .iter()
                .any(|l| l.contains("le=\"0.64\"") && l.contains(&small)),
            "the later call's exemplar in 0.5 s's bucket: {buckets:#?}"
        );
        assert!(
            buckets.iter().any(|l| l.contains(&large)) && !text.contains(&format!("{:032x}", 0xa1)),
            "the newest exemplar of each bucket only: {buckets:#?}"
        );
    }

    #[test]
    fn untraced_calls_keep_no_exemplars_and_a_later_traced_one_does() {
        let _handle = m::install();
        let base = labels("cs-untraced-route");
        let model: Arc<str> = Arc::from("cs-untraced-model");
        let duration = Observed::Duration {
            inference: true,
            error: None,
        };
        let series = CallSeries::new(&base, Some((&model, &model)));
        let key = series.histogram_key(duration);
        for _ in 0..3 {
            CallSeries::new(&base, Some((&model, &model))).record(duration, 0.5, None);
        }
        assert!(
            !exemplars::holds(&key),
            "untraced calls keep nothing for exemplars"
        );
        let ids = (TraceId::from(0xc1_u128), SpanId::from(0xd1_u64));
        series.record(duration, 0.5, Some(ids));
        assert!(
            exemplars::holds(&key),
            "the first traced call keeps its exemplar"
        );
    }

    #[test]
    fn calls_of_one_set_share_its_handles_and_sets_past_the_bound_are_not_kept() {
        let sets = Sets::default();
        let set = |route: &str| CallSet {
            route: Arc::from(route),
            provider: "openai",
            operation: Operation::Chat,
            agent: Arc::from("a"),
            models: None,
        };
        let a = kept(&sets, &set("a"), 2).expect("room");
        let again = kept(&sets, &set("a"), 2).expect("kept");
        assert!(Arc::ptr_eq(&a, &again), "one set, one place");
        assert!(kept(&sets, &set("b"), 2).is_some());
        assert!(kept(&sets, &set("c"), 2).is_none(), "past the bound");
        assert!(kept(&sets, &set("a"), 2).is_some(), "kept sets stay");
        assert_eq!(sets.len(), 2);
    }

    #[test]
    fn status_classes_name_their_label_values() {
        let cases = [
            (101, "1xx"),
            (200, "2xx"),
            (304, "3xx"),
            (429, "4xx"),
            (503, "5xx"),
        ];
        for (code, class) in cases {
            let status = StatusCode::from_u16(code).expect("valid");
            assert_eq!(Status::of(status).as_str(), class);
        }
        assert_eq!(Status::Error.as_str(), "error");
    }
}
