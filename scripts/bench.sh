#!/usr/bin/env bash
# `make bench`: builds in release and runs the benchmarks recorded in BENCHMARKS.md.
# Arguments go to virtshim-bench (--only boot,memory,network,console,portforward; --runs N).
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
echo "bench: release build of the shim and virtshim-bench (first time: several minutes on 2 cores)"
cargo build --release -p virtshim-shim -p virtshim-tests --bin virtshim-bench
exec target/release/virtshim-bench "$@"
