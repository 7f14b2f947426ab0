#!/usr/bin/env bash
# `make bench`: builds in release and runs the benchmarks recorded in BENCHMARKS.md.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
cargo build -q --release -p virtshim-shim -p virtshim-tests --bin virtshim-bench
exec target/release/virtshim-bench "$@"
