"""Periodic training checkpoints: written atomically, loaded without pickle, resumed automatically.

``RUN/checkpoints/step_0000100/`` holds ``weights.safetensors`` (every trained module, prefixed by
its name), ``state.pt`` (optimiser, scheduler, random generators; read with ``weights_only=True``),
``meta.json`` (step, config fingerprint, policy state) and the train-log rows up to that step.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from optima.errors import CheckpointError
from optima.io import atomic_directory

_STEP_DIR = re.compile(r"^step_(\d{7})$")


def _numpy_state_to_lists(state: dict) -> dict:
    inner = dict(state["state"])
    inner["key"] = np.asarray(inner["key"]).tolist()
    return {**state, "state": inner}


def _numpy_state_from_lists(state: dict) -> dict:
    inner = dict(state["state"])
    inner["key"] = np.asarray(inner["key"], dtype=np.uint32)
    return {**state, "state": inner}


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name) and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def save_checkpoint(run_dir, step: int, modules: dict[str, torch.nn.Module], optimizer, scheduler,
                    rng: dict, meta: dict, log_rows_csv: str, keep: int = 2) -> Path:
    path = Path(run_dir) / "checkpoints" / f"step_{step:07d}"
    tensors = {}
    for prefix, module in modules.items():
        for key, value in module.state_dict().items():
            # clone: safetensors refuses tensors that share storage (tied weights)
            tensors[f"{prefix}.{key}"] = value.detach().to("cpu").contiguous().clone()
    rng = dict(rng)
    rng["numpy"] = _numpy_state_to_lists(rng["numpy"])
    with atomic_directory(path) as tmp:
        save_file(tensors, str(tmp / "weights.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng},
                   tmp / "state.pt")
        (tmp / "train_log.csv").write_text(log_rows_csv)
        (tmp / "meta.json").write_text(json.dumps({**meta, "step": step}, indent=1, default=str))
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module], optimizer, scheduler) -> dict:
    """Restore modules/optimiser/scheduler in place; return meta (with 'rng' and 'log_csv' added)."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        tensors = load_file(str(path / "weights.safetensors"))
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt checkpoint must say which one
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc})") from None
    for prefix, module in modules.items():
        own = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        missing, unexpected = module.load_state_dict(own, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{path}: weights for {prefix!r} do not fit the model "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]
    rng["numpy"] = _numpy_state_from_lists(rng["numpy"])
    meta["rng"] = rng
    meta["log_csv"] = (path / "train_log.csv").read_text()
    return meta
