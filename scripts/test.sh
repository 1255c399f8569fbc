#!/usr/bin/env bash
# The whole test suite: unit tests of every crate, the conformance suite against Flink's
# output, and the end-to-end CLI tests. One build profile (release) serves tests and benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
# The state-store tests run against a real S3 endpoint: moto in server mode, which they start
# themselves (or set WEIR_TEST_S3_ENDPOINT to use another S3-compatible endpoint).
moto_ok='import moto.server, importlib.metadata as m; v = tuple(int(x) for x in m.version("moto").split(".")[:3]); assert v >= (5, 2, 1)'
if [ -z "${WEIR_TEST_S3_ENDPOINT:-}" ] && ! python3 -c "$moto_ok" >/dev/null 2>&1; then
    python3 -m pip install --quiet 'moto[server]>=5.2.1'
fi
cargo test --release --workspace --all-targets "$@"
