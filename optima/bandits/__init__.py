"""Module-selection policies (OPTIMA and its baselines) and a bandit simulator.

The trainer drives a policy one round at a time::

    arms = make_arms(MODULES, "modules")                   # [("vision",), ("text",), ("multimodal",)]
    policy = make_policy("optima", len(arms), seed, **config["distill"]["optima"])
    chosen = policy.select_all() if policy.plays_all else [policy.select()]
    ...                                                    # distil the chosen arm(s), measure the reward
    policy.update(arm, reward)                             # once per round (a no-op for layerwise)
    checkpoint["policy"] = policy.state_dict()             # JSON-serialisable

Names are imported lazily so that ``optima --help`` (which loads the bench verb) does not import numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ARM_KINDS": "optima.bandits.registry",
    "POLICIES": "optima.bandits.registry",
    "make_arms": "optima.bandits.registry",
    "make_policy": "optima.bandits.registry",
    "build_method_policy": "optima.bandits.registry",
    "policy_options": "optima.bandits.registry",
    "Policy": "optima.bandits.base",
    "PolicyOptions": "optima.bandits.base",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'optima.bandits' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
