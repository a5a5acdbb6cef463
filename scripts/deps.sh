# Shared by the quick-start scripts: checks for and installs what Manul's
# build and tests need on a Debian machine with Rust installed.
# shellcheck shell=bash

# Debian packages the build and the tests use. Installed only when missing.
MANUL_APT_PACKAGES=(iproute2 iptables ipset nftables iputils-ping clang llvm libbpf-dev libclang-dev bpftool iperf3 procps)

ensure_deps() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo is missing: install Rust (rustup) first" >&2
        exit 1
    fi
    local missing=()
    local pkg
    for pkg in "${MANUL_APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        echo "installing: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
}
