#!/usr/bin/env bash
# Fleet simulation (issue 21): PROCS tokenwarden processes on loopback against a 3-primary,
# 3-replica Redis Cluster (Debian redis-server in cluster mode), many sessions and a few agents
# sharing limits, once with per-call reservations and once with leased agent and global limits.
# A primary (the one holding the first agent's key) is SIGKILLed halfway through each run.
# Prints, per mode: calls, overspend against the stated bound per scope, the latency the ledger
# adds per call (tokenwarden_budget_admission_seconds, p50/p99 over every process), Redis
# operations per call and per second per shard (INFO commandstats), scripts on the hot keys,
# and what the failover did.
# Needs: wrk, redis-server, redis-cli, python3 (apt-get install -y wrk redis-server).
# Knobs: PROCS (16, 16..64) DUR (20 s) CONC (4 connections per process) AGENTS (4)
# UPSTREAM_MS (100: the mock waits this long before answering, like a provider — it sets the
# rate: PROCS × CONC × 1000 / UPSTREAM_MS calls/s at most; 0 saturates the machine)
# SESSIONS (64 per process) SESSION_LIMIT (160) AGENT_LIMIT (40000) MAX_TOKENS (16)
# LASTS (20s: budgets.leases.lasts, sized to the fleet rate as docs/scale.md says) MODES ("calls leases") KILL (1) SKIP_BUILD=1, TW and MOCK (default target/release/)
# WORKERS (1: `server.workers` of each process — a sidecar has its own cores in a pod; here 16-64
# processes share the machine's, and more threads than cores only measure queueing).
set -euo pipefail
cd "$(dirname "$0")/.."
PROCS=${PROCS:-16} DUR=${DUR:-20} CONC=${CONC:-4} UPSTREAM_MS=${UPSTREAM_MS:-100} AGENTS=${AGENTS:-4} SESSIONS=${SESSIONS:-64}
SESSION_LIMIT=${SESSION_LIMIT:-160} AGENT_LIMIT=${AGENT_LIMIT:-40000} MAX_TOKENS=${MAX_TOKENS:-16}
MODES=${MODES:-calls leases} KILL=${KILL:-1} LASTS=${LASTS:-20s}
GLOBAL_LIMIT=100000000000
MOCK_PORT=18390 TW_BASE=18400 RP=(17101 17102 17103 17104 17105 17106)
for t in wrk redis-server redis-cli python3; do
  command -v "$t" >/dev/null || { echo "bench/fleet.sh: $t is missing (apt-get install -y wrk redis-server)" >&2; exit 1; }
done
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --workspace --bins --locked
TARGET=${CARGO_TARGET_DIR:-target}
TW=${TW:-$TARGET/release/tokenwarden} MOCK=${MOCK:-$TARGET/release/tokenwarden-mock}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] && echo "kept $work" || rm -rf "$work"; }
trap cleanup EXIT INT TERM
wait_port() { for _ in $(seq 1 400); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

"$MOCK" --listen "127.0.0.1:$MOCK_PORT" >/dev/null 2>&1 & pids+=($!)
wait_port "$MOCK_PORT"

cat > "$work/load.lua" <<LUA
-- One process's load: sessions of its own, agents shared by the fleet, 16 tokens a call.
local n, prefix = 0, os.getenv("FLEET_PREFIX")
local body = '{"model":"gpt-4o-mini","max_tokens":$MAX_TOKENS,"messages":[{"role":"user","content":"Say hello in one short sentence."}]}'
request = function()
  n = n + 1
  return wrk.format("POST", "/v1/chat/completions", {
    ["Content-Type"] = "application/json",
    ["x-session-id"] = prefix .. "-" .. (n % $SESSIONS),
    ["x-agent-name"] = "agent-" .. (n % $AGENTS),
    ["x-mock-input-tokens"] = "8", ["x-mock-output-chunks"] = "8",
    ["x-mock-first-byte-delay-ms"] = "$UPSTREAM_MS" }, body)
end
done = function(s, lat, req)
  io.write(string.format("WRK %d %d\n", s.requests, s.errors.status + s.errors.connect + s.errors.read + s.errors.timeout))
end
LUA

start_cluster() {
  local d="$work/redis-$1"; mkdir -p "$d"
  for p in "${RP[@]}"; do
    redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no --cluster-enabled yes \
      --cluster-node-timeout 1000 --cluster-config-file "$d/nodes-$p.conf" --dir "$d" >/dev/null 2>&1 & pids+=($!)
    echo $! > "$d/$p.pid"
    # Killed on purpose below: no "Killed" notice from the shell.
    disown $!
  done
  for p in "${RP[@]}"; do wait_port "$p"; done
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${RP[@]}") --cluster-replicas 1 --cluster-yes >/dev/null
  for _ in $(seq 1 300); do
    ok=1; for p in "${RP[@]}"; do redis-cli -p "$p" cluster info | grep -q cluster_state:ok || ok=0; done
    [ $ok = 1 ] && break; sleep 0.1
  done
  # Replicas in sync before the load starts.
  for _ in $(seq 1 300); do
    n=0; for p in "${RP[@]}"; do redis-cli -p "$p" info replication | grep -q master_link_status:up && n=$((n+1)); done
    [ $n -ge 3 ] && break; sleep 0.1
  done
}
primaries() { redis-cli -p "$1" cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail/ {split($2,a,"[:@]"); print a[2]}'; }

for mode in $MODES; do
  start_cluster "$mode"
  seed=${RP[0]}
  leases=""
  [ "$mode" = leases ] && leases="  leases: { scopes: [agent, global], min: 0.001, max: 0.01, lasts: $LASTS }"
  tws=()
  for i in $(seq 0 $((PROCS - 1))); do
    port=$((TW_BASE + 2 * i))
    cat > "$work/tw-$mode-$i.yaml" <<YAML
listen: 127.0.0.1:$port
admin_listen: 127.0.0.1:$((port + 1))
logging: { access_log: false }
server: { workers: ${WORKERS:-1} }
routes:
  - { name: fleet, path_prefix: /, upstream: 'http://127.0.0.1:$MOCK_PORT' }
budgets:
  store: { kind: redis_cluster, nodes: ['redis://127.0.0.1:${RP[0]}', 'redis://127.0.0.1:${RP[1]}'], timeout: 500ms, reservation_lease: 5s }
  on_store_unreachable: fail_closed
$leases
  limits:
    - { scope: session, tokens: $SESSION_LIMIT }
    - { scope: agent, tokens: $AGENT_LIMIT }
    - { scope: global, tokens: $GLOBAL_LIMIT }
YAML
    "$TW" --config "$work/tw-$mode-$i.yaml" >"$work/tw-$mode-$i.log" 2>&1 & tws+=($!); pids+=($!)
  done
  for i in $(seq 0 $((PROCS - 1))); do wait_port $((TW_BASE + 2 * i)); done
  # Warm-up calls per process (connect to every shard, load the scripts there: sessions of
  # their own land on every shard), then counters from zero; the admission histogram after them
  # is subtracted from the final one, so the figures are the run's calls alone.
  for i in $(seq 0 $((PROCS - 1))); do
    for k in $(seq 1 8); do
      curl -s -o /dev/null -X POST "http://127.0.0.1:$((TW_BASE + 2 * i))/v1/chat/completions" \
        -H 'x-agent-name: warmup' -H "x-session-id: warmup-$i-$k" -H 'content-type: application/json' -d '{"model":"gpt-4o-mini","messages":[]}'
    done
    curl -s "http://127.0.0.1:$((TW_BASE + 2 * i + 1))/metrics" > "$work/warm-$mode-$i.txt"
  done
  prim=$(primaries "$seed")
  for p in $prim; do redis-cli -p "$p" config resetstat >/dev/null; done
  hot_slot=$(redis-cli -p "$seed" cluster keyslot 'a:agent-0')
  victim=$(redis-cli -p "$seed" cluster nodes | awk -v s="$hot_slot" '$3 ~ /master/ {for (i=9;i<=NF;i++) {split($i,r,"-"); if (r[2]=="") r[2]=r[1]; if (s+0>=r[1]+0 && s+0<=r[2]+0) {split($2,a,"[:@]"); print a[2]}}}')
  t0=$(date +%s.%N)
  wrks=()
  for i in $(seq 0 $((PROCS - 1))); do
    FLEET_PREFIX="p$i" wrk -t1 -c"$CONC" -d"${DUR}s" -s "$work/load.lua" "http://127.0.0.1:$((TW_BASE + 2 * i))" >"$work/wrk-$mode-$i.out" 2>&1 &
    wrks+=($!)
  done
  # The machine's floor: a bare Redis round trip (PING) from an otherwise idle process, at
  # random 5-50 ms gaps like a sidecar between calls, to every primary, during the same load.
  python3 - "$DUR" $prim > "$work/ping-$mode.txt" 2>/dev/null <<'PY' &
import random, socket, sys, time
dur, ports = float(sys.argv[1]), sys.argv[2:]
socks = {}
for p in ports:
    s = socket.create_connection(("127.0.0.1", int(p)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(1)
    socks[p] = s
end = time.monotonic() + dur
while time.monotonic() < end and socks:
    time.sleep(random.uniform(0.005, 0.05))
    p = random.choice(list(socks))
    t = time.perf_counter()
    try:
        socks[p].sendall(b"*1\r\n$4\r\nPING\r\n")
        if not socks[p].recv(64):
            raise OSError
    except OSError:
        del socks[p]  # the killed primary
        continue
    print(f"{(time.perf_counter() - t) * 1e6:.0f}", flush=True)
PY
  prober=$!
  failover="no kill"
  if [ "$KILL" = 1 ]; then
    sleep $((DUR / 2))
    kill -9 "$(cat "$work/redis-$mode/$victim.pid")"
    k0=$(date +%s.%N)
    other=$(for p in "${RP[@]}"; do [ "$p" != "$victim" ] && echo "$p"; done | head -1)
    for _ in $(seq 1 600); do
      redis-cli -p "$other" cluster info | grep -q cluster_state:ok && \
        ! redis-cli -p "$other" cluster nodes | awk -v v="$victim" '$2 ~ ":"v"@" && $3 !~ /fail/' | grep -q . && break
      sleep 0.05
    done
    failover="primary :$victim (holds agent-0) SIGKILLed at $((DUR / 2)) s; cluster ok again after $(python3 -c "print(f'{$(date +%s.%N) - $k0:.1f}')") s"
    seed=$other
  fi
  wait "${wrks[@]}" 2>/dev/null || true
  wait "$prober" 2>/dev/null || true
  elapsed=$(python3 -c "print($(date +%s.%N) - $t0)")
  # Slices go back within `lasts` and the 1 s upkeep tick; settlements within ms.
  sleep $((${LASTS%s} + 2))
  for i in $(seq 0 $((PROCS - 1))); do curl -s "http://127.0.0.1:$((TW_BASE + 2 * i + 1))/metrics" > "$work/metrics-$mode-$i.txt"; done
  for p in $(primaries "$seed"); do
    { echo "SHARD $p"; redis-cli -p "$p" info commandstats; } >> "$work/cmdstats-$mode.txt"
  done
  for a in $(seq 0 $((AGENTS - 1))); do
    echo "AGENT agent-$a $(redis-cli -c -p "$seed" hget "tw:{a:agent-$a}" tokens:life:p)" >> "$work/store-$mode.txt"
  done
  curl -s "http://127.0.0.1:$((TW_BASE + 1))/v1/sessions?top=1" > "$work/top-$mode.json"
  python3 - "$work" "$mode" "$PROCS" "$AGENTS" "$AGENT_LIMIT" "$SESSION_LIMIT" "$MAX_TOKENS" "$elapsed" "$CONC" "$failover" "$UPSTREAM_MS" <<'PY'
import glob, json, re, sys
work, mode, procs, agents, alimit, slimit, maxtok, elapsed, conc, failover, upstream = sys.argv[1:]
procs, agents, alimit, slimit, maxtok, conc = map(int, (procs, agents, alimit, slimit, maxtok, conc))
elapsed = float(elapsed)

def series(text, name):
    for line in text.splitlines():
        if line.startswith(name):
            m = re.match(r'([^{ ]+)(\{[^}]*\})? ([0-9.e+-]+)', line)
            if m and m.group(1) == name:
                yield dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")), float(m.group(3))

texts = [open(f).read() for f in sorted(glob.glob(f"{work}/metrics-{mode}-*.txt"))]
requests = sum(int(l.split()[1]) for f in glob.glob(f"{work}/wrk-{mode}-*.out") for l in open(f) if l.startswith("WRK"))
spent = {f"agent-{a}": 0.0 for a in range(agents)}
for t in texts:
    for labels, v in series(t, "tokenwarden_tokens_total"):
        if labels.get("agent") in spent and labels.get("type") in ("input", "output"):
            spent[labels["agent"]] += v
calls = sum(spent.values()) / 16
stored = {l.split()[1]: int(l.split()[2] or 0) for l in open(f"{work}/store-{mode}.txt") if len(l.split()) == 3}
buckets = {}
for t in texts:
    for labels, v in series(t, "tokenwarden_budget_admission_seconds_bucket"):
        buckets[labels["le"]] = buckets.get(labels["le"], 0) + v
for f in glob.glob(f"{work}/warm-{mode}-*.txt"):
    for labels, v in series(open(f).read(), "tokenwarden_budget_admission_seconds_bucket"):
        buckets[labels["le"]] = buckets.get(labels["le"], 0) - v
def pct(q):
    items = sorted(((float("inf") if k == "+Inf" else float(k)), v) for k, v in buckets.items())
    total = items[-1][1] if items else 0
    for le, c in items:
        if total and c >= q * total:
            return "≤ %s ms" % ("∞" if le == float("inf") else f"{le * 1000:g}")
    return "n/a"
slices = {}
for t in texts:
    for labels, v in series(t, "tokenwarden_budget_slices_total"):
        slices[labels.get("op")] = slices.get(labels.get("op"), 0) + v
# Commands the proxies send (commandstats also counts the commands scripts run inside them).
SENT = {"evalsha", "eval", "zincrby", "zremrangebyrank", "exists", "zscan", "zcard", "ping",
        "hgetall", "wait", "set", "script|load", "cluster|slots", "cluster|shards"}
shards, cur, inner = {}, None, 0
for line in open(f"{work}/cmdstats-{mode}.txt"):
    if line.startswith("SHARD"):
        cur = line.split()[1]; shards[cur] = {"all": 0, "scripts": 0, "ranking": 0}
    elif line.startswith("cmdstat_") and cur:
        name, rest = line.split(":", 1)
        name = name[len("cmdstat_"):]
        c = int(re.search(r"calls=(\d+)", rest).group(1))
        if name in SENT:
            shards[cur]["all"] += c
        else:
            inner += c
        if name in ("evalsha", "eval"):
            shards[cur]["scripts"] += c
            shards[cur]["script_us"] = float(re.search(r"usec_per_call=([0-9.]+)", rest).group(1))
        if name in ("zincrby", "zremrangebyrank"):
            shards[cur]["ranking"] += c
ops = sum(s["all"] for s in shards.values())
top = json.load(open(f"{work}/top-{mode}.json")).get("sessions", [])
top_used = top[0]["tokens"]["total"] if top else 0
# Bound while no sidecar dies: one call's maximum output (provider input counted as estimated)
# plus, at the failover, the settlements in flight to the dead shard (async replication).
inflight = procs * conc * 16
print(f"\n### mode: {mode} — {procs} processes × {conc} connections, {elapsed:.0f} s, {agents} agents, {procs * 64} sessions, upstream {upstream} ms")
print(f"- calls answered 200: {calls:.0f} of {requests} requests ({calls / elapsed:.0f}/s); failover: {failover}")
print(f"- ledger-added latency per call (admission, all processes): p50 {pct(0.5)}, p99 {pct(0.99)}; "
      + "Redis time per script: " + ", ".join(f":{p} {s.get('script_us', 0):.0f} µs" for p, s in sorted(shards.items())))
_pings = sorted(int(l) for l in open(f"{work}/ping-{mode}.txt") if l.strip().isdigit())
if _pings:
    _q = lambda q: _pings[min(len(_pings) - 1, int(q * len(_pings)))] / 1000
    print(f"- a bare Redis round trip on this machine in the same run (PING from an idle process, {len(_pings)} samples): "
          f"p50 {_q(0.5):.3f} ms, p99 {_q(0.99):.3f} ms, within 1 ms {sum(1 for x in _pings if x <= 1000) / len(_pings):.1%}")
_items = sorted(((float("inf") if k == "+Inf" else float(k)), v) for k, v in buckets.items())
print("- admission calls within (cumulative): " + ", ".join(
    f"{'∞' if le == float('inf') else f'{le * 1000:g}'} ms {c:.0f}" for le, c in _items if le <= 0.01 or le == float("inf")))
print(f"- Redis commands sent: {ops} ({ops / max(calls, 1):.2f} per answered call; {inner} more ran inside scripts); per shard per second: "
      + ", ".join(f":{p} {s['all'] / elapsed:.0f}/s ({s['scripts'] / elapsed:.0f} scripts, {s['ranking'] / elapsed:.0f} session-ranking)" for p, s in sorted(shards.items())))
if mode == "leases":
    hot = slices.get("taken", 0) + slices.get("returned", 0)
    print(f"- hot-key scripts (agent + global): {hot:.0f} (slices taken {slices.get('taken', 0):.0f}, returned {slices.get('returned', 0):.0f}) vs {4 * calls:.0f} per call without leases: {4 * calls / max(hot, 1):.0f}× fewer")
else:
    print(f"- hot-key scripts (agent + global): {4 * calls:.0f} (a reserve and a settle per call on each)")
print("| scope | limit | spent (proxies' usage) | recorded in store | overspend | stated bound |")
print("|---|---|---|---|---|---|")
for a in sorted(spent):
    over = max(0, spent[a] - alimit)
    bound = maxtok + inflight
    if mode == "leases":
        # Slices whose reservation the dead shard had not replicated: at most 8 per sidecar.
        bound += procs * 8 * int(0.01 * alimit)
    print(f"| agent {a} | {alimit} | {spent[a]:.0f} | {stored.get(a, 0)} | {over:.0f} | {bound} |")
print(f"| session (largest) | {slimit} | — | {top_used} | {max(0, top_used - slimit)} | {maxtok} |")
PY
  for p in "${tws[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${RP[@]}"; do kill -9 "$(cat "$work/redis-$mode/$p.pid")" 2>/dev/null || true; done
  sleep 1
done
