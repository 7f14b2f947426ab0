#!/usr/bin/env bash
# The main job (`make demo`): boot virtshim's test guest on this node through containerd's CRI,
# exactly as the kubelet would, show its serial console, then power it off and remove it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
VIRTCTL=${VIRTCTL:-$HERE/target/release/virtctl}
VM=${VM:-$HERE/examples/vm-guest.yaml}
NAME=$(sed -n 's/^  name: //p' "$VM" | head -1)

echo "== virtctl validate -f $VM -o yaml (KubeVirt's defaults applied)"
"$VIRTCTL" validate -f "$VM" -o yaml | sed -n '/^spec:/,$p' | head -40
"$VIRTCTL" local rm "$NAME" >/dev/null 2>&1 || true
echo
echo "== virtctl local run -f $VM --attach   (RunPodSandbox handler=virtshim, CreateContainer, StartContainer)"
start=$(date +%s%N)
"$VIRTCTL" local run -f "$VM" --attach --until VIRTSHIM-GUEST-UP --timeout 180
echo "(console up $(( ($(date +%s%N) - start) / 1000000 )) ms after virtctl local run)"
echo
echo "== virtctl local ls"
"$VIRTCTL" local ls
echo
echo "== virtctl local stop $NAME   (ACPI power button, forced after the grace period)"
"$VIRTCTL" local stop "$NAME" --grace-period 30
"$VIRTCTL" local logs "$NAME" | tail -3
"$VIRTCTL" local rm "$NAME"
