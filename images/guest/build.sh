#!/bin/bash
# Builds the virtshim test guest images into OUT_DIR (see README.md next to this script):
#   vmlinuz, initrd.img                 small kernel (kernel.sh: Debian's linux-source, tinyconfig
#                                       + kernel.config, everything built in) + busybox initramfs
#                                       (the whole guest OS); boots in 64 MiB
#   guest.qcow2                         MBR + FAT16 partition; under BIOS (syslinux) the same small
#                                       kernel and initramfs; under UEFI Debian's signed shim + GRUB
#                                       + Debian's signed kernel (Secure Boot with Microsoft's keys
#                                       enrolled) with an initramfs holding its modules
#   guest-kernel-boot.oci.tar           localhost/virtshim/guest-kernel-boot:v1 (/boot/vmlinuz, /boot/initrd.img)
#   guest-container-disk.oci.tar        localhost/virtshim/guest-container-disk:v1 (/disk/guest.qcow2)
#
# Cached (scripts/lib/cache.sh): a hash of every input (these scripts and the cache library, the
# rootfs files, both kernels, busybox, syslinux, the shim-signed and grub-efi-amd64-signed
# packages) is kept in OUT_DIR/.inputs; when it matches and all outputs exist, nothing is rebuilt.
# Set FORCE=1 to rebuild anyway, CACHE_DRY_RUN=1 to only say whether it would build, GUEST_KVER
# to pick a Debian kernel (the UEFI path's) other than the newest installed.
#
# Debian packages needed (make deps):
#   build.sh: linux-image-amd64 busybox-static syslinux syslinux-common mtools dosfstools fdisk
#             linux-source-6.1 gcc make bc flex bison libelf-dev (kernel.sh)
#             qemu-utils python3 coreutils util-linux; shim-signed and grub-efi-amd64-signed are
#             fetched with `apt-get download` and unpacked here, never installed: their install
#             scripts would write to the build machine's own EFI system partition.
#   test.sh:  qemu-system-x86 genisoimage curl python3 (and containerd for the optional ctr check)
# Nothing here needs root, loop devices or mounts.
set -euo pipefail

usage() { echo "usage: $0 OUT_DIR" >&2; exit 2; }
[ $# -eq 1 ] || usage
OUT=$1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
IMAGES=$(dirname "$HERE")
CACHE_LIB=$(dirname "$IMAGES")/scripts/lib/cache.sh
# shellcheck source-path=SCRIPTDIR source=../../scripts/lib/cache.sh
. "$CACHE_LIB"

# The Debian kernel's drivers (UEFI path only; the small kernel has them built in): disks
# (virtio, SATA/AHCI, IDE, SCSI), CD-ROMs and ISO9660 (cloud-init), VFAT (config drives), NICs
# (virtio, e1000, e1000e), virtio rng/console/balloon, ACPI power button.
MODULES="virtio_pci virtio_blk virtio_scsi virtio_net virtio_rng virtio_console virtio_balloon
ahci ata_piix sd_mod sr_mod isofs vfat nls_cp437 nls_ascii nls_utf8 e1000 e1000e button evdev"

IMAGE_PREFIX=${IMAGE_PREFIX:-localhost/virtshim}
DISK_MB=${DISK_MB:-48}
# quiet: the kernel's boot messages stay in its log buffer (dmesg), not on the serial console
# the user watches (about 400 lines under TCG, and slow to print at 115200 baud).
CMDLINE="console=ttyS0 quiet"
MBR_BIN=/usr/lib/syslinux/mbr/mbr.bin
BUSYBOX=${BUSYBOX:-/bin/busybox}

die() { echo "build.sh: $*" >&2; exit 1; }

# --- inputs -------------------------------------------------------------------------------
if [ -z "${GUEST_KVER:-}" ]; then
	for k in $(ls /boot/vmlinuz-*-amd64 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V); do
		[ -f "/lib/modules/$k/modules.dep" ] && GUEST_KVER=$k
	done
fi
[ -n "${GUEST_KVER:-}" ] || die "no /boot/vmlinuz-*-amd64 with modules (apt-get install linux-image-amd64)"
KVER=$GUEST_KVER
KERNEL=/boot/vmlinuz-$KVER
[ -r "$KERNEL" ] || die "$KERNEL missing"
[ -f "/lib/modules/$KVER/modules.dep" ] || die "/lib/modules/$KVER/modules.dep missing"
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing (apt-get install busybox-static)"
for tool in python3 sha256sum mkfs.vfat mcopy syslinux sfdisk qemu-img flock apt-get dpkg-deb; do
	command -v $tool >/dev/null || die "$tool missing (see the package list at the top of $0)"
done
[ -r "$MBR_BIN" ] || die "$MBR_BIN missing (apt-get install syslinux-common)"

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec 9>"$OUT/.lock"
flock 9

# The small kernel (BIOS and kernelBoot): built once, cached outside the work tree.
SMALL_KERNEL=$(bash "$HERE/kernel.sh") || die "the small guest kernel did not build"

# Debian's Secure Boot chain for the UEFI path: shim (signed by Microsoft's UEFI CA, trusting
# Debian's CA), GRUB's CD image (signed by Debian; finds its config through /.disk/info), and the
# kernel above (linux-image-*-amd64 is signed by Debian). Kept in OUT_DIR/.debs, by version.
EFI_PACKAGES="shim-signed grub-efi-amd64-signed"
EFI_DEBS=()
mkdir -p "$OUT/.debs"
for pkg in $EFI_PACKAGES; do
	version=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | sed -n 's/^Version: //p' | head -n 1)
	deb=""
	if [ -n "$version" ]; then
		# apt-get download names the file with the version's ':' written as '%3a'.
		deb="$OUT/.debs/${pkg}_${version//:/%3a}_amd64.deb"
		[ -s "$deb" ] || (cd "$OUT/.debs" && apt-get download -q "$pkg=$version" >/dev/null 2>&1) ||
			die "cannot download $pkg $version (apt-get update?)"
	else
		# No apt lists (offline): whatever version was fetched before.
		deb=$(ls "$OUT/.debs/${pkg}_"*_amd64.deb 2>/dev/null | sort -V | tail -n 1)
	fi
	[ -s "$deb" ] || die "$pkg: no package found in apt's lists or in $OUT/.debs (apt-get update)"
	EFI_DEBS+=("$deb")
done

inputs_hash() {
	{
		echo "kver $KVER"
		echo "modules $MODULES"
		echo "prefix $IMAGE_PREFIX disk $DISK_MB cmdline $CMDLINE"
		"$BUSYBOX" 2>&1 | head -n 1 || true
		syslinux --version 2>&1 | head -n 1 || true
		qemu-img --version | head -n 1
		cache_files "$KERNEL" "$SMALL_KERNEL" "$BUSYBOX" "$MBR_BIN" "/lib/modules/$KVER/modules.dep" \
			"${EFI_DEBS[@]}" "$HERE/build.sh" "$CACHE_LIB" "$HERE/mkinitramfs.py" "$HERE/kernel.sh" \
			"$HERE/kernel.config" "$IMAGES/oci_image.py"
		cache_tree "$HERE/rootfs"
	} | cache_key
}

OUTPUTS="vmlinuz initrd.img guest.qcow2 guest-kernel-boot.oci.tar guest-container-disk.oci.tar"
HASH=$(inputs_hash)
# shellcheck disable=SC2086 # OUTPUTS is a list of file names
if [ -z "${FORCE:-}" ] && cache_hit "$OUT/.inputs" "$HASH" $OUTPUTS; then
	echo "guest images: up to date (cached by input hash)"
	exit 0
fi

# --- build --------------------------------------------------------------------------------
cache_miss "$OUT/.inputs" "guest images" || exit 0
TMP=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
T0=$(date +%s)
echo "guest images: building (about 10 s)"

# 1. kernels + initramfs: the small kernel needs no modules; Debian's (UEFI) gets its drivers.
MODARGS=()
for m in $MODULES; do MODARGS+=(--module "$m"); done
python3 "$HERE/mkinitramfs.py" --quiet --kver "$KVER" --busybox "$BUSYBOX" --rootfs "$HERE/rootfs" \
	"$TMP/initrd.img"
python3 "$HERE/mkinitramfs.py" --quiet --kver "$KVER" --busybox "$BUSYBOX" --rootfs "$HERE/rootfs" \
	"${MODARGS[@]}" "$TMP/initrd-efi.img"
cp "$SMALL_KERNEL" "$TMP/vmlinuz"
cp "$KERNEL" "$TMP/vmlinuz-efi"
chmod 0644 "$TMP/vmlinuz" "$TMP/initrd.img" "$TMP/vmlinuz-efi" "$TMP/initrd-efi.img"

# 2. bootable disk: MBR (syslinux mbr.bin) + one bootable FAT16 partition at 1 MiB holding
#    ldlinux.sys/ldlinux.c32 (syslinux, installed through mtools: no mount), syslinux.cfg,
#    vmlinuz and initrd.img; and for UEFI firmware (which boots \EFI\BOOT\BOOTX64.EFI from any
#    FAT partition) shim as BOOTX64.EFI, GRUB beside it as grubx64.efi (the name shim loads),
#    /.disk/info (how GRUB's CD image finds its partition) and /boot/grub/grub.cfg.
mkdir "$TMP/debs"
for deb in "${EFI_DEBS[@]}"; do dpkg-deb -x "$deb" "$TMP/debs"; done
mkdir -p "$TMP/efi/EFI/BOOT" "$TMP/efi/boot/grub" "$TMP/efi/.disk"
cp "$TMP/debs/usr/lib/shim/shimx64.efi.signed" "$TMP/efi/EFI/BOOT/BOOTX64.EFI"
cp "$TMP/debs/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed" "$TMP/efi/EFI/BOOT/grubx64.efi"
echo "virtshim test guest" > "$TMP/efi/.disk/info"
cat > "$TMP/efi/boot/grub/grub.cfg" <<EOF
set timeout=0
set default=0
menuentry guest {
  linux /vmlinuz-efi $CMDLINE
  initrd /initrd-efi.img
}
EOF
find "$TMP/efi" -exec touch -h -d '2000-01-01 00:00:00 UTC' {} +
need_mb=$(( ($(stat -c %s "$TMP/vmlinuz") + $(stat -c %s "$TMP/initrd.img") +
	$(stat -c %s "$TMP/vmlinuz-efi") + $(stat -c %s "$TMP/initrd-efi.img") +
	$(du -sb "$TMP/efi" | cut -f1)) / 1048576 + 8 ))
[ "$DISK_MB" -ge "$need_mb" ] || DISK_MB=$need_mb
RAW=$TMP/disk.raw
PART_START=2048                                  # sectors (1 MiB)
PART_SECTORS=$(( DISK_MB * 2048 - PART_START ))
truncate -s "${DISK_MB}M" "$RAW"
printf 'label: dos\nlabel-id: 0x56534831\nstart=%d, size=%d, type=6, bootable\n' \
	"$PART_START" "$PART_SECTORS" | sfdisk --quiet --no-reread --no-tell-kernel "$RAW"
mkfs.vfat --invariant --offset "$PART_START" -h "$PART_START" -F 16 -n GUESTBOOT -i 56534831 \
	"$RAW" $(( PART_SECTORS / 2 )) >/dev/null
mkdir "$TMP/fat"
cat > "$TMP/fat/syslinux.cfg" <<EOF
DEFAULT guest
PROMPT 0
TIMEOUT 0
LABEL guest
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND $CMDLINE
EOF
cp "$TMP/vmlinuz" "$TMP/initrd.img" "$TMP/vmlinuz-efi" "$TMP/initrd-efi.img" "$TMP/fat/"
touch -d '2000-01-01 00:00:00 UTC' "$TMP/fat/"*
export MTOOLSRC=/dev/null MTOOLS_SKIP_CHECK=1
mcopy -m -i "$RAW@@$(( PART_START * 512 ))" "$TMP/fat/syslinux.cfg" "$TMP/fat/vmlinuz" \
	"$TMP/fat/initrd.img" "$TMP/fat/vmlinuz-efi" "$TMP/fat/initrd-efi.img" ::/
mcopy -s -m -i "$RAW@@$(( PART_START * 512 ))" "$TMP/efi/EFI" "$TMP/efi/boot" "$TMP/efi/.disk" ::/
syslinux --offset $(( PART_START * 512 )) --install "$RAW"
dd if="$MBR_BIN" of="$RAW" bs=440 count=1 conv=notrunc status=none
# syslinux stamps ldlinux.* with the current time: pin every root directory entry's
# timestamps to 2000-01-01 00:00 so that the disk (and the containerDisk digest) is reproducible.
python3 - "$RAW" $(( PART_START * 512 )) <<'PY'
import struct, sys
path, base = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(base)
    bs = f.read(512)
    bps, spc, reserved, nfats, rootents = struct.unpack_from("<HBHBH", bs, 11)
    fatsz, = struct.unpack_from("<H", bs, 22)
    assert fatsz and rootents, "not FAT12/16"
    root = base + (reserved + nfats * fatsz) * bps
    f.seek(root)
    d = bytearray(f.read(rootents * 32))
    day = ((2000 - 1980) << 9) | (1 << 5) | 1
    for off in range(0, len(d), 32):
        if d[off] == 0:
            break
        if d[off] == 0xE5 or d[off + 11] == 0x0F:
            continue
        struct.pack_into("<BHHHHHHH", d, off + 13, 0, 0, day, day, struct.unpack_from("<H", d, off + 20)[0], 0, day, struct.unpack_from("<H", d, off + 26)[0])
    f.seek(root)
    f.write(d)
PY
qemu-img convert -f raw -O qcow2 "$RAW" "$TMP/guest.qcow2"
rm -f "$RAW"
chmod 0644 "$TMP/guest.qcow2"

# 3. OCI image tarballs (for ctr -n k8s.io images import)
python3 "$IMAGES/oci_image.py" --name "$IMAGE_PREFIX/guest-kernel-boot:v1" \
	--add "$TMP/vmlinuz" /boot/vmlinuz:0644 --add "$TMP/initrd.img" /boot/initrd.img:0644 \
	"$TMP/guest-kernel-boot.oci.tar" >/dev/null
python3 "$IMAGES/oci_image.py" --name "$IMAGE_PREFIX/guest-container-disk:v1" \
	--add "$TMP/guest.qcow2" /disk/guest.qcow2:0444 \
	"$TMP/guest-container-disk.oci.tar" >/dev/null

for f in $OUTPUTS; do mv -f "$TMP/$f" "$OUT/$f"; done
cache_stamp "$OUT/.inputs" "$HASH"
echo "guest images: built in $(( $(date +%s) - T0 )) s: $IMAGE_PREFIX/guest-kernel-boot:v1" \
	"(initramfs $(( $(stat -c %s "$OUT/initrd.img") / 1024 )) KiB), $IMAGE_PREFIX/guest-container-disk:v1"
