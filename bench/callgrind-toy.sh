#!/usr/bin/env bash
# Instructions per toy request of the whole process (every thread: the request, the upstream
# connection, the response's accounting, the span), under callgrind: the method of BENCHMARKS.md's
# "Toy requests" section, repeatable whatever else the machine does. Needs valgrind, wrk, curl and
# util-linux (taskset); run it inside `unshare -n` for a private loopback if ports collide.
#
# For each config (bare, everything) and mode (nonstream, stream) it starts tokenwarden-mock (20
# output chunks) and tokenwarden (`server.workers: 1`) under `valgrind --tool=callgrind
# --instr-atstart=no`, warms up with wrk -c4 for 3 s, switches instrumentation on for 8 s of wrk
# -c4, and prints all threads' instructions divided by the requests the proxy counted
# (`tokenwarden_requests_total`). The request is the kit's toy chat request (`hi`, no
# `max_tokens`, so an agent's `max_tokens_cap` adds one) with `x-session-id`; a streamed one does
# not ask for usage, so the proxy asks for it and hides it again (what the OpenAI SDKs' default
# streams cost).
#
# Env: TW_BIN, TWMOCK_BIN (default: target/release of this checkout), CONFIGS ["bare
# everything"], MODES ["nonstream stream"], OUT [bench/results/callgrind-toy-<time>], PORT_BASE
# [18500] (mock on +0, proxy on +90, admin on +91, a closed OTLP port on +99).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"; REPO="$(dirname "$HERE")"
TW_BIN="${TW_BIN:-$REPO/target/release/tokenwarden}"
TWMOCK_BIN="${TWMOCK_BIN:-$REPO/target/release/tokenwarden-mock}"
CONFIGS="${CONFIGS:-bare everything}"; MODES="${MODES:-nonstream stream}"
PORT_BASE="${PORT_BASE:-18500}"
OUT="${OUT:-$HERE/results/callgrind-toy-$(date -u +%Y%m%dT%H%M%SZ)}"
for t in valgrind callgrind_control wrk curl taskset; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install valgrind wrk curl util-linux)" >&2; exit 2; }
done
[ -x "$TW_BIN" ] && [ -x "$TWMOCK_BIN" ] || { echo "missing $TW_BIN or $TWMOCK_BIN" >&2; exit 2; }
mkdir -p "$OUT"
MOCK=$PORT_BASE; PROXY=$((PORT_BASE + 90)); ADMIN=$((PORT_BASE + 91)); OTLP=$((PORT_BASE + 99))
ip link set lo up 2>/dev/null || true

MOCK_PID=""; TW_PID=""
stop() { for p in $TW_PID $MOCK_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; TW_PID=""; MOCK_PID=""; }
trap stop EXIT

config() { # $1: bare | everything (bench/run.sh's everything-on config, spans to a closed port)
  cat <<CFG
listen: 127.0.0.1:$PROXY
admin_listen: 127.0.0.1:$ADMIN
logging: { access_log: false }
server: { workers: 1 }
routes:
  - { name: mock, path_prefix: /, upstream: 'http://127.0.0.1:$MOCK', agent: bench }
identity: { session_headers: [x-session-id] }
CFG
  [ "$1" = everything ] && cat "$HERE/everything-features.yaml" - <<CFG
telemetry: { otlp: { endpoint: 'http://127.0.0.1:$OTLP', protocol: grpc } }
CFG
  return 0
}

reqs() { curl -s "127.0.0.1:$ADMIN/metrics" | awk '/^tokenwarden_requests_total/ {s+=$NF} END {print s+0}'; }

printf '| config | mode | requests | instructions per request |\n|---|---|---|---|\n'
for cfg in $CONFIGS; do
  for mode in $MODES; do
    stream=false; [ "$mode" = stream ] && stream=true
    lua="$OUT/post-$mode.lua"
    printf 'wrk.method="POST"\nwrk.body=%s\nwrk.headers["Content-Type"]="application/json"\nwrk.headers["x-session-id"]="bench-session"\n' \
      "'{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":$stream}'" >"$lua"
    c="$OUT/$cfg.yaml"; config "$cfg" >"$c"
    taskset -c 0 "$TWMOCK_BIN" --listen "127.0.0.1:$MOCK" --output-chunks 20 >"$OUT/mock.log" 2>&1 & MOCK_PID=$!
    cg="$OUT/callgrind-$cfg-$mode"
    taskset -c 1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$cg.%p" \
      "$TW_BIN" --config "$c" >"$OUT/tw-$cfg-$mode.log" 2>&1 & TW_PID=$!
    for _ in $(seq 1 600); do curl -s -o /dev/null "127.0.0.1:$ADMIN/healthz" && break; sleep 0.2; done
    url="http://127.0.0.1:$PROXY/v1/chat/completions"
    taskset -c 0 wrk -t1 -c4 -d3s -s "$lua" "$url" >/dev/null
    r0=$(reqs); callgrind_control -i on "$TW_PID" >/dev/null
    taskset -c 0 wrk -t1 -c4 -d8s -s "$lua" "$url" >/dev/null
    callgrind_control -i off "$TW_PID" >/dev/null; r1=$(reqs)
    stop
    n=$((r1 - r0)); total=$(grep -h '^summary:\|^totals:' "$cg".* | awk '{s+=$2} END {print s}')
    printf '| %s | %s | %s | %s |\n' "$cfg" "$mode" "$n" "$((total / n))"
  done
done
