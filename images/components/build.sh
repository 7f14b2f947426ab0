#!/bin/bash
# Builds the component images without a Docker engine (see README.md next to this script):
#   controller.oci.tar   localhost/virtshim/controller:v1   /virtshim-controller + its libraries
#   handler.oci.tar      localhost/virtshim/handler:v1      /virtshim-handler + its libraries
#   installer.oci.tar    localhost/virtshim/installer:v1    /virtshim-installer + its libraries,
#                        and /opt/virtshim/containerd-shim-virtshim-v2 (installed onto nodes;
#                        it runs on the host, against the host's libvirt and QEMU)
#
# Each image is one layer holding the binary and exactly the shared libraries `ldd` names (glibc,
# libgcc, libm: the binaries use rustls, not OpenSSL), at their own paths, plus the loader.
#
#   images/components/build.sh OUT_DIR           # release binaries (cargo build --release)
#   PROFILE=debug images/components/build.sh OUT_DIR
#   TAG=v2 SHIM=FILE images/components/build.sh OUT_DIR   # another tag; the installer with FILE as its shim
#
# Cached (scripts/lib/cache.sh): an image is rewritten only when its inputs' hash changed
# (OUT_DIR/.<image>.inputs); CACHE_DRY_RUN=1 only says which would be.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
OUT=$1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE_LIB=$REPO/scripts/lib/cache.sh
# shellcheck source-path=SCRIPTDIR source=../../scripts/lib/cache.sh
. "$CACHE_LIB"
PROFILE=${PROFILE:-release}
PREFIX=${IMAGE_PREFIX:-localhost/virtshim}
TAG=${TAG:-v1}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}

die() { echo "components/build.sh: $*" >&2; exit 1; }
for tool in ldd strip python3; do
	command -v $tool >/dev/null || die "$tool missing (libc-bin, binutils, python3)"
done

flag=()
[ "$PROFILE" = release ] && flag=(--release)
[ "$PROFILE" = release ] || [ "$PROFILE" = debug ] || die "PROFILE is release or debug"
(cd "$REPO" && cargo build -q "${flag[@]}" -p virtshim-controller -p virtshim-handler \
	-p virtshim-installer -p virtshim-shim)
BIN=$TARGET/$PROFILE
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# The --add arguments for a binary's shared libraries (and the dynamic loader).
libs() {
	ldd "$1" | awk '
		$2 == "=>" && $3 ~ /^\// { print $3 }
		$1 ~ /^\// { print $1 }' | sort -u | while read -r lib; do
		real=$(readlink -f "$lib")
		echo "--add" "$real" "$lib:0755"
	done
}

# image NAME BINARY [EXTRA --add ARGS...]
image() {
	local name=$1 binary=$2; shift 2
	local tar=$OUT/$name.oci.tar
	# Debug information is for developers, not for nodes.
	mkdir -p "$OUT/.stage"
	strip --strip-debug -o "$OUT/.stage/$binary" "$BIN/$binary"
	local args=(--name "$PREFIX/$name:$TAG" --entrypoint "/$binary"
		--add "$OUT/.stage/$binary" "/$binary:0755")
	# shellcheck disable=SC2207
	args+=($(libs "$BIN/$binary"))
	args+=("$@")
	local hash
	hash=$({ echo "${args[*]}"
		cache_files "$BIN/$binary" "$HERE/build.sh" "$CACHE_LIB" "$REPO/images/oci_image.py"
		for a in "$@"; do [ -f "$a" ] && cache_files "$a"; done; true; } | cache_key)
	if cache_hit "$OUT/.$name.inputs" "$hash" "$name.oci.tar"; then
		echo "component image $PREFIX/$name:$TAG: up to date (cached by input hash)"
		return
	fi
	cache_miss "$OUT/.$name.inputs" "component image $PREFIX/$name:$TAG" || return 0
	python3 "$REPO/images/oci_image.py" "${args[@]}" "$tar.tmp" >/dev/null
	mv -f "$tar.tmp" "$tar"
	cache_stamp "$OUT/.$name.inputs" "$hash"
	echo "component image $PREFIX/$name:$TAG: built ($(( $(stat -c %s "$tar") / 1024 )) KiB)"
}

image controller virtshim-controller
image handler virtshim-handler
# SHIM=FILE: the installer carries that shim instead of the one just built (an upgrade's new
# shim, as the multi-node test rolls the installer to an image with a shim that differs).
if [ -n "${SHIM:-}" ]; then
	[ -f "$SHIM" ] || die "SHIM=$SHIM: no such file"
	cp "$SHIM" "$OUT/.stage/containerd-shim-virtshim-v2"
else
	strip --strip-debug -o "$OUT/.stage/containerd-shim-virtshim-v2" "$BIN/containerd-shim-virtshim-v2"
fi
image installer virtshim-installer \
	--add "$OUT/.stage/containerd-shim-virtshim-v2" /opt/virtshim/containerd-shim-virtshim-v2:0755
