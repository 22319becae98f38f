"""Find and read the distillation runs' ``train_log.csv`` files (layout and columns: runs.md).

A missing log, or one without the column a figure needs, is not an error (that figure leaves it out
and says so); a log that cannot be read, has no ``step`` column or holds a non-number where a number
belongs is a DataError naming the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from optima.errors import DataError
from optima.paper.common import LOG

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


def read_train_log(path: str | Path, numeric=()) -> pd.DataFrame:
    """One train log: the runs.md numeric columns and ``numeric`` as floats (empty cells NaN), ``arm``
    as text ("" when empty)."""
    path = Path(path)
    try:
        log = pd.read_csv(path, dtype={"arm": str}, keep_default_na=False, na_values=["", "nan", "NaN"])
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty train log (expected a header: step, lr, loss, ...)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: cannot read train log: {exc}") from None
    if "step" not in log.columns:
        raise DataError(f"{path}: no 'step' column (train_log.csv columns: runs.md)")
    for column in [c for c in dict.fromkeys([*NUMERIC_COLUMNS, *numeric]) if c in log.columns and c != "arm"]:
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


def read_logs(paths: dict[int, Path], columns=("step",), log=LOG) -> pd.DataFrame:
    """Several seeds' logs stacked, with a ``seed`` column; a log without one of ``columns`` is left
    out with a log line."""
    frames = []
    for seed, path in sorted(paths.items()):
        frame = read_train_log(path, numeric=[c for c in columns if c != "arm"])
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            log.info("%s: no %s column, left out", path, " or ".join(repr(c) for c in missing))
            continue
        frames.append(frame.assign(seed=seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*columns, "seed"])


def round_ends(log: pd.DataFrame) -> pd.DataFrame:
    """The rows that end a bandit round (reward filled, arm named): one per round and seed."""
    if "reward" not in log.columns or "arm" not in log.columns:
        return log.iloc[0:0]
    return log[log["reward"].notna() & (log["arm"] != "")]
