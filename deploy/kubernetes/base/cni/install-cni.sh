#!/bin/sh
# Installs the Manul CNI plugin on this node (the Felix DaemonSet's init
# container runs it): manul-cni into /opt/cni/bin and 10-manul.conflist into
# /etc/cni/net.d, the host's directories being mounted under /host. Each
# file is written beside its target and renamed over it, so a runtime never
# runs half a binary or reads half a configuration.
#
# The configuration names the manul-typha Service by its cluster IP (the
# CNI plugin runs in the host's network namespace, where cluster DNS may
# not resolve) and this node by NODE_NAME. Beside it goes manul-kubeconfig
# (mode 0600): the API server by the kubernetes Service's cluster IP, its
# CA and the manul-cni ServiceAccount's token (the Secret mounted at
# MANUL_CNI_TOKEN_DIR), which the plugin uses to record pod addresses. # The plugin's TLS identity (the
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

[ -n "${KUBERNETES_SERVICE_HOST:-}" ] && [ -n "${KUBERNETES_SERVICE_PORT:-}" ] ||
    fail "KUBERNETES_SERVICE_HOST/PORT are not set: the plugin could not reach the API server"
case "$KUBERNETES_SERVICE_HOST" in
*:*) api="https://[$KUBERNETES_SERVICE_HOST]:$KUBERNETES_SERVICE_PORT" ;;
*) api="https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT" ;;
esac
token_dir="${MANUL_CNI_TOKEN_DIR:-/var/run/manul/cni-token}"
[ -s "$token_dir/token" ] && [ -s "$token_dir/ca.crt" ] ||
    fail "no token and ca.crt in $token_dir: the manul-cni-token Secret is not mounted or not filled yet"
token=$(cat "$token_dir/token")
ca=$(base64 -w0 <"$token_dir/ca.crt")

src_dir="${MANUL_CNI_SOURCE_DIR:-/etc/manul/cni}"
plugin="${MANUL_CNI_PLUGIN:-/usr/local/bin/manul-cni}"
bin_dir="${MANUL_CNI_BIN_DIR:-/host/opt/cni/bin}"
net_dir="${MANUL_CNI_NET_DIR:-/host/etc/cni/net.d}"
# Where the host sees net_dir: what the configuration names.
host_net_dir="${MANUL_CNI_HOST_NET_DIR:-/etc/cni/net.d}"

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

umask 077
cat >"$net_dir/.manul-kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kubernetes
  cluster:
    server: $api
    certificate-authority-data: $ca
users:
- name: manul-cni
  user:
    token: $token
contexts:
- name: manul-cni
  context:
    cluster: kubernetes
    user: manul-cni
current-context: manul-cni
EOF
chmod 0600 "$net_dir/.manul-kubeconfig.tmp"
mv -f "$net_dir/.manul-kubeconfig.tmp" "$net_dir/manul-kubeconfig"
umask 022

sed -e "s|__TYPHA_ADDRESS__|$address|" -e "s|__NODE_NAME__|$NODE_NAME|" \
    -e "s|__KUBECONFIG__|$host_net_dir/manul-kubeconfig|" \
    "$src_dir/10-manul.conflist" >"$net_dir/.10-manul.conflist.tmp"
chmod 0644 "$net_dir/.10-manul.conflist.tmp"
mv -f "$net_dir/.10-manul.conflist.tmp" "$net_dir/10-manul.conflist"

echo "install-cni: installed $bin_dir/manul-cni, $net_dir/10-manul.conflist and $net_dir/manul-kubeconfig (node $NODE_NAME, Typha $address, API server $api)"
