"""The oracle: the ceiling of any per-round module choice.

Each round, from the same saved state (student, optimiser, scheduler, every random generator), the oracle
trains every arm for the round on the round's own batches, scores each candidate by its task loss on the
held-out set (``distill.heldout_size`` examples on images no method trains on), and keeps the best candidate:
its weights, optimiser and scheduler state and random state, exactly as if that arm alone had been trained.
It costs about ``arms`` times a round (plus the held-out evaluations); the train log's ``elapsed_s`` counts it.

It plugs into the trainer loop (``optima.distill.loop.fit``) through ``replace_step``: at a round's first step
it runs the candidates and hands the loop the chosen candidate's per-step values; the loop takes no step of
its own during the round. Every round logs the arm kept, the reward (relative decrement of the held-out loss),
the held-out loss before and after, and each candidate's held-out loss (``oracle_<arm>``).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from optima.distill.rounds import relative_decrement


@dataclass
class StepContext:
    """What the loop trains with, for a callback that trains on its own (``replace_step``)."""

    model: torch.nn.Module          # the objective, or its DDP wrapper
    objective: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    runtime: object
    grad_clip: float | None
    check: Callable[[dict], None]   # raises on non-finite losses
    batch_at: Callable[[int], dict]  # the (device) batch the loop would train on at a step
    total_steps: int
    train_step: Callable[[dict], tuple]  # one optimisation step on a batch: (values, grad norm, lr)


class OracleRounds:
    def __init__(self, arms: Sequence[tuple[str, ...]], round_steps: int, heldout_loss: Callable[[], float],
                 set_active: Callable[[tuple[str, ...]], None]):
        self.arms = list(arms)
        self.round_steps = round_steps
        self.heldout_loss = heldout_loss
        self.set_active = set_active
        self.round = 0
        self.pending: dict[int, tuple] = {}  # step -> (values, grad_norm, lr) of the kept candidate
        self.kept: int | None = None
        self.before: float | None = None     # held-out loss at the round's start
        self.candidates: list[float] = []
        self.overhead_s = 0.0                # held-out evaluations (not training)

    # -- the loop's hooks --------------------------------------------------------------------------
    def before_step(self, step: int) -> None:
        pass

    def replace_step(self, step: int, batch: dict, ctx: StepContext):
        from optima.runtime import rng_state, set_rng_state

        if step in self.pending:
            return self.pending.pop(step)
        if step % self.round_steps:
            raise RuntimeError(f"oracle: step {step} is inside a round it did not run")
        steps = list(range(step, min(step + self.round_steps, ctx.total_steps)))
        batches = [batch] + [ctx.batch_at(s) for s in steps[1:]]
        if self.before is None:
            self.before = self._heldout()
        start = self._snapshot(ctx, rng_state())
        best = None
        self.candidates = []
        for arm, modules in enumerate(self.arms):
            self._restore(ctx, start)
            set_rng_state(start["rng"])  # every candidate draws the same dropout masks as the first
            self.set_active(modules)
            results = [ctx.train_step(b) for b in batches]
            loss = ctx.runtime.all_reduce_mean(self._heldout())
            self.candidates.append(loss)
            if best is None or loss < best[0]:  # ties keep the earlier arm
                best = (loss, arm, results, self._snapshot(ctx, rng_state()))
        _, self.kept, results, end = best
        self._restore(ctx, end)
        set_rng_state(end["rng"])
        self.set_active(self.arms[self.kept])
        self.pending = dict(zip(steps[1:], results[1:]))
        return results[0]

    def after_step(self, step: int, losses: dict[str, float]) -> dict:
        if (step + 1) % self.round_steps:
            return {}
        after = self.candidates[self.kept]
        row = {"arm": "+".join(self.arms[self.kept]), "round": self.round,
               "reward": relative_decrement(self.before, after), "heldout_before": self.before,
               "heldout_after": after}
        # each single-module candidate's held-out loss (subset arms are logged by the arm kept only)
        row.update((f"oracle_{arm[0]}", loss) for arm, loss in zip(self.arms, self.candidates) if len(arm) == 1)
        self.before, self.round = after, self.round + 1
        return row

    # -- state -------------------------------------------------------------------------------------
    @staticmethod
    def _snapshot(ctx: StepContext, rng: dict) -> dict:
        return {"objective": copy.deepcopy(ctx.objective.state_dict()),
                "optimizer": copy.deepcopy(ctx.optimizer.state_dict()),
                "scheduler": copy.deepcopy(ctx.scheduler.state_dict()), "rng": rng}

    @staticmethod
    def _restore(ctx: StepContext, state: dict) -> None:
        ctx.objective.load_state_dict(state["objective"])
        ctx.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        ctx.scheduler.load_state_dict(state["scheduler"])

    def _heldout(self) -> float:
        started = time.perf_counter()
        loss = self.heldout_loss()
        self.overhead_s += time.perf_counter() - started
        return loss

    def state_dict(self) -> dict:
        return {"round": self.round, "kept": self.kept, "before": self.before, "candidates": self.candidates,
                "pending": {str(k): [v, float(g), lr] for k, (v, g, lr) in self.pending.items()}}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.round, self.kept, self.before = state["round"], state["kept"], state["before"]
        self.candidates = list(state["candidates"])
        self.pending = {int(k): (v, torch.tensor(g), lr) for k, (v, g, lr) in state["pending"].items()}
        if self.kept is not None:
            self.set_active(self.arms[self.kept])
