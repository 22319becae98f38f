"""Shared input checks for the metric functions: predictions and ground truth must cover the same ids."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from optima.errors import DataError


def format_ids(ids: Collection[Any], limit: int = 10) -> str:
    """A short, deterministic listing of ids for an error message: ``1, 2, 3 (and 7 more)``."""
    # Numbers sort as numbers; ids of mixed types (a classic int/str mix-up) group by type.
    shown = sorted(ids, key=lambda i: (type(i).__name__, i if isinstance(i, (int, float)) else str(i)))[:limit]
    text = ", ".join(repr(i) for i in shown)
    return text + (f" (and {len(ids) - limit} more)" if len(ids) > limit else "")


def check_same_ids(truth: Collection[Any], predicted: Collection[Any], *, what: str, truth_key: str,
                   unknown_hint: str = "") -> None:
    """Raise DataError unless every ground-truth id has a prediction and every prediction is for a
    ground-truth id. Missing predictions are an error, not a zero: a silently shorter evaluation set
    changes what the number means (and the official VQA and NLVR2 scripts refuse it too)."""
    if not truth:
        raise DataError(f"{what}: the ground truth is empty")
    if not predicted:
        raise DataError(f"{what}: there are no predictions")
    unknown = set(predicted) - set(truth)
    if unknown:
        raise DataError(f"{what}: {len(unknown)} prediction(s) for {truth_key}s that are not in the "
                        f"ground truth: {format_ids(unknown)}{unknown_hint}")
    missing = set(truth) - set(predicted)
    if missing:
        raise DataError(f"{what}: no prediction for {len(missing)} {truth_key}(s) of the ground truth: "
                        f"{format_ids(missing)}")
