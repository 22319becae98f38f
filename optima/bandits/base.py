"""What every module-selection policy shares: the interface, its own random generator, checked inputs.

A policy plays one bandit round per ``select()`` / ``update(arm, reward)`` pair. It owns a
``numpy.random.Generator`` (never the global random state), so the same seed gives the same
choices, and ``state_dict()`` captures everything (generator state included) so that a policy
restored with ``load_state_dict`` continues exactly as the original would have.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, ClassVar

import numpy as np

from optima.errors import CheckpointError, ConfigError


@dataclasses.dataclass
class PolicyOptions:
    """Base of the per-policy option dataclasses; ``check`` raises ConfigError naming the option."""

    def check(self, policy: str, n_arms: int) -> None:
        pass


class Policy:
    """Base class. Subclasses set ``name``, ``Options`` and implement ``select``/``_observe``."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[PolicyOptions]] = PolicyOptions
    plays_all: ClassVar[bool] = False  # True only for layerwise: the trainer distils every arm each round
    uses_rewards: ClassVar[bool] = False  # False: choices ignore rewards, so the trainer need not measure them

    def __init__(self, n_arms: int, seed: int, options: PolicyOptions | None = None):
        self.n_arms = check_n_arms(n_arms, self.name)
        self.seed = check_seed(seed, self.name)
        self.options = options if options is not None else self.Options()
        self.options.check(self.name, self.n_arms)
        self.rng = np.random.default_rng(self.seed)
        self.rounds = 0  # completed rounds (calls to update)

    # ------------------------------------------------------------------ interface
    def select(self) -> int:
        raise NotImplementedError

    def update(self, arm: int, reward: float) -> None:
        """Record the reward of the arm played this round (validated: arm in range, reward finite)."""
        arm, reward = self._check_update(arm, reward)
        self._observe(arm, reward)
        self.rounds += 1

    def _observe(self, arm: int, reward: float) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (plain lists, floats, ints, str); the generator state included."""
        return {
            "policy": self.name,
            "n_arms": self.n_arms,
            "options": _plain(dataclasses.asdict(self.options)),
            "rng": _plain(self.rng.bit_generator.state),
            "rounds": self.rounds,
            **self._state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = (self.name, self.n_arms, dataclasses.asdict(self.options))
        theirs = (state.get("policy"), state.get("n_arms"), state.get("options"))
        if mine != theirs:
            raise CheckpointError(
                f"policy state is for {theirs[0]!r} with {theirs[1]} arms and options {theirs[2]}, "
                f"but this run uses {mine[0]!r} with {mine[1]} arms and options {mine[2]}"
            )
        try:
            self.rng.bit_generator.state = state["rng"]
            self.rounds = int(state["rounds"])
            self._load_state(state)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"policy state for {self.name!r} is malformed: {exc!r}") from exc

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:
        pass

    # ------------------------------------------------------------------ helpers
    def _check_update(self, arm: Any, reward: Any) -> tuple[int, float]:
        # exact-type fast paths first: the simulator calls this millions of times
        if type(arm) is not int and (isinstance(arm, (bool, np.bool_)) or not isinstance(arm, numbers.Integral)):
            raise ValueError(f"{self.name}.update(): arm must be an integer index, got {arm!r}")
        if not 0 <= arm < self.n_arms:
            raise ValueError(f"{self.name}.update(): arm {arm} is out of range for {self.n_arms} arms")
        if type(reward) is not float and (isinstance(reward, (bool, np.bool_)) or not isinstance(reward, numbers.Real)):
            raise ValueError(f"{self.name}.update(): reward must be a real number, got {reward!r}")
        if not math.isfinite(reward):
            raise ValueError(f"{self.name}.update(): reward must be finite, got {reward!r} (arm {arm})")
        return int(arm), float(reward)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_arms={self.n_arms}, seed={self.seed}, options={self.options})"


def _plain(obj: Any) -> Any:
    """numpy scalars -> Python scalars, recursively (bit_generator states hold Python ints already)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ---------------------------------------------------------------------- option checks
def check_n_arms(n_arms: Any, policy: str) -> int:
    if isinstance(n_arms, bool) or not isinstance(n_arms, numbers.Integral) or n_arms < 1:
        raise ConfigError(f"policy {policy!r}: n_arms must be an integer >= 1, got {n_arms!r}")
    return int(n_arms)


def check_seed(seed: Any, policy: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"policy {policy!r}: seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _where(policy: str, option: str) -> str:
    return f"option {option!r} of policy {policy!r}"


def check_number(policy: str, option: str, value: Any, *, low: float | None = None,
                 low_open: bool = False, high: float | None = None, high_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"{_where(policy, option)} must be a finite number, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ConfigError(f"{_where(policy, option)} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (value >= high if high_open else value > high):
        raise ConfigError(f"{_where(policy, option)} must be {'<' if high_open else '<='} {high}, got {value!r}")


def check_int(policy: str, option: str, value: Any, *, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{_where(policy, option)} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{_where(policy, option)} must be {bound}, got {value!r}")


def check_choice(policy: str, option: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{_where(policy, option)} must be one of {', '.join(choices)}; got {value!r}")
