# virtshim's stable entry points: the README, CI and the issues use these targets.
#   make demo   the main job (today: validate KubeVirt's examples and print the defaulted VM)
#   make test   every test; installs what it needs first
#   make deps   Debian packages (scripts/deps.sh)
#   make crds   regenerate manifests/crds/ from api/src/types

CARGO ?= cargo
EXAMPLES ?= $(abspath ../shared/examples/kubevirt)
export VIRTSHIM_EXAMPLES := $(EXAMPLES)

.PHONY: all build deps test demo crds lint

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

test: deps
	$(CARGO) test --workspace --no-fail-fast -- --show-output

demo: deps
	$(CARGO) build -q -p virtctl --release
	@echo "== virtctl validate -f $(EXAMPLES)"
	-@target/release/virtctl validate -f $(EXAMPLES)
	@echo "== virtctl validate -f $(EXAMPLES)/vm-cirros.yaml -o yaml"
	@target/release/virtctl validate -f $(EXAMPLES)/vm-cirros.yaml -o yaml
