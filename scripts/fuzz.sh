#!/usr/bin/env bash
# Runs Weir's fuzz targets (fuzz/, docs/fuzzing.md) one after another.
#
#   scripts/fuzz.sh [SECONDS] [TARGET…]     fuzz each target for SECONDS (default 600); no
#                                           target: all of them
#   scripts/fuzz.sh --write-seeds           regenerate the binary seed corpora under fuzz/corpus
#   scripts/fuzz.sh --reproduce TARGET FILE run one input (a crash artifact) once
#
# Each run fuzzes a fresh copy of fuzz/corpus/<TARGET> in fuzz/work/<TARGET>/corpus (ignored by
# git), so the committed seeds are read, never grown. Exits non-zero at the first target that
# crashes, hangs or runs out of memory, printing the reproducer's path (under fuzz/artifacts/).
#
# Environment: FUZZ_TARGET_DIR (default /work/target-fuzz if /work exists, else fuzz/target),
# FUZZ_TIMEOUT (seconds one input may take before it counts as a hang; default 10),
# FUZZ_RSS_LIMIT_MB (default 2048), FUZZ_ARGS (extra libFuzzer flags).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
fuzz_dir=$repo/fuzz
if [[ -d /work ]]; then default_target_dir=/work/target-fuzz; else default_target_dir=$fuzz_dir/target; fi
target_dir=${FUZZ_TARGET_DIR:-$default_target_dir}
unit_timeout=${FUZZ_TIMEOUT:-10}
rss_limit_mb=${FUZZ_RSS_LIMIT_MB:-2048}

# One build configuration for every target; docs/fuzzing.md says why no sanitizer.
build_flags=(--sanitizer none --codegen-units 16 --target-dir "$target_dir")

ensure_tools() {
    if ! rustup toolchain list | grep -q '^nightly'; then
        echo "fuzz.sh: installing the nightly toolchain (cargo-fuzz needs it)" >&2
        rustup toolchain install nightly --profile minimal
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "fuzz.sh: installing cargo-fuzz" >&2
        nice -n 10 cargo install cargo-fuzz --locked
    fi
}

all_targets() {
    (cd "$fuzz_dir" && cargo +nightly fuzz list)
}

build() {
    (cd "$fuzz_dir" && nice -n 10 cargo +nightly fuzz build "${build_flags[@]}" "$@")
}

binary() {
    echo "$target_dir/x86_64-unknown-linux-gnu/release/$1"
}

write_seeds() {
    build
    for target in $(all_targets); do
        WEIR_FUZZ_WRITE_SEEDS=$fuzz_dir/corpus "$(binary "$target")"
    done
}

reproduce() {
    local target=$1 input=$2
    build "$target"
    RUST_BACKTRACE=1 "$(binary "$target")" -timeout="$unit_timeout" -rss_limit_mb="$rss_limit_mb" "$input"
}

# Fuzzes one target for $1 seconds; prints a one-line summary and returns libFuzzer's status.
run_target() {
    local seconds=$1 target=$2
    local work=$fuzz_dir/work/$target artifacts=$fuzz_dir/artifacts/$target
    rm -rf "$work"
    mkdir -p "$work/corpus" "$artifacts"
    local seeds=$fuzz_dir/corpus/$target
    mkdir -p "$seeds"
    cp -r "$seeds/." "$work/corpus/"
    local log=$work/fuzz.log
    local command=(nice -n 19 "$(binary "$target")" "$work/corpus"
        -max_total_time="$seconds" -timeout="$unit_timeout" -rss_limit_mb="$rss_limit_mb"
        -artifact_prefix="$artifacts/" -print_final_stats=1 ${FUZZ_ARGS:-})
    echo "fuzz.sh: $target for ${seconds}s: ${command[*]}" >&2
    local started=$SECONDS status=0
    RUST_BACKTRACE=1 "${command[@]}" >"$log" 2>&1 || status=$?
    local took=$((SECONDS - started))
    local last_status execs rate
    last_status=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    local corpus_files corpus_bytes
    corpus_files=$(find "$work/corpus" -type f | wc -l)
    corpus_bytes=$(du -sb "$work/corpus" | cut -f1)
    echo "fuzz.sh: $target: status $status after ${took}s; execs ${execs:-?} (${rate:-?}/s);" \
        "corpus $corpus_files files, $corpus_bytes bytes; last: ${last_status:-none}; log $log"
    if [[ $status -ne 0 ]]; then
        local reproducer
        reproducer=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|weir-fuzz:' "$log" | head -n 5 >&2 || true
        echo "fuzz.sh: $target FAILED; reproducer: ${reproducer:-see $log}" >&2
        echo "fuzz.sh: replay with: scripts/fuzz.sh --reproduce $target ${reproducer:-<input>}" >&2
    fi
    return "$status"
}

main() {
    ensure_tools
    case "${1:-}" in
        --write-seeds)
            write_seeds
            return
            ;;
        --reproduce)
            [[ $# -eq 3 ]] || { echo "usage: $0 --reproduce TARGET FILE" >&2; return 2; }
            reproduce "$2" "$3"
            return
            ;;
    esac
    local seconds=600
    if [[ ${1:-} =~ ^[0-9]+$ ]]; then
        seconds=$1
        shift
    fi
    local targets=("$@")
    if [[ ${#targets[@]} -eq 0 ]]; then
        mapfile -t targets < <(all_targets)
    fi
    for target in "${targets[@]}"; do
        build "$target"
        run_target "$seconds" "$target"
    done
}

main "$@"
