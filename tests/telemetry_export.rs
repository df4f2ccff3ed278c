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
        let rx = Receiver::speaking(protocol).await;
        let mock = mock().await;
        let cfg = config(mock.addr(), &rx.endpoint(), protocol);
        let generic = format!("x-tenant=acme,authorization=Bearer%20generic-{SECRET}");
        let traces = format!("authorization=Bearer%20{SECRET}");
        let proxy = ProxyProcess::spawn_with_env(
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
        let logs = proxy.stop_and_collect_logs().await;
        assert!(
            logs.contains("tokenwarden listening"),
            "{protocol}: logs: {logs}"
        );
        assert!(
            !logs.contains(SECRET),
            "{protocol}: secret in logs:\n{logs}"
        );
    }
}

#[tokio::test]
async fn malformed_otel_variables_are_ignored_with_warnings_that_hold_no_secret() {
    let rx = Receiver::grpc().await;
    let mock = mock().await;
    let cfg = config(mock.addr(), &rx.endpoint(), "grpc");
    // A common mistake: `Name: value` instead of `name=value`; the base64 `=` makes the whole
    // "Authorization: Basic ..." the header name. And a resource entry without `=`.
    let header = format!("Authorization: Basic {SECRET}=");
    let resource = format!("team={SECRET},broken");
    let proxy = ProxyProcess::spawn_with_env(
        cfg.path(),
        &[
            ("OTEL_EXPORTER_OTLP_HEADERS", &header),
            ("OTEL_RESOURCE_ATTRIBUTES", &resource),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    one_call(&proxy).await;
    let span = rx.wait_for("for the call", |_| true).await;
    assert_eq!(
        resource_value(&span, "team"),
        None,
        "a malformed variable is ignored whole"
    );
    let headers = rx.headers();
    assert!(headers[0].get("authorization").is_none(), "{headers:?}");
    let logs = proxy.stop_and_collect_logs().await;
    assert!(
        logs.contains("OTEL_RESOURCE_ATTRIBUTES") && logs.contains("not a valid HTTP header"),
        "both are warned about: {logs}"
    );
    assert!(!logs.contains(SECRET), "secret in logs:\n{logs}");
}

#[tokio::test]
async fn spans_the_collector_rejects_count_as_dropped_and_the_rest_do_not() {
    for protocol in ["grpc", "http"] {
        let rx = Receiver::speaking(protocol).await;
        let mock = mock().await;
        let cfg = config(mock.addr(), &rx.endpoint(), protocol);
        // A long linger: the three calls below go in one export.
        let env = [("OTEL_BSP_SCHEDULE_DELAY", "1500")];
        let dropped = |proxy: &ProxyProcess| {
            let admin = proxy.admin;
            async move {
                let (_, body) = get(&format!("http://{admin}/metrics")).await;
                metric_value(
                    &String::from_utf8_lossy(&body),
                    "tokenwarden_spans_dropped_total",
                    &[],
                )
            }
        };

        // Accepted in full: nothing counted.
        let proxy = ProxyProcess::spawn_with_env(cfg.path(), &env).await;
        one_call(&proxy).await;
        rx.wait_for("accepted", |_| true).await;
        assert_eq!(dropped(&proxy).await, 0.0, "{protocol}");

        // One of three rejected: exactly one counted, not the batch.
        rx.reject(1);
        let proxy = ProxyProcess::spawn_with_env(cfg.path(), &env).await;
        for _ in 0..3 {
            one_call(&proxy).await;
        }
        let arrived = eventually(Duration::from_secs(10), || async { rx.spans().len() == 4 }).await;
        assert!(arrived, "{protocol}: {} spans", rx.spans().len());
        assert_eq!(
            rx.headers().len(),
            2,
            "{protocol}: the three went in one export"
        );
        let counted = eventually(Duration::from_secs(5), || async {
            dropped(&proxy).await == 1.0
        })
        .await;
        assert!(counted, "{protocol}: dropped {}", dropped(&proxy).await);
    }
}

#[tokio::test]
async fn a_collector_that_never_answers_slows_no_request() {
    // Accepts connections and never reads or answers: exports hang until their timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    for protocol in ["grpc", "http"] {
        let mock = mock().await;
        let cfg = config(mock.addr(), &endpoint, protocol);
        let proxy = ProxyProcess::spawn_with_env(
            cfg.path(),
            &[
                // An export waits 30 s; a request that waited on one would show it.
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "30000"),
                ("OTEL_BSP_SCHEDULE_DELAY", "20"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2"),
            ],
        )
        .await;
        for i in 0..20 {
            tokio::time::timeout(Duration::from_secs(5), one_call(&proxy))
                .await
                .unwrap_or_else(|_| panic!("{protocol}: call {i} waited on the collector"));
        }
        // At most one batch (2) is stuck in the export and 4 wait in the queue: the rest are
        // dropped and counted.
        let (_, body) = get(&format!("http://{}/metrics", proxy.admin)).await;
        let dropped = metric_value(
            &String::from_utf8_lossy(&body),
            "tokenwarden_spans_dropped_total",
            &[],
        );
        assert!(dropped >= 14.0, "{protocol}: dropped {dropped}");
    }
}

#[tokio::test]
async fn spans_reach_a_tls_collector_trusted_through_otel_exporter_otlp_certificate() {
    let pki = TestPki::new();
    let ca_file = config_file(&pki.ca_pem);
    let ca_path = ca_file.path().to_str().unwrap().to_string();
    for protocol in ["grpc", "http"] {
        let rx = match protocol {
            "grpc" => Receiver::grpc_tls(&pki.cert_pem, &pki.key_pem).await,
            _ => Receiver::https(pki.server_config(&[b"http/1.1"])).await,
        };
        let mock = mock().await;
        let cfg = config(mock.addr(), &rx.tls_endpoint(), protocol);
        let env = [
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_path.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ];
        let proxy = ProxyProcess::spawn_with_env(cfg.path(), &env).await;
        one_call(&proxy).await;
        let span = rx.wait_for("over TLS", |_| true).await;
        assert_eq!(span.span.name, "chat gpt-4o-mini", "{protocol}");

        // Without the CA the collector is not trusted: requests still pass, spans are dropped.
        let untrusted = ProxyProcess::spawn_with_env(cfg.path(), &env[1..]).await;
        one_call(&untrusted).await;
        let admin = untrusted.admin;
        let dropped = eventually(Duration::from_secs(10), || async move {
            let (_, body) = get(&format!("http://{admin}/metrics")).await;
            let text = String::from_utf8_lossy(&body).into_owned();
            metric_value(&text, "tokenwarden_spans_dropped_total", &[]) >= 1.0
        })
        .await;
        assert!(
            dropped,
            "{protocol}: a span to an untrusted collector is counted as dropped"
        );
        assert_eq!(
            rx.spans().len(),
            1,
            "{protocol}: nothing arrived without trust"
        );
    }
}

#[tokio::test]
async fn an_unreadable_otlp_certificate_stops_the_start_with_the_variable_named() {
    let mock = mock().await;
    let cfg = config(mock.addr(), "https://localhost:4317", "grpc");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
        .arg("--config")
        .arg(cfg.path())
        .env("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_CERTIFICATE") && stderr.contains("/nonexistent/ca.pem"),
        "{stderr}"
    );
}

#[tokio::test]
async fn full_batches_go_at_once_and_the_rest_at_shutdown() {
    for protocol in ["grpc", "http"] {
        let rx = Receiver::speaking(protocol).await;
        let mock = mock().await;
        let cfg = config(mock.addr(), &rx.endpoint(), protocol);
        // A delay far past the test: only full batches, and the shutdown flush, send spans.
        let env = [
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2"),
        ];
        let proxy = ProxyProcess::spawn_with_env(cfg.path(), &env).await;
        for _ in 0..5 {
            one_call(&proxy).await;
        }
        let two_batches =
            eventually(Duration::from_secs(10), || async { rx.spans().len() == 4 }).await;
        assert!(two_batches, "{protocol}: {} spans", rx.spans().len());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            rx.spans().len(),
            4,
            "{protocol}: the fifth waits for its batch"
        );
        assert_eq!(rx.headers().len(), 2, "{protocol}: two exports of two");

        let logs = proxy.stop_and_collect_logs().await;
        assert_eq!(
            rx.spans().len(),
            5,
            "{protocol}: flushed at shutdown\n{logs}"
        );
        assert_eq!(rx.headers().len(), 3, "{protocol}");
        let ids: std::collections::HashSet<_> =
            rx.spans().iter().map(|r| r.span.span_id.clone()).collect();
        assert_eq!(ids.len(), 5, "{protocol}: five distinct spans");
    }
}

#[tokio::test]
async fn a_collector_that_refuses_exports_drops_them_counted_and_export_recovers() {
    for protocol in ["grpc", "http"] {
        let rx = Receiver::speaking(protocol).await;
        rx.set_unavailable(true);
        let mock = mock().await;
        let cfg = config(mock.addr(), &rx.endpoint(), protocol);
        let proxy =
            ProxyProcess::spawn_with_env(cfg.path(), &[("OTEL_BSP_SCHEDULE_DELAY", "50")]).await;
        let admin = proxy.admin;
        let dropped = || async move {
            let (_, body) = get(&format!("http://{admin}/metrics")).await;
            metric_value(
                &String::from_utf8_lossy(&body),
                "tokenwarden_spans_dropped_total",
                &[],
            )
        };
        for _ in 0..3 {
            one_call(&proxy).await;
        }
        let counted =
            eventually(Duration::from_secs(10), || async { dropped().await == 3.0 }).await;
        assert!(counted, "{protocol}: dropped {}", dropped().await);
        assert!(!rx.headers().is_empty(), "{protocol}: the exporter tried");
        assert!(rx.spans().is_empty());

        rx.set_unavailable(false);
        one_call(&proxy).await;
        let arrived = eventually(Duration::from_secs(10), || async { rx.spans().len() == 1 }).await;
        assert!(arrived, "{protocol}: export recovers after the backoff");
        assert_eq!(dropped().await, 3.0, "{protocol}");

        let logs = proxy.stop_and_collect_logs().await;
        let refusal = if protocol == "grpc" {
            format!("gRPC status UNAVAILABLE (14): {UNAVAILABLE_MESSAGE}")
        } else {
            "HTTP status 503".to_string()
        };
        assert!(
            logs.contains("span export failed") && logs.contains(&refusal),
            "{protocol}: the refusal is logged with its reason:\n{logs}"
        );
        assert!(
            logs.contains("span export recovered"),
            "{protocol}:\n{logs}"
        );
    }
}

#[tokio::test]
async fn an_export_that_times_out_gives_up_its_connection() {
    // Accepts connections and never answers. Over HTTP/2 every export shares one connection:
    // if a timed-out export left it pooled, every later export would wait on it as well.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(s);
        }
    });
    for protocol in ["grpc", "http"] {
        let before = accepted.load(std::sync::atomic::Ordering::SeqCst);
        let mock = mock().await;
        let cfg = config(mock.addr(), &endpoint, protocol);
        let env = [
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "200"),
            ("OTEL_BSP_SCHEDULE_DELAY", "20"),
        ];
        let proxy = ProxyProcess::spawn_with_env(cfg.path(), &env).await;
        // Spans keep coming, so after each timeout and backoff there is another export.
        let reconnected = eventually(Duration::from_secs(15), || async {
            one_call(&proxy).await;
            accepted.load(std::sync::atomic::Ordering::SeqCst) - before >= 3
        })
        .await;
        assert!(
            reconnected,
            "{protocol}: {} connections",
            accepted.load(std::sync::atomic::Ordering::SeqCst) - before
        );
    }
}
