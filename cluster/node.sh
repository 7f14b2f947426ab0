#!/usr/bin/env bash
# The cluster's extra nodes (`make cluster NODES=3` makes node-2 and node-3 with this script).
#
# A node here is what a machine would be, made of Linux namespaces on this one: its own mount
# namespace (its own /etc/containerd, /run/containerd, /var/lib/containerd, CNI config and state,
# /run/virtshim, /var/lib/virtshim, /usr/local/bin, /var/log/pods), its own network namespace
# with its own address, and its own UTS namespace (hostname). Its containerd is set up by
# scripts/node-containerd.sh, exactly as on the first node, and its kubelet joins the cluster's
# control plane. Everything the node runs (kubelet, containerd, shims, QEMU, pods) lives in the
# cgroup subtree /virtshim-node-N, which is how a power cut takes all of it at once.
#
#   cluster/node.sh up N        node-N joins (N >= 2; idempotent: a node that runs is left alone)
#   cluster/node.sh kill N      power cut: every process of the node dies at once, its namespaces
#                               (and so its /run, its pods' networks) go; its disks stay
#   cluster/node.sh down N      kill, then the Node object and the node's disks removed
#   cluster/node.sh exec N CMD  run CMD on the node (ctr, crictl, ip, ...)
#   cluster/node.sh list        the nodes this script made (their numbers)
#
# Addresses: node-N is 10.65.0.N on the host's bridge vsnodes (10.65.0.1), its pods are
# 10.66.N.0/24 on its own bridge vsnode0; the host routes each pod range to its node, so pods on
# any node reach each other, the apiserver (10.66.0.1) and the `kubernetes` Service.
# Images: the node's containerd gets the first node's virtshim and guest images (no registry).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
DIR=${VIRTSHIM_CLUSTER_DIR:-/var/lib/virtshim-cluster}
BIN=${CLUSTER_BIN:-$ROOT/out/cluster/bin}
PKI=$DIR/pki
BRIDGE=vsnodes
HOST_IP=10.65.0.1
API_IP=10.66.0.1
export PATH="$BIN:$PATH"

die() { echo "node: $*" >&2; exit 1; }
usage() { sed -n '/^#   cluster/p' "$0" | sed 's/^#  //' >&2; exit 2; }

[ $# -ge 1 ] || usage
cmd=$1; shift
if [ "$cmd" = list ]; then
  for d in "$DIR"/nodes/node-*; do [ -d "$d" ] && echo "${d##*/node-}"; done
  exit 0
fi
[ $# -ge 1 ] || usage
N=$1; shift
[[ $N =~ ^[0-9]+$ ]] && [ "$N" -ge 2 ] && [ "$N" -le 200 ] || die "the node number is 2..200, not '$N'"
NAME=node-$N
ND=$DIR/nodes/$NAME
NODE_IP=10.65.0.$N
POD_SUBNET=10.66.$N.0/24
CGROUP=virtshim-node-$N
HOST_LINK=vsn$N
LOG=$ND/log
STATE=$ND
SAY="node: $NAME"
# shellcheck source=cluster/lib.sh
. "$HERE/lib.sh"

ns_files() { [ -e "$ND/ns/mnt" ] && mountpoint -q "$ND/ns/mnt"; }
# Whether a containerd runs in the node's network namespace. Not its pid file: the installer
# restarts the node's containerd (a new pid) when it adds virtshim's runtime.
containerd_runs() {
  local want p
  mountpoint -q "$ND/ns/net" 2>/dev/null || return 1
  want="net:[$(stat -L -c %i "$ND/ns/net")]"
  for p in $(pgrep -x containerd); do
    [ "$(readlink "/proc/$p/ns/net")" = "$want" ] && return 0
  done
  return 1
}
on_node() { nsenter --mount="$ND/ns/mnt" --net="$ND/ns/net" --uts="$ND/ns/uts" -- "$@"; }

# The cgroup subtree of the node, in every v1 hierarchy (or the unified one).
cgroup_dirs() {
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    echo "/sys/fs/cgroup/$CGROUP"
  else
    for h in /sys/fs/cgroup/*/; do
      [ -f "$h/cgroup.procs" ] && echo "${h%/}/$CGROUP"
    done
  fi
}
make_cgroups() {
  local d
  for d in $(cgroup_dirs); do
    mkdir -p "$d" "$d/system"
    case $d in
      */cpuset/*) # a new cpuset has no CPUs until given its parent's
        for f in cpuset.cpus cpuset.mems; do
          [ -n "$(cat "$d/$f")" ] || cat "$(dirname "$d")/$f" > "$d/$f"
          [ -n "$(cat "$d/system/$f")" ] || cat "$d/$f" > "$d/system/$f"
        done ;;
    esac
  done
}
# Runs "$@" on the node inside its system cgroup, detached, logging to $LOG/<name>.log.
# `start_here` is for a caller already on the node (inside, the namespace files are plain
# files: they were bound after the node's mount namespace was made).
start() { # name command...
  start_here "$1" nsenter --mount="$ND/ns/mnt" --net="$ND/ns/net" --uts="$ND/ns/uts" -- "${@:2}"
}
start_here() { # name command...
  local name=$1; shift
  alive "$name" && return
  local cgs
  cgs=$(cgroup_dirs | sed 's|$|/system/cgroup.procs|' | tr '\n' ' ')
  # shellcheck disable=SC2016
  setsid sh -c 'for f in $0; do echo $$ > "$f"; done; exec "$@"' "$cgs" "$@" \
    >>"$LOG/$name.log" 2>&1 </dev/null &
  echo $! > "$ND/$name.pid"
}

# Every process in the node's cgroups, frozen first so that nothing forks while they are
# killed: a power cut, which is what `kill` is for.
kill_all() {
  local freezer="" d pids
  for d in $(cgroup_dirs); do case $d in */freezer/*) freezer=$d ;; esac; done
  [ -n "$freezer" ] && [ -d "$freezer" ] && echo FROZEN > "$freezer/freezer.state" 2>/dev/null || true
  for _ in $(seq 50); do
    pids=$(for d in $(cgroup_dirs); do [ -d "$d" ] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null; done | sort -u)
    [ -z "$pids" ] && break
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
    [ -n "$freezer" ] && [ -d "$freezer" ] && echo THAWED > "$freezer/freezer.state" 2>/dev/null || true
    sleep 0.1
  done
  # Thawed again: whatever the node runs next (after a boot) goes into these cgroups.
  [ -n "$freezer" ] && [ -d "$freezer" ] && echo THAWED > "$freezer/freezer.state" 2>/dev/null || true
  [ -z "$pids" ] || die "$NAME: processes left after the power cut: $pids"
  rm -f "$ND"/*.pid
}

# The namespaces go with the last reference: the files here (the processes are gone). With
# the mount namespace go the node's mounts (its tmpfs /run, pods' network namespace files), with
# the network namespace its links.
drop_namespaces() {
  local f
  for f in mnt net uts; do
    mountpoint -q "$ND/ns/$f" 2>/dev/null && umount "$ND/ns/$f"
  done
  ip route del "$POD_SUBNET" 2>/dev/null || true
  ip link del "$HOST_LINK" 2>/dev/null || true
  # Old pods' volume mounts, made by the kubelet in the node's namespace, went with it; the
  # ones that propagated to the host (kubelet's root is on the host's disk) are released here.
  awk -v d="$ND/kubelet" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts |
    sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}

make_namespaces() {
  mkdir -p "$ND/ns" "$ND/etc/containerd" "$ND/etc/cni" "$ND/lib/containerd" "$ND/lib/cni" \
    "$ND/lib/virtshim" "$ND/bin" "$ND/log/pods" "$ND/log/containers" "$ND/kubelet" "$LOG"
  touch "$LOG/containerd.log" /var/log/containerd.log
  # A mount namespace file can only be bound on a private mount.
  if ! mountpoint -q "$ND/ns"; then mount --bind "$ND/ns" "$ND/ns"; fi
  mount --make-private "$ND/ns"
  touch "$ND/ns/mnt" "$ND/ns/net" "$ND/ns/uts"
  # Slave propagation: the host's later mounts reach the node, the node's stay its own.
  # /run's node folders are a tmpfs of the node's own: a power cut empties them.
  unshare --mount="$ND/ns/mnt" --net="$ND/ns/net" --uts="$ND/ns/uts" --propagation slave \
    sh -c '
      set -e
      nd=$1; name=$2
      hostname "$name"
      b() { mkdir -p "$2"; mount --bind "$1" "$2"; }
      mkdir -p /run/containerd /run/virtshim /run/netns
      mount -t tmpfs -o mode=0755 "$name-run-containerd" /run/containerd
      mount -t tmpfs -o mode=0755 "$name-run-virtshim" /run/virtshim
      mount -t tmpfs -o mode=0755 "$name-run-netns" /run/netns
      b "$nd/etc/containerd" /etc/containerd
      b "$nd/etc/cni" /etc/cni/net.d
      b "$nd/lib/containerd" /var/lib/containerd
      b "$nd/lib/cni" /var/lib/cni
      b "$nd/lib/virtshim" /var/lib/virtshim
      b "$nd/bin" /usr/local/bin
      b "$nd/log/pods" /var/log/pods
      b "$nd/log/containers" /var/log/containers
      mount --bind "$nd/log/containerd.log" /var/log/containerd.log
      ip link set lo up
    ' sh "$ND" "$NAME"
  # The link to the host: made in the node, its other end moved to the host (PID 1's namespace).
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  # `replace` is idempotent. (`ip addr show | grep -q … || ip addr add` under pipefail failed
  # in CI: grep quit at the match, `ip` took SIGPIPE writing the next lines, and the add ran
  # on an address already there.)
  ip addr replace "$HOST_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  ip link del "$HOST_LINK" 2>/dev/null || true
  on_node ip link add eth0 type veth peer name "$HOST_LINK" netns 1
  ip link set "$HOST_LINK" master "$BRIDGE" up
  on_node ip addr add "$NODE_IP/24" dev eth0
  on_node ip link set eth0 up
  on_node ip route add default via "$HOST_IP"
  on_node sysctl -qw net.ipv4.ip_forward=1
  ip route replace "$POD_SUBNET" via "$NODE_IP"
}

# The first node's virtshim and guest images, into this node's containerd.
mirror_images() {
  local refs tar
  mapfile -t refs < <(ctr -n k8s.io images ls -q | grep -E '^(localhost/|registry:5000/)' || true)
  [ ${#refs[@]} -gt 0 ] || return 0
  tar=$ND/images.tar
  ctr -n k8s.io images export --platform linux/amd64 "$tar" "${refs[@]}"
  on_node ctr -n k8s.io images import --platform linux/amd64 "$tar" >/dev/null
  rm -f "$tar"
  echo "node: $NAME: ${#refs[@]} images from the first node"
}

up() {
  [ -f "$PKI/ca.key" ] || die "no cluster (run cluster/up.sh first)"
  export KUBECONFIG=$DIR/admin.kubeconfig
  if alive kubelet && containerd_runs; then
    echo "node: $NAME runs"
    return
  fi
  # Half a node (one of its daemons died) is powered off and booted again.
  if ns_files; then kill_all; drop_namespaces; fi
  make_cgroups
  make_namespaces
  node_cert "$NAME" "$NODE_IP"
  write_kubeconfig "$ND/kubelet.kubeconfig" "node-$NAME" "$API_IP"
  # A new node's containerd config, as Debian's package ships it: version 2, CNI plugins
  # where Debian puts them. virtshim's settings and runtime are added by the same tools as
  # on the first node.
  if [ ! -s "$ND/etc/containerd/config.toml" ]; then
    local cni_bin=/usr/lib/cni
    [ -x "$cni_bin/bridge" ] || cni_bin=/opt/cni/bin
    printf 'version = 2\n\n[plugins."io.containerd.grpc.v1.cri".cni]\n  bin_dir = "%s"\n  conf_dir = "/etc/cni/net.d"\n' \
      "$cni_bin" > "$ND/etc/containerd/config.toml"
  fi
  # The node's containerd, set up by the same script as the first node's; started by it in
  # the node's cgroup (so that it survives as the node's, and dies in a power cut).
  on_node env CONTAINERD_LOG=/var/log/containerd.log POD_SUBNET="$POD_SUBNET" \
    CONTAINERD_START="bash $HERE/node.sh start-containerd $N" bash "$ROOT/scripts/node-containerd.sh" |
    sed "s/^/node: $NAME: /"
  mirror_images
  # The node's pods live under its own cgroup, apart from the other nodes' on this machine.
  kubelet_config "$ND/kubelet.yaml" "$NAME" "$NODE_IP" "/$CGROUP"
  start kubelet "$BIN/kubelet" --config="$ND/kubelet.yaml" --kubeconfig="$ND/kubelet.kubeconfig" \
    --root-dir="$ND/kubelet" --node-ip="$NODE_IP" --hostname-override="$NAME"
  wait_node_ready "$NAME"
  echo "node: $NAME Ready ($NODE_IP, pods $POD_SUBNET)"
}

case $cmd in
  up) up ;;
  start-containerd) # (scripts/node-containerd.sh, on the node) containerd in the node's cgroup
    start_here containerd containerd --config /etc/containerd/config.toml ;;
  kill)
    [ -d "$ND" ] || die "$NAME does not exist"
    kill_all
    drop_namespaces
    echo "node: $NAME powered off" ;;
  down)
    if [ -d "$ND" ]; then
      kill_all
      drop_namespaces
      KUBECONFIG=$DIR/admin.kubeconfig kubectl delete node "$NAME" --ignore-not-found --wait=false >/dev/null 2>&1 || true
      mountpoint -q "$ND/ns" && umount "$ND/ns"
      for d in $(cgroup_dirs); do [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true; done
      rm -rf "$ND"
      echo "node: $NAME removed"
    fi ;;
  exec)
    ns_files || die "$NAME is not up"
    on_node "$@" ;;
  *) usage ;;
esac
