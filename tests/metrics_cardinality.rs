//! A client that sends thousands of model × agent combinations cannot explode `/metrics`: every
//! metric keeps at most `telemetry.max_series_per_metric` label sets (plus the folded `other`
//! ones), folded recordings are counted, and no count is lost in the folding.
//!
//! Its own test binary: the series bound is process-wide, like the recorder.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use futures_util::StreamExt;

const MAX_SERIES: usize = 40;
const MODELS: usize = 30;
const AGENTS: usize = 30;

/// Label sets per metric family in a Prometheus text scrape (histogram buckets, sums and counts
/// are one series with their labels, `le` aside).
fn series_per_metric(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, _value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        let labels: Vec<&str> = labels
            .split("\",")
            .map(|l| l.trim_end_matches('"'))
            .filter(|l| !l.starts_with("le=") && !l.is_empty())
            .collect();
        out.entry(family.to_string())
            .or_default()
            .insert(labels.join(","));
    }
    out
}

#[tokio::test]
async fn thousands_of_model_agent_pairs_stay_within_the_series_bound() {
    let m = mock().await;
    let p = TestProxy::to(
        "card",
        m.addr(),
        &format!("telemetry:\n  max_label_values: 1000\n  max_series_per_metric: {MAX_SERIES}\n"),
    )
    .await;
    let url = p.url("/v1/chat/completions");
    let pairs: Vec<(usize, usize)> = (0..MODELS)
        .flat_map(|m| (0..AGENTS).map(move |a| (m, a)))
        .collect();
    // Every pair twice: a folded label set recorded again must be counted again (its handle is
    // never kept).
    let statuses: Vec<u16> = futures_util::stream::iter(pairs.iter().chain(&pairs).copied())
        .map(|(model, agent)| {
            let url = url.clone();
            async move {
                let body = format!(
                    r#"{{"model":"model-{model}","messages":[{{"role":"user","content":"hi"}}],"tools":[{{"type":"function","function":{{"name":"get_weather","parameters":{{}}}}}}]}}"#
                );
                let agent = format!("agent-{agent}");
                let (resp, _) = post(
                    &url,
                    &[("x-agent-name", &agent), ("x-mock-tool-calls", "1")],
                    &body,
                )
                .await;
                resp.status().as_u16()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    let text = p.metrics().await;
    let families = series_per_metric(&text);
    // The folded series: traffic labels are all `other`, the rest (route, status, token type,
    // source…) come from config and protocol, a handful of values each.
    let slack = 12;
    for (name, sets) in &families {
        assert!(
            sets.len() <= MAX_SERIES + slack,
            "{name}: {} label sets past the bound {MAX_SERIES}",
            sets.len()
        );
    }
    let calls = (2 * MODELS * AGENTS) as f64;
    // Metrics labelled by agent × model: 900 pairs, folded past the bound.
    for family in [
        "tokenwarden_tokens_total",
        "gen_ai_client_inference_operation_input_tokens",
        "gen_ai_client_inference_duration_seconds",
    ] {
        assert!(
            families[family].len() > MAX_SERIES / 2,
            "{family} admitted its own label sets"
        );
        assert!(
            families[family].iter().any(|s| s.contains("=\"other")),
            "{family}: nothing folded"
        );
        assert!(
            metric_value(
                &text,
                "tokenwarden_metric_series_folded_total",
                &[("metric", family)]
            ) > 0.0,
            "{family}: folds are counted"
        );
    }
    // Each folded recording is counted: every call records one duration, so the folded ones are
    // the calls outside the admitted label sets.
    let duration = "gen_ai_client_inference_duration_seconds";
    let admitted: f64 = text
        .lines()
        .filter(|l| l.starts_with(&format!("{duration}_count{{")) && !l.contains("=\"other\""))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum();
    assert_eq!(
        metric_value(
            &text,
            "tokenwarden_metric_series_folded_total",
            &[("metric", duration)]
        ),
        calls - admitted,
        "one fold counted per folded recording"
    );
    // Folding loses no count: every call is in requests_total and in the duration histogram.
    assert_eq!(metric_sum(&text, "tokenwarden_requests_total", &[]), calls);
    assert_eq!(
        metric_sum(&text, "gen_ai_client_inference_duration_seconds_count", &[]),
        calls
    );
    assert_eq!(
        metric_sum(&text, "tokenwarden_tool_calls_total", &[]),
        calls
    );
    // A scrape stays small: well under a megabyte for 900 distinct pairs.
    assert!(text.len() < 1_000_000, "{} bytes", text.len());
}
