"""Model checkpoints in a run directory: ``model.safetensors`` + ``model_config.json`` (no pickle).

``model_config.json`` holds everything needed to rebuild the model without code or pickles::

    {"format": "optima.model/1",
     "name": "optima-tiny-teacher",          # the config it was derived from (informational)
     "model_cfg": {...},                     # the open_clip model config (a valid open_clip config JSON)
     "task": null | {"task": "vqa", "num_classes": 3129, "options": {...}}}

A plain CoCa's tensors keep open_clip's names; a task model's are ``coca.*`` + ``head.*``.
Both files are written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from optima.errors import CheckpointError, ConfigError
from optima.io import atomic_write_bytes, atomic_write_json

FORMAT = "optima.model/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model_config.json"


def write_checkpoint(run_dir: str | os.PathLike, state: dict[str, torch.Tensor], record: dict) -> None:
    from safetensors.torch import save

    run_dir = Path(run_dir)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    atomic_write_bytes(run_dir / WEIGHTS_FILE, save(tensors, metadata={"format": FORMAT}))
    atomic_write_json(run_dir / CONFIG_FILE, {"format": FORMAT, **record})


def read_record(run_dir: str | os.PathLike) -> dict:
    """The parsed ``model_config.json`` of a run directory (CheckpointError when missing or malformed)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: not found ({Path(run_dir)} is not a model run directory)")
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("model_cfg"), dict):
        raise CheckpointError(f"{path}: not an {FORMAT} model config (needs 'format' and 'model_cfg')")
    return record


def save_model(model: nn.Module, run_dir: str | os.PathLike, model_config: dict | None = None) -> None:
    """Save a plain CoCa. ``model_config``: ``{"name", "model_cfg"}`` (from ``create_coca(...,
    return_config=True)``, ``model_config(model)``) or a bare open_clip model config; default: the
    config the model was built from."""
    from optima.models.factory import model_config as recorded_config
    from optima.models.modules import unwrap_model

    coca = unwrap_model(model)
    config = recorded_config(coca) if model_config is None else model_config
    if "model_cfg" not in config:
        config = {"name": "custom", "model_cfg": config}
    write_checkpoint(run_dir, coca.state_dict(), {"name": config.get("name", "custom"),
                                                  "model_cfg": config["model_cfg"], "task": None})


def load_model(run_dir: str | os.PathLike) -> nn.Module:
    """The CoCa saved in ``run_dir`` (from a task model's run directory: its ``coca.*`` part)."""
    from optima.models.factory import coca_from_config, coca_state, load_weights, read_state_dict

    record = read_record(run_dir)
    try:
        coca = coca_from_config(record["model_cfg"], record.get("name", "custom"))
    except ConfigError as exc:
        raise CheckpointError(f"{Path(run_dir) / CONFIG_FILE}: {exc}") from None
    weights = Path(run_dir) / WEIGHTS_FILE
    load_weights(coca, coca_state(read_state_dict(weights)), str(weights))
    return coca
