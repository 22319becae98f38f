"""The generic training loop: resume bit-for-bit, NaN stop, config refusal, deterministic batches."""

import json
import math

import pytest
import torch
from torch.utils.data import Dataset

from optima.distill import checkpoint as ckpt
from optima.distill.loop import TrainSpec, fit
from optima.distill.optim import warmup_cosine
from optima.runtime import Runtime, seed_everything
from optima.distill.sampling import StepBatchSampler
from optima.distill.trainlog import TIMING_COLUMNS
from optima.errors import CheckpointError, TrainingError


class Regression(Dataset):
    def __init__(self, n=64):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(n, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class Objective(torch.nn.Module):
    def __init__(self, poison_at=None):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
        self.calls, self.poison_at = 0, poison_at

    def forward(self, batch):
        pred = self.net(batch["x"]).squeeze(-1)
        task = torch.nn.functional.mse_loss(pred, batch["y"])
        self.calls += 1
        if self.poison_at is not None and self.calls > self.poison_at:
            task = task * float("nan")
        return {"loss": task, "task_loss": task}


SPEC = TrainSpec(steps=12, batch_size=8, lr=1e-2, warmup_steps=2, checkpoint_every=4, log_every=2)
CPU = Runtime(device=torch.device("cpu"))


def _train(run_dir, spec=SPEC, fingerprint=None, objective=None):
    seed_everything(0)
    objective = objective or Objective()
    log = fit(objective, Regression(), spec, CPU, run_dir, seed=0, fingerprint=fingerprint or {"a": 1})
    return objective, log


def _strip_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def test_loss_falls_and_checkpoints_are_pruned(tmp_path):
    _, log = _train(tmp_path)
    losses = [float(r["loss"]) for r in log.rows]
    assert losses[-1] < losses[0]
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path)] == ["step_0000008", "step_0000012"]


def test_resume_after_crash_is_bit_identical(tmp_path):
    reference, ref_log = _train(tmp_path / "ref")
    # "crash" after the checkpoint at step 8: train 8 steps, then run the full command again
    _train(tmp_path / "run", spec=TrainSpec(**{**SPEC.__dict__, "steps": 12, "checkpoint_every": 4}))
    for later in ckpt.checkpoint_dirs(tmp_path / "run")[1:]:
        import shutil
        shutil.rmtree(later)  # keep only step 8: as if killed before step 12 was written
    assert ckpt.latest_checkpoint(tmp_path / "run").name == "step_0000008"
    resumed, log = _train(tmp_path / "run")
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert _strip_timing(log.rows) == _strip_timing(ref_log.rows)


def test_refuses_checkpoint_from_other_config(tmp_path):
    _train(tmp_path, fingerprint={"distill": {"lr": 1}})
    import shutil
    shutil.rmtree(tmp_path / "checkpoints/step_0000012")  # as if killed after step 8: unfinished
    with pytest.raises(CheckpointError, match=r"differs in: distill\.lr"):
        _train(tmp_path, fingerprint={"distill": {"lr": 2}})


def test_finished_run_under_changed_config_retrains_from_scratch(tmp_path):
    _train(tmp_path, fingerprint={"distill": {"lr": 1}})
    _, log = _train(tmp_path, fingerprint={"distill": {"lr": 2}})  # dvc exp run / Snakemake params rerun
    assert log.rows[0]["step"] == "2" and len(log.rows) == 6


def test_nan_loss_stops_naming_step_and_term(tmp_path):
    with pytest.raises(TrainingError, match=r"'loss' is nan at step 5.*step_0000004"):
        _train(tmp_path, objective=Objective(poison_at=5))


def test_batches_are_a_function_of_the_step():
    a = StepBatchSampler(50, 8, seed=3, start_step=0, total_steps=20)
    b = StepBatchSampler(50, 8, seed=3, start_step=13, total_steps=20)
    assert list(a)[13:] == list(b)
    # two ranks split one global batch without overlap
    single = StepBatchSampler(50, 8, seed=3, start_step=0, total_steps=5)
    r0 = StepBatchSampler(50, 8, seed=3, start_step=0, total_steps=5, rank=0, world_size=2)
    r1 = StepBatchSampler(50, 8, seed=3, start_step=0, total_steps=5, rank=1, world_size=2)
    for whole, x, y in zip(single, r0, r1):
        assert len(x) == len(y) == 4 and x + y == whole  # the same global batch, split across ranks


def test_warmup_cosine_schedule():
    f = warmup_cosine(warmup_steps=4, total_steps=20)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and math.isclose(f(12), 0.5) and f(20) == 0.0


def test_periodic_evaluation_is_logged_and_survives_resume(tmp_path):
    calls = []

    def evaluator():
        calls.append(1)
        return {"accuracy": 0.5}

    spec = TrainSpec(**{**SPEC.__dict__, "eval_every": 4})
    seed_everything(0)
    fit(Objective(), Regression(), spec, CPU, tmp_path, seed=0, fingerprint={"a": 1}, evaluator=evaluator)
    rows = [json.loads(line) for line in (tmp_path / "eval_log.jsonl").read_text().splitlines()]
    assert rows == [{"step": 4, "accuracy": 0.5}, {"step": 8, "accuracy": 0.5}]  # the end has its own
    assert len(calls) == 2
