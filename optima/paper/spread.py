"""`optima spread`: how much a teacher's quality moves when it is retrained with another seed.

Reads a runs.csv holding the teachers of several global seeds (``scripts/teacher_spread.sh``) and writes
``teacher_spread.{md,csv}``: per task and split, the primary metric of each seed, its mean, std and range.
The students' seed spread (same split) is the yardstick: a teacher spread below it means the comparison of
students does not hinge on which teacher was drawn.
"""

from __future__ import annotations

import pandas as pd


def add_arguments(parser) -> None:
    parser.add_argument("--runs", required=True, help="runs.csv with the teachers' rows (method teacher)")
    parser.add_argument("--students", default=None,
                        help="runs.csv of the students of one teacher: their seed std per method is reported beside it")
    parser.add_argument("--out-dir", required=True, help="where teacher_spread.md and .csv go")


def teacher_spread(runs: pd.DataFrame) -> pd.DataFrame:
    """Per task and split: the teacher's primary metric per seed (the tables' scale: percent, CIDEr x100),
    mean, std (ddof 1) and max - min."""
    from optima.paper.spec import PRIMARY_COLUMNS

    rows = []
    teachers = runs[runs.method == "teacher"]
    for task, column in PRIMARY_COLUMNS.items():
        metric = column.metric
        selected = teachers[(teachers.task == task) & (teachers.metric == metric)]
        for split, part in selected.assign(value=selected["value"] * column.scale).groupby("split"):
            values = part.sort_values("seed")["value"]
            rows.append({"task": task, "split": split, "metric": metric, "seeds": " ".join(map(str, part.sort_values("seed")["seed"])),
                         "values": " ".join(f"{v:.2f}" for v in values), "mean": values.mean(),
                         "std": values.std(ddof=1), "range": values.max() - values.min()})
    return pd.DataFrame(rows)


def student_spread(runs: pd.DataFrame) -> pd.DataFrame:
    """Per task and split: the median over methods of the students' seed std (the yardstick), same scale."""
    from optima.paper.spec import PRIMARY_COLUMNS

    rows = []
    students = runs[runs.role == "student"]
    for task, column in PRIMARY_COLUMNS.items():
        part = students[(students.task == task) & (students.metric == column.metric)]
        part = part.assign(value=part["value"] * column.scale)
        for split, by_split in part.groupby("split"):
            stds = by_split.groupby("method")["value"].std(ddof=1)
            rows.append({"task": task, "split": split, "student_seed_std": float(stds.median())})
    return pd.DataFrame(rows)


def write_spread(runs_path, students_path, out_dir):
    """Write ``teacher_spread.{md,csv}`` into ``out_dir`` (students_path: optional yardstick runs.csv)."""
    from pathlib import Path

    from optima.errors import DataError
    from optima.io import atomic_write_text
    from optima.paper.results import read_runs

    table = teacher_spread(read_runs(runs_path))
    if table.empty:
        raise DataError(f"{runs_path}: no teacher rows")
    if students_path:
        table = table.merge(student_spread(read_runs(students_path)), on=["task", "split"], how="left")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "teacher_spread.csv", table.to_csv(index=False, float_format="%.4f"))
    columns = ["task", "split", "metric", "seeds", "values", "mean", "std", "range"] + (
        ["student_seed_std"] if "student_seed_std" in table else [])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table[columns].itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row) + " |")
    atomic_write_text(out / "teacher_spread.md", "\n".join(lines) + "\n")
    return out / "teacher_spread.md"


def run(args) -> int:
    print(write_spread(args.runs, args.students, args.out_dir))
    return 0
