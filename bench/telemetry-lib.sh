# Shared by bench/telemetry.sh and bench/telemetry-profile.sh (sourced, not run): binaries, free
# ports, the mock and the OTLP sink on CPU 0, tokenwarden processes on CPU 1, cleanup on exit.
# Expects REPO and B (the base port); sets WORK, PIDS, SINK_PORT.

POST_LUA="${POST_LUA:-$REPO/../shared/bench/post.lua}"
TW_BIN="${TW_BIN:-$REPO/target/release/tokenwarden}"
TWMOCK_BIN="${TWMOCK_BIN:-$REPO/target/release/tokenwarden-mock}"
SINK_BIN="${SINK_BIN:-$REPO/target/release/examples/otlp-sink}"
SINK_PORT=$((B - 4000))

# The tools named, post.lua, and the release binaries (built unless SKIP_BUILD=1).
bench_ready() {
  local tool b
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 2; }
  done
  [ -f "$POST_LUA" ] || { echo "post.lua not found at $POST_LUA (set POST_LUA)" >&2; exit 2; }
  if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$REPO" && cargo build --release --workspace --bins --example otlp-sink >&2)
  fi
  for b in "$TW_BIN" "$TWMOCK_BIN" "$SINK_BIN"; do [ -x "$b" ] || { echo "missing $b" >&2; exit 2; }; done
}

# Exit unless every port given is free on 127.0.0.1.
ports_free() {
  local port
  for port in "$@"; do
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
      echo "port $port is in use: pick another BASE" >&2; exit 2
    fi
  done
}

# Wait (up to 8 s each) until every port given accepts connections.
ports_listening() {
  local port
  for port in "$@"; do
    for _ in $(seq 1 80); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  done
}

# A scratch directory, cleanup of every process started here on exit, and the mock (port B)
# and the sink (SINK_PORT) on CPU 0.
start_mock_and_sink() {
  WORK="$(mktemp -d)"
  PIDS=()
  trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT INT TERM
  taskset -c 0 "$TWMOCK_BIN" --listen 127.0.0.1:$B --no-record >"$WORK/mock.log" 2>&1 & PIDS+=($!)
  taskset -c 0 "$SINK_BIN" 127.0.0.1:$SINK_PORT >"$WORK/sink.log" 2>&1 & PIDS+=($!)
}

# Start tokenwarden NAME on CPU 1 (listen PORT, admin ADMIN, extra config line OTLP, may be
# empty) in front of the mock; its pid in PROXY_PID.
start_proxy() {
  local name=$1 port=$2 admin=$3 otlp=$4
  cat >"$WORK/$name.yaml" <<YAML
listen: 127.0.0.1:$port
admin_listen: 127.0.0.1:$admin
logging:
  access_log: false
routes:
  - name: mock
    path_prefix: /
    upstream: http://127.0.0.1:$B
$otlp
YAML
  taskset -c 1 "$TW_BIN" --config "$WORK/$name.yaml" >"$WORK/$name.log" 2>&1 & PIDS+=($!)
  PROXY_PID=$!
}

# Exit, with its log, if tokenwarden NAME (pid PID) has stopped.
proxy_alive() {
  kill -0 "$2" 2>/dev/null || { echo "tokenwarden ($1) exited:" >&2; cat "$WORK/$1.log" >&2; exit 1; }
}
