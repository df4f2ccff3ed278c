#!/usr/bin/env bash
# MCP pass-through overhead per `tools/call`: one driver against a fast MCP tool server, directly
# and through tokenwarden's MCP route, same requests, same connections (examples/mcp-bench.rs).
#
#   bench/mcp.sh                       # DUR [10] s per run, CONCS ["1 16"], MODES ["json sse"]
#   DUR=3 CONCS=1 MODES=json bench/mcp.sh   # smoke
#
# Release builds. As in bench/run.sh, the proxy is pinned to CPU 1 and the server and the driver
# to CPU 0. Targets: `direct`; `tokenwarden` (an MCP route, no agent policies: every message is
# still parsed, its span-less op timed and counted); `tokenwarden+policies` (the agent has
# allow and deny lists and max_steps: each call is admitted against them and takes a session
# step). Prints a markdown table; raw JSON lines go to $OUT [/tmp/mcp-bench.jsonl]. Everything
# started here is stopped on exit.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"; REPO="$(cd "$HERE/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
DUR="${DUR:-10}"; CONCS="${CONCS:-1 16}"; MODES="${MODES:-json sse}"; OUT="${OUT:-/tmp/mcp-bench.jsonl}"
[ "${SKIP_BUILD:-0}" = 1 ] || (cd "$REPO" && cargo build --release --bin tokenwarden --example mcp-bench)
TW="$TARGET/release/tokenwarden"; MB="$TARGET/release/examples/mcp-bench"
WORK="$(mktemp -d)"; pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

: > "$OUT"
# The proxy's CPU time (user + system, clock ticks) from /proc, for CPU µs per call.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
echo "| answer | target | conc | calls/s | p50 µs | p90 µs | p99 µs | proxy CPU µs/call |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for mode in $MODES; do
  taskset -c 0 "$MB" server 127.0.0.1:19601 "$mode" > "$WORK/server.log" 2>&1 & pids+=($!)
  wait_port 19601
  for variant in plain policies; do
    policies=""
    [ "$variant" = policies ] && policies=$'agents:\n  bench:\n    allowed_tools: [lookup_order, search]\n    denied_tools: [delete_all]\n    max_steps: 100000000\n'
    cat > "$WORK/$variant.yaml" <<YAML
listen: 127.0.0.1:$((19610 + ${#pids[@]}))
admin_listen: 127.0.0.1:$((19710 + ${#pids[@]}))
logging: { access_log: false }
routes:
  - name: tools
    path_prefix: /tools
    strip_prefix: true
    protocol: mcp
    upstream: http://127.0.0.1:19601
$policies
YAML
    port=$((19610 + ${#pids[@]}))
    taskset -c 1 "$TW" --config "$WORK/$variant.yaml" > "$WORK/$variant.log" 2>&1 & pids+=($!)
    wait_port "$port"
    eval "port_$variant=$port; pid_$variant=${pids[-1]}"
  done
  for conc in $CONCS; do
    for target in direct tokenwarden tokenwarden+policies; do
      case $target in
        direct) url=http://127.0.0.1:19601/mcp; pid="" ;;
        tokenwarden) url="http://127.0.0.1:$port_plain/tools/mcp"; pid=$pid_plain ;;
        *) url="http://127.0.0.1:$port_policies/tools/mcp"; pid=$pid_policies ;;
      esac
      before=0; [ -n "$pid" ] && before=$(cpu_ticks "$pid")
      line=$(taskset -c 0 "$MB" drive "$url" "$conc" "$DUR")
      cpu_us=0; [ -n "$pid" ] && cpu_us=$(( ($(cpu_ticks "$pid") - before) * TICK_US ))
      echo "{\"mode\":\"$mode\",\"target\":\"$target\",\"proxy_cpu_us\":$cpu_us,${line#\{}" >> "$OUT"
      python3 - "$mode" "$target" "$line" "$cpu_us" "$DUR" <<'PY'
import json, sys
v = json.loads(sys.argv[3])
cpu, dur = int(sys.argv[4]), int(sys.argv[5])
# The warm-up second's calls are not in `requests`: count them at the measured rate.
per = f"{cpu / (v['requests'] * (dur + 1) / dur):.0f}" if cpu else "—"
print(f"| {sys.argv[1]} | {sys.argv[2]} | {v['conc']} | {v['rps']:,.0f} | {v['p50_us']} | {v['p90_us']} | {v['p99_us']} | {per} |")
PY
    done
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; pids=(); sleep 0.3
done
