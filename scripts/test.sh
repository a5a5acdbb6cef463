#!/usr/bin/env bash
# Quick-start command 2: install what is missing, build, and run every check
# and test (the Kubernetes manifests, formatting, clippy with warnings as
# errors, the whole suite, the nftables flow tests on a GLUE_CT kernel).
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
# The nftables flow tests again, on a kernel built with
# CONFIG_NETFILTER_NETLINK_GLUE_CT (Debian's, in a VM; the path this
# machine's kernel may lack). The test binaries are built by now.
echo "== nftables flow tests on a GLUE_CT kernel (scripts/kernel-vm.sh)"
if [ "$(id -u)" = 0 ]; then
    MANUL_VM_BENCH_RUNS=0 MANUL_VM_SCOPE=--workspace bash scripts/kernel-vm.sh
elif [ "${CI:-}" = true ]; then
    echo "scripts/kernel-vm.sh needs root" >&2
    exit 1
else
    echo "skipped: needs root"
fi
