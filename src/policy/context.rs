//! The model catalog: context windows of well-known models, overridable and extendable with
//! `models:` in config. A model name matches its entry exactly or by the longest entry that is a
//! prefix of it (`gpt-4o-mini-2024-07-18` → `gpt-4o-mini`, `claude-sonnet-4-5-20250929` →
//! `claude-sonnet-4-5`).

use std::collections::BTreeMap;

use crate::config::ModelInfo;

/// Built-in context windows in tokens (providers' published limits).
const BUILT_IN: &[(&str, u64)] = &[
    ("gpt-4o", 128_000),
    ("gpt-4o-mini", 128_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-4.1", 1_047_576),
    ("gpt-4.1-mini", 1_047_576),
    ("gpt-4.1-nano", 1_047_576),
    ("gpt-5", 400_000),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o3-mini", 200_000),
    ("o4-mini", 200_000),
    ("claude-3-5-haiku", 200_000),
    ("claude-3-5-sonnet", 200_000),
    ("claude-3-7-sonnet", 200_000),
    ("claude-haiku-4-5", 200_000),
    ("claude-sonnet-4", 200_000),
    ("claude-sonnet-4-5", 200_000),
    ("claude-opus-4", 200_000),
    ("claude-opus-4-1", 200_000),
    ("gemini-1.5-flash", 1_048_576),
    ("gemini-1.5-pro", 2_097_152),
    ("gemini-2.0-flash", 1_048_576),
    ("gemini-2.5-flash", 1_048_576),
    ("gemini-2.5-pro", 1_048_576),
];

/// Context windows by model name.
#[derive(Debug, Clone)]
pub struct ModelCatalog {
    windows: BTreeMap<String, u64>,
}

// === impl ModelCatalog ===

impl ModelCatalog {
    /// The built-in entries with `models:` from config over them.
    pub fn new(configured: &BTreeMap<String, ModelInfo>) -> Self {
        let mut windows: BTreeMap<String, u64> =
            BUILT_IN.iter().map(|(m, w)| (m.to_string(), *w)).collect();
        for (m, info) in configured {
            windows.insert(m.clone(), info.context_window);
        }
        Self { windows }
    }

    /// The context window of `model`, when the catalog knows it: its own entry, else its
    /// model's within a cloud platform's id (Bedrock's `us.anthropic.claude-sonnet-4-…-v1:0`,
    /// Vertex's `claude-sonnet-4@20250514`).
    pub fn window(&self, model: &str) -> Option<u64> {
        self.lookup(model).or_else(|| {
            let bare = model.rsplit_once('/').map_or(model, |(_, b)| b);
            self.lookup(&crate::providers::platform_model(bare)?)
        })
    }

    /// An exact entry, else the longest one the name extends past a `-`.
    fn lookup(&self, model: &str) -> Option<u64> {
        if let Some(w) = self.windows.get(model) {
            return Some(*w);
        }
        // Longest prefix on a `-` boundary (dated snapshots, suffixes like `-latest`).
        let mut end = model.len();
        while let Some(cut) = model[..end].rfind('-') {
            if let Some(w) = self.windows.get(&model[..cut]) {
                return Some(*w);
            }
            end = cut;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_prefix_override_and_unknown() {
        let mut cfg = BTreeMap::new();
        cfg.insert(
            "gpt-4o".to_string(),
            ModelInfo {
                context_window: 1000,
            },
        );
        cfg.insert(
            "my-local".to_string(),
            ModelInfo {
                context_window: 8192,
            },
        );
        let c = ModelCatalog::new(&cfg);
        assert_eq!(c.window("gpt-4o"), Some(1000));
        assert_eq!(c.window("gpt-4o-2024-08-06"), Some(1000));
        assert_eq!(c.window("gpt-4o-mini-2024-07-18"), Some(128_000));
        assert_eq!(c.window("claude-sonnet-4-5-20250929"), Some(200_000));
        assert_eq!(c.window("my-local"), Some(8192));
        assert_eq!(c.window("mystery"), None);
        assert_eq!(
            c.window("us.anthropic.claude-sonnet-4-20250514-v1:0"),
            Some(200_000)
        );
        assert_eq!(c.window("claude-opus-4-1@20250805"), Some(200_000));
        assert_eq!(c.window("mistral.mistral-large-2407-v1:0"), None);
        assert_eq!(c.window(""), None);
    }
}
