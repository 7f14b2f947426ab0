#!/bin/bash
# Builds the test guest's small kernel from Debian's linux-source package and prints the path of
# its bzImage. Debian's own kernels cannot boot in 64 MiB, the memory KubeVirt's quick-start VM
# asks for: their decompressor needs init_size (63 MiB for linux-image-amd64, 51 MiB for the
# cloud flavour) above the 16 MiB load address, and once running they keep ~46 MiB for
# themselves. This one is `make tinyconfig` plus kernel.config (the devices a KubeVirt VM has,
# everything built in, no modules): ~2 MiB, init_size 16 MiB.
#
# Cached outside the work tree (a fresh clone reuses it): GUEST_KERNEL_CACHE, default
# /var/cache/virtshim/guest-kernel, keyed by the source tarball, kernel.config, this script and
# the compiler. The first build takes 5-15 minutes on 2 cores; afterwards it is instant.
# Reproducible: fixed build timestamp, user, host and version.
#
# Debian packages needed (make deps): linux-source-6.1 gcc make bc flex bison libelf-dev
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${GUEST_KERNEL_CACHE:-/var/cache/virtshim/guest-kernel}
die() { echo "kernel.sh: $*" >&2; exit 1; }

TARBALL=${GUEST_KERNEL_SOURCE:-$(ls /usr/src/linux-source-*.tar.xz 2>/dev/null | sort -V | tail -n 1)}
[ -n "$TARBALL" ] && [ -r "$TARBALL" ] ||
	die "no /usr/src/linux-source-*.tar.xz (apt-get install linux-source-6.1 gcc make bc flex bison libelf-dev)"
for tool in gcc make bc flex bison tar xz flock sha256sum; do
	command -v $tool >/dev/null || die "$tool missing (apt-get install gcc make bc flex bison)"
done

mkdir -p "$CACHE"
exec 8>"$CACHE/.lock"
flock 8
SRC_ID=$(stat -c '%s %Y' "$TARBALL" | sha256sum | cut -c1-16)
KEY=$({
	echo "source $(basename "$TARBALL") $SRC_ID"
	gcc --version | head -n 1
	sha256sum "$HERE/kernel.config" "$HERE/kernel.sh" | cut -d' ' -f1
} | sha256sum | cut -c1-32)
OUT=$CACHE/$KEY/bzImage
if [ -s "$OUT" ]; then
	echo "$OUT"
	exit 0
fi

SRC=$CACHE/src-$SRC_ID
if [ ! -f "$SRC/.unpacked" ]; then
	rm -rf "$SRC"
	mkdir -p "$SRC"
	tar -xf "$TARBALL" -C "$SRC" --strip-components=1
	touch "$SRC/.unpacked"
fi
echo "guest kernel: building $(basename "$TARBALL" .tar.xz) with kernel.config (first time only: 5-15 min)" >&2
T0=$(date +%s)
export KBUILD_BUILD_TIMESTAMP="2000-01-01 00:00:00 UTC" KBUILD_BUILD_USER=virtshim \
	KBUILD_BUILD_HOST=virtshim KBUILD_BUILD_VERSION=1
(
	cd "$SRC"
	make -s tinyconfig >/dev/null
	./scripts/kconfig/merge_config.sh -m .config "$HERE/kernel.config" >/dev/null
	make -s olddefconfig >/dev/null 2>&1
	# Every option kernel.config asks for must have stuck (a dependency missing drops it).
	while IFS= read -r line; do
		case "$line" in CONFIG_*=y) grep -qxF "$line" .config || die "$line did not apply" ;; esac
	done < "$HERE/kernel.config"
	make -s -j"$(nproc)" bzImage >"$CACHE/build.log" 2>&1 || { tail -n 30 "$CACHE/build.log" >&2; die "kernel build failed"; }
)
mkdir -p "$CACHE/$KEY"
cp "$SRC/arch/x86/boot/bzImage" "$OUT.tmp"
mv -f "$OUT.tmp" "$OUT"
echo "guest kernel: built in $(( $(date +%s) - T0 )) s" >&2
echo "$OUT"
