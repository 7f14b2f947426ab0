#!/usr/bin/env bash
# Installs virtshim's shim on this node's containerd (`make install-node`), or removes it
# (`--uninstall`). Running VMs keep running: containerd restarts, shims do not.
#   SHIM=path/to/containerd-shim-virtshim-v2   the binary to install (default: target/release)
#   CONTAINERD_CONFIG=/etc/containerd/config.toml
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/containerd-config.sh"
SHIM=${SHIM:-$HERE/../target/release/containerd-shim-virtshim-v2}
CONFIG=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
BIN_DIR=${BIN_DIR:-/usr/local/bin}
RUNTIME="$CRI.containerd.runtimes.virtshim"

if [ "${1:-}" = --uninstall ]; then
  changed=$(containerd_toml "$CONFIG" del "$RUNTIME")
  rm -f "$BIN_DIR/containerd-shim-virtshim-v2"
  if [ -n "$changed" ]; then restart_containerd; fi
  echo "install-node: virtshim removed"
  exit 0
fi

[ -x "$SHIM" ] || { echo "install-node: no shim binary at $SHIM (run: cargo build --release -p virtshim-shim)" >&2; exit 1; }
mkdir -p "$(dirname "$CONFIG")"
# The runtime handler `virtshim`: the shim by its runtime type, the pod annotations that carry
# the VMI passed through, and no host devices in the (empty) container.
default_runtime=$(containerd_toml "$CONFIG" get "$CRI.containerd.default_runtime_name")
default_runtime=${default_runtime:-runc}
changed=$(
  # A runtimes table in config.toml replaces containerd's built-in one, which held runc: keep
  # the default runtime defined.
  if [ -z "$(containerd_toml "$CONFIG" get "$CRI.containerd.runtimes.$default_runtime")" ]; then
    containerd_toml "$CONFIG" set "$CRI.containerd.runtimes.$default_runtime.runtime_type" '"io.containerd.runc.v2"'
  fi
  containerd_toml "$CONFIG" set "$RUNTIME.runtime_type" '"io.containerd.virtshim.v2"'
  containerd_toml "$CONFIG" set "$RUNTIME.pod_annotations" '["virtshim.io/*"]'
  containerd_toml "$CONFIG" set "$RUNTIME.privileged_without_host_devices" true
)
# Replace the binary atomically: running shims keep their (deleted) old inode.
install -m 0755 "$SHIM" "$BIN_DIR/.containerd-shim-virtshim-v2.new"
mv -f "$BIN_DIR/.containerd-shim-virtshim-v2.new" "$BIN_DIR/containerd-shim-virtshim-v2"
if [ -n "$changed" ] || [ "${RESTART:-0}" = 1 ]; then restart_containerd; fi
echo "install-node: $BIN_DIR/containerd-shim-virtshim-v2 installed; runtime handler 'virtshim' configured in $CONFIG"
