"""Teacher targets computed once per task, shared by every student of the task.

With no augmentation, the teacher's outputs for a training example are the same in every method and
seed: its mapped layers' hidden states (and the vision arm's attentional-pooler tokens) and its KD
logits. ``optima teacher-targets TASK`` computes exactly those for every training example once and
stores them in a compact dtype (``distill.teacher_cache.dtype``); a student then looks its batch up
by example index instead of running the teacher, and the loss is computed the same way (the targets
are upcast to float32 before the MSE and the KD, as the on-the-fly targets are).

``distill.teacher_cache.mode``: ``auto`` caches when the estimate (printed first) fits under
``max_gb`` and otherwise records that targets are computed on the fly; ``always`` refuses (an error
naming the key) above the limit; ``never`` computes them on the fly (paper scale). The cache records
the teacher's weights hash, the data and the layer map it was built for; a student refuses a cache
built for anything else.

Files: ``DIR/targets.safetensors`` (one tensor per target, ``rows`` rows per example: 2 for NLVR2's
two images) and ``DIR/targets.json`` (written last: its presence means the directory is complete).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from optima.coca_modules import MODULES
from optima.errors import CheckpointError, ConfigError
from optima.io import sha256_file

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
TARGETS_FILE = "targets.safetensors"
META_FILE = "targets.json"
FORMAT = "optima.teacher_targets/1"
LOGITS = "logits"


class IndexedDataset(Dataset):
    """Adds each item's index (``"index"``) so a batch can look its teacher targets up."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[index], "index": index}

    def __getattr__(self, name):  # image_keys, num_classes, items, ...
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def cache_options(section: dict) -> dict:
    """``distill.teacher_cache`` (its defaults from the schema)."""
    return dict(section["teacher_cache"])


def data_fingerprint(dataset) -> str:
    """Hash of the examples (their ids, texts and image files), in order."""
    items = getattr(dataset, "items", None)
    blob = repr((len(dataset), items)).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def expected_meta(objective, dataset, teacher_weights: str | Path) -> dict:
    """What a cache must have been built for to serve this objective and training set."""
    return {"format": FORMAT, "examples": len(dataset), "data": data_fingerprint(dataset),
            "teacher_sha256": sha256_file(teacher_weights), "layer_map": objective.layer_map,
            "vision_pooler": bool(objective.vision_pooler)}


def _flatten(out: dict) -> dict[str, torch.Tensor]:
    tensors = dict(out["features"])
    if out.get("logits") is not None:
        tensors[LOGITS] = out["logits"]
    return tensors


@torch.no_grad()
def estimate_bytes(objective, dataset, dtype: torch.dtype) -> tuple[int, dict[str, list[int]]]:
    """(bytes for the whole training set, per-example shape of every target) from one example."""
    from optima.distill.sampling import fixed_batch
    from optima.runtime import to_device

    device = next(objective.teacher.parameters()).device
    sample = _flatten(objective.teacher_outputs(to_device(fixed_batch(dataset, [0]), device), tuple(MODULES),
                                                need_logits=True))
    shapes = {k: list(v.shape) for k, v in sample.items()}
    per_example = sum(v.numel() for v in sample.values())
    return per_example * len(dataset) * torch.finfo(dtype).bits // 8, shapes


def used_examples(dataset, section: dict, train_idx: list[int], probe_idx: list[int]) -> list[int]:
    """The examples the students of ``distill.seeds`` will see in ``distill.steps`` steps (batches are a pure
    function of seed and step, ``optima.distill.sampling``), and the probe: the only ones worth caching."""
    from optima.distill.sampling import StepBatchSampler

    used = set(probe_idx)
    for seed in section["seeds"]:
        sampler = StepBatchSampler(len(train_idx), section["batch_size"], seed, 0, section["steps"])
        for step in range(section["steps"]):
            used.update(train_idx[i] for i in sampler.batch(step))
    return sorted(used)


@torch.no_grad()
def compute_targets(objective, dataset, dtype: torch.dtype, batch_size: int, progress: bool = True,
                    indices: list[int] | None = None):
    """The teacher targets of ``indices`` (default: every example), in that order:
    ``{key: (len(indices) * rows, ...)}`` in ``dtype`` (CPU)."""
    from tqdm import tqdm

    from optima.distill.sampling import fixed_batch
    from optima.runtime import to_device

    device = next(objective.teacher.parameters()).device
    tensors: dict[str, torch.Tensor] = {}
    rows: dict[str, int] = {}
    order = list(range(len(dataset))) if indices is None else list(indices)
    n = len(order)
    for start in tqdm(range(0, n, batch_size), desc="teacher targets", disable=not progress, mininterval=2.0):
        chunk = order[start:start + batch_size]
        indices_here = list(range(start, start + len(chunk)))
        batch = to_device(fixed_batch(dataset, chunk), device)
        out = _flatten(objective.teacher_outputs(batch, tuple(MODULES), need_logits=True))
        for key, value in out.items():
            if key not in tensors:
                rows[key] = value.shape[0] // len(chunk)
                tensors[key] = torch.empty((n * rows[key], *value.shape[1:]), dtype=dtype)
            tensors[key][indices_here[0] * rows[key]:(indices_here[-1] + 1) * rows[key]] = value.to("cpu", dtype)
    return tensors, rows


def write_targets(out_dir: str | Path, tensors: dict[str, torch.Tensor] | None, meta: dict) -> None:
    """``targets.safetensors`` (when cached) then ``targets.json``; a partial directory has no json."""
    from safetensors.torch import save

    from optima.io import atomic_write_bytes, atomic_write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META_FILE).unlink(missing_ok=True)
    if tensors is not None:
        atomic_write_bytes(out_dir / TARGETS_FILE, save({k: v.contiguous() for k, v in tensors.items()}))
    else:
        (out_dir / TARGETS_FILE).unlink(missing_ok=True)
    atomic_write_json(out_dir / META_FILE, meta)


class TeacherTargets:
    """A loaded cache: ``lookup(indices, modules, need_logits)`` returns what ``teacher_outputs`` would."""

    def __init__(self, tensors: dict[str, torch.Tensor], rows: dict[str, int], device: torch.device,
                 examples: list[int] | None = None, n_examples: int | None = None):
        """``examples``: the dataset indices the tensors hold, in order (default: all, 0..N-1)."""
        self.tensors = {k: v.to(device) for k, v in tensors.items()}
        self.rows = rows
        self.slot = None  # dataset index -> position in the tensors (-1: not cached)
        if examples is not None:
            self.slot = torch.full((int(n_examples),), -1, dtype=torch.long, device=device)
            self.slot[torch.tensor(examples, dtype=torch.long, device=device)] = torch.arange(
                len(examples), device=device)
        self.misses = 0  # batches with an example outside the cache (computed on the fly instead)

    def covers(self, indices: torch.Tensor) -> bool:
        return self.slot is None or bool((self.slot[indices.to(self.slot.device).long()] >= 0).all())

    @classmethod
    def load(cls, directory: str | Path, expected: dict, device: torch.device) -> "TeacherTargets | None":
        """The cache in ``directory``; None when its job decided to compute targets on the fly.
        CheckpointError when it is incomplete or was built for another teacher, data or layer map."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise CheckpointError(f"{directory}: not a teacher-targets directory ({META_FILE} missing; "
                                  "run `optima teacher-targets` first)")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{meta_path}: corrupt ({exc})") from None
        if not meta.get("cached"):
            return None
        for key, value in expected.items():
            if meta.get(key) != value:
                raise CheckpointError(f"{directory}: teacher targets were built for another {key} "
                                      f"({meta.get(key)!r}, this run needs {value!r}); rebuild them")
        path = directory / TARGETS_FILE
        try:
            tensors = load_file(str(path))
        except (OSError, RuntimeError, ValueError, SafetensorError) as exc:
            raise CheckpointError(f"{path}: unreadable teacher targets ({exc})") from None
        missing = set(meta["rows"]) - set(tensors)
        if missing:
            raise CheckpointError(f"{path}: lacks {', '.join(sorted(missing))}")
        return cls(tensors, meta["rows"], device, meta.get("cached_examples"), meta["examples"])

    def lookup(self, indices: torch.Tensor, layers: dict[str, list[int]], need_logits: bool,
               pooler: bool) -> dict:
        from optima.models.taps import POOLER_KEY, feature_key

        keys = [feature_key(m, j) for m, js in layers.items() for j in js]
        if pooler:
            keys.append(POOLER_KEY)
        if need_logits:
            keys.append(LOGITS)
        out = {}
        if self.slot is not None:
            indices = self.slot[indices.to(self.slot.device).long()]
        for key in keys:
            rows = self.rows[key]
            index = indices.to(self.tensors[key].device).long()
            if rows > 1:
                index = (index[:, None] * rows + torch.arange(rows, device=index.device)).flatten()
            out[key] = self.tensors[key].index_select(0, index).float()
        return {"logits": out.pop(LOGITS, None), "features": out, "masks": {}}


def build_and_write(objective, dataset, options: dict, teacher_weights: str | Path, out_dir: str | Path,
                    log=print, examples: list[int] | None = None) -> dict:
    """The `optima teacher-targets` job: estimate, decide (mode, max_gb), compute, write. Returns the meta.
    ``examples``: cache only these dataset indices (the ones the students will see)."""
    mode, dtype_name, max_gb = options["mode"], options["dtype"], float(options["max_gb"])
    if dtype_name not in DTYPES:
        raise ConfigError(f"distill.teacher_cache.dtype must be one of {', '.join(DTYPES)}, got {dtype_name!r}")
    dtype = DTYPES[dtype_name]
    meta = expected_meta(objective, dataset, teacher_weights)
    size, shapes = estimate_bytes(objective, dataset, dtype)
    count = len(dataset) if examples is None else len(examples)
    size = size * count // max(len(dataset), 1)
    gb = size / 1e9
    log(f"teacher targets: {count} of {len(dataset)} examples x {len(shapes)} targets in {dtype_name}: {gb:.3f} GB "
        f"(distill.teacher_cache.max_gb = {max_gb:g})")
    meta.update(dtype=dtype_name, estimated_gb=round(gb, 6), shapes=shapes)
    if mode == "never":
        write_targets(out_dir, None, {**meta, "cached": False, "reason": "distill.teacher_cache.mode is never"})
        return meta
    if gb > max_gb:
        if mode == "always":
            raise ConfigError(f"distill.teacher_cache: the targets need {gb:.2f} GB, more than "
                              f"distill.teacher_cache.max_gb ({max_gb:g}); raise the limit or set mode: auto/never")
        log("teacher targets: over the limit, the students compute them on the fly")
        write_targets(out_dir, None, {**meta, "cached": False, "reason": f"{gb:.2f} GB > max_gb {max_gb:g}"})
        return meta
    started = time.perf_counter()
    tensors, rows = compute_targets(objective, dataset, dtype, int(options["batch_size"]), indices=examples)
    meta.update(cached=True, rows=rows, seconds=round(time.perf_counter() - started, 3), cached_examples=examples)
    write_targets(out_dir, tensors, meta)
    log(f"teacher targets: wrote {Path(out_dir) / TARGETS_FILE} in {meta['seconds']:.1f} s")
    return meta
