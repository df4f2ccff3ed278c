//! Checks a parsed config for values serde cannot reject on its own.

use std::collections::HashSet;

use super::error::ConfigError;
use super::schema::{Config, ForbiddenPattern, LimitConfig, LimitScope};

/// Validate `config`; the error names the offending key by its dotted path.
/// Most worker threads: each holds a listening socket, a runtime and its own upstream pools.
const MAX_WORKERS: usize = 256;

pub(super) fn validate(config: &Config) -> Result<(), ConfigError> {
    if config.routes.is_empty() {
        return Err(invalid("routes", "at least one route is required"));
    }
    let mut names = HashSet::new();
    for (i, r) in config.routes.iter().enumerate() {
        let at = |k: &str| format!("routes[{i}].{k}");
        if r.name.is_empty() {
            return Err(invalid(&at("name"), "must not be empty"));
        }
        if !names.insert(r.name.as_str()) {
            return Err(invalid(
                &at("name"),
                &format!("duplicate route name {:?}", r.name),
            ));
        }
        if !r.path_prefix.starts_with('/') {
            return Err(invalid(&at("path_prefix"), "must start with '/'"));
        }
        check_upstream_url(&r.upstream).map_err(|m| invalid(&at("upstream"), &m))?;
        if let Some(ca) = &r.ca_file {
            if !ca.is_file() {
                return Err(invalid(
                    &at("ca_file"),
                    &format!("{} is not a readable file", ca.display()),
                ));
            }
        }
    }
    let s = &config.server;
    if s.max_request_body_bytes == 0 {
        return Err(invalid("server.max_request_body_bytes", "must be > 0"));
    }
    if s.max_buffered_request_bytes < s.max_request_body_bytes {
        return Err(invalid(
            "server.max_buffered_request_bytes",
            "must be at least server.max_request_body_bytes",
        ));
    }
    if s.workers.is_some_and(|w| w == 0 || w > MAX_WORKERS) {
        return Err(invalid(
            "server.workers",
            &format!("must be between 1 and {MAX_WORKERS}"),
        ));
    }
    if s.write_timeout.is_zero() {
        return Err(invalid("server.write_timeout", "must be > 0"));
    }
    if s.body_read_timeout.is_zero() {
        return Err(invalid("server.body_read_timeout", "must be > 0"));
    }
    if s.header_read_timeout.is_zero() {
        // hyper's slowloris defence is off without it.
        return Err(invalid("server.header_read_timeout", "must be > 0"));
    }
    if s.max_headers == 0 || s.max_header_bytes < 1024 {
        return Err(invalid(
            "server.max_header_bytes",
            "max_headers must be > 0 and max_header_bytes >= 1024",
        ));
    }
    for (k, d) in [
        ("upstream.connect_timeout", config.upstream.connect_timeout),
        (
            "upstream.first_byte_timeout",
            config.upstream.first_byte_timeout,
        ),
        ("upstream.idle_timeout", config.upstream.idle_timeout),
    ] {
        if d.is_zero() {
            return Err(invalid(k, "must be > 0"));
        }
    }
    if config.identity.agent_header.is_empty()
        || http::HeaderName::from_bytes(config.identity.agent_header.as_bytes()).is_err()
    {
        return Err(invalid("identity.agent_header", "not a valid header name"));
    }
    for (key, headers) in [
        ("session_headers", &config.identity.session_headers),
        ("task_headers", &config.identity.task_headers),
    ] {
        for (i, h) in headers.iter().enumerate() {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(invalid(
                    &format!("identity.{key}[{i}]"),
                    "not a valid header name",
                ));
            }
        }
    }
    if config.identity.task_idle_timeout.is_zero() {
        return Err(invalid("identity.task_idle_timeout", "must be > 0"));
    }
    if config.telemetry.max_label_values == 0 {
        return Err(invalid("telemetry.max_label_values", "must be > 0"));
    }
    if config.telemetry.max_series_per_metric == 0 {
        return Err(invalid("telemetry.max_series_per_metric", "must be > 0"));
    }
    for (i, p) in config.telemetry.redact_patterns.iter().enumerate() {
        if let Err(e) = regex::Regex::new(p) {
            return Err(invalid(
                &format!("telemetry.redact_patterns[{i}]"),
                &e.to_string(),
            ));
        }
    }
    if let Some(otlp) = &config.telemetry.otlp {
        check_upstream_url(&otlp.endpoint).map_err(|m| invalid("telemetry.otlp.endpoint", &m))?;
    }
    if config.budgets.store.kind == super::StoreKind::Redis {
        match config.budgets.store.url.as_deref() {
            None => {
                return Err(invalid(
                    "budgets.store.url",
                    "required when budgets.store.kind is redis",
                ))
            }
            Some(u) => {
                check_redis_url(u).map_err(|m| invalid("budgets.store.url", &m))?;
            }
        }
    }
    if config.budgets.store.kind == super::StoreKind::Redis
        && !config.budgets.store.nodes.is_empty()
    {
        // Else a cluster's seed nodes given under the one-node kind would be silently ignored.
        return Err(invalid(
            "budgets.store.nodes",
            "seed nodes are read only by kind: redis_cluster (kind: redis uses `url`, one node); set kind: redis_cluster or remove nodes",
        ));
    }
    if config.budgets.store.kind == super::StoreKind::RedisCluster {
        if config.budgets.store.nodes.is_empty() {
            return Err(invalid(
                "budgets.store.nodes",
                "at least one seed node is required when budgets.store.kind is redis_cluster",
            ));
        }
        for (i, u) in config.budgets.store.nodes.iter().enumerate() {
            check_redis_url(u)
                .and_then(
                    |()| match redis::parse_redis_url(u).map(|u| u.path().to_string()) {
                        Some(db) if !matches!(db.as_str(), "" | "/" | "/0") => {
                            Err("a Redis Cluster has only database 0".into())
                        }
                        _ => Ok(()),
                    },
                )
                .map_err(|m| invalid(&format!("budgets.store.nodes[{i}]"), &m))?;
        }
    }
    let leases = &config.budgets.leases;
    if let Some(s) = leases
        .scopes
        .iter()
        .find(|s| !matches!(s, super::LimitScope::Agent | super::LimitScope::Global))
    {
        return Err(invalid(
            "budgets.leases.scopes",
            &format!("{s:?} is exact (one instance lives in one sidecar); only agent and global are leased"),
        ));
    }
    if !leases.scopes.is_empty() && config.budgets.store.kind == super::StoreKind::Memory {
        return Err(invalid(
            "budgets.leases.scopes",
            "leases draw on a shared store: set budgets.store.kind to redis or redis_cluster",
        ));
    }
    if !(leases.min > 0.0 && leases.min <= leases.max && leases.max <= 1.0) {
        return Err(invalid(
            "budgets.leases.min",
            "min and max are fractions of a limit: 0 < min <= max <= 1",
        ));
    }
    if leases.lasts < std::time::Duration::from_millis(100) {
        return Err(invalid("budgets.leases.lasts", "must be at least 100ms"));
    }
    if matches!(
        config.budgets.store.kind,
        super::StoreKind::Redis | super::StoreKind::RedisCluster
    ) {
        if config.budgets.store.timeout.is_zero() {
            return Err(invalid("budgets.store.timeout", "must be > 0"));
        }
        // Renewals run on the store's 1 s upkeep tick, every third of the lease at most.
        if config.budgets.store.reservation_lease < std::time::Duration::from_secs(3) {
            return Err(invalid(
                "budgets.store.reservation_lease",
                "must be at least 3s",
            ));
        }
    }
    for (key, d) in [
        (
            "budgets.session_retention",
            config.budgets.session_retention,
        ),
        ("budgets.task_retention", config.budgets.task_retention),
    ] {
        if d < std::time::Duration::from_secs(1) {
            return Err(invalid(key, "must be at least 1s"));
        }
    }
    for (i, l) in config.budgets.limits.iter().enumerate() {
        check_limit(l).map_err(|(k, m)| invalid(&format!("budgets.limits[{i}].{k}"), &m))?;
    }
    // A scope's record keeps one counter per unit and window: two limits there would count
    // every call twice (and the stores disagree on what each reserved).
    let mut seen: Vec<(LimitScope, &str, Option<u64>, usize)> = Vec::new();
    for (i, l) in config.budgets.limits.iter().enumerate() {
        let window = parse_window(&l.window)
            .ok()
            .flatten()
            .map(|d| d.as_secs().max(1));
        let units = [("tokens", l.tokens.is_some()), ("usd", l.usd.is_some())];
        for (unit, _) in units.iter().filter(|(_, set)| *set) {
            if let Some(&(.., j)) = seen
                .iter()
                .find(|(s, u, w, _)| *s == l.scope && u == unit && *w == window)
            {
                return Err(invalid(
                    &format!("budgets.limits[{i}]"),
                    &format!(
                        "a second `{unit}` limit on this scope with the window of budgets.limits[{j}]: \
                         one limit per scope, unit and window (`warn_at` warns before it)"
                    ),
                ));
            }
            seen.push((l.scope, unit, window, i));
        }
    }
    for (model, p) in &config.pricing {
        let all = [
            Some(p.input),
            Some(p.output),
            p.cached_input,
            p.cache_creation_input,
            p.cache_creation_input_1h,
            p.audio_input,
            p.cached_audio_input,
            p.audio_output,
            p.web_search,
            p.file_search,
        ];
        let long = p.long_context.map(|l| {
            [
                Some(l.input),
                Some(l.output),
                l.cached_input,
                l.cache_creation_input,
                l.cache_creation_input_1h,
            ]
        });
        let bad = |v: f64| !v.is_finite() || v < 0.0;
        if all.into_iter().flatten().any(bad) {
            return Err(invalid(
                &format!("pricing.{model}"),
                "prices must be finite and >= 0",
            ));
        }
        if long.is_some_and(|l| l.into_iter().flatten().any(bad)) {
            return Err(invalid(
                &format!("pricing.{model}.long_context"),
                "prices must be finite and >= 0",
            ));
        }
        if p.long_context.is_some_and(|l| l.above == 0) {
            return Err(invalid(
                &format!("pricing.{model}.long_context.above"),
                "must be > 0 (input tokens past which the long-context prices apply)",
            ));
        }
        if p.batch
            .is_some_and(|f| !(f.is_finite() && f > 0.0 && f <= 1.0))
        {
            return Err(invalid(
                &format!("pricing.{model}.batch"),
                "a batch price factor is in (0, 1]",
            ));
        }
    }
    if let Some(w) = &config.alerts.webhook {
        check_upstream_url(w).map_err(|m| invalid("alerts.webhook", &m))?;
    }
    for (name, p) in &config.agents {
        if name.len() > super::schema::MAX_LABEL_LEN {
            return Err(invalid(
                &format!("agents.{name}"),
                &format!(
                    "agent names are at most {} bytes",
                    super::schema::MAX_LABEL_LEN
                ),
            ));
        }
        check_agent(p).map_err(|(k, m)| invalid(&format!("agents.{name}{k}"), &m))?;
    }
    for (model, info) in &config.models {
        if info.context_window == 0 {
            return Err(invalid(
                &format!("models.{model}.context_window"),
                "must be > 0",
            ));
        }
    }
    Ok(())
}

/// The regular expressions `patterns` match with, as policies compile them: plain strings
/// escaped, `case_insensitive` ones wrapped in `(?i:…)`, each compiled alone so an error names
/// its pattern (by index).
pub fn forbidden_input_sources(
    patterns: &[ForbiddenPattern],
) -> Result<Vec<String>, (usize, String)> {
    let mut sources = Vec::with_capacity(patterns.len());
    for (i, p) in patterns.iter().enumerate() {
        let src = match (&p.contains, &p.regex) {
            (Some(s), None) => regex::escape(s),
            (None, Some(r)) => r.clone(),
            _ => return Err((i, "needs exactly one of `contains` and `regex`".into())),
        };
        if p.id.is_empty() {
            return Err((i, "`id` must not be empty".into()));
        }
        let src = if p.case_insensitive {
            format!("(?i:{src})")
        } else {
            src
        };
        regex::Regex::new(&src).map_err(|e| (i, e.to_string()))?;
        sources.push(src);
    }
    Ok(sources)
}

/// `patterns` compiled together, as one set (what policies match with); `None` when there are
/// none. The error names the pattern by index (0 when only the whole set fails).
pub fn forbidden_input_set(
    patterns: &[ForbiddenPattern],
) -> Result<Option<regex::RegexSet>, (usize, String)> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let sources = forbidden_input_sources(patterns)?;
    regex::RegexSetBuilder::new(&sources)
        .build()
        .map(Some)
        .map_err(|e| (0, e.to_string()))
}

/// An agent policy's values; the error's key is relative to `agents.<name>` (a leading `.`).
fn check_agent(p: &super::schema::AgentPolicy) -> Result<(), (String, String)> {
    forbidden_input_set(&p.forbidden_input)
        .map_err(|(i, m)| (format!(".forbidden_input[{i}]"), m))?;
    if p.loop_detection.threshold < 2 {
        return Err((".loop_detection.threshold".into(), "must be >= 2".into()));
    }
    if p.loop_detection.window.is_zero() {
        return Err((".loop_detection.window".into(), "must be > 0".into()));
    }
    if p.max_tokens_cap.is_some_and(|c| c.limit == 0) {
        return Err((".max_tokens_cap.limit".into(), "must be > 0".into()));
    }
    if p.max_steps == Some(0) {
        return Err((".max_steps".into(), "must be > 0".into()));
    }
    Ok(())
}

/// Parse a budget window: `lifetime`, or a positive number with unit s, m, h or d.
pub fn parse_window(w: &str) -> Result<Option<std::time::Duration>, String> {
    if w == "lifetime" {
        return Ok(None);
    }
    let (num, unit) = w.split_at(w.find(|c: char| !c.is_ascii_digit()).unwrap_or(w.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{w:?} is not `lifetime` or a duration like 1m, 1h, 1d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{w:?}: unit must be s, m, h or d")),
    };
    if n == 0 {
        return Err(format!("{w:?}: window must be > 0"));
    }
    Ok(Some(std::time::Duration::from_secs(n * secs)))
}

fn check_limit(l: &LimitConfig) -> Result<(), (&'static str, String)> {
    if l.tokens.is_none() && l.usd.is_none() {
        return Err(("tokens", "a limit needs `tokens` or `usd`".into()));
    }
    if let Some(u) = l.usd {
        if !u.is_finite() || u <= 0.0 {
            return Err(("usd", "must be > 0".into()));
        }
    }
    if l.tokens == Some(0) {
        return Err(("tokens", "must be > 0".into()));
    }
    if let Some(w) = l.warn_at {
        if !(w > 0.0 && w <= 1.0) {
            return Err(("warn_at", "must be in (0, 1]".into()));
        }
    }
    parse_window(&l.window).map_err(|m| ("window", m))?;
    Ok(())
}

/// Errors say what is wrong, never the URL: it may carry credentials.
fn check_upstream_url(s: &str) -> Result<(), String> {
    let uri: http::Uri = s.parse().map_err(|_| "not a URL".to_string())?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("scheme must be http or https".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        // The HTTP client would log the authority, password included, and never send it.
        return Err(
            "must not carry user info (user:password@): it is never sent, and would reach logs"
                .into(),
        );
    }
    if uri.query().is_some() {
        return Err("must not carry a query".into());
    }
    Ok(())
}

/// `redis://[user[:password]@]host[:port][/db]`, checked as the Redis client will read it.
fn check_redis_url(s: &str) -> Result<(), String> {
    const SHAPE: &str = "must be redis://[user[:password]@]host[:port][/db] (TLS is not supported)";
    let url = redis::parse_redis_url(s).ok_or_else(|| format!("not a URL: {SHAPE}"))?;
    if url.scheme() != "redis" {
        return Err(SHAPE.into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("no host: {SHAPE}"));
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Err(format!("the database must be a number: {SHAPE}"));
    }
    Ok(())
}

fn invalid(key: &str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        origin: String::new(),
        key: key.to_string(),
        message: message.to_string(),
        line: None,
    }
}

/// What a valid config is still unwise about, one line each: said by `check-config` and logged
/// at start. The contract keeps these configs working; the operator is told what they risk.
pub fn advisories(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let no_token = config.admin_token.as_deref().is_none_or(str::is_empty);
    let mut held: Vec<&String> = config
        .agents
        .iter()
        .filter(|(_, p)| p.approval_action == super::schema::ApprovalAction::Hold)
        .map(|(name, _)| name)
        .collect();
    held.sort();
    if no_token && !held.is_empty() {
        // The agent shares the pod's network with the admin port: without a token it could
        // approve its own held calls.
        let names: Vec<&str> = held.iter().map(|n| n.as_str()).collect();
        out.push(format!(
            "agents.{}.approval_action: `hold` without `admin_token`: anything that reaches the admin port (the agent itself, in the same pod) can approve held calls; set `admin_token`",
            names.join(", agents.")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::load_from_str;
    use super::{advisories, parse_window};

    #[test]
    fn forbidden_patterns_validate_as_policies_compile_them() {
        // Only valid wrapped in `(?i:…)`, as a case-insensitive pattern is compiled.
        let ok = "agents:\n  a:\n    forbidden_input:\n      - { id: x, regex: \"a)(?i:b\", case_insensitive: true }\n";
        assert!(load_from_str(ok, "t").is_ok());
        let bad = "agents:\n  a:\n    forbidden_input:\n      - { id: x, contains: k }\n      - { id: y, regex: \"a)(?i:b\" }\n";
        let e = load_from_str(bad, "t").unwrap_err().to_string();
        assert!(e.contains("agents.a.forbidden_input[1]"), "{e}");
    }

    #[test]
    fn hold_without_an_admin_token_is_valid_and_advised_against() {
        let text = "agents:\n  a:\n    require_approval: [x]\n    approval_action: hold\n";
        let c = load_from_str(text, "t").unwrap();
        let said = advisories(&c);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].contains("agents.a.approval_action"), "{said:?}");
        let with_token = format!("{text}admin_token: t0ken\n");
        assert!(advisories(&load_from_str(&with_token, "t").unwrap()).is_empty());
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("routes:\n  - name: a\n    path_prefix: v1\n    upstream: http://x\n", "routes[0].path_prefix"),
            ("routes:\n  - name: a\n    path_prefix: /\n    upstream: ftp://x\n", "routes[0].upstream"),
            ("routes:\n  - name: a\n    path_prefix: /\n    upstream: http://x\n  - name: a\n    path_prefix: /b\n    upstream: http://y\n", "routes[1].name"),
            ("routes: []\n", "routes"),
            ("budgets:\n  limits:\n    - scope: session\n      tokens: 10\n      window: 3w\n", "budgets.limits[0].window"),
            ("budgets:\n  limits:\n    - scope: agent\n", "budgets.limits[0].tokens"),
            ("budgets:\n  limits:\n    - scope: agent\n      tokens: 100\n    - scope: agent\n      tokens: 80\n      action: observe\n", "budgets.limits[1]"),
            ("budgets:\n  limits:\n    - scope: session\n      usd: 1\n      window: 1d\n    - scope: session\n      tokens: 9\n      usd: 2\n      window: 24h\n", "with the window of budgets.limits[0]"),
            ("server:\n  header_read_timeout: 0s\n", "server.header_read_timeout"),
            ("server:\n  workers: 0\n", "server.workers"),
            ("server:\n  runtime: threads\n", "key `runtime`"),
            ("budgets:\n  store:\n    kind: redis\n", "budgets.store.url"),
            ("budgets:\n  store:\n    kind: redis\n    url: http://x\n", "budgets.store.url"),
            ("budgets:\n  store:\n    kind: redis\n    url: redis://h:port\n", "budgets.store.url"),
            ("budgets:\n  store:\n    kind: redis\n    url: redis://h:6379/x\n", "budgets.store.url"),
            ("budgets:\n  lifetime_refusal: '402'\n", "payment_required"),
            ("pricing:\n  m:\n    input: 1\n    output: 2\n    batch: 1.5\n", "pricing.m.batch"),
            ("pricing:\n  m:\n    input: 1\n    output: 2\n    batch: 0\n", "pricing.m.batch"),
            ("pricing:\n  m:\n    input: 1\n    output: 2\n    audio_output: -1\n", "pricing.m"),
            ("pricing:\n  m:\n    input: 1\n    output: 2\n    web_search: -10\n", "pricing.m"),
            ("pricing:\n  m:\n    input: 1\n    output: 2\n    file_search: .nan\n", "pricing.m"),
            ("pricing:\n  m:\n    input: 1\n    output: 2\n    long_context: { above: 0, input: 2, output: 4 }\n", "pricing.m.long_context.above"),
            ("pricing:\n  m:\n    input: 1\n    output: 2\n    long_context: { above: 9, input: -2, output: 4 }\n", "pricing.m.long_context"),
            ("budgets:\n  store:\n    kind: redis_cluster\n", "budgets.store.nodes"),
            ("budgets:\n  store:\n    kind: redis\n    url: redis://h\n    nodes: [redis://a:7000]\n", "kind: redis_cluster"),
            ("budgets:\n  store:\n    kind: redis\n    url: redis://h\n  leases:\n    scopes: [session]\n", "budgets.leases.scopes"),
            ("budgets:\n  leases:\n    scopes: [agent]\n", "budgets.leases.scopes"),
            ("budgets:\n  store:\n    kind: redis\n    url: redis://h\n  leases:\n    scopes: [agent]\n    min: 0.2\n    max: 0.1\n", "budgets.leases.min"),
            ("budgets:\n  store:\n    kind: redis\n    url: redis://h\n  leases:\n    scopes: [global]\n    lasts: 10ms\n", "budgets.leases.lasts"),
            ("budgets:\n  store:\n    kind: redis_cluster\n    nodes: [redis://a:7000, 'http://b:7001']\n", "budgets.store.nodes[1]"),
            ("budgets:\n  store:\n    kind: redis_cluster\n    nodes: [redis://a:7000/2]\n", "budgets.store.nodes[0]"),
            ("budgets:\n  store:\n    kind: redis_cluster\n    nodes: [redis://a:7000]\n    reservation_lease: 1s\n", "budgets.store.reservation_lease"),
        ];
        for (text, key) in cases {
            let err = load_from_str(text, "c.yaml").unwrap_err().to_string();
            assert!(err.contains(key), "{text:?} -> {err}");
        }
    }

    #[test]
    fn urls_are_never_echoed_and_user_info_is_refused() {
        let cases = [
            ("routes:\n  - name: a\n    path_prefix: /\n    upstream: https://u:hunter2@api.example\n", "routes[0].upstream"),
            ("routes:\n  - name: a\n    path_prefix: /\n    upstream: ftp://u:hunter2@x\n", "routes[0].upstream"),
            ("budgets:\n  store:\n    kind: redis\n    url: redis://:hunter2@h:notaport\n", "budgets.store.url"),
            ("budgets:\n  store:\n    kind: redis\n    url: rediss://:hunter2@h:6379\n", "budgets.store.url"),
            ("telemetry:\n  otlp:\n    endpoint: http://u:hunter2@collector:4317\n", "telemetry.otlp.endpoint"),
        ];
        for (text, key) in cases {
            let err = load_from_str(text, "c.yaml").unwrap_err().to_string();
            assert!(err.contains(key), "{text:?} -> {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let ok = "budgets:\n  store:\n    kind: redis\n    url: redis://:pw@127.0.0.1:6379/2\n";
        assert!(load_from_str(ok, "c.yaml").is_ok());
        let ok = "budgets:\n  store:\n    kind: redis_cluster\n    nodes: [redis://a:7000, 'redis://b:7001/0']\n    settle_replicas: 1\n";
        assert!(load_from_str(ok, "c.yaml").is_ok());
    }

    #[test]
    fn windows() {
        assert_eq!(parse_window("lifetime").unwrap(), None);
        assert_eq!(parse_window("1m").unwrap().unwrap().as_secs(), 60);
        assert_eq!(parse_window("2d").unwrap().unwrap().as_secs(), 172_800);
        assert!(parse_window("0h").is_err());
        assert!(parse_window("h").is_err());
    }
}
