#!/usr/bin/env bash
# `make cluster-down`: stops the cluster cluster/up.sh started (kubelet first, etcd last).
# Pods' VMs keep running in containerd until their pods are deleted; `--wipe` (or WIPE=1) also
# removes the cluster's state, so the next `make cluster` starts from new certificates.
set -euo pipefail
DIR=${VIRTSHIM_CLUSTER_DIR:-/var/lib/virtshim-cluster}
wipe=${WIPE:-0}
[ "${1:-}" = --wipe ] && wipe=1
# The extra nodes (cluster/node.sh) go first, and whole: a node without a control plane is no use.
for n in $(bash "$(dirname "$0")/node.sh" list); do bash "$(dirname "$0")/node.sh" down "$n"; done
for c in kubelet scheduler controller-manager apiserver etcd; do
  f=$DIR/$c.pid
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    echo "cluster: stopped $c"
  fi
  rm -f "$f"
done
if [ "$wipe" = 1 ] && [ -d "$DIR" ]; then
  awk -v d="$DIR" 'index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$DIR"
  echo "cluster: removed $DIR"
fi
