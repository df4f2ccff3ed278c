#!/usr/bin/env bash
# Where span export's CPU goes: `perf` on one saturated tokenwarden (export on, collector up) at
# c=64, each sample's stack classed as span work on the request path, the export task, or the
# rest of the proxy. Shares of the proxy's own CPU samples do not depend on how fast the machine
# happened to be during the run, so they compare builds far more finely than throughput does
# (bench/telemetry.sh), though they miss indirect costs such as cache lines other code loses.
#
#   bench/telemetry-profile.sh                  # DUR=10 (load) PERF_SECS=6 FREQ=2000 MODE=nonstream
#   PROTOCOL=http MODE=stream bench/telemetry-profile.sh
#
# Proxy on CPU 1; wrk, the mock and the sink on CPU 0; 127.0.0.1 ports BASE..BASE+2 and BASE-4000
# (BASE defaults to 18600). Needs wrk, perf, and the kit's post.lua (../shared/bench, or POST_LUA).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
B="${BASE:-18600}"
DUR="${DUR:-10}" PERF_SECS="${PERF_SECS:-6}" FREQ="${FREQ:-2000}" MODE="${MODE:-nonstream}"
PROTOCOL="${PROTOCOL:-grpc}"
case "$PROTOCOL" in grpc|http) ;; *) echo "PROTOCOL must be grpc or http" >&2; exit 2;; esac
[ "$PERF_SECS" -lt "$DUR" ] || { echo "PERF_SECS must be below DUR" >&2; exit 2; }
. "$HERE/telemetry-lib.sh"
bench_ready wrk perf
ports_free $B $((B + 1)) $((B + 2)) $SINK_PORT
start_mock_and_sink
start_proxy up $((B + 1)) $((B + 2)) \
  "telemetry: {otlp: {endpoint: 'http://127.0.0.1:$SINK_PORT', protocol: $PROTOCOL}}"
TW=$PROXY_PID
ports_listening $B $((B + 1)) $SINK_PORT
proxy_alive up "$TW"

MODE=$MODE taskset -c 0 wrk -t1 -c64 -d"${DUR}s" -s "$POST_LUA" \
  "http://127.0.0.1:$((B + 1))/v1/chat/completions" >"$WORK/wrk.txt" &
WRK=$!
sleep $(( (DUR - PERF_SECS) / 2 ))
perf record -q --call-graph dwarf,16384 -F "$FREQ" -o "$WORK/perf.data" -p "$TW" -- sleep "$PERF_SECS" \
  >/dev/null 2>"$WORK/perf.err" || { cat "$WORK/perf.err" >&2; exit 1; }
wait "$WRK"
perf script -i "$WORK/perf.data" 2>/dev/null >"$WORK/perf.txt"
RPS=$(grep '^JSON ' "$WORK/wrk.txt" | cut -c6- | python3 -c 'import json,sys; print(json.load(sys.stdin)["rps"])')

python3 - "$WORK/perf.txt" "$RPS" "$MODE" "$PROTOCOL" <<'PY'
import collections, re, sys
path, rps, mode, protocol = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
# The export task is recognised by its own frames, and by hyper's HTTP/2 client (the proxy
# speaks HTTP/1.1 upstream) for gRPC. Over HTTP the export's connection task shares hyper's
# HTTP/1.1 client code with the proxy's upstream calls, so its writes land in "rest".
EXPORT = re.compile(r"otlp::run|otlp::Exporter|otlp::transport|h2::")
SPAN = re.compile(r"CallSpan|SpanSink|SpanQueue|trace_context|telemetry::spans::")
KERNEL = "[kernel.kallsyms]"
classes = collections.Counter()
leaves = {"span": collections.Counter(), "export": collections.Counter()}
total = 0
for sample in open(path).read().split("\n\n"):
    frames = [l.strip() for l in sample.strip().split("\n")[1:] if l.strip()]
    if not frames:
        continue
    total += 1
    stack = " | ".join(frames)
    key = "export" if EXPORT.search(stack) else "span" if SPAN.search(stack) else "rest"
    classes[key] += 1
    if key != "rest":
        leaf = re.sub(r"^[0-9a-f]+ ", "", frames[0]).split("+0x")[0].split(" (")[0]
        leaves[key]["kernel" if KERNEL in frames[0] else leaf[:80]] += 1
if not total:
    sys.exit("perf recorded no samples")
us = 1e6 / rps  # the proxy saturates its core: one request is this much of its CPU
print(f"tokenwarden with OTLP/{'gRPC' if protocol == 'grpc' else 'HTTP'} export to a live collector, "
      f"{mode}, c=64: {rps:.0f} rps, {total} samples\n")
print("| where | share of the proxy's CPU | µs per request |")
print("|---|---|---|")
names = {"span": "span work on the request path", "export": "export task", "rest": "everything else"}
for key in ("span", "export", "rest"):
    share = classes[key] / total
    print(f"| {names[key]} | {100 * share:.2f} % | {share * us:.2f} |")
for key in ("span", "export"):
    print(f"\ntop of the {names[key]}:")
    for leaf, n in leaves[key].most_common(8):
        print(f"  {100 * n / total:5.2f} %  {leaf}")
PY
