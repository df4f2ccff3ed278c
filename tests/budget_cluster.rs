//! The Redis Cluster budget store (`budgets.store.kind: redis_cluster`) against a real cluster of
//! Debian `redis-server` processes in cluster mode (3 primaries, 3 replicas, on free loopback
//! ports, made per test with `redis-cli --cluster create`, killed at the end): two `tokenwarden`
//! processes share limits through it, each scope's keys land on the slot of its hash tag, and a
//! primary SIGKILLed mid-run is failed over to its replica with the spend kept within the loss
//! README states.
//!
//! Needs `redis-server` and `redis-cli` on PATH (`apt-get install redis-server`; `.ci/run`
//! installs it). Missing → the tests fail and say so; they never skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::{cli, RedisCluster, NODE_TIMEOUT_MS};
use common::*;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

/// A config on the cluster (one seed node only: the client reads the rest of the topology).
/// The store timeout of tests where no shard dies: each `per_core` worker opens its own cluster
/// connection on its first call (topology from the seeds, then every primary), which a debug
/// build on a loaded CI machine did not always finish within the failover tests' 300 ms.
const LIVE_TIMEOUT: &str = "timeout: 2s";

fn config(mock: SocketAddr, seed: &str, limits: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nroutes:\n  - name: cluster-budget\n    path_prefix: /\n    upstream: http://{mock}\nbudgets:\n  store:\n    kind: redis_cluster\n    nodes: [{seed}]\n    timeout: 300ms\n    reservation_lease: 10s\n  on_store_unreachable: fail_closed\n  limits:\n{limits}"
    )
}

/// A call of 16 tokens (8 in, 8 out) for `session` of `agent`, `extra` headers added.
async fn call16(
    addr: SocketAddr,
    session: &str,
    agent: &str,
    extra: &[(&str, &str)],
) -> (http::Response<()>, bytes::Bytes) {
    let mut h = vec![
        ("x-session-id", session),
        ("x-agent-name", agent),
        ("x-mock-input-tokens", "8"),
        ("x-mock-output-chunks", "8"),
    ];
    h.extend_from_slice(extra);
    post(&format!("http://{addr}/v1/chat/completions"), &h, CHAT).await
}

/// The session's lifetime tokens in the store, as a proxy's admin API reads them.
async fn session_tokens(admin: SocketAddr, session: &str) -> Option<u64> {
    let (r, b) = get(&format!("http://{admin}/v1/sessions/{session}")).await;
    (r.status() == 200)
        .then(|| {
            serde_json::from_slice::<serde_json::Value>(&b).unwrap()["tokens"]["total"].as_u64()
        })
        .flatten()
}

/// Wait until the store shows `total` tokens for `session` (settling is asynchronous).
async fn settled(admin: SocketAddr, session: &str, total: u64) {
    let ok = eventually(Duration::from_secs(10), || async move {
        session_tokens(admin, session).await == Some(total)
    })
    .await;
    assert!(ok, "session {session} never showed {total} tokens");
}

#[tokio::test]
async fn two_proxy_processes_share_session_and_agent_limits_through_a_redis_cluster() {
    let cluster = RedisCluster::start(3);
    let m = mock().await;
    let cfg = config_file(
        &config(
            m.addr(),
            &cluster.seeds()[0],
            "    - scope: session\n      tokens: 50\n    - scope: agent\n      tokens: 80\n",
        )
        .replace("timeout: 300ms", LIVE_TIMEOUT),
    );
    let mut a = ProxyProcess::spawn(cfg.path()).await;
    let mut b = ProxyProcess::spawn(cfg.path()).await;
    a.tokenizer_loaded().await;
    b.tokenizer_loaded().await;
    // Calls through either process, each waited for until settled; then refusals by both.
    let steps = [
        // 48 of the session's 50 spent through two processes: the next call is refused by either.
        (
            vec![&a, &b, &a],
            "shared-1",
            "session_token_budget_exceeded",
        ),
        // The agent's 80 (48 spent) are shared too, on another key (most likely another shard).
        (vec![&b, &a], "shared-2", "agent_token_budget_exceeded"),
    ];
    for (through, session, refusal) in steps {
        for (i, p) in through.into_iter().enumerate() {
            let (r, body) = call16(p.addr, session, "fleet", &[]).await;
            assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(&body));
            settled(p.admin, session, 16 * (i as u64 + 1)).await;
        }
        let next = if refusal.starts_with("agent") {
            "shared-3"
        } else {
            session
        };
        for p in [&a, &b] {
            let (r, body) = call16(p.addr, next, "fleet", &[]).await;
            assert_eq!(r.status(), 402, "{}", String::from_utf8_lossy(&body));
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], refusal);
        }
    }
    assert_eq!(m.stats().requests, 5);
}

#[tokio::test]
async fn keys_of_each_scope_land_on_the_slot_of_their_hash_tag() {
    let cluster = RedisCluster::start(3);
    let m = mock().await;
    let cfg = config_file(&config(
        m.addr(),
        &cluster.seeds()[1],
        "    - scope: session\n      tokens: 1000\n    - scope: task\n      tokens: 1000\n    - scope: agent\n      tokens: 1000\n    - scope: global\n      tokens: 100000\n",
    )
    .replace("timeout: 300ms", LIVE_TIMEOUT));
    let mut p = ProxyProcess::spawn(cfg.path()).await;
    p.tokenizer_loaded().await;
    let sessions: Vec<String> = (0..8).map(|i| format!("slot-{i}")).collect();
    for s in &sessions {
        let (r, body) = call16(p.addr, s, "slotter", &[("x-task-id", "job-slot")]).await;
        assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(&body));
        settled(p.admin, s, 16).await;
    }
    let scopes: Vec<String> = sessions
        .iter()
        .map(|s| format!("s:{s}"))
        .chain(["t:job-slot".into(), "a:slotter".into(), "g".into()])
        .collect();
    let mut primaries = std::collections::BTreeSet::new();
    for scope in &scopes {
        let key = format!("tw:{{{scope}}}");
        let slot = cluster.keyslot(scope);
        // The record, its reservation leases and its settled-lease marks share the tag's slot.
        for k in [key.clone(), format!("{key}:l"), format!("{key}:d")] {
            assert_eq!(
                cluster.keyslot(&k),
                slot,
                "{k} is not on the slot of {scope}"
            );
        }
        let owner = cluster.primary_of_slot(slot);
        primaries.insert(owner);
        assert_eq!(
            cli(owner, &["exists", &key]).trim(),
            "1",
            "{key} not on its slot's primary"
        );
        assert!(
            cli(owner, &["hget", &key, "in"])
                .trim()
                .parse::<u64>()
                .unwrap()
                >= 8,
            "{key} holds no spend"
        );
        let replica = cluster.replica_of(owner);
        // SCAN takes no key, so the replica answers it itself (no redirect to its primary).
        let on_replica = eventually(Duration::from_secs(5), || {
            let key = key.clone();
            async move { cli(replica, &["--scan", "--pattern", &key]).trim() == key }
        })
        .await;
        assert!(on_replica, "{key} never reached the replica of its primary");
        // Any other primary redirects to the owner instead of holding a copy.
        for other in cluster
            .seeds()
            .iter()
            .map(|u| u.rsplit(':').next().unwrap().parse::<u16>().unwrap())
        {
            if other != owner && other != replica {
                let got = cli(other, &["exists", &key]);
                assert!(
                    got.contains("MOVED"),
                    "node {other} answered {got} for {key}"
                );
            }
        }
    }
    assert!(
        primaries.len() >= 2,
        "eleven scopes all on one primary: keys are not spread by their tags"
    );
}

/// Calls on the cluster's workers in flight.
const WORKERS: u64 = 4;

/// A primary SIGKILLed while calls run on it: its replica is promoted, the proxies follow the new
/// topology, calls that end while the shard has no primary settle once it has one (retried, each
/// counted once). With asynchronous replication the spend lost is at most the settles the dead
/// primary had acknowledged and not yet sent on, which is at most what was in flight to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_killed_mid_run_fails_over_within_the_stated_loss() {
    let (spent, recorded) = failover_run("failover-async", 0).await;
    assert!(
        recorded <= spent,
        "recorded {recorded} > spent {spent}: a settle counted twice"
    );
    assert!(
        spent - recorded <= WORKERS * 16,
        "lost {} tokens, more than the {} in flight",
        spent - recorded,
        WORKERS * 16
    );
}

/// With `settle_replicas: 1` every settle is on the replica before it is done: a failover loses
/// none of it, including the calls that ended while their shard had no primary (their settles are
/// retried until the replica is promoted; without the retry they would be lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_settle_replicas_a_failover_loses_no_settled_spend() {
    let (spent, recorded) = failover_run("failover-wait", 1).await;
    assert_eq!(
        recorded, spent,
        "spend lost or counted twice across the failover"
    );
}

/// Run calls of `session` through two proxies, SIGKILL the primary holding it mid-run, wait for
/// its replica's promotion, run on; (tokens spent by answered calls, tokens the store recorded).
async fn failover_run(session: &str, settle_replicas: u32) -> (u64, u64) {
    let mut cluster = RedisCluster::start(3);
    let m = mock().await;
    let cfg = config_file(
        &config(
            m.addr(),
            &cluster.seeds()[0],
            "    - scope: session\n      tokens: 100000000\n",
        )
        .replace(
            "    reservation_lease: 10s\n",
            &format!("    reservation_lease: 10s\n    settle_replicas: {settle_replicas}\n"),
        ),
    );
    let a = ProxyProcess::spawn(cfg.path()).await;
    let b = ProxyProcess::spawn(cfg.path()).await;
    let session = session.to_string();
    let primary = cluster.primary_of_slot(cluster.keyslot(&format!("s:{session}")));
    let replica = cluster.replica_of(primary);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let ok_after = Arc::new(AtomicU64::new(0));
    let failed_over = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let addr = if w % 2 == 0 { a.addr } else { b.addr };
        let (session, stop, ok, refused, ok_after, failed_over) = (
            session.clone(),
            stop.clone(),
            ok.clone(),
            refused.clone(),
            ok_after.clone(),
            failed_over.clone(),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // Each call spends 300 ms upstream: calls admitted before the kill end after it.
                let (r, body) = call16(
                    addr,
                    &session,
                    "failover",
                    &[("x-mock-first-byte-delay-ms", "300")],
                )
                .await;
                match r.status().as_u16() {
                    200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if failed_over.load(Ordering::Relaxed) {
                            ok_after.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    503 => {
                        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        assert_eq!(v["error"]["code"], "budget_store_unavailable");
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    s => panic!("status {s}: {}", String::from_utf8_lossy(&body)),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        ok.load(Ordering::Relaxed) >= WORKERS,
        "no traffic before the kill"
    );
    cluster.kill(primary);
    let killed = Instant::now();
    let promoted = eventually(Duration::from_secs(30), || async move {
        cli(replica, &["role"]).starts_with("master")
    })
    .await;
    assert!(promoted, "the replica on {replica} was never promoted");
    cluster.wait_healthy(Duration::from_secs(30));
    failed_over.store(true, Ordering::Relaxed);
    let gap = killed.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let ok = ok.load(Ordering::Relaxed);
    assert!(
        ok_after.load(Ordering::Relaxed) >= WORKERS,
        "calls did not succeed again after the failover"
    );
    assert!(
        gap < Duration::from_millis(NODE_TIMEOUT_MS * 15),
        "failover took {gap:?}"
    );

    // Every settle has landed (retried through the gap) once the total stops moving.
    let spent = ok * 16;
    let mut recorded = 0;
    let mut last = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = session_tokens(a.admin, &session).await;
        if let Some(n) = now.filter(|_| now == last) {
            recorded = n;
            break;
        }
        last = now;
    }
    assert_eq!(session_tokens(b.admin, &session).await, Some(recorded));
    eprintln!(
        "failover: {ok} calls answered (spent {spent} tokens), {} refused while the shard had no primary ({gap:?}), recorded {recorded}",
        refused.load(Ordering::Relaxed)
    );
    assert_eq!(
        m.stats().requests,
        ok,
        "a refused call reached the upstream"
    );
    (spent, recorded)
}

/// The shard of the agent's key dies while a call's scopes reserve at the same time: the
/// session's grant (on a live shard) is given back and the call is refused (`fail_closed`);
/// after the replica takes over, calls are admitted again and nothing stays reserved.
#[tokio::test]
async fn a_shard_dying_mid_admission_leaves_no_reservation_on_the_live_shards() {
    let mut cluster = RedisCluster::start(3);
    let m = mock().await;
    let cfg = config_file(&config(
        m.addr(),
        &cluster.seeds()[0],
        "    - scope: session\n      tokens: 100000\n    - scope: agent\n      tokens: 100000\n",
    ));
    let p = ProxyProcess::spawn(cfg.path()).await;
    let agent = "dying-agent";
    let agent_primary = cluster.primary_of_slot(cluster.keyslot(&format!("a:{agent}")));
    // A session whose key lives on another shard than the agent's.
    let session = (0..64)
        .map(|i| format!("dying-{i}"))
        .find(|s| cluster.primary_of_slot(cluster.keyslot(&format!("s:{s}"))) != agent_primary)
        .unwrap();
    let session_key = format!("tw:{{s:{session}}}");
    let session_primary = cluster.primary_of_slot(cluster.keyslot(&format!("s:{session}")));
    // Both shards known to the proxy's cluster client before one dies.
    let (r, body) = call16(p.addr, &session, agent, &[]).await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(&body));
    settled(p.admin, &session, 16).await;

    cluster.kill(agent_primary);
    let (r, body) = call16(p.addr, &session, agent, &[]).await;
    assert_eq!(r.status(), 503, "{}", String::from_utf8_lossy(&body));
    let released = eventually(Duration::from_secs(10), || async {
        common::redis::reserved_in(session_primary, &session_key) == (0, 0)
    })
    .await;
    assert!(
        released,
        "the session's grant stayed reserved: {:?}",
        common::redis::reserved_in(session_primary, &session_key)
    );

    // The replica takes over: calls are admitted again, and settle to nothing reserved.
    let back = eventually(Duration::from_secs(20), || async {
        call16(p.addr, &session, agent, &[]).await.0.status() == 200
    })
    .await;
    assert!(back, "no call was admitted after the failover");
    let clear = eventually(Duration::from_secs(10), || async {
        common::redis::reserved_in(session_primary, &session_key) == (0, 0)
    })
    .await;
    assert!(clear, "a settled call left a reservation behind");
}
