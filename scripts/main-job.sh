#!/usr/bin/env bash
# Quick-start command 1: install what is missing, build, and run the main job
# on the embedded default.
#
# Until the local cluster lands, the main job is the offline part of the
# pipeline: it validates the example resources, converts the Kubernetes
# NetworkPolicy to its v3 form, and evaluates the example policies'
# selectors against the pods of the frontend-to-api scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
ensure_deps

EXAMPLES=${MANUL_SHARED_DIR:-../shared}/examples
cargo build --release --locked -p manul-ctl
MANULCTL=target/release/manulctl

echo
echo "== manulctl validate -f $EXAMPLES"
"$MANULCTL" validate -f "$EXAMPLES"

echo
echo "== manulctl validate rejects the bad examples"
for f in "$EXAMPLES"/bad/*.yaml; do
    if "$MANULCTL" validate -f "$f" 2>&1; then
        echo "unexpected: $f validated" >&2
        exit 1
    fi
done

echo
echo "== manulctl convert -f $EXAMPLES/k8s-networkpolicy.yaml"
"$MANULCTL" convert -f "$EXAMPLES/k8s-networkpolicy.yaml"

echo
echo "== which pods the frontend-to-api rules select (manulctl selector eval)"
pods=(
    'frontend|{"app": "frontend"}'
    'api|{"app": "api"}'
    'other|{"app": "other"}'
)
selectors=(
    'policy selector|app == "api"'
    'ingress source|app == "frontend"'
)
printf '%-16s' "selector"
for p in "${pods[@]}"; do printf '%-10s' "${p%%|*}"; done
echo
for s in "${selectors[@]}"; do
    printf '%-16s' "${s%%|*}"
    sel=${s#*|}
    for p in "${pods[@]}"; do
        labels=${p#*|}
        sel_json=${sel//\"/\\\"}
        answer=$(printf '{"selector": "%s", "labels": %s}\n' "$sel_json" "$labels" | "$MANULCTL" selector eval)
        case $answer in
            *true*) printf '%-10s' "yes" ;;
            *false*) printf '%-10s' "-" ;;
            *) echo "unexpected answer: $answer" >&2; exit 1 ;;
        esac
    done
    echo
done
echo
echo "So: api is selected by the policy, frontend may reach it on TCP 8080, other may not."
