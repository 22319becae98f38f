"""The one training loop every verb uses (pretrain, finetune, distill).

The objective is an ``nn.Module`` whose parameters are exactly the trained ones and whose
``forward(batch)`` returns a dict of named losses with the total under ``"loss"``; frozen parts (the
teacher) are kept outside its parameters. Under torchrun it is wrapped in DistributedDataParallel.
Callbacks (the bandit rounds of distillation) run before and after each optimisation step.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from optima.distill import checkpoint as ckpt
from optima.distill.optim import build_optimizer, build_scheduler
from optima.runtime import Runtime, all_reduce_mean_dict, rng_state, set_rng_state
from optima.distill.sampling import training_loader
from optima.runtime import to_device
from optima.distill.trainlog import TrainLog
from optima.errors import CheckpointError, TrainingError
from optima.io import atomic_write_text


@dataclass
class TrainSpec:
    steps: int
    batch_size: int
    lr: float
    weight_decay: float = 0.1
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    checkpoint_every: int = 100
    log_every: int = 10
    eval_every: int | None = None  # validation every N steps (besides the one at the end)
    lr_schedule: str = "cosine"   # after warm-up: cosine | linear (to lr_floor) | constant (optima.distill.optim)
    lr_floor: float = 0.0         # the smallest learning rate, as a fraction of lr
    accumulation_steps: int = 1   # micro-batches per step (gradient accumulation; the same update, less memory)

    @classmethod
    def from_config(cls, section: dict) -> "TrainSpec":
        return cls(**{k: section[k] for k in cls.__dataclass_fields__ if k in section})


class Callbacks(Protocol):
    def before_step(self, step: int) -> None: ...
    def after_step(self, step: int, losses: dict[str, float]) -> dict[str, Any]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class NoCallbacks:
    def before_step(self, step):
        pass

    def after_step(self, step, losses):
        return {}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


# keys that change how much memory a step takes, not what it computes (to float rounding): a run resumes
# across them, e.g. after an out-of-memory failure on a smaller GPU with more accumulation steps
MEMORY_ONLY_KEYS = ("accumulation_steps", "grad_checkpointing")


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key in MEMORY_ONLY_KEYS:
                continue
            out += _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def split_batch(batch: dict, parts: int) -> list[dict]:
    """``batch`` as ``parts`` consecutive micro-batches (sizes differing by at most one): tensors and lists
    are split along their first dimension, anything else is shared."""
    size = next(len(v) for v in batch.values() if isinstance(v, (torch.Tensor, list, tuple)))
    if parts > size:
        raise ValueError(f"accumulation_steps {parts} is more than the {size} examples of a batch (per process)")
    bounds = [size * k // parts for k in range(parts + 1)]
    return [{key: value[a:b] if isinstance(value, (torch.Tensor, list, tuple)) and len(value) == size else value
             for key, value in batch.items()} for a, b in zip(bounds, bounds[1:])]


def accumulate_gradients(model, objective, batch: dict, runtime: Runtime, parts: int,
                         check: Callable[[dict], None] | None = None) -> dict[str, float]:
    """Forward and backward of ``batch`` in ``parts`` micro-batches (one micro-batch's activations alive at a
    time), leaving in ``.grad`` the gradient of the whole batch's loss; returns its loss values.

    Every loss term is a mean over examples or over real tokens (``objective.item_counts``), so the batch's
    term is the count-weighted mean of the micro-batches' terms: micro-batch k's term enters its backward
    with weight ``count_k / sum of counts`` (known from the batch before any forward), and the total is
    assembled from the weighted terms as the objective adds them (``objective.assemble``, linear). The
    gradients are the one batch's up to float rounding (tests/test_accumulation.py). Under DDP only the last
    micro-batch's backward synchronises."""
    import contextlib

    if not hasattr(objective, "item_counts"):
        from optima.errors import ConfigError

        raise ConfigError(f"accumulation_steps {parts}: the {type(objective).__name__} objective cannot split "
                          "its loss into micro-batches (e.g. a contrastive term compares every pair of the batch)")
    micro = split_batch(batch, parts)
    counts = [objective.item_counts(mb) for mb in micro]
    totals = {key: sum(c[key] for c in counts) for key in counts[0]}
    combined = dict.fromkeys(totals, 0.0)
    for k, (mb, count) in enumerate(zip(micro, counts)):
        weights = {key: count[key] / totals[key] if totals[key] else 0.0 for key in totals}
        last = k == len(micro) - 1
        sync = model.no_sync() if runtime.distributed and not last and hasattr(model, "no_sync") \
            else contextlib.nullcontext()
        with sync:
            with runtime.autocast():
                losses = model(mb)
            part = {name: float(value.detach()) for name, value in losses.items()}
            if check is not None:
                check(all_reduce_mean_dict(runtime, part))
            objective.assemble({key: losses[key] * weights[key] for key in totals})["loss"].backward()
        for key in totals:
            combined[key] += weights[key] * part[key]
    return all_reduce_mean_dict(runtime, {k: float(v) for k, v in objective.assemble(combined).items()})


def optimisation_step(model, objective, optimizer, scheduler, batch: dict, runtime: Runtime, grad_clip: float | None,
                      check: Callable[[dict], None] | None = None,
                      accumulation_steps: int = 1) -> tuple[dict[str, float], torch.Tensor, float]:
    """One step of every training verb (and of ``optima bench step``): forward under autocast, losses
    averaged over ranks, ``check(values)`` (e.g. finite), backward, clip, optimiser and scheduler step.
    ``accumulation_steps`` > 1: forward and backward in that many micro-batches (``accumulate_gradients``),
    one update. The previous step's gradients are freed before the forward (not held through it).
    Returns (loss values, gradient norm, the learning rate the step used)."""
    optimizer.zero_grad(set_to_none=True)
    if accumulation_steps > 1:
        values = accumulate_gradients(model, objective, batch, runtime, accumulation_steps, check)
    else:
        with runtime.autocast():
            losses = model(batch)
        values = all_reduce_mean_dict(runtime, {name: float(value.detach()) for name, value in losses.items()})
        if check is not None:
            check(values)
        losses["loss"].backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(objective.parameters(), grad_clip if grad_clip else float("inf"))
    lr = scheduler.get_last_lr()[0]
    if torch.isfinite(grad_norm):
        optimizer.step()
        scheduler.step()
    return values, grad_norm, lr


def _step_context(model, objective, optimizer, scheduler, runtime, spec, check, loader, dataset):
    """What a callback that trains on its own needs (``optima.distill.oracle.StepContext``)."""
    from optima.distill.oracle import StepContext
    from optima.distill.sampling import fixed_batch

    def batch_at(step: int) -> dict:  # the loader's batches are a pure function of the step
        return to_device(fixed_batch(dataset, loader.batch_sampler.batch(step)), runtime.device)

    def train_step(batch: dict):
        return optimisation_step(model, objective, optimizer, scheduler, batch, runtime, spec.grad_clip, check=check,
                                 accumulation_steps=spec.accumulation_steps)

    return StepContext(model, objective, optimizer, scheduler, runtime, spec.grad_clip, check, batch_at, spec.steps,
                       train_step)


def check_finite_parameters(objective: torch.nn.Module, step: int, desc: str, run_dir: str | Path) -> None:
    """TrainingError naming the first trained parameter holding a NaN or an infinity after ``step`` steps: a loss
    can be finite at a step whose update makes the weights diverge (the last step of a run above all)."""
    with torch.no_grad():
        for name, param in objective.named_parameters():
            if not bool(torch.isfinite(param).all()):
                last = ckpt.latest_checkpoint(run_dir)
                raise TrainingError(
                    f"{desc}: parameter {name!r} is not finite after step {step} (the weights diverged; "
                    f"a lower learning rate or gradient clipping may help); stopped. "
                    f"Last good checkpoint: {last if last else 'none (no checkpoint written yet)'}")


def check_final_update(model, objective, batch: dict, runtime: Runtime, steps: int, desc: str,
                       run_dir: str | Path, parts: int = 1) -> None:
    """The losses of the last batch (its first of ``parts`` micro-batches: no more memory than a step) after the
    last update, which no later step checks: TrainingError naming the term when one is not finite (the weights
    diverged at the last step). Runs in eval mode with the random state put back, so the run's results are the
    same as without it."""
    state, was_training = rng_state(), objective.training
    objective.eval()
    try:
        with torch.no_grad(), runtime.autocast():
            losses = model(split_batch(batch, parts)[0] if parts > 1 else batch)
        values = all_reduce_mean_dict(runtime, {name: float(value.detach()) for name, value in losses.items()})
    finally:
        objective.train(was_training)
        set_rng_state(state)
    for name, value in values.items():
        if not math.isfinite(value):
            last = ckpt.latest_checkpoint(run_dir)
            raise TrainingError(f"{desc}: loss term {name!r} is {value} after the last update (step {steps}): the "
                                f"weights diverged; stopped. Last good checkpoint: "
                                f"{last if last else 'none (no checkpoint written yet)'}")


def fit(objective: torch.nn.Module, dataset, spec: TrainSpec, runtime: Runtime, run_dir: str | Path, seed: int,
        fingerprint: dict, callbacks: Callbacks | None = None, num_workers: int = 0,
        desc: str = "train", evaluator: Callable[[], dict] | None = None) -> TrainLog:
    """Train ``objective`` for ``spec.steps`` steps, resuming from ``run_dir``'s latest checkpoint.

    ``evaluator`` (rank 0 only) is called every ``spec.eval_every`` steps; its metrics are appended to
    ``RUN/eval_log.jsonl`` (one JSON object per evaluation, with the step).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    callbacks = callbacks or NoCallbacks()
    objective.to(runtime.device)
    optimizer = build_optimizer(objective.named_parameters(), spec.lr, spec.weight_decay)
    scheduler = build_scheduler(optimizer, spec.warmup_steps, spec.steps, spec.lr_schedule, spec.lr_floor)
    log = TrainLog(run_dir / "train_log.inprogress.csv" if runtime.is_main else None)
    modules = {"objective": objective}
    eval_rows: list[dict] = []

    start_step = 0
    # the newest checkpoint that reads and matches its checksums (a bad newer one is skipped with a warning)
    loaded = ckpt.latest_readable_checkpoint(run_dir)
    latest = loaded["path"] if loaded is not None else None
    if latest is not None:
        # a finished run's last checkpoint only matters when the same command runs again; under a changed
        # config (dvc exp run, a Snakemake params rerun; both delete the outputs first, and
        # optima.runs.claim_run_dir refuses a directory whose outputs are still there) retrain from scratch
        old = loaded["meta"]
        if old.get("final") and _diff_keys(old.get("fingerprint"), fingerprint):
            import shutil

            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            latest = None
    if latest is not None:
        meta = ckpt.apply_checkpoint(loaded, modules, optimizer, scheduler)
        changed = _diff_keys(meta.get("fingerprint"), fingerprint)
        if changed:
            raise CheckpointError(
                f"{latest}: written by a different config or command (differs in: {', '.join(changed[:6])}); "
                f"refusing to resume. Delete {run_dir / 'checkpoints'} to start over.")
        set_rng_state(meta["rng"])
        callbacks.load_state_dict(meta.get("callbacks") or {})
        eval_rows = list(meta.get("eval_rows") or [])
        log.restore(meta["log_csv"])
        start_step = int(meta["step"])
        if runtime.is_main:
            print(f"{desc}: resuming from {latest} (step {start_step}/{spec.steps})", flush=True)

    model = objective
    if runtime.distributed:
        model = DistributedDataParallel(
            objective, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
            find_unused_parameters=True)  # task heads leave CoCa's contrastive parts unused

    def save(step: int) -> Path | None:
        check_finite_parameters(objective, step, desc, run_dir)  # no checkpoint (nor model) of diverged weights
        path = None
        if runtime.is_main:
            path = ckpt.save_checkpoint(
                run_dir, step, modules, optimizer, scheduler, rng_state(),
                {"fingerprint": fingerprint, "callbacks": callbacks.state_dict(), "eval_rows": eval_rows,
                 "final": step == spec.steps},
                log.to_csv())
        runtime.barrier()
        return path

    loader = training_loader(dataset, spec.batch_size, seed, start_step, spec.steps,
                             runtime.rank, runtime.world_size, runtime.loader_workers(num_workers))
    objective.train()
    bar = tqdm(total=spec.steps, initial=start_step, desc=desc, disable=not runtime.is_main,
               mininterval=2.0, dynamic_ncols=True)
    started, timed_examples = time.perf_counter(), 0
    for step, batch in enumerate(loader, start=start_step):
        batch = to_device(batch, runtime.device)
        callbacks.before_step(step)

        def check_finite(values, step=step):
            for name, value in values.items():
                if not math.isfinite(value):
                    last = ckpt.latest_checkpoint(run_dir)
                    raise TrainingError(
                        f"{desc}: loss term {name!r} is {value} at step {step}; stopped. "
                        f"Last good checkpoint: {last if last else 'none (no checkpoint written yet)'}")

        # a callback may train the step itself (the oracle trains every arm of a round and keeps the best)
        replaced = None
        if hasattr(callbacks, "replace_step"):
            replaced = callbacks.replace_step(step, batch, _step_context(
                model, objective, optimizer, scheduler, runtime, spec, check_finite, loader, dataset))
        if replaced is not None:
            values, grad_norm, lr = replaced
        else:
            values, grad_norm, lr = optimisation_step(model, objective, optimizer, scheduler, batch, runtime,
                                                      spec.grad_clip, check=check_finite,
                                                      accumulation_steps=spec.accumulation_steps)
        if not torch.isfinite(grad_norm):  # the step was not taken
            raise TrainingError(f"{desc}: gradient norm is {float(grad_norm)} at step {step}; stopped. "
                                f"Last good checkpoint: {ckpt.latest_checkpoint(run_dir)}")
        timed_examples += spec.batch_size
        extra = callbacks.after_step(step, values)
        done = step + 1
        if done % spec.log_every == 0 or done == spec.steps or extra:
            elapsed = time.perf_counter() - started
            overhead = getattr(callbacks, "overhead_s", 0.0)  # the probe: measured apart from training
            throughput = timed_examples / max(elapsed - overhead, 1e-9)
            row = {k: v for k, v in values.items() if k != "loss"}
            log.append(step=done, lr=lr, loss=values["loss"], grad_norm=float(grad_norm),
                       examples_per_s=round(throughput, 1), elapsed_s=round(elapsed, 3),
                       probe_s=round(overhead, 3), **row, **extra)
            bar.set_postfix(loss=f"{values['loss']:.4f}", ex_s=f"{throughput:.0f}")
        bar.update(1)
        if evaluator is not None and spec.eval_every and done % spec.eval_every == 0 and done != spec.steps:
            if runtime.is_main:
                eval_rows.append({"step": done, **evaluator()})
                atomic_write_text(run_dir / "eval_log.jsonl", "".join(json.dumps(r) + "\n" for r in eval_rows))
            runtime.barrier()
            objective.train()
        if done % spec.checkpoint_every == 0 and done != spec.steps:
            save(done)
    bar.close()
    if start_step < spec.steps:
        check_final_update(model, objective, batch, runtime, spec.steps, desc, run_dir, spec.accumulation_steps)
    if start_step < spec.steps or latest is None:
        save(spec.steps)  # the final state, so that re-running a finished command only re-evaluates
    log.close()
    return log
