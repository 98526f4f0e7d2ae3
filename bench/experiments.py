"""Experiment results from raw events at scale: Plinth against gbstats.

Generates PERSONS exposed persons (half control, half test) with the events
of five metrics, imports them, then times

- `plinth experiment results` end to end: exposures, per-person metrics and
  per-variant sums from the raw events (DataFusion), then the statistics;
- DuckDB computing the same per-variant sums from the same Parquet files
  (`SET threads = 2`), as a reference for the query part;
- gbstats 0.8 running the same tests (t-test and Bayesian for each metric,
  CUPED where Plinth applies it) on the sufficient statistics Plinth
  returned, and checks that its lifts agree with Plinth's.

Usage (bench/experiments.sh sets up the venv):
    python bench/experiments.py --plinth PLINTH --work DIR --persons 10000000
"""

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import duckdb

DAY_US = 86_400_000_000
START = "2026-01-08"
END = "2026-03-31"

EXPERIMENT = f"""
name: bench
flag: bench
variants: [control, test]
start: {START}
end: {END}
primary_metrics:
  - {{name: activation, kind: conversion, event: activated, window_days: 7}}
secondary_metrics:
  - {{name: pageviews, kind: count, event: page viewed}}
  - {{name: revenue, kind: sum, event: purchase, property: amount}}
  - name: revenue per purchase
    kind: ratio
    numerator: {{kind: sum, event: purchase, property: amount}}
    denominator: {{kind: count, event: purchase}}
  - {{name: purchased, kind: conversion, event: purchase, window_days: 14}}
cuped: {{pre_period_days: 7}}
"""


def generate(con, persons, path):
    """About 3 events per person: the exposure, activation (30% control,
    33% test), 0-2 pageviews after and 0-1 in the week before exposure,
    and a purchase (20%, 22%) with an amount."""
    con.execute(
        f"""
        CREATE TEMP TABLE p AS
        SELECT 'p' || i AS id,
               CASE WHEN hash(i * 7 + 1) % 2 = 0 THEN 'control' ELSE 'test' END AS v,
               TIMESTAMP '{START}' + to_seconds((hash(i * 7 + 2) % (50 * 86400))::BIGINT) AS t0,
               (hash(i * 7 + 3) % 1000000) / 1e6 AS ra,
               (hash(i * 7 + 4) % 1000000) / 1e6 AS rb,
               (hash(i * 7 + 5) % 3)::INT AS views,
               (hash(i * 7 + 6) % 2)::INT AS pre_views,
               (10 + hash(i * 7 + 7) % 90)::INT AS amount
        FROM range({persons}) t(i)
        """
    )
    ts = "strftime({}, '%Y-%m-%dT%H:%M:%SZ')"
    con.execute(
        f"""
        COPY (
          SELECT id AS distinct_id, '$feature_flag_called' AS event, {ts.format('t0')} AS timestamp,
                 '{{"$feature_flag":"bench","$feature_flag_response":"' || v || '"}}' AS properties FROM p
          UNION ALL
          SELECT id, 'activated', {ts.format("t0 + INTERVAL 1 HOUR")}, '{{}}' FROM p
          WHERE ra < CASE WHEN v = 'test' THEN 0.33 ELSE 0.30 END
          UNION ALL
          SELECT id, 'page viewed', {ts.format("t0 + to_hours(k + 2)")}, '{{}}' FROM p, range(views) r(k)
          UNION ALL
          SELECT id, 'page viewed', {ts.format("t0 - to_days(k + 1)")}, '{{}}' FROM p, range(pre_views) r(k)
          UNION ALL
          SELECT id, 'purchase', {ts.format("t0 + INTERVAL 2 DAY")}, '{{"amount":' || amount || '}}' FROM p
          WHERE rb < CASE WHEN v = 'test' THEN 0.22 ELSE 0.20 END
        ) TO '{path}' (FORMAT parquet)
        """
    )
    return con.execute(f"SELECT count(*) FROM '{path}'").fetchone()[0]


def duckdb_sums(con, data):
    """The per-variant sums of the five metrics and their covariates."""
    start = con.execute(f"SELECT epoch_us(TIMESTAMPTZ '{START} 00:00:00+00')").fetchone()[0]
    end = con.execute(f"SELECT epoch_us(TIMESTAMPTZ '{END} 23:59:59.999999+00')").fetchone()[0]
    events = f"read_parquet('{data}/tables/events/**/*.parquet')"
    sql = f"""
    WITH x AS (
      SELECT person_id, min(epoch_us(timestamp)) AS t0,
             min(json_extract_string(properties, '$."$feature_flag_response"')) AS v,
             max(json_extract_string(properties, '$."$feature_flag_response"')) AS v2
      FROM {events}
      WHERE event = '$feature_flag_called' AND json_extract_string(properties, '$."$feature_flag"') = 'bench'
        AND epoch_us(timestamp) BETWEEN {start} AND {end}
      GROUP BY person_id),
    m AS (
      SELECT person_id, event, epoch_us(timestamp) AS ts,
             CASE WHEN event = 'purchase' THEN coalesce(json_extract(properties, '$.amount')::DOUBLE, 0) END AS amount
      FROM {events}
      WHERE event IN ('activated', 'page viewed', 'purchase')
        AND epoch_us(timestamp) BETWEEN {start - 7 * DAY_US} AND {end}),
    pp AS (
      SELECT x.v,
        max(CASE WHEN m.event = 'activated' AND m.ts >= x.t0 AND m.ts < x.t0 + {7 * DAY_US} THEN 1 ELSE 0 END) AS act,
        max(CASE WHEN m.event = 'activated' AND m.ts < x.t0 AND m.ts >= x.t0 - {7 * DAY_US} THEN 1 ELSE 0 END) AS act_pre,
        sum(CASE WHEN m.event = 'page viewed' AND m.ts >= x.t0 THEN 1 ELSE 0 END) AS pv,
        sum(CASE WHEN m.event = 'page viewed' AND m.ts < x.t0 AND m.ts >= x.t0 - {7 * DAY_US} THEN 1 ELSE 0 END) AS pv_pre,
        sum(CASE WHEN m.event = 'purchase' AND m.ts >= x.t0 THEN m.amount ELSE 0 END) AS revenue,
        sum(CASE WHEN m.event = 'purchase' AND m.ts < x.t0 AND m.ts >= x.t0 - {7 * DAY_US} THEN m.amount ELSE 0 END) AS revenue_pre,
        sum(CASE WHEN m.event = 'purchase' AND m.ts >= x.t0 THEN 1 ELSE 0 END) AS purchases,
        max(CASE WHEN m.event = 'purchase' AND m.ts >= x.t0 AND m.ts < x.t0 + {14 * DAY_US} THEN 1 ELSE 0 END) AS bought,
        max(CASE WHEN m.event = 'purchase' AND m.ts < x.t0 AND m.ts >= x.t0 - {7 * DAY_US} THEN 1 ELSE 0 END) AS bought_pre
      FROM x LEFT JOIN m ON m.person_id = x.person_id
      WHERE x.v = x.v2 GROUP BY x.person_id, x.v)
    SELECT v, count(*),
      sum(act), sum(act * act_pre), sum(act_pre),
      sum(pv), sum(pv * pv), sum(pv_pre), sum(pv_pre * pv_pre), sum(pv * pv_pre),
      sum(revenue), sum(revenue * revenue), sum(revenue_pre), sum(revenue_pre * revenue_pre), sum(revenue * revenue_pre),
      sum(purchases), sum(purchases * purchases), sum(revenue * purchases),
      sum(bought), sum(bought * bought_pre), sum(bought_pre)
    FROM pp GROUP BY v ORDER BY v"""
    return con.execute(sql).fetchall()


def gbstats_statistic(s):
    from gbstats.models.statistics import (
        ProportionStatistic,
        RatioStatistic,
        RegressionAdjustedStatistic,
        SampleMeanStatistic,
    )

    kind = s["kind"]
    if kind == "proportion":
        return ProportionStatistic(n=s["n"], sum=s["sum"])
    if kind == "mean":
        return SampleMeanStatistic(n=s["n"], sum=s["sum"], sum_squares=s["sum_squares"])
    if kind == "ratio":
        return RatioStatistic(
            n=s["n"],
            m_statistic=gbstats_statistic(s["numerator"]),
            d_statistic=gbstats_statistic(s["denominator"]),
            m_d_sum_of_products=s["numerator_denominator_sum_products"],
        )
    return RegressionAdjustedStatistic(
        n=s["n"],
        post_statistic=gbstats_statistic(s["post"]),
        pre_statistic=gbstats_statistic(s["pre"]),
        post_pre_sum_of_products=s["post_pre_sum_products"],
        theta=0,
    )


def run_gbstats(results):
    """Every metric's t-test and Bayesian test, as Plinth ran them; returns
    the lifts (to compare) and the statistics objects' build is included."""
    from gbstats.bayesian.tests import EffectBayesianABTest
    from gbstats.frequentist.tests import TwoSidedTTest
    from gbstats.models.statistics import RegressionAdjustedStatistic, compute_theta

    lifts = []
    for metric in results["metrics"]:
        control, treatment = (gbstats_statistic(v["statistic"]) for v in metric["variants"])
        if isinstance(control, RegressionAdjustedStatistic):
            theta = compute_theta(control, treatment)
            control = dataclasses.replace(control, theta=theta)
            treatment = dataclasses.replace(treatment, theta=theta)
        frequentist = TwoSidedTTest(control, treatment).compute_result()
        EffectBayesianABTest(control, treatment).compute_result()
        lifts.append(frequentist.expected)
    return lifts


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--plinth", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--persons", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--query-memory", default="8GiB")
    args = parser.parse_args()

    os.makedirs(args.work, exist_ok=True)
    source = os.path.join(args.work, f"experiment-{args.persons}.parquet")
    data = os.path.join(args.work, f"experiment-{args.persons}")
    con = duckdb.connect()
    con.execute("SET threads = 2")
    if not os.path.isdir(data):
        started = time.perf_counter()
        events = generate(con, args.persons, source)
        print(f"generated {events} events for {args.persons} persons in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        subprocess.run([args.plinth, "import", "--data", data, source], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([args.plinth, "maintain", "--data", data, "--vacuum-grace", "0"], check=True, stdout=subprocess.DEVNULL)
        print(f"imported in {time.perf_counter() - started:.1f} s")
        definition = os.path.join(args.work, "bench-experiment.yml")
        with open(definition, "w") as f:
            f.write(EXPERIMENT)
        subprocess.run([args.plinth, "experiment", "create", "--data", data, definition], check=True, stdout=subprocess.DEVNULL)

    # The hash join's build side (one row per exposed person) cannot spill:
    # at 10M persons it is over 1 GiB, so the default 2 GiB per query is
    # raised rather than measuring spilling aggregates.
    command = [args.plinth, "experiment", "results", "bench", "--data", data, "--format", "json",
               "--threads", "2", "--query-memory", args.query_memory]
    def timed(command):
        """Wall and CPU (user + system) seconds of one run, and its output."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall, cpu, out

    load = os.getloadavg()
    times, cpus = [], []
    for _ in range(args.runs + 1):  # the first run warms the page cache
        wall, cpu, out = timed(command)
        times.append(wall)
        cpus.append(cpu)
    results = json.loads(out)
    plinth_time = statistics.median(times[1:])
    # What every command pays before its query: opening the store and
    # loading the person overrides (the whole `persons` table).
    fixed = [timed([args.plinth, "sql", "--data", data, "--threads", "2", "SELECT 1"])[:2] for _ in range(args.runs)]

    duck_times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        rows = duckdb_sums(con, data)
        duck_times.append(time.perf_counter() - started)
    units = {v["variant"]: v["units"] for v in results["variants"]}
    by_name = {m["name"]: m for m in results["metrics"]}
    for row in rows:
        assert units[row[0]] == row[1], f"units differ: Plinth {units}, DuckDB {rows}"
        arm = [v["variant"] for v in results["metrics"][0]["variants"]].index(row[0])
        for name, column in [("activation", 2), ("pageviews", 5), ("revenue", 10), ("purchased", 18)]:
            plinth_sum = by_name[name]["variants"][arm]["statistic"]["post"]["sum"]
            assert plinth_sum == row[column], f"{name} differs: Plinth {plinth_sum}, DuckDB {row[column]}"

    started = time.perf_counter()
    repeats = 100
    for _ in range(repeats):
        lifts = run_gbstats(results)
    gbstats_time = (time.perf_counter() - started) / repeats
    plinth_lifts = [m["comparisons"][0]["lift"] for m in results["metrics"]]
    worst = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(plinth_lifts, lifts))

    print(f"exposed persons: {sum(units.values())} {units}; metrics: {len(results['metrics'])}")
    print(f"plinth experiment results (raw events to results, 2 threads): {plinth_time:.3f} s (median of {args.runs}; runs {[round(t, 3) for t in times]}), CPU {statistics.median(cpus[1:]):.3f} s")
    print(f"  of which opening the store and loading person overrides (plinth sql 'SELECT 1'): {statistics.median(w for w, _ in fixed):.3f} s, CPU {statistics.median(c for _, c in fixed):.3f} s")
    print(f"  load average before the runs: {load[0]:.2f}")
    print(f"DuckDB per-variant sums from the same Parquet files (2 threads): {statistics.median(duck_times):.3f} s")
    print(f"gbstats 0.8 on Plinth's sufficient statistics (t-test + Bayesian, {len(lifts)} metrics): {gbstats_time * 1000:.3f} ms")
    print(f"largest relative difference of lifts, Plinth vs gbstats: {worst:.2e}")
    if worst > 1e-6:
        sys.exit("lifts disagree with gbstats")


if __name__ == "__main__":
    main()
