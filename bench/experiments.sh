#!/usr/bin/env bash
# Experiment results for 10M exposed persons and 5 metrics from raw events,
# beside DuckDB (the same sums) and gbstats 0.8 (the same statistics):
#   bash bench/experiments.sh [WORK_DIR] [PERSONS]
# PLINTH_BIN is the binary to time (default: the release build). Generation
# plus import of ~30M events takes minutes; the data set is reused after.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-/tmp/plinth-bench}"
PERSONS="${2:-10000000}"
PLINTH="${PLINTH_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/plinth-target}/release/plinth}"
# Its own venv: gbstats pulls in pandas and scipy, which the tests do not need.
VENV="${PLINTH_BENCH_VENV:-$HOME/.cache/plinth-bench-venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check 'gbstats==0.8.*' 'duckdb==2.0.0'
"$VENV/bin/python" bench/experiments.py --plinth "$PLINTH" --work "$WORK" --persons "$PERSONS"
