"""Periodic training checkpoints: written atomically, loaded without pickle, resumed automatically.

``RUN/checkpoints/step_0000100/`` holds ``weights.safetensors`` (every trained module, prefixed by
its name), ``state.pt`` (optimiser, scheduler, random generators; read with ``weights_only=True``),
``meta.json`` (step, config fingerprint, policy state, and the SHA-256 of every other file) and the
train-log rows up to that step. The last two are kept: a checkpoint that cannot be read (a truncated
or missing file, a checksum that does not match) is skipped with a warning naming it, and training
resumes from the one before.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from optima.errors import CheckpointError
from optima.io import atomic_directory, sha256_file, write_bytes, write_with

_STEP_DIR = re.compile(r"^step_(\d{7})$")
# the files of a checkpoint whose SHA-256 meta.json records (and a resume verifies)
CHECKSUMMED = ("weights.safetensors", "state.pt", "train_log.csv")


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped on resume (optima.cli prints it as one line)."""


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
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def save_checkpoint(run_dir, step: int, modules: dict[str, torch.nn.Module], optimizer, scheduler,
                    rng: dict, meta: dict, log_rows_csv: str, keep: int = 2) -> Path:
    from safetensors.torch import save

    path = Path(run_dir) / "checkpoints" / f"step_{step:07d}"
    tensors = {}
    for prefix, module in modules.items():
        for key, value in module.state_dict().items():
            # clone: safetensors refuses tensors that share storage (tied weights)
            tensors[f"{prefix}.{key}"] = value.detach().to("cpu").contiguous().clone()
    rng = dict(rng)
    rng["numpy"] = _numpy_state_to_lists(rng["numpy"])
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng}
    with atomic_directory(path) as tmp:
        write_bytes(tmp / "weights.safetensors", save(tensors))
        write_with(tmp / "state.pt", lambda handle: torch.save(state, handle))
        write_bytes(tmp / "train_log.csv", log_rows_csv.encode("utf-8"))
        checksums = {name: sha256_file(tmp / name) for name in CHECKSUMMED}
        write_bytes(tmp / "meta.json", json.dumps({**meta, "step": step, "checksums": checksums}, indent=1,
                                                   default=str).encode("utf-8"))
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def read_meta(path: Path) -> dict:
    """A checkpoint's meta.json (CheckpointError naming the file when it is missing, truncated or not JSON)."""
    meta_path = Path(path) / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable or truncated ({exc})") from None
    if not isinstance(meta, dict) or "step" not in meta:
        raise CheckpointError(f"{meta_path}: not a checkpoint's meta.json (no 'step')")
    return meta


def verify_checksums(path: Path, meta: dict) -> None:
    """Each file's SHA-256 against meta.json (checkpoints written before checksums existed have none)."""
    for name, expected in (meta.get("checksums") or {}).items():
        file = Path(path) / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing")
        if sha256_file(file) != expected:
            raise CheckpointError(f"{file}: checksum mismatch (the file changed after it was written: corrupt)")


def read_checkpoint(path: Path) -> dict:
    """Everything a resume needs from one checkpoint, every file verified: ``{"meta", "tensors", "state",
    "log_csv"}``. CheckpointError naming the file when anything is missing, truncated or corrupt."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_meta(path)
    verify_checksums(path, meta)
    files = {name: path / name for name in ("weights.safetensors", "state.pt", "train_log.csv")}
    for file in files.values():
        if not file.is_file():
            raise CheckpointError(f"{file}: missing")
    try:
        tensors = load_file(str(files["weights.safetensors"]))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{files['weights.safetensors']}: unreadable ({exc})") from None
    try:
        state = torch.load(files["state.pt"], map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{files['state.pt']}: unreadable ({exc})") from None
    try:
        log_csv = files["train_log.csv"].read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{files['train_log.csv']}: unreadable ({exc})") from None
    return {"path": path, "meta": meta, "tensors": tensors, "state": state, "log_csv": log_csv}


def apply_checkpoint(loaded: dict, modules: dict[str, torch.nn.Module], optimizer, scheduler) -> dict:
    """Restore modules/optimiser/scheduler in place from :func:`read_checkpoint`'s result; return meta (with
    'rng' and 'log_csv' added)."""
    path, meta, tensors, state = loaded["path"], dict(loaded["meta"]), loaded["tensors"], loaded["state"]
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
    meta["log_csv"] = loaded["log_csv"]
    return meta


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module], optimizer, scheduler) -> dict:
    """Restore modules/optimiser/scheduler in place; return meta (with 'rng' and 'log_csv' added)."""
    return apply_checkpoint(read_checkpoint(path), modules, optimizer, scheduler)


def latest_readable_checkpoint(run_dir: str | Path) -> dict | None:
    """:func:`read_checkpoint` of the newest checkpoint that reads and verifies; a newer one that does not is
    skipped with a CheckpointWarning naming it. None when there is none; CheckpointError when every one is
    bad (naming the first problem and what to delete)."""
    run_dir = Path(run_dir)
    bad: list[tuple[Path, str]] = []
    for path in reversed(checkpoint_dirs(run_dir)):
        try:
            loaded = read_checkpoint(path)
        except CheckpointError as exc:
            bad.append((path, str(exc)))
            continue
        for skipped, reason in bad:
            warnings.warn(f"{reason}; skipped checkpoint {skipped}, resuming from the previous one {path} "
                          f"(delete {skipped} to silence this)", CheckpointWarning, stacklevel=2)
        return loaded
    if bad:
        raise CheckpointError(f"{bad[0][1]}; no checkpoint of {run_dir} can be read: delete {run_dir / 'checkpoints'} "
                              "to train from the start (or run the command with --force)")
    return None
