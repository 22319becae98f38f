"""`optima spread`: how much a teacher's quality moves when it is retrained with another seed.

Reads a runs.csv holding the teachers of several global seeds (``scripts/teacher_spread.sh``) and writes
``teacher_spread.{md,csv}``: per task and split, the primary metric of each seed, its mean, std and range.
The students' seed spread (same split) is the yardstick: a teacher spread below it means the comparison of
students does not hinge on which teacher was drawn.

With ``--against REFERENCE_RUNS`` it compares instead the same seed's teacher retrained under another
condition (``scripts/teacher_spread.sh CONFIG --kernels avx2``: other CPU kernels, a stand-in for another
machine) with the reference's, and writes ``teacher_shift.{md,csv}``.

With ``--draw LABEL=RUNS`` (repeated) it tabulates teachers trained as labelled draws, e.g. seeds and kernel
sets of one candidate recipe (``scripts/teacher_spread.sh CONFIG --recipe ...``), and writes
``teacher_draws.{md,csv}``: the same statistics over draws instead of seeds.
"""

from __future__ import annotations

import pandas as pd


def add_arguments(parser) -> None:
    parser.add_argument("--runs", default=None, help="runs.csv with the teachers' rows (method teacher)")
    parser.add_argument("--draw", action="append", default=[], metavar="LABEL=RUNS",
                        help="instead of --runs: a runs.csv holding one draw's teachers, under a label (repeat it); "
                             "writes teacher_draws.{md,csv}, the spread over draws")
    parser.add_argument("--students", default=None,
                        help="runs.csv of the students of one teacher: their seed std per method is reported beside it")
    parser.add_argument("--against", default=None,
                        help="runs.csv with the reference teachers (same seed): write teacher_shift.{md,csv}, "
                             "--runs's teachers minus these, instead of the spread over seeds")
    parser.add_argument("--out-dir", required=True, help="where teacher_spread.md and .csv (or teacher_shift) go")
    parser.add_argument("--name", default=None,
                        help="file name stem of the table (default: teacher_spread, or teacher_shift with --against)")


def _primary_teacher_values(runs: pd.DataFrame) -> pd.DataFrame:
    """The teachers' primary metric per task, split and seed, on the tables' scale (percent, CIDEr x100)."""
    from optima.paper.spec import PRIMARY_COLUMNS

    teachers = runs[runs.method == "teacher"]
    parts = []
    for task, column in PRIMARY_COLUMNS.items():
        selected = teachers[teachers.task.eq(task) & (teachers.metric == column.metric)]
        parts.append(selected.assign(value=selected["value"] * column.scale)[["task", "split", "metric", "seed", "value"]])
    return pd.concat(parts, ignore_index=True)


def teacher_spread(runs: pd.DataFrame) -> pd.DataFrame:
    """Per task and split: the teacher's primary metric per seed (the tables' scale: percent, CIDEr x100),
    mean, std (ddof 1) and max - min."""
    rows = []
    for (task, metric), by_task in _primary_teacher_values(runs).groupby(["task", "metric"], sort=False):
        for split, part in by_task.groupby("split"):
            part = part.sort_values("seed")
            values = part["value"]
            rows.append({"task": task, "split": split, "metric": metric, "seeds": " ".join(map(str, part["seed"])),
                         "values": " ".join(f"{v:.2f}" for v in values), "mean": values.mean(),
                         "std": values.std(ddof=1), "range": values.max() - values.min()})
    return pd.DataFrame(rows)


def has_teacher_seeds(runs: pd.DataFrame) -> bool:
    """Does a run's runs.csv hold teachers of several seeds for a task (distill.teacher_seed: per_seed)?"""
    teachers = runs[runs.method == "teacher"]
    return bool(not teachers.empty and (teachers.groupby("task")["seed"].nunique() > 1).any())


def teacher_shift(runs: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Per task and split: the teacher of ``runs`` against the same seed's teacher in ``reference``
    (reference, value, shift = value - reference). A seed missing from the reference is an error."""
    from optima.errors import DataError

    keys = ["task", "split", "metric", "seed"]
    ours, theirs = _primary_teacher_values(runs), _primary_teacher_values(reference)
    merged = ours.merge(theirs, on=keys, how="left", suffixes=("", "_reference"), validate="one_to_one")
    missing = merged[merged["value_reference"].isna()]
    if not missing.empty:
        first = missing.iloc[0]
        raise DataError(f"no reference teacher for {first.task} {first.split} seed {first.seed} "
                        f"({len(missing)} row(s) without one)")
    return pd.DataFrame({"task": merged["task"], "split": merged["split"], "metric": merged["metric"],
                         "seed": merged["seed"], "reference": merged["value_reference"], "value": merged["value"],
                         "shift": merged["value"] - merged["value_reference"]})


def student_spread(runs: pd.DataFrame) -> pd.DataFrame:
    """Per task and split: the median over methods of the students' seed std (the yardstick), same scale."""
    from optima.paper.spec import PRIMARY_COLUMNS

    rows = []
    students = runs[runs.role == "student"]
    for task, column in PRIMARY_COLUMNS.items():
        part = students[students.task.eq(task) & (students.metric == column.metric)]
        part = part.assign(value=part["value"] * column.scale)
        for split, by_split in part.groupby("split"):
            stds = by_split.groupby("method")["value"].std(ddof=1)
            rows.append({"task": task, "split": split, "student_seed_std": float(stds.median())})
    return pd.DataFrame(rows)


def labelled_draws(draws: list[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """The runs of several draws in one frame, each draw's label in the ``seed`` column (what teacher_spread
    groups by). Two draws under one label are an error."""
    from optima.errors import ConfigError

    labels = [label for label, _ in draws]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise ConfigError(f"--draw: label(s) given twice: {', '.join(duplicated)}")
    order = pd.CategoricalDtype(labels, ordered=True)  # tables list the draws in the order given
    return pd.concat([runs.assign(seed=pd.Series(label, index=runs.index, dtype=order)) for label, runs in draws],
                     ignore_index=True)


def _parse_draws(specs: list[str]) -> list[tuple[str, str]]:
    from optima.errors import ConfigError

    pairs = []
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not (sep and label and path):
            raise ConfigError(f"--draw {spec!r}: expected LABEL=RUNS_CSV")
        pairs.append((label, path))
    return pairs


def write_spread(runs_path, students_path, out_dir, against_path=None, name=None, draws=()):
    """Write ``teacher_spread.{md,csv}`` into ``out_dir`` (students_path: optional yardstick runs.csv), or,
    with ``against_path``, ``teacher_shift.{md,csv}``: the teachers of runs_path minus those of against_path,
    or, with ``draws`` ([(label, runs.csv path)] instead of runs_path), ``teacher_draws.{md,csv}``: the spread
    over the labelled draws. ``name``: another file name stem."""
    from pathlib import Path

    from optima.errors import ConfigError, DataError
    from optima.io import atomic_write_text
    from optima.paper.results import read_runs

    if bool(runs_path) == bool(draws):
        raise ConfigError("give either --runs or --draw LABEL=RUNS (one or more), not both or neither")
    if draws:
        table = teacher_spread(labelled_draws([(label, read_runs(path)) for label, path in draws]))
        table = table.rename(columns={"seeds": "draws"})
        source = ", ".join(path for _, path in draws)
    else:
        runs = read_runs(runs_path)
        table = teacher_shift(runs, read_runs(against_path)) if against_path else teacher_spread(runs)
        source = runs_path
    if table.empty:
        raise DataError(f"{source}: no teacher rows")
    if students_path:
        table = table.merge(student_spread(read_runs(students_path)), on=["task", "split"], how="left")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = name or ("teacher_draws" if draws else "teacher_shift" if against_path else "teacher_spread")
    atomic_write_text(out / f"{name}.csv", table.to_csv(index=False, float_format="%.4f"))
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row) + " |")
    atomic_write_text(out / f"{name}.md", "\n".join(lines) + "\n")
    return out / f"{name}.md"


def run(args) -> int:
    print(write_spread(args.runs, args.students, args.out_dir, args.against, args.name, _parse_draws(args.draw)))
    return 0
