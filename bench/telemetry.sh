#!/usr/bin/env bash
# Span export cost: throughput at c=64 through three tokenwarden processes in one run —
# export off, export on with a collector up (examples/otlp-sink; OTLP/gRPC, or OTLP/HTTP with
# PROTOCOL=http; PROTOCOL=both runs one proxy of each), export on with the
# collector down (nothing listens on its port) — same mock, reps interleaved (order rotating),
# every proxy started afresh and warmed up (WARMUP=1 s) for each rep. The paired ratio of each
# rep to the same rep's export-off run is summarised by its median and a 95 % bootstrap interval.
#
#   bench/telemetry.sh                 # DUR=10 REPS=3 CONC=64 MODES="nonstream stream"
#   DUR=3 REPS=30 MODES=nonstream bench/telemetry.sh   # the runs in BENCHMARKS.md
#   PROTOCOL=both DUR=3 REPS=30 MODES=nonstream bench/telemetry.sh   # gRPC and HTTP side by side
#   CONTROL=1 ...                      # plus a second export-off process, the noise floor
#   FRESH=0 ...                        # one process per setting for the whole run
#   DUR=2 REPS=1 bench/telemetry.sh    # smoke
#
# Proxies pinned to CPU 1, wrk, the mock and the sink to CPU 0, all on 127.0.0.1 (ports
# BASE..BASE+16, BASE-4000 for the sink and BASE-3990 for the dead one; BASE defaults to 18500). Needs wrk and the kit's post.lua (../shared/bench, or POST_LUA).
# Prints a markdown table; only processes started here are stopped on exit.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
B="${BASE:-18500}"
DUR="${DUR:-10}" REPS="${REPS:-3}" CONC="${CONC:-64}" MODES="${MODES:-nonstream stream}"
PROTOCOL="${PROTOCOL:-grpc}"
# Fresh proxy processes every rep: one process of a build can run ~1.5 % faster or slower than
# another for its whole life (memory layout), which a long-lived process per setting would
# turn into a bias. FRESH=0 keeps one process per setting for the run.
FRESH="${FRESH:-1}" WARMUP="${WARMUP:-1}"
case "$PROTOCOL" in
  grpc|http) TARGETS=(off up down) ;;
  # Both protocols side by side in one run: whether they differ, free of between-run drift.
  both) TARGETS=(off up-grpc up-http down-grpc down-http) ;;
  *) echo "PROTOCOL must be grpc, http or both" >&2; exit 2;;
esac
# CONTROL=1 adds a second export-off process: how far two identical proxies measure apart is
# the floor under any difference the table shows.
[ "${CONTROL:-0}" = 1 ] && TARGETS+=(control)
. "$HERE/telemetry-lib.sh"
bench_ready wrk
DEAD_PORT=$((B - 3990))
ports_free $(seq "$B" $((B + 16))) $SINK_PORT $DEAD_PORT
start_mock_and_sink

declare -A PORT ADMIN TWPID DROPPED
i=0
for t in "${TARGETS[@]}"; do
  i=$((i + 1)); PORT[$t]=$((B + i)); ADMIN[$t]=$((B + 10 + i)); DROPPED[$t]=0
done
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {print $2}'; }
# Every proxy started (afresh: FRESH=1) and warmed up with WARMUP seconds of load.
start_all() {
  local t proto otlp
  for t in "${TARGETS[@]}"; do
    proto="$PROTOCOL"; [ "$t" != "${t#*-}" ] && proto="${t#*-}"
    otlp=""
    case "$t" in
      up*) otlp="telemetry: {otlp: {endpoint: 'http://127.0.0.1:$SINK_PORT', protocol: $proto}}" ;;
      down*) otlp="telemetry: {otlp: {endpoint: 'http://127.0.0.1:$DEAD_PORT', protocol: $proto}}" ;;
    esac
    start_proxy "$t" "${PORT[$t]}" "${ADMIN[$t]}" "$otlp"; TWPID[$t]=$PROXY_PID
  done
  ports_listening $B "${PORT[@]}" "${ADMIN[@]}" $SINK_PORT
  for t in "${TARGETS[@]}"; do
    proxy_alive "$t" "${TWPID[$t]}"
    [ "$WARMUP" = 0 ] || MODE=nonstream taskset -c 0 wrk -t1 -c"$CONC" -d"${WARMUP}s" -s "$POST_LUA" \
      "http://127.0.0.1:${PORT[$t]}/v1/chat/completions" >/dev/null
  done
}
# Count each proxy's dropped spans, then stop it.
stop_all() {
  local t n
  for t in "${TARGETS[@]}"; do
    n=$(metric "${ADMIN[$t]}" tokenwarden_spans_dropped_total)
    DROPPED[$t]=$(( DROPPED[$t] + ${n:-0} ))
    kill "${TWPID[$t]}" 2>/dev/null || true
  done
  for t in "${TARGETS[@]}"; do wait "${TWPID[$t]}" 2>/dev/null || true; done
}
if [ "$FRESH" != 1 ]; then start_all; fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK="$(getconf CLK_TCK)"
echo -e "mode\ttarget\trep\trps\tp50_us\tp99_us\tcpu_us_per_req\terrors" >"$WORK/results.tsv"
for rep in $(seq 1 "$REPS"); do
  if [ "$FRESH" = 1 ]; then start_all; fi
  for mode in $MODES; do
    # The order rotates each rep, so no export setting always runs first, or right after
    # another.
    n=${#TARGETS[@]}; k=$(( (rep - 1) % n ))
    for t in "${TARGETS[@]:$k}" "${TARGETS[@]:0:$k}"; do
      c0=$(cpu_ticks "${TWPID[$t]}")
      out=$(MODE=$mode taskset -c 0 wrk -t1 -c"$CONC" -d"${DUR}s" -s "$POST_LUA" \
        "http://127.0.0.1:${PORT[$t]}/v1/chat/completions" | grep '^JSON ' | cut -c6-)
      c1=$(cpu_ticks "${TWPID[$t]}")
      python3 - "$mode" "$t" "$rep" "$out" "$c0" "$c1" "$TICK" >>"$WORK/results.tsv" <<'PY'
import json, sys
mode, t, rep, out, c0, c1, tick = sys.argv[1:]
j = json.loads(out)
cpu_us = (int(c1) - int(c0)) / int(tick) * 1e6
errs = sum(j[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
print(f"{mode}\t{t}\t{rep}\t{j['rps']:.0f}\t{j['p50_us']}\t{j['p99_us']}\t{cpu_us / max(j['requests'], 1):.1f}\t{errs}")
PY
    done
  done
  if [ "$FRESH" = 1 ]; then stop_all; fi
done
if [ "$FRESH" != 1 ]; then stop_all; fi
DROPS=""
for t in "${TARGETS[@]}"; do
  case "$t" in up*|down*) DROPS="$DROPS $t=${DROPPED[$t]}" ;; esac
done
sleep 1.5
SINK=$(grep '^spans ' "$WORK/sink.log" | tail -1 | cut -d' ' -f2)
python3 - "$WORK/results.tsv" "$DROPS" "$SINK" "$DUR" "$REPS" "$CONC" "$PROTOCOL" "${TARGETS[*]}" <<'PY'
import csv, os, random, statistics, sys
path, drops, sink, dur, reps, conc, protocol, targets = sys.argv[1:]
rows = list(csv.DictReader(open(path), delimiter="\t"))
proto = {"grpc": "OTLP/gRPC", "http": "OTLP/HTTP protobuf", "both": "OTLP/gRPC and OTLP/HTTP protobuf"}[protocol]
fresh = "fresh processes every rep" if os.environ.get("FRESH", "1") == "1" else "one process per setting"
print(f"wrk -t1 -c{conc} -d{dur}s × {reps} reps (interleaved, order rotating, {fresh}), tokenwarden-mock (20-chunk streams), proxies on CPU 1, {proto}\n")
print("| mode | export | rps (median; per rep) | vs off | vs off, paired [95 % interval] | p50 ms | p99 ms | CPU µs/req | errors |")
print("|---|---|---|---|---|---|---|---|---|")
def interval(xs):
    # Bootstrap interval of the median (fixed seed: the same data prints the same table).
    rng = random.Random(1)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(2000))
    return meds[50], meds[1949]
def label(t):
    state, _, p = t.partition("-")
    text = {"off": "off", "control": "off, a second process (control)", "up": "on, collector up", "down": "on, collector down"}[state]
    return f"{text} ({'gRPC' if p == 'grpc' else 'HTTP'})" if p else text
for mode in dict.fromkeys(r["mode"] for r in rows):
    base = None
    for t in targets.split():
        rs = [r for r in rows if r["mode"] == mode and r["target"] == t]
        rps = [float(r["rps"]) for r in rs]
        med = statistics.median(rps)
        base = base or med
        p50 = statistics.median(float(r["p50_us"]) for r in rs) / 1000
        p99 = statistics.median(float(r["p99_us"]) for r in rs) / 1000
        cpu = statistics.median(float(r["cpu_us_per_req"]) for r in rs)
        errs = sum(int(r["errors"]) for r in rs)
        per = "/".join(f"{x:.0f}" for x in rps)
        # Each rep against the same rep's off run: drift between reps cancels out.
        offs = {r["rep"]: float(r["rps"]) for r in rows if r["mode"] == mode and r["target"] == "off"}
        ratios = [float(r["rps"]) / offs[r["rep"]] for r in rs]
        lo, hi = interval(ratios)
        paired = f"{statistics.median(ratios):.3f}× [{lo:.3f}, {hi:.3f}]" if t != "off" else "1.000×"
        print(f"| {mode} | {label(t)} | {med:.0f} ({per}) | {med / base:.3f}× | {paired} | {p50:.2f} | {p99:.2f} | {cpu:.1f} | {errs} |")
dropped = ", ".join(f"{label(t)} {n}" for t, _, n in (d.partition("=") for d in drops.split()))
print(f"\nspans received by the collector: {sink}; tokenwarden_spans_dropped_total: {dropped}")
PY
