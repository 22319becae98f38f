"""Read and validate the runs' metrics: metrics JSON files (collect) and ``runs.csv`` (tables, figures).

``runs.csv`` is long form: task, method, seed, role, split, metric, value (docs/runs.md). The tables work
on a *seed table*: one row per (method, seed), one column per displayed :class:`~optima.paper.spec.Column`,
values already on the displayed scale.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from optima.errors import DataError
from optima.paper.spec import METRIC_RANGES, PRIMARY_METRIC, TASKS, TEACHER, Column

RUNS_COLUMNS = ("task", "method", "seed", "role", "split", "metric", "value")
RUN_KEY = ("task", "method", "seed", "split")
ROLES = ("teacher", "student")
SPLITS = ("train", "val", "test")
_REQUIRED_KEYS = ("task", "method", "seed", "role", "split", "metrics")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_metrics_json(path: str | Path) -> tuple[dict, list[dict]]:
    """Validate one metrics JSON; return (its run key, its long-form rows).

    Non-primary metrics that are null/NaN (e.g. the accuracy of an answer type absent from a tiny
    split) are dropped; the task's primary metric must be a finite number.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: metrics file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read metrics file: {exc}") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: a metrics file must hold a JSON object, got {type(record).__name__}")
    missing = [k for k in _REQUIRED_KEYS if k not in record]
    if missing:
        raise DataError(f"{path}: missing key(s) {', '.join(missing)} (a metrics file needs {', '.join(_REQUIRED_KEYS)})")

    task, method, seed, role, split, metrics = (record[k] for k in _REQUIRED_KEYS)
    if task not in TASKS:
        raise DataError(f"{path}: task: must be one of {', '.join(TASKS)}, got {task!r}")
    if not isinstance(method, str) or not method.strip() or method != method.strip() or "," in method:
        raise DataError(f"{path}: method: must be a non-empty name without commas or surrounding spaces, got {method!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise DataError(f"{path}: seed: must be a non-negative integer, got {seed!r}")
    if role not in ROLES:
        raise DataError(f"{path}: role: must be one of {', '.join(ROLES)}, got {role!r}")
    if (method == TEACHER) != (role == "teacher"):
        raise DataError(f"{path}: role {role!r} does not fit method {method!r} (the teacher's rows have method "
                        f"'teacher' and role 'teacher')")
    if split not in SPLITS:
        raise DataError(f"{path}: split: must be one of {', '.join(SPLITS)}, got {split!r}")
    if not isinstance(metrics, dict) or not metrics:
        raise DataError(f"{path}: metrics: must be a non-empty object of metric name -> number")

    primary = PRIMARY_METRIC[task]
    if primary not in metrics:
        raise DataError(f"{path}: metrics.{primary}: missing (the primary metric of task {task}; "
                        f"present: {', '.join(map(str, metrics))})")
    rows = []
    for metric, value in metrics.items():
        if not isinstance(metric, str) or not metric or "," in metric:
            raise DataError(f"{path}: metrics: bad metric name {metric!r}")
        if value is not None and not _is_number(value):
            raise DataError(f"{path}: metrics.{metric}: must be a number, got {value!r}")
        if value is None or not math.isfinite(value):
            if metric == primary:
                raise DataError(f"{path}: metrics.{metric}: the primary metric must be a finite number, got {value!r}")
            continue
        bounds = METRIC_RANGES[task](metric)
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            raise DataError(f"{path}: metrics.{metric}: {value!r} is outside [{bounds[0]:g}, {bounds[1]:g}] "
                            f"(wrong scale? see docs/runs.md for each metric's scale)")
        rows.append({"task": task, "method": method, "seed": seed, "role": role, "split": split,
                     "metric": metric, "value": float(value)})
    key = {"task": task, "method": method, "seed": seed, "split": split}
    return key, rows


def collect_runs(paths) -> pd.DataFrame:
    """Validate every metrics JSON and return the sorted long-form runs frame."""
    seen: dict[tuple, Path] = {}
    rows: list[dict] = []
    for path in paths:
        key, file_rows = read_metrics_json(path)
        ident = tuple(key[k] for k in RUN_KEY)
        if ident in seen:
            raise DataError(f"{path}: same run (task={key['task']}, method={key['method']}, seed={key['seed']}, "
                            f"split={key['split']}) as {seen[ident]}")
        seen[ident] = Path(path)
        rows.extend(file_rows)
    if not rows:
        raise DataError("collect: no metrics files given")
    return sort_runs(pd.DataFrame(rows, columns=list(RUNS_COLUMNS)))


VAL_BEST = "val-best"


def add_val_best(runs: pd.DataFrame, split: str = "val") -> tuple[pd.DataFrame, dict[str, str]]:
    """``runs`` with a two-stage baseline added: per task, the ``fixed-<module>`` method whose students score
    best on ``split`` (mean over seeds of the task's primary metric) is copied under the name ``val-best``,
    every split included. Training is deterministic, so re-running that module with the same seeds would give
    these very students. Returns (runs, task -> chosen method); tasks without fixed-module runs are skipped."""
    from optima.coca_modules import MODULES
    from optima.paper.spec import PRIMARY_METRIC

    fixed = [f"fixed-{m}" for m in MODULES]
    chosen, copies = {}, []
    for task in sorted(set(runs["task"])):
        part = runs[(runs["task"] == task) & runs["method"].isin(fixed) & (runs["split"] == split)
                    & (runs["metric"] == PRIMARY_METRIC[task])]
        if part.empty:
            continue
        means = part.groupby("method")["value"].mean()
        best = max(fixed, key=lambda m: (means.get(m, float("-inf")), -fixed.index(m)))  # ties: module order
        chosen[task] = best
        copies.append(runs[(runs["task"] == task) & (runs["method"] == best)].assign(method=VAL_BEST))
    if not copies:
        return runs, chosen
    return sort_runs(pd.concat([runs[runs["method"] != VAL_BEST], *copies], ignore_index=True)), chosen


def read_runs_many(paths) -> pd.DataFrame:
    """Several runs' ``runs.csv`` as one (an experiment run in pieces, e.g. one per task): each file read and
    validated by ``read_runs``; a run (task, method, seed, split) found in two files is an error naming both."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if len(paths) == 1:
        return read_runs(paths[0])
    parts, owner = [], {}
    for path in paths:
        runs = read_runs(path)
        for ident in runs[list(RUN_KEY)].drop_duplicates().itertuples(index=False):
            ident = tuple(ident)
            if ident in owner:
                task, method, seed, split = ident
                raise DataError(f"{path}: run task={task}, method={method}, seed={seed}, split={split} is also in "
                                f"{owner[ident]} (each run belongs to one piece)")
            owner[ident] = path
        parts.append(runs)
    return sort_runs(pd.concat(parts, ignore_index=True))


def sort_runs(runs: pd.DataFrame) -> pd.DataFrame:
    runs = runs.astype({"seed": "int64", "value": "float64"})
    return runs.sort_values(["task", "method", "seed", "split", "metric"], kind="mergesort").reset_index(drop=True)


def write_runs_csv_text(runs: pd.DataFrame) -> str:
    # float repr round-trips exactly, so tables recomputed from runs.csv equal the metrics files
    return runs.to_csv(index=False, lineterminator="\n")


def read_runs(path: str | Path) -> pd.DataFrame:
    """Read and validate ``runs.csv``; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: runs file not found (made by `optima collect`)")
    try:
        # every column as text first, so a method called "nan" stays a name and bad numbers are reported by line
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file (expected the header {','.join(RUNS_COLUMNS)})") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV: {exc}") from None
    missing = [c for c in RUNS_COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (expected {','.join(RUNS_COLUMNS)})")
    if raw.empty:
        raise DataError(f"{path}: holds no rows")
    raw = raw[list(RUNS_COLUMNS)].copy()

    def bad(mask, what):
        line = int(np.flatnonzero(mask.to_numpy())[0]) + 2  # +1 header, +1 one-based
        raise DataError(f"{path}: line {line}: {what}")

    bad_task = ~raw["task"].isin(TASKS)
    if bad_task.any():
        bad(bad_task, f"task must be one of {', '.join(TASKS)}, got {raw['task'][bad_task].iloc[0]!r}")
    seed = pd.to_numeric(raw["seed"], errors="coerce")
    bad_seed = seed.isna() | (seed < 0) | (seed != seed.round())
    if bad_seed.any():
        bad(bad_seed, f"seed must be a non-negative integer, got {raw['seed'][bad_seed].iloc[0]!r}")
    value = pd.to_numeric(raw["value"], errors="coerce")
    bad_value = ~np.isfinite(value.to_numpy(dtype=float))
    if bad_value.any():
        bad(pd.Series(bad_value), f"value must be a finite number, got {raw['value'][bad_value].iloc[0]!r}")
    for col in ("method", "metric", "split"):
        empty = raw[col].str.strip() == ""
        if empty.any():
            bad(empty, f"{col} is empty")
    raw["seed"] = seed.astype("int64")
    raw["value"] = value.astype("float64")
    # the same ranges collect checks (docs/runs.md): a hand-edited or foreign runs.csv must not reach a table
    bounds = [METRIC_RANGES[task](metric) for task, metric in zip(raw["task"], raw["metric"])]
    outside = pd.Series([b is not None and not b[0] <= v <= b[1] for b, v in zip(bounds, raw["value"])],
                        index=raw.index)
    if outside.any():
        at = int(np.flatnonzero(outside.to_numpy())[0])
        low, high = bounds[at]
        bad(outside, f"{raw['metric'].iloc[at]} of task {raw['task'].iloc[at]} is {float(raw['value'].iloc[at])!r}, outside "
                     f"[{low:g}, {high:g}] (wrong scale? see docs/runs.md for each metric's scale)")
    dup = raw.duplicated(["task", "method", "seed", "split", "metric"], keep="first")
    if dup.any():
        row = raw[dup].iloc[0]
        bad(dup, f"duplicate row for task={row.task}, method={row.method}, seed={row.seed}, split={row.split}, "
                 f"metric={row.metric}")
    return raw


def summary(runs: pd.DataFrame, split: str) -> dict:
    """{task: {method: {metric: mean over seeds}}} for the metrics the main table shows."""
    from optima.paper.spec import MAIN_COLUMNS

    shown = {(c.task, c.metric) for c in MAIN_COLUMNS}
    rows = runs[runs["split"] == split]
    rows = rows[[(t, m) in shown for t, m in zip(rows["task"], rows["metric"])]]
    means = rows.groupby(["task", "method", "metric"], sort=True)["value"].mean()
    out: dict = {}
    for (task, method, metric), value in means.items():
        out.setdefault(task, {}).setdefault(method, {})[metric] = float(value)
    return out


def seed_table(runs: pd.DataFrame, columns: tuple[Column, ...]) -> pd.DataFrame:
    """One row per (method, seed), one column per displayed column (scaled); NaN where not run."""
    parts = []
    for column in columns:
        sel = runs[(runs["task"] == column.task) & (runs["metric"] == column.metric)]
        parts.append(sel.set_index(["method", "seed"])["value"].rename(column.key) * column.scale)
    if not parts:
        return pd.DataFrame(columns=[c.key for c in columns])
    table = pd.concat(parts, axis=1)
    return table.reindex(columns=[c.key for c in columns]).sort_index()
