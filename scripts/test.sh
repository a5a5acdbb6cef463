#!/usr/bin/env bash
# Quick-start command 2: install what is missing, build, and run every check
# and test (the Kubernetes manifests, formatting, clippy with warnings as
# errors, the whole suite).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
ensure_deps
ensure_manifest_tools
# A one-off build gains nothing from incremental state, which would double the
# size of target/ on a runner's disk.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi

echo "== manifests: kubectl kustomize, Kubernetes 1.33 schemas, flags and metrics"
"$MANUL_PYTHON" scripts/check-manifests.py
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
