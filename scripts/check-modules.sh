#!/usr/bin/env bash
# A second opinion on the module graph from crates.io's cargo-modules (rust-analyzer based):
# every item collapsed into the module that holds it, then the module-level circles listed.
# tests/module_graph.rs is the check CI runs; this one needs `cargo install cargo-modules`
# (0.27 builds with rustc 1.95; its own `--acyclic` flag also counts a type and its methods as a
# circle, hence the collapse).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo modules --version >/dev/null 2>&1; then
    echo "cargo-modules is not installed: cargo install cargo-modules --version 0.27.0 --locked" >&2
    exit 2
fi
dot=$(mktemp)
trap 'rm -f "$dot"' EXIT
cargo modules dependencies --package tokenwarden --lib --no-externs --no-sysroot >"$dot"
python3 scripts/module-cycles.py "$dot"
