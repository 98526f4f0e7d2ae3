#!/usr/bin/env python3
"""Times the foundation's analytical queries on Plinth and on DuckDB, over the
same Parquet files with the same number of threads, and prints a Markdown table.

    python bench/queries.py --plinth target/release/plinth --data DIR [--threads 2] [--runs 3]

Plinth runs each query through `plinth sql --timing` (the time of planning and
execution inside the process, as printed); DuckDB runs it in-process through its
Python API over `read_parquet` of the table's files. Each figure is the median of
--runs runs after one warm-up run. Both must return the same numbers, or the
script stops.
"""
import argparse
import csv
import io
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
    # PostHog's (and ClickHouse windowFunnel's) ordered funnel: the furthest
    # step reached by a chain that any pageview may start, steps at
    # non-decreasing times, the last within 14 days of the first. Plinth
    # answers with its window_funnel aggregate; DuckDB with its fastest
    # equivalent we found (range joins; ASOF joins were slower).
    "3-step funnel (14 days)": (
        """SELECT sum(CASE WHEN level >= 1 THEN 1 ELSE 0 END) AS step1,
       sum(CASE WHEN level >= 2 THEN 1 ELSE 0 END) AS step2,
       sum(CASE WHEN level >= 3 THEN 1 ELSE 0 END) AS step3
FROM (SELECT window_funnel(INTERVAL '14 days', timestamp,
                           event = '$pageview', event = 'signed up', event = 'project created') AS level
      FROM events WHERE event IN ('$pageview', 'signed up', 'project created') GROUP BY person_id)""",
        """WITH p AS (SELECT person_id, timestamp AS t FROM events WHERE event = '$pageview'),
s AS (SELECT person_id, timestamp AS t FROM events WHERE event = 'signed up'),
c AS (SELECT person_id, timestamp AS t FROM events WHERE event = 'project created'),
s2 AS (SELECT s.person_id, s.t, max(p.t) AS start FROM s JOIN p ON p.person_id = s.person_id
       AND p.t <= s.t AND s.t <= p.t + INTERVAL 14 DAY GROUP BY s.person_id, s.t),
s3 AS (SELECT DISTINCT s2.person_id FROM s2 JOIN c ON c.person_id = s2.person_id
       AND c.t >= s2.t AND c.t <= s2.start + INTERVAL 14 DAY)
SELECT (SELECT count(DISTINCT person_id) FROM p), (SELECT count(DISTINCT person_id) FROM s2), (SELECT count(*) FROM s3)""",
    ),
    # Cohorts by the week of a person's first event; retained: active in the
    # week after. Plinth: its retention_periods aggregate; DuckDB: one pass
    # with a list of weeks per person (faster than its self-join form).
    "week-1 retention": (
        """SELECT cohort, count(*) AS users, sum(CASE WHEN array_has(periods, 1) THEN 1 ELSE 0 END) AS retained
FROM (SELECT date_trunc('week', min(timestamp)) AS cohort, retention_periods(timestamp, 'week') AS periods
      FROM events GROUP BY person_id)
GROUP BY cohort ORDER BY cohort""",
        """SELECT cohort, count(*) AS users, count(*) FILTER (WHERE retained) AS retained FROM (
  SELECT list_min(weeks) AS cohort, list_contains(weeks, list_min(weeks) + INTERVAL 7 DAY) AS retained
  FROM (SELECT person_id, list(DISTINCT date_trunc('week', timestamp)) AS weeks FROM events GROUP BY person_id))
GROUP BY cohort ORDER BY cohort""",
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
    rows = list(csv.reader(io.StringIO(result.stdout)))[1:]
    return float(match.group(1)) / 1000.0, rows


def duckdb_time(con, sql):
    started = time.perf_counter()
    rows = con.execute(sql).fetchall()
    return time.perf_counter() - started, rows


def numbers(rows):
    """The numeric cells of each row: both sides must give the same answer
    (timestamps print differently, so they are left out)."""
    out = []
    for row in rows:
        cells = []
        for cell in row:
            try:
                cells.append(float(cell))
            except (TypeError, ValueError):
                pass
        out.append(cells)
    return out


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
        if numbers(rows) != numbers(duck_rows):
            raise SystemExit(f"{name}: the answers differ:\nPlinth {numbers(rows)[:5]}\nDuckDB {numbers(duck_rows)[:5]}")
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"| {name} | {a:.3f} | {b:.3f} | {a / b:.2f} | {len(rows)} |")


if __name__ == "__main__":
    main()
