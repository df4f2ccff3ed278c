//! Cost of a call from the configured price table (USD per million tokens), in nano-USD.
//!
//! Each kind of token is billed at its own price: uncached input at `input`, cache reads at
//! `cached_input`, five-minute cache writes at `cache_creation_input`, one-hour cache writes at
//! `cache_creation_input_1h` (default 2 × `input`), output (reasoning included) at `output`.
//! A sub-call that ran on another model (an Anthropic advisor) is priced as that model.
//! Web and file searches the provider ran are billed per call (`web_search`, `file_search`: USD
//! per 1,000 calls) on top of the serving model's tokens, never at the batch rate.

use std::collections::BTreeMap;

use crate::config::Price;
use crate::providers::{AudioTokens, ModelUsage, ServerToolUse, Usage};

/// One-hour cache writes cost this many times the input price when no price is configured
/// (Anthropic's published multiplier; five-minute writes are 1.25×).
const ONE_HOUR_WRITE_FACTOR: f64 = 2.0;

/// The factor of batch-billed usage when a price sets none: the 50 % discount of OpenAI's Batch
/// API and Anthropic's Message Batches alike.
const DEFAULT_BATCH_FACTOR: f64 = 0.5;

/// Whether `suffix` names a snapshot of a model rather than another model or version: a date
/// (`20250929`, `2024-08-06`), a month and day (`0613`, `06-05`), a month and year (`08-2024`),
/// or a three-digit revision (`001`).
/// A one- or two-digit suffix is a version (`claude-opus-4-5` is not `claude-opus-4`).
fn is_snapshot(suffix: &str) -> bool {
    let b = suffix.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    match b.len() {
        3 | 4 | 8 => digits(b),
        // A preview's month and day (`gemini-2.5-pro-preview-06-05`).
        5 => digits(&b[..2]) && b[2] == b'-' && digits(&b[3..]),
        // A month and year (`command-r-08-2024`).
        7 => digits(&b[..2]) && b[2] == b'-' && digits(&b[3..]),
        10 => {
            digits(&b[..4]) && b[4] == b'-' && digits(&b[5..7]) && b[7] == b'-' && digits(&b[8..])
        }
        _ => false,
    }
}

/// How a call's usage was billed, beyond its token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Billing {
    /// At the Batch API's rate (each price's `batch` factor).
    pub batch: bool,
    /// The audio part of the serving model's usage (priced at the audio prices).
    pub audio: Option<AudioTokens>,
    /// Provider-run tool calls billed per call (priced at the serving model's `web_search` and
    /// `file_search`).
    pub server_tools: ServerToolUse,
    /// The largest one request's input when the usage sums several (iterations, a batch
    /// file): the long-context threshold is tested against it rather than the sum.
    pub longest_input: Option<u64>,
}

/// The price table, looked up by model name.
#[derive(Debug, Clone, Default)]
pub struct Prices {
    table: BTreeMap<String, Price>,
    /// The entry with the highest input plus output rates: what a call naming a model the
    /// table does not price is reserved at ([`Prices::estimate`]).
    dearest: Option<String>,
}

// === impl Prices ===

impl Prices {
    /// Prices from `pricing:`.
    pub fn new(table: &BTreeMap<String, Price>) -> Self {
        let dearest = table
            .iter()
            .max_by(|a, b| (a.1.input + a.1.output).total_cmp(&(b.1.input + b.1.output)))
            .map(|(k, _)| k.clone());
        Self {
            table: table.clone(),
            dearest,
        }
    }

    /// The price of `model` (or, when it has none, of the name after its vendor prefix `…/`):
    /// an exact entry, else an entry the model extends with only a snapshot suffix (`gpt-4o-2024-08-06` → `gpt-4o`, `claude-sonnet-4-5-20250929` →
    /// `claude-sonnet-4-5`, `gemini-2.0-flash-001` → `gemini-2.0-flash`), but never another
    /// model (`gpt-4o-mini` → `gpt-4o`) or version (`claude-opus-4-5` → `claude-opus-4`).
    /// A cloud platform's id of a model takes the model's own entry the same way when it has
    /// none: Bedrock's `[geo.]vendor.name[-vN][:M]` (`us.anthropic.claude-sonnet-4-5-20250929-v1:0`,
    /// or an ARN ending in one) and Vertex's `name@snapshot` (`claude-sonnet-4-5@20250929`).
    pub fn get(&self, model: &str) -> Option<&Price> {
        self.lookup(model).or_else(|| {
            // A router's or platform's vendor prefix (OpenRouter `openai/gpt-4o`, Vertex's
            // OpenAI-compatible `google/gemini-2.0-flash-001`, LiteLLM `anthropic/…`, a Bedrock
            // ARN's `…/inference-profile/…`): the model's own entry, when the full name has none.
            let bare = model.rsplit_once('/').map_or(model, |(_, b)| b);
            if bare.len() < model.len() {
                if let Some(p) = self.lookup(bare) {
                    return Some(p);
                }
            }
            self.lookup(&crate::providers::platform_model(bare)?)
        })
    }

    /// An exact entry, else one `model` extends with a snapshot suffix.
    fn lookup(&self, model: &str) -> Option<&Price> {
        if let Some(p) = self.table.get(model) {
            return Some(p);
        }
        self.table
            .iter()
            .filter(|(k, _)| {
                model
                    .strip_prefix(k.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(is_snapshot)
            })
            .max_by_key(|(k, _)| k.len())
            .map(|(_, p)| p)
    }

    /// Whether `model` has no price (nor a dated fallback) while the table prices others: its
    /// usage costs 0 where the operator expects a cost. An empty table prices nothing on
    /// purpose (token limits only), so nothing is unpriced then.
    pub fn unpriced(&self, model: &str) -> bool {
        !self.table.is_empty() && self.get(model).is_none()
    }

    /// Nano-USD for `usage` on `model`; 0 when the model has no price. Cached and cache-written
    /// input use their own prices when given, else the input price (one-hour writes: 2 × input).
    pub fn cost(&self, model: &str, usage: &Usage) -> u64 {
        self.get(model)
            .map_or(0, |p| price_of(&at_length(p, usage.input), usage, None))
    }

    /// Nano-USD per model for a call `model` served whose `usage` includes sub-calls on other
    /// models (`others`, parts of `usage`): the serving model's part first, then one entry per
    /// other model, each priced as its own model (as the serving model when it has no price).
    /// `billing` says how the usage was billed (batch rate, audio) and which per-call tool fees
    /// the serving model's part adds (unscaled by the batch factor: no provider documents a
    /// discount of them).
    pub fn cost_parts(
        &self,
        model: &str,
        usage: &Usage,
        others: &[ModelUsage],
        billing: Billing,
    ) -> Vec<u64> {
        let own = others.iter().fold(*usage, |u, o| u.minus(&o.usage));
        // The serving model's rates by the call's whole input (its length decides them).
        let served = self
            .get(model)
            .map(|p| at_length(p, billing.longest_input.or(own.input)));
        let priced = |p: &Price, u: &Usage, audio: Option<&AudioTokens>| {
            let full = price_of(p, u, audio);
            if billing.batch {
                (full as f64 * p.batch.unwrap_or(DEFAULT_BATCH_FACTOR)).round() as u64
            } else {
                full
            }
        };
        std::iter::once(served.map_or(0, |p| {
            priced(&p, &own, billing.audio.as_ref())
                .saturating_add(tool_fees(&p, &billing.server_tools))
        }))
        .chain(others.iter().map(|o| {
            self.get(&o.model)
                .map(|p| at_length(p, o.usage.input))
                .or(served)
                .map_or(0, |p| priced(&p, &o.usage, None))
        }))
        .collect()
    }

    /// Nano-USD `input` and `output` tokens cost on `model` at its plain rates (uncached text):
    /// what a call's input is expected to cost (the refusal threshold) and what an output token
    /// costs (a `cut` limit's allowance).
    pub fn estimate_plain(&self, model: &str, input: u64, output: u64) -> u64 {
        let usage = Usage {
            input: Some(input),
            output: Some(output),
            ..Usage::default()
        };
        self.admitting(model)
            .map_or(0, |p| price_of(&at_length(p, usage.input), &usage, None))
    }

    /// The price a call naming `model` is admitted at: its own, else (a name the table does not
    /// price — an Azure deployment, an alias, a router's `auto` — while it prices others) the
    /// dearest entry's, since the model that serves it may be any of them. Settling prices the
    /// model that served the call.
    fn admitting(&self, model: &str) -> Option<&Price> {
        self.get(model)
            .or_else(|| self.table.get(self.dearest.as_deref()?))
    }

    /// Nano-USD that `input` and `output` tokens may cost on `model` at most: each kind priced at
    /// the highest rate the model's price bills it at (input written to the cache or heard as
    /// audio costs more than plain input), so that a reservation covers the call however its
    /// input turns out to be billed. The one-hour cache write's default (2 × input) counts for a
    /// price that sets a cache write price: a model with cache writes.
    pub fn estimate(&self, model: &str, input: u64, output: u64) -> u64 {
        let Some(p) = self.admitting(model) else {
            return 0;
        };
        let p = &at_length(p, Some(input));
        let one_hour = p.cache_creation_input_1h.or(p
            .cache_creation_input
            .map(|_| p.input * ONE_HOUR_WRITE_FACTOR));
        let input_rate = [p.cache_creation_input, one_hour, p.audio_input]
            .into_iter()
            .flatten()
            .fold(p.input, f64::max);
        let output_rate = p.audio_output.map_or(p.output, |a| a.max(p.output));
        let per_million = input as f64 * input_rate + output as f64 * output_rate;
        (per_million * 1e3).round() as u64
    }
}

/// The prices a call with `input` tokens of input pays: the long-context ones past their
/// threshold, else `p` itself.
fn at_length(p: &Price, input: Option<u64>) -> Price {
    match p.long_context {
        Some(l) if input.unwrap_or(0) > l.above => Price {
            input: l.input,
            output: l.output,
            cached_input: l.cached_input,
            cache_creation_input: l.cache_creation_input,
            cache_creation_input_1h: l.cache_creation_input_1h,
            ..*p
        },
        _ => *p,
    }
}

/// Nano-USD the per-call fees of `tools` cost at price `p` (USD per 1,000 calls); a fee without
/// a price costs 0.
fn tool_fees(p: &Price, tools: &ServerToolUse) -> u64 {
    let usd_per_thousand = tools.web_search as f64 * p.web_search.unwrap_or(0.0)
        + tools.file_search as f64 * p.file_search.unwrap_or(0.0);
    // USD per 1,000 calls → nano-USD per call is × 1,000,000.
    (usd_per_thousand * 1e6).round() as u64
}

/// Nano-USD for `usage` at price `p`; `audio`, the part of it that was audio, at the audio
/// prices.
fn price_of(p: &Price, usage: &Usage, audio: Option<&AudioTokens>) -> u64 {
    let input = usage.input.unwrap_or(0);
    let cached = usage.cached_input.unwrap_or(0).min(input);
    let created = usage.cache_creation_input.unwrap_or(0).min(input - cached);
    let created_1h = usage.cache_creation_1h.unwrap_or(0).min(created);
    let plain = input - cached - created;
    let output = usage.output.unwrap_or(0);
    let a = audio.copied().unwrap_or_default();
    let audio_cached = a.cached_input.min(cached);
    let audio_plain = a.input.saturating_sub(a.cached_input).min(plain);
    let audio_out = a.output.min(output);
    let cached_price = p.cached_input.unwrap_or(p.input);
    let per_million = (plain - audio_plain) as f64 * p.input
        + audio_plain as f64 * p.audio_input.unwrap_or(p.input)
        + (cached - audio_cached) as f64 * cached_price
        + audio_cached as f64 * p.cached_audio_input.unwrap_or(cached_price)
        + (created - created_1h) as f64 * p.cache_creation_input.unwrap_or(p.input)
        + created_1h as f64
            * p.cache_creation_input_1h
                .unwrap_or(p.input * ONE_HOUR_WRITE_FACTOR)
        + (output - audio_out) as f64 * p.output
        + audio_out as f64 * p.audio_output.unwrap_or(p.output);
    // USD per million tokens → nano-USD per token is × 1000.
    (per_million * 1e3).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prices() -> Prices {
        let mut t = BTreeMap::new();
        t.insert(
            "gpt-4o".to_string(),
            Price {
                input: 2.5,
                output: 10.0,
                cached_input: Some(1.25),
                cache_creation_input: None,
                cache_creation_input_1h: None,
                batch: None,
                audio_input: None,
                cached_audio_input: None,
                audio_output: None,
                long_context: None,
                web_search: None,
                file_search: None,
            },
        );
        t.insert(
            "claude-sonnet-4-5".to_string(),
            Price {
                input: 3.0,
                output: 15.0,
                cached_input: Some(0.3),
                cache_creation_input: Some(3.75),
                cache_creation_input_1h: None,
                batch: Some(0.4),
                audio_input: None,
                cached_audio_input: None,
                audio_output: None,
                long_context: None,
                web_search: None,
                file_search: None,
            },
        );
        t.insert(
            "claude-opus-4-7".to_string(),
            Price {
                input: 5.0,
                output: 25.0,
                cached_input: Some(0.5),
                cache_creation_input: Some(6.25),
                cache_creation_input_1h: Some(10.0),
                batch: None,
                audio_input: None,
                cached_audio_input: None,
                audio_output: None,
                long_context: None,
                web_search: None,
                file_search: None,
            },
        );
        Prices::new(&t)
    }

    #[test]
    fn cached_and_cache_written_input_use_their_prices() {
        let p = prices();
        let u = Usage {
            input: Some(1_000_000),
            output: Some(1_000_000),
            cached_input: Some(400_000),
            cache_creation_input: Some(100_000),
            ..Usage::default()
        };
        // 500k × 3 + 400k × 0.3 + 100k × 3.75 + 1M × 15 = 1.5 + 0.12 + 0.375 + 15 USD
        assert_eq!(p.cost("claude-sonnet-4-5", &u), 16_995_000_000);
        let u = Usage {
            input: Some(1000),
            output: Some(0),
            cached_input: Some(1000),
            ..Usage::default()
        };
        assert_eq!(p.cost("gpt-4o", &u), 1_250_000);
    }

    #[test]
    fn batch_usage_is_priced_with_the_batch_factor() {
        let p = prices();
        let u = Usage {
            input: Some(1_000_000),
            output: Some(1_000_000),
            ..Usage::default()
        };
        let batch = Billing {
            batch: true,
            ..Billing::default()
        };
        // gpt-4o: (2.5 + 10) USD at the default half price.
        assert_eq!(p.cost_parts("gpt-4o", &u, &[], batch), [6_250_000_000]);
        assert_eq!(
            p.cost_parts("gpt-4o", &u, &[], Billing::default()),
            [12_500_000_000]
        );
        // claude-sonnet-4-5 sets `batch: 0.4`: (3 + 15) × 0.4 USD.
        assert_eq!(
            p.cost_parts("claude-sonnet-4-5", &u, &[], batch),
            [7_200_000_000]
        );
    }

    #[test]
    fn audio_tokens_use_the_audio_prices() {
        let mut t = BTreeMap::new();
        t.insert(
            "gpt-realtime".to_string(),
            Price {
                input: 4.0,
                output: 16.0,
                cached_input: Some(0.4),
                cache_creation_input: None,
                cache_creation_input_1h: None,
                batch: None,
                audio_input: Some(32.0),
                cached_audio_input: None,
                audio_output: Some(64.0),
                long_context: None,
                web_search: None,
                file_search: None,
            },
        );
        let p = Prices::new(&t);
        let u = Usage {
            input: Some(1000),
            output: Some(400),
            cached_input: Some(500),
            ..Usage::default()
        };
        let audio = Billing {
            batch: false,
            audio: Some(AudioTokens {
                input: 300,
                cached_input: 100,
                output: 300,
            }),
            server_tools: ServerToolUse::default(),
            longest_input: None,
        };
        // Plain 500: 200 audio × 32 + 300 text × 4; cached 500 (100 audio, at the cached input
        // price: none set apart) × 0.4; output 300 audio × 64 + 100 text × 16.
        let usd = 200.0 * 32.0 + 300.0 * 4.0 + 500.0 * 0.4 + 300.0 * 64.0 + 100.0 * 16.0;
        assert_eq!(
            p.cost_parts("gpt-realtime", &u, &[], audio),
            [(usd * 1e3) as u64]
        );
    }

    /// A reservation covers the call however its input is billed: at the model's dearest input
    /// rate (cache writes, one-hour writes, audio), its output at the dearer of text and audio.
    #[test]
    fn an_estimate_prices_each_kind_of_token_at_its_dearest_rate() {
        let p = prices();
        // No cache write or audio prices: the plain rates (nano-USD).
        assert_eq!(p.estimate("gpt-4o", 1000, 100), 3_500_000);
        // Cache writes priced, one-hour writes not: their default, 2 × input.
        assert_eq!(p.estimate("claude-sonnet-4-5", 1000, 0), 6_000_000);
        // One-hour writes priced: 10 per million.
        assert_eq!(p.estimate("claude-opus-4-7", 1000, 100), 12_500_000);
        // What a one-hour write of the whole input then costs stays within the estimate.
        let written = Usage {
            input: Some(1000),
            cache_creation_input: Some(1000),
            cache_creation_1h: Some(1000),
            output: Some(100),
            ..Usage::default()
        };
        assert!(p.cost("claude-opus-4-7", &written) <= p.estimate("claude-opus-4-7", 1000, 100));
    }

    /// Past its threshold every token of the call is billed at the long-context rates (Claude
    /// Sonnet 4.5 with 1M context, Gemini 2.5 Pro over 200k); at or below it, the plain ones.
    #[test]
    fn a_long_input_bills_the_whole_call_at_the_long_context_prices() {
        let mut table = BTreeMap::new();
        let text = "input: 3\noutput: 15\ncached_input: 0.3\nlong_context: { above: 200000, input: 6, output: 22.5, cached_input: 0.6 }\n";
        let price: Price = serde_saphyr::from_str(text).unwrap();
        table.insert("claude-sonnet-4-5".to_string(), price);
        let p = Prices::new(&table);
        let call = |input: u64, cached: u64| Usage {
            input: Some(input),
            cached_input: Some(cached),
            output: Some(1000),
            ..Usage::default()
        };
        // 200,000 input: plain rates. 190k plain × 3 + 10k cached × 0.3 + 1k out × 15.
        assert_eq!(
            p.cost("claude-sonnet-4-5", &call(200_000, 10_000)),
            ((190_000.0 * 3.0 + 10_000.0 * 0.3 + 1000.0 * 15.0) * 1e3_f64).round() as u64
        );
        // 200,001: every token at the long rates, cache reads included.
        assert_eq!(
            p.cost("claude-sonnet-4-5", &call(200_001, 10_000)),
            ((190_001.0 * 6.0 + 10_000.0 * 0.6 + 1000.0 * 22.5) * 1e3_f64).round() as u64
        );
        // A reservation of a long input is priced at them too.
        assert_eq!(
            p.estimate("claude-sonnet-4-5", 300_000, 0),
            (300_000.0 * 6.0 * 1e3_f64).round() as u64
        );
        // Summed requests (iterations, a batch file) cross the threshold one by one: two of
        // 125k are billed at the plain rates.
        let two = Billing {
            longest_input: Some(125_000),
            ..Billing::default()
        };
        assert_eq!(
            p.cost_parts("claude-sonnet-4-5", &call(250_000, 0), &[], two),
            vec![((250_000.0 * 3.0 + 1000.0 * 15.0) * 1e3_f64).round() as u64]
        );
        let parts = p.cost_parts(
            "claude-sonnet-4-5",
            &call(250_000, 0),
            &[],
            Billing::default(),
        );
        assert_eq!(
            parts,
            vec![((250_000.0 * 6.0 + 1000.0 * 22.5) * 1e3_f64).round() as u64]
        );
    }

    #[test]
    fn a_model_is_unpriced_only_when_the_table_prices_others() {
        let p = prices();
        assert!(p.unpriced("gpt-4o-mini"));
        assert!(!p.unpriced("gpt-4o-2024-08-06"), "a dated name falls back");
        assert!(
            !Prices::default().unpriced("gpt-4o-mini"),
            "no pricing at all"
        );
    }

    #[test]
    fn bedrock_and_vertex_ids_take_their_models_entry() {
        let mut table = BTreeMap::new();
        for (name, input) in [
            ("claude-sonnet-4-5", 3.0),
            ("claude-opus-4", 15.0),
            ("claude-3-5-haiku", 0.8),
            ("llama3-1-70b-instruct", 0.72),
            ("nova-pro", 0.8),
            ("us.anthropic.claude-3-7-sonnet-20250219-v1:0", 3.3),
            ("gpt-4.1", 2.0),
        ] {
            table.insert(
                name.to_string(),
                Price {
                    input,
                    ..price(0.0)
                },
            );
        }
        let p = Prices::new(&table);
        let input = |m: &str| p.get(m).map(|p| p.input);
        assert_eq!(
            input("us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
            Some(3.0)
        );
        assert_eq!(
            input("global.anthropic.claude-sonnet-4-5-20250929-v1:0"),
            Some(3.0)
        );
        assert_eq!(input("anthropic.claude-3-5-haiku-20241022-v1:0"), Some(0.8));
        assert_eq!(
            input("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0"),
            Some(0.8)
        );
        assert_eq!(
            input("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-4-5-20250929-v1:0"),
            Some(3.0)
        );
        assert_eq!(input("meta.llama3-1-70b-instruct-v1:0"), Some(0.72));
        assert_eq!(input("us.amazon.nova-pro-v1:0"), Some(0.8));
        assert_eq!(input("claude-sonnet-4-5@20250929"), Some(3.0));
        // The operator's entry for the exact id wins over its model's.
        assert_eq!(
            input("us.anthropic.claude-3-7-sonnet-20250219-v1:0"),
            Some(3.3)
        );
        // Still never another version or model.
        assert_eq!(input("anthropic.claude-opus-4-5-20251101-v1:0"), None);
        assert_eq!(input("claude-opus-4-5@20251101"), None);
        assert_eq!(input("anthropic.claude-opus-4-20250514-v1:0"), Some(15.0));
        assert_eq!(input("gpt-4.1"), Some(2.0));
        assert_eq!(input("gpt-4.1-mini"), None);
        assert_eq!(input("4.1"), None);
        assert_eq!(input("anthropic."), None);
        assert_eq!(input("@20250929"), None);
    }

    /// A price of `input` for every kind of token, nothing else set.
    fn price(input: f64) -> Price {
        Price {
            input,
            output: input,
            cached_input: None,
            cache_creation_input: None,
            cache_creation_input_1h: None,
            batch: None,
            audio_input: None,
            cached_audio_input: None,
            audio_output: None,
            long_context: None,
            web_search: None,
            file_search: None,
        }
    }

    #[test]
    fn dated_models_match_but_other_models_do_not() {
        let p = prices();
        assert!(p.get("gpt-4o-2024-08-06").is_some());
        assert!(p.get("gpt-4o-mini").is_none());
        assert!(p.get("gpt-4o-").is_none());
        // Admitted at the dearest price the table has (what may serve it), settled at 0.
        for priced in ["gpt-4o", "claude-sonnet-4-5"] {
            assert!(p.estimate("unknown", 10, 10) >= p.estimate(priced, 10, 10));
        }
        assert!(p.estimate_plain("unknown", 10, 0) > 0);
        let unknown = Usage {
            input: Some(10),
            output: Some(10),
            ..Usage::default()
        };
        assert_eq!(p.cost("unknown", &unknown), 0);
        assert_eq!(Prices::new(&BTreeMap::new()).estimate("unknown", 10, 10), 0);
        // A version is another model: Opus 4.5 is not priced as Opus 4 (3x dearer).
        let mut table = BTreeMap::new();
        for (name, input) in [
            ("claude-opus-4", 15.0),
            ("gpt-4", 30.0),
            ("gemini-2.0-flash", 0.1),
        ] {
            table.insert(name.to_string(), price(input));
        }
        let p = Prices::new(&table);
        assert!(p.get("claude-opus-4-5-20251101").is_none());
        assert!(p.get("claude-opus-4-5").is_none());
        assert!(p.get("claude-opus-4-1").is_none());
        assert!(p.get("claude-opus-4-20250514").is_some());
        assert!(p.get("gpt-4-0613").is_some());
        assert!(p.get("gpt-4-2024-04-09").is_some());
        assert!(p.get("gemini-2.0-flash-001").is_some());
        assert!(p.get("gpt-4-32k").is_none());
        assert!(p.get("gemini-2.0-flash-06-05").is_some());
        assert!(p.get("gpt-4-08-2024").is_some());
        assert!(p.get("gpt-4-5-2").is_none());
        // A vendor prefix: the model's own entry, unless the full name has one.
        assert!(p.get("google/gemini-2.0-flash-001").is_some());
        assert!(p.get("openai/gpt-4-0613").is_some());
        assert!(p.get("openai/gpt-4-32k").is_none());
        assert!(p.get("openai/").is_none());
        assert!(p.get("gpt-4-2024-04-9").is_none());
    }

    #[test]
    fn one_hour_cache_writes_have_their_own_price() {
        let p = prices();
        let u = Usage {
            input: Some(1_000_000),
            output: Some(0),
            cache_creation_input: Some(1_000_000),
            cache_creation_1h: Some(400_000),
            ..Usage::default()
        };
        // 600k × 3.75 + 400k × (default 2 × 3.00) = 2.25 + 2.4 USD
        assert_eq!(p.cost("claude-sonnet-4-5", &u), 4_650_000_000);
        // Configured: 600k × 6.25 + 400k × 10 = 3.75 + 4 USD
        assert_eq!(p.cost("claude-opus-4-7", &u), 7_750_000_000);
    }

    #[test]
    fn sub_calls_on_another_model_are_priced_as_that_model() {
        let p = prices();
        let advisor = Usage {
            input: Some(1_000_000),
            output: Some(1_000_000),
            ..Usage::default()
        };
        let total = Usage {
            input: Some(2_000_000),
            output: Some(1_000_000),
            ..Usage::default()
        };
        let others = [ModelUsage {
            model: "claude-opus-4-7".into(),
            usage: advisor,
        }];
        // Executor: 1M input × 3; advisor: 1M × 5 + 1M × 25.
        assert_eq!(
            p.cost_parts("claude-sonnet-4-5", &total, &others, Billing::default()),
            [3_000_000_000, 30_000_000_000]
        );
        // A sub-call model without a price is priced as the serving model.
        let unknown = [ModelUsage {
            model: "claude-unpriced".into(),
            usage: advisor,
        }];
        assert_eq!(
            p.cost_parts("claude-sonnet-4-5", &total, &unknown, Billing::default()),
            [3_000_000_000, 18_000_000_000]
        );
    }

    /// Searches the provider ran cost their per-1,000 fee on top of the tokens, at the serving
    /// model's price, unscaled by the batch factor; a model without a fee prices none.
    #[test]
    fn web_and_file_searches_add_their_per_call_fee() {
        let mut table = BTreeMap::new();
        let text = "input: 3\noutput: 15\nweb_search: 10\nfile_search: 2.5\nlong_context: { above: 200000, input: 6, output: 22.5 }\n";
        let price: Price = serde_saphyr::from_str(text).unwrap();
        table.insert("claude-sonnet-4".to_string(), price);
        table.insert(
            "gpt-4o".to_string(),
            prices().get("gpt-4o").copied().unwrap(),
        );
        let p = Prices::new(&table);
        // The recorded Anthropic call: 8,984 input, 520 output, one search.
        let u = Usage {
            input: Some(8984),
            output: Some(520),
            ..Usage::default()
        };
        let tokens = ((8984.0 * 3.0 + 520.0 * 15.0) * 1e3_f64).round() as u64;
        let searched = |web_search, file_search| Billing {
            server_tools: ServerToolUse {
                web_search,
                file_search,
            },
            ..Billing::default()
        };
        // $10 per 1,000 searches: one is 0.01 USD, 22% of the call.
        assert_eq!(
            p.cost_parts("claude-sonnet-4-20250514", &u, &[], searched(1, 0)),
            [tokens + 10_000_000]
        );
        assert_eq!(
            p.cost_parts("claude-sonnet-4", &u, &[], searched(6, 4)),
            [tokens + 60_000_000 + 10_000_000]
        );
        // Batch-billed tokens are discounted, the fee is not.
        let batch = Billing {
            batch: true,
            ..searched(1, 0)
        };
        assert_eq!(
            p.cost_parts("claude-sonnet-4", &u, &[], batch),
            [(tokens as f64 * DEFAULT_BATCH_FACTOR).round() as u64 + 10_000_000]
        );
        // A long call's tokens at the long rates, the fee the same.
        let long = Usage {
            input: Some(300_000),
            output: Some(0),
            ..Usage::default()
        };
        assert_eq!(
            p.cost_parts("claude-sonnet-4", &long, &[], searched(1, 0)),
            [(300_000.0 * 6.0 * 1e3_f64).round() as u64 + 10_000_000]
        );
        // A sub-call's part carries no fee: the serving model's does.
        let others = [ModelUsage {
            model: "gpt-4o".into(),
            usage: Usage {
                input: Some(1000),
                output: Some(0),
                ..Usage::default()
            },
        }];
        let total = u.plus(&others[0].usage);
        assert_eq!(
            p.cost_parts("claude-sonnet-4", &total, &others, searched(1, 0)),
            [tokens + 10_000_000, 2_500_000]
        );
        // No fee configured: the searches cost nothing beyond the tokens.
        assert_eq!(
            p.cost_parts("gpt-4o", &u, &[], searched(3, 3)),
            p.cost_parts("gpt-4o", &u, &[], Billing::default())
        );
    }
}
