//! Bounded label values: traffic decides model, agent and tool names, so each label keeps at most
//! a configured number of distinct values and reports the rest as `other`.

use std::sync::Arc;

use dashmap::DashMap;

pub use super::series::OTHER;

/// The capped label sets traffic can grow: agents, models, tools and error types.
#[derive(Debug)]
pub struct Labels {
    /// `agent` label values.
    pub agents: LabelCap,
    /// `model`, `gen_ai_request_model`, `gen_ai_response_model` values.
    pub models: LabelCap,
    /// `tool` values.
    pub tools: LabelCap,
    /// `error_type` values taken from provider error bodies.
    pub errors: LabelCap,
}

impl Labels {
    /// Every set capped at `max` distinct values.
    pub fn new(max: usize) -> Self {
        Self {
            agents: LabelCap::named("agent", max),
            models: LabelCap::named("model", max),
            tools: LabelCap::named("tool", max),
            errors: LabelCap::named("error_type", max),
        }
    }
}

/// Longest label value kept; longer values report as `other`.
pub use crate::config::MAX_LABEL_LEN;

/// A set of admitted values for one label.
#[derive(Debug)]
pub struct LabelCap {
    /// The label, for `tokenwarden_label_values_folded_total`.
    label: &'static str,
    max: usize,
    /// Hashed with foldhash: looked up a few times per call, where SipHash cost more than the
    /// rest of the lookup; seeded per process, and the set is capped at `max` values.
    seen: DashMap<Arc<str>, (), foldhash::fast::RandomState>,
}

// === impl LabelCap ===

impl LabelCap {
    /// A cap admitting at most `max` distinct values.
    pub fn new(max: usize) -> Self {
        Self::named("value", max)
    }

    /// A cap on label `label`, admitting at most `max` distinct values.
    pub fn named(label: &'static str, max: usize) -> Self {
        Self {
            label,
            max,
            seen: DashMap::default(),
        }
    }

    fn folded(&self) -> Arc<str> {
        metrics::counter!(super::metrics::LABEL_VALUES_FOLDED_TOTAL, "label" => self.label)
            .increment(1);
        Arc::from(OTHER)
    }

    /// The label value to report for `value`: itself if admitted, else `other`.
    pub fn get(&self, value: &str) -> Arc<str> {
        if value.len() > MAX_LABEL_LEN {
            return self.folded();
        }
        if let Some(e) = self.seen.get(value) {
            return e.key().clone();
        }
        // Racing inserts may overshoot the cap by at most the number of concurrent callers.
        if self.seen.len() >= self.max {
            return self.folded();
        }
        let v: Arc<str> = Arc::from(value);
        self.seen.entry(v.clone()).or_insert(());
        v
    }

    /// Admit `value` whatever the cap (values from config, e.g. agents with policies, which are
    /// looked up by their label); over-long values still report as `other`.
    pub fn pin(&self, value: &str) {
        if value.len() <= MAX_LABEL_LEN && !self.seen.contains_key(value) {
            self.seen.insert(Arc::from(value), ());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_cap_become_other() {
        let cap = LabelCap::new(2);
        assert_eq!(&*cap.get("a"), "a");
        assert_eq!(&*cap.get("b"), "b");
        assert_eq!(&*cap.get("c"), OTHER);
        assert_eq!(&*cap.get("a"), "a");
        cap.pin("configured");
        assert_eq!(&*cap.get("configured"), "configured");
        assert_eq!(&*cap.get("d"), OTHER);
    }
}
