"""`optima collect`: runs.csv and summary.json from metrics JSON files; bad files name the culprit."""

import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optima.cli import main

sys.path.insert(0, str(Path(__file__).parent / "fixtures_paper"))
from fake_results import fake_metrics, make_results, write_metrics  # noqa: E402


def _collect(out_dir, paths, *extra):
    return main(["collect", "--out-dir", str(out_dir), *extra, *map(str, paths)])


@pytest.fixture()
def fake(tmp_path):
    return make_results(tmp_path / "results", methods=("finetune", "layerwise", "optima"), seeds=(0, 1, 2), logs=False)


def test_runs_csv_holds_every_metric_value_exactly(tmp_path, fake, capsys):
    out = tmp_path / "eval"
    assert _collect(out, fake["metrics"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "runs.csv"), str(out / "summary.json")]
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    assert list(runs.columns) == ["task", "method", "seed", "role", "split", "metric", "value"]
    assert len(runs) == sum(len(m) for m in fake["values"].values())
    for row in runs.itertuples():
        assert row.value == fake["values"][(row.task, row.method, row.seed)][row.metric]  # exact round trip
        assert row.role == ("teacher" if row.method == "teacher" else "student")
        assert row.split == "test"
    keys = list(zip(runs.task, runs.method, runs.seed, runs.split, runs.metric))
    assert keys == sorted(keys)


def test_output_does_not_depend_on_input_order(tmp_path, fake):
    shuffled = list(fake["metrics"])
    random.Random(0).shuffle(shuffled)
    assert _collect(tmp_path / "a", fake["metrics"]) == 0
    assert _collect(tmp_path / "b", shuffled) == 0
    for name in ("runs.csv", "summary.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_summary_is_mean_over_seeds_of_the_table_metrics(tmp_path, fake):
    assert _collect(tmp_path / "eval", fake["metrics"]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert set(summary) == {"captions", "vqa", "snli_ve", "nlvr2"}
    assert set(summary["captions"]["optima"]) == {"CIDEr", "Bleu_4"}
    assert set(summary["vqa"]["layerwise"]) == {"overall"}
    assert set(summary["nlvr2"]["teacher"]) == {"accuracy"}
    expected = np.mean([fake["values"][("snli_ve", "optima", s)]["accuracy"] for s in (0, 1, 2)])
    assert summary["snli_ve"]["optima"]["accuracy"] == pytest.approx(expected, rel=1e-12)


def test_summary_uses_test_split_when_both_splits_are_collected(tmp_path, fake):
    val = [write_metrics(tmp_path / "val" / f"{s}.json", "vqa", "optima", s, split="val", metrics={"overall": 1.0})
           for s in (0, 1, 2)]
    assert _collect(tmp_path / "eval", [*fake["metrics"], *val]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["vqa"]["optima"]["overall"] > 50  # the test split's, not the val split's 1.0
    assert _collect(tmp_path / "eval2", [*fake["metrics"], *val], "--split", "val") == 0
    summary = json.loads((tmp_path / "eval2" / "summary.json").read_text())
    assert summary == {"vqa": {"optima": {"overall": 1.0}}}
    runs = pd.read_csv(tmp_path / "eval2" / "runs.csv")
    assert set(runs["split"]) == {"val", "test"}  # runs.csv keeps every split


def test_null_secondary_metric_is_dropped_but_primary_must_be_finite(tmp_path):
    metrics = fake_metrics("vqa", "optima", 0) | {"number": None}
    path = write_metrics(tmp_path / "m.json", "vqa", "optima", 0, metrics=metrics)
    assert _collect(tmp_path / "eval", [path]) == 0
    runs = pd.read_csv(tmp_path / "eval" / "runs.csv")
    assert "number" not in set(runs["metric"]) and "overall" in set(runs["metric"])


def _bad_record(**changes):
    record = {"task": "snli_ve", "method": "optima", "seed": 0, "role": "student", "split": "test",
              "metrics": {"accuracy": 0.75, "accuracy_neutral": 0.7}}
    for key, value in changes.items():
        if value is _DELETE:
            del record[key]
        else:
            record[key] = value
    return json.dumps(record)


_DELETE = object()
BAD_FILES = {
    "not_json": ("{task: vqa", "not valid JSON"),
    "list": ("[1, 2]", "must hold a JSON object"),
    "missing_keys": (_bad_record(seed=_DELETE, split=_DELETE), "missing key(s) seed, split"),
    "unknown_task": (_bad_record(task="gqa"), "task: must be one of"),
    "bool_seed": (_bad_record(seed=True), "seed: must be a non-negative integer"),
    "negative_seed": (_bad_record(seed=-1), "seed: must be a non-negative integer"),
    "bad_role": (_bad_record(role="ta"), "role: must be one of"),
    "teacher_role_mismatch": (_bad_record(method="teacher"), "does not fit method 'teacher'"),
    "bad_split": (_bad_record(split="dev"), "split: must be one of"),
    "empty_metrics": (_bad_record(metrics={}), "metrics: must be a non-empty object"),
    "primary_missing": (_bad_record(metrics={"accuracy_neutral": 0.7}), "metrics.accuracy: missing"),
    "primary_nan": (_bad_record(metrics={"accuracy": float("nan")}), "metrics.accuracy: the primary metric"),
    "text_value": (_bad_record(metrics={"accuracy": "0.7"}), "metrics.accuracy: must be a number"),
    "percent_not_fraction": (_bad_record(metrics={"accuracy": 75.0}), "outside [0, 1]"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_metrics_file_names_file_and_problem(tmp_path, case, capsys):
    text, message = BAD_FILES[case]
    good = write_metrics(tmp_path / "good.json", "snli_ve", "layerwise", 0)
    bad = tmp_path / f"{case}.json"
    bad.write_text(text)
    assert _collect(tmp_path / "eval", [good, bad]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and message in err, err
    assert not (tmp_path / "eval" / "runs.csv").exists()


def test_missing_file_and_duplicate_run_are_errors(tmp_path, capsys):
    good = write_metrics(tmp_path / "a" / "metrics_test.json", "nlvr2", "optima", 1)
    assert _collect(tmp_path / "eval", [good, tmp_path / "nope.json"]) == 2
    assert f"{tmp_path / 'nope.json'}: metrics file not found" in capsys.readouterr().err
    twin = write_metrics(tmp_path / "b" / "metrics_test.json", "nlvr2", "optima", 1)
    assert _collect(tmp_path / "eval", [good, twin]) == 2
    err = capsys.readouterr().err
    assert str(twin) in err and str(good) in err and "same run" in err


def test_failed_collect_leaves_previous_outputs_untouched(tmp_path, fake):
    out = tmp_path / "eval"
    assert _collect(out, fake["metrics"]) == 0
    before = (out / "runs.csv").read_bytes(), (out / "summary.json").read_bytes()
    bad = tmp_path / "bad.json"
    bad.write_text(_bad_record(task="gqa"))
    assert _collect(out, [*fake["metrics"], bad]) == 2
    assert ((out / "runs.csv").read_bytes(), (out / "summary.json").read_bytes()) == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_default_out_dir_comes_from_config(tmp_path, monkeypatch, repo_root):
    monkeypatch.chdir(tmp_path)
    path = write_metrics(tmp_path / "m.json", "captions", "optima", 0)
    assert main(["collect", "--config", str(repo_root / "config" / "smoke.yaml"), str(path)]) == 0
    runs = pd.read_csv(tmp_path / "results" / "smoke" / "eval" / "runs.csv")
    assert math.isclose(runs.loc[runs.metric == "CIDEr", "value"].item(), fake_metrics("captions", "optima", 0)["CIDEr"])
