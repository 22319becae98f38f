"""What the paper's tables and figures show: task columns, display units, method names and order.

Pure Python (no pandas), so the CLI and Snakemake can import it cheaply.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from optima.coca_modules import MODULES
from optima.tasks import Column, get_task, table_columns, task_names


class _TaskView(Mapping):
    """A read-only mapping task -> ``value(task)`` over the task registry (``optima.tasks``), live: a task
    registered later appears in it. ``table_order``: iterate in the main table's task order."""

    def __init__(self, value, table_order: bool = True):
        self._value, self._table_order = value, table_order

    def _names(self) -> list[str]:
        if not self._table_order:
            return list(task_names())
        return list(dict.fromkeys(c.task for c in table_columns()))

    def __getitem__(self, task: str):
        if task not in task_names():
            raise KeyError(task)
        return self._value(get_task(task))

    def __iter__(self):
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


class _ColumnsView(Sequence):
    """Every task's table columns in table order (``optima.tasks.table_columns``), live."""

    def __getitem__(self, index):
        return table_columns()[index]

    def __len__(self) -> int:
        return len(table_columns())


class _TaskNames(Sequence):
    """The registered task names, in registration order, live."""

    def __getitem__(self, index):
        return task_names()[index]

    def __len__(self) -> int:
        return len(task_names())


TASKS = _TaskNames()
# Primary metric per task (docs/runs.md); the main table adds BLEU-4 for captioning.
PRIMARY_METRIC = _TaskView(lambda task: task.primary_column.metric, table_order=False)
TASK_NAMES = _TaskView(lambda task: task.display_name)
MAIN_COLUMNS = _ColumnsView()
PRIMARY_COLUMNS = _TaskView(lambda task: task.primary_column)
# Range each metric must fall in, on the scale the metric functions write (docs/runs.md). A value
# outside it almost always means a metric was written on the wrong scale (percent vs fraction).
METRIC_RANGES = _TaskView(lambda task: task.metric_range)

TEACHER = "teacher"
REFERENCE = "optima"

# Display names and the paper's row order; methods not listed follow in config (or alphabetical) order.
DISPLAY_NAMES = {
    "teacher": "Teacher",
    "finetune": "Student (no distillation)",
    "kd": "Prediction KD",
    "layerwise": "Layerwise",
    "uniform": "Uniform",
    "optima": "OPTIMA",
    "fixed-vision": "Vision only",
    "fixed-text": "Text only",
    "fixed-multimodal": "Multimodal only",
    "ts": "Thompson sampling",
    "discounted_ts": "Discounted TS",
    "sliding_window_ts": "Sliding-window TS",
    "ucb": "UCB",
    "exp3": "EXP3",
    "val-best": "Best module (validation)",
    "oracle": "Oracle (per round)",
    "replay": "OPTIMA's allocation, shuffled",
    "optima-balanced": "OPTIMA (balanced reward)",
    "optima-heldout": "OPTIMA (held-out reward)",
}
MAIN_ORDER = ("teacher", "finetune", "kd", "layerwise", "uniform", "optima")
KNOWN_ORDER = tuple(DISPLAY_NAMES)

# Policies whose methods are ablations of OPTIMA's module-selection policy.
ADAPTIVE_POLICIES = ("optima", "ts", "discounted_ts", "sliding_window_ts", "ucb", "exp3")
_ALL_POLICIES = ("none", "layerwise", "uniform", "fixed") + ADAPTIVE_POLICIES
_NAME_POLICY = {"finetune": "none", "kd": "none"}

# The single-module analysis: no distillation, each module alone, all modules (docs/paper.md).
SINGLE_MODULE_METHODS = ("finetune", *(f"fixed-{m}" for m in MODULES), "layerwise")


def display_name(method: str) -> str:
    return DISPLAY_NAMES.get(method, method)


def order_methods(methods, config: dict | None = None) -> list[str]:
    """The paper's rows first (teacher, finetune, kd, layerwise, uniform, optima), then the rest in
    the config's ``distill.methods`` order when a config is given, else in a fixed known order,
    then alphabetically."""
    methods = set(methods)
    order = list(MAIN_ORDER)
    if config is not None:
        order += [m for m in config["distill"]["methods"] if m not in order]
    order += [m for m in KNOWN_ORDER if m not in order]
    ranked = [m for m in order if m in methods]
    return ranked + sorted(methods - set(ranked))


def infer_policy(method: str) -> str | None:
    """Policy of a method known only by name: ``ts`` -> ts, ``optima-w4`` -> optima,
    ``fixed-text`` -> fixed, ``finetune`` -> none; None when the name says nothing."""
    if method in _NAME_POLICY:
        return _NAME_POLICY[method]
    # longest policy name first, so "sliding_window_ts-w4" is not read as "ts"
    for policy in sorted(_ALL_POLICIES, key=len, reverse=True):
        if method == policy or re.match(rf"^{re.escape(policy)}[-_.]", method):
            return policy
    return None


def method_policies(methods, config: dict | None = None) -> dict[str, str | None]:
    """method -> policy, from ``distill.methods`` when a config is given, else from the name."""
    out = {}
    for method in methods:
        if config is not None and method in config["distill"]["methods"]:
            out[method] = config["distill"]["methods"][method]["policy"]
        elif method == TEACHER:
            out[method] = None
        else:
            out[method] = infer_policy(method)
    return out


def is_ablation(method: str, policy: str | None, reference: str = REFERENCE) -> bool:
    return method != reference and policy in ADAPTIVE_POLICIES


def fixed_arm(method: str, config: dict | None = None) -> str | None:
    """The module a fixed-policy method distils (``options.arm`` in the config, else from a
    ``fixed-<module>`` name); None for other methods."""
    if config is not None and method in config["distill"]["methods"]:
        spec = config["distill"]["methods"][method]
        return (spec.get("options") or {}).get("arm") if spec["policy"] == "fixed" else None
    if config is None and method.startswith("fixed-"):
        return method.removeprefix("fixed-")
    return None


def single_module_methods(methods, config: dict | None = None) -> list[str]:
    """The single-module analysis present in ``methods``: finetune, the methods that distil one
    module (in module order), layerwise; empty when no single-module method ran."""
    fixed = sorted((m for m in methods if fixed_arm(m, config) in MODULES),
                   key=lambda m: (MODULES.index(fixed_arm(m, config)), m))
    if not fixed:
        return []
    return [m for m in ("finetune",) if m in methods] + fixed + [m for m in ("layerwise",) if m in methods]


def choose_split(splits, preferred: str | None = None, source: str = "runs.csv") -> str:
    """The split the tables and figures report: ``preferred`` when given, else test > val > train."""
    from optima.errors import DataError

    splits = set(splits)
    if not splits:
        raise DataError(f"{source}: holds no rows")
    if preferred is not None:
        if preferred not in splits:
            raise DataError(f"{source}: no rows for split {preferred!r} (present: {', '.join(sorted(splits))})")
        return preferred
    for split in ("test", "val", "train"):
        if split in splits:
            return split
    return sorted(splits)[0]


__all__ = [
    "ADAPTIVE_POLICIES", "Column", "MAIN_COLUMNS", "MODULES", "PRIMARY_COLUMNS", "PRIMARY_METRIC",
    "REFERENCE", "SINGLE_MODULE_METHODS", "TASKS", "TASK_NAMES", "TEACHER", "choose_split",
    "display_name", "fixed_arm", "infer_policy", "is_ablation", "method_policies", "order_methods",
    "single_module_methods",
]
