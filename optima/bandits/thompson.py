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
the largest draw is played.

Trend-free credit (``credit: detrended``, OPTIMA's default). A reward (a relative loss decrement)
shrinks as the student learns, so a raw reward says as much about *when* an arm was played as about
the arm. With ``detrended`` the recent rewards of all arms are fitted jointly by a shared linear time
trend plus one offset per arm, ``z_i = theta_{arm(i)} + beta (t_i - c) + noise`` (``c``: the recent
rewards' mean time), so that every reward is compared with the rewards of the other arms around the
same time; ``theta_k`` is arm k's contribution net of the trend, and the draw comes from the joint Gaussian posterior (Bayesian linear regression
with the same N(0, prior_scale^2) prior on each offset and on the slope). ``raw`` is the plain model
above (``beta = 0``). The first ``warmup_rounds`` rewards (learning-rate warm-up, the steepest part of
the trend) are not recorded at all, and the order in which the arms are first played
(``initial_order``) is drawn per seed, so no module is systematically played first.

OPTIMA's recent history is a sliding ``window`` of rounds (``window_unit: rounds``, Trovò et al.;
the default), each arm's last ``window`` rewards (``pulls``) or a discount ``gamma`` of every arm's
statistics every round. Discounting and round windows forget an arm that is not played, which sends
it back to the prior and so re-explores it; a per-arm window keeps a stale arm's last estimate for
ever, so one unlucky early reward can shut a module out for the rest of training.

Why normalise by the pooled recent rewards: expressing rewards in units of their current spread keeps
``scale`` and ``prior_scale`` meaningful at any loss scale and any stage of training. Normalising is
an affine map of all recent rewards, applied when selecting, so every stored reward is always
expressed in the current units.
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


CREDITS = ("raw", "detrended")
INITIAL_ORDERS = ("index", "random")


@dataclasses.dataclass
class ThompsonOptions(PolicyOptions):
    # the textbook algorithms' defaults; OptimaOptions overrides them with OPTIMA's
    scale: float = 1.0  # noise std of the normalised rewards (posterior width)
    prior_scale: float = 1.0  # std of the N(0, .) prior of an arm without recent rewards
    normalise: str = "recent"  # recent: pooled mean/std of recent rewards | none: raw rewards
    initial_plays: int = 1  # times each arm is played (round robin) before sampling starts
    credit: str = "raw"  # raw: rewards as observed | detrended: arm offsets over a shared linear time trend
    warmup_rounds: int = 0  # the first rounds' rewards are not recorded (played in initial_order)
    initial_order: str = "index"  # order of the round robin: index (arm 0 first) | random (drawn per seed)

    def check(self, policy: str, n_arms: int) -> None:
        check_number(policy, "scale", self.scale, low=0.0, low_open=True)
        check_number(policy, "prior_scale", self.prior_scale, low=0.0, low_open=True)
        check_choice(policy, "normalise", self.normalise, NORMALISERS)
        check_int(policy, "initial_plays", self.initial_plays, low=0)
        check_choice(policy, "credit", self.credit, CREDITS)
        check_int(policy, "warmup_rounds", self.warmup_rounds, low=0)
        check_choice(policy, "initial_order", self.initial_order, INITIAL_ORDERS)

    def history(self, n_arms: int) -> History:
        return make_history(n_arms, None, None, "rounds")

    def memory_rounds(self) -> float:
        """How many recent rounds the policy remembers (inf: all of them)."""
        return math.inf


@dataclasses.dataclass
class OptimaOptions(ThompsonOptions):
    # OPTIMA's one set of defaults (code, params.yaml, every config, the benchmark and the tests), chosen on
    # `optima bench bandits --envs trend_switch` at 10, 40 and 100 rounds (README: "Choosing OPTIMA's defaults")
    scale: float = 0.25
    window: int | None = 8  # recent history = the last `window` rounds (or pulls); null: see gamma
    window_unit: str = "rounds"  # rounds: the last `window` rounds of play | pulls: each arm's last `window` rewards
    gamma: float | None = None  # instead of window (set window to null): discount every arm's statistics per round
    credit: str = "detrended"
    warmup_rounds: int = 1
    initial_order: str = "random"

    def check(self, policy: str, n_arms: int) -> None:
        super().check(policy, n_arms)
        if self.window is not None:
            check_int(policy, "window", self.window, low=1)
        if self.gamma is not None:
            check_number(policy, "gamma", self.gamma, low=0.0, low_open=True, high=1.0, high_open=True)
        if self.window is not None and self.gamma is not None:
            raise ConfigError(f"options 'window' ({self.window}) and 'gamma' ({self.gamma}) of policy {policy!r} "
                              "exclude each other: set one of them to null (both null: the whole history)")
        check_choice(policy, "window_unit", self.window_unit, WINDOW_UNITS)

    def history(self, n_arms: int) -> History:
        return make_history(n_arms, self.window, self.gamma, self.window_unit)

    def memory_rounds(self) -> float:
        if self.gamma is not None:
            return 1.0 / (1.0 - self.gamma)
        if self.window is not None:
            return float(self.window) if self.window_unit == "rounds" else float(self.window * 3)
        return math.inf


@dataclasses.dataclass
class DiscountedOptions(ThompsonOptions):
    gamma: float = 0.9  # discount applied to every arm's statistics every round

    def check(self, policy: str, n_arms: int) -> None:
        super().check(policy, n_arms)
        check_number(policy, "gamma", self.gamma, low=0.0, low_open=True, high=1.0)

    def history(self, n_arms: int) -> History:
        return make_history(n_arms, None, self.gamma, "rounds")

    def memory_rounds(self) -> float:
        return math.inf if self.gamma >= 1.0 else 1.0 / (1.0 - self.gamma)


@dataclasses.dataclass
class SlidingWindowOptions(ThompsonOptions):
    window: int = 50  # the last `window` rounds (Trovò et al. 2020)

    def check(self, policy: str, n_arms: int) -> None:
        super().check(policy, n_arms)
        check_int(policy, "window", self.window, low=1)

    def history(self, n_arms: int) -> History:
        return make_history(n_arms, self.window, None, "rounds")

    def memory_rounds(self) -> float:
        return float(self.window)


class GaussianThompson(Policy):
    """Stationary Gaussian Thompson sampling (all history); subclasses change the history only."""

    name = "ts"
    Options = ThompsonOptions
    uses_rewards = True

    def __init__(self, n_arms: int, seed: int, options: ThompsonOptions | None = None):
        super().__init__(n_arms, seed, options)
        self.history = self.options.history(self.n_arms)
        self.plays = [0] * self.n_arms  # recorded plays (after warm-up), for the initial round robin
        self.order = list(range(self.n_arms))
        if self.options.initial_order == "random":
            self.order = [int(a) for a in self.rng.permutation(self.n_arms)]

    def select(self) -> int:
        if self.rounds < self.options.warmup_rounds:  # rewards of these rounds are discarded
            return self.order[self.rounds % self.n_arms]
        fewest = min(self.plays)
        if fewest < self.options.initial_plays:  # round robin: the least-played arm, first in `order`
            return next(arm for arm in self.order if self.plays[arm] == fewest)
        if self.options.credit == "detrended":
            import numpy as np

            mean, cov = self._trend_posterior()
            chol = np.linalg.cholesky(cov)
            sample = mean + chol @ self.rng.standard_normal(len(mean))
            draws = sample[: self.n_arms].tolist()
        else:
            means, stds = self.posterior()
            noise = self.rng.standard_normal(self.n_arms).tolist()
            draws = [m + s * e for m, s, e in zip(means, stds, noise)]
        return max(range(self.n_arms), key=draws.__getitem__)

    def _normalised(self) -> tuple[list[float], list[float]]:
        """Per-arm sums of the normalised rewards and of t * normalised reward."""
        h = self.history
        sums, t_rewards = list(h.sums), list(h.t_rewards)
        if self.options.normalise == "recent":
            centre, spread = recent_scale(h)
            sums = [(s - n * centre) / spread for n, s in zip(h.counts, h.sums)]
            t_rewards = [(ty - t * centre) / spread for t, ty in zip(h.t_sums, h.t_rewards)]
        return sums, t_rewards

    def _trend_posterior(self):
        """Joint Gaussian posterior (mean, covariance) of (theta_1..theta_K, beta) for the model
        ``z = theta_arm + beta (t - c) + N(0, scale^2)`` with N(0, prior_scale^2) priors, where ``c`` is the
        mean time of the recent rewards: theta_k is arm k's reward at that time, on the same footing as
        the prior's mean 0 (the recent rewards' mean). All arms share the slope, so which arm is best
        does not depend on the reference time."""
        import numpy as np

        h, k = self.history, self.n_arms
        total = math.fsum(h.counts)
        now = math.fsum(h.t_sums) / total if total > 0 else 0.0
        sums, t_rewards = self._normalised()
        rho = (self.options.scale / self.options.prior_scale) ** 2
        precision = np.zeros((k + 1, k + 1))
        rhs = np.zeros(k + 1)
        for arm in range(k):
            n, t1, t2 = h.counts[arm], h.t_sums[arm], h.t_squares[arm]
            u1 = t1 - now * n  # sum of (t - now)
            precision[arm, arm] = n + rho
            precision[arm, k] = precision[k, arm] = u1
            precision[k, k] += t2 - 2.0 * now * t1 + now * now * n
            rhs[arm] = sums[arm]
            rhs[k] += t_rewards[arm] - now * sums[arm]
        precision[k, k] += rho
        cov = np.linalg.inv(precision)
        cov = 0.5 * (cov + cov.T) * self.options.scale ** 2
        return cov @ rhs / self.options.scale ** 2, cov

    def posterior(self) -> tuple[list[float], list[float]]:
        """Per-arm posterior mean and std of the normalised reward now (the distribution ``select`` samples)."""
        if self.options.credit == "detrended":
            mean, cov = self._trend_posterior()
            return mean[: self.n_arms].tolist(), [math.sqrt(cov[i, i]) for i in range(self.n_arms)]
        counts = self.history.counts
        sums, _ = self._normalised()
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
        if self.rounds < self.options.warmup_rounds:
            return
        self.history.add(arm, reward, float(self.rounds))
        self.plays[arm] += 1

    def _state(self) -> dict[str, Any]:
        return {"plays": list(self.plays), "order": list(self.order), "history": self.history.state_dict()}

    def _load_state(self, state: dict[str, Any]) -> None:
        if len(state["plays"]) != self.n_arms:
            raise ValueError(f"expected {self.n_arms} play counts, got {len(state['plays'])}")
        self.plays = [int(p) for p in state["plays"]]
        self.order = [int(a) for a in state["order"]]
        self.history.load_state_dict(state["history"])


class Optima(GaussianThompson):
    """OPTIMA's modified Thompson sampling (docs/paper.md, reconstructed): Gaussian TS on recent history."""

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
