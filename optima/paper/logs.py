"""The distillation runs' ``train_log.csv`` files (layout and columns: docs/runs.md) and their compact form.

The figures read the logs through a *source*: :class:`TrainLogs` (the logs under a results folder) or
:class:`CompactLogs` (``rounds.csv``: one row per bandit round; ``curves.csv``: the loss columns per
logged step), which :func:`compact_logs` writes from the logs, so that published figures regenerate
without the training-log directory. Both sources give the figures the same rows.

A missing log, or one without the column a figure needs, is not an error (that figure leaves it out
and says so); a log that cannot be read, has no ``step`` column or holds a non-number where a number
belongs is a DataError naming the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from optima.distill.rounds import ROUND_COLUMNS as PROBE_COLUMNS
from optima.errors import DataError
from optima.paper.common import LOG

_SEED_DIR = re.compile(r"^seed(\d+)$")
NUMERIC_COLUMNS = ("step", "lr", "loss", "task_loss", "kd_loss", "layer_loss", "layer_loss_vision", "layer_loss_text",
                   "layer_loss_multimodal", "round", "reward", "probe_loss", "grad_norm", "examples_per_s", "elapsed_s")
TEXT_COLUMNS = ("arm", "task", "method")
# pandas 3 parses floats exactly by default (and deprecates the option); pandas 2 needs round_trip
_EXACT_FLOATS = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


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
    """One train log: the docs/runs.md numeric columns and ``numeric`` as floats (empty cells NaN), ``arm``
    as text ("" when empty)."""
    return _read_log_csv(path, "train log", [*NUMERIC_COLUMNS, *numeric], "step, lr, loss, ...")


def _read_log_csv(path: str | Path, what: str, numeric, header_hint: str) -> pd.DataFrame:
    """A CSV with a ``step`` column: ``numeric`` columns as floats, errors naming file and line.
    Numbers are parsed exactly, so a value written back with repr reads back equal."""
    path = Path(path)
    try:
        log = pd.read_csv(path, dtype={"arm": str, "task": str, "method": str}, keep_default_na=False,
                          na_values=["", "nan", "NaN"], **_EXACT_FLOATS)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty {what} (expected a header: {header_hint})") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: cannot read {what}: {exc}") from None
    if "step" not in log.columns:
        raise DataError(f"{path}: no 'step' column ({what} columns: docs/runs.md)")
    for column in [c for c in dict.fromkeys(numeric) if c in log.columns and c not in TEXT_COLUMNS]:
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
    for column in [c for c in TEXT_COLUMNS if c in log.columns]:
        log[column] = log[column].fillna("").str.strip()
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


# ------------------------------------------------------------------------- compact rounds.csv / curves.csv

RUN_COLUMNS = ("task", "method", "seed")
ROUND_COLUMNS = ("round", "step", "arm", "reward")
# every reward's inputs (probe loss before/after a round, its terms, ...) and the oracle's candidates
# (optima.distill.rounds.ROUND_COLUMNS): rounds.csv keeps those the logs have
LOSS_COLUMNS = ("loss", "task_loss", "kd_loss", "layer_loss", "layer_loss_vision", "layer_loss_text",
                "layer_loss_multimodal", "contrastive_loss", "caption_loss")
COMPACT_REQUIRED = {"rounds": (*RUN_COLUMNS, "step", "arm", "reward"), "curves": (*RUN_COLUMNS, "step")}


def log_rounds(log: pd.DataFrame) -> pd.DataFrame:
    """The round-end rows of one log (what the selection and reward figures plot), in log order:
    round, step, arm, reward and the probe columns the log has."""
    rows = round_ends(log)
    return rows[[c for c in (*ROUND_COLUMNS, *PROBE_COLUMNS) if c in rows.columns]].reset_index(drop=True)


def log_curves(log: pd.DataFrame) -> pd.DataFrame:
    """The loss columns of one log, one row per step (the mean where a step was logged twice, as the
    loss curves average), steps without any loss value left out."""
    losses = [c for c in LOSS_COLUMNS if c in log.columns]
    if not losses:
        return pd.DataFrame(columns=["step"])
    per_step = log.groupby("step", sort=True)[losses].mean().reset_index()
    return per_step[per_step[losses].notna().any(axis=1)].reset_index(drop=True)


def compact_logs(logs_root: str | Path, runs: pd.DataFrame, log=LOG) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rounds, curves) of every student run in ``runs`` (runs.csv) whose train_log.csv exists under
    ``logs_root``; a run without a log is left out with a log line."""
    students = runs[runs["role"] == "student"][list(RUN_COLUMNS)].drop_duplicates()
    rounds, curves = [], []
    for task, method, seed in students.sort_values(list(RUN_COLUMNS)).itertuples(index=False):
        path = student_run_dir(logs_root, task, method, seed) / "train_log.csv"
        if not path.is_file():
            log.info("no train log for %s/%s/seed%d: %s", task, method, seed, path)
            continue
        train_log = read_train_log(path, numeric=[*PROBE_COLUMNS, *LOSS_COLUMNS])
        key = {"task": task, "method": method, "seed": int(seed)}
        rounds.append(log_rounds(train_log).assign(**key))
        curves.append(log_curves(train_log).assign(**key))

    def stacked(frames, columns):
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns))
        present = [c for c in columns if c in frame.columns and (c in RUN_COLUMNS or c == "step" or frame[c].notna().any())]
        return frame[present]

    return (stacked(rounds, (*RUN_COLUMNS, *ROUND_COLUMNS, *PROBE_COLUMNS)),
            stacked(curves, (*RUN_COLUMNS, "step", *LOSS_COLUMNS)))


def write_compact_csv_text(frame: pd.DataFrame) -> str:
    """CSV text with whole numbers (seed, step, round) written as integers and floats as repr (exact)."""
    frame = frame.copy()
    for column in ("seed", "round", "step"):
        if column in frame.columns and frame[column].dropna().mod(1).eq(0).all():
            frame[column] = frame[column].astype("Int64")
    return frame.to_csv(index=False, lineterminator="\n")


def read_compact(path: str | Path, kind: str) -> pd.DataFrame:
    """``rounds.csv`` or ``curves.csv`` (``kind``); errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {kind} file not found (written by `optima publish`)")
    required = COMPACT_REQUIRED[kind]
    numeric = [c for c in (*ROUND_COLUMNS, *PROBE_COLUMNS, *LOSS_COLUMNS, "seed") if c not in TEXT_COLUMNS]
    frame = _read_log_csv(path, f"{kind} file", numeric, ", ".join(required))
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (a {kind} file has {', '.join(required)}, ...)")
    if frame["seed"].isna().any():
        raise DataError(f"{path}: line {int(frame['seed'].isna().to_numpy().nonzero()[0][0]) + 2}: seed is empty")
    return frame.astype({"seed": "int64"})


class TrainLogs:
    """The figures' rows from the train_log.csv files under a results folder."""

    def __init__(self, logs_root: str | Path, log=LOG):
        self.root, self.log = Path(logs_root), log
        self.where = f"under {self.root}"
        self._cache = {}

    def _read(self, task, method, seeds, columns):
        key = (task, method, tuple(seeds) if seeds is not None else None, tuple(columns))
        if key not in self._cache:  # several figures read the same logs
            paths = find_logs(self.root, task, method, seeds)
            if not paths:
                self.log.info("no train_log.csv for %s on %s under %s", method, task, self.root)
            self._cache[key] = read_logs(paths, columns, self.log)
        return self._cache[key]

    def rounds(self, task, method, seeds=None) -> pd.DataFrame:
        """Round-end rows (seed, step, arm, reward, ...) of a method on a task."""
        logs = self._read(task, method, seeds, ("step", "arm", "reward"))
        rows = round_ends(logs)
        if rows.empty and len(logs):
            self.log.info("%s on %s: train logs hold no round-end rows (arm and reward)", method, task)
        return rows.reset_index(drop=True)

    def curves(self, task, method, column, seeds=None) -> pd.DataFrame:
        """seed, step, ``column``: the column's mean per logged step, steps without a value left out."""
        logs = self._read(task, method, seeds, ("step", column))
        logs = logs[logs[column].notna()]
        return logs.groupby(["seed", "step"], as_index=False, sort=True)[column].mean()


class CompactLogs:
    """The figures' rows from ``rounds.csv`` and ``curves.csv`` (either may be None: its figures are
    then left out)."""

    def __init__(self, rounds_path=None, curves_path=None, log=LOG):
        self.log = log
        self.paths = {"rounds": rounds_path, "curves": curves_path}
        self.frames = {kind: read_compact(p, kind) if p is not None else None for kind, p in self.paths.items()}
        self.where = "in " + " and ".join(str(p) for p in self.paths.values() if p is not None)
        self._told = set()

    def _rows(self, kind, task, method, seeds):
        frame = self.frames[kind]
        if frame is None:
            if kind not in self._told:
                self.log.info("no --%s file given: its figures are left out", kind)
                self._told.add(kind)
            return None
        rows = frame[(frame["task"] == task) & (frame["method"] == method)]
        return rows[rows["seed"].isin(seeds)] if seeds is not None else rows

    def rounds(self, task, method, seeds=None) -> pd.DataFrame:
        rows = self._rows("rounds", task, method, seeds)
        if rows is None:
            return pd.DataFrame(columns=["seed", "step", "arm", "reward"])
        return round_ends(rows).drop(columns=["task", "method"]).reset_index(drop=True)

    def curves(self, task, method, column, seeds=None) -> pd.DataFrame:
        rows = self._rows("curves", task, method, seeds)
        if rows is None or column not in rows.columns:
            if rows is not None:
                self.log.info("%s: no %r column", self.paths["curves"], column)
            return pd.DataFrame(columns=["seed", "step", column])
        rows = rows[rows[column].notna()]
        return rows.groupby(["seed", "step"], as_index=False, sort=True)[column].mean()
