#!/usr/bin/env bash
# The latency the budget ledger adds per call (issue 21's "< 1 ms p99"), one sidecar alone:
# sequential calls (curl, one at a time) with session + agent + global token limits, read from
# `tokenwarden_budget_admission_seconds` (warm-up calls left out), and the Redis scripts and
# other commands per call (INFO commandstats; the upkeep's PINGs, renewals, pruning count). Modes:
#   redis    one redis-server
#   cluster  a 3-primary Redis Cluster (no replicas: latency, not failover)
#   leases   the cluster with agent and global leased (budgets.leases)
# Needs: redis-server, redis-cli, curl, python3 (apt-get install -y redis-server curl python3).
# Knobs: CALLS (300) WARM (20) MODES ("redis cluster leases") SKIP_BUILD=1, TW and MOCK (the two
# binaries, to compare builds; default target/release/). Prints one table row per mode, with the
# load average: on a shared machine the numbers measure CPU queueing as much as the ledger.
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${CALLS:-300} WARM=${WARM:-20} MODES=${MODES:-redis cluster leases}
MOCK_PORT=18600 TW_PORT=18601 ADMIN_PORT=18602 RP=(18610 18611 18612)
for t in redis-server redis-cli curl python3; do
  command -v "$t" >/dev/null || { echo "bench/admission.sh: $t is missing (apt-get install -y redis-server curl python3)" >&2; exit 1; }
done
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --workspace --bins --locked
TW=${TW:-target/release/tokenwarden} MOCK=${MOCK:-target/release/tokenwarden-mock}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

"$MOCK" --listen "127.0.0.1:$MOCK_PORT" >/dev/null 2>&1 & pids+=($!)
wait_port "$MOCK_PORT"

start_redis() {
  local d="$work/redis-$1"; mkdir -p "$d"
  if [ "$1" = redis ]; then
    redis-server --port "${RP[0]}" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & pids+=($!)
    wait_port "${RP[0]}"
    return
  fi
  for p in "${RP[@]}"; do
    redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no --cluster-enabled yes \
      --cluster-config-file "$d/nodes-$p.conf" --dir "$d" >/dev/null 2>&1 & pids+=($!)
  done
  for p in "${RP[@]}"; do wait_port "$p"; done
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${RP[@]}") --cluster-replicas 0 --cluster-yes >/dev/null
  for _ in $(seq 1 300); do
    ok=1; for p in "${RP[@]}"; do redis-cli -p "$p" cluster info | grep -q cluster_state:ok || ok=0; done
    [ $ok = 1 ] && break; sleep 0.1
  done
}

stop_redis() {
  for p in "${RP[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
  sleep 0.3
}

call() {
  curl -s -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$TW_PORT/v1/chat/completions" \
    -H 'content-type: application/json' -H "x-session-id: adm-$1" -H 'x-agent-name: bench' \
    -d '{"model":"gpt-4o-mini","max_tokens":64,"messages":[{"role":"user","content":"Say hello in one short sentence."}]}'
}

echo "| mode | calls | mean admission | p50 ≤ | p99 ≤ | ≤ 0.5 ms | ≤ 0.75 ms | ≤ 1 ms | ≤ 2.5 ms | Redis scripts + other commands per call | load average |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for mode in $MODES; do
  start_redis "$mode"
  if [ "$mode" = redis ]; then
    store="{ kind: redis, url: \"redis://127.0.0.1:${RP[0]}\" }"
  else
    store="{ kind: redis_cluster, nodes: [\"redis://127.0.0.1:${RP[0]}\"] }"
  fi
  leases=""
  [ "$mode" = leases ] && leases="  leases: { scopes: [agent, global], min: 0.001, max: 0.01, lasts: 10s }"
  cat > "$work/$mode.yaml" <<YAML
listen: 127.0.0.1:$TW_PORT
admin_listen: 127.0.0.1:$ADMIN_PORT
logging: { access_log: false }
routes:
  - { name: bench, path_prefix: /, upstream: 'http://127.0.0.1:$MOCK_PORT' }
budgets:
  store: $store
  on_store_unreachable: fail_closed
$leases
  limits:
    - { scope: session, tokens: 1000000000 }
    - { scope: agent, tokens: 100000000000 }
    - { scope: global, tokens: 100000000000 }
YAML
  "$TW" --config "$work/$mode.yaml" >"$work/$mode.log" 2>&1 & tw=$!
  wait_port "$TW_PORT"; wait_port "$ADMIN_PORT"
  # Warm-up: connections, scripts loaded, the cluster's topology read, the tokenizer loaded.
  for i in $(seq 1 "$WARM"); do call "$((i % 8))" >/dev/null; done
  sleep 0.5
  curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" > "$work/before.txt"
  for p in "${RP[@]}"; do redis-cli -p "$p" config resetstat >/dev/null 2>&1 || true; done
  codes=$(for i in $(seq 1 "$CALLS"); do call "$((i % 8))"; done | sort | uniq -c | tr '\n' ' ')
  # Settlements are spawned after the response: let the last ones land before counting.
  sleep 0.5
  curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" > "$work/after.txt"
  for p in "${RP[@]}"; do redis-cli -p "$p" info commandstats 2>/dev/null || true; done > "$work/cmd.txt"
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  kill "$tw"; wait "$tw" 2>/dev/null || true
  stop_redis
  case "$codes" in *" 200"*) ;; *) echo "bench/admission.sh: $mode: calls failed ($codes); log:" >&2; tail -5 "$work/$mode.log" >&2; exit 1 ;; esac
  python3 - "$work" "$mode" "$CALLS" "$load" <<'PY'
import re, sys
work, mode, calls, load = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def hist(path):
    b, s, n = {}, 0.0, 0
    for line in open(path):
        m = re.match(r'tokenwarden_budget_admission_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
        if m:
            b[m.group(1)] = b.get(m.group(1), 0) + float(m.group(2))
        elif line.startswith("tokenwarden_budget_admission_seconds_sum"):
            s = float(line.split()[-1])
        elif line.startswith("tokenwarden_budget_admission_seconds_count"):
            n = int(float(line.split()[-1]))
    return b, s, n
b0, s0, n0 = hist(f"{work}/before.txt")
b1, s1, n1 = hist(f"{work}/after.txt")
n = n1 - n0
cum = sorted(((float("inf") if k == "+Inf" else float(k)), b1[k] - b0.get(k, 0)) for k in b1)
def upto(q):
    for bound, c in cum:
        if c >= q * n:
            return "∞" if bound == float("inf") else f"{bound * 1e3:g} ms"
def at(ms):
    return next((f"{c:.0f} / {n}" for bound, c in cum if abs(bound - ms / 1e3) < 1e-9), "—")
# Scripts per call (EVALSHA/EVAL: sent by the proxy only), and the other commands a proxy sends;
# ZINCRBY and ZREMRANGEBYRANK are counted whether sent or run inside a script (commandstats
# counts both): tests/budget_redis.rs tells them apart with MONITOR.
SCRIPTS = {"evalsha", "eval"}
OTHER = {"zincrby", "zremrangebyrank", "exists", "zscan", "zcard", "ping", "hgetall", "wait",
         "set", "script|load", "cluster|slots", "cluster|shards"}
scripts = other = 0
for line in open(f"{work}/cmd.txt"):
    m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
    if m and m.group(1) in SCRIPTS:
        scripts += int(m.group(2))
    elif m and m.group(1) in OTHER:
        other += int(m.group(2))
print(f"| {mode} | {n} | {(s1 - s0) / max(n, 1) * 1e3:.3f} ms | {upto(0.5)} | {upto(0.99)} | {at(0.5)} | {at(0.75)} | {at(1)} | {at(2.5)} | {scripts / max(calls, 1):.2f} + {other / max(calls, 1):.2f} | {load} |")
PY
done
