//! The shared store: one Redis hash per scope instance (`tw:{s:ID}`, `tw:{t:ID}`, `tw:{a:NAME}`,
//! `tw:{g}` — hash-tagged, so every script touches one key and Redis Cluster works; a task's key
//! depends on its id alone, so every proxy that sees one of its calls draws on it), every
//! check-and-reserve and every settle one server-side Lua script (atomic on the server) whose keys
//! share one hash slot; either a multiplexed auto-reconnecting connection to one Redis or the
//! Redis Cluster client (slot routing, MOVED/ASK, topology refresh from the seed nodes), with
//! connect and response timeouts.

use std::collections::BTreeMap;
use std::time::Duration;

use metrics::counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncCommands, Cmd, Pipeline, RedisFuture, Script, Value};
use tokio::sync::OnceCell;

use super::ledger::{Charge, Counter, Grant, Group, Lease, Reserved, StoreError, Totals, Want};
use super::limits::{SESSION_PREFIX, TASK_PREFIX};

/// Sorted set of session ids by lifetime tokens, for `GET /v1/sessions?top=N`.
const TOP_KEY: &str = "tw:sessions:tokens";
/// Sorted set of task ids by lifetime tokens, for `GET /v1/tasks?top=N`.
const TOP_TASKS_KEY: &str = "tw:tasks:tokens";
/// Sessions (tasks) kept in the ranking.
const MAX_RANKED: isize = 10_000;

/// The ranking a scope's records go to (sessions and tasks are ranked), and its id there.
fn ranked(key: &str) -> Option<(&'static str, &str)> {
    if let Some(id) = key.strip_prefix(SESSION_PREFIX) {
        Some((TOP_KEY, id))
    } else {
        key.strip_prefix(TASK_PREFIX).map(|id| (TOP_TASKS_KEY, id))
    }
}

/// Check every want of every scope given, then reserve all or nothing. Mirrors `store::decide`.
/// Keys: each scope's hash and lease set. `ARGV`: now, scopes, now in ms; then per scope: wants,
/// ttl, lease id (empty: none), lease expiry in ms, and per want: counter, window, limit, min,
/// want, floor (reserved at least, even past the limit: `ledger::Want::floor`), mode — 0
/// observe (never refuse), 1 enforce, 2 enforce optimistically (reserve only if `want` fits). Replies `{1, start, granted, used, …}` (every want in order), `{2}` (an
/// optimistic want does not fit) or `{0, scope, want, used}` (refused). Several scopes in one
/// script only on one node (a cluster's scopes live on different slots: one scope per script).
const RESERVE: &str = r#"
local now = tonumber(ARGV[1])
local scopes = tonumber(ARGV[2])
local now_ms = tonumber(ARGV[3])
local at = 4
local plan = {}
for s = 1, scopes do
  local h, lk = KEYS[2 * s - 1], KEYS[2 * s]
  local n = tonumber(ARGV[at])
  local x = {h = h, lk = lk, ttl = tonumber(ARGV[at + 1]), lease = ARGV[at + 2], until_ms = ARGV[at + 3], sets = {}}
  at = at + 4
  -- Reservations whose lease ran out (their proxy stopped renewing: it died) are released.
  local dead = redis.call('ZRANGEBYSCORE', lk, '-inf', now_ms)
  for _, id in ipairs(dead) do
    local spec = redis.call('HGET', h, 'l:' .. id)
    if spec then
      for c, st, g in string.gmatch(spec, '([^\t\n]+)\t(%d+)\t(%d+)\n') do
        local v = redis.call('HMGET', h, c .. ':s', c .. ':r')
        if tonumber(v[1]) == tonumber(st) then
          local r = (tonumber(v[2]) or 0) - tonumber(g)
          if r < 0 then r = 0 end
          redis.call('HSET', h, c .. ':r', r)
        end
      end
      redis.call('HDEL', h, 'l:' .. id)
    end
    redis.call('ZREM', lk, id)
  end
  for i = 0, n - 1 do
    local c = ARGV[at]
    local w = tonumber(ARGV[at + 1])
    local limit = tonumber(ARGV[at + 2])
    local min = tonumber(ARGV[at + 3])
    local want = tonumber(ARGV[at + 4])
    local floor = tonumber(ARGV[at + 5])
    local mode = ARGV[at + 6]
    at = at + 7
    local start = 0
    if w > 0 then start = now - (now % w) end
    local v = redis.call('HMGET', h, c .. ':s', c .. ':p', c .. ':r')
    local st = tonumber(v[1]) or 0
    local p = tonumber(v[2]) or 0
    local r = tonumber(v[3]) or 0
    -- Windows only move forward: a caller whose clock is behind (a retried call, a slower
    -- sidecar) draws on the counter's newer window instead of wiping it.
    if st > start then start = st elseif st ~= start then p = 0; r = 0 end
    local used = p + r
    local remaining = limit - used
    if remaining < 0 then remaining = 0 end
    if mode == '2' and remaining < want then return {2} end
    if mode ~= '0' and remaining < math.max(min, 1) then return {0, s - 1, i, used} end
    local g = math.max(math.min(want, remaining), floor)
    x.sets[#x.sets + 1] = {c, start, p, r + g, g, used}
  end
  plan[s] = x
end
local out = {1}
for _, x in ipairs(plan) do
  local spec = ''
  for _, st in ipairs(x.sets) do
    redis.call('HSET', x.h, st[1] .. ':s', st[2], st[1] .. ':p', st[3], st[1] .. ':r', st[4])
    -- As integers: Lua writes a number of 15 digits or more as 1e+15 (and rounds it), which
    -- the purge above would not read back, leaving a dead lease's reservation held.
    spec = spec .. st[1] .. '\t' .. string.format('%d', st[2]) .. '\t' .. string.format('%d', st[5]) .. '\n'
    out[#out + 1] = st[2]
    out[#out + 1] = st[5]
    out[#out + 1] = st[6]
  end
  if x.lease ~= '' then
    redis.call('HSET', x.h, 'l:' .. x.lease, spec)
    redis.call('ZADD', x.lk, x.until_ms, x.lease)
  end
  if x.ttl > 0 then
    redis.call('EXPIRE', x.h, x.ttl)
    redis.call('EXPIRE', x.lk, x.ttl)
  end
end
return out
"#;

/// Replace reservations with spend (in the window they were made in, else the counter's
/// current one, which a stale `now` never moves back).
/// A reservation whose lease already ran out was released by a purge: only its spend is added.
/// Settled lease ids are kept (`KEYS[3]`, a sorted set by time, for `ARGV[9]` ms) so a settle
/// retried after its reply was lost (a timeout, a failover) is not counted twice. Every scope of
/// a call in one script on one node (a cluster: one scope per script). Keys per scope: its hash,
/// lease set, settled set and ranking (on one node the session's or task's ranking, added to in
/// the same script — and a retried settle does not count twice there either; else any key of
/// the scope, unused). `ARGV`: now, scopes, input, output and cost tokens, now in ms, ms settled
/// ids are kept, tokens, ids a ranking keeps; then per scope: charges, lease id (empty: none),
/// ttl, ranked id (empty: none), and per charge: counter, window, start, granted, actual.
const SETTLE: &str = r#"
local now = tonumber(ARGV[1])
local scopes = tonumber(ARGV[2])
local now_ms = tonumber(ARGV[6])
local keep_ms = tonumber(ARGV[7])
local tokens = tonumber(ARGV[8])
local ranked = tonumber(ARGV[9])
local at = 10
local out = {}
for s = 1, scopes do
  local h, lk, dk, rk = KEYS[4 * s - 3], KEYS[4 * s - 2], KEYS[4 * s - 1], KEYS[4 * s]
  local n = tonumber(ARGV[at])
  local lease = ARGV[at + 1]
  local ttl = tonumber(ARGV[at + 2])
  local rank = ARGV[at + 3]
  at = at + 4
  local live = 1
  local again = false
  if lease ~= '' then
    if redis.call('ZSCORE', dk, lease) then
      again = true
    else
      redis.call('ZREMRANGEBYSCORE', dk, '-inf', now_ms - keep_ms)
      redis.call('ZADD', dk, now_ms, lease)
      redis.call('PEXPIRE', dk, keep_ms)
      live = redis.call('ZREM', lk, lease)
      redis.call('HDEL', h, 'l:' .. lease)
    end
  end
  for i = 0, n - 1 do
    local c = ARGV[at]
    local w = tonumber(ARGV[at + 1])
    local start = tonumber(ARGV[at + 2])
    local granted = tonumber(ARGV[at + 3])
    local actual = tonumber(ARGV[at + 4])
    at = at + 5
    if again then
      local v = redis.call('HMGET', h, c .. ':p', c .. ':r')
      out[#out + 1] = (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0)
    else
      local v = redis.call('HMGET', h, c .. ':s', c .. ':p', c .. ':r')
      local st = tonumber(v[1]) or 0
      local p = tonumber(v[2]) or 0
      local r = tonumber(v[3]) or 0
      if st == start then
        if live == 1 then r = r - granted end
        if r < 0 then r = 0 end
      else
        local cur = 0
        if w > 0 then cur = now - (now % w) end
        if cur > st then st = cur; p = 0; r = 0 end
      end
      p = p + actual
      redis.call('HSET', h, c .. ':s', st, c .. ':p', p, c .. ':r', r)
      out[#out + 1] = p + r
    end
  end
  if not again then
    redis.call('HINCRBY', h, 'in', ARGV[3])
    redis.call('HINCRBY', h, 'out', ARGV[4])
    redis.call('HINCRBY', h, 'cost', ARGV[5])
    if ttl > 0 then redis.call('EXPIRE', h, ttl) end
    if rank ~= '' and tokens > 0 then
      redis.call('ZINCRBY', rk, tokens, rank)
      redis.call('ZREMRANGEBYRANK', rk, 0, -(ranked + 1))
    end
  end
end
return out
"#;

/// Take back the reservations of leases whose reserve's answer was lost (a timeout: the script
/// may have run): what each granted leaves its counters if they are still in the window it was
/// made in, and the lease goes (the purge of dead leases in `RESERVE`, for these ids at once
/// instead of when the lease runs out). Keys per scope: its hash and lease set; `ARGV`: each
/// scope's lease id.
const RELEASE: &str = r#"
for s = 1, #ARGV do
  local h, lk, id = KEYS[2 * s - 1], KEYS[2 * s], ARGV[s]
  local spec = redis.call('HGET', h, 'l:' .. id)
  if spec then
    for c, st, g in string.gmatch(spec, '([^\t\n]+)\t(%d+)\t(%d+)\n') do
      local v = redis.call('HMGET', h, c .. ':s', c .. ':r')
      if tonumber(v[1]) == tonumber(st) then
        local r = (tonumber(v[2]) or 0) - tonumber(g)
        if r < 0 then r = 0 end
        redis.call('HSET', h, c .. ':r', r)
      end
    end
    redis.call('HDEL', h, 'l:' .. id)
  end
  redis.call('ZREM', lk, id)
end
return #ARGV
"#;

/// Push the leases of live reservations (`ARGV`: the new expiry in ms, then ids) forward; a
/// lease already purged stays gone (`XX`).
const RENEW: &str = r#"
local until_ms = ARGV[1]
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', until_ms, ARGV[i])
end
return #ARGV - 1
"#;

/// Outcome of a check-and-reserve over several scopes: every scope granted, or none.
#[derive(Debug)]
pub enum ReservedAll {
    /// The grants of each scope asked, in order (each in the order of its wants).
    Granted(Vec<Vec<Grant>>),
    /// Want `index` of scope `scope` (positions as asked) refused; `used`: its spent plus
    /// reserved. Nothing was reserved.
    Refused {
        /// Which scope.
        scope: usize,
        /// Which want of it.
        index: usize,
        /// Spent plus reserved on it.
        used: u64,
    },
    /// An optimistic want did not fit whole: ask again with the real estimate.
    NeedEstimate,
}

impl ReservedAll {
    /// The outcome of the one scope asked.
    pub fn into_one(self) -> Reserved {
        match self {
            ReservedAll::Granted(mut g) => Reserved::Granted(g.pop().unwrap_or_default()),
            ReservedAll::Refused { index, used, .. } => Reserved::Refused { index, used },
            ReservedAll::NeedEstimate => Reserved::NeedEstimate,
        }
    }
}

/// Where the store is: one Redis, or a Redis Cluster reached through its seed nodes.
pub enum Target<'a> {
    /// `redis://host:port[/db]`.
    Single(&'a str),
    /// Seed nodes `redis://host:port`; the rest of the cluster is read from them.
    Cluster(&'a [String]),
}

enum Client {
    Single(redis::Client),
    Cluster(ClusterClient),
}

/// A connection of either kind; both reconnect by themselves and are cheap to clone.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Redis-backed budget store.
pub struct RedisStore {
    client: Client,
    /// Slot 0 for threads that are no `per_core` worker, then one per worker: a connection's
    /// driver task lives on the runtime that first used it, so a worker talking through
    /// another thread's connection paid two cross-thread wake-ups per command (Redis cost
    /// 2.3× the memory store's CPU per request instead of 1.6×, BENCHMARKS.md).
    conns: Box<[OnceCell<Conn>]>,
    timeout: Duration,
    reserve: Script,
    settle: Script,
    renew: Script,
    release: Script,
    /// Seconds a session's hash outlives its last call.
    session_ttl: u64,
    /// Seconds a task's hash outlives its last call.
    task_ttl: u64,
    /// How long a settled lease id is remembered, so a retried settle counts once.
    settled_keep_ms: u64,
    /// Replicas a settle waits for (`WAIT`); 0: none.
    settle_replicas: u32,
}

// === impl RedisStore ===

impl RedisStore {
    /// A store on `target`; connects on first use, every operation bounded by `timeout`; session
    /// and task records are kept `retention` (session, task) after their last call; a settle may
    /// be retried for up to `retry_for`, and waits for `settle_replicas` replicas to have it.
    pub fn new(
        target: Target<'_>,
        timeout: Duration,
        retention: (Duration, Duration),
        retry_for: Duration,
        settle_replicas: u32,
        workers: usize,
    ) -> Result<Self, StoreError> {
        let client = match target {
            Target::Single(url) => Client::Single(redis::Client::open(url).map_err(err)?),
            Target::Cluster(nodes) => Client::Cluster(
                ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .build()
                    .map_err(err)?,
            ),
        };
        Ok(Self {
            client,
            conns: (0..=workers).map(|_| OnceCell::new()).collect(),
            timeout,
            reserve: Script::new(RESERVE),
            settle: Script::new(SETTLE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            session_ttl: retention.0.as_secs().max(1),
            task_ttl: retention.1.as_secs().max(1),
            // Twice the retry span: a settle retried at its last moment still finds its mark.
            settled_keep_ms: duration_ms(retry_for).saturating_mul(2).max(1_000),
            settle_replicas,
        })
    }

    /// The calling thread's connection cell (see `conns`).
    fn slot(&self) -> &OnceCell<Conn> {
        let workers = self.conns.len() - 1;
        let i = match crate::http_client::worker() {
            Some(w) if workers > 0 => 1 + w % workers,
            _ => 0,
        };
        &self.conns[i]
    }

    /// The calling thread's connection: made on first use (boxed: the connection manager's
    /// setup is a 3.3 KB future, which inline would be moved and copied with every command's).
    async fn conn(&self) -> Result<Conn, StoreError> {
        match self.slot().get() {
            Some(c) => Ok(c.clone()),
            None => Box::pin(self.connect()).await,
        }
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        let c = tokio::time::timeout(
            self.timeout,
            self.slot().get_or_try_init(|| async {
                match &self.client {
                    Client::Single(client) => {
                        let cfg = ConnectionManagerConfig::new()
                            .set_connection_timeout(self.timeout)
                            .set_response_timeout(self.timeout)
                            .set_number_of_retries(1)
                            .set_max_delay(200);
                        ConnectionManager::new_with_config(client.clone(), cfg)
                            .await
                            .map(Conn::Single)
                    }
                    Client::Cluster(client) => {
                        client.get_async_connection().await.map(Conn::Cluster)
                    }
                }
            }),
        )
        .await
        .map_err(|_| StoreError::Redis("connect timed out".into()))?
        .map_err(err)?;
        Ok(c.clone())
    }

    /// Run `f` on a connection within the timeout.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn().await?;
        tokio::time::timeout(self.timeout, f(conn))
            .await
            .map_err(|_| StoreError::Redis("timed out".into()))?
            .map_err(err)
    }

    /// Whether this is one node (every scope's keys on it: a call's scopes reserve in one
    /// script), not a cluster.
    pub(super) fn one_node(&self) -> bool {
        matches!(self.client, Client::Single(_))
    }

    /// Check-and-reserve on every scope of `parts` (key, wants, lease) in one script: all are
    /// granted or none (on a cluster, one scope per call).
    pub(super) async fn reserve(
        &self,
        now: u64,
        parts: &[(&str, &[Want], Option<Lease>)],
    ) -> Result<ReservedAll, StoreError> {
        let mut inv = self.reserve.prepare_invoke();
        inv.arg(now).arg(parts.len()).arg(unix_ms());
        for &(key, wants, lease) in parts {
            // Keys whose counters are all windowed expire after two of their longest windows.
            let ttl = self.ttl(key, wants.iter().map(|w| w.window));
            inv.key(redis_key(key))
                .key(lease_key(key))
                .arg(wants.len())
                .arg(ttl)
                .arg(lease.map_or(String::new(), |l| l.id.to_string()))
                .arg(lease.map_or(0, |l| l.until_ms));
            for w in wants {
                inv.arg(w.counter.as_ref())
                    .arg(w.window.unwrap_or(0))
                    .arg(w.limit)
                    .arg(w.min)
                    .arg(w.want)
                    .arg(w.floor)
                    .arg(match (w.enforce, w.optimistic) {
                        (_, true) => 2u8,
                        (true, false) => 1,
                        (false, false) => 0,
                    });
            }
        }
        let v: Vec<i64> = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        let n = |x: i64| x.max(0) as u64;
        match v.first() {
            Some(1) => {
                let mut grants = v[1..].chunks_exact(3).map(|x| Grant {
                    start: n(x[0]),
                    granted: n(x[1]),
                    used: n(x[2]),
                });
                let all: Vec<Vec<Grant>> = parts
                    .iter()
                    .map(|(_, wants, _)| grants.by_ref().take(wants.len()).collect())
                    .collect();
                if all.iter().zip(parts).any(|(g, p)| g.len() != p.1.len()) {
                    return Err(StoreError::Redis("unexpected reserve reply".into()));
                }
                Ok(ReservedAll::Granted(all))
            }
            Some(2) => Ok(ReservedAll::NeedEstimate),
            Some(0) if v.len() == 4 => Ok(ReservedAll::Refused {
                scope: n(v[1]) as usize,
                index: n(v[2]) as usize,
                used: n(v[3]),
            }),
            _ => Err(StoreError::Redis("unexpected reserve reply".into())),
        }
    }

    /// Settle every scope of `parts` (key, charges, lease) in one script (on a cluster one
    /// scope per call); each scope's counters' spent plus reserved afterwards.
    pub(super) async fn settle(
        &self,
        now: u64,
        parts: &[(&str, &[Charge], Option<u64>)],
        t: Totals,
    ) -> Result<Vec<Vec<u64>>, StoreError> {
        let tokens = t.input.saturating_add(t.output);
        let one_node = self.one_node();
        let mut inv = self.settle.prepare_invoke();
        inv.arg(now)
            .arg(parts.len())
            .arg(t.input)
            .arg(t.output)
            .arg(t.cost)
            .arg(unix_ms())
            .arg(self.settled_keep_ms)
            .arg(tokens)
            .arg(MAX_RANKED);
        for &(key, charges, lease) in parts {
            let rank = ranked(key).filter(|_| one_node);
            inv.key(redis_key(key))
                .key(lease_key(key))
                .key(settled_key(key))
                .key(rank.map_or_else(|| redis_key(key), |(r, _)| r.to_string()))
                .arg(charges.len())
                .arg(lease.map_or(String::new(), |id| id.to_string()))
                .arg(self.ttl(key, charges.iter().map(|c| c.window)))
                .arg(rank.map_or("", |(_, id)| id));
            for c in charges {
                inv.arg(c.counter.as_ref())
                    .arg(c.window.unwrap_or(0))
                    .arg(c.start)
                    .arg(c.granted)
                    .arg(c.actual);
            }
        }
        let v: Vec<i64> = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        if self.settle_replicas > 0 {
            if let Some(&(key, _, _)) = parts.first() {
                self.replicated(key).await;
            }
        }
        // A cluster: the ranking is on its own slot, a round trip of its own.
        for (ranking, id) in parts
            .iter()
            .filter_map(|p| ranked(p.0))
            .filter(|_| !one_node)
        {
            if tokens > 0 {
                let id = id.to_string();
                // Ranking only; not part of any budget decision.
                self.run(|mut c| async move {
                    redis::pipe()
                        .zincr(ranking, id, tokens)
                        .ignore()
                        // Bounded: the ranking keeps the top ones, not every id ever seen.
                        .zremrangebyrank(ranking, 0, -(MAX_RANKED + 1))
                        .ignore()
                        .query_async::<()>(&mut c)
                        .await
                })
                .await?;
            }
        }
        let mut used = v.into_iter().map(|x| x.max(0) as u64);
        let all: Vec<Vec<u64>> = parts
            .iter()
            .map(|p| used.by_ref().take(p.1.len()).collect())
            .collect();
        if all.iter().zip(parts).any(|(u, p)| u.len() != p.1.len()) {
            return Err(StoreError::Redis("unexpected settle reply".into()));
        }
        Ok(all)
    }

    /// Wait (`WAIT`, on the primary holding `key`) until `settle_replicas` replicas have every
    /// write before it, within half the timeout. Falling short is counted
    /// (`op="replicate"`), not failed: the spend is settled on the primary, and retrying would
    /// only stall every settle of a shard whose replica is down.
    async fn replicated(&self, key: &str) {
        let mut wait = redis::cmd("WAIT");
        wait.arg(self.settle_replicas)
            .arg(duration_ms(self.timeout / 2).max(1));
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
            key_slot(&redis_key(key)),
            SlotAddr::Master,
        )));
        let acked: Result<i64, StoreError> = self
            .run(|c| async move {
                match c {
                    Conn::Single(mut c) => wait.query_async(&mut c).await,
                    Conn::Cluster(mut c) => {
                        redis::from_redis_value(&c.route_command(&wait, route).await?)
                    }
                }
            })
            .await;
        if !matches!(acked, Ok(n) if n >= i64::from(self.settle_replicas)) {
            counter!(crate::telemetry::metrics::BUDGET_STORE_ERRORS_TOTAL, "op" => "replicate")
                .increment(1);
        }
    }

    /// Seconds until scope `key` expires with counters of `windows` (0: never). Windowed-only
    /// scopes outlive two of their longest windows; sessions and tasks outlive their retention too.
    fn ttl(&self, key: &str, windows: impl Iterator<Item = Option<u64>>) -> u64 {
        let mut all_windowed = true;
        let mut longest = 0;
        for w in windows {
            match w {
                Some(w) => longest = longest.max(w),
                None => all_windowed = false,
            }
        }
        let windowed = if all_windowed { longest * 2 } else { 0 };
        if key.starts_with(SESSION_PREFIX) {
            windowed.max(self.session_ttl)
        } else if key.starts_with(TASK_PREFIX) {
            windowed.max(self.task_ttl)
        } else {
            windowed
        }
    }

    /// Records in the ranking of `prefix` (the sessions or tasks the store holds, up to its
    /// bound).
    pub(super) async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        let Some((ranking, _)) = ranked(prefix) else {
            return Ok(0);
        };
        self.run(|mut c| async move { c.zcard(ranking).await })
            .await
    }

    /// Extend the leases `ids` of scope `key` to `until_ms`.
    pub(super) async fn renew(
        &self,
        key: &str,
        ids: &[u64],
        until_ms: u64,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut inv = self.renew.prepare_invoke();
        inv.key(lease_key(key)).arg(until_ms);
        for id in ids {
            inv.arg(*id);
        }
        let _: i64 = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(())
    }

    /// Take back the reservations of `leases` (scope key, lease id) whose reserve's answer was
    /// lost: one script on one node, one per scope on a cluster (their keys live on different
    /// slots).
    pub(super) async fn release(&self, leases: &[(&str, u64)]) -> Result<(), StoreError> {
        let groups: Vec<&[(&str, u64)]> = if self.one_node() {
            vec![leases]
        } else {
            leases.chunks(1).collect()
        };
        for group in groups.into_iter().filter(|g| !g.is_empty()) {
            let mut inv = self.release.prepare_invoke();
            for &(key, id) in group {
                inv.key(redis_key(key)).key(lease_key(key)).arg(id);
            }
            let _: i64 = self
                .run(|mut c| async move { inv.invoke_async(&mut c).await })
                .await?;
        }
        Ok(())
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Group>, StoreError> {
        let k = redis_key(key);
        // Strings: lease fields hold text; counters are parsed in `group_from_hash`.
        let h: BTreeMap<String, String> =
            self.run(|mut c| async move { c.hgetall(k).await }).await?;
        Ok((!h.is_empty()).then(|| group_from_hash(&h)))
    }

    /// The `n` records of `prefix` with the most tokens. A ranked id whose record expired is
    /// taken out of the ranking on the way (rankings never expire as a whole), and the next one
    /// looked at instead, within a bounded scan.
    pub(super) async fn top(
        &self,
        prefix: &str,
        n: usize,
    ) -> Result<Vec<(String, Group)>, StoreError> {
        let Some((ranking, _)) = ranked(prefix).filter(|_| n > 0) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(n.min(256));
        let page = n.clamp(16, 256);
        let limit = n.saturating_mul(4).saturating_add(256);
        let mut start = 0usize;
        while out.len() < n && start < limit {
            let (from, to) = (
                isize::try_from(start).unwrap_or(isize::MAX),
                isize::try_from(start + page - 1).unwrap_or(isize::MAX),
            );
            let ids: Vec<String> = self
                .run(|mut c| async move { c.zrevrange(ranking, from, to).await })
                .await?;
            if ids.is_empty() {
                break;
            }
            let mut gone = Vec::new();
            for id in ids {
                match self.get(&format!("{prefix}{id}")).await? {
                    Some(g) if out.len() < n => out.push((id, g)),
                    Some(_) => {}
                    None => gone.push(id),
                }
                start += 1;
            }
            if !gone.is_empty() {
                // Removed members shift the ranks after them down.
                start -= gone.len();
                self.run(|mut c| async move { c.zrem::<_, _, ()>(ranking, gone).await })
                    .await?;
            }
        }
        Ok(out)
    }

    /// Take up to `batch` ranked ids of `prefix` whose records expired out of its ranking,
    /// scanning on from where the last call stopped (`cursor`); the next cursor. One proxy of
    /// the fleet prunes a ranking per period `every` (a `SET NX PX` lock beside the ranking):
    /// every proxy pruning the same ranking would cost each one a batch of commands per period,
    /// whatever its traffic.
    pub(super) async fn prune(
        &self,
        prefix: &str,
        cursor: u64,
        batch: usize,
        every: Duration,
    ) -> Result<u64, StoreError> {
        let Some((ranking, _)) = ranked(prefix) else {
            return Ok(0);
        };
        let lock = format!("{ranking}:pruner");
        let ms = duration_ms(every).max(1);
        let ours: Option<String> = self
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(lock)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if ours.is_none() {
            return Ok(cursor);
        }
        let (next, page): (u64, Vec<(String, f64)>) = self
            .run(|mut c| async move {
                redis::cmd("ZSCAN")
                    .arg(ranking)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(batch)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut gone = Vec::new();
        for (id, _) in page {
            let k = redis_key(&format!("{prefix}{id}"));
            let exists: bool = self.run(|mut c| async move { c.exists(k).await }).await?;
            if !exists {
                gone.push(id);
            }
        }
        if !gone.is_empty() {
            self.run(|mut c| async move { c.zrem::<_, _, ()>(ranking, gone).await })
                .await?;
        }
        Ok(next)
    }

    pub(super) async fn reset(&self, key: &str) -> Result<bool, StoreError> {
        let (k, l) = (redis_key(key), lease_key(key));
        let n: i64 = self
            .run(|mut c| async move { c.del(&[k, l, settled_key(key)]).await })
            .await?;
        if let Some((ranking, id)) = ranked(key) {
            let id = id.to_string();
            let _: i64 = self
                .run(|mut c| async move { c.zrem(ranking, id).await })
                .await?;
        }
        Ok(n > 0)
    }

    pub(super) async fn ping(&self) -> bool {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .is_ok()
    }
}

/// `tw:{s:ID}`: the braces make the whole scope id the Cluster hash tag.
fn redis_key(key: &str) -> String {
    format!("tw:{{{key}}}")
}

/// `tw:{s:ID}:l`: the scope's reservation leases (a sorted set by expiry), in its hash slot.
fn lease_key(key: &str) -> String {
    format!("tw:{{{key}}}:l")
}

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the
/// first `{` and the next `}`, when not empty), else of the whole key, modulo 16384.
fn key_slot(key: &str) -> u16 {
    let b = key.as_bytes();
    let tagged = b.iter().position(|&c| c == b'{').and_then(|open| {
        let rest = &b[open + 1..];
        rest.iter()
            .position(|&c| c == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    let mut crc: u16 = 0;
    for &byte in tagged.unwrap_or(b) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// `tw:{s:ID}:d`: lease ids settled lately (a sorted set by time), in its hash slot.
fn settled_key(key: &str) -> String {
    format!("tw:{{{key}}}:d")
}

/// Whole milliseconds of `d`, saturating.
pub(super) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch: lease expiries (every proxy's clock, as for windows).
pub(super) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn err(e: redis::RedisError) -> StoreError {
    StoreError::Redis(e.to_string())
}

fn group_from_hash(h: &BTreeMap<String, String>) -> Group {
    let num = |v: &str| v.parse::<i64>().unwrap_or(0).max(0) as u64;
    let get = |k: &str| h.get(k).map_or(0, |v| num(v));
    let mut g = Group {
        totals: Totals {
            input: get("in"),
            output: get("out"),
            cost: get("cost"),
        },
        counters: BTreeMap::new(),
        // Redis expires the hash itself.
        last: 0,
    };
    for (field, v) in h {
        // `l:<id>` fields describe one lease's reservations, not a counter.
        let Some((name, part)) = field.rsplit_once(':').filter(|_| !field.starts_with("l:")) else {
            continue;
        };
        let v = num(v);
        let c: &mut Counter = g.counters.entry(name.to_string()).or_default();
        match part {
            "s" => c.start = v,
            "p" => c.spent = v,
            "r" => c.reserved = v,
            _ => {}
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::key_slot;

    #[test]
    fn key_slots_are_the_clusters() {
        // Redis Cluster specification: CRC16("123456789") = 0x31C3.
        assert_eq!(key_slot("123456789"), 0x31C3);
        // The examples of the `CLUSTER KEYSLOT` documentation.
        assert_eq!(key_slot("somekey"), 11058);
        assert_eq!(key_slot("foo{hash_tag}"), 2515);
        assert_eq!(key_slot("tw:{s:abc}"), key_slot("s:abc"));
        assert_eq!(key_slot("tw:{s:abc}:l"), key_slot("s:abc"));
        // An empty tag hashes the whole key.
        assert_ne!(key_slot("a{}b"), key_slot(""));
    }
}
