//! The OTLP exporter as the `tokenwarden` binary runs it: the standard `OTEL_*` environment
//! variables (headers, resource, service name) over both protocols, and spans a collector
//! rejects (partial success) counted as dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod otlp_receiver;

use std::time::Duration;

use common::*;
use otlp_receiver::*;

const SECRET: &str = "otlp-secret-7f3a9c";

fn config(mock: std::net::SocketAddr, endpoint: &str, protocol: &str) -> tempfile::NamedTempFile {
    config_file(&format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nlogging:\n  access_log: false\n\
         routes:\n  - name: llm\n    path_prefix: /\n    upstream: http://{mock}\n\
         telemetry:\n  service_name: from-config\n  otlp:\n    endpoint: {endpoint}\n    protocol: {protocol}\n"
    ))
}

async fn one_call(proxy: &ProxyProcess) {
    let (resp, _) = post(
        &format!("http://{}/v1/chat/completions", proxy.addr),
        &[("content-type", "application/json")],
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(resp.status(), 200);
}

fn resource_value(r: &Received, key: &str) -> Option<V> {
    kvs(&r.resource).get(key).cloned()
}

#[tokio::test]
async fn otel_headers_and_resource_variables_reach_the_collector_over_both_protocols() {
    for protocol in ["grpc", "http"] {
        let rx = match protocol {
            "grpc" => Receiver::grpc().await,
            _ => Receiver::http().await,
        };
        let mock = mock().await;
        let cfg = config(mock.addr(), &rx.endpoint(), protocol);
        let generic = format!("x-tenant=acme,authorization=Bearer%20generic-{SECRET}");
        let traces = format!("authorization=Bearer%20{SECRET}");
        let mut proxy = ProxyProcess::spawn_with_env(
            cfg.path(),
            &[
                ("OTEL_EXPORTER_OTLP_HEADERS", &generic),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", &traces),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment.name=staging,service.name=overridden",
                ),
                ("OTEL_SERVICE_NAME", "svc-from-env"),
                ("POD_NAME", "agent-7d9f"),
                ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ],
        )
        .await;
        one_call(&proxy).await;
        let span = rx.wait_for("for the call", |_| true).await;

        let headers = rx.headers();
        let h = headers.first().expect("an export arrived");
        assert_eq!(h.get("x-tenant").unwrap(), "acme", "{protocol}");
        assert_eq!(
            h.get("authorization").unwrap(),
            &format!("Bearer {SECRET}"),
            "{protocol}: the traces variable overrides the generic one"
        );
        let expected_type = match protocol {
            "grpc" => "application/grpc",
            _ => "application/x-protobuf",
        };
        assert!(
            h.get("content-type")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(expected_type),
            "{protocol}: {h:?}"
        );
        let s = |v: &str| Some(s(v));
        assert_eq!(
            resource_value(&span, "service.name"),
            s("svc-from-env"),
            "{protocol}"
        );
        assert_eq!(
            resource_value(&span, "deployment.environment.name"),
            s("staging")
        );
        assert_eq!(resource_value(&span, "k8s.pod.name"), s("agent-7d9f"));
        assert_eq!(
            resource_value(&span, "service.version"),
            s(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(resource_value(&span, "telemetry.sdk.language"), s("rust"));

        // The header values are credentials: not in the proxy's logs.
        proxy.signal("TERM");
        let _ = tokio::time::timeout(Duration::from_secs(10), proxy.child.wait()).await;
        let mut logs = String::new();
        while let Ok(line) = proxy.stderr_lines.try_recv() {
            logs.push_str(&line);
            logs.push('\n');
        }
        assert!(
            !logs.contains(SECRET),
            "{protocol}: secret in logs:\n{logs}"
        );
    }
}

#[tokio::test]
async fn spans_the_collector_rejects_count_as_dropped() {
    let rx = Receiver::grpc().await;
    rx.reject(1);
    let mock = mock().await;
    let cfg = config(mock.addr(), &rx.endpoint(), "grpc");
    let proxy =
        ProxyProcess::spawn_with_env(cfg.path(), &[("OTEL_BSP_SCHEDULE_DELAY", "50")]).await;
    one_call(&proxy).await;
    rx.wait_for("for the call", |_| true).await;
    let admin = proxy.admin;
    let counted = eventually(Duration::from_secs(10), || async move {
        let (_, body) = get(&format!("http://{admin}/metrics")).await;
        let text = String::from_utf8_lossy(&body).into_owned();
        metric_value(&text, "tokenwarden_spans_dropped_total", &[]) == 1.0
    })
    .await;
    assert!(
        counted,
        "one rejected span counted in tokenwarden_spans_dropped_total"
    );
}
