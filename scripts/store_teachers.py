"""Store a run's fine-tuned teachers for `finetune.mode: load`: the files of each finished teacher run (weights,
model config, run info, config, train log, validation metrics) and their SHA256SUMS, without checkpoints or cached
teacher targets.

    python scripts/store_teachers.py results/claims-2/teachers data/pretrained/claims-2-teachers

A run split into pieces (the teachers once, then the students task by task, on whatever machine) then sets
`finetune.mode: load` and `finetune.teachers: DEST`. Teachers already stored are checked byte for byte and kept;
a different one under the same name is an error (delete it first). Prints what was stored and the total size.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from optima.errors import CheckpointError  # noqa: E402
from optima.runs import CHECKSUMS, STORED_TEACHER_FILES, checksums_text, read_run_info  # noqa: E402


def finished_teachers(root: Path) -> list[Path]:
    """Teacher run directories under ``root`` (TASK/ or TASK/seedS/) that finished (metrics.json written last)."""
    runs = sorted({path.parent for path in root.glob("*/run_info.json")} | {path.parent for path in
                                                                           root.glob("*/seed*/run_info.json")})
    return [run for run in runs if run.name != "pretrain" and (run / "metrics.json").is_file()]


def store(source: Path, dest: Path) -> int:
    """Copy one teacher run's files to ``dest``; returns the bytes stored."""
    read_run_info(source, expect_role="teacher")
    missing = [name for name in STORED_TEACHER_FILES if not (source / name).is_file()]
    if missing:
        raise CheckpointError(f"{source}: not a finished teacher run ({', '.join(missing)} missing)")
    dest.mkdir(parents=True, exist_ok=True)
    for name in STORED_TEACHER_FILES:
        target = dest / name
        if target.exists():
            if not filecmp.cmp(source / name, target, shallow=False):
                raise CheckpointError(f"{target}: a different file is stored there already (delete {dest} first)")
            continue
        partial = target.with_name(target.name + ".part")
        shutil.copyfile(source / name, partial)
        partial.replace(target)
    sums = checksums_text(dest)  # what `finetune.mode: load` checks before it copies the teacher
    if (dest / CHECKSUMS).is_file() and (dest / CHECKSUMS).read_text() != sums:
        raise CheckpointError(f"{dest / CHECKSUMS}: lists other checksums (delete {dest} first)")
    (dest / CHECKSUMS).write_text(sums)
    return sum((dest / name).stat().st_size for name in (*STORED_TEACHER_FILES, CHECKSUMS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teachers", type=Path, help="a run's teachers folder (PATHS.RESULTS/teachers)")
    parser.add_argument("dest", type=Path, help="where to store them (finetune.teachers)")
    parser.add_argument("--tasks", nargs="+", help="only these tasks (default: every finished teacher)")
    args = parser.parse_args(argv)
    try:
        runs = finished_teachers(args.teachers)
        if args.tasks:
            runs = [run for run in runs if (run.parent.name if run.name.startswith("seed") else run.name)
                    in args.tasks]
        if not runs:
            raise CheckpointError(f"{args.teachers}: no finished teacher run (TASK/ or TASK/seedS/ with metrics.json)")
        total = 0
        for run in runs:
            relative = run.relative_to(args.teachers)
            size = store(run, args.dest / relative)
            total += size
            print(f"{relative}: {size / 1e6:.2f} MB")
    except CheckpointError as exc:
        print(f"store_teachers: {exc}", file=sys.stderr)
        return 1
    print(f"{len(runs)} teacher(s), {total / 1e6:.1f} MB in {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
