"""Policy registry: a config names a policy and its options; ``make_policy`` checks both."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from optima.bandits.base import Policy
from optima.bandits.classic import EXP3, UCB, Fixed, Layerwise, Oracle, Replay, Uniform
from optima.bandits.thompson import DiscountedThompson, GaussianThompson, Optima, SlidingWindowThompson
from optima.errors import ConfigError

# name -> class; ``none`` (no module distillation) is not a policy: the trainer handles it
POLICIES: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (Optima, Uniform, Layerwise, Fixed, GaussianThompson, DiscountedThompson,
                SlidingWindowThompson, UCB, EXP3, Replay, Oracle)
}

ARM_KINDS = ("modules", "subsets")


def policy_options(name: str) -> dict[str, Any]:
    """The options of policy ``name`` with their defaults, in declaration order."""
    cls = _policy_class(name)
    return {f.name: f.default for f in dataclasses.fields(cls.Options)}


def make_policy(name: str, n_arms: int, seed: int, **options: Any) -> Policy:
    """Build policy ``name`` over ``n_arms`` arms with its own generator seeded by ``seed``.

    Unknown or invalid options raise ``ConfigError`` naming the option and the policy.
    """
    cls = _policy_class(name)
    allowed = policy_options(name)
    for key in options:
        if key not in allowed:
            hint = ", ".join(allowed) if allowed else "none"
            raise ConfigError(f"unknown option {key!r} for policy {name!r} (allowed: {hint})")
    return cls(n_arms, seed, cls.Options(**options))


def make_arms(modules: Sequence[str], kind: str = "modules") -> list[tuple[str, ...]]:
    """The arms over ``modules``: ``modules`` gives one arm per module, in the given order;
    ``subsets`` gives every non-empty subset ordered by size, then lexicographically by position
    in ``modules`` (for V, T, M: V, T, M, VT, VM, TM, VTM)."""
    import itertools

    modules = tuple(modules)
    if not modules:
        raise ConfigError("make_arms: no modules given")
    if len(set(modules)) != len(modules):
        raise ConfigError(f"make_arms: modules must be distinct, got {list(modules)}")
    if kind == "modules":
        return [(m,) for m in modules]
    if kind == "subsets":
        return [combo for size in range(1, len(modules) + 1) for combo in itertools.combinations(modules, size)]
    raise ConfigError(f"make_arms: arms kind must be one of {', '.join(ARM_KINDS)}; got {kind!r}")


def build_method_policy(method: dict, modules: Sequence[str], seed: int) -> tuple[Policy, list[tuple[str, ...]]]:
    """``(policy, arms)`` of a resolved distillation method (``optima.config.method_spec``): the arms over
    ``modules`` and the method's policy; ``fixed`` names its module, turned into that arm's index here.
    Raises ConfigError naming the method and the option when an option is invalid."""
    arms = make_arms(modules, method["arms"])
    options = dict(method["options"])
    if method["policy"] == "fixed":
        module = options.get("arm")
        options["arm"] = next((a for a, members in enumerate(arms) if members == (module,)), module)
    try:
        return make_policy(method["policy"], len(arms), seed=seed, **options), arms
    except ConfigError as exc:
        raise ConfigError(f"distill.methods.{method['name']}: {exc}") from None


def _policy_class(name: str) -> type[Policy]:
    try:
        return POLICIES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown policy {name!r} (allowed: {', '.join(POLICIES)})") from None
