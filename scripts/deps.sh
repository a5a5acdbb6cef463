# Shared by the quick-start scripts: checks for and installs what Manul's
# build and tests need on a Debian machine with Rust installed.
# shellcheck shell=bash

# Debian packages the build and the tests use. Installed only when missing.
MANUL_APT_PACKAGES=(iproute2 iptables ipset nftables mount e2fsprogs iputils-ping clang llvm libbpf-dev libclang-dev bpftool iperf3 procps python3 python3-venv prometheus chromium chromium-driver)

# chromium and chromium-driver: local-cluster/tests/flows_ui.rs drives the
# flow aggregator's web UI in headless Chromium over WebDriver.

# Installed without their recommended packages: Debian's prometheus
# recommends the node exporter and its collectors, which the tests do not
# use (local-cluster/tests/dashboards.rs runs its own Prometheus, in a
# network namespace). On a host with systemd the package also starts its
# own prometheus service; the tests do not touch it.
MANUL_APT_WITHOUT_RECOMMENDS=(prometheus)

# The manifest check (scripts/check-manifests.py) validates against the
# Kubernetes schemas with this PyPI package.
MANUL_KUBERNETES_VALIDATE="kubernetes-validate==1.37.0"

ensure_deps() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo is missing: install Rust (rustup) first" >&2
        exit 1
    fi
    ensure_apt_packages "${MANUL_APT_PACKAGES[@]}"
}

# Installs the named Debian packages that are missing.
ensure_apt_packages() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        echo "installing: ${missing[*]}"
        apt-get update -qq
        local plain=() bare=()
        for pkg in "${missing[@]}"; do
            if [[ " ${MANUL_APT_WITHOUT_RECOMMENDS[*]} " == *" $pkg "* ]]; then
                bare+=("$pkg")
            else
                plain+=("$pkg")
            fi
        done
        if ((${#plain[@]})); then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${plain[@]}"
        fi
        if ((${#bare[@]})); then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${bare[@]}"
        fi
    fi
}

# kubectl (for `kubectl kustomize`) and a Python with kubernetes-validate
# and PyYAML: the one on PATH when it has them, else a virtual environment
# under target/ that pip fills once. Sets MANUL_PYTHON. Only the test
# command needs these.
ensure_manifest_tools() {
    if ! command -v kubectl >/dev/null 2>&1; then
        echo "kubectl is missing: install kubectl 1.27 or later (its built-in kustomize renders deploy/kubernetes)" >&2
        exit 1
    fi
    MANUL_PYTHON=python3
    if ! python3 -c "import kubernetes_validate, yaml" 2>/dev/null; then
        local venv=target/manifest-check-venv
        if ! "$venv/bin/python" -c "import kubernetes_validate, yaml" 2>/dev/null; then
            echo "installing $MANUL_KUBERNETES_VALIDATE into $venv"
            python3 -m venv "$venv"
            "$venv/bin/pip" install --quiet "$MANUL_KUBERNETES_VALIDATE" PyYAML
        fi
        MANUL_PYTHON="$venv/bin/python"
    fi
    export MANUL_PYTHON
}
