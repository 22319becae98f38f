"""Bandit rounds during distillation: every ``round_steps`` steps the policy picks an arm (a module or
a set of modules); at the end of the round the reward is measured and fed back to the policy.

Reward (``distill.reward``):
- ``probe``: relative decrement of the full distillation objective (all modules) on a fixed probe
  batch whose teacher outputs were computed once: ``(L_before - L_after) / L_before`` (docs/paper.md);
- ``task``: the same on the probe batch's task loss only;
- ``train``: relative decrement of the training-batch objective from the round's first to its last step;
- ``balanced``: the mean over the probe objective's terms (task, KD, each module's layer term) of each
  term's own relative decrement, so a term 10x larger than the others does not win by its size (a
  term's scale cancels in its relative decrement);
- ``heldout``: relative decrement of the task loss on a larger held-out set (``distill.heldout_size``
  examples on images no method trains on), which measures what the student is for rather than how close
  it is to the teacher.
The probe is measured only when the policy uses rewards or ``distill.log_rewards`` asks for them (for
figures); its time is kept apart (``overhead_s``) so training throughput excludes it. Every round logs
the arm, the reward and the inputs of every reward it can measure: the probe loss, its task loss and its
weighted terms (``term_<t>_before/after``, which add up to the probe loss: the reward decomposition), the
held-out task loss. Under torchrun the choice is made on rank 0 and broadcast; losses are averaged over ranks.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

from optima.coca_modules import MODULES
from optima.errors import TrainingError

# the probe objective's terms as they enter its loss (weights applied); they add up to the probe loss
TERMS = ("task", "kd", *MODULES)
TERM_COLUMNS = tuple(c for term in TERMS for c in (f"term_{term}_before", f"term_{term}_after"))


def relative_decrement(before: float, after: float) -> float:
    """The reward of a round: ``(L_before - L_after) / L_before``."""
    return (before - after) / max(abs(before), 1e-12)


def balanced_decrement(row) -> float:
    """The mean of the terms' relative decrements, over the terms present in the objective (before > 0)."""
    decrements = [relative_decrement(float(row[f"term_{t}_before"]), float(row[f"term_{t}_after"]))
                  for t in TERMS if float(row[f"term_{t}_before"]) > 0]
    return sum(decrements) / len(decrements) if decrements else 0.0


# the logged columns each reward is computed from
REWARD_COLUMNS = {"probe": ("probe_before", "probe_loss"), "task": ("probe_task_before", "probe_task_loss"),
                  "train": ("train_first", "train_last"), "balanced": TERM_COLUMNS,
                  "heldout": ("heldout_before", "heldout_after")}
REWARDS = tuple(REWARD_COLUMNS)  # the values of distill.reward (the schema's $defs/reward; a test keeps them equal)
PROBE_REWARDS = ("probe", "task", "balanced")  # the rewards measured on the probe
HELDOUT_REWARDS = ("heldout",)  # the rewards measured on the held-out set
# every column a round may log besides arm, round and reward (the compact rounds.csv keeps those present)
ROUND_COLUMNS = (*dict.fromkeys(c for columns in REWARD_COLUMNS.values() for c in columns),
                 *(f"oracle_{m}" for m in MODULES))


def round_reward(kind: str, row) -> float:
    """The reward of kind ``kind`` from a logged round (train_log.csv row)."""
    if kind == "balanced":
        return balanced_decrement(row)
    before, after = REWARD_COLUMNS[kind]
    return relative_decrement(float(row[before]), float(row[after]))


class RoundController:
    def __init__(self, policy, arms: Sequence[tuple[str, ...]], round_steps: int, reward: str,
                 probe_loss: Callable[[], dict[str, float]] | None, set_active: Callable[[tuple[str, ...]], None],
                 runtime, measure: bool = True, terms: Callable[[dict], dict[str, float]] | None = None,
                 heldout_loss: Callable[[], float] | None = None):
        """``measure``: compute rewards (a reward-driven policy, or ``distill.log_rewards``); without it the
        probe is never evaluated and the rounds log only the arm. ``terms``: the probe objective's weighted
        terms from its losses (``DistillationObjective.weighted_terms``); ``heldout_loss``: the task loss on
        the held-out set (``HeldoutProbe.loss``)."""
        self.policy = policy
        self.measure = measure
        self.arms = list(arms)
        self.round_steps = round_steps
        self.reward_kind = reward
        self.probe_loss = probe_loss
        self.terms = terms
        self.heldout_loss = heldout_loss
        self.set_active = set_active
        self.runtime = runtime
        self.round = 0
        self.arm: int | None = None
        self.before: dict[str, float] | None = None  # probe losses at the round's start
        self.first_train_loss: float | None = None
        # with a probe at hand every round logs all three rewards' inputs (the reward studies compare them)
        self.uses_probe = measure and (reward in PROBE_REWARDS or probe_loss is not None)
        self.uses_heldout = measure and heldout_loss is not None
        if measure and reward in PROBE_REWARDS and probe_loss is None:
            raise ValueError(f"reward {reward!r} needs a probe")
        if measure and reward in HELDOUT_REWARDS and heldout_loss is None:
            raise ValueError(f"reward {reward!r} needs a held-out set (distill.heldout_size)")
        self.overhead_s = 0.0  # seconds spent measuring the probe (not training)

    # -- helpers -------------------------------------------------------------------------------
    def _arm_label(self, arm: int | None) -> str:
        if arm is None or arm < 0:
            return "all"
        return "+".join(self.arms[arm])

    def _measure(self) -> dict[str, float]:
        """The probe's full objective (``loss``), task loss (``task_loss``), weighted terms (``term_<t>``)
        and the held-out task loss (``heldout``): those measured here, averaged over ranks."""
        started = time.perf_counter()
        measured = {}
        if self.uses_probe:
            values = self.probe_loss()
            measured = {key: values[key] for key in ("loss", "task_loss")}
            if self.terms is not None:
                measured.update((f"term_{t}", v) for t, v in self.terms(values).items())
        if self.uses_heldout:
            measured["heldout"] = self.heldout_loss()
        measured = {key: self.runtime.all_reduce_mean(value) for key, value in measured.items()}
        self.overhead_s += time.perf_counter() - started
        return measured

    # -- loop callbacks ----------------------------------------------------------------------------
    def before_step(self, step: int) -> None:
        if step % self.round_steps != 0:
            return
        if self.policy.plays_all:
            arm = -1
        else:
            arm = self.runtime.broadcast_object(self.policy.select() if self.runtime.is_main else None)
        self.arm = arm
        self.set_active(tuple(MODULES) if arm == -1 else self.arms[arm])
        if (self.uses_probe or self.uses_heldout) and self.before is None:
            self.before = self._measure()

    def after_step(self, step: int, losses: dict[str, float]) -> dict:
        if step % self.round_steps == 0:
            self.first_train_loss = losses["loss"]  # already averaged over ranks by the loop
        if (step + 1) % self.round_steps != 0:
            return {}
        row = {"arm": self._arm_label(self.arm), "round": self.round}
        if self.measure:
            row.update(train_first=self.first_train_loss, train_last=losses["loss"])
            if self.uses_probe or self.uses_heldout:
                after = self._measure()
                row.update(_round_columns(self.before, after))
                self.before = after
            reward = round_reward(self.reward_kind, row)
            if not math.isfinite(reward):
                terms = [f"{key} is {value}" for key, value in row.items()
                         if isinstance(value, float) and not math.isfinite(value)]
                shown = f" ({', '.join(terms[:3])})" if terms else ""
                raise TrainingError(f"the {self.reward_kind} reward of round {self.round} (step {step + 1}) is "
                                    f"{reward}{shown}: the student diverged; stopped")
            row["reward"] = reward
            if self.runtime.is_main and not self.policy.plays_all:
                self.policy.update(self.arm, reward)
        elif self.runtime.is_main and not self.policy.plays_all:
            self.policy.update(self.arm, 0.0)  # a policy that ignores rewards still counts its rounds
        self.round += 1
        return row

    # -- checkpointing ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "round": self.round, "arm": self.arm, "before": self.before,
                "first_train_loss": self.first_train_loss}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.policy.load_state_dict(state["policy"])
        self.round, self.arm, self.before = state["round"], state["arm"], state["before"]
        self.first_train_loss = state.get("first_train_loss")
        if self.arm is not None:
            self.set_active(tuple(MODULES) if self.arm == -1 else self.arms[self.arm])


def _round_columns(before: dict, after: dict) -> dict:
    """A round's logged measurements: each value before the round and after it."""
    row = {}
    if "loss" in before:
        row.update(probe_before=before["loss"], probe_loss=after["loss"],
                   probe_task_before=before["task_loss"], probe_task_loss=after["task_loss"])
    for term in TERMS:
        if f"term_{term}" in before:
            row[f"term_{term}_before"], row[f"term_{term}_after"] = before[f"term_{term}"], after[f"term_{term}"]
    if "heldout" in before:
        row.update(heldout_before=before["heldout"], heldout_after=after["heldout"])
    return row
