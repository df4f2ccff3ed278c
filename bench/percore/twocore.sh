#!/usr/bin/env bash
# Unpinned, two workers: server.runtime per_core vs shared, alternated three times; proxy CPU µs
# per request (/proc/PID/stat) and wrk's rps, non-streaming chat to tokenwarden-mock. Run from the
# repository inside `unshare -n` (its own loopback: ports 18500/18590/18591), e.g.
#   CONCS="1 64" unshare -n bench/percore/twocore.sh
# Needs wrk and curl; TW and MOCK name the binaries (default: target/release).
set -euo pipefail
D=${OUT:-/tmp/tw-percore}; mkdir -p $D; BIN=${TW:-target/release/tokenwarden}; MOCK=${MOCK:-target/release/tokenwarden-mock}
ip link set lo up
body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
printf 'wrk.method="POST"\nwrk.body=%s\nwrk.headers["Content-Type"]="application/json"\n' "'$body'" > $D/post.lua
$MOCK --listen 127.0.0.1:18500 --output-chunks 20 >/dev/null 2>&1 & MP=$!
reqs() { curl -s 127.0.0.1:18591/metrics | awk '/^tokenwarden_requests_total/ {s+=$NF} END {print s+0}'; }
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
for rep in 1 2 3; do for mode in per_core shared; do
  for c in ${CONCS:-64}; do
  printf 'listen: 127.0.0.1:18590\nadmin_listen: 127.0.0.1:18591\nroutes:\n  - name: mock\n    path_prefix: /\n    upstream: http://127.0.0.1:18500\nlogging:\n  access_log: false\nserver:\n  runtime: %s\n  workers: 2\n' $mode > $D/two.yaml
  $BIN --config $D/two.yaml 2>/dev/null & P=$!
  for i in $(seq 1 100); do curl -s -o /dev/null 127.0.0.1:18591/healthz && break; sleep 0.1; done
  wrk -t1 -c$c -d1s -s $D/post.lua http://127.0.0.1:18590/v1/chat/completions >/dev/null
  r0=$(reqs); c0=$(cpu $P)
  rps=$(wrk -t1 -c$c -d4s -s $D/post.lua http://127.0.0.1:18590/v1/chat/completions | awk '/Requests\/sec/ {print $2}')
  c1=$(cpu $P); r1=$(reqs)
  echo "rep=$rep mode=$mode c=$c rps=$rps cpu_us_per_req=$(( (c1-c0)*10000*1000/(r1-r0) / 1000 ))"
  kill $P; wait $P 2>/dev/null || true
  done
done; done
kill $MP
