"""Module-selection policies (OPTIMA and its baselines) and a bandit simulator.

The trainer drives a policy one round at a time::

    arms = make_arms(MODULES, "modules")                   # [("vision",), ("text",), ("multimodal",)]
    policy = make_policy("optima", len(arms), seed, window=8)
    chosen = policy.select_all() if policy.plays_all else [policy.select()]
    ...                                                    # distil the chosen arm(s), measure the reward
    policy.update(arm, reward)                             # once per round (a no-op for layerwise)
    checkpoint["policy"] = policy.state_dict()             # JSON-serialisable
"""

from optima.bandits.base import Policy, PolicyOptions
from optima.bandits.registry import ARM_KINDS, POLICIES, make_arms, make_policy, policy_options

__all__ = ["ARM_KINDS", "POLICIES", "Policy", "PolicyOptions", "make_arms", "make_policy", "policy_options"]
