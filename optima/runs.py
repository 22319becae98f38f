"""Run directories (docs/runs.md): reading a finished run, writing a run's outputs, its metrics records."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from optima.errors import CheckpointError


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
    run_dir = Path(run_dir)
    staging = run_dir / ".outputs.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_model(staging)
    for item in sorted(staging.iterdir()):
        os.replace(item, run_dir / item.name)
    staging.rmdir()
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
