#!/usr/bin/env bash
# Builds Manul's image from deploy/Containerfile with buildah (no base image
# is pulled: FROM scratch), then checks inside the image that every binary
# starts, that Typha serves /healthz, and that the CNI install script
# installs the plugin. Not part of CI: it installs Debian packages and
# builds the binaries in release mode.
#
#   deploy/build-image.sh [--debug] [--tag NAME:TAG]
#
# --debug packs the dev-profile binaries (a quicker build, a slower image).
# The default tag is localhost/manul:VERSION, the name deploy/kubernetes
# uses. Needs root (buildah with the vfs storage driver).
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
tag="localhost/manul:$version"
profile=release
while (($#)); do
    case "$1" in
    --debug) profile=dev ;;
    --tag)
        tag="${2:?--tag needs NAME:TAG}"
        shift
        ;;
    *)
        echo "usage: deploy/build-image.sh [--debug] [--tag NAME:TAG]" >&2
        exit 2
        ;;
    esac
    shift
done

# shellcheck source=scripts/deps.sh
. scripts/deps.sh
ensure_apt_packages buildah busybox-static nftables binutils
buildah=(buildah --storage-driver vfs)

binaries=(typha felix manul-cni manulctl)
echo "== cargo build --profile $profile (${binaries[*]})"
cargo build --profile "$profile" --locked "${binaries[@]/#/--bin=}"
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin_dir="$target_dir/$([[ $profile == dev ]] && echo debug || echo release)"

context=$(mktemp -d)
container=""
cleanup() {
    if [[ -n $container ]]; then
        "${buildah[@]}" rm "$container" >/dev/null 2>&1 || true
    fi
    rm -rf "$context"
}
trap cleanup EXIT
rootfs="$context/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/usr/sbin" "$rootfs/bin" "$rootfs/etc"
mkdir -m 1777 "$rootfs/tmp"

echo "== staging the image's files"
for b in "${binaries[@]}"; do
    # Debug information is of no use in the image.
    objcopy --strip-debug "$bin_dir/$b" "$rootfs/usr/local/bin/$b"
done
cp -L "$(command -v nft)" "$rootfs/usr/sbin/nft"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh cp mv sed mkdir chmod rm cat ls echo sleep wget test; do
    ln -s busybox "$rootfs/bin/$applet"
done
# nft reads protocol and service names from these.
cp /etc/protocols /etc/services "$rootfs/etc/"

# The shared libraries and the loader each dynamic binary needs, at the
# paths ldd resolves them to.
for f in "$rootfs"/usr/local/bin/* "$rootfs/usr/sbin/nft"; do
    if ldd "$f" | grep -q "not found"; then
        echo "error: $f links a library this machine does not have:" >&2
        ldd "$f" >&2
        exit 1
    fi
    for lib in $(ldd "$f" | grep -o '/[^ ]*'); do
        if [[ ! -e "$rootfs$lib" ]]; then
            mkdir -p "$rootfs$(dirname "$lib")"
            cp -L "$lib" "$rootfs$lib"
        fi
    done
done
(cd "$rootfs" && find . -type f | sort | sed 's|^\./|   /|')

echo "== buildah bud -t $tag"
"${buildah[@]}" bud --quiet -f deploy/Containerfile -t "$tag" "$context" >/dev/null
"${buildah[@]}" images --format '   {{.Name}}:{{.Tag}} {{.Size}}' "$tag"

echo "== checks inside the image"
container=$("${buildah[@]}" from "$tag")
run() { "${buildah[@]}" run --isolation chroot "$@"; }
for b in typha felix manulctl; do
    echo "   $(run "$container" -- "$b" --version)"
done
echo "   manul-cni: $(run "$container" -- sh -c 'echo "{\"cniVersion\":\"1.0.0\"}" | CNI_COMMAND=VERSION manul-cni')"
echo "   $(run "$container" -- nft --version)"

# Typha starts and answers /healthz (host network, loopback only). The
# script is expanded by the image's shell, not this one.
# shellcheck disable=SC2016
run "$container" -- sh -c '
    typha --data-dir /tmp/typha --listen 127.0.0.1:15473 --metrics 127.0.0.1:19093 >/tmp/typha.log 2>&1 &
    pid=$!
    i=0
    while [ $i -lt 100 ]; do
        if wget -q -O - http://127.0.0.1:19093/healthz 2>/dev/null; then
            kill $pid
            exit 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    kill $pid
    cat /tmp/typha.log >&2
    echo "typha did not answer /healthz" >&2
    exit 1
' | sed 's/^/   typha \/healthz: /'

# The Felix DaemonSet's init container: install into a scratch host, with
# stand-ins for the two Secrets it mounts (the CNI plugin's service-account
# token and its TLS identity).
host=$(mktemp -d)
secrets=$(mktemp -d)
trap 'cleanup; rm -rf "$host" "$secrets"' EXIT
mkdir -p "$secrets/token" "$secrets/tls"
printf 'token-of-manul-cni' >"$secrets/token/token"
printf 'ca of the cluster\n' >"$secrets/token/ca.crt"
for f in ca.crt tls.crt tls.key; do printf '%s\n' "$f" >"$secrets/tls/$f"; done
run -v "$PWD/deploy/kubernetes/base/cni:/etc/manul/cni:ro" -v "$host:/host" \
    -v "$secrets/token:/var/run/manul/cni-token:ro" -v "$secrets/tls:/etc/manul/cni-tls:ro" \
    --env NODE_NAME=node-a --env MANUL_TYPHA_SERVICE_HOST=10.96.0.20 \
    --env MANUL_TYPHA_SERVICE_PORT_SYNC=5473 \
    --env KUBERNETES_SERVICE_HOST=10.96.0.1 --env KUBERNETES_SERVICE_PORT=443 \
    "$container" -- sh /etc/manul/cni/install-cni.sh | sed 's/^/   /'
cmp "$host/opt/cni/bin/manul-cni" "$rootfs/usr/local/bin/manul-cni"
grep -q '"10.96.0.20:5473"' "$host/etc/cni/net.d/10-manul.conflist"
grep -q 'token: token-of-manul-cni' "$host/etc/cni/net.d/manul-kubeconfig"
cmp "$host/etc/cni/net.d/manul-tls/tls.key" "$secrets/tls/tls.key"
echo "image $tag ok"
