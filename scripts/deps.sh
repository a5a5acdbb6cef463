# Shared by the quick-start scripts: checks for and installs what Manul's
# build and tests need on a Debian machine with Rust installed.
# shellcheck shell=bash

# Debian packages the build and the tests use. Installed only when missing.
MANUL_APT_PACKAGES=(iproute2 iptables ipset nftables iputils-ping clang llvm libbpf-dev libclang-dev bpftool iperf3 procps python3 python3-venv prometheus)

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
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
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
