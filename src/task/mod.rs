//! Tasks: which task a call belongs to, and the per-task numbers of this sidecar.
//!
//! A task is one unit of agent work that may span several agents, sessions and sidecars: a
//! supervisor and the workers it hands parts to. Its id comes from the first configured header
//! present (`identity.task_headers`, default `x-task-id`), then W3C `baggage` `task.id`, then —
//! unless `identity.task_from_trace` is off — the trace id of the agent's W3C `traceparent`, which
//! agents instrumented with OpenTelemetry already propagate to every process of the task. Task
//! ids are never metric labels; they appear on spans (`task.id`) and in the admin API.

mod tracker;

pub use tracker::{CallDone, TaskNumbers, TaskSnapshot, Tasks};

use std::sync::Arc;

use http::{HeaderMap, HeaderName};

use crate::session::{explicit_id, truncate, MAX_SESSION_ID_LEN};
use crate::telemetry::trace_context::{parse_traceparent, TRACEPARENT_HEADER};

/// Where task ids are looked for, built once from `identity:`.
#[derive(Debug, Clone)]
pub struct TaskSource {
    headers: Vec<HeaderName>,
    from_trace: bool,
}

impl TaskSource {
    /// Look in `headers` (in order; names that are not valid header names are skipped), then
    /// baggage, then (when `from_trace`) the trace id.
    pub fn new(headers: &[String], from_trace: bool) -> Self {
        Self {
            headers: headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.trim().as_bytes()).ok())
                .collect(),
            from_trace,
        }
    }

    /// The task id of a request: headers, then baggage `task.id`, then the trace id.
    pub fn identify(&self, headers: &HeaderMap) -> Option<Arc<str>> {
        if let Some(id) = explicit_id(headers, &self.headers, "task.id") {
            return Some(Arc::from(truncate(id.trim(), MAX_SESSION_ID_LEN)));
        }
        if !self.from_trace {
            return None;
        }
        let tp = headers.get(TRACEPARENT_HEADER)?.to_str().ok()?;
        let (trace_id, _, _) = parse_traceparent(tp)?;
        Some(Arc::from(trace_id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn header_then_baggage_then_trace_id() {
        let s = TaskSource::new(&["x-task-id".into()], true);
        let mut h = HeaderMap::new();
        assert_eq!(s.identify(&h), None);
        h.insert("traceparent", TP.parse().unwrap());
        assert_eq!(
            s.identify(&h).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        h.insert("baggage", "session.id=s1, task.id=t%201".parse().unwrap());
        assert_eq!(s.identify(&h).as_deref(), Some("t 1"));
        h.insert("x-task-id", " explicit ".parse().unwrap());
        assert_eq!(s.identify(&h).as_deref(), Some("explicit"));
    }

    #[test]
    fn the_trace_id_fallback_can_be_off_and_bad_traceparents_name_no_task() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", TP.parse().unwrap());
        assert_eq!(TaskSource::new(&[], false).identify(&h), None);
        let on = TaskSource::new(&[], true);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            h.insert("traceparent", bad.parse().unwrap());
            assert_eq!(on.identify(&h), None, "{bad}");
        }
    }

    #[test]
    fn long_ids_are_cut() {
        let s = TaskSource::new(&["x-task-id".into()], true);
        let mut h = HeaderMap::new();
        h.insert("x-task-id", "t".repeat(300).parse().unwrap());
        assert_eq!(s.identify(&h).unwrap().len(), MAX_SESSION_ID_LEN);
    }
}
