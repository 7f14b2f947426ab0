# Shell functions for containerd's configuration, sourced by install-node.sh and
# scripts/node-containerd.sh.

HERE_CONFIG_SH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CRI='plugins."io.containerd.grpc.v1.cri"'

# containerd_toml FILE get|set|del KEY [VALUE]: edits config.toml by key path (see the script).
containerd_toml() { python3 "$HERE_CONFIG_SH/containerd_toml.py" "$@"; }

# The pid of the node's containerd: the one reading CONFIG on the default socket, not a private
# instance (tests start their own with another --config or --address).
node_containerd_pid() {
  local pid
  local -a args
  for pid in $(pgrep -x containerd); do
    mapfile -d '' args < "/proc/$pid/cmdline" 2>/dev/null || continue
    local config=/etc/containerd/config.toml other=0 i
    for ((i = 1; i < ${#args[@]}; i++)); do
      case "${args[i]}" in
        --config|-c) config=${args[i+1]:-} ;;
        --config=*) config=${args[i]#--config=} ;;
        --address|-a|--address=*|--root|--state) other=1 ;;
      esac
    done
    if [ "$other" = 0 ] && [ "$config" = "${CONFIG:-/etc/containerd/config.toml}" ]; then
      echo "$pid"
      return 0
    fi
  done
}

# Restarts containerd so it reads its configuration again. Running shims, and so running VMs,
# are not touched: containerd reconnects to them.
restart_containerd() {
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet containerd 2>/dev/null; then
    systemctl restart containerd
  else
    local pid cmd
    pid=$(node_containerd_pid)
    if [ -z "$pid" ]; then
      echo "containerd is not running" >&2
      return 0
    fi
    # No service manager: restart the running containerd with the same command line.
    mapfile -d '' cmd < "/proc/$pid/cmdline"
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    nohup "${cmd[@]}" >>/var/log/containerd.log 2>&1 &
  fi
  for _ in $(seq 100); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
  ctr version >/dev/null 2>&1 || { echo "containerd did not come back; see /var/log/containerd.log" >&2; return 1; }
}
