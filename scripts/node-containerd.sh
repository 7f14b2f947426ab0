#!/usr/bin/env bash
# Makes sure this node has a containerd that can run virtshim pods (`make demo` calls it): the
# running containerd after checking its settings, or one started here. Two settings this kind
# of machine needs (see ENVIRONMENT.md) are set in config.toml when missing:
# restrict_oom_score_adj (no CAP_SYS_RESOURCE here) and a sandbox image that exists locally (no
# registry); a running containerd that lacked them is restarted (running shims, and so VMs,
# survive that).
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
PAUSE_IMAGE=${PAUSE_IMAGE:-localhost/virtshim/pause:v1}
CNI_CONF_DIR=/etc/cni/net.d

running() { ctr version >/dev/null 2>&1; }

# The node installer edits config.toml (keeping the rest of the file) and restarts a running
# containerd when a setting changed; it prints the sandbox image in effect.
"${CARGO:-cargo}" build -q -p virtshim-installer --manifest-path "$HERE/Cargo.toml"
installer="${CARGO_TARGET_DIR:-$HERE/target}/debug/virtshim-installer"
configured=$("$installer" --config "$CONFIG" configure --sandbox-image "$PAUSE_IMAGE" --restrict-oom-score-adj)
printf '%s\n' "$configured" | grep -v '^sandbox-image ' | sed 's/^/node: /' || true
sandbox_image=$(printf '%s\n' "$configured" | sed -n 's/^sandbox-image //p')
sandbox_image=${sandbox_image:-$PAUSE_IMAGE}

if ! running; then
  echo "node: starting containerd ($CONFIG)"
  nohup containerd --config "$CONFIG" >>/var/log/containerd.log 2>&1 &
  for _ in $(seq 100); do running && break; sleep 0.1; done
  running || { echo "node: containerd did not start; see /var/log/containerd.log" >&2; exit 1; }
fi

if ! ctr -n k8s.io images ls -q | grep -qxF "$sandbox_image"; then
  # No registry: build the sandbox image from busybox and import it under the configured name.
  tmp=$(mktemp -d)
  python3 "$HERE/images/oci_image.py" --name "$sandbox_image" --entrypoint /bin/busybox --cmd sleep infinity \
    --add /bin/busybox /bin/busybox:0755 "$tmp/pause.tar" >/dev/null
  ctr -n k8s.io images import "$tmp/pause.tar" >/dev/null
  rm -rf "$tmp"
  echo "node: imported sandbox image $sandbox_image"
fi

# A pod network for this node's pods, unless one is configured already.
if [ -z "$(ls -A "$CNI_CONF_DIR" 2>/dev/null)" ]; then
  mkdir -p "$CNI_CONF_DIR"
  cat > "$CNI_CONF_DIR/10-virtshim.conflist" <<'CNI'
{"cniVersion":"0.4.0","name":"virtshim","plugins":[{"type":"bridge","bridge":"vsnode0","isGateway":true,"ipMasq":false,
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.66.0.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}},{"type":"portmap","capabilities":{"portMappings":true}}]}
CNI
  echo "node: wrote $CNI_CONF_DIR/10-virtshim.conflist (bridge vsnode0, 10.66.0.0/24)"
fi
echo "node: containerd ready"
