//! The Redis budget store against a real `redis-server` (started per test on a free loopback
//! port, killed at the end): two `tokenwarden` processes share one limit, and a Redis that
//! dies mid-run is handled as `on_store_unreachable` says, with recovery when it returns.
//!
//! Needs `redis-server` on PATH (`apt-get install redis-server`; `.ci/run` installs it). Missing
//! → the tests fail and say so; they never skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::redis::RedisServer;
use common::*;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

fn config(mock: std::net::SocketAddr, redis: &str, on_unreachable: &str) -> String {
    format!(
        "routes:\n  - name: redis-budget\n    path_prefix: /\n    upstream: http://{mock}\nbudgets:\n  store:\n    kind: redis\n    url: {redis}\n    timeout: 300ms\n  on_store_unreachable: {on_unreachable}\n  limits:\n    - scope: session\n      tokens: 50\n"
    )
}

async fn call16(addr: std::net::SocketAddr, session: &str) -> (http::Response<()>, bytes::Bytes) {
    post(
        &format!("http://{addr}/v1/chat/completions"),
        &[
            ("x-session-id", session),
            ("x-mock-input-tokens", "8"),
            ("x-mock-output-chunks", "8"),
        ],
        CHAT,
    )
    .await
}

/// Wait until the store shows `total` tokens settled for `session` (settling is asynchronous).
async fn settled(admin: std::net::SocketAddr, session: &str, total: u64) {
    let url = format!("http://{admin}/v1/sessions/{session}");
    let ok = eventually(Duration::from_secs(10), || {
        let url = url.clone();
        async move {
            let (r, b) = get(&url).await;
            r.status() == 200
                && serde_json::from_slice::<serde_json::Value>(&b).unwrap()["limits"][0]["used"]
                    .as_f64()
                    == Some(total as f64)
        }
    })
    .await;
    assert!(ok, "session {session} never showed {total} tokens used");
}

#[tokio::test]
async fn two_proxy_processes_share_one_limit_in_redis() {
    let redis = RedisServer::start();
    let m = mock().await;
    let cfg = config_file(&format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n{}",
        config(m.addr(), &redis.url(), "fail_closed")
    ));
    let a = ProxyProcess::spawn(cfg.path()).await;
    let b = ProxyProcess::spawn(cfg.path()).await;
    for (i, p) in [&a, &b, &a].into_iter().enumerate() {
        let (r, body) = call16(p.addr, "shared-1").await;
        assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(&body));
        settled(p.admin, "shared-1", 16 * (i as u64 + 1)).await;
    }
    // 48 of 50 spent through two processes: the next call is refused by either.
    for p in [&b, &a] {
        let (r, body) = call16(p.addr, "shared-1").await;
        assert_eq!(r.status(), 402, "{}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "session_token_budget_exceeded");
    }
    assert_eq!(m.stats().requests, 3);
    // Both processes read the same record.
    let (_, body) = get(&format!("http://{}/v1/sessions/shared-1", b.admin)).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["tokens"]["total"], 48);
}

#[tokio::test]
async fn redis_dying_mid_run_fails_as_configured_and_recovers() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let m = mock().await;
    let closed = TestProxy::start(&config(m.addr(), &redis.url(), "fail_closed")).await;
    let open = TestProxy::start(&config(m.addr(), &redis.url(), "fail_open")).await;
    assert_eq!(call16(closed.addr, "die-1").await.0.status(), 200);
    assert_eq!(call16(open.addr, "die-2").await.0.status(), 200);
    let ready = |admin: std::net::SocketAddr| async move {
        get(&format!("http://{admin}/readyz"))
            .await
            .0
            .status()
            .as_u16()
    };
    assert_eq!(ready(closed.admin).await, 200);

    redis.kill();
    let (r, body) = call16(closed.addr, "die-1").await;
    assert_eq!(r.status(), 503, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "budget_store_unavailable");
    let (r, _) = call16(open.addr, "die-2").await;
    assert_eq!(r.status(), 200, "fail_open lets calls through");
    for admin in [closed.admin, open.admin] {
        assert!(
            eventually(Duration::from_secs(10), || async move {
                ready(admin).await == 503
            })
            .await,
            "/readyz stays 200 with the store down"
        );
    }
    let text = open.metrics().await;
    assert!(metric_sum(&text, "tokenwarden_budget_store_errors_total", &[]) >= 1.0);
    // The gauge is process-wide and this test binary runs other proxies with a live Redis at
    // the same time: it reads 0 whenever this test's proxies wrote last.
    let down = eventually(Duration::from_secs(10), || async {
        metric_value(&open.metrics().await, "tokenwarden_budget_store_up", &[]) == 0.0
    })
    .await;
    assert!(
        down,
        "tokenwarden_budget_store_up never said the store was down"
    );

    let _redis = RedisServer::start_on(port);
    let recovered = eventually(Duration::from_secs(20), || async {
        call16(closed.addr, "die-3").await.0.status() == 200
    })
    .await;
    assert!(
        recovered,
        "fail_closed proxy did not recover after Redis returned"
    );
    for admin in [closed.admin, open.admin] {
        assert!(
            eventually(Duration::from_secs(10), || async move {
                ready(admin).await == 200
            })
            .await,
            "/readyz did not return to 200"
        );
    }
}

/// A client that goes away while its check-and-reserve runs in Redis leaves nothing reserved.
#[tokio::test]
async fn a_client_gone_during_admission_leaks_no_reservation() {
    let redis = RedisServer::start();
    let m = mock().await;
    // A limit far away: the one (optimistic) script reserves at once.
    let cfg = config(m.addr(), &redis.url(), "fail_closed")
        .replace("300ms", "5s")
        .replace("tokens: 50", "tokens: 100000");
    let p = TestProxy::start(&cfg).await;
    // Connect the proxy's store first (another session), so the script is sent at once below.
    assert_eq!(call16(p.addr, "gone-warm").await.0.status(), 200);
    let before = m.stats().requests;
    // Hold Redis busy for a second so the admission script waits.
    let sleeper = redis_sleeps(redis.port, "1");
    std::thread::sleep(Duration::from_millis(100));
    // A raw socket closed after 300 ms: a pooled client's dropped request may leave its
    // connection open until its next wake-up, and the proxy would then rightly keep the call.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut gone = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-session-id: gone-1\r\nx-mock-input-tokens: 8\r\nx-mock-output-chunks: 8\r\n\
         content-length: {}\r\n\r\n",
        CHAT.len()
    );
    gone.write_all(head.as_bytes()).await.unwrap();
    gone.write_all(CHAT.as_bytes()).await.unwrap();
    let mut answer = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), gone.read(&mut answer)).await;
    assert!(early.is_err(), "the call was answered while Redis slept");
    drop(gone);
    assert_eq!(&sleeper.join().unwrap(), b"+OK\r\n");
    let url = format!("http://{}/v1/sessions/gone-1", p.admin);
    let released = eventually(Duration::from_secs(10), || {
        let url = url.clone();
        async move {
            let (r, b) = get(&url).await;
            r.status() == 200
                && serde_json::from_slice::<serde_json::Value>(&b).unwrap()["limits"][0]["used"]
                    .as_f64()
                    == Some(0.0)
        }
    })
    .await;
    let (_, b) = get(&url).await;
    assert!(
        released,
        "reservation left behind: {}",
        String::from_utf8_lossy(&b)
    );
    assert_eq!(
        m.stats().requests,
        before,
        "the abandoned call went upstream"
    );
}

#[tokio::test]
async fn reservations_of_a_killed_proxy_expire_with_their_lease_and_live_ones_are_renewed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let redis = RedisServer::start();
    let m = mock().await;
    // One call (max_tokens 150) takes the whole 100-token limit while it runs.
    let cfg = config(m.addr(), &redis.url(), "fail_closed")
        .replace("tokens: 50", "tokens: 100")
        .replace(
            "    timeout: 300ms\n",
            "    timeout: 2s\n    reservation_lease: 3s\n",
        );
    let file = config_file(&format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n{cfg}"
    ));
    // Two processes: an in-process proxy would share this test binary's metrics recorder (and
    // its store-up gauge) with the other tests.
    let mut a = ProxyProcess::spawn(file.path()).await;
    let b = ProxyProcess::spawn(file.path()).await;
    let body = r#"{"model":"gpt-4o-mini","max_tokens":150,"messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let mut s = tokio::net::TcpStream::connect(a.addr).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-session-id: lease-1\r\nx-mock-output-chunks: 60\r\nx-mock-chunk-delay-ms: 500\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut first = vec![0u8; 1024];
    let n = s.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));

    let call_b = || async {
        post(
            &format!("http://{}/v1/chat/completions", b.addr),
            &[("x-session-id", "lease-1")],
            r#"{"model":"gpt-4o-mini","max_tokens":150,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await
        .0
        .status()
        .as_u16()
    };
    // Past one lease: the live call's proxy renewed it, so its reservation still holds.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_ne!(call_b().await, 200, "a live reservation was released");

    // The proxy dies without settling: its reservation is released within the lease.
    a.child.start_kill().unwrap();
    let _ = a.child.wait().await;
    drop(s);
    let released = eventually(Duration::from_secs(8), || async { call_b().await == 200 }).await;
    assert!(
        released,
        "a killed proxy's reservation locked the session out"
    );
}

/// `TTL key` on the test Redis, over its wire protocol.
fn redis_ttl(redis: &RedisServer, key: &str) -> i64 {
    let mut c = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    write!(c, "*2\r\n$3\r\nTTL\r\n${}\r\n{key}\r\n", key.len()).unwrap();
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf).unwrap();
    let reply = std::str::from_utf8(&buf[..n]).unwrap();
    reply.trim_start_matches(':').trim().parse().unwrap()
}

#[tokio::test]
async fn session_records_expire_after_their_retention_lifetime_agent_records_do_not() {
    let redis = RedisServer::start();
    let m = mock().await;
    let cfg = config(m.addr(), &redis.url(), "fail_closed").replace(
        "  limits:\n",
        "  session_retention: 1h\n  limits:\n    - scope: agent\n      tokens: 100000\n",
    );
    // A process: an in-process proxy would share this binary's store-up gauge with the others.
    let file = config_file(&format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n{cfg}"
    ));
    let p = ProxyProcess::spawn(file.path()).await;
    assert_eq!(call16(p.addr, "ret-r").await.0.status(), 200);
    settled(p.admin, "ret-r", 16).await;
    let ttl = redis_ttl(&redis, "tw:{s:ret-r}");
    assert!((3500..=3600).contains(&ttl), "session TTL {ttl}");
    assert_eq!(
        redis_ttl(&redis, "tw:{a:default}"),
        -1,
        "an agent's lifetime spend is kept"
    );
}

/// The stated overspend bound, with two proxies sharing the limit through Redis.
#[tokio::test]
async fn sixty_four_spread_out_calls_through_two_proxies_stay_within_the_stated_bound() {
    const M: u64 = 40;
    const CALLS: u64 = 64;
    let body = format!(
        r#"{{"model":"gpt-4o-mini","max_tokens":{M},"messages":[{{"role":"user","content":"how far can a budget stretch?"}}]}}"#
    );
    let e = tokenwarden::providers::estimate_input(
        tokenwarden::providers::Format::OpenAiChat,
        body.as_bytes(),
    );
    let err = 6;
    let limit = 20 * (e + M) + 7;
    let redis = RedisServer::start();
    let m = mock().await;
    let cfg = config(m.addr(), &redis.url(), "fail_closed")
        .replace("tokens: 50", &format!("tokens: {limit}"))
        .replace("300ms", "2s");
    let file = config_file(&format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n{cfg}"
    ));
    let mut a = ProxyProcess::spawn(file.path()).await;
    let mut b = ProxyProcess::spawn(file.path()).await;
    a.tokenizer_loaded().await;
    b.tokenizer_loaded().await;
    let urls = [format!("http://{}", a.addr), format!("http://{}", b.addr)];
    let o = overspend_load(&urls, "bound-r", &body, e + err, M, CALLS as usize, 400).await;
    assert!(
        o.admitted >= 10 && o.refused >= 1,
        "{} / {}",
        o.admitted,
        o.refused
    );
    let total = o.admitted * (e + err + M);
    settled_total(a.admin, "bound-r", total).await;
    let bound = limit + M + CALLS * err;
    assert!(
        total <= bound,
        "spent {total} > bound {bound} (limit {limit})"
    );
}

/// Wait until the store shows `total` tokens spent by `session` (settling is asynchronous).
async fn settled_total(admin: std::net::SocketAddr, session: &str, total: u64) {
    let url = format!("http://{admin}/v1/sessions/{session}");
    let ok = eventually(Duration::from_secs(10), || {
        let url = url.clone();
        async move {
            let (r, b) = get(&url).await;
            r.status() == 200
                && serde_json::from_slice::<serde_json::Value>(&b).unwrap()["tokens"]["total"]
                    .as_u64()
                    == Some(total)
        }
    })
    .await;
    assert!(ok, "session {session} never showed {total} tokens spent");
}

/// The session ranking is pruned by one proxy of the fleet per period (a lock), not by every
/// proxy: pruning costs one EXISTS per ranked id, so each proxy doing it would cost the store
/// a batch per proxy per period whatever the traffic.
#[tokio::test]
async fn one_proxy_of_several_prunes_the_rankings_per_period() {
    const LIVE: u64 = 20;
    const PROXIES: u64 = 4;
    let redis = RedisServer::start();
    let m = mock().await;
    // A 3 s lease: renewals and pruning every second.
    let cfg = config(m.addr(), &redis.url(), "fail_closed").replace(
        "  on_store_unreachable",
        "    reservation_lease: 3s\n  on_store_unreachable",
    );
    let file = config_file(&format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n{cfg}"
    ));
    let mut procs = Vec::new();
    for _ in 0..PROXIES {
        procs.push(ProxyProcess::spawn(file.path()).await);
    }
    // Live sessions stay ranked: every pruning pass looks at each of them once.
    for i in 0..LIVE {
        let p = &procs[(i % PROXIES) as usize];
        assert_eq!(call16(p.addr, &format!("prune-{i}")).await.0.status(), 200);
    }
    let ranked = eventually(Duration::from_secs(10), || async {
        common::redis::cli(redis.port, &["zcard", "tw:sessions:tokens"]).trim() == LIVE.to_string()
    })
    .await;
    assert!(ranked, "the sessions were never ranked");
    let exists = || {
        common::redis::cli(redis.port, &["info", "commandstats"])
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_exists:calls="))
            .and_then(|l| l.split(',').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = exists();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let passes = (exists() - before) / LIVE;
    // One pruner per 1 s period: at most 11 passes in 10 s. Every proxy pruning on its own
    // (each every second or two) would make 20 to 40.
    assert!(
        (2..=12).contains(&passes),
        "{passes} pruning passes in 10 s by {PROXIES} proxies"
    );
}

/// Limits on three scopes (`session_tokens`, `agent_tokens`, a roomy global limit) in a proxy
/// process of its own (so its decision counters are this test's alone), fail closed.
async fn three_scope_proxy(
    redis: &RedisServer,
    m: &tokenwarden_mock::MockServer,
    session_tokens: u64,
    agent_tokens: u64,
) -> ProxyProcess {
    proxy_with(
        redis,
        m,
        &format!("      tokens: {session_tokens}\n    - scope: agent\n      tokens: {agent_tokens}\n    - scope: global\n      tokens: 1000000\n"),
    )
    .await
}

/// A proxy failing closed on `redis` (2 s timeout) whose session limit's line `tokens: 50` is
/// replaced by `session` (the rest of the limits and budget keys may follow).
async fn proxy_with(
    redis: &RedisServer,
    m: &tokenwarden_mock::MockServer,
    session: &str,
) -> ProxyProcess {
    let cfg = config(m.addr(), &redis.url(), "fail_closed")
        .replace("300ms", "2s")
        .replace("      tokens: 50\n", session);
    let file = config_file(&format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n{cfg}"
    ));
    let mut p = ProxyProcess::spawn(file.path()).await;
    p.tokenizer_loaded().await;
    p
}

/// Wait until no scope record of the call (session, agent, global) holds a reservation; the
/// records' reserved sums and leases when one still does after 10 s.
async fn nothing_left_reserved(port: u16, session: &str, agent: &str) -> Result<(), String> {
    let keys = [
        format!("tw:{{s:{session}}}"),
        format!("tw:{{a:{agent}}}"),
        "tw:{g}".to_string(),
    ];
    let clear = eventually(Duration::from_secs(10), || {
        let keys = keys.clone();
        async move {
            keys.iter()
                .all(|k| common::redis::reserved_in(port, k) == (0, 0))
        }
    })
    .await;
    if clear {
        return Ok(());
    }
    Err(keys
        .iter()
        .map(|k| format!("{k}: {:?}", common::redis::reserved_in(port, k)))
        .collect::<Vec<_>>()
        .join(", "))
}

/// Scopes reserve concurrently: when one refuses, the others' grants (made at the same time) are
/// given back, and they are not counted as admitted.
#[tokio::test]
async fn a_refusal_in_any_scope_leaves_nothing_reserved_in_the_others() {
    let redis = RedisServer::start();
    let m = mock().await;
    // The agent limit (a later scope) refuses: the session and global grants go back.
    let p = three_scope_proxy(&redis, &m, 100_000, 2).await;
    let call = |session: &'static str, agent: &'static str| {
        let url = format!("http://{}/v1/chat/completions", p.addr);
        async move {
            post(
                &url,
                &[
                    ("x-session-id", session),
                    ("x-agent-name", agent),
                    ("x-mock-input-tokens", "8"),
                    ("x-mock-output-chunks", "8"),
                ],
                CHAT,
            )
            .await
        }
    };
    let (r, body) = call("refuse-late", "agent-late").await;
    assert_eq!(r.status(), 402, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "agent_token_budget_exceeded");
    nothing_left_reserved(redis.port, "refuse-late", "agent-late")
        .await
        .unwrap();
    let text = get(&format!("http://{}/metrics", p.admin)).await.1;
    let text = String::from_utf8_lossy(&text);
    let decided = |scope: &str, decision: &str| {
        metric_value(
            &text,
            "tokenwarden_budget_decisions_total",
            &[("scope", scope), ("decision", decision)],
        )
    };
    assert_eq!(decided("agent", "rejected"), 1.0, "{text}");
    for scope in ["session", "global"] {
        assert_eq!(
            decided(scope, "allowed"),
            0.0,
            "{scope} counted as admitted for a refused call"
        );
    }

    // The session limit (the first scope) refuses: the agent and global grants go back.
    let p = three_scope_proxy(&redis, &m, 2, 100_000).await;
    let url = format!("http://{}/v1/chat/completions", p.addr);
    let (r, body) = post(
        &url,
        &[
            ("x-session-id", "refuse-early"),
            ("x-agent-name", "agent-early"),
            ("x-mock-input-tokens", "8"),
            ("x-mock-output-chunks", "8"),
        ],
        CHAT,
    )
    .await;
    assert_eq!(r.status(), 402, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "session_token_budget_exceeded");
    nothing_left_reserved(redis.port, "refuse-early", "agent-early")
        .await
        .unwrap();
    // The agent's record was reserved on and released (the scopes ran at the same time), or
    // never touched; either way it holds nothing and counted nothing.
    let text = get(&format!("http://{}/metrics", p.admin)).await.1;
    let text = String::from_utf8_lossy(&text);
    for scope in ["agent", "global"] {
        assert_eq!(
            metric_value(
                &text,
                "tokenwarden_budget_decisions_total",
                &[("scope", scope), ("decision", "allowed")]
            ),
            0.0,
            "{scope} counted as admitted for a refused call"
        );
    }
}

/// Calls through two proxies race on session, agent and global limits reserved concurrently:
/// the binding agent limit is never overspent past its bound, and every refused call's other
/// grants go back.
#[tokio::test]
async fn concurrent_scopes_never_overspend_the_agent_limit() {
    const M: u64 = 40;
    const CALLS: u64 = 48;
    let body = format!(
        r#"{{"model":"gpt-4o-mini","max_tokens":{M},"messages":[{{"role":"user","content":"how far can a budget stretch?"}}]}}"#
    );
    let e = tokenwarden::providers::estimate_input(
        tokenwarden::providers::Format::OpenAiChat,
        body.as_bytes(),
    );
    let err = 6;
    let limit = 16 * (e + M) + 7;
    let redis = RedisServer::start();
    let m = mock().await;
    let a = three_scope_proxy(&redis, &m, 1_000_000, limit).await;
    let b = three_scope_proxy(&redis, &m, 1_000_000, limit).await;
    let urls = [format!("http://{}", a.addr), format!("http://{}", b.addr)];
    // Every call carries the same agent (the default one) and session.
    let o = overspend_load(&urls, "race-scopes", &body, e + err, M, CALLS as usize, 400).await;
    assert!(
        o.admitted >= 8 && o.refused >= 1,
        "{} / {}",
        o.admitted,
        o.refused
    );
    let total = o.admitted * (e + err + M);
    settled_total(a.admin, "race-scopes", total).await;
    let bound = limit + M + CALLS * err;
    assert!(
        total <= bound,
        "spent {total} > bound {bound} (limit {limit})"
    );
    // Calls without an agent header are the `default` agent's.
    nothing_left_reserved(redis.port, "race-scopes", "default")
        .await
        .unwrap();
}

/// What the proxy sends one Redis node per call (its `MONITOR` lines, commands scripts run
/// left out): with session, agent and global limits, one script reserving on all three scopes
/// and one settling them, the session ranking inside it.
#[tokio::test]
async fn one_node_takes_one_script_to_reserve_and_one_to_settle_a_call_ranking_included() {
    let redis = RedisServer::start();
    let m = mock().await;
    let p = three_scope_proxy(&redis, &m, 1_000_000, 1_000_000).await;
    // Scripts loaded and the connection made before counting.
    assert_eq!(call16(p.addr, "mon-0").await.0.status(), 200);
    settled_total(p.admin, "mon-0", 16).await;

    let monitor = Monitor::start(redis.port);
    const CALLS: usize = 3;
    for i in 1..=CALLS {
        let s = format!("mon-{i}");
        assert_eq!(call16(p.addr, &s).await.0.status(), 200);
        settled_total(p.admin, &s, 16).await;
    }
    let (sent, in_scripts) = monitor.finish(2 * CALLS);
    assert_eq!(sent.get("evalsha"), Some(&(2 * CALLS)), "sent {sent:?}");
    for cmd in ["eval", "zincrby", "zremrangebyrank", "multi"] {
        assert_eq!(sent.get(cmd), None, "{cmd} sent by the proxy: {sent:?}");
    }
    assert_eq!(
        in_scripts.get("zincrby"),
        Some(&CALLS),
        "in scripts {in_scripts:?}"
    );
    let score = common::redis::cli(redis.port, &["zscore", "tw:sessions:tokens", "mon-2"]);
    assert_eq!(score.trim(), "16");
}

/// `redis-cli monitor` on a server: the commands clients sent, and those scripts ran.
struct Monitor {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Monitor {
    fn start(port: u16) -> Monitor {
        let mut child = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "monitor"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run redis-cli (apt-get install redis-server)");
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        assert_eq!(lines.recv_timeout(Duration::from_secs(5)).unwrap(), "OK");
        Monitor { child, lines }
    }

    /// Once `evalsha` scripts were sent (or 10 s passed) and a little longer for anything
    /// beyond them: commands by name, sent by clients and run in scripts.
    fn finish(mut self, evalsha: usize) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
        // `1733… [0 127.0.0.1:5000] "EVALSHA" …` from a client, `[0 lua] "ZINCRBY" …` from a script.
        let mut sent = BTreeMap::<String, usize>::new();
        let mut in_scripts = BTreeMap::<String, usize>::new();
        let mut count = |line: String| {
            let Some((src, rest)) = line
                .split_once("] \"")
                .and_then(|(a, b)| Some((a.split_once('[')?.1, b)))
            else {
                return;
            };
            let cmd = rest.split('"').next().unwrap_or("").to_ascii_lowercase();
            let to = if src.ends_with(" lua") {
                &mut in_scripts
            } else {
                &mut sent
            };
            *to.entry(cmd).or_default() += 1;
        };
        let until = std::time::Instant::now() + Duration::from_secs(10);
        let mut seen = 0;
        while seen < evalsha && std::time::Instant::now() < until {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                seen += usize::from(line.contains("\"EVALSHA\"") && !line.contains(" lua]"));
                count(line);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        self.child.kill().unwrap();
        let _ = self.child.wait();
        self.lines.try_iter().for_each(&mut count);
        (sent, in_scripts)
    }
}

/// Near a session's limit the input's upper bound no longer fits, so a call's optimistic
/// reservation comes back asking for the estimate: a second script. Once the store showed the
/// session near its limit, its calls tokenize first and reserve with one script.
#[tokio::test]
async fn near_a_limit_a_call_reserves_with_one_script() {
    let redis = RedisServer::start();
    let m = mock().await;
    let bound = tokenwarden::budget::input_bound(CHAT.as_bytes());
    // The first call fits its bound plus 100 of output; after its 16 tokens the bound does not.
    let limit = bound + 108;
    let p = proxy_with(
        &redis,
        &m,
        &format!("      tokens: {limit}\n  default_max_output_tokens: 100\n"),
    )
    .await;
    assert_eq!(call16(p.addr, "near").await.0.status(), 200);
    settled_total(p.admin, "near", 16).await;

    let monitor = Monitor::start(redis.port);
    const CALLS: u64 = 3;
    for i in 1..=CALLS {
        assert_eq!(call16(p.addr, "near").await.0.status(), 200);
        settled_total(p.admin, "near", 16 * (i + 1)).await;
    }
    let (sent, _) = monitor.finish(2 * CALLS as usize);
    // One script to reserve and one to settle each call.
    assert_eq!(
        sent.get("evalsha"),
        Some(&(2 * CALLS as usize)),
        "sent {sent:?}"
    );
}

/// A call whose input's upper bound plus its output cap is past a limit's whole amount can
/// never be reserved optimistically, however little the session has spent: it tokenizes first
/// and reserves with one script, even on a session the store has not shown near its limit.
#[tokio::test]
async fn a_bound_past_the_whole_limit_reserves_with_one_script() {
    let redis = RedisServer::start();
    let m = mock().await;
    let bound = tokenwarden::budget::input_bound(CHAT.as_bytes());
    let estimate = tokenwarden::providers::estimate_input(
        tokenwarden::providers::Format::OpenAiChat,
        CHAT.as_bytes(),
    );
    let limit = bound + 50;
    assert!(bound + 100 > limit && estimate + 100 <= limit);
    let p = proxy_with(
        &redis,
        &m,
        &format!("      tokens: {limit}\n  default_max_output_tokens: 100\n"),
    )
    .await;
    assert_eq!(call16(p.addr, "whole-0").await.0.status(), 200);
    settled_total(p.admin, "whole-0", 16).await;

    let monitor = Monitor::start(redis.port);
    const CALLS: usize = 3;
    for i in 1..=CALLS {
        // A session the store never saw: nothing marks it near its limit.
        let s = format!("whole-{i}");
        assert_eq!(call16(p.addr, &s).await.0.status(), 200);
        settled_total(p.admin, &s, 16).await;
    }
    let (sent, _) = monitor.finish(2 * CALLS);
    assert_eq!(sent.get("evalsha"), Some(&(2 * CALLS)), "sent {sent:?}");
}

/// A leased scope's slice is at most `budgets.leases.max` of its limit: a call whose output cap
/// alone is larger reserves by itself instead of opening a slice sized to it (issue 21: such a
/// slice broke the stated overspend bound); smaller calls still draw on slices.
#[tokio::test]
async fn a_call_larger_than_the_largest_slice_reserves_by_itself() {
    let redis = RedisServer::start();
    let m = mock().await;
    // Largest agent slice: 0.01 × 100,000 = 1,000 tokens.
    let cfg = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nroutes:\n  - name: leased\n    path_prefix: /\n    upstream: http://{}\nbudgets:\n  store:\n    kind: redis\n    url: {}\n    timeout: 2s\n  on_store_unreachable: fail_closed\n  leases:\n    scopes: [agent]\n    min: 0.001\n    max: 0.01\n  limits:\n    - scope: agent\n      tokens: 100000\n",
        m.addr(),
        redis.url()
    );
    let file = config_file(&cfg);
    let mut p = ProxyProcess::spawn(file.path()).await;
    p.tokenizer_loaded().await;
    let url = format!("http://{}/v1/chat/completions", p.addr);
    let call = |max_tokens: u64| {
        let url = url.clone();
        async move {
            let body = format!(
                r#"{{"model":"gpt-4o-mini","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"hi"}}]}}"#
            );
            let h = [
                ("x-agent-name", "big-calls"),
                ("x-mock-input-tokens", "8"),
                ("x-mock-output-chunks", "8"),
            ];
            post(&url, &h, &body).await.0.status()
        }
    };
    let taken = || async {
        let text = String::from_utf8(get(&format!("http://{}/metrics", p.admin)).await.1.to_vec())
            .unwrap();
        metric_value(
            &text,
            "tokenwarden_budget_slices_total",
            &[("scope", "agent"), ("op", "taken")],
        )
    };
    assert_eq!(call(5_000).await, 200);
    assert_eq!(
        taken().await,
        0.0,
        "a slice was opened for a 5,000-token call"
    );
    assert_eq!(call(8).await, 200);
    assert_eq!(taken().await, 1.0, "small calls no longer lease");
}

/// The Redis budget store on `redis` as the library builds it, and a runtime to drive it.
fn redis_store(
    redis: &RedisServer,
) -> (tokio::runtime::Runtime, tokenwarden::budget::store::Store) {
    use tokenwarden::budget::redis::{RedisStore, Target};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let hour = Duration::from_secs(3600);
    let url = redis.url();
    let store = RedisStore::new(
        Target::Single(&url),
        Duration::from_secs(5),
        (hour, hour),
        hour,
        0,
        0,
    )
    .unwrap();
    (
        rt,
        tokenwarden::budget::store::Store::Redis(Box::new(store)),
    )
}

/// One step of [`the_script_decides_as_the_memory_store_does`].
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A call asks: input, output cap, how far the input's upper bound is above the input, and
    /// (a slice opening for it) how much more than the call it asks for.
    Ask(u64, u64, u64, Option<u64>),
    /// The `n`th reservation held (modulo) ends, having produced `out` (at most its cap).
    End(usize, u64),
}

fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
    use proptest::prelude::*;
    let step = prop_oneof![
        3 => (1u64..30, 0u64..=40, 0u64..60, proptest::option::weighted(0.2, 1u64..100))
            .prop_map(|(i, m, b, s)| Step::Ask(i, m, b, s)),
        2 => (0usize..64, 0u64..=40).prop_map(|(n, o)| Step::End(n, o)),
    ];
    proptest::collection::vec(step, 1..60)
}

/// The Redis script mirrors the memory store's admission rule (`ledger::decide`): the same
/// steps give the same answers, grants and counters in both — a call's reservation whole even
/// past the limit, a slice's capped at what remains but never below its call's, an optimistic
/// one only when it fits — and spend ends within the limit plus one call's maximum output
/// whatever the interleaving.
#[test]
fn the_script_decides_as_the_memory_store_does() {
    use tokenwarden::budget::store::{Charge, Grant, Reserved, Store, Totals, Want};

    let redis = RedisServer::start();
    let (rt, remote) = redis_store(&redis);
    let case = std::sync::atomic::AtomicU64::new(0);
    // A call's want, or a slice's `more` above it.
    let want = |limit, min, want: u64, more: Option<u64>, optimistic| Want {
        counter: "tokens:life".into(),
        window: None,
        limit,
        min,
        want: want + more.unwrap_or(0),
        enforce: true,
        optimistic,
        floor: want,
    };
    let config = proptest::test_runner::Config::with_cases(64);
    proptest::proptest!(config, |(limit in 20u64..300, steps in steps())| {
        let key = format!("s:case-{}", case.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let local = Store::Memory(tokenwarden::budget::memory::MemoryStore::open(None));
        rt.block_on(async {
            // Per reservation held: its grant in each store, input, output cap.
            let mut held: Vec<(Grant, Grant, u64, u64)> = Vec::new();
            let ask = |w: Want| {
                let (local, remote, key) = (&local, &remote, &key);
                async move {
                    let a = local.reserve(key, 0, std::slice::from_ref(&w), None).await.unwrap();
                    let b = remote.reserve(key, 0, &[w], None).await.unwrap();
                    (a, b)
                }
            };
            let end = |(a, b, input, cap): (Grant, Grant, u64, u64), out: u64| {
                let (local, remote, key) = (&local, &remote, &key);
                let charge = move |g: Grant| Charge {
                    counter: "tokens:life".into(),
                    window: None,
                    start: g.start,
                    granted: g.granted,
                    actual: input + out.min(cap),
                };
                async move {
                    let a = local.settle(key, 0, &[charge(a)], Totals::default(), None).await.unwrap();
                    let b = remote.settle(key, 0, &[charge(b)], Totals::default(), None).await.unwrap();
                    assert_eq!(a, b, "spent plus reserved after a settle");
                }
            };
            for step in &steps {
                match *step {
                    Step::Ask(input, cap, above, slice) => {
                        let bound = input + above;
                        let (mut a, mut b) = ask(want(limit, bound, bound + cap, slice, true)).await;
                        assert_eq!(a, b, "optimistic ask");
                        if a == Reserved::NeedEstimate {
                            (a, b) = ask(want(limit, input, input + cap, slice, false)).await;
                            assert_eq!(a, b, "ask with the estimate");
                        }
                        if let (Reserved::Granted(a), Reserved::Granted(b)) = (a, b) {
                            held.push((a[0], b[0], input, cap));
                        }
                    }
                    Step::End(n, out) if !held.is_empty() => {
                        let r = held.swap_remove(n % held.len());
                        end(r, out).await;
                    }
                    Step::End(..) => {}
                }
            }
            for r in std::mem::take(&mut held) {
                end(r, u64::MAX).await;
            }
            let counter = |g: Option<tokenwarden::budget::store::Group>| {
                g.map(|g| g.counters["tokens:life"]).unwrap_or_default()
            };
            let a = counter(local.get(&key).await.unwrap());
            let b = counter(remote.get(&key).await.unwrap());
            assert_eq!((a.spent, a.reserved), (b.spent, b.reserved));
            assert_eq!(a.reserved, 0);
            // Each reservation spends at most the call it was asked for (the proxy draws later
            // calls from a slice only where they fit in it).
            assert!(a.spent <= limit + 40, "spent {} of {limit}", a.spent);
        });
    });
}

/// A client's `max_tokens` may be any number: a call whose want is past the whole limit
/// reserves the limit (holding off others while it runs) and gives it back when it ends. Whole,
/// 2^64 − 1 tokens overflowed the script's reply and stayed reserved, refusing every later call.
#[tokio::test]
async fn a_want_past_the_whole_limit_reserves_the_limit_and_gives_it_back() {
    let redis = RedisServer::start();
    let m = mock().await;
    let p = proxy_with(&redis, &m, "      tokens: 1000\n").await;
    let huge = r#"{"model":"gpt-4o-mini","max_tokens":18446744073709551615,"messages":[{"role":"user","content":"hi"}]}"#;
    let (r, _) = post(
        &format!("http://{}/v1/chat/completions", p.addr),
        &[
            ("x-session-id", "huge"),
            ("x-mock-input-tokens", "8"),
            ("x-mock-output-chunks", "8"),
        ],
        huge,
    )
    .await;
    assert_eq!(r.status(), 200);
    settled_total(p.admin, "huge", 16).await;
    // Nothing left reserved: the next call is admitted and sees the rest of the limit.
    let (r, _) = call16(p.addr, "huge").await;
    assert_eq!(r.status(), 200);
    settled_total(p.admin, "huge", 32).await;
    let (reserved, _) = common::redis::reserved_in(redis.port, "tw:{s:huge}");
    assert_eq!(reserved, 0);
}

/// A dead proxy's reservation is released by the next check-and-reserve however large it is:
/// the lease's record wrote amounts of 15 digits or more (USD limits count nano-USD: a slice
/// of $100,000) as `1e+15`, which the purge did not read back, so the budget stayed held.
#[test]
fn a_dead_leases_large_reservation_is_released() {
    use tokenwarden::budget::store::{Lease, Reserved, Want};

    let redis = RedisServer::start();
    let (rt, store) = redis_store(&redis);
    let want = |n: u64| Want {
        counter: "usd:life".into(),
        window: None,
        limit: 10u64.pow(16),
        min: 1,
        want: n,
        enforce: true,
        optimistic: false,
        floor: n,
    };
    rt.block_on(async {
        // A lease that already ran out: its proxy died without settling.
        let dead = Lease {
            id: 41,
            until_ms: 1,
        };
        let big = 1_234_567_890_123_456;
        let got = store
            .reserve("g", 0, &[want(big)], Some(dead))
            .await
            .unwrap();
        assert!(
            matches!(got, Reserved::Granted(ref g) if g[0].granted == big),
            "{got:?}"
        );
        // The next reservation purges it first.
        let got = store.reserve("g", 0, &[want(7)], None).await.unwrap();
        assert!(
            matches!(got, Reserved::Granted(ref g) if g[0].used == 0),
            "{got:?}"
        );
        let c = store.get("g").await.unwrap().unwrap().counters["usd:life"];
        assert_eq!(c.reserved, 7);
    });
}

/// A call whose client went away while its check-and-reserve ran in Redis, then SIGTERM: the
/// proxy waits for the script's answer and gives the reservation back before it exits, rather
/// than leaving it held until its lease runs out.
#[tokio::test]
async fn sigterm_after_a_client_gone_during_admission_gives_the_reservation_back() {
    let redis = RedisServer::start();
    let m = mock().await;
    // A store timeout longer than Redis sleeps below: the script's answer arrives.
    let cfg = config(m.addr(), &redis.url(), "fail_closed")
        .replace("300ms", "10s")
        .replace("tokens: 50", "tokens: 100000");
    let file = config_file(&format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n{cfg}"
    ));
    let mut p = ProxyProcess::spawn(file.path()).await;
    p.tokenizer_loaded().await;
    // Connect the proxy's store first (another session), so the script is sent at once below.
    assert_eq!(call16(p.addr, "term-warm").await.0.status(), 200);
    // Its settlement done: nothing else is pending when SIGTERM comes.
    settled(p.admin, "term-warm", 16).await;
    let sleeper = redis_sleeps(redis.port, "1.5");
    std::thread::sleep(Duration::from_millis(100));
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut gone = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-session-id: term-1\r\nx-mock-input-tokens: 8\r\nx-mock-output-chunks: 8\r\n\
         content-length: {}\r\n\r\n",
        CHAT.len()
    );
    gone.write_all(head.as_bytes()).await.unwrap();
    gone.write_all(CHAT.as_bytes()).await.unwrap();
    let mut answer = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(200), gone.read(&mut answer)).await;
    assert!(early.is_err(), "the call was answered while Redis slept");
    drop(gone);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Redis answers ~1 s later, within the 2 s the shutdown waits for settlements.
    p.signal("TERM");
    let exited = tokio::time::timeout(Duration::from_secs(10), p.child.wait()).await;
    assert!(
        exited.is_ok(),
        "the proxy did not exit within 10 s of SIGTERM"
    );
    assert_eq!(&sleeper.join().unwrap(), b"+OK\r\n");
    // Nothing runs any more that could release it but the lease's expiry (30 s).
    assert_eq!(
        common::redis::reserved_in(redis.port, "tw:{s:term-1}"),
        (0, 0),
        "the reservation outlived the proxy"
    );
}

/// A caller whose clock is behind the counter's window (a settle retried with the time of its
/// first attempt, an admission's time taken before the tokenizer, a sidecar a few ms behind at a
/// window's turn) draws on the counter's newer window, in both stores alike. Before, a stale
/// settle rolled the counter back a window: the newer window's spend and reservations were
/// wiped, and calls in flight in it were admitted again on top of each other.
#[test]
fn a_stale_clock_never_moves_a_windowed_counter_back() {
    use tokenwarden::budget::store::{Charge, Grant, Reserved, Store, Totals, Want};

    let redis = RedisServer::start();
    let (rt, remote) = redis_store(&redis);
    let local = Store::Memory(tokenwarden::budget::memory::MemoryStore::open(None));
    let want = |n: u64| Want {
        counter: "tokens:60".into(),
        window: Some(60),
        limit: 1000,
        min: n,
        want: n,
        enforce: true,
        optimistic: false,
        floor: n,
    };
    let charge = |g: &Grant, actual: u64| Charge {
        counter: "tokens:60".into(),
        window: Some(60),
        start: g.start,
        granted: g.granted,
        actual,
    };
    rt.block_on(async {
        for store in [&local, &remote] {
            let grant = |r: Reserved| match r {
                Reserved::Granted(g) => g[0],
                other => panic!("refused: {other:?}"),
            };
            // A is admitted in the window [60, 120), B in [120, 180).
            let a = grant(store.reserve("s:w", 119, &[want(100)], None).await.unwrap());
            let b = grant(store.reserve("s:w", 121, &[want(400)], None).await.unwrap());
            assert_eq!((a.start, b.start), (60, 120));
            // A settles with the time of its first attempt, in the older window.
            store
                .settle("s:w", 119, &[charge(&a, 80)], Totals::default(), None)
                .await
                .unwrap();
            // C's admission took its time before the turn.
            let c = grant(store.reserve("s:w", 119, &[want(400)], None).await.unwrap());
            assert_eq!(
                (c.start, c.used),
                (120, 480),
                "C saw B's reservation and A's spend"
            );
            let now = store.get("s:w").await.unwrap().unwrap().counters["tokens:60"];
            assert_eq!((now.start, now.spent, now.reserved), (120, 80, 800));
            // A fourth call of 400 no longer fits: 80 spent + 800 reserved of 1,000.
            assert!(matches!(
                store.reserve("s:w", 122, &[want(400)], None).await.unwrap(),
                Reserved::Refused { used: 880, .. }
            ));
            store
                .settle(
                    "s:w",
                    125,
                    &[charge(&b, 300), charge(&c, 100)],
                    Totals::default(),
                    None,
                )
                .await
                .unwrap();
            let now = store.get("s:w").await.unwrap().unwrap().counters["tokens:60"];
            assert_eq!((now.start, now.spent, now.reserved), (120, 480, 0));
        }
    });
}

/// A reserve whose answer does not come within the store's timeout (Redis busy) may still have
/// run: its reservation is taken back as soon as Redis answers again, not held until its lease
/// runs out (30 s), refusing the session's calls meanwhile.
#[tokio::test]
async fn a_reserve_that_timed_out_leaves_nothing_reserved() {
    let redis = RedisServer::start();
    let m = mock().await;
    let p = proxy_with(&redis, &m, "      tokens: 100000\n").await;
    // The store is connected (another session), so the script goes out at once below.
    assert_eq!(call16(p.addr, "late-warm").await.0.status(), 200);
    settled(p.admin, "late-warm", 16).await;
    // Redis sleeps past the proxy's 2 s timeout: the call fails closed with 503, and the
    // script runs when Redis wakes.
    let sleeper = redis_sleeps(redis.port, "3");
    std::thread::sleep(Duration::from_millis(100));
    let (r, _) = call16(p.addr, "late-1").await;
    assert_eq!(r.status(), 503);
    assert_eq!(&sleeper.join().unwrap(), b"+OK\r\n");
    // Commands queued while Redis slept run as it wakes: the reserve script, then the release.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let clear = eventually(Duration::from_secs(5), || async {
        common::redis::reserved_in(redis.port, "tw:{s:late-1}") == (0, 0)
    })
    .await;
    assert!(
        clear,
        "still reserved: {:?}",
        common::redis::reserved_in(redis.port, "tw:{s:late-1}")
    );
}

/// Keep `redis-server` on `port` busy for `secs` seconds (`DEBUG SLEEP`) from another
/// connection; the thread returns Redis's answer once it wakes.
fn redis_sleeps(port: u16, secs: &'static str) -> std::thread::JoinHandle<[u8; 5]> {
    std::thread::spawn(move || {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(format!("DEBUG SLEEP {secs}\r\n").as_bytes())
            .unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        buf
    })
}
