"""DuckDB's NDJSON-to-Parquet time for the file `plinth import` reads: a
reference for the import figure of BENCHMARKS.md.

    python bench/import_duckdb.py FILE.ndjson [--threads 2]

DuckDB does less than the import: it reads the five top-level fields
(properties kept as JSON text), resolves no persons, quarantines nothing,
does not sort, and writes one zstd Parquet file.
"""

import argparse
import os
import tempfile
import time

import duckdb


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    connection = duckdb.connect()
    connection.execute(f"SET threads = {args.threads}")
    with tempfile.TemporaryDirectory() as out:
        target = os.path.join(out, "events.parquet")
        started = time.perf_counter()
        connection.execute(
            f"""
            COPY (
                SELECT * FROM read_ndjson(?, columns = {{
                    uuid: 'VARCHAR', event: 'VARCHAR', distinct_id: 'VARCHAR',
                    timestamp: 'TIMESTAMPTZ', properties: 'JSON'
                }})
            ) TO '{target}' (FORMAT parquet, COMPRESSION zstd)
            """,
            [args.file],
        )
        seconds = time.perf_counter() - started
        rows = connection.execute(f"SELECT count(*) FROM '{target}'").fetchone()[0]
    print(f"DuckDB {duckdb.__version__}, {args.threads} threads: {rows} rows in {seconds:.1f} s "
          f"({rows / seconds:,.0f} rows/s)")


if __name__ == "__main__":
    main()
