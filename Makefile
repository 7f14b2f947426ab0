# virtshim's stable entry points: the README, CI and the issues use these targets.
#   make demo          the main job: boot the test guest through containerd's CRI and show its console
#   make test          every test; installs what it needs first
#   make deps          Debian packages (scripts/deps.sh)
#   make crds          regenerate manifests/crds/ from api/src/types
#   make images        build the test guests, the Debian cloud image and the component images,
#                      import them into containerd (guest-images: the test guests only)
#   make install-node  install the shim on this node's containerd (uninstall-node removes it)
#   make bench         measurements recorded in BENCHMARKS.md

CARGO ?= cargo
EXAMPLES ?= $(abspath ../shared/examples/kubevirt)
export VIRTSHIM_EXAMPLES := $(EXAMPLES)

.PHONY: all build deps test demo crds lint images guest-images install-node uninstall-node node bench

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
	$(CARGO) test --workspace --no-fail-fast -- --show-output

# containerd running with the settings this node needs.
node: deps
	@bash scripts/node-containerd.sh

images: node
	@bash scripts/images.sh all

# What the demo boots: the small test guests and the placeholder image.
guest-images: node
	@bash scripts/images.sh guests

install-node: node
	$(CARGO) build -q --release -p virtshim-shim
	@SHIM=target/release/containerd-shim-virtshim-v2 bash runtimeclass/install-node.sh

uninstall-node:
	@bash runtimeclass/install-node.sh --uninstall

demo: install-node guest-images
	$(CARGO) build -q --release -p virtctl
	@bash scripts/demo.sh

bench: deps
	@bash scripts/bench.sh
