"""Bandit simulator and `optima bench bandits` at tiny sizes."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from optima.bandits.sim import ENVIRONMENTS, PIECEWISE_PERIOD, make_instance, regret_curve, run_benchmark
from optima.bandits import bench
from optima.errors import ConfigError


def bench_main(argv: list[str]) -> int:
    """`optima bench bandits ARGV` without building the whole CLI (whose other verbs import torch)."""
    import argparse

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return bench.run(parser.parse_args(argv))


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_instances_are_seeded_and_shaped(env):
    a = make_instance(env, 3, 400, seed=4)
    b = make_instance(env, 3, 400, seed=4)
    c = make_instance(env, 3, 400, seed=5)
    assert a.means.shape == a.rewards.shape == (400, 3)
    np.testing.assert_array_equal(a.rewards, b.rewards)
    assert not np.array_equal(a.rewards, c.rewards)
    assert np.isfinite(a.rewards).all()


def test_environment_shapes():
    piecewise = make_instance("piecewise", 3, 3 * PIECEWISE_PERIOD, seed=0).means
    best = piecewise.argmax(axis=1)
    for start in range(PIECEWISE_PERIOD, 3 * PIECEWISE_PERIOD, PIECEWISE_PERIOD):
        assert (piecewise[start - 1] != piecewise[start]).all() and best[start - 1] != best[start]
        assert (piecewise[start:start + PIECEWISE_PERIOD] == piecewise[start]).all()
    stationary = make_instance("stationary", 3, 50, seed=0).means
    assert (stationary == stationary[0]).all()
    drifting = make_instance("drifting", 3, 600, seed=0).means
    assert len(set(drifting.argmax(axis=1))) == 3 and drifting.min() >= 0.1 - 1e-12 and drifting.max() <= 0.9 + 1e-12
    for seed in range(5):
        distillation = make_instance("distillation", 3, 1000, seed=seed)
        assert (np.diff(distillation.means, axis=0) < 0).all()  # every arm's reward decays
        assert distillation.means[0].argmax() != distillation.means[-1].argmax()  # the best arm changes
        assert 0.001 < distillation.means[0].max() <= 0.1
        assert (distillation.rewards < 0).any()  # noisy rewards are sometimes negative


def test_regret_of_oracles_and_policies():
    instance = make_instance("piecewise", 3, 300, seed=1)
    assert (regret_curve(("oracle", {}), instance, 0) == 0).all()
    best_fixed = regret_curve(("best_fixed", {}), instance, 0)
    assert (best_fixed >= 0).all() and best_fixed.sum() > 0
    for name in ("uniform", "optima", "ucb"):  # no policy beats the oracle, and none matches it by luck
        regret = regret_curve((name, {}), instance, 0)
        assert (regret >= 0).all() and regret.sum() > 0
    with pytest.raises(ValueError, match="every arm"):
        regret_curve(("layerwise", {}), instance, 0)


def test_benchmark_results_do_not_depend_on_workers():
    specs = {"uniform": ("uniform", {}), "optima": ("optima", {}), "oracle": ("oracle", {})}
    one = run_benchmark(specs, ["stationary", "distillation"], 3, 60, [0, 1, 2], workers=1)
    two = run_benchmark(specs, ["stationary", "distillation"], 3, 60, [0, 1, 2], workers=2)
    for env in one:
        assert one[env]["optima"].shape == (3, 60)
        for label in specs:
            np.testing.assert_array_equal(one[env][label], two[env][label])


@pytest.mark.parametrize("env", ["distillation", "piecewise"])
def test_a_sliding_window_beats_uniform_and_ts_where_the_best_arm_changes(env):
    # these environments change over hundreds of rounds: a window of that order (not the default 8) fits them
    specs = {"uniform": ("uniform", {}), "ts": ("ts", {}), "optima": ("optima", {"window": 50})}
    result = run_benchmark(specs, [env], 3, 450, list(range(8)))[env]
    final = {label: runs[:, -1].mean() for label, runs in result.items()}
    assert final["optima"] < 0.6 * final["uniform"]
    assert final["optima"] < final["ts"]


@pytest.mark.parametrize("rounds", [40, 100])
def test_default_optima_tracks_the_best_arm_under_trend_and_switch(rounds):
    """The environment the defaults were chosen on, at the configs' round counts: OPTIMA spends clearly
    more rounds on the current best arm than stationary TS and uniform selection."""
    specs = {"uniform": ("uniform", {}), "ts": ("ts", {}), "optima": ("optima", {})}
    _, best = run_benchmark(specs, ["trend_switch"], 3, rounds, list(range(60)), with_best=True)
    share = {label: runs[:, -1].mean() / rounds for label, runs in best["trend_switch"].items()}
    assert share["optima"] > share["ts"] + 0.1
    assert share["optima"] > share["uniform"] + 0.2


def test_trend_switch_environment_shape():
    means = make_instance("trend_switch", 3, 40, seed=3).means
    first, second = means[:20].argmax(axis=1), means[20:].argmax(axis=1)
    assert len(set(first)) == 1 and len(set(second)) == 1 and first[0] != second[0]  # one switch, halfway
    assert means[0].max() == pytest.approx(10 * means[-1].max() * 10 ** (-1 / 40), rel=1e-9)  # 10x fall
    assert (np.diff(means, axis=0)[:19] < 0).all()  # a shared downward trend


def test_bench_cli_writes_table_and_figure(tmp_path, capsys):
    out = tmp_path / "bench" / "bandits.png"
    code = bench_main(["--rounds", "40", "--seeds", "2", "--envs", "stationary", "distillation",
                 "--workers", "1", "--no-progress", "--out", str(out),
                 "--policy", "uniform=uniform", "--policy", "optima-w4=optima:window=4,gamma=null,scale=0.5",
                 "--policy", "oracle=oracle"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| optima-w4 |" in printed and "2 seeds, 40 rounds" in printed and "best arm" in printed
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert {(r["env"], r["policy"]) for r in rows} == {(e, p) for e in ("stationary", "distillation")
                                                       for p in ("uniform", "optima-w4", "oracle")}
    assert next(r for r in rows if r["policy"] == "optima-w4")["spec"] == "optima:window=4,gamma=None,scale=0.5"
    assert all(float(r["regret_mean"]) == 0.0 for r in rows if r["policy"] == "oracle")
    assert "| policy | stationary | distillation |" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize("argv, culprit", [
    (["--policy", "o=optima:windw=3"], "unknown option 'windw' for policy 'optima'"),
    (["--policy", "o=optima:window=0"], "'window'"),
    (["--policy", "nolabel"], "LABEL=NAME"),
    (["--envs", "chaotic"], "unknown environment 'chaotic'"),
    (["--policy", "lw=layerwise"], "plays every arm"),
    (["--policy", "f=fixed:arm=3"], "'arm'"),
])
def test_bench_cli_rejects_bad_input(tmp_path, argv, culprit):
    with pytest.raises(ConfigError) as info:  # the CLI prints it as one line and exits 2
        bench_main(["--rounds", "5", "--seeds", "1", "--no-progress", "--out", str(tmp_path / "b.png"), *argv])
    assert culprit in str(info.value)
    assert not (tmp_path / "b.png").exists()


def test_timescale_stretches_the_changes():
    fast = make_instance("piecewise", 3, 300, seed=0, timescale=0.5).means
    changes = np.flatnonzero((np.diff(fast, axis=0) != 0).any(axis=1)) + 1
    assert list(changes) == [75, 150, 225]
    with pytest.raises(ValueError, match="timescale"):
        make_instance("drifting", 3, 10, seed=0, timescale=0.0)


def test_bench_verb_import_stays_light():
    import subprocess
    import sys

    code = "import sys, optima.bandits.bench; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", "`optima --help` must not import numpy through the bench verb"
