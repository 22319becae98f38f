"""Bandit simulator with known means: environments, a runner, pseudo-regret.

An environment instance is a (rounds, arms) table of true mean rewards plus a table of observed
rewards (mean + Gaussian noise), both drawn from the instance seed. Every policy run on an
instance sees the same observed rewards (common random numbers), so differences between policies
are not noise of the environment. The pseudo-regret of a round is the best mean of that round
minus the mean of the arm played.

Environments (time scales are in rounds and do not depend on the horizon, so a policy's options
mean the same at any horizon; ``timescale`` multiplies every period and decay time below):

- ``stationary``: means uniform in [0, 1], fixed; noise std 0.5.
- ``piecewise``: new means uniform in [0, 1] every ``period`` (150) rounds, redrawn until the best
  arm changes; noise std 0.5.
- ``drifting``: ``0.5 + 0.4 sin(2 pi t / 300 + phase_k)`` with phases evenly spread and a random
  offset, so the best arm changes smoothly every 300/K rounds; noise std 0.5.
- ``distillation``: shaped like OPTIMA's rewards (relative loss decrements): arm k's mean decays as
  ``a_k exp(-t / tau_k)`` with ``a_k`` log-uniform in [0.01, 0.1] and ``tau_k`` uniform in
  [50, 500] rounds, paired so that the arm that starts best decays fastest (the best arm changes
  at least once within the horizon); noise std is half the largest current mean, so rewards shrink
  over training and are sometimes negative.
- ``trend_switch``: what OPTIMA's rewards look like in a short distillation run, at the run's own
  length (its time scales follow the horizon, unlike the environments above): every arm's mean
  shares one downward trend, ``0.05 * 10^(-t / T)`` (a 10x fall over the run, as the relative loss
  decrements of the pipeline's students do), times an arm factor; the best arm has factor 1, the
  others factors uniform in [0.2, 0.8], and halfway through the run another arm becomes the best.
  Noise std is 0.3 times the trend, so rewards shrink and stay comparable only within a time.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from optima.bandits.registry import make_policy

NOISE = 0.5
PIECEWISE_PERIOD = 150
DRIFT_PERIOD = 300.0


@dataclasses.dataclass
class Instance:
    """One draw of an environment: ``means[t, k]`` true means, ``rewards[t, k]`` observed rewards."""

    env: str
    means: np.ndarray
    rewards: np.ndarray

    @property
    def best(self) -> np.ndarray:
        return self.means.max(axis=1)


def _stationary(rng: np.random.Generator, rounds: int, n_arms: int, timescale: float) -> tuple[np.ndarray, np.ndarray]:
    means = np.broadcast_to(rng.uniform(0.0, 1.0, n_arms), (rounds, n_arms))
    return means, np.full(rounds, NOISE)


def _piecewise(rng: np.random.Generator, rounds: int, n_arms: int, timescale: float) -> tuple[np.ndarray, np.ndarray]:
    means = np.empty((rounds, n_arms))
    previous_best = -1
    period = max(1, round(PIECEWISE_PERIOD * timescale))
    for start in range(0, rounds, period):
        segment = rng.uniform(0.0, 1.0, n_arms)
        while n_arms > 1 and int(segment.argmax()) == previous_best:
            segment = rng.uniform(0.0, 1.0, n_arms)
        previous_best = int(segment.argmax())
        means[start:start + period] = segment
    return means, np.full(rounds, NOISE)


def _drifting(rng: np.random.Generator, rounds: int, n_arms: int, timescale: float) -> tuple[np.ndarray, np.ndarray]:
    phases = rng.uniform(0.0, 2.0 * np.pi) + 2.0 * np.pi * np.arange(n_arms) / n_arms
    t = np.arange(rounds)[:, None]
    means = 0.5 + 0.4 * np.sin(2.0 * np.pi * t / (DRIFT_PERIOD * timescale) + phases[None, :])
    return means, np.full(rounds, NOISE)


def _distillation(rng: np.random.Generator, rounds: int, n_arms: int, timescale: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(rounds)[:, None]
    for _ in range(1000):
        start = np.sort(np.exp(rng.uniform(np.log(0.01), np.log(0.1), n_arms)))[::-1]
        tau = np.sort(rng.uniform(50.0, 500.0, n_arms)) * timescale  # largest start decays fastest
        means = start[None, :] * np.exp(-t / tau[None, :])
        if n_arms == 1 or means[0].argmax() != means[-1].argmax():
            break
    return means, 0.5 * means.max(axis=1)


def _trend_switch(rng: np.random.Generator, rounds: int, n_arms: int, timescale: float) -> tuple[np.ndarray, np.ndarray]:
    trend = 0.05 * 10.0 ** (-np.arange(rounds) / max(rounds, 1))
    factors = rng.uniform(0.2, 0.8, n_arms)
    first = int(rng.integers(n_arms))
    second = first if n_arms == 1 else int((first + 1 + rng.integers(n_arms - 1)) % n_arms)
    means = np.empty((rounds, n_arms))
    half = rounds // 2
    for rows, best in ((slice(0, half), first), (slice(half, rounds), second)):
        arm_factor = factors.copy()
        arm_factor[best] = 1.0
        means[rows] = trend[rows, None] * arm_factor[None, :]
    return means, 0.3 * trend


ENVIRONMENTS: dict[str, Callable[[np.random.Generator, int, int, float], tuple[np.ndarray, np.ndarray]]] = {
    "stationary": _stationary,
    "piecewise": _piecewise,
    "drifting": _drifting,
    "distillation": _distillation,
    "trend_switch": _trend_switch,
}


def make_instance(env: str, n_arms: int, rounds: int, seed: int, timescale: float = 1.0) -> Instance:
    """Draw instance ``seed`` of environment ``env`` (means and noise from independent streams)."""
    if env not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {env!r} (allowed: {', '.join(ENVIRONMENTS)})")
    if not timescale > 0:
        raise ValueError(f"timescale must be > 0, got {timescale!r}")
    env_id = list(ENVIRONMENTS).index(env)
    means, noise_std = ENVIRONMENTS[env](np.random.default_rng([seed, env_id, 0]), rounds, n_arms, timescale)
    noise = np.random.default_rng([seed, env_id, 1]).standard_normal((rounds, n_arms))
    return Instance(env, np.ascontiguousarray(means), means + noise_std[:, None] * noise)


# ---------------------------------------------------------------------- running policies
ORACLES = ("oracle", "best_fixed")  # know the means: the best arm of each round / in hindsight


def play(policy, instance: Instance) -> np.ndarray:
    """Run ``policy`` for every round of ``instance``; return the arm played each round."""
    rewards = instance.rewards.tolist()  # Python floats: the policies work on floats
    chosen = np.empty(len(rewards), dtype=np.int64)
    for t, row in enumerate(rewards):
        arm = policy.select()
        policy.update(arm, row[arm])
        chosen[t] = arm
    return chosen


def choices(spec: tuple[str, dict[str, Any]], instance: Instance, seed: int) -> np.ndarray:
    """The arm policy ``spec = (name, options)`` (or an oracle) plays in every round of ``instance``."""
    name, options = spec
    if name == "oracle":
        chosen = instance.means.argmax(axis=1)
    elif name == "best_fixed":
        chosen = np.full(len(instance.means), instance.means.sum(axis=0).argmax())
    else:
        policy = make_policy(name, instance.means.shape[1], seed, **options)
        if policy.plays_all:
            raise ValueError(f"policy {name!r} plays every arm each round; pseudo-regret is not defined for it")
        chosen = play(policy, instance)
    return chosen


def regret_curve(spec: tuple[str, dict[str, Any]], instance: Instance, seed: int) -> np.ndarray:
    """Per-round pseudo-regret of policy ``spec = (name, options)`` (or an oracle) on ``instance``."""
    chosen = choices(spec, instance, seed)
    return instance.best - instance.means[np.arange(len(chosen)), chosen]


def run_seed(task: tuple[dict[str, tuple[str, dict[str, Any]]], str, int, int, int, float]) -> dict[str, np.ndarray]:
    """One (environment, seed), every policy on the same instance: ``(2, rounds)`` per label, the
    cumulative pseudo-regret and the cumulative number of rounds played on the best arm of the round."""
    specs, env, n_arms, rounds, seed, timescale = task
    instance = make_instance(env, n_arms, rounds, seed, timescale)
    out = {}
    for label, spec in specs.items():
        chosen = choices(spec, instance, seed)
        played = instance.means[np.arange(len(chosen)), chosen]
        out[label] = np.stack([np.cumsum(instance.best - played), np.cumsum(played >= instance.best)])
    return out


def run_benchmark(specs: dict[str, tuple[str, dict[str, Any]]], envs: list[str], n_arms: int, rounds: int,
                  seeds: list[int], workers: int = 1, progress: bool = False,
                  timescale: float = 1.0, with_best: bool = False):
    """Cumulative regret curves ``result[env][label]`` of shape (len(seeds), rounds); with
    ``with_best``, also ``best[env][label]``: the cumulative count of rounds on the round's best arm.

    ``specs`` maps a label to ``(policy name, options)``; the names ``oracle`` and ``best_fixed``
    are the oracles that know the means. Instances and policies are seeded by the seed, so results
    do not depend on ``workers``.
    """
    for name, options in specs.values():  # fail fast on a bad spec, before any worker starts
        if name not in ORACLES:
            make_policy(name, n_arms, 0, **options)
    tasks = [(specs, env, n_arms, rounds, seed, timescale) for env in envs for seed in seeds]
    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            outputs = pool.imap(run_seed, tasks, chunksize=max(1, len(tasks) // (8 * workers)))
            outputs = list(_progress(outputs, len(tasks), progress))
    else:
        outputs = [run_seed(task) for task in _progress(tasks, len(tasks), progress)]
    result: dict[str, dict[str, np.ndarray]] = {}
    best: dict[str, dict[str, np.ndarray]] = {}
    for env in envs:
        runs = outputs[: len(seeds)]
        outputs = outputs[len(seeds):]
        result[env] = {label: np.stack([run[label][0] for run in runs]) for label in specs}
        best[env] = {label: np.stack([run[label][1] for run in runs]) for label in specs}
    return (result, best) if with_best else result


def _progress(iterable, total: int, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc="bandit runs", unit="run", leave=False)
