#!/usr/bin/env bash
# Instructions per request on the request side (`Proxy::handle`, inclusive), under callgrind: the
# method of BENCHMARKS.md's "Agent-sized requests" sections, repeatable. Needs valgrind (which
# ships callgrind_control and callgrind_annotate), curl and python3.
#
# For each config (bare, everything) and history size it starts tokenwarden-mock and tokenwarden
# under `valgrind --tool=callgrind --instr-atstart=no`, sends WARM requests, switches
# instrumentation on, sends N requests (each waits for its answer), dumps, and prints
# `Proxy::handle`'s inclusive instructions divided by N. Bodies are built as the peer kit's
# `post.lua` builds them with TOOLS=20 and HISTORY_KB (non-streaming, model gpt-4o-mini), with
# the header `x-session-id: bench-session`.
#
# Env: TW_BIN, TWMOCK_BIN (default: target/release of this checkout), CONFIGS ["bare
# everything"], HISTORY ["0 64 256"], N [10], WARM [3], OUT [bench/results/callgrind-<time>],
# PORT_BASE [28600] (mock on +0, proxy on +1, admin on +2).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"; REPO="$(dirname "$HERE")"
TW_BIN="${TW_BIN:-$REPO/target/release/tokenwarden}"
TWMOCK_BIN="${TWMOCK_BIN:-$REPO/target/release/tokenwarden-mock}"
CONFIGS="${CONFIGS:-bare everything}"; HISTORY="${HISTORY:-0 64 256}"
N="${N:-10}"; WARM="${WARM:-3}"; PORT_BASE="${PORT_BASE:-28600}"
OUT="${OUT:-$HERE/results/callgrind-$(date -u +%Y%m%dT%H%M%SZ)}"
for t in valgrind callgrind_control callgrind_annotate curl python3; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install valgrind curl python3)" >&2; exit 2; }
done
[ -x "$TW_BIN" ] && [ -x "$TWMOCK_BIN" ] || { echo "missing $TW_BIN or $TWMOCK_BIN" >&2; exit 2; }
mkdir -p "$OUT"
MOCK=$PORT_BASE; PROXY=$((PORT_BASE + 1)); ADMIN=$((PORT_BASE + 2))

MOCK_PID=""; TW_PID=""
stop() { for p in $TW_PID $MOCK_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; TW_PID=""; MOCK_PID=""; }
trap stop EXIT

wait_port() { for _ in $(seq 1 600); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; echo "port $1 never answered" >&2; exit 1; }

body() { # the kit's post.lua body: TOOLS=20, HISTORY_KB=$1, non-streaming
  python3 - "$1" <<'PY'
import sys
kb = int(sys.argv[1]); h = ""; turn = 0
while len(h) < kb * 1024:
    turn += 1
    h += ('{"role":"user","content":"Step %d: look up the order status for customer %d and summarise what changed since the last check, including shipping, billing and any open tickets."},' % (turn, turn)
          + '{"role":"assistant","content":"The order for customer %d shipped yesterday; billing is settled; one ticket about a delayed parcel is still open and waiting on the carrier."},' % turn)
tools = ",".join('{"type":"function","function":{"name":"tool_%d","description":"Tool number %d","parameters":{"type":"object","properties":{"id":{"type":"string"},"limit":{"type":"integer","minimum":1,"maximum":100}},"required":["id"],"additionalProperties":false}}}' % (i, i) for i in range(1, 21))
sys.stdout.write('{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},' + h
                 + '{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64,"tools":[' + tools + '],"stream":false}')
PY
}

config() { # $1: bare | everything (the configurations of bench/run.sh; no collector: spans to a closed port)
  cat <<CFG
listen: 127.0.0.1:$PROXY
admin_listen: 127.0.0.1:$ADMIN
logging: { access_log: false }
routes:
  - { name: mock, path_prefix: /, upstream: 'http://127.0.0.1:$MOCK', agent: bench }
identity: { session_headers: [x-session-id] }
CFG
  [ "$1" = everything ] && cat "$HERE/everything-features.yaml" - <<CFG
telemetry: { otlp: { endpoint: 'http://127.0.0.1:$((PORT_BASE + 3))', protocol: grpc } }
CFG
  return 0
}

post() { curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
  -H 'authorization: Bearer sk-mock' -H 'x-session-id: bench-session' \
  --data-binary "@$1" "http://127.0.0.1:$PROXY/v1/chat/completions"; }

printf '| config | history | body bytes | Proxy::handle instructions per request |\n|---|---|---|---|\n'
for cfg in $CONFIGS; do
  for kb in $HISTORY; do
    b="$OUT/body-$kb.json"; body "$kb" >"$b"
    c="$OUT/$cfg.yaml"; config "$cfg" >"$c"
    "$TWMOCK_BIN" --listen "127.0.0.1:$MOCK" >"$OUT/mock.log" 2>&1 & MOCK_PID=$!
    cg="$OUT/callgrind-$cfg-$kb.out"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$cg" \
      "$TW_BIN" --config "$c" >"$OUT/tw-$cfg-$kb.log" 2>&1 & TW_PID=$!
    wait_port "$MOCK"; wait_port "$PROXY"
    for _ in $(seq 1 "$WARM"); do [ "$(post "$b")" = 200 ] || { echo "warm-up request failed" >&2; exit 1; }; done
    callgrind_control -i on "$TW_PID" >/dev/null 2>&1
    for _ in $(seq 1 "$N"); do [ "$(post "$b")" = 200 ] || { echo "request failed" >&2; exit 1; }; done
    callgrind_control -i off "$TW_PID" >/dev/null 2>&1
    stop
    handle=$(callgrind_annotate --inclusive=yes "$cg" 2>/dev/null \
      | grep -E 'Proxy>?::handle[^_a-z]' | head -1 | awk '{gsub(",","",$1); print $1}' || true)
    printf '| %s | %s KiB | %s | %s |\n' "$cfg" "$kb" "$(stat -c %s "$b")" \
      "$(python3 -c "print(f'{int(\"${handle:-0}\")/$N/1e6:.2f} M')")"
  done
done
