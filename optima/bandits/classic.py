"""Non-Thompson policies: the paper's baselines (uniform, layerwise), the single-module analysis
(fixed) and the classic references UCB1 and EXP3."""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
from typing import Any

from optima.bandits.base import Policy, PolicyOptions, check_choice, check_int, check_number
from optima.errors import ConfigError

RANGE_NORMALISERS = ("range", "none")


class Uniform(Policy):
    """One arm uniformly at random per round; rewards are ignored."""

    name = "uniform"

    def select(self) -> int:
        return int(self.rng.integers(self.n_arms))


class Layerwise(Policy):
    """Layerwise distillation: every arm every round. The trainer calls ``select_all()``;
    ``update(arm, reward)`` only validates its input (the policy learns nothing), so the trainer may
    report per-arm or whole-round rewards for logging without changing the choices."""

    name = "layerwise"
    plays_all = True

    def select_all(self) -> list[int]:
        return list(range(self.n_arms))

    def select(self) -> int:
        raise TypeError("policy 'layerwise' plays every arm each round: call select_all(), not select()")


@dataclasses.dataclass
class FixedOptions(PolicyOptions):
    arm: int | None = None  # required: index of the arm played every round

    def check(self, policy: str, n_arms: int) -> None:
        if self.arm is None:
            raise ConfigError(f"option 'arm' of policy {policy!r} is required (an arm index in [0, {n_arms - 1}])")
        check_int(policy, "arm", self.arm, low=0, high=n_arms - 1)


class Fixed(Policy):
    """Always the same arm (the single-module analysis); rewards are ignored."""

    name = "fixed"
    Options = FixedOptions

    def select(self) -> int:
        return int(self.options.arm)


@dataclasses.dataclass
class ReplayOptions(PolicyOptions):
    counts: list | None = None  # rounds per arm to replay (resolved from ``source``'s log by the trainer)
    source: str | None = None   # the method whose per-seed arm counts are replayed (its student of the same seed)

    def check(self, policy: str, n_arms: int) -> None:
        if (self.counts is None) == (self.source is None):
            raise ConfigError(f"policy {policy!r} needs exactly one of the options 'counts' (rounds per arm) and "
                              "'source' (the method whose arm counts it replays)")
        if self.counts is not None:
            if not isinstance(self.counts, list) or len(self.counts) != n_arms:
                raise ConfigError(f"option 'counts' of policy {policy!r}: one count per arm ({n_arms}), "
                                  f"got {self.counts!r}")
            for count in self.counts:
                check_int(policy, "counts", count, low=0)


class Replay(Policy):
    """A recorded allocation played in a shuffled order: arm k exactly ``counts[k]`` times, in an order drawn
    by the policy's generator (the same allocation as the recorded run, none of its timing); rewards are
    ignored. With ``source`` the trainer fills ``counts`` from that method's student of the same seed."""

    name = "replay"
    Options = ReplayOptions

    def __init__(self, n_arms, seed, options=None):
        super().__init__(n_arms, seed, options)
        counts = self.options.counts or [0] * self.n_arms
        order = [arm for arm, count in enumerate(counts) for _ in range(int(count))]
        self.order = [order[k] for k in self.rng.permutation(len(order))] if order else []

    def select(self) -> int:
        if self.options.counts is None:
            raise ValueError("policy 'replay': its counts were not resolved from the source run")
        if self.rounds >= len(self.order):
            raise ValueError(f"policy 'replay': round {self.rounds} asked for, but the recorded allocation has "
                             f"only {len(self.order)} rounds")
        return int(self.order[self.rounds])

    def _state(self) -> dict:
        return {"order": list(self.order)}

    def _load_state(self, state: dict) -> None:
        self.order = [int(arm) for arm in state["order"]]


class Oracle(Policy):
    """The per-round ceiling: each round the trainer trains every arm from the same state and keeps the one
    with the lowest held-out task loss (``optima.distill.oracle``); this class only names it for configs."""

    name = "oracle"

    def select(self) -> int:
        raise TypeError("policy 'oracle' is played by optima.distill.oracle.OracleRounds, not select()")


class _RewardRange:
    """Online min-max of every reward seen, mapping rewards into [0, 1] as UCB1 and EXP3 assume."""

    def __init__(self) -> None:
        self.low = math.inf
        self.high = -math.inf

    def add(self, reward: float) -> None:
        self.low = min(self.low, reward)
        self.high = max(self.high, reward)

    def __call__(self, value: float) -> float:
        if not self.high > self.low:
            return 0.5
        return (value - self.low) / (self.high - self.low)

    def state_dict(self) -> list[float | None]:
        return [None if math.isinf(self.low) else self.low, None if math.isinf(self.high) else self.high]

    def load_state_dict(self, state: list[float | None]) -> None:
        self.low = math.inf if state[0] is None else float(state[0])
        self.high = -math.inf if state[1] is None else float(state[1])


def _check_unit_reward(policy: str, reward: float) -> None:
    if not 0.0 <= reward <= 1.0:
        raise ValueError(f"{policy}.update(): with normalise 'none' rewards must lie in [0, 1], got {reward!r}")


@dataclasses.dataclass
class UCBOptions(PolicyOptions):
    exploration: float = 1.0  # multiplies UCB1's bonus sqrt(2 ln t / n_k)
    normalise: str = "range"  # range: map rewards to [0, 1] by the min/max seen so far | none: rewards in [0, 1]

    def check(self, policy: str, n_arms: int) -> None:
        check_number(policy, "exploration", self.exploration, low=0.0)
        check_choice(policy, "normalise", self.normalise, RANGE_NORMALISERS)


class UCB(Policy):
    """UCB1 (Auer, Cesa-Bianchi & Fischer 2002): each arm once, then the largest
    ``mean_k + exploration * sqrt(2 ln t / n_k)``; ties go to the lowest index."""

    name = "ucb"
    Options = UCBOptions
    uses_rewards = True

    def __init__(self, n_arms: int, seed: int, options: UCBOptions | None = None):
        super().__init__(n_arms, seed, options)
        self.counts = [0] * self.n_arms
        self.sums = [0.0] * self.n_arms
        self.range = _RewardRange()

    def select(self) -> int:
        for arm, count in enumerate(self.counts):
            if count == 0:
                return arm
        log_t = math.log(sum(self.counts))
        c = self.options.exploration
        rescale = self.range if self.options.normalise == "range" else (lambda v: v)
        index = [rescale(s / n) + c * math.sqrt(2.0 * log_t / n) for n, s in zip(self.counts, self.sums)]
        return max(range(self.n_arms), key=index.__getitem__)

    def _observe(self, arm: int, reward: float) -> None:
        if self.options.normalise == "none":
            _check_unit_reward(self.name, reward)
        self.counts[arm] += 1
        self.sums[arm] += reward
        self.range.add(reward)

    def _state(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sums": list(self.sums), "range": self.range.state_dict()}

    def _load_state(self, state: dict[str, Any]) -> None:
        if len(state["counts"]) != self.n_arms or len(state["sums"]) != self.n_arms:
            raise ValueError(f"expected {self.n_arms} counts and sums")
        self.counts = [int(c) for c in state["counts"]]
        self.sums = [float(s) for s in state["sums"]]
        self.range.load_state_dict(state["range"])


@dataclasses.dataclass
class EXP3Options(PolicyOptions):
    exploration: float = 0.1  # Auer et al.'s gamma: weight of the uniform mixture, in (0, 1]
    normalise: str = "range"  # range: map rewards to [0, 1] by the min/max seen so far | none: rewards in [0, 1]

    def check(self, policy: str, n_arms: int) -> None:
        check_number(policy, "exploration", self.exploration, low=0.0, low_open=True, high=1.0)
        check_choice(policy, "normalise", self.normalise, RANGE_NORMALISERS)


class EXP3(Policy):
    """EXP3 (Auer, Cesa-Bianchi, Freund & Schapire 2002), with log-weights for numerical stability:
    ``p_k = (1 - g) w_k / sum w + g / K``; the played arm's weight grows by ``exp(g x / (p_k K))``."""

    name = "exp3"
    Options = EXP3Options
    uses_rewards = True

    def __init__(self, n_arms: int, seed: int, options: EXP3Options | None = None):
        super().__init__(n_arms, seed, options)
        self.log_weights = [0.0] * self.n_arms
        self.range = _RewardRange()

    def probabilities(self) -> list[float]:
        top = max(self.log_weights)
        weights = [math.exp(w - top) for w in self.log_weights]
        total = math.fsum(weights)
        g = self.options.exploration
        return [(1.0 - g) * w / total + g / self.n_arms for w in weights]

    def select(self) -> int:
        cumulative = list(itertools.accumulate(self.probabilities()))
        u = float(self.rng.random()) * cumulative[-1]
        return min(bisect.bisect_right(cumulative, u), self.n_arms - 1)

    def _observe(self, arm: int, reward: float) -> None:
        if self.options.normalise == "none":
            _check_unit_reward(self.name, reward)
            x = reward
        else:
            self.range.add(reward)
            x = self.range(reward)
        p = self.probabilities()[arm]
        self.log_weights[arm] += self.options.exploration * x / (p * self.n_arms)
        top = max(self.log_weights)  # keep the log-weights bounded; only differences matter
        self.log_weights = [w - top for w in self.log_weights]

    def _state(self) -> dict[str, Any]:
        return {"log_weights": list(self.log_weights), "range": self.range.state_dict()}

    def _load_state(self, state: dict[str, Any]) -> None:
        if len(state["log_weights"]) != self.n_arms:
            raise ValueError(f"expected {self.n_arms} log-weights, got {len(state['log_weights'])}")
        self.log_weights = [float(w) for w in state["log_weights"]]
        self.range.load_state_dict(state["range"])
