#!/usr/bin/env bash
# `make fuzz`: runs each fuzz target of fuzz/ (the shim's untrusted inputs) under cargo fuzz for
# FUZZ_SECONDS (default 60) each, from a seed corpus generated here, and fails if one crashes.
#   FUZZ_SECONDS=N      time per target
#   FUZZ_TARGETS="a b"  some targets (default: every target `cargo fuzz list` shows)
#   EXAMPLES=DIR        KubeVirt's example YAMLs for the seeds (default ../shared/examples/kubevirt)
# A crash leaves its input in fuzz/artifacts/<target>/; fix it, then keep the input in
# fuzz/regressions/<target>/, which every later run starts from and `cargo test` replays.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
SECONDS_EACH=${FUZZ_SECONDS:-60}
EXAMPLES=${EXAMPLES:-${VIRTSHIM_EXAMPLES:-$HERE/../shared/examples/kubevirt}}
step() { echo "fuzz: $*"; }

# What cargo fuzz needs: a nightly toolchain (for -Z flags and the sanitizer-coverage passes)
# and cargo-fuzz itself.
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    step "installing the nightly toolchain (minimal profile)"
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    step "installing cargo-fuzz (about 1 minute on 2 cores)"
    cargo install cargo-fuzz --locked
fi

# AddressSanitizer is off: the inputs are read by safe Rust (unsafe_code is forbidden in the
# workspace), so it would find nothing more and halve the speed. Debug assertions and overflow
# checks stay on (cargo fuzz's default); panics, hangs (-timeout) and memory blow-ups
# (-rss_limit_mb) are the findings. 16 codegen units keep the first build (the api and shim
# crates and their dependencies, ~12 minutes on 2 cores) from taking much longer, for slightly
# slower runs. The same flags for build and run, or run would build again.
FLAGS=(--fuzz-dir fuzz -s none --codegen-units 16)
if [ -n "${FUZZ_TARGETS:-}" ]; then
    read -r -a TARGETS <<<"$FUZZ_TARGETS"
else
    mapfile -t TARGETS < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi

step "seed corpus"
manifests=(examples)
if [ -d "$EXAMPLES" ]; then
    manifests+=("$EXAMPLES")
else
    step "no KubeVirt examples at $EXAMPLES (EXAMPLES=DIR): seeds from examples/ and the hostile cases only"
fi
for target in "${TARGETS[@]}"; do
    sources=()
    [ "$target" = vmi_annotation ] && sources=("${manifests[@]}")
    cargo run -q -p virtshim-api --example fuzz_seeds -- \
        "$target" "fuzz/corpus/$target" "fuzz/$target.dict" "${sources[@]}"
done

step "building ${TARGETS[*]} (first time: ~12 minutes on 2 cores)"
start=$(date +%s)
cargo +nightly fuzz build "${FLAGS[@]}"
step "built in $(($(date +%s) - start)) s"

failed=()
for target in "${TARGETS[@]}"; do
    corpora=("fuzz/corpus/$target")
    [ -d "fuzz/regressions/$target" ] && corpora+=("fuzz/regressions/$target")
    mkdir -p "fuzz/corpus/$target"
    options=(-max_total_time="$SECONDS_EACH" -timeout=10 -print_final_stats=1)
    [ -f "fuzz/$target.dict" ] && options+=(-dict="fuzz/$target.dict")
    step "$target for ${SECONDS_EACH} s (one process; the corpus grows in fuzz/corpus/$target)"
    start=$(date +%s)
    # -jobs/-workers are left at one process: the machine has 2 cores and others build on it.
    if cargo +nightly fuzz run "${FLAGS[@]}" "$target" "${corpora[@]}" -- "${options[@]}" \
        2>"fuzz/$target.log"; then
        grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' "fuzz/$target.log" || true
        step "$target: no crash in $(($(date +%s) - start)) s"
    else
        # The panic and libFuzzer's summary, not cargo-fuzz's own backtrace.
        grep -E -A4 'panicked at|^==[0-9]+== ERROR|^SUMMARY' "fuzz/$target.log" | head -n 30 || true
        grep -A2 '^Reproduce with' "fuzz/$target.log" || true
        step "$target: FOUND A CRASH (fuzz/artifacts/$target/, full log fuzz/$target.log)"
        failed+=("$target")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    step "crashed: ${failed[*]}"
    exit 1
fi
step "every target ran ${SECONDS_EACH} s without a crash: ${TARGETS[*]}"
