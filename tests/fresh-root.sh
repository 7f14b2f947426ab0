#!/usr/bin/env bash
# The fresh-machine check (run by tests/tests/fresh_root.rs in `make test`): in a clean Debian 12
# root made with debootstrap, scripts/deps.sh installs from nothing, then the shim built here
# opens libvirt's embedded QEMU driver there (`--check-node`), as every VM start must. Anything
# virtshim needs from the system and deps.sh does not install (a package, a user) fails here
# rather than on a user's fresh machine, which a reused development or CI machine cannot show.
#
#   tests/fresh-root.sh SHIM_BINARY
#
# Cached in /var/cache/virtshim/fresh-root (FRESH_ROOT_CACHE), outside the clone so that clean
# clones share it: the bare debootstrap root as a tarball (made once, a few minutes) and the
# downloaded packages; each run unpacks the tarball into a new root, removed afterwards. Needs root.
# DEBIAN_MIRROR overrides the archive taken from this machine's apt sources.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 SHIM_BINARY" >&2; exit 2; }
SHIM=$(readlink -f "$1")
HERE=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${FRESH_ROOT_CACHE:-/var/cache/virtshim/fresh-root}
SUITE=bookworm
BASE=$CACHE/$SUITE-minbase.tar
ROOT=$CACHE/root
ARCHIVES=$CACHE/apt-archives
mkdir -p "$CACHE" "$ARCHIVES/partial"

say() { echo "fresh-root: $*"; }

mounted=()
cleanup() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
  # 1.6 GB once installed; only the cache is kept.
  if ! grep -q " $ROOT/" /proc/mounts; then rm -rf "$ROOT"; fi
}
trap cleanup EXIT
bind() { # source target [ro]
  mkdir -p "$2"
  mount --bind "$1" "$2"
  mounted+=("$2")
  [ "${3:-}" = ro ] && mount -o remount,bind,ro "$2"
  return 0
}

if [ ! -s "$BASE" ]; then
  mirror=$(python3 "$HERE/images/cloud/debian_mirror.py")
  say "making a bare Debian 12 root (debootstrap --variant=minbase $SUITE from $mirror; once, a few minutes)"
  tmp=$CACHE/debootstrap
  rm -rf "$tmp"
  debootstrap --variant=minbase "$SUITE" "$tmp" "$mirror" > "$CACHE/debootstrap.log" 2>&1 ||
    { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  tar -C "$tmp" -cf "$BASE.new" .
  mv "$BASE.new" "$BASE"
  rm -rf "$tmp"
fi

# A new root every run: nothing a previous run installed survives.
if [ -d "$ROOT" ]; then
  grep -o " $ROOT/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$ROOT"
fi
mkdir -p "$ROOT"
tar -C "$ROOT" -xf "$BASE"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# Package scripts must not start services on this machine.
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
chmod +x "$ROOT/usr/sbin/policy-rc.d"
mount -t proc proc "$ROOT/proc"; mounted+=("$ROOT/proc")
bind /sys "$ROOT/sys" ro
bind /dev "$ROOT/dev"
bind /dev/pts "$ROOT/dev/pts"
mount -t tmpfs tmpfs "$ROOT/run"; mounted+=("$ROOT/run")
bind "$ARCHIVES" "$ROOT/var/cache/apt/archives"
# Keep downloaded packages for the next run (Debian's images delete them after each install).
rm -f "$ROOT/etc/apt/apt.conf.d/docker-clean"
bind "$HERE/scripts" "$ROOT/virtshim/scripts" ro

say "scripts/deps.sh in the clean root"
chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  bash /virtshim/scripts/deps.sh --system-only

install -m 0755 "$SHIM" "$ROOT/usr/local/bin/containerd-shim-virtshim-v2"
say "the shim opens libvirt's embedded QEMU driver in the clean root"
chroot "$ROOT" env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  containerd-shim-virtshim-v2 --check-node
say "ok: deps.sh alone made a fresh Debian 12 root able to run virtshim's shim"
