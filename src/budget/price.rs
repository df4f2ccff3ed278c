//! Cost of a call from the configured price table (USD per million tokens), in nano-USD.

use std::collections::BTreeMap;

use crate::config::Price;
use crate::providers::Usage;

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

    /// The price of `model`: an exact entry, else an entry the model extends with only a date
    /// or version suffix (`gpt-4o-2024-08-06` → `gpt-4o`, but never `gpt-4o-mini` → `gpt-4o`).
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
                    .is_some_and(|rest| {
                        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                    })
            })
            .max_by_key(|(k, _)| k.len())
            .map(|(_, p)| p)
    }

    /// Nano-USD for `usage` on `model`; 0 when the model has no price. Cached and cache-written
    /// input use their own prices when given, else the input price.
    pub fn cost(&self, model: &str, usage: &Usage) -> u64 {
        let Some(p) = self.get(model) else {
            return 0;
        };
        let input = usage.input.unwrap_or(0);
        let cached = usage.cached_input.unwrap_or(0).min(input);
        let created = usage.cache_creation_input.unwrap_or(0).min(input - cached);
        let plain = input - cached - created;
        let per_million = plain as f64 * p.input
            + cached as f64 * p.cached_input.unwrap_or(p.input)
            + created as f64 * p.cache_creation_input.unwrap_or(p.input)
            + usage.output.unwrap_or(0) as f64 * p.output;
        // USD per million tokens → nano-USD per token is × 1000.
        (per_million * 1e3).round() as u64
    }

    /// Nano-USD an estimate of `input` and `output` tokens may cost on `model` (uncached).
    pub fn estimate(&self, model: &str, input: u64, output: u64) -> u64 {
        let usage = Usage {
            input: Some(input),
            output: Some(output),
            ..Usage::default()
        };
        self.cost(model, &usage)
    }
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
            },
        );
        t.insert(
            "claude-sonnet-4-5".to_string(),
            Price {
                input: 3.0,
                output: 15.0,
                cached_input: Some(0.3),
                cache_creation_input: Some(3.75),
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
    fn dated_models_match_but_other_models_do_not() {
        let p = prices();
        assert!(p.get("gpt-4o-2024-08-06").is_some());
        assert!(p.get("gpt-4o-mini").is_none());
        assert!(p.get("gpt-4o-").is_none());
        assert_eq!(p.estimate("unknown", 10, 10), 0);
    }
}
