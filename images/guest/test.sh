#!/bin/bash
# Self-check of the virtshim test guest images: boots them with bare QEMU under TCG and checks
# the markers, cloud-init (NoCloud and ConfigDrive), DHCP + HTTP through slirp, the serial
# console (typed input), and ACPI poweroff through QMP system_powerdown.
#
#   images/guest/test.sh OUT_DIR        (runs build.sh OUT_DIR first; cached, ~0 s when built)
#
# Needs (Debian): qemu-system-x86 genisoimage curl python3, plus the build.sh packages;
# containerd (optional) for the `ctr images import` check, skipped when absent or SKIP_CTR=1.
# Network: only 127.0.0.1 (slirp host forwarding); QEMU's user network never leaves the host
# process, and containerd is started privately on a unix socket.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$HERE/build.sh" "$1"
OUT=$(cd "$1" && pwd)
for tool in qemu-system-x86_64 genisoimage curl python3; do
	command -v $tool >/dev/null || { echo "test.sh: $tool missing" >&2; exit 1; }
done

W=$(mktemp -d /tmp/virtshim-guest-test.XXXXXX)
CTRD_PID=
cleanup() {
	if [ -n "$CTRD_PID" ]; then
		kill "$CTRD_PID" 2>/dev/null || true
		wait "$CTRD_PID" 2>/dev/null || true
		umount -R "$W/ctrd/root" 2>/dev/null || true
	fi
	[ -n "${KEEP:-}" ] && { echo "test.sh: kept $W"; return; }
	rm -rf "$W"
}
trap cleanup EXIT
TIMES=$W/times.tsv
: > "$TIMES"
FAILED=0

# NoCloud (label cidata) and ConfigDrive (label config-2) seeds.
mkdir -p "$W/nocloud" "$W/configdrive/openstack/latest"
printf '#!/bin/sh\necho CLOUD-INIT-RAN\n' > "$W/nocloud/user-data"
printf 'instance-id: iid-virtshim-test\nlocal-hostname: nocloud-vm\n' > "$W/nocloud/meta-data"
genisoimage -quiet -o "$W/nocloud.iso" -V cidata -J -r "$W/nocloud/user-data" "$W/nocloud/meta-data"
printf '#!/bin/sh\necho CONFIG-DRIVE-RAN as $(hostname)\n' > "$W/configdrive/openstack/latest/user_data"
printf '{"uuid": "6d7c1b0e-0000-4000-8000-000000000001", "hostname": "configdrive-vm"}\n' \
	> "$W/configdrive/openstack/latest/meta_data.json"
genisoimage -quiet -o "$W/configdrive.iso" -V config-2 -J -r "$W/configdrive"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
QEMU=(qemu-system-x86_64 -machine q35,accel=tcg -m 256 -smp 1 -display none -no-reboot
	-monitor none -serial stdio)

# run_case NAME QEMU-ARGS... -- STEPS...
run_case() {
	local name=$1; shift
	local qargs=() steps=()
	while [ "$1" != -- ]; do qargs+=("$1"); shift; done
	shift
	steps=("$@")
	echo "== $name"
	rm -f "$W/qmp.sock"
	if ! python3 "$HERE/qemu_case.py" --name "$name" --log "$W/$name.log" --qmp "$W/qmp.sock" \
		--times "$TIMES" "${steps[@]}" -- \
		"${QEMU[@]}" -qmp "unix:$W/qmp.sock,server=on,wait=off" "${qargs[@]}"; then
		FAILED=$((FAILED + 1))
	fi
}

# 1. kernel boot (KubeVirt kernelBoot style), virtio-net on slirp with a loopback host port:
#    marker, serial console round trip, DHCP, HTTP, ACPI poweroff.
run_case kernel-boot \
	-kernel "$OUT/vmlinuz" -initrd "$OUT/initrd.img" -append "console=ttyS0" \
	-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$PORT-:80" -device virtio-net-pci,netdev=n0 \
	-- \
	--within 60 --wait VIRTSHIM-GUEST-READY \
	--within 30 --wait ':/# ' --send 'echo hello-$((6*7))' --wait hello-42 \
	--wait 'VIRTSHIM-GUEST-UP ip=10.0.2.15' \
	--http "http://127.0.0.1:$PORT/healthz" ok \
	--http "http://127.0.0.1:$PORT/" virtshim-guest \
	--powerdown --within 20 --wait VIRTSHIM-GUEST-POWEROFF --exit 0

# 2. disk boot from SATA (AHCI), NoCloud seed on a SATA CD-ROM, no NIC.
run_case disk-sata \
	-drive "file=$OUT/guest.qcow2,format=qcow2,if=none,id=d0,snapshot=on" -device ide-hd,drive=d0,bus=ide.0,bootindex=1 \
	-drive "file=$W/nocloud.iso,format=raw,if=none,id=cd0,media=cdrom,readonly=on" -device ide-cd,drive=cd0,bus=ide.1 \
	-nic none \
	-- \
	--within 60 --wait VIRTSHIM-GUEST-READY \
	--within 30 --wait 'hostname nocloud-vm' --wait CLOUD-INIT-RAN \
	--powerdown --within 20 --wait VIRTSHIM-GUEST-POWEROFF --exit 0

# 3. disk boot from virtio-blk, ConfigDrive seed on a second virtio disk, e1000 NIC (DHCP).
run_case disk-virtio \
	-drive "file=$OUT/guest.qcow2,format=qcow2,if=none,id=d0,snapshot=on" -device virtio-blk-pci,drive=d0,bootindex=1 \
	-drive "file=$W/configdrive.iso,format=raw,if=none,id=cd0,readonly=on" -device virtio-blk-pci,drive=cd0 \
	-nic user,model=e1000 \
	-- \
	--within 60 --wait VIRTSHIM-GUEST-READY \
	--within 30 --wait 'VIRTSHIM-GUEST-UP ip=10.0.2.15' --wait 'CONFIG-DRIVE-RAN as configdrive-vm' \
	--powerdown --within 20 --wait VIRTSHIM-GUEST-POWEROFF --exit 0

# 4. the OCI tarballs import into containerd's k8s.io namespace under their full names.
if [ -n "${SKIP_CTR:-}" ] || ! command -v containerd >/dev/null || ! command -v ctr >/dev/null; then
	echo "== ctr-import: skipped (no containerd/ctr, or SKIP_CTR set)"
else
	echo "== ctr-import"
	mkdir -p "$W/ctrd"
	containerd --root "$W/ctrd/root" --state "$W/ctrd/state" --address "$W/ctrd/ctrd.sock" \
		--config /dev/null > "$W/ctrd/containerd.log" 2>&1 &
	CTRD_PID=$!
	CTR=(ctr --address "$W/ctrd/ctrd.sock" -n k8s.io)
	for i in $(seq 1 50); do "${CTR[@]}" version >/dev/null 2>&1 && break; sleep 0.2; done
	ok=1
	for img in guest-kernel-boot guest-container-disk; do
		"${CTR[@]}" images import "$OUT/$img.oci.tar" >/dev/null || ok=
		if "${CTR[@]}" images ls -q | grep -qx "localhost/virtshim/$img:v1"; then
			echo "ok   [ctr-import] localhost/virtshim/$img:v1"
		else
			echo "FAIL [ctr-import] localhost/virtshim/$img:v1 not listed"; ok=
		fi
	done
	[ -n "$ok" ] || { FAILED=$((FAILED + 1)); tail -20 "$W/ctrd/containerd.log"; }
	kill "$CTRD_PID"; wait "$CTRD_PID" 2>/dev/null || true
	umount -R "$W/ctrd/root" 2>/dev/null || true
	CTRD_PID=
fi

echo
echo "seconds from QEMU start to VIRTSHIM-GUEST-READY / VIRTSHIM-GUEST-UP:"
awk -F'\t' '$2 ~ /^VIRTSHIM-GUEST-(READY|UP)/ { printf "  %-12s %-34s %5s s\n", $1, $2, $3 }' "$TIMES"
if [ "$FAILED" -ne 0 ]; then
	echo "test.sh: $FAILED check(s) FAILED"
	exit 1
fi
echo "test.sh: all guest checks passed"
