#!/usr/bin/env bash
# Quick-start command 1: install what is missing, build, and run the main job
# on the embedded default: a 2-node local cluster in network namespaces
# (single-node Typha, one Felix per node on the eBPF dataplane), the pods and
# the policy of the frontend-to-api example, the reachability table for port
# 8080, a short churn with the time to first ping, and cleanup.
#
# Flags go to `scale-test main-job`: --dataplane bpf|iptables, --keep (leave
# the cluster running until Ctrl-C, to explore it with manulctl),
# --churn-pods N. Needs root (network namespaces, BPF, nftables).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
ensure_deps

EXAMPLES=examples
cargo build --release --locked --bins
BIN=target/release

echo "== manulctl validate -f $EXAMPLES (and every file in bad/ is rejected)"
"$BIN/manulctl" validate -f "$EXAMPLES" | tail -n 3
for f in "$EXAMPLES"/bad/*.yaml; do
    if "$BIN/manulctl" validate -f "$f" >/dev/null 2>&1; then
        echo "unexpected: $f validated" >&2
        exit 1
    fi
    echo "rejected as expected: $f"
done
echo

if [[ $(id -u) -ne 0 ]]; then
    echo "the main job builds network namespaces and loads BPF programs: run it as root" >&2
    exit 1
fi
exec "$BIN/scale-test" main-job --policy "$EXAMPLES/frontend-to-api.yaml" "$@"
