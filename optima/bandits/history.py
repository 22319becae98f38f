"""Per-arm reward statistics over recent history: sliding windows and exponential discounting.

Each history records one reward per round (``add``, with the round it was observed in) and keeps, per
arm, the (effective) number of recent rewards, their sum and their sum of squares, and the sums
``sum t``, ``sum t^2`` and ``sum t * r`` over the rounds ``t`` they were observed in; from these the
Thompson policies take each arm's posterior (with or without a shared time trend, see ``thompson``)
and the pooled mean/variance that puts rewards on a common scale. Windows update
the sums incrementally (a reward leaving the window is subtracted; an arm whose window empties is
reset to exact zeros). All arithmetic is on Python floats, so the state is exactly
JSON-serialisable and a restored history continues bit for bit.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any


class History:
    """Per-arm ``counts``, ``sums`` and ``squares`` of the recent rewards (raw reward units), and the
    time moments ``t_sums`` (sum of t), ``t_squares`` (sum of t^2), ``t_rewards`` (sum of t * r)."""

    kind: str = ""
    FIELDS = ("counts", "sums", "squares", "t_sums", "t_squares", "t_rewards")

    def __init__(self, n_arms: int):
        self.n_arms = n_arms
        for key in self.FIELDS:
            setattr(self, key, [0.0] * n_arms)

    def add(self, arm: int, reward: float, t: float = 0.0) -> None:
        raise NotImplementedError

    def _push(self, arm: int, reward: float, t: float) -> None:
        self.counts[arm] += 1.0
        self.sums[arm] += reward
        self.squares[arm] += reward * reward
        self.t_sums[arm] += t
        self.t_squares[arm] += t * t
        self.t_rewards[arm] += t * reward

    def _pop(self, arm: int, reward: float, t: float) -> None:
        self.counts[arm] -= 1.0
        if self.counts[arm] == 0.0:  # no rounding residue for an arm without recent rewards
            for key in self.FIELDS[1:]:
                getattr(self, key)[arm] = 0.0
        else:
            self.sums[arm] -= reward
            self.squares[arm] -= reward * reward
            self.t_sums[arm] -= t
            self.t_squares[arm] -= t * t
            self.t_rewards[arm] -= t * reward

    def pooled(self) -> tuple[float, float, float]:
        """(count, mean, variance) of all recent rewards of all arms; (0, 0, 0) when there are none."""
        n = math.fsum(self.counts)
        if n <= 0.0:
            return 0.0, 0.0, 0.0
        mean = math.fsum(self.sums) / n
        return n, mean, max(math.fsum(self.squares) / n - mean * mean, 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {key: list(getattr(self, key)) for key in self.FIELDS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in self.FIELDS:
            if len(state[key]) != self.n_arms:
                raise ValueError(f"expected {self.n_arms} {key}, got {len(state[key])}")
            setattr(self, key, [float(v) for v in state[key]])


class RoundWindow(History):
    """The rewards of the last ``window`` rounds (Trovò et al.'s sliding window): an arm not played
    in those rounds has no recent reward at all, so the policy falls back to its prior for it."""

    kind = "rounds"

    def __init__(self, n_arms: int, window: int):
        super().__init__(n_arms)
        self.window = window
        self.recent: deque[tuple[int, float, float]] = deque()

    def add(self, arm: int, reward: float, t: float = 0.0) -> None:
        self.recent.append((arm, reward, t))
        self._push(arm, reward, t)
        if len(self.recent) > self.window:
            self._pop(*self.recent.popleft())

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "recent": [[a, r, t] for a, r, t in self.recent]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.recent = deque((int(a), float(r), float(t)) for a, r, t in state["recent"])


class PullWindow(History):
    """The last ``window`` rewards of each arm, however long ago it was played."""

    kind = "pulls"

    def __init__(self, n_arms: int, window: int):
        super().__init__(n_arms)
        self.window = window
        self.recent: list[deque[tuple[float, float]]] = [deque() for _ in range(n_arms)]

    def add(self, arm: int, reward: float, t: float = 0.0) -> None:
        self.recent[arm].append((reward, t))
        self._push(arm, reward, t)
        if len(self.recent[arm]) > self.window:
            self._pop(arm, *self.recent[arm].popleft())

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "recent": [[list(e) for e in r] for r in self.recent]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if len(state["recent"]) != self.n_arms:
            raise ValueError(f"expected {self.n_arms} per-arm windows, got {len(state['recent'])}")
        self.recent = [deque((float(r), float(t)) for r, t in arm) for arm in state["recent"]]


class Discounted(History):
    """Exponentially discounted statistics. Every round **every** arm's count, sum and sum of
    squares are multiplied by ``gamma`` before the played arm's reward is added, so an arm that is
    not played fades towards its prior (Raj & Kalyani 2017; Qi et al. 2023). ``gamma = 1`` keeps
    the whole history (stationary Thompson sampling)."""

    kind = "discount"

    def __init__(self, n_arms: int, gamma: float):
        super().__init__(n_arms)
        self.gamma = gamma

    def add(self, arm: int, reward: float, t: float = 0.0) -> None:
        g = self.gamma
        if g != 1.0:
            for key in self.FIELDS:
                setattr(self, key, [v * g for v in getattr(self, key)])
        self._push(arm, reward, t)


def make_history(n_arms: int, window: int | None, gamma: float | None, window_unit: str) -> History:
    """``gamma`` set: discounting (``window`` unused); else a window (``None``: the whole history)."""
    if gamma is not None:
        return Discounted(n_arms, float(gamma))
    if window is None:
        return Discounted(n_arms, 1.0)
    return RoundWindow(n_arms, window) if window_unit == "rounds" else PullWindow(n_arms, window)
