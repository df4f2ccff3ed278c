//! Limits as the budget service applies them: one per (scope, unit, window), with its action and
//! warning threshold, and the fixed, epoch-aligned windows they count in.

use std::sync::Arc;

use crate::config::{LimitAction, LimitConfig, LimitScope};

pub use crate::record::NANO_PER_USD;

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Input plus output tokens.
    Tokens,
    /// Cost in nano-USD.
    Usd,
}

/// One enforceable limit.
#[derive(Debug, Clone)]
pub struct Limit {
    /// session | task | agent | global.
    pub scope: LimitScope,
    /// tokens | usd.
    pub unit: Unit,
    /// The limit in tokens or nano-USD.
    pub amount: u64,
    /// Window length in seconds; `None` is a lifetime limit.
    pub window: Option<u64>,
    /// The window as written in the config (`lifetime`, `1h`), for the admin API.
    pub window_name: Arc<str>,
    /// reject | cut | observe.
    pub action: LimitAction,
    /// Fraction of the limit that raises a warning.
    pub warn_at: Option<f64>,
    /// Counter name inside the scope's record (one limit per scope, unit and window: validated).
    pub counter: Arc<str>,
}

// === impl Limit ===

impl Limit {
    /// The limits one config entry defines (a `tokens` and a `usd` limit may share an entry).
    pub fn from_config(c: &LimitConfig) -> Vec<Limit> {
        let window = crate::config::parse_window(&c.window)
            .ok()
            .flatten()
            .map(|d| d.as_secs().max(1));
        let mut out = Vec::new();
        let make = |unit: Unit, amount: u64| {
            let w = window.map_or_else(|| "life".to_string(), |s| s.to_string());
            let u = match unit {
                Unit::Tokens => "tokens",
                Unit::Usd => "usd",
            };
            Limit {
                scope: c.scope,
                unit,
                amount,
                window,
                window_name: Arc::from(c.window.as_str()),
                action: c.action,
                warn_at: c.warn_at,
                counter: Arc::from(format!("{u}:{w}")),
            }
        };
        if let Some(t) = c.tokens {
            out.push(make(Unit::Tokens, t));
        }
        if let Some(usd) = c.usd {
            out.push(make(Unit::Usd, (usd * NANO_PER_USD).round() as u64));
        }
        out
    }

    /// Start (epoch seconds) of the window containing `now`; 0 for lifetime limits.
    pub fn window_start(&self, now: u64) -> u64 {
        match self.window {
            Some(w) => now - now % w,
            None => 0,
        }
    }

    /// Seconds from `now` until the current window ends (at least 1); `None` for lifetime.
    pub fn retry_after(&self, now: u64) -> Option<u64> {
        self.window
            .map(|w| (self.window_start(now) + w).saturating_sub(now).max(1))
    }

    /// `session`, `task`, `agent` or `global`.
    pub fn scope_str(&self) -> &'static str {
        scope_str(self.scope)
    }

    /// `token` or `usd`, as in the error code.
    pub fn unit_str(&self) -> &'static str {
        match self.unit {
            Unit::Tokens => "token",
            Unit::Usd => "usd",
        }
    }

    /// The amount in the limit's own unit (whole tokens, or USD).
    pub fn display(&self, v: u64) -> Amount {
        match self.unit {
            Unit::Tokens => Amount::Tokens(v),
            Unit::Usd => Amount::Usd(v as f64 / NANO_PER_USD),
        }
    }
}

/// An amount as users read it: whole tokens (never `400.0`), or USD. Serialized as a JSON
/// integer or number; displayed as `400` or `$0.25`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// Tokens.
    Tokens(u64),
    /// US dollars.
    Usd(f64),
}

// === impl Amount ===

impl Amount {
    /// ` tokens` after a token amount (a USD amount carries its `$`).
    pub fn unit_suffix(&self) -> &'static str {
        match self {
            Amount::Tokens(_) => " tokens",
            Amount::Usd(_) => "",
        }
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Amount::Tokens(n) => write!(f, "{n}"),
            Amount::Usd(v) => write!(f, "${v}"),
        }
    }
}

impl serde::Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Amount::Tokens(n) => s.serialize_u64(*n),
            Amount::Usd(v) => s.serialize_f64(*v),
        }
    }
}

/// Metric and JSON name of a scope.
pub fn scope_str(s: LimitScope) -> &'static str {
    match s {
        LimitScope::Session => "session",
        LimitScope::Task => "task",
        LimitScope::Agent => "agent",
        LimitScope::Global => "global",
    }
}

/// Every scope, in the order admission reserves on them.
pub const SCOPES: [LimitScope; 4] = [
    LimitScope::Session,
    LimitScope::Task,
    LimitScope::Agent,
    LimitScope::Global,
];

/// Store key prefix of session records.
pub const SESSION_PREFIX: &str = "s:";
/// Store key prefix of task records.
pub const TASK_PREFIX: &str = "t:";

/// The store key of one scope instance. The Redis store wraps it in braces, a Redis Cluster hash
/// tag, so everything of one session (or task, or agent) lives in one slot — and every proxy
/// that sees a call of the task names the same key.
pub fn group_key(scope: LimitScope, id: &str) -> String {
    // Pushed, not `format!`ted: this runs for every scope of every call.
    let prefix = match scope {
        LimitScope::Session => SESSION_PREFIX,
        LimitScope::Task => TASK_PREFIX,
        LimitScope::Agent => "a:",
        LimitScope::Global => return "g".to_string(),
    };
    let mut key = String::with_capacity(prefix.len() + id.len());
    key.push_str(prefix);
    key.push_str(id);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(window: &str) -> LimitConfig {
        LimitConfig {
            scope: LimitScope::Session,
            tokens: Some(100),
            usd: Some(1.5),
            window: window.into(),
            action: LimitAction::Reject,
            warn_at: None,
        }
    }

    #[test]
    fn scope_keys_are_prefixed_ids() {
        assert_eq!(group_key(LimitScope::Session, "s1"), "s:s1");
        assert_eq!(group_key(LimitScope::Task, "t-9"), "t:t-9");
        assert_eq!(group_key(LimitScope::Agent, "coder"), "a:coder");
        assert_eq!(group_key(LimitScope::Global, "ignored"), "g");
    }

    #[test]
    fn one_entry_two_limits_with_shared_counter_names() {
        let l = Limit::from_config(&cfg("1h"));
        assert_eq!(l.len(), 2);
        assert_eq!(&*l[0].counter, "tokens:3600");
        assert_eq!(&*l[1].counter, "usd:3600");
        assert_eq!(l[1].amount, 1_500_000_000);
        assert_eq!(Limit::from_config(&cfg("lifetime"))[0].window, None);
    }

    #[test]
    fn token_amounts_are_integers_in_text_and_json() {
        let l = Limit::from_config(&cfg("1h"));
        assert_eq!(l[0].display(400).to_string(), "400");
        assert_eq!(serde_json::to_string(&l[0].display(400)).unwrap(), "400");
        assert_eq!(l[1].display(250_000_000).to_string(), "$0.25");
        assert_eq!(
            serde_json::to_string(&l[1].display(250_000_000)).unwrap(),
            "0.25"
        );
    }

    #[test]
    fn fixed_windows_are_epoch_aligned() {
        let l = &Limit::from_config(&cfg("1m"))[0];
        assert_eq!(l.window_start(125), 120);
        assert_eq!(l.retry_after(125), Some(55));
        assert_eq!(l.retry_after(120), Some(60));
        let life = &Limit::from_config(&cfg("lifetime"))[0];
        assert_eq!(life.retry_after(125), None);
        assert_eq!(life.window_start(125), 0);
    }
}
