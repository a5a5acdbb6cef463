#!/bin/sh
# Installs the Manul CNI plugin on this node (the Felix DaemonSet's init
# container runs it): manul-cni into /opt/cni/bin and 10-manul.conflist into
# /etc/cni/net.d, the host's directories being mounted under /host. Each
# file is written beside its target and renamed over it, so a runtime never
# runs half a binary or reads half a configuration.
#
# The configuration names the manul-typha Service by its cluster IP (the
# CNI plugin runs in the host's network namespace, where cluster DNS may
# not resolve) and this node by NODE_NAME. The plugin's TLS identity (the
# manul-cni-tls Secret, mounted at /etc/manul/cni-tls) is copied to
# /etc/cni/net.d/manul-tls on the host, readable by root only; a rotated
# Secret reaches the host when this pod restarts.
set -eu

fail() {
    echo "install-cni: $*" >&2
    exit 1
}

[ -n "${NODE_NAME:-}" ] || fail "NODE_NAME is not set (the pod's spec.nodeName)"
host="${MANUL_TYPHA_SERVICE_HOST:-}"
port="${MANUL_TYPHA_SERVICE_PORT_SYNC:-}"
if [ -z "$host" ] || [ -z "$port" ]; then
    fail "MANUL_TYPHA_SERVICE_HOST/PORT_SYNC are not set: the manul-typha Service must exist before this pod starts"
fi
case "$host" in
*:*) address="[$host]:$port" ;; # IPv6
*) address="$host:$port" ;;
esac

src_dir="${MANUL_CNI_SOURCE_DIR:-/etc/manul/cni}"
plugin="${MANUL_CNI_PLUGIN:-/usr/local/bin/manul-cni}"
bin_dir="${MANUL_CNI_BIN_DIR:-/host/opt/cni/bin}"
net_dir="${MANUL_CNI_NET_DIR:-/host/etc/cni/net.d}"

mkdir -p "$bin_dir" "$net_dir"

tls_src="${MANUL_CNI_TLS_DIR:-/etc/manul/cni-tls}"
tls_dir="$net_dir/manul-tls"
mkdir -p "$tls_dir"
chmod 0700 "$tls_dir"
for f in ca.crt tls.crt tls.key; do
    [ -s "$tls_src/$f" ] || fail "$tls_src/$f is missing: create the manul-cni-tls Secret (deploy/README.md)"
    cp "$tls_src/$f" "$tls_dir/.$f.tmp"
    chmod 0600 "$tls_dir/.$f.tmp"
    mv -f "$tls_dir/.$f.tmp" "$tls_dir/$f"
done

cp "$plugin" "$bin_dir/.manul-cni.tmp"
chmod 0755 "$bin_dir/.manul-cni.tmp"
mv -f "$bin_dir/.manul-cni.tmp" "$bin_dir/manul-cni"

sed -e "s|__TYPHA_ADDRESS__|$address|" -e "s|__NODE_NAME__|$NODE_NAME|" \
    "$src_dir/10-manul.conflist" >"$net_dir/.10-manul.conflist.tmp"
chmod 0644 "$net_dir/.10-manul.conflist.tmp"
mv -f "$net_dir/.10-manul.conflist.tmp" "$net_dir/10-manul.conflist"

echo "install-cni: installed $bin_dir/manul-cni and $net_dir/10-manul.conflist (node $NODE_NAME, Typha $address)"
