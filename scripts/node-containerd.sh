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
# The pod network of this node (each node of a multi-node cluster has its own range).
POD_SUBNET=${POD_SUBNET:-10.66.0.0/24}
[[ $POD_SUBNET =~ ^[0-9]+\.[0-9]+\.[0-9]+\.0/24$ ]] || { echo "node: POD_SUBNET must be a /24, not '$POD_SUBNET'" >&2; exit 2; }
CONTAINERD_LOG=${CONTAINERD_LOG:-/var/log/containerd.log}

# (Without a socket ctr would wait out its 10 s dial timeout.)
running() { [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1; }

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
  if [ -n "${CONTAINERD_START:-}" ]; then
    # The caller's own way of starting it (cluster/node.sh: in the node's cgroup).
    $CONTAINERD_START
  else
    nohup containerd --config "$CONFIG" >>"$CONTAINERD_LOG" 2>&1 &
  fi
  for _ in $(seq 100); do running && break; sleep 0.1; done
  running || { echo "node: containerd did not start; see $CONTAINERD_LOG" >&2; exit 1; }
fi

# Listed first, then searched: `ctr … | grep -q` under pipefail fails now and then (grep quits
# at the match, ctr takes SIGPIPE on its next line).
images=$(ctr -n k8s.io images ls -q)
if ! grep -qxF "$sandbox_image" <<<"$images"; then
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
  cat > "$CNI_CONF_DIR/10-virtshim.conflist" <<CNI
{"cniVersion":"0.4.0","name":"virtshim","plugins":[{"type":"bridge","bridge":"vsnode0","isGateway":true,"ipMasq":false,
 "ipam":{"type":"host-local","ranges":[[{"subnet":"$POD_SUBNET"}]],"routes":[{"dst":"0.0.0.0/0"}]}},{"type":"portmap","capabilities":{"portMappings":true}}]}
CNI
  echo "node: wrote $CNI_CONF_DIR/10-virtshim.conflist (bridge vsnode0, $POD_SUBNET)"
fi
echo "node: containerd ready"
