#!/usr/bin/env bash
# The whole test suite: unit tests of every crate, the conformance suite against Flink's
# output, and the end-to-end CLI tests. One build profile (release) serves tests and benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --workspace --all-targets "$@"
