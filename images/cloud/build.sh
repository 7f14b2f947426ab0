#!/bin/bash
# Builds a real Debian 12 cloud image into OUT_DIR (see README.md next to this script):
#   debian-cloud.qcow2        MBR; partition 1 FAT16 with syslinux, the kernel and Debian's own
#                             initramfs; partition 2 ext4 root: systemd, cloud-init, ifupdown,
#                             python3
#   debian-cloud.oci.tar      localhost/virtshim/debian-cloud:v1 (/disk/debian-cloud.qcow2), a
#                             containerDisk
#
# It proves cloud-init for real (not the test guest's shell imitation): #cloud-config with
# write_files and runcmd, and networkData rendered by cloud-init into the guest's network setup.
#
# Cached (scripts/lib/cache.sh): a hash of the inputs (this script, the cache library, the OCI
# writer, the suite, the packages) is kept in OUT_DIR/.cloud-inputs; when it matches and the
# outputs exist, nothing is rebuilt. FORCE=1 rebuilds; CACHE_DRY_RUN=1 only says whether it
# would. Needs root (debootstrap, chroot) and a Debian archive: DEBIAN_MIRROR, else the first
# Debian main archive in this machine's apt sources (debian_mirror.py); no mirror is built in.
#
# Debian packages needed (make deps): debootstrap e2fsprogs syslinux syslinux-common mtools
#   dosfstools fdisk qemu-utils python3 util-linux
set -euo pipefail

usage() { echo "usage: $0 OUT_DIR" >&2; exit 2; }
[ $# -eq 1 ] || usage
OUT=$1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
IMAGES=$(dirname "$HERE")
CACHE_LIB=$(dirname "$IMAGES")/scripts/lib/cache.sh
# shellcheck source-path=SCRIPTDIR source=../../scripts/lib/cache.sh
. "$CACHE_LIB"

SUITE=${SUITE:-bookworm}
IMAGE=${IMAGE:-localhost/virtshim/debian-cloud:v1}
BOOT_MB=64
ROOT_MB=1536
ROOT_UUID=8d4b6a3e-56a1-4c1e-9a55-766972747368
# The root file system's packages. python3-cffi-backend is named because debootstrap's resolver
# does not follow the virtual package python3-cryptography asks for; net-tools because cloud-init's
# ifupdown renderer writes routes (OpenStack network_data.json's) as `route add` commands; dbus
# because systemd-logind needs it, and logind is what powers off on the ACPI power button.
PACKAGES=systemd-sysv,udev,dbus,linux-image-amd64,initramfs-tools,cloud-init,python3-cffi-backend,ifupdown,isc-dhcp-client,iproute2,net-tools,netbase,python3,openssh-server
CMDLINE="root=UUID=$ROOT_UUID ro console=ttyS0 net.ifnames=0"
MBR_BIN=/usr/lib/syslinux/mbr/mbr.bin

die() { echo "cloud/build.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap and chroot)"
for tool in debootstrap mkfs.ext4 mkfs.vfat mcopy syslinux sfdisk qemu-img python3 flock sha256sum; do
	command -v $tool >/dev/null || die "$tool missing (see the package list at the top of $0)"
done
[ -r "$MBR_BIN" ] || die "$MBR_BIN missing (apt-get install syslinux-common)"

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec 9>"$OUT/.cloud.lock"
flock 9

HASH=$({
	echo "suite $SUITE image $IMAGE packages $PACKAGES cmdline $CMDLINE $BOOT_MB $ROOT_MB"
	cache_files "$HERE/build.sh" "$CACHE_LIB" "$HERE/debian_mirror.py" "$IMAGES/oci_image.py"
} | cache_key)
OUTPUTS="debian-cloud.qcow2 debian-cloud.oci.tar"
# shellcheck disable=SC2086 # OUTPUTS is a list of file names
if [ -z "${FORCE:-}" ] && cache_hit "$OUT/.cloud-inputs" "$HASH" $OUTPUTS; then
	echo "cloud image $IMAGE: up to date (cached by input hash)"
	exit 0
fi

# The archive to install from (the image's content does not depend on which mirror serves it).
MIRROR=$(python3 "$HERE/debian_mirror.py") || die "no Debian archive to debootstrap from (see above)"

cache_miss "$OUT/.cloud-inputs" "cloud image $IMAGE" || exit 0
TMP=$(mktemp -d "$OUT/.cloud-build.XXXXXX")
ROOT=$TMP/root
cleanup() {
	# debootstrap mounts /proc and /sys in the target; never leave them (or the tree) behind.
	for m in proc sys dev/pts dev; do
		umount -l "$ROOT/$m" 2>/dev/null || true
	done
	rm -rf "$TMP"
}
trap cleanup EXIT
T0=$(date +%s)
echo "cloud image $IMAGE: building (debootstrap $SUITE from $MIRROR, a few minutes)"

# 1. The root file system.
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" \
	>"$TMP/debootstrap.out" 2>&1; then
	tail -n 30 "$TMP/debootstrap.out" >&2
	[ -f "$ROOT/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOT/debootstrap/debootstrap.log" >&2
	die "debootstrap failed"
fi

echo "UUID=$ROOT_UUID / ext4 defaults,errors=remount-ro 0 1" > "$ROOT/etc/fstab"
echo debian-cloud > "$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > "$ROOT/etc/hosts"
# The data sources a KubeVirt VM has; probing nothing else keeps the boot short.
# Host keys: ed25519 only, made per instance by cloud-init's ssh module (RSA keys take long
# under TCG); none are baked into the image.
cat > "$ROOT/etc/cloud/cloud.cfg.d/90-virtshim.cfg" <<'EOF'
datasource_list: [NoCloud, ConfigDrive, None]
ssh_genkeytypes: [ed25519]
EOF
rm -f "$ROOT"/etc/ssh/ssh_host_*
# No locales in this image: cloud-init's locale module would only fail (and mark
# cloud-config.service failed).
sed -i -E '/^\s*-\s*locale\s*$/d' "$ROOT/etc/cloud/cloud.cfg"
grep -Eq '^\s*-\s*(runcmd|write_files|scripts_user)\s*$' "$ROOT/etc/cloud/cloud.cfg" ||
	die "/etc/cloud/cloud.cfg does not list the modules this image is for"
# cloud-init renders networkData for ifupdown (its "eni" renderer), which reads this file.
mkdir -p "$ROOT/etc/network/interfaces.d"
printf 'source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n' \
	> "$ROOT/etc/network/interfaces"
# Small and reproducible enough: no package cache, lists, docs, manuals or locales.
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* \
	"$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/* \
	"$ROOT"/debootstrap
# Kernel modules a VM never loads (graphics, sound, wireless, media, infiniband, ...): the
# initramfs was made before, with everything it needs.
KVER=$(ls "$ROOT/lib/modules" | sort -V | tail -n 1)
[ -n "$KVER" ] || die "no kernel installed in the image"
for d in drivers/gpu drivers/media drivers/net/wireless drivers/infiniband drivers/staging \
	drivers/bluetooth drivers/iio drivers/isdn drivers/hid drivers/input/touchscreen \
	drivers/net/ethernet/mellanox drivers/net/ethernet/chelsio drivers/net/ethernet/broadcom \
	drivers/net/ethernet/qlogic drivers/net/ethernet/marvell drivers/net/ethernet/sfc \
	drivers/scsi/lpfc drivers/scsi/qla2xxx drivers/scsi/mpt3sas sound net/bluetooth \
	net/wireless net/mac80211; do
	rm -rf "$ROOT/lib/modules/$KVER/kernel/$d"
done
chroot "$ROOT" depmod "$KVER"
for m in proc sys dev/pts dev; do umount -l "$ROOT/$m" 2>/dev/null || true; done
cp "$ROOT/boot/vmlinuz-$KVER" "$TMP/vmlinuz"
cp "$ROOT/boot/initrd.img-$KVER" "$TMP/initrd.img"

# 2. The disk: MBR (syslinux's mbr.bin), FAT16 boot partition with syslinux, ext4 root filled
#    from the tree by mkfs.ext4 -d (no loop device, no mount).
RAW=$TMP/disk.raw
BOOT_START=2048
BOOT_SECTORS=$(( BOOT_MB * 2048 ))
ROOT_START=$(( BOOT_START + BOOT_SECTORS ))
ROOT_SECTORS=$(( ROOT_MB * 2048 ))
truncate -s $(( (ROOT_START + ROOT_SECTORS) * 512 )) "$RAW"
printf 'label: dos\nlabel-id: 0x56534832\nstart=%d, size=%d, type=6, bootable\nstart=%d, size=%d, type=83\n' \
	"$BOOT_START" "$BOOT_SECTORS" "$ROOT_START" "$ROOT_SECTORS" |
	sfdisk --quiet --no-reread --no-tell-kernel "$RAW"
mkfs.vfat --offset "$BOOT_START" -h "$BOOT_START" -F 16 -n CLOUDBOOT "$RAW" $(( BOOT_SECTORS / 2 )) >/dev/null
cat > "$TMP/syslinux.cfg" <<EOF
DEFAULT debian
PROMPT 0
TIMEOUT 0
LABEL debian
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND $CMDLINE
EOF
export MTOOLSRC=/dev/null MTOOLS_SKIP_CHECK=1
mcopy -i "$RAW@@$(( BOOT_START * 512 ))" "$TMP/syslinux.cfg" "$TMP/vmlinuz" "$TMP/initrd.img" ::/
syslinux --offset $(( BOOT_START * 512 )) --install "$RAW"
dd if="$MBR_BIN" of="$RAW" bs=440 count=1 conv=notrunc status=none
mkfs.ext4 -q -F -L debian-root -U "$ROOT_UUID" -E offset=$(( ROOT_START * 512 )) -d "$ROOT" \
	"$RAW" $(( ROOT_MB * 1024 ))k
qemu-img convert -c -f raw -O qcow2 "$RAW" "$TMP/debian-cloud.qcow2"
rm -f "$RAW"
chmod 0644 "$TMP/debian-cloud.qcow2"

# 3. The containerDisk.
python3 "$IMAGES/oci_image.py" --name "$IMAGE" \
	--add "$TMP/debian-cloud.qcow2" /disk/debian-cloud.qcow2:0444 "$TMP/debian-cloud.oci.tar" >/dev/null

for f in $OUTPUTS; do mv -f "$TMP/$f" "$OUT/$f"; done
cache_stamp "$OUT/.cloud-inputs" "$HASH"
echo "cloud image $IMAGE: built in $(( $(date +%s) - T0 )) s ($(( $(stat -c %s "$OUT/debian-cloud.oci.tar") / 1048576 )) MiB)"
