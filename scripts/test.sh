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
# tests/standalone.rs fuzzes the API with schemathesis, pinned, installed apart from the
# system's Python packages (pip --target: needs no venv module, is allowed where the system
# Python is externally managed, and cannot clash with moto's requirements).
schemathesis_version=4.32.5
export WEIR_SCHEMATHESIS_DIR="${WEIR_SCHEMATHESIS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/weir/schemathesis}"
schemathesis_ok="import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$schemathesis_version')"
if ! PYTHONPATH="$WEIR_SCHEMATHESIS_DIR" python3 -c "$schemathesis_ok" >/dev/null 2>&1; then
    python3 -m pip install --quiet --upgrade --target "$WEIR_SCHEMATHESIS_DIR" "schemathesis==$schemathesis_version"
fi
cargo test --release --workspace --all-targets "$@"
