//! The shipped Grafana dashboards: current schema, stable uids, the Prometheus data source as a
//! variable, templated by agent / model / route, every query on a metric the proxy exports, and
//! the JSON is what `scripts/gen_dashboards.py` generates. (tests/sre_stack.rs runs every query
//! against a real Prometheus.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn boards() -> Vec<(String, Value)> {
    [
        "overview.json",
        "budgets-and-cost.json",
        "agents-and-tools.json",
    ]
    .iter()
    .map(|f| {
        let p = Path::new(ROOT).join("dashboards").join(f);
        let v = serde_json::from_slice(&std::fs::read(&p).unwrap())
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        (f.to_string(), v)
    })
    .collect()
}

fn exprs(board: &Value) -> Vec<String> {
    board["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn dashboards_are_templated_and_current() {
    let uids: Vec<_> = boards()
        .iter()
        .map(|(_, b)| b["uid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        uids,
        [
            "tokenwarden-overview",
            "tokenwarden-budgets",
            "tokenwarden-agents"
        ]
    );
    for (name, b) in boards() {
        assert!(b["schemaVersion"].as_u64().unwrap() >= 39, "{name}: schema");
        let vars = b["templating"]["list"].as_array().unwrap();
        let var = |n: &str| vars.iter().find(|v| v["name"] == n);
        assert_eq!(var("datasource").unwrap()["type"], "datasource", "{name}");
        assert_eq!(var("datasource").unwrap()["query"], "prometheus", "{name}");
        assert!(var("agent").is_some(), "{name}: agent variable");
        for p in b["panels"].as_array().unwrap() {
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{name}: {}",
                p["title"]
            );
            assert!(
                !p["targets"].as_array().unwrap().is_empty(),
                "{name}: {}",
                p["title"]
            );
        }
        let all = exprs(&b).join("\n");
        assert!(all.contains("$agent"), "{name}: filtered by agent");
        if var("model").is_some() {
            assert!(all.contains("$model"), "{name}: filtered by model");
        }
        if var("route").is_some() {
            assert!(all.contains("$route"), "{name}: filtered by route");
        }
    }
}

/// Whether `name` (a series name in a query) is a metric the proxy exports by default: a
/// contract name (the GenAI ones of the newest conventions, not the earlier names behind
/// `gen_ai_previous`) or a per-task metric, or a histogram's `_bucket`, `_sum` or `_count`
/// series of one.
fn exported(name: &str) -> bool {
    use tokenwarden::telemetry::metrics::{
        CONTRACT_NAMES, EXEMPLAR_NAMES, GEN_AI_LATEST_NAMES, GEN_AI_PREVIOUS_NAMES, TASK_NAMES,
        TOOL_LEG_NAMES,
    };
    let base = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    let genai_default = GEN_AI_LATEST_NAMES.contains(&base)
        || (CONTRACT_NAMES.contains(&base) && !GEN_AI_PREVIOUS_NAMES.contains(&base));
    genai_default
        || TASK_NAMES.contains(&base)
        || TOOL_LEG_NAMES.contains(&base)
        || EXEMPLAR_NAMES.contains(&base)
}

#[test]
fn every_query_uses_exported_metrics() {
    for (name, b) in boards() {
        for e in exprs(&b) {
            let used: Vec<&str> = e
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| {
                    w.starts_with("tokenwarden_")
                        || w.starts_with("gen_ai_client_")
                        || w.starts_with("mcp_client_")
                })
                .collect();
            assert!(!used.is_empty(), "{name}: {e}");
            for m in used {
                assert!(exported(m), "{name}: unknown metric {m} in {e}");
            }
        }
    }
}

/// `$model` lists served models (`tokenwarden_tokens_total`'s `model`), so every GenAI series
/// is filtered by its served model: filtered by the requested one, a dated served name (an
/// alias resolved upstream) would empty the latency and token panels.
#[test]
fn the_model_variable_filters_the_label_it_lists() {
    for (name, b) in boards() {
        let vars = b["templating"]["list"].as_array().unwrap();
        let Some(model) = vars.iter().find(|v| v["name"] == "model") else {
            continue;
        };
        assert_eq!(
            model["definition"], "label_values(tokenwarden_tokens_total, model)",
            "{name}"
        );
        for e in exprs(&b) {
            assert!(
                !e.contains("gen_ai_request_model=~\"$model\""),
                "{name}: a served-model variable filters the requested model: {e}"
            );
        }
    }
}

#[test]
fn committed_json_is_what_the_generator_makes() {
    let out = Command::new("python3")
        .arg(Path::new(ROOT).join("scripts/gen_dashboards.py"))
        .arg("--check")
        .output()
        .expect("python3 runs scripts/gen_dashboards.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Latency and tokens-per-call panels show exemplars, and the provisioned data source links the
/// exemplars' `trace_id` (the label the proxy's OpenMetrics exposition gives them) to a trace.
#[test]
fn latency_and_token_panels_link_to_traces_through_exemplars() {
    use tokenwarden::telemetry::exemplars::TRACE_ID_LABEL;
    use tokenwarden::telemetry::metrics::buckets_of;
    let (_, overview) = boards().into_iter().next().unwrap();
    let mut linked = 0;
    for p in overview["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            let carries = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter_map(|w| w.strip_suffix("_bucket"))
                .any(|m| buckets_of(m).is_some());
            if carries {
                assert_eq!(t["exemplar"], true, "{}: {expr}", p["title"]);
                linked += 1;
            }
        }
    }
    assert!(
        linked >= 8,
        "latency, first token, tokens-per-call and cost-per-call targets: {linked}"
    );
    // The cost panels link too (their rate-of-spend panels read a gauge, which carries none).
    for (name, board) in boards() {
        let cost_linked = board["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["targets"].as_array().into_iter().flatten())
            .any(|t| {
                t["expr"]
                    .as_str()
                    .is_some_and(|e| e.contains("tokenwarden_call_cost_usd_bucket"))
                    && t["exemplar"] == true
            });
        if name.contains("overview") || name.contains("budgets") {
            assert!(cost_linked, "{name}: no cost panel links to traces");
        }
    }
    let ds = std::fs::read_to_string(
        Path::new(ROOT).join("deploy/grafana/provisioning/datasources/prometheus.yaml"),
    )
    .unwrap();
    let ds: serde_json::Value = serde_saphyr::from_str(&ds).unwrap();
    let dest = &ds["datasources"][0]["jsonData"]["exemplarTraceIdDestinations"][0];
    assert_eq!(dest["name"], TRACE_ID_LABEL);
    assert!(
        dest["url"]
            .as_str()
            .is_some_and(|u| u.contains("${__value.raw}"))
            || dest["datasourceUid"].is_string(),
        "{dest}"
    );
}
