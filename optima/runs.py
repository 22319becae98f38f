"""Run directories (docs/runs.md): reading a finished run, writing a run's outputs, its metrics records."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

from optima.errors import CheckpointError, RunBusyError

# held (fcntl.flock) by the verb that writes a run directory, for as long as it runs
LOCK_FILE = ".optima.lock"
# what a run directory may hold (docs/runs.md); --force clears only a directory holding nothing else
RUN_DIR_ENTRIES = re.compile(
    r"^(model\.safetensors|model_config\.json|config\.yaml|run_info\.json|train_log(\.inprogress)?\.csv"
    r"|metrics(_\w+)?\.json|eval_log\.jsonl|checkpoints|targets|targets\.json|targets\.safetensors"
    r"|\.outputs\.tmp|\.optima\.lock|\..+\.tmp)$")
# the run_info.json keys that say which run a directory holds
IDENTITY_KEYS = ("role", "task", "method", "seed")


def read_run_info(run_dir: str | Path, expect_role: str | None = None, expect_task: str | None = None) -> dict:
    """The run_info.json of a finished run; errors name the directory and what is wrong."""
    run_dir = Path(run_dir)
    info_path = run_dir / "run_info.json"
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run directory does not exist")
    if not info_path.is_file() or not (run_dir / "model.safetensors").is_file():
        raise CheckpointError(f"{run_dir}: not a finished run (run_info.json or model.safetensors missing)")
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{info_path}: corrupt ({exc})") from None
    if expect_role and info.get("role") != expect_role:
        raise CheckpointError(f"{run_dir}: expected a {expect_role} run, found a {info.get('role')} run")
    if expect_task and info.get("task") != expect_task:
        raise CheckpointError(f"{run_dir}: this run is for task {info.get('task')!r}, not {expect_task!r}")
    return info


def stored_teacher_dir(root: str | Path, task: str, seed: int | str, per_seed: bool) -> Path:
    """Where ``finetune.mode: load`` finds a task's fine-tuned teacher: ROOT/TASK/seedS under
    ``distill.teacher_seed: per_seed`` (one teacher per student seed), else ROOT/TASK."""
    return Path(root) / task / f"seed{seed}" if per_seed else Path(root) / task


# the files of a finished training run that later steps read or that are results (docs/runs.md); checkpoints/ is
# resume state, not a result. A stored fine-tuned teacher (finetune.mode: load) is these files and their checksums.
RUN_FILES = ("model.safetensors", "model_config.json", "run_info.json", "config.yaml", "train_log.csv", "metrics.json")
STORED_TEACHER_FILES = RUN_FILES
CHECKSUMS = "SHA256SUMS"


def checksums_text(run_dir: str | Path, names=STORED_TEACHER_FILES) -> str:
    """``sha256sum`` lines of ``names`` in ``run_dir`` (``sha256sum -c SHA256SUMS`` checks them too)."""
    from optima.io import sha256_file

    return "".join(f"{sha256_file(Path(run_dir) / name)}  {name}\n" for name in names)


def verify_checksums(run_dir: str | Path) -> None:
    """Every file listed in ``run_dir``/SHA256SUMS is there with that checksum; errors name the file."""
    from optima.io import sha256_file

    run_dir = Path(run_dir)
    listing = run_dir / CHECKSUMS
    if not listing.is_file():
        raise CheckpointError(f"{listing}: missing (store teachers with scripts/store_teachers.py)")
    for line in listing.read_text().splitlines():
        expected, _, name = line.partition("  ")
        path = run_dir / name
        if not name or not path.is_file():
            raise CheckpointError(f"{path}: listed in {CHECKSUMS} but missing")
        if sha256_file(path) != expected:
            raise CheckpointError(f"{path}: checksum mismatch (the file is damaged; store the teacher again)")


def training_environment(runtime) -> dict:
    """What decides a run's floating-point path besides the seed: torch, the device and, on a CPU, the
    instruction set of ATen's kernels (ATEN_CPU_CAPABILITY) and the CPU model (by which the matrix library
    may pick its kernels): runs differ across machines through these."""
    import torch

    from optima.machine import cpu_identity

    return {"torch": torch.__version__, "device": str(runtime.device),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": cpu_identity()}


def finish_run(run_dir: str | Path, runtime, save_model, train_log, config: dict, run_info: dict,
               metrics: dict | None) -> None:
    """Write the run's outputs, metrics.json last: its presence means the run is complete."""
    import yaml

    from optima.io import atomic_write_json, atomic_write_text

    if not runtime.is_main:
        return
    from optima.io import output_error

    run_dir = Path(run_dir)
    staging = run_dir / ".outputs.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        save_model(staging)
        for item in sorted(staging.iterdir()):
            os.replace(item, run_dir / item.name)
        staging.rmdir()
    except OSError as exc:  # a full disk, a read-only folder: named, and no half-written model left
        shutil.rmtree(staging, ignore_errors=True)
        raise output_error(staging, exc) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    atomic_write_json(run_dir / "run_info.json", {**run_info, "environment": training_environment(runtime)})
    train_log.write(run_dir / "train_log.csv")
    live = run_dir / "train_log.inprogress.csv"
    if live.exists():
        live.unlink()
    if metrics is not None:
        atomic_write_json(run_dir / "metrics.json", metrics)


def metrics_record(run_info: dict, split: str, metrics: dict) -> dict:
    """The content of a run's metrics_<split>.json: who was scored, on which split, and the scores."""
    return {"task": run_info.get("task"), "method": run_info["method"], "seed": run_info["seed"],
            "role": run_info["role"], "split": split, "metrics": metrics}


def _as_json(value):
    return json.loads(json.dumps(value, default=str))


def finished_fingerprint(run_dir: Path, info: dict):
    """The fingerprint a finished run was trained under: recorded in run_info.json, else (runs finished before
    it was) the final checkpoint's; None when neither is there."""
    if "fingerprint" in info:
        return info["fingerprint"]
    from optima.distill.checkpoint import latest_checkpoint, read_meta

    latest = latest_checkpoint(run_dir)
    if latest is None:
        return None
    try:
        meta = read_meta(latest)
    except CheckpointError:
        return None
    return meta.get("fingerprint") if meta.get("final") else None


def check_finished_run(run_dir: str | Path, identity: dict, fingerprint: dict | None) -> None:
    """Refuse to train into a directory that holds a finished run (run_info.json or model.safetensors) of
    another identity (role, task, method, seed) or fingerprint (config, command); the same one reruns as
    before (resumes, or only evaluates again). CheckpointError naming the run and what differs."""
    run_dir = Path(run_dir)
    info_path = run_dir / "run_info.json"
    if not info_path.is_file() and not (run_dir / "model.safetensors").is_file():
        return
    fix = f"choose another --out, or add --force to clear {run_dir} first"
    try:
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{info_path}: unreadable ({exc}); {run_dir} may hold another run: {fix}") from None
    if not isinstance(info, dict):
        info = {}
    differs = [key for key in IDENTITY_KEYS if key in identity and info.get(key) != identity[key]]
    old = finished_fingerprint(run_dir, info)
    if old is not None and fingerprint is not None:
        from optima.distill.loop import _diff_keys  # the resume's comparison: memory-only keys may change

        differs += [key or "<all>" for key in _diff_keys(old, _as_json(fingerprint)) if key.split(".")[0] not in differs]
    elif not info:
        differs.append("run_info.json missing")
    if differs:
        held = ", ".join(f"{key} {info.get(key)!r}" for key in IDENTITY_KEYS if key in info)
        raise CheckpointError(
            f"{run_dir}: holds a finished run ({held or 'unknown'}) made by another command or config "
            f"(differs in: {', '.join(differs[:6])}{', ...' if len(differs) > 6 else ''}); refusing to overwrite it: {fix}")


def clear_run_dir(run_dir: str | Path) -> None:
    """``--force``: remove everything in a run directory (but its lock). Refuses a directory holding anything
    a run directory does not (docs/runs.md): --out pointed at the wrong folder must not delete it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    entries = sorted(run_dir.iterdir())
    foreign = [entry.name for entry in entries if not RUN_DIR_ENTRIES.match(entry.name)]
    if foreign:
        raise CheckpointError(f"{run_dir}: --force clears only run directories, and this one holds "
                              f"{', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}: "
                              "check --out, or remove the folder by hand")
    for entry in entries:
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold ``RUN/.optima.lock`` (fcntl.flock) while a verb writes ``run_dir``: a second process on the same
    directory fails at once (RunBusyError naming the lock and its holder). The lock file is removed on exit;
    a killed holder's lock is released by the system."""
    import fcntl
    import socket

    from optima.io import check_writable, file_mode

    run_dir = Path(run_dir)
    created = not run_dir.exists()
    check_writable(run_dir / LOCK_FILE)  # a read-only folder says so (OutputError) before anything runs
    path = run_dir / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.read(fd, 200).decode(errors="replace").strip()
            os.close(fd)
            raise RunBusyError(f"{run_dir}: another optima process is writing this run directory (it holds the lock "
                               f"{path}{': ' + holder if holder else ''}); wait for it to end or stop it") from None
        try:  # the previous holder may have removed the file between our open and flock: lock the file there now
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                os.unlink(path)
        os.close(fd)
        if created:  # a command that failed before writing anything leaves no empty run directory behind
            with contextlib.suppress(OSError):
                run_dir.rmdir()


@contextlib.contextmanager
def claim_run_dir(run_dir: str | Path, runtime, identity: dict, fingerprint: dict | None,
                  force: bool = False) -> Iterator[None]:
    """What a training verb does to its run directory before it trains: check that it can be written, lock it
    (``run_lock``), clear it under ``--force`` (``clear_run_dir``), and refuse a finished run of another
    command or config (``check_finished_run``). Rank 0 locks and clears; every rank checks."""
    run_dir = Path(run_dir)
    with contextlib.ExitStack() as stack:
        if runtime.is_main:
            stack.enter_context(run_lock(run_dir))
            if force:
                clear_run_dir(run_dir)
        runtime.barrier()
        check_finished_run(run_dir, identity, fingerprint)
        yield
