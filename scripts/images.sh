#!/usr/bin/env bash
# `make images`: builds the test guests, the component images and the placeholder image, and
# imports them into the running containerd's k8s.io namespace (the CRI's) when there is one.
#   scripts/images.sh [all|guests]   guests: only the test guests and the placeholder (the demo's)
set -euo pipefail
WHAT=${1:-all}
case "$WHAT" in all|guests) ;; *) echo "usage: $0 [all|guests]" >&2; exit 2 ;; esac
HERE=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$HERE/out/images}
mkdir -p "$OUT"
"$HERE/images/guest/build.sh" "$OUT/guest"
if [ "$WHAT" = all ]; then
  # A real Debian 12 cloud image (systemd, cloud-init): a few minutes the first time, then cached.
  "$HERE/images/cloud/build.sh" "$OUT/guest"
  # virtshim's own components (controller, handler, installer with the shim), release builds.
  "$HERE/images/components/build.sh" "$OUT/components"
fi
# compute's image when a VM boots from a PVC only: it runs nothing, busybox is plenty.
if [ ! -s "$OUT/placeholder.oci.tar" ]; then
  python3 "$HERE/images/oci_image.py" --name localhost/virtshim/placeholder:v1 --entrypoint /bin/busybox --cmd true \
    --add /bin/busybox /bin/busybox:0755 "$OUT/placeholder.oci.tar" >/dev/null
  echo "placeholder image localhost/virtshim/placeholder:v1: built"
else
  echo "placeholder image localhost/virtshim/placeholder:v1: up to date (cached)"
fi
if ctr version >/dev/null 2>&1; then
  for tar in "$OUT"/guest/*.oci.tar "$OUT"/components/*.oci.tar "$OUT/placeholder.oci.tar"; do
    [ -e "$tar" ] || continue
    ctr -n k8s.io images import "$tar" >/dev/null
  done
  echo "images: imported into containerd's k8s.io namespace ($(ctr -n k8s.io images ls -q | grep -c '^localhost/virtshim/') localhost/virtshim images)"
else
  echo "images: built in ${OUT#"$HERE"/} (containerd is not running; import with: ctr -n k8s.io images import FILE)"
fi
