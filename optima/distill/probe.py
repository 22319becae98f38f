"""The probe: a fixed held-out batch on which the policy's reward is measured.

``split_probe`` holds out **images**, not items: a caption item is an (image, caption) pair and the
other tasks ask several questions/hypotheses/statements about each image, so holding out items would
leave the probe's images in the training data. The probe takes one example per held-out image (two
images for NLVR2), and every item that shows a held-out image is removed from the training set of
every method, so all methods train on exactly the same examples. The draw depends only on the data
and ``distill.probe_seed``: the same probe for every method and seed of a task.

``Probe`` computes the teacher's outputs for the probe once and evaluates the distillation objective
on it without gradients.
"""

from __future__ import annotations

import time

import torch

from optima.config import MAX_PROBE_FRACTION
from optima.coca_modules import MODULES
from optima.errors import ConfigError


def split_probe(dataset, size: int, seed: int) -> tuple[list[int], list[int]]:
    """``(probe indices, training indices)``: ``size`` examples on distinct images, and every example
    that shows none of their images. ConfigError naming ``distill.probe_size`` when the probe would hold
    out more than ``MAX_PROBE_FRACTION`` of the training images."""
    probe, _, train = split_held_out(dataset, size, 0, seed)
    return probe, train


def split_held_out(dataset, probe_size: int, heldout_size: int, seed: int) -> tuple[list[int], list[int], list[int]]:
    """``(probe, held-out, training indices)``: the probe of ``split_probe`` (the same draw), then ``heldout_size``
    more examples on other distinct images (``distill.heldout_size``: the held-out reward, the oracle's
    selection), and every example that shows none of their images. Together they may hold out at most
    ``MAX_PROBE_FRACTION`` of the training images (ConfigError naming the keys)."""
    keys = [tuple(dataset.image_keys(i)) for i in range(len(dataset))]
    n_images = len({key for item in keys for key in item})
    order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed)).tolist()
    held: set[str] = set()
    probe: list[int] = []
    heldout: list[int] = []
    for index in order:
        if len(probe) == probe_size and len(heldout) == heldout_size:
            break
        if held.isdisjoint(keys[index]):  # one example per image
            (probe if len(probe) < probe_size else heldout).append(index)
            held.update(keys[index])
    per_example = max(len(k) for k in keys)
    if len(probe) < probe_size or len(heldout) < heldout_size or len(held) > MAX_PROBE_FRACTION * n_images:
        what = "distill.probe_size" + (" + distill.heldout_size" if heldout_size else "")
        raise ConfigError(
            f"{what}: {probe_size + heldout_size} held-out examples need {(probe_size + heldout_size) * per_example} "
            f"training images, but at most {MAX_PROBE_FRACTION:.0%} of the {n_images} training images may be "
            f"held out; lower {what.replace(' + ', ' or ')}")
    train = [i for i, item in enumerate(keys) if held.isdisjoint(item)]
    return sorted(probe), sorted(heldout), train


class HeldoutProbe:
    """The student's task loss on the held-out examples (no teacher), in chunks of ``chunk`` examples combined
    as the whole set's mean over its items (``TaskModel.loss_count``), without gradients."""

    def __init__(self, student, dataset, indices: list[int], runtime, chunk: int):
        from optima.distill.sampling import fixed_batch

        self.student, self.runtime = student, runtime
        self.chunks = [fixed_batch(dataset, indices[k:k + chunk]) for k in range(0, len(indices), chunk)]
        self.seconds = 0.0

    @torch.no_grad()
    def loss(self) -> float:
        from optima.runtime import to_device

        started = time.perf_counter()
        was_training = self.student.training
        self.student.eval()
        try:
            total, count = 0.0, 0
            for chunk in self.chunks:
                batch = to_device(chunk, self.runtime.device)
                with self.runtime.autocast():
                    outputs = self.student(batch)
                    loss = float(self.student.loss(outputs, batch)["loss"])
                n = self.student.loss_count(outputs, batch)
                total, count = total + loss * n, count + n
        finally:
            self.student.train(was_training)
        self.seconds += time.perf_counter() - started
        return total / max(count, 1)


PROBE_STORAGE = ("device", "cpu", "recompute")
PROBE_DTYPES = ("float32", "float16", "bfloat16")


def batch_size_of(batch: dict) -> int:
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise ValueError("probe batch holds no tensor")


def slice_batch(batch: dict, start: int, stop: int, n: int) -> dict:
    """Examples ``start:stop`` of a collated batch of ``n`` examples (everything with ``n`` rows is cut)."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, (torch.Tensor, list, tuple)) and len(value) == n:
            out[key] = value[start:stop]
        else:
            out[key] = value
    return out


def _map_tensors(out: dict, fn) -> dict:
    """``teacher_outputs``' dict (``logits``, ``features``, ``masks``) with ``fn`` applied to every tensor."""
    mapped = {}
    for key, value in out.items():
        if isinstance(value, dict):
            mapped[key] = {k: fn(v) for k, v in value.items()}
        else:
            mapped[key] = fn(value) if isinstance(value, torch.Tensor) else value
    return mapped


class Probe:
    """The distillation objective over all modules on a fixed batch, its teacher outputs computed once.

    Memory (paper scale: docs/paper-scale.md, "Memory per GPU job"):
    - ``chunk``: examples per forward (``distill.probe_chunk``; None = the whole probe at once). The probe
      loss of a chunked probe equals the unchunked one: every term is a mean over examples or over real
      tokens, so the chunks' terms are combined weighted by their counts
      (``DistillationObjective.combine_chunks``).
    - ``storage`` (``distill.probe_storage``): where the teacher's outputs live between measurements:
      ``device`` (the training device), ``cpu`` (host memory, each chunk moved to the device when it is
      evaluated; pinned when the device is a GPU) or ``recompute`` (not stored: the teacher runs on each
      chunk at every measurement).
    - ``dtype`` (``distill.probe_dtype``): the stored outputs' floating dtype (the losses upcast to float32
      as for the training batch).

    ``seconds`` accumulates the wall time spent here (reported apart from training throughput).
    """

    def __init__(self, objective, batch: dict, runtime, chunk: int | None = None, dtype: str = "float32",
                 storage: str = "device"):
        if storage not in PROBE_STORAGE:
            raise ConfigError(f"distill.probe_storage must be one of {', '.join(PROBE_STORAGE)}, got {storage!r}")
        if dtype not in PROBE_DTYPES:
            raise ConfigError(f"distill.probe_dtype must be one of {', '.join(PROBE_DTYPES)}, got {dtype!r}")
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
            raise ConfigError(f"distill.probe_chunk must be a positive integer or null, got {chunk!r}")
        self.objective = objective
        self.batch = batch
        self.runtime = runtime
        self.n = batch_size_of(batch)
        self.chunk = self.n if chunk is None else min(chunk, self.n)
        self.bounds = [(start, min(start + self.chunk, self.n)) for start in range(0, self.n, self.chunk)]
        self.dtype = getattr(torch, dtype)
        self.storage = storage
        self.need_logits = objective.kd_weight > 0
        self.seconds = 0.0
        options = getattr(objective.student, "options", None) or {}
        if len(self.bounds) > 1 and options.get("contrastive_weight", 0) > 0:
            raise ConfigError("distill.probe_chunk: a captioning loss with a contrastive term compares every pair "
                              "in the batch and cannot be computed in chunks; set distill.probe_chunk: null")
        if storage == "cpu":  # the probe's inputs leave the device too (moved per chunk)
            from optima.runtime import to_device

            self.batch = to_device(batch, torch.device("cpu"))
        started = time.perf_counter()
        self.stored: list[dict] | None = None
        if storage != "recompute":
            self.stored = [self._store(self._teacher(start, stop)) for start, stop in self.bounds]
        self.seconds += time.perf_counter() - started

    def _chunk(self, start: int, stop: int) -> dict:
        from optima.runtime import to_device

        part = self.batch if (start, stop) == (0, self.n) else slice_batch(self.batch, start, stop, self.n)
        return to_device(part, self.runtime.device)

    def _teacher(self, start: int, stop: int) -> dict:
        return self.objective.teacher_outputs(self._chunk(start, stop), tuple(MODULES), need_logits=self.need_logits)

    def _store(self, out: dict) -> dict:
        device = torch.device("cpu") if self.storage == "cpu" else self.runtime.device
        pin = self.storage == "cpu" and self.runtime.device.type == "cuda"

        def keep(tensor: torch.Tensor) -> torch.Tensor:
            dtype = self.dtype if tensor.is_floating_point() else tensor.dtype
            tensor = tensor.to(device=device, dtype=dtype)
            return tensor.pin_memory() if pin else tensor

        return _map_tensors(out, keep)

    def _teacher_out(self, index: int) -> dict:
        if self.stored is None:
            start, stop = self.bounds[index]
            return self._teacher(start, stop)
        device = self.runtime.device
        return _map_tensors(self.stored[index], lambda t: t.to(device, non_blocking=True))

    @property
    def stored_bytes(self) -> int:
        """Bytes held by the stored teacher outputs (0 when recomputed)."""
        total = 0
        for out in self.stored or []:
            for value in [out.get("logits"), *out.get("features", {}).values(), *out.get("masks", {}).values()]:
                if isinstance(value, torch.Tensor):
                    total += value.numel() * value.element_size()
        return total

    @torch.no_grad()
    def losses(self) -> dict[str, float]:
        started = time.perf_counter()
        self.objective.eval()
        try:
            parts = []
            for index, (start, stop) in enumerate(self.bounds):
                teacher_out = self._teacher_out(index)
                counts: dict = {}
                with self.runtime.autocast():
                    losses = self.objective.compute(self._chunk(start, stop), tuple(MODULES),
                                                    teacher_out=teacher_out,
                                                    counts=counts if len(self.bounds) > 1 else None)
                parts.append(({k: float(v) for k, v in losses.items()}, counts))
                del teacher_out, losses
        finally:
            self.objective.train()
        values = self.objective.combine_chunks(parts, tuple(MODULES))
        self.seconds += time.perf_counter() - started
        return values

    @classmethod
    def from_config(cls, objective, batch: dict, runtime, section: dict) -> "Probe":
        """A probe with the memory options of the config's ``distill`` section."""
        return cls(objective, batch, runtime, chunk=section["probe_chunk"], dtype=section["probe_dtype"],
                   storage=section["probe_storage"])
