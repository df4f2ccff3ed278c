//! The standard `OTEL_*` environment variables the exporter honours, parsed.

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use percent_encoding::percent_decode_str;

/// Export deadline when `OTEL_EXPORTER_OTLP_TIMEOUT` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Kubernetes downward-API variables read into the resource, and the attribute each sets.
pub const K8S_ENV: [(&str, &str); 3] = [
    ("POD_NAME", "k8s.pod.name"),
    ("POD_NAMESPACE", "k8s.namespace.name"),
    ("NODE_NAME", "k8s.node.name"),
];

/// A variable's value, `None` when unset or blank.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A variable holding a non-negative integer.
pub fn usize_var(name: &str) -> Option<usize> {
    var(name)?.trim().parse().ok()
}

/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds; 0,
/// which would fail every export, counts as unset).
pub fn export_timeout() -> Duration {
    export_timeout_from("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
}

/// `specific` (a signal's `…_TIMEOUT`), else `OTEL_EXPORTER_OTLP_TIMEOUT`; see
/// [`export_timeout`].
pub fn export_timeout_from(specific: &str) -> Duration {
    [specific, "OTEL_EXPORTER_OTLP_TIMEOUT"]
        .into_iter()
        .find_map(|name| usize_var(name).filter(|&ms| ms > 0))
        .map_or(DEFAULT_TIMEOUT, |ms| Duration::from_millis(ms as u64))
}

/// `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`, else `OTEL_EXPORTER_OTLP_CERTIFICATE`: a PEM file
/// of CA certificates trusted for an `https://` collector, besides the webpki roots. Returns
/// the variable's name with the path, for error messages.
pub fn certificate() -> Option<(&'static str, PathBuf)> {
    certificate_from("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")
}

/// `specific` (a signal's `…_CERTIFICATE`), else `OTEL_EXPORTER_OTLP_CERTIFICATE`; see
/// [`certificate`].
pub fn certificate_from(specific: &'static str) -> Option<(&'static str, PathBuf)> {
    [specific, "OTEL_EXPORTER_OTLP_CERTIFICATE"]
        .into_iter()
        .find_map(|name| var(name).map(|v| (name, PathBuf::from(v.trim()))))
}

/// `key=value` pairs separated by commas, values percent-decoded (the W3C Baggage-like format
/// of `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_RESOURCE_ATTRIBUTES`). A malformed entry
/// discards the whole variable, as the resource spec asks: half a set of headers (say, a
/// tenant without its token) is worse than none. The warning names the variable and the
/// entry's position, never its text (it may hold a credential).
pub fn pairs(var_name: &str, value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, entry) in value.split(',').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        let decoded = entry.split_once('=').and_then(|(k, v)| {
            let k = k.trim();
            let v = percent_decode_str(v.trim()).decode_utf8().ok()?;
            (!k.is_empty()).then(|| (k.to_string(), v.into_owned()))
        });
        match decoded {
            Some(kv) => out.push(kv),
            None => {
                tracing::warn!(
                    variable = var_name,
                    entry = i + 1,
                    "malformed key=value entry; the whole variable is ignored"
                );
                return Vec::new();
            }
        }
    }
    out
}

/// Extra request headers: `OTEL_EXPORTER_OTLP_HEADERS`, overridden key by key by
/// `OTEL_EXPORTER_OTLP_TRACES_HEADERS`.
pub fn headers() -> Vec<(HeaderName, HeaderValue)> {
    headers_from("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
}

/// `OTEL_EXPORTER_OTLP_HEADERS`, overridden key by key by `specific` (a signal's `…_HEADERS`).
pub fn headers_from(specific: &'static str) -> Vec<(HeaderName, HeaderValue)> {
    merge_headers(
        var("OTEL_EXPORTER_OTLP_HEADERS").as_deref(),
        (specific, var(specific).as_deref()),
    )
}

fn merge_headers(
    generic: Option<&str>,
    (specific, value): (&'static str, Option<&str>),
) -> Vec<(HeaderName, HeaderValue)> {
    let mut merged: Vec<(String, String)> = Vec::new();
    for (name, value) in [("OTEL_EXPORTER_OTLP_HEADERS", generic), (specific, value)] {
        for (k, v) in value.map(|v| pairs(name, v)).unwrap_or_default() {
            upsert(&mut merged, k.to_ascii_lowercase(), v);
        }
    }
    merged
        .into_iter()
        .enumerate()
        .filter_map(|(i, (k, v))| {
            let parsed = HeaderName::from_bytes(k.as_bytes())
                .ok()
                .zip(HeaderValue::from_str(&v).ok());
            if parsed.is_none() {
                // Not the name either: `Authorization: Basic ...=` splits into a "name" that
                // holds the credential.
                tracing::warn!(
                    header = i + 1,
                    "an OTLP header is not a valid HTTP header; skipped"
                );
            }
            parsed.map(|(name, mut value)| {
                value.set_sensitive(true);
                (name, value)
            })
        })
        .collect()
}

/// The resource's attributes from the process environment; see [`resource_attributes_from`].
pub fn resource_attributes(service_name: &str) -> Vec<(String, String)> {
    resource_attributes_from(service_name, var)
}

/// The resource's attributes: `OTEL_RESOURCE_ATTRIBUTES`, then `service.name`
/// (`OTEL_SERVICE_NAME` when set, else `service_name` from the config), `service.version`, the
/// telemetry SDK, and the pod, namespace and node from the downward API. Later ones win.
/// `env` reads a variable.
pub fn resource_attributes_from(
    service_name: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut attrs = Vec::new();
    if let Some(v) = env("OTEL_RESOURCE_ATTRIBUTES") {
        for (k, v) in pairs("OTEL_RESOURCE_ATTRIBUTES", &v) {
            upsert(&mut attrs, k, v);
        }
    }
    let service = env("OTEL_SERVICE_NAME").unwrap_or_else(|| service_name.to_string());
    upsert(&mut attrs, "service.name".into(), service);
    let version = env!("CARGO_PKG_VERSION").to_string();
    upsert(&mut attrs, "service.version".into(), version.clone());
    upsert(
        &mut attrs,
        "telemetry.sdk.name".into(),
        "tokenwarden".into(),
    );
    upsert(&mut attrs, "telemetry.sdk.language".into(), "rust".into());
    upsert(&mut attrs, "telemetry.sdk.version".into(), version);
    for (name, key) in K8S_ENV {
        if let Some(v) = env(name) {
            upsert(&mut attrs, key.into(), v);
        }
    }
    attrs
}

fn upsert(list: &mut Vec<(String, String)>, key: String, value: String) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => list.push((key, value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn pairs_are_trimmed_and_decoded() {
        let got = pairs("X", " api-key = s%20e%3Dcret ,, team=a%2Cb ");
        assert_eq!(
            got,
            [
                ("api-key".to_string(), "s e=cret".to_string()),
                ("team".to_string(), "a,b".to_string()),
            ]
        );
    }

    #[test]
    fn one_malformed_entry_discards_the_whole_variable() {
        for bad in ["a=1,broken", "a=1,=novalue", "a=1,bad=%FF"] {
            assert!(pairs("X", bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn traces_headers_override_generic_ones_key_by_key() {
        let got = merge_headers(
            Some("Authorization=Bearer%20a,x-team=t1,bad header=v"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                Some("authorization=Bearer%20b"),
            ),
        );
        let got: Vec<_> = got
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or(""), v.is_sensitive()))
            .collect();
        assert_eq!(
            got,
            [("authorization", "Bearer b", true), ("x-team", "t1", true)]
        );
    }

    fn resource(env: &[(&str, &str)]) -> Vec<(String, String)> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resource_attributes_from("svc-from-config", |name| env.get(name).cloned())
    }

    fn get<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
        attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn resource_names_the_service_and_the_pod() {
        let attrs = resource(&[
            ("POD_NAME", "tw-7d9f"),
            ("POD_NAMESPACE", "agents"),
            ("NODE_NAME", "node-3"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=prod,k8s.pod.name=overridden",
            ),
        ]);
        assert_eq!(get(&attrs, "k8s.pod.name"), Some("tw-7d9f"));
        assert_eq!(get(&attrs, "k8s.namespace.name"), Some("agents"));
        assert_eq!(get(&attrs, "k8s.node.name"), Some("node-3"));
        assert_eq!(get(&attrs, "deployment.environment.name"), Some("prod"));
        assert_eq!(
            get(&attrs, "service.version"),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(get(&attrs, "telemetry.sdk.language"), Some("rust"));
        assert_eq!(get(&attrs, "service.name"), Some("svc-from-config"));
        let keys: Vec<_> = attrs.iter().map(|(k, _)| k).collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(keys.len(), unique.len(), "no key twice: {keys:?}");
    }

    #[test]
    fn otel_service_name_wins_over_the_config_and_the_attributes_variable() {
        let attrs = resource(&[
            ("OTEL_SERVICE_NAME", "svc-env"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=attr"),
        ]);
        assert_eq!(get(&attrs, "service.name"), Some("svc-env"));
        assert_eq!(get(&resource(&[]), "service.name"), Some("svc-from-config"));
    }
}
