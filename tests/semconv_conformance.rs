//! Conformance with the GenAI semantic conventions, checked against the conventions' own registry
//! files (vendored under tests/fixtures/semconv, source and commit in its README): real calls
//! through the proxy (a streamed chat with cached and reasoning tokens, a JSON chat, embeddings,
//! an Anthropic stream that writes the cache), then every `gen_ai.*` attribute on the decoded
//! OTLP spans must be a registry attribute of the registry's type, and every `gen_ai_*` metric
//! family on `/metrics` must be a registry metric under its Prometheus name (dots to
//! underscores, the unit's suffix, `_total` for counters) with the same instrument, its
//! `gen_ai_*` labels registry attributes. A rename upstream or here fails CI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod otlp_receiver;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use otlp_receiver::*;
use serde::Deserialize;

/// The vendored conventions.
const SEMCONV_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/semconv/genai-main-2026-10"
);

#[derive(Deserialize)]
struct RegistryFile {
    attributes: Vec<Attribute>,
}

#[derive(Deserialize)]
struct Attribute {
    key: String,
    #[serde(rename = "type")]
    ty: AttrType,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AttrType {
    Enum { members: Vec<Member> },
    Simple(String),
}

#[derive(Deserialize)]
struct Member {
    value: String,
}

/// `renamed-after-registry.yaml`: attribute renames newer than the vendored registry.
#[derive(Deserialize)]
struct RenamesFile {
    renamed: Vec<Rename>,
}

#[derive(Deserialize)]
struct Rename {
    key: String,
    from: String,
    anchor_metric: String,
}

#[derive(Deserialize)]
struct MetricsFile {
    metrics: Vec<MetricDef>,
}

#[derive(Deserialize)]
struct MetricDef {
    name: String,
    instrument: String,
    unit: String,
}

/// The registry's attributes and metrics.
struct Conventions {
    attributes: BTreeMap<String, AttrType>,
    metrics: Vec<MetricDef>,
}

impl Conventions {
    fn load() -> Conventions {
        let read = |f: &str| std::fs::read_to_string(format!("{SEMCONV_DIR}/{f}")).unwrap();
        let registry: RegistryFile = serde_saphyr::from_str(&read("registry.yaml")).unwrap();
        let mut metrics = Vec::new();
        for f in ["metrics.yaml", "token-metrics.yaml"] {
            let file: MetricsFile = serde_saphyr::from_str(&read(f)).unwrap();
            metrics.extend(file.metrics);
        }
        let mut attributes: BTreeMap<String, AttrType> = registry
            .attributes
            .into_iter()
            .map(|a| (a.key, a.ty))
            .collect();
        // Renames the conventions made after the vendored registry (see the fixture README):
        // each must be anchored in the vendored metric files, and the earlier name leaves.
        let renames: RenamesFile = serde_saphyr::from_str(
            &std::fs::read_to_string(format!("{SEMCONV_DIR}/../renamed-after-registry.yaml"))
                .unwrap(),
        )
        .unwrap();
        for r in renames.renamed {
            assert!(
                metrics.iter().any(|m| m.name == r.anchor_metric),
                "rename {} -> {}: its anchor {} is not in the vendored metrics",
                r.from,
                r.key,
                r.anchor_metric
            );
            let ty = attributes
                .remove(&r.from)
                .unwrap_or_else(|| panic!("{} (renamed) is not in the registry", r.from));
            attributes.insert(r.key, ty);
        }
        Conventions {
            attributes,
            metrics,
        }
    }

    /// The registry attribute a Prometheus label stands for (dots became underscores).
    fn attribute_for_label(&self, label: &str) -> Option<(&String, &AttrType)> {
        self.attributes
            .iter()
            .find(|(k, _)| k.replace('.', "_") == label)
    }
}

/// A metric's Prometheus name, as OpenTelemetry's Prometheus compatibility rules spell it.
fn prometheus_name(m: &MetricDef) -> String {
    let mut name = m.name.replace('.', "_");
    let unit = match m.unit.as_str() {
        "s" => "seconds",
        "By" => "bytes",
        // Annotations (`{token}`) carry no unit.
        u if u.starts_with('{') => "",
        u => u,
    };
    if !unit.is_empty() && !name.ends_with(unit) {
        name.push('_');
        name.push_str(unit);
    }
    if m.instrument == "counter" {
        name.push_str("_total");
    }
    name
}

/// Whether a decoded OTLP value has the registry type.
fn has_type(ty: &AttrType, v: &V) -> bool {
    match ty {
        AttrType::Enum { .. } => matches!(v, V::S(_)),
        AttrType::Simple(t) => match t.as_str() {
            "string" => matches!(v, V::S(_)),
            "int" => matches!(v, V::I(_)),
            "double" => matches!(v, V::F(_)),
            "boolean" => matches!(v, V::B(_)),
            "string[]" => matches!(v, V::A(a) if a.iter().all(|x| matches!(x, V::S(_)))),
            "int[]" => matches!(v, V::A(a) if a.iter().all(|x| matches!(x, V::I(_)))),
            "any" => true,
            other => panic!("registry type {other} not handled by this test"),
        },
    }
}

/// `# TYPE` of every `gen_ai_` family, and the label names and values of its samples.
fn gen_ai_families(text: &str) -> BTreeMap<String, (String, Vec<(String, String)>)> {
    let mut families: BTreeMap<String, (String, Vec<(String, String)>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            if name.starts_with("gen_ai_") {
                families.insert(name.to_string(), (ty.to_string(), Vec::new()));
            }
            continue;
        }
        let Some((series, _)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| families.contains_key(*f)))
            .unwrap_or(name);
        let Some((_, seen)) = families.get_mut(family) else {
            continue;
        };
        for pair in labels.trim_end_matches('}').split("\",") {
            if let Some((k, v)) = pair.split_once("=\"") {
                seen.push((k.to_string(), v.trim_end_matches('"').to_string()));
            }
        }
    }
    families
}

#[tokio::test]
async fn every_gen_ai_name_we_emit_is_in_the_vendored_conventions_with_its_type_and_unit() {
    let conventions = Conventions::load();
    let rx = Receiver::grpc().await;
    let mock = mock().await;
    let telemetry = format!(
        "telemetry:\n  service_name: tw-semconv\n  otlp:\n    endpoint: {}\n    protocol: grpc\n",
        rx.endpoint()
    );
    let openai = TestProxy::to("semconv-openai", mock.addr(), &telemetry).await;
    let anthropic = TestProxy::to("semconv-anthropic", fixture_upstream().await, &telemetry).await;
    let agent = [("x-agent-name", "semconv-agent")];

    let stream = r#"{"model":"gpt-4o-mini","max_completion_tokens":300,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let (resp, _) = post(
        &openai.url("/v1/chat/completions"),
        &[
            agent[0],
            ("x-session-id", "semconv-session"),
            ("x-mock-input-tokens", "40"),
            ("x-mock-cached-tokens", "16"),
            ("x-mock-reasoning-tokens", "8"),
            ("x-mock-output-chunks", "4"),
        ],
        stream,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let json = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let (resp, _) = post(&openai.url("/v1/chat/completions"), &agent, json).await;
    assert_eq!(resp.status(), 200);
    let embed = r#"{"model":"text-embedding-3-small","input":"hi"}"#;
    let (resp, _) = post(&openai.url("/v1/embeddings"), &agent, embed).await;
    assert_eq!(resp.status(), 200);
    let cache_write = r#"{"model":"claude-sonnet-4-6","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let (resp, _) = post(
        &anthropic.url("/v1/messages"),
        &[
            agent[0],
            ("x-fixture", "wild/anthropic/cache_ttl_stream.sse"),
        ],
        cache_write,
    )
    .await;
    assert_eq!(resp.status(), 200);

    // Spans: every gen_ai.* attribute (span and event) is a registry attribute of its type.
    assert!(
        eventually(Duration::from_secs(10), || async { rx.spans().len() >= 4 }).await,
        "four spans exported, got {}",
        rx.spans().len()
    );
    let mut checked = BTreeSet::new();
    for r in rx.spans() {
        let events = r.span.events.iter().flat_map(|e| e.attributes.iter());
        for kv in r.span.attributes.iter().chain(events) {
            if !kv.key.starts_with("gen_ai.") {
                continue;
            }
            let Some(ty) = conventions.attributes.get(&kv.key) else {
                panic!("span {:?}: {} is not in the registry", r.span.name, kv.key);
            };
            let v = value(&kv.value);
            assert!(
                has_type(ty, &v),
                "{}: {v:?} is not of the registry's type",
                kv.key
            );
            checked.insert(kv.key.clone());
        }
    }
    // What the calls above must have exercised (a test that checked nothing would pass).
    for key in [
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.response.finish_reasons",
        "gen_ai.response.time_to_first_chunk",
        "gen_ai.request.stream",
    ] {
        assert!(checked.contains(key), "no span carried {key}: {checked:?}");
    }

    // Metrics: every gen_ai_ family is a registry metric (name, unit, instrument), its gen_ai_
    // labels registry attributes.
    let text = openai.metrics().await;
    let families = gen_ai_families(&text);
    for (name, (ty, labels)) in &families {
        let Some(def) = conventions
            .metrics
            .iter()
            .find(|m| prometheus_name(m) == *name)
        else {
            panic!("{name} is no registry metric under its Prometheus name");
        };
        assert_eq!(ty, &def.instrument, "{name}: instrument");
        for (label, v) in labels.iter().filter(|(l, _)| l.starts_with("gen_ai_")) {
            let Some((key, ty)) = conventions.attribute_for_label(label) else {
                panic!("{name}: label {label} is no registry attribute");
            };
            if let (AttrType::Enum { members }, "gen_ai.token.modality" | "gen_ai.token.type") =
                (ty, key.as_str())
            {
                assert!(members.iter().any(|m| m.value == *v), "{name}: {label}={v}");
            }
        }
    }
    for want in tokenwarden::telemetry::metrics::GEN_AI_LATEST_NAMES {
        assert!(families.contains_key(*want), "{want} not exported:\n{text}");
    }
    let cache_write = metric_value(
        &text,
        "gen_ai_client_inference_usage_cache_write_input_tokens_total",
        &[
            ("agent", "semconv-agent"),
            ("gen_ai_provider_name", "anthropic"),
        ],
    );
    assert_eq!(
        cache_write, 556.0,
        "the fixture's cache_creation_input_tokens"
    );
}
