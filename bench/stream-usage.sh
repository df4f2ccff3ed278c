#!/usr/bin/env bash
# Streamed chat requests as the OpenAI SDKs send them by default — `"stream":true` without
# `stream_options.include_usage`, so tokenwarden asks the upstream for usage and hides it again —
# beside nginx, CPU per request. The kit's `post.lua` always asks for usage, so `bench/run.sh`'s
# streams never take this path; this script builds the same requests (the kit's `post.lua`, its
# stream fragment cut to `"stream":true`) and runs them against nginx (the kit's `nginx.conf`)
# and one or two tokenwarden builds with the everything-on config, in turn per repetition.
#
# Proxy pinned to CPU 1, `tokenwarden-mock` and wrk on CPU 0; "CPU µs/req" is the proxy's
# user + system time (/proc) over 5 s of a 12 s wrk run, divided by the requests served then.
# Needs nginx, wrk, taskset, python3; run inside `unshare -n` for a private loopback (it uses
# ports 18500, 18590, 18591).
#
# Env: TW_BIN [target/release/tokenwarden], HEAD_BIN (a second build, e.g. the previous head),
# TWMOCK_BIN [target/release/tokenwarden-mock], HISTORY ["0 64 256"] (KiB of earlier turns),
# TOOLS [20], C [16] (wrk connections), REPS [2], OTLP [0] (1: spans exported to a closed port,
# as bench/callgrind-toy.sh does).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"; REPO="$(dirname "$HERE")"
KIT="${PEERBENCH_DIR:-$REPO/../shared/bench}"
TW_BIN="${TW_BIN:-$REPO/target/release/tokenwarden}"
TWMOCK_BIN="${TWMOCK_BIN:-$REPO/target/release/tokenwarden-mock}"
HISTORY="${HISTORY:-0 64 256}"; REPS="${REPS:-2}"
export TOOLS="${TOOLS:-20}" MODE=stream EXTRA_HEADERS="x-session-id: bench-session"
for t in nginx wrk taskset python3; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install -y nginx wrk util-linux python3)" >&2; exit 2; }
done
for b in "$TW_BIN" "$TWMOCK_BIN" ${HEAD_BIN:+"$HEAD_BIN"}; do
  [ -x "$b" ] || { echo "missing $b (cargo build --release --workspace --bins)" >&2; exit 2; }
done
ip link set lo up 2>/dev/null || true
WORK="$(mktemp -d)"; PIDS=()
stop() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; PIDS=(); }
trap 'stop; rm -rf "$WORK"' EXIT

sed "s/^  streamfrag = .*include_usage.*/  streamfrag = '\"stream\":true'/" "$KIT/post.lua" >"$WORK/post.lua"
grep -q "streamfrag = '\"stream\":true'$" "$WORK/post.lua" || { echo "the kit's post.lua changed shape" >&2; exit 2; }
mkdir -p "$WORK/nginx-tmp"
sed -e "s#__PB__#$WORK#g" -e 's/18000/18500/; s/18080/18590/' "$KIT/nginx.conf" >"$WORK/nginx.conf"
{
  cat <<CFG
listen: 127.0.0.1:18590
admin_listen: 127.0.0.1:18591
logging: { access_log: false }
routes:
  - { name: mock, path_prefix: /, upstream: 'http://127.0.0.1:18500', agent: bench }
identity: { session_headers: [x-session-id] }
CFG
  cat "$HERE/everything-features.yaml"
  [ "${OTLP:-0}" = 1 ] && echo "telemetry: { otlp: { endpoint: 'http://127.0.0.1:18599', protocol: grpc } }"
} >"$WORK/tw.yaml"
for b in "$TW_BIN" ${HEAD_BIN:+"$HEAD_BIN"}; do
  "$b" check-config "$WORK/tw.yaml" >/dev/null || { echo "$b rejects $WORK/tw.yaml" >&2; exit 2; }
done

# $1: name, $2: nginx | a tokenwarden binary, $3: KiB of history. Prints one table row.
measure() {
  taskset -c 0 "$TWMOCK_BIN" --listen 127.0.0.1:18500 >"$WORK/mock.log" 2>&1 & PIDS+=($!)
  if [ "$2" = nginx ]; then
    taskset -c 1 nginx -c "$WORK/nginx.conf" -g 'daemon off; master_process off;' >"$WORK/proxy.log" 2>&1 &
  else
    taskset -c 1 "$2" --config "$WORK/tw.yaml" >"$WORK/proxy.log" 2>&1 &
  fi
  local p=$!; PIDS+=("$p")
  sleep 3
  HISTORY_KB="$3" taskset -c 0 wrk -t1 -c"${C:-16}" -d12s -s "$WORK/post.lua" \
    http://127.0.0.1:18590/v1/chat/completions >"$WORK/wrk.txt" &
  local w=$!
  sleep 4
  local a b
  a=$(awk '{print $14 + $15}' "/proc/$p/stat"); sleep 5; b=$(awk '{print $14 + $15}' "/proc/$p/stat")
  wait "$w"
  python3 - "$1" "$3" "$a" "$b" "$WORK/wrk.txt" <<'PY'
import re, sys
name, kb, a, b, wrk = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), open(sys.argv[5]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))
bad = "Non-2xx" in wrk or "Socket errors" in wrk
print(f"| {kb} | {name} | {rps:,.0f} | {1e6 * (b - a) / 100 / (rps * 5):.1f} | {'errors' if bad else 'ok'} |")
PY
  stop
}

echo "| history KiB | target | rps | CPU µs/req | responses |"
echo "|---|---|---|---|---|"
for kb in $HISTORY; do
  for _ in $(seq "$REPS"); do
    measure nginx nginx "$kb"
    [ -n "${HEAD_BIN:-}" ] && measure "head" "$HEAD_BIN" "$kb"
    measure "tokenwarden" "$TW_BIN" "$kb"
  done
done
