"""Answers a plinth-stats JSON request with GrowthBook's gbstats.

Shared by the generators of the test vectors in this folder. It maps the
request schema documented in plinth-stats' crate docs onto gbstats 0.8.0's
classes (`pip install gbstats==0.8.0`) and returns the numbers plinth-stats
must reproduce, at full precision. Infinite interval ends become None (JSON
null), as plinth-stats serializes them.
"""

import math

from gbstats.bayesian.tests import EffectBayesianABTest, EffectBayesianConfig, GaussianPrior
from gbstats.frequentist.tests import (
    FrequentistConfig,
    OneSidedTreatmentGreaterTTest,
    OneSidedTreatmentLesserTTest,
    SequentialConfig,
    SequentialTwoSidedTTest,
    TwoSidedTTest,
)
from gbstats.models.statistics import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
)
from gbstats.utils import check_srm


def _finite_or_none(x):
    x = float(x)
    return x if math.isfinite(x) else None


def _base(arm, kind, prefix):
    if kind == "proportion":
        return ProportionStatistic(n=arm["n"], sum=arm[prefix + "sum"])
    return SampleMeanStatistic(
        n=arm["n"], sum=arm[prefix + "sum"], sum_squares=arm[prefix + "sum_squares"]
    )


def _arm(request, arm):
    metric = request["metric"]
    if metric == "ratio":
        return RatioStatistic(
            n=arm["n"],
            m_statistic=_base(arm, request.get("numerator_metric", "mean"), ""),
            d_statistic=_base(arm, request.get("denominator_metric", "mean"), "denominator_"),
            m_d_sum_of_products=arm["main_denominator_sum_product"],
        )
    post = _base(arm, metric, "")
    if "covariate_sum" not in arm:
        return post
    return RegressionAdjustedStatistic(
        n=arm["n"],
        post_statistic=post,
        pre_statistic=_base(arm, request.get("covariate_metric", metric), "covariate_"),
        post_pre_sum_of_products=arm["main_covariate_sum_product"],
        theta=0,
    )


def run_gbstats(request):
    test = request["test"]
    if test == "srm":
        weights = request.get("weights", [1.0] * len(request["counts"]))
        return {"p_value": float(check_srm(request["counts"], weights))}

    control = _arm(request, request["control"])
    treatment = _arm(request, request["treatment"])
    difference = request.get("difference", "relative")
    alpha = request.get("alpha", 0.05)

    if test == "bayesian":
        prior = request.get("prior")
        effect_prior = (
            GaussianPrior(
                mean=prior.get("mean", 0.0),
                variance=prior["stddev"] ** 2,
                proper=prior.get("proper", True),
            )
            if prior is not None
            else GaussianPrior()
        )
        config = EffectBayesianConfig(
            difference_type=difference,
            alpha=alpha,
            inverse=request.get("inverse", False),
            prior_effect=effect_prior,
            prior_type=request.get("prior_type", "relative"),
        )
        r = EffectBayesianABTest(control, treatment, config).compute_result()
        return {
            "lift": float(r.expected),
            "ci": [_finite_or_none(x) for x in r.ci],
            "stddev": float(r.uplift.stddev),
            "chance_to_win": float(r.chance_to_win),
            "risk": {"control": float(r.risk[0]), "treatment": float(r.risk[1])},
            "unavailable": r.error_message,
        }

    if test == "sequential":
        config = SequentialConfig(
            difference_type=difference,
            alpha=alpha,
            test_value=request.get("test_value", 0.0),
            sequential_tuning_parameter=request.get("sequential_tuning_parameter", 5000),
        )
        r = SequentialTwoSidedTTest(control, treatment, config).compute_result()
    else:
        config = FrequentistConfig(
            difference_type=difference, alpha=alpha, test_value=request.get("test_value", 0.0)
        )
        test_class = {
            "two-sided": TwoSidedTTest,
            "greater": OneSidedTreatmentGreaterTTest,
            "less": OneSidedTreatmentLesserTTest,
        }[request.get("alternative", "two-sided")]
        r = test_class(control, treatment, config).compute_result()
    return {
        "lift": float(r.expected),
        "ci": [_finite_or_none(x) for x in r.ci],
        "p_value": float(r.p_value),
        "stddev": float(r.uplift.stddev),
        "unavailable": r.error_message,
    }
