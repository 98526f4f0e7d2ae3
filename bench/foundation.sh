#!/usr/bin/env bash
# Reproduces the foundation figures of BENCHMARKS.md:
#   bash bench/foundation.sh [WORK_DIR]
# Needs a release build (cargo build --release --bin plinth) and the test venv
# (.ci/run creates it) for DuckDB. Writes about 5 GB (10M) and 8 GB (100M).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-/tmp/plinth-bench}"
PLINTH="${CARGO_TARGET_DIR:-$HOME/.cache/plinth-target}/release/plinth"
PYTHON="${PLINTH_PYTHON:-$HOME/.cache/plinth-test-venv/bin/python}"
mkdir -p "$WORK"

echo "== import of 10M demo events from NDJSON"
[ -f "$WORK/demo10m.ndjson" ] || "$PLINTH" demo --ndjson "$WORK/demo10m.ndjson" \
  --users 240000 --days 90 --seed 42 --end-date 2026-10-31
rm -rf "$WORK/data10m"
/usr/bin/time -f "peak RSS %M KiB, wall %e s" "$PLINTH" import --data "$WORK/data10m" "$WORK/demo10m.ndjson"
"$PLINTH" maintain --data "$WORK/data10m" --vacuum-grace 0 >/dev/null
echo "== DuckDB turning the same file into Parquet, for reference"
"$PYTHON" bench/import_duckdb.py "$WORK/demo10m.ndjson" --threads 2

echo "== queries at 10M events, Plinth vs DuckDB on the same Parquet files"
"$PYTHON" bench/queries.py --plinth "$PLINTH" --data "$WORK/data10m" --threads 2 --runs 3

if [ "${SKIP_100M:-}" != 1 ]; then
  echo "== queries at 100M events"
  if [ ! -d "$WORK/data100m" ]; then
    /usr/bin/time -f "peak RSS %M KiB, wall %e s" "$PLINTH" demo --data "$WORK/data100m" \
      --users 2400000 --days 90 --seed 42 --end-date 2026-10-31 --no-serve
  fi
  "$PYTHON" bench/queries.py --plinth "$PLINTH" --data "$WORK/data100m" --threads 2 --runs "${RUNS_100M:-1}"
fi
