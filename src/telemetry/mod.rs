//! Logs and metrics: the subscriber, the Prometheus recorder, and bounded label values.

pub mod labels;
pub mod logging;
pub mod metrics;
