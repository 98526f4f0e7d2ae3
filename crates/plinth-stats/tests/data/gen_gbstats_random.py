"""Writes gbstats_random.json: random plinth-stats requests and the answers
of GrowthBook's gbstats 0.8.0 to them.

The sufficient statistics are drawn so that they are consistent (a variance
and a correlation are chosen first, and the sums of squares and products
derived from them), over a wide range of sizes, means and spreads, for every
two-arm test and option plinth-stats exposes, plus the SRM check. A few
percent of cases are degenerate on purpose (zero variance, zero baseline).

Run: python3 gen_gbstats_random.py  (needs gbstats==0.8.0; fixed seed)
"""

import json
import math
import random
from importlib.metadata import version
from pathlib import Path

from gbstats_request import run_gbstats

SEED = 20240601
CASES_PER_KIND = 60


def mean_sums(rng, n, prefix=""):
    mean = rng.choice([rng.uniform(0.01, 5), rng.uniform(-3, 50), 10 ** rng.uniform(-2, 3)])
    sd = abs(mean) * 10 ** rng.uniform(-1.5, 1) + 1e-3
    total = n * mean
    return {
        prefix + "sum": total,
        prefix + "sum_squares": (n - 1) * sd * sd + total * total / n,
    }, mean, sd


def proportion_sums(rng, n, prefix=""):
    p = rng.choice([rng.uniform(0.01, 0.99), 10 ** rng.uniform(-3, -0.5)])
    conversions = min(n, max(0, round(n * p)))
    p_hat = conversions / n
    return {prefix + "sum": float(conversions)}, p_hat, math.sqrt(p_hat * (1 - p_hat))


def sums(rng, kind, n, prefix=""):
    return (proportion_sums if kind == "proportion" else mean_sums)(rng, n, prefix)


def sum_products(rng, n, mean_x, sd_x, mean_y, sd_y):
    correlation = rng.uniform(-0.95, 0.95)
    covariance = correlation * sd_x * sd_y
    return (n - 1) * covariance + n * mean_x * n * mean_y / n


def arm(rng, request, n):
    metric = request["metric"]
    if metric == "ratio":
        numerator, mean_m, sd_m = sums(rng, request.get("numerator_metric", "mean"), n)
        denominator, mean_d, sd_d = sums(rng, request.get("denominator_metric", "mean"), n, "denominator_")
        if mean_d <= 0:
            denominator, mean_d, sd_d = sums(rng, "proportion", n, "denominator_")
            denominator["denominator_sum_squares"] = denominator["denominator_sum"]
        out = {"n": n, **numerator, **denominator}
        out["main_denominator_sum_product"] = sum_products(rng, n, mean_m, sd_m, mean_d, sd_d)
        return out
    main, mean_post, sd_post = sums(rng, metric, n)
    out = {"n": n, **main}
    if request.get("_covariate"):
        covariate, mean_pre, sd_pre = sums(rng, request.get("covariate_metric", metric), n, "covariate_")
        out.update(covariate)
        out["main_covariate_sum_product"] = sum_products(rng, n, mean_post, sd_post, mean_pre, sd_pre)
    return out


def sizes(rng):
    n_control = rng.choice([rng.randint(2, 50), rng.randint(50, 5000), rng.randint(5000, 2_000_000)])
    n_treatment = max(2, int(n_control * rng.uniform(0.7, 1.3)))
    return n_control, n_treatment


def common_options(rng, request):
    request["difference"] = rng.choice(["relative", "absolute"])
    if rng.random() < 0.5:
        request["alpha"] = rng.choice([0.01, 0.05, 0.1, rng.uniform(0.001, 0.3)])


def two_arm_request(rng, test):
    request = {"test": test}
    request["metric"] = rng.choice(["proportion", "mean", "ratio"] if test != "cuped" else ["proportion", "mean"])
    if request["metric"] == "ratio" and rng.random() < 0.3:
        request["numerator_metric"] = "proportion"
    if request["metric"] != "ratio" and (test == "cuped" or rng.random() < 0.25):
        request["_covariate"] = True
        if rng.random() < 0.3:
            request["covariate_metric"] = rng.choice(["proportion", "mean"])
    common_options(rng, request)
    if test in ("ttest", "cuped"):
        request["alternative"] = rng.choice(["two-sided", "two-sided", "greater", "less"])
        if rng.random() < 0.2:
            request["test_value"] = rng.uniform(-0.05, 0.05)
    if test == "sequential":
        request["sequential_tuning_parameter"] = rng.choice([5000, 10 ** rng.uniform(2, 6)])
    if test == "bayesian":
        request["inverse"] = rng.random() < 0.3
        if rng.random() < 0.7:
            request["prior"] = {
                "mean": rng.uniform(-0.2, 0.2),
                "stddev": 10 ** rng.uniform(-2, 0.5),
                "proper": rng.random() < 0.8,
            }
            request["prior_type"] = rng.choice(["relative", "absolute"])
    n_control, n_treatment = sizes(rng)
    request["control"] = arm(rng, request, n_control)
    request["treatment"] = arm(rng, request, n_treatment)
    request.pop("_covariate", None)
    if rng.random() < 0.04 and request["metric"] != "ratio":
        # degenerate on purpose: no spread in the treatment arm
        if request["metric"] == "proportion":
            request["treatment"]["sum"] = 0.0
        elif request.get("covariate_metric") != "proportion":
            request["treatment"]["n"] = 1
    return request


def srm_request(rng):
    arms = rng.randint(2, 5)
    weights = [rng.choice([1.0, rng.uniform(0.05, 1.0)]) for _ in range(arms)]
    total = rng.choice([rng.randint(10, 1000), rng.randint(1000, 10_000_000)])
    skew = rng.choice([0.0, rng.uniform(0, 0.05)])
    counts = []
    for w in weights:
        share = w / sum(weights) * (1 + rng.uniform(-skew, skew))
        counts.append(max(0, round(total * share)))
    request = {"test": "srm", "counts": counts}
    if rng.random() < 0.8:
        request["weights"] = weights
    return request


def main():
    rng = random.Random(SEED)
    cases = []
    for test in ("ttest", "sequential", "bayesian", "cuped"):
        for _ in range(CASES_PER_KIND * (2 if test in ("ttest", "bayesian") else 1)):
            request = two_arm_request(rng, test)
            cases.append({"request": request, "gbstats": run_gbstats(request)})
    for _ in range(CASES_PER_KIND):
        request = srm_request(rng)
        cases.append({"request": request, "gbstats": run_gbstats(request)})
    out = {
        "provenance": (
            f"Random requests (seed {SEED}) answered by gbstats {version('gbstats')} "
            f"(scipy {version('scipy')}, numpy {version('numpy')}). Generated by gen_gbstats_random.py."
        ),
        "cases": cases,
    }
    path = Path(__file__).with_name("gbstats_random.json")
    path.write_text(json.dumps(out) + "\n")
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
