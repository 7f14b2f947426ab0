# shellcheck shell=bash
# What cluster/up.sh (the first node and the control plane) and cluster/node.sh (node-2 …
# node-N) both write, sourced by both so that a node is made the same way wherever it runs:
# its kubelet's configuration, its certificate and kubeconfig, and the small helpers for the
# daemons they start. Callers set PKI, LOG, STATE (where pid files go) and SAY (the prefix of
# their messages) before using these.

# Whether the daemon whose pid file is $STATE/NAME.pid runs.
alive() { # name
  [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null
}

# Runs COMMAND every half second until it succeeds, for at most SECONDS; says what did not
# happen, and fails, when it never does.
wait_until() { # seconds what command...
  local limit=$1 what=$2; shift 2
  for _ in $(seq $((limit * 2))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "$SAY: $what did not happen within ${limit}s; logs in $LOG" >&2
  return 1
}

# A certificate and key $PKI/NAME.{crt,key} signed by $PKI/SIGNER (default ca), kept when it
# exists. With SANS (`DNS:a,IP:b`) it serves and is a client; without, it is a client only.
sign_cert() { # name subject sans [signer]
  local name=$1 subject=$2 sans=$3 signer=${4:-ca}
  [ -f "$PKI/$name.crt" ] && return
  ( cd "$PKI" || exit 1
    openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -subj "$subject" -out "$name.csr" 2>/dev/null
    if [ -n "$sans" ]; then
      printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$sans" > "$name.ext"
    else
      printf 'extendedKeyUsage=clientAuth\n' > "$name.ext"
    fi
    openssl x509 -req -in "$name.csr" -CA "$signer.crt" -CAkey "$signer.key" -CAcreateserial \
      -days 3650 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext" )
}

# A kubelet's client and serving certificate, as the Node authorizer wants it
# (system:node:NAME in system:nodes).
node_cert() { # node-name node-ip [more SANs]
  sign_cert "node-$1" "/O=system:nodes/CN=system:node:$1" "DNS:$1,IP:$2${3:+,$3}"
}

# A kubeconfig FILE for the apiserver at SERVER_IP with the certificate $PKI/USER.{crt,key};
# kept when it exists.
write_kubeconfig() { # file user server-ip
  local f=$1 user=$2 server=$3
  [ -f "$f" ] && return
  KUBECONFIG=$f kubectl config set-cluster virtshim --server="https://$server:6443" \
    --certificate-authority="$PKI/ca.crt" --embed-certs >/dev/null
  KUBECONFIG=$f kubectl config set-credentials "$user" --client-certificate="$PKI/$user.crt" \
    --client-key="$PKI/$user.key" --embed-certs >/dev/null
  KUBECONFIG=$f kubectl config set-context virtshim --cluster=virtshim --user="$user" >/dev/null
  KUBECONFIG=$f kubectl config use-context virtshim >/dev/null
}

# The KubeletConfiguration of node NAME at NODE_IP, its pods under CGROUP_ROOT when given (the
# extra nodes keep theirs apart from the other nodes' on this machine).
kubelet_config() { # file node-name node-ip [cgroup-root]
  local file=$1 name=$2 ip=$3 cgroup_root=${4:-}
  {
    cat <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication: {anonymous: {enabled: false}, webhook: {enabled: true}, x509: {clientCAFile: $PKI/ca.crt}}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
# This machine kind has cgroup v1, which Kubernetes 1.35+ refuses unless told otherwise.
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
tlsCertFile: $PKI/node-$name.crt
tlsPrivateKeyFile: $PKI/node-$name.key
address: $ip
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# A small disk must not evict the test pods.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
EOF
    [ -z "$cgroup_root" ] || echo "cgroupRoot: $cgroup_root"
  } > "$file"
}

# Waits until the kubelet of node NAME has it Ready.
wait_node_ready() { # node-name
  wait_until 120 "node $1 Ready" sh -c \
    "kubectl get node '$1' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
}
