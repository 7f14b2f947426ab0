#!/usr/bin/env bash
# `make bench`: builds in release and runs the benchmarks recorded in BENCHMARKS.md.
# Arguments go to virtshim-bench (--only boot,memory,network,console,portforward; --runs N).
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
echo "bench: release build of the shim and virtshim-bench (first time: several minutes on 2 cores)"
# Two runs, not one: virtshim-bench builds the shim again by itself (-p virtshim-shim), and a
# shim built together with the benchmark has other features unified into its dependencies, so
# that second build would start over.
cargo build --release -p virtshim-shim
cargo build --release -p virtshim-tests --bin virtshim-bench
exec target/release/virtshim-bench "$@"
