#!/usr/bin/env bash
# Runs the nftables flow tests on a kernel built with
# CONFIG_NETFILTER_NETLINK_GLUE_CT, in a virtual machine: a connection's
# flow start then names its Service from the conntrack entry each nflog
# record carries (NFULA_CT), the path a kernel without it never takes.
#
# It installs QEMU and kmod (Debian packages) where missing, downloads
# Debian's kernel package (linux-image-amd64's dependency, or
# MANUL_VM_KERNEL=linux-image-VERSION-amd64) and busybox-static under
# target/kernel-vm/, builds the tests and `iptables-bench`, and boots the
# kernel with this machine's filesystem shared read-only (9p, under a
# tmpfs overlay) and no network device. Inside, as root:
#   - dataplane-iptables' tests/flows.rs with MANUL_REQUIRE_GLUE_CT=1 and
#     CI=true: the allowed and denied connections (first, on the kernel as
#     booted: no netfilter module loaded yet), then the others but the
#     promptness under a steady stream (too fast for an emulator): the
#     shared flow cases through Services of both families and the
#     hairpin, each failing if the driver fell
#     back to the log of a connection's first packet before DNAT;
#   - `iptables-bench flows --runs N` (MANUL_VM_BENCH_RUNS, default 3; 0
#     skips it): flows off and on side by side. Under emulation (TCG, when
#     the CPU offers no virtualisation) only its ratios mean anything.
# With arguments, runs them in the VM instead of the tests (a command of
# this machine's filesystem, as root), e.g. to look at the kernel by hand.
# Exits non-zero when a test (or the command) fails, the VM does not
# report, or the kernel lacks what the tests need. Results are in
# target/kernel-vm/out/ (console log, test output, bench JSON).
#
# Other settings: MANUL_VM_SCOPE (cargo's package selection for the
# test build, default -p manul-dataplane-iptables), MANUL_VM_MEMORY (MiB, default 3072), MANUL_VM_CPUS
# (default 2), MANUL_VM_TIMEOUT (seconds, default 5400), MANUL_VM_PROFILE
# (cargo profile of the bench, default dev).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
# shellcheck source=scripts/deps.sh
. scripts/deps.sh

if [ "$(id -u)" != 0 ]; then
    echo "kernel-vm.sh: run as root (it installs packages; the tests run as root in the VM)" >&2
    exit 1
fi
ensure_apt_packages qemu-system-x86 kmod jq nftables iproute2 iperf3

target=${CARGO_TARGET_DIR:-$repo/target}
work=$target/kernel-vm
out=$work/out
mkdir -p "$work/debs" "$out"
rm -f "$out"/*
bench_runs=${MANUL_VM_BENCH_RUNS:-3}
profile=${MANUL_VM_PROFILE:-dev}
started=$(date +%s)

# --- the kernel and busybox, from Debian's archive --------------------------
download() {
    if ! ls "$work/debs/$1"_*.deb >/dev/null 2>&1; then
        (cd "$work/debs" && apt-get -q -o APT::Sandbox::User=root download "$1")
    fi
}
kernel_pkg=${MANUL_VM_KERNEL:-}
if [ -z "$kernel_pkg" ]; then
    kernel_pkg=$(apt-cache depends linux-image-amd64 | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
    if [ -z "$kernel_pkg" ]; then
        apt-get update -qq
        kernel_pkg=$(apt-cache depends linux-image-amd64 | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
    fi
fi
[ -n "$kernel_pkg" ] || { echo "kernel-vm.sh: no linux-image-amd64 in the package lists" >&2; exit 1; }
download "$kernel_pkg"
download busybox-static
kroot=$work/kernel/$kernel_pkg
if [ ! -d "$kroot/lib/modules" ]; then
    rm -rf "$kroot.tmp"
    mkdir -p "$work/kernel"
    dpkg-deb -x "$work/debs/${kernel_pkg}"_*.deb "$kroot.tmp"
    mv "$kroot.tmp" "$kroot"
fi
kver=$(basename "$(ls -d "$kroot"/lib/modules/*)")
[ -f "$kroot/lib/modules/$kver/modules.dep" ] || depmod -b "$kroot" "$kver"
bbroot=$work/busybox
if [ ! -x "$bbroot/bin/busybox" ]; then
    dpkg-deb -x "$work/debs"/busybox-static_*.deb "$bbroot"
fi

# What the tests need of the kernel, built in or as modules; GLUE_CT must
# be built in (it is a part of nf_conntrack_netlink).
config=$kroot/boot/config-$kver
grep -qx 'CONFIG_NETFILTER_NETLINK_GLUE_CT=y' "$config" || {
    echo "kernel-vm.sh: $kernel_pkg lacks CONFIG_NETFILTER_NETLINK_GLUE_CT" >&2
    exit 1
}
for c in NET_NS VETH NF_TABLES NF_TABLES_INET NFT_CT NFT_LOG NFT_NAT NFT_MASQ NF_CONNTRACK \
    NF_CT_NETLINK NF_CONNTRACK_EVENTS NETFILTER_NETLINK_LOG NET_9P_VIRTIO 9P_FS OVERLAY_FS \
    VIRTIO_PCI; do
    grep -qE "^CONFIG_$c=(y|m)$" "$config" || {
        echo "kernel-vm.sh: $kernel_pkg lacks CONFIG_$c" >&2
        exit 1
    }
done

# --- the test binaries ----------------------------------------------------------
if [ $# -eq 0 ]; then
    echo "== building the flow tests and iptables-bench"
    # After the whole suite (MANUL_VM_SCOPE=--workspace, as the test
    # command sets it) the workspace's build already holds the test: the
    # same feature set finds it without building anything again.
    flows_test=$(cargo test ${MANUL_VM_SCOPE:--p manul-dataplane-iptables} --test flows --no-run --message-format=json |
        jq -r 'select(.reason == "compiler-artifact" and (.package_id | contains("dataplane-iptables")) and .target.name == "flows" and .executable != null) | .executable')
    bench=true
    if [ "$bench_runs" -gt 0 ]; then
        bench=$(cargo build -p manul-dataplane-iptables --example iptables-bench --profile "$profile" --message-format=json |
            jq -r 'select(.reason == "compiler-artifact" and .target.name == "iptables-bench" and .executable != null) | .executable')
    fi
    if [ ! -x "$flows_test" ] || { [ "$bench_runs" -gt 0 ] && [ ! -x "$bench" ]; }; then
        echo "kernel-vm.sh: the build gave no binaries" >&2
        exit 1
    fi
fi

# --- what runs inside ------------------------------------------------------------
# The VM's init once its root is this machine's filesystem under an
# overlay; writes its results to $out, the one writable share.
cat >"$work/inside.sh" <<EOF
#!/bin/bash
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root CI=true MANUL_REQUIRE_GLUE_CT=1 RUST_BACKTRACE=1
out=$out
echo "kernel: \$(uname -r)"
status=0
EOF
if [ $# -gt 0 ]; then
    # A command of the caller's instead of the tests.
    printf '%q ' "$@" >>"$work/inside.sh"
    printf '\nstatus=$?\n' >>"$work/inside.sh"
else
    cat >>"$work/inside.sh" <<EOF
# No module is loaded beforehand: the kernel loads each on demand, as on a
# fresh node. The first test runs on the kernel as booted (the driver's
# start loads what it needs: nothing may depend on its being there
# before), the others after it. Not run here: the promptness of starts
# under a steady stream (it needs 100 connections in 1.5 s, more than an
# emulated machine makes; what it checks, the reader's drain interval,
# is the same on every kernel).
first=allowed_and_denied_connections_are_observed_with_their_rules_and_counts
prompt=starts_come_promptly_while_connections_keep_coming_and_after_a_pause
t0=\$(date +%s)
for run in first rest; do
    if [ \$run = first ]; then filter=(--exact \$first); else filter=(--skip \$first --skip \$prompt); fi
    echo "== flow tests (tests/flows.rs, \${filter[*]}), MANUL_REQUIRE_GLUE_CT=1"
    $flows_test --test-threads=1 --nocapture "\${filter[@]}" >"\$out/flows-test-\$run.log" 2>&1
    rc=\$?
    grep -E '^(test |frontend source|test result)' "\$out/flows-test-\$run.log"
    [ \$rc = 0 ] || { status=1; tail -n 60 "\$out/flows-test-\$run.log"; }
done
t1=\$(date +%s)
echo "flow tests: \$((t1 - t0)) s"
if [ "$bench_runs" -gt 0 ]; then
    echo "== iptables-bench flows --runs $bench_runs"
    $bench flows --runs $bench_runs >"\$out/bench-flows.json" 2>"\$out/bench-flows.log"
    rc=\$?
    t2=\$(date +%s)
    cat "\$out/bench-flows.log"
    echo "bench: exit \$rc in \$((t2 - t1)) s"
    [ \$rc = 0 ] || status=1
fi
EOF
fi
cat >>"$work/inside.sh" <<EOF
echo \$status >"\$out/status"
sync
# This script is the VM's init: it ends by powering the VM off.
echo o >/proc/sysrq-trigger
sleep 60
EOF
chmod +x "$work/inside.sh"

# --- the initramfs: busybox, the modules to reach the shared root, init --------
initrd=$work/initramfs
rm -rf "$initrd"
mkdir -p "$initrd"/{bin,dev,proc,sys,lower,rw,newroot,modules}
cp "$bbroot/bin/busybox" "$initrd/bin/busybox"
: >"$initrd/modules/order"
for m in virtio_pci 9pnet_virtio 9p overlay virtio-rng; do
    modprobe -d "$kroot" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++' | while read -r ko; do
    cp "$ko" "$initrd/modules/"
    basename "$ko" >>"$initrd/modules/order"
done
cat >"$initrd/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in \$(cat /modules/order); do insmod /modules/\$m || echo "insmod \$m failed"; done
fail() { echo "manul-vm: \$*"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 host /lower || fail "mounting the host's root"
mount -t tmpfs -o size=1g rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || fail "the overlay"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 out /newroot$out || fail "mounting the results"
for d in proc sys dev; do mount --move /\$d /newroot/\$d; done
mount -t devpts devpts /newroot/dev/pts 2>/dev/null
mount -t tmpfs tmpfs /newroot/tmp
mount -t tmpfs tmpfs /newroot/run
mount -t bpf bpf /newroot/sys/fs/bpf
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
rm -rf /newroot/lib/modules
ln -s $kroot/lib/modules /newroot/lib/modules
hostname manul-vm
# The kernel's helpers (modprobe for the modules nftables asks for) run in
# init's root: the overlay becomes it.
exec switch_root /newroot /bin/bash $work/inside.sh
EOF
chmod +x "$initrd/init"
(cd "$initrd" && find . | "$initrd/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1) >"$work/initramfs.cpio.gz"

# --- boot ----------------------------------------------------------------------
if [ -r /dev/kvm ] && [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then
    accel=(-accel kvm -cpu host)
    echo "== booting $kernel_pkg ($kver) under KVM"
else
    accel=(-accel "tcg,thread=multi" -cpu max)
    echo "== booting $kernel_pkg ($kver) under TCG (the CPU offers no virtualisation): slow, figures are only ratios"
fi
booted=$(date +%s)
set +e
timeout "${MANUL_VM_TIMEOUT:-5400}" qemu-system-x86_64 "${accel[@]}" \
    -m "${MANUL_VM_MEMORY:-3072}" -smp "${MANUL_VM_CPUS:-2}" \
    -kernel "$kroot/boot/vmlinuz-$kver" -initrd "$work/initramfs.cpio.gz" \
    -append "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=4" \
    -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$out,mount_tag=out,security_model=none" \
    -device virtio-rng-pci -nic none -nographic -no-reboot </dev/null 2>&1 |
    tee "$work/console.log"
qemu_rc=${PIPESTATUS[0]}
set -e
cp "$work/console.log" "$out/console.log"
finished=$(date +%s)
echo "== VM: $((finished - booted)) s (all: $((finished - started)) s), qemu exit $qemu_rc"
status=$(cat "$out/status" 2>/dev/null || echo "none")
case "$status" in
    0) echo "kernel-vm.sh: passed on $kver" ;;
    none) echo "kernel-vm.sh: the VM did not report (see $work/console.log)" >&2; exit 1 ;;
    *) echo "kernel-vm.sh: failed on $kver (see $out/)" >&2; exit 1 ;;
esac
