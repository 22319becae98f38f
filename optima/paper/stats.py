"""Seed-paired comparison of two methods: is a gap larger than seed noise?

Pure functions: `paired_difference` (interval and tests of one comparison), `holm` (the multiple-comparison
correction of a family of them), `sign_flip_p` (the exact paired permutation test), `detectable_difference`
(what a paired t-test of that many seeds can detect) and `verdict` (the project's wording rule, see
docs/statistics.md).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

WILCOXON_MIN_N = 6  # below this the signed-rank test cannot reach p < 0.05 (two-sided): not worth printing
SIGN_FLIP_EXACT_MAX_N = 16  # up to 2^16 sign assignments are enumerated; above, a seeded Monte Carlo
SIGN_FLIP_DRAWS = 2 ** 16
SIGN_FLIP_SEED = 0
POWER = 0.80  # the power at which `detectable_difference` is reported
VERDICTS = ("better", "worse", "no difference", "inconclusive")


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values of one family, in the input order.

    Step-down: the i-th smallest of m p-values is multiplied by m − i + 1 (i from 1), the products are
    made monotone (a running maximum in the order of the p-values) and capped at 1. A NaN p-value (a
    comparison without a test) is left out of the family (m counts only the finite ones) and stays NaN.
    Rejecting where the adjusted p < alpha keeps the family-wise error rate at most alpha.
    """
    p = np.asarray(pvalues, dtype=float).ravel()
    finite = np.isfinite(p)
    if ((p[finite] < 0) | (p[finite] > 1)).any():
        raise ValueError(f"p-values must lie in [0, 1], got {p[finite].tolist()}")
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(finite)
    m = len(tested)
    if m == 0:
        return out
    order = tested[np.argsort(p[tested], kind="stable")]
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def sign_flip_p(diffs: Sequence[float], exact_max_n: int = SIGN_FLIP_EXACT_MAX_N, draws: int = SIGN_FLIP_DRAWS,
                seed: int = SIGN_FLIP_SEED) -> float:
    """Two-sided paired permutation (sign-flip) p-value of per-seed differences.

    Under the null hypothesis (no difference, distribution symmetric about 0) each difference is as likely
    to have the opposite sign. Exact for n <= ``exact_max_n``: the share of all 2^n sign assignments whose
    |mean| is at least the observed |mean| (ties within 1e-12 of the sum of |differences| count as at
    least). It assumes no normality, but it cannot go below 2/2^n (the observed signs and their mirror
    image): 0.0625 with 5 seeds. For n > ``exact_max_n`` a Monte Carlo of ``draws`` sign assignments
    drawn with ``seed``: (1 + hits) / (1 + draws). NaN without differences or with a non-finite one.
    """
    d = np.asarray(diffs, dtype=float).ravel()
    n = len(d)
    if n == 0 or not np.isfinite(d).all():
        return float("nan")
    observed = abs(d.sum())
    tolerance = 1e-12 * np.abs(d).sum()
    if n <= exact_max_n:
        bits = (np.arange(2 ** n)[:, None] >> np.arange(n)) & 1
        sums = (1 - 2 * bits) @ d
        return float(np.count_nonzero(np.abs(sums) >= observed - tolerance) / 2 ** n)
    rng = np.random.default_rng(seed)
    hits, left = 0, draws
    while left:  # in chunks: draws x n signs at once could be large
        size = min(left, 4096)
        signs = 1 - 2 * rng.integers(0, 2, size=(size, n))
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tolerance))
        left -= size
    return (1 + hits) / (1 + draws)


def detectable_difference(std: float, n: int, alpha: float = 0.05, power: float = POWER) -> float:
    """The smallest true mean difference that a two-sided paired t-test of ``n`` pairs at level ``alpha``
    detects with probability ``power``, when the differences have standard deviation ``std``.

    Exact, from the noncentral t distribution: the test rejects when |T| > t_{1−alpha/2, n−1}; under a true
    mean difference delta, T is noncentral t with n − 1 degrees of freedom and noncentrality
    delta·sqrt(n)/std. The noncentrality giving ``power`` is found with scipy.optimize.brentq; then
    delta = ncp · std / sqrt(n). NaN with n < 2 or a non-finite or negative std.
    """
    from scipy import optimize, stats

    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must lie in (0, 1), got alpha={alpha}, power={power}")
    if n < 2 or not math.isfinite(std) or std < 0:
        return float("nan")
    if power <= alpha:  # a test at level alpha rejects that often with no difference at all
        return 0.0
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(ncp: float) -> float:
        # P(T > c) + P(T < -c); the lower tail as sf(c) at -ncp (nct.cdf far in its tail can return NaN)
        return stats.nct.sf(critical, df, ncp) + stats.nct.sf(critical, df, -ncp) - power

    high = 1.0
    while shortfall(high) < 0:
        high *= 2
    ncp = optimize.brentq(shortfall, 0.0, high, xtol=1e-12, rtol=1e-12)
    return float(ncp * std / math.sqrt(n))


def verdict(mean: float, ci_low: float, ci_high: float, p_adjusted: float, bound: float,
            alpha: float = 0.05) -> str:
    """The project's wording rule for one comparison, one of `VERDICTS`: "better" / "worse" (by the sign of
    ``mean``) only where the multiplicity-adjusted p < ``alpha``; "no difference" (larger than ``bound``)
    only where the whole confidence interval lies within ±``bound``; otherwise "inconclusive"."""
    if math.isfinite(p_adjusted) and p_adjusted < alpha and math.isfinite(mean) and mean != 0:
        return "better" if mean > 0 else "worse"
    if all(math.isfinite(x) for x in (ci_low, ci_high, bound)) and -bound <= ci_low and ci_high <= bound:
        return "no difference"
    return "inconclusive"


def paired_difference(reference: pd.Series, baseline: pd.Series, confidence: float = 0.95,
                      wilcoxon_min_n: int = WILCOXON_MIN_N) -> dict:
    """Paired difference ``reference - baseline`` over the seeds both ran (Series indexed by seed).

    Returns a dict: n, seeds, mean (of the per-seed differences), std (ddof=1), ci_low/ci_high (the
    t-interval at ``confidence``), t, p_ttest (scipy.stats.ttest_rel, two-sided), p_wilcoxon
    (scipy.stats.wilcoxon, only when n >= wilcoxon_min_n), p_signflip (`sign_flip_p`), mde (the
    `detectable_difference` of a paired t-test at level 1 − ``confidence`` with 80 % power, from the observed
    std), reference_mean, baseline_mean, and a note saying why a number is missing. Missing numbers are NaN.
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
        "ci_low": nan, "ci_high": nan, "t": nan, "p_ttest": nan, "p_wilcoxon": nan, "p_signflip": nan, "mde": nan,
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
    out["p_signflip"] = sign_flip_p(diffs)
    notes = [f"p_signflip: Monte Carlo of {SIGN_FLIP_DRAWS} sign assignments"] if n > SIGN_FLIP_EXACT_MAX_N else []
    if np.ptp(diffs) <= 1e-12 * max(1.0, float(np.abs(diffs).max())):
        # every seed shows the same gap: the interval collapses and a t statistic is undefined
        out["ci_low"] = out["ci_high"] = out["mean"]
        out["note"] = "; ".join(["identical difference on every seed: no t-test", *notes])
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_rel(pairs["ref"].to_numpy(float), pairs["base"].to_numpy(float))
        ci = result.confidence_interval(confidence_level=confidence)
    out.update(t=float(result.statistic), p_ttest=float(result.pvalue), ci_low=float(ci.low), ci_high=float(ci.high),
               mde=detectable_difference(out["std"], n, alpha=round(1 - confidence, 12)))
    if n >= wilcoxon_min_n:
        if np.count_nonzero(diffs) == 0:
            notes.insert(0, "all differences zero: no Wilcoxon test")
        else:
            out["p_wilcoxon"] = float(stats.wilcoxon(diffs).pvalue)
    else:
        notes.insert(0, f"n={n} < {wilcoxon_min_n}: no Wilcoxon test")
    out["note"] = "; ".join(notes)
    for key in ("ci_low", "ci_high", "t", "p_ttest", "p_wilcoxon", "p_signflip", "mde"):
        if not math.isfinite(out[key]):
            out[key] = nan
    return out
