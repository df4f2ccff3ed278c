#!/usr/bin/env bash
# Run every test of tokenwarden. The Python SDK end-to-end tests need the official `openai` and
# `anthropic` packages (and `google-genai`): a virtualenv with them is created in .venv-sdk on first use (PyPI).
# Set TOKENWARDEN_TEST_PYTHON to use another interpreter that has them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${TOKENWARDEN_TEST_PYTHON:-}" ]; then
  if ! .venv-sdk/bin/python -c 'import openai, anthropic; from google import genai' 2>/dev/null; then
    echo "scripts/test.sh: creating .venv-sdk with the openai, anthropic and google-genai SDKs" >&2
    python3 -m venv .venv-sdk
    .venv-sdk/bin/pip install --quiet --disable-pip-version-check openai anthropic google-genai
  fi
fi

# --lib --bins --tests: every unit and integration test (the crate has no doctests).
cargo test --locked --lib --bins --tests "$@"
