"""Seed-paired comparison of two methods: is a gap larger than seed noise?"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

WILCOXON_MIN_N = 6  # below this the signed-rank test cannot reach p < 0.05 (two-sided): not worth printing


def paired_difference(reference: pd.Series, baseline: pd.Series, confidence: float = 0.95,
                      wilcoxon_min_n: int = WILCOXON_MIN_N) -> dict:
    """Paired difference ``reference - baseline`` over the seeds both ran (Series indexed by seed).

    Returns a dict: n, seeds, mean (of the per-seed differences), std (ddof=1), ci_low/ci_high (the
    t-interval at ``confidence``), t, p_ttest (scipy.stats.ttest_rel, two-sided), p_wilcoxon
    (scipy.stats.wilcoxon, only when n >= wilcoxon_min_n), reference_mean, baseline_mean, and a note
    saying why a number is missing. Missing numbers are NaN.
    """
    from scipy import stats

    pairs = pd.concat({"ref": reference, "base": baseline}, axis=1).dropna().sort_index()
    diffs = (pairs["ref"] - pairs["base"]).to_numpy(dtype=float)
    n = len(diffs)
    nan = float("nan")
    out = {
        "n": n, "seeds": tuple(int(s) for s in pairs.index),
        "mean": float(diffs.mean()) if n else nan,
        "std": float(diffs.std(ddof=1)) if n >= 2 else nan,
        "ci_low": nan, "ci_high": nan, "t": nan, "p_ttest": nan, "p_wilcoxon": nan,
        "reference_mean": float(pairs["ref"].mean()) if n else nan,
        "baseline_mean": float(pairs["base"].mean()) if n else nan,
        "note": "",
    }
    if n == 0:
        out["note"] = "no seed run by both methods"
        return out
    if n == 1:
        out["note"] = "one shared seed: no confidence interval or test"
        return out
    if np.ptp(diffs) <= 1e-12 * max(1.0, float(np.abs(diffs).max())):
        # every seed shows the same gap: the interval collapses and a t statistic is undefined
        out["ci_low"] = out["ci_high"] = out["mean"]
        out["note"] = "identical difference on every seed: no test"
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_rel(pairs["ref"].to_numpy(float), pairs["base"].to_numpy(float))
        ci = result.confidence_interval(confidence_level=confidence)
    out.update(t=float(result.statistic), p_ttest=float(result.pvalue), ci_low=float(ci.low), ci_high=float(ci.high))
    if n >= wilcoxon_min_n:
        if np.count_nonzero(diffs) == 0:
            out["note"] = "all differences zero: no Wilcoxon test"
        else:
            out["p_wilcoxon"] = float(stats.wilcoxon(diffs).pvalue)
    else:
        out["note"] = f"n={n} < {wilcoxon_min_n}: no Wilcoxon test"
    for key in ("ci_low", "ci_high", "t", "p_ttest", "p_wilcoxon"):
        if not math.isfinite(out[key]):
            out[key] = nan
    return out
