"""`optima figures`: the default config's figures, skipped figures, the binned selection shares and
rewards against hand counts, bad train logs."""

import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from optima.cli import main
from optima.config import load_config
from optima.paper.figures import binned_rewards, planned_figures, selection_shares
from optima.paper.logs import find_logs

sys.path.insert(0, str(Path(__file__).parent / "fixtures_paper"))
from fake_results import make_results, write_train_log  # noqa: E402

DEFAULT_RUN = ("finetune", "layerwise", "uniform", "optima")  # params.yaml: distill.run


def _figures(root, out, *extra):
    return main(["figures", "--runs", str(root / "eval" / "runs.csv"), "--logs-root", str(root / "results"),
                 "--out-dir", str(out), *extra])


def _collect(root, fake):
    assert main(["collect", "--out-dir", str(root / "eval"), *map(str, fake["metrics"])]) == 0


def _check_png(path):
    image = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert image.shape[0] > 300 and image.shape[1] > 400, image.shape
    assert image.std() > 5  # something is drawn


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, repo_root):
    root = tmp_path_factory.mktemp("figures")
    fake = make_results(root / "results", tasks=("vqa", "captions"), methods=DEFAULT_RUN, seeds=(0, 1))
    _collect(root, fake)
    out = root / "figures"
    out.mkdir()
    (out / "single_module.png").write_text("stale")  # from an earlier run with fixed-* methods
    return root, out


def test_default_config_yields_the_planned_figures(default_run, repo_root, capsys, caplog):
    root, out = default_run
    assert _figures(root, out, "--config", str(repo_root / "params.yaml")) == 0
    planned = planned_figures(load_config(repo_root / "params.yaml"))
    assert {Path(p).stem for p in planned} == {"comparison", "selection_frequency", "rewards", "loss_curves"}
    assert sorted(p.name for p in out.iterdir()) == sorted(planned)
    assert capsys.readouterr().out.split() == [str(out / name) for name in planned]  # the file list
    assert "skipped single_module: no single-module runs" in caplog.text
    assert "removed stale" in caplog.text
    for name in planned:
        path = out / name
        if name.endswith(".png"):
            _check_png(path)
        else:
            assert path.read_bytes().startswith(b"%PDF") and path.stat().st_size > 5000


def test_single_module_figure_without_logs(tmp_path, caplog):
    methods = ("finetune", "layerwise", "fixed-vision", "fixed-text", "fixed-multimodal")
    fake = make_results(tmp_path / "results", tasks=("nlvr2",), methods=methods, seeds=(0, 1), logs=False)
    _collect(tmp_path, fake)
    out = tmp_path / "figures"
    assert _figures(tmp_path, out) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}.{f}" for n in ("comparison", "single_module") for f in ("png", "pdf"))
    _check_png(out / "single_module.png")
    for name in ("selection_frequency", "rewards", "loss_curves"):
        assert f"skipped {name}:" in caplog.text


def test_selection_shares_and_binned_rewards_match_hand_counts():
    # two seeds, 6 rounds each of 10 steps: 12 rounds -> 2 bins of 6 rounds, edges 0, 30, 60
    arms = {0: ["vision", "text", "multimodal", "multimodal", "multimodal", "text"],
            1: ["vision", "text", "multimodal", "vision", "multimodal", "multimodal"]}
    rows = [{"seed": seed, "step": 10 * (i + 1), "arm": arm, "reward": 0.01 * (i + 1) + seed}
            for seed, seq in arms.items() for i, arm in enumerate(seq)]
    rounds = pd.DataFrame(rows)
    edges, share = selection_shares(rounds, bins=20)
    assert list(edges) == [0.0, 30.0, 60.0]
    assert list(share.columns) == ["vision", "text", "multimodal"]
    assert list(share.index) == [15.0, 45.0]
    # steps 10-30: vision 2, text 2, multimodal 2; steps 40-60: vision 1, text 1, multimodal 4
    np.testing.assert_allclose(share.loc[15.0], [2 / 6, 2 / 6, 2 / 6])
    np.testing.assert_allclose(share.loc[45.0], [1 / 6, 1 / 6, 4 / 6])
    _, means = binned_rewards(rounds, bins=20)
    assert means.loc[45.0, "multimodal"] == pytest.approx(np.mean([0.04, 0.05, 1.05, 1.06]))
    assert means.loc[15.0, "vision"] == pytest.approx(np.mean([0.01, 1.01]))
    _, one = selection_shares(rounds, bins=1)
    np.testing.assert_allclose(one.loc[30.0], [3 / 12, 3 / 12, 6 / 12])


def test_logs_follow_the_seeds_in_runs_csv(tmp_path):
    for seed in (0, 1, 5):
        write_train_log(tmp_path / "students" / "vqa" / "optima" / f"seed{seed}" / "train_log.csv", "optima", seed, steps=20)
    assert sorted(find_logs(tmp_path, "vqa", "optima")) == [0, 1, 5]
    assert sorted(find_logs(tmp_path, "vqa", "optima", seeds=[0, 1, 2])) == [0, 1]  # seed 2 has no log
    assert find_logs(tmp_path, "snli_ve", "optima") == {}


@pytest.mark.parametrize("corrupt, message", [
    (lambda text: text.replace("\n", "\nnot-a-step,,,,,,,,,,,,,,,\n", 1), "line 2: step must be a number"),
    (lambda text: "", "empty train log"),
])
def test_bad_train_log_names_file(tmp_path, capsys, corrupt, message):
    fake = make_results(tmp_path / "results", tasks=("vqa",), methods=("optima",), seeds=(0,), teacher=False)
    _collect(tmp_path, fake)
    log = tmp_path / "results" / "students" / "vqa" / "optima" / "seed0" / "train_log.csv"
    log.write_text(corrupt(log.read_text()))
    assert _figures(tmp_path, tmp_path / "figures") == 2
    err = capsys.readouterr().err
    assert str(log) in err and message in err, err


def test_log_without_arm_column_is_left_out_of_the_bandit_figures(tmp_path, caplog):
    fake = make_results(tmp_path / "results", tasks=("vqa",), methods=("optima",), seeds=(0,), teacher=False)
    _collect(tmp_path, fake)
    log = tmp_path / "results" / "students" / "vqa" / "optima" / "seed0" / "train_log.csv"
    log.write_text(log.read_text().replace(",arm,", ",choice,", 1))
    assert _figures(tmp_path, tmp_path / "figures") == 0
    assert f"{log}: no 'arm' column, left out" in caplog.text
    assert "skipped selection_frequency" in caplog.text and "skipped rewards" in caplog.text
    assert sorted(p.stem for p in (tmp_path / "figures").glob("*.png")) == ["comparison", "loss_curves"]


def test_saved_figures_are_byte_identical_across_runs(tmp_path):
    from matplotlib.figure import Figure

    from optima.paper.style import save_figure, style

    blobs = []
    for run in ("a", "b"):
        with style():
            fig = Figure(figsize=(2, 2))
            fig.add_subplot().plot([0, 1], [1, 0])
            paths = save_figure(fig, tmp_path / run, "tiny")
        blobs.append([p.read_bytes() for p in paths])
        assert [p.name for p in paths] == ["tiny.png", "tiny.pdf"]
    assert blobs[0] == blobs[1]
    assert Image.open(io.BytesIO(blobs[0][0])).format == "PNG"
