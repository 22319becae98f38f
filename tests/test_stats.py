"""optima.paper.stats: Holm's adjustment and the sign-flip p against hand-computed values, the detectable
difference against a simulation, the verdict rule, and the new columns of `optima tables` on the published
claims run."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from optima.cli import main
from optima.paper.stats import detectable_difference, holm, paired_difference, sign_flip_p, verdict

REPO = Path(__file__).resolve().parents[1]
CLAIMS = REPO / "results" / "published" / "claims"


# ---------------------------------------------------------------------------------------------- holm

def test_holm_matches_hand_computed_values():
    # sorted 0.01, 0.03, 0.04, 0.20 times 4, 3, 2, 1 = 0.04, 0.09, 0.08, 0.20; monotone: 0.08 -> 0.09
    assert holm([0.01, 0.04, 0.03, 0.20]) == pytest.approx([0.04, 0.09, 0.09, 0.20])
    assert holm([0.04, 0.03]) == pytest.approx([0.06, 0.06])  # 0.03 x 2 = 0.06, then max(0.06, 0.04)
    assert holm([0.5, 0.6, 0.01]) == pytest.approx([1.0, 1.0, 0.03])  # capped at 1
    assert holm([0.02]) == pytest.approx([0.02])  # a family of one is not adjusted
    assert len(holm([])) == 0


def test_holm_leaves_nan_out_of_the_family():
    adjusted = holm([0.01, float("nan"), 0.04])
    assert math.isnan(adjusted[1])
    assert adjusted[[0, 2]] == pytest.approx([0.02, 0.04])  # m = 2, not 3
    assert np.isnan(holm([float("nan")] * 3)).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, 1.5])


# ---------------------------------------------------------------------------------------------- sign flip

def test_sign_flip_p_matches_hand_counts():
    assert sign_flip_p([1, 2, 3, 4, 5]) == 2 / 32  # only all + and all − reach |sum| = 15: the floor 2/2^n
    # |sum| >= 11 when the flipped magnitudes sum to <= 2 ({}, {1}, {2}) or >= 13 (their complements)
    assert sign_flip_p([1, -2, 3, 4, 5]) == 6 / 32
    assert sign_flip_p([1, 1]) == 2 / 4  # sums 2, 0, 0, −2
    assert sign_flip_p([0, 0, 0]) == 1.0
    assert sign_flip_p([-3.5]) == 1.0
    assert math.isnan(sign_flip_p([])) and math.isnan(sign_flip_p([1.0, float("nan")]))


def test_sign_flip_ties_survive_rounding():
    """0.1 + 0.1 + 0.1 − 0.1 is 0.2 and so is 0.1 − 0.1 + 0.1 + 0.1, though not in floating point: without the
    tolerance only 2 of 16 sign assignments would count instead of 10."""
    diffs = np.array([0.1, 0.1, 0.1, -0.1])
    signs = np.array([1, -1, 1, -1])  # a tie of the observed |sum| in exact arithmetic
    assert abs((signs * diffs).sum()) < abs(diffs.sum())  # ... but smaller in floating point
    assert sign_flip_p(diffs) == sign_flip_p([1, 1, 1, -1]) == 10 / 16  # |sum| >= 2 unless exactly 2 flips
    assert sign_flip_p([-1, -1, -1, 1]) == 10 / 16  # two-sided


def test_sign_flip_monte_carlo_above_16_seeds():
    rng = np.random.default_rng(3)
    diffs = rng.normal(0.4, 1.0, size=17)
    exact = sign_flip_p(diffs, exact_max_n=17)
    approx = sign_flip_p(diffs)  # n = 17 > 16: 2^16 seeded draws
    assert approx == sign_flip_p(diffs)  # seeded: the same every time
    assert approx == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 2 ** 16) + 1e-4)
    assert sign_flip_p(np.arange(1.0, 21.0)) == pytest.approx(1 / (2 ** 16 + 1), abs=3 / 2 ** 16)  # true 2/2^20


# ---------------------------------------------------------------------------------------------- detectable difference

@pytest.mark.parametrize("n, std", [(3, 2.0), (5, 1.7), (10, 0.5)])
def test_detectable_difference_has_80_percent_power_in_a_simulation(n, std):
    """Normal differences with the detectable mean and that std: a paired t-test at 0.05 rejects ~80 % of the time."""
    delta = detectable_difference(std, n)
    rng = np.random.default_rng(20231)
    reps = 40_000
    ref = rng.normal(50.0, 3.0, size=(reps, n))
    base = ref - rng.normal(delta, std, size=(reps, n))
    rejected = stats.ttest_rel(ref, base, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.80, abs=4 * math.sqrt(0.8 * 0.2 / reps))
    one_sample = stats.ttest_1samp(ref - base, 0.0, axis=1).pvalue < 0.05
    assert (one_sample == rejected).all()


def test_detectable_difference_scales_and_limits():
    assert detectable_difference(2.0, 5) == pytest.approx(2 * detectable_difference(1.0, 5), rel=1e-9)
    assert detectable_difference(1.0, 5) == pytest.approx(1.682, abs=1e-3)  # effect size d for n = 5 (G*Power: 1.68)
    assert detectable_difference(1.0, 5, power=0.9) > detectable_difference(1.0, 5) > detectable_difference(1.0, 6)
    normal = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / math.sqrt(2000)  # large n: the normal approximation
    assert detectable_difference(1.0, 2000) == pytest.approx(normal, rel=2e-3)
    assert detectable_difference(0.0, 5) == 0.0
    for std, n in ((1.0, 1), (float("nan"), 5), (-1.0, 5)):
        assert math.isnan(detectable_difference(std, n))
    assert math.isfinite(detectable_difference(1.0, 2))  # one degree of freedom: the far tail stays finite


# ---------------------------------------------------------------------------------------------- paired difference, verdict

def test_paired_difference_reports_sign_flip_and_detectable_difference():
    seeds = range(5)
    ref = pd.Series([10.0, 12.0, 13.0, 15.0, 16.0], index=seeds)
    base = ref - pd.Series([1.0, 2.0, 3.0, 4.0, 5.0], index=seeds)
    d = paired_difference(ref, base)
    assert d["p_signflip"] == 2 / 32
    assert d["mde"] == pytest.approx(detectable_difference(np.std([1, 2, 3, 4, 5], ddof=1), 5))
    assert d["p_ttest"] == pytest.approx(stats.ttest_1samp([1, 2, 3, 4, 5], 0.0).pvalue)
    same = paired_difference(ref, ref - 0.25)  # identical gap: no t-test, the sign-flip test still counts
    assert same["p_signflip"] == 2 / 32 and math.isnan(same["p_ttest"]) and math.isnan(same["mde"])
    assert "no t-test" in same["note"]
    one = paired_difference(ref.iloc[:1], base.iloc[:1])
    assert math.isnan(one["p_signflip"]) and math.isnan(one["mde"])


@pytest.mark.parametrize("args, expected", [
    ((+2.0, 0.5, 3.5, 0.01, 4.0), "better"),  # Holm p < 0.05 wins over the interval
    ((-2.0, -3.5, -0.5, 0.049, 4.0), "worse"),
    ((-2.0, -3.5, -0.5, 0.05, 3.0), "inconclusive"),  # p = alpha is not below it, and −3.5 lies past −3
    ((-2.0, -3.5, -0.5, 0.05, 4.0), "no difference"),  # ... but within ±4
    ((0.1, -1.0, 1.2, 0.8, 1.5), "no difference"),  # the whole CI within ±1.5
    ((0.1, -1.0, 1.6, 0.8, 1.5), "inconclusive"),  # upper end past +1.5
    ((0.1, float("nan"), float("nan"), float("nan"), float("nan")), "inconclusive"),  # no test at all
])
def test_verdict_follows_the_wording_rule(args, expected):
    assert verdict(*args) == expected


# ---------------------------------------------------------------------------------------------- the tables on the claims run

@pytest.fixture(scope="module")
def claims_tables(tmp_path_factory):
    out = tmp_path_factory.mktemp("claims_tables")
    assert main(["tables", "--config", str(CLAIMS / "config.yaml"), "--runs", str(CLAIMS / "runs.csv"),
                 "--out-dir", str(out)]) == 0
    return out


NEW_HEADER = "| p (paired t) | p (Wilcoxon) | p (sign-flip) | p (Holm) | detectable Δ (80% power) | verdict |"
NEW_CSV = ["p_signflip", "p_holm", "family", "family_size", "mde", "verdict"]


def _check_rows(frame, decimals=2):
    """Each row's Holm p is Holm over its family's paired-t p, and its verdict is the wording rule's."""
    for family, rows in frame.groupby("family", sort=False):
        assert rows["p_holm"].to_numpy() == pytest.approx(holm(rows["p_ttest"].to_numpy()), nan_ok=True), family
        assert (rows["family_size"] == rows["p_ttest"].notna().sum()).all()
    for row in frame.itertuples():
        bound = round(row.mde, decimals)
        if row.p_holm < 0.05:
            expected = "better" if row.mean_diff > 0 else "worse"
        elif -bound <= row.ci_low and row.ci_high <= bound:
            expected = f"no difference > {row.mde:.{decimals}f}"
        else:
            expected = "inconclusive"
        assert row.verdict == expected, row
        assert row.p_signflip >= 2 / 2 ** row.n - 1e-12


def test_comparison_on_the_claims_run_has_the_new_columns(claims_tables):
    md = (claims_tables / "comparison.md").read_text()
    assert NEW_HEADER in md
    assert "cannot go below 2/2^n (0.0625 at n = 5)" in md
    assert "COCO BLEU-4 is not a primary metric but is tested and printed, so it joins its baseline's family" in md
    assert "one of the Average rows over the 8 baselines" in md
    assert '"better" / "worse" (than the baseline) only where p (Holm) < 0.05' in md
    assert "only where the whole 95% CI lies within ±X" in md
    frame = pd.read_csv(claims_tables / "comparison.csv")
    assert set(NEW_CSV) <= set(frame.columns)
    assert frame.groupby("family").size().to_dict() == {"average": 8, **{b: 5 for b in set(frame["baseline"])}}
    assert set(frame.loc[frame["column"] == "average", "family"]) == {"average"}
    _check_rows(frame)
    assert (frame["p_signflip"] == frame["p_signflip"].clip(lower=2 / 32)).all()
    assert set(frame["verdict"].str.replace(r" > [0-9.]+$", "", regex=True)) <= {
        "better", "worse", "no difference", "inconclusive"}


def test_module_pairs_on_the_claims_run_are_one_family(claims_tables):
    assert NEW_HEADER in (claims_tables / "module_pairs.md").read_text()
    assert "one family, every pair of modules on every task in this table (12 tests)" in (
        claims_tables / "module_pairs.md").read_text()
    frame = pd.read_csv(claims_tables / "module_pairs.csv")
    assert set(NEW_CSV) <= set(frame.columns) and set(frame["family"]) == {"all pairs"}
    _check_rows(frame)
