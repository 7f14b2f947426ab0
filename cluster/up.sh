#!/usr/bin/env bash
# `make cluster`: a Kubernetes on this machine for virtshim's tests and for trying virtshim as a
# cluster user would: one node, or N with NODES=N (the others made by cluster/node.sh).
# Idempotent: what runs is left alone, what is down is started.
#
#   etcd (Debian's etcd-server), kube-apiserver (RBAC, the aggregation layer's front-proxy
#   certificates, aggregator routing to endpoints), kube-controller-manager, kube-scheduler, and a
#   kubelet on the node's own containerd (scripts/node-containerd.sh). virtshim itself is then
#   installed as the README tells a user: component images imported, `kubectl apply -k manifests/`,
#   and the installer DaemonSet puts the shim and its runtime on the node.
#
# Pods use the node's CNI bridge vsnode0 (10.66.0.0/24); the node's address is its gateway
# 10.66.0.1, so every connection stays between this host and the namespaces it made. There is no
# kube-proxy: one DNAT rule makes the `kubernetes` Service (10.96.0.1:443) reach the apiserver,
# and the apiserver reaches aggregated APIs and webhooks through their endpoints.
#
# State: $VIRTSHIM_CLUSTER_DIR (default /var/lib/virtshim-cluster): pki/, etcd/, kubelet/, log/,
# and admin.kubeconfig, which `make test` and the README use. When the control plane is not
# running, up.sh starts it on a fresh etcd and kubelet state (the certificates are kept), so a
# run never inherits the objects of an earlier one; `cluster/down.sh --wipe` removes everything.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
DIR=${VIRTSHIM_CLUSTER_DIR:-/var/lib/virtshim-cluster}
BIN=${CLUSTER_BIN:-$ROOT/out/cluster/bin}
PKI=$DIR/pki
LOG=$DIR/log
NODE_IP=10.66.0.1
BRIDGE=vsnode0
SERVICE_IP=10.96.0.1
NODE=$(hostname)
export PATH="$BIN:$PATH"
started=$SECONDS

STATE=$DIR
SAY=cluster
# shellcheck source=cluster/lib.sh
. "$HERE/lib.sh"
step() { echo "cluster: $*"; }
start() { # name command...
  local name=$1; shift
  alive "$name" && return
  setsid "$@" >>"$LOG/$name.log" 2>&1 < /dev/null &
  echo $! > "$DIR/$name.pid"
}

bash "$HERE/build.sh"
mkdir -p "$PKI" "$LOG"

# A control plane that is not running starts from nothing but its certificates (and without
# the extra nodes of an earlier run).
if ! alive apiserver; then
  for n in $(bash "$HERE/node.sh" list); do bash "$HERE/node.sh" down "$n"; done
  for c in kubelet scheduler controller-manager apiserver etcd; do
    alive "$c" && kill "$(cat "$DIR/$c.pid")" 2>/dev/null || true
  done
  if [ -d "$DIR/kubelet" ]; then
    # The kubelet's pod volumes, and its root dir itself (it bind-mounts it onto itself), may
    # still be mounted after an unclean stop.
    awk -v d="$DIR/kubelet" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts |
      sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  fi
  rm -rf "$DIR/etcd" "$DIR/kubelet"
fi
mkdir -p "$DIR/etcd" "$DIR/kubelet"

# The node: containerd with this machine's settings and its CNI bridge, virtshim's runtime.
bash "$ROOT/scripts/node-containerd.sh" | sed 's/^/cluster: /'
ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
# `replace` is idempotent; a `show | grep -q` test can fail under pipefail (SIGPIPE).
ip addr replace "$NODE_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
sysctl -qw net.ipv4.ip_forward=1
for chain in OUTPUT PREROUTING; do
  rule=(-d "$SERVICE_IP/32" -p tcp --dport 443 -j DNAT --to-destination "$NODE_IP:6443")
  iptables -t nat -C "$chain" "${rule[@]}" 2>/dev/null || iptables -t nat -A "$chain" "${rule[@]}"
done

# Certificates: one CA for the cluster, one for the front proxy (aggregated APIs trust it).
cd "$PKI"
ca() { # name cn
  [ -f "$1.crt" ] && return
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -subj "/CN=$2" -days 3650 -out "$1.crt" 2>/dev/null
}
ca ca virtshim-cluster-ca
ca front-proxy-ca virtshim-cluster-front-proxy-ca
sign_cert apiserver /CN=kube-apiserver \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:localhost,IP:127.0.0.1,IP:$SERVICE_IP,IP:$NODE_IP"
sign_cert admin "/O=system:masters/CN=admin" ""
sign_cert controller-manager /CN=system:kube-controller-manager ""
sign_cert scheduler /CN=system:kube-scheduler ""
sign_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" ""
sign_cert front-proxy-client /CN=front-proxy-client "" front-proxy-ca
node_cert "$NODE" "$NODE_IP" "DNS:localhost,IP:127.0.0.1"
[ -f sa.key ] || { openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null; }
cd - >/dev/null

kubeconfig() { write_kubeconfig "$DIR/$1.kubeconfig" "$2" "$NODE_IP"; }
kubeconfig admin admin
kubeconfig controller-manager controller-manager
kubeconfig scheduler scheduler
kubeconfig kubelet "node-$NODE"
export KUBECONFIG=$DIR/admin.kubeconfig

step "control plane"
start etcd etcd --name virtshim-cluster --data-dir "$DIR/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster virtshim-cluster=http://127.0.0.1:2380
wait_until 30 "etcd answering" curl -sf http://127.0.0.1:2379/health
start apiserver kube-apiserver --etcd-servers=http://127.0.0.1:2379 \
  --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port=6443 \
  --service-cluster-ip-range=10.96.0.0/16 --allow-privileged=true \
  --client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc --authorization-mode=Node,RBAC \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
  --enable-aggregator-routing=true
wait_until 90 "the apiserver ready" kubectl get --raw /readyz
start controller-manager kube-controller-manager --kubeconfig="$DIR/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$DIR/controller-manager.kubeconfig" --authorization-kubeconfig="$DIR/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --use-service-account-credentials=true --controllers='*,-nodeipam,-cloud-node-lifecycle' \
  --vmodule=garbagecollector=2,graph_builder=2 \
  ${VIRTSHIM_CLUSTER_KCM_FLAGS:-}
start scheduler kube-scheduler --kubeconfig="$DIR/scheduler.kubeconfig" \
  --authentication-kubeconfig="$DIR/scheduler.kubeconfig" --authorization-kubeconfig="$DIR/scheduler.kubeconfig" \
  --bind-address=127.0.0.1

step "kubelet on the node's containerd"
kubelet_config "$DIR/kubelet.yaml" "$NODE" "$NODE_IP"
start kubelet kubelet --config="$DIR/kubelet.yaml" --kubeconfig="$DIR/kubelet.kubeconfig" \
  --root-dir="$DIR/kubelet" --node-ip="$NODE_IP" --hostname-override="$NODE"
wait_node_ready "$NODE"
# The default ServiceAccount exists once the controller-manager runs; pods need it.
wait_until 60 "the default ServiceAccount" kubectl -n default get serviceaccount default

# NODES=N: node-2 .. node-N join (cluster/node.sh), nodes beyond N leave; unset: left as they are.
if [ -n "${NODES:-}" ]; then
  [[ $NODES =~ ^[0-9]+$ ]] && [ "$NODES" -ge 1 ] || { echo "cluster: NODES is a number >= 1, not '$NODES'" >&2; exit 2; }
  for n in $(bash "$HERE/node.sh" list); do
    [ "$n" -le "$NODES" ] || bash "$HERE/node.sh" down "$n"
  done
  for n in $(seq 2 "$NODES"); do bash "$HERE/node.sh" up "$n"; done
fi

step "up in $((SECONDS - started)) s: export KUBECONFIG=$KUBECONFIG"
