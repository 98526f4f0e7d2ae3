"""Wall time of a full build of the small project (3 seeds, 5 models, 20 data
tests; crates/plinth/tests/fixtures/small_shop) by dbt-core + dbt-duckdb and by
`plinth build`, each from scratch (a fresh DuckDB file / data directory), as a
user runs them from the shell.

    python bench/pipelines_small.py [--runs 5]

Plinth's binary comes from $PLINTH_BIN (default
$CARGO_TARGET_DIR/release/plinth); dbt is the `dbt` beside this Python
(the test venv: .ci/run installs dbt-core and dbt-duckdb from
.ci/requirements.txt). Prints the median of each and the ratio.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "crates/plinth/tests/fixtures/small_shop"


def timed(command, cwd):
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{command[0]} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/plinth-target"))
    plinth = os.environ.get("PLINTH_BIN", f"{target}/release/plinth")
    dbt = str(Path(sys.executable).parent / "dbt")

    work = Path(tempfile.mkdtemp(prefix="plinth-bench-pipelines-"))
    dbt_times, plinth_times = [], []
    try:
        for run in range(args.runs):
            dbt_dir = work / f"dbt{run}"
            plinth_dir = work / f"plinth{run}"
            shutil.copytree(PROJECT, dbt_dir)
            shutil.copytree(PROJECT, plinth_dir)
            dbt_times.append(
                timed([dbt, "build", "--profiles-dir", ".", "--project-dir", "."], dbt_dir)
            )
            plinth_times.append(
                timed(
                    [plinth, "build", "--project", ".", "--data", str(plinth_dir / "data")],
                    plinth_dir,
                )
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    dbt_median = statistics.median(dbt_times)
    plinth_median = statistics.median(plinth_times)
    print(f"small project (3 seeds, 5 models, 20 tests), median of {args.runs} full builds")
    print(f"dbt-core + dbt-duckdb: {dbt_median:.3f} s  (runs: {', '.join(f'{t:.3f}' for t in dbt_times)})")
    print(f"plinth build:          {plinth_median:.3f} s  (runs: {', '.join(f'{t:.3f}' for t in plinth_times)})")
    print(f"ratio: {dbt_median / plinth_median:.1f}x")


if __name__ == "__main__":
    main()
