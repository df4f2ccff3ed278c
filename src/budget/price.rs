//! Cost of a call from the configured price table (USD per million tokens), in nano-USD.
//!
//! Each kind of token is billed at its own price: uncached input at `input`, cache reads at
//! `cached_input`, five-minute cache writes at `cache_creation_input`, one-hour cache writes at
//! `cache_creation_input_1h` (default 2 × `input`), output (reasoning included) at `output`.
//! A sub-call that ran on another model (an Anthropic advisor) is priced as that model.

use std::collections::BTreeMap;

use crate::config::Price;
use crate::providers::{AudioTokens, ModelUsage, Usage};

/// One-hour cache writes cost this many times the input price when no price is configured
/// (Anthropic's published multiplier; five-minute writes are 1.25×).
const ONE_HOUR_WRITE_FACTOR: f64 = 2.0;

/// The factor of batch-billed usage when a price sets none: the 50 % discount of OpenAI's Batch
/// API and Anthropic's Message Batches alike.
const DEFAULT_BATCH_FACTOR: f64 = 0.5;

/// Whether `suffix` names a snapshot of a model rather than another model or version: a date
/// (`20250929`, `2024-08-06`), a month and day (`0613`), or a three-digit revision (`001`).
/// A one- or two-digit suffix is a version (`claude-opus-4-5` is not `claude-opus-4`).
fn is_snapshot(suffix: &str) -> bool {
    let b = suffix.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    match b.len() {
        3 | 4 | 8 => digits(b),
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
}

/// The price table, looked up by model name.
#[derive(Debug, Clone, Default)]
pub struct Prices {
    table: BTreeMap<String, Price>,
}

// === impl Prices ===

impl Prices {
    /// Prices from `pricing:`.
    pub fn new(table: &BTreeMap<String, Price>) -> Self {
        Self {
            table: table.clone(),
        }
    }

    /// The price of `model`: an exact entry, else an entry the model extends with only a
    /// snapshot suffix (`gpt-4o-2024-08-06` → `gpt-4o`, `claude-sonnet-4-5-20250929` →
    /// `claude-sonnet-4-5`, `gemini-2.0-flash-001` → `gemini-2.0-flash`), but never another
    /// model (`gpt-4o-mini` → `gpt-4o`) or version (`claude-opus-4-5` → `claude-opus-4`).
    pub fn get(&self, model: &str) -> Option<&Price> {
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

    /// Nano-USD for `usage` on `model`; 0 when the model has no price. Cached and cache-written
    /// input use their own prices when given, else the input price (one-hour writes: 2 × input).
    pub fn cost(&self, model: &str, usage: &Usage) -> u64 {
        self.get(model).map_or(0, |p| price_of(p, usage, None))
    }

    /// Nano-USD per model for a call `model` served whose `usage` includes sub-calls on other
    /// models (`others`, parts of `usage`): the serving model's part first, then one entry per
    /// other model, each priced as its own model (as the serving model when it has no price).
    /// `billing` says how the usage was billed (batch rate, audio).
    pub fn cost_parts(
        &self,
        model: &str,
        usage: &Usage,
        others: &[ModelUsage],
        billing: Billing,
    ) -> Vec<u64> {
        let own = others.iter().fold(*usage, |u, o| u.minus(&o.usage));
        let served = self.get(model);
        let priced = |p: &Price, u: &Usage, audio: Option<&AudioTokens>| {
            let full = price_of(p, u, audio);
            if billing.batch {
                (full as f64 * p.batch.unwrap_or(DEFAULT_BATCH_FACTOR)).round() as u64
            } else {
                full
            }
        };
        std::iter::once(served.map_or(0, |p| priced(p, &own, billing.audio.as_ref())))
            .chain(others.iter().map(|o| {
                self.get(&o.model)
                    .or(served)
                    .map_or(0, |p| priced(p, &o.usage, None))
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
        self.cost(model, &usage)
    }

    /// Nano-USD that `input` and `output` tokens may cost on `model` at most: each kind priced at
    /// the highest rate the model's price bills it at (input written to the cache or heard as
    /// audio costs more than plain input), so that a reservation covers the call however its
    /// input turns out to be billed. The one-hour cache write's default (2 × input) counts for a
    /// price that sets a cache write price: a model with cache writes.
    pub fn estimate(&self, model: &str, input: u64, output: u64) -> u64 {
        let Some(p) = self.get(model) else {
            return 0;
        };
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
            audio: None,
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

    #[test]
    fn dated_models_match_but_other_models_do_not() {
        let p = prices();
        assert!(p.get("gpt-4o-2024-08-06").is_some());
        assert!(p.get("gpt-4o-mini").is_none());
        assert!(p.get("gpt-4o-").is_none());
        assert_eq!(p.estimate("unknown", 10, 10), 0);
        // A version is another model: Opus 4.5 is not priced as Opus 4 (3x dearer).
        let mut table = BTreeMap::new();
        for (name, input) in [
            ("claude-opus-4", 15.0),
            ("gpt-4", 30.0),
            ("gemini-2.0-flash", 0.1),
        ] {
            table.insert(
                name.to_string(),
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
                },
            );
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
}
