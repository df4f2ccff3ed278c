#!/usr/bin/env bash
# Throughput cost of budgets: the same non-streaming chat load (wrk, c=64 by default) through
# tokenwarden with budgets off, with the memory store, and with the Redis store, in one run.
# Proxy pinned to CPU 1; wrk, tokenwarden-mock and redis-server on CPU 0; all on 127.0.0.1.
# Needs: wrk, redis-server (apt-get install -y wrk redis-server). Knobs: DUR (10) REPS (2) CONC (64)
# SESSIONS (64) SKIP_BUILD=1, TW and MOCK (the two binaries, to compare builds; default target/release/).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-10} REPS=${REPS:-2} CONC=${CONC:-64} SESSIONS=${SESSIONS:-64}
MOCK_PORT=18300 TW_PORT=18301 ADMIN_PORT=18302 REDIS_PORT=18379
for t in wrk redis-server taskset; do
  command -v "$t" >/dev/null || { echo "bench/budgets.sh: $t is missing (apt-get install -y wrk redis-server)" >&2; exit 1; }
done
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --workspace --bins --locked
TW=${TW:-target/release/tokenwarden} MOCK=${MOCK:-target/release/tokenwarden-mock}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

taskset -c 0 "$MOCK" --listen "127.0.0.1:$MOCK_PORT" >/dev/null 2>&1 & pids+=($!)
taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & pids+=($!)
wait_port "$MOCK_PORT"; wait_port "$REDIS_PORT"

base="listen: 127.0.0.1:$TW_PORT
admin_listen: 127.0.0.1:$ADMIN_PORT
logging: { access_log: false }
routes:
  - { name: bench, path_prefix: /, upstream: 'http://127.0.0.1:$MOCK_PORT' }"
limits="  limits:
    - { scope: session, tokens: 1000000000000 }
    - { scope: agent, usd: 1000000.0, window: 1d }
pricing:
  gpt-4o-mini: { input: 0.15, output: 0.60 }"
printf '%s\n' "$base" > "$work/off.yaml"
printf '%s\nbudgets:\n  store: { kind: memory, snapshot_path: %s }\n%s\n' "$base" "$work/snap.json" "$limits" > "$work/memory.yaml"
printf '%s\nbudgets:\n  store: { kind: redis, url: "redis://127.0.0.1:%s" }\n  on_store_unreachable: fail_closed\n%s\n' "$base" "$REDIS_PORT" "$limits" > "$work/redis.yaml"

cat > "$work/load.lua" <<LUA
local n = 0
local body = '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64}'
request = function()
  n = n + 1
  return wrk.format("POST", "/v1/chat/completions", {
    ["Content-Type"] = "application/json", ["Authorization"] = "Bearer sk-bench",
    ["x-session-id"] = "bench-" .. (n % $SESSIONS) }, body)
end
done = function(s, lat, req)
  io.write(string.format("RESULT %.0f %.3f %.3f %d\n", s.requests / (s.duration / 1e6),
    lat:percentile(50) / 1000, lat:percentile(99) / 1000, s.errors.status + s.errors.connect + s.errors.read + s.errors.timeout))
end
LUA

echo "| rep | budgets | rps | p50 ms | p99 ms | errors | proxy CPU µs/req |"
echo "|---|---|---|---|---|---|---|"
for rep in $(seq 1 "$REPS"); do
  for mode in off memory redis; do
    taskset -c 1 "$TW" --config "$work/$mode.yaml" >"$work/$mode.log" 2>&1 & tw=$!
    wait_port "$TW_PORT"
    # warm-up (connections, pools, script cache)
    taskset -c 0 wrk -t1 -c"$CONC" -d1s -s "$work/load.lua" "http://127.0.0.1:$TW_PORT" >/dev/null
    t0=$(awk '{print $14+$15}' "/proc/$tw/stat")
    out=$(taskset -c 0 wrk -t1 -c"$CONC" -d"${DUR}s" -s "$work/load.lua" "http://127.0.0.1:$TW_PORT" | grep '^RESULT')
    t1=$(awk '{print $14+$15}' "/proc/$tw/stat")
    kill "$tw"; wait "$tw" 2>/dev/null || true
    read -r _ rps p50 p99 errs <<<"$out"
    tck=$(getconf CLK_TCK)
    cpu=$(awk -v a="$t0" -v b="$t1" -v r="$rps" -v d="$DUR" -v t="$tck" 'BEGIN { printf "%.0f", (b-a)/t*1e6/(r*d) }')
    echo "| $rep | $mode | $rps | $p50 | $p99 | $errs | $cpu |"
  done
done
