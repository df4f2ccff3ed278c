#!/usr/bin/env bash
# tokenwarden benchmark harness, built on the peer benchmark kit (shared/bench, read-only).
#
# One command: build, check tools, run the kit's side-by-side benchmark (direct / nginx /
# tokenwarden), run the extra cases (idle RSS, long streams, 1,000 slow streams; bench/extra.sh),
# then summarize everything with bench/summarize.py (markdown, with the goal checks).
#
#   bench/run.sh                                  # full run (~11 min on the 2-core box)
#   DUR=1 REPS=1 CONCS=1 LONG_DUR=1 LONG_CONCS=1 SLOW_CONC=100 SLOW_DUR=5 bench/run.sh   # smoke
#
# Everything binds to 127.0.0.1. Proxy under test pinned to CPU 1, wrk and mocks to CPU 0.
# Output: $PB/results/tw-<UTC timestamp>.{jsonl,md} (+ raw files and logs); the markdown is also
# printed on stdout. Every process started here (or by the kit / extra.sh) is stopped on exit.
#
# Env knobs (defaults in brackets):
#   PB [/tmp/peerbench]     scratch dir (kit mock's cargo target, configs, logs, results)
#   PEERBENCH_DIR [<repo>/../shared/bench]  the peer benchmark kit
#   CASES ["main idle long slow"]  which cases to run
#   SKIP_BUILD [0]          1 = use the binaries already built
#   BENCH_NETNS [0]         1 = after building, run everything in a private network namespace
#                           (unshare -n; its own 127.0.0.1) — use when other processes hold the ports
#   main:  DUR [10] REPS [2] CONCS ["1 16 64"] MODES ["nonstream stream"] TARGETS ["direct nginx tokenwarden"]
#   long:  LONG_CHUNKS [1000] LONG_DUR [10] LONG_REPS [1] LONG_CONCS ["1 16"] LONG_TARGETS [= TARGETS]
#   slow:  SLOW_CONC [1000] SLOW_DUR [15] SLOW_CHUNKS [100] SLOW_DELAY_MS [100]
#          SLOW_TARGETS ["tokenwarden nginx"] SLOW_SAMPLE [0.5] SLOW_AFTER [3]
#   idle:  IDLE_SETTLE [1] (seconds after the port opens before RSS is read)
#   everything (issue 25; not in the default CASES): the kit's toy requests against tokenwarden
#          with everything a user turns on (budgets on the memory store with a session and an
#          agent limit and a price, an agent policy, the session header; TW_OTLP=<endpoint>
#          adds OTLP/gRPC span export), MODES and CONCS as for main
#   agent (issue 25; not in the default CASES): agent-sized requests (the kit's post.lua with
#          TOOLS=20 and HISTORY_KB from AGENT_HISTORY ["0 64 256"]), non-streaming, c=AGENT_CONCS
#          ["16"]: nginx, tokenwarden bare, tokenwarden with everything on; lines tagged
#          "config" and "history_kb", summed up in a table at the end
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
KIT="${PEERBENCH_DIR:-$REPO/../shared/bench}"
[ -x "$KIT/run-bench.sh" ] || { echo "peer benchmark kit not found at $KIT (set PEERBENCH_DIR)" >&2; exit 2; }
KIT="$(cd "$KIT" && pwd)"

export PB="${PB:-${TMPDIR:-/tmp}/peerbench}"
export DUR="${DUR:-10}" REPS="${REPS:-2}" CONCS="${CONCS:-1 16 64}" MODES="${MODES:-nonstream stream}"
export TARGETS="${TARGETS:-direct nginx tokenwarden}"
export LONG_CHUNKS="${LONG_CHUNKS:-1000}" LONG_DUR="${LONG_DUR:-10}" LONG_REPS="${LONG_REPS:-1}"
export LONG_CONCS="${LONG_CONCS:-1 16}" LONG_TARGETS="${LONG_TARGETS:-$TARGETS}"
export SLOW_CONC="${SLOW_CONC:-1000}" SLOW_DUR="${SLOW_DUR:-15}" SLOW_CHUNKS="${SLOW_CHUNKS:-100}"
export SLOW_DELAY_MS="${SLOW_DELAY_MS:-100}" SLOW_TARGETS="${SLOW_TARGETS:-tokenwarden nginx}"
export SLOW_SAMPLE="${SLOW_SAMPLE:-0.5}" SLOW_AFTER="${SLOW_AFTER:-3}" IDLE_SETTLE="${IDLE_SETTLE:-1}"
CASES="${CASES:-main idle long slow}"
SKIP_BUILD="${SKIP_BUILD:-0}"

export TW_BIN="${TW_BIN:-$REPO/target/release/tokenwarden}"
export TWMOCK_BIN="${TWMOCK_BIN:-$REPO/target/release/tokenwarden-mock}"
export MOCK_BIN="${MOCK_BIN:-$PB/target/release/mock-upstream}"
export PEERBENCH_DIR="$KIT"

export BENCH_TS="${BENCH_TS:-$(date -u +%Y%m%dT%H%M%SZ)}"; TS="$BENCH_TS"
RES="$PB/results"; WORK="$PB/tw-bench"
mkdir -p "$RES" "$WORK"
BASE="$RES/tw-$TS"
OUT_JSONL="$BASE.jsonl"; OUT_MD="$BASE.md"
export RUN_LOG_DIR="${RUN_LOG_DIR:-$WORK/logs-$TS}"; mkdir -p "$RUN_LOG_DIR"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
has_case() { case " $CASES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# --- cleanup: children run in the background so a signal reaches our trap, which forwards it ---
# (a script killed by a signal while waiting on a foreground command skips its EXIT trap, so we
# stop the child's whole process tree ourselves: only processes this script started, by pid).
CHILD=""; PORTS_CHECKED=""
descendants() { local c; for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done; }
kill_tree() {
  local root=$1 pids p
  pids=$(descendants "$root")
  kill -TERM "$root" 2>/dev/null
  for p in $pids; do
    if [ "$(ps -o pgid= -p "$p" 2>/dev/null | tr -d ' ')" = "$p" ]; then kill -TERM -- -"$p" 2>/dev/null
    else kill -TERM "$p" 2>/dev/null; fi
  done
  sleep 1
  for p in $pids; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
  wait "$root" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then kill_tree "$CHILD"; fi
  # the kit's run-bench.sh and extra.sh stop their own processes; just say if a port is still held
  local busy; busy=$(ss -Hltn 2>/dev/null | awk '{print $4}' | grep -E '^127\.0\.0\.1:(18000|18080|18090|18091|18100|18180|18190|18191)$' || true)
  [ -n "$busy" ] && [ -n "$PORTS_CHECKED" ] && log "warning: still listening after the run: $(echo $busy)"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
run_child() { "$@" & CHILD=$!; local rc=0; wait "$CHILD" || rc=$?; CHILD=""; return $rc; }

# --- tools ---
missing=()
for t in nginx wrk taskset ss curl python3 cargo; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing tools: ${missing[*]}" >&2
  echo "install them with:  apt-get update && apt-get install -y nginx wrk sysstat   (taskset/ss/curl: util-linux iproute2 curl)" >&2
  exit 2
fi

# --- build ---
if [ "$SKIP_BUILD" != 1 ]; then
  log "building tokenwarden release binaries (cargo build --release --workspace --bins)"
  (cd "$REPO" && cargo build --release --workspace --bins) >"$RUN_LOG_DIR/build-tokenwarden.log" 2>&1 \
    || { tail -30 "$RUN_LOG_DIR/build-tokenwarden.log" >&2; echo "tokenwarden release build failed (log: $RUN_LOG_DIR/build-tokenwarden.log)" >&2; exit 1; }
  log "building the kit's mock-upstream (target dir $PB/target)"
  (cd "$KIT/mock-upstream" && CARGO_TARGET_DIR="$PB/target" cargo build --release) >"$RUN_LOG_DIR/build-mock.log" 2>&1 \
    || { tail -30 "$RUN_LOG_DIR/build-mock.log" >&2; echo "mock-upstream build failed (log: $RUN_LOG_DIR/build-mock.log)" >&2; exit 1; }
fi
for b in "$TW_BIN" "$MOCK_BIN"; do [ -x "$b" ] || { echo "missing binary $b (run without SKIP_BUILD=1)" >&2; exit 2; }; done
if has_case slow; then
  [ -x "$TWMOCK_BIN" ] || { echo "missing binary $TWMOCK_BIN" >&2; exit 2; }
  "$TWMOCK_BIN" --help 2>/dev/null | grep -q -- '--chunk-delay-ms' \
    || { echo "$TWMOCK_BIN does not accept --chunk-delay-ms (unfinished build?)" >&2; exit 2; }
fi

# --- optional: run the rest in a private network namespace (own loopback, so ports held by
#     other people's processes on this machine do not matter; builds stay outside, they may need
#     the package registry) ---
if [ "${BENCH_NETNS:-0}" = 1 ] && [ -z "${BENCH_IN_NETNS:-}" ]; then
  command -v unshare >/dev/null && command -v ip >/dev/null || { echo "BENCH_NETNS=1 needs unshare and ip" >&2; exit 2; }
  log "re-running inside a new network namespace (unshare -n, lo up)"
  trap - EXIT INT TERM
  exec unshare -n -- env BENCH_IN_NETNS=1 SKIP_BUILD=1 bash -c 'ip link set lo up && exec "$@"' _ "$HERE/run.sh" "$@"
fi

# --- config for the kit's tokenwarden target (access log off, like the kit's nginx) ---
export TW_CONFIG="$WORK/tokenwarden-bench.yaml"
cat >"$TW_CONFIG" <<'EOF'
# tokenwarden under the peer benchmark: one catch-all route to the kit's mock, access log off
# (the kit's nginx runs with access_log off too).
listen: 127.0.0.1:18090
admin_listen: 127.0.0.1:18091
routes:
  - name: mock
    path_prefix: /
    upstream: http://127.0.0.1:18000
logging:
  access_log: false
EOF
"$TW_BIN" check-config "$TW_CONFIG" >/dev/null || { echo "tokenwarden rejects $TW_CONFIG" >&2; exit 2; }

# --- ports must be free (we never stop processes we did not start) ---
ports="18000 18080 18090 18091"; has_case slow && ports="$ports 18100 18180 18190 18191"
for p in $ports; do
  if ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
    echo "port 127.0.0.1:$p is already in use; stop whatever holds it first:" >&2
    ss -Hltnp "sport = :$p" >&2 || true
    echo "(or run with BENCH_NETNS=1: the benchmark then runs in its own network namespace)" >&2
    exit 3
  fi
done
PORTS_CHECKED=1

# --- meta ---
git_rev="$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git_dirty="$(cd "$REPO" && { git status --porcelain 2>/dev/null | grep -q . && echo true || echo false; })"
TS="$TS" GIT_REV="$git_rev" GIT_DIRTY="$git_dirty" CASES="$CASES" python3 - "$OUT_JSONL" <<'PY'
import json, os, platform, subprocess, sys
E = os.environ
def sh(c):
    r = subprocess.run(c, shell=True, capture_output=True, text=True)
    return (r.stdout.strip() or r.stderr.strip()).splitlines()[0] if (r.stdout.strip() or r.stderr.strip()) else ""
ints = lambda k: [int(x) for x in E[k].split()]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
m = dict(case="meta", ts=E["TS"], git=E["GIT_REV"], git_dirty=E["GIT_DIRTY"] == "true",
         tokenwarden=sh(f"'{E['TW_BIN']}' --version"), nginx=sh("nginx -v"), wrk=sh("wrk --version").split(" [")[0],
         cpu=cpu, ncpu=os.cpu_count(), kernel=platform.release(), cases=E["CASES"].split(),
         targets=E["TARGETS"].split(), dur=int(E["DUR"]), reps=int(E["REPS"]), concs=ints("CONCS"),
         long_chunks=int(E["LONG_CHUNKS"]), long_dur=int(E["LONG_DUR"]), long_reps=int(E["LONG_REPS"]),
         long_concs=ints("LONG_CONCS"), slow_conc=int(E["SLOW_CONC"]), slow_dur=int(E["SLOW_DUR"]),
         slow_chunks=int(E["SLOW_CHUNKS"]), slow_delay_ms=int(E["SLOW_DELAY_MS"]))
open(sys.argv[1], "w").write(json.dumps(m) + "\n")
PY

# --- main case: the kit's run-bench.sh with the tokenwarden target ---
if has_case main; then
  log "main: TARGETS='$TARGETS' MODES='$MODES' CONCS='$CONCS' DUR=$DUR REPS=$REPS"
  RAW="$BASE-main.raw.jsonl"
  run_child env OUT="$RAW" "$KIT/run-bench.sh" >&2
  [ -s "$RAW" ] || { echo "main case produced no results ($RAW)" >&2; exit 1; }
  sed 's/^{/{"case":"main",/' "$RAW" >>"$OUT_JSONL"
fi

# --- everything on (issue 25): the configuration of the issue's measurements ---
ON_CONFIG="$WORK/tokenwarden-everything.yaml"
cat >"$ON_CONFIG" <<ONCFG
# tokenwarden with everything a user turns on: budgets (memory store, a session and an agent
# limit, a price), an agent policy, the session header (sent by the kit via TW_EXTRA).
listen: 127.0.0.1:18090
admin_listen: 127.0.0.1:18091
logging: { access_log: false }
routes:
  - { name: mock, path_prefix: /, upstream: 'http://127.0.0.1:18000', agent: bench }
identity: { session_headers: [x-session-id] }
ONCFG
cat "$HERE/everything-features.yaml" >>"$ON_CONFIG"
[ -n "${TW_OTLP:-}" ] && printf "telemetry: { otlp: { endpoint: '%s', protocol: grpc } }\n" "$TW_OTLP" >>"$ON_CONFIG"
"$TW_BIN" check-config "$ON_CONFIG" >/dev/null || { echo "tokenwarden rejects $ON_CONFIG" >&2; exit 2; }
ON_EXTRA="x-session-id: bench-session"
if has_case everything; then
  log "everything: MODES='$MODES' CONCS='$CONCS' DUR=$DUR REPS=$REPS"
  RAWE="$BASE-everything.raw.jsonl"
  run_child env OUT="$RAWE" TARGETS=tokenwarden TW_CONFIG="$ON_CONFIG" TW_EXTRA="$ON_EXTRA" "$KIT/run-bench.sh" >&2
  sed 's/^{/{"case":"everything",/' "$RAWE" >>"$OUT_JSONL"
fi

# --- agent-sized requests (issue 25): 20 tools and a growing history, nginx beside tokenwarden ---
if has_case agent; then
  for kb in ${AGENT_HISTORY:-0 64 256}; do
    log "agent: TOOLS=20 HISTORY_KB=$kb c=${AGENT_CONCS:-16}"
    for cfg in bare everything; do
      RAWA="$BASE-agent-$cfg-$kb.raw.jsonl"
      if [ "$cfg" = bare ]; then
        run_child env OUT="$RAWA" TOOLS=20 HISTORY_KB="$kb" MODES=nonstream CONCS="${AGENT_CONCS:-16}" \
          TARGETS="nginx tokenwarden" "$KIT/run-bench.sh" >&2
      else
        run_child env OUT="$RAWA" TOOLS=20 HISTORY_KB="$kb" MODES=nonstream CONCS="${AGENT_CONCS:-16}" \
          TARGETS=tokenwarden TW_CONFIG="$ON_CONFIG" TW_EXTRA="$ON_EXTRA" "$KIT/run-bench.sh" >&2
      fi
      sed "s/^{/{\"case\":\"agent\",\"config\":\"$cfg\",\"history_kb\":$kb,/" "$RAWA" >>"$OUT_JSONL"
    done
  done
fi

# --- extra cases: idle RSS, long stream, 1,000 slow streams ---
extra_cases=""
for c in idle long slow; do has_case "$c" && extra_cases="$extra_cases $c"; done
if [ -n "$extra_cases" ]; then
  log "extra:$extra_cases"
  RAWX="$BASE-extra.jsonl"
  run_child env OUT="$RAWX" CASES="$extra_cases" "$HERE/extra.sh" >&2
  [ -f "$RAWX" ] && cat "$RAWX" >>"$OUT_JSONL"
fi

# --- summary ---
python3 "$HERE/summarize.py" "$OUT_JSONL" >"$OUT_MD"
# Agent-sized and everything-on rows: CPU µs per request (proxy CPU / requests), medians of reps.
python3 - "$OUT_JSONL" >>"$OUT_MD" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
sel = [r for r in rows if r.get("case") in ("agent", "everything") and r.get("wrk")]
if sel:
    cells = {}
    for r in sel:
        w = r["wrk"]; rps = w["requests"] / (w["duration_us"] / 1e6)
        name = r["target"] if r["target"] == "nginx" else f"tokenwarden {r.get('config', 'everything')}"
        key = (r["case"], r.get("history_kb", "-"), r["mode"], r["conc"], name)
        cells.setdefault(key, []).append((r["cpu_cores"] * 1e6 / rps if rps else 0, rps))
    print("\n## Everything on / agent-sized requests (CPU µs per request, rps; medians)\n")
    print("| case | history KiB | mode | c | target | CPU µs/req | rps |")
    print("|---|---|---|---|---|---|---|")
    for k in sorted(cells, key=str):
        v = cells[k]
        print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {k[4]} | {statistics.median(x[0] for x in v):.0f} | {statistics.median(x[1] for x in v):.0f} |")
PY
log "results: $OUT_JSONL"
log "summary: $OUT_MD"
cat "$OUT_MD"
