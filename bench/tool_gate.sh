#!/usr/bin/env bash
# What gating streamed tool calls costs (issue 19): an agent with `tool_call_action: block` and
# `approval_action: block` ("gated": tool-call events withheld until the call is complete and
# checked) against the same stream for an agent that only flags ("flagged": checked at the end).
#
# 1. Latency (bench/gate-driver, upstream and client in one process, one clock): the upstream
#    replays the mock's recorded stream for each format (TEXT_CHUNKS text chunks, then one tool
#    call that passes every policy), one write per event, GAP_US apart; the clients time, per
#    call, upstream write → client read of the first text event and of the event that completes
#    the tool call (OpenAI chat: the finish chunk; Anthropic: the tool_use block's
#    content_block_stop; Responses: the function_call's output_item.done; Gemini: the
#    functionCall chunk). Direct, flagged and gated take turns (ROUNDS rounds, CONC clients).
# 2. CPU per stream (wrk + tokenwarden-mock, 20 text chunks + 1 tool call): proxy user+system
#    CPU from /proc over DUR seconds divided by streams served, for agents with no policies
#    ("plain"), flagged and gated, one proxy process per repetition, the order rotating; with
#    events spaced CPU_DELAY_MS apart (each event its own read) and back to back.
#
# Proxy pinned to CPU 1; the driver, wrk and the mock on CPU 0; all on 127.0.0.1.
# Needs: wrk, taskset, curl, python3 (stdlib). Knobs: FORMATS ("chat anthropic responses gemini")
# CALLS (1200 per target and format) CONC (4) ROUNDS (4) GAP_US (1000) TEXT_CHUNKS (5)
# CPU_FORMATS (= FORMATS) CPU_BURST_FORMATS ("chat anthropic") CPU_CONC (64) CPU_DELAY_MS (1)
# DUR (4) REPS (3) PARTS ("latency cpu") BASE (18400) SKIP_BUILD=1; TW, MOCK, DRIVER (binaries).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
FORMATS=${FORMATS:-"chat anthropic responses gemini"}
CALLS=${CALLS:-1200} CONC=${CONC:-4} ROUNDS=${ROUNDS:-4} GAP_US=${GAP_US:-1000}
TEXT_CHUNKS=${TEXT_CHUNKS:-5}
CPU_FORMATS=${CPU_FORMATS:-$FORMATS} CPU_BURST_FORMATS=${CPU_BURST_FORMATS-"chat anthropic"}
CPU_CONC=${CPU_CONC:-64} CPU_DELAY_MS=${CPU_DELAY_MS:-1} DUR=${DUR:-4} REPS=${REPS:-3}
PARTS=${PARTS:-"latency cpu"}
BASE=${BASE:-18400}
MOCK_PORT=$BASE TW_PORT=$((BASE + 1)) ADMIN_PORT=$((BASE + 2)) UP_PORT=$((BASE + 3))

for t in wrk taskset curl python3; do
  command -v "$t" >/dev/null || { echo "bench/tool_gate.sh: $t is missing" >&2; exit 2; }
done
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --bins -p tokenwarden -p tokenwarden-mock >&2
  cargo build --release --manifest-path bench/gate-driver/Cargo.toml >&2
fi
TW=${TW:-${CARGO_TARGET_DIR:-target}/release/tokenwarden}
MOCK=${MOCK:-${CARGO_TARGET_DIR:-target}/release/tokenwarden-mock}
DRIVER=${DRIVER:-${CARGO_TARGET_DIR:-bench/gate-driver/target}/release/gate-driver}
for b in "$TW" "$MOCK" "$DRIVER"; do [ -x "$b" ] || { echo "missing $b" >&2; exit 2; }; done
for p in "$MOCK_PORT" "$TW_PORT" "$ADMIN_PORT" "$UP_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "port $p is in use: pick another BASE" >&2; exit 2; fi
done

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

# The proxy in front of UPSTREAM (port), pinned to CPU 1; its pid in TW_PID.
start_proxy() {
  cat >"$WORK/tw.yaml" <<YAML
listen: 127.0.0.1:$TW_PORT
admin_listen: 127.0.0.1:$ADMIN_PORT
logging: { access_log: false }
routes:
  - { name: bench, path_prefix: /, upstream: 'http://127.0.0.1:$1' }
agents:
  bench-flag: { tool_call_action: flag, approval_action: flag }
  bench-gate: { tool_call_action: block, approval_action: block }
YAML
  taskset -c 1 "$TW" --config "$WORK/tw.yaml" >"$WORK/tw.log" 2>&1 &
  TW_PID=$!
  PIDS+=("$TW_PID")
  wait_port "$TW_PORT"
}
stop_proxy() { kill "$TW_PID" 2>/dev/null || true; wait "$TW_PID" 2>/dev/null || true; }

# Per format: path, request body (the tool declared with a JSON Schema its call satisfies, so
# the call passes), the same request without tools (a gated call is then refused: the check that
# the gate is on), the text marker and the completing event's markers (gate-driver).
SCHEMA='{"type":"object","properties":{"city":{"type":"string"},"unit":{"type":"string","enum":["celsius","fahrenheit"]}},"required":["city"]}'
USER='{"role":"user","content":"What is the weather in Paris?"}'
spec() {
  case $1 in
    chat)
      PATH_=/v1/chat/completions
      BODY='{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":['"$USER"'],"tools":[{"type":"function","function":{"name":"get_weather","parameters":'"$SCHEMA"'}}]}'
      BARE='{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":['"$USER"']}'
      TEXT='"content":"Mock"' DONE='"finish_reason":"tool_calls"' ;;
    anthropic)
      PATH_=/v1/messages
      BODY='{"model":"claude-3-5-haiku-latest","max_tokens":256,"stream":true,"messages":['"$USER"'],"tools":[{"name":"get_weather","input_schema":'"$SCHEMA"'}]}'
      BARE='{"model":"claude-3-5-haiku-latest","max_tokens":256,"stream":true,"messages":['"$USER"']}'
      TEXT='"text":"Mock"' DONE='content_block_stop' ;;
    responses)
      PATH_=/v1/responses
      BODY='{"model":"gpt-4o-mini","stream":true,"input":"What is the weather in Paris?","tools":[{"type":"function","name":"get_weather","parameters":'"$SCHEMA"'}]}'
      BARE='{"model":"gpt-4o-mini","stream":true,"input":"What is the weather in Paris?"}'
      TEXT='"delta":"Mock"' DONE='response.output_item.done&function_call' ;;
    gemini)
      PATH_='/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse'
      BODY='{"contents":[{"role":"user","parts":[{"text":"What is the weather in Paris?"}]}],"tools":[{"functionDeclarations":[{"name":"get_weather","parameters":'"$SCHEMA"'}]}]}'
      BARE='{"contents":[{"role":"user","parts":[{"text":"What is the weather in Paris?"}]}]}'
      TEXT='"text":"Mock"' DONE='functionCall' ;;
    *) echo "unknown format $1" >&2; exit 2 ;;
  esac
}
HDRS=(-H 'content-type: application/json' -H 'authorization: Bearer sk-bench' -H 'x-api-key: sk-bench'
  -H 'anthropic-version: 2023-06-01' -H 'x-goog-api-key: bench')

taskset -c 0 "$MOCK" --listen "127.0.0.1:$MOCK_PORT" --no-record >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
wait_port "$MOCK_PORT"

# The gate is on for bench-gate and off for bench-flag: an undeclared call is refused / passes.
start_proxy "$MOCK_PORT"
for f in $FORMATS $CPU_FORMATS; do
  spec "$f"
  for agent in bench-gate bench-flag; do
    out=$(curl -sS "${HDRS[@]}" -H "x-agent-name: $agent" -H 'x-mock-tool-calls: 1' -H 'x-mock-output-chunks: 3' \
      --data "$BARE" "http://127.0.0.1:$TW_PORT$PATH_")
    refused=no
    grep -q undeclared_tool <<<"$out" && refused=yes
    want=$([ $agent = bench-gate ] && echo yes || echo no)
    [ "$refused" = "$want" ] || { echo "check failed: $f $agent refused=$refused, body: $out" >&2; exit 1; }
  done
done
stop_proxy
echo "checked: bench-gate refuses an undeclared streamed call, bench-flag passes it ($FORMATS)" >&2

stamp=$(date -u +%Y%m%dT%H%M%SZ)
echo "# bench/tool_gate.sh, $stamp, $(git rev-parse --short HEAD 2>/dev/null || echo '?'), load $(cut -d' ' -f1-3 /proc/loadavg)"

if [[ " $PARTS " == *" latency "* ]]; then
  echo
  echo "## Latency: upstream write → client read, µs ($CALLS calls per target and format, c=$CONC, $TEXT_CHUNKS text chunks + 1 tool call, events ${GAP_US} µs apart)"
  echo
  echo "| format | path | calls | text p50 | text p99 | tool p50 | tool p90 | tool p99 | tool p99.9 | tool max | text p50, last byte | tool p50, last byte | errors | bodies not identical |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  start_proxy "$UP_PORT"
  for f in $FORMATS; do
    spec "$f"
    curl -sS "${HDRS[@]}" -H 'x-mock-tool-calls: 1' -H "x-mock-output-chunks: $TEXT_CHUNKS" \
      --data "$BODY" "http://127.0.0.1:$MOCK_PORT$PATH_" >"$WORK/$f.sse"
    printf '%s' "$BODY" >"$WORK/$f.json"
    hargs=()
    for h in 'authorization: Bearer sk-bench' 'x-api-key: sk-bench' 'anthropic-version: 2023-06-01' 'x-goog-api-key: bench'; do
      hargs+=(--header "$h")
    done
    taskset -c 0 "$DRIVER" --events "$WORK/$f.sse" --text-marker "$TEXT" --done-marker "$DONE" \
      --listen "127.0.0.1:$UP_PORT" --path "$PATH_" --request "$WORK/$f.json" "${hargs[@]}" \
      --target "direct=127.0.0.1:$UP_PORT" --target "flagged=127.0.0.1:$TW_PORT,bench-flag" \
      --target "gated=127.0.0.1:$TW_PORT,bench-gate" \
      --calls "$CALLS" --rounds "$ROUNDS" --conc "$CONC" --gap-us "$GAP_US" --label "$f" \
      --out "${LAT_CSV_DIR:-$WORK}/latency-$f.csv"
    kill -0 "$TW_PID" 2>/dev/null || { echo "tokenwarden exited:" >&2; cat "$WORK/tw.log" >&2; exit 1; }
  done
  stop_proxy
fi

if [[ " $PARTS " == *" cpu "* ]]; then
  # One wrk script per format and agent.
  lua() { # format agent delay
    spec "$1"
    cat >"$WORK/load.lua" <<LUA
wrk.method = "POST"
wrk.path = "$PATH_"
wrk.body = [==[$BODY]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.headers["x-api-key"] = "sk-bench"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-agent-name"] = "$2"
wrk.headers["x-mock-output-chunks"] = "20"
wrk.headers["x-mock-tool-calls"] = "1"
wrk.headers["x-mock-chunk-delay-ms"] = "$3"
done = function(s, lat, req)
  io.write(string.format("RESULT %d %.3f %.3f %d\n", s.requests, lat:percentile(50) / 1000,
    lat:percentile(99) / 1000, s.errors.status + s.errors.connect + s.errors.read + s.errors.timeout))
end
LUA
  }
  cases=()
  for f in $CPU_FORMATS; do cases+=("$f:$CPU_DELAY_MS"); done
  for f in $CPU_BURST_FORMATS; do cases+=("$f:0"); done
  modes=(plain flagged gated)
  declare -A agent_of=([plain]=bench-none [flagged]=bench-flag [gated]=bench-gate)
  : >"$WORK/cpu.tsv"
  tck=$(getconf CLK_TCK)
  for rep in $(seq 1 "$REPS"); do
    start_proxy "$MOCK_PORT"
    for c in "${cases[@]}"; do
      f=${c%:*} delay=${c#*:}
      for k in 0 1 2; do
        mode=${modes[$(((k + rep) % 3))]}
        lua "$f" "${agent_of[$mode]}" "$delay"
        taskset -c 0 wrk -t1 -c"$CPU_CONC" -d1s -s "$WORK/load.lua" "http://127.0.0.1:$TW_PORT" >/dev/null
        t0=$(awk '{print $14+$15}' "/proc/$TW_PID/stat")
        out=$(taskset -c 0 wrk -t1 -c"$CPU_CONC" -d"${DUR}s" -s "$WORK/load.lua" "http://127.0.0.1:$TW_PORT" | grep '^RESULT')
        t1=$(awk '{print $14+$15}' "/proc/$TW_PID/stat")
        read -r _ n p50 p99 errs <<<"$out"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$f" "$delay" "$rep" "$mode" "$n" "$((t1 - t0))" "$p50" "$p99" "$errs" >>"$WORK/cpu.tsv"
      done
    done
    kill -0 "$TW_PID" 2>/dev/null || { echo "tokenwarden exited:" >&2; cat "$WORK/tw.log" >&2; exit 1; }
    stop_proxy
  done
  [ -z "${CPU_TSV:-}" ] || cp "$WORK/cpu.tsv" "$CPU_TSV"
  echo
  echo "## Proxy CPU per stream, µs (20 text chunks + 1 tool call, wrk c=$CPU_CONC, ${DUR} s × $REPS repetitions, medians)"
  echo
  python3 - "$WORK/cpu.tsv" "$tck" "$DUR" <<'PY'
import sys, statistics as st
from collections import defaultdict
path, tck, dur = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rows = defaultdict(list)
for line in open(path):
    f, delay, rep, mode, n, ticks, p50, p99, errs = line.split("\t")
    n = int(n)
    rows[(f, delay, mode)].append((int(rep), int(ticks) / tck * 1e6 / max(n, 1), n / dur, float(p50), float(p99), int(errs)))
print("| format | events | agent | streams/s | p50 ms | p99 ms | errors | CPU µs/stream (each rep) | median | ÷ flagged (of medians) | ÷ flagged (median of paired) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
cases = sorted({(f, d) for f, d, _ in rows}, key=lambda k: (k[1] == "0", k[0]))
for f, d in cases:
    flag = {r[0]: r[1] for r in rows[(f, d, "flagged")]}
    fmed = st.median(flag.values()) if flag else float("nan")
    for mode in ("plain", "flagged", "gated"):
        rs = sorted(rows.get((f, d, mode), []))
        if not rs:
            continue
        cpu = [r[1] for r in rs]
        med = st.median(cpu)
        paired = [r[1] / flag[r[0]] for r in rs if r[0] in flag]
        ev = "back to back" if d == "0" else f"{d} ms apart"
        print(f"| {f} | {ev} | {mode} | {st.median(r[2] for r in rs):,.0f} | {st.median(r[3] for r in rs):.2f} | "
              f"{st.median(r[4] for r in rs):.2f} | {sum(r[5] for r in rs)} | {' / '.join(f'{c:.0f}' for c in cpu)} | "
              f"{med:.0f} | {med / fmed:.3f} | {st.median(paired):.3f} |")
PY
fi
