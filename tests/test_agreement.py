"""Reward agreement (optima agreement) and teacher spread (optima spread): the arithmetic on known inputs."""

import numpy as np
import pandas as pd
import pytest

from optima.cli import main
from optima.errors import ConfigError, DataError
from optima.paper.agreement import (agreement, detrended_offsets, module_gains, reward_offsets, selection_shares,
                                    spearman)
from optima.paper.spread import labelled_draws, student_spread, teacher_shift, teacher_spread, write_spread


def runs_frame(values: dict) -> pd.DataFrame:
    """values: (task, method, seed) -> primary metric value, split val."""
    metric = {"vqa": "overall", "nlvr2": "accuracy"}
    rows = [{"task": t, "method": m, "seed": s, "role": "teacher" if m == "teacher" else "student", "split": "val",
             "metric": metric[t], "value": v} for (t, m, s), v in values.items()]
    return pd.DataFrame(rows)


def test_module_gains_are_paired_by_seed():
    runs = runs_frame({("vqa", "finetune", 0): 50.0, ("vqa", "finetune", 1): 60.0,
                       ("vqa", "fixed-vision", 0): 55.0, ("vqa", "fixed-vision", 1): 63.0,
                       ("vqa", "fixed-text", 0): 49.0, ("vqa", "fixed-text", 1): 59.0,
                       ("vqa", "fixed-multimodal", 2): 70.0})  # no finetune seed 2: no pair
    gains = module_gains(runs).set_index("module")
    assert gains.loc["vision", "gain"] == pytest.approx(4.0) and gains.loc["vision", "gain_std"] == pytest.approx(np.sqrt(2))
    assert gains.loc["text", "gain"] == pytest.approx(-1.0)
    assert "multimodal" not in gains.index


def rounds_with(offsets: dict, slope: float, n: int = 60, seed: int = 0, task: str = "vqa") -> pd.DataFrame:
    """A uniform run's rounds whose probe reward is slope * round + offset[arm] exactly."""
    rng = np.random.default_rng(seed)
    arms = rng.choice(list(offsets), size=n)
    rows = []
    for t, arm in enumerate(arms):
        reward = slope * t + offsets[arm]
        before = 10.0
        rows.append({"task": task, "method": "uniform", "seed": seed, "round": t, "arm": arm,
                     "probe_before": before, "probe_loss": before * (1 - reward),
                     "probe_task_before": before, "probe_task_loss": before * (1 + reward),  # task reward reversed
                     "train_first": 1.0, "train_last": 1.0})
    return pd.DataFrame(rows)


def test_detrended_offsets_remove_the_shared_trend():
    offsets = {"vision": 0.30, "text": 0.10, "multimodal": 0.20}
    rounds = rounds_with(offsets, slope=-0.004)
    fitted = detrended_offsets(rounds, "probe")
    for arm, value in offsets.items():
        assert fitted[arm] == pytest.approx(value, abs=1e-9)
    # a raw mean would be biased by when each arm happened to be played; the fit is not
    raw = rounds.assign(r=(rounds.probe_before - rounds.probe_loss) / rounds.probe_before).groupby("arm")["r"].mean()
    assert any(abs(raw[a] - offsets[a]) > 1e-3 for a in offsets)


def test_agreement_ranks_and_correlates():
    gains = pd.DataFrame([{"task": "vqa", "module": m, "gain": g, "gain_std": 0.0, "seeds": 2}
                          for m, g in (("vision", 3.0), ("text", -1.0), ("multimodal", 1.0))])
    rounds = pd.concat([rounds_with({"vision": 0.3, "text": 0.1, "multimodal": 0.2}, -0.001, seed=s) for s in (0, 1)])
    table = agreement(gains, reward_offsets(rounds)).set_index("reward")
    assert table.loc["probe", "spearman"] == pytest.approx(1.0) and table.loc["probe", "top_agrees"]
    assert table.loc["probe", "reward_ranking"] == "vision > multimodal > text"
    assert table.loc["task", "spearman"] == pytest.approx(-1.0) and not table.loc["task", "top_agrees"]
    assert np.isnan(table.loc["train", "spearman"])  # a constant reward ranks nothing
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_teacher_spread_and_student_yardstick():
    runs = runs_frame({("vqa", "teacher", 0): 60.0, ("vqa", "teacher", 1): 62.0, ("vqa", "teacher", 2): 64.0,
                       ("vqa", "layerwise", 0): 50.0, ("vqa", "layerwise", 1): 54.0,
                       ("vqa", "finetune", 0): 40.0, ("vqa", "finetune", 1): 41.0})
    spread = teacher_spread(runs).iloc[0]
    assert (spread["mean"], spread["std"], spread["range"]) == (pytest.approx(62.0), pytest.approx(2.0), pytest.approx(4.0))
    assert spread["values"] == "60.00 62.00 64.00"
    yardstick = student_spread(runs).iloc[0]["student_seed_std"]
    assert yardstick == pytest.approx(np.median([np.std([50, 54], ddof=1), np.std([40, 41], ddof=1)]))


def test_teacher_shift_is_the_same_seed_against_the_reference():
    reference = runs_frame({("vqa", "teacher", 0): 60.0, ("nlvr2", "teacher", 0): 0.70, ("vqa", "teacher", 1): 99.0,
                            ("vqa", "layerwise", 0): 50.0})
    retrained = runs_frame({("vqa", "teacher", 0): 61.5, ("nlvr2", "teacher", 0): 0.68})
    shift = teacher_shift(retrained, reference).set_index("task")
    assert shift.loc["vqa", ["reference", "value", "shift"]].tolist() == pytest.approx([60.0, 61.5, 1.5])
    assert shift.loc["nlvr2", "shift"] == pytest.approx(-2.0) and set(shift["seed"]) == {0}  # accuracy in percent
    with pytest.raises(DataError, match="no reference teacher for vqa val seed 2"):
        teacher_shift(runs_frame({("vqa", "teacher", 2): 61.0}), reference)


def test_teacher_draws_are_tabulated_in_the_order_given(tmp_path):
    # a candidate recipe's draws: seeds on this machine's kernels and seed 0 on other kernels (the same seed twice)
    draws = {"seed0": 60.0, "seed1": 63.0, "seed0-avx2": 66.0}
    paths = []
    for label, value in draws.items():
        path = tmp_path / f"{label}.csv"
        runs_frame({("vqa", "teacher", 0): value}).to_csv(path, index=False)
        paths.append((label, str(path)))
    table = pd.read_csv(write_spread(None, None, tmp_path / "out", draws=paths).with_suffix(".csv")).iloc[0]
    assert (table["draws"], table["values"]) == ("seed0 seed1 seed0-avx2", "60.00 63.00 66.00")
    assert (table["mean"], table["std"], table["range"]) == (pytest.approx(63.0), pytest.approx(3.0), pytest.approx(6.0))
    with pytest.raises(ConfigError, match="label.s. given twice: seed0"):
        labelled_draws([("seed0", runs_frame({})), ("seed0", runs_frame({}))])
    with pytest.raises(ConfigError, match="either --runs or --draw"):
        write_spread(str(paths[0][1]), None, tmp_path / "out", draws=paths)


def test_selection_shares_against_the_best_single_module():
    gains = pd.DataFrame([{"task": "vqa", "module": m, "gain": g, "gain_std": 0.0, "seeds": 2}
                          for m, g in (("vision", 3.0), ("text", -1.0), ("multimodal", 1.0))])
    rounds = pd.DataFrame({"task": "vqa", "method": "optima", "seed": 0, "round": range(4),
                           "arm": ["vision", "multimodal", "multimodal", "text"]})
    row = selection_shares(rounds, gains).iloc[0]
    assert (row["vision"], row["text"], row["multimodal"]) == (0.25, 0.25, 0.5)
    assert (row["most_chosen"], row["best_single"]) == ("multimodal", "vision")


def test_selection_shares_of_another_method_and_an_unknown_one(tmp_path, capsys):
    """`optima agreement --method M` tabulates M's rounds, not OPTIMA's; a method without rounds is an error naming
    the file and the methods it has."""
    runs = pd.DataFrame([{"task": "vqa", "method": m, "seed": s, "role": "student", "split": "val", "metric": "overall",
                          "value": v + s} for s in (0, 1)
                         for m, v in (("finetune", 0.60), ("fixed-vision", 0.63), ("fixed-text", 0.59),
                                      ("fixed-multimodal", 0.61))])
    runs.to_csv(tmp_path / "runs.csv", index=False)
    arms = {"optima": ["multimodal"] * 4, "optima-train": ["vision", "vision", "vision", "text"]}
    rounds = pd.DataFrame([{"task": "vqa", "method": m, "seed": s, "round": r, "arm": arm,
                            "probe_before": 2.0, "probe_loss": 1.0 + 0.1 * r, "probe_task_before": 1.0,
                            "probe_task_loss": 0.5 + 0.01 * r, "train_first": 2.0, "train_last": 1.5 - 0.02 * r}
                           for m in ("uniform", *arms) for s in (0, 1)
                           for r, arm in enumerate(arms.get(m, ["vision", "text", "multimodal", "text"]))])
    rounds.to_csv(tmp_path / "rounds.csv", index=False)
    args = ["agreement", "--runs", str(tmp_path / "runs.csv"), "--rounds", str(tmp_path / "rounds.csv")]
    assert main([*args, "--out-dir", str(tmp_path / "a"), "--method", "optima-train"]) == 0
    shares = pd.read_csv(tmp_path / "a" / "selection_shares.csv").iloc[0]
    assert (shares["vision"], shares["text"], shares["most_chosen"]) == (0.75, 0.25, "vision")
    assert "`optima-train`'s rounds per module" in (tmp_path / "a" / "reward_agreement.md").read_text()
    assert main([*args, "--out-dir", str(tmp_path / "b")]) == 0
    assert pd.read_csv(tmp_path / "b" / "selection_shares.csv").iloc[0]["multimodal"] == 1.0
    assert main([*args, "--out-dir", str(tmp_path / "c"), "--method", "optima-task"]) == 2
    assert "no rounds of method 'optima-task' (methods: optima, optima-train, uniform)" in capsys.readouterr().err
    assert not (tmp_path / "c" / "selection_shares.csv").exists()
