//! Which GenAI metric names the proxy exports: the newest GenAI conventions (the default), the
//! names it exported before (`gen_ai_previous`), or both (`gen_ai_previous/dup`).
//!
//! The switch reads like OpenTelemetry's own `OTEL_SEMCONV_STABILITY_OPT_IN`: a comma-separated
//! list, from [`ENV`] or `telemetry.semconv_opt_in` (the variable wins), where unknown entries are
//! ignored. It is process-wide (metrics are), set once when the server starts; the hot path reads
//! it with one relaxed load.

use std::sync::atomic::{AtomicU8, Ordering};

/// Environment variable holding the opt-in list; it overrides `telemetry.semconv_opt_in`.
pub const ENV: &str = "TOKENWARDEN_SEMCONV_OPT_IN";

/// Opt-in entry: export only the GenAI metric names of earlier tokenwarden releases.
pub const PREVIOUS: &str = "gen_ai_previous";
/// Opt-in entry: export the earlier names and the newest ones side by side (migration).
pub const PREVIOUS_DUP: &str = "gen_ai_previous/dup";

/// The GenAI metric vocabulary in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Names {
    /// The newest GenAI conventions (`gen_ai.client.inference.*`, usage counters).
    #[default]
    Latest,
    /// The names exported before (`gen_ai.client.operation.*`, `gen_ai.client.token.usage`).
    Previous,
    /// Both sets.
    Both,
}

static NAMES: AtomicU8 = AtomicU8::new(0);

// === impl Names ===

impl Names {
    /// The vocabulary an opt-in list asks for: `/dup` wins over the plain entry, as in
    /// OpenTelemetry's instrumentations.
    pub fn parse(opt_in: &str) -> Self {
        let mut names = Self::Latest;
        for entry in opt_in.split(',').map(str::trim) {
            if entry.eq_ignore_ascii_case(PREVIOUS_DUP) {
                return Self::Both;
            }
            if entry.eq_ignore_ascii_case(PREVIOUS) {
                names = Self::Previous;
            }
        }
        names
    }

    /// The vocabulary from [`ENV`] when set and non-empty, else from the config's list.
    pub fn resolve(config: &str) -> Self {
        match std::env::var(ENV) {
            Ok(v) if !v.trim().is_empty() => Self::parse(&v),
            _ => Self::parse(config),
        }
    }

    /// Whether the newest names are exported.
    pub fn latest(self) -> bool {
        matches!(self, Self::Latest | Self::Both)
    }

    /// Whether the earlier names are exported.
    pub fn previous(self) -> bool {
        matches!(self, Self::Previous | Self::Both)
    }
}

/// Set the process-wide vocabulary (server start).
pub fn set(names: Names) {
    let v = match names {
        Names::Latest => 0,
        Names::Previous => 1,
        Names::Both => 2,
    };
    NAMES.store(v, Ordering::Relaxed);
}

/// The process-wide vocabulary.
pub fn get() -> Names {
    match NAMES.load(Ordering::Relaxed) {
        1 => Names::Previous,
        2 => Names::Both,
        _ => Names::Latest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opt_in_lists_parse_like_otel_semconv_stability_opt_in() {
        assert_eq!(Names::parse(""), Names::Latest);
        assert_eq!(Names::parse("http"), Names::Latest);
        assert_eq!(Names::parse("gen_ai_previous"), Names::Previous);
        assert_eq!(
            Names::parse(" http/dup , gen_ai_previous "),
            Names::Previous
        );
        assert_eq!(
            Names::parse("gen_ai_previous,gen_ai_previous/dup"),
            Names::Both
        );
        assert!(Names::Both.latest() && Names::Both.previous());
        assert!(!Names::Previous.latest() && Names::Latest.latest());
    }
}
