#!/usr/bin/env python3
"""Times the foundation's analytical queries on Plinth and on DuckDB, over the
same Parquet files with the same number of threads, and prints a Markdown table.

    python bench/queries.py --plinth target/release/plinth --data DIR [--threads 2] [--runs 3]

Plinth runs each query through `plinth sql --timing` (the time of planning and
execution inside the process, as printed); DuckDB runs it in-process through its
Python API over `read_parquet` of the table's files. Each figure is the median of
--runs runs after one warm-up run.
"""
import argparse
import re
import statistics
import subprocess
import time

import duckdb

QUERIES = {
    "events per day": (
        "SELECT date_trunc('day', timestamp) AS day, count(*) FROM events GROUP BY day ORDER BY day",
        None,
    ),
    "unique persons per day by browser": (
        "SELECT date_trunc('day', timestamp) AS day, properties->>'$browser' AS browser, "
        "count(DISTINCT person_id) FROM events GROUP BY day, browser ORDER BY day, browser",
        "SELECT date_trunc('day', timestamp) AS day, json_extract_string(properties, '$.\"$browser\"') AS browser, "
        "count(DISTINCT person_id) FROM events GROUP BY day, browser ORDER BY day, browser",
    ),
    "top events": (
        "SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY n DESC LIMIT 10",
        None,
    ),
    "3-step funnel (14 days)": (
        """WITH s1 AS (SELECT person_id, min(timestamp) AS t1 FROM events WHERE event = '$pageview' GROUP BY person_id),
s2 AS (SELECT e.person_id, min(e.timestamp) AS t2 FROM events e JOIN s1 ON e.person_id = s1.person_id
       WHERE e.event = 'signed up' AND e.timestamp >= s1.t1 AND e.timestamp < s1.t1 + INTERVAL '14 days' GROUP BY e.person_id),
s3 AS (SELECT e.person_id FROM events e JOIN s2 ON e.person_id = s2.person_id JOIN s1 ON s1.person_id = s2.person_id
       WHERE e.event = 'project created' AND e.timestamp >= s2.t2 AND e.timestamp < s1.t1 + INTERVAL '14 days' GROUP BY e.person_id)
SELECT (SELECT count(*) FROM s1) AS step1, (SELECT count(*) FROM s2) AS step2, (SELECT count(*) FROM s3) AS step3""",
        None,
    ),
    "week-1 retention": (
        """WITH first_seen AS (SELECT person_id, date_trunc('week', min(timestamp)) AS cohort FROM events GROUP BY person_id),
activity AS (SELECT DISTINCT person_id, date_trunc('week', timestamp) AS week FROM events)
SELECT f.cohort, count(DISTINCT f.person_id) AS users, count(DISTINCT a.person_id) AS retained
FROM first_seen f LEFT JOIN activity a ON a.person_id = f.person_id AND a.week = f.cohort + INTERVAL '7 days'
GROUP BY f.cohort ORDER BY f.cohort""",
        None,
    ),
}


def plinth_time(plinth, data, sql, threads):
    result = subprocess.run(
        [plinth, "sql", "--data", data, "--format", "csv", "--timing",
         "--threads", str(threads), "--query-memory", "8GiB", sql],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"plinth failed: {result.stderr}")
    match = re.search(r"time: ([0-9.]+) ms", result.stderr)
    return float(match.group(1)) / 1000.0, result.stdout.count("\n") - 1


def duckdb_time(con, sql):
    started = time.perf_counter()
    rows = con.execute(sql).fetchall()
    return time.perf_counter() - started, len(rows)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--plinth", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    con = duckdb.connect()
    con.execute(f"SET threads = {args.threads}")
    glob = f"{args.data}/tables/events/**/*.parquet"
    con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{glob}')")
    total = con.execute("SELECT count(*) FROM events").fetchone()[0]
    print(f"{total} events; {args.threads} threads; median of {args.runs} runs after a warm-up\n")
    print("| query | Plinth (s) | DuckDB (s) | ratio Plinth/DuckDB | rows |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (plinth_sql, duck_sql) in QUERIES.items():
        duck_sql = duck_sql or plinth_sql
        plinth_time(args.plinth, args.data, plinth_sql, args.threads)
        duckdb_time(con, duck_sql)
        ours, theirs = [], []
        for _ in range(args.runs):
            t, rows = plinth_time(args.plinth, args.data, plinth_sql, args.threads)
            ours.append(t)
            t, duck_rows = duckdb_time(con, duck_sql)
            theirs.append(t)
        if rows != duck_rows:
            raise SystemExit(f"{name}: Plinth returned {rows} rows, DuckDB {duck_rows}")
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"| {name} | {a:.3f} | {b:.3f} | {a / b:.2f} | {rows} |")


if __name__ == "__main__":
    main()
