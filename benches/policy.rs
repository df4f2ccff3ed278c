//! Policy evaluation per request with a 20-tool schema set: the request side (allow/deny,
//! forbidden patterns, max_tokens cap, loop hash, tool results, context guard — body parsed
//! once), the response side (two tool calls validated against their declared schemas, compiled
//! per request), and, for scale, request inspection and the input-token estimate alone (the
//! context guard calls the estimate; it dominates the request side).
//!
//! The `agent_request` group is the request side as the proxy runs it for agent-sized requests
//! (20 tools, 0 / 64 / 256 KiB of history, built like the peer kit's `post.lua` with `TOOLS` and
//! `HISTORY_KB`), default policies with a session: the body parsed once and shared by inspection
//! and the policies (`one_parse`), against inspection and policies each reading the bytes
//! (`two_parses`), the read into the document alone (`parse_only`) and, for scale, the parse
//! into a `serde_json::Value` and its drop (`value_parse_only`: what the document replaced). The
//! tokenizer's chunk cache is warm after the first iteration, as for an agent resending its
//! history.
//!
//! Run: `cargo bench --bench policy`. Numbers go to BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use serde_json::{json, Value};
use tokenwarden::config::load_from_str;
use tokenwarden::policy::{check_calls, Asker, Policies, PolicySet, ToolRules};
use tokenwarden::providers::protocol::{classify, RouteProtocol};
use tokenwarden::providers::request::{inspect, inspect_doc};
use tokenwarden::providers::{Doc, ToolCall};
use tokenwarden::telemetry::labels::Labels;

const PATH: &str = "/v1/chat/completions";

fn tool_names() -> Vec<String> {
    (0..20).map(|i| format!("tool_{i:02}")).collect()
}

/// An OpenAI chat request declaring 20 tools, each with a realistic object schema, and a short
/// conversation with one round of tool results.
fn request_body(max_tokens: u64) -> Vec<u8> {
    let tools: Vec<Value> = tool_names()
        .iter()
        .map(|n| {
            json!({"type":"function","function":{"name": n, "description": "Looks something up in a system of record.",
            "parameters": {"type":"object","properties":{
                "query":{"type":"string","minLength":1,"maxLength":200},
                "limit":{"type":"integer","minimum":1,"maximum":50},
                "filters":{"type":"array","items":{"type":"string","enum":["open","closed","pending"]}},
                "sort":{"type":"string","enum":["asc","desc"]}},
            "required":["query"],"additionalProperties":false}}})
        })
        .collect();
    json!({"model":"gpt-4o-mini","max_tokens":max_tokens,"tools":tools,"messages":[
        {"role":"system","content":"You are a support agent. Use the tools to answer precisely."},
        {"role":"user","content":"Find the open tickets for customer 1042 and summarise them."},
        {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"tool_03","arguments":"{\"query\":\"customer 1042\"}"}}]},
        {"role":"tool","tool_call_id":"c1","content":"3 tickets: #88 login loop, #91 billing, #97 export fails"},
        {"role":"user","content":"Thanks. Now check which of them are pending."}]})
    .to_string()
    .into_bytes()
}

fn config() -> String {
    let names = tool_names().join(", ");
    format!(
        "agents:\n  bench:\n    allowed_tools: [{names}]\n    denied_tools: [delete_customer_data, modify_billing]\n    require_approval: [tool_19]\n    max_steps: 1000\n    max_tokens_cap: {{ limit: 2000 }}\n    tool_error_markers: [\"ERROR:\"]\n    forbidden_input:\n      - {{ id: aws_key, regex: \"AKIA[0-9A-Z]{{16}}\" }}\n      - {{ id: codename, contains: \"project nightingale\", case_insensitive: true }}\n"
    )
}

fn bench(c: &mut Criterion) {
    let cfg = load_from_str(&config(), "bench").unwrap();
    let policies = Policies::new(
        PolicySet::from_config(&cfg).unwrap(),
        Arc::new(Labels::new(200)),
    );
    let body = request_body(1000);
    let over_cap = request_body(4000);
    let class = classify(RouteProtocol::Auto, PATH);
    let facts = inspect(&class, PATH, None, &body).unwrap();
    let facts_over = inspect(&class, PATH, None, &over_cap).unwrap();
    assert_eq!(facts.tools.len(), 20);
    let agent: Arc<str> = Arc::from("bench");
    let session: Arc<str> = Arc::from("bench-session");

    let mut g = c.benchmark_group("policy");
    g.bench_function("inspect_request_20_tools", |b| {
        b.iter(|| inspect(&class, PATH, None, black_box(&body)))
    });
    let mut uncatalogued = facts.clone();
    uncatalogued.model = Some("a-model-not-in-the-catalog".into());
    let cases = [
        ("request_side_20_tools", &facts, &body),
        (
            "request_side_20_tools_no_context_guard",
            &uncatalogued,
            &body,
        ),
        (
            "request_side_20_tools_clamp_rewrite",
            &facts_over,
            &over_cap,
        ),
    ];
    for (name, facts, body) in cases {
        g.bench_function(name, |b| {
            b.iter_batched(
                || facts.clone(),
                |mut f| {
                    let asker = Asker {
                        agent: &agent,
                        operation: tokenwarden::record::Operation::Chat,
                        session: Some(&session),
                        step: Some(3),
                        now: tokio::time::Instant::now(),
                    };
                    let admitted = policies.evaluate(&asker, &mut f, black_box(body));
                    assert!(admitted.is_ok());
                    admitted.ok().map(|a| a.rewritten.is_some())
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.bench_function("estimate_input_20_tools", |b| {
        b.iter(|| tokenwarden::providers::estimate_input(facts.format, black_box(&body)))
    });
    g.bench_function("loop_hash_20_tools", |b| {
        let doc = Doc::parse(bytes::Bytes::copy_from_slice(&body)).unwrap();
        b.iter(|| tokenwarden::policy::request_hash(black_box(doc.root())))
    });
    g.bench_function("json_value_parse_20_tools", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(&body)).unwrap())
    });
    let rules = ToolRules::new(&cfg.agents["bench"]);
    let calls = vec![
        ToolCall {
            choice: 0,
            id: Some("c2".into()),
            name: "tool_07".into(),
            arguments: r#"{"query":"pending tickets","limit":10,"filters":["pending"]}"#.into(),
        },
        ToolCall {
            choice: 0,
            id: Some("c3".into()),
            name: "tool_12".into(),
            arguments: r#"{"query":"customer 1042","sort":"desc"}"#.into(),
        },
    ];
    g.bench_function("response_side_2_calls_20_tools", |b| {
        b.iter(|| check_calls(&rules, black_box(&facts.tools), black_box(&calls)))
    });
    g.bench_function("response_side_no_calls", |b| {
        b.iter(|| check_calls(&rules, black_box(&facts.tools), black_box(&[])))
    });
    g.finish();
}

/// An agent's request as the peer kit's `post.lua` builds it: `tools` declared tools and about
/// `history_kb` KiB of earlier turns; then `steps` more exchanges after its question (the same
/// conversation `steps` calls later).
fn agent_body(tools: usize, history_kb: usize, steps: usize) -> Vec<u8> {
    let mut history = String::new();
    let mut turn = 0;
    while history.len() < history_kb * 1024 {
        turn += 1;
        history.push_str(&format!(
            r#"{{"role":"user","content":"Step {turn}: look up the order status for customer {turn} and summarise what changed since the last check, including shipping, billing and any open tickets."}},{{"role":"assistant","content":"The order for customer {turn} shipped yesterday; billing is settled; one ticket about a delayed parcel is still open and waiting on the carrier."}},"#
        ));
    }
    let later: String = (1..=steps)
        .map(|s| format!(r#",{{"role":"assistant","content":"Answer {s}: hello there, in one short sentence."}},{{"role":"user","content":"Follow-up {s}: and now for the next customer?"}}"#))
        .collect();
    let tools: Vec<String> = (1..=tools)
        .map(|i| {
            format!(
                r#"{{"type":"function","function":{{"name":"tool_{i}","description":"Tool number {i}","parameters":{{"type":"object","properties":{{"id":{{"type":"string"}},"limit":{{"type":"integer","minimum":1,"maximum":100}}}},"required":["id"],"additionalProperties":false}}}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"system","content":"You are a helpful assistant."}},{history}{{"role":"user","content":"Say hello in one short sentence."}}{later}],"max_tokens":64,"tools":[{}],"stream":false}}"#,
        tools.join(",")
    )
    .into_bytes()
}

fn agent_request(c: &mut Criterion) {
    let policies = Policies::new(PolicySet::empty(), Arc::new(Labels::new(200)));
    let class = classify(RouteProtocol::Auto, PATH);
    let agent: Arc<str> = Arc::from("default");
    let session: Arc<str> = Arc::from("bench-session");
    let asker = || Asker {
        agent: &agent,
        operation: tokenwarden::record::Operation::Chat,
        session: Some(&session),
        step: Some(3),
        now: tokio::time::Instant::now(),
    };
    let mut g = c.benchmark_group("agent_request");
    for kb in [0, 64, 256] {
        let body = bytes::Bytes::from(agent_body(20, kb, 0));
        g.bench_function(format!("one_parse_20_tools_{kb}k"), |b| {
            b.iter(|| {
                let doc = Doc::parse(black_box(&body).clone()).unwrap();
                let mut facts = inspect_doc(&class, PATH, None, &doc).unwrap();
                let admitted = policies.evaluate_doc(&asker(), &mut facts, &body, doc);
                assert!(admitted.is_ok());
            })
        });
        g.bench_function(format!("parse_only_20_tools_{kb}k"), |b| {
            b.iter(|| Doc::parse(black_box(&body).clone()).unwrap())
        });
        g.bench_function(format!("parse_hashing_20_tools_{kb}k"), |b| {
            b.iter(|| Doc::parse_hashing(black_box(&body).clone()).unwrap())
        });
        // One conversation over 16 calls, each a step longer than the last (the bench's other
        // bodies repeat one request; every 16th parse here starts the conversation over).
        let steps: Vec<bytes::Bytes> = (0..16)
            .map(|n| bytes::Bytes::from(agent_body(20, kb, n)))
            .collect();
        let mut next = steps.iter().cycle();
        g.bench_function(format!("parse_growing_20_tools_{kb}k"), |b| {
            b.iter(|| Doc::parse_hashing(black_box(next.next().unwrap()).clone()).unwrap())
        });
        let doc = Doc::parse(body.clone()).unwrap();
        g.bench_function(format!("estimate_doc_20_tools_{kb}k"), |b| {
            b.iter(|| {
                tokenwarden::providers::estimate_input_doc(
                    tokenwarden::providers::Format::OpenAiChat,
                    black_box(&doc).root(),
                )
            })
        });
        g.bench_function(format!("input_bound_text_20_tools_{kb}k"), |b| {
            b.iter(|| tokenwarden::budget::input_bound(black_box(&body)))
        });
        g.bench_function(format!("input_bound_doc_20_tools_{kb}k"), |b| {
            b.iter(|| {
                let media = tokenwarden::budget::media_keys_in(black_box(&doc));
                tokenwarden::budget::input_bound_of(black_box(&body), media)
            })
        });
        g.bench_function(format!("value_parse_only_20_tools_{kb}k"), |b| {
            b.iter(|| serde_json::from_slice::<Value>(black_box(&body)).unwrap())
        });
        g.bench_function(format!("two_parses_20_tools_{kb}k"), |b| {
            b.iter(|| {
                let mut facts = inspect(&class, PATH, None, black_box(&body)).unwrap();
                let admitted = policies.evaluate(&asker(), &mut facts, &body);
                assert!(admitted.is_ok());
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, agent_request);
criterion_main!(benches);
