#!/usr/bin/env bash
# Extra benchmark cases for tokenwarden, beside the peer kit's run-bench.sh (called by bench/run.sh,
# which builds the binaries and sets the knobs; can be run alone with SKIP_BUILD-style binaries):
#   idle  RSS of each proxy right after start (no request yet), with the main benchmark config.
#   long  long streams: the kit's mock with MOCK_CHUNKS=1000 (one request = 1000 SSE events),
#         direct vs nginx vs tokenwarden, wrk + the kit's post.lua in stream mode (run-bench.sh).
#   slow  SLOW_CONC (1000) concurrent slow streams through one proxy: tokenwarden-mock with
#         SLOW_CHUNKS x SLOW_DELAY_MS (100 x 100 ms, ~10 s per stream) as the upstream; RSS of the
#         proxy sampled every SLOW_SAMPLE s: idle before, peak during, after; (peak-idle)/SLOW_CONC.
# Writes JSON lines (each with "case") to $OUT. Binds 127.0.0.1 only. Proxy on CPU 1, wrk and
# mocks on CPU 0. Every process started here is stopped on exit (trap).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
KIT="${PEERBENCH_DIR:-$REPO/../shared/bench}"; KIT="$(cd "$KIT" && pwd)"
PB="${PB:-${TMPDIR:-/tmp}/peerbench}"
OUT="${OUT:?set OUT to the JSONL file to write}"
CASES="${CASES:-idle long slow}"
TW_BIN="${TW_BIN:-$REPO/target/release/tokenwarden}"
TWMOCK_BIN="${TWMOCK_BIN:-$REPO/target/release/tokenwarden-mock}"
TW_CONFIG="${TW_CONFIG:-}"
TARGETS="${TARGETS:-direct nginx tokenwarden}"
LONG_CHUNKS="${LONG_CHUNKS:-1000}"; LONG_DUR="${LONG_DUR:-10}"; LONG_REPS="${LONG_REPS:-1}"
LONG_CONCS="${LONG_CONCS:-1 16}"; LONG_TARGETS="${LONG_TARGETS:-$TARGETS}"
SLOW_CONC="${SLOW_CONC:-1000}"; SLOW_DUR="${SLOW_DUR:-15}"; SLOW_CHUNKS="${SLOW_CHUNKS:-100}"
SLOW_DELAY_MS="${SLOW_DELAY_MS:-100}"; SLOW_TARGETS="${SLOW_TARGETS:-tokenwarden nginx}"
SLOW_SAMPLE="${SLOW_SAMPLE:-0.5}"; SLOW_AFTER="${SLOW_AFTER:-3}"; IDLE_SETTLE="${IDLE_SETTLE:-1}"
KEY=sk-peerbench-7f3a9c2e5b1d4086a1e2
W="$PB/tw-bench/extra"; LOGS="${RUN_LOG_DIR:-$W}"
mkdir -p "$W" "$LOGS" "$(dirname "$OUT")"
CLK=$(getconf CLK_TCK)
log() { printf '[extra %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
has_case() { case " $CASES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# 1,000 client sockets + 1,000 upstream sockets per proxy: raise the fd limit (inherited by all).
hard=$(ulimit -Hn); [ "$hard" = unlimited ] && hard=65536; [ "$hard" -gt 65536 ] && hard=65536
ulimit -n "$hard" 2>/dev/null || true
if has_case slow && [ "$(ulimit -n)" -lt $((SLOW_CONC * 2 + 256)) ]; then
  log "warning: ulimit -n is $(ulimit -n), below what $SLOW_CONC streams need"
fi

# ---------- process bookkeeping: every group we start is killed on exit ----------
GROUPS_STARTED=()   # process-group ids (processes started with setsid)
PIDS_STARTED=()     # plain pids (sampler loops, child scripts)
descendants() { local c; for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done; }
cleanup() {  # our groups and pids, plus everything below them (a child script killed by a
  local g p all=""   # signal skips its own EXIT trap, so its setsid'ed children are found by ppid)
  trap - EXIT INT TERM
  for p in "${GROUPS_STARTED[@]}" "${PIDS_STARTED[@]}"; do all="$all $(descendants "$p")"; done
  for p in "${PIDS_STARTED[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for g in "${GROUPS_STARTED[@]}"; do kill -TERM -- -"$g" 2>/dev/null; done
  for p in $all; do
    if [ "$(ps -o pgid= -p "$p" 2>/dev/null | tr -d ' ')" = "$p" ]; then kill -TERM -- -"$p" 2>/dev/null
    else kill -TERM "$p" 2>/dev/null; fi
  done
  sleep 1
  for g in "${GROUPS_STARTED[@]}"; do kill -KILL -- -"$g" 2>/dev/null; done
  for p in "${PIDS_STARTED[@]}" $all; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stop_group() {  # $1 pgid: TERM, then KILL, and forget it
  local g=$1 i
  kill -TERM -- -"$g" 2>/dev/null
  for i in $(seq 1 20); do kill -0 -- -"$g" 2>/dev/null || break; sleep 0.25; done
  kill -KILL -- -"$g" 2>/dev/null
  wait "$g" 2>/dev/null
  local keep=(); for i in "${GROUPS_STARTED[@]}"; do [ "$i" != "$g" ] && keep+=("$i"); done
  GROUPS_STARTED=("${keep[@]}")
}

group_ticks() {  # utime+stime (clock ticks) over process group $1
  local t=0 p
  for p in $(ps -o pid= -g "$1" 2>/dev/null); do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done; echo $t
}
group_rss_kb() { ps -o rss= -g "$1" 2>/dev/null | awk '{s+=$1} END{print s+0}'; }
listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
wait_port() { local i; for i in $(seq 1 120); do listening "$1" && return 0; sleep 0.25; done; return 1; }
port_free_or_die() { if listening "$1"; then log "port 127.0.0.1:$1 is in use:"; ss -Hltnp "sport = :$1" >&2; exit 3; fi; }

nginx_conf() {  # $1 dir, $2 listen port, $3 upstream port -> path of a copy of the kit's nginx.conf
  mkdir -p "$1/nginx-tmp"
  sed -e "s|__PB__|$1|g" -e "s|127.0.0.1:18080|127.0.0.1:$2|" -e "s|server 127.0.0.1:18000|server 127.0.0.1:$3|" \
    "$KIT/nginx.conf" >"$1/nginx.conf"
  grep -q "listen 127.0.0.1:$2;" "$1/nginx.conf" && grep -q "server 127.0.0.1:$3;" "$1/nginx.conf" \
    || { log "cannot adapt $KIT/nginx.conf"; exit 2; }
  echo "$1/nginx.conf"
}
tw_conf() {  # $1 path, $2 listen port, $3 admin port, $4 upstream port
  printf 'listen: 127.0.0.1:%s\nadmin_listen: 127.0.0.1:%s\nroutes:\n  - name: mock\n    path_prefix: /\n    upstream: http://127.0.0.1:%s\nlogging:\n  access_log: false\n' \
    "$2" "$3" "$4" >"$1"
  "$TW_BIN" check-config "$1" >/dev/null || { log "tokenwarden rejects $1"; exit 2; }
}

PROXY_PG=""
start_proxy() {  # $1 target, $2 config, $3 port, $4 log -> PROXY_PG
  port_free_or_die "$3"
  case "$1" in
    nginx) setsid taskset -c 1 nginx -c "$2" -e "$(dirname "$2")/nginx-error.log" -g 'daemon off;' >"$4" 2>&1 & ;;
    tokenwarden) setsid taskset -c 1 "$TW_BIN" --config "$2" >"$4" 2>&1 & ;;
    *) log "unknown proxy $1"; exit 2 ;;
  esac
  PROXY_PG=$!; GROUPS_STARTED+=("$PROXY_PG")
  wait_port "$3" || { log "$1 did not open 127.0.0.1:$3 (log $4):"; tail -5 "$4" >&2; exit 1; }
}

jstr() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

# ---------- idle: RSS right after start ----------
if has_case idle; then
  for tgt in nginx tokenwarden; do
    case "$tgt" in
      nginx) conf=$(nginx_conf "$W/idle-nginx" 18080 18000); port=18080 ;;
      tokenwarden)
        conf="$W/tokenwarden-idle.yaml"
        if [ -n "$TW_CONFIG" ]; then cp "$TW_CONFIG" "$conf"; else tw_conf "$conf" 18090 18091 18000; fi
        port=18090 ;;
    esac
    start_proxy "$tgt" "$conf" "$port" "$LOGS/idle-$tgt.log"
    sleep "$IDLE_SETTLE"
    rss=$(group_rss_kb "$PROXY_PG"); nproc=$(ps -o pid= -g "$PROXY_PG" | wc -l)
    threads=$(ps -o nlwp= -g "$PROXY_PG" | awk '{s+=$1} END{print s+0}')
    line="{\"case\":\"idle\",\"target\":\"$tgt\",\"rss_kb\":$rss,\"processes\":$nproc,\"threads\":$threads,\"settle_s\":$IDLE_SETTLE}"
    echo "$line" >>"$OUT"; log "$line"
    stop_group "$PROXY_PG"; PROXY_PG=""
  done
fi

# ---------- long: 1000-chunk streams through the kit's run-bench.sh ----------
if has_case long; then
  log "long: MOCK_CHUNKS=$LONG_CHUNKS TARGETS='$LONG_TARGETS' CONCS='$LONG_CONCS' DUR=$LONG_DUR REPS=$LONG_REPS"
  RAW="${OUT%.jsonl}-long.raw.jsonl"; : >"$RAW"
  setsid env MOCK_CHUNKS="$LONG_CHUNKS" MODES=stream CONCS="$LONG_CONCS" DUR="$LONG_DUR" REPS="$LONG_REPS" \
    TARGETS="$LONG_TARGETS" OUT="$RAW" PB="$PB" TW_BIN="$TW_BIN" ${TW_CONFIG:+TW_CONFIG="$TW_CONFIG"} \
    "$KIT/run-bench.sh" >&2 &
  kit=$!; GROUPS_STARTED+=("$kit")
  wait "$kit"; rc=$?
  stop_group "$kit"   # the kit stops its own mock/proxy; this only catches leftovers
  [ "$rc" -eq 0 ] || log "warning: run-bench.sh (long) exited $rc"
  sed "s/^{/{\"case\":\"long\",\"chunks\":$LONG_CHUNKS,/" "$RAW" >>"$OUT"
fi

# ---------- slow: SLOW_CONC concurrent slow streams, RSS over time ----------
if has_case slow; then
  port_free_or_die 18100
  "$TWMOCK_BIN" --help 2>/dev/null | grep -q -- '--no-record' && norec=--no-record || norec=""
  setsid taskset -c 0 "$TWMOCK_BIN" --listen 127.0.0.1:18100 --output-chunks "$SLOW_CHUNKS" \
    --chunk-delay-ms "$SLOW_DELAY_MS" --threads 1 $norec >"$LOGS/slow-mock.log" 2>&1 &
  MOCK_PG=$!; GROUPS_STARTED+=("$MOCK_PG")
  for _ in $(seq 1 80); do grep -q 'tokenwarden-mock listening on' "$LOGS/slow-mock.log" && break; sleep 0.25; done
  grep -q 'tokenwarden-mock listening on 127.0.0.1:18100' "$LOGS/slow-mock.log" \
    || { log "tokenwarden-mock did not start:"; cat "$LOGS/slow-mock.log" >&2; exit 1; }
  body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}'
  for tgt in $SLOW_TARGETS; do
    case "$tgt" in
      nginx) conf=$(nginx_conf "$W/slow-nginx" 18180 18100); port=18180 ;;
      tokenwarden) conf="$W/tokenwarden-slow.yaml"; tw_conf "$conf" 18190 18191 18100; port=18190 ;;
      *) log "slow: unknown target $tgt (tokenwarden|nginx)"; continue ;;
    esac
    url="http://127.0.0.1:$port/v1/chat/completions"
    start_proxy "$tgt" "$conf" "$port" "$LOGS/slow-$tgt.log"
    sleep "$IDLE_SETTLE"
    idle=$(group_rss_kb "$PROXY_PG")
    # correctness: a short stream (2 chunks, no delay) must carry the usage through
    ok=$(curl -sN -m10 "$url" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
      -H 'x-mock-output-chunks: 2' -H 'x-mock-chunk-delay-ms: 0' -d "$body" | grep -q '"total_tokens"' && echo ok || echo FAIL)
    samples="$W/slow-$tgt-samples.txt"; : >"$samples"
    ( while :; do
        printf '%s %s %s\n' "$(date +%s.%N)" "$(group_rss_kb "$PROXY_PG")" \
          "$(ss -Htn state established "( sport = :$port )" 2>/dev/null | wc -l)"
        sleep "$SLOW_SAMPLE"
      done ) >"$samples" &
    SAMPLER=$!; PIDS_STARTED+=("$SAMPLER")
    t0=$(group_ticks "$PROXY_PG"); s0=$(date +%s.%N)
    j=$(MODE=stream API_KEY=$KEY taskset -c 0 wrk -t1 -c"$SLOW_CONC" -d"${SLOW_DUR}s" --timeout 60s --latency \
        -s "$KIT/post.lua" "$url" 2>"$LOGS/slow-$tgt-wrk.err" | tee "$LOGS/slow-$tgt-wrk.out" | sed -n 's/^JSON //p')
    t1=$(group_ticks "$PROXY_PG"); s1=$(date +%s.%N)
    sleep "$SLOW_AFTER"
    kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null; PIDS_STARTED=()
    after=$(group_rss_kb "$PROXY_PG")
    read -r peak maxconns nsamples < <(awk -v i="$idle" 'BEGIN{p=i;c=0;n=0} {n++; if($2>p)p=$2; if($3>c)c=$3} END{print p, c, n}' "$samples")
    per=$(awk -v p="$peak" -v i="$idle" -v n="$SLOW_CONC" 'BEGIN{printf "%.2f",(p-i)/n}')
    cpu_s=$(awk -v a="$t0" -v b="$t1" -v k="$CLK" 'BEGIN{printf "%.3f",(b-a)/k}')
    wall=$(awk -v s="$s0" -v e="$s1" 'BEGIN{printf "%.2f",e-s}')
    line="{\"case\":\"slow\",\"target\":\"$tgt\",\"conc\":$SLOW_CONC,\"dur\":$SLOW_DUR,\"chunks\":$SLOW_CHUNKS,\"delay_ms\":$SLOW_DELAY_MS,\"check\":\"$ok\",\"idle_rss_kb\":$idle,\"peak_rss_kb\":$peak,\"after_rss_kb\":$after,\"per_stream_kb\":$per,\"max_conns\":$maxconns,\"samples\":$nsamples,\"cpu_s\":$cpu_s,\"wall_s\":$wall,\"wrk\":${j:-null}}"
    echo "$line" >>"$OUT"; log "$line"
    stop_group "$PROXY_PG"; PROXY_PG=""
  done
  stop_group "$MOCK_PG"
fi
exit 0
