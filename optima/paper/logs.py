"""Find and read the distillation runs' ``train_log.csv`` files (layout and columns: runs.md).

A missing log is not an error (the figure that needs it is skipped); a log that exists but cannot be
read, or lacks a required column, is a DataError naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from optima.errors import DataError

_SEED_DIR = re.compile(r"^seed(\d+)$")
NUMERIC_COLUMNS = ("step", "lr", "loss", "task_loss", "kd_loss", "layer_loss", "layer_loss_vision", "layer_loss_text",
                   "layer_loss_multimodal", "round", "reward", "probe_loss", "grad_norm", "examples_per_s", "elapsed_s")


def student_run_dir(logs_root: str | Path, task: str, method: str, seed: int) -> Path:
    return Path(logs_root) / "students" / task / method / f"seed{seed}"


def find_logs(logs_root: str | Path, task: str, method: str, seeds=None) -> dict[int, Path]:
    """seed -> train_log.csv of the student runs that exist; ``seeds`` restricts to those seeds
    (the ones runs.csv reports), otherwise every ``seed*`` directory counts."""
    method_dir = Path(logs_root) / "students" / task / method
    if seeds is None:
        seeds = sorted(int(m.group(1)) for d in method_dir.glob("seed*") if (m := _SEED_DIR.match(d.name)))
    found = {}
    for seed in sorted(seeds):
        path = student_run_dir(logs_root, task, method, seed) / "train_log.csv"
        if path.is_file():
            found[int(seed)] = path
    return found


def read_train_log(path: str | Path, required=("step",)) -> pd.DataFrame:
    """One train log: the runs.md numeric columns and ``required`` as floats (empty cells NaN), ``arm``
    as text ("" when empty)."""
    path = Path(path)
    try:
        log = pd.read_csv(path, dtype={"arm": str}, keep_default_na=False, na_values=["", "nan", "NaN"])
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty train log (expected a header: step, lr, loss, ...)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: cannot read train log: {exc}") from None
    missing = [c for c in required if c not in log.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (train_log.csv columns: runs.md)")
    numeric = [c for c in dict.fromkeys([*NUMERIC_COLUMNS, *required]) if c in log.columns and c != "arm"]
    for column in numeric:
        if pd.api.types.is_numeric_dtype(log[column]):  # the usual case: pandas parsed every cell
            log[column] = log[column].astype(float)
            continue
        values = pd.to_numeric(log[column], errors="coerce")
        bad = values.isna() & log[column].notna()
        if not bad.any():
            log[column] = values.astype(float)
            continue
        line = int(bad.to_numpy().nonzero()[0][0]) + 2
        raise DataError(f"{path}: line {line}: {column} must be a number, got {log[column][bad].iloc[0]!r}")
    if log["step"].isna().any():
        line = int(log["step"].isna().to_numpy().nonzero()[0][0]) + 2
        raise DataError(f"{path}: line {line}: step is empty")
    if "arm" in log.columns:
        log["arm"] = log["arm"].fillna("").str.strip()
    return log


def read_logs(paths: dict[int, Path], required=("step",)) -> pd.DataFrame:
    """Several seeds' logs stacked, with a ``seed`` column."""
    frames = [read_train_log(path, required).assign(seed=seed) for seed, path in sorted(paths.items())]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*required, "seed"])


def round_ends(log: pd.DataFrame) -> pd.DataFrame:
    """The rows that end a bandit round (reward filled, arm named): one per round and seed."""
    if "reward" not in log.columns or "arm" not in log.columns:
        return log.iloc[0:0]
    return log[log["reward"].notna() & (log["arm"] != "")]
