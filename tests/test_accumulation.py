"""Gradient accumulation (``finetune.accumulation_steps``, ``distill.accumulation_steps``): N micro-batches of
B/N give the update of one batch of B.

Every loss term is a mean over examples or over real (non-padding) tokens, so a micro-batch's term enters
the backward weighted by its share of the batch's items (``item_counts``, known from the batch before any
forward). The check runs in float64 on every task (captions with texts of different lengths, where
unweighted micro-batch means would be wrong), for the teacher's fine-tuning objective and the student's
distillation objective (task loss, KD and every module's layer MSE).

The tolerance is derived from the computation itself: the same one-batch gradient computed in float32
differs from the float64 one by the rounding of every operation at float32 precision; splitting the batch
only reorders float64 sums, so its difference must stay within that rounding rescaled to float64
(x eps64 / eps32), with a factor 10 of margin (measured: the split differs by at most that rounding). A naive split (equal weights) must land far outside it.
"""

from __future__ import annotations

import copy

import pytest
import torch

from optima.config import load_config
from optima.distill.loop import accumulate_gradients, optimisation_step, split_batch
from optima.distill.objectives import TaskObjective
from optima.distill.optim import build_optimizer, build_scheduler
from optima.distill.setup import build_objective
from optima.models import create_coca
from optima.runtime import Runtime
from optima.tasks import create_task_model, get_task

CPU = Runtime(device=torch.device("cpu"))
EPS_RATIO = torch.finfo(torch.float64).eps / torch.finfo(torch.float32).eps
VOCAB, CONTEXT, IMAGE = 64, 12, 32
NUM_CLASSES = {"captions": None, "vqa": 7, "snli_ve": 3, "nlvr2": 2}


def batch_of(task: str, n: int, seed: int = 0) -> dict:
    """Random examples with texts of different lengths (1 to CONTEXT - 1 real tokens, then padding 0)."""
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(3, VOCAB, (n, CONTEXT), generator=g)
    lengths = torch.randint(2, CONTEXT, (n,), generator=g)
    text[torch.arange(CONTEXT)[None, :] >= lengths[:, None]] = 0
    batch = {"text": text, "index": torch.arange(n)}
    pairs = get_task(task).images_per_example
    images = torch.randn(n, pairs, 3, IMAGE, IMAGE, generator=g)
    if pairs > 1:
        batch["images"] = images
    else:
        batch["image"] = images[:, 0]
    if task == "vqa":
        batch["answer_scores"] = (torch.rand(n, NUM_CLASSES[task], generator=g) > 0.7).float() * 0.6
    elif task != "captions":
        batch["label"] = torch.randint(0, NUM_CLASSES[task], (n,), generator=g)
    return batch


def objectives(task: str) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    coca = create_coca("optima-nano-teacher", vocab_size=VOCAB, context_length=CONTEXT)
    teacher = create_task_model(task, coca, NUM_CLASSES[task])
    finetune = TaskObjective(copy.deepcopy(teacher))  # before the distillation objective freezes the teacher
    config = load_config("config/smoke.yaml")
    distill, _, _ = build_objective(task, config, teacher, NUM_CLASSES[task], kd_weight=1.0, temperature=2.0,
                                    layer_weight=1.0)
    return {"finetune": finetune, "distill": distill}


def _as(batch: dict, dtype) -> dict:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}


def as_dtype(objective, dtype):
    """A copy in ``dtype`` (the frozen teacher too: it is held outside the module tree), in eval mode: no
    dropout, the same function at every call."""
    objective = copy.deepcopy(objective).to(dtype).eval()
    if hasattr(objective, "teacher"):
        objective.teacher.to(dtype)
    return objective


def gradient(objective, batch: dict, parts: int | None, dtype=torch.float64, naive: bool = False) -> torch.Tensor:
    objective = as_dtype(objective, dtype)
    batch = _as(batch, dtype)
    objective.zero_grad(set_to_none=True)
    if parts is None:
        objective(batch)["loss"].backward()
    elif naive:  # what a plain "loss / N per micro-batch" accumulation computes
        for mb in split_batch(batch, parts):
            (objective(mb)["loss"] / parts).backward()
    else:
        accumulate_gradients(objective, objective, batch, CPU, parts)
    return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel(), dtype=dtype)
                      for p in objective.parameters()]).double()


@pytest.mark.parametrize("task", ["captions", "vqa", "snli_ve", "nlvr2"])
def test_item_counts_are_the_counts_the_forward_reports(task):
    batch = batch_of(task, 5)
    distill = objectives(task)["distill"]
    for modules in (("vision", "text", "multimodal"), ("text",), ()):
        counts: dict = {}
        distill.compute(batch, modules, counts=counts)
        assert distill.item_counts(batch, modules) == counts, modules


@pytest.mark.parametrize("task", ["captions", "vqa", "snli_ve", "nlvr2"])
def test_micro_batches_give_the_gradient_of_the_whole_batch(task):
    batch = batch_of(task, 6, seed=1)
    for name, objective in objectives(task).items():
        whole = gradient(objective, batch, None)
        rounding = (gradient(objective, batch, None, dtype=torch.float32) - whole).norm() * EPS_RATIO
        tolerance = 10 * rounding
        for parts in (2, 3, 6):
            split = gradient(objective, batch, parts)
            assert (split - whole).norm() <= tolerance, (name, parts, float((split - whole).norm()), float(tolerance))
        if task == "captions" or name == "distill":  # token means: unweighted micro-batch means are wrong
            naive = gradient(objective, batch, 3, naive=True)
            assert (naive - whole).norm() > 1e4 * tolerance, (name, "naive split should differ")


def test_optimisation_step_with_accumulation_takes_the_same_step():
    """One AdamW step from the same state: the parameters after it agree to float64 rounding."""
    batch = _as(batch_of("captions", 8, seed=2), torch.float64)
    results = []
    for parts in (1, 4):
        objective = as_dtype(objectives("captions")["distill"], torch.float64)
        optimizer = build_optimizer(objective.named_parameters(), 1e-3, 0.1)
        scheduler = build_scheduler(optimizer, 0, 10)
        values, norm, _ = optimisation_step(objective, objective, optimizer, scheduler, batch, CPU, 1.0,
                                            accumulation_steps=parts)
        results.append((values, float(norm), torch.cat([p.detach().flatten() for p in objective.parameters()])))
    (v1, n1, p1), (v4, n4, p4) = results
    assert set(v1) == set(v4) and all(abs(v1[k] - v4[k]) <= 1e-10 * max(1.0, abs(v1[k])) for k in v1)
    assert abs(n1 - n4) <= 1e-10 * n1
    assert (p1 - p4).abs().max() <= 1e-9  # AdamW's first step moves each weight by ~lr: agreement to 1e-6 of it


def test_split_batch_keeps_every_example_once():
    batch = {"text": torch.arange(10)[:, None], "ids": list("abcdefghij"), "flag": True}
    parts = split_batch(batch, 3)
    assert [len(p["ids"]) for p in parts] == [3, 3, 4]
    assert torch.cat([p["text"] for p in parts]).flatten().tolist() == list(range(10))
    assert all(p["flag"] is True for p in parts)
    with pytest.raises(ValueError, match="more than the 10 examples"):
        split_batch(batch, 11)


def test_a_run_resumes_across_a_change_of_memory_keys(tmp_path):
    """accumulation_steps and grad_checkpointing change memory, not the run: a run stopped (say, out of memory
    on a small GPU) resumes with more accumulation steps instead of refusing its checkpoint; any other key
    still refuses it."""
    import shutil

    from optima.errors import CheckpointError
    from tests.test_loop import SPEC, _train

    _train(tmp_path, fingerprint={"finetune": {"lr": 1, "accumulation_steps": 1, "grad_checkpointing": False}})
    shutil.rmtree(tmp_path / "checkpoints/step_0000012")  # as if killed after step 8: unfinished
    with pytest.raises(CheckpointError, match=r"differs in: finetune\.lr"):
        _train(tmp_path, fingerprint={"finetune": {"lr": 2, "accumulation_steps": 1, "grad_checkpointing": False}})
    _, log = _train(tmp_path, fingerprint={"finetune": {"lr": 1, "accumulation_steps": 4, "grad_checkpointing": True}})
    assert log.rows[-1]["step"] == str(SPEC.steps)
