#!/usr/bin/env bash
# Soak with faults: tokenwarden (release) with budgets on Redis (session, agent and global limits,
# a tight session that is refused and cut), agent policies and span export to the example OTLP
# sink, under a steady wrk load whose requests mix streams, JSON, upstream faults (dropped streams,
# 500, 429, hangs past the first-byte timeout), client timeouts and a restarted Redis (every
# RESTART seconds). Every SAMPLE seconds it records the proxy's RSS, open fds, threads and Tokio
# tasks (tokenwarden_runtime_alive_tasks), and the counters that must keep moving; at the end it
# prints the first, last and peak of each and whether memory, fds and tasks stayed flat.
#
# Needs wrk and redis-server (apt-get install -y wrk redis-server). Loopback only, bounded in time.
# Knobs: DURATION (1800 s) CONC (32) SAMPLE (10 s) RESTART (300 s) OUT (bench/results/soak-*.csv)
# SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-1800} CONC=${CONC:-32} SAMPLE=${SAMPLE:-10} RESTART=${RESTART:-300}
MOCK_PORT=18400 TW_PORT=18401 ADMIN_PORT=18402 REDIS_PORT=18479 SINK_PORT=18417
for t in wrk redis-server curl; do
  command -v "$t" >/dev/null || { echo "bench/soak.sh: $t is missing (apt-get install -y wrk redis-server curl)" >&2; exit 1; }
done
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --workspace --bins --examples --locked
TW=target/release/tokenwarden MOCK=target/release/tokenwarden-mock SINK=target/release/examples/otlp-sink
mkdir -p bench/results
OUT=${OUT:-bench/results/soak-$(date -u +%Y%m%dT%H%M%SZ).csv}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; kill "${redis_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
start_redis() { redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & redis_pid=$!; }

"$MOCK" --listen "127.0.0.1:$MOCK_PORT" >/dev/null 2>&1 & pids+=($!)
"$SINK" "127.0.0.1:$SINK_PORT" >/dev/null 2>&1 & pids+=($!)
start_redis
wait_port "$MOCK_PORT"; wait_port "$REDIS_PORT"
cat > "$work/tw.yaml" <<YAML
listen: 127.0.0.1:$TW_PORT
admin_listen: 127.0.0.1:$ADMIN_PORT
logging: { access_log: false }
routes:
  - { name: soak, path_prefix: /, upstream: 'http://127.0.0.1:$MOCK_PORT', timeouts: { first_byte_timeout: 2s } }
telemetry:
  otlp: { endpoint: 'http://127.0.0.1:$SINK_PORT' }
budgets:
  store: { kind: redis, url: 'redis://127.0.0.1:$REDIS_PORT', timeout: 200ms }
  on_store_unreachable: fail_open
  session_retention: 5m
  limits:
    - { scope: session, tokens: 5000, action: cut }
    - { scope: agent, usd: 1000000.0, window: 1h }
    - { scope: global, tokens: 1000000000000, action: observe }
pricing:
  gpt-4o-mini: { input: 0.15, output: 0.60 }
agents:
  "*":
    denied_tools: [delete_everything]
    loop_detection: { threshold: 1000, window: 1m, action: flag }
YAML
"$TW" --config "$work/tw.yaml" >"$work/tw.log" 2>&1 & tw_pid=$!; pids+=($tw_pid)
wait_port "$TW_PORT"

wrk -t2 -c"$CONC" -d"${DURATION}s" --timeout 1s -s bench/soak.lua "http://127.0.0.1:$TW_PORT" >"$work/wrk.txt" 2>&1 & wrk_pid=$!; pids+=($wrk_pid)

metric() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" { s += $NF } END { printf "%d", s }'; }
echo "t_s,rss_kb,fds,threads,tasks,requests,disconnects,store_errors,sessions_tracked" > "$OUT"
start=$(date +%s) last_restart=$start
while kill -0 "$wrk_pid" 2>/dev/null; do
  sleep "$SAMPLE"
  now=$(date +%s)
  if (( now - last_restart >= RESTART )); then
    # Redis dies and comes back: fail_open lets calls through meanwhile; leases and the
    # reconnect must leave no growth behind.
    kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true
    sleep 2; start_redis; last_restart=$now
  fi
  rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$tw_pid/status")
  threads=$(awk '/^Threads/ { print $2 }' "/proc/$tw_pid/status")
  fds=$(ls "/proc/$tw_pid/fd" | wc -l)
  echo "$((now - start)),$rss,$fds,$threads,$(metric tokenwarden_runtime_alive_tasks),$(metric tokenwarden_requests_total),$(metric tokenwarden_client_disconnects_total),$(metric tokenwarden_budget_store_errors_total),$(metric tokenwarden_budget_sessions_tracked)" >> "$OUT"
done
wait "$wrk_pid" || true
kill -0 "$tw_pid" 2>/dev/null || { echo "bench/soak.sh: tokenwarden died" >&2; tail -20 "$work/tw.log" >&2; exit 1; }
cat "$work/wrk.txt"
python3 - "$OUT" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
if len(rows) < 4:
    sys.exit("too few samples")
# Warm-up: the first tenth of the run (pools, caches and the allocator settle).
steady = rows[max(1, len(rows) // 10):]
def col(k, rs): return [int(r[k] or 0) for r in rs]
print(f"samples: {len(rows)}, file: {sys.argv[1]}")
flat = True
for k, slack in [("rss_kb", 0.15), ("fds", 0.5), ("tasks", 0.5), ("threads", 0.0)]:
    v = col(k, steady)
    first_half, second_half = v[: len(v) // 2], v[len(v) // 2 :]
    grew = max(second_half) > max(first_half) * (1 + slack) + (8 if k != "rss_kb" else 0)
    flat &= not grew
    print(f"{k:8} first {v[0]:>9} last {v[-1]:>9} peak {max(v):>9} {'GROWING' if grew else 'flat'}")
r = col("requests", rows)
print(f"requests {r[-1]} ({r[-1] / int(rows[-1]['t_s']):.0f}/s), disconnects {col('disconnects', rows)[-1]}, store errors {col('store_errors', rows)[-1]}")
sys.exit(0 if flat else 1)
PY
