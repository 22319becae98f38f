"""Gaussian Thompson sampling on recent history: OPTIMA's policy and its stationary/discounted/
sliding-window references.

Per round, every arm's recent rewards (a window or a discount, see ``history``) are put on a common
scale (``normalise``), and a mean is drawn from each arm's Gaussian posterior::

    z_i      = (r_i - c) / s          c, s: mean and std of the recent rewards of all arms pooled
    theta_k ~ N( Z_k / (n_k + rho),  scale^2 / (n_k + rho) ),   rho = scale^2 / prior_scale^2

where ``n_k`` is the arm's (effective) number of recent rewards and ``Z_k`` the sum of their z.
This is the conjugate posterior of a N(0, prior_scale^2) prior with Gaussian noise of std ``scale``:
an arm with no recent reward is drawn from the prior, and with ``prior_scale == scale`` it is
N(Z_k / (n_k + 1), scale^2 / (n_k + 1)), Agrawal & Goyal's Gaussian Thompson sampling. The arm with
the largest draw is played. Before sampling starts every arm is played ``initial_plays`` times.

OPTIMA's recent history is either a discount ``gamma`` of every arm's statistics every round (the
default, 0.98) or a sliding ``window``: the last ``window`` rounds (``window_unit: rounds``, Trovò
et al.) or each arm's last ``window`` rewards (``pulls``). Discounting and round windows forget an
arm that is not played, which sends it back to the prior and so re-explores it; a per-arm window
keeps a stale arm's last estimate for ever, so one unlucky early reward can shut a module out for
the rest of training (seen on the benchmark), which is why it is not the default.

Why normalise by the pooled recent rewards: the reward (a relative loss decrement) is small and
shrinks as the student trains; expressing it in units of the current spread of rewards keeps
``scale`` and ``prior_scale`` meaningful at any loss scale and any stage of training.
Normalising is an affine map of all recent rewards, applied when selecting, so every stored
reward is always expressed in the current units.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from optima.bandits.base import Policy, PolicyOptions, check_choice, check_int, check_number
from optima.bandits.history import History, make_history
from optima.errors import ConfigError

NORMALISERS = ("recent", "none")
WINDOW_UNITS = ("rounds", "pulls")


def recent_scale(history: History) -> tuple[float, float]:
    """(centre, spread) of the pooled recent rewards. Without any spread yet (one reward, or all
    equal) the spread is the magnitude of the mean, so the units stay those of the rewards."""
    count, mean, var = history.pooled()
    if count == 0.0:
        return 0.0, 1.0
    std = math.sqrt(var)
    if std > 1e-9 * abs(mean) and std > 1e-300:
        return mean, std
    return mean, abs(mean) if mean != 0.0 else 1.0


@dataclasses.dataclass
class ThompsonOptions(PolicyOptions):
    scale: float = 1.0  # noise std of the normalised rewards (posterior width)
    prior_scale: float = 1.0  # std of the N(0, .) prior of an arm without recent rewards
    normalise: str = "recent"  # recent: pooled mean/std of recent rewards | none: raw rewards
    initial_plays: int = 1  # times each arm is played, in index order, before sampling starts

    def check(self, policy: str, n_arms: int) -> None:
        check_number(policy, "scale", self.scale, low=0.0, low_open=True)
        check_number(policy, "prior_scale", self.prior_scale, low=0.0, low_open=True)
        check_choice(policy, "normalise", self.normalise, NORMALISERS)
        check_int(policy, "initial_plays", self.initial_plays, low=0)

    def history(self, n_arms: int) -> History:
        return make_history(n_arms, None, None, "rounds")


@dataclasses.dataclass
class OptimaOptions(ThompsonOptions):
    # defaults tuned with `optima bench bandits` (many seeds, three time scales; see the README)
    scale: float = 0.25
    gamma: float | None = 0.98  # discount of every arm's statistics per round (memory ~ 1 / (1 - gamma) rounds)
    window: int | None = None  # instead of gamma (set gamma to null): the last `window` rounds or pulls
    window_unit: str = "rounds"  # rounds: the last `window` rounds of play | pulls: each arm's last `window` rewards

    def check(self, policy: str, n_arms: int) -> None:
        super().check(policy, n_arms)
        if self.window is not None:
            check_int(policy, "window", self.window, low=1)
        if self.gamma is not None:
            check_number(policy, "gamma", self.gamma, low=0.0, low_open=True, high=1.0)
        if self.window is not None and self.gamma is not None:
            raise ConfigError(f"options 'window' ({self.window}) and 'gamma' ({self.gamma}) of policy {policy!r} "
                              "exclude each other: set one of them to null (both null: the whole history)")
        check_choice(policy, "window_unit", self.window_unit, WINDOW_UNITS)

    def history(self, n_arms: int) -> History:
        return make_history(n_arms, self.window, self.gamma, self.window_unit)


@dataclasses.dataclass
class DiscountedOptions(ThompsonOptions):
    gamma: float = 0.9  # discount applied to every arm's statistics every round

    def check(self, policy: str, n_arms: int) -> None:
        super().check(policy, n_arms)
        check_number(policy, "gamma", self.gamma, low=0.0, low_open=True, high=1.0)

    def history(self, n_arms: int) -> History:
        return make_history(n_arms, None, self.gamma, "rounds")


@dataclasses.dataclass
class SlidingWindowOptions(ThompsonOptions):
    window: int = 50  # the last `window` rounds (Trovò et al. 2020)

    def check(self, policy: str, n_arms: int) -> None:
        super().check(policy, n_arms)
        check_int(policy, "window", self.window, low=1)

    def history(self, n_arms: int) -> History:
        return make_history(n_arms, self.window, None, "rounds")


class GaussianThompson(Policy):
    """Stationary Gaussian Thompson sampling (all history); subclasses change the history only."""

    name = "ts"
    Options = ThompsonOptions

    def __init__(self, n_arms: int, seed: int, options: ThompsonOptions | None = None):
        super().__init__(n_arms, seed, options)
        self.history = self.options.history(self.n_arms)
        self.plays = [0] * self.n_arms  # all-time plays, for the initial round robin

    def select(self) -> int:
        fewest = min(self.plays)
        if fewest < self.options.initial_plays:  # round robin: the least-played arm, lowest index first
            return self.plays.index(fewest)
        means, stds = self.posterior()
        noise = self.rng.standard_normal(self.n_arms).tolist()
        draws = [m + s * e for m, s, e in zip(means, stds, noise)]
        return max(range(self.n_arms), key=draws.__getitem__)

    def posterior(self) -> tuple[list[float], list[float]]:
        """Per-arm posterior mean and std of the normalised reward (the distribution ``select`` samples)."""
        counts, sums = self.history.counts, self.history.sums
        if self.options.normalise == "recent":
            centre, spread = recent_scale(self.history)
            sums = [(s - n * centre) / spread for n, s in zip(counts, sums)]
        scale = self.options.scale
        rho = (scale / self.options.prior_scale) ** 2
        means = [s / (n + rho) for n, s in zip(counts, sums)]
        stds = [scale / math.sqrt(n + rho) for n in counts]
        return means, stds

    def arm_statistics(self) -> dict[str, list[float]]:
        """Recent (effective) reward count and mean per arm in raw reward units (nan: no recent reward)."""
        counts, sums = self.history.counts, self.history.sums
        return {"count": list(counts), "mean": [s / n if n > 0 else math.nan for n, s in zip(counts, sums)]}

    def _observe(self, arm: int, reward: float) -> None:
        self.history.add(arm, reward)
        self.plays[arm] += 1

    def _state(self) -> dict[str, Any]:
        return {"plays": list(self.plays), "history": self.history.state_dict()}

    def _load_state(self, state: dict[str, Any]) -> None:
        if len(state["plays"]) != self.n_arms:
            raise ValueError(f"expected {self.n_arms} play counts, got {len(state['plays'])}")
        self.plays = [int(p) for p in state["plays"]]
        self.history.load_state_dict(state["history"])


class Optima(GaussianThompson):
    """OPTIMA's modified Thompson sampling (PAPER.md, reconstructed): Gaussian TS on recent history."""

    name = "optima"
    Options = OptimaOptions


class DiscountedThompson(GaussianThompson):
    """Gaussian discounted Thompson sampling (Raj & Kalyani 2017; Qi et al. 2023)."""

    name = "discounted_ts"
    Options = DiscountedOptions


class SlidingWindowThompson(GaussianThompson):
    """Sliding-window Thompson sampling (Trovò et al. 2020) with Gaussian posteriors."""

    name = "sliding_window_ts"
    Options = SlidingWindowOptions
