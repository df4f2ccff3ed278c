//! Traffic cannot grow the metric label sets: 1,000 distinct model names (and agent names)
//! leave each label at no more than the cap plus `other`. Its own test binary, so the
//! process-wide recorder holds only this test's series.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use futures_util::stream::{self, StreamExt};

/// The default `telemetry.max_label_values`.
const CAP: usize = 200;

fn distinct(metrics: &str, metric: &str, label: &str) -> BTreeSet<String> {
    let key = format!("{label}=\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(metric))
        .filter_map(|l| {
            let start = l.find(&key)? + key.len();
            let end = l[start..].find('"')?;
            Some(l[start..start + end].to_string())
        })
        .collect()
}

#[tokio::test]
async fn a_thousand_models_and_agents_stay_within_the_cap() {
    let mock = mock().await;
    let proxy = TestProxy::to("llm", mock.addr(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let results: Vec<u16> = stream::iter(0..1000)
        .map(|i| {
            let url = url.clone();
            async move {
                let body = format!(
                    r#"{{"model":"model-{i:04}","messages":[{{"role":"user","content":"hi"}}]}}"#
                );
                let agent = format!("agent-{i:04}");
                let (resp, _) = post(&url, &[("x-agent-name", &agent)], &body).await;
                resp.status().as_u16()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(results.iter().all(|s| *s == 200));

    let m = proxy.metrics().await;
    for (metric, label) in [
        ("tokenwarden_tokens_total", "model"),
        (
            "gen_ai_client_inference_operation_input_tokens_count",
            "gen_ai_request_model",
        ),
        (
            "gen_ai_client_inference_usage_output_tokens_total",
            "gen_ai_response_model",
        ),
        (
            "gen_ai_client_inference_duration_seconds_count",
            "gen_ai_request_model",
        ),
        ("tokenwarden_requests_total", "agent"),
        ("tokenwarden_tokens_total", "agent"),
    ] {
        let values = distinct(&m, metric, label);
        assert!(
            values.len() <= CAP + 1,
            "{metric}{{{label}}} has {} values",
            values.len()
        );
        assert!(
            values.contains("other"),
            "{metric}{{{label}}} never said other"
        );
        assert!(
            values.len() > CAP / 2,
            "{metric}{{{label}}}: the cap admitted too few: {}",
            values.len()
        );
    }
    // Session ids are never labels.
    assert!(!m.contains("session=") && !m.contains("session_id="));
    proxy.stop().await;
}
