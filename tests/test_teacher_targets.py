"""Teacher targets computed once per task: exactly the targets the students use, refused when they were
built for another teacher, data or layer map, and the size limit enforced; `optima bench step` times
the methods from them."""

import csv
import json
import subprocess
import sys

import pytest
import torch

from optima.config import MODULES
from optima.distill.loop import TrainSpec, fit
from optima.runtime import Runtime
from optima.distill.sampling import fixed_batch
from optima.distill.targets import (LOGITS, META_FILE, TARGETS_FILE, IndexedDataset, TeacherTargets,
                                    build_and_write, expected_meta)
from optima.errors import CheckpointError, ConfigError
from optima.models.checkpoint import write_checkpoint

from test_distill_mechanism import build, prepare  # noqa: E402  (the tests' directory is on sys.path)
from tests.numerics import F32, FLOAT64_REL

CPU = Runtime(device=torch.device("cpu"))
OPTIONS = {"mode": "always", "dtype": "float32", "max_gb": 1.0, "batch_size": 16}


@pytest.fixture(scope="module")
def vqa(tmp_path_factory, smoke_config_path):
    root = tmp_path_factory.mktemp("targets")
    return prepare("vqa", root / "vqa", smoke_config_path)


class Float64(torch.utils.data.Dataset):
    """A dataset's items with their float tensors in float64."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v
                for k, v in self.dataset[index].items()}

    def __getattr__(self, name):
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def build64(vqa):
    """The objective and its training set in float64 (tests/numerics.py): the cache (float32, OPTIONS) and the
    live teacher then differ by the cache's one rounding of each target, at most F32 / 2 of it, whatever the
    batches the teacher ran in and whatever the CPU's kernels (in float32 those alone differ by a kernel-dependent
    share)."""
    objective, train = build("vqa", vqa)
    objective.teacher.double()  # held outside the objective's parameters (frozen)
    return objective.double(), Float64(train)


def cached_equals_live(cached: torch.Tensor, live: torch.Tensor) -> bool:
    """One float32 rounding of each element (relative F32 / 2), plus float64 rounding at the tensor's size."""
    assert cached.dtype == torch.float32 and live.dtype == torch.float64
    return torch.allclose(cached.double(), live, rtol=F32 / 2, atol=FLOAT64_REL * float(live.abs().max()))


def setup(vqa, tmp_path, **options):
    objective, train = build64(vqa)
    dataset = IndexedDataset(train)
    weights = tmp_path / "teacher.safetensors"
    write_checkpoint(tmp_path, objective.teacher.state_dict(), {"model_cfg": {}})
    (tmp_path / "model.safetensors").rename(weights)
    meta = build_and_write(objective, dataset, {**OPTIONS, **options}, weights, tmp_path / "targets", log=lambda m: None)
    return objective, dataset, weights, meta


@pytest.mark.numerics
def test_cached_targets_are_the_teachers_outputs(vqa, tmp_path):
    objective, dataset, weights, meta = setup(vqa, tmp_path)
    assert meta["cached"] and (tmp_path / "targets" / TARGETS_FILE).is_file()
    targets = TeacherTargets.load(tmp_path / "targets", expected_meta(objective, dataset, weights), CPU.device)
    batch = fixed_batch(dataset, [5, 0, 17])
    live = objective.teacher_outputs(batch, MODULES, need_logits=True)
    objective.targets = targets
    cached = objective.teacher_outputs(batch, MODULES, need_logits=True)
    assert set(cached["features"]) == set(live["features"])  # every mapped layer and the pooler tokens
    for key in live["features"]:
        assert cached_equals_live(cached["features"][key], live["features"][key]), key
    assert cached_equals_live(cached["logits"], live["logits"])
    # only what the active module needs is looked up
    only_text = objective.teacher_outputs(batch, ("text",), need_logits=False)
    assert {k.split(".")[0] for k in only_text["features"]} == {"text"} and only_text["logits"] is None


@pytest.mark.numerics
def test_a_student_trained_from_the_cache_matches_one_trained_on_the_fly(vqa, tmp_path):
    objective, dataset, weights, _ = setup(vqa, tmp_path)
    spec = TrainSpec(steps=4, batch_size=8, lr=1e-3, warmup_steps=0, checkpoint_every=100, log_every=1)
    logs = []
    for name, use_cache in (("fly", False), ("cache", True)):
        objective, _ = build64(vqa)  # the same initial student
        if use_cache:
            objective.targets = TeacherTargets.load(tmp_path / "targets", expected_meta(objective, dataset, weights),
                                                    CPU.device)
        log = fit(objective, dataset, spec, CPU, tmp_path / name, 0, {"run": name})
        logs.append([float(r["loss"]) for r in log.rows])
    # The cache rounds each target by at most F32 / 2 of it; a loss term of squared differences (or KD) moves by
    # about twice that where student and teacher differ by about the teacher's size, and four training steps from
    # such targets move the losses no more (measured: 0.1 x F32). 10 x F32 leaves room for the amplification by
    # training; a target taken from another example or layer moves the loss by percents.
    assert logs[0] == pytest.approx(logs[1], rel=10 * F32)


def test_targets_built_for_another_teacher_or_layer_map_are_refused(vqa, tmp_path):
    objective, dataset, weights, _ = setup(vqa, tmp_path)
    expected = expected_meta(objective, dataset, weights)
    with pytest.raises(CheckpointError, match="teacher_sha256"):
        TeacherTargets.load(tmp_path / "targets", {**expected, "teacher_sha256": "0" * 64}, CPU.device)
    with pytest.raises(CheckpointError, match="layer_map"):
        TeacherTargets.load(tmp_path / "targets", {**expected, "layer_map": {"vision": [0]}}, CPU.device)
    (tmp_path / "targets" / TARGETS_FILE).write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="unreadable"):
        TeacherTargets.load(tmp_path / "targets", expected, CPU.device)
    (tmp_path / "targets" / META_FILE).unlink()  # an interrupted job: no json, nothing looks complete
    with pytest.raises(CheckpointError, match="targets.json missing"):
        TeacherTargets.load(tmp_path / "targets", expected, CPU.device)


def test_size_limit(vqa, tmp_path):
    with pytest.raises(ConfigError, match="distill.teacher_cache.max_gb"):
        setup(vqa, tmp_path, max_gb=1e-9)
    assert not (tmp_path / "targets" / META_FILE).exists()
    objective, dataset, weights, meta = setup(vqa, tmp_path, mode="auto", max_gb=1e-9)
    assert not meta.get("cached") and meta["estimated_gb"] > 1e-9
    recorded = json.loads((tmp_path / "targets" / META_FILE).read_text())
    assert recorded["cached"] is False and "max_gb" in recorded["reason"]
    assert not (tmp_path / "targets" / TARGETS_FILE).exists()
    assert TeacherTargets.load(tmp_path / "targets", expected_meta(objective, dataset, weights), CPU.device) is None
    # float16 halves the estimate of float32
    _, _, _, half = setup(vqa, tmp_path / "half", dtype="float16")
    _, _, _, full = setup(vqa, tmp_path / "full", dtype="float32")
    assert half["estimated_gb"] == pytest.approx(full["estimated_gb"] / 2)
    assert LOGITS in full["shapes"]


def test_bench_step_times_every_method(tmp_path, smoke_config_path):
    out = tmp_path / "step.csv"
    proc = subprocess.run([sys.executable, "-m", "optima", "bench", "step", "--config", str(smoke_config_path),
                           "--out", str(out), "--repeats", "1", "--warmup", "0"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[:6] == ["method", "median_step_s", "ratio_to_layerwise", "ratio_to_student_alone",
                                 "teacher_s", "probe_s"]
    assert [r["method"] for r in rows] == ["finetune", "kd", "layerwise", "uniform", "optima"]
    by = {r["method"]: r for r in rows}
    assert float(by["layerwise"]["ratio_to_layerwise"]) == 1.0 and float(by["finetune"]["ratio_to_student_alone"]) == 1.0
    assert float(by["finetune"]["teacher_s"]) == 0.0  # the student alone never asks the teacher
    assert float(by["optima"]["probe_s"]) > 0 and float(by["uniform"]["probe_s"]) == 0.0
    assert "cached" in proc.stdout and "| optima |" in proc.stdout


def test_evaluate_takes_several_runs_of_one_task_but_one_out_file_only(tmp_path, smoke_config_path):
    proc = subprocess.run([sys.executable, "-m", "optima", "evaluate", "--config", str(smoke_config_path),
                           "--data", str(tmp_path), "--run", str(tmp_path / "a"), "--run", str(tmp_path / "b"),
                           "--out", str(tmp_path / "m.json")], capture_output=True, text=True)
    assert proc.returncode == 2 and "--out names one file" in proc.stderr
    assert not (tmp_path / "m.json").exists()


@pytest.mark.numerics
def test_only_the_examples_the_students_see_are_cached_and_others_fall_back(vqa, tmp_path):
    from optima.distill.probe import split_probe
    from optima.distill.targets import used_examples

    objective, train = build64(vqa)
    dataset = IndexedDataset(train)
    probe, train_idx = split_probe(dataset, 2, seed=0)
    section = {"seeds": [0], "steps": 2, "batch_size": 8}
    examples = used_examples(dataset, section, train_idx, probe)
    assert set(probe) <= set(examples) and len(examples) <= 2 * 8 + 2 < len(dataset)
    write_checkpoint(tmp_path, objective.teacher.state_dict(), {"model_cfg": {}})
    weights = tmp_path / "model.safetensors"
    meta = build_and_write(objective, dataset, OPTIONS, weights, tmp_path / "t", log=lambda m: None, examples=examples)
    assert meta["cached_examples"] == examples
    targets = TeacherTargets.load(tmp_path / "t", expected_meta(objective, dataset, weights), CPU.device)
    seen = fixed_batch(dataset, examples[:3])
    unseen = fixed_batch(dataset, [i for i in range(len(dataset)) if i not in examples][:3])
    live = {name: objective.teacher_outputs(b, MODULES, need_logits=True) for name, b in (("seen", seen), ("unseen", unseen))}
    objective.targets = targets
    for name, b in (("seen", seen), ("unseen", unseen)):
        out = objective.teacher_outputs(b, MODULES, need_logits=True)
        if name == "seen":  # from the float32 cache
            assert cached_equals_live(out["logits"], live[name]["logits"])
            for key in live[name]["features"]:
                assert cached_equals_live(out["features"][key], live[name]["features"][key]), key
        else:  # computed on the fly, like the reference: the same float64 computation
            assert torch.equal(out["logits"], live[name]["logits"])
            assert all(torch.equal(out["features"][k], v) for k, v in live[name]["features"].items())
    assert targets.misses == 1  # the unseen batch was computed on the fly
