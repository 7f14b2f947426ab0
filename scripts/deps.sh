#!/usr/bin/env bash
# Installs the Debian 12 packages virtshim builds, tests and runs with (`make deps`).
# Idempotent and fast when everything is present: apt is only touched when something is missing.
set -euo pipefail

# Build: C toolchain and headers for the libvirt bindings; protoc for the CRI client.
# Run: QEMU and libvirt's QEMU driver (embedded, no daemon), containerd, runc, CNI plugins.
# Guests: kernel, busybox, bootloader and ISO tools for the test images; debootstrap for the
# Debian cloud image (real cloud-init); an SSH client to log into it with keys from
# accessCredentials.
# The test guest's small kernel (images/guest/kernel.sh: Debian's kernels cannot boot in the
# 64 MiB of KubeVirt's quick-start VM): the kernel source and what builds it.
# Cluster (cluster/up.sh): etcd for the Kubernetes that cluster/build.sh builds from Go modules,
# openssl for its certificates.
PACKAGES=(
  build-essential pkg-config libvirt-dev protobuf-compiler
  qemu-system-x86 qemu-utils libvirt-daemon libvirt-daemon-driver-qemu ovmf
  containerd runc containernetworking-plugins iptables iproute2 procps
  linux-image-amd64 busybox-static syslinux syslinux-common extlinux mtools dosfstools fdisk
  genisoimage cpio kmod python3 curl
  debootstrap e2fsprogs openssh-client
  etcd-server openssl
  linux-source-6.1 gcc make bc flex bison libelf-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  # Compared, not piped to `grep -q`: under pipefail that can fail when grep quits early.
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done

# Debian 12's qemu-system 7.2 needs qemu-utils of the same version; some images ship a newer
# qemu-utils from backports that conflicts with it, so pin it to qemu-system-x86's candidate.
pin=()
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  qemu_version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
  utils_installed=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
  if [ -n "$qemu_version" ] && [ "$utils_installed" != "$qemu_version" ]; then
    pin=(qemu-utils="$qemu_version" qemu-block-extra="$qemu_version")
    rest=()
    for p in "${missing[@]}"; do [ "$p" = qemu-utils ] || rest+=("$p"); done
    missing=("${rest[@]}")
  fi
  echo "deps: installing ${missing[*]} ${pin[*]}"
  apt-get install -y -q --no-install-recommends --allow-downgrades "${missing[@]}" "${pin[@]}" >/dev/null
fi

# As root, Debian's libvirt resolves its built-in QEMU user and group `libvirt-qemu` when the
# QEMU driver starts, before it reads virtshim's qemu.conf. Only libvirt-daemon-system (a
# daemon virtshim does not use) creates them, so make them here; the node installer does the same.
if ! getent group libvirt-qemu >/dev/null; then
  groupadd --system libvirt-qemu
fi
if ! getent passwd libvirt-qemu >/dev/null; then
  useradd --system --gid libvirt-qemu --no-create-home --home-dir /var/lib/libvirt \
    --shell /usr/sbin/nologin --comment "libvirt QEMU (virtshim)" libvirt-qemu
  echo "deps: created the system user libvirt-qemu (libvirt's QEMU driver needs it)"
fi

# The fresh-root check (tests/fresh-root.sh) runs this script in a bare Debian root, where only
# the system's part is checked: the Rust toolchain is the developer's own.
if [ "${1:-}" = --system-only ]; then
  echo "deps: system packages present"
  exit 0
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo not found: install a Rust toolchain (1.91 or newer) and re-run" >&2
  exit 1
fi
# A clean `make test` peaked at 5.2 GiB here (target/, the cached guest and cloud images,
# containerd's content store). Say so up front rather than as an LLVM I/O error mid-build.
free_kib=$(df -Pk . | awk 'NR == 2 {print $4}')
if [ -n "$free_kib" ] && [ "$free_kib" -lt $((8 * 1024 * 1024)) ]; then
  echo "deps: warning: only $((free_kib / 1024)) MiB free here; a clean build and test run needs about 6 GiB (5.2 GiB measured)" >&2
fi
echo "deps: all present"
