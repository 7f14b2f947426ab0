# virtshim's stable entry points: the README, CI and the issues use these targets.
#   make demo          the main job: boot the test guest through containerd's CRI and show its console
#   make test          every test; installs what it needs first
#   make deps          Debian packages (scripts/deps.sh)
#   make crds          regenerate manifests/crds/ from api/src/types
#   make images        build the test guests, the Debian cloud image and the component images,
#                      import them into containerd (guest-images: the test guests only)
#   make install-node  install the shim on this node's containerd (uninstall-node removes it)
#   make bench         measurements recorded in BENCHMARKS.md (ONLY=boot,memory,... some sections,
#                      RUNS=N runs each; all sections, 5 runs by default)
#   make fuzz          each fuzz target (fuzz/) for FUZZ_SECONDS (default 60) from generated seeds;
#                      fails on a crash (installs the Debian packages, nightly and cargo-fuzz first)
#   make cluster       a single-node Kubernetes on this machine (cluster/up.sh; idempotent),
#                      KUBECONFIG=/var/lib/virtshim-cluster/admin.kubeconfig; NODES=3 adds node-2
#                      and node-3, each with its own namespaces, containerd and kubelet (cluster/node.sh)
#   make cluster-down  stop it (WIPE=1 also removes its state)
#   make crictl        crictl built from its Go module into out/cluster/bin (the demo shows crictl ps/inspect)

CARGO ?= cargo
EXAMPLES ?= $(abspath ../shared/examples/kubevirt)
export VIRTSHIM_EXAMPLES := $(EXAMPLES)
# kubectl, crictl and the Kubernetes commands the project builds from Go modules.
export PATH := $(CURDIR)/out/cluster/bin:$(PATH)
CLUSTER_DIR ?= /var/lib/virtshim-cluster
# make test's cluster: the one KUBECONFIG names, else the project's own, started first.
TEST_KUBECONFIG := $(if $(KUBECONFIG),$(KUBECONFIG),$(CLUSTER_DIR)/admin.kubeconfig)

.PHONY: all build deps test demo crds lint images guest-images install-node uninstall-node node bench fuzz \
	cluster cluster-down crictl release-bins

all: build

deps:
	@bash scripts/deps.sh

build:
	$(CARGO) build --workspace --release

crds:
	$(CARGO) run -q -p virtshim-api --bin crdgen -- manifests/crds

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: deps lint
	@$(if $(KUBECONFIG),echo "test: using the cluster KUBECONFIG names ($(KUBECONFIG))",bash cluster/up.sh)
	KUBECONFIG=$(TEST_KUBECONFIG) $(CARGO) test --workspace --no-fail-fast -- --show-output

cluster: deps
	@NODES=$(NODES) bash cluster/up.sh

cluster-down:
	@bash cluster/down.sh $(if $(filter 1,$(WIPE)),--wipe)

crictl: deps
	@bash cluster/build.sh crictl

# containerd running with the settings this node needs.
node: deps
	@bash scripts/node-containerd.sh

images: node
	@bash scripts/images.sh all

# What the demo boots: the small test guests and the placeholder image.
guest-images: node
	@bash scripts/images.sh guests

# The release binaries the node and the demo use, in one cargo run with its own progress
# (a first build takes several minutes on 2 cores).
release-bins:
	@echo "build: release binaries of the shim, virtctl and the installer (first time: ~10 min on 2 cores; then seconds)"
	$(CARGO) build --release -p virtshim-shim -p virtctl -p virtshim-installer

# The node installer, run locally (the DaemonSet runs the same binary with --host).
install-node: node release-bins
	target/release/virtshim-installer install --shim target/release/containerd-shim-virtshim-v2

uninstall-node:
	$(CARGO) build --release -q -p virtshim-installer
	target/release/virtshim-installer uninstall --wait-for-vms 30

demo: install-node guest-images crictl
	@bash scripts/demo.sh

bench: deps
	@bash scripts/bench.sh $(if $(ONLY),--only $(ONLY)) $(if $(RUNS),--runs $(RUNS))

fuzz: deps
	@EXAMPLES=$(EXAMPLES) bash scripts/fuzz.sh
