"""Per-arm reward statistics over recent history: sliding windows and exponential discounting.

Each history records one reward per round (``add``) and keeps, per arm, the (effective) number of
recent rewards, their sum and their sum of squares; from these the Thompson policies take each
arm's posterior and the pooled mean/variance that puts rewards on a common scale. Windows update
the sums incrementally (a reward leaving the window is subtracted; an arm whose window empties is
reset to exact zeros). All arithmetic is on Python floats, so the state is exactly
JSON-serialisable and a restored history continues bit for bit.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any


class History:
    """Per-arm ``counts``, ``sums`` and ``squares`` of the recent rewards, in raw reward units."""

    kind: str = ""

    def __init__(self, n_arms: int):
        self.n_arms = n_arms
        self.counts = [0.0] * n_arms
        self.sums = [0.0] * n_arms
        self.squares = [0.0] * n_arms

    def add(self, arm: int, reward: float) -> None:
        raise NotImplementedError

    def _push(self, arm: int, reward: float) -> None:
        self.counts[arm] += 1.0
        self.sums[arm] += reward
        self.squares[arm] += reward * reward

    def _pop(self, arm: int, reward: float) -> None:
        self.counts[arm] -= 1.0
        if self.counts[arm] == 0.0:  # no rounding residue for an arm without recent rewards
            self.sums[arm] = self.squares[arm] = 0.0
        else:
            self.sums[arm] -= reward
            self.squares[arm] -= reward * reward

    def pooled(self) -> tuple[float, float, float]:
        """(count, mean, variance) of all recent rewards of all arms; (0, 0, 0) when there are none."""
        n = math.fsum(self.counts)
        if n <= 0.0:
            return 0.0, 0.0, 0.0
        mean = math.fsum(self.sums) / n
        return n, mean, max(math.fsum(self.squares) / n - mean * mean, 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sums": list(self.sums), "squares": list(self.squares)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("counts", "sums", "squares"):
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
        self.recent: deque[tuple[int, float]] = deque()

    def add(self, arm: int, reward: float) -> None:
        self.recent.append((arm, reward))
        self._push(arm, reward)
        if len(self.recent) > self.window:
            self._pop(*self.recent.popleft())

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "recent": [[a, r] for a, r in self.recent]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.recent = deque((int(a), float(r)) for a, r in state["recent"])


class PullWindow(History):
    """The last ``window`` rewards of each arm, however long ago it was played."""

    kind = "pulls"

    def __init__(self, n_arms: int, window: int):
        super().__init__(n_arms)
        self.window = window
        self.recent: list[deque[float]] = [deque() for _ in range(n_arms)]

    def add(self, arm: int, reward: float) -> None:
        self.recent[arm].append(reward)
        self._push(arm, reward)
        if len(self.recent[arm]) > self.window:
            self._pop(arm, self.recent[arm].popleft())

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "recent": [list(r) for r in self.recent]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if len(state["recent"]) != self.n_arms:
            raise ValueError(f"expected {self.n_arms} per-arm windows, got {len(state['recent'])}")
        self.recent = [deque(map(float, r)) for r in state["recent"]]


class Discounted(History):
    """Exponentially discounted statistics. Every round **every** arm's count, sum and sum of
    squares are multiplied by ``gamma`` before the played arm's reward is added, so an arm that is
    not played fades towards its prior (Raj & Kalyani 2017; Qi et al. 2023). ``gamma = 1`` keeps
    the whole history (stationary Thompson sampling)."""

    kind = "discount"

    def __init__(self, n_arms: int, gamma: float):
        super().__init__(n_arms)
        self.gamma = gamma

    def add(self, arm: int, reward: float) -> None:
        g = self.gamma
        if g != 1.0:
            self.counts = [c * g for c in self.counts]
            self.sums = [s * g for s in self.sums]
            self.squares = [q * g for q in self.squares]
        self._push(arm, reward)


def make_history(n_arms: int, window: int | None, gamma: float | None, window_unit: str) -> History:
    """``gamma`` set: discounting (``window`` unused); else a window (``None``: the whole history)."""
    if gamma is not None:
        return Discounted(n_arms, float(gamma))
    if window is None:
        return Discounted(n_arms, 1.0)
    return RoundWindow(n_arms, window) if window_unit == "rounds" else PullWindow(n_arms, window)
