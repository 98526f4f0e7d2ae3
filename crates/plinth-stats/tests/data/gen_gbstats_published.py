"""Writes gbstats_published.json: the cases of gbstats' own published test
suite, as plinth-stats requests.

Source: the test files of the gbstats 0.8.0 sdist
(`pip download --no-deps --no-binary :all: gbstats==0.8.0`), which are
GrowthBook's `packages/stats/tests/`:
  - tests/frequentist/test_tests.py  (TwoSidedTTest, SequentialTwoSidedTTest)
  - tests/bayesian/test_tests.py     (EffectBayesianABTest)
  - tests/test_gbstats.py            (analyze_metric_df: runner-level cases)

For each case the file keeps the inputs (copied from the test file), the
values that test file asserts ("published", with the number of decimals it
rounds to), and the full-precision answer of gbstats 0.8.0 itself
("gbstats"). Runner-level cases: the runner uses a flat prior
(prior_proper=False) and relative differences; where it replaces an
unavailable result by a raw difference for display, the test-level answer
is kept and the published value is left out.

Run: python3 gen_gbstats_published.py  (needs gbstats==0.8.0)
"""

import json
import math
from importlib.metadata import version
from pathlib import Path

from gbstats_request import run_gbstats

MEAN_A = {"n": 3407, "sum": 1396.87, "sum_squares": 52377.9767}
MEAN_B = {"n": 3461, "sum": 2422.7, "sum_squares": 134698.29}
MEAN_A_3000 = {"n": 3000, "sum": 1396.87, "sum_squares": 52377.9767}

# test_gbstats.py data frames, per arm ("zero" is the baseline).
DIM_ONE_ZERO = {"n": 100, "sum": 270, "sum_squares": 848.79}
DIM_ONE_ONE = {"n": 120, "sum": 300, "sum_squares": 869}
RATIO_ZERO = {
    "n": 100, "sum": 270, "sum_squares": 848.79,
    "denominator_sum": 510, "denominator_sum_squares": 810, "main_denominator_sum_product": -900,
}
RATIO_ONE = {
    "n": 120, "sum": 300, "sum_squares": 869,
    "denominator_sum": 500, "denominator_sum_squares": 800, "main_denominator_sum_product": -905,
}
RA_ZERO = {
    "n": 3001, "sum": 300, "sum_squares": 600,
    "covariate_sum": 210, "covariate_sum_squares": 415, "main_covariate_sum_product": -20,
}
RA_ONE = {
    "n": 3000, "sum": 222, "sum_squares": 555,
    "covariate_sum": 120, "covariate_sum_squares": 405, "main_covariate_sum_product": -10,
}


def without_squares(arm):
    return {k: v for k, v in arm.items() if "sum_squares" not in k}


CASES = [
    # tests/frequentist/test_tests.py
    ("frequentist/test_tests.py::test_two_sided_ttest", 5,
     {"test": "ttest", "metric": "mean", "control": MEAN_A, "treatment": MEAN_B},
     {"lift": round((0.7 - 0.41) / 0.41, 5), "ci": [-0.03526, 1.44989], "stddev": 0.37879, "p_value": 0.06191}),
    ("frequentist/test_tests.py::test_two_sided_ttest_absolute", 5,
     {"test": "ttest", "metric": "mean", "difference": "absolute", "control": MEAN_A, "treatment": MEAN_B},
     {"lift": 0.29, "ci": [0.04538, 0.53462], "stddev": 0.12478, "p_value": 0.02016}),
    ("frequentist/test_tests.py::test_two_sided_ttest_binom", 5,
     {"test": "ttest", "metric": "proportion", "control": {"n": 28, "sum": 14}, "treatment": {"n": 30, "sum": 16}},
     {"lift": round((16 / 30 - 0.5) / 0.5, 5), "ci": [-0.47767, 0.61101], "stddev": 0.2717, "p_value": 0.80707}),
    ("frequentist/test_tests.py::test_two_sided_ttest_missing_variance", 5,
     {"test": "ttest", "metric": "mean", "control": {**MEAN_A, "n": 2}, "treatment": MEAN_B},
     {"lift": 0, "ci": [0, 0], "stddev": 0, "p_value": 1, "unavailable": "ZERO_NEGATIVE_VARIANCE"}),
    ("frequentist/test_tests.py::test_sequential_test_runs", 5,
     {"test": "sequential", "metric": "mean", "sequential_tuning_parameter": 1000,
      "control": MEAN_A_3000, "treatment": MEAN_B},
     {"lift": 0.50336, "ci": [-0.55844, 1.56516], "stddev": 0.33341, "p_value": 1}),
    ("frequentist/test_tests.py::test_sequential_test_runs_prop", 5,
     {"test": "sequential", "metric": "proportion",
      "control": {"n": 3000, "sum": 1396}, "treatment": {"n": 3461, "sum": 2422}},
     {"lift": 0.50386, "ci": [0.40098, 0.60675], "stddev": 0.03386, "p_value": 0.0}),
    ("frequentist/test_tests.py::test_sequential_test_runs_ra", 5,
     {"test": "sequential", "metric": "mean",
      "control": {**MEAN_A_3000, "covariate_sum": 16.87, "covariate_sum_squares": 527.9767,
                  "main_covariate_sum_product": 1},
      "treatment": {**MEAN_B, "covariate_sum": 22.7, "covariate_sum_squares": 1348.29,
                    "main_covariate_sum_product": 1}},
     {"lift": 0.50338, "ci": [-0.50969, 1.51646], "stddev": 0.33341, "p_value": 1}),
    # tests/bayesian/test_tests.py
    ("bayesian/test_tests.py::test_bayesian_binomial_ab_test", 5,
     {"test": "bayesian", "metric": "proportion", "control": {"n": 100, "sum": 49}, "treatment": {"n": 100, "sum": 51}},
     {"lift": 0.04082, "ci": [-0.24779, 0.32943], "stddev": 0.14725, "chance_to_win": 0.60918,
      "risk": {"control": 0.0814, "treatment": 0.04058}}),
    ("bayesian/test_tests.py::TestBinom::test_missing_data", 5,
     {"test": "bayesian", "metric": "proportion", "control": {"n": 0, "sum": 0}, "treatment": {"n": 0, "sum": 0}},
     {"lift": 0, "chance_to_win": 0.5}),
    ("bayesian/test_tests.py::test_bayesian_gaussian_ab_test", 5,
     {"test": "bayesian", "metric": "mean", "control": {"n": 10, "sum": 100, "sum_squares": 1002.25},
      "treatment": {"n": 10, "sum": 105, "sum_squares": 1111.5}},
     {"lift": 0.05, "ci": [-0.02, 0.12], "stddev": 0.03572, "chance_to_win": 0.91923,
      "risk": {"control": 0.05131, "treatment": 0.00131}}),
    ("bayesian/test_tests.py::test_bayesian_gaussian_ab_test_informative", 5,
     {"test": "bayesian", "metric": "mean", "prior": {"mean": 0.1, "stddev": math.sqrt(0.1), "proper": True},
      "control": {"n": 10, "sum": 100, "sum_squares": 1002.25},
      "treatment": {"n": 10, "sum": 105, "sum_squares": 1111.5}},
     {"lift": 0.05063, "ci": [-0.01893, 0.12019], "stddev": 0.03549, "chance_to_win": 0.92315,
      "risk": {"control": 0.05186, "treatment": 0.00123}}),
    ("bayesian/test_tests.py::TestNorm::test_missing_data", 5,
     {"test": "bayesian", "metric": "mean", "control": {"n": 0, "sum": 0, "sum_squares": 0},
      "treatment": {"n": 0, "sum": 0, "sum_squares": 0}},
     {"lift": 0, "chance_to_win": 0.5}),
    ("bayesian/test_tests.py::test_bayesian_effect_relative_effect (absolute)", None,
     {"test": "bayesian", "metric": "mean", "difference": "absolute", "prior": {"mean": 1, "stddev": 1, "proper": True},
      "control": {"n": 100, "sum": 1000, "sum_squares": 200000},
      "treatment": {"n": 100, "sum": 1100, "sum_squares": 200005}},
     None),
    ("bayesian/test_tests.py::test_bayesian_effect_relative_effect (relative)", None,
     {"test": "bayesian", "metric": "mean", "prior": {"mean": 1, "stddev": 1, "proper": True},
      "control": {"n": 100, "sum": 1000, "sum_squares": 200000},
      "treatment": {"n": 100, "sum": 1100, "sum_squares": 200005}},
     None),
    # tests/test_gbstats.py (runner level, dimension "one", DECIMALS = 9)
    ("test_gbstats.py::test_get_metric_df_new", 9,
     {"test": "bayesian", "metric": "mean", "control": DIM_ONE_ZERO, "treatment": DIM_ONE_ONE},
     {"lift": -0.074074074, "chance_to_win": 0.071834168, "risk": {"treatment": 0.075691131}}),
    ("test_gbstats.py::test_get_metric_df_bayesian_ratio", 9,
     {"test": "bayesian", "metric": "ratio", "control": RATIO_ZERO, "treatment": RATIO_ONE},
     {"lift": 0.133333333, "chance_to_win": 0.694926359, "risk": {"treatment": 0.050934045}}),
    ("test_gbstats.py::test_get_metric_df_inverse", 9,
     {"test": "bayesian", "metric": "mean", "inverse": True, "control": DIM_ONE_ZERO, "treatment": DIM_ONE_ONE},
     {"lift": -0.074074074, "chance_to_win": 1 - 0.071834168, "risk": {"treatment": 0.001617057}}),
    ("test_gbstats.py::test_get_metric_df_zero_val (bayesian)", None,
     {"test": "bayesian", "metric": "mean", "inverse": True,
      "control": {"n": 3, "sum": 20, "sum_squares": 443}, "treatment": {"n": 1, "sum": 1, "sum_squares": 1}},
     None),
    ("test_gbstats.py::test_get_metric_df_ratio_zero_denom (bayesian)", None,
     {"test": "bayesian", "metric": "ratio",
      "control": {**RATIO_ZERO, "denominator_sum": 0, "denominator_sum_squares": 0, "main_denominator_sum_product": 0},
      "treatment": RATIO_ONE},
     None),
    ("test_gbstats.py::test_get_metric_df_frequentist", 9,
     {"test": "ttest", "metric": "mean", "control": DIM_ONE_ZERO, "treatment": DIM_ONE_ONE},
     {"lift": -0.074074074, "p_value": 0.145219005}),
    ("test_gbstats.py::test_get_metric_df_frequentist_ratio", 9,
     {"test": "ttest", "metric": "ratio", "control": RATIO_ZERO, "treatment": RATIO_ONE},
     {"lift": 0.133333333, "p_value": 0.610663339}),
    ("test_gbstats.py::test_get_metric_df_zero_val (frequentist)", 9,
     {"test": "ttest", "metric": "mean",
      "control": {"n": 3, "sum": 20, "sum_squares": 443}, "treatment": {"n": 1, "sum": 1, "sum_squares": 1}},
     {"p_value": 1}),
    ("test_gbstats.py::test_analyze_metric_df_ra", 9,
     {"test": "cuped", "metric": "mean", "control": RA_ZERO, "treatment": RA_ONE},
     {"lift": -0.281707154, "p_value": 0.003736297}),
    ("test_gbstats.py::test_analyze_metric_df_ra_proportion", 9,
     {"test": "cuped", "metric": "proportion",
      "control": without_squares(RA_ZERO), "treatment": without_squares(RA_ONE)},
     {"lift": -0.316211568, "p_value": 0.00000035}),
    ("test_gbstats.py::test_analyze_metric_df_sequential", 9,
     {"test": "sequential", "metric": "mean", "sequential_tuning_parameter": 600,
      "control": DIM_ONE_ZERO, "treatment": DIM_ONE_ONE},
     {"lift": -0.074074074, "p_value": 0.892332229, "ci": [-0.233322085, None]}),
]


def main():
    cases = []
    for name, decimals, request, published in CASES:
        case = {"name": name, "request": request, "gbstats": run_gbstats(request)}
        if published is not None:
            case["published"] = published
            case["published_decimals"] = decimals
        cases.append(case)
    out = {
        "provenance": (
            "Cases of GrowthBook's published gbstats test suite (packages/stats/tests/, as shipped in "
            f"the gbstats {version('gbstats')} sdist); 'published' = the values the test file asserts, "
            "rounded to 'published_decimals'; 'gbstats' = the full-precision answer of gbstats "
            f"{version('gbstats')} (scipy {version('scipy')}). Generated by gen_gbstats_published.py."
        ),
        "cases": cases,
    }
    path = Path(__file__).with_name("gbstats_published.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
