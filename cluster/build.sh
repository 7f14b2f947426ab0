#!/usr/bin/env bash
# Builds the Kubernetes commands (cluster/k8s/go.mod) and crictl (cluster/crictl/go.mod) from
# their published Go modules into out/cluster/bin. A stamp of the go.mod/go.sum files and the Go
# version skips the build when nothing changed (the Go build cache alone would still relink
# ~400 MB of binaries); a cold build takes 10-13 minutes on 2 cores, a warm one nothing. The stamp
# is kept by scripts/lib/cache.sh; CACHE_DRY_RUN=1 only says what would be built.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../scripts/lib/cache.sh
. "$HERE/../scripts/lib/cache.sh"
BIN=${CLUSTER_BIN:-$HERE/../out/cluster/bin}
mkdir -p "$BIN"
BIN=$(cd "$BIN" && pwd)

if ! command -v go >/dev/null 2>&1; then
  echo "cluster: go not found: install Go 1.26 or newer (it builds Kubernetes and crictl from their modules)" >&2
  exit 1
fi

build() { # module-dir expected-binaries...
  local dir=$1; shift
  local stamp want
  stamp="$BIN/.$(basename "$dir").stamp"
  want=$(cat "$dir/go.mod" "$dir/go.sum" | cache_key)-$(go env GOVERSION)
  if cache_hit "$stamp" "$want" -x "$@"; then
    return
  fi
  cache_miss "$stamp" "cluster: $*" || return 0
  local started=$SECONDS
  echo "cluster: building $* from Go modules ($(basename "$dir")/go.mod; minutes with an empty Go cache, seconds with a warm one)"
  # -mod=readonly: go.sum is committed and must already hold every module (no silent updates).
  (cd "$dir" && go build -mod=readonly -trimpath -ldflags='-s -w' -o "$BIN/" tool)
  cache_stamp "$stamp" "$want"
  echo "cluster: built $* in $((SECONDS - started)) s"
}

# cluster/build.sh [k8s] [crictl]: both by default; `make demo` wants crictl only (≈ 1.5 min cold).
for what in "${@:-k8s crictl}"; do
  for w in $what; do
    case "$w" in
      k8s) build "$HERE/k8s" kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl ;;
      crictl) build "$HERE/crictl" crictl ;;
      *) echo "usage: $0 [k8s] [crictl]" >&2; exit 2 ;;
    esac
  done
done
