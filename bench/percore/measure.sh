#!/usr/bin/env bash
# measure.sh BIN LABEL EXTRA_YAML — syscalls per request (strace -c -f) and instructions per
# request (callgrind, instrumentation on only during the measured requests), non-streaming chat
# to tokenwarden-mock, proxy pinned to CPU 1. Run from the repository inside `unshare -n` (its
# own loopback: ports 18500/18590/18591), e.g.
#   unshare -n bench/percore/measure.sh target/release/tokenwarden per-core $'server:\n  workers: 1\n'
# Needs strace, valgrind (callgrind_control), wrk and curl; MOCK names tokenwarden-mock.
set -euo pipefail
BIN=$1; LABEL=$2; EXTRA=${3:-}
D=${OUT:-/tmp/tw-percore}; mkdir -p $D; MOCK=${MOCK:-target/release/tokenwarden-mock}
ip link set lo up 2>/dev/null || true
cfg=$D/$LABEL.yaml
printf 'listen: 127.0.0.1:18590\nadmin_listen: 127.0.0.1:18591\nroutes:\n  - name: mock\n    path_prefix: /\n    upstream: http://127.0.0.1:18500\nlogging:\n  access_log: false\n%s' "$EXTRA" > $cfg
taskset -c 0 $MOCK --listen 127.0.0.1:18500 --output-chunks 20 >/dev/null 2>&1 & MP=$!
body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
printf 'wrk.method="POST"\nwrk.body=%s\nwrk.headers["Content-Type"]="application/json"\n' "'$body'" > $D/post.lua
reqs() { curl -s 127.0.0.1:18591/metrics | awk '/^tokenwarden_requests_total/ {s+=$NF} END {print s+0}'; }
wait_up() { for i in $(seq 1 200); do curl -s -o /dev/null 127.0.0.1:18591/healthz && return 0; sleep 0.1; done; return 1; }
# strace
taskset -c 1 $BIN --config $cfg 2>/dev/null & P=$!
wait_up; for c in 1 16; do
  taskset -c 0 wrk -t1 -c$c -d1s -s $D/post.lua http://127.0.0.1:18590/v1/chat/completions >/dev/null
  r0=$(reqs)
  strace -c -f -p $P -o $D/$LABEL-strace-c$c.txt & SP=$!; sleep 0.5
  taskset -c 0 wrk -t1 -c$c -d3s -s $D/post.lua http://127.0.0.1:18590/v1/chat/completions >/dev/null
  sleep 0.3; kill -INT $SP; wait $SP || true
  r1=$(reqs); n=$((r1-r0))
  echo "$LABEL strace c=$c requests=$n"
  awk -v n=$n -v l=$LABEL -v c=$c '/^ *[0-9]/ && $NF!="total" {calls=$4; name=$NF; if ($5 ~ /^[0-9]+$/) {name=$NF}; printf "%s c=%s %-14s %8.3f /req\n", l, c, name, calls/n} /total/ {printf "%s c=%s TOTAL %8.3f /req\n", l, c, $4/n}' $D/$LABEL-strace-c$c.txt | sort -k4 -nr | head -12
done
kill $P; wait $P 2>/dev/null || true
# callgrind
rm -f $D/$LABEL.cg.*
taskset -c 1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$D/$LABEL.cg.%p $BIN --config $cfg 2>$D/$LABEL-vg.log & P=$!
for i in $(seq 1 600); do curl -s -o /dev/null 127.0.0.1:18591/healthz && break; sleep 0.2; done
taskset -c 0 wrk -t1 -c4 -d3s -s $D/post.lua http://127.0.0.1:18590/v1/chat/completions >/dev/null
r0=$(reqs); callgrind_control -i on $P >/dev/null
taskset -c 0 wrk -t1 -c4 -d8s -s $D/post.lua http://127.0.0.1:18590/v1/chat/completions >/dev/null
callgrind_control -i off $P >/dev/null; r1=$(reqs); n=$((r1-r0))
kill $P; wait $P 2>/dev/null || true
tot=$(grep -h '^summary:\|^totals:' $D/$LABEL.cg.* | awk '{s+=$2} END {print s}')
echo "$LABEL callgrind requests=$n instructions=$tot per_request=$((tot/n))"
kill $MP; wait $MP 2>/dev/null || true
