//! The shipped Prometheus alert rules, checked by the real `promtool` (Debian package
//! `prometheus`): the rules parse, and every alert's unit tests pass. Every alert has a runbook
//! section.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/prometheus/tokenwarden.rules.yaml"
);
const RULE_TESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/prometheus/tokenwarden.rules.test.yaml"
);

fn promtool() -> String {
    let bin = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    match Command::new(&bin).arg("--version").output() {
        Ok(o) if o.status.success() => bin,
        _ => panic!(
            "`{bin}` not found: install Prometheus's promtool (Debian: apt-get install prometheus) \
             or set PROMTOOL to its path"
        ),
    }
}

fn run(args: &[&str]) -> String {
    let out = Command::new(promtool()).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn rules_parse() {
    let out = run(&["check", "rules", RULES]);
    assert!(out.contains("SUCCESS: 13 rules found"), "{out}");
}

#[test]
fn every_alert_passes_its_unit_tests() {
    let out = run(&["test", "rules", RULE_TESTS]);
    assert!(out.contains("SUCCESS"), "{out}");
}

fn alert_names() -> Vec<String> {
    std::fs::read_to_string(RULES)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_alert_is_unit_tested_and_has_a_runbook_section() {
    let names = alert_names();
    assert_eq!(names.len(), 13);
    let tests = std::fs::read_to_string(RULE_TESTS).unwrap();
    let runbook =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/runbook.md"))
            .unwrap();
    let rules = std::fs::read_to_string(RULES).unwrap();
    for name in &names {
        assert!(
            tests.contains(&format!(
                "alertname: {name}\n        exp_alerts:\n          - "
            )),
            "{name}: no unit test expects it to fire"
        );
        assert!(
            runbook.contains(&format!("\n## {name}\n")),
            "{name}: no runbook section"
        );
        assert!(
            rules.contains(&format!(
                "runbook_url: \"docs/runbook.md#{}\"",
                name.to_lowercase()
            )),
            "{name}: runbook_url missing or not pointing at its section"
        );
    }
}
