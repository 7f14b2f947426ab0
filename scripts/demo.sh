#!/usr/bin/env bash
# The main job (`make demo`): boot virtshim's test guest on this node through containerd's CRI,
# exactly as the kubelet would, show its serial console up to the cloud-init user-data's
# greeting, show the VM as crictl sees it, then power it off and remove it.
#   VIRTCTL  virtctl to use (default target/release/virtctl)
#   VM       the VMI/VM YAML (default examples/vm-guest.yaml)
#   CRICTL   crictl to use (default out/cluster/bin/crictl, built by `make crictl`)
#   CONTAINERD_SOCKET  containerd's CRI socket (default /run/containerd/containerd.sock)
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
VIRTCTL=${VIRTCTL:-target/release/virtctl}
VM=${VM:-examples/vm-guest.yaml}
CRICTL=${CRICTL:-out/cluster/bin/crictl}
SOCKET=${CONTAINERD_SOCKET:-/run/containerd/containerd.sock}
NAME=$(sed -n 's/^  name: //p' "$VM" | head -1)
# What the example's user-data prints (examples/vm-guest.yaml); the console is shown until then.
GREETING=${GREETING:-hello from cloud-init user-data}
local_() { "$VIRTCTL" local --socket "$SOCKET" "$@"; }

DEMO_T0=$(date +%s%N)
STEP=0
STEPS=5
# step TITLE EXPECTED: starts a step, saying how long it should take.
step() {
	STEP=$((STEP + 1))
	STEP_T0=$(date +%s%N)
	printf '\n[%d/%d] %s (expected: %s)\n' "$STEP" "$STEPS" "$1" "$2"
}
# took: how long the current step took.
took() { printf '      took %s\n' "$(since "$STEP_T0")"; }
since() { awk -v ns=$(( $(date +%s%N) - $1 )) 'BEGIN { printf "%.1f s", ns / 1e9 }'; }
# The serial console as the user would read it: indented, terminal control sequences dropped
# (busybox's shell asks the terminal for the cursor position, ESC[6n, after each prompt).
console() { sed -u -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\r$//' -e 's/^/      | /'; }

step "Check $VM against KubeVirt's API and apply its defaults" "under 1 s"
"$VIRTCTL" validate -f "$VM" -o json | python3 -c '
import json, sys
vmi = json.load(sys.stdin)
spec = vmi.get("spec", {})
dom = spec.get("domain", {})
disks = ", ".join("%s (%s)" % (d["name"], next(iter(set(d) - {"name"}), "disk"))
                  for d in dom.get("devices", {}).get("disks", []))
print("      %s %s: %s memory, %s vCPU, machine %s; disks: %s" % (
    vmi.get("kind"), vmi.get("metadata", {}).get("name"),
    dom.get("memory", {}).get("guest", "?"), dom.get("cpu", {}).get("cores", 1),
    dom.get("machine", {}).get("type", "?"), disks))'
local_ rm "$NAME" >/dev/null 2>&1 || true
took

step "Boot it through containerd's CRI (RunPodSandbox with handler virtshim, CreateContainer, StartContainer) and follow its serial console" \
	"5-10 s under TCG, less with KVM"
local_ run -f "$VM" --attach --until "$GREETING" --timeout 180 2>&1 | console
took

step "The VM as the kubelet sees it: a container" "under 1 s"
if [ -x "$CRICTL" ]; then
	crictl() { "$CRICTL" --runtime-endpoint "unix://$SOCKET" "$@"; }
	POD=$(local_ ls | awk -v n="$NAME" '$1 == n { print $3 }')
	ID=$(crictl ps -q --pod "$POD" --name compute | head -n 1)
	echo "      \$ crictl ps --pod $POD"
	crictl ps --pod "$POD" | sed 's/^/      /'
	echo "      \$ crictl inspect ${ID:0:13}   (pid, state, image)"
	crictl inspect "$ID" | python3 -c '
import json, sys
c = json.load(sys.stdin)
s, info = c.get("status", {}), c.get("info", {})
print("      pid %s (QEMU, in the container\x27s cgroup), state %s, image %s" % (
    info.get("pid"), s.get("state"), s.get("image", {}).get("image")))'
else
	echo "      (crictl not found at $CRICTL: \`make crictl\` builds it, or set CRICTL=/path/to/crictl)"
	local_ ls | sed 's/^/      /'
fi
took

step "Stop it as the kubelet does: StopContainer presses the ACPI power button (forced after 30 s)" \
	"about 5 s"
local_ stop "$NAME" --grace-period 30 | sed 's/^/      /'
echo "      the guest's last console lines:"
local_ logs "$NAME" | tail -n 2 | console
took

step "Remove its pod (StopPodSandbox, RemovePodSandbox)" "about 1 s"
local_ rm "$NAME" | sed 's/^/      /'
took

printf '\nDone in %s: a KubeVirt VMI booted, ran its cloud-init user-data, and powered off, as a pod.\n' \
	"$(since "$DEMO_T0")"
